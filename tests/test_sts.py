"""Episodes as Hub trace-viewer sessions (the Session Trace Simple Format): the files against the format the Hub
documents, the sample the run seed chooses, `agent-sft export --format sts`, and a push that uploads `traces/`
beside the folder without touching what `load_dataset` reads."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from fixtures_curation import raw_rows
from fixtures_sts import check_sts

from agent_sft.cli import main
from agent_sft.publish.sts import jsonl, outcome, path_of, sample, to_sts

# Pushed repos' configs, each loaded as a user would (argv[1]: the repo, then the config names).
LOAD_CONFIGS = """
import json, sys
from datasets import load_dataset
print(json.dumps({name: {s: d.num_rows for s, d in load_dataset(sys.argv[1], name).items()} for name in sys.argv[2:]}))
"""


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_tools_folder_gives_tool_calls_tied_to_their_results(tool_folders, tmp_path, capsys):
    for style, folder in tool_folders.items():
        assert main(["export", folder, "--format", "sts", "--traces", "all", "--out", str(tmp_path / style)]) == 0
        assert capsys.readouterr().out.strip() == f"exported sts to {tmp_path / style}: sessions 4"
        rows = {r["episode_id"]: r for r in raw_rows(folder)}
        files = _files(tmp_path / style)
        assert sorted(files) == sorted(path_of(r) for r in rows.values())
        for text in files.values():
            head, *lines = check_sts(text.decode())
            row = rows[head["id"]]
            assert (head["reward"], head["endReason"], head["steps"]) == (row["final_reward"], row["end_reason"],
                                                                          row["episode_length"])
            said = [m["message"] for m in lines]
            assert (said[0]["role"], said[0]["content"]) == ("system", "You cross frozen lakes.")
            answers = [m for m in said if m["role"] == "assistant"]
            assert len(answers) == len(row["steps"]) and all(len(m["toolCalls"]) == 1 for m in answers)
            assert [json.loads(m["toolCalls"][0]["function"]["arguments"]) for m in answers] == [
                json.loads(c["tool_calls"][0]["function"]["arguments"]) for c in row["messages"] if c["role"] == "assistant"]
            results = [m for m in said if m["role"] == "tool"]
            if style == "chat":  # each played call answered by a tool message naming it
                assert [m["toolCallId"] for m in results] == [m["toolCalls"][0]["id"] for m in answers][:-1]
            else:  # a window prompt carries the observation as the next user message
                assert not results


def test_reasoning_timestamps_and_model_from_a_row():
    row = {"episode_id": "e1", "env": "grid", "task_id": "grid/3", "success": False, "end_reason": "step_limit",
           "final_reward": 0.5, "started_at": 1_800_000_000.0, "policy": {"kind": "openai", "model": "qwen"},
           "steps": [{"latency_s": 0.25}, {"latency_s": None}, {"latency_s": 1.0}],
           "messages": [
               {"role": "user", "content": "You stand at (0, 0)."},
               {"role": "assistant", "content": "<think>east is open</think><action>east</action>"},
               {"role": "user", "content": "You stand at (1, 0)."},
               {"role": "assistant", "content": "", "reasoning_content": "north next",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "act", "arguments": '{"a": 1}'}}]},
               {"role": "tool", "content": "You stand at (1, 1).", "tool_call_id": "c1"},
               {"role": "assistant", "content": "<action>north</action>"}]}
    head, *lines = check_sts(jsonl(row))
    assert head["name"] == "grid: grid/3 (step_limit)" and head["reward"] == 0.5 and head["endReason"] == "step_limit"
    said = [m["message"] for m in lines]
    assert said[1] == {"role": "assistant", "content": "<action>east</action>", "reasoningContent": "east is open",
                       "model": "qwen", "timestamp": 1_800_000_000_250}
    assert said[3]["reasoningContent"] == "north next" and said[3]["toolCalls"] == [
        {"id": "c1", "function": {"name": "act", "arguments": '{"a": 1}'}}]
    assert said[4] == {"role": "tool", "content": "You stand at (1, 1).", "toolCallId": "c1"}  # latency unknown
    assert [m.get("timestamp") for m in said] == [1_800_000_000_000, 1_800_000_000_250, 1_800_000_000_250,
                                                  None, None, None]
    assert "reasoningContent" not in said[5] and to_sts({**row, "started_at": None})[1]["message"].get("timestamp") is None


def test_the_sample_is_a_few_per_env_and_outcome_chosen_by_the_run_seed():
    ends = ["success", "failure", "step_limit", "error"]
    found = [(f"ep{i}", ["babyai", "taxi"][i % 2], ends[i % 4 if i < 40 else 0]) for i in range(60)]
    auto = sample(found, 7, "auto")
    groups = {}
    for eid, env, end in found:
        groups.setdefault((env, end), set()).add(eid)
    assert {g: len(auto & ids) for g, ids in groups.items()} == {g: min(3, len(ids)) for g, ids in groups.items()}
    shuffled = random.Random(1).sample(found, len(found))
    assert sample(shuffled, 7, "auto") == auto  # the same episodes whatever order they are read in
    assert sample(found, 8, "auto") != auto  # another run seed, another sample
    five = sample(found, 7, 5)
    assert len(five) == 5 and len({g for g, ids in groups.items() if five & ids}) == 5  # spread over the groups
    assert sample(found, 7, 1000) == sample(found, 7, "all") == {eid for eid, _, _ in found}
    assert sample(found, 7, "none") == set() and sample(found, 7, 0) == set()
    assert outcome({"success": True, "end_reason": "success"}) == "success"
    with pytest.raises(ValueError, match="auto, all, none or a count"):
        sample(found, 7, "many")


def test_bad_traces_settings_are_refused_in_one_line(tmp_path, capsys):
    assert main(["collect", "env.env_name=frozenlake", "output.traces=some", f"output.dir={tmp_path / 'a'}"]) == 2
    assert "output.traces: expected auto, all, none or a number of episodes, got 'some'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main(["push", str(tmp_path), "alice/ds", "--traces", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--traces: expected auto, all, none or a number of episodes, got '-1'" in err


def test_push_uploads_the_sample_beside_the_folder_and_every_config_still_loads(flaky_folders, hub, tmp_path,
                                                                                capsys):
    folder = tmp_path / "frozenlake"
    shutil.copytree(flaky_folders["chat"], folder)
    # A local traces/ folder (an export into the dataset folder) is the user's: info, repair and push leave it be.
    assert main(["export", str(folder), "--format", "sts", "--traces", "all", "--out", str(folder / "traces")]) == 0
    local = _files(folder / "traces")
    assert len(local) == 20
    assert main(["repair", str(folder)]) == 0 and main(["info", str(folder)]) == 0
    assert _files(folder / "traces") == local
    assert main(["export", str(folder), "--format", "sts", "--out", str(tmp_path / "auto")]) == 0
    chosen = {f"traces/{p}": data for p, data in _files(tmp_path / "auto").items()}
    rows = raw_rows(str(folder))
    groups = {(r["env"], outcome(r)) for r in rows}
    assert len(groups) >= 2 and len(chosen) == sum(min(3, sum((r["env"], outcome(r)) == g for r in rows))
                                                   for g in groups)
    capsys.readouterr()

    repo_id = hub.new_repo_id()
    pushed = []
    for _ in range(2):  # the second push uploads the same files
        proc = hub.cli("push", str(folder), repo_id)
        assert proc.returncode == 0, proc.stderr
        repo = hub.server.repo(repo_id)
        pushed.append({p: hub.server.read(repo, "main", p) for p in repo.files("main") if p.startswith("traces/")})
    assert pushed[0] == pushed[1] == chosen
    for text in chosen.values():
        check_sts(text.decode())
    card = hub.server.read(repo, "main", "README.md").decode()
    front = yaml.safe_load(re.match(r"^---\n(.*?)\n---\n", card, re.S)[1])
    assert "traces" not in json.dumps(front["configs"])
    assert f"({hub.endpoint}/datasets/{repo_id}/tree/main/traces) holds {len(chosen)} episodes" in card
    names = [c["config_name"] for c in front["configs"]]
    loaded = hub.python(LOAD_CONFIGS, repo_id, *names)
    assert sum(loaded["raw"].values()) == 20 and set(loaded) == set(names)

    info_path = folder / "meta" / "info.json"  # the folder's recorded output.traces is the default
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info["config"]["output"]["traces"] = "1"
    info_path.write_text(json.dumps(info), encoding="utf-8")
    proc = hub.cli("push", str(folder), repo_id)  # a smaller sample: the rest leave the repo
    assert proc.returncode == 0, proc.stderr
    files = hub.server.repo(repo_id).files("main")
    assert len([p for p in files if p.startswith("traces/")]) == 1
    assert "holds 1 episodes" in hub.server.read(hub.server.repo(repo_id), "main", "README.md").decode()
    assert _files(folder / "traces") == local


# `agent-sft push` where every file write past a few hundred bytes fails with EFBIG, as writes on a full disk fail.
FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))
from agent_sft.cli import main
sys.exit(main(["push", *sys.argv[1:]]))
"""


