"""Fixtures for Hub tests: a loopback Hub server, and clients run in subprocesses pointed at it.

huggingface_hub and datasets read HF_ENDPOINT when imported, so the client side of a test runs in a
fresh interpreter with HF_ENDPOINT set to the server, its own HF_HOME, and the offline switches dropped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hub_server import HubServer

USER, TOKEN = "alice", "hf_alice_write_token"
OTHER, OTHER_TOKEN = "bob", "hf_bob_write_token"
READ_ONLY_TOKEN = "hf_alice_read_token"
ORG = "agents-lab"
_DROP = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
         "HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_TOKEN_PATH", "HF_HUB_ENABLE_HF_TRANSFER")


class HubClient:
    """Runs huggingface_hub / datasets / `agent-sft` against the loopback server, each in a subprocess."""

    def __init__(self, server: HubServer, home: Path):
        self.server = server
        self.home = home
        self.endpoint = server.endpoint

    def new_repo_id(self, stem: str = "ds", namespace: str = USER) -> str:
        return f"{namespace}/{stem}-{uuid.uuid4().hex[:8]}"

    def env(self, token: str | None = TOKEN) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DROP}
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HOME=str(self.home),
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_IMPLICIT_TOKEN="0",
            HF_DATASETS_DISABLE_PROGRESS_BARS="1",
            NO_PROXY="127.0.0.1,localhost",
        )
        if token:
            env["HF_TOKEN"] = token
        return env

    def cli(self, *args: str, token: str | None = TOKEN, env: dict | None = None, timeout: float = 120):
        """`agent-sft ARGS...` in a subprocess (extra `env` on top); returns the completed process, text output."""
        cmd = [sys.executable, "-m", "agent_sft", *args]
        env = {**self.env(token), **(env or {})}
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)

    def python(self, code: str, *args: str, token: str | None = TOKEN, timeout: float = 120):
        """Run `code` in a subprocess with `sys.argv[1:] == args`; returns the JSON it prints last."""
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], env=self.env(token), capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise AssertionError(f"client subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def hub_server():
    """One loopback Hub for the session; tests keep apart by using fresh repo names."""
    server = HubServer().start()
    server.add_user(USER, TOKEN, orgs=(ORG,))
    server.add_user(USER, READ_ONLY_TOKEN, orgs=(ORG,), role="read")
    server.add_user(OTHER, OTHER_TOKEN)
    yield server
    server.stop()


@pytest.fixture
def hub(hub_server, tmp_path) -> HubClient:
    """A client for the loopback Hub with its own HF_HOME; injected faults end with the test."""
    hub_server.reset_faults()
    yield HubClient(hub_server, tmp_path / "hf_home")
    hub_server.reset_faults()
