"""Reasoning put into an episode's assistant turns (a named build with `reasoning`), pure: a raw row and the
rationales of its steps in, the raw row whose answers carry them out. The recorded action and tool call never
change, and the stored raw row is never touched (the build reads a copy).

- text actions: the step's answer becomes `<think>\\n{rationale}\\n</think>\\n` followed by the recorded response,
  whose own leading `<think>` block (an expert's is empty) gives way to it, so the answer has one;
- tool-call actions: the assistant message's `reasoning_content` is the rationale; its content and calls stay.

Each step's assistant turn is `messages[prompt_end]`; a chat's later prompts show the earlier turns with their
reasoning, as a model that thought aloud would have seen them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_LEADING_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"</?\s*(?:think|action)\s*>", re.IGNORECASE)


def clean_rationale(text: str | None) -> str:
    """A rationale as it is kept and used: without `<think>` or `<action>` tags (an answer's stray or unclosed
    ones would nest blocks in the built answer), stripped; "" when nothing else is left."""
    return _TAGS.sub("", text or "").strip()


def think_answer(rationale: str, response: str) -> str:
    """A text answer with `rationale` in its `<think>` block, then the recorded response's action part."""
    return f"<think>\n{clean_rationale(rationale)}\n</think>\n" + _LEADING_THINK.sub("", response, count=1)


def with_reasoning(row: dict, rationales: Mapping[int, str]) -> tuple[dict, int]:
    """`row` (a raw row) with the rationale of each step `rationales` has (step index -> text) in that step's
    answer; returns (the new row, how many steps got one). `row` itself is not changed."""
    if not rationales:
        return row, 0
    tools = "tools" in row
    messages = list(row["messages"])
    steps = list(row["steps"])
    given = 0
    for i, s in enumerate(steps):
        text = clean_rationale(rationales.get(s["index"]))
        at = s["prompt_end"]
        if not text or not s["response"] or at >= len(messages) or messages[at]["role"] != "assistant":
            continue
        if tools:
            messages[at] = {**messages[at], "reasoning_content": text}
        else:
            if messages[at]["content"] != s["response"]:
                continue  # not this step's answer: leave both as recorded
            answer = think_answer(text, s["response"])
            messages[at] = {**messages[at], "content": answer}
            steps[i] = {**s, "response": answer}
        given += 1
    return {**row, "messages": messages, "steps": steps}, given


def rows_with_reasoning(rows: list[dict], rationales: Mapping[str, Mapping[int, str]]) -> tuple[list[dict], list[int]]:
    """Each raw row with its episode's rationales (episode id -> step -> text); and the steps given one, per row."""
    out, counts = [], []
    for r in rows:
        new, n = with_reasoning(r, rationales.get(r["episode_id"]) or {})
        out.append(new)
        counts.append(n)
    return out, counts