def test_a_sample_that_cannot_be_written_stops_the_push_in_one_line(tool_folders, hub, tmp_path):
    folder = tmp_path / "lake"
    shutil.copytree(tool_folders["chat"], folder)
    repo_id = hub.new_repo_id()
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(folder), repo_id], env=hub.env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # written beside the folder (on its disk), and removed
    assert f"the traces/ sample could not be written in {tmp_path}{os.sep}.lake.traces-" in proc.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name != "hf_home"] == ["lake"]
    assert repo_id not in {r for _, r in hub.server.repos}  # nothing was sent


def test_the_sample_is_read_under_the_folder_lock(tool_folders, tmp_path):
    from agent_sft.dataset import layout
    from agent_sft.publish.sts import write_traces

    folder = str(tmp_path / "lake")
    shutil.copytree(tool_folders["window"], folder)
    done: list[dict] = []
    with layout.locked(folder):  # as a compaction holds it
        reader = threading.Thread(target=lambda: done.append(write_traces(folder, str(tmp_path / "out"), "all")))
        reader.start()
        reader.join(timeout=0.5)
        assert reader.is_alive() and not done  # waits for the lock
    reader.join(timeout=30)
    assert done == [{"sessions": 4}]
    assert sorted(_files(tmp_path / "out")) == sorted(path_of(r) for r in raw_rows(folder))
