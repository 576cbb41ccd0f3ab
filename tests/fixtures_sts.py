"""The Hub trace viewer's session format (Session Trace Simple Format) as its documentation gives it, checked on
text: used by every test whose episodes must make valid sessions."""

from __future__ import annotations

import json

ROLES = {"user", "assistant", "system", "tool"}
MESSAGE_KEYS = {"role", "content", "reasoningContent", "toolCalls", "toolCallId", "timestamp", "model"}


def check_sts(text: str) -> list[dict]:
    """Assert that `text` is one session in the Session Trace Simple Format as the Hub's documentation gives it
    (a session header line, then message lines in their envelope, documented roles and fields only); its lines."""
    assert text.endswith("\n") and "\n\n" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    head, messages = lines[0], lines[1:]
    assert head["type"] == "session" and head["harness"] == "agent-sft"
    assert isinstance(head["id"], str) and head["id"] and isinstance(head["name"], str) and head["name"]
    assert messages and any(m["message"]["role"] == "assistant" for m in messages)
    calls: set[str] = set()
    last = 0
    for line in messages:
        assert set(line) == {"type", "message"} and line["type"] == "message"
        m = line["message"]
        assert set(m) <= MESSAGE_KEYS and m["role"] in ROLES and isinstance(m["content"], str), m
        if "reasoningContent" in m:
            assert m["role"] == "assistant" and isinstance(m["reasoningContent"], str) and m["reasoningContent"]
        for call in m.get("toolCalls", []):
            assert m["role"] == "assistant" and set(call) == {"id", "function"}
            assert set(call["function"]) == {"name", "arguments"} and call["id"] and call["function"]["name"]
            assert isinstance(call["function"]["arguments"], str)
            json.loads(call["function"]["arguments"])  # JSON text, not an object
            calls.add(call["id"])
        if "toolCallId" in m:
            assert m["role"] == "tool" and m["toolCallId"] in calls
        if "timestamp" in m:  # epoch milliseconds, in order
            assert type(m["timestamp"]) is int and 10**12 < m["timestamp"] < 10**13 and m["timestamp"] >= last
            last = m["timestamp"]
        if "model" in m:
            assert m["role"] == "assistant" and isinstance(m["model"], str) and m["model"]
    return lines


def check_episodes(rows) -> None:
    """Every episode's STS file follows the format, and says what its row says."""
    from agent_sft.publish.sts import jsonl

    for row in rows:
        head, *messages = check_sts(jsonl(row))
        assert head["id"] == row["episode_id"] and head["env"] == row["env"] and head["success"] == row["success"]
        assert [m["message"]["role"] for m in messages] == [m["role"] for m in row["messages"]]
