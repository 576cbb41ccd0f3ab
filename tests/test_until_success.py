"""Sampling until success (`env.until_success=k`, `env.max_samples_per_task=B`).

The expert on slippery FrozenLake falls into holes on some seeds, the same ones every time: a real env
with real failures. A folder sampled until success holds, per task, the first j + 1 episodes of a fixed
run with B samples per task (the same ids, successes and actions), j the first sample index at which k of
them have succeeded (or B - 1): in sync, async and with two workers, across two shards of one folder
(then the build's rule drops what one shard played past the stop), after a SIGKILL and a rerun, and
when k is raised on a finished folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pyarrow as pa
import pytest

pytest.importorskip("gymnasium", reason="needs gymnasium (pip install 'agent-sft[gymnasium]')")

from agent_sft.cli import main  # noqa: E402
from agent_sft.collection import collect  # noqa: E402
from agent_sft.config import ConfigError, load_config  # noqa: E402
from agent_sft.dataset.stopping import beyond_stop, rules_from_config  # noqa: E402
from agent_sft.envs.base import TaskSpec  # noqa: E402
from agent_sft.rollout.feed import Feed  # noqa: E402
from agent_sft.rollout.tasks import EpisodeTask, Plan, episode_list, make_plan  # noqa: E402

K, B = 2, 5
GAME = ["env.env_name=frozenlake", "env.frozenlake.is_slippery=true", "env.frozenlake.seeds=6", "env.max_steps=20",
        "env.backend=thread", "data.val_fraction=0.3"]
UNTIL = [f"env.until_success={K}", f"env.max_samples_per_task={B}"]


def run(folder, *keys):
    return collect(load_config(None, [*GAME, f"output.dir={folder}", *keys], environ={}))


def episodes(folder):
    """episode id -> what a user compares, read from the folder's raw shards."""
    out = {}
    for split in ("train", "validation"):
        d = os.path.join(folder, "data", "raw", split)
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if name.startswith("."):
                continue
            with pa.memory_map(os.path.join(d, name)) as src:
                for r in pa.ipc.open_file(src).read_all().to_pylist():
                    assert r["episode_id"] not in out, "an episode is in the folder twice"
                    out[r["episode_id"]] = SimpleNamespace(
                        episode_id=r["episode_id"], env=r["env"], task_id=r["task_id"], sample_index=r["sample_index"],
                        success=r["success"], error=r["end_reason"] == "error", split=split,
                        actions=tuple(s["action"] for s in r["steps"]), extra=json.loads(r["extra"]))
    return out


def kept(folder):
    """The folder's episodes less those past their task's stop (the build's rule, from the recorded config)."""
    eps = episodes(folder)
    with open(os.path.join(folder, "meta", "info.json")) as fh:
        info = json.load(fh)
    dropped = beyond_stop(eps.values(), rules_from_config(info["config"], info["fingerprint"]))
    return {i: e for i, e in eps.items() if i not in dropped}, dropped


def view(eps):
    return {i: (e.task_id, e.sample_index, e.success, e.split, e.actions) for i, e in eps.items()}


def up_to_stop(eps, k):
    """Per task, the first j + 1 episodes of a fixed run: j the index of its k-th success, or its last."""
    by_task = {}
    for e in eps.values():
        by_task.setdefault(e.task_id, []).append(e)
    out = {}
    for samples in by_task.values():
        wins = 0
        for e in sorted(samples, key=lambda e: e.sample_index):
            out[e.episode_id] = e
            wins += e.success
            if wins == k:
                break
    return out


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    """A fixed run with B samples per task: the reference."""
    folder = tmp_path_factory.mktemp("fixed") / "ds"
    run(folder, f"env.samples_per_task={B}")
    eps = episodes(folder)
    wins = {}
    for e in eps.values():
        wins[e.task_id] = wins.get(e.task_id, 0) + e.success
    # the slippery lake gives tasks that stop early, late and never: the rule is exercised, not bypassed
    assert len(eps) == 6 * B and min(wins.values()) < K <= max(wins.values()), wins
    assert len(up_to_stop(eps, K)) < len(eps)
    return eps


# --- the rule on rows built for it ------------------------------------------------------------------------


def ep(task, s, success, env="a", error=False):
    return SimpleNamespace(episode_id=f"{env}/{task}/{s}", env=env, task_id=task, sample_index=s, success=success,
                           error=error)


