"""`policy.type=openai`: any OpenAI-compatible `/chat/completions` server (vllm serve, SGLang, TGI, hosted).

Every live conversation of a turn is sent at once, at most `policy.concurrency` in flight. 429s, 5xx,
connection errors, timeouts and unreadable answers are retried with exponential backoff and jitter
(`policy.max_retries` times); a request that still fails becomes `Completion(error=...)` so that only
its episode ends. A 400 saying the prompt exceeds the context becomes `finish_reason="context_truncated"`
(`records.END_CONTEXT`). The API key is read from the environment variable `policy.api_key_env` and never
recorded.

A server that is not there, or that is there but never answers usefully, stops the run instead of
failing every episode: `probe_server` checks it answers at all before a run starts; once
`UNREACHABLE_AFTER` requests in a row got no answer (after their retries) the policy raises
`ServerGoneError`, and once `policy.max_consecutive_failures` requests in a row failed for good (no
good answer since, whatever the failure; a context-length 400 is neither) it raises `ServerFailingError`.
Requests waiting to retry then give up at once, so the stop comes as soon as the count is reached. A key
the server refuses (401/403) or a model it does not know (404) raises `ServerRefusedError` at the first
request. Requests run on daemon threads: one blocked on a server that hangs does not hold the process's end.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
from typing import TYPE_CHECKING, Any

from agent_sft.errors import RunFailedError
from agent_sft.policies.base import Completion, PolicyError
from agent_sft.policies.common import check_seeds, context_truncated, model_label, require, sampling_json
from agent_sft.policies.daemon_pool import DaemonPool
from agent_sft.policies.tool_calls import api_messages, read_api_answer, tools_offered
from agent_sft.records import Message, PolicyInfo

if TYPE_CHECKING:
    from agent_sft.config import PolicyConfig

_CONTEXT_RE = re.compile(
    r"context length|context_length|context window|maximum model length|max_model_len|"
    r"prompt is too long|input is too long|too many tokens|must be <=|exceeds? the (?:maximum|max)",
    re.IGNORECASE,
)
_RETRY_STATUS = {408, 409, 425, 429}
UNREACHABLE_AFTER = 3  # requests in a row lost without any answer from the server: it is gone
PROBE_TIMEOUT_S = 10.0


class ServerRefusedError(PolicyError):
    """The server answered that no request can succeed: `kind` is "auth" (401/403) or "model" (404)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class ServerUnreachableError(PolicyError):
    """The server does not answer at all (connection refused, unknown host, timeouts)."""

    def __init__(self, message: str, base_url: str) -> None:
        super().__init__(message)
        self.base_url = base_url


class ServerGoneError(ServerUnreachableError, RunFailedError):
    """The server answered earlier in the run and stopped answering at all."""


class ServerFailingError(PolicyError, RunFailedError):
    """The server answers, but `policy.max_consecutive_failures` requests in a row failed for good."""

    def __init__(self, message: str, base_url: str) -> None:
        super().__init__(message)
        self.base_url = base_url


class _NoAnswer(Exception):
    """A try that got no HTTP answer (a connection-level failure)."""


class _ContextTooLong(Exception):
    """The server refused the request because its prompt exceeds the model's context."""


def probe_server(cfg: PolicyConfig, *, timeout_s: float = PROBE_TIMEOUT_S, transport: Any = None) -> None:
    """Check that something answers HTTP at `cfg.base_url` (`GET {base_url}/models`), before a run starts.

    Any HTTP answer passes, a 404 or a 401 included (servers differ in what they serve there; the
    first chat request tells a refused key or an unknown model). Only a failure to get an answer at all
    is fatal.

    Raises:
        ServerUnreachableError: connection refused, unknown host, timeout, or a URL that cannot be used.
    """
    httpx = require("httpx", "openai")
    base = cfg.base_url.rstrip("/")
    try:
        with httpx.Client(timeout=httpx.Timeout(min(timeout_s, float(cfg.request_timeout_s))), transport=transport) as client:
            client.get(base + "/models", headers=_auth_headers(cfg))
    except (httpx.TransportError, httpx.InvalidURL) as e:
        raise ServerUnreachableError(
            f"no policy server answers at {base} (GET {base}/models: {_why(e)}); "
            "check that the server is running and that policy.base_url is its address", base
        ) from None


