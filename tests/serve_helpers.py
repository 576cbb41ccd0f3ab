"""`agent-sft serve-env` in a subprocess on a free loopback port, for tests that talk to it over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

TESTS = os.path.dirname(os.path.abspath(__file__))
# The test envs (crash-test, partial-test) are registered in the server too.
CLI = [sys.executable, "-c", "import sys, crash_env, partial_env; from agent_sft.cli import main; "
       "sys.exit(main(sys.argv[1:]))", "serve-env"]


class Server:
    """`agent-sft serve-env ARGS` on a free loopback port, its output in files."""

    def __init__(self, tmp_path, *args: str, token: str | None = None, env: dict | None = None):
        self.out_path, self.err_path = tmp_path / "server.out", tmp_path / "server.err"
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]),
                    **(env or {})}
        full_env.pop("AGENT_SFT_ENV_TOKEN", None)
        if token:
            full_env["AGENT_SFT_ENV_TOKEN"] = token
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([*CLI, *args, "--port", "0"], stdout=out, stderr=err, env=full_env)
        self.token = token
        self.url = self._await_ready()

    def _await_ready(self, timeout_s: float = 90.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.out().splitlines():
                if line.startswith("serving ") and " on http://" in line:
                    return line.split(" on ", 1)[1].split()[0]
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}): {self.err()}")
            time.sleep(0.05)
        raise AssertionError(f"the server did not start: {self.err()}")

    def out(self) -> str:
        return self.out_path.read_text()

    def err(self) -> str:
        return self.err_path.read_text()

    def client(self, token: str | None = "own") -> httpx.Client:
        token = self.token if token == "own" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(probe: Callable[[], Any], timeout_s: float, what: str | Callable[[], str], every_s: float = 0.1) -> Any:
    """`probe()`'s first truthy value, asked every `every_s` until `timeout_s` has passed (then fails saying
    `what`, or what it returns, and the last value): a test waits for a condition, not for a fixed time."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            break
        time.sleep(every_s)
    assert value, f"after {timeout_s:g} s: {what() if callable(what) else what} (last: {value!r})"
    return value


def health(url: str, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url + "/health", headers=headers, timeout=10).json()


def sessions_reach(url: str, n: int, timeout_s: float = 60.0, token: str | None = None) -> dict:
    """The server's `/health` once it has `n` sessions open, waited for at most `timeout_s`."""
    last: dict = {}

    def probe() -> dict | None:
        last.update(health(url, token))
        return dict(last) if last["sessions"] == n else None

    return wait_for(probe, timeout_s, lambda: f"{url} has {n} sessions open (health: {last})")


def closed_by_client(url: str, before: dict, timeout_s: float = 15.0, token: str | None = None) -> dict:
    """The server's `/health` once the sessions opened since `before` (its `/health` then) are all closed
    by their client: none open after at most `timeout_s` (by default half the client's 30 s lease, so
    sessions left to expire fail it), each counted as closed and none as expired."""
    after = sessions_reach(url, before["sessions"], timeout_s, token)
    was, now = before["counters"], after["counters"]
    opened = now["sessions_created"] - was["sessions_created"]
    assert opened > 0 and now["sessions_closed"] - was["sessions_closed"] == opened, (was, now)
    assert now["sessions_expired"] == was["sessions_expired"], (was, now)
    return after


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def worker_pids(server_pid: int) -> set[int]:
    """The env worker processes of the server `server_pid`: its running children started by
    multiprocessing's spawn (not its resource tracker)."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            if int(ppid) != server_pid or state == "Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    out.add(int(entry))
        except (OSError, ValueError):
            continue
    return out


def live_processes():
    """(pid, command name, the /proc stat fields after the name) of every live process (zombies left out)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            yield int(pid), stat[stat.index("(") + 1:stat.rindex(")")], fields


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    return [child for child, _, fields in live_processes() if int(fields[1]) == pid]


def session_processes(sid: int) -> list[str]:
    """`pid comm` of the live processes of session `sid`."""
    return [f"{pid} {comm}" for pid, comm, fields in live_processes() if int(fields[3]) == sid]
