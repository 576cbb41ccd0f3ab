"""Whether a recorded step's answer gives what was recorded of it, read as the collection read it (pure).

A replay sends the recorded actions; the `sft` rows are built from the answers (a step's `response` and the
assistant message at its position in `messages`). So each step's answer is read again, with the folder's own
rules (`prompt.actions`, `prompt.require_think`, the env's tools), and must give the step's recorded action, its
validity and the text the env was sent; the assistant message must be that answer:

- text actions: the message's content is the response, and `prompts.parse_action` of it gives the action;
- tool actions: the message's calls give the action through the episode's tools (`envs.tools.toolset_for`, from
  the reset's info), and its text is in the response (its reasoning may have come apart from it, from a server).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent_sft.envs.tools import ToolCallError, Toolset
from agent_sft.prompts import ParsedAction, admit, env_verdict, fallback_action, normalize_action, parse_action


@dataclass(frozen=True)
class Reading:
    """How the collection read its policy's answers: `prompt.actions`, `prompt.require_think` and the env's spec
    (whose tools an episode offers)."""

    actions: str = "text"
    require_think: bool = True
    spec: Any = None


@dataclass(frozen=True)
class Differs:
    """What of a step's answer differs: `recorded` against what the answer gives (`read`), and why."""

    recorded: Any
    read: Any
    reason: str


def _info(step: dict) -> dict:
    try:
        info = json.loads(step.get("info") or "{}")
    except (TypeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def check_step(step: dict, messages: list[dict], reading: Reading, toolset: Toolset | None) -> Differs | None:
    """The first difference between the recorded step and what its answer gives; None when there is none."""
    info = _info(step)
    response = step.get("response") or ""
    end = step.get("prompt_end")
    message = messages[end] if isinstance(end, int) and 0 <= end < len(messages or []) else None
    if not message or message.get("role") != "assistant":
        return Differs(response, None, f"no assistant message at messages[{end}]")
    if toolset is None:
        if (message.get("content") or "") != response:
            return Differs(response, message.get("content"), "the assistant message is not the response")
        parsed, form, sent = _read_text(response, info, reading.require_think)
    else:
        content = (message.get("content") or "").strip()
        if content and content not in response:
            return Differs(response, content, "the assistant message's text is not in the response")
        parsed, form, sent = _read_calls(message, response, info, toolset)
    verdict = env_verdict(form, info)
    valid = verdict[0] if verdict is not None else parsed.valid
    recorded_sent = str(info["env_action"]) if "env_action" in info else step.get("action")
    if parsed.action != step.get("action"):
        return Differs(step.get("action"), parsed.action, "the answer gives another action")
    if sent != recorded_sent:
        return Differs(recorded_sent, sent, "the answer gives another text to send the env")
    if valid != bool(step.get("valid")):
        return Differs(bool(step.get("valid")), valid, "the answer's validity differs")
    return None


def _read_text(response: str, info: dict, require_think: bool) -> tuple[ParsedAction, ParsedAction, str]:
    """(the action as parsed, the answer parsed for its format only, the text the env is sent)."""
    admissible, patterns = list(info.get("admissible_actions") or []), list(info.get("action_patterns") or [])
    parsed = parse_action(response, admissible, require_think, patterns)
    form = parse_action(response, None, require_think)
    no_tag = not parsed.action and parsed.reason != "empty <action> tag"
    return parsed, form, fallback_action(response) if no_tag else parsed.action


def _read_calls(message: dict, response: str, info: dict, toolset: Toolset) -> tuple[ParsedAction, ParsedAction, str]:
    """As `_read_text`, for an answer whose first tool call is the action."""
    calls = message.get("tool_calls") or []
    if not calls:
        form = ParsedAction("", False, "no tool call")
    else:
        f = calls[0].get("function") or {}
        try:
            action = normalize_action(toolset.action(f.get("name"), f.get("arguments")))
        except ToolCallError as e:
            form = ParsedAction("", False, str(e))
        else:
            form = ParsedAction(action, len(calls) == 1, "" if len(calls) == 1 else "several tool calls")
    parsed = form
    if form.action:
        allowed = admit(form.action, list(info.get("admissible_actions") or []), list(info.get("action_patterns") or []))
        parsed = allowed if not allowed.valid else form._replace(action=allowed.action)
    return parsed, form, parsed.action or fallback_action(response)
