"""The `thread` env pool: one thread of this process per env, for envs that spend their steps waiting.

An env whose `step` waits on a server (a web page, a remote simulator) costs a whole process in the
`process` pool; here it costs a thread. Each env lives in a session: a thread that builds the env, then
answers the requests put in its inbox, one at a time. A thread cannot be killed, so a session whose
request passes the step timeout is abandoned: the episode ends as an error, its thread finishes the
request on its own and then closes its env, and a fresh session takes the slot. A session whose env
raised is retired the same way (the env may be left half-changed).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from typing import Any

from agent_sft.envs import EnvSpec, spec
from agent_sft.rollout.pools import (
    PoolCounters,
    Reply,
    WorkerStartError,
    build_env,
    build_failed,
    describe_error,
    run_command,
    timed_out,
)


class _Session:
    """One env in its own daemon thread; `built` resolves to the build's `Reply`."""

    def __init__(self, factory: Any, kwargs: dict, slot: int):
        self.factory = factory
        self.kwargs = kwargs
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.built: Future = Future()
        self.ready = False
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._main, name=f"agent-sft-env-{slot}", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            env, accepted = build_env(self.factory, self.kwargs)
        except BaseException as e:  # noqa: BLE001 - reported to the pool, which decides
            self.built.set_result(Reply(False, error=describe_error(e)))
            return
        self.built.set_result(Reply(True, accepted))
        try:
            while True:
                item = self.inbox.get()
                if item is None:
                    break
                (cmd, args), answer = item
                try:
                    answer.set_result(Reply(True, run_command(env, cmd, args)))
                except BaseException as e:  # noqa: BLE001 - becomes the episode's error; the session is retired
                    answer.set_result(Reply(False, error=describe_error(e)))
        finally:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - the session is going away anyway
                pass

    def submit(self, msg: tuple[str, tuple]) -> Future:
        answer: Future = Future()
        self.inbox.put((msg, answer))
        return answer

    def retire(self) -> None:
        """Take no more requests: the thread closes its env once what it is doing returns."""
        self.inbox.put(None)


class ThreadPool:
    """`size` envs in threads of this process, addressed by slot: the `thread` backend of `EnvPool`.

    Args:
        env: Registered env name, or its spec.
        size: Number of envs.
        env_kwargs: Keyword arguments of the env factory.
        timeout_s: Deadline of one reset/step.
        start_timeout_s: Deadline for an env to be built.
    """

    def __init__(
        self,
        env: str | EnvSpec,
        size: int,
        env_kwargs: dict | None = None,
        timeout_s: float = 120.0,
        start_timeout_s: float = 300.0,
    ):
        self.factory = (env if isinstance(env, EnvSpec) else spec(env)).entry_point
        self.kwargs = dict(env_kwargs or {})
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.counters = PoolCounters()
        self._lock = threading.Lock()  # counters: `call` runs in several threads at once in the async loop
        self.accepted: list[str] = []  # the env_kwargs the factory took
        self.sessions: list[_Session] = [self._start(i) for i in range(size)]
        try:
            self.await_ready()
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.sessions)

    def _start(self, slot: int) -> _Session:
        with self._lock:
            self.counters.started += 1
        return _Session(self.factory, self.kwargs, slot)

    def _take_ready(self, s: _Session) -> None:
        r: Reply = s.built.result()
        if not r.ok:
            raise build_failed(r.error)
        s.ready = True
        self.accepted = r.value

    def await_ready(self) -> None:
        """Wait until every env is built.

        Raises:
            WorkerStartError: an env could not be built, or took past `start_timeout_s`.
        """
        for i, s in enumerate(self.sessions):
            if s.ready:
                continue
            left = self.start_timeout_s - (time.monotonic() - s.started)
            if not wait_futures([s.built], timeout=max(left, 0.0)).done:
                raise WorkerStartError(f"env worker {i} did not start within {self.start_timeout_s:.0f} s")
            self._take_ready(s)

    def resize(self, size: int) -> None:
        """Close the envs past `size`, or start more (they build in the background)."""
        for s in self.sessions[size:]:
            s.retire()
        del self.sessions[size:]
        while len(self.sessions) < size:
            self.sessions.append(self._start(len(self.sessions)))

    def replace(self, slot: int) -> None:
        """Retire the session of `slot` (left to finish on its own) and start a new one there."""
        self.sessions[slot].retire()
        self.sessions[slot] = self._start(slot)
        with self._lock:
            self.counters.replaced += 1

    def call(self, requests: dict[int, tuple[str, tuple]]) -> dict[int, Reply]:
        """Send `{slot: (command, args)}` to the envs at once, and collect every reply.

        A request that raises or passes `timeout_s` gets a failed `Reply`, and its slot gets a fresh
        session. A fresh session whose env cannot be built raises `WorkerStartError`.
        """
        t0 = time.perf_counter()
        now = time.monotonic()
        deadlines: dict[int, float] = {}
        answers: dict[int, Future] = {}
        for slot, msg in requests.items():
            s = self.sessions[slot]
            deadlines[slot] = now + self.timeout_s + (0.0 if s.ready else self.start_timeout_s)
            answers[slot] = s.submit(msg)
        replies: dict[int, Reply] = {}
        pending = dict(deadlines)
        while pending:
            # A session still building answers its build first: a failed build never runs the request.
            waiting = {(answers[i] if self.sessions[i].ready else self.sessions[i].built): i for i in pending}
            wait_s = max(0.0, min(pending.values()) - time.monotonic())
            done, _ = wait_futures(list(waiting), timeout=wait_s, return_when=FIRST_COMPLETED)
            for f in done:
                slot = waiting[f]
                if not self.sessions[slot].ready:
                    self._take_ready(self.sessions[slot])
                    continue
                replies[slot] = f.result()
                del pending[slot]
            now = time.monotonic()
            for slot, deadline in list(pending.items()):
                if now >= deadline:
                    replies[slot] = timed_out(requests[slot][0], self.timeout_s)
                    del pending[slot]
        for slot, r in replies.items():
            if not r.ok:
                with self._lock:
                    self.counters.errors += 1
                self.replace(slot)
        with self._lock:
            self.counters.env_s += time.perf_counter() - t0
        return replies

    def close(self, timeout: float = 5.0) -> None:
        """Close every env, waiting up to `timeout` seconds in all for their threads."""
        for s in self.sessions:
            s.retire()
        deadline = time.monotonic() + timeout
        for s in self.sessions:
            s.thread.join(max(0.0, deadline - time.monotonic()))
        self.sessions = []
