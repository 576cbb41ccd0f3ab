"""`LocalGuard`: which requests and WebSocket connections the env server answers, whatever its protocol.

A web page the user opens elsewhere can reach a server on the user's own machine: by pointing a name of its
own at 127.0.0.1 (DNS rebinding), which its requests then carry as the Host header, or by sending requests
to 127.0.0.1 straight away, which carry the page's Origin. So a server bound to the loopback answers only
requests addressed to a loopback name (127.0.0.1, localhost or [::1], with the server's port), and a server
without a token answers no request a page on another site sent (an Origin that is not a loopback one). A
token needs no Origin check: a page cannot send the `Authorization` header to another site without the
server's consent, which it never gives, and a browser's WebSocket cannot send it at all.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _loopback_name(name: str) -> bool:
    name = name.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def addressed_here(host_header: str, local_ip: str, port: int) -> bool:
    """Whether a request's Host header names the loopback interface at `port`, the port it came in on
    (bare on port 80): one of `LOOPBACK_NAMES`, or `local_ip`, the loopback address it came in on."""
    shown = f"[{local_ip}]" if ":" in local_ip else local_ip
    names = {n.lower() for n in (*LOOPBACK_NAMES, shown)}
    allowed = {f"{n}:{port}" for n in names} | (names if port == 80 else set())
    return host_header.strip().lower() in allowed


def loopback_origin(origin: str) -> bool:
    """Whether an Origin header names a page served from this machine (http or https, any port); the
    opaque origin `null` (sandboxed frames, local files) does not."""
    try:
        parts = urlsplit(origin.strip())
        return parts.scheme in ("http", "https") and _loopback_name(parts.hostname or "")
    except ValueError:
        return False


class LocalGuard:
    """ASGI middleware refusing, before the app sees them, the requests and WebSocket handshakes that the
    module's rules leave out: HTTP 403 with `error_body(message)` as JSON, a WebSocket closed before it is
    accepted (the client sees HTTP 403).

    Args:
        app: the app behind the guard.
        loopback: the server is bound to a loopback address: the Host header must name the loopback.
        token: the server's token, if any: without one, an Origin that is not a loopback one is refused.
        error_body: the JSON body of a refusal, in the app's protocol.
    """

    def __init__(self, app: Any, *, loopback: bool, token: str | None, error_body: Callable[[str], Any]):
        self.app = app
        self.loopback = loopback
        self.check_origin = not token
        self.error_body = error_body

    def refusal(self, scope: dict) -> str | None:
        """Why the request of `scope` is refused; None when it is answered."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        if self.loopback:
            local_ip, port = (scope.get("server") or ("127.0.0.1", 0))[:2]
            if not addressed_here(headers.get("host", ""), str(local_ip), int(port or 0)):
                return ("this server answers requests addressed to 127.0.0.1, localhost or [::1] (with its port) "
                        f"only, not to {headers.get('host', 'no Host')!r}")
        origin = headers.get("origin")
        if self.check_origin and origin is not None and not loopback_origin(origin):
            return (f"this server answers no web page of another site (Origin {origin!r}): a server without a "
                    "token answers pages of this machine only; set a token (--token-env) to let other clients in")
        return None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        why = self.refusal(scope) if scope["type"] in ("http", "websocket") else None
        if why is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": why[:120]})
        else:
            body = json.dumps(self.error_body(why)).encode()
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
