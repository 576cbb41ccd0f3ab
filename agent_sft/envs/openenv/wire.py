"""One OpenEnv `/ws` connection (one env on the server), spoken with `websockets`' sync client.

A message goes out as `{"type": ..., "data": ...}` and one reply comes back: `observation`, `state`, or
`error` (`{"message", "code"}`: the connection stays usable). A reply that does not come within the
timeout, a connection that closes and a reply that is not JSON each close the connection and raise
`ServerError`: what the env did with the message is then unknown, so the caller decides whether sending it
again is safe (a reset is; a step never is). A server at its session limit accepts the connection and
then sends `CAPACITY_REACHED` unsolicited: `open_socket` reads it as the answer to its first message.
"""

from __future__ import annotations

import json
from typing import Any

from agent_sft.envs.remote_client import ServerError

MAX_MESSAGE = 64 * 2**20  # an observation may carry a page of text or an image as JSON


class WireError(ServerError):
    """An error the server answered (`{"type": "error"}`): `kind` is its code (`VALIDATION_ERROR`, ...)."""

    def __init__(self, message: str, code: str, data: dict):
        super().__init__(message, None, code)
        self.code = code
        self.data = data


def ws_url(base_url: str, session_id: str | None = None) -> str:
    url = base_url.rstrip("/")
    url = "wss://" + url[len("https://"):] if url.startswith("https://") else "ws://" + url.removeprefix("http://")
    return url + "/ws" + (f"?session_id={session_id}" if session_id else "")


def load_websockets():
    try:
        from websockets.sync.client import connect
    except ImportError as err:
        raise ImportError(f"the openenv env needs websockets: pip install 'agent-sft[openenv]' ({err})") from err
    return connect


class Socket:
    """A `/ws` connection to `base_url`.

    Args:
        base_url: the server's root URL (http or https).
        headers: sent with the handshake (a bearer token).
        timeout_s: seconds a reply may take.
        connect_timeout_s: seconds the connection may take to open.
    """

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float, connect_timeout_s: float = 10.0):
        connect = load_websockets()
        self.base_url = base_url
        self.timeout_s = float(timeout_s)
        self.url = ws_url(base_url)
        try:
            # Entered as a context manager would be (websockets 17 warns of a connection used otherwise); `close`
            # ends it.
            self._ws = connect(self.url, additional_headers=headers or None, open_timeout=connect_timeout_s,
                               close_timeout=1.0, max_size=MAX_MESSAGE, ping_interval=None).__enter__()
        except Exception as err:  # noqa: BLE001 - refused, a DNS failure, a handshake answered with an HTTP error
            raise ServerError(f"{self.url}: cannot connect ({type(err).__name__}: {err})") from None
        self.closed = False

    def request(self, kind: str, data: Any = None, timeout_s: float | None = None) -> dict:
        """Send one message and return the reply's `data` (an `observation` or `state` reply).

        Raises:
            WireError: the server answered an error.
            ServerError: no reply (closed, timed out) or not JSON; the connection is then closed.
        """
        if self.closed:
            raise ServerError(f"{self.url}: the connection is closed")
        msg: dict[str, Any] = {"type": kind}
        if data is not None:
            msg["data"] = data
        try:
            self._ws.send(json.dumps(msg))
        except Exception as err:  # noqa: BLE001 - closed already: an error the server sent before closing is kept
            self._closed_with(kind, err)
        try:
            raw = self._ws.recv(timeout=self.timeout_s if timeout_s is None else timeout_s)
        except TimeoutError:
            self.close()
            raise ServerError(f"{self.url}: no reply to {kind} within {self.timeout_s:g} s") from None
        except Exception as err:  # noqa: BLE001 - ConnectionClosed and socket errors alike end the connection
            self.close()
            raise ServerError(f"{self.url}: the connection closed during {kind} ({type(err).__name__}: {err})") from None
        try:
            reply = json.loads(raw)
        except (TypeError, ValueError):
            self.close()
            raise ServerError(f"{self.url}: the reply to {kind} is not JSON: {str(raw)[:200]!r}") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("data"), dict):
            self.close()
            raise ServerError(f"{self.url}: malformed reply to {kind}: {str(reply)[:200]}")
        if reply.get("type") == "error":
            raise self._error(reply["data"])
        return reply["data"]

    def _closed_with(self, kind: str, err: Exception) -> None:
        """The connection closed before `kind` went out: raise the error the server sent before closing (a full
        server's CAPACITY_REACHED), else that it closed."""
        try:
            raw = self._ws.recv(timeout=0.5)
            reply = json.loads(raw)
            if isinstance(reply, dict) and reply.get("type") == "error" and isinstance(reply.get("data"), dict):
                raise self._error(reply["data"])
        except (WireError, KeyboardInterrupt):
            self.close()
            raise
        except Exception:  # noqa: BLE001, S110 - nothing left to read: the closing is the answer
            pass
        self.close()
        raise ServerError(f"{self.url}: the connection closed before {kind} was sent ({type(err).__name__}: {err})")

    def _error(self, err: dict) -> WireError:
        """An `error` reply's data as the exception to raise, the validation errors it lists in its message."""
        code = str(err.get("code") or "")
        message = str(err.get("message") or "error")
        details = err.get("errors")
        if details:
            message += ": " + "; ".join(_pydantic_error(e) for e in details[:5])
        return WireError(f"{self.url}: {code or 'error'}: {message}", code, err)

    def close(self) -> None:
        """Close (sending OpenEnv's `close` first while the connection is up), quietly."""
        if self.closed:
            return
        self.closed = True
        try:
            self._ws.send(json.dumps({"type": "close"}))
        except Exception:  # noqa: BLE001, S110 - already gone
            pass
        try:
            self._ws.close()
        except Exception:  # noqa: BLE001, S110 - already gone
            pass


def _pydantic_error(e: Any) -> str:
    if not isinstance(e, dict):
        return str(e)
    where = ".".join(str(p) for p in e.get("loc") or ())
    return f"{where}: {e.get('msg')}" if where else str(e.get("msg"))
