"""The `http` env against real `agent-sft serve-env` servers on loopback.

- ALFWorld (built-in games) and TextWorld served and collected through `http` give the rows of the same
  runs in process (timing aside), and no session is left open on the server.
- A server down at the start stops the run before any episode.
- A server that dies after its N-th step (a hook, not a timer): the run records the affected episodes as
  errors; the server restarted, a resume loses and duplicates nothing.
- A proxy that answers 500, garbage, or nothing to chosen steps ends only those episodes as errors.
- `env.backend=thread` drives many sessions from one process; sessions spread over two servers.
- A session close that gets no answer is sent again before the env's worker is stopped.
Every session a run opens is closed by the run: the server counts it closed, not expired, well within
the lease (waited for: a close may still be on its way).
"""

from __future__ import annotations

import partial_env  # noqa: F401 - registers partial-test (the servers import it too)
import pytest
from env_proxy import FaultProxy
from serve_helpers import Server, closed_by_client, health

import agent_sft
from agent_sft.config import ConfigError

pytestmark = pytest.mark.alfworld

TIMING = {"started_at", "duration_s"}


def rows(folder) -> dict[str, dict]:
    raw = agent_sft.load_raw(str(folder))
    out = {}
    for sp in raw:
        for r in raw[sp]:
            r = {k: v for k, v in r.items() if k not in TIMING}
            r["steps"] = [{k: v for k, v in s.items() if k != "latency_s"} for s in r["steps"]]
            out[r["episode_id"]] = r
    return out


@pytest.fixture(scope="module")
def textworld_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("tw"), "textworld", "--max-sessions", "16")
    yield s
    s.stop()


def test_alfworld_and_textworld_served_equal_in_process(textworld_server, tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_SFT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "alf_server").mkdir()
    alf = Server(tmp_path / "alf_server", "alfworld", "data_path=builtin")
    try:
        for env, url in (("alfworld", alf.url), ("textworld", textworld_server.url)):
            before = health(url)
            common = ["env.num_episodes=4", "data.val_batch_size=2", "env.seed=7", "data.val_fraction=0.5"]
            local = agent_sft.collect([f"env.env_name={env}", *common, f"output.dir={tmp_path / (env + '_local')}"])
            remote = agent_sft.collect(["env.env_name=http", f"env.http.url={url}", *common,
                                        f"output.dir={tmp_path / (env + '_http')}"])
            assert remote.run["errors"] == 0 and remote.stats["success_rate"] == local.stats["success_rate"] == 1.0
            a, b = rows(tmp_path / (env + "_local")), rows(tmp_path / (env + "_http"))
            assert a.keys() == b.keys() and len(a) == 4
            for k in a:
                assert a[k] == b[k], (env, k)
            closed_by_client(url, before)  # every session closed by the run, none left to its lease
    finally:
        alf.stop()


def test_server_down_at_start_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"env.http.url: .*127.0.0.1:9.*cannot connect.*Nothing was played"):
        agent_sft.collect(["env.env_name=http", "env.http.url=http://127.0.0.1:9", f"output.dir={tmp_path / 'x'}"])
    assert not (tmp_path / "x").exists()


def test_server_killed_after_a_step_then_resumed_loses_nothing(tmp_path):
    common = ["env.num_episodes=12", "data.val_batch_size=3", "env.seed=1", "env.step_timeout_s=20",
              "env.http.timeout_s=10", "env.http.retries=1"]
    ref = agent_sft.collect(["env.env_name=partial-test", *common[:3], f"output.dir={tmp_path / 'ref'}"])
    assert ref.run["errors"] == 0
    s = Server(tmp_path, "partial-test", "--exit-after-steps", "9")
    out = tmp_path / "ds"
    try:
        first = agent_sft.collect(["env.env_name=http", f"env.http.url={s.url}", *common, f"output.dir={out}"])
    finally:
        s.proc.wait(timeout=30)
    assert s.proc.returncode == 3  # the hook: gone right after answering its 9th step
    assert first.run["errors"] > 0 and first.run["episodes"] == 12
    (tmp_path / "again").mkdir()
    s2 = Server(tmp_path / "again", "partial-test")
    try:
        port, before = s2.url.rsplit(":", 1)[1], health(s2.url)
        second = agent_sft.collect(["env.env_name=http", f"env.http.url=http://127.0.0.1:{port}", *common,
                                    f"output.dir={out}"])
        assert second.run["errors"] == 0 and second.run["episodes"] == first.run["errors"]
        closed_by_client(s2.url, before)
    finally:
        s2.stop()
    got, want = rows(out), rows(tmp_path / "ref")
    assert got.keys() == want.keys() and all(got[k] == want[k] for k in want)


