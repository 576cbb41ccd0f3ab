"""What every env pool does, whatever runs its envs: slots, counters, resize and replace, the deadline loop.

A backend (`threads.ThreadPool`, `workers.WorkerPool`, `ray_pool.RayEnvPool`) subclasses `SlotPool` and
says only how one env is run, through five methods on a handle of its own (an `EnvHandle`):

- `_launch(slot)`: start building one env in the background; its handle.
- `_built(handle, timeout_s)`: wait at most `timeout_s` for the build; its `Reply` (`value`: the
  env_kwargs the factory took), or None when it is not done yet.
- `_send(handle, msg)`: send one `(command, args)` request; a token `_poll` gets back, or None when the
  env is gone already (its slot is then polled at once).
- `_poll(waiting, timeout_s)`: wait at most `timeout_s` for answers of `waiting` (`{slot: (handle,
  token)}`); each as `(slot, reply, build)`, `build` when it is the build's answer of a handle not
  `ready` yet, which a backend that queues requests behind the build gives first.
- `_kill(handle)`: end one env now (a thread cannot be killed: it is abandoned); `_stop` (a slot
  dropped by `resize`) and `_close` (the whole pool) default to it.

A new backend is then one module with these methods and one row in `pools.BACKENDS` (`register_pool`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from agent_sft.envs import EnvSpec, spec
from agent_sft.rollout.pools import PoolCounters, Reply, WorkerStartError, build_failed, timed_out


class EnvHandle:
    """One env of a pool as its backend holds it; the pool keeps `started`, `ready` and `busy` on it."""

    slot: int = 0
    started: float = 0.0  # time.monotonic() when it was launched
    ready: bool = False  # its build answered
    busy: bool = False  # a request was sent and its answer not taken yet


class SlotPool:
    """`size` envs addressed by slot: the bookkeeping of `EnvPool`, for a backend to subclass.

    Args:
        env: Registered env name, or its spec.
        size: Number of envs.
        env_kwargs: Keyword arguments of the env factory.
        timeout_s: Deadline of one reset/step.
        start_timeout_s: Deadline for an env to be built.
    """

    noun = "env worker"  # how a start timeout names one env
    build_before_send = False  # True: `call` waits for a slot's build before sending (its backend cannot queue)

    def __init__(self, env: str | EnvSpec, size: int, env_kwargs: dict | None = None, timeout_s: float = 120.0,
                 start_timeout_s: float = 300.0):
        self.factory = (env if isinstance(env, EnvSpec) else spec(env)).entry_point
        self.kwargs = dict(env_kwargs or {})
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.counters = PoolCounters()
        self._lock = threading.Lock()  # counters: `call` runs in several threads at once in the async loop
        self.accepted: list[str] = []  # the env_kwargs the factory took
        self.closed = False
        self.slots: list[Any] = []
        try:
            self.resize(size)
            self.await_ready()
        except BaseException:
            self.close()
            raise

    # --- the backend's part ---------------------------------------------------------------------------

    def _launch(self, slot: int) -> EnvHandle:
        raise NotImplementedError

    def _built(self, handle: Any, timeout_s: float) -> Reply | None:
        raise NotImplementedError

    def _send(self, handle: Any, msg: tuple[str, tuple]) -> Any:
        raise NotImplementedError

    def _poll(self, waiting: dict[int, tuple[Any, Any]], timeout_s: float) -> Iterable[tuple[int, Reply, bool]]:
        raise NotImplementedError

    def _kill(self, handle: Any) -> None:
        raise NotImplementedError

    def _stop(self, handle: Any) -> None:
        self._kill(handle)

    def _close(self, handles: list[Any]) -> None:
        for h in handles:
            self._kill(h)

    def _start_hint(self) -> str:
        """Said after a start timeout (what may be keeping the env from starting)."""
        return ""

    # --- the bookkeeping ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.slots)

    def _start(self, slot: int) -> EnvHandle:
        with self._lock:
            self.counters.started += 1
        handle = self._launch(slot)
        handle.slot, handle.started = slot, time.monotonic()
        return handle

    def _take_build(self, handle: EnvHandle, r: Reply) -> None:
        if not r.ok:
            raise build_failed(r.error)
        handle.ready = True
        self.accepted = r.value

    def _await_slot(self, i: int) -> None:
        h = self.slots[i]
        if h.ready:
            return
        left = self.start_timeout_s - (time.monotonic() - h.started)
        r = self._built(h, max(left, 0.0))
        if r is None:
            raise WorkerStartError(f"{self.noun} {i} did not start within {self.start_timeout_s:.0f} s"
                                   f"{self._start_hint()}")
        self._take_build(h, r)

    def await_ready(self) -> None:
        """Wait until every env is built.

        Raises:
            WorkerStartError: an env could not be built, died, or took past `start_timeout_s`.
        """
        for i in range(len(self.slots)):
            self._await_slot(i)

    def resize(self, size: int) -> None:
        """Close the envs past `size`, or start more (they build in the background)."""
        for h in self.slots[size:]:
            self._stop(h)
        del self.slots[size:]
        while len(self.slots) < size:
            self.slots.append(self._start(len(self.slots)))

    def replace(self, slot: int) -> None:
        """End the env of `slot` and start a new one there (it builds in the background); nothing once the
        pool is closed (a call that was in flight then sees its env end)."""
        if self.closed:
            return
        self._kill(self.slots[slot])
        self.slots[slot] = self._start(slot)
        with self._lock:
            self.counters.replaced += 1

    def call(self, requests: dict[int, tuple[str, tuple]]) -> dict[int, Reply]:
        """Send `{slot: (command, args)}` to the envs at once, and collect every reply.

        A request that errs, passes `timeout_s`, or whose env dies gets a failed `Reply`, and its slot
        gets a fresh env. A fresh env that cannot be built raises `WorkerStartError`.
        """
        t0 = time.perf_counter()
        if self.build_before_send:
            for slot in requests:
                self._await_slot(slot)
        now = time.monotonic()
        handles = self.slots  # `close` may empty the list while this call waits
        deadlines: dict[int, float] = {}
        tokens: dict[int, Any] = {}
        for slot, msg in requests.items():
            h = handles[slot]
            deadlines[slot] = now + self.timeout_s + (0.0 if h.ready else self.start_timeout_s)
            h.busy = True
            tokens[slot] = self._send(h, msg)
            if tokens[slot] is None:
                deadlines[slot] = now  # reported as dead below
        replies: dict[int, Reply] = {}
        pending = dict(deadlines)
        while pending:
            if self.closed:  # its envs are gone: nothing more will come
                replies.update((slot, Reply(False, error="the env pool was closed")) for slot in pending)
                break
            wait_s = max(0.0, min(pending.values()) - time.monotonic())
            for slot, r, build in self._poll({s: (handles[s], tokens[s]) for s in pending}, wait_s):
                if build:
                    self._take_build(handles[slot], r)
                    continue
                handles[slot].busy = False
                replies[slot] = r
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

    def close(self) -> None:
        """Close every env (an abandoned one is left to finish on its own)."""
        self.closed = True
        handles, self.slots = self.slots, []
        self._close(handles)
