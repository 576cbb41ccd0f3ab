"""TextWorld games on the real engine (Jericho's Z-machine + TextWorld's state tracking), as a `TextEnv`.

Without `games`, the env plays the built-in game set shipped in this package.

    env = TextworldEnv(task_types=["tw-cooking"], expert="walkthrough")
    task = env.tasks()[0]
    obs, info = env.reset(seed=0, options={"task_id": task.task_id})
    obs, reward, terminated, truncated, info = env.step(info["expert_plan"][0])
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from agent_sft.envs.base import TaskList, TaskSpec, files_hash
from agent_sft.envs.textworld.games import (
    BUILTIN,
    CUSTOM,
    GameFileError,
    builtin_games_root,
    builtin_task_type,
    challenge_of,
    find_games,
    load_engine,
    read_game_data,
)
from agent_sft.envs.textworld.tasks import EXPERTS, select_task_types
from agent_sft.envs.textworld.text import REFUSED, clean_feedback, is_refused, one_line, sanitize

# TextWorld parses a game's logic with a parser that is not thread-safe: two envs of one process (env.pool=thread)
# load or reset their games one at a time.
_LOADING = threading.Lock()


class TextworldEnv:
    """TextWorld games, one at a time, with the engine's admissible commands and its expert plans.

    Observations are the game's own text, without the ASCII-art banner of the first one and the
    status line the interpreter prints after each turn. Interpreter commands that would touch files
    or restart the story behind the state tracker's back (save, restore, script, restart, quit,
    undo, TextWorld's own `tw-*` commands) are refused without reaching the game.

    Args:
        games: a `.z8` game file (with its `.json`) or a folder searched recursively for them;
            None plays the built-in set.
        task_types: keep only games of these types (a type, or a challenge name for all its levels);
            None keeps all.
        max_steps: steps before an episode is truncated.
        expert: "walkthrough" (the game's walkthrough; once the agent leaves it, the engine's
            replanned winning policy), "policy" (the engine's winning policy from every state) or
            None (no `expert_plan`; faster steps).
        cache_size: engines kept loaded (one game each), so re-resetting a recent game is cheap.

    Raises:
        ImportError: textworld is not installed.
        GameFileError: a game cannot be played, or a folder holds none (the message names the file).
        ValueError: an unknown expert, or no game of the asked task types.
    """

    def __init__(
        self,
        games: str | Path | None = None,
        task_types: list[str] | str | None = None,
        max_steps: int = 50,
        expert: str | None = "walkthrough",
        cache_size: int = 4,
    ) -> None:
        if expert not in (*EXPERTS, None):
            raise ValueError(f"unknown TextWorld expert {expert!r}; allowed: {', '.join(EXPERTS)} or None")
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self._tw, _ = load_engine()
        self.max_steps = int(max_steps)
        self.expert = expert
        self.cache_size = max(1, int(cache_size))
        self.builtin = games is None
        if self.builtin:
            self.root, stories = find_games(builtin_games_root())
            self.source = BUILTIN
        else:
            self.root, stories = find_games(games)
            self.source = str(games)
        all_tasks = [self._task(story) for story in stories]
        keep = set(select_task_types(task_types, sorted({t.task_type for t in all_tasks}), self.source))
        self._tasks = [t for t in all_tasks if t.task_type in keep]
        self._choice = TaskList(self._tasks, "TextWorld", f"games in {self.source}")
        self._engines: OrderedDict[str, Any] = OrderedDict()
        self._hashes: dict[str, str] = {}  # task id -> `task_hash` of its files, read once per env
        self._engine = None
        self._task: TaskSpec | None = None
        self._state: Any = None
        self._goal = ""
        self._seed = 1
        self._steps = 0
        self._done = True
        self._sent: list[str] = []  # commands the game received this episode, to replay when replanning
        self._walk: list[str] = []
        self._replanning = False

    # --- task list --------------------------------------------------------------------------------

    def _task(self, story: Path) -> TaskSpec:
        rel = story.relative_to(self.root).with_suffix("").as_posix()
        if self.builtin:
            return TaskSpec(f"textworld/{BUILTIN}/{rel}", builtin_task_type(story.stem), BUILTIN, {"game": rel})
        task_type = challenge_of(read_game_data(story))
        return TaskSpec(f"textworld/{rel}", task_type, CUSTOM, {"game": rel})

    def tasks(self) -> list[TaskSpec]:
        """Every playable game, in the order of their paths."""
        return list(self._tasks)

    # --- engine -----------------------------------------------------------------------------------

    def _load(self, task: TaskSpec):
        """The engine playing `task`, from a pool of at most `cache_size` (least recently used goes)."""
        engine = self._engines.pop(task.task_id, None)
        if engine is None:
            story = self.root / (task.extra["game"] + ".z8")
            infos = self._tw.EnvInfos(
                admissible_commands=True, won=True, lost=True, score=True, max_score=True, moves=True,
                objective=True, extras=["walkthrough"],
            )
            try:
                with _LOADING:
                    if len(self._engines) < self.cache_size:
                        engine = self._tw.start(str(story), infos)
                    else:
                        _, engine = self._engines.popitem(last=False)
                        engine.load(str(story))
            except Exception as e:
                raise GameFileError(f"{story}: TextWorld cannot load this game ({type(e).__name__}: {e})") from e
        self._engines[task.task_id] = engine
        return engine

    def _start(self, engine, track_plans: bool):
        """Reset the story; `track_plans` turns on the engine's replanning (costly, so only when needed)."""
        engine.request_infos.policy_commands = track_plans
        # Frotz reads seed 0 as "seed from the clock": keep the interpreter's seed positive.
        engine.seed(self._seed % 2_147_483_646 + 1)
        with _LOADING:
            return engine.reset()

    # --- TextEnv ----------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        """Start a game: `options["task_id"]`, else one drawn from `seed`, else the next in order."""
        task = self._choice.choose((options or {}).get("task_id"), seed)
        engine = self._load(task)
        self._seed = int(seed) if seed is not None else 0
        self._replanning = self.expert == "policy"
        state = self._start(engine, self._replanning)
        self._engine, self._task, self._state = engine, task, state
        self._steps, self._done, self._sent = 0, False, []
        self._walk = list(state.get("extra.walkthrough") or [])
        self._goal = one_line(state.get("objective") or "") or "win the game"
        return clean_feedback(state.feedback, first=True), {**self._info(state), "task_hash": self._task_hash(task)}

    def _task_hash(self, task: TaskSpec) -> str:
        """The hash of the game's files: its story file and its game data."""
        if task.task_id not in self._hashes:
            story = self.root / (task.extra["game"] + ".z8")
            self._hashes[task.task_id] = files_hash(story, story.with_suffix(".json"))
        return self._hashes[task.task_id]

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self._engine is None or self._done:
            raise RuntimeError("the episode is over (or never started); call reset() first")
        command = sanitize(action)
        before = self._state
        if is_refused(command):
            obs, state = REFUSED, before
        else:
            state, _, _ = self._engine.step(command)
            self._sent.append(command)
            obs = clean_feedback(state.feedback)
        self._steps += 1
        self._state = state
        if self.expert == "walkthrough" and not self._replanning:
            self._follow(command, before, state)
            state = self._state  # the same game state; replanned when the agent left the walkthrough
        reward = float((state.get("score") or 0) - (before.get("score") or 0))
        terminated = bool(state.get("won") or state.get("lost"))
        truncated = not terminated and self._steps >= self.max_steps
        self._done = terminated or truncated
        return obs, reward, terminated, truncated, self._info(state)

    def _follow(self, command: str, before, after) -> None:
        """Keep the walkthrough while the agent follows it; replan once the agent changed the world off it."""
        if self._walk and command == self._walk[0]:
            self._walk.pop(0)
        elif set(before["_facts"]) != set(after["_facts"]):
            self._replan()

    def _replan(self) -> None:
        """Turn on the engine's winning-policy tracking: restart the story and replay this episode's commands."""
        self._replanning = True
        state = self._start(self._engine, True)
        for command in self._sent:
            state, _, _ = self._engine.step(command)
        self._state = state

    def _plan(self, state) -> list[str]:
        if state.get("won") or state.get("lost"):
            return []
        if not self._replanning:
            admissible = set(state.get("admissible_commands") or [])
            while self._walk and self._walk[0] not in admissible:
                self._walk.pop(0)  # e.g. "open door" for a door already open: the game would only say so
            if self._walk:
                return list(self._walk)
            self._replan()  # the walkthrough ran out before a win
            state = self._state
        return list(state.get("policy_commands") or [])

    def _info(self, state) -> dict:
        task = self._task
        info = {
            "admissible_actions": list(state.get("admissible_commands") or []),
            "task_id": task.task_id,
            "task_type": task.task_type,
            "goal": self._goal,
            "won": bool(state.get("won")),
            "lost": bool(state.get("lost")),
            "game_split": task.game_split,
            "step": self._steps,
            "score": int(state.get("score") or 0),
            "max_score": int(state.get("max_score") or 0),
            "moves": int(state.get("moves") or 0),
        }
        if self.expert is not None:
            info["expert_plan"] = self._plan(state)
            info["expert"] = self.expert
        return info

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
        self._engine = None
        self._done = True

    def __enter__(self) -> TextworldEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TextworldEnv(source={self.source!r}, games={len(self._tasks)}, expert={self.expert!r})"
