"""BabyAI's levels as agent-sft tasks: level ids and short names, the default level set, task ids.

A task is one (level, layout seed) pair: `babyai/BabyAI-GoToRedBall-v0/0003` is the layout that
`gymnasium.make("BabyAI-GoToRedBall-v0").reset(seed=3)` generates. Its task type is the level's short
name (`GoToRedBall`).
"""

from __future__ import annotations

import re

from agent_sft.envs.base import TaskSpec

ENV_NAME = "babyai"
GAME_SPLIT = "seeded"
EXPERTS = ("bot",)

DEFAULT_LEVELS = (
    "BabyAI-GoToRedBall-v0",
    "BabyAI-GoToLocal-v0",
    "BabyAI-GoToObjMazeS4R2-v0",
    "BabyAI-PickupLoc-v0",
    "BabyAI-PutNextLocal-v0",
    "BabyAI-OpenDoor-v0",
    "BabyAI-ActionObjDoor-v0",
    "BabyAI-UnlockLocal-v0",
    "BabyAI-KeyCorridorS3R1-v0",
)
"""Levels covering going to, picking up, putting next to, opening, unlocking and a small maze; the bot
wins each of their first 300 layouts in at most 35 steps (so within the default `max_steps` of 50)."""

_LEVEL = re.compile(r"BabyAI-([A-Za-z0-9]+)-v(\d+)")
_SHORT = re.compile(r"[A-Za-z0-9]+")


def normalize_level(name: str) -> str:
    """The gymnasium id of a level: `BabyAI-GoToRedBall-v0` as is, a short name `GoToRedBall` as its v0.

    Raises:
        ValueError: the name is neither.
    """
    name = str(name).strip()
    if _LEVEL.fullmatch(name):
        return name
    if _SHORT.fullmatch(name):
        return f"BabyAI-{name}-v0"
    raise ValueError(f"{name!r} is not a BabyAI level id (such as BabyAI-GoToRedBall-v0) or short name (GoToRedBall)")


def normalize_levels(levels: list[str] | tuple[str, ...] | str | None) -> list[str]:
    """Level ids for `levels` (None: the default set), in the given order, without repeats."""
    if levels is None:
        return list(DEFAULT_LEVELS)
    if isinstance(levels, str):
        levels = [levels]
    out: list[str] = []
    for name in levels:
        level = normalize_level(name)
        if level not in out:
            out.append(level)
    if not out:
        raise ValueError("no levels given; e.g. BabyAI-GoToRedBall-v0")
    return out


def short_name(level: str) -> str:
    """`BabyAI-GoToRedBall-v0` -> `GoToRedBall` (the task type)."""
    m = _LEVEL.fullmatch(level)
    return m.group(1) if m else level


def normalize_task_types(task_types: list[str] | tuple[str, ...] | str | None, levels: list[str]) -> list[str]:
    """The short names of `levels` that `task_types` keeps (short names or level ids, any case).

    Raises:
        ValueError: a task type that names none of `levels`.
    """
    names = [short_name(level) for level in levels]
    if task_types is None:
        return names
    if isinstance(task_types, str):
        task_types = [task_types]
    by_key = {n.lower(): n for n in names} | {level.lower(): short_name(level) for level in levels}
    out: list[str] = []
    for t in task_types:
        found = by_key.get(str(t).strip().lower())
        if found is None:
            raise ValueError(f"unknown BabyAI task type {t!r}; the levels played give: {', '.join(names)}")
        if found not in out:
            out.append(found)
    if not out:
        raise ValueError(f"task_types is empty; pick from {', '.join(names)}")
    return out


def task_id(level: str, seed: int) -> str:
    return f"{ENV_NAME}/{level}/{seed:04d}"


def make_tasks(levels: list[str], seeds_per_level: int, seed_offset: int, task_types: list[str]) -> list[TaskSpec]:
    """Levels x seeds, level by level in the given order, seeds ascending."""
    wanted = set(task_types)
    return [
        TaskSpec(task_id(level, seed), short_name(level), GAME_SPLIT, {"level": level, "layout_seed": seed})
        for level in levels
        if short_name(level) in wanted
        for seed in range(seed_offset, seed_offset + seeds_per_level)
    ]
