"""A tiny text env whose steps hang or raise on chosen tasks, for the env pools' fault handling.

Registered on import as `hang-test`. Env worker processes are spawned and rebuild the factory by
importing this module, which they can: tests/ is on sys.path (conftest.py) and it imports nothing heavy.

Tasks (task type `fault` or `ok`): `ok/<k>` (k = 0..OK_TASKS-1) is won at step 2; `hang/0` sleeps for
`hang_s` seconds at step 2 (far past a test's step timeout); `raise/0` raises `RuntimeError` at step 2.
"""

from __future__ import annotations

import time

from agent_sft.envs import TaskSpec, register

NAME = "hang-test"
OK_TASKS = 4


class HangEnv:
    ACTIONS = ["go"]

    def __init__(self, hang_s: float = 30.0):
        self.hang_s = hang_s
        self._tasks = [TaskSpec(f"ok/{k}", "ok", "test") for k in range(OK_TASKS)]
        self._tasks += [TaskSpec("hang/0", "fault", "test"), TaskSpec("raise/0", "fault", "test")]

    def tasks(self) -> list[TaskSpec]:
        return list(self._tasks)

    def _info(self, won: bool = False) -> dict:
        return {"admissible_actions": list(self.ACTIONS), "task_id": self.task_id, "goal": "go twice",
                "won": won, "expert_plan": ["go"]}

    def reset(self, *, seed=None, options=None):
        self.task_id = options["task_id"]
        self.t = 0
        return f"Start {seed}. Your task is to: go twice", self._info()

    def step(self, action: str):
        self.t += 1
        if self.t == 2 and self.task_id.startswith("hang/"):
            time.sleep(self.hang_s)
        if self.t == 2 and self.task_id.startswith("raise/"):
            raise RuntimeError("the hang-test env broke")
        won = self.t == 2
        return f"You went ({self.t}).", float(won), False, False, self._info(won)

    def close(self) -> None:
        pass


register(NAME, HangEnv)
