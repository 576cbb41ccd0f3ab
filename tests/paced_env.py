"""A tiny deterministic text env whose steps take a fixed time, for tests that stop a command mid-way (a verify
pass killed between episodes).

Registered on import as `paced-test`; tests/ is on sys.path (conftest.py, or PYTHONPATH for a command started as a
subprocess). A task is a corridor of `LENGTH` cells: `forward` moves on, `wait` stays; the end is a win. Each step
sleeps `PACE_S`. The seed picks the corridor's name, so a replay with another seed would differ.
"""

from __future__ import annotations

import time

from agent_sft.envs import TaskSpec, register, task_hash

NAME = "paced-test"
TASKS = 6
LENGTH = 3
PACE_S = 0.06


class PacedEnv:
    ACTIONS = ["forward", "wait"]

    def __init__(self, max_steps: int = 50, expert: str | None = None, **_):
        self._tasks = [TaskSpec(f"paced/{k}", "corridor", "test") for k in range(TASKS)]
        self.expert = expert

    def tasks(self) -> list[TaskSpec]:
        return list(self._tasks)

    def _info(self) -> dict:
        won = self.at >= LENGTH
        return {"admissible_actions": list(self.ACTIONS), "task_id": self.task_id, "goal": "reach the end", "won": won,
                "expert_plan": [] if won else ["forward"] * (LENGTH - self.at)}

    def _obs(self) -> str:
        return f"Corridor {self.name}, cell {self.at} of {LENGTH}."

    def reset(self, *, seed=None, options=None):
        self.task_id, self.at = options["task_id"], 0
        self.name = f"{self.task_id}-{seed % 97}"
        return self._obs(), {**self._info(), "task_hash": task_hash(self.task_id, LENGTH)}

    def step(self, action: str):
        time.sleep(PACE_S)
        self.at += action.strip() == "forward"
        info = self._info()
        return self._obs(), float(info["won"]), info["won"], False, info

    def close(self) -> None:
        pass


register(NAME, PacedEnv)