def precheck(cfg: PolicyConfig) -> None:
    """The policy table's check before a collection plays: the server answers (`probe_server`).

    Raises:
        ServerUnreachableError: as `probe_server`, saying that nothing was played.
    """
    try:
        probe_server(cfg)
    except ServerUnreachableError as err:
        raise ServerUnreachableError(f"{err}. Nothing was played.", err.base_url).with_hint("") from None


def _auth_headers(cfg: PolicyConfig) -> dict[str, str]:
    key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
    return {"Authorization": f"Bearer {key}"} if key else {}


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e or 'no detail'}"


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class OpenAIPolicy:
    """A policy calling an OpenAI-compatible chat completions endpoint.

    Args:
        cfg: `model` (as the server names it), `base_url`, `api_key_env`, `concurrency`,
            `request_timeout_s`, `max_retries`, and the sampling settings.
        backoff_s: First retry delay; doubles each retry (with full jitter), capped at `max_backoff_s`.
        max_backoff_s: Longest wait between two tries.
        transport: An `httpx` transport to use instead of the network (for tests).
    """

    thread_safe = True  # the async loop asks from every episode's thread; `policy.concurrency` still bounds requests

    def __init__(
        self,
        cfg: PolicyConfig,
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        transport: Any = None,
    ) -> None:
        self.cfg = cfg
        httpx = self._httpx = require("httpx", "openai")
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        headers = {"Content-Type": "application/json", **_auth_headers(cfg)}
        t = float(cfg.request_timeout_s)
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(t, connect=min(t, 10.0)),
            limits=httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency),
            transport=transport,
        )
        self._pool = DaemonPool(cfg.concurrency, "agent-sft-openai")
        self._lock = threading.Lock()
        self.requests_sent = 0
        self._lost_in_a_row = 0  # requests given up without any answer since the last answer
        self._failed_in_a_row = 0  # requests failed for good since the last good answer
        self._stop: PolicyError | None = None  # once set, every request raises it: the run stops
        self._stopping = threading.Event()  # wakes the requests waiting to retry when `_stop` is set

    def act(
        self,
        conversations: list[list[Message]],
        seeds: list[int],
        infos: list[dict[str, Any]] | None = None,
    ) -> list[Completion]:
        check_seeds(conversations, seeds)
        tools = [tools_offered(infos, i) for i in range(len(conversations))]
        return list(self._pool.map(self._complete, conversations, seeds, tools))

    def request_body(self, conversation: list[Message], seed: int, tools: list[dict] | None = None) -> dict[str, Any]:
        """The JSON body sent for one conversation (offering `tools` when given: the server's tool parser reads
        the calls)."""
        cfg = self.cfg
        greedy = not cfg.do_sample
        body: dict[str, Any] = {
            "model": cfg.model,
            "messages": (api_messages(conversation) if tools is not None
                         else [{"role": m["role"], "content": m["content"]} for m in conversation]),
            "max_tokens": cfg.max_tokens,
            "temperature": 0.0 if greedy else cfg.temperature,
            "top_p": 1.0 if greedy else cfg.top_p,
            "seed": int(seed),
            "n": 1,
        }
        if cfg.top_k > 0 and not greedy:
            body["top_k"] = cfg.top_k  # not in OpenAI's API; vLLM, SGLang and TGI accept it
        if cfg.stop:
            body["stop"] = list(cfg.stop)
        if tools is not None:
            body["tools"] = tools
            if cfg.tool_choice != "auto":  # the API's default with tools
                body["tool_choice"] = cfg.tool_choice
        if cfg.record_tokens:
            # vLLM's server: `return_token_ids` adds the prompt's (`prompt_token_ids`) and the choice's
            # (`token_ids`) ids; `return_tokens_as_token_ids` writes the logprobs' tokens as "token_id:<id>".
            body.update(logprobs=True, return_token_ids=True, return_tokens_as_token_ids=True)
            if cfg.logprobs:
                body["top_logprobs"] = cfg.logprobs
        return body

    def _complete(self, conversation: list[Message], seed: int, tools: list[dict] | None = None) -> Completion:
        body = self.request_body(conversation, seed, tools)
        reason, retry_after, answered = "", None, False
        for attempt in range(self.cfg.max_retries + 1):
            self._check_stop()
            if attempt:
                self._sleep(attempt, retry_after)
                self._check_stop()
            try:
                done = self._post(body)
            except _NoAnswer as e:
                reason, retry_after, answered = str(e), None, False
            except _Retryable as e:
                reason, retry_after, answered = str(e), e.retry_after, True
            except _ContextTooLong:  # about this request only: it ends its episode, and says nothing of the server
                return context_truncated(None)
            except PolicyError:
                raise
            except Exception as e:  # anything else: this request is lost, the batch goes on
                return self._give_up(f"{type(e).__name__}: {e}")
            else:
                with self._lock:
                    self._failed_in_a_row = 0
                return done
        if not answered:
            self._lost(reason)
        return self._give_up(f"gave up after {self.cfg.max_retries + 1} tries: {reason}")

    def _check_stop(self) -> None:
        if self._stop is not None:
            raise self._stop

    def _answered(self) -> None:
        """The server answered (whatever it said): it is there."""
        with self._lock:
            self._lost_in_a_row = 0

    def _lost(self, reason: str) -> None:
        """A request got no answer in any try; `UNREACHABLE_AFTER` in a row stop the run."""
        base = self.cfg.base_url.rstrip("/")
        with self._lock:
            self._lost_in_a_row += 1
            if self._lost_in_a_row >= UNREACHABLE_AFTER:
                self._stop_with(ServerGoneError(self._mask(
                    f"the policy server at {base} stopped answering: {self._lost_in_a_row} requests in a row got no "
                    f"answer after {self.cfg.max_retries + 1} tries each (last: {_snippet(reason)}); check that the server "
                    "is still running and reachable at policy.base_url"), base))
        self._check_stop()

    def _give_up(self, reason: str) -> Completion:
        """A request failed for good: its episode ends as an error, unless it is the
        `policy.max_consecutive_failures`-th in a row, which stops the run."""
        base = self.cfg.base_url.rstrip("/")
        with self._lock:
            self._failed_in_a_row += 1
            n = self._failed_in_a_row
            if n >= self.cfg.max_consecutive_failures:
                self._stop_with(ServerFailingError(self._mask(
                    f"the policy server at {base} failed {n} requests in a row with no good answer since "
                    f"(policy.max_consecutive_failures={self.cfg.max_consecutive_failures}); the last: {_snippet(reason)}"), base))
        self._check_stop()
        return self._failed(reason)

    def _stop_with(self, error: PolicyError) -> None:
        """Stop the run with `error` (the first one stays); requests waiting to retry give up now. Under `_lock`."""
        if self._stop is None:
            self._stop = error
            self._stopping.set()
            self._pool.abandon(error)  # `act` calls waiting on requests in flight raise it now

    def _post(self, body: dict[str, Any]) -> Completion:
        httpx = self._httpx
        with self._lock:
            self.requests_sent += 1
        try:
            r = self._client.post(self.url, json=body)
        except httpx.TransportError as e:  # connect/read timeouts, refused and reset connections
            raise _NoAnswer(_why(e)) from None
        self._answered()
        if r.status_code == 200:
            try:
                data = r.json()
                choice = data["choices"][0]
                text = choice["message"]["content"] or ""
                usage = data.get("usage") or {}
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise _Retryable(f"malformed response ({type(e).__name__}): {_snippet(r.text)}") from None
            details = usage.get("prompt_tokens_details") or {}
            c = Completion(
                text=text,
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                finish_reason=choice.get("finish_reason"),
                cached_tokens=details.get("cached_tokens") if isinstance(details, dict) else None,
            )
            if self.cfg.record_tokens:
                _fill_tokens(c, data, choice, self.cfg.logprobs)
            if "tools" in body:
                read_api_answer(c, choice["message"])
            return c
        detail = _error_message(r)
        if r.status_code in _RETRY_STATUS or r.status_code >= 500:
            raise _Retryable(f"HTTP {r.status_code}: {detail}", _retry_after(r))
        if r.status_code in (400, 413, 422) and _CONTEXT_RE.search(detail):
            raise _ContextTooLong()
        if r.status_code in (401, 403, 404):
            # every request would fail the same way: stop the run instead of recording errors
            kind = "model" if r.status_code == 404 else "auth"
            hint = "check the API key (policy.api_key_env)" if kind == "auth" else "check policy.model and policy.base_url"
            raise ServerRefusedError(self._mask(f"HTTP {r.status_code} from the server's /chat/completions: {detail}; {hint}"), kind)
        raise RuntimeError(f"HTTP {r.status_code} from the server's /chat/completions: {detail}")

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        delay = random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff_s))
        self._stopping.wait(delay)

    def _mask(self, message: str) -> str:
        return message.replace(self._key, "***") if self._key else message

    def _failed(self, message: str) -> Completion:
        return Completion(text="", finish_reason="error", error=self._mask(message))

    def describe(self) -> PolicyInfo:
        return PolicyInfo(kind="openai", model=model_label(self.cfg.model), sampling=sampling_json(self.cfg))

    def close(self) -> None:
        # Requests in flight or waiting to retry (the run was interrupted) are not waited for: no episode is
        # left to take their answers, and a slow server would hold the run's end for a request timeout.
        with self._lock:
            self._stop_with(PolicyError("the policy is closed"))
        self._pool.shutdown()
        self._client.close()


