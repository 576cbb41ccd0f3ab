"""TextArena's single-player games (offline ones) behind the `TextEnv` protocol.

A task is a (game, seed) pair: `textarena/TowerOfHanoi-v0/3` plays TextArena's `TowerOfHanoi-v0`
reset with seed 3. Actions are free-form text in the game's own syntax (`[A C]`, `[up]`, `[3 2]`):
the game judges each one, and its verdict comes back as `action_valid` / `invalid_reason`.

    env = TextArenaEnv(games=["TowerOfHanoi-v0"], seeds_per_game=5)
    obs, info = env.reset(options={"task_id": env.tasks()[0].task_id})
    obs, reward, terminated, truncated, info = env.step(info["expert_plan"][0])
"""

from __future__ import annotations

import inspect
import random
from contextlib import contextmanager
from typing import Any

from agent_sft.envs.base import TaskList, TaskSpec, task_hash
from agent_sft.envs.textarena.games import (
    DEFAULT_GAMES,
    EXPERTS,
    GAME_SPLIT,
    OFFLINE_GAMES,
    check_games,
    game_of,
    normalize_task_types,
    task_id,
)
from agent_sft.envs.textarena.solvers import frozenlake_plan, hanoi_plan, sokoban_plan


def load_textarena():
    """The textarena package (its import touches no network: game modules load only when a game is made).

    Raises:
        ImportError: textarena is not installed, naming the extra that installs it.
    """
    try:
        import textarena
        from textarena.wrappers import ActionFormattingWrapper  # noqa: F401
    except ImportError as err:
        raise ImportError(f"the TextArena env needs textarena: pip install 'agent-sft[textarena]' ({err})") from err
    return textarena


