"""What the viewer page reads, from stored rows (pure): an episode's compact index record and its full record.

The full record keeps the episode's messages once and each step's prompt as its `[prompt_start, prompt_end)`
window, which the page expands with `records.prompt_of`'s rule, so a windowed episode is not stored once per step.
An `sft` row's messages are written as indices into the episode's messages wherever they are one of them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from agent_sft.records import split_think

SCORE_COLUMNS = ("invalid_rate", "format_rate", "repeat_rate", "loop_rate", "reasoning_words", "plan_length",
                 "length_ratio")
"""The numeric columns of the `scores` config the index carries (judge scores follow as `judge.<name>`)."""

INDEX_FIELDS = ("id", "env", "task_id", "task_type", "split", "success", "end_reason", "steps", "reward", "invalid",
                "scores", "text", "chunk")
"""The order of an index record's fields (the page reads them by this list, written beside the records)."""

TEXT_CHARS = 300  # of the goal (and of an error) kept in the index for the free-text search

_MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "reasoning_content")
_STEP_KEYS = ("index", "observation", "prompt_start", "prompt_end", "response", "action", "valid", "invalid_reason",
              "reward", "done", "info", "prompt_tokens", "completion_tokens", "finish_reason", "latency_s")


def number(x: Any) -> float | int | None:
    """A value JSON can carry: NaN and infinities become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def score_names(judges: list[str]) -> list[str]:
    """The index's score columns: the `scores` config's numeric columns, then each judge's as `judge.<name>`."""
    return list(SCORE_COLUMNS) + [f"judge.{j}" for j in judges]


def _short(x: Any) -> Any:
    """A number as the index's table and filters need it (6 significant digits keep the index small)."""
    x = number(x)
    return float(f"{x:.6g}") if isinstance(x, float) else x


def score_values(score: dict | None, names: list[str]) -> list[float | int | None]:
    """An episode's scores in the order of `names` (all null when the folder has no `scores` row for it)."""
    if not score:
        return [None] * len(names)
    judged = {f"judge.{j['name']}": j["score"] for j in score.get("judge") or []}
    return [_short(judged.get(n) if n.startswith("judge.") else score.get(n)) for n in names]


def index_record(row: dict, score: dict | None, names: list[str], chunk: int) -> list:
    """The episode's record in the index, its fields in `INDEX_FIELDS` order."""
    text = (row.get("goal") or "")[:TEXT_CHARS]
    if row.get("error"):
        text += "\n" + row["error"][:TEXT_CHARS]
    return [row["episode_id"], row["env"], row["task_id"], row["task_type"], row["split"], bool(row["success"]),
            row["end_reason"], row["episode_length"], _short(row["final_reward"]), row.get("num_invalid") or 0,
            score_values(score, names), text, chunk]


def _message(m: dict) -> dict:
    return {k: m[k] for k in _MESSAGE_KEYS if m.get(k) is not None}


def _key(m: dict) -> str:
    return json.dumps(_message(m), sort_keys=True, ensure_ascii=False)


def _step(s: dict, messages: list[dict]) -> dict:
    out = {k: number(s.get(k)) for k in _STEP_KEYS}
    answer = messages[s["prompt_end"]] if 0 <= s["prompt_end"] < len(messages) else {}
    reasoning, _ = split_think(s.get("response") or "")
    if answer.get("role") == "assistant" and answer.get("reasoning_content"):
        reasoning = answer["reasoning_content"]
    out["reasoning"] = reasoning
    if answer.get("role") == "assistant" and answer.get("tool_calls"):
        out["tool_calls"] = [{"id": c.get("id"), "name": (c.get("function") or {}).get("name"),
                              "arguments": (c.get("function") or {}).get("arguments")} for c in answer["tool_calls"]]
    return out


def sft_record(row: dict, positions: dict[str, int]) -> dict:
    """An `sft` row: its step, reward and validity, and its messages (an int: that message of the episode)."""
    msgs = [positions.get(_key(m), _message(m)) for m in row["messages"]]
    return {"step": row.get("step"), "reward": number(row.get("reward")), "valid": row.get("valid"), "messages": msgs}


def episode_record(row: dict, sft: list[dict], score: dict | None) -> dict:
    """Everything the page shows of one episode: its row less token ids, its steps, its `sft` rows, its scores."""
    messages = [_message(m) for m in row["messages"]]
    positions: dict[str, int] = {}
    for i, m in enumerate(row["messages"]):
        positions.setdefault(_key(m), i)
    policy = row.get("policy") or {}
    return {
        "id": row["episode_id"], "env": row["env"], "task_id": row["task_id"], "task_type": row["task_type"],
        "goal": row.get("goal") or "", "split": row["split"], "game_split": row.get("game_split"),
        "sample_index": row.get("sample_index"), "seed": row.get("seed"),
        "policy": {"kind": policy.get("kind"), "model": policy.get("model")},
        "prompt_style": row.get("prompt_style"), "success": bool(row["success"]), "end_reason": row["end_reason"],
        "error": row.get("error") or "", "final_reward": number(row.get("final_reward")),
        "episode_length": row.get("episode_length"), "num_invalid": row.get("num_invalid"),
        "duration_s": number(row.get("duration_s")), "extra": row.get("extra") or "{}", "tools": row.get("tools"),
        "tokens_complete": row.get("tokens_complete"),
        "messages": messages,
        "steps": [_step(s, row["messages"]) for s in row["steps"]],
        "sft": [sft_record(r, positions) for r in sft],
        "dropped_by": list((score or {}).get("dropped_by") or []),
        "judge": [{"name": j["name"], "score": number(j["score"])} for j in (score or {}).get("judge") or []],
        "scored": score is not None,
    }
