"""ALFWorld on its real text engine (TextWorld's PDDL backend), behind the `TextEnv` protocol.

Without real ALFWorld data, the env plays the built-in game set shipped in this package.

    env = AlfworldEnv(task_types=["clean"], expert="planner")
    task = env.tasks()[0]
    obs, info = env.reset(seed=0, options={"task_id": task.task_id})
    obs, reward, terminated, truncated, info = env.step(info["expert_plan"][0])
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from agent_sft.envs.alfworld.engine import (
    BUILTIN,
    GAME_FILE,
    builtin_games_root,
    engine_guard,
    load_engine,
    resolve_root,
    stable_seed,
    writable_cache,
    write_game_file,
)
from agent_sft.envs.alfworld.tasks import EXPERTS, SHORT_NAME, SPLITS, TASK_TYPES, normalize_task_types
from agent_sft.envs.base import TaskList, TaskSpec, files_hash

logger = logging.getLogger(__name__)
_GOAL_RE = re.compile(r"Your task is to: (.*?)\.?\s*$", re.S)


def _parse_task_folder(name: str) -> dict[str, str]:
    """ALFWorld task folders read `<task_type>-<object>-<mrecep>-<recep>-<scene>`."""
    parts = name.split("-")
    if len(parts) < 5:
        return {}
    return {"object_target": parts[1], "mrecep_target": parts[2], "parent_target": parts[3], "scene": parts[4]}


class AlfworldEnv:
    """ALFWorld text games on the real engine, one game at a time.

    Args:
        data_path: ALFWorld data root holding `json_2.1.1/{train,valid_seen,valid_unseen}`, or
            "builtin". Default: $ALFWORLD_DATA (or ~/.cache/alfworld) when it holds json_2.1.1,
            else the built-in game set (logged as a warning).
        game_split: which split of the data to play: "train", "valid_seen" or "valid_unseen".
        task_types: short task-type names or aliases to keep (default: all six).
        max_steps: steps before an episode is truncated.
        expert: "planner" (the PDDL planner's plan, replanned every step), "handcoded" (ALFWorld's
            rule-based expert, one action ahead) or None (no `expert_plan`, faster steps).
        cache_size: engines kept loaded (one game each) so that re-resetting a recent game is cheaper.

    Raises:
        ImportError: alfworld is not installed.
        ValueError: an unknown task type, split or expert.
        FileNotFoundError: `data_path` is not an ALFWorld data folder.
    """

    def __init__(
        self,
        data_path: str | os.PathLike | None = None,
        game_split: str = "train",
        task_types: list[str] | str | None = None,
        max_steps: int = 50,
        expert: str | None = "planner",
        cache_size: int = 4,
    ) -> None:
        if game_split not in SPLITS:
            raise ValueError(f"unknown ALFWorld game_split {game_split!r}; allowed: {', '.join(SPLITS)}")
        if expert not in (*EXPERTS, None):
            raise ValueError(f"unknown ALFWorld expert {expert!r}; allowed: 'planner', 'handcoded' or None")
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.task_types = normalize_task_types(task_types)
        self.max_steps = int(max_steps)
        self.expert = expert
        self.cache_size = max(1, int(cache_size))

        root, self.source = resolve_root(data_path)  # before importing alfworld, which sets $ALFWORLD_DATA
        self._tw, self._alfred, *_ = load_engine()
        self.builtin = root is None
        if self.builtin:
            if game_split != "train":
                raise ValueError(
                    f"the built-in ALFWorld game set has only train games (asked for {game_split!r}); "
                    "pass data_path=<ALFWorld data> for valid_seen/valid_unseen"
                )
            root = builtin_games_root()
        self.root = root
        self.game_split = game_split
        self._tasks = self._scan()
        self._choice = TaskList(self._tasks, "ALFWorld", f"games in {self.source} ({self.game_split})")
        self._games: OrderedDict[str, Any] = OrderedDict()
        self._hashes: dict[str, str] = {}  # task id -> `task_hash` of its files, read once per env
        self._env = None
        self._task: TaskSpec | None = None
        self._goal = ""
        self._steps = 0
        self._done = True
        self._seed = 0
        self._expert_error = ""

    # --- task list --------------------------------------------------------------------------------

    def _scan(self) -> list[TaskSpec]:
        split_dir = self.root / "json_2.1.1" / self.game_split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"no {self.game_split} split in {self.source}: {split_dir} is missing")
        wanted = {TASK_TYPES[t] for t in self.task_types}
        label = BUILTIN if self.builtin else self.game_split
        tasks = []
        for traj in sorted(split_dir.glob("*/*/traj_data.json")):
            trial = traj.parent
            folder = trial.parent.name
            long_type = folder.split("-", 1)[0]
            if long_type not in wanted or "movable" in folder or "Sliced" in folder:
                continue
            if not (trial / GAME_FILE).is_file() and not (trial / "initial_state.pddl").is_file():
                continue
            task_id = trial.relative_to(self.root).as_posix()
            extra = {"alfworld_task_type": long_type, **_parse_task_folder(folder)}
            tasks.append(TaskSpec(task_id, SHORT_NAME[long_type], label, extra))
        return tasks

    def tasks(self) -> list[TaskSpec]:
        """Every playable game, sorted by its portable id (relative to the data root)."""
        return list(self._tasks)

    # --- engine -----------------------------------------------------------------------------------

    def _game_file(self, task: TaskSpec) -> Path:
        trial = self.root / task.task_id
        if (trial / GAME_FILE).is_file():
            return trial / GAME_FILE
        key = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:16]
        out = writable_cache("trials") / key / task.task_id
        if not (out / GAME_FILE).is_file():
            write_game_file(trial, out, goal_seed=task.task_id)
        return out / GAME_FILE

    def _load(self, task: TaskSpec):
        """The engine playing `task`, from a pool of at most `cache_size` engines.

        A game played recently keeps its engine, so resetting it again only rebuilds the game state.
        A new game takes a fresh engine while the pool has room, else the least recently used one
        loads it: each engine holds its own copy of the planner library, so the pool stays bounded.
        """
        env = self._games.pop(task.task_id, None)
        if env is None:
            game_file = str(self._game_file(task))
            with engine_guard():
                if len(self._games) < self.cache_size:
                    env = self._tw.start(game_file, self._infos(), wrappers=self._wrappers())
                else:
                    _, env = self._games.popitem(last=False)
                    env.load(game_file)
        self._games[task.task_id] = env
        return env

    def _infos(self):
        extras = ["gamefile"] + (["expert_plan"] if self.expert is not None else [])
        return self._tw.EnvInfos(won=True, admissible_commands=True, extras=extras)

    def _wrappers(self) -> list:
        wrappers = [self._alfred.AlfredDemangler(), self._alfred.AlfredInfos]
        if self.expert is not None:
            wrappers.append(self._alfred.AlfredExpert(expert_type=self.expert))
        return wrappers

    # --- TextEnv ----------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        """Start a game: `options["task_id"]`, else one drawn from `seed`, else the next in order."""
        task = self._choice.choose((options or {}).get("task_id"), seed)
        env = self._load(task)
        self._seed = seed if seed is not None else stable_seed(task.task_id)
        with engine_guard(self._seed):
            raw = env.reset()
        obs = raw.feedback
        self._env, self._task = env, task
        self._steps, self._done, self._expert_error = 0, False, ""
        m = _GOAL_RE.search(obs)
        self._goal = m.group(1).strip() if m else ""
        return obs, {**self._info(raw), "task_hash": self._task_hash(task)}

    def _task_hash(self, task: TaskSpec) -> str:
        """The hash of the game's files: its trajectory data and the game file the engine loads."""
        if task.task_id not in self._hashes:
            self._hashes[task.task_id] = files_hash(self.root / task.task_id / "traj_data.json", self._game_file(task))
        return self._hashes[task.task_id]

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self._env is None or self._done:
            raise RuntimeError("the episode is over (or never started); call reset() first")
        env, before = self._env, getattr(self._env, "state", None)
        # The handcoded expert breaks ties with the global `random`: seed it per step.
        with engine_guard(stable_seed(f"{self._seed}/{self._steps}")):
            try:
                raw, score, _ = env.step(str(action))
            except Exception as e:
                # AlfredExpert stores the new state before asking its expert for the next action: if
                # the expert failed, the game moved on and only the plan is missing.
                if self.expert is None or getattr(env, "state", None) is before:
                    raise
                raw, score = env.state, env.state.get("score") or 0
                raw["extra.expert_plan"] = []
                self._expert_error = f"{self.expert} expert failed: {type(e).__name__} {e}".strip()
                logger.info("%s (task %s, step %d)", self._expert_error, self._task.task_id, self._steps + 1)
        obs = raw.feedback
        self._steps += 1
        info = self._info(raw)
        terminated = info["won"]
        truncated = not terminated and self._steps >= self.max_steps
        self._done = terminated or truncated
        return obs, float(score), terminated, truncated, info

    def _info(self, raw: dict) -> dict:
        task = self._task
        info = {
            "admissible_actions": list(raw.get("admissible_commands") or []),
            "task_id": task.task_id,
            "task_type": task.task_type,
            "goal": self._goal,
            "won": bool(raw.get("won")),
            "game_split": task.game_split,
            "step": self._steps,
        }
        if self.expert is not None:
            info["expert_plan"] = list(raw.get("extra.expert_plan") or [])
            info["expert"] = self.expert
            if self._expert_error:
                info["expert_error"] = self._expert_error
        return info

    def close(self) -> None:
        for env in self._games.values():
            env.close()
        self._games.clear()
        self._env = None
        self._done = True

    def __enter__(self) -> AlfworldEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"AlfworldEnv(source={self.source!r}, game_split={self.game_split!r}, "
            f"games={len(self._tasks)}, expert={self.expert!r})"
        )
