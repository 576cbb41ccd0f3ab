"""ATIF export: one Agent Trajectory Interchange Format document per episode (Harbor's RFC 0001).

    agent-sft export agent_sft_data --format atif --out atif/                  # ATIF-v1.7
    agent-sft export agent_sft_data --format atif --atif-version 1.8 --out atif/

Each raw row becomes OUT/<split>/<episode_id>.json. The episode's messages become steps in order: the system
message a `system` step, each user message a `user` step (in text mode the env's observation reaches the policy
as the next user message), each assistant message an `agent` step carrying the model turn: its text as
`message`, its `reasoning_content` and `tool_calls` when it has them, the `tool` messages answering its calls
as its `observation` (each result tied to its call by `source_call_id`), its token counts (and token ids and
logprobs, when recorded) as `metrics`. ATIF's models forbid fields of their own, so the rest of a step (reward,
validity and its reason, the action sent, latency, done, the env's info) goes in the step's `extra`, and the
rest of the row (ids, env, task, seed, success, end reason, rewards, policy, versions...) in the trajectory's
`extra`. `agent_sft.publish.atif_import` reads such documents back into raw rows.

Everything streams shard by shard; a document is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from agent_sft.errors import ConfigError
from agent_sft.publish import streams
from agent_sft.records import SPLITS

VERSIONS = ("1.7", "1.8")
"""The ATIF versions written (`--atif-version`); 1.7 is the one NeMo Gym reads, Harbor's models default to 1.8."""
DEFAULT_VERSION = "1.7"
AGENT_NAME = "agent-sft"

# Step fields of a raw step that go in an agent step's `extra` (the response is the step's message, the
# token counts its metrics).
STEP_EXTRA = ("index", "observation", "prompt_start", "prompt_end", "action", "valid", "invalid_reason", "reward",
              "done", "info", "finish_reason", "latency_s")
# Row fields that are ATIF's own elsewhere (steps, agent, final metrics) and stay out of the trajectory's `extra`.
_ROW_ELSEWHERE = ("messages", "steps", "prompt_tokens", "completion_tokens", "tools")
# Row fields stored as JSON text; `extra` holds them parsed, so that a reader sees objects.
JSON_FIELDS = ("versions", "extra")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def schema_version(version: str) -> str:
    """`1.7` -> `ATIF-v1.7` (an `ATIF-v…` spelling is taken as it is).

    Raises:
        ConfigError: a version this export does not write.
    """
    v = version.removeprefix("ATIF-v")
    if v not in VERSIONS:
        raise ConfigError(f"--atif-version {version!r} is not one this export writes; use one of {', '.join(VERSIONS)}")
    return f"ATIF-v{v}"


def parsed(text: Any) -> Any:
    """A JSON text as the object it holds, when writing that back as agent-sft writes JSON gives the same text
    (so an import restores it exactly); any other text stays as it is."""
    if not isinstance(text, str):
        return text
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    return obj if json.dumps(obj) == text else text


def _tool_call(tc: dict) -> dict:
    """An OpenAI-style call (`id`, `function.name`, `function.arguments` as JSON text) as an ATIF `ToolCall`."""
    fn = tc.get("function") or {}
    raw = fn.get("arguments")
    try:
        args = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        args = None
    out: dict[str, Any] = {"tool_call_id": tc.get("id") or "", "function_name": fn.get("name") or "",
                           "arguments": args if isinstance(args, dict) else {}}
    if not isinstance(args, dict) or json.dumps(args, ensure_ascii=False) != raw:
        # ATIF wants an object: a malformed call's text, or one spelled otherwise, is kept beside it as it was
        out["extra"] = {"arguments": raw}
    return out


def _metrics(step: dict) -> dict | None:
    m = {k: step.get(k) for k in ("prompt_tokens", "completion_tokens", "prompt_token_ids", "completion_token_ids",
                                  "logprobs")}
    m = {k: v for k, v in m.items() if v is not None}
    if step.get("top_logprobs") is not None:
        m["extra"] = {"top_logprobs": step["top_logprobs"]}
    return m or None


def _agent_step(msg: dict, step: dict | None) -> dict:
    out: dict[str, Any] = {"source": "agent", "message": msg.get("content") or ""}
    if msg.get("reasoning_content"):
        out["reasoning_content"] = msg["reasoning_content"]
    if msg.get("tool_calls"):
        out["tool_calls"] = [_tool_call(tc) for tc in msg["tool_calls"]]
    if step is None:  # an assistant message no step records (none in folders agent-sft writes)
        return out
    metrics = _metrics(step)
    if metrics:
        out["metrics"] = metrics
    extra = {k: step.get(k) for k in STEP_EXTRA}
    extra["info"] = parsed(extra["info"])
    if step.get("response") != out["message"]:
        extra["response"] = step.get("response")
    out["extra"] = extra
    return out


