"""`agent-sft export --format verl|jsonl`: the files carry real values, and verl's own dataset classes load
every row of the Parquet files.

verl pins an older transformers than this project, so its classes run in a separate virtualenv, which
`bash scripts/install.sh --test` makes in ~/.cache/agent-sft/verl-venv (by `.ci/verl_env.sh`). The test
uses the python `AGENT_SFT_VERL_PYTHON` names, else that one. Without either the verl test fails; set
AGENT_SFT_SKIP_VERL=1 to skip it instead.
"""

import csv
import json
import os
import subprocess
import textwrap

import datasets
import pyarrow.parquet as pq
import pytest
from fixtures_data import make_episode

from agent_sft.cli import main as cli_main
from agent_sft.dataset.writer import BuildSpec, DatasetWriter
from agent_sft.publish.exports import VERL_COLUMNS
from agent_sft.tiny_model import build_tiny_chat_model

FP = {"env": "alfworld", "policy": "expert"}
SEED_FIELDS = {"messages_list", "success", "rewards", "final_reward", "task_info", "episode_length"}
VERL_SPLITS = {"train": "train", "val": "validation"}
# Window style keeps only won episodes, so raw_trajectories.json must list exactly those.
STYLES = {"window": {"require_success": True}, "chat": {}}

VERL_ENV_HOWTO = (
    "run `bash scripts/install.sh --test` (or `bash .ci/verl_env.sh`): it creates verl 0.9.1's own virtualenv in "
    "~/.cache/agent-sft/verl-venv, where this test looks; for a virtualenv elsewhere, "
    "`export AGENT_SFT_VERL_PYTHON=\"$(bash .ci/verl_env.sh DIR)\"`"
)


