"""The expert policy: replays the plan an environment's expert puts in `info["expert_plan"]`.

Which expert makes the plan (ALFWorld's PDDL planner or its handcoded expert) is chosen in the env;
this policy only reads the plan and answers in the response format the action parser expects:

    <think></think><action>go to fridge 1</action>

or, with tool actions (the episode offers `info["tools"]`), with the call that plays the plan's next step
(`info["expert_call"]`, from the episode's tools), its plan in `reasoning_content` when it thinks aloud.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from agent_sft.policies.base import Completion
from agent_sft.policies.tool_calls import hermes_text
from agent_sft.records import Message, PolicyInfo

if TYPE_CHECKING:
    from agent_sft.config import PolicyConfig

NO_PLAN = "expert has no plan"


class ExpertPolicy:
    """Answer each conversation with the first step of its env's expert plan.

    Args:
        expert_type: the env's expert (ALFWorld's "planner" or "handcoded"), for the model label.
        think: put the remaining plan in the `<think>` block ("Plan: a; b; c"); off by default, so
            the think block stays empty rather than holding reasoning the expert never had.
        env_name: the env the expert belongs to.
        model: the model recorded for this policy, as the env's spec labels its expert
            (`EnvSpec.expert_model`); default `<env_name>-<expert_type>`, or `<expert_type>` without an env.
    """

    thread_safe = True  # answers from the env info alone: the async loop calls it from every episode's thread

    def __init__(
        self, expert_type: str = "expert", think: bool = False, env_name: str = "", model: str | None = None
    ) -> None:
        self.expert_type = expert_type
        self.think = bool(think)
        self.env_name = env_name
        self.model = model or (f"{env_name}-{expert_type}" if env_name else expert_type)

    @classmethod
    def from_config(cls, cfg: PolicyConfig, **kwargs: Any) -> ExpertPolicy:
        """The expert `policy.expert_think` asks for; `kwargs` as for the constructor."""
        return cls(think=cfg.expert_think, **kwargs)

    def act(
        self,
        conversations: list[list[Message]],
        seeds: list[int],
        infos: list[dict[str, Any]] | None = None,
    ) -> list[Completion]:
        if infos is not None and len(infos) != len(conversations):
            raise ValueError(f"got {len(infos)} env infos for {len(conversations)} conversations")
        out = []
        for i in range(len(conversations)):
            info = (infos[i] or {}) if infos is not None else {}
            out.append(self._answer(info.get("expert_plan"), info))
        return out

    def _answer(self, plan: Any, info: dict[str, Any]) -> Completion:
        steps = [str(s).strip() for s in plan or [] if str(s).strip()]
        if not steps:
            return Completion(text="", finish_reason="error", error=NO_PLAN)
        thought = "Plan: " + "; ".join(steps) if self.think else ""
        if "tools" in info:
            call = info.get("expert_call")
            calls = [dict(call)] if call else []  # none: no tool offered makes the step (the step says so)
            content = "" if calls else steps[0]
            return Completion(text=hermes_text(content, calls), finish_reason="stop", tool_calls=calls,
                              content=content, reasoning=thought or None)
        return Completion(text=f"<think>{thought}</think><action>{steps[0]}</action>", finish_reason="stop")

    def describe(self) -> PolicyInfo:
        return PolicyInfo(kind="expert", model=self.model, sampling=json.dumps({"think": self.think}))

    def close(self) -> None:
        pass