def _observe(agent: dict, msg: dict) -> None:
    """Attach a `tool` message to the agent step whose call it answers (untied when no call of it has its id)."""
    result: dict[str, Any] = {"content": msg.get("content") or ""}
    call_id = msg.get("tool_call_id")
    if call_id and any(tc["tool_call_id"] == call_id for tc in agent.get("tool_calls") or []):
        result["source_call_id"] = call_id
    elif call_id:
        result["extra"] = {"tool_call_id": call_id}
    agent.setdefault("observation", {"results": []})["results"].append(result)


def to_atif(row: dict, version: str = DEFAULT_VERSION) -> dict:
    """The ATIF document of one raw row (a plain dict, valid under Harbor's `TrajectoryValidator`)."""
    steps: list[dict] = []
    raw_steps = list(row.get("steps") or [])
    turn = 0
    for m in row.get("messages") or []:
        role = m.get("role")
        if role == "tool" and steps and steps[-1]["source"] == "agent":
            _observe(steps[-1], m)
            continue
        if role == "assistant":
            steps.append(_agent_step(m, raw_steps[turn] if turn < len(raw_steps) else None))
            turn += 1
        else:  # system, user (and a tool message with no agent step before it, which has nowhere else to go)
            steps.append({"source": "system" if role == "system" else "user", "message": m.get("content") or ""})
    steps = [{"step_id": i, **s} for i, s in enumerate(steps, 1)]
    policy = dict(row.get("policy") or {})
    policy["sampling"] = parsed(policy.get("sampling"))
    versions = parsed(row.get("versions"))
    agent: dict[str, Any] = {
        "name": AGENT_NAME,
        "version": str((versions or {}).get("agent_sft") or "unknown") if isinstance(versions, dict) else "unknown",
        "model_name": policy.get("model") or policy.get("kind") or None,
    }
    if isinstance(row.get("tools"), str):
        try:
            listed = json.loads(row["tools"])
        except ValueError:
            listed = None
        if isinstance(listed, list):
            agent["tool_definitions"] = listed
        if parsed(row["tools"]) is row["tools"]:  # spelled otherwise than agent-sft writes JSON: kept as it was
            agent["extra"] = {"tools": row["tools"]}
    extra = {k: v for k, v in row.items() if k not in _ROW_ELSEWHERE}
    extra["policy"] = policy
    for k in JSON_FIELDS:
        if k in extra:
            extra[k] = parsed(extra[k])
    doc: dict[str, Any] = {
        "schema_version": schema_version(version),
        "session_id": row["episode_id"],
        "trajectory_id": row["episode_id"],
        "agent": agent,
        "steps": steps,
        "final_metrics": {
            k: v for k, v in (("total_prompt_tokens", row.get("prompt_tokens")),
                              ("total_completion_tokens", row.get("completion_tokens")),
                              ("total_steps", len(steps))) if v is not None
        },
        "extra": extra,
    }
    return doc


def file_name(episode_id: str) -> str:
    """The document's file name: the episode id, or a hash of it when the id is not a safe file name."""
    if _SAFE_NAME.fullmatch(episode_id):
        return f"{episode_id}.json"
    return f"{hashlib.sha256(episode_id.encode()).hexdigest()[:20]}.json"


def export_atif(folder: str, out: str, version: str = DEFAULT_VERSION) -> dict[str, int]:
    """Write OUT/<split>/<episode_id>.json for every raw episode of `folder`, shard by shard.

    Returns:
        {"train": documents, "validation": documents}
    """
    schema_version(version)  # a bad version is refused before anything is written
    s = streams.open_folder(folder)
    streams.make_out(out)
    counts = {}
    for split in SPLITS:
        where = os.path.join(out, split)
        os.makedirs(where, exist_ok=True)
        n = 0
        for r in streams.iter_rows(folder, s, "raw", split):
            path = os.path.join(where, file_name(r["episode_id"]))
            with open(path + ".tmp", "w") as fh:
                json.dump(to_atif(r, version), fh, ensure_ascii=False)
            os.replace(path + ".tmp", path)
            n += 1
        counts[split] = n
    return counts

