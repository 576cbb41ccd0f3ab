"""Episodes for the Hub's trace viewer: one Session Trace Simple Format (STS) file per episode.

    agent-sft export agent_sft_data --format sts --out traces/               # a few per env and outcome
    agent-sft export agent_sft_data --format sts --traces all --out traces/
    agent-sft push agent_sft_data user/name --traces 20                       # uploaded under traces/

The format is the Hub's (its documentation: "Session Traces Format"): a JSONL file whose first line is the
session header `{"type": "session", "harness", "id", "name"}`, where any other key is allowed and ignored, and
whose every other line is `{"type": "message", "message": {...}}` with `role` (user, assistant, system or
tool) and `content` (text, maybe empty), and optionally `reasoningContent`, `toolCalls` (`[{"id",
"function": {"name", "arguments"}}]`, the arguments JSON text), `toolCallId` (a tool result's call),
`timestamp` (epoch milliseconds) and `model`.

An episode's messages are written in order, as the policy saw and answered them: an assistant turn's reasoning
(its `reasoning_content`, else the text of its <think> blocks) apart from its answer, its tool calls, and the
policy's model. Timestamps count from the episode's start by the policy's latencies, as far as they are known.
The message object has no room for keys of ours, so the episode's facts (env, task, success, reward, end
reason, ...) are in the header, and per-step facts stay in the dataset's rows.

Which episodes (`output.traces`, `--traces`): `auto` a few per env and outcome (`AUTO_PER_GROUP`), `all`, `none`,
or a number, taken in turn from each (env, outcome) group. Within a group episodes are ranked by a hash of the
run seed and the episode id, so the same folder always gives the same files, and a grown folder keeps the ones
it had unless new episodes rank before them.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

from agent_sft.dataset import layout, shards
from agent_sft.publish import streams
from agent_sft.records import SPLITS, split_think

HARNESS = "agent-sft"
"""The header's `harness`: the id the Hub picks a renderer, icon and label by."""
FOLDER = "traces"
"""Where a push puts the files in the repo, beside the dataset's `data/` (never one of its configs)."""
AUTO_PER_GROUP = 3
"""Episodes per (env, outcome) for `auto`."""
WORDS = ("auto", "all", "none")

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PICK = ["episode_id", "env", "success", "end_reason"]


def outcome(row: dict) -> str:
    """How an episode ended, as the sample groups it: `success`, or its end reason (`failure`, `step_limit`...)."""
    return "success" if row.get("success") else (row.get("end_reason") or "failure")


def _reasoning(msg: dict) -> tuple[str, str]:
    """(answer, reasoning) of an assistant message: `reasoning_content` when recorded, else its <think> blocks."""
    content = msg.get("content") or ""
    if msg.get("reasoning_content"):
        return content, msg["reasoning_content"]
    reasoning, rest = split_think(content)
    return rest, reasoning or ""


def _calls(msg: dict, turn: int) -> list[dict]:
    out = []
    for j, tc in enumerate(msg.get("tool_calls") or []):
        fn = tc.get("function") or {}
        args = fn.get("arguments")
        out.append({"id": tc.get("id") or f"call-{turn}-{j}",
                    "function": {"name": fn.get("name") or "",
                                 "arguments": args if isinstance(args, str) else json.dumps(args or {})}})
    return out


def _times(row: dict) -> Iterator[int | None]:
    """Epoch ms of each message: the episode's start, plus the latency of every answer given so far (None from the
    first answer whose latency is unknown on, and throughout when the start is)."""
    started = row.get("started_at")
    latencies = iter(s.get("latency_s") for s in row.get("steps") or [])
    t = float(started) if started is not None else None
    for m in row.get("messages") or []:
        if m.get("role") == "assistant" and t is not None:
            lat = next(latencies, None)
            t = t + lat if lat is not None else None
        yield None if t is None else round(t * 1000)


def header(row: dict) -> dict:
    """The session line: the episode id as the session id, a title, and the episode's facts."""
    policy = row.get("policy") or {}
    env, task = row.get("env") or "", row.get("task_id") or ""
    facts = {"env": env, "taskId": task, "taskType": row.get("task_type"), "goal": row.get("goal"),
             "split": row.get("split"), "success": row.get("success"), "reward": row.get("final_reward"),
             "endReason": row.get("end_reason"), "steps": row.get("episode_length"),
             "invalidSteps": row.get("num_invalid"), "rewards": row.get("rewards"), "seed": row.get("seed"),
             "sampleIndex": row.get("sample_index"), "policy": policy.get("kind"), "model": policy.get("model")}
    return {"type": "session", "harness": HARNESS, "id": row["episode_id"],
            "name": f"{env}: {task} ({outcome(row)})", **{k: v for k, v in facts.items() if v is not None}}


def to_sts(row: dict) -> list[dict]:
    """The STS lines (dicts) of one raw row: the session header, then one line per message."""
    policy = row.get("policy") or {}
    model = policy.get("model") or policy.get("kind")
    lines = [header(row)]
    turn = 0
    for m, ts in zip(row.get("messages") or [], _times(row)):
        role = m.get("role")
        msg: dict[str, Any] = {"role": role, "content": m.get("content") or ""}
        if role == "assistant":
            msg["content"], thought = _reasoning(m)
            if thought:
                msg["reasoningContent"] = thought
            calls = _calls(m, turn)
            if calls:
                msg["toolCalls"] = calls
            if model:
                msg["model"] = model
            turn += 1
        elif role == "tool" and m.get("tool_call_id"):
            msg["toolCallId"] = m["tool_call_id"]
        if ts is not None:
            msg["timestamp"] = ts
        lines.append({"type": "message", "message": msg})
    return lines


