"""`LocalGuard`: which requests and WebSocket connections the env server answers, whatever its protocol.

A web page the user opens elsewhere can reach a server on the user's own machine: by pointing a name of its
own at 127.0.0.1 (DNS rebinding), which its requests then carry as the Host header, or by sending requests
to 127.0.0.1 straight away, which carry the page's Origin. So a server bound to the loopback and without a
token answers only requests addressed to a loopback name (127.0.0.1, localhost, [::1]) or to the name it was
told to listen on (`--host`), on any port (an ssh tunnel or a proxy forwards from another one); and a server
without a token answers no request a page on another site sent (an Origin that is neither a loopback one nor
the request's own Host, as a same-origin client sends). A token needs neither check: a page cannot send the
`Authorization` header to another site without the server's consent, which it never gives, and a browser's
WebSocket cannot send it at all.
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


def _host_name(host_header: str) -> str:
    """The name a Host header gives, without its port (an IPv6 address without its brackets); "" for none."""
    try:
        return (urlsplit("//" + host_header.strip()).hostname or "").lower()
    except ValueError:
        return ""


def addressed_here(host_header: str, listen_host: str = "") -> bool:
    """Whether a request's Host header names this machine's loopback (a loopback name or address) or
    `listen_host`, the name the server listens on, on any port."""
    name = _host_name(host_header)
    if not name:
        return False
    return _loopback_name(name) or name == listen_host.strip("[]").lower()


def loopback_origin(origin: str) -> bool:
    """Whether an Origin header names a page served from this machine (http or https, any port); the
    opaque origin `null` (sandboxed frames, local files) does not."""
    try:
        parts = urlsplit(origin.strip())
        return parts.scheme in ("http", "https") and _loopback_name(parts.hostname or "")
    except ValueError:
        return False


def same_origin(origin: str, host_header: str) -> bool:
    """Whether an Origin header names the site the request is addressed to (its host and port are the Host
    header's), as a client of the server's own pages or a WebSocket client sends."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    host = host_header.strip().lower()
    return parts.scheme in ("http", "https", "ws", "wss") and bool(host) and parts.netloc.lower() == host


class LocalGuard:
    """ASGI middleware refusing, before the app sees them, the requests and WebSocket handshakes that the
    module's rules leave out: HTTP 403 with `error_body(message)` as JSON, a WebSocket closed before it is
    accepted (the client sees HTTP 403).

    Args:
        app: the app behind the guard.
        loopback: the server is bound to a loopback address: without a token, the Host header must name the
            loopback or `host`.
        token: the server's token, if any: without one, an Origin that is neither a loopback one nor the
            request's Host is refused.
        error_body: the JSON body of a refusal, in the app's protocol.
        host: the name or address the server listens on (`--host`).
    """

    def __init__(self, app: Any, *, loopback: bool, token: str | None, error_body: Callable[[str], Any],
                 host: str = ""):
        self.app = app
        self.check_host = loopback and not token
        self.check_origin = not token
        self.error_body = error_body
        self.host = host

    def refusal(self, scope: dict) -> str | None:
        """Why the request of `scope` is refused; None when it is answered."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host", "")
        if self.check_host and not addressed_here(host, self.host):
            named = "" if _loopback_name(self.host) or not self.host else f", {self.host}"
            return (f"this server answers requests addressed to 127.0.0.1, localhost or [::1]{named} only, not to "
                    f"{host or 'no Host'!r}; set a token (--token-env) to answer other names")
        origin = headers.get("origin")
        if self.check_origin and origin is not None and not (loopback_origin(origin) or same_origin(origin, host)):
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
