"""`agent-sft serve-env`: the real server in a subprocess, talked to over HTTP as a client would.

Most tests serve `crash-test` (tests/crash_env.py: instant steps, and actions that raise, kill the env's
worker or hang); one serves the real TextWorld engine and checks that an episode over HTTP is the one
the env plays in process.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import crash_env  # noqa: F401 - registers crash-test here too
import httpx
import pytest
from serve_helpers import CLI, TESTS, Server, alive, sessions_reach, wait_for, worker_pids

from agent_sft.config import ConfigError
from agent_sft.envs import spec
from agent_sft.envs.http.protocol import PROTOCOL, jsonable
from agent_sft.rollout.pools import build_env
from agent_sft.serve import env_options

TOKEN = "s3cret-Tok-4711"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve"), "crash-test", "greeting=Hi", "env.crash-test.rooms=4",
               "--max-sessions", "4", "--step-timeout-s", "2", token=TOKEN)
    yield s
    s.stop()


@pytest.fixture
def http(server):
    with server.client() as c:
        yield c


def session(c: httpx.Client, **body) -> str:
    r = c.post("/sessions", json=body)
    assert r.status_code == 200, r.text
    return r.json()["session_id"]


def reset(c: httpx.Client, sid: str, task: str = "crash-test/room-1", seed: int = 7) -> dict:
    r = c.post(f"/sessions/{sid}/reset", json={"seed": seed, "options": {"task_id": task}})
    assert r.status_code == 200, r.text
    return r.json()


def step(c: httpx.Client, sid: str, action: str, index: int) -> httpx.Response:
    return c.post(f"/sessions/{sid}/step", json={"action": action, "index": index})


def error(r: httpx.Response, status: int, kind: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["kind"] == kind and body["error"], body
    return body["error"]


def without_pid(info: dict) -> dict:
    return {k: v for k, v in info.items() if k != "pid"}


def test_info_tasks_and_health(http):
    info = http.get("/info").json()
    assert info["env"] == "crash-test" and info["protocol"] == PROTOCOL and info["title"] == "Crash test"
    assert info["experts"] == ["walk"] and info["default_expert"] == "walk"
    assert info["fingerprint"] == {"greeting": "Hi"}  # rooms only selects tasks
    assert info["packages"]["agent_sft"] and info["shared_process"] is True
    tasks = http.get("/tasks").json()["tasks"]
    assert [t["task_id"] for t in tasks] == [f"crash-test/room-{k}" for k in range(4)]
    assert tasks[2] == {"task_id": "crash-test/room-2", "task_type": "room", "game_split": "test", "extra": {"k": 2}}
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["env"] == "crash-test" and health["max_sessions"] == 4
    assert health["protocol"] == PROTOCOL and health["sessions"] >= 0


def test_every_request_needs_the_token_which_is_never_shown(server):
    for token in (None, "wrong"):
        with server.client(token) as c:
            error(c.get("/health"), 401, "unauthorized")
            error(c.post("/sessions", json={}), 401, "unauthorized")
    with server.client() as c:
        assert c.get("/health").status_code == 200
    assert TOKEN not in server.out() + server.err()


def test_with_a_token_any_host_and_origin_is_answered(server):
    """The token is the defence: a proxy or tunnel may name the server as it likes, and a page cannot send the
    token (nor, so, be answered)."""
    port = server.url.rsplit(":", 1)[1]
    with server.client() as c:
        for host in (f"rebound.example:{port}", "127.0.0.1:1", "myhost"):
            assert c.get("/health", headers={"Host": host}).status_code == 200
        assert c.get("/health", headers={"Origin": "https://elsewhere.example"}).status_code == 200


def test_the_guard_answers_loopback_names_on_any_port_the_listen_name_and_same_origin_clients():
    from agent_sft.serve.guard import LocalGuard

    guard = LocalGuard(None, loopback=True, token=None, error_body=str, host="myhost")

    def refusal(host, origin=None):
        headers = [(b"host", host.encode())] + ([(b"origin", origin.encode())] if origin else [])
        return guard.refusal({"type": "http", "headers": headers, "server": ("127.0.1.1", 8100)})

    for host in ("localhost:9000", "127.0.0.1:1", "[::1]:8100", "LOCALHOST", "myhost:9001", "myhost"):
        assert refusal(host) is None, host
    for host in ("rebound.example:8100", "myhost.example:8100", ""):
        assert "127.0.0.1, localhost or [::1], myhost only" in refusal(host), host
    assert refusal("myhost:8100", "http://myhost:8100") is None  # a same-origin client (websocket-client)
    assert refusal("localhost:9000", "http://localhost:5173") is None
    for origin in ("http://myhost:9999", "https://elsewhere.example", "null"):
        assert "another site" in refusal("myhost:8100", origin), origin
    assert LocalGuard(None, loopback=True, token="t", error_body=str).refusal(
        {"type": "http", "headers": [(b"host", b"rebound.example"), (b"origin", b"https://elsewhere.example")]}) is None


def test_an_episode_over_http_is_the_env_in_process(http):
    before = http.get("/health").json()
    sid = session(http, seed=5, max_steps=10, expert="walk")
    assert http.get("/health").json()["sessions"] == before["sessions"] + 1
    local = spec("crash-test")
    kwargs = local.kwargs(env_options(local, {"greeting": "Hi", "rooms": 4}), seed=5, max_steps=10, task_types=[],
                          expert="walk")
    env, _ = build_env(local.entry_point, kwargs)
    first = reset(http, sid, "crash-test/room-2", seed=11)
    obs, info = env.reset(seed=11, options={"task_id": "crash-test/room-2"})
    assert first["observation"] == obs == "Hi 11: you are in crash-test/room-2."
    assert without_pid(first["info"]) == without_pid(info)
    for k, action in enumerate(["go", "look", "go", "go"]):
        r = step(http, sid, action, k)
        assert r.status_code == 200, r.text
        got = r.json()
        o, reward, terminated, truncated, i = env.step(action)
        assert (got["observation"], got["reward"], got["terminated"], got["truncated"]) == (o, reward, terminated, truncated)
        assert without_pid(got["info"]) == without_pid(i)
    assert got["info"]["won"] is True and got["terminated"] is True
    assert http.delete(f"/sessions/{sid}").json() == {"closed": True}
    assert http.delete(f"/sessions/{sid}").json() == {"closed": True}  # closing is idempotent
    error(step(http, sid, "go", 4), 404, "unknown_session")
    error(http.post(f"/sessions/{sid}/reset", json={}), 404, "unknown_session")
    assert http.get("/health").json()["sessions"] == before["sessions"]


def test_a_retried_step_is_applied_once(http):
    sid = session(http)
    error(step(http, sid, "go", 0), 409, "conflict")  # no reset yet
    reset(http, sid)
    replays = http.get("/health").json()["counters"]["step_replays"]
    first = step(http, sid, "go", 0).json()
    again = step(http, sid, "go", 0)  # the reply was "lost": the client asks again
    assert again.status_code == 200 and again.json() == first and first["info"]["step"] == 1
    second = step(http, sid, "go", 1).json()
    assert second["info"]["step"] == 2  # the env stepped once for index 0
    assert step(http, sid, "look", 1).json() == second  # the answer of index 1, whatever the action
    assert "the next step is 2" in error(step(http, sid, "go", 3), 409, "conflict")
    error(step(http, sid, "go", 0), 409, "conflict")  # older than the last answer
    assert step(http, sid, "go", 2).json()["info"]["won"] is True
    assert http.get("/health").json()["counters"]["step_replays"] == replays + 2
    reset(http, sid)  # a new episode starts the indexes again
    assert step(http, sid, "go", 0).json()["info"]["step"] == 1
    http.delete(f"/sessions/{sid}")


def test_bad_requests_are_422_and_unknown_sessions_404(http):
    assert "not JSON" in error(http.post("/sessions", content=b"{nope"), 422, "bad_request")
    error(http.post("/sessions", json={"seed": "one"}), 422, "bad_request")
    error(http.post("/sessions", json={"max_steps": 0}), 422, "bad_request")
    error(http.post("/sessions", json={"colour": "red"}), 422, "bad_request")
    assert "one of walk" in error(http.post("/sessions", json={"expert": "oracle"}), 422, "bad_request")
    error(http.post("/sessions", json=[1, 2]), 422, "bad_request")
    sid = session(http)
    error(http.post(f"/sessions/{sid}/reset", json={"options": {"task_id": "crash-test/room-9"}}), 422, "bad_request")
    error(http.post(f"/sessions/{sid}/reset", json={"seed": 1.5}), 422, "bad_request")
    reset(http, sid)
    error(http.post(f"/sessions/{sid}/step", json={"index": 0}), 422, "bad_request")
    error(http.post(f"/sessions/{sid}/step", json={"action": "go", "index": -1}), 422, "bad_request")
    error(http.post(f"/sessions/{sid}/step", content=b"\xff"), 422, "bad_request")
    error(http.post("/sessions/nope/reset", json={}), 404, "unknown_session")
    error(step(http, "nope", "go", 0), 404, "unknown_session")
    assert http.get("/nope").json()["kind"]  # any error is JSON with a kind
    http.delete(f"/sessions/{sid}")


def test_a_failing_env_fails_only_its_session(http):
    a, b = session(http), session(http)
    pid_a, pid_b = reset(http, a)["info"]["pid"], reset(http, b)["info"]["pid"]
    assert pid_a != pid_b  # one process per session
    assert step(http, b, "go", 0).status_code == 200

    r = step(http, a, "crash", 0)
    assert "asked to crash" in error(r, 500, "env_error") and "RuntimeError" in r.json()["details"]
    assert step(http, a, "crash", 0).json() == r.json()  # a retry gets the same answer; the env is not asked again
    assert "reset" in error(step(http, a, "go", 1), 409, "conflict")  # its env was replaced: reset first
    second = step(http, b, "go", 1).json()
    assert second["info"]["pid"] == pid_b and second["info"]["step"] == 2  # the other session went on

    new_a = reset(http, a)["info"]["pid"]
    assert new_a != pid_a
    error(step(http, a, "die", 0), 500, "env_error")  # the worker process itself died
    assert reset(http, a)["info"]["pid"] != new_a

    # A hung step fails after the step timeout (2 s); the other session answers meanwhile.
    hung: dict = {}
    t = threading.Thread(target=lambda: hung.update(r=step(http, a, "hang", 0)))
    t0 = time.monotonic()
    t.start()
    time.sleep(0.3)
    third = step(http, b, "go", 2)
    assert third.status_code == 200 and third.json()["info"]["won"] is True
    assert time.monotonic() - t0 < 1.5
    t.join(30)
    assert "timed out" in error(hung["r"], 500, "env_error")
    assert reset(http, a)["observation"].startswith("Hi 7:")
    for sid in (a, b):
        http.delete(f"/sessions/{sid}")


def test_max_sessions(http):
    open_now = http.get("/health").json()["sessions"]
    made = [session(http) for _ in range(4 - open_now)]
    assert "4 sessions" in error(http.post("/sessions", json={}), 503, "busy")
    http.delete(f"/sessions/{made.pop()}")
    made.append(session(http))  # a closed session's slot is free again
    for sid in made:
        http.delete(f"/sessions/{sid}")


def test_idle_sessions_expire_and_their_workers_stop(tmp_path):
    s = Server(tmp_path, "crash-test", "--idle-timeout-s", "1")
    try:
        with s.client() as c:
            made = [session(c), c.post("/sessions", json={"lease_s": 30}).json()]
            assert made[1]["lease_s"] == 1  # a lease never outlasts the idle timeout
            seen = worker_pids(s.proc.pid)
            health = sessions_reach(s.url, 0, timeout_s=30)
            assert health["counters"]["sessions_expired"] == 2
            assert "expired" in error(c.post(f"/sessions/{made[0]}/reset", json={}), 404, "unknown_session")
            wait_for(lambda: not worker_pids(s.proc.pid) and not any(alive(p) for p in seen), 30,
                     lambda: f"the expired sessions' env workers stop (seen: {seen}, left: {worker_pids(s.proc.pid)})")
    finally:
        s.stop()


def test_a_killed_clients_sessions_and_workers_end_with_its_lease(server):
    """A client renews its sessions' 2 s lease while it lives; SIGKILLed, its sessions and their worker
    processes are gone a lease later, not after the server's idle timeout (600 s here)."""
    client = textwrap.dedent(f"""
        import time
        from agent_sft.envs.http.env import HttpEnv
        envs = [HttpEnv(url="{server.url}", lease_s=2.0) for _ in range(2)]
        print(*[e.reset(seed=1, options={{"task_id": "crash-test/room-1"}})[1]["pid"] for e in envs], flush=True)
        time.sleep(3.0)  # longer than the lease without a request: only the renewals keep the sessions open
        print("slept", flush=True)
        time.sleep(300)
    """)
    with server.client() as c:
        before = c.get("/health").json()
    proc = subprocess.Popen([sys.executable, "-c", client], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "AGENT_SFT_ENV_TOKEN": TOKEN})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        pids = {int(p) for p in lines.get(timeout=120).split()}
        assert lines.get(timeout=60).strip() == "slept"
        renewed = sessions_reach(server.url, before["sessions"] + 2, 0, TOKEN)["counters"]
        assert renewed["sessions_expired"] == before["counters"]["sessions_expired"]
        assert renewed["renewals"] > before["counters"]["renewals"]
        assert len(pids) == 2 and pids <= worker_pids(server.proc.pid)
    except queue.Empty:
        proc.kill()
        raise AssertionError(f"the client did not report: {proc.stderr.read()}") from None
    finally:
        proc.kill()
        proc.wait()
    after = sessions_reach(server.url, before["sessions"], timeout_s=30, token=TOKEN)
    assert after["counters"]["sessions_expired"] == before["counters"]["sessions_expired"] + 2
    wait_for(lambda: not any(alive(p) for p in pids), 30, f"the killed client's env workers {pids} stop")


