"""Several real engines in one run: a mixed run killed and resumed, and a tiny model driving every env.

- ALFWorld + TextWorld + BabyAI + FrozenLake with their experts into one folder: it loads with every env,
  the card counts each, no task is in both splits; SIGKILLed once episodes are sealed, then resumed, it
  ends with the rows of an uninterrupted run (extended).
- Every built-in env in one mix, played by the tiny model through the HTTP policy on the session's vLLM
  server, twice: the same seed gives the same text, and the folder loads and exports.
"""

import glob
import json
import os
import signal
import subprocess
import time

import pytest
from faults import CLI, TESTS, check_folders
from fixtures_models import SERVED_NAME, needs_vllm

import agent_sft

pytestmark = [pytest.mark.envs, pytest.mark.alfworld]

EXPERT_MIX = ("env.mix=[{env: alfworld, episodes: 4}, {env: textworld, episodes: 4}, "
              "{env: babyai, episodes: 4}, {env: frozenlake, episodes: 4}]")


def _env(cache):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "AGENT_SFT_CACHE": str(cache),
            "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _collect(folder, cache, *extra):
    return [*CLI, "collect", "--no-progress", EXPERT_MIX, "data.val_batch_size=4", "data.val_fraction=0.25",
            "env.seed=3", "output.flush_every_episodes=2", f"output.dir={folder}", *extra]