def test_beyond_stop_keeps_each_task_up_to_its_kth_success_or_its_budget():
    eps = [ep("t", 0, False), ep("t", 1, True), ep("t", 2, False), ep("t", 3, True), ep("t", 4, True), ep("t", 5, False),
           ep("u", 0, True), ep("u", 1, True),  # played together before the first ended
           ep("v", 0, False), ep("v", 1, False), ep("v", 2, True),  # never two successes: its budget decides
           ep("v", 3, False), ep("v", 4, True),
           ep("w", 0, True, env="b"), ep("w", 1, True, env="b"), ep("w", 2, True, env="b")]  # b is not sampled until success
    assert beyond_stop(eps, {"a": (2, 4)}) == {"a/t/4": "beyond_stop", "a/t/5": "beyond_stop", "a/v/4": "beyond_stop"}
    assert beyond_stop(eps, {"a": (1, 8)}) == {e.episode_id: "beyond_stop" for e in eps
                                               if e.env == "a" and (e.task_id, e.sample_index) not in
                                               {("t", 0), ("t", 1), ("u", 0), ("v", 0), ("v", 1), ("v", 2)}}
    assert beyond_stop(eps, {}) == {}


def test_a_task_with_a_gap_below_its_stop_drops_only_what_is_past_it_for_certain():
    # sample 1 ended in an error (played again on a resume) and sample 2 is missing: whatever they turn out to
    # be, samples past the second known success are beyond the stop, and nothing below it is
    eps = [ep("t", 0, True), ep("t", 1, False, error=True), ep("t", 3, True), ep("t", 4, False), ep("t", 5, True)]
    assert beyond_stop(eps, {"a": (2, 8)}) == {"a/t/4": "beyond_stop", "a/t/5": "beyond_stop"}
    # an error is no outcome, even when it says success
    assert beyond_stop([ep("t", 0, True, error=True), ep("t", 1, False)], {"a": (1, 8)}) == {}
    # the gap filled with a success moves the stop earlier
    assert beyond_stop([*eps, ep("t", 2, True)], {"a": (2, 8)}) == {e: "beyond_stop" for e in
                                                                    ("a/t/3", "a/t/4", "a/t/5")}


def test_the_rules_come_from_the_recorded_config_of_a_plain_run_or_a_mix():
    plain = {"env": {"env_name": "frozenlake", "until_success": 2, "max_samples_per_task": None, "mix": {}}}
    assert rules_from_config(plain) == {"frozenlake": (2, 8)}
    assert rules_from_config({"env": {"env_name": "frozenlake", "mix": {}}}) == {}
    assert rules_from_config({}) == {}
    mix = {"env": {"env_name": "alfworld", "until_success": 1, "max_samples_per_task": 4, "mix": {
        "lake": {"env": "frozenlake", "until_success": 3}, "taxi": {}, "far": {"env": "http"}}}}
    fingerprint = {"env": {"mix": {"far": {"env_name": "textworld"}}}}  # an env server records what it serves
    assert rules_from_config(mix, fingerprint) == {"frozenlake": (3, 4), "taxi": (1, 4), "textworld": (1, 4)}


# --- the plan and the feed ------------------------------------------------------------------------------


def plan_of(tasks, n, lanes=1, stopping=None, outcomes=None):
    eps = [EpisodeTask(TaskSpec(f"{j}/{t}"), s, f"{j}/{t}/{s}", s, "train", lane=j)
           for t in tasks for j in range(lanes) for s in range(n)]
    return Plan(eps, len(tasks), len(eps), len(eps), 0, stopping=stopping or {}, outcomes=outcomes or {})


def done(feed, episode_id, success):
    feed.done(SimpleNamespace(episode_id=episode_id, success=success))


def test_without_until_success_the_feed_hands_out_the_plan_in_its_order():
    feed = Feed(plan_of("xy", 2, lanes=2))
    assert feed.take([1], before=2) is None  # lane 1's first episode is the plan's third
    got = [feed.take([0, 1])[1].episode_id for _ in range(3)] + [feed.take([0])[1].episode_id for _ in range(2)]
    assert got == ["0/x/0", "0/x/1", "1/x/0", "0/y/0", "0/y/1"]
    assert feed.take([0]) is None and not feed.has_queued(0) and feed.has_queued(1)
    assert feed.queued == 3 and feed.skipped == 0


