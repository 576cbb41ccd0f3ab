"""Schema additions: a setting that changes what a shard holds (token ids, tool calls) adds columns in the
folders collected with it only. A folder without them is written exactly as before; one with them loads, compacts,
builds and repairs with its columns, lists them in meta/info.json, and refuses rows of another kind."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pytest
from fixtures_data import make_episode

import agent_sft
from agent_sft.cli import main
from agent_sft.dataset import layout, shards
from agent_sft.dataset.formats import episode_to_row
from agent_sft.dataset.writer import DatasetWriter
from agent_sft.errors import ConfigMismatchError, SchemaVersionError
from agent_sft.records import RAW_SCHEMA, SFT_SCHEMA

FP = {"env": "alfworld", "seed": 0}
TOOLS = json.dumps([{"type": "function", "function": {"name": "act", "parameters": {"type": "object"}}}])


def with_additions(i: int) -> dict:
    """An episode's raw row as a run with token recording and tool calls writes it."""
    row = episode_to_row(make_episode(i, steps=3, success=i % 2 == 0, val_fraction=0.0, style="chat"))
    for t, s in enumerate(row["steps"]):
        s.update(prompt_token_ids=[1, 2, 3 + t], completion_token_ids=[7, 8], logprobs=[-0.5, -0.25],
                 top_logprobs=[[{"token_id": 7, "logprob": -0.5}], [{"token_id": 8, "logprob": -0.25}]])
    for m in row["messages"]:
        if m["role"] == "assistant":
            m["tool_calls"] = [{"id": "call_0", "type": "function", "function": {"name": "act", "arguments": "{}"}}]
    row.update(tokens_complete=True, tools=TOOLS)
    return row


def file_schemas(d, config="raw"):
    out = []
    for sp in ("train", "validation"):
        for n in sorted(layout.shard_names(str(d))[(config, sp)]):
            with pa.memory_map(str(d / "data" / config / sp / n)) as src:
                out.append(pa.ipc.open_file(src).schema)
    return out


def test_a_folder_without_additions_is_written_as_before(tmp_path):
    d = tmp_path / "ds"
    with DatasetWriter.open(d, fingerprint=FP, flush_every_episodes=2) as w:
        for i in range(5):
            w.add(make_episode(i))
    info = json.loads((d / "meta" / "info.json").read_text())
    assert "schema_additions" not in info
    for config, base in (("raw", RAW_SCHEMA), ("sft", SFT_SCHEMA)):
        for sch in file_schemas(d, config):
            assert sch.remove_metadata() == base and "additions" not in json.loads(sch.metadata[shards.META_KEY])


def test_a_folder_with_additions_keeps_its_columns_through_every_command(tmp_path, capsys):
    d = tmp_path / "ds"
    rows = [with_additions(i) for i in range(6)]
    with DatasetWriter.open(d, fingerprint=FP, flush_every_episodes=2, additions=("tools", "tokens")) as w:
        for r in rows:
            w.add(r)  # three shards, compacted into one as the run ends
    info = json.loads((d / "meta" / "info.json").read_text())
    assert info["schema_additions"] == ["tokens", "tools"]
    raw = {r["episode_id"]: r for r in agent_sft.load(str(d), "raw")["train"]}
    assert raw[rows[0]["episode_id"]]["steps"][2]["prompt_token_ids"] == [1, 2, 5]
    assert raw[rows[0]["episode_id"]]["steps"][0]["top_logprobs"][1] == [{"token_id": 8, "logprob": -0.25}]
    assert raw[rows[0]["episode_id"]]["tokens_complete"] is True
    sft = agent_sft.load(str(d), "sft")["train"]
    assert all(r["tools"] == TOOLS for r in sft)
    calls = [m["tool_calls"] for r in sft for m in r["messages"] if m["role"] == "assistant"]
    assert calls and all(c == [{"id": "call_0", "type": "function", "function": {"name": "act", "arguments": "{}"}}]
                         for c in calls)
    assert len(datasets.load_dataset(str(d), "raw")["train"]) == 6  # as a user loads it, from the README

    # a build, a named build and a repair keep them
    assert main(["build", str(d), "--style", "step"]) == 0
    assert main(["build", str(d), "--name", "won", "--require-success"]) == 0
    assert all(r["tools"] == TOOLS for r in agent_sft.load(str(d), "won")["train"])
    (d / "meta" / "info.json").unlink()
    assert main(["repair", str(d)]) == 0
    assert json.loads((d / "meta" / "info.json").read_text())["schema_additions"] == ["tokens", "tools"]
    assert len(agent_sft.load(str(d), "sft")["train"]) == 18 and main(["repair", "--check", str(d)]) == 0
    capsys.readouterr()

    # rows of another kind are refused, either way round
    with pytest.raises(ConfigMismatchError, match="schema additions tokens, tools, this run's none"):
        DatasetWriter.open(d, fingerprint=FP)


def test_a_folder_with_an_addition_this_version_does_not_know_is_refused(tmp_path):
    d = tmp_path / "ds"
    with DatasetWriter.open(d, fingerprint=FP) as w:
        w.add(make_episode(0))
    info = json.loads((d / "meta" / "info.json").read_text())
    info["schema_additions"] = ["video"]
    (d / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(SchemaVersionError, match="schema additions video are not known to this agent-sft"):
        agent_sft.load(str(d), "sft")
