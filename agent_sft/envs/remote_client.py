"""HTTP calls to env servers, shared by every remote env (`http`, `openenv`): JSON in and out, bounded retries
with backoff for calls safe to repeat, and a server's health check.

A call that may change the env (a step) is sent once: it is repeated only when the connection was never
made (nothing reached the server). Everything else (listing tasks, health, opening a session, a reset,
closing) is retried `retries` times on connection errors, timeouts, 5xx answers and malformed JSON; a
call given `within_s` also ends, retries included, within that many seconds.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any


class ServerError(RuntimeError):
    """An env server answered with an error, or not at all.

    Attributes:
        status: the HTTP status (None when no answer came).
        kind: the protocol's error kind (`unknown_session`, `env_error`, ...) when the server said one.
    """

    def __init__(self, message: str, status: int | None = None, kind: str = ""):
        super().__init__(message)
        self.status = status
        self.kind = kind


def load_httpx():
    try:
        import httpx
    except ImportError as err:
        raise ImportError(f"remote envs need httpx: pip install 'agent-sft[openai]' ({err})") from err
    return httpx


class JsonClient:
    """One server's JSON API over a kept-alive connection.

    Args:
        base_url: the server's root URL.
        timeout_s: seconds a request may take.
        retries: how many times a call safe to repeat is repeated.
        token_env: environment variable holding a bearer token (sent when set).
    """

    def __init__(self, base_url: str, timeout_s: float = 60.0, retries: int = 3, token_env: str | None = None):
        httpx = load_httpx()
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.token_env = token_env
        headers = {}
        token = os.environ.get(token_env) if token_env else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._httpx = httpx
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)

    def call(self, method: str, path: str, body: Any = None, *, idempotent: bool = True,
             params: dict | None = None, retries: int | None = None, within_s: float | None = None) -> Any:
        """The reply's JSON.

        Args:
            idempotent: whether the call is safe to repeat after it may have reached the server.
            retries: this call's retries (default: the client's).
            within_s: when set, the call gives up (raising its last error) once this many seconds have
                passed: each attempt but the last may take half the time left, so a timed-out attempt
                leaves time for another.

        Raises:
            ServerError: an error status (with the server's message), no answer, or a reply that is not JSON.
        """
        httpx = self._httpx
        retries = self.retries if retries is None else int(retries)
        attempts = 1 + (retries if idempotent else 0)
        deadline = None if within_s is None else time.monotonic() + within_s
        never_sent = (httpx.ConnectError, httpx.ConnectTimeout)
        last: ServerError | None = None
        attempt = 0
        while True:
            attempt += 1
            try:
                r = self._client.request(method, path, json=body, params=params,
                                         timeout=self._attempt_timeout(deadline, attempt < attempts))
            except never_sent as e:
                last = ServerError(f"{method} {self.base_url}{path}: cannot connect ({type(e).__name__}: {e})")
                if attempt <= retries and self._backoff(attempt, deadline):  # nothing reached the server
                    continue
                raise last from None
            except httpx.HTTPError as e:
                last = ServerError(f"{method} {self.base_url}{path}: no answer ({type(e).__name__}: {e})")
                if attempt < attempts and self._backoff(attempt, deadline):
                    continue
                raise last from None
            if r.status_code >= 400:
                message, kind = self._error_of(r)
                last = ServerError(f"{method} {self.base_url}{path}: HTTP {r.status_code}: {message}", r.status_code, kind)
                if r.status_code >= 500 and kind != "env_error" and attempt < attempts and self._backoff(attempt, deadline):
                    continue
                raise last
            try:
                return r.json()
            except ValueError:
                last = ServerError(f"{method} {self.base_url}{path}: the reply is not JSON: {r.text[:200]!r}", r.status_code)
                if attempt < attempts and self._backoff(attempt, deadline):
                    continue
                raise last from None

    def _attempt_timeout(self, deadline: float | None, more_to_come: bool) -> float:
        if deadline is None:
            return self.timeout_s
        left = deadline - time.monotonic()
        return max(0.05, min(self.timeout_s, left / 2 if more_to_come else left))

    @staticmethod
    def _error_of(r: Any) -> tuple[str, str]:
        try:
            d = r.json()
        except ValueError:
            return r.text[:300] or r.reason_phrase, ""
        if isinstance(d, dict):
            msg = d.get("error") or d.get("detail") or d
            return str(msg)[:2000], str(d.get("kind") or "")
        return str(d)[:300], ""

    @staticmethod
    def _backoff(attempt: int, deadline: float | None = None) -> bool:
        """Wait before attempt `attempt + 1`; False (without waiting) when it would start past `deadline`."""
        pause = min(2.0, 0.1 * 2 ** (attempt - 1)) * (0.5 + random.random())
        if deadline is not None and time.monotonic() + pause + 0.05 >= deadline:
            return False
        time.sleep(pause)
        return True

    def close(self) -> None:
        self._client.close()


def probe_health(url: str, path: str = "/health", timeout_s: float = 5.0, token_env: str | None = None) -> str:
    """"" when the server at `url` answers GET `path`, else why not. One retry, at most 5 s a try: it is asked
    while a run waits for the verdict."""
    c = JsonClient(url, min(float(timeout_s), 5.0), retries=1, token_env=token_env or None)
    try:
        c.call("GET", path)
    except ServerError as err:
        return str(err)
    finally:
        c.close()
    return ""
