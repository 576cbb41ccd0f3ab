"""OpenEnv sessions on agent-sft's env server (`serve-env NAME --protocol openenv`): what a reset may set
(the step budget; a key the server cannot honour is refused), the tools listed before and after a reset,
an attached session's life (kept while attached, its close deferred), and the tool-call observation
/schema describes. On `crash-test` (tests/crash_env.py) and TextArena's Tower of Hanoi, over a raw
WebSocket and HTTP.
"""

from __future__ import annotations

import json
import threading
from importlib.util import find_spec

import crash_env  # noqa: F401 - registers crash-test here too
import pytest
from serve_helpers import Server, wait_for
from websockets.sync.client import connect

ROOM = "crash-test/room-0"


@pytest.fixture(scope="module")
def hanoi(tmp_path_factory):
    """TextArena's Tower of Hanoi served with --actions tools, started in the background (its engine takes
    seconds to load) while the crash-test cases run: `hanoi["server"]` once `hanoi["ready"]` is set."""
    started: dict = {"ready": threading.Event()}

    def start() -> None:
        try:
            started["server"] = Server(tmp_path_factory.mktemp("openenv-hanoi"), "textarena", "games=TowerOfHanoi-v0",
                                       "--protocol", "openenv", "--actions", "tools")
        except BaseException as e:  # noqa: BLE001 - reported by the test that needs it
            started["error"] = f"{type(e).__name__}: {e}"
        finally:
            started["ready"].set()

    if find_spec("textarena") is not None:
        threading.Thread(target=start, daemon=True).start()
    else:
        started["ready"].set()
    yield started
    started["ready"].wait(180)
    if "server" in started:
        started["server"].stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory, hanoi):
    s = Server(tmp_path_factory.mktemp("openenv-sessions"), "crash-test", "--protocol", "openenv", "--actions",
               "tools", "--idle-timeout-s", "3", "--max-steps", "4")
    yield s
    s.stop()


def ws(server: Server, query: str = ""):
    return connect(server.url.replace("http://", "ws://", 1) + "/ws" + query, open_timeout=30)


def ask(conn, message: dict) -> dict:
    conn.send(json.dumps(message))
    return json.loads(conn.recv(timeout=60))


def rpc(client, method: str, **params) -> dict:
    return client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).json()


def truncated_at(conn, reset: dict) -> int:
    """The step (each an action that is not the winning one) at which the episode reset with `reset` ends."""
    assert ask(conn, {"type": "reset", "data": reset})["type"] == "observation"
    for n in range(1, 60):
        got = ask(conn, {"type": "step", "data": {"action": "wait"}})["data"]
        if got["done"]:
            assert got["observation"]["truncated"] is True
            return n
    raise AssertionError("never truncated")


def test_a_reset_sets_the_step_budget_and_refuses_what_it_cannot_honour(served):
    with ws(served) as conn:
        assert truncated_at(conn, {"seed": 1, "task_id": ROOM}) == 4  # the server's --max-steps
        assert truncated_at(conn, {"seed": 1, "task_id": ROOM, "max_steps": 2, "env_seed": 3}) == 2
        for data, says in (({"colour": "red"}, "cannot honour 'colour'"),
                           ({"task_types": ["room"]}, "does not filter its tasks by type"),
                           ({"max_steps": 0}, "max_steps: must be at least 1")):
            refused = ask(conn, {"type": "reset", "data": data})["data"]
            assert refused["code"] == "EXECUTION_ERROR" and says in refused["message"], refused
        assert truncated_at(conn, {"seed": 2}) == 4  # a reset naming none gets the default again


def test_schema_describes_what_tool_calls_and_tool_lists_return(served):
    with served.client() as c:
        schema = c.get("/schema").json()
    assert schema["action"]["title"] == "CallToolAction"
    assert schema["observation"]["title"] == "CallToolObservation"
    assert {"tool_name", "result", "error", "tools", "text", "done", "reward"} <= set(schema["observation"]["properties"])
    assert schema["reset_observation"]["title"] == "TextObservation"


def test_an_attached_session_lives_while_attached_and_closes_when_it_detaches(served):
    with served.client() as c:
        sid = rpc(c, "openenv/session/create")["result"]["session_id"]
        with ws(served, f"?session_id={sid}") as conn:
            assert ask(conn, {"type": "reset", "data": {"seed": 1}})["type"] == "observation"
            idle = rpc(c, "openenv/session/create")["result"]["session_id"]  # created after the last use of sid
            wait_for(lambda: rpc(c, "tools/list", session_id=idle).get("error", {}).get("code") == -32602, 30,
                     "an unattached session unused past the idle timeout is unknown")
            assert ask(conn, {"type": "step", "data": {"action": "go"}})["type"] == "observation"  # sid lives on
            assert rpc(c, "tools/list", session_id=sid)["result"]["tools"]
            assert rpc(c, "openenv/session/close", session_id=sid)["result"] == {
                "session_id": sid, "closed": False, "closing": True}
            assert ask(conn, {"type": "step", "data": {"action": "go"}})["type"] == "observation"
        wait_for(lambda: rpc(c, "tools/list", session_id=sid).get("error", {}).get("code") == -32602, 30,
                 "the session whose close was asked for closes when its WebSocket detaches")
        assert rpc(c, "openenv/session/close", session_id=sid)["error"]["code"] == -32602
        with ws(served, f"?session_id={idle}") as gone:
            assert json.loads(gone.recv(timeout=30))["data"]["code"] == "SESSION_ERROR"


def test_a_session_a_websocket_opened_is_its_own(served):
    """Only a session opened over HTTP (`openenv/session/create`) may be attached to, as OpenEnv's rule is."""
    with ws(served) as owner:
        mcp = {"jsonrpc": "2.0", "id": 1, "method": "openenv/session/create", "params": {}}
        sid = ask(owner, {"type": "mcp", "data": mcp})["data"]["result"]["session_id"]
        with ws(served, f"?session_id={sid}") as intruder:
            refused = json.loads(intruder.recv(timeout=30))["data"]
        assert refused["code"] == "SESSION_ERROR" and f"Unknown session_id: {sid}" in refused["message"], refused
        assert ask(owner, {"type": "reset", "data": {"seed": 1}})["type"] == "observation"


@pytest.mark.envs
def test_textarena_tools_listed_before_a_reset_hold_after_it(hanoi):
    """Tower of Hanoi's tool is `move`, known only once a reset says the game: `act(command)` is listed and
    taken throughout, so a client that listed the tools before the reset (verifiers, MCPToolClient) plays."""
    pytest.importorskip("textarena")
    assert hanoi["ready"].wait(180) and "server" in hanoi, f"the textarena server did not start: {hanoi.get('error')}"
    s = hanoi["server"]
    with ws(s) as conn, s.client() as c:
        def names() -> list[str]:
            listed = ask(conn, {"type": "step", "data": {"type": "list_tools"}})["data"]["observation"]["tools"]
            return [t["name"] for t in listed]

        assert names() == ["act"] and [t["name"] for t in rpc(c, "tools/list")["result"]["tools"]] == ["act"]
        assert ask(conn, {"type": "reset", "data": {"seed": 1}})["type"] == "observation"
        assert names() == ["move", "act"]
        for name, arguments in (("act", {"command": "[A C]"}), ("move", {"source": "A", "target": "B"})):
            got = ask(conn, {"type": "step", "data": {"type": "call_tool", "tool_name": name,
                                                      "arguments": arguments}})["data"]["observation"]
            assert got["error"] is None and got["result"]["data"], got
        state = ask(conn, {"type": "state"})["data"]
        assert state["step_count"] == 2
