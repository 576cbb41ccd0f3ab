"""One daemon thread answering what many threads ask: the skeleton of the micro-batcher and the vLLM engine loop.

An ask puts `(payload, answer)` in the inbox and blocks on `answer` (a `Future`); the thread takes what
waits with `_next`, answers each future, and, once it fails, fails every waiting ask and each one after
with the same error. `close` puts the stop marker (None) in the inbox.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any

from agent_sft.policies.base import PolicyError


class PolicyClosed(PolicyError):
    """The run is stopping: no more answers."""


def drain(inbox: queue.SimpleQueue) -> list[Any]:
    """Everything in `inbox` now, without waiting, stop markers (None) left out."""
    items = []
    while True:
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            return items
        if item is not None:
            items.append(item)


class InboxThread:
    """A daemon thread named `name` running `_serve`, which takes `(payload, answer)` pairs with `_next`.

    A subclass writes `_serve` (answer what `_next` gives until it gives None, then return) and calls
    `_fail(error, answers)` when it cannot go on.
    """

    join_s = 5.0  # how long `close` waits for the thread

    def __init__(self, name: str) -> None:
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._failed: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        """Raise the thread's error, or `PolicyClosed` once closed."""
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise PolicyClosed("the policy is closed")

    def _ask(self, payload: Any) -> Any:
        """Put `payload` in the inbox and wait for its answer (see `_check_open`)."""
        self._check_open()
        answer: Future = Future()
        self._inbox.put((payload, answer))
        return answer.result()

    def _next(self, block: bool, limit: int | None = None) -> list[tuple[Any, Future]] | None:
        """What waits in the inbox (at most `limit`; with `block`, waiting for a first one); None once closed.

        The stop marker ends a batch and is kept for the next call, so what was asked before `close` is
        answered first.
        """
        items: list[tuple[Any, Future]] = []
        if block:
            first = self._inbox.get()
            if first is None:
                return None
            items.append(first)
        while limit is None or len(items) < limit:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is None:
                if not items:
                    return None
                self._inbox.put(None)
                break
            items.append(item)
        return items

    def _fail(self, error: BaseException, answers: list[Future]) -> None:
        """Every answer waited for, in `answers` or the inbox, and every later ask, raise `error`."""
        self._failed = error
        for answer in answers:
            answer.set_exception(error)
        self._drain(error)

    def _drain(self, error: BaseException) -> None:
        for _, answer in drain(self._inbox):
            answer.set_exception(error)

    def close(self) -> None:
        """Stop answering; asks waiting or arriving later raise `PolicyClosed`."""
        self._closed = True
        self._inbox.put(None)
        self._thread.join(timeout=self.join_s)
        self._drain(PolicyClosed("the policy is closed"))