def _kill_after_first_shard(cmd, env, timeout=240.0):
    """Run `cmd`; SIGKILL its process group once a raw shard is sealed. True when it was killed."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    folder = cmd[-1].split("=", 1)[1]
    end = time.monotonic() + timeout
    while time.monotonic() < end and p.poll() is None:
        if glob.glob(os.path.join(folder, "data", "raw", "*", "*.arrow")):
            time.sleep(0.2)
            break
        time.sleep(0.05)
    if p.poll() is not None:
        return False
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    return True


def _reference(tmp_path, cache):
    ref = tmp_path / "ref"
    done = subprocess.run(_collect(ref, cache), env=_env(cache), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Playing 16 episodes of 4 envs" in done.stdout
    return ref


@pytest.mark.extended
def test_mixed_run_killed_and_resumed_equals_the_uninterrupted_run(tmp_path):
    cache = tmp_path / "cache"
    ref, killed = _reference(tmp_path, cache), tmp_path / "killed"
    assert _kill_after_first_shard(_collect(killed, cache), _env(cache)), "the run ended before it could be killed"
    partial = check_folders([str(killed)], str(tmp_path / "hf"))[str(killed)]
    assert "error" not in partial and 0 < len(partial["raw"]) < 16
    again = subprocess.run(_collect(killed, cache), env=_env(cache), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming" in again.stdout

    got = check_folders([str(ref), str(killed)], str(tmp_path / "hf"))
    ref_rows = {eid: (end, d) for eid, end, d in got[str(ref)]["raw"]}
    assert {eid: (end, d) for eid, end, d in got[str(killed)]["raw"]} == ref_rows
    assert sorted(got[str(killed)]["sft"]) == sorted(got[str(ref)]["sft"])


def test_mixed_run_of_real_engines_loads_with_every_env(tmp_path):
    # that a folder mix resumes is tests/test_mix.py's (scripted envs) and the extended test above (these engines)
    cache = tmp_path / "cache"
    folder = _reference(tmp_path, cache)
    got = check_folders([str(folder)], str(tmp_path / "hf"))[str(folder)]
    assert "error" not in got and len(got["raw"]) == 16

    raw = agent_sft.load_raw(str(folder))
    rows = [r for sp in raw for r in raw[sp]]
    by_env = {}
    for r in rows:
        by_env.setdefault(r["env"], []).append(r)
    assert {e: len(v) for e, v in by_env.items()} == {"alfworld": 4, "textworld": 4, "babyai": 4, "frozenlake": 4}
    assert all(r["success"] for r in rows), [(r["env"], r["task_id"], r["end_reason"]) for r in rows if not r["success"]]
    assert all(r["task_id"].startswith(f"{r['env']}/") for r in rows if r["env"] != "alfworld")
    splits = {}
    for r in rows:
        splits.setdefault(r["task_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values())
    assert {r["split"] for r in rows} == {"train", "validation"}
    assert {r["policy"]["model"] for r in by_env["babyai"]} == {"babyai-bot"}
    card = (folder / "README.md").read_text()
    for env in by_env:
        assert f"| **{env}** | all | 4 | 4 | 100.0% |" in card
    stats = json.loads((folder / "meta" / "stats.json").read_text())
    assert set(stats["by_env"]) == set(by_env)
    # Filters work across the mix: a step cap keeps the short episodes of every env.
    short = {r["episode_id"] for r in rows if r["episode_length"] <= 6}
    assert 0 < len(short) < len(rows)
    built = subprocess.run([*CLI, "build", str(folder), "--max-steps", "6", "--style", "episode"], env=_env(cache),
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    sft = agent_sft.load(str(folder), "sft")
    assert {r["episode_id"] for sp in sft for r in sft[sp]} == short


def test_every_env_in_both_prompt_styles(tmp_path):
    mix = ("env.mix=[{env: alfworld, episodes: 1}, {env: textworld, episodes: 1}, {env: babyai, episodes: 1}, "
           "{env: frozenlake, episodes: 1}, {env: taxi, episodes: 1}, {env: textarena, episodes: 1, games: "
           "[TowerOfHanoi-v0]}, {env: gymnasium, episodes: 1, env_id: CliffWalking-v1, "
           "action_names: [up, right, down, left], success_on_termination: true}]")
    firsts = {}
    for style in ("window", "chat"):
        out = tmp_path / style
        res = agent_sft.collect([mix, f"prompt.style={style}", "data.val_batch_size=7", "env.seed=2",
                                 "policy.expert_think=true", f"output.dir={out}"])
        assert res.stats["success_rate"] == 1.0 and len(res.stats["by_env"]) == 7
        raw = agent_sft.load_raw(str(out))
        for r in (r for sp in raw for r in raw[sp]):
            users = [m["content"] for m in r["messages"] if m["role"] == "user"]
            assert len(users) == r["episode_length"] and r["goal"] and r["goal"] in users[0]
            assert r["steps"][0]["observation"].strip()[:40] in users[0]
            if style == "chat":
                assert r["steps"][-1]["prompt_start"] == 0  # the whole growing chat
            else:
                assert all(s["prompt_end"] - s["prompt_start"] == 1 for s in r["steps"])
            firsts.setdefault(r["env"], []).append(users[0])
        sft = agent_sft.load(str(out), "sft")
        assert sum(len(sft[sp]) for sp in sft) > 0
    assert all(len(v) == 2 and v[0] != v[1] for v in firsts.values())


@needs_vllm
def test_tiny_model_drives_every_env_through_the_http_policy(vllm_server, tmp_path):
    mix = ("env.mix=[{env: alfworld, episodes: 2}, {env: textworld, episodes: 2}, {env: babyai, episodes: 2}, "
           "{env: frozenlake, episodes: 2}, {env: taxi, episodes: 2}, {env: textarena, episodes: 2, games: "
           "[TowerOfHanoi-v0]}, {env: gymnasium, episodes: 2, env_id: CliffWalking-v1, "
           "action_names: [up, right, down, left], success_on_termination: true}]")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        # the second run plays only the first env's episodes again: the same seed gives the same text per env
        entries = mix if name == "a" else "env.mix=[{env: alfworld, episodes: 2}]"
        res = agent_sft.collect([entries, "env.max_steps=2", "data.val_batch_size=7", "env.seed=5", "policy.type=openai",
                                 f"policy.model={SERVED_NAME}", f"policy.base_url={vllm_server}", "policy.max_tokens=16",
                                 "policy.temperature=1.0", f"output.dir={out}", f"output.export_dir={tmp_path / (name + '_verl')}"])
        assert res.run["errors"] == 0
        raw = agent_sft.load_raw(str(out))
        runs.append({r["episode_id"]: r for sp in raw for r in raw[sp]})
        assert res.export_counts and sum(res.export_counts.values()) > 0
    a, b = runs
    assert len(a) == 14 and len(b) == 2
    assert {r["env"] for r in a.values()} == {"alfworld", "textworld", "babyai", "frozenlake", "taxi", "textarena",
                                              "gymnasium"}
    for k in a:
        assert a[k]["steps"] and all(s["prompt_tokens"] for s in a[k]["steps"])
    for k in b:
        assert [s["response"] for s in a[k]["steps"]] == [s["response"] for s in b[k]["steps"]]
        assert a[k]["messages"] == b[k]["messages"]
    sft = agent_sft.load(str(tmp_path / "a"), "sft")
    assert sum(len(sft[sp]) for sp in sft) > 0