def test_the_feed_holds_back_a_tasks_samples_that_may_be_needless_and_skips_those_past_its_stop():
    feed = Feed(plan_of("xy", 3, stopping={0: (1, 3)}))
    assert [feed.take([0])[1].episode_id for _ in range(2)] == ["0/x/0", "0/y/0"]  # x/1 waits on x/0
    assert feed.take([0]) is None and feed.queued == 4
    done(feed, "0/x/0", True)  # x has its success: x/1 and x/2 are never played
    assert feed.skipped == 2 and feed.is_skipped(1) and feed.take([0]) is None
    done(feed, "0/y/0", False)
    assert feed.take([0])[1].episode_id == "0/y/1"
    feed.release(feed.episodes[4])  # its player died: handed out again
    assert feed.take([0])[1].episode_id == "0/y/1"
    # a resume knows the folder's outcomes: a task at its stop already plays nothing more
    plan = plan_of("xy", 3, stopping={0: (2, 3)}, outcomes={(0, "0/x", 0): True, (0, "0/x", 1): True})
    plan.episodes = plan.episodes[2:]
    feed = Feed(plan)
    assert feed.skipped == 1 and feed.is_skipped(0) and feed.take([0])[1].episode_id == "0/y/0"


def test_num_episodes_cuts_the_list_of_a_fixed_run_with_the_budget_and_never_adds_a_pass():
    tasks = [TaskSpec(f"frozenlake/FrozenLake-v1/{k:04d}") for k in range(4)]
    ids = [e.episode_id for e in make_plan(load_config(None, [*GAME, *UNTIL, "env.num_episodes=7"], environ={}),
                                           "frozenlake", tasks).episodes]
    fixed_keys = [*GAME, f"env.samples_per_task={B}", "env.num_episodes=7"]
    assert ids == [e.episode_id for e in episode_list(load_config(None, fixed_keys, environ={}), "frozenlake", tasks)]
    plan = make_plan(load_config(None, [*GAME, *UNTIL, "env.num_episodes=100"], environ={}), "frozenlake", tasks)
    assert len(plan.episodes) == 4 * B and max(e.sample_index for e in plan.episodes) == B - 1


# --- config ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keys, message", [
    (["env.until_success=9"], "env.until_success=9 is above env.max_samples_per_task (default 8)=8"),
    (["env.until_success=3", "env.max_samples_per_task=2"], "env.until_success=3 is above env.max_samples_per_task=2"),
    (["env.until_success=0"], "env.until_success: must be at least 1 (got 0)"),
    (["env.until_success=1", "env.samples_per_task=4"], "env.until_success plays a task's samples one after another: "
                                                         "leave env.samples_per_task at 1"),
    (["env.max_samples_per_task=4"], "env.max_samples_per_task: a budget for sampling until success"),
    (["env.mix.frozenlake.until_success=5", "env.mix.taxi.episodes=1", "env.max_samples_per_task=4"],
     "env.mix.frozenlake.until_success=5 is above env.max_samples_per_task=4"),
    (["env.mix.frozenlake.max_samples_per_task=0", "env.until_success=1"],
     "env.mix.frozenlake.max_samples_per_task: must be at least 1 (got 0)"),
    (["env.mix.frozenlake.episodes=1", "env.max_samples_per_task=3"],
     "env.max_samples_per_task: a budget for sampling until success, which no env.mix entry turns on"),
])
def test_a_bad_until_success_is_a_config_error_naming_the_keys(keys, message, capsys):
    with pytest.raises(ConfigError) as err:
        load_config(None, keys, environ={})
    assert message in str(err.value)
    assert main(["collect", *keys, "--no-progress"]) == 2
    assert message in capsys.readouterr().err


# --- real collections -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [["loop.mode=sync"], ["loop.mode=async"], ["data.val_batch_size=2"]],
                         ids=["sync", "async", "two_workers"])
def test_a_run_holds_a_fixed_runs_episodes_up_to_each_tasks_stop(fixed, tmp_path, mode):
    result = run(tmp_path / "ds", *UNTIL, *mode)
    got, dropped = kept(tmp_path / "ds")
    assert view(got) == view(up_to_stop(fixed, K))
    assert dropped == {}  # one process holds a task's later samples back while the earlier could reach the stop
    assert result.run["past_stop"] == len(fixed) - len(got)
    assert all(e.extra["expert_plan_length"] > 0 for e in got.values())  # what an episode's length compares with


