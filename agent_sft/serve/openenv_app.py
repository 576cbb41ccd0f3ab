"""The env server's OpenEnv app (`agent-sft serve-env NAME --protocol openenv`): OpenEnv 0.10's routes
over agent-sft's sessions, so OpenEnv's clients (`GenericEnvClient`, `MCPToolClient`), TRL wrappers and
verifiers' `OpenEnvEnv` play any registered env.

    GET  /health, /metadata, /schema, /state, /list_environments
    WS   /ws                      reset (`seed`, `episode_id`, `task_id` or `split` + `index`), step (a
                                  `TextAction`, a `call_tool` or `list_tools`), state, close, mcp
    POST /reset, /step            stateless, as OpenEnv has them: each on a fresh env, closed after
    GET  /{env}/splits            the Task API, from the env's `tasks()` (their `game_split`s)
    POST /{env}/tasks, /num_tasks, /task, /task_range
    POST /mcp                     JSON-RPC: tools/list, tools/call (a step of the session's episode),
                                  openenv/session/create, openenv/session/close

Messages and errors keep OpenEnv's shapes and codes (`openenv_wire`). The safety is the agent-sft
protocol's: with a token every request and connection needs `Authorization: Bearer <token>` (HTTP 401,
or the WebSocket refused); `--max-sessions` sessions at once (a /ws connection past it gets
CAPACITY_REACHED and is closed, as OpenEnv's server does); each session's env in its own worker, closed
when unused past the idle timeout.

(No `from __future__ import annotations` here: FastAPI reads the routes' annotations.)
"""

import asyncio
import functools
import hmac
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from agent_sft.envs.http.protocol import jsonable
from agent_sft.serve import openenv_wire as wire
from agent_sft.serve.openenv_sessions import CapacityError, OpenEnvSessions
from agent_sft.serve.sessions import ServeError, SessionManager

OPENENV_HTTP_VERSION = "1.0.0"  # the version of OpenEnv's HTTP API these routes are, as its own server says it


class _SplitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: str


class _TaskRequest(_SplitRequest):
    index: int


class _RangeRequest(_SplitRequest):
    start: int | None = None
    stop: int | None = None


def metadata(manager: SessionManager, expert: str | None = None) -> dict[str, Any]:
    """`GET /metadata`: the env's registered name, and as its version agent-sft's and its engine's; under
    `agent_sft`, what agent-sft's own protocol describes (`/info`: the options that decide its episodes,
    package versions, the info keys kept once per episode) and the expert served (`expert`, or none), so
    agent-sft's `openenv` env plays it as the env itself."""
    info = manager.info()
    packages = info["packages"]
    engines = "".join(f"; {k} {v}" for k, v in sorted(packages.items()) if k not in ("python", "agent_sft"))
    served = {"env": manager.spec.name, "fingerprint": info["fingerprint"], "packages": packages,
              "episode_keys": info["episode_keys"], "experts": [expert] if expert else [],
              "default_expert": expert, "has_expert": expert is not None}
    return {"name": manager.spec.name, "description": info["description"] or info["title"], "readme_content": None,
            "version": f"agent-sft {packages.get('agent_sft', '?')}{engines}", "author": "agent-sft",
            "documentation_url": None, "agent_sft": served}


