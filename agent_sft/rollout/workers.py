"""The `process` env pool: worker processes, one env each, driven over a pipe, replaced when they fail.

Workers are started with `spawn`, so they never inherit a parent that has imported torch or vLLM. The
pool sends a command to many workers at once and collects the replies with a deadline per request; a
worker whose env raised, hung past the deadline or died is killed, and a fresh one starts in its slot.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
import traceback
from multiprocessing.connection import wait
from typing import Any

from agent_sft.envs import EnvSpec, canonical_name
from agent_sft.procs import exit_now
from agent_sft.rollout.pool_base import EnvHandle, SlotPool
from agent_sft.rollout.pools import Reply, WorkerStartError, build_env, describe_error, run_command


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


class _Worker(EnvHandle):
    def __init__(self, ctx: Any, factory: Any, kwargs: dict, slot: int, quiet_build: bool = False):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=worker_main, args=(child, factory, kwargs, quiet_build), name=f"agent-sft-env-{slot}", daemon=True
        )
        self.process.start()
        child.close()

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


class WorkerPool(SlotPool):
    """`size` env processes, addressed by slot: the `process` backend of `EnvPool` (arguments: `SlotPool`)."""

    def __init__(self, env: str | EnvSpec, size: int, env_kwargs: dict | None = None, timeout_s: float = 120.0,
                 start_timeout_s: float = 300.0):
        self.ctx = mp.get_context("spawn")
        super().__init__(env, size, env_kwargs, timeout_s, start_timeout_s)

    def _launch(self, slot: int) -> _Worker:
        return _Worker(self.ctx, self.factory, self.kwargs, slot, quiet_build=self.counters.started > 1)

    def _built(self, handle: _Worker, timeout_s: float) -> Reply | None:
        if not handle.conn.poll(timeout_s):
            return None
        try:
            return handle.conn.recv()
        except (EOFError, OSError):
            raise WorkerStartError(
                f"env worker {handle.slot} died while starting (exit code {handle.process.exitcode})") from None

    def _send(self, handle: _Worker, msg: tuple[str, tuple]) -> Any:
        try:
            handle.conn.send(msg)
        except (OSError, BrokenPipeError):
            return None
        return handle.conn

    def _poll(self, waiting: dict[int, tuple[_Worker, Any]], timeout_s: float) -> list[tuple[int, Reply, bool]]:
        conns = {w.conn: slot for slot, (w, _) in waiting.items()}
        out = []
        for conn in wait(list(conns), timeout=timeout_s):
            slot = conns[conn]
            w = waiting[slot][0]
            try:
                out.append((slot, conn.recv(), not w.ready))
            except (EOFError, OSError):
                w.process.join(timeout=1)
                out.append((slot, Reply(False, error=f"env worker process died (exit code {w.process.exitcode})"),
                            False))
        return out

    def _kill(self, handle: _Worker) -> None:
        handle.kill()

    def _stop(self, handle: _Worker) -> None:
        handle.close()

    def _close(self, handles: list[_Worker]) -> None:
        """Stop every worker at once (see `_Worker.stop`), wait for them together, kill what is left."""
        for w in handles:
            try:
                w.stop()
            except Exception:  # noqa: BLE001 - best effort while shutting down
                pass
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        for w in handles:
            try:
                w.process.join(max(0.0, deadline - time.monotonic()))
                w.kill()
            except Exception:  # noqa: BLE001 - best effort while shutting down
                pass