def test_exit_after_steps_stops_right_after_the_answer(tmp_path):
    s = Server(tmp_path, "crash-test", "--exit-after-steps", "3")
    with s.client() as c:
        sid = session(c)
        reset(c, sid)
        assert step(c, sid, "go", 0).status_code == 200
        assert step(c, sid, "go", 0).status_code == 200  # a replay is not a step
        assert step(c, sid, "go", 1).status_code == 200
        last = step(c, sid, "go", 2)
        assert last.status_code == 200 and last.json()["info"]["won"] is True  # the 3rd step is answered
        assert s.proc.wait(timeout=15) == 3
        with pytest.raises(httpx.TransportError):
            c.get("/health")
    assert "--exit-after-steps" not in subprocess.run([*CLI, "--help"], capture_output=True, text=True).stdout


def test_sigterm_closes_every_session(tmp_path):
    s = Server(tmp_path, "crash-test")
    port = s.url.rsplit(":", 1)[1]
    with s.client() as c:
        # without a token, a name a page pointed at 127.0.0.1 (DNS rebinding) is refused; a loopback name is
        # answered on any port (an ssh tunnel's)
        assert "127.0.0.1, localhost or [::1]" in error(
            c.post("/sessions", json={}, headers={"Host": f"rebound.example:{port}"}), 403, "forbidden")
        assert c.get("/health", headers={"Host": "localhost:9000"}).status_code == 200
        # without a token, a page of another site is refused (one of this machine's is answered)
        assert "another site" in error(c.post("/sessions", json={}, headers={"Origin": "https://elsewhere.example"}),
                                       403, "forbidden")
        assert c.get("/health", headers={"Origin": "http://localhost:5173"}).json()["counters"]["sessions_created"] == 0
        pids = [reset(c, session(c))["info"]["pid"] for _ in range(2)]
    for pid in pids:
        os.kill(pid, 0)  # alive
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert "closed" in s.err()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_bad_options_fail_before_listening():
    env = spec("crash-test")
    assert env_options(env, ["greeting=Yo", "env.rooms=2"]) == env.options(greeting="Yo", rooms=2)
    with pytest.raises(ConfigError, match="has no option 'colour'.*greeting, rooms"):
        env_options(env, ["colour=red"])
    with pytest.raises(ConfigError, match="each session's client sets it"):
        env_options(env, ["max_steps=3"])
    with pytest.raises(ConfigError, match="env.crash-test.rooms: expected int"):
        env_options(env, ["rooms=many"])
    out = subprocess.run([*CLI, "crash-test", "greeting= ", "--port", "0"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": TESTS})
    assert out.returncode == 2 and "env.crash-test.greeting: must not be empty" in out.stderr
    assert "serving" not in out.stdout



def test_an_address_beyond_loopback_without_a_token_is_warned_about(monkeypatch, capsys):
    import agent_sft.serve as serve_mod

    def refuse(host, port):  # nothing is bound beyond loopback in a test: the warning comes before the bind
        raise ConfigError(f"cannot listen on {host}:{port}: refused by the test")

    monkeypatch.setattr(serve_mod, "_bind", refuse)
    with pytest.raises(ConfigError, match="cannot listen on 192.0.2.1:0"):
        serve_mod.serve("crash-test", host="192.0.2.1", port=0)
    assert "serving crash-test on 192.0.2.1 without a token" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        serve_mod.serve("crash-test", host="127.0.0.1", port=0)
    assert "without a token" not in capsys.readouterr().err


def test_import_agent_sft_does_not_import_the_server_stack():
    code = "import sys, agent_sft, agent_sft.envs; print([m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.envs
def test_textworld_over_http_equals_the_env_in_process(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_SFT_CACHE", str(tmp_path / "cache"))  # the server's and this process's
    s = Server(tmp_path, "textworld", "env.textworld.task_types=tw-simple")
    try:
        with s.client() as c:
            tasks = c.get("/tasks").json()["tasks"]
            assert tasks and all(t["task_type"].startswith("tw-simple") for t in tasks)
            assert c.get("/info").json()["default_expert"] == spec("textworld").default_expert()
            sid = session(c, seed=3, max_steps=20, expert="walkthrough")
            task = tasks[0]["task_id"]
            first = reset(c, sid, task, seed=3)
            remote = [[first["observation"], first["info"]]]
            for k in range(4):
                got = step(c, sid, remote[-1][-1]["expert_plan"][0], k).json()
                remote.append([got["observation"], got["reward"], got["terminated"], got["truncated"], got["info"]])
    finally:
        s.stop()
    tw = spec("textworld")
    kwargs = tw.kwargs(env_options(tw, {"task_types": "tw-simple"}), seed=3, max_steps=20, task_types=[],
                       expert="walkthrough")
    env, _ = build_env(tw.entry_point, kwargs)
    try:
        local = [env.reset(seed=3, options={"task_id": task})]
        for _ in range(4):
            local.append(env.step(local[-1][-1]["expert_plan"][0]))
    finally:
        env.close()
    assert remote == jsonable(local)
    assert remote[-1][-1]["score"] > 0 or remote[-1][-1]["moves"] == 4
