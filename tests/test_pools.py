"""Env pools chosen by `env.backend`: `process` and `thread` play the same episodes, faults end only
their own episode on both, and a backend that cannot run an env is refused before any env starts."""

from __future__ import annotations

import json
import random
import threading
import time

import hang_env
import partial_env
import pytest

from agent_sft.config import ConfigError, load_config
from agent_sft.dataset.formats import episode_to_row
from agent_sft.envs import spec
from agent_sft.policies.base import Completion
from agent_sft.records import END_ERROR, END_SUCCESS, PolicyInfo
from agent_sft.rollout import BACKENDS, Collector, EnvPool, make_pool

TIMES = ("started_at", "duration_s")


class SeededPolicy:
    """Follows the env's plan, or answers something else, as the turn seed says."""

    def act(self, conversations, seeds, infos=None):
        out = []
        for seed, info in zip(seeds, infos):
            r = random.Random(seed).random()
            action = info["expert_plan"][0] if r < 0.6 else "look"
            text = f"<think>{r:.3f}</think><action>{action}</action>" if r < 0.9 else "no tags"
            out.append(Completion(text, 5, 3, "stop"))
        return out

    def describe(self):
        return PolicyInfo("expert", "seeded")

    def close(self):
        pass


def make_cfg(env, *overrides):
    return load_config(None, [f"env.env_name={env}", "data.val_batch_size=4", *overrides], environ={})


def play(cfg, **kw):
    with Collector(cfg, SeededPolicy(), **kw) as c:
        episodes = list(c.run(c.plan()))
    return episodes, c.stats


def timeless_row(ep):
    row = episode_to_row(ep)
    for k in TIMES:
        row.pop(k)
    for s in row["steps"]:
        s.pop("latency_s")
    return row


def test_both_backends_give_identical_rows():
    assert spec(partial_env.NAME).shared_process
    rows, stats = {}, {}
    for name in ("process", "thread"):
        cfg = make_cfg(partial_env.NAME, f"env.backend={name}", "env.seed=5", "env.num_episodes=36", "env.rollout.n=2")
        episodes, stats[name] = play(cfg)
        rows[name] = [timeless_row(ep) for ep in episodes]
    assert len(rows["process"]) == 36
    assert len({r["episode_id"] for r in rows["process"]}) == 36
    assert {r["end_reason"] for r in rows["process"]} >= {"success", "failure"}
    assert rows["thread"] == rows["process"]
    for name, st in stats.items():
        assert st.env_backend == name
        assert st.errors == 0 and st.workers_replaced == 0 and st.workers_started == 4


@pytest.mark.parametrize("name", ["process", "thread"])
def test_a_hung_or_raising_env_ends_its_episode_as_an_error_and_the_run_goes_on(name):
    cfg = make_cfg(hang_env.NAME, f"env.backend={name}", "env.step_timeout_s=1", "data.val_batch_size=3")
    hang_s = 6.0
    t = time.monotonic()
    episodes, stats = play(cfg, env_kwargs={"hang_s": hang_s})
    assert time.monotonic() - t < hang_s  # the run never waits for the hung step
    by_id = {e.task_id: e for e in episodes}
    assert sorted(by_id) == sorted([f"ok/{k}" for k in range(hang_env.OK_TASKS)] + ["hang/0", "raise/0"])
    hang, broke = by_id["hang/0"], by_id["raise/0"]
    assert hang.end_reason == END_ERROR and not hang.success
    assert hang.error.startswith("env step failed: env step timed out after 1 s (env.step_timeout_s)")
    assert broke.end_reason == END_ERROR and "RuntimeError: the hang-test env broke" in broke.error
    for ep in (hang, broke):
        assert len(ep.steps) == 2 and json.loads(ep.steps[-1].info)["env_error"] is True
    assert all(by_id[f"ok/{k}"].end_reason == END_SUCCESS for k in range(hang_env.OK_TASKS))
    assert stats.errors == 2 and stats.workers_replaced == 2 and stats.workers_started == 3 + 2
    if name == "thread":
        # The hung env's thread was abandoned, not reused: it is the only env thread left, and ends on its own.
        left = [th for th in threading.enumerate() if th.name.startswith("agent-sft-env-")]
        assert len(left) == 1
        left[0].join(timeout=15)
        assert not left[0].is_alive()


