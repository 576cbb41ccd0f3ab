"""A scripted OpenAI-compatible judge on loopback: each chat request is answered by `script(prompt, seed)`.

    with JudgeServer(lambda prompt, seed: '{"score": 7}') as server:
        overrides = ["policy.type=openai", "policy.model=judge", f"policy.base_url={server.url}"]

`delay_s` delays every answer; `fail_after=n` answers 500 to every request after the n-th (a server that
fails for good). `prompts` lists the prompts answered, in order, `bodies` the requests. A script may answer
with a whole assistant message (a dict: `content`, `tool_calls`, `reasoning_content`) instead of its text.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JudgeServer:
    def __init__(self, script: Callable[[str, int], str], delay_s: float = 0.0, fail_after: int | None = None):
        self.script, self.delay_s, self.fail_after = script, delay_s, fail_after
        self.requests = 0
        self.prompts: list[str] = []
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def overrides(self, model: str = "judge-model") -> list[str]:
        return ["policy.type=openai", f"policy.model={model}", f"policy.base_url={self.url}", "policy.max_retries=0"]

    def __enter__(self) -> JudgeServer:
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "judge-model", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                prompt = body["messages"][-1]["content"]
                with server._lock:
                    server.requests += 1
                    n = server.requests
                if server.fail_after is not None and n > server.fail_after:
                    return self._send(500, {"error": {"message": "the judge is down"}})
                if server.delay_s:
                    time.sleep(server.delay_s)
                text = server.script(prompt, int(body.get("seed", 0)))
                with server._lock:
                    server.prompts.append(prompt)
                    server.bodies.append(body)
                message = {"role": "assistant", **text} if isinstance(text, dict) else {"role": "assistant", "content": text}
                self._send(200, {"id": "j", "object": "chat.completion", "model": body.get("model", ""),
                                 "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 5}})

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
