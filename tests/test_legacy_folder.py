"""A folder written by an earlier agent-sft (tests/data/legacy_alfworld: 6 built-in ALFWorld games with the
planner, `env.num_episodes=6 data.val_fraction=0.5 data.val_batch_size=3 env.max_steps=30`) keeps working:
it loads, is reported intact, rebuilds, resumes without being refused, and collecting its config again
gives the same rows (timing aside)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("alfworld", reason="needs the alfworld package (pip install 'agent-sft[alfworld]')")
pytestmark = [pytest.mark.alfworld, pytest.mark.slow]

import agent_sft  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "legacy_alfworld")
ARGS = ["env.num_episodes=6", "data.val_fraction=0.5", "data.val_batch_size=3", "env.max_steps=30", "--no-progress"]
TIMING = ("started_at", "duration_s")


def rows(folder, task_hash=False):
    """The folder's raw rows by episode id, timing aside; each has a task hash when `task_hash` (a folder collected
    now records it; these folders were written without the column, and a resumed one keeps to their schema)."""
    ds = agent_sft.load(str(folder), "raw")
    out = {}
    for split in ("train", "validation"):
        assert ("task_hash" in ds[split].column_names) == task_hash
        for r in ds[split]:
            assert not task_hash or r["task_hash"]
            r = {k: v for k, v in r.items() if k not in (*TIMING, "task_hash")}
            extra = json.loads(r["extra"])
            extra.pop("expert_plan_length", None)  # recorded by episodes collected since these folders were written
            r["extra"] = json.dumps(extra, sort_keys=True)
            r["steps"] = [{k: v for k, v in s.items() if k != "latency_s"} for s in r["steps"]]
            out[r["episode_id"]] = json.dumps(r, sort_keys=True, default=str)
    return out


def collect(cwd, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ALFWORLD_DATA": str(cwd / "no_alfworld_data")}
    (cwd / "no_alfworld_data").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "agent_sft", "collect", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def legacy(tmp_path):
    d = tmp_path / "fixture"
    shutil.copytree(FIXTURE, d)
    return d


def test_an_earlier_folder_loads_checks_and_rebuilds(legacy):
    from agent_sft.dataset.maintain import rebuild
    from agent_sft.dataset.writer import BuildSpec

    before = rows(legacy)
    assert len(before) == 6
    p = subprocess.run([sys.executable, "-m", "agent_sft", "info", str(legacy)], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert p.returncode == 0 and "episodes: 6" in p.stdout, p.stdout + p.stderr
    rebuild(str(legacy), BuildSpec("episode", {}))
    sft = agent_sft.load(str(legacy), "sft")
    assert len(sft["train"]) + len(sft["validation"]) == 6
    assert rows(legacy) == before
    # the build gives it the configs written over the whole folder, and another build of its own
    scores = agent_sft.load(str(legacy), "scores")
    assert sorted(r["episode_id"] for sp in scores.values() for r in sp) == sorted(before)
    rebuild(str(legacy), BuildSpec("step", {"require_success": True}), name="won_steps")
    assert {r["episode_id"] for sp in agent_sft.load(str(legacy), "won_steps").values() for r in sp} == {
        i for i, r in before.items() if json.loads(r)["success"]}


def test_an_earlier_folder_resumes_and_its_config_gives_the_same_rows(legacy, tmp_path):
    fixture_rows = rows(legacy)
    p = collect(tmp_path, "output.dir=fixture", *[a for a in ARGS if not a.startswith("env.num_episodes")],
                "env.num_episodes=7")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "6 episodes already there are skipped" in p.stdout
    resumed = rows(legacy)
    assert len(resumed) == 7 and {k: resumed[k] for k in fixture_rows} == fixture_rows

    p = collect(tmp_path, "output.dir=again", *ARGS)
    assert p.returncode == 0, p.stderr[-3000:]
    assert rows(tmp_path / "again", task_hash=True) == fixture_rows


MIXED = os.path.join(os.path.dirname(__file__), "data", "pre_house_mix")
# tests/data/pre_house_mix: written by agent-sft before its modules were re-housed (config, dataset and rollout
# subpackages), an async mix of two envs with their experts, with these keys:
MIXED_ARGS = ["env.mix=[{env: frozenlake, episodes: 3}, {env: taxi, episodes: 3}]", "loop.mode=async",
              "data.val_fraction=0.5", "data.val_batch_size=3", "env.backend=thread", "--no-progress"]


def test_a_mixed_async_folder_from_before_checks_resumes_and_its_config_gives_the_same_rows(tmp_path):
    d = tmp_path / "mixed"
    shutil.copytree(MIXED, d)
    before = rows(d)
    assert len(before) == 6
    p = subprocess.run([sys.executable, "-m", "agent_sft", "info", str(d)], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert p.returncode == 0 and "episodes: 6" in p.stdout, p.stdout + p.stderr
    more = [a.replace("episodes: 3}", "episodes: 4}") for a in MIXED_ARGS]
    p = collect(tmp_path, "output.dir=mixed", *more)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "6 episodes already there are skipped" in p.stdout
    resumed = rows(d)
    assert len(resumed) == 8 and {k: resumed[k] for k in before} == before
    p = collect(tmp_path, "output.dir=again", *MIXED_ARGS)
    assert p.returncode == 0, p.stderr[-3000:]
    assert rows(tmp_path / "again", task_hash=True) == before
