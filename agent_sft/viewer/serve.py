"""Serve a viewer folder over HTTP on the loopback interface: its files only, no listing, nothing else.

The pages show the whole dataset, so the server answers only requests addressed to the loopback by name: a page
elsewhere that points a name of its own at 127.0.0.1 (DNS rebinding) sends that name as the Host header, and
gets 403.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from agent_sft.errors import ConfigError

LOOPBACK = "127.0.0.1"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
"""The Host header's names the server answers (with its port)."""
# The page's own policy, sent as a header too (a header can also forbid framing, which a meta tag cannot).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Handler(SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def _addressed_here(self) -> bool:
        if (self.headers.get("Host") or "").strip().lower() in self.server.hosts:
            return True
        self.send_error(HTTPStatus.FORBIDDEN, "the viewer answers requests to 127.0.0.1, localhost or [::1] only")
        return False

    def do_GET(self) -> None:
        if self._addressed_here():
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._addressed_here():
            super().do_HEAD()

    def list_directory(self, path):  # the page's files only, never a listing of the folder
        self.send_error(HTTPStatus.NOT_FOUND, "not found")
        return None

    def log_message(self, format: str, *args) -> None:  # the terminal shows where the page is, not each request
        pass


def check_host(host: str) -> None:
    """Raises:
        ConfigError: `host` is not a loopback address.
    """
    if not is_loopback(host):
        raise ConfigError(f"--host {host}: the viewer is served on the loopback interface only (its pages show the "
                          "whole dataset): give 127.0.0.1, ::1 or localhost")


def check_port(port: int) -> None:
    """Raises:
        ConfigError: `port` is not 0 (a free one) to 65535.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: give a port from 1 to 65535, or 0 for a free one")


def _hosts(host: str, port: int) -> frozenset[str]:
    """The Host header values a request to the server may carry: a loopback name with the port (bare on port 80)."""
    bound = f"[{host}]" if ":" in host else host
    names = {n.lower() for n in (*LOOPBACK_NAMES, bound)}
    return frozenset({f"{n}:{port}" for n in names} | (names if port == 80 else set()))


def make_server(folder: str, host: str = LOOPBACK, port: int = 0) -> ThreadingHTTPServer:
    """A server of `folder` bound on `host:port` (not yet serving); port 0 takes a free one (`server.server_port`).
    The folder may be written after the server is made: each request reads it afresh.

    Raises:
        ConfigError: a host other than the loopback, a port out of range, or one that cannot be bound.
    """
    check_host(host)
    check_port(port)
    handler = functools.partial(_Handler, directory=folder)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("ViewerServer", (ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
    try:
        server = server_class((host, port), handler)
    except OSError as e:
        raise ConfigError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    server.hosts = _hosts(host, server.server_address[1])
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/"
