"""Options of the gymnasium envs (`env.gymnasium.*`, `env.frozenlake.*`, `env.taxi.*`), checked when the config is read.

The generic env's options make the env once to check its id, action space and action names, so a bad
value is reported before any worker starts; the ids agent-sft knows (FrozenLake, Taxi) without extra
arguments are checked without importing gymnasium.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent_sft.envs.gym.games import FROZENLAKE_ID, KNOWN_GAMES
from agent_sft.envs.specs import EnvOptions, OptionError, option

_SEEDS_HELP = "How many tasks: one per seed, the seeds seed_offset, seed_offset + 1, ..."
_OFFSET_HELP = "The first task seed (e.g. 100000 for seeds held out from training data)."


def _check_seeds(opts: Any) -> None:
    if isinstance(opts.seeds, bool) or int(opts.seeds) < 1:
        raise OptionError("seeds", f"must be a whole number >= 1, got {opts.seeds!r}")
    if isinstance(opts.seed_offset, bool) or int(opts.seed_offset) < 0:
        raise OptionError("seed_offset", f"must be a whole number >= 0, got {opts.seed_offset!r}")


@dataclass
class GymnasiumOptions(EnvOptions):
    env_id: str = option(FROZENLAKE_ID, "The gymnasium env id (Discrete actions), e.g. CliffWalking-v1.")
    action_names: list[str] = option(
        [], "One name per action id, in id order (required unless env_id is FrozenLake-v1, FrozenLake8x8-v1 or Taxi-v4)."
    )
    obs_to_text: str | None = option(
        None, "`module:function` or `file.py:function` turning an observation into text; default the ansi render."
    )
    env_kwargs: dict[str, Any] = option({}, "More arguments of gymnasium.make (e.g. {is_slippery: false}).")
    success_reward: float | None = option(
        None,
        "Won when the episode terminates on a step rewarded at least this; default: 1 for FrozenLake, 20 for Taxi, "
        "else no verdict (won stays False).",
    )
    success_on_termination: bool = option(
        False, "Won whenever the episode terminates (for games whose only end is the goal, e.g. CliffWalking)."
    )
    goal: str = option("", "The one-line task the prompt shows; default: a generic one naming the env id.")
    ansi_colors: bool = option(False, "Keep the color codes of the ansi render (removed by default).")
    seeds: int = option(100, _SEEDS_HELP, fingerprint=False)
    seed_offset: int = option(0, _OFFSET_HELP, fingerprint=False)

    def __post_init__(self) -> None:
        _check_seeds(self)
        if not isinstance(self.env_id, str) or not self.env_id.strip():
            raise OptionError("env_id", f"must name a gymnasium env id, got {self.env_id!r}")
        if not isinstance(self.env_kwargs, dict):
            raise OptionError("env_kwargs", f"must be a mapping of gymnasium.make arguments, got {self.env_kwargs!r}")
        if self.success_reward is not None and self.success_on_termination:
            raise OptionError("success_on_termination", "set either success_reward or success_on_termination")
        from agent_sft.envs.gym.env import GameError, check_action_names

        try:
            check_action_names(self.action_names)
        except GameError as err:
            raise OptionError(err.option, str(err)) from None
        if self.obs_to_text:
            from agent_sft.envs.hooks import load_function

            try:
                load_function(self.obs_to_text)
            except ValueError as err:
                raise OptionError("obs_to_text", str(err)) from None
        known = KNOWN_GAMES.get(self.env_id)
        if known is not None and not self.env_kwargs and not self.obs_to_text:
            if self.action_names and len(self.action_names) != len(known.actions):
                raise OptionError(
                    "action_names",
                    f"{self.env_id} has {len(known.actions)} actions: give {len(known.actions)} names "
                    f"(or none for {', '.join(known.actions)})",
                )
            return
        self._check_env(list(self.action_names) or list(known.actions if known else []))

    def _check_env(self, names: list[str]) -> None:
        """Make the env once: its id, arguments, action space and text rendering."""
        from agent_sft.envs.gym.env import GameError, check_game, make_gym_env

        if "render_mode" in self.env_kwargs:
            raise OptionError("env_kwargs", "render_mode is chosen by the env (ansi, or none with obs_to_text)")
        try:
            env = make_gym_env(self.env_id, dict(self.env_kwargs), None)  # the metadata says if it has ansi
        except ImportError as err:
            raise OptionError("env_id", str(err)) from None
        except GameError as err:
            raise OptionError(err.option, str(err)) from None
        try:
            check_game(env, self.env_id, names, bool(self.obs_to_text))
        except GameError as err:
            raise OptionError(err.option, str(err)) from None
        finally:
            env.close()


@dataclass
class FrozenLakeOptions(EnvOptions):
    map_name: str = option("4x4", "Size of the lake: 4x4 or 8x8.", choices=("4x4", "8x8"))
    is_slippery: bool = option(
        False, "Slippery ice: moves go sideways two times in three; the expert may then fall into a hole."
    )
    random_maps: bool = option(True, "A new random map for every seed (off: gymnasium's fixed map for every task).")
    seeds: int = option(100, _SEEDS_HELP, fingerprint=False)
    seed_offset: int = option(0, _OFFSET_HELP, fingerprint=False)

    def __post_init__(self) -> None:
        _check_seeds(self)
        if self.map_name not in ("4x4", "8x8"):
            raise OptionError("map_name", f"{self.map_name!r} is not one of 4x4, 8x8")


@dataclass
class TaxiOptions(EnvOptions):
    is_rainy: bool = option(False, "Rain: the taxi skids sideways one time in five (the expert replans).")
    fickle_passenger: bool = option(
        False, "The passenger may change their destination once, after the first move with them aboard."
    )
    seeds: int = option(100, _SEEDS_HELP, fingerprint=False)
    seed_offset: int = option(0, _OFFSET_HELP, fingerprint=False)

    def __post_init__(self) -> None:
        _check_seeds(self)
