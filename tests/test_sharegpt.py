"""`agent-sft export --format sharegpt`: LLaMA-Factory's ShareGPT layout, one conversation per sft row, with the
dataset_info.json that LLaMA-Factory reads; and (extended) LLaMA-Factory's own loader reading and tokenizing it.

LLaMA-Factory pins older transformers and datasets than this project, so the extended test runs it in a virtualenv
of its own, made (or reused, in under a second) by `.ci/llamafactory_env.sh` in ~/.cache/agent-sft/
llamafactory-venv, or the python `AGENT_SFT_LLAMAFACTORY_PYTHON` names.
"""

import json
import os
import subprocess
import textwrap

import pytest

import agent_sft
from agent_sft.cli import main as cli_main
from agent_sft.publish.sharegpt import OBSERVATION_JOIN, sharegpt_row
from agent_sft.tiny_model import build_tiny_chat_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ODD, EVEN = ("human", "observation"), ("gpt", "function_call")  # LLaMA-Factory's turn rule
TOOLS = [{"type": "function", "function": {"name": "act", "description": "Play a command.",
                                           "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                                                          "required": ["command"]}}}]


def tools_row() -> dict:
    """An sft row of a tool-calling episode (the chat-template shapes): a call answered by a tool message, then text."""
    return {
        "messages": [
            {"role": "system", "content": "You play a text game."},
            {"role": "user", "content": "You are in a kitchen. Find the apple."},
            {"role": "assistant", "content": "", "reasoning_content": "look first",
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "act", "arguments": '{"command": "look"}'}}]},
            {"role": "tool", "content": "You see an apple.", "tool_call_id": "c1"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "act", "arguments": '{"command": "take apple"}'}},
                            {"id": "c3", "type": "function", "function": {"name": "act", "arguments": '{"command": "eat"}'}}]},
            {"role": "tool", "content": "Taken.", "tool_call_id": "c2"},
            {"role": "tool", "content": "Eaten.", "tool_call_id": "c3"},
            {"role": "assistant", "content": "Done: the apple is eaten."},
        ],
        "tools": json.dumps(TOOLS), "episode_id": "e1", "env": "kitchen", "task_id": "t1", "step": None,
        "success": True, "reward": 1.0,
    }


@pytest.fixture(scope="module")
def exported(flaky_folders, tmp_path_factory):
    """Per prompt style: the folder's sft rows and its ShareGPT export (by the CLI)."""
    root = tmp_path_factory.mktemp("sharegpt")
    out = {}
    for style, folder in flaky_folders.items():
        assert cli_main(["export", folder, "--format", "sharegpt", "--out", str(root / style)]) == 0
        out[style] = (agent_sft.load(folder, "sft"), root / style)
    return out


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_sft_row_is_one_conversation_in_llamafactorys_layout(exported):
    for sft, out in exported.values():
        info = json.loads((out / "dataset_info.json").read_text())
        assert set(info) == {f"agent_sft_{sp}" for sp in ("train", "validation") if len(sft[sp])}
        for split, rows in sft.items():
            lines = read_lines(out / f"{split}.jsonl")
            assert len(lines) == len(rows)
            for row, ex in zip(rows, lines):
                conv = ex["conversations"]
                assert all(t["from"] in (ODD, EVEN)[i % 2] for i, t in enumerate(conv)) and len(conv) % 2 == 0
                assert [t["value"] for t in conv] == [m["content"] for m in row["messages"] if m["role"] != "system"]
                assert [t["from"] for t in conv] == [{"user": "human", "assistant": "gpt"}[m["role"]]
                                                     for m in row["messages"]]
                assert ex["system"] == "" and ex["tools"] == ""  # these folders have no system message, no tools
                assert (ex["episode_id"], ex["step"], ex["success"]) == (row["episode_id"], row["step"], row["success"])
        entry = info["agent_sft_train"]
        assert entry == {"file_name": "train.jsonl", "formatting": "sharegpt",
                         "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
                         "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                                  "assistant_tag": "gpt", "observation_tag": "observation",
                                  "function_tag": "function_call", "system_tag": "system"}}
    (window, _), (chat, _) = exported["window"], exported["chat"]
    assert {len(r["messages"]) for r in window["train"]} == {2}  # a window prompt and its answer per step
    assert max(len(r["messages"]) for r in chat["train"]) > 2  # a whole episode per row


def test_tool_calls_become_function_call_and_observation_turns():
    ex = sharegpt_row(tools_row())
    assert ex["system"] == "You play a text game."
    assert json.loads(ex["tools"]) == [TOOLS[0]["function"]]
    assert ex["conversations"] == [
        {"from": "human", "value": "You are in a kitchen. Find the apple."},
        {"from": "function_call", "value": '{"name": "act", "arguments": {"command": "look"}}'},
        {"from": "observation", "value": "You see an apple."},
        {"from": "function_call", "value": '[{"name": "act", "arguments": {"command": "take apple"}}, '
                                           '{"name": "act", "arguments": {"command": "eat"}}]'},
        {"from": "observation", "value": "Taken." + OBSERVATION_JOIN + "Eaten."},
        {"from": "gpt", "value": "Done: the apple is eaten."},
    ]
    assert sharegpt_row({"messages": [{"role": "user", "content": "hi"}]}) is None  # nothing to train


