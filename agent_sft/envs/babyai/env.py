"""BabyAI levels (MiniGrid) as a text game: the mission and a description of the agent's view in,
action words out, with minigrid's BabyAIBot as the expert.

    env = BabyAIEnv(levels=["BabyAI-GoToRedBall-v0"], seeds_per_level=2, expert="bot")
    obs, info = env.reset(options={"task_id": "babyai/BabyAI-GoToRedBall-v0/0001"})
    obs, reward, terminated, truncated, info = env.step(info["expert_plan"][0])

The task is the layout: its level is reset with the task's layout seed, and the engine and the bot
draw nothing else at random, so `reset`'s `seed` only picks a task when no task id is given.
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import Any

from agent_sft.envs.babyai.tasks import (
    EXPERTS,
    GAME_SPLIT,
    make_tasks,
    normalize_levels,
    normalize_task_types,
)
from agent_sft.envs.babyai.text import ACTION_WORDS, describe
from agent_sft.envs.base import TaskList, TaskSpec, task_hash

logger = logging.getLogger(__name__)
_INSTALL_HINT = "pip install 'agent-sft[babyai]'"


def load_engine():
    """Import gymnasium, minigrid and the bot quietly, naming the extra to install when missing.

    BabyAI's level generator prints every rejected layout sample to stdout; its `print` is routed to
    this module's debug log instead, so collection output stays clean.
    """
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # minigrid imports pygame for rendering
    try:
        import gymnasium
        import minigrid  # noqa: F401  (registers the BabyAI levels with gymnasium)
        from minigrid.core.actions import Actions
        from minigrid.envs.babyai.core import roomgrid_level
        from minigrid.utils.baby_ai_bot import BabyAIBot
    except ImportError as e:
        raise ImportError(f"the BabyAI environment needs minigrid and gymnasium ({e}); install them with: "
                          f"{_INSTALL_HINT}") from e
    roomgrid_level.print = lambda *args, **kwargs: logger.debug(" ".join(map(str, args)))
    return gymnasium, Actions, BabyAIBot


class BabyAIEnv:
    """BabyAI levels, one seeded layout at a time, through a text view.

    Args:
        levels: BabyAI level ids (or short names for their v0); default `tasks.DEFAULT_LEVELS`.
        seeds_per_level: layouts per level.
        seed_offset: the first layout seed.
        task_types: level short names to keep (default: all of `levels`).
        max_steps: steps before an episode is truncated (the level's own limit applies too).
        expert: "bot" (minigrid's BabyAIBot, one action ahead, replanned after every action) or None
            (no `expert_plan`).

    Raises:
        ImportError: minigrid or gymnasium is not installed.
        ValueError: an unknown level, task type or expert, or a bad count.
    """

    def __init__(
        self,
        levels: list[str] | str | None = None,
        seeds_per_level: int = 10,
        seed_offset: int = 0,
        task_types: list[str] | str | None = None,
        max_steps: int = 50,
        expert: str | None = "bot",
    ) -> None:
        if expert not in (*EXPERTS, None):
            raise ValueError(f"unknown BabyAI expert {expert!r}; allowed: 'bot' or None")
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if int(seeds_per_level) < 1 or int(seed_offset) < 0:
            raise ValueError(f"need seeds_per_level >= 1 and seed_offset >= 0 (got {seeds_per_level}, {seed_offset})")
        self.levels = normalize_levels(levels)
        self.task_types = normalize_task_types(task_types, self.levels)
        self.max_steps = int(max_steps)
        self.expert = expert
        self._gym, actions, self._bot_cls = load_engine()
        self._check_levels()
        self._actions = {word: actions[name] for name, word in ACTION_WORDS.items()}
        self.actions = list(self._actions)
        self._tasks = make_tasks(self.levels, int(seeds_per_level), int(seed_offset), self.task_types)
        self._choice = TaskList(self._tasks, "BabyAI", "tasks (check levels and task_types)")
        self._engines: dict[str, Any] = {}
        self._env: Any = None
        self._task: TaskSpec | None = None
        self._bot: Any = None
        self._plan: list[str] = []
        self._expert_error = ""
        self._image: Any = None
        self._steps = 0
        self._won = False
        self._done = True

    def _check_levels(self) -> None:
        known = [k for k in self._gym.envs.registry if k.startswith("BabyAI-")]
        for level in self.levels:
            if level not in self._gym.envs.registry:
                close = difflib.get_close_matches(level, known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else f" ({len(known)} BabyAI levels exist)"
                raise ValueError(f"unknown BabyAI level {level!r}{hint}")

    def tasks(self) -> list[TaskSpec]:
        """Every (level, layout seed) task, level by level, seeds ascending."""
        return list(self._tasks)

    # --- episode ----------------------------------------------------------------------------------

    def _engine(self, level: str):
        """One engine per level, reset for each of its layouts (no window: render_mode stays None)."""
        if level not in self._engines:
            self._engines[level] = self._gym.make(level, disable_env_checker=True).unwrapped
        return self._engines[level]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        """Start a task: `options["task_id"]`, else one drawn from `seed`, else the next in order."""
        task = self._choice.choose((options or {}).get("task_id"), seed)
        env = self._engine(task.extra["level"])
        obs, _ = env.reset(seed=task.extra["layout_seed"])
        self._env, self._task, self._image = env, task, obs["image"]
        self._steps, self._won, self._done = 0, False, False
        self._bot, self._plan, self._expert_error = None, [], ""
        if self.expert is not None:
            try:
                self._bot = self._bot_cls(env)
            except Exception as e:  # the bot asserts on instructions it cannot plan for
                self._expert_failed(e)
            self._replan(None)
        info = {**self._info(), "task_hash": task_hash(task.task_id, task.extra)}  # a level and its layout seed
        return describe(obs["image"], obs["direction"], obs["mission"]), info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Play one action word; a word not among `admissible_actions` leaves the grid as it was."""
        if self._env is None or self._done:
            raise RuntimeError("the episode is over (or never started); call reset() first")
        env = self._env
        word = " ".join(str(action).split()).lower()
        self._steps += 1
        if word not in self._actions:
            # The engine knows no such action (minigrid raises on one): the grid stays as it was.
            feedback = f"'{action}' is not an action here; nothing happens. The actions are: {', '.join(self.actions)}."
            obs = feedback + "\n" + describe(self._image, env.agent_dir, env.mission)
            truncated = self._steps >= self.max_steps
            self._done = truncated
            return obs, 0.0, False, truncated, self._info()
        act = self._actions[word]
        raw, reward, terminated, truncated, _ = env.step(act)
        self._image = raw["image"]
        self._won = bool(terminated and reward > 0)
        truncated = not terminated and (truncated or self._steps >= self.max_steps)
        self._done = bool(terminated or truncated)
        if self._done:
            self._plan = []
        else:
            self._replan(act)
        obs = describe(raw["image"], raw["direction"], raw["mission"])
        return obs, float(reward), bool(terminated), truncated, self._info()

    def _replan(self, taken: Any) -> None:
        """The bot's next action after `taken` (what the agent did, which may differ from its advice)."""
        if self._bot is None:
            self._plan = []
            return
        try:
            self._plan = [ACTION_WORDS[self._bot.replan(taken).name]]
        except Exception as e:  # e.g. DisappearedBoxError after the agent opened a box, or a bot assertion
            self._expert_failed(e)

    def _expert_failed(self, e: Exception) -> None:
        self._bot, self._plan = None, []
        self._expert_error = f"bot failed: {type(e).__name__} {e}".strip()
        logger.info("%s (task %s, step %d)", self._expert_error, self._task.task_id, self._steps)

    def _info(self) -> dict:
        task = self._task
        info: dict[str, Any] = {
            "admissible_actions": list(self.actions),
            "task_id": task.task_id,
            "task_type": task.task_type,
            "goal": str(self._env.mission),
            "won": self._won,
            "game_split": GAME_SPLIT,
            "step": self._steps,
        }
        if self.expert is not None:
            info["expert_plan"] = list(self._plan)
            info["expert"] = self.expert
            if self._expert_error:
                info["expert_error"] = self._expert_error
        return info

    def close(self) -> None:
        for env in self._engines.values():
            env.close()
        self._engines.clear()
        self._env, self._bot = None, None
        self._done = True

    def __enter__(self) -> BabyAIEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BabyAIEnv(levels={len(self.levels)}, tasks={len(self._tasks)}, expert={self.expert!r})"
