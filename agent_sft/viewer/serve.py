"""Serve a viewer folder over HTTP on the loopback interface: its files only, no listing, nothing else."""

from __future__ import annotations

import functools
import ipaddress
import socket
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from agent_sft.errors import ConfigError

LOOPBACK = "127.0.0.1"
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

    def list_directory(self, path):  # the page's files only, never a listing of the folder
        self.send_error(HTTPStatus.NOT_FOUND, "not found")
        return None

    def log_message(self, format: str, *args) -> None:  # the terminal shows where the page is, not each request
        pass


def check_host(host: str, allow_remote: bool) -> None:
    """Raises:
        ConfigError: `host` is not the loopback and `allow_remote` is not given.
    """
    if not is_loopback(host) and not allow_remote:
        raise ConfigError(f"--host {host}: the viewer is served on the loopback interface only (its pages show "
                          "the whole dataset); add --allow-remote to serve it on other hosts")


def make_server(folder: str, host: str = LOOPBACK, port: int = 0, allow_remote: bool = False) -> ThreadingHTTPServer:
    """A server (not yet serving) of `folder` on `host:port`; port 0 takes a free one (`server.server_port`).

    Raises:
        ConfigError: a host other than the loopback without `allow_remote`, or the port cannot be bound.
    """
    check_host(host, allow_remote)
    handler = functools.partial(_Handler, directory=folder)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("ViewerServer", (ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
    try:
        return server_class((host, port), handler)
    except OSError as e:
        raise ConfigError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/"
