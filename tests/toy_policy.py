"""A whole policy backend as a user writes one: a class behind the `Policy` protocol, built from the config.

It always answers the same action; registered with one row of the policy table:

    register_policy("toy", PolicyEntry("toy_policy:ToyPolicy", needs_model=False))
"""

from __future__ import annotations

import json
from typing import Any

from agent_sft.policies import Completion
from agent_sft.records import Message, PolicyInfo

LABEL = "toy-north-v1"  # the model label the episodes record


class ToyPolicy:
    thread_safe = True  # answers from nothing but its own constant

    def __init__(self, cfg: Any, action: str = "north") -> None:
        self.action = action
        self.model = cfg.model or LABEL

    def act(self, conversations: list[list[Message]], seeds: list[int],
            infos: list[dict[str, Any]] | None = None) -> list[Completion]:
        return [Completion(text=f"<think></think><action>{self.action}</action>", finish_reason="stop")
                for _ in conversations]

    def describe(self) -> PolicyInfo:
        return PolicyInfo(kind="toy", model=self.model, sampling=json.dumps({"action": self.action}))

    def close(self) -> None:
        pass
