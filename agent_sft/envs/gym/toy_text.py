"""The built-in gymnasium games: FrozenLake (a new random map per seed) and Taxi, described in plain text.

Both name their actions, describe the board in words besides the map, judge the win from the engine's
own ending (FrozenLake: the goal reached; Taxi: the passenger dropped off at the destination), and
carry a shortest-path expert.
"""

from __future__ import annotations

from typing import Any

from agent_sft.envs.gym.env import GymTextEnv
from agent_sft.envs.gym.experts import TablePlanner, frozenlake_plan
from agent_sft.envs.gym.games import FROZENLAKE_ACTIONS, FROZENLAKE_ID, TAXI_ACTIONS, TAXI_GOAL, TAXI_ID
from agent_sft.envs.gym.text import TAXI_STOPS, frozenlake_text, taxi_text

MAP_SIZES = {"4x4": 4, "8x8": 8}


def _rows(desc: Any) -> list[str]:
    """gymnasium's byte-character map as strings."""
    return ["".join(c.decode() for c in row) for row in desc.tolist()]


class FrozenLakeTextEnv(GymTextEnv):
    """FrozenLake-v1 as a text game: walk from S to G on the ice without stepping into a hole.

    Args:
        map_name: "4x4" or "8x8", the size of the lake.
        is_slippery: the ice moves the player sideways two times in three (gymnasium's default rule);
            the expert still walks its shortest path, replanned after each slip, and may fall in a hole.
        random_maps: a new map for every seed (gymnasium's `generate_random_map(size, seed=task seed)`,
            always with a way to the goal); off, every task plays gymnasium's fixed map of that size.
        seeds, seed_offset, max_steps, expert: as for `GymTextEnv`.
    """

    name = "frozenlake"

    def __init__(
        self,
        map_name: str = "4x4",
        is_slippery: bool = False,
        random_maps: bool = True,
        seeds: int = 100,
        seed_offset: int = 0,
        max_steps: int = 50,
        expert: str | None = None,
    ) -> None:
        if map_name not in MAP_SIZES:
            raise ValueError(f"unknown FrozenLake map_name {map_name!r}; allowed: {', '.join(MAP_SIZES)}")
        self.map_name = map_name
        self.random_maps = bool(random_maps)
        super().__init__(
            FROZENLAKE_ID,
            action_names=list(FROZENLAKE_ACTIONS),
            env_kwargs={"is_slippery": bool(is_slippery)},
            success_reward=1.0,
            seeds=seeds,
            seed_offset=seed_offset,
            max_steps=max_steps,
            expert=expert,
        )

    def _render_mode(self) -> str | None:
        return None

    def _gym_kwargs(self, seed: int) -> dict:
        if not self.random_maps:
            return {**self.env_kwargs, "map_name": self.map_name}
        from gymnasium.envs.toy_text.frozen_lake import generate_random_map

        return {**self.env_kwargs, "desc": generate_random_map(MAP_SIZES[self.map_name], seed=seed)}

    def _load(self, task):
        env = super()._load(task)
        self._desc = _rows(env.unwrapped.desc)
        return env

    def _describe(self, obs: Any, last: tuple | None) -> str:
        return frozenlake_text(self._desc, int(obs), None if last is None else last[:2])

    def _is_won(self, reward: float, terminated: bool) -> bool:
        row, col = divmod(int(self._env.unwrapped.s), len(self._desc[0]))
        return terminated and self._desc[row][col] == "G"

    def _task_goal(self) -> str:
        n = len(self._desc)
        return (
            f"Cross the frozen lake from the start S (row 1, column 1) to the goal G (row {n}, column {n}) "
            "without stepping into a hole H."
        )

    def _make_planner(self, env: Any) -> TablePlanner | None:
        return None

    def _check_expert(self) -> None:
        pass

    def _plan(self) -> list[str]:
        return frozenlake_plan(self._desc, int(self._env.unwrapped.s), self.action_names)

    def _engine_info(self) -> dict:
        return {}


class TaxiTextEnv(GymTextEnv):
    """Taxi-v4 as a text game: drive to the passenger, pick them up, drop them off at their destination.

    The task seed picks the start: where the taxi, the passenger and the destination are.

    Args:
        is_rainy: the taxi skids sideways one time in five; the expert replans after each skid.
        fickle_passenger: the passenger may change their destination once, after the first move with them.
        seeds, seed_offset, max_steps, expert: as for `GymTextEnv`.
    """

    name = "taxi"

    def __init__(
        self,
        is_rainy: bool = False,
        fickle_passenger: bool = False,
        seeds: int = 100,
        seed_offset: int = 0,
        max_steps: int = 50,
        expert: str | None = None,
    ) -> None:
        self.fickle_passenger = bool(fickle_passenger)
        super().__init__(
            TAXI_ID,
            action_names=list(TAXI_ACTIONS),
            env_kwargs={"is_rainy": bool(is_rainy), "fickle_passenger": self.fickle_passenger},
            success_reward=20.0,
            seeds=seeds,
            seed_offset=seed_offset,
            max_steps=max_steps,
            expert=expert,
        )

    def _render_mode(self) -> str | None:
        return None

    def _load(self, task):
        env = super()._load(task)
        self._map = _rows(env.unwrapped.desc)
        self._locs = [tuple(loc) for loc in env.unwrapped.locs]
        return env

    def _decoded(self) -> tuple[int, int, int, int]:
        return tuple(int(x) for x in self._env.unwrapped.decode(self._env.unwrapped.s))

    def _describe(self, obs: Any, last: tuple | None) -> str:
        if last is not None:
            name, before, reward, terminated = last
            last = (name, tuple(int(x) for x in self._env.unwrapped.decode(before)), reward, terminated)
        return taxi_text(self._map, self._locs, self._decoded(), last)

    def _task_goal(self) -> str:
        if self.fickle_passenger:  # the destination may change on the way
            return TAXI_GOAL
        _, _, passenger, dest = self._decoded()
        (pr, pc), (dr, dc) = self._locs[passenger], self._locs[dest]
        return (
            f"Pick up the passenger at {TAXI_STOPS[passenger]} (row {pr + 1}, column {pc + 1}) and drop them off "
            f"at {TAXI_STOPS[dest]} (row {dr + 1}, column {dc + 1})."
        )

    def _engine_info(self) -> dict:
        return {}
