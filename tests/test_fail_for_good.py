"""Runs that fail for good stop: a policy server that answers but never usefully, env servers that are all
gone, an env whose every episode errors. Each stops with one line naming what failed and its last error
(plus the hint that a rerun resumes), exit code 3; what was sealed loads, and a rerun plays the error
episodes again. A failure now and then (a context-length 400, an invalid action, a server of several
that dies) ends only its episodes."""

from __future__ import annotations

import os
import subprocess
import time

import partial_env  # noqa: F401 - registers partial-test (the env servers import it too)
import pytest
from faults import CLI_WITH_TEST_ENV, TESTS
from policy_server import PolicyServer
from serve_helpers import Server

import agent_sft
from agent_sft.cli import main
from agent_sft.envs import TaskSpec, register

HINT = "run the same command again: the episodes sealed so far are kept and the error episodes are played again"
BROKEN_VAR = "AGENT_SFT_TEST_RESET_FAILS"


class ResetFailsEnv:
    """Every reset raises while $AGENT_SFT_TEST_RESET_FAILS is set (a broken install, say); else won in one step."""

    def __init__(self, **_):
        self._tasks = [TaskSpec(f"once/{k}", "once", "test") for k in range(8)]

    def tasks(self):
        return list(self._tasks)

    def reset(self, *, seed=None, options=None):
        if os.environ.get(BROKEN_VAR):
            raise RuntimeError("no game data under /nowhere")
        self.task_id = options["task_id"]
        return "Say go.", {"task_id": self.task_id, "admissible_actions": ["go"], "won": False, "expert_plan": ["go"]}

    def step(self, action):
        return "Done.", 1.0, True, False, {"task_id": self.task_id, "admissible_actions": ["go"], "won": True}

    def close(self):
        pass


register("reset-fails-test", ResetFailsEnv)


@pytest.fixture(scope="module")
def policy_server():
    with PolicyServer(hang_s=3.0) as server:
        yield server


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("COLLECT_SFT", "SFT_SEED", "SFT_REQUIRE_SUCCESS", "OPENAI_API_KEY", BROKEN_VAR):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip() and not line.startswith("  ")]


def raw_rows(folder) -> list[dict]:
    raw = agent_sft.load_raw(str(folder))
    return [r for split in raw for r in raw[split]]


def folder_loads(folder, capsys) -> None:
    """`agent-sft info` reads the folder and both configs load."""
    assert main(["info", str(folder)]) == 0
    capsys.readouterr()
    for config in ("raw", "sft"):
        agent_sft.load(str(folder), config)


def play_args(folder, *more):
    return ["collect", "--no-progress", "env.env_name=partial-test", "env.task_types=[play]", "env.num_episodes=6",
            "data.val_batch_size=2", "env.backend=thread", "output.flush_every_episodes=1", f"output.dir={folder}",
            *more]


def openai_args(url, *more):
    return ["policy.type=openai", "policy.model=det", f"policy.base_url={url}", "policy.max_retries=1",
            "policy.request_timeout_s=5", "policy.max_consecutive_failures=3", *more]


# --- the policy server ------------------------------------------------------------------------------

def test_policy_server_failing_every_request_stops_with_exit_3_and_a_rerun_replays(policy_server, workdir, capsys):
    url = policy_server.failing_url("500")
    t = time.monotonic()
    assert main(play_args("ds", *openai_args(url))) == 3
    assert time.monotonic() - t < 30
    line, hint = error_lines(capsys.readouterr().err)
    assert line.startswith(f"agent-sft collect: error: the policy server at {url} failed 3 requests in a row")
    assert line.endswith("the last: gave up after 2 tries: HTTP 500: the server failed (500)")
    assert HINT in hint
    first = raw_rows("ds")
    assert first and all(r["end_reason"] == "error" for r in first)  # sealed before the stop
    folder_loads("ds", capsys)

    assert main(play_args("ds", *openai_args(policy_server.url))) == 0  # the server fixed
    out = capsys.readouterr().out
    assert "Playing 6 episodes" in out and "Resuming" not in out  # the error episodes are played again
    rows = raw_rows("ds")
    assert len(rows) == 6 and not any(r["end_reason"] == "error" for r in rows)


