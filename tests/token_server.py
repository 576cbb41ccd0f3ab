"""A loopback OpenAI-compatible chat server that answers with token ids and logprobs the way vLLM's does
(`return_token_ids`: `prompt_token_ids` beside the choices and `token_ids` in each; `logprobs.content` with
tokens written "token_id:<id>" under `return_tokens_as_token_ids`), deterministically from the request.

Every answer it sent is kept by the request's seed (`sent`), for a test to compare with what was recorded.
`omit_ids_for(seed)` decides the requests answered without any token ids (a server that returns them on
some turns only).

    with TokenServer(omit=lambda seed: seed % 5 == 0) as server:
        overrides = ["policy.type=openai", "policy.model=tok", f"policy.base_url={server.url}",
                     "policy.record_tokens=true"]
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer_for(body: dict, omit: bool) -> dict:
    """The whole JSON answer to a request body: text, ids and logprobs all follow from its messages and seed."""
    seed = int(body.get("seed", 0))
    prompt = json.dumps(body.get("messages", []), sort_keys=True)
    h = hashlib.sha256(f"{seed}\x1f{prompt}".encode()).digest()
    text = f"<think>t{h[0]}</think><action>move {('left', 'down', 'right', 'up')[h[1] % 4]}</action>"
    completion = [ord(ch) for ch in text]
    prompt_ids = [b for b in hashlib.sha256(prompt.encode()).digest()] + [seed % 1000]
    top_n = int(body.get("top_logprobs") or 0)
    content = []
    for i, t in enumerate(completion):
        lp = -((h[(i % 30) + 2] + 1) / 64.0)
        top = [{"token": f"token_id:{t}", "logprob": lp}] + [
            {"token": f"token_id:{(t + k) % 256}", "logprob": lp - k} for k in range(1, top_n)]
        content.append({"token": f"token_id:{t}", "logprob": lp, "bytes": None, "top_logprobs": top[:top_n]})
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    out = {"id": f"chatcmpl-{seed}", "object": "chat.completion", "model": body.get("model", ""),
           "choices": [choice],
           "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": len(completion),
                     "total_tokens": len(prompt_ids) + len(completion)}}
    if body.get("logprobs"):
        choice["logprobs"] = {"content": content}
    if body.get("return_token_ids") and not omit:
        choice["token_ids"] = completion
        out["prompt_token_ids"] = prompt_ids
    return out


class TokenServer:
    """The server on a free loopback port; `url` is its `policy.base_url`; `sent[seed]` the answers, `bodies` the
    requests."""

    def __init__(self, omit: Callable[[int], bool] | None = None) -> None:
        self.omit = omit or (lambda seed: False)
        self.sent: dict[int, dict] = {}
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> TokenServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # the probe before a run: GET /models
                self._send({"object": "list", "data": [{"id": "tok", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                seed = int(body.get("seed", 0))
                answer = answer_for(body, server.omit(seed))
                with server._lock:
                    server.bodies.append(body)
                    server.sent[seed] = answer
                self._send(answer)

            def _send(self, payload):
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