def _episodes(style):
    eps = [make_episode(i, s, style=style, invalid_at=2 if i == 4 else None) for i in range(10) for s in range(2)]
    # Text that CSV quoting, JSON and byte-level BPE must all carry through unchanged.
    eps[0].messages[1]["content"] += '\nA "quoted" note, with commas; and unicode: café, Straße, 冰箱 ✓'
    eps[0].steps[0].response = eps[0].messages[2]["content"] = '<think>"é",\nnext</think><action>look</action>'
    return eps


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Per style: a folder written by DatasetWriter, its verl and JSONL exports (by the CLI), episodes and `sft`."""
    root = tmp_path_factory.mktemp("verl_export")
    result = {}
    for style, filters in STYLES.items():
        folder, out, jsonl = root / f"{style}_data", root / f"{style}_verl", root / f"{style}_jsonl"
        eps = _episodes(style)
        with DatasetWriter(str(folder), fingerprint={**FP, "style": style}, meta={"prompt": {"style": style}},
                           build=BuildSpec(filters=filters)) as w:
            for ep in eps:
                w.add(ep)
        assert cli_main(["export", str(folder), "--format", "verl", "--out", str(out)]) == 0
        assert cli_main(["export", str(folder), "--format", "jsonl", "--out", str(jsonl)]) == 0
        sft = datasets.load_dataset(str(folder), "sft")
        result[style] = {"folder": folder, "out": out, "jsonl": jsonl, "episodes": eps, "sft": sft}
    return result


def _parquet_rows(out, vs):
    return pq.read_table(out / f"{vs}.parquet").to_pylist()


@pytest.mark.parametrize("style", STYLES)
def test_verl_parquet_columns_carry_real_values(exported, style):
    ex = exported[style]
    kept = {r["episode_id"] for split in ex["sft"].values() for r in split}
    for vs, split in VERL_SPLITS.items():
        table = pq.read_table(ex["out"] / f"{vs}.parquet")
        assert table.column_names == VERL_COLUMNS
        rows = table.to_pylist()
        sft = ex["sft"][split]
        assert len(rows) == len(sft) > 0
        for i, (row, src) in enumerate(zip(rows, sft)):
            assert row["data_source"] == "alfworld" and row["ability"]
            assert isinstance(row["prompt"], list) and row["prompt"], row
            assert all(set(m) == {"role", "content"} for m in row["prompt"])
            assert row["prompt"][-1]["role"] == "user"
            assert row["messages"] == src["messages"]
            assert row["messages"][-1]["role"] == "assistant"
            assert row["response"] == row["messages"][-1]["content"] != ""
            assert row["prompt"] == row["messages"][:-1]
            assert row["reward_model"]["ground_truth"] == src["goal"] != ""
            info = row["extra_info"]
            assert info["split"] == vs and info["index"] == i
            assert info["episode_id"] == src["episode_id"] in kept
            assert info["step"] == (-1 if style == "chat" else src["step"])
        if style == "window":
            assert {len(r["prompt"]) for r in rows} == {2}  # system + this step's user turn
        else:
            assert all(r["extra_info"]["episode_length"] == sum(m["role"] == "assistant" for m in r["messages"])
                       for r in rows)


@pytest.mark.parametrize("style", STYLES)
def test_csv_matches_parquet(exported, style):
    out = exported[style]["out"]
    for vs in VERL_SPLITS:
        rows = _parquet_rows(out, vs)
        with open(out / f"{vs}.csv", newline="") as fh:
            reader = csv.reader(fh)
            assert next(reader) == VERL_COLUMNS
            lines = [dict(zip(VERL_COLUMNS, line)) for line in reader]
        assert len(lines) == len(rows)
        for line, row in zip(lines, rows):
            for col in VERL_COLUMNS:
                value = line[col] if isinstance(row[col], str) else json.loads(line[col])
                assert value == row[col], col


@pytest.mark.parametrize("style", STYLES)
def test_raw_trajectories_hold_kept_episodes(exported, style):
    ex = exported[style]
    with open(ex["out"] / "raw_trajectories.json") as fh:
        records = json.load(fh)
    by_id = {ep.episode_id: ep for ep in ex["episodes"]}
    expected = {e.episode_id for e in ex["episodes"] if e.success or not STYLES[style].get("require_success")}
    assert 0 < len(expected) < len(by_id) or style == "chat"
    assert isinstance(records, list)
    assert sorted(r["task_info"]["episode_id"] for r in records) == sorted(expected)
    for r in records:
        assert set(r) >= SEED_FIELDS
        ep = by_id[r["task_info"]["episode_id"]]
        assert r["messages_list"] == ep.messages
        assert r["success"] is ep.success
        assert r["rewards"] == ep.rewards and len(r["rewards"]) == r["episode_length"] == len(ep.steps)
        assert r["final_reward"] == pytest.approx(sum(r["rewards"]))
        assert r["task_info"]["task_id"] == ep.task_id and r["task_info"]["task_type"] == ep.task_type


@pytest.mark.parametrize("style", STYLES)
def test_jsonl_one_chat_per_line(exported, style):
    ex = exported[style]
    for split in ("train", "validation"):
        with open(ex["jsonl"] / f"{split}.jsonl") as fh:
            lines = [json.loads(line) for line in fh]
        assert len(lines) == len(ex["sft"][split]) > 0
        for line, src in zip(lines, ex["sft"][split]):
            assert line["messages"] == src["messages"]
            assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in line["messages"])
            assert line["messages"][-1]["role"] == "assistant"
            assert line["episode_id"] == src["episode_id"]


# --- verl's own classes, in the verl virtualenv ---------------------------------------------------

VERL_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import pyarrow.parquet as pq
    import transformers
    import verl
    from omegaconf import OmegaConf
    from verl.utils import hf_tokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset
    from verl.utils.dataset.rl_dataset import RLHFDataset

    job = json.load(open(sys.argv[1]))
    report = {"verl": verl.__version__, "transformers": transformers.__version__, "tokenizers": {}, "files": {}}
    toks = {}
    for name, path in job["tokenizers"].items():
        tok = hf_tokenizer(path)
        toks[name] = tok
        report["tokenizers"][name] = {
            "class": type(tok).__name__,
            "probe_ids": [tok.encode(t) for t in job["probes"]],
            "chat_ids": [tok.apply_chat_template(c, tokenize=True, return_dict=False) for c in job["chats"]],
        }
    sft_config = OmegaConf.create(
        {"messages_key": "messages", "max_length": job["max_length"], "truncation": "error", "pad_mode": "right"}
    )
    rl_config = OmegaConf.create(
        {
            "prompt_key": "prompt",
            "max_prompt_length": job["max_length"],
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": 1,
            "truncation": "error",
            "return_raw_chat": True,
            "cache_dir": job["cache_dir"],
        }
    )
    for key, path in job["files"].items():
        out = report["files"][key] = {"parquet_rows": pq.read_metadata(path).num_rows, "sft": {}}
        for name, tok in toks.items():
            ds = MultiTurnSFTDataset(path, tok, sft_config)
            items = []
            for i in range(len(ds)):
                it = ds[i]
                n = int(it["attention_mask"].sum())
                ids = it["input_ids"].tolist()
                mask = it["loss_mask"].tolist()
                items.append(
                    {
                        "shape": list(it["input_ids"].shape),
                        "ids": ids[:n],
                        "trained": tok.decode([t for t, m in zip(ids, mask) if m]),
                        "mask_outside_sequence": sum(mask[n:]),
                    }
                )
            out["sft"][name] = {"len": len(ds), "items": items}
        rl = RLHFDataset(path, toks["plain"], rl_config)
        rl_items = []
        for i in range(len(rl)):
            it = rl[i]
            rl_items.append(
                {
                    "raw_prompt": it["raw_prompt"],
                    "index": it["index"],
                    "data_source": it["data_source"],
                    "ground_truth": it["reward_model"]["ground_truth"],
                    "split": it["extra_info"]["split"],
                }
            )
        out["rl"] = {"len": len(rl), "items": rl_items}
    long_config = OmegaConf.merge(sft_config, {"max_length": 4 * job["max_length"]})  # chats with the schemas
    long_rl = OmegaConf.merge(rl_config, {"max_prompt_length": 4 * job["max_length"]})
    for key, path in job["tool_files"].items():  # folders collected with tool-call actions: tools in every row
        ds = MultiTurnSFTDataset(path, toks["plain"], long_config)
        items = []
        for i in range(len(ds)):
            it = ds[i]
            n = int(it["attention_mask"].sum())
            ids, mask = it["input_ids"].tolist(), it["loss_mask"].tolist()
            items.append({"ids": ids[:n], "trained": toks["plain"].decode([t for t, m in zip(ids, mask) if m])})
        rl = RLHFDataset(path, toks["plain"], long_rl)
        report["files"][key] = {"sft": items, "rl_prompts": [rl[i]["raw_prompt"] for i in range(len(rl))]}
    json.dump(report, open(sys.argv[2], "w"))
    """
)


