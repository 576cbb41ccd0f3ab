"""The TextArena games agent-sft offers: single-player, offline, with their goals and experts.

Only games that run without a network are offered. Several TextArena games (Wordle, Hangman,
WordLadder, WordSearch, WordChains, Crosswords, ...) call `nltk.download` when their module is
imported or when they reset, and others need an LLM as game master: those are never imported.
Nothing here imports textarena.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Game:
    """One TextArena game family: its name (the task type), its goal line and whether the expert solves it."""

    name: str
    goal: Callable[[Any], str]  # the one-line goal, from the (unwrapped) TextArena env
    solvable: bool  # the `solver` expert has a plan for it


def _hanoi_goal(env: Any) -> str:
    return (
        f"Move all {env.num_disks} disks from tower A to tower C, moving one top disk at a time and never "
        "putting a larger disk on a smaller one; a move is [source target], e.g. [A C]."
    )


def _sokoban_goal(env: Any) -> str:
    return (
        f"Push all {env.num_boxes} boxes (X) onto the goals (O) by walking the player (P), without pulling "
        "boxes or pushing them into walls; a move is [up], [down], [left] or [right]."
    )


def _minesweeper_goal(env: Any) -> str:
    return (
        f"Reveal every cell without a mine on the {env.rows}x{env.cols} Minesweeper board ({env.num_mines} "
        "mines), never revealing a mine; a move is [row col], e.g. [3 2]."
    )


def _frozenlake_goal(env: Any) -> str:
    return (
        f"Walk from your position (P) to the goal (G) on the {env.size}x{env.size} frozen lake without "
        "falling into a hole (H); a move is [up], [down], [left] or [right]."
    )


GAMES = {
    "TowerOfHanoi": Game("TowerOfHanoi", _hanoi_goal, solvable=True),
    "Sokoban": Game("Sokoban", _sokoban_goal, solvable=True),
    "Minesweeper": Game("Minesweeper", _minesweeper_goal, solvable=False),
    "FrozenLake": Game("FrozenLake", _frozenlake_goal, solvable=True),
}
"""Game family (the task type) -> what agent-sft knows about it."""

OFFLINE_GAMES = {
    "TowerOfHanoi-v0": "TowerOfHanoi",
    "TowerOfHanoi-v0-medium": "TowerOfHanoi",
    "TowerOfHanoi-v0-hard": "TowerOfHanoi",
    "TowerOfHanoi-v0-hardcore": "TowerOfHanoi",
    "TowerOfHanoi-v0-extreme": "TowerOfHanoi",
    # Sokoban-v0-medium is left out: building one of its rooms takes TextArena tens of seconds.
    "Sokoban-v0": "Sokoban",
    "Minesweeper-v0": "Minesweeper",
    "Minesweeper-v0-small": "Minesweeper",
    "Minesweeper-v0-medium": "Minesweeper",
    "Minesweeper-v0-hard": "Minesweeper",
    "FrozenLake-v0": "FrozenLake",
    "FrozenLake-v0-random": "FrozenLake",
    "FrozenLake-v0-hardcore": "FrozenLake",
}
"""TextArena env id -> game family, for every env id that may be played (checked to run offline)."""

DEFAULT_GAMES = ("TowerOfHanoi-v0", "Sokoban-v0", "Minesweeper-v0", "FrozenLake-v0")
TASK_TYPES = tuple(GAMES)
EXPERTS = ("solver",)
GAME_SPLIT = "seeded"

NETWORK_GAMES = ("Wordle", "Hangman", "WordLadder", "WordSearch", "WordChains", "Crosswords", "Codenames",
                 "LetterAuction", "DontSayIt", "TwentyQuestions", "GuessWho")
"""Single- or multi-player TextArena games that download NLTK data or ask an LLM: named in the error."""


def game_of(env_id: str) -> Game:
    """The game family of an offered env id."""
    return GAMES[OFFLINE_GAMES[env_id]]


def task_id(env_id: str, seed: int) -> str:
    """`textarena/<env id>/<seed>`."""
    return f"textarena/{env_id}/{seed}"


def normalize_task_types(task_types: list[str] | tuple[str, ...] | str | None) -> list[str]:
    """Game names (case-insensitive) as TASK_TYPES spells them; all of them for None."""
    if task_types is None:
        return list(TASK_TYPES)
    if isinstance(task_types, str):
        task_types = [task_types]
    by_lower = {t.lower(): t for t in TASK_TYPES}
    out = []
    for name in task_types:
        canon = by_lower.get(str(name).strip().lower())
        if canon is None:
            raise ValueError(f"unknown TextArena task type {name!r}; allowed: {', '.join(TASK_TYPES)}")
        if canon not in out:
            out.append(canon)
    return out


def check_games(games: list[str] | tuple[str, ...]) -> list[str]:
    """The env ids, checked: each one offered, none repeated.

    Raises:
        ValueError: naming the bad id and what is offered.
    """
    out = []
    for gid in games:
        gid = str(gid).strip()
        if gid not in OFFLINE_GAMES:
            family = gid.split("-", 1)[0]
            why = (
                " (it downloads NLTK data or needs an LLM game master, so it is not offered)"
                if family in NETWORK_GAMES
                else ""
            )
            raise ValueError(f"{gid!r} is not an offered TextArena game{why}; offered: {', '.join(OFFLINE_GAMES)}")
        if gid in out:
            raise ValueError(f"{gid!r} is listed twice")
        out.append(gid)
    if not out:
        raise ValueError(f"no games; pick from {', '.join(OFFLINE_GAMES)}")
    return out


def game_tools(info: dict) -> list:
    """A game's moves as tools (`prompt.actions=tools`), by the episode's task type."""
    from agent_sft.envs.tools import Tool

    direction = {"type": "string", "enum": ["up", "down", "left", "right"]}
    tower = {"type": "string", "enum": ["A", "B", "C"]}
    by_game = {
        "TowerOfHanoi": [Tool("move", "Move the top disk of tower `source` onto tower `target`.",
                              {"source": tower, "target": tower}, "[{source} {target}]")],
        "Sokoban": [Tool("move", "Walk the player one cell, pushing a box in the way.", {"direction": direction},
                         "[{direction}]")],
        "FrozenLake": [Tool("move", "Walk one cell.", {"direction": direction}, "[{direction}]")],
        "Minesweeper": [Tool("reveal", "Reveal the cell at `row`, `col` (from 0).",
                             {"row": {"type": "integer"}, "col": {"type": "integer"}}, "[{row} {col}]")],
    }
    return by_game.get(str(info.get("task_type") or ""), [])