def expected_turns(messages: list[dict]) -> list[dict]:
    """The turns a tools folder's sft row gives: each call a function_call, each tool answer an observation."""
    out = []
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            (c,) = m["tool_calls"]
            call = {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
            out.append({"from": "function_call", "value": json.dumps(call)})
        elif m["role"] != "system":
            out.append({"from": {"user": "human", "tool": "observation", "assistant": "gpt"}[m["role"]],
                        "value": m["content"]})
    return out


@pytest.fixture(scope="module")
def tools_exported(tool_folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("sharegpt_tools")
    out = {}
    for style, folder in tool_folders.items():
        assert cli_main(["export", folder, "--format", "sharegpt", "--out", str(root / style)]) == 0
        out[style] = (agent_sft.load(folder, "sft"), root / style)
    return out


def test_a_tool_call_folder_exports_calls_observations_and_tools(tools_exported):
    for style, (sft, out) in tools_exported.items():
        lines = read_lines(out / "train.jsonl")
        assert len(lines) == len(sft["train"]) > 0
        for row, ex in zip(sft["train"], lines):
            assert ex["conversations"] == expected_turns(row["messages"])
            assert all(t["from"] in (ODD, EVEN)[i % 2] for i, t in enumerate(ex["conversations"]))
            assert ex["system"] == "You cross frozen lakes."
            assert json.loads(ex["tools"]) == [t["function"] for t in json.loads(row["tools"])]
        kinds = {t["from"] for ex in lines for t in ex["conversations"]}
        assert kinds == ({"human", "function_call", "observation"} if style == "chat" else {"human", "function_call"})


# --- LLaMA-Factory's own loader, in its virtualenv -----------------------------------------------

LLAMAFACTORY_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    from transformers import PreTrainedTokenizerFast, Seq2SeqTrainingArguments
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments, ModelArguments

    job = json.load(open(sys.argv[1]))
    cfg = json.load(open(job["model"] + "/tokenizer_config.json"))
    # the tiny tokenizer as its tokenizer.json holds it (LLaMA-Factory's transformers predates its config's class)
    tok = PreTrainedTokenizerFast(tokenizer_file=job["model"] + "/tokenizer.json", eos_token=cfg["eos_token"],
                                  pad_token=cfg["pad_token"])
    report = {}
    for name, (folder, dataset) in job["datasets"].items():
        data_args = DataArguments(dataset_dir=folder, dataset=dataset, template="qwen", cutoff_len=8192)
        model_args = ModelArguments(model_name_or_path=job["model"])
        training_args = Seq2SeqTrainingArguments(output_dir=job["work"] + "/" + name, report_to=[])
        template = get_template_and_fix_tokenizer(tok, data_args)
        ds = get_dataset(template, model_args, data_args, training_args, stage="sft", tokenizer=tok)["train_dataset"]
        report[name] = [{"input": tok.decode(ex["input_ids"]), "labels": tok.decode([t for t in ex["labels"] if t >= 0])}
                        for ex in ds]
    json.dump(report, open(sys.argv[2], "w"))
    """
)


def llamafactory_python() -> str:
    """`AGENT_SFT_LLAMAFACTORY_PYTHON`, else the virtualenv `.ci/llamafactory_env.sh` makes (or reuses)."""
    python = os.environ.get("AGENT_SFT_LLAMAFACTORY_PYTHON")
    if python:
        return python
    proc = subprocess.run(["bash", os.path.join(ROOT, ".ci", "llamafactory_env.sh")], capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, f".ci/llamafactory_env.sh failed:\n{proc.stderr[-4000:]}"
    return proc.stdout.strip()


@pytest.mark.extended
def test_llamafactory_loads_and_tokenizes_the_export(exported, tools_exported, tmp_path):
    python = llamafactory_python()
    tools_dir = tmp_path / "tools"
    tools_dir.mkdir()
    (tools_dir / "train.jsonl").write_text(json.dumps(sharegpt_row(tools_row())) + "\n")
    (tools_dir / "dataset_info.json").write_text((exported["chat"][1] / "dataset_info.json").read_text())
    datasets = {style: (str(out), "agent_sft_train") for style, (_, out) in exported.items()}
    datasets["tools"] = (str(tools_dir), "agent_sft_train")
    datasets.update({f"tools_{style}": (str(out), "agent_sft_train") for style, (_, out) in tools_exported.items()})
    job = {"model": build_tiny_chat_model(tmp_path / "tiny"), "datasets": datasets, "work": str(tmp_path / "work")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "lf_check.py").write_text(LLAMAFACTORY_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", DISABLE_VERSION_CHECK="1")
    proc = subprocess.run([python, str(tmp_path / "lf_check.py"), str(tmp_path / "job.json"), str(tmp_path / "report.json")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"LLaMA-Factory script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    report = json.loads((tmp_path / "report.json").read_text())
    for style, (sft, _) in exported.items():
        # every row kept (LLaMA-Factory empties an example it finds malformed), and trained on its answers only
        assert len(report[style]) == len(sft["train"])
        for row, ex in zip(sft["train"], report[style]):
            answers = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
            assert ex["labels"] == "".join(a + "<|im_end|>\n" for a in answers), style  # qwen's turn ending
            assert all(m["content"] in ex["input"] for m in row["messages"])
    for style, (sft, _) in tools_exported.items():
        assert len(report[f"tools_{style}"]) == len(sft["train"])
        for row, ex in zip(sft["train"], report[f"tools_{style}"]):
            calls = [t["value"] for t in expected_turns(row["messages"]) if t["from"] == "function_call"]
            assert ex["labels"] == "".join(f"<tool_call>\n{c}\n</tool_call><|im_end|>\n" for c in calls), style
            assert '"name": "act"' in ex["input"] and "You cross frozen lakes." in ex["input"]
    (tools,) = report["tools"]
    assert '"name": "act"' in tools["input"] and "Play a command." in tools["input"]  # the tools, in the system turn
    assert '<tool_call>\n{"name": "act", "arguments": {"command": "look"}}\n</tool_call>' in tools["labels"]
    assert "You see an apple." in tools["input"] and "Done: the apple is eaten." in tools["labels"]
