"""Sessions on agent-sft env servers that always end: opened on a lease this process renews, closed with
bounded retries.

A session opened with `open_session(client, params, lease_s)` is renewed in the background until
`close_session` closes it: one daemon thread per server sends one `POST /renew` for all of this
process's sessions there every quarter of their shortest lease, so a server that does not answer delays
the renewals of no other (one that has not answered for a whole lease is asked once a lease after that).
The renewals come from their own thread, so a process whose work hangs keeps its sessions while it lives;
once it is killed, exits without closing them, or is cut off from the server, the renewals stop and the
server closes its sessions (and stops their env workers) one lease later: nothing waits for the server's
idle timeout. See "Leases" in `agent_sft.envs.http.protocol`.
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
    """The sessions this process holds on lease, renewed by a daemon thread per server (started with its
    first session there, ended once it holds none)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._held: dict[tuple[str, str | None], dict[str, float]] = {}  # server -> {session id: lease_s}
        self._renewing: set[tuple[str, str | None]] = set()  # servers whose thread runs
        self._pid: int | None = None  # the process whose threads renew (a forked child starts its own)

    def hold(self, client: JsonClient, session_id: str, lease_s: float) -> None:
        """Renew session `session_id` on `client`'s server until `release`."""
        server = _server(client)
        with self._lock:
            if self._pid != os.getpid():
                self._held, self._renewing, self._pid = {}, set(), os.getpid()
            self._held.setdefault(server, {})[session_id] = float(lease_s)
            if server not in self._renewing:
                self._renewing.add(server)
                threading.Thread(target=self._run, args=(server,), name=f"agent-sft-leases {server[0]}",
                                 daemon=True).start()
            self._wake.notify_all()  # a shorter lease brings the next renewal forward

    def release(self, client: JsonClient, session_id: str) -> None:
        """Stop renewing `session_id` (closed, or left to expire)."""
        with self._lock:
            sessions = self._held.get(_server(client))
            if sessions is not None:
                sessions.pop(session_id, None)

    def _run(self, server: tuple[str, str | None]) -> None:
        """Renew `server`'s sessions until none is held there."""
        client = JsonClient(server[0], retries=0, token_env=server[1])
        last = time.monotonic()  # the last renewal
        failing_since: float | None = None  # the first renewal of those in a row that got no answer
        try:
            while True:
                with self._lock:
                    while True:
                        held = self._held.get(server)
                        if not held:
                            self._held.pop(server, None)
                            self._renewing.discard(server)
                            return
                        lease = min(held.values())
                        now = time.monotonic()
                        # Unanswered for a whole lease, a live server has closed these sessions already:
                        # asking once a lease is enough to hear that (or that they live) when it answers.
                        slow = failing_since is not None and now - failing_since > lease
                        left = last + (lease if slow else lease / 4) - now
                        if left <= 0:
                            break
                        self._wake.wait(left)
                    ids = list(held)
                last = time.monotonic()
                if self._renew(server, client, ids, timeout_s=lease / 4):
                    failing_since = None
                elif failing_since is None:
                    failing_since = last
        finally:
            client.close()

    def _renew(self, server: tuple[str, str | None], client: JsonClient, ids: list[str], timeout_s: float) -> bool:
        """One renewal of `ids`; whether the server answered."""
        try:
            reply = client.call("POST", "/renew", {"session_ids": ids}, within_s=timeout_s)
        except ServerError as e:  # the next renewal tries again; past the lease the server closes them
            logger.info("could not renew %d env session(s) on %s: %s", len(ids), server[0], e)
            return False
        gone = reply.get("unknown") if isinstance(reply, dict) else None
        if gone:
            logger.info("env session(s) %s on %s expired or were closed", ", ".join(map(str, gone)), server[0])
            with self._lock:
                sessions = self._held.get(server, {})
                for sid in gone:
                    sessions.pop(sid, None)
        return True


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
