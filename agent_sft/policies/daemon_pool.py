"""A thread pool whose threads the interpreter's exit does not wait for, for requests that may block.

`concurrent.futures.ThreadPoolExecutor` joins its threads when the interpreter exits, even after
`shutdown(wait=False)`; an HTTP request blocked on a server that stopped answering ends only at its
timeout, so a run stopped by an error (or interrupted) would end that long after it said so. Here the
threads are daemon threads, as the rollout loop's episode threads are, and once the pool is abandoned
its callers stop waiting too: nothing waits for a request whose answer no one will take.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from agent_sft.policies.inbox import drain


class DaemonPool:
    """`map` over at most `workers` daemon threads, started as work comes."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = max(1, workers)
        self.name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = 0
        self._idle = threading.Semaphore(0)  # released by a thread each time it is done with a call
        self._closed = False
        self._abandoned: Future = Future()  # fails with the error `abandon` was given
        self._lock = threading.Lock()

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
        """`[fn(*args) for args in zip(*iterables)]`, run on the pool; the first exception (in order) is
        raised and the calls not started yet are cancelled. Once the pool is abandoned, its error is
        raised at once."""
        if self._abandoned.done():
            self._abandoned.result()  # raises
        futures = [self._submit(fn, args) for args in zip(*iterables)]
        try:
            pending = set(futures)
            while pending and not self._abandoned.done():
                _, pending = wait(pending | {self._abandoned}, return_when=FIRST_COMPLETED)
                pending.discard(self._abandoned)
            if self._abandoned.done():
                self._abandoned.result()  # raises
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()

    def abandon(self, error: BaseException) -> None:
        """Every `map` call, waiting or to come, raises `error` (the first one given) at once; the calls
        running end on their own, their results dropped."""
        with self._lock:
            if not self._abandoned.done():
                self._abandoned.set_exception(error)

    def shutdown(self) -> None:
        """Cancel the calls not started; each thread ends once its call returns (none is waited for)."""
        with self._lock:
            self._closed = True
            for future, _, _ in drain(self._jobs):
                future.cancel()
            for _ in range(self._threads):
                self._jobs.put(None)

    def _submit(self, fn: Callable[..., Any], args: tuple) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name}: cannot take work after shutdown")
            self._jobs.put((future, fn, args))
            if not self._idle.acquire(blocking=False) and self._threads < self.workers:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self.name}-{self._threads}", daemon=True).start()
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as e:  # noqa: BLE001 - the caller of `map` gets it
                    future.set_exception(e)
            self._idle.release()
