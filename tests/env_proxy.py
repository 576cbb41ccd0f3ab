"""A loopback HTTP proxy in front of an env server that spoils chosen step requests, for fault tests.

    proxy = FaultProxy("http://127.0.0.1:8100", faults={3: "500", 5: "garbage", 7: "hang"})
    ... env.http.url=proxy.url ...
    proxy.close()

The n-th step request (1-based, counted over every session) gets: `500` (an error status, the request
not forwarded), `garbage` (forwarded, then the reply replaced by bytes that are not JSON), `hang`
(forwarded, then no reply until the client gives up), or `drop` (forwarded, then the connection closed
without a reply). `close_faults` spoil the n-th session close (DELETE) the same way, and also take
`lost` (not forwarded, and no reply until the client gives up). Every other request is forwarded as it is.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class FaultProxy:
    def __init__(self, target: str, faults: dict[int, str] | None = None, hang_s: float = 30.0,
                 close_faults: dict[int, str] | None = None):
        self.target = target.rstrip("/")
        self.faults = dict(faults or {})
        self.close_faults = dict(close_faults or {})
        self.hang_s = hang_s
        self.steps = 0
        self.closes = 0
        self.spoiled: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=120)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self, method: str):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = None
                if method == "POST" and self.path.endswith("/step"):
                    with proxy._lock:
                        proxy.steps += 1
                        fault = proxy.faults.get(proxy.steps)
                        if fault:
                            proxy.spoiled.append((proxy.steps, fault))
                if method == "DELETE":
                    with proxy._lock:
                        proxy.closes += 1
                        fault = proxy.close_faults.get(proxy.closes)
                        if fault:
                            proxy.spoiled.append((proxy.closes, fault))
                if fault == "lost":
                    time.sleep(proxy.hang_s)
                    self.close_connection = True
                    self.connection.close()
                    return None
                if fault == "500":
                    return self._send(500, b'{"error": "injected failure", "kind": "internal"}')
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                r = proxy._client.request(method, proxy.target + self.path, content=body, headers=headers)
                if fault == "garbage":
                    return self._send(200, b"<html>not json")
                if fault == "hang":
                    time.sleep(proxy.hang_s)
                    return self._send(200, r.content)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return None
                return self._send(r.status_code, r.content)

            def _send(self, status: int, payload: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

            def do_DELETE(self):
                self._forward("DELETE")

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()
