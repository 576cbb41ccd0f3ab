"""Reading a model's answer to an augment prompt: the reasoning, and the action it ends on, compared with the
recorded one.

Text actions: the action is read with the folder's parser (`prompts.parse_action`: one `<action>` tag); the
reasoning is the text of the `<think>` blocks, else the text before the action tag. Tool-call actions: the
action is the answer's first call as the backend read it (or, from a backend that gave text, the Hermes
format); the reasoning is the answer's reasoning (`reasoning_content`, or its `<think>` blocks), else its text
beside the call. A rationale never keeps a `<think>` or `<action>` tag (`dataset.reasoning.clean_rationale`):
an empty block, or one left open, gives way to the free text, and nothing left is no reasoning. Actions are
compared after `prompts.normalize_action` (case, whitespace, quotes), a call by its name and its arguments with
each string value so normalised. An answer with no action, another action or no reasoning does not match.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from agent_sft.dataset.reasoning import clean_rationale
from agent_sft.policies.base import Completion
from agent_sft.policies.tool_calls import parse_hermes, split_reasoning
from agent_sft.prompts import normalize_action, parse_action
from agent_sft.records import split_think

_ACTION_TAG = re.compile(r"<action>", re.IGNORECASE)


@dataclass(frozen=True)
class Answer:
    rationale: str  # "" when the answer has none
    action: str  # the action (text) or the call as JSON (tools) it ends on; "" when none could be read
    error: str = ""  # why it does not match the recorded action; "" when it does


def _call_json(name: str, arguments: Any) -> str:
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        args = arguments
    return json.dumps({"name": name, "arguments": args}, ensure_ascii=False, sort_keys=True)


def recorded_call(message: dict) -> str:
    """The call a recorded assistant message made (its first), as `{"name", "arguments"}` JSON; "" when none."""
    calls = message.get("tool_calls") or []
    if not calls:
        return ""
    f = calls[0]["function"]
    return _call_json(f["name"], f["arguments"])


def _normalised(value: Any) -> Any:
    if isinstance(value, str):
        return normalize_action(value)
    if isinstance(value, dict):
        return {normalize_action(str(k)): _normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def same_call(a: str, b: str) -> bool:
    """Whether two calls (`recorded_call` JSON) name one tool with the same arguments, strings normalised."""
    try:
        return _normalised(json.loads(a)) == _normalised(json.loads(b))
    except ValueError:
        return False


def text_rationale(text: str) -> str:
    """The reasoning of a text answer: its `<think>` blocks' text, else the free text before its action tag."""
    reasoning, rest = split_think(text)
    if clean_rationale(reasoning):
        return clean_rationale(reasoning)
    m = _ACTION_TAG.search(rest)
    return clean_rationale(rest[:m.start()] if m else "")


def read_text_answer(text: str, recorded_action: str) -> Answer:
    """A text answer read against the step's recorded action."""
    parsed = parse_action(text or "", None, require_think=False)
    rationale = text_rationale(text or "")
    if not parsed.action:
        return Answer(rationale, "", f"no action could be read: {parsed.reason}")
    if normalize_action(parsed.action) != normalize_action(recorded_action):
        return Answer(rationale, parsed.action, f"the answer's action {parsed.action!r} is not the recorded "
                                                f"{normalize_action(recorded_action)!r}")
    if not rationale:
        return Answer("", parsed.action, "no reasoning before the action")
    return Answer(rationale, parsed.action)


def read_tools_answer(c: Completion, recorded: str) -> Answer:
    """A tool-call answer read against the step's recorded call (`recorded_call` JSON)."""
    calls = c.tool_calls
    content = c.content if c.content is not None else c.text or ""
    reasoning = c.reasoning
    if calls is None:  # the backend gave text: read its calls as the Hermes format
        content, calls, error = parse_hermes(c.text or "")
        if error:
            return Answer("", "", error)
    if reasoning is None:
        content, reasoning = split_reasoning(content)
    rationale = clean_rationale(reasoning) or clean_rationale(content)
    if not calls:
        return Answer(rationale, "", c.tool_error or "no tool call in the answer")
    f = calls[0]["function"]
    made = _call_json(f["name"], f["arguments"])
    if not same_call(made, recorded):
        return Answer(rationale, made, f"the answer's call {made} is not the recorded {recorded}")
    if not rationale:
        return Answer("", made, "no reasoning before the call")
    return Answer(rationale, made)
