"""BabyAI's options (`env.babyai.*`), checked when the config is read, before any env starts.

Every option only chooses tasks: a task id names its level and layout seed, which decide the episode,
so none of them is part of the folder's fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent_sft.envs.babyai.tasks import DEFAULT_LEVELS, normalize_levels, normalize_task_types
from agent_sft.envs.specs import EnvOptions, OptionError, option


@dataclass
class BabyAIOptions(EnvOptions):
    levels: list[str] = option(
        list(DEFAULT_LEVELS),
        "BabyAI levels to play: gymnasium ids (BabyAI-GoToRedBall-v0) or short names for their v0 (GoToRedBall).",
        fingerprint=False,
    )
    seeds_per_level: int = option(10, "Layouts per level: seeds seed_offset .. seed_offset + n - 1.", fingerprint=False)
    seed_offset: int = option(0, "The first layout seed of every level.", fingerprint=False)
    task_types: list[str] = option(
        [], "Only these levels, by short name (e.g. GoToRedBall, PickupLoc); empty for all.", fingerprint=False
    )

    def __post_init__(self) -> None:
        try:
            self.levels = normalize_levels(self.levels)
        except ValueError as err:
            raise OptionError("levels", str(err)) from None
        if self.seeds_per_level < 1:
            raise OptionError("seeds_per_level", f"must be at least 1 (got {self.seeds_per_level})")
        if self.seed_offset < 0:
            raise OptionError("seed_offset", f"must be 0 or more (got {self.seed_offset})")
        if self.task_types:
            try:
                normalize_task_types(self.task_types, self.levels)
            except ValueError as err:
                raise OptionError("task_types", str(err)) from None

    def kwargs(self) -> dict:
        return {
            "levels": list(self.levels),
            "seeds_per_level": self.seeds_per_level,
            "seed_offset": self.seed_offset,
            "task_types": list(self.task_types) or None,
        }
