"""A tiny shop with free-form actions (`search[any query]`, `click[item]`), for action validity the env states.

Registered on import as `freeform-test` (entry point "freeform_env:FreeformEnv": env workers import this
module, which tests/ on sys.path lets them). Two tasks, won by `click[buy]`, each telling validity its way:

- `patterns/0`: every info carries `action_patterns` (regular expressions), no admissible list.
- `verdict/0`: no list and no patterns; the info `step` returns carries the env's own verdict on the
  action just taken, `action_valid` and `invalid_reason`.
"""

from __future__ import annotations

import re

from agent_sft.envs import TaskSpec, register

NAME = "freeform-test"
PATTERNS = [r"search\[.+\]", r"click\[[a-z0-9 ]+\]"]
_KNOWN = re.compile(r"(search\[.+\]|click\[[a-z0-9 ]+\])")


class FreeformEnv:
    def __init__(self, max_steps: int = 10):
        self.max_steps = max_steps

    def tasks(self) -> list[TaskSpec]:
        return [TaskSpec("patterns/0", "patterns", "test"), TaskSpec("verdict/0", "verdict", "test")]

    def _info(self) -> dict:
        info = {
            "task_id": self.task_id,
            "goal": "buy red shoes",
            "won": self.won,
            "expert_plan": ["search[red shoes]", "click[buy]"],
        }
        if self.task_id.startswith("patterns/"):
            info["action_patterns"] = list(PATTERNS)
        return info

    def reset(self, *, seed=None, options=None):
        self.task_id, self.t, self.won = options["task_id"], 0, False
        return "A shop. Your task is to: buy red shoes", self._info()

    def step(self, action: str):
        self.t += 1
        self.won = action == "click[buy]"
        info = self._info()
        if self.task_id.startswith("verdict/"):
            info["action_valid"] = bool(_KNOWN.fullmatch(action))
            info["invalid_reason"] = "" if info["action_valid"] else f"unknown command {action!r}"
        return f"You did {action}.", float(self.won), self.won, not self.won and self.t >= self.max_steps, info

    def close(self) -> None:
        pass


register(NAME, "freeform_env:FreeformEnv")
