"""Any gymnasium env with a Discrete action space, as a text game behind the `TextEnv` protocol.

Actions are named by the config (gymnasium numbers them); observations are the env's ansi render, its
color codes removed, or what a user function makes of each observation. A task is one seed of one env
id; the task seed fixes the start (gymnasium's `reset(seed=...)`), the episode seed the randomness after
it (slippery moves and the like), so the same (task, seed) always plays the same.

    env = GymTextEnv("CliffWalking-v1", action_names=["up", "right", "down", "left"],
                     success_on_termination=True, expert="shortest_path")
    obs, info = env.reset(seed=0, options={"task_id": env.tasks()[0].task_id})
    obs, reward, terminated, truncated, info = env.step(info["expert_plan"][0])
"""

from __future__ import annotations

import hashlib
from typing import Any

from agent_sft.envs.base import TaskList, TaskSpec, task_hash
from agent_sft.envs.gym.experts import TablePlanner
from agent_sft.envs.gym.games import (
    EXPERT,
    FROZENLAKE_ID,
    KNOWN_GAMES,
    SPLIT,
    load_gymnasium,
    normalize_action,
    task_id,
    task_seeds,
)
from agent_sft.envs.gym.text import ansi_text
from agent_sft.envs.hooks import load_function

_PROTOCOL_KEYS = {
    "task_id", "task_type", "goal", "won", "game_split", "step", "admissible_actions", "expert_plan", "expert",
    "action_patterns", "action_valid", "invalid_reason",
}