class TextArenaEnv:
    """TextArena single-player games, one (game, seed) task at a time.

    Args:
        games: TextArena env ids to play (see `games.OFFLINE_GAMES`).
        seeds_per_game: seeded tasks per game.
        seed_offset: the first seed of each game.
        task_types: game names to keep (`TowerOfHanoi`, `Sokoban`, ...); default all.
        max_steps: steps (valid or not) before an episode is truncated; the games have turn limits too.
        expert: "solver" (shortest plans for Tower of Hanoi, FrozenLake and Sokoban; none for
            Minesweeper) or None (no `expert_plan`).

    Raises:
        ImportError: textarena is not installed.
        ValueError: an unknown game, task type or expert.
    """

    def __init__(
        self,
        games: list[str] | tuple[str, ...] = DEFAULT_GAMES,
        seeds_per_game: int = 100,
        seed_offset: int = 0,
        task_types: list[str] | str | None = None,
        max_steps: int = 50,
        expert: str | None = "solver",
    ) -> None:
        self.games = check_games(games)
        if int(seeds_per_game) < 1 or int(seed_offset) < 0:
            raise ValueError(f"seeds_per_game must be >= 1 and seed_offset >= 0, got {seeds_per_game}, {seed_offset}")
        if expert not in (*EXPERTS, None):
            raise ValueError(f"unknown TextArena expert {expert!r}; allowed: {', '.join(EXPERTS)} or None")
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.task_types = normalize_task_types(task_types)
        self.max_steps = int(max_steps)
        self.expert = expert
        self._ta = load_textarena()
        self._tasks = [
            TaskSpec(task_id(gid, seed), OFFLINE_GAMES[gid], GAME_SPLIT, {"env_id": gid, "game_seed": seed})
            for gid in self.games
            if OFFLINE_GAMES[gid] in self.task_types
            for seed in range(int(seed_offset), int(seed_offset) + int(seeds_per_game))
        ]
        self._choice = TaskList(self._tasks, "TextArena", "tasks (task_types may have filtered them all out)")
        self._game = None  # the TextArena env, unwrapped: its state is read for plans and outcomes
        self._play = None  # the same env behind TextArena's action formatting, which steps are sent to
        self._task: TaskSpec | None = None
        self._goal = ""
        self._steps = 0
        self._done = True
        self._random_state: Any = None
        self._invalid: list[str] = []

    def tasks(self) -> list[TaskSpec]:
        """Every (game, seed) task: games in the order given, seeds ascending."""
        return list(self._tasks)

    # --- engine -----------------------------------------------------------------------------------

    @contextmanager
    def _own_random(self):
        """Run the game on its own copy of the global `random`.

        TextArena seeds the process-wide `random` when a game resets and its games draw from it
        later (Minesweeper lays its mines on the first move): each episode keeps that stream to
        itself, so what happens in between elsewhere in the process changes nothing, and the
        caller's stream is left as it was.
        """
        outside = random.getstate()
        if self._random_state is not None:
            random.setstate(self._random_state)
        try:
            yield
        finally:
            self._random_state = random.getstate()
            random.setstate(outside)

    def _watch_invalid_moves(self, state: Any) -> None:
        """Record every reason the game gives `state.set_invalid_move` (the state forgets it once the step returns)."""
        record = state.set_invalid_move

        def set_invalid_move(*args: Any, **kwargs: Any) -> Any:
            reason = kwargs.get("reason", args[0] if args else "")
            self._invalid.append(str(reason or "").strip())
            return record(*args, **kwargs)

        state.set_invalid_move = set_invalid_move

    def _observe(self) -> str:
        """The messages the game sent the player since the last call, without the echo of the player's action."""
        kinds = self._ta.ObservationType
        _, messages = self._play.get_observation()
        parts = []
        for _, text, kind in messages:
            if kind == kinds.PLAYER_ACTION:
                continue
            text = inspect.cleandoc(text) if kind == kinds.PROMPT else str(text).rstrip()
            parts.append(text)
        return "\n".join(parts).strip("\n")

    # --- TextEnv ----------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        """Start a task: `options["task_id"]`, else one drawn from `seed`, else the next in order.

        The game's content depends on the task alone (its seed is part of the task id).
        """
        task = self._choice.choose((options or {}).get("task_id"), seed)
        self._game = self._ta.make(f"{task.extra['env_id']}-raw")
        self._play = self._ta.wrappers.ActionFormattingWrapper(self._game)
        self._random_state = None
        with self._own_random():
            self._play.reset(num_players=1, seed=task.extra["game_seed"])
            obs = self._observe()
        self._watch_invalid_moves(self._game.state)
        self._task, self._steps, self._done, self._invalid = task, 0, False, []
        self._goal = game_of(task.extra["env_id"]).goal(self._game)
        return obs, {**self._info(won=False), "task_hash": task_hash(task.task_id, task.extra)}  # game id and seed

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self._play is None or self._done:
            raise RuntimeError("the episode is over (or never started); call reset() first")
        self._invalid = []
        with self._own_random():
            done, _ = self._play.step(str(action))
            obs = self._observe()
        self._steps += 1
        reward, won, outcome = 0.0, False, ""
        if done:
            rewards, game_info = self._play.close()
            reward = float((rewards or {}).get(0, 0.0))
            player = (game_info or {}).get(0, {})
            outcome = str(player.get("reason") or "")
            # Single-player TextArena games end a won game with reward 1 (a lost one gets its completion
            # share, at most 1 only when ended by invalid moves): the outcome says which.
            won = reward >= 1.0 and not player.get("invalid_move")
            obs = f"{obs}\n{outcome}".strip("\n") if outcome else obs
        truncated = not done and self._steps >= self.max_steps
        self._done = bool(done) or truncated
        info = self._info(won=won)
        info["action_valid"] = not self._invalid
        info["invalid_reason"] = " ".join(r for r in self._invalid if r)
        if done:
            info["outcome"] = outcome
        return obs, reward, bool(done), truncated, info

    def _info(self, won: bool) -> dict:
        task = self._task
        info = {
            "task_id": task.task_id,
            "task_type": task.task_type,
            "goal": self._goal,
            "won": bool(won),
            "game_split": task.game_split,
            "step": self._steps,
            "turn": int(getattr(self._game.state, "turn", 0)),
        }
        if self.expert is not None:
            info["expert_plan"] = [] if self._game.state.done else self._plan()
            info["expert"] = self.expert
        return info

    def _plan(self) -> list[str]:
        """The solver's shortest plan from the game's current state ([] for a game it cannot solve)."""
        game, name = self._game, self._task.task_type
        state = game.state.game_state
        if name == "TowerOfHanoi":
            return hanoi_plan(state["towers"])
        if name == "FrozenLake":
            return frozenlake_plan(state["grid"], state["player_pos"], state["goal_pos"])
        if name == "Sokoban":
            fixed, now = game.room_fixed.tolist(), game.room_state.tolist()
            cells = [(r, c) for r in range(len(fixed)) for c in range(len(fixed[0]))]
            return sokoban_plan(
                walls=[p for p in cells if fixed[p[0]][p[1]] == 0],
                targets=[p for p in cells if fixed[p[0]][p[1]] == 2],
                boxes=[p for p in cells if now[p[0]][p[1]] in (3, 4)],
                player=tuple(int(x) for x in game.player_position),
                shape=(len(fixed), len(fixed[0])),
            )
        return []

    def close(self) -> None:
        self._game = self._play = None
        self._done = True

    def __enter__(self) -> TextArenaEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TextArenaEnv(games={self.games!r}, tasks={len(self._tasks)}, expert={self.expert!r})"
