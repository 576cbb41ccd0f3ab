"""`agent-sft collect` end to end on the real ALFWorld engine (built-in games, planner expert)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("alfworld", reason="needs the alfworld package (pip install 'agent-sft[alfworld]')")
pytestmark = [pytest.mark.alfworld, pytest.mark.slow]

from fixtures_sts import check_episodes  # noqa: E402

from agent_sft.cli import main  # noqa: E402

TIMING = ("started_at", "duration_s")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh cwd, no ALFWorld data (so the built-in games play) and none of the SFT_* switches."""
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "no_alfworld_data"
    empty.mkdir()
    monkeypatch.setenv("ALFWORLD_DATA", str(empty))
    for var in ("COLLECT_SFT", "SFT_SEED", "SFT_REQUIRE_SUCCESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def raw_episodes(folder):
    from datasets import load_dataset

    ds = load_dataset(os.path.abspath(folder), "raw", download_mode="force_redownload")
    rows = [r for split in ds.values() for r in split]
    for r in rows:
        for k in TIMING:
            r.pop(k)
        for s in r["steps"]:
            s.pop("latency_s")
    return sorted(rows, key=lambda r: r["episode_id"])


def test_default_collect_with_collect_sft_switch(workdir):
    """No config beyond a small episode count: built-in games, planner expert, a loadable folder, and the
    original feature's export in a timestamped sft_data_* folder."""
    env = dict(os.environ, COLLECT_SFT="True", SFT_SEED="7")
    proc = subprocess.run(
        [sys.executable, "-m", "agent_sft", "collect", "env.num_episodes=4", "data.val_batch_size=2"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "built-in ALFWorld game set" in out and "policy expert" in out
    assert "Collected 4 episodes" in out and 'datasets.load_dataset("agent_sft_data", "sft")' in out
    assert "invalid actions   0 of" in out

    from datasets import load_dataset

    sft = load_dataset("agent_sft_data", "sft")
    rows = [r for split in sft.values() for r in split]
    assert rows and all(r["messages"][-1]["role"] == "assistant" for r in rows)
    assert all("<action>" in r["messages"][-1]["content"] for r in rows)
    eps = raw_episodes("agent_sft_data")
    assert len(eps) == 4 and all(e["success"] and e["end_reason"] == "success" for e in eps)
    assert {e["run_seed"] for e in eps} == {7} and {e["game_split"] for e in eps} == {"builtin"}
    assert all(s["valid"] for e in eps for s in e["steps"])
    check_episodes(eps)
    versions = json.loads(eps[0]["versions"])
    assert {"python", "agent_sft", "alfworld", "textworld"} <= set(versions)
    info = json.loads((workdir / "agent_sft_data" / "meta" / "info.json").read_text())
    assert info["config"]["env"]["seed"] == 7

    # the card of a real built-in collection: figures, plots, a sample, and no local paths
    card = (workdir / "agent_sft_data" / "README.md").read_text()
    assert "| task type | episodes | won | success rate | mean length |" in card
    assert "100.0%" in card and "planner expert" in card and "A sample trajectory" in card
    for plot in ("success_by_task_type.png", "episode_length.png"):
        assert f"](meta/plots/{plot})" in card
        assert (workdir / "agent_sft_data" / "meta" / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(workdir) not in card and "/root" not in card

    (export,) = glob.glob(str(workdir / "sft_data_2*"))
    assert os.path.basename(export)[len("sft_data_"):].replace("_", "").isdigit()
    names = set(os.listdir(export))
    assert {"raw_trajectories.json", "train.parquet", "val.parquet", "train.csv", "val.csv"} <= names
    trajectories = json.loads(open(os.path.join(export, "raw_trajectories.json")).read())
    assert len(trajectories) == 4 and all(t["success"] for t in trajectories)


def test_same_seed_same_episodes_and_resume_plays_only_the_missing(workdir, capsys):
    common = ["env.seed=3", "data.val_batch_size=2", "output.flush_every_episodes=1"]
    assert main(["collect", "--no-progress", "env.num_episodes=4", "output.dir=a", *common]) == 0
    assert main(["collect", "--no-progress", "env.num_episodes=2", "output.dir=b", "data.val_batch_size=1", *common[:1]]) == 0
    capsys.readouterr()
    assert main(["collect", "--no-progress", "env.num_episodes=4", "output.dir=b", *common]) == 0
    out = capsys.readouterr().out
    assert "Resuming b: 2 episodes already there are skipped." in out and "Collected 2 episodes" in out
    a, b = raw_episodes("a"), raw_episodes("b")
    assert len(b) == 4 and len({e["episode_id"] for e in b}) == 4
    assert a == b  # same seed: identical episodes, whatever the batch size or the resume
    # a run with nothing left to play changes nothing
    assert main(["collect", "--no-progress", "env.num_episodes=4", "output.dir=b", *common]) == 0
    assert "Collected 0 episodes" in capsys.readouterr().out and raw_episodes("b") == b


def test_chat_style_run(workdir):
    assert main(["collect", "--no-progress", "env.num_episodes=2", "data.val_batch_size=2", "prompt.style=chat",
                 "env.task_types=[clean]", "output.dir=chat"]) == 0
    eps = raw_episodes("chat")
    assert {e["task_type"] for e in eps} == {"pick_clean_then_place"} and all(e["success"] for e in eps)
    for e in eps:
        assert e["prompt_style"] == "chat"
        assert [m["role"] for m in e["messages"]] == ["user", "assistant"] * len(e["steps"])
        assert e["steps"][-1]["prompt_start"] == 0 and e["steps"][-1]["prompt_end"] == 2 * len(e["steps"]) - 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["env.max_step=3"], "unknown config key 'env.max_step': 'max_step' is not a field under 'env'"),
        (["env.max_steps=lots"], "env.max_steps: expected int, got 'lots'"),
        (["prompt.style=tree"], "prompt.style: 'tree' is not one of window, chat"),
        (["policy.expert=oracle"], "policy.expert: 'oracle' is not an expert of alfworld (its experts: planner, handcoded)"),
        (["env.env_name=alfworld/AlfredThorEnv"], "env.env_name: unknown environment 'alfworld/AlfredThorEnv'; registered: "),
        (["env.task_types=[cleaning]"], "env.alfworld.task_types: unknown ALFWorld task type 'cleaning'; allowed: "),
        (["env.alfworld.data_pth=x"], "unknown config key 'env.alfworld.data_pth': environment 'alfworld' has no option 'data_pth'"),
        (["policy.type=vllm"], "policy.type=vllm needs policy.model"),
        (["prompt.template=missing.txt"], "prompt.template: cannot read missing.txt"),
        (["output.shard=3/2"], "output.shard: need 0 <= i < n, got '3/2'"),
        (["policy.type=hf", "policy.model=./no_such_model"], "policy.model: no model folder at ./no_such_model"),
        (["env.data_path=./nowhere"], "env.alfworld.data_path: ./nowhere has no json_2.1.1 folder"),
        (["env.alfworld.data_path=./nowhere"], "env.alfworld.data_path: ./nowhere has no json_2.1.1 folder"),
    ],
)
def test_bad_keys_fail_at_once_before_any_env_starts(workdir, capsys, args, message):
    t = time.monotonic()
    assert main(["collect", *args]) == 2
    assert time.monotonic() - t < 5
    err = capsys.readouterr().err
    assert err.startswith("agent-sft collect: error: ") and message in err
    assert not (workdir / "agent_sft_data").exists()


def test_bad_yaml_key_and_changed_config_are_refused(workdir, capsys):
    (workdir / "run.yaml").write_text("env:\n  seeed: 3\n")
    assert main(["collect", "--config", "run.yaml"]) == 2
    assert "unknown config key 'env.seeed'" in capsys.readouterr().err
    assert main(["collect", "--no-progress", "env.num_episodes=1", "data.val_batch_size=1"]) == 0
    capsys.readouterr()
    assert main(["collect", "env.num_episodes=2", "env.seed=1"]) == 2
    err = capsys.readouterr().err
    assert "was collected with a different configuration" in err and "env.seed: 0 (folder) vs 1 (now)" in err


def test_collect_pushes_the_folder_to_the_hub(hub, tmp_path):
    empty = tmp_path / "no_alfworld_data"
    empty.mkdir()
    repo_id = hub.new_repo_id("collect")
    folder = tmp_path / "ds"
    proc = hub.cli("collect", "--no-progress", "env.num_episodes=2", "data.val_batch_size=2", f"output.dir={folder}",
                   f"output.push_to_hub={repo_id}", env={"ALFWORLD_DATA": str(empty)}, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Pushed to {hub.endpoint}/datasets/{repo_id}" in proc.stdout
    assert f'datasets.load_dataset("{repo_id}", "sft")' in proc.stdout
    files = set(hub.server.repo(repo_id).files("main"))
    assert "README.md" in files and any(f.startswith("data/sft/") for f in files)
    card = hub.server.read(hub.server.repo(repo_id), "main", "README.md").decode()
    assert repo_id in card and "configs:" in card


def test_collect_checks_hub_access_before_playing(hub, tmp_path):
    folder = tmp_path / "ds"
    proc = hub.cli("collect", "env.num_episodes=2", f"output.dir={folder}", f"output.push_to_hub={hub.new_repo_id()}", token=None)
    assert proc.returncode == 2
    assert proc.stderr.startswith("agent-sft collect: error: output.push_to_hub: No Hugging Face token found")
    assert not folder.exists()
