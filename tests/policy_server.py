"""A deterministic OpenAI-compatible chat server on loopback, for the rollout loops' tests and benches.

Its answer depends only on the request (the last message and the seed): it picks one of the admissible
actions the prompt lists (ALFWorld's `[...]` list of quoted actions; else `look`) with the seed, and
writes a `<think>` block whose length the seed also picks. It answers after a delay proportional to that
length, as a GPU serving many requests at once answers each after the time its tokens take: concurrent
requests do not wait for each other.

    with PolicyServer(ms_per_token=2.0) as server:
        overrides = ["policy.type=openai", "policy.model=det", f"policy.base_url={server.url}"]

`fail_seeds_mod=(m, r)` answers 500 to every request whose seed is r modulo m (a request that fails for
good: its episode ends as an error). `fail_seeds={seed: kind}` fails the requests with those seeds as
`failing_url(kind)` does.

`failing_url(kind)` is a base URL of the same server where every chat request fails the same way: `500`,
`503`, `429` (with Retry-After: 0), `badjson` (a cut JSON body), `empty` (no `choices`), `400` (a plain bad
request), `ctx` (a 400 saying the prompt exceeds the context length), `hang` (answers after `hang_s`),
`hang1` (the first request hangs as `hang`, every later one gets a 500), or answers well but `invalid`
(text without an action). A hang ends early when the server is closed.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_ADMISSIBLE = re.compile(r"admissible actions of the current situation are: \[(.*?)\]\.", re.DOTALL)
_QUOTED = re.compile(r"'([^'\n]*)'")


def answer_for(last_message: str, seed: int, max_think_tokens: int = 64) -> tuple[str, int]:
    """The answer text and its length in tokens (words) for a prompt and a seed."""
    h = int.from_bytes(hashlib.sha256(f"{seed}\x1f{last_message}".encode()).digest()[:8], "big")
    found = _ADMISSIBLE.findall(last_message)
    actions = _QUOTED.findall(found[-1]) if found else []
    action = actions[h % len(actions)] if actions else "look"
    # answer lengths vary like a model's: mostly short, some long (a cube spreads them)
    u = ((h >> 20) % 1000) / 1000.0
    think = 1 + int(max_think_tokens * u**3)
    return f"<think>{' '.join(['hm'] * think)}</think><action>{action}</action>", think + 2


class PolicyServer:
    """The server, started on a free loopback port; `url` is its `policy.base_url`.

    Args:
        ms_per_token: Delay per answer token (0: answer at once).
        max_think_tokens: Longest think block.
        fail_seeds_mod: (m, r): requests with seed % m == r get a 500.
        fail_seeds: seed -> how its requests fail (a `failing_url` kind).
        hang_s: How long a hanging request waits before its answer.
    """

    def __init__(self, ms_per_token: float = 0.0, max_think_tokens: int = 64, fail_seeds_mod: tuple[int, int] | None = None,
                 hang_s: float = 2.0, fail_seeds: dict[int, str] | None = None):
        self.ms_per_token = ms_per_token
        self.hang_s = hang_s
        self.max_think_tokens = max_think_tokens
        self.fail_seeds_mod = fail_seeds_mod
        self.fail_seeds = fail_seeds or {}
        self.requests = 0
        self.by_kind: dict[str, int] = {}  # failing requests received, per kind
        self.last_failure_at = 0.0  # time.monotonic() of the last failing request's arrival
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()  # ends the hangs
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 256
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def failing_url(self, kind: str) -> str:
        """A base URL where every chat request fails as `kind` says (see the module's docstring)."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/fail-{kind}/v1"

    def __enter__(self) -> PolicyServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "det", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                seed = int(body.get("seed", 0))
                last = body["messages"][-1]["content"] if body.get("messages") else ""
                with server._lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    first = self.path.strip("/").split("/")[0]
                    if first.startswith("fail-"):
                        return self._fail(first[len("fail-"):], body)
                    if seed in server.fail_seeds:
                        return self._fail(server.fail_seeds[seed], body)
                    if server.fail_seeds_mod and seed % server.fail_seeds_mod[0] == server.fail_seeds_mod[1]:
                        return self._send(500, {"error": {"message": f"no answer for seed {seed}"}})
                    text, tokens = answer_for(last, seed, server.max_think_tokens)
                    if server.ms_per_token:
                        time.sleep(tokens * server.ms_per_token / 1000.0)
                    prompt_tokens = sum(len(m["content"].split()) for m in body.get("messages", []))
                    self._send(200, {
                        "id": f"det-{seed}", "object": "chat.completion", "model": body.get("model", ""),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                                  "total_tokens": prompt_tokens + tokens},
                    })
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _fail(self, kind, body):
                with server._lock:
                    server.by_kind[kind] = n = server.by_kind.get(kind, 0) + 1
                    server.last_failure_at = time.monotonic()
                if kind == "hang1":
                    kind = "hang" if n == 1 else "500"
                if kind in ("500", "503"):
                    return self._send(int(kind), {"error": {"message": f"the server failed ({kind})"}})
                if kind == "429":
                    return self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
                if kind == "badjson":
                    return self._send(200, b'{"choices": [{"message": ')
                if kind == "empty":
                    return self._send(200, {"id": "x", "object": "chat.completion", "choices": []})
                if kind == "400":
                    return self._send(400, {"error": {"message": "'temperature' must be a number"}})
                if kind == "ctx":
                    return self._send(400, {"error": {"message": "This model's maximum context length is 512 "
                                                                 "tokens; your prompt has 900 tokens."}})
                if kind == "hang":
                    server._closed.wait(server.hang_s)
                text = "I am not sure what to do." if kind == "invalid" else answer_for("", 0)[0]
                return self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                     "finish_reason": "stop"}],
                                        "usage": {"prompt_tokens": 5, "completion_tokens": 7}})

            def _send(self, status, payload, headers=None):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