def default_verl_python() -> str:
    """Where `.ci/verl_env.sh` (run by `scripts/install.sh --test`) puts the virtualenv's python by default."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "agent-sft", "verl-venv", "bin", "python")


def verl_python() -> str:
    """The verl virtualenv's python: `AGENT_SFT_VERL_PYTHON`, else the default one; fails (skips with
    AGENT_SFT_SKIP_VERL=1) when there is none."""
    python = os.environ.get("AGENT_SFT_VERL_PYTHON")
    if not python:
        python = default_verl_python()
        complete = os.path.exists(os.path.join(os.path.dirname(os.path.dirname(python)), ".agent-sft-verl-env"))
        if not (complete and os.access(python, os.X_OK)):
            if os.environ.get("AGENT_SFT_SKIP_VERL") == "1":
                pytest.skip(f"AGENT_SFT_SKIP_VERL=1 and no verl virtualenv; to run it, {VERL_ENV_HOWTO}")
            pytest.fail(f"no complete verl virtualenv at {python} and AGENT_SFT_VERL_PYTHON is not set. The verl test needs "
                        f"verl in its own virtualenv: {VERL_ENV_HOWTO}. To skip it instead, set AGENT_SFT_SKIP_VERL=1.",
                        pytrace=False)
    if not os.access(python, os.X_OK):
        pytest.fail(f"AGENT_SFT_VERL_PYTHON={python} is not an executable python; {VERL_ENV_HOWTO}", pytrace=False)
    return os.path.abspath(python)


def _assistant_text(messages):
    return "".join(m["content"] + "<|im_end|>\n" for m in messages if m["role"] == "assistant")


@pytest.mark.verl
def test_verl_datasets_load_every_row(request, tmp_path):
    from transformers import AutoTokenizer

    python = verl_python()
    exported = request.getfixturevalue("exported")
    tool_files = {}
    for style, folder in request.getfixturevalue("tool_folders").items():
        assert cli_main(["export", folder, "--format", "verl", "--out", str(tmp_path / f"tools_{style}")]) == 0
        tool_files.update({f"tools-{style}/{vs}": str(tmp_path / f"tools_{style}" / f"{vs}.parquet")
                           for vs in VERL_SPLITS})

    tokenizers = {
        "plain": build_tiny_chat_model(tmp_path / "tiny"),
        "generation": build_tiny_chat_model(tmp_path / "tiny_gen", generation_markers=True),
    }
    files = {f"{style}/{vs}": str(exported[style]["out"] / f"{vs}.parquet") for style in STYLES for vs in VERL_SPLITS}
    rows = {key: pq.read_table(path).to_pylist() for key, path in files.items()}
    chats = [rows["chat/train"][0]["messages"], rows["window/train"][0]["messages"]]
    probes = ["You arrive at location 3.\n\n  café 冰箱 <|im_start|>user\n<action>go to drawer 1</action><|im_end|>"]
    job = {"tokenizers": tokenizers, "files": files, "max_length": 1024, "cache_dir": str(tmp_path / "verl_cache"),
           "probes": probes, "chats": chats, "tool_files": tool_files}
    (tmp_path / "job.json").write_text(json.dumps(job))
    script = tmp_path / "verl_check.py"
    script.write_text(VERL_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", RAY_AUTH_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([python, str(script), str(tmp_path / "job.json"), str(tmp_path / "report.json")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"verl script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verl"] == "0.9.1"

    # The tiny tokenizer loads in verl's (older) transformers and tokenizes exactly as it does here.
    for name, path in tokenizers.items():
        here = AutoTokenizer.from_pretrained(path)
        there = report["tokenizers"][name]
        assert there["probe_ids"] == [here.encode(t) for t in probes], (name, report["transformers"])
        assert there["chat_ids"] == [here.apply_chat_template(c, tokenize=True, return_dict=False) for c in chats]

    here = AutoTokenizer.from_pretrained(tokenizers["plain"])
    _check_tool_files(report, tool_files, here)
    for key, parquet_rows in rows.items():
        got = report["files"][key]
        assert got["parquet_rows"] == len(parquet_rows) > 0
        for name, sft in got["sft"].items():
            assert sft["len"] == len(parquet_rows), f"MultiTurnSFTDataset dropped rows of {key} ({name})"
            for item, row in zip(sft["items"], parquet_rows):
                assert item["shape"] == [job["max_length"]]
                assert item["ids"] == here.apply_chat_template(row["messages"], tokenize=True, return_dict=False)
                # The loss mask covers every assistant turn (text, <|im_end|> and the newline after it), nothing else.
                assert item["trained"] == _assistant_text(row["messages"]), (key, name)
                assert item["mask_outside_sequence"] == 0
        rl = got["rl"]
        assert rl["len"] == len(parquet_rows), f"RLHFDataset dropped rows of {key}"
        for i, (item, row) in enumerate(zip(rl["items"], parquet_rows)):
            assert item["raw_prompt"] == row["prompt"] and item["raw_prompt"][-1]["role"] == "user"
            assert item["index"] == i
            assert item["data_source"] == "alfworld"
            assert item["ground_truth"] == row["reward_model"]["ground_truth"] != ""
            assert item["split"] == key.split("/")[1]


def _check_tool_files(report, tool_files, here):
    """verl's classes read every row of a tools folder's export: MultiTurnSFTDataset renders its tools and calls
    with the chat template as it is rendered here, training on the calls only; RLHFDataset keeps the calls."""
    for key, path in tool_files.items():
        table = pq.read_table(path)
        assert table.column_names == [*VERL_COLUMNS, "tools"]
        rows, got = table.to_pylist(), report["files"][key]
        assert len(got["sft"]) == len(rows) > 0 and len(got["rl_prompts"]) == len(rows)
        for item, prompt, row in zip(got["sft"], got["rl_prompts"], rows):
            assert row["tools"][0]["function"]["name"] == "act" and "parameters" in row["tools"][0]["function"]
            assert item["ids"] == here.apply_chat_template(row["messages"], tools=row["tools"], tokenize=True,
                                                           return_dict=False)
            text = here.decode(item["ids"])
            assert '"name": "act"' in text and "Commands admissible when the episode starts" in text  # the schema
            calls = [c["function"] for m in row["messages"] if m["role"] == "assistant" for c in m["tool_calls"]]
            assert calls and all(isinstance(c["arguments"], dict) for c in calls)  # objects, written once by tojson
            assert all(f'{{"name": "act", "arguments": {json.dumps(c["arguments"])}}}' in item["trained"] for c in calls)
            assert '"arguments": "' not in item["trained"]
            assert "<tools>" not in item["trained"] and "<tool_response>" not in item["trained"]
            assert [m.get("tool_calls") for m in prompt] == [m["tool_calls"] for m in row["prompt"]]