@pytest.fixture(scope="module")
def fast_servers(tmp_path_factory):
    """Two servers of the scripted `partial-test` env (instant steps)."""
    made = [Server(tmp_path_factory.mktemp(f"fast{i}"), "partial-test") for i in range(2)]
    yield [s.url for s in made]
    for s in made:
        s.stop()


@pytest.mark.parametrize("fault", ["500", "garbage", "hang", "drop"])
def test_bad_replies_end_only_their_episode(fast_servers, tmp_path, fault):
    proxy, before = FaultProxy(fast_servers[0], faults={4: fault}, hang_s=6), health(fast_servers[0])
    try:
        res = agent_sft.collect(["env.env_name=http", f"env.http.url={proxy.url}", "env.http.timeout_s=2",
                                 "env.num_episodes=8", "data.val_batch_size=3", "env.step_timeout_s=30",
                                 f"output.dir={tmp_path / 'ds'}"])
    finally:
        proxy.close()
    assert proxy.spoiled == [(4, fault)]
    assert res.run["errors"] == 1 and res.run["episodes"] == 8
    got = rows(tmp_path / "ds")
    bad = [r for r in got.values() if r["end_reason"] == "error"]
    assert len(bad) == 1 and "env step failed" in bad[0]["error"]
    assert all(r["end_reason"] in ("success", "failure") for r in got.values() if r is not bad[0])
    closed_by_client(fast_servers[0], before)


def test_a_close_without_answer_is_sent_again_before_the_worker_stops(fast_servers, tmp_path):
    proxy, before = FaultProxy(fast_servers[0], close_faults={1: "lost"}, hang_s=30), health(fast_servers[0])
    try:
        res = agent_sft.collect(["env.env_name=http", f"env.http.url={proxy.url}", "env.num_episodes=2",
                                 "data.val_batch_size=1", f"output.dir={tmp_path / 'ds'}"])
        assert res.run["errors"] == 0
        closed_by_client(fast_servers[0], before)
        assert proxy.spoiled == [(1, "lost")] and proxy.closes >= 2
    finally:
        proxy.close()


def test_threads_drive_many_sessions_over_two_servers(fast_servers, tmp_path):
    before = [health(u) for u in fast_servers]
    res = agent_sft.collect(["env.env_name=http", f"env.http.url=[{fast_servers[0]},{fast_servers[1]}]",
                             "env.backend=thread", "env.num_episodes=24", "data.val_batch_size=12",
                             "env.http.lease_s=2", f"output.dir={tmp_path / 'ds'}"])
    assert res.run["errors"] == 0 and res.run["episodes"] == 24 and res.run["env_backend"] == "thread"
    ends = [closed_by_client(u, b)["counters"] for u, b in zip(fast_servers, before)]  # on both servers
    # The sessions' leases were renewed while they played (2 s: shorter than the run).
    assert sum(n["renewals"] for n in ends) > sum(b["counters"]["renewals"] for b in before)
    want = agent_sft.collect(["env.env_name=partial-test", "env.num_episodes=24", f"output.dir={tmp_path / 'local'}"])
    assert rows(tmp_path / "ds") == rows(tmp_path / "local") and want.run["errors"] == 0
