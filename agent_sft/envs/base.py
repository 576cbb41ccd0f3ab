"""The text-environment protocol (Gymnasium's shape for text agents) and the task it plays."""

from __future__ import annotations

import hashlib
import json
import os
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


def task_hash(*parts: Any) -> str:
    """A content hash of a task (16 hex digits of a SHA-256): `parts` are bytes (a file's content), text, or
    plain data (written as sorted JSON), each length-prefixed so that no two lists of parts collide."""
    h = hashlib.sha256()
    for p in parts:
        if not isinstance(p, bytes):
            p = (p if isinstance(p, str) else json.dumps(p, sort_keys=True, default=str)).encode()
        h.update(len(p).to_bytes(8, "big") + p)
    return h.hexdigest()[:16]


def files_hash(*paths: Any) -> str:
    """`task_hash` of the files at `paths` (their names and contents).

    Raises:
        OSError: a file cannot be read.
    """
    parts: list[Any] = []
    for path in paths:
        with open(path, "rb") as fh:
            parts += [os.path.basename(path), fh.read()]
    return task_hash(*parts)


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

    The info `reset` returns may carry `task_hash` (str, see `task_hash`): a content hash of what defines
    the task it starts (its game files, its goal and product records; for a procedural task, the env id
    and what the task builds it with, never the episode's seed). Episodes record it, and `agent-sft
    verify` reports a task whose hash changed since (an edited game file) before replaying its actions.
    """

    def tasks(self) -> list[TaskSpec]:
        """Every task this env can play, in a stable order."""
        ...

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]: ...

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]: ...

    def close(self) -> None: ...


# The registry lives in `agent_sft.envs.registry`; these names stay importable from here.
from agent_sft.envs.registry import make, register, registered  # noqa: E402

__all__ = ["TaskList", "TaskSpec", "TextEnv", "files_hash", "make", "register", "registered", "task_hash"]
