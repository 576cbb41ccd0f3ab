"""TextArena's options (`env.textarena.*`), checked when the config is read, before any env starts."""

from __future__ import annotations

from dataclasses import dataclass

from agent_sft.envs.specs import EnvOptions, OptionError, option
from agent_sft.envs.textarena.games import DEFAULT_GAMES, OFFLINE_GAMES, check_games


@dataclass
class TextArenaOptions(EnvOptions):
    games: list[str] = option(
        list(DEFAULT_GAMES),
        "TextArena env ids to play (single-player games that run offline); default one of each game.",
        choices=tuple(OFFLINE_GAMES),
    )
    seeds_per_game: int = option(100, "Seeded tasks per game: seeds seed_offset .. seed_offset+seeds_per_game-1.")
    seed_offset: int = option(0, "First seed of each game's tasks.")

    def __post_init__(self) -> None:
        try:
            self.games = check_games(self.games)
        except ValueError as err:
            raise OptionError("games", str(err)) from None
        if int(self.seeds_per_game) < 1:
            raise OptionError("seeds_per_game", f"must be >= 1, got {self.seeds_per_game}")
        if int(self.seed_offset) < 0:
            raise OptionError("seed_offset", f"must be >= 0, got {self.seed_offset}")