class GameError(ValueError):
    """A gymnasium env that cannot be played as configured; `option` names the option to fix."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def make_gym_env(env_id: str, env_kwargs: dict, render_mode: str | None) -> Any:
    """`gymnasium.make(env_id, ...)`, its failures as `GameError`s naming `env_id` or `env_kwargs`."""
    gym = load_gymnasium()
    try:
        return gym.make(env_id, render_mode=render_mode, disable_env_checker=True, **env_kwargs)
    except gym.error.Error as err:  # unknown or deprecated id, missing dependency of the env
        raise GameError("env_id", f"gymnasium cannot make {env_id!r}: {err}") from None
    except TypeError as err:
        raise GameError("env_kwargs", f"{env_id} does not take these arguments: {err}") from None
    except Exception as err:  # noqa: BLE001 - the env's own code failed; say which env and why
        raise GameError("env_id", f"gymnasium cannot make {env_id!r}: {type(err).__name__}: {err}") from None


def check_game(env: Any, env_id: str, action_names: list[str], text_by_function: bool) -> None:
    """Refuse an env whose actions are not `Discrete` and named one each, or that cannot show itself as text.

    Raises:
        GameError: naming the option to change.
    """
    gym = load_gymnasium()
    space = env.action_space
    if not isinstance(space, gym.spaces.Discrete):
        raise GameError(
            "env_id", f"{env_id} has a {type(space).__name__} action space; only Discrete action spaces can be named"
        )
    n = int(space.n)
    if len(action_names) != n:
        got = f"got {len(action_names)}" if action_names else "none given"
        raise GameError(
            "action_names",
            f"{env_id} has {n} actions (ids {int(space.start)}..{int(space.start) + n - 1}): give {n} action names, "
            f"in id order ({got}), e.g. action_names=[{', '.join(f'a{i}' for i in range(n))}]",
        )
    modes = list(env.metadata.get("render_modes") or [])
    if not text_by_function and "ansi" not in modes:
        raise GameError(
            "obs_to_text",
            f"{env_id} does not render as text (render modes: {', '.join(modes) or 'none'}); "
            "give obs_to_text='module:function' turning an observation into text",
        )


def check_action_names(names: list[str]) -> list[str]:
    """The action names, checked: at least one, none empty, no two the same (ignoring case and spaces)."""
    names = [str(n) for n in names]
    if any(not normalize_action(n) for n in names):
        raise GameError("action_names", f"an action name is empty: {names}")
    seen: dict[str, str] = {}
    for n in names:
        key = normalize_action(n)
        if key in seen:
            raise GameError("action_names", f"{seen[key]!r} and {n!r} are the same action name")
        seen[key] = n
    return names


class GymTextEnv:
    """A gymnasium env played as a text game, one seeded task at a time.

    Args:
        env_id: a registered gymnasium id (`CliffWalking-v1`, or `module:Id` to import its package first).
        action_names: one name per action id, in id order; default: the known names of FrozenLake-v1,
            FrozenLake8x8-v1 and Taxi-v4 (required for any other id).
        obs_to_text: `module:function` or `file.py:function` turning an observation into text; default:
            the env's ansi render.
        env_kwargs: more arguments of `gymnasium.make` (not `render_mode`).
        success_reward: won when the episode terminates on a step rewarded at least this; default: the
            known value for FrozenLake (1) and Taxi (20), else no verdict (won stays False).
        success_on_termination: won whenever the episode terminates (for games whose only end is the goal).
        goal: the one-line task; default: the known game's, else a generic one.
        ansi_colors: keep the ansi render's color codes.
        seeds: how many tasks (task seeds `seed_offset`, `seed_offset + 1`, ...).
        seed_offset: the first task seed.
        max_steps: steps before an episode is truncated.
        expert: "shortest_path" (breadth-first search on the env's transition table `P`, as gymnasium's
            toy-text envs have, towards a successful ending) or None.

    Raises:
        ImportError: gymnasium is not installed.
        ValueError: a bad option (a `GameError` names it), or an expert this env cannot have.
    """

    name = "gymnasium"

    def __init__(
        self,
        env_id: str = FROZENLAKE_ID,
        action_names: list[str] | None = None,
        obs_to_text: str | None = None,
        env_kwargs: dict | None = None,
        success_reward: float | None = None,
        success_on_termination: bool = False,
        goal: str = "",
        ansi_colors: bool = False,
        seeds: int = 100,
        seed_offset: int = 0,
        max_steps: int = 50,
        expert: str | None = None,
    ) -> None:
        load_gymnasium()
        if expert not in (EXPERT, None):
            raise ValueError(f"unknown gymnasium expert {expert!r}; allowed: {EXPERT!r} or None")
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if int(seeds) < 1 or int(seed_offset) < 0:
            raise ValueError(f"seeds must be >= 1 and seed_offset >= 0, got {seeds} and {seed_offset}")
        known = KNOWN_GAMES.get(env_id)
        self.env_id = env_id
        self.action_names = check_action_names(list(action_names or (known.actions if known else [])))
        self._index = {normalize_action(n): i for i, n in enumerate(self.action_names)}
        self.env_kwargs = dict(env_kwargs or {})
        if "render_mode" in self.env_kwargs:
            raise GameError("env_kwargs", "render_mode is chosen by the env (ansi, or none with obs_to_text)")
        self.obs_to_text = obs_to_text
        self._to_text = load_function(obs_to_text) if obs_to_text else None
        if success_reward is None and known is not None:
            success_reward = known.success_reward
        self.success_reward = None if success_reward is None else float(success_reward)
        self.success_on_termination = bool(success_on_termination)
        self._goal = goal or (known.goal if known else f"Play the gymnasium game {env_id} to a successful end.")
        self.ansi_colors = bool(ansi_colors)
        self.max_steps = int(max_steps)
        self.expert = expert
        self.task_type = env_id
        self._tasks = [
            TaskSpec(task_id(self.name, env_id, s), self.task_type, SPLIT, {"env_id": env_id, "seed": s})
            for s in task_seeds(int(seeds), int(seed_offset))
        ]
        self._choice = TaskList(self._tasks, self.name, "tasks")
        self._env: Any = None
        self._env_kwargs: dict | None = None
        self._planner: TablePlanner | None = None
        self._task: TaskSpec | None = None
        self._steps, self._done, self._won = 0, True, False
        self._gym_info, self._obs, self._episode_goal = {}, None, ""
        self._load(self._tasks[0])  # fails now, not at the first reset, on a bad env id or action space
        if expert is not None:
            self._check_expert()

    # --- what a game changes ------------------------------------------------------------------------

    def _render_mode(self) -> str | None:
        return None if self._to_text is not None else "ansi"

    def _gym_kwargs(self, seed: int) -> dict:
        """`gymnasium.make`'s arguments for the task with this seed (the same for every seed here)."""
        return dict(self.env_kwargs)

    def _state(self) -> Any:
        """The engine state the text and the expert need to see a step's effect (toy-text's `s`, else the
        observation)."""
        return getattr(self._env.unwrapped, "s", self._obs)

    def _describe(self, obs: Any, last: tuple | None) -> str:
        """The observation as text; `last` is (action name, state before, reward, terminated) after a step."""
        if self._to_text is not None:
            try:
                return str(self._to_text(obs))
            except Exception as err:
                raise RuntimeError(f"obs_to_text {self.obs_to_text} failed on {obs!r}: {type(err).__name__}: {err}") from err
        return ansi_text(self._env.render(), self.ansi_colors)

    def _is_won(self, reward: float, terminated: bool) -> bool:
        if not terminated:
            return False
        if self.success_on_termination:
            return True
        return self.success_reward is not None and reward >= self.success_reward

    def _task_goal(self) -> str:
        """The episode's one-line goal, read once just after the reset."""
        return self._goal

    def _plan(self) -> list[str]:
        return self._planner.plan(self._state()) if self._planner is not None else []

    def _check_expert(self) -> None:
        """Refuse the expert where it cannot plan: no transition table, or no success to plan for."""
        if self.success_reward is None and not self.success_on_termination:
            raise ValueError(
                f"the {EXPERT} expert plans towards a win: set success_reward or success_on_termination for {self.env_id}"
            )
        if self._planner is None:
            raise ValueError(
                f"the {EXPERT} expert needs a transition table P (as gymnasium's toy-text envs have); {self.env_id} has none"
            )

    # --- engine -------------------------------------------------------------------------------------

    def _load(self, task: TaskSpec) -> Any:
        """The gymnasium env for `task`, made anew only when its `make` arguments differ from the last one's."""
        kwargs = self._gym_kwargs(task.extra["seed"])
        if self._env is None or kwargs != self._env_kwargs:
            if self._env is not None:
                self._env.close()
            env = make_gym_env(self.env_id, kwargs, self._render_mode())
            check_game(env, self.env_id, self.action_names, self._to_text is not None)
            self._env, self._env_kwargs = env, kwargs
            self._first_id = int(env.action_space.start)
            self._planner = self._make_planner(env)
        return self._env

    def _make_planner(self, env: Any) -> TablePlanner | None:
        """A planner over the env's transition table `P` (state -> action -> outcomes), when it has one."""
        table = getattr(env.unwrapped, "P", None)
        if isinstance(table, (dict, list)) and table:
            return TablePlanner(table, self.action_names, self._goal_reward, self._first_id)
        return None

    def _goal_reward(self, reward: float) -> bool:
        return self._is_won(reward, True)

    # --- TextEnv ------------------------------------------------------------------------------------

    def tasks(self) -> list[TaskSpec]:
        """One task per seed, in seed order."""
        return list(self._tasks)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        """Start a task: `options["task_id"]`, else one drawn from `seed`, else the next in order.

        The task's seed seeds gymnasium's reset; `seed` (the episode's) then reseeds the env's random
        generator for what happens after the start.
        """
        task = self._choice.choose((options or {}).get("task_id"), seed)
        env = self._load(task)
        obs, gym_info = env.reset(seed=task.extra["seed"])
        if seed is not None:
            from gymnasium.utils import seeding

            digest = hashlib.sha256(f"{task.extra['seed']}\x1f{seed}".encode()).digest()
            env.unwrapped.np_random, _ = seeding.np_random(int.from_bytes(digest[:8], "big"))
        self._task, self._steps, self._done, self._won = task, 0, False, False
        self._obs, self._episode_goal = obs, self._task_goal()
        self._gym_info = gym_info
        # the env id, what `gymnasium.make` builds it with and the seed of its start: what defines the task
        made = task_hash(task.task_id, self.env_id, self._gym_kwargs(task.extra["seed"]), task.extra["seed"])
        return self._describe(obs, None), {**self._info(), "task_hash": made}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self._env is None or self._done:
            raise RuntimeError("the episode is over (or never started); call reset() first")
        index = self._index.get(normalize_action(action))
        self._steps += 1
        if index is None:
            names = ", ".join(self.action_names)
            text = f"{action!r} is not an action of this game; the actions are: {names}.\n{self._describe(self._obs, None)}"
            reward, terminated, gym_truncated = 0.0, False, False
        else:
            name, before = self.action_names[index], self._state()
            obs, reward, terminated, gym_truncated, self._gym_info = self._env.step(self._first_id + index)
            self._obs = obs
            reward, terminated = float(reward), bool(terminated)
            self._won = self._is_won(reward, terminated)
            text = self._describe(obs, (name, before, reward, terminated))
            if self._planner is not None and self.expert is not None:
                self._planner.advance(name, self._state())
        truncated = not terminated and (bool(gym_truncated) or self._steps >= self.max_steps)
        self._done = terminated or truncated
        return text, reward, terminated, truncated, self._info()

    def _info(self) -> dict:
        task = self._task
        info = {
            "task_id": task.task_id,
            "task_type": task.task_type,
            "goal": self._episode_goal,
            "won": self._won,
            "game_split": task.game_split,
            "step": self._steps,
            "admissible_actions": list(self.action_names),
        }
        info.update(self._engine_info())
        if self.expert is not None:
            info["expert_plan"] = [] if self._done else self._plan()
            info["expert"] = self.expert
        return info

    def _engine_info(self) -> dict:
        """The engine's own info values that are JSON scalars (kept per step by the collector)."""
        out = {}
        for key, value in (self._gym_info or {}).items():
            if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
                value = value.item()
            if isinstance(key, str) and key not in _PROTOCOL_KEYS and isinstance(value, (bool, int, float, str)):
                out[key] = value
        return out

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
        self._env, self._env_kwargs, self._done = None, None, True

    def __enter__(self) -> GymTextEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env_id!r}, tasks={len(self._tasks)}, expert={self.expert!r})"