def jsonl(row: dict) -> str:
    """One episode's STS file text."""
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in to_sts(row))


def _safe(part: str) -> str:
    return part if _SAFE.fullmatch(part) else hashlib.sha256(part.encode()).hexdigest()[:20]


def path_of(row: dict) -> str:
    """The file's path within the traces folder: `<env>/<outcome>/<episode_id>.jsonl`."""
    return f"{_safe(row.get('env') or 'env')}/{_safe(outcome(row))}/{_safe(row['episode_id'])}.jsonl"


def _rank(seed: int, episode_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{episode_id}".encode()).digest()[:8], "big")


def sample(candidates: Iterable[tuple[str, str, str]], seed: int, traces: str | int) -> set[str]:
    """The episode ids to write, out of (episode id, env, outcome) triples: `traces` is `auto`, `all`, `none` or a
    number (as `agent_sft.config.load.parse_traces` gives). Pure: the same candidates and seed give the same ids.

    Raises:
        ValueError: another `traces`.
    """
    if traces not in WORDS and not (isinstance(traces, int) and traces >= 0):
        raise ValueError(f"traces: expected auto, all, none or a count, got {traces!r}")
    if traces == "none":
        return set()
    if traces == "all":
        return {eid for eid, _, _ in candidates}
    keep = AUTO_PER_GROUP if traces == "auto" else int(traces)
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for eid, env, end in candidates:  # each group keeps its `keep` lowest-ranked ids (a heap of the negated ranks)
        heap = groups.setdefault((env, end), [])
        item = (-_rank(seed, eid), eid)
        if len(heap) < keep:
            heapq.heappush(heap, item)
        elif heap and item > heap[0]:
            heapq.heapreplace(heap, item)
    ranked = {g: [eid for _, eid in sorted(h, reverse=True)] for g, h in sorted(groups.items())}
    if traces == "auto":
        return {eid for ids in ranked.values() for eid in ids}
    chosen: list[str] = []
    for i in range(keep):  # a count is shared out in turn, so every group is seen before any gives a second
        chosen += [ids[i] for ids in ranked.values() if i < len(ids)]
    return set(chosen[:keep])


def _candidates(folder: str, s: layout.Scan) -> Iterator[tuple[str, str, str]]:
    for split in SPLITS:
        for batch in streams.iter_columns(folder, s, "raw", split, _PICK):
            for eid, env, success, end in zip(*(batch[c] for c in _PICK)):
                yield eid, env or "", outcome({"success": success, "end_reason": end})


def _chosen_rows(folder: str, s: layout.Scan, chosen: set[str]) -> Iterator[dict]:
    """The raw rows of the `chosen` episode ids, batch by batch: only their rows become Python objects, and the
    shards after the last of them are not read."""
    import pyarrow as pa
    import pyarrow.compute as pc

    left = set(chosen)
    for split in SPLITS:
        for name, meta in sorted(s.raw.get(split, {}).items()):
            if not left:
                return
            if not meta.get("rows"):
                continue
            for batch in shards.iter_shard_batches(layout.shard_path(folder, "raw", split, name)):
                mask = pc.is_in(batch.column("episode_id"), value_set=pa.array(sorted(left), pa.string()))
                for row in batch.filter(mask).to_pylist():
                    if row["episode_id"] in left:
                        left.discard(row["episode_id"])
                        yield row
                if not left:
                    return


def reading(folder: str):
    """The folder's lock while its shards are read, when a writer made one (as `hub.snapshot` takes it): a
    compaction meanwhile would delete shards under the reader, which would read as damage."""
    path = os.path.join(folder, layout.LOCK)
    return layout.locked(folder) if os.path.exists(path) else contextlib.nullcontext()


def write_traces(folder: str, out: str, traces: str | int = "auto") -> dict[str, int]:
    """Write the chosen episodes' STS files under `out` (`<env>/<outcome>/<episode_id>.jsonl`), shard by shard.

    Returns:
        {"sessions": files written}

    Raises:
        NotADatasetError: `folder` is not an agent-sft dataset folder.
        OSError: a file could not be written (a full disk).
    """
    with reading(folder):
        info = layout.require_dataset(folder)
        s = layout.open_scan(folder, info)
        seed = ((info.get("config") or {}).get("env") or {}).get("seed") or 0
        chosen = sample(_candidates(folder, s), seed, traces)
        n = 0
        for r in _chosen_rows(folder, s, chosen):
            path = os.path.join(out, path_of(r))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w", encoding="utf-8") as fh:
                fh.write(jsonl(r))
            os.replace(path + ".tmp", path)
            n += 1
    return {"sessions": n}


def export_sts(folder: str, out: str, traces: str | int = "auto") -> dict[str, int]:
    """`agent-sft export --format sts`: the chosen episodes' STS files in OUT (see `write_traces`)."""
    streams.open_folder(folder)  # not a dataset folder: refused before OUT is made
    streams.make_out(out)
    return write_traces(folder, out, traces)