def test_the_run_ends_right_after_the_failure_that_stops_it_while_a_request_hangs(workdir):
    """The stop comes from the failing requests: the one the server holds (for a minute) is not waited for,
    neither by the episode that sent it nor by the process's exit."""
    with PolicyServer(hang_s=60) as server:
        url = server.failing_url("hang1")  # the first request hangs, the others get a 500
        args = play_args("ds", *openai_args(url, "policy.request_timeout_s=60", "policy.max_retries=0",
                                            "policy.max_consecutive_failures=2"), "loop.mode=async")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen([*CLI_WITH_TEST_ENV, *args], cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=40)
        finally:
            proc.kill()
            proc.wait()
        ended = time.monotonic() - server.last_failure_at
        assert server.by_kind["hang1"] == 3
    assert proc.returncode == 3, err
    assert ended < 8
    line = error_lines(err)[0]
    assert line.startswith(f"agent-sft collect: error: the policy server at {url} failed 2 requests in a row")
    assert line.endswith("the last: gave up after 1 tries: HTTP 500: the server failed (500)")
    assert raw_rows(workdir / "ds")  # the failed episodes are sealed


def http_policy(url, **kw):
    from agent_sft.config import PolicyConfig
    from agent_sft.policies.registry import make_policy

    fields = dict(type="openai", model="det", base_url=url, max_retries=1, request_timeout_s=5, concurrency=4,
                  api_key_env="", max_consecutive_failures=3)
    fields.update(kw)
    return make_policy(PolicyConfig(**fields), backoff_s=0.001, max_backoff_s=0.005)


def chats(n):
    return [[{"role": "user", "content": f"You are in room {i}."}] for i in range(n)]


@pytest.mark.parametrize("kind, last", [
    ("503", "gave up after 2 tries: HTTP 503: the server failed (503)"),
    ("429", "gave up after 2 tries: HTTP 429: rate limited"),
    ("badjson", "gave up after 2 tries: malformed response (JSONDecodeError)"),
    ("empty", "gave up after 2 tries: malformed response (IndexError)"),
    ("400", "RuntimeError: HTTP 400 from the server's /chat/completions: 'temperature' must be a number"),
    ("hang", "gave up after 1 tries: ReadTimeout"),
])
def test_every_kind_of_failed_request_counts_toward_the_stop(policy_server, kind, last):
    from agent_sft.errors import RunFailedError
    from agent_sft.policies import PolicyError

    timeouts = {"request_timeout_s": 0.3, "max_retries": 0, "max_consecutive_failures": 2} if kind == "hang" else {}
    policy = http_policy(policy_server.failing_url(kind), **timeouts)
    try:
        if kind != "hang":  # two failures: their episodes end as errors, the run goes on
            assert all(c.finish_reason == "error" and c.error.startswith(last) for c in policy.act(chats(2), [1, 2]))
        with pytest.raises(PolicyError) as stop:
            policy.act(chats(2), [3, 4])
    finally:
        policy.close()
    assert isinstance(stop.value, RunFailedError)
    msg = str(stop.value)
    assert msg.startswith(f"the policy server at {policy_server.failing_url(kind)} failed ")
    assert f"the last: {last}" in msg and "\n" not in msg


def test_a_good_answer_resets_the_count():
    with PolicyServer(fail_seeds_mod=(2, 1)) as server:  # odd seeds get a 500
        policy = http_policy(server.url)
        try:
            for seeds in ([1, 3], [2], [5, 7], [4], [9, 11]):  # never three failures in a row
                assert all(bool(c.error) == (s % 2 == 1) for c, s in zip(policy.act(chats(len(seeds)), seeds), seeds))
        finally:
            policy.close()


def test_a_context_length_400_neither_counts_nor_resets_the_count():
    from agent_sft.policies.openai import ServerFailingError

    with PolicyServer(fail_seeds={1: "500", 2: "500", 3: "ctx", 4: "ctx", 5: "500"}) as server:
        policy = http_policy(server.url)  # stops at 3 failures in a row
        try:
            assert [c.finish_reason for c in policy.act(chats(2), [1, 2])] == ["error", "error"]
            assert [c.finish_reason for c in policy.act(chats(2), [3, 4])] == ["context_truncated"] * 2
            with pytest.raises(ServerFailingError, match="failed 3 requests in a row"):
                policy.act(chats(1), [5])
        finally:
            policy.close()


