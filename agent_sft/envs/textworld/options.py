"""TextWorld's options (`env.textworld.*`), checked when the config is read, before any env starts."""

from __future__ import annotations

from dataclasses import dataclass

from agent_sft.envs.specs import EnvOptions, OptionError, option
from agent_sft.envs.textworld.games import CHALLENGES, CUSTOM, GameFileError, find_games
from agent_sft.envs.textworld.tasks import TASK_TYPES, select_task_types


@dataclass
class TextworldOptions(EnvOptions):
    games: str | None = option(
        None,
        "A TextWorld game (.z8 with its .json, as tw-make writes) or a folder searched recursively for them; "
        "default: the built-in set (4 challenges x 3 levels).",
    )
    task_types: list[str] = option(
        [],
        "Only these task types (e.g. tw-cooking-l2, or tw-cooking for all its levels); empty for all.",
        fingerprint=False,
    )

    def __post_init__(self) -> None:
        if self.games in ("", "builtin"):
            self.games = None
        if self.games is not None:
            try:
                find_games(self.games)  # every story file is checked: frotz would end the process on a bad one
            except GameFileError as err:
                raise OptionError("games", str(err)) from None
        if self.task_types:
            # A user's games report their challenge or `custom`; the built-in set its own types.
            known = list(TASK_TYPES) if self.games is None else [*CHALLENGES, CUSTOM]
            try:
                select_task_types(self.task_types, known, self.games or "the built-in set")
            except ValueError as err:
                raise OptionError("task_types", str(err)) from None

    def kwargs(self) -> dict:
        out: dict = {"games": self.games}
        if self.task_types:
            out["task_types"] = list(self.task_types)
        return out
