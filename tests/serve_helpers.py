"""`agent-sft serve-env` in a subprocess on a free loopback port, for tests that talk to it over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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
                    return line.split(" on ", 1)[1].split()[0].replace("0.0.0.0", "127.0.0.1")
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
