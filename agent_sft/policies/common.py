"""What the model backends share: package imports, sampling parameters, chat templates, context checks."""

from __future__ import annotations

import importlib
import json
import os
from typing import TYPE_CHECKING, Any

from agent_sft.errors import ConfigError
from agent_sft.policies.base import Completion
from agent_sft.policies.registry import POLICIES
from agent_sft.records import END_CONTEXT, Message

if TYPE_CHECKING:
    from agent_sft.config import PolicyConfig


def require(module: str, kind: str) -> Any:
    """Import `module` for backend `kind`, or raise an ImportError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"policy.type={kind} needs the {module!r} package ({e}); {POLICIES[kind].install}") from e


def check_seeds(conversations: list[list[Message]], seeds: list[int]) -> None:
    """One sampling seed per conversation."""
    if len(seeds) != len(conversations):
        raise ValueError(f"got {len(conversations)} conversations but {len(seeds)} seeds")


def sampling_params(cfg: PolicyConfig) -> dict[str, Any]:
    """The sampling parameters every model backend applies, as recorded in `PolicyInfo.sampling`."""
    return {
        "do_sample": cfg.do_sample,
        "temperature": cfg.temperature if cfg.do_sample else 0.0,
        "top_p": cfg.top_p if cfg.do_sample else 1.0,
        "top_k": cfg.top_k if cfg.do_sample else -1,
        "max_tokens": cfg.max_tokens,
        "stop": list(cfg.stop),
    }


def sampling_json(cfg: PolicyConfig) -> str:
    return json.dumps(sampling_params(cfg), sort_keys=True)


def model_label(model: str | None) -> str:
    """The model as recorded in rows: the name as given, or only the last component of an absolute path."""
    if not model:
        return ""
    if os.path.isabs(model):
        return os.path.basename(os.path.normpath(model))
    return model


def read_chat_template(path: str | None) -> str | None:
    """The text of a chat template override file, or None."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as e:
        raise ConfigError(f"policy.chat_template: cannot read {path}: {e.strerror}") from None


def check_chat_template(tokenizer: Any, override: str | None, model: str | None) -> None:
    """Refuse a model whose tokenizer has no chat template when no override is given."""
    if override is None and hasattr(tokenizer, "chat_template") and not tokenizer.chat_template:
        raise ValueError(f"{model} has no chat template; set policy.chat_template to a Jinja template file")


def prompt_ids(tokenizer: Any, conversation: list[Message], chat_template: str | None,
               tools: list[dict] | None = None) -> list[int]:
    """The prompt token ids of `conversation`: its chat template applied (offering `tools` when given), with the
    generation prompt."""
    if tools is not None:
        from agent_sft.policies.tool_calls import template_messages

        text = tokenizer.apply_chat_template(template_messages(conversation), tools=tools, chat_template=chat_template,
                                             tokenize=False, add_generation_prompt=True)
        return list(tokenizer.encode(text, add_special_tokens=False))
    text = tokenizer.apply_chat_template(
        [dict(m) for m in conversation], chat_template=chat_template, tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer.encode(text, add_special_tokens=False))


def context_truncated(prompt_tokens: int | None) -> Completion:
    """The answer to a prompt that no longer fits the model's context (its episode ends)."""
    return Completion(text="", prompt_tokens=prompt_tokens, completion_tokens=0, finish_reason=END_CONTEXT)