def test_context_length_400s_and_invalid_actions_are_not_failures(policy_server, workdir):
    for kind, end in (("ctx", "context_truncated"), ("invalid", None)):
        res = agent_sft.collect(play_args(f"ds-{kind}", *openai_args(policy_server.failing_url(kind)),
                                          "policy.max_consecutive_failures=1")[2:])
        assert res.run["episodes"] == 6 and res.run["errors"] == 0
        rows = raw_rows(f"ds-{kind}")
        if end:
            assert all(r["end_reason"] == end for r in rows)
        else:
            assert all(not s["valid"] for r in rows for s in r["steps"])


# --- envs -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["sync", "async"])
def test_env_failing_every_reset_stops_with_exit_3_and_the_fixed_rerun_completes(workdir, capsys, monkeypatch, mode):
    monkeypatch.setenv(BROKEN_VAR, "1")
    args = ["collect", "--no-progress", "env.env_name=reset-fails-test", "data.val_batch_size=2",
            "env.backend=thread", "env.max_consecutive_errors=3", "output.flush_every_episodes=1", "output.dir=ds",
            f"loop.mode={mode}"]
    assert main(args) == 3
    line, hint = error_lines(capsys.readouterr().err)
    assert line == ("agent-sft collect: error: environment 'reset-fails-test': 3 episodes in a row ended in an env "
                    "error (env.max_consecutive_errors=3); the last: env reset failed: RuntimeError: no game data "
                    "under /nowhere")
    assert HINT in hint
    sealed = raw_rows("ds")
    assert len(sealed) >= 3 and all(r["end_reason"] == "error" for r in sealed)
    folder_loads("ds", capsys)

    monkeypatch.delenv(BROKEN_VAR)
    assert main(args) == 0
    rows = raw_rows("ds")
    assert len(rows) == 8 and all(r["success"] for r in rows)


def test_env_server_killed_mid_run_stops_with_exit_3_and_a_rerun_resumes(workdir, capsys):
    (workdir / "s1").mkdir()
    (workdir / "s2").mkdir()
    dying = Server(workdir / "s1", "partial-test", "--exit-after-steps", "4")
    args = ["collect", "--no-progress", "env.env_name=http", "env.num_episodes=6", "data.val_batch_size=2",
            "env.backend=thread", "env.max_consecutive_errors=3", "env.http.retries=1", "env.http.timeout_s=5",
            "output.flush_every_episodes=1", "output.dir=ds"]
    try:
        assert main([*args, f"env.http.url={dying.url}"]) == 3
    finally:
        dying.stop()
    line, hint = error_lines(capsys.readouterr().err)
    assert line.startswith("agent-sft collect: error: environment 'partial-test': 3 episodes in a row ended in an "
                           f"env error and none of its servers answers ({dying.url}: GET {dying.url}/health: "
                           "cannot connect")
    assert "; the last error: env " in line and HINT in hint
    first = raw_rows("ds")
    done = [r for r in first if r["end_reason"] != "error"]
    assert len(first) - len(done) >= 3
    folder_loads("ds", capsys)

    again = Server(workdir / "s2", "partial-test")
    try:
        assert main([*args, f"env.http.url={again.url}"]) == 0
    finally:
        again.stop()
    assert f"Resuming ds: {len(done)} episodes already there are skipped." in capsys.readouterr().out
    rows = raw_rows("ds")
    assert len(rows) == 6 and not any(r["end_reason"] == "error" for r in rows)


def test_env_errors_go_on_while_one_of_its_servers_answers(policy_server):
    from agent_sft.envs.http.env import probe_health
    from agent_sft.rollout.health import EnvFailedError, EnvHealth

    class Lane:
        name, label = "partial-test", "partial-test"

        def __init__(self, urls):
            self.options = type("Options", (), {"probe_servers": lambda _: {u: probe_health(u) for u in urls}})()

    live, dead = policy_server.url.removesuffix("/v1"), "http://127.0.0.1:9"
    health = EnvHealth([Lane([dead, live])], limit=2)
    for _ in range(3):
        health.ended(0, "env reset failed: ServerError: cannot connect")
    health.check()  # one of them answers: the run goes on
    health = EnvHealth([Lane([dead])], limit=2)
    health.ended(0, "env step failed: ServerError: no answer")
    health.ended(0, "")  # a good episode: the count starts again
    health.ended(0, "env step failed: ServerError: no answer")
    health.check()
    health.ended(0, "env step failed: ServerError: no answer\nTraceback ...")
    with pytest.raises(EnvFailedError, match=r"none of its servers answers \(http://127.0.0.1:9: GET .*cannot "
                                             r"connect.*\); the last error: env step failed: ServerError: no answer$"):
        health.check()
