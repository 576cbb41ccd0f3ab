"""agent-sft: turn LLM agents acting in text environments into training data.

    import agent_sft
    result = agent_sft.collect(["env.num_episodes=8", "output.dir=alfworld_sft"])   # play and write
    ds = agent_sft.load("alfworld_sft", "sft")                                       # a DatasetDict

`import agent_sft` stays light: the dataset layer, model backends, env engines and the Hub client load
lazily where used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent_sft.version import __version__

__all__ = ["AgentSFTError", "CollectConfig", "CollectResult", "DatasetWriter", "collect", "load", "load_config",
           "load_raw", "load_sft", "register_env", "tool_arguments_as_objects", "__version__"]

if TYPE_CHECKING:
    from agent_sft.collection import CollectResult, collect
    from agent_sft.config import CollectConfig, load_config
    from agent_sft.dataset.reading import load, load_raw, load_sft
    from agent_sft.dataset.tool_arguments import tool_arguments_as_objects
    from agent_sft.dataset.writer import DatasetWriter
    from agent_sft.envs import register as register_env
    from agent_sft.errors import AgentSFTError

_LAZY = {
    "collect": ("agent_sft.collection", "collect"),
    "CollectResult": ("agent_sft.collection", "CollectResult"),
    "CollectConfig": ("agent_sft.config", "CollectConfig"),
    "load_config": ("agent_sft.config", "load_config"),
    "load": ("agent_sft.dataset.reading", "load"),
    "load_raw": ("agent_sft.dataset.reading", "load_raw"),
    "load_sft": ("agent_sft.dataset.reading", "load_sft"),
    "register_env": ("agent_sft.envs", "register"),
    "tool_arguments_as_objects": ("agent_sft.dataset.tool_arguments", "tool_arguments_as_objects"),
    "AgentSFTError": ("agent_sft.errors", "AgentSFTError"),
    "DatasetWriter": ("agent_sft.dataset.writer", "DatasetWriter"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'agent_sft' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
