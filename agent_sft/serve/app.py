"""The env server's HTTP app (FastAPI): the routes of `agent_sft.envs.http.protocol` over a `SessionManager`.

Every reply is JSON; every error is `{"error", "kind"}` with the protocol's kinds and status codes
(`agent_sft.serve.sessions.STATUS`), an env's traceback under `details` when it failed. Env calls run in
worker threads (a session's env in its own process), so one slow session never holds up another, and
`/health` answers while every session is busy.

(No `from __future__ import annotations` here: FastAPI reads the routes' annotations, whose classes are
imported inside `make_app`.)
"""

import functools
import hmac
import json
import os
from collections.abc import Callable
from typing import Any

from agent_sft.envs.http.protocol import dumps
from agent_sft.serve.sessions import ServeError, SessionManager

EXIT_CODE = 3  # the status of a server stopped by its `exit_after_steps` hook


def make_app(manager: SessionManager, token: str | None = None, *, exit: Callable[[int], Any] = os._exit) -> Any:
    """The FastAPI app serving `manager`'s env.

    Args:
        manager: the sessions (and the env's tasks and info).
        token: when set, every request needs `Authorization: Bearer <token>` (else 401 `unauthorized`).
        exit: called with `EXIT_CODE` right after the answer of the step the manager flags
            (`exit_after_steps`, a test hook); `os._exit` stops the process at once.
    """
    import anyio
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from starlette.background import BackgroundTask
    from starlette.exceptions import HTTPException

    limiter = anyio.CapacityLimiter(2 * manager.max_sessions + 8)
    expected = f"Bearer {token}".encode() if token else None

    def reply(value: Any, status: int = 200, background: Any = None) -> Response:
        return Response(dumps(value), status_code=status, media_type="application/json", background=background)

    def error(err: ServeError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if err.kind == "unauthorized" else None
        return Response(dumps(err.body()), status_code=err.status, media_type="application/json", headers=headers)

    async def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise ServeError("unauthorized", "this server needs 'Authorization: Bearer <token>' with its token")

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ServeError("bad_request", f"the request body is not JSON: {e}") from None

    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)

    app = FastAPI(title=f"agent-sft env server: {manager.spec.name}", docs_url=None, redoc_url=None,
                  openapi_url=None, dependencies=[Depends(authorize)])

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, err: ServeError) -> Response:
        return error(err)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, err: HTTPException) -> Response:
        return reply({"error": f"{request.method} {request.url.path}: {err.detail}", "kind": "bad_request"},
                     err.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> Response:
        return error(ServeError("bad_request", str(err)))

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> Response:
        return error(ServeError("env_error", f"the server failed: {type(err).__name__}: {err}"))

    info = dumps(manager.info())
    tasks = dumps({"tasks": manager.tasks})

    @app.get("/health")
    async def health() -> Response:
        return reply(manager.health())

    @app.get("/info")
    async def get_info() -> Response:
        return Response(info, media_type="application/json")

    @app.get("/tasks")
    async def get_tasks() -> Response:
        return Response(tasks, media_type="application/json")

    @app.post("/sessions")
    async def create(request: Request) -> Response:
        body = await body_of(request)
        return reply(await in_thread(manager.create, body))

    @app.post("/renew")
    async def renew(request: Request) -> Response:
        # Inline, not in a worker thread: it only takes the manager's short lock, so it is answered even
        # while every worker thread is busy with a slow env.
        return reply(manager.renew(await body_of(request)))

    @app.post("/sessions/{session_id}/reset")
    async def reset(session_id: str, request: Request) -> Response:
        body = await body_of(request)
        return reply(await in_thread(manager.reset, session_id, body))

    @app.post("/sessions/{session_id}/step")
    async def step(session_id: str, request: Request) -> Response:
        body = await body_of(request)
        result = await in_thread(manager.step, session_id, body)
        return reply(result.body, background=BackgroundTask(exit, EXIT_CODE) if result.exit_after else None)

    @app.delete("/sessions/{session_id}")
    async def close(session_id: str) -> Response:
        await in_thread(manager.close_session, session_id)
        return reply({"closed": True})

    return app
