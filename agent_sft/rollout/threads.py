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

from agent_sft.rollout.pool_base import EnvHandle, SlotPool
from agent_sft.rollout.pools import Reply, build_env, describe_error, run_command


class _Session(EnvHandle):
    """One env in its own daemon thread; `built` resolves to the build's `Reply`."""

    def __init__(self, factory: Any, kwargs: dict, slot: int):
        self.factory = factory
        self.kwargs = kwargs
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.built: Future = Future()
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


class ThreadPool(SlotPool):
    """`size` envs in threads of this process, addressed by slot: the `thread` backend of `EnvPool`
    (arguments: `SlotPool`)."""

    def _launch(self, slot: int) -> _Session:
        return _Session(self.factory, self.kwargs, slot)

    def _built(self, handle: _Session, timeout_s: float) -> Reply | None:
        return handle.built.result() if wait_futures([handle.built], timeout=timeout_s).done else None

    def _send(self, handle: _Session, msg: tuple[str, tuple]) -> Future:
        return handle.submit(msg)

    def _poll(self, waiting: dict[int, tuple[_Session, Future]], timeout_s: float) -> list[tuple[int, Reply, bool]]:
        # A session still building answers its build first: a failed build never runs the request.
        futures = {(answer if s.ready else s.built): i for i, (s, answer) in waiting.items()}
        done, _ = wait_futures(list(futures), timeout=timeout_s, return_when=FIRST_COMPLETED)
        return [(futures[f], f.result(), not waiting[futures[f]][0].ready) for f in done]

    def _kill(self, handle: _Session) -> None:
        """Retire the session (left to finish on its own)."""
        handle.retire()

    def _close(self, handles: list[_Session], timeout: float = 5.0) -> None:
        """Retire every session, waiting up to `timeout` seconds in all for their threads."""
        for s in handles:
            s.retire()
        deadline = time.monotonic() + timeout
        for s in handles:
            s.thread.join(max(0.0, deadline - time.monotonic()))
