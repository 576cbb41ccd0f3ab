"""The text-environment protocol (Gymnasium's shape for text agents) and the task it plays."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class TaskSpec:
    """One playable task (e.g. one ALFWorld game). `task_id` is portable: relative to its game root."""

    task_id: str
    task_type: str = ""
    game_split: str = ""  # "train", "valid_seen", "builtin", ...
    extra: dict = field(default_factory=dict, hash=False, compare=False)


class TaskList:
    """An env's tasks in a stable order, and the one a reset plays: the task id asked for, else one drawn
    from the reset's seed, else the next in order.

    Args:
        tasks: the tasks, in the order `tasks()` gives them.
        title: the env's name in messages ("ALFWorld").
        where: what the tasks are, for messages ("games in the built-in set").
    """

    def __init__(self, tasks: list[TaskSpec], title: str, where: str = "tasks"):
        self.tasks = list(tasks)
        self.by_id = {t.task_id: t for t in self.tasks}
        self.title, self.where = title, where
        self._cursor = 0

    def __len__(self) -> int:
        return len(self.tasks)

    def choose(self, task_id: Any = None, seed: int | None = None) -> TaskSpec:
        """The task a reset plays.

        Raises:
            KeyError: an unknown `task_id` (naming a few known ones).
            RuntimeError: there is no task at all.
        """
        if task_id is not None:
            task = self.by_id.get(str(task_id))
            if task is None:
                some = ", ".join(t.task_id for t in self.tasks[:3])
                raise KeyError(f"unknown {self.title} task_id {task_id!r} ({len(self.tasks)} {self.where}; e.g. {some})")
            return task
        if not self.tasks:
            raise RuntimeError(f"no {self.title} {self.where} to play")
        if seed is not None:
            return random.Random(seed).choice(self.tasks)
        task = self.tasks[self._cursor % len(self.tasks)]
        self._cursor += 1
        return task


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

__all__ = ["TaskList", "TaskSpec", "TextEnv", "make", "register", "registered"]
