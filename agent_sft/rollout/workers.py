"""The `process` env pool: worker processes, one env each, driven over a pipe, replaced when they fail.

Workers are started with `spawn`, so they never inherit a parent that has imported torch or vLLM. The
pool sends a command to many workers at once and collects the replies with a deadline per request; a
worker whose env raised, hung past the deadline or died is killed, and a fresh one starts in its slot.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
import time
import traceback
from multiprocessing.connection import wait
from typing import Any

from agent_sft.envs import EnvSpec, canonical_name, spec
from agent_sft.procs import exit_now
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


def canonical_env_name(name: str) -> str:
    """The name episode ids use for `name`: aliases (`alfworld/AlfredTWEnv`) give the same ids as the
    env they stand for (see `agent_sft.envs.canonical_name`)."""
    return canonical_name(name)


def worker_main(conn: Any, factory: Any, kwargs: dict, quiet_build: bool = False) -> None:
    """Body of a worker process: build the env, then answer `reset`/`step`/`tasks` until `close`.

    `factory` is the env's entry point (`"module:attr"` or a callable importable here): the worker never
    reads a registry, so an env registered at run time in the parent builds here too.

    With `quiet_build`, warnings while the env is built are not shown: every worker builds the same env,
    and the first one has said it already.
    """
    import logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    if quiet_build:
        logging.disable(logging.WARNING)
    try:
        env, accepted = build_env(factory, kwargs)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which decides
        conn.send(Reply(False, error=describe_error(e)))
        return
    finally:
        logging.disable(logging.NOTSET)
    conn.send(Reply(True, accepted))
    code = 0
    try:
        _serve(conn, env)
    except BaseException:  # noqa: BLE001 - a bug of the loop itself: said, and the exit status tells the parent
        traceback.print_exc()
        code = 1
    finally:
        try:
            env.close()
        except Exception:  # noqa: BLE001 - the process is going away anyway
            pass
    # the interpreter's teardown of an engine's modules (a second or more for ALFWorld, more under load) is
    # skipped: it frees nothing the OS does not
    exit_now(code)


def _serve(conn: Any, env: Any) -> None:
    """Answer the parent's commands until `close`, or until the parent is gone."""
    while True:
        try:
            cmd, args = conn.recv()
        except (EOFError, OSError):
            return
        if cmd == "close":
            return
        try:
            reply = Reply(True, run_command(env, cmd, args))
        except Exception as e:  # noqa: BLE001 - becomes the episode's error
            reply = Reply(False, error=describe_error(e))
        try:
            conn.send(reply)
        except (BrokenPipeError, ConnectionResetError):
            return
        except Exception as e:  # noqa: BLE001 - an answer that cannot be pickled (nothing was sent)
            conn.send(Reply(False, error=describe_error(e)))


# How long an idle worker may take to close its env before it is killed.
CLOSE_TIMEOUT_S = 5.0


class _Worker:
    def __init__(self, ctx: Any, factory: Any, kwargs: dict, slot: int, quiet_build: bool = False):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=worker_main, args=(child, factory, kwargs, quiet_build), name=f"agent-sft-env-{slot}", daemon=True
        )
        self.process.start()
        child.close()
        self.started = time.monotonic()
        self.ready = False
        self.busy = False  # a request was sent and its reply not read yet

    def stop(self) -> None:
        """Ask the process to end without waiting. An idle worker closes its env; one still building its env,
        or inside a request whose reply nobody will read (the caller was interrupted), is terminated at once."""
        if self.ready and not self.busy:
            try:
                self.conn.send(("close", ()))
                return
            except (OSError, BrokenPipeError):
                pass
        self.process.terminate()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        self.stop()
        self.process.join(timeout=timeout)
        self.kill()


