"""A tiny text env that fails on chosen actions, with one option, for the env server's tests.

Registered on import as `crash-test`. Env worker processes are spawned and rebuild the factory by
importing this module, which they can: tests/ is on sys.path (conftest.py, or PYTHONPATH for a server
started as a subprocess) and it imports nothing heavy.

Tasks `crash-test/room-<k>` (k = 0..rooms-1, task type `room`) are won at the third `go`. The action
`crash` raises, `die` ends the worker process, `hang` sleeps for a minute; anything else is an invalid
action (answered, reward 0). Every info carries the worker's pid and the steps taken since the reset, so
a test sees which process answered and that a step was applied once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from agent_sft.envs import EnvOptions, OptionError, TaskSpec, option, register

NAME = "crash-test"
WIN_AT = 3


@dataclass
class CrashOptions(EnvOptions):
    greeting: str = option("Hello", "The first word of every observation.")
    rooms: int = option(3, "Number of tasks.", fingerprint=False)

    def __post_init__(self) -> None:
        if not self.greeting.strip():
            raise OptionError("greeting", "must not be empty")
        if self.rooms < 1:
            raise OptionError("rooms", f"must be at least 1, got {self.rooms}")


class CrashEnv:
    ACTIONS = ["go", "crash", "die", "hang"]

    def __init__(self, greeting: str = "Hello", rooms: int = 3, max_steps: int = 50, expert: str | None = None):
        self.greeting, self.max_steps, self.expert = greeting, max_steps, expert
        self._tasks = [TaskSpec(f"{NAME}/room-{k}", "room", "test", {"k": k}) for k in range(rooms)]
        self.task_id, self.t = None, 0

    def tasks(self) -> list[TaskSpec]:
        return list(self._tasks)

    def _info(self, won: bool = False, valid: bool = True) -> dict:
        info = {"task_id": self.task_id, "task_type": "room", "goal": "go three times", "won": won,
                "game_split": "test", "step": self.t, "admissible_actions": list(self.ACTIONS), "pid": os.getpid(),
                "action_valid": valid}
        if self.expert:
            info["expert_plan"] = ["go"] * (WIN_AT - self.t)
            info["expert"] = self.expert
        return info

    def reset(self, *, seed=None, options=None):
        self.task_id = (options or {}).get("task_id", self._tasks[0].task_id)
        self.t = 0
        return f"{self.greeting} {seed}: you are in {self.task_id}.", self._info()

    def step(self, action: str):
        if action == "crash":
            raise RuntimeError("crash-test: asked to crash")
        if action == "die":
            os._exit(9)
        if action == "hang":
            time.sleep(60)
        self.t += 1
        valid = action == "go"
        won = valid and self.t >= WIN_AT
        truncated = not won and self.t >= self.max_steps
        obs = f"{self.greeting}: step {self.t}, you did {action!r}."
        return obs, float(won), won, truncated, self._info(won, valid)

    def close(self) -> None:
        pass


register(NAME, CrashEnv, options=CrashOptions, experts=("walk",), title="Crash test")