def make_openenv_app(manager: SessionManager, token: str | None = None, actions: str = "text",
                     expert: str | None = None) -> Any:
    """The FastAPI app serving `manager`'s env through OpenEnv's protocol; /schema shows the text action,
    or the tool call when `actions == "tools"` (both are played either way). With `expert`, every
    session's env plans with that expert (its info carries `expert_plan`)."""
    import anyio
    from fastapi import Depends, FastAPI, WebSocket, WebSocketException
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException
    from starlette.requests import HTTPConnection, Request

    sessions = OpenEnvSessions(manager, expert)
    limiter = anyio.CapacityLimiter(2 * manager.max_sessions + 8)
    expected = f"Bearer {token}".encode() if token else None
    name = manager.spec.name
    about, schemas = metadata(manager, expert), wire.schema(actions)

    async def authorize(conn: HTTPConnection) -> None:
        if expected is None or hmac.compare_digest(conn.headers.get("authorization", "").encode(), expected):
            return
        if conn.scope["type"] == "websocket":
            raise WebSocketException(code=1008, reason="this server needs 'Authorization: Bearer <token>'")
        raise HTTPException(401, "this server needs 'Authorization: Bearer <token>' with its token",
                            headers={"WWW-Authenticate": "Bearer"})

    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)

    def detail(status: int, message: Any) -> JSONResponse:
        return JSONResponse({"detail": jsonable(message)}, status_code=status)

    # /openapi.json lists the routes, as OpenEnv's own server does: `openenv validate` reads the protocol's
    # version and the mode (these stateless /reset, /step and /state: simulation) from it.
    app = FastAPI(title=f"agent-sft env server (OpenEnv): {name}", version=OPENENV_HTTP_VERSION, docs_url=None,
                  redoc_url=None, dependencies=[Depends(authorize)])

    @app.get("/health")
    async def health() -> Any:
        counts = manager.health()
        return {"status": "healthy", "active_sessions": counts["sessions"], "max_sessions": manager.max_sessions,
                "counters": counts["counters"]}

    @app.get("/metadata")
    async def get_metadata() -> Any:
        return about

    @app.get("/schema")
    async def get_schema() -> Any:
        return schemas

    @app.get("/list_environments")
    async def list_environments() -> Any:
        return [name]

    @app.get("/state")
    async def stateless_state() -> Any:
        return wire.EnvState().model_dump()

    @app.post("/reset")
    async def stateless_reset(request: Request) -> Any:
        body = await _json(request)
        if not isinstance(body, dict):
            return detail(422, [{"type": "dict_type", "loc": ["body"], "msg": "Input should be an object"}])
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            return detail(422, [{"type": "greater_than_equal", "loc": ["body", "seed"],
                                 "msg": "Input should be an integer greater than or equal to 0", "input": seed}])
        try:
            sid = await in_thread(sessions.create)
        except ServeError as err:
            return detail(503 if err.kind == "busy" else 500, err.message)
        try:
            out = await in_thread(sessions.reset, sid, body)
        except (ServeError, ValueError) as err:
            return detail(500, str(err))
        finally:
            await in_thread(sessions.close, sid)
        out.pop("metadata", None)
        return out

    @app.post("/step")
    async def stateless_step(request: Request) -> Any:
        body = await _json(request)
        if not isinstance(body, dict) or "action" not in body:
            return detail(422, [{"type": "missing", "loc": ["body", "action"], "msg": "Field required"}])
        try:
            wire.action_of(body["action"])
        except wire.ValidationError as e:
            return detail(422, [{**err, "loc": ["body", "action", *err["loc"]]}
                                for err in e.errors(include_url=False, include_context=False)])
        return detail(500, "a stateless POST /step plays a fresh env, which has no episode to step: play "
                           "episodes over the WebSocket /ws (reset, then step)")

    # --- the Task API -------------------------------------------------------------------------------

    def check_env(env_name: str) -> None:
        if env_name.lower() != name.lower():
            raise HTTPException(404, f"unknown environment {env_name!r}")

    def split_tasks(split: str) -> list[dict[str, Any]]:
        try:
            return wire.split_of(sessions.tasks, split)
        except KeyError as e:
            raise HTTPException(400, e.args[0]) from None

    @app.get("/{env_name}/splits")
    async def splits(env_name: str) -> Any:
        check_env(env_name)
        return wire.splits(sessions.tasks)

    @app.post("/{env_name}/tasks")
    async def tasks(env_name: str, request: _SplitRequest) -> Any:
        check_env(env_name)
        return {"tasks": split_tasks(request.split), "env_name": name}

    @app.post("/{env_name}/num_tasks")
    async def num_tasks(env_name: str, request: _SplitRequest) -> Any:
        check_env(env_name)
        return {"num_tasks": len(split_tasks(request.split))}

    @app.post("/{env_name}/task")
    async def task(env_name: str, request: _TaskRequest) -> Any:
        check_env(env_name)
        found = split_tasks(request.split)
        if not 0 <= request.index < len(found):
            raise HTTPException(400, "Invalid task index")
        return {"task": found[request.index]}

    @app.post("/{env_name}/task_range")
    async def task_range(env_name: str, request: _RangeRequest) -> Any:
        check_env(env_name)
        return {"tasks": split_tasks(request.split)[request.start:request.stop]}

    # --- MCP (JSON-RPC) -----------------------------------------------------------------------------

    async def rpc(body: Any, ws_session: str | None = None) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("jsonrpc") != "2.0" or not isinstance(body.get("method"), str):
            return wire.rpc_error(wire.INVALID_REQUEST, "Invalid request: expected a JSON-RPC 2.0 request "
                                                        "with a method")
        rid, method, params = body.get("id"), body["method"], body.get("params", {})
        if not isinstance(params, dict):
            return wire.rpc_error(wire.INVALID_PARAMS, "Params must be an object", rid)
        try:
            if method == "openenv/session/create":
                if ws_session is not None:
                    return wire.rpc_result({"session_id": ws_session}, rid)
                try:
                    created = await in_thread(functools.partial(sessions.create, attachable=True))
                    return wire.rpc_result({"session_id": created}, rid)
                except CapacityError as e:
                    return wire.rpc_error(wire.SERVER_ERROR, e.message, rid,
                                          {"active_sessions": e.active, "max_sessions": e.most})
            if method == "openenv/session/close":
                target = params.get("session_id")
                if not target:
                    return wire.rpc_error(wire.INVALID_PARAMS, "Invalid params - 'session_id' is required", rid)
                if target == ws_session:
                    return wire.rpc_error(wire.INVALID_REQUEST, "Cannot close active WebSocket-managed session "
                                                                "via MCP method", rid)
                if not sessions.known(target):
                    return wire.rpc_error(wire.INVALID_PARAMS, f"Unknown session_id: {target}", rid)
                return wire.rpc_result(await in_thread(sessions.close_request, target), rid)
            sid = ws_session or params.get("session_id")
            if sid is not None and not sessions.known(sid):
                return wire.rpc_error(wire.INVALID_PARAMS, f"Unknown session_id: {sid}", rid)
            if method == "tools/list":
                return wire.rpc_result({"tools": wire.tools_list(sessions.toolset(sid), camel=True)}, rid)
            if method == "tools/call":
                if not params.get("name"):
                    return wire.rpc_error(wire.INVALID_PARAMS, "Missing 'name' in params", rid)
                if sid is None:
                    return wire.rpc_error(wire.INVALID_PARAMS, "tools/call plays a step of an episode: pass the "
                                          "session_id of openenv/session/create, reset over /ws?session_id=", rid)
                got = (await in_thread(sessions.call_tool, sid, params["name"], params.get("arguments") or {}))
                obs = got["observation"]
                if obs["error"]:
                    return wire.rpc_error(wire.INTERNAL_ERROR, obs["error"]["message"], rid)
                return wire.rpc_result(obs["result"], rid)
            return wire.rpc_error(wire.METHOD_NOT_FOUND, f"Method not found: {method}", rid)
        except Exception as e:  # noqa: BLE001 - an env's failure is the call's answer
            return wire.rpc_error(wire.INTERNAL_ERROR, str(e), rid)

    @app.post("/mcp")
    async def mcp(request: Request) -> Any:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return wire.rpc_error(wire.PARSE_ERROR, "Parse error")
        return await rpc(body)

    # --- the WebSocket ------------------------------------------------------------------------------

    async def answer(sid: str, raw: str) -> dict[str, Any] | None:
        """The reply to one message; None for `close`."""
        try:
            msg = json.loads(raw)
        except ValueError as e:
            return wire.ws_error(f"Invalid JSON: {e}", "INVALID_JSON")
        kind = msg.get("type", "") if isinstance(msg, dict) else ""
        try:
            if kind == "reset":
                data = msg.get("data") or {}
                if not isinstance(data, dict):
                    return _invalid([{"type": "dict_type", "loc": ["data"], "msg": "Input should be an object"}])
                return {"type": "observation", "data": await in_thread(sessions.reset, sid, data)}
            if kind == "step":
                data = msg.get("data")
                if not isinstance(data, dict):
                    return _invalid([{"type": "missing", "loc": ["data"], "msg": "Field required"}])
                action = wire.action_of(data)
                if action == "list_tools":
                    tools = wire.tools_list(sessions.toolset(sid))
                    return {"type": "observation", "data": {"observation": {"tools": tools, "metadata": {}},
                                                            "reward": None, "done": False}}
                if isinstance(action, wire.CallToolAction):
                    got = await in_thread(sessions.call_tool, sid, action.tool_name, action.arguments)
                else:
                    got = await in_thread(sessions.step, sid, action.action)
                return {"type": "observation", "data": got}
            if kind == "state":
                return {"type": "state", "data": await in_thread(sessions.state, sid)}
            if kind == "close":
                return None
            if kind == "mcp":
                return {"type": "mcp", "data": await rpc(msg.get("data"), sid)}
            return wire.ws_error(f"Unknown message type: {kind}", "UNKNOWN_TYPE")
        except wire.ValidationError as e:
            return _invalid(e.errors(include_url=False, include_context=False))
        except Exception as e:  # noqa: BLE001 - the env's failure is this message's answer; the session lives on
            return wire.ws_error(str(e), "EXECUTION_ERROR")

    async def until_gone(websocket: WebSocket, sid: str, owned: bool) -> None:
        """Answer the connection's messages until the client hangs up or closes. They are read while one is
        answered: a client that hangs up in the middle of a step has its session ended at once, the env's
        worker stopped under the step (a session attached to is left to its HTTP owner)."""
        inbox: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            try:
                while True:
                    message = await websocket.receive()
                    inbox.put_nowait(message)
                    if message["type"] == "websocket.disconnect":
                        return
            finally:  # whatever ended the reading, the connection is over
                inbox.put_nowait({"type": "websocket.disconnect"})

        reader = asyncio.ensure_future(read())
        try:
            while True:
                message = await inbox.get()
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text")
                if raw is None:
                    raw = (message.get("bytes") or b"").decode("utf-8", "replace")
                work = asyncio.ensure_future(answer(sid, raw))
                await asyncio.wait({work, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not work.done():  # gone while the env works
                    if owned:
                        await in_thread(functools.partial(manager.close_session, sid, now=True))
                    await work
                    return
                reply = work.result()
                if reply is None:
                    return
                await websocket.send_text(json.dumps(jsonable(reply)))
        finally:
            reader.cancel()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        from starlette.websockets import WebSocketDisconnect

        await websocket.accept()
        wanted = websocket.query_params.get("session_id")
        sid, owned = None, False
        try:
            try:
                if wanted:
                    sessions.attach(wanted)
                    sid = wanted
                else:
                    sid, owned = await in_thread(sessions.create), True
            except CapacityError as e:
                await websocket.send_text(json.dumps(wire.ws_error(e.message, "CAPACITY_REACHED", active_sessions=e.active,
                                                                   max_sessions=e.most)))
                return
            except KeyError as e:
                await websocket.send_text(json.dumps(wire.ws_error(e.args[0], "SESSION_ERROR")))
                return
            except ServeError as e:
                await websocket.send_text(json.dumps(wire.ws_error(e.message, "FACTORY_ERROR", factory_name=name)))
                return
            await until_gone(websocket, sid, owned)
        except WebSocketDisconnect:
            pass
        finally:
            if owned:
                await in_thread(sessions.close, sid)
            elif sid is not None:
                sessions.detach(sid)
            try:
                await websocket.close()
            except (RuntimeError, WebSocketDisconnect):
                pass

    return app


def _invalid(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return wire.ws_error("Invalid message", "VALIDATION_ERROR", errors=jsonable(errors))


async def _json(request: Any) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
