"""Servers that do not answer hold up nothing else: the check of an env's servers runs outside the lock
that every ending episode takes (and asks its servers together), and each server's sessions are renewed
by their own thread (a server that stays silent is asked once a lease after a lease without an answer).
Servers here are loopback sockets: one that accepts and never answers, one that answers renewals."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from serve_helpers import wait_for

from agent_sft.envs.http.client import JsonClient
from agent_sft.envs.http.leases import Leases
from agent_sft.envs.http.options import HttpOptions
from agent_sft.rollout.health import EnvFailedError, EnvHealth


class Silent:
    """A loopback server that accepts connections and never answers; `accepted` holds when each came."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.accepted: list[float] = []
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            self._conns.append(conn)

    def close(self) -> None:
        self._sock.close()
        for c in self._conns:
            c.close()


class Renewals:
    """A loopback server that renews every session it is asked to; `times` holds when each renewal came."""

    def __init__(self) -> None:
        times = self.times = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                ids = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))["session_ids"]
                times.append(time.monotonic())
                body = json.dumps({"renewed": ids, "unknown": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Lane:
    name, label = "remote", "remote"

    def __init__(self, probe):
        self.options = type("Options", (), {"probe_servers": lambda _: probe()})()


def test_a_probe_under_way_holds_up_no_other_episode():
    release, probes = threading.Event(), []

    def probe():
        probes.append(1)
        release.wait(30)
        return {"http://127.0.0.1:9": "cannot connect"}

    health = EnvHealth([Lane(probe)], limit=2)
    health.ended(0, "env step failed")
    judge = threading.Thread(target=health.ended, args=(0, "env step failed"), daemon=True)
    judge.start()
    try:
        wait_for(lambda: probes, 10, "the servers are probed")
        others = threading.Thread(target=lambda: [health.ended(0, "env step failed") for _ in range(3)]
                                  + [health.ended(0)], daemon=True)
        others.start()
        others.join(5)
        assert not others.is_alive()  # episodes ending meanwhile are counted at once
        assert probes == [1] and judge.is_alive()  # one probe at a time, though the limit was reached again
        health.check()
    finally:
        release.set()
    judge.join(10)
    with pytest.raises(EnvFailedError, match=r"none of its servers answers \(http://127.0.0.1:9: cannot connect\)"):
        health.check()


def test_servers_are_probed_together():
    silent = [Silent() for _ in range(3)]
    try:
        options = HttpOptions(url=[s.url for s in silent], timeout_s=0.4)
        t0 = time.monotonic()
        probes = options.probe_servers()
        took = time.monotonic() - t0
    finally:
        for s in silent:
            s.close()
    assert list(probes) == [s.url for s in silent] and all("no answer" in why for why in probes.values())
    assert took < 2.0, took  # one after another: 3 x (2 tries of 0.4 s and a pause)


def test_a_silent_server_delays_no_renewal_of_another():
    lease = 1.0
    live, silent = Renewals(), [Silent() for _ in range(4)]
    leases, clients = Leases(), [JsonClient(live.url)] + [JsonClient(s.url) for s in silent]
    try:
        t0 = time.monotonic()
        for i, c in enumerate(clients):
            leases.hold(c, f"s{i}", lease)
        time.sleep(2.5)
        for i, c in enumerate(clients):
            leases.release(c, f"s{i}")
        end = time.monotonic()
    finally:
        for c in clients:
            c.close()
        live.close()
        for s in silent:
            s.close()
    gaps = [b - a for a, b in zip([t0, *live.times], [*live.times, end])]
    # Every quarter lease; one after another behind four silent servers, a renewal would come a lease late.
    assert len(live.times) >= 6 and max(gaps) < 0.75 * lease, gaps
    for s in silent:  # asked every quarter lease at first, then once a lease
        late = [t - t0 for t in s.accepted if t - t0 > 1.5 * lease]
        assert s.accepted and len(late) <= 2, [t - t0 for t in s.accepted]
