"""The text-environment protocol (Gymnasium's shape for text agents) and the task it plays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class TaskSpec:
    """One playable task (e.g. one ALFWorld game). `task_id` is portable: relative to its game root."""

    task_id: str
    task_type: str = ""
    game_split: str = ""  # "train", "valid_seen", "builtin", ...
    extra: dict = field(default_factory=dict, hash=False, compare=False)


@runtime_checkable
class TextEnv(Protocol):
    """A text environment playing one task at a time.

    `reset(seed=...)` starts the task chosen with `options={"task_id": ...}`; `info` from both calls
    carries `task_id`, `task_type`, `goal`, `won` (bool), and for envs with an expert, `expert_plan`
    (list[str], the remaining plan). What makes an action valid is said by whichever the env gives:
    `admissible_actions` (list[str], the actions allowed now), `action_patterns` (list of regular
    expressions a valid action matches in full, for free-form actions such as `search[any query]`),
    or, in the info `step` returns, its own verdict on the action just taken: `action_valid` (bool)
    and `invalid_reason` (str).
    """

    def tasks(self) -> list[TaskSpec]:
        """Every task this env can play, in a stable order."""
        ...

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]: ...

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]: ...

    def close(self) -> None: ...


# The registry lives in `agent_sft.envs.registry`; these names stay importable from here.
from agent_sft.envs.registry import make, register, registered  # noqa: E402

__all__ = ["TaskSpec", "TextEnv", "make", "register", "registered"]