def _fill_tokens(c: Completion, data: dict, choice: dict, top_n: int | None) -> None:
    """The token ids and logprobs a server returned, each left None where it sent none or something unreadable
    (the episode's capture is then incomplete: nothing is re-tokenized here)."""
    c.prompt_token_ids = _ids(data.get("prompt_token_ids"))
    c.completion_token_ids = ids = _ids(choice.get("token_ids"))
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if ids is None or not isinstance(content, list) or len(content) != len(ids):
        return
    try:
        c.logprobs = [float(e["logprob"]) for e in content]
        if top_n:
            top = [[{"token_id": _token_id(t["token"]), "logprob": float(t["logprob"])} for t in e.get("top_logprobs") or []]
                   for e in content]
            c.top_logprobs = None if any(t["token_id"] is None for at in top for t in at) else top
    except (KeyError, TypeError, ValueError):
        c.logprobs = c.top_logprobs = None


def _ids(value: Any) -> list[int] | None:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None
    return value


def _token_id(token: Any) -> int | None:
    """The id in vLLM's "token_id:<id>" form of a logprob's token, else None."""
    if isinstance(token, str) and token.startswith("token_id:") and token[9:].lstrip("-").isdigit():
        return int(token[9:])
    return None


def _error_message(r: Any) -> str:
    """The server's error message (OpenAI `{"error": {"message"}}`, TGI `{"error": str}`, ...) or the body."""
    try:
        data = r.json()
    except ValueError:
        return _snippet(r.text)
    if isinstance(data, dict):
        err = data.get("error", data.get("message", data.get("detail")))
        if isinstance(err, dict):
            err = err.get("message") or json.dumps(err)
        if err:
            return _snippet(str(err))
    return _snippet(json.dumps(data))


def _retry_after(r: Any) -> float | None:
    try:
        return max(0.0, float(r.headers.get("retry-after", "")))
    except ValueError:
        return None


def _snippet(text: str, n: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."
