"""`agent-sft serve-env NAME --protocol openenv`: agent-sft's envs through OpenEnv 0.10's protocol.

The protocol's routes, messages and faults are checked on `crash-test` (tests/crash_env.py) with a raw
WebSocket and HTTP; ALFWorld's built-in games and TextWorld are played by OpenEnv's own clients
(`GenericEnvClient`, `MCPToolClient`), run from OpenEnv's virtualenv (tests/openenv_drive.py), and each
episode is the one the env plays in process.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from importlib.metadata import version

import crash_env  # noqa: F401 - registers crash-test here too
import pytest
from fixtures_openenv import openenv_python
from serve_helpers import TESTS, Server, wait_for, worker_pids
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from agent_sft.envs import spec
from agent_sft.envs.http.protocol import jsonable
from agent_sft.rollout.pools import build_env
from agent_sft.serve import env_options

TOKEN = "oe-Tok-5150"
ROOMS = [f"crash-test/room-{k}" for k in range(4)]
# a WebSocket handshake sent with httpx: refused, it is answered 403 before any upgrade
UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


@pytest.fixture(scope="module")
def crash(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("openenv-serve"), "crash-test", "rooms=4", "--protocol", "openenv",
               "--max-sessions", "2", token=TOKEN)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tokenless(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("openenv-serve-open"), "crash-test", "--protocol", "openenv",
               "--idle-timeout-s", "1", "--actions", "tools")
    yield s
    s.stop()


def ws(server: Server, token: str | None = "own", query: str = ""):
    token = server.token if token == "own" else token
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return connect(server.url.replace("http://", "ws://", 1) + "/ws" + query, additional_headers=headers,
                   open_timeout=30)


def ask(conn, message) -> dict:
    conn.send(message if isinstance(message, str) else json.dumps(message))
    return json.loads(conn.recv(timeout=60))


def rpc(client, method: str, **params) -> dict:
    return client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).json()


def no_sessions(server: Server) -> dict:
    with server.client() as c:
        return wait_for(lambda: (h := c.get("/health").json())["active_sessions"] == 0 and h, 30,
                        f"{server.url} has no session open")


def test_health_metadata_schema_and_the_task_api(crash):
    with crash.client() as c:
        assert c.get("/health").json()["status"] == "healthy"
        meta = c.get("/metadata").json()
        assert meta["name"] == "crash-test" and meta["version"].startswith("agent-sft ")
        schema = c.get("/schema").json()
        assert schema["action"]["title"] == "TextAction" and schema["action"]["required"] == ["action"]
        assert {"text", "admissible_actions", "goal", "won", "done", "reward"} <= set(schema["observation"]["properties"])
        assert {"episode_id", "step_count", "task_id"} <= set(schema["state"]["properties"])
        assert c.get("/list_environments").json() == ["crash-test"]
        assert c.get("/crash-test/splits").json() == [{"name": "test", "type": "test"}]
        assert c.post("/CRASH-TEST/num_tasks", json={"split": "test"}).json() == {"num_tasks": 4}
        listed = c.post("/crash-test/tasks", json={"split": "test"}).json()
        assert [t["task_id"] for t in listed["tasks"]] == ROOMS and listed["env_name"] == "crash-test"
        assert c.post("/crash-test/task", json={"split": "test", "index": 2}).json()["task"] == {
            "task_id": ROOMS[2], "task_type": "room", "game_split": "test", "extra": {"k": 2}, "index": 2}
        got = c.post("/crash-test/task_range", json={"split": "test", "start": 1, "stop": 3}).json()
        assert [t["task_id"] for t in got["tasks"]] == ROOMS[1:3]
        assert c.post("/crash-test/task", json={"split": "test", "index": 9}).json() == {"detail": "Invalid task index"}
        assert "splits: test" in c.post("/crash-test/tasks", json={"split": "nope"}).json()["detail"]
        assert c.post("/crash-test/tasks", json={"split": "test", "colour": 1}).status_code == 422
        assert c.get("/nope/splits").status_code == 404 and c.get("/crash-test/tasks").status_code == 405
        assert c.get("/state").json() == {"episode_id": None, "step_count": 0, "task_id": None}
        first = c.post("/reset", json={"seed": 4, "task_id": ROOMS[1]}).json()  # stateless: a fresh env, closed after
        assert first["observation"]["text"] == f"Hello 4: you are in {ROOMS[1]}." and first["done"] is False
        assert c.post("/reset", json={"seed": -1}).status_code == 422
        assert c.post("/step", json={"action": {"move": "go"}}).json()["detail"][0]["loc"] == ["body", "action", "action"]
        assert "/ws" in c.post("/step", json={"action": {"action": "go"}}).json()["detail"]


def test_an_episode_over_the_websocket(crash):
    with ws(crash) as conn:
        listed = ask(conn, {"type": "step", "data": {"type": "list_tools"}})["data"]["observation"]["tools"]
        assert [t["name"] for t in listed] == ["act"] and listed[0]["input_schema"]["required"] == ["command"]
        first = ask(conn, {"type": "reset", "data": {"seed": 5, "split": "test", "index": 2, "episode_id": "e-1"}})
        assert first["type"] == "observation"
        obs = first["data"]["observation"]
        assert obs["text"] == f"Hello 5: you are in {ROOMS[2]}." and obs["task_id"] == ROOMS[2]
        assert obs["admissible_actions"] == ["go", "crash", "die", "hang"] and obs["goal"] == "go three times"
        assert first["data"]["done"] is False and first["data"]["reward"] is None
        step = ask(conn, {"type": "step", "data": {"action": "go"}})["data"]
        assert (step["reward"], step["done"], step["metadata"]["step"]) == (0.0, False, 1)
        call = ask(conn, {"type": "step", "data": {"type": "call_tool", "tool_name": "act",
                                                   "arguments": {"command": "go"}}})["data"]["observation"]
        assert call["tool_name"] == "act" and call["error"] is None and call["result"]["data"] == "Hello: step 2, you did 'go'."
        unknown = ask(conn, {"type": "step", "data": {"type": "call_tool", "tool_name": "fly"}})["data"]["observation"]
        assert unknown["error"]["error_type"] == "tool_not_found" and unknown["result"] is None  # nothing played
        assert ask(conn, {"type": "state"}) == {"type": "state", "data": {"episode_id": "e-1", "step_count": 2,
                                                                          "task_id": ROOMS[2]}}
        last = ask(conn, {"type": "mcp", "data": {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                                  "params": {"name": "act", "arguments": {"command": "go"}}}})
        assert last["type"] == "mcp" and last["data"]["id"] == 7
        assert last["data"]["result"]["structured_content"]["won"] is True
        assert last["data"]["result"]["structured_content"]["done"] is True
        again = ask(conn, {"type": "reset", "data": {"task_id": ROOMS[0]}})["data"]["observation"]
        assert again["text"] == f"Hello None: you are in {ROOMS[0]}."
        conn.send(json.dumps({"type": "close"}))
        with pytest.raises(ConnectionClosed):
            conn.recv(timeout=30)
    no_sessions(crash)


def test_faults_are_answered_in_openenvs_shapes(crash):
    no_sessions(crash)
    with ws(crash) as conn:
        assert ask(conn, "{nope")["data"]["code"] == "INVALID_JSON"
        assert ask(conn, {"type": "bogus"})["data"] == {"message": "Unknown message type: bogus", "code": "UNKNOWN_TYPE"}
        early = ask(conn, {"type": "step", "data": {"action": "go"}})["data"]
        assert early["code"] == "EXECUTION_ERROR" and "reset" in early["message"]
        bad_split = ask(conn, {"type": "reset", "data": {"split": "nope"}})["data"]
        assert bad_split["code"] == "EXECUTION_ERROR" and "unknown split 'nope'" in bad_split["message"]
        ask(conn, {"type": "reset", "data": {"seed": 1}})
        for data in ({"action": 5}, {"move": "go"}, None):
            bad = ask(conn, {"type": "step", "data": data})["data"]
            assert bad["code"] == "VALIDATION_ERROR" and bad["message"] == "Invalid message" and bad["errors"], bad
        crashed = ask(conn, {"type": "step", "data": {"action": "crash"}})["data"]
        assert crashed["code"] == "EXECUTION_ERROR" and "asked to crash" in crashed["message"]
        assert "reset" in ask(conn, {"type": "step", "data": {"action": "go"}})["data"]["message"]  # the env was replaced
        assert ask(conn, {"type": "reset", "data": {"seed": 2}})["type"] == "observation"  # the session lives on

        with ws(crash) as second:
            assert ask(second, {"type": "state"})["type"] == "state"
            with ws(crash) as third:  # accepted, told, closed: as OpenEnv's server does it
                refused = json.loads(third.recv(timeout=30))["data"]
                assert refused == {"message": "Server at capacity: 2/2 sessions active. Cannot accept new connections.",
                                   "code": "CAPACITY_REACHED", "active_sessions": 2, "max_sessions": 2}
                with pytest.raises(ConnectionClosed):
                    third.recv(timeout=30)
            with crash.client() as c:
                full = rpc(c, "openenv/session/create")["error"]
                assert full["code"] == -32000 and full["data"] == {"active_sessions": 2, "max_sessions": 2}
    no_sessions(crash)

    with pytest.raises(InvalidStatus) as refused:
        ws(crash, token=None)
    assert refused.value.response.status_code == 403
    with crash.client(token="wrong") as c:
        assert c.get("/health").status_code == 401 and c.post("/mcp", json={}).status_code == 401
    with crash.client() as c:
        assert c.post("/mcp", content=b"{garbage").json()["error"]["code"] == -32700
        assert c.post("/mcp", json={"method": "tools/list"}).json()["error"]["code"] == -32600
        assert rpc(c, "initialize")["error"]["code"] == -32601
        assert rpc(c, "tools/call", name="act", arguments={"command": "go"})["error"]["code"] == -32602
        assert rpc(c, "openenv/session/close", session_id="nope")["error"]["code"] == -32602
        assert rpc(c, "tools/list")["result"]["tools"][0]["inputSchema"]["required"] == ["command"]
    assert TOKEN not in crash.out() + crash.err()


def test_a_client_gone_in_the_middle_of_a_step_frees_its_session_at_once(crash):
    """A client that hangs up while its env steps (`hang` sleeps a minute) loses its session and the env's
    worker at once, not when the step ends."""
    with crash.client() as c:
        before = no_sessions(crash)["counters"]
        with ws(crash) as conn:
            ask(conn, {"type": "reset", "data": {"seed": 1}})
            conn.send(json.dumps({"type": "step", "data": {"action": "hang"}}))
        after = wait_for(lambda: (h := c.get("/health").json())["active_sessions"] == 0 and h, 10,
                         "the gone client's session is closed")["counters"]
        assert after["sessions_closed"] == before["sessions_closed"] + 1
        assert after["sessions_expired"] == before["sessions_expired"]
        wait_for(lambda: not worker_pids(crash.proc.pid), 10, "the gone client's env worker stops")
        with ws(crash) as again:  # serving on
            assert ask(again, {"type": "reset", "data": {"seed": 2}})["type"] == "observation"


def test_requests_addressed_elsewhere_are_refused(crash, tokenless):
    """Without a token, a page that points a name of its own at 127.0.0.1 (DNS rebinding) sends that name as
    the Host: refused on every route and on /ws; a loopback name is answered on any port (an ssh tunnel's).
    With a token any Host and Origin is answered: a page cannot send the token."""
    port = tokenless.url.rsplit(":", 1)[1]
    with tokenless.client() as c:
        for host in (f"rebound.example:{port}", f"localhost.example:{port}", ""):
            refused = c.get("/health", headers={"Host": host})
            assert refused.status_code == 403 and "127.0.0.1, localhost or [::1]" in refused.json()["detail"], host
            assert c.post("/mcp", json={}, headers={"Host": host}).status_code == 403
            assert c.get("/ws", headers={**UPGRADE, "Host": host}).status_code == 403
        for host in (f"localhost:{port}", "127.0.0.1:1", f"[::1]:{port}"):
            assert c.get("/health", headers={"Host": host}).status_code == 200
    with crash.client() as c:
        assert c.get("/health", headers={"Host": "rebound.example", "Origin": "https://elsewhere.example"}
                     ).status_code == 200


def test_without_a_token_pages_of_other_sites_are_refused(tokenless):
    with tokenless.client() as c:
        for origin in ("https://elsewhere.example", "http://127.0.0.1.elsewhere.example", "null"):
            refused = c.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "openenv/session/create"},
                             headers={"Origin": origin})
            assert refused.status_code == 403 and "another site" in refused.json()["detail"], origin
            assert c.get("/ws", headers={**UPGRADE, "Origin": origin}).status_code == 403
        with pytest.raises(InvalidStatus) as ws_refused:
            connect(tokenless.url.replace("http://", "ws://", 1) + "/ws", origin="https://elsewhere.example",
                    open_timeout=30)
        assert ws_refused.value.response.status_code == 403
        for origin in ("http://localhost:3000", "http://127.0.0.1:8888", "https://[::1]"):
            assert c.get("/health", headers={"Origin": origin}).status_code == 200
        assert c.get("/health").json()["counters"]["sessions_created"] == 0


def test_openenvs_own_validator_passes(tokenless):
    """`openenv validate --url`'s checks: the routes, /openapi.json (its version, and the mode its routes
    make) and /mcp. The function its command runs is called as it calls it (the command line imports all of
    OpenEnv's commands first: seconds more)."""
    code = ("import json, sys; from openenv.cli._validation import validate_running_environment as v; "
            "print(json.dumps(v(sys.argv[1], timeout_s=30.0)))")
    out = subprocess.run([openenv_python(), "-c", code, tokenless.url], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["passed"] is True, report["summary"]
    assert report["mode"] == "simulation" and report["standard_profile"] == "openenv-http/1.x"


def test_options_that_cannot_apply_are_usage_errors(monkeypatch, capsys):
    import agent_sft.serve as serve_mod
    from agent_sft.cli import main

    monkeypatch.setattr(serve_mod, "serve", lambda *a, **k: pytest.fail("served"))
    for args, says in ((["--actions", "tools"], "--actions tools: only with --protocol openenv"),
                       (["--protocol", "agent-sft", "--actions", "text"], "--actions text: only with --protocol openenv"),
                       (["--protocol", "openenv", "--exit-after-steps", "3"], "--exit-after-steps: only with --protocol agent-sft")):
        assert main(["serve-env", "crash-test", *args]) == 2, args
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err


def test_idle_sessions_are_closed(tokenless):
    before = no_sessions(tokenless)["counters"]
    with tokenless.client() as c, ws(tokenless) as conn:
        assert c.get("/schema").json()["action"]["title"] == "CallToolAction"
        sid = rpc(c, "openenv/session/create")["result"]["session_id"]
        ask(conn, {"type": "reset", "data": {"seed": 1}})
        after = no_sessions(tokenless)["counters"]  # both closed while unused, the socket still open
        assert after["sessions_expired"] - before["sessions_expired"] == 2
        assert after["sessions_closed"] == before["sessions_closed"]
        assert ask(conn, {"type": "step", "data": {"action": "go"}})["type"] == "error"
        assert rpc(c, "tools/call", name="act", arguments={"command": "go"}, session_id=sid)["error"]
        assert c.get("/health").json()["counters"]["steps"] == after["steps"]  # neither was played


# --- the real engines, played by OpenEnv's own clients ------------------------------------------------


def in_process(name: str, options: dict, expert: str, seed: int):
    """The env's expert episode in process on its first task: the task, its index in its split, the actions
    and each (obs, reward, terminated, truncated, info)."""
    env_spec = spec(name)
    kwargs = env_spec.kwargs(env_options(env_spec, options), seed=0, max_steps=50, task_types=[], expert=expert)
    env, _ = build_env(env_spec.entry_point, kwargs)
    try:
        tasks = env.tasks()
        task = tasks[0]
        obs, info = env.reset(seed=seed, options={"task_id": task.task_id})
        steps, actions = [(obs, None, False, False, info)], []
        while not (steps[-1][2] or steps[-1][3]) and len(actions) < 50:
            actions.append(info["expert_plan"][0])
            obs, reward, terminated, truncated, info = env.step(actions[-1])
            steps.append((obs, reward, terminated, truncated, info))
    finally:
        env.close()
    index = [t.task_id for t in tasks if t.game_split == task.game_split].index(task.task_id)
    return task, index, actions, steps


def drive(episodes: list[dict]) -> list[dict]:
    job = json.dumps({"token": TOKEN, "episodes": episodes})
    out = subprocess.run([openenv_python(), os.path.join(TESTS, "openenv_drive.py")], input=job, capture_output=True,
                         text=True, timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def same_episode(played: list[dict], steps: list[tuple], skip: set[str]) -> None:
    """The served episode's observations, rewards, done and success are those played in process (the info
    as metadata, the expert's keys aside: the served env has no expert)."""
    assert len(played) == len(steps)
    for got, (obs, reward, terminated, truncated, info) in zip(played, steps):
        want = {k: v for k, v in jsonable(info).items() if k not in skip}
        shown = got["observation"]
        if "tool_name" in shown:  # MCPToolClient's CallToolObservation: the step's fields are in its result
            assert shown["error"] is None
            shown = {**shown["result"]["structured_content"], "text": shown["result"]["data"],
                     "metadata": shown["metadata"]}
        assert shown["text"] == obs
        assert (got["reward"], got["done"]) == (reward, terminated or truncated)
        assert shown["won"] is bool(info["won"])
        assert {k: v for k, v in shown["metadata"].items() if k not in skip} == want


@pytest.mark.alfworld
@pytest.mark.envs
def test_alfworld_and_textworld_played_by_openenvs_clients_are_the_envs_in_process(tmp_path, monkeypatch):
    """Each env's first task, played by its expert in process, then on the served env by `GenericEnvClient`
    (the task chosen by the Task API's split and index) and by `MCPToolClient` (by task id, as tool calls)."""
    pytest.importorskip("alfworld")
    monkeypatch.setenv("AGENT_SFT_CACHE", str(tmp_path / "cache"))  # the servers' and this process's
    envs = {"alfworld": (["data_path=builtin"], "planner"), "textworld": (["task_types=tw-simple"], "walkthrough")}
    servers: dict[str, Server] = {}
    failed: dict[str, str] = {}

    def start(name: str, options: list[str]) -> None:
        try:
            servers[name] = Server(tmp_path / name, name, *options, "--protocol", "openenv", token=TOKEN)
        except BaseException as e:  # noqa: BLE001 - reported by the test, the server's stderr in it
            failed[name] = str(e)

    starting = [threading.Thread(target=start, args=(n, o)) for n, (o, _) in envs.items()]
    for name in envs:
        (tmp_path / name).mkdir()
    try:
        for t in starting:
            t.start()
        played = {n: in_process(n, dict(x.split("=", 1) for x in o), expert, seed=3) for n, (o, expert) in envs.items()}
        for t in starting:
            t.join(120)
        for name in set(envs) - set(servers) - set(failed):
            failed[name] = f"not serving after 120 s; its stderr: {(tmp_path / name / 'server.err').read_text()}"
        assert not failed, f"a server did not start: {failed}"
        with servers["alfworld"].client() as c:
            meta = c.get("/metadata").json()
        assert meta["name"] == "alfworld" and f"; alfworld {version('alfworld')}" in meta["version"], meta
        episodes = []
        for name, (task, index, actions, _) in played.items():
            episodes += [{"url": servers[name].url, "client": "generic", "actions": actions,
                          "reset": {"seed": 3, "split": task.game_split, "index": index}},
                         {"url": servers[name].url, "client": "mcp", "actions": actions,
                          "reset": {"seed": 3, "task_id": task.task_id}}]
        transcripts = drive(episodes)
    finally:
        for s in servers.values():
            s.stop()
    skip = {"expert_plan", "expert", "pid"}
    for (name, (task, _, actions, steps)), generic, mcp in zip(played.items(), transcripts[::2], transcripts[1::2]):
        assert steps[-1][-1]["won"] is True, name
        same_episode(generic["steps"], steps, skip)
        assert generic["state"]["step_count"] == len(actions) and generic["state"]["task_id"] == task.task_id
        half = len(actions) // 2
        assert [t["name"] for t in mcp["tools"]] == ["act"]
        assert mcp["call_tool_texts"] == [obs for obs, *_ in steps[1:half + 1]]
        same_episode(mcp["steps"], [steps[0], *steps[half + 1:]], skip)
        assert mcp["state"]["step_count"] == len(actions)


# --- TRL's environment_factory on a served env -------------------------------------------------------


class ServedEnv:
    """A TRL `environment_factory` env playing an env served with `--protocol openenv` over /ws: `reset`
    starts an episode of the row's task, `act` is the model's one tool, `get_reward` the episode's return."""

    url = ""
    token: str | None = None
    resets = 0

    def __init__(self):
        self.ws, self.reward, self.done = None, 0.0, False

    def _ask(self, message: dict) -> dict:
        self.ws.send(json.dumps(message))
        reply = json.loads(self.ws.recv(timeout=60))
        if reply["type"] == "error":
            raise RuntimeError(reply["data"]["message"])
        return reply["data"]

    def reset(self, **row) -> str:
        if self.ws is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
            self.ws = connect(self.url.replace("http://", "ws://", 1) + "/ws", additional_headers=headers)
        type(self).resets += 1
        self.reward, self.done = 0.0, False
        return self._ask({"type": "reset", "data": {"seed": row.get("seed"), "task_id": row.get("task_id")}})["observation"]["text"]

    def act(self, command: str) -> str:
        """Play one command in the game.

        Args:
            command: The command, as the game spells it (e.g. "go east").

        Returns:
            What the game shows next.
        """
        if self.done:
            raise ValueError("the episode is over")
        data = self._ask({"type": "step", "data": {"action": command}})
        self.reward += data["reward"] or 0.0
        self.done = data["done"]
        return data["observation"]["text"]

    def get_reward(self) -> float:
        return self.reward


@pytest.mark.extended
@pytest.mark.envs
@pytest.mark.hf
def test_one_grpo_step_of_trls_environment_factory_on_a_served_env(tmp_path, monkeypatch, tiny_model_dir):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl.chat_template_utils import qwen3_chat_template

    monkeypatch.setenv("AGENT_SFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    s = Server(tmp_path, "textworld", "task_types=tw-simple", "--protocol", "openenv", token=TOKEN)
    try:
        with s.client() as c:
            task = c.post("/textworld/task", json={"split": "builtin", "index": 0}).json()["task"]["task_id"]
        served = type("ServedTextWorld", (ServedEnv,), {"url": s.url, "token": TOKEN, "resets": 0})
        rows = Dataset.from_dict({"prompt": [[{"role": "user", "content": "Play the game with the act tool."}]] * 2,
                                  "task_id": [task] * 2, "seed": [0, 1]})
        tok = AutoTokenizer.from_pretrained(tiny_model_dir)
        tok.chat_template, tok.padding_side = qwen3_chat_template, "left"
        trainer = trl.GRPOTrainer(
            model=tiny_model_dir, processing_class=tok, train_dataset=rows, environment_factory=served,
            args=trl.GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=2,
                                num_generations=2, max_completion_length=24, use_cpu=True, report_to="none",
                                max_tool_calling_iterations=2, logging_steps=1, save_strategy="no"))
        assert [t.__name__ for t in trainer.tools] == ["act"]
        out = trainer.train()
    finally:
        s.stop()
    assert out.global_step == 1 and served.resets == 2
    assert any(k.startswith("train_") or "reward" in k for k in out.metrics), out.metrics
