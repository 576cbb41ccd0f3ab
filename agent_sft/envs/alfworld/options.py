"""ALFWorld's options (`env.alfworld.*`), checked when the config is read, before any env starts."""

from __future__ import annotations

import os
from dataclasses import dataclass

from agent_sft.envs.alfworld.tasks import SPLITS, normalize_task_types
from agent_sft.envs.specs import EnvOptions, OptionError, option


@dataclass
class AlfworldOptions(EnvOptions):
    data_path: str | None = option(
        None, "ALFWorld data root holding json_2.1.1/; default $ALFWORLD_DATA, else the built-in games (`builtin`)."
    )
    game_split: str = option(
        "train",
        "Game split to play: valid_seen/valid_unseen are ALFWorld's evaluation games (flagged on the card).",
        choices=SPLITS,
    )
    task_types: list[str] = option(
        [], "Only these task types (e.g. pick_and_place, clean); empty for all.", fingerprint=False
    )

    def __post_init__(self) -> None:
        if self.task_types:
            try:
                normalize_task_types(self.task_types)
            except ValueError as err:
                raise OptionError("task_types", str(err)) from None
        if self.game_split not in SPLITS:
            raise OptionError("game_split", f"{self.game_split!r} is not one of {', '.join(SPLITS)}")
        if self.data_path not in (None, "builtin"):
            root = os.path.normpath(os.path.expanduser(self.data_path))
            if os.path.basename(root) == "json_2.1.1":
                root = os.path.dirname(root)
            if not os.path.isdir(os.path.join(root, "json_2.1.1")):
                raise OptionError(
                    "data_path",
                    f"{self.data_path} has no json_2.1.1 folder (ALFWorld data as "
                    "alfworld-download writes it); or use env.alfworld.data_path=builtin for the built-in games",
                )
            if not os.path.isdir(os.path.join(root, "json_2.1.1", self.game_split)):
                raise OptionError("game_split", f"{self.data_path} has no json_2.1.1/{self.game_split} folder")

    def kwargs(self) -> dict:
        return {"data_path": self.data_path, "game_split": self.game_split, "task_types": list(self.task_types) or None}
