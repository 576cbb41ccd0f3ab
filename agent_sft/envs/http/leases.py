"""Sessions on agent-sft env servers that always end: opened on a lease this process renews, closed with
bounded retries.

A session opened with `open_session(client, params, lease_s)` is renewed in the background (one
`POST /renew` per server for all of this process's sessions there, every quarter of the shortest lease)
until `close_session` closes it. When this process is killed, hangs or loses the network, the renewals
stop and the server closes its sessions (and stops their env workers) one lease later: nothing waits
for the server's idle timeout. See "Leases" in `agent_sft.envs.http.protocol`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from agent_sft.envs.http.client import JsonClient, ServerError

logger = logging.getLogger(__name__)

# An env pool stops a worker 5 s after asking it to close (and a thread pool waits 5 s for all of them):
# the close of the worker's session, retries included, has to be over before that.
CLOSE_WITHIN_S = 4.0


class Leases:
    """The sessions this process holds on lease, renewed by one daemon thread (started at the first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._held: dict[tuple[str, str | None], dict[str, float]] = {}  # server -> {session id: lease_s}
        self._renewers: dict[tuple[str, str | None], JsonClient] = {}
        self._pid: int | None = None  # the process whose thread renews (a forked child starts its own)

    def hold(self, client: JsonClient, session_id: str, lease_s: float) -> None:
        """Renew session `session_id` on `client`'s server until `release`."""
        with self._lock:
            if self._pid != os.getpid():
                self._held, self._renewers, self._pid = {}, {}, os.getpid()
                threading.Thread(target=self._run, name="agent-sft-env-leases", daemon=True).start()
            self._held.setdefault(_server(client), {})[session_id] = float(lease_s)
            self._wake.notify()

    def release(self, client: JsonClient, session_id: str) -> None:
        """Stop renewing `session_id` (closed, or left to expire)."""
        with self._lock:
            sessions = self._held.get(_server(client))
            if sessions is not None:
                sessions.pop(session_id, None)

    def _run(self) -> None:
        last = time.monotonic()  # the last round of renewals
        while True:
            with self._lock:
                while True:  # until a round is due; a new session wakes it to see a shorter lease
                    leases = [lease for s in self._held.values() for lease in s.values()]
                    if not leases:
                        self._wake.wait()
                        last = time.monotonic()
                        continue
                    interval = min(leases) / 4
                    left = last + interval - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                due = {server: list(s) for server, s in self._held.items() if s}
            last = time.monotonic()
            for server, ids in due.items():
                self._renew(server, ids, timeout_s=interval)

    def _renew(self, server: tuple[str, str | None], ids: list[str], timeout_s: float) -> None:
        client = self._renewers.get(server)
        if client is None:
            client = self._renewers[server] = JsonClient(server[0], retries=0, token_env=server[1])
        try:
            reply = client.call("POST", "/renew", {"session_ids": ids}, within_s=timeout_s)
        except ServerError as e:  # the next round tries again; past the lease the server closes them
            logger.info("could not renew %d env session(s) on %s: %s", len(ids), server[0], e)
            return
        gone = reply.get("unknown") if isinstance(reply, dict) else None
        if gone:
            logger.info("env session(s) %s on %s expired or were closed", ", ".join(map(str, gone)), server[0])
            with self._lock:
                sessions = self._held.get(server, {})
                for sid in gone:
                    sessions.pop(sid, None)


LEASES = Leases()


def _server(client: JsonClient) -> tuple[str, str | None]:
    return client.base_url, client.token_env


def open_session(client: JsonClient, params: dict[str, Any], lease_s: float | None) -> tuple[str, float | None]:
    """Open a session with `params` (`POST /sessions`), on a lease of `lease_s` seconds that this
    process renews (none when `lease_s` is falsy). Returns the session id and the lease the server
    granted (None when it gave none: a server that predates leases is asked again without one).

    Raises:
        ServerError: the server refused or did not answer.
    """
    if lease_s:
        try:
            reply = client.call("POST", "/sessions", {**params, "lease_s": lease_s})
        except ServerError as e:
            if e.kind != "bad_request" or "lease_s" not in str(e):
                raise
            reply = client.call("POST", "/sessions", params)
    else:
        reply = client.call("POST", "/sessions", params)
    sid = str(reply["session_id"])
    granted = reply.get("lease_s") if lease_s else None
    if granted:
        LEASES.hold(client, sid, float(granted))
    return sid, float(granted) if granted else None


def close_session(client: JsonClient, session_id: str, within_s: float = CLOSE_WITHIN_S) -> None:
    """Close a session (`DELETE /sessions/{id}`), retried until `within_s` seconds have passed (a close that
    timed out is sent again: closing is idempotent). Its renewals stop either way.

    Raises:
        ServerError: the last attempt's error; the session then ends when its lease runs out.
    """
    try:
        client.call("DELETE", f"/sessions/{session_id}", retries=max(client.retries, 3), within_s=within_s)
    finally:
        LEASES.release(client, session_id)
