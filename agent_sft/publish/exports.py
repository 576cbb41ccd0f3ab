"""Exports for the original PPO-trainer feature's users: verl Parquet/CSV + raw_trajectories.json, and JSONL.

Everything streams shard by shard, so an export of any size runs in bounded memory.
"""

from __future__ import annotations

import csv
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from agent_sft.dataset import layout, shards
from agent_sft.dataset.formats import call_arguments, seed_record, verl_row
from agent_sft.errors import ConfigError
from agent_sft.publish.atif import export_atif
from agent_sft.publish.sharegpt import export_sharegpt
from agent_sft.publish.streams import iter_batches, make_out, open_folder
from agent_sft.publish.sts import export_sts
from agent_sft.publish.tokens import export_tokens
from agent_sft.records import MESSAGES_TYPE, SPLITS, schema

VERL_SPLIT = {"train": "train", "validation": "val"}
VERL_COLUMNS = ["data_source", "prompt", "response", "ability", "reward_model", "extra_info", "messages"]
VERL_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", MESSAGES_TYPE),
        ("response", pa.string()),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        (
            "extra_info",
            pa.struct(
                [
                    ("split", pa.string()),
                    ("index", pa.int64()),
                    ("episode_id", pa.string()),
                    ("step", pa.int64()),
                    ("task_id", pa.string()),
                    ("task_type", pa.string()),
                    ("success", pa.bool_()),
                    ("reward", pa.float64()),
                    ("final_reward", pa.float64()),
                    ("episode_length", pa.int64()),
                ]
            ),
        ),
        ("messages", MESSAGES_TYPE),
    ]
)


def verl_schema(folder: str, info: dict, s: layout.Scan) -> pa.Schema:
    """The verl files' schema: `VERL_SCHEMA` for a folder with text actions. With tool-call actions the messages
    keep their calls (`tool_calls`, `tool_call_id`, `reasoning_content`) and a last column `tools` holds each row's
    schemas as a list, the shape `MultiTurnSFTDataset` hands the chat template. Parquet gives that column one type,
    made from every toolset of the folder: a tool's `properties` hold the other tools' parameter names too, as
    nulls, where the tools offered differ in them (WebShop's `search(query)` and `click(target)`). A call's
    `arguments` are an object there (chat templates write them with `tojson`), typed the same way: a call gets the
    other tools' argument names as nulls, and arguments that are not a JSON object are null."""
    adds = layout.additions(info)
    if "tools" not in adds:
        return VERL_SCHEMA
    offered: set[str] = set()
    arguments: set[str] = set()
    for split in SPLITS:
        for name, meta in sorted(s.sft[split].items()):
            if meta["rows"]:
                path = layout.shard_path(folder, "sft", split, layout.sft_name(name, s.generation))
                for batch in shards.iter_shard_batches(path):
                    offered.update(t for t in batch.column(batch.schema.get_field_index("tools")).to_pylist() if t)
                    for messages in batch.column(batch.schema.get_field_index("messages")).to_pylist():
                        arguments.update(json.dumps(call_arguments(c["function"]["arguments"]), sort_keys=True)
                                         for m in messages for c in m.get("tool_calls") or [])
    try:
        tools = pa.array([json.loads(t) for t in sorted(offered)] or [[]]).type
        objects = [json.loads(a) for a in sorted(arguments)]
        args_type = pa.array(objects).type if any(objects) else pa.null()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ConfigError(f"{folder}: the tools this folder offers have no one Parquet type for verl ({e})") from None
    messages = _with_arguments(schema("sft", adds).field("messages").type, args_type)
    retyped = {"prompt": messages, "messages": messages}
    return pa.schema([pa.field(f.name, retyped.get(f.name, f.type)) for f in VERL_SCHEMA] + [("tools", tools)])


def _with_arguments(messages: pa.DataType, arguments: pa.DataType) -> pa.DataType:
    """The messages type with each call's `function.arguments` of type `arguments` (an object, not JSON text)."""
    m = messages.value_type
    calls = m.field("tool_calls").type.value_type
    function = calls.field("function").type
    function = pa.struct([pa.field(f.name, arguments) if f.name == "arguments" else f for f in function])
    calls = pa.struct([pa.field(f.name, function) if f.name == "function" else f for f in calls])
    return pa.list_(pa.struct([pa.field(f.name, pa.list_(calls)) if f.name == "tool_calls" else f for f in m]))


def export_verl(folder: str, out: str) -> dict[str, int]:
    """Write raw_trajectories.json, train/val .parquet and .csv as the original feature did.

    Parquet rows pass verl's `RLHFDataset` (prompt as a list of messages, `reward_model.ground_truth`,
    `extra_info.split/index`) and `MultiTurnSFTDataset` (`messages`, and `tools` for a folder collected with
    tool-call actions: see `verl_schema`). raw_trajectories.json holds the episodes that passed the filters
    (those with rows in `sft`).

    Returns:
        {"train": rows, "val": rows, "episodes": n}
    """
    info = layout.require_dataset(folder)
    s = layout.open_scan(folder, info)
    make_out(out)
    file_schema = verl_schema(folder, info, s)
    columns = file_schema.names
    counts: dict[str, int] = {}
    kept_ids: set[str] = set()
    for split in SPLITS:
        vs = VERL_SPLIT[split]
        pq_path, csv_path = os.path.join(out, f"{vs}.parquet"), os.path.join(out, f"{vs}.csv")
        n = 0
        with pq.ParquetWriter(pq_path + ".tmp", file_schema) as pw, open(csv_path + ".tmp", "w", newline="") as cf:
            cw = csv.writer(cf)
            cw.writerow(columns)
            for rows in iter_batches(folder, s, "sft", split):
                vrows = []
                for r in rows:
                    kept_ids.add(r["episode_id"])
                    vrows.append(verl_row(r, vs, n))
                    n += 1
                pw.write_table(pa.Table.from_pylist(vrows, schema=file_schema))
                for v in vrows:
                    cw.writerow([v[c] if isinstance(v[c], str) else json.dumps(v[c], ensure_ascii=False) for c in columns])
        os.replace(pq_path + ".tmp", pq_path)
        os.replace(csv_path + ".tmp", csv_path)
        counts[vs] = n
    path = os.path.join(out, "raw_trajectories.json")
    episodes = 0
    with open(path + ".tmp", "w") as fh:
        fh.write("[")
        for split in SPLITS:
            for rows in iter_batches(folder, s, "raw", split):
                for r in rows:
                    if r["episode_id"] in kept_ids:
                        fh.write(("\n" if not episodes else ",\n") + json.dumps(seed_record(r), ensure_ascii=False))
                        episodes += 1
        fh.write("\n]\n")
    os.replace(path + ".tmp", path)
    counts["episodes"] = episodes
    return counts


def export_jsonl(folder: str, out: str) -> dict[str, int]:
    """One chat per line (`{"messages": [...], ...metadata}`): train.jsonl and validation.jsonl."""
    s = open_folder(folder)
    make_out(out)
    counts = {}
    for split in SPLITS:
        path = os.path.join(out, f"{split}.jsonl")
        n = 0
        with open(path + ".tmp", "w") as fh:
            for rows in iter_batches(folder, s, "sft", split):
                for r in rows:
                    fh.write(json.dumps(r, ensure_ascii=False) + "\n")
                    n += 1
        os.replace(path + ".tmp", path)
        counts[split] = n
    return counts


FORMATS = {"verl": export_verl, "jsonl": export_jsonl, "atif": export_atif, "sharegpt": export_sharegpt,
           "tokens": export_tokens, "sts": export_sts}
