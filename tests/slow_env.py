"""A tiny text env whose worker plays one quick episode, then hangs in the first step of the next, for
tests that stop a run while its env workers are inside a step.

Registered on import as `slow-test`. Env worker processes are spawned and rebuild the factory by
importing this module, which they can: tests/ is on sys.path (conftest.py, or PYTHONPATH for a collect
started as a subprocess) and it imports nothing heavy.

Each episode is won at its first step. With the variable `SLOW_ENV_MARKERS` naming a folder, a process's
second and later episodes hang instead: the step writes `<folder>/<pid>` and sleeps for a minute.
"""

from __future__ import annotations

import os
import time

from agent_sft.envs import TaskSpec, register

NAME = "slow-test"
TASKS = 8
_episodes_here = 0  # episodes this process has started


class SlowEnv:
    ACTIONS = ["go"]

    def __init__(self, max_steps: int = 50, **_):
        self._tasks = [TaskSpec(f"slow/{k}", "slow", "test") for k in range(TASKS)]

    def tasks(self) -> list[TaskSpec]:
        return list(self._tasks)

    def _info(self, won: bool = False) -> dict:
        return {"admissible_actions": list(self.ACTIONS), "task_id": self.task_id, "goal": "go",
                "won": won, "expert_plan": ["go"]}

    def reset(self, *, seed=None, options=None):
        global _episodes_here
        _episodes_here += 1
        self.task_id, self.hangs = options["task_id"], _episodes_here > 1
        return f"Start {seed}. Your task is to: go", self._info()

    def step(self, action: str):
        markers = os.environ.get("SLOW_ENV_MARKERS")
        if markers and self.hangs:
            with open(os.path.join(markers, str(os.getpid())), "w"):
                pass
            time.sleep(60)
        return "You went.", 1.0, True, False, self._info(True)

    def close(self) -> None:
        pass


register(NAME, SlowEnv)
