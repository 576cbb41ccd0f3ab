"""ShareGPT export in LLaMA-Factory's layout: OUT/train.jsonl, OUT/validation.jsonl and OUT/dataset_info.json.

    agent-sft export agent_sft_data --format sharegpt --out sharegpt/
    llamafactory-cli train ... --dataset_dir sharegpt --dataset agent_sft_train

One conversation per `sft` row, so the export trains on what the folder's build chose (its filters, and its
style: a window prompt and its answer per step, or a whole episode's chat). Each line holds `conversations`
(`from` human / gpt / observation / function_call, `value`), `system` (the row's system message, or "") and
`tools` (the tools offered, as LLaMA-Factory's JSON text of `{name, description, parameters}`, or ""), and the
row's metadata (episode id, env, task, step, success, reward), which LLaMA-Factory leaves aside.

The turns alternate as LLaMA-Factory requires: human or observation first, then gpt or function_call. An
assistant message with tool calls is a `function_call` turn whose value is the calls' JSON (`{"name",
"arguments"}`, a list for several); its text and reasoning beside the calls have no place in the layout and are
left out. The `tool` messages that answer one turn's calls are one `observation` turn, joined as LLaMA-Factory
joins them from OpenAI-style data. Adjacent user messages are joined into one human turn.
"""

from __future__ import annotations

import json
import os
from typing import Any

from agent_sft.publish import streams
from agent_sft.records import SPLITS

DATASET_PREFIX = "agent_sft"
"""dataset_info.json names each split's file `agent_sft_<split>` (LLaMA-Factory's `dataset:` key)."""
TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
        "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
OBSERVATION_JOIN = "\n</tool_response>\n<tool_response>\n"  # how LLaMA-Factory joins several tool results
_META = ("episode_id", "env", "task_id", "task_type", "step", "success", "reward", "final_reward", "valid")


def _call(tc: dict) -> dict:
    fn = tc.get("function") or {}
    args: Any = fn.get("arguments")
    try:
        args = json.loads(args) if isinstance(args, str) else (args or {})
    except ValueError:
        pass  # a malformed call's text, as the model wrote it
    return {"name": fn.get("name") or "", "arguments": args}


def _turn(group: list[dict]) -> dict:
    """One ShareGPT turn of adjacent messages of one side (the user's and tools', or the assistant's)."""
    if group[0]["role"] == "assistant":
        calls = [_call(tc) for m in group for tc in m.get("tool_calls") or []]
        if calls:
            return {"from": "function_call", "value": json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)}
        return {"from": "gpt", "value": "\n\n".join(m.get("content") or "" for m in group)}
    if all(m["role"] == "tool" for m in group):
        return {"from": "observation", "value": OBSERVATION_JOIN.join(m.get("content") or "" for m in group)}
    return {"from": "human", "value": "\n\n".join(m.get("content") or "" for m in group)}


def tools_text(tools: Any) -> str:
    """The tools offered (JSON text of OpenAI-style schemas) as LLaMA-Factory's `tools` text ("" for none)."""
    try:
        listed = json.loads(tools) if isinstance(tools, str) and tools else []
    except ValueError:
        return ""
    flat = [t.get("function", t) if t.get("type") == "function" else t for t in listed if isinstance(t, dict)]
    return json.dumps(flat, ensure_ascii=False) if flat else ""


def sharegpt_row(row: dict) -> dict | None:
    """The ShareGPT example of one sft row; None when it holds no answer to train (no assistant turn)."""
    msgs = list(row.get("messages") or [])
    system = ""
    if msgs and msgs[0]["role"] == "system":
        system = msgs.pop(0).get("content") or ""
    groups: list[list[dict]] = []
    for m in msgs:
        side = m["role"] == "assistant"
        if groups and (groups[-1][0]["role"] == "assistant") == side:
            groups[-1].append(m)
        else:
            groups.append([m])
    while groups and groups[-1][0]["role"] != "assistant":
        groups.pop()  # a conversation ends on the answer it trains
    if groups and groups[0][0]["role"] == "assistant":
        groups.pop(0)  # and starts with what the model answered
    if not groups:
        return None
    out = {"conversations": [_turn(g) for g in groups], "system": system, "tools": tools_text(row.get("tools"))}
    out.update({k: row.get(k) for k in _META if k in row})
    return out


def dataset_info(splits: list[str]) -> dict:
    """LLaMA-Factory's dataset_info.json entries for the split files written."""
    columns = {"messages": "conversations", "system": "system", "tools": "tools"}
    return {f"{DATASET_PREFIX}_{split}": {"file_name": f"{split}.jsonl", "formatting": "sharegpt",
                                         "columns": columns, "tags": TAGS} for split in splits}


def export_sharegpt(folder: str, out: str) -> dict[str, int]:
    """Write train.jsonl and validation.jsonl (one example per sft row) and dataset_info.json, shard by shard.

    Returns:
        {"train": examples, "validation": examples}
    """
    s = streams.open_folder(folder)
    streams.make_out(out)
    counts = {}
    for split in SPLITS:
        path = os.path.join(out, f"{split}.jsonl")
        n = 0
        with open(path + ".tmp", "w") as fh:
            for r in streams.iter_rows(folder, s, "sft", split):
                ex = sharegpt_row(r)
                if ex is not None:
                    fh.write(json.dumps(ex, ensure_ascii=False) + "\n")
                    n += 1
        os.replace(path + ".tmp", path)
        counts[split] = n
    info = os.path.join(out, "dataset_info.json")
    with open(info + ".tmp", "w") as fh:
        json.dump(dataset_info([sp for sp in SPLITS if counts[sp]]), fh, indent=2)
    os.replace(info + ".tmp", info)
    return counts