class WorkerPool:
    """`size` env processes, addressed by slot: the `process` backend of `EnvPool`.

    Args:
        env: Registered env name, or its spec.
        size: Number of worker processes.
        env_kwargs: Keyword arguments of the env factory.
        timeout_s: Deadline of one reset/step.
        start_timeout_s: Deadline for a worker to build its env.
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
        self.ctx = mp.get_context("spawn")
        self.counters = PoolCounters()
        self._lock = threading.Lock()  # counters: `call` runs in several threads at once in the async loop
        self.accepted: list[str] = []  # the env_kwargs the factory took
        self.closed = False
        self.workers: list[_Worker] = [self._start(i) for i in range(size)]
        try:
            self._await_ready(range(size))
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.workers)

    def _start(self, slot: int) -> _Worker:
        with self._lock:
            self.counters.started += 1
        return _Worker(self.ctx, self.factory, self.kwargs, slot, quiet_build=self.counters.started > 1)

    def await_ready(self) -> None:
        """Wait until every worker has built its env.

        Raises:
            WorkerStartError: a worker could not build its env, died, or took past `start_timeout_s`.
        """
        self._await_ready(range(len(self.workers)))

    def _await_ready(self, slots: Any) -> None:
        for i in slots:
            w = self.workers[i]
            if w.ready:
                continue
            left = self.start_timeout_s - (time.monotonic() - w.started)
            if not w.conn.poll(max(left, 0.0)):
                raise WorkerStartError(f"env worker {i} did not start within {self.start_timeout_s:.0f} s")
            self._take_ready(i, w)

    def _take_ready(self, i: int, w: _Worker) -> None:
        try:
            r: Reply = w.conn.recv()
        except (EOFError, OSError):
            raise WorkerStartError(f"env worker {i} died while starting (exit code {w.process.exitcode})") from None
        if not r.ok:
            raise build_failed(r.error)
        w.ready = True
        self.accepted = r.value

    def resize(self, size: int) -> None:
        """Close the workers past `size`, or start more (they build their envs in the background)."""
        for w in self.workers[size:]:
            w.close()
        del self.workers[size:]
        while len(self.workers) < size:
            self.workers.append(self._start(len(self.workers)))

    def replace(self, slot: int) -> None:
        """Kill the worker of `slot` and start a new one there (it builds its env in the background); nothing
        once the pool is closed (a call that was in flight then sees its worker end)."""
        if self.closed:
            return
        self.workers[slot].kill()
        self.workers[slot] = self._start(slot)
        with self._lock:
            self.counters.replaced += 1

    def call(self, requests: dict[int, tuple[str, tuple]]) -> dict[int, Reply]:
        """Send `{slot: (command, args)}` to the workers at once, and collect every reply.

        A request that errs, passes `timeout_s`, or whose worker dies gets a failed `Reply`, and its
        worker is replaced. A replacement worker that cannot build its env raises `WorkerStartError`.
        """
        t0 = time.perf_counter()
        now = time.monotonic()
        workers = self.workers  # `close` may empty the list while this call waits
        deadlines: dict[int, float] = {}
        for slot, msg in requests.items():
            w = workers[slot]
            deadlines[slot] = now + self.timeout_s + (0.0 if w.ready else self.start_timeout_s)
            w.busy = True
            try:
                w.conn.send(msg)
            except (OSError, BrokenPipeError):
                deadlines[slot] = now  # reported as dead below
        replies: dict[int, Reply] = {}
        pending = dict(deadlines)
        while pending:
            if self.closed:  # its workers are gone: nothing more will come
                replies.update((slot, Reply(False, error="the env pool was closed")) for slot in pending)
                break
            conns = {workers[s].conn: s for s in pending}
            wait_s = max(0.0, min(pending.values()) - time.monotonic())
            for conn in wait(list(conns), timeout=wait_s):
                slot = conns[conn]
                w = workers[slot]
                try:
                    r = conn.recv()
                except (EOFError, OSError):
                    w.process.join(timeout=1)
                    replies[slot] = Reply(False, error=f"env worker process died (exit code {w.process.exitcode})")
                    del pending[slot]
                    continue
                if not w.ready:
                    if not r.ok:
                        raise build_failed(r.error)
                    w.ready = True
                    continue
                w.busy = False
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
        """Stop every worker at once (see `_Worker.stop`), wait for them together, kill what is left."""
        self.closed = True
        workers, self.workers = self.workers, []
        for w in workers:
            try:
                w.stop()
            except Exception:  # noqa: BLE001 - best effort while shutting down
                pass
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        for w in workers:
            try:
                w.process.join(max(0.0, deadline - time.monotonic()))
                w.kill()
            except Exception:  # noqa: BLE001 - best effort while shutting down
                pass