def test_thread_backend_refuses_an_env_that_may_not_share_a_process(monkeypatch):
    from agent_sft.rollout.threads import ThreadPool

    alfworld = spec("alfworld")
    assert not alfworld.shared_process
    started = []
    monkeypatch.setattr(ThreadPool, "_start", lambda self, slot: started.append(slot))
    cfg = load_config(None, ["env.backend=thread"], environ={})
    with pytest.raises(ConfigError, match=r"env\.backend=thread: environment 'alfworld' may not share a process") as e:
        Collector(cfg, SeededPolicy())
    assert "env.backend=process" in str(e.value)
    with pytest.raises(ConfigError, match="env.backend=thread"):
        make_pool("thread", alfworld, 1, timeout_s=1, start_timeout_s=1)
    assert started == []


def test_an_unknown_backend_is_a_clear_error():
    cfg = make_cfg(partial_env.NAME, "env.backend=fork")
    with pytest.raises(ConfigError, match=r"^env\.backend: unknown env pool backend 'fork'; known: process, ray, thread$"):
        Collector(cfg, SeededPolicy())
    assert set(BACKENDS) == {"process", "ray", "thread"}


def test_pools_follow_the_protocol():
    for name in sorted(set(BACKENDS) - {"ray"}):  # the ray pool: tests/test_ray.py, on its two-node cluster
        pool = make_pool(name, spec(partial_env.NAME), 1, {"max_steps": 3, "seed": 1}, timeout_s=5, start_timeout_s=60)
        try:
            assert isinstance(pool, EnvPool)
            pool.resize(2)
            pool.await_ready()
            replies = pool.call({0: ("tasks", ()), 1: ("reset", (7, {"task_id": "play/00"}))})
            assert replies[0].ok and len(replies[0].value) == len(partial_env.SCRIPTS) + partial_env.PLAY_TASKS
            assert replies[1].ok and replies[1].value[0].startswith("Room 7.")
            assert len(pool) == 2 and pool.counters.started == 2 and pool.counters.errors == 0
            assert pool.accepted == ["max_steps"]
        finally:
            pool.close()


def test_the_backend_is_not_part_of_the_folder_fingerprint(tmp_path, monkeypatch):
    from agent_sft.cli import main

    for var in ("COLLECT_SFT", "SFT_SEED", "SFT_REQUIRE_SUCCESS"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "ds"
    common = ["collect", "--no-progress", f"env.env_name={partial_env.NAME}", "env.task_types=[play]",
              "data.val_batch_size=2", f"output.dir={out}"]
    assert main([*common, "env.backend=thread", "env.num_episodes=4"]) == 0
    assert main([*common, "env.backend=process", "env.num_episodes=8"]) == 0  # resumed, not refused
    info = json.loads((out / "meta" / "info.json").read_text())
    assert "backend" not in info["fingerprint"]["env"] and info["config"]["env"]["backend"] == "process"
    stats = json.loads((out / "meta" / "stats.json").read_text())
    assert sum(stats["episodes"].values()) == 8


class _ClosingEnv:
    def close(self):
        print("env closed", file=__import__("sys").stderr)


def test_a_worker_whose_loop_fails_says_why_and_exits_non_zero_and_one_told_to_close_exits_zero(capfd):
    import multiprocessing as mp

    from agent_sft.rollout.workers import worker_main

    ctx = mp.get_context("spawn")  # as the pools start workers (a fork of this process would inherit its engines' threads)
    codes = []
    for message in ["not a command", ("close", ())]:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker_main, args=(child, _ClosingEnv, {}))
        p.start()
        assert parent.recv().ok
        parent.send(message)
        p.join(30)
        codes.append(p.exitcode)
    err = capfd.readouterr().err
    assert codes == [1, 0], err
    assert err.count("env closed") == 2 and err.count("Traceback") == 1 and "ValueError" in err