def test_two_shards_of_one_folder_give_the_same_episodes_once_the_build_drops_what_is_past_the_stop(fixed, tmp_path):
    for shard in ("0/2", "1/2"):  # the first shard does not know the second's outcomes: it plays past some stops
        run(tmp_path / "ds", *UNTIL, f"output.shard={shard}")
    got, dropped = kept(tmp_path / "ds")
    assert view(got) == view(up_to_stop(fixed, K)) and dropped
    # the derived configs hold exactly the episodes up to the stops, as a user loads them
    import agent_sft

    for config in ("sft", "scores"):
        ds = agent_sft.load(str(tmp_path / "ds"), config)
        assert {r["episode_id"] for split in ds.values() for r in split} == set(got), config
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    assert sum(info["stages"]["drops"][next(iter(info["stages"]["drops"]))].values()) == len(dropped)
    last = {}
    for e in up_to_stop(fixed, K).values():
        last[e.task_id] = max(last.get(e.task_id, 0), e.sample_index)
    assert all(fixed[i].sample_index > last[fixed[i].task_id] for i in dropped)


def test_raising_until_success_or_the_budget_continues_the_folder(fixed, tmp_path):
    run(tmp_path / "ds", "env.until_success=1", "env.max_samples_per_task=3")
    assert view(kept(tmp_path / "ds")[0]) == view({i: e for i, e in up_to_stop(fixed, 1).items() if e.sample_index < 3})
    result = run(tmp_path / "ds", *UNTIL)  # the same folder, not refused
    got, dropped = kept(tmp_path / "ds")
    assert view(got) == view(up_to_stop(fixed, K)) and not dropped
    assert result.run["skipped_done"] > 0
    run(tmp_path / "ds", "env.until_success=1", f"env.max_samples_per_task={B}")  # lowering it plays nothing
    got, dropped = kept(tmp_path / "ds")
    assert view(got) == view(up_to_stop(fixed, 1)) and dropped


def test_a_mix_entry_samples_until_success_beside_a_fixed_one(fixed, tmp_path):
    lake = [k.replace("env.frozenlake.", "env.mix.lake.") for k in GAME if k.startswith("env.frozenlake.")]
    keys = [k for k in GAME if not k.startswith(("env.frozenlake.", "env.env_name"))]
    collect(load_config(None, [*keys, *lake, "env.mix.lake.env=frozenlake", f"env.mix.lake.until_success={K}",
                               f"env.mix.lake.max_samples_per_task={B}", "env.mix.taxi.episodes=2",
                               f"output.dir={tmp_path / 'ds'}"], environ={}))
    got, _ = kept(tmp_path / "ds")
    assert view({i: e for i, e in got.items() if e.env == "frozenlake"}) == view(up_to_stop(fixed, K))
    assert sum(e.env == "taxi" for e in got.values()) == 2


def test_a_run_killed_mid_way_resumes_to_the_same_episodes(fixed, tmp_path):
    folder = tmp_path / "ds"
    cmd = [sys.executable, "-m", "agent_sft", "collect", *GAME, *UNTIL, f"output.dir={folder}", "--no-progress",
           "output.flush_every_episodes=1", "data.val_batch_size=1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    raw = folder / "data" / "raw"
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:  # killed once a few episodes are sealed
            if sum(len([n for n in os.listdir(raw / sp) if not n.startswith(".")]) for sp in ("train", "validation")
                   if (raw / sp).is_dir()) >= 3:
                break
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL, "the run ended before it was killed"
    assert 0 < len(episodes(folder)) < len(up_to_stop(fixed, K))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(cmd[3:]) == 0
    got, dropped = kept(folder)
    assert view(got) == view(up_to_stop(fixed, K)) and not dropped


@pytest.mark.extended
def test_ray_collectors_one_of_them_killed_give_the_same_episodes(fixed, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("AGENT_SFT_RAY_KILL_AFTER", "0:2")  # collector 0 SIGKILLs itself after its 2nd episode
    result = run(tmp_path / "ds", *UNTIL, "scale.backend=ray", "scale.collectors=2", "scale.chunk_episodes=2",
                 "scale.max_restarts=2", "data.val_batch_size=2")
    got, dropped = kept(tmp_path / "ds")
    assert view(got) == view(up_to_stop(fixed, K)) and not dropped
    assert result.run["actors_restarted"] == 1 and result.run["requeued_episodes"] >= 1



def test_two_mix_entries_of_one_env_must_sample_until_success_alike(capsys):
    from agent_sft.config import ConfigError

    mix = ["env.mix.a.env=frozenlake", "env.mix.a.until_success=1", "env.mix.b.env=frozenlake", "env.mix.b.seed_offset=100"]
    with pytest.raises(ConfigError, match="entries 'a' and 'b' both play frozenlake but sample until success differently"):
        from agent_sft.config.lanes import lanes

        lanes(load_config(None, mix, environ={}))
