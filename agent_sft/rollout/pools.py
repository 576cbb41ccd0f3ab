"""Env pools: a fixed number of env instances addressed by slot, each answering `reset`/`step`/`tasks`.

The collector plays every episode through an `EnvPool` and never names a pool class: `env.backend`
chooses one from `BACKENDS` (`"module:Class"`, imported only when chosen). Every backend below subclasses
`rollout.pool_base.SlotPool`, which keeps the slots, counters and deadlines; a new one is one module
(the few methods that run one env) and one row (`register_pool`).

- `process` (`rollout.workers.WorkerPool`): one spawned process per env. A crashed, raising or hung env
  is killed and a fresh one takes its slot; the main process never imports the env.
- `ray` (`rollout.ray_pool.RayEnvPool`): one Ray actor per env, anywhere on the cluster; a crashed or hung
  env's actor is killed and a fresh one takes its slot.
- `thread` (`rollout.threads.ThreadPool`): one thread of the main process per env, for envs that spend
  their steps waiting on the network. A thread cannot be killed: a hung env is abandoned (its thread
  finishes on its own) and a fresh one takes its slot. Refused for an env whose spec says it may not
  share a process (`EnvSpec.shared_process`).

On every backend a request that raises, dies or passes `env.step_timeout_s` comes back as a failed
`Reply`, which the collector records as the end of that episode (end reason `error`).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from agent_sft.config import ConfigError
from agent_sft.envs import EnvSpec
from agent_sft.envs.specs import load_entry_point
from agent_sft.errors import AgentSFTError

MAX_ERROR_CHARS = 4000


class WorkerStartError(AgentSFTError, RuntimeError):
    """An env could not be built by its pool (a setup problem, not an episode failure).

    The message names the exception; `details` holds the env's traceback.
    """

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


@dataclass
class Reply:
    """The answer to one request: `value` when `ok`, else `error` (the exception and its traceback)."""

    ok: bool
    value: Any = None
    error: str = ""


@dataclass
class PoolCounters:
    """What a pool did: env instances started and replaced, failed requests, seconds inside `call`."""

    started: int = 0
    replaced: int = 0
    errors: int = 0
    env_s: float = 0.0


@runtime_checkable
class EnvPool(Protocol):
    """Env instances addressed by slot `0..len(pool)-1`.

    A backend's class is built as `Pool(spec, size, env_kwargs, timeout_s=, start_timeout_s=)` and has
    its first env built when the constructor returns (raising `WorkerStartError` otherwise), so
    `accepted` is known.

    Attributes:
        accepted: the `env_kwargs` the env factory took (an env that took `task_types` filters its
            tasks itself).
        counters: what the pool did so far.
    """

    accepted: list[str]
    counters: PoolCounters

    def __len__(self) -> int: ...

    def resize(self, size: int) -> None:
        """Drop the envs past `size`, or start more (they build in the background)."""

    def await_ready(self) -> None:
        """Wait until every env is built.

        Raises:
            WorkerStartError: an env could not be built, or took longer than the start timeout.
        """

    def call(self, requests: dict[int, tuple[str, tuple]]) -> dict[int, Reply]:
        """Send `{slot: (command, args)}` at once (commands `reset`, `step`, `tasks`); every reply.

        Several threads may call at once for disjoint slots (the async loop calls each slot from its
        own thread); `resize` and `close` are called by one thread while no call runs.

        A request that raises, passes the step timeout, or whose env dies gets a failed `Reply`, and
        its slot gets a fresh env.

        Raises:
            WorkerStartError: a fresh env could not be built.
        """

    def close(self) -> None:
        """Close every env (an abandoned one is left to finish on its own)."""


@dataclass(frozen=True)
class PoolBackend:
    target: str  # "module:Class" of an `EnvPool`
    in_process: bool  # builds several envs in this process: refused for envs that may not share one
    help: str = ""


BACKENDS: dict[str, PoolBackend] = {
    "process": PoolBackend("agent_sft.rollout.workers:WorkerPool", False,
                           "one spawned worker process per env; a crashed or hung env is killed and replaced"),
    "ray": PoolBackend("agent_sft.rollout.ray_pool:RayEnvPool", False,
                       "one Ray actor per env, anywhere on the cluster (scale.cpus_per_env each); a crashed or hung "
                       "env's actor is killed and replaced"),
    "thread": PoolBackend("agent_sft.rollout.threads:ThreadPool", True,
                          "one thread of this process per env, for envs that wait on the network; a hung env "
                          "is abandoned and replaced"),
}


def register_pool(name: str, row: PoolBackend) -> None:
    """Add (or replace) the backend `name` that `env.backend=name` chooses."""
    BACKENDS[name] = row


def backend(name: str, env: EnvSpec | None = None) -> PoolBackend:
    """The backend `name` (the value of `env.backend`), checked against the env it would run.

    Raises:
        ConfigError: an unknown name (listing the known ones), or an in-process backend for an env
            whose spec says it may not share a process.
    """
    found = BACKENDS.get(name)
    if found is None:
        raise ConfigError(f"env.backend: unknown env pool backend {name!r}; known: {', '.join(BACKENDS)}")
    if env is not None and found.in_process and not env.shared_process:
        others = ", ".join(n for n, b in BACKENDS.items() if not b.in_process)
        raise ConfigError(
            f"env.backend={name}: environment {env.name!r} may not share a process with another instance "
            f"(its spec has shared_process=False), so it cannot run in threads; use env.backend={others}"
        )
    return found


def make_pool(
    name: str, env: EnvSpec, size: int, env_kwargs: dict | None = None, *, timeout_s: float, start_timeout_s: float,
    **options: Any,
) -> EnvPool:
    """A pool of the backend `name` with `size` envs of `env`, the first one built. `options` are settings
    only some backends take (e.g. `cpus_per_env` for `ray`); each backend gets those it accepts.

    Raises:
        ConfigError: see `backend`; nothing has started then.
        WorkerStartError: the env could not be built.
    """
    import inspect

    cls: Callable[..., EnvPool] = load_entry_point(backend(name, env).target)
    accepted = inspect.signature(cls).parameters
    extra = {k: v for k, v in options.items() if k in accepted}
    return cls(env, size, env_kwargs, timeout_s=timeout_s, start_timeout_s=start_timeout_s, **extra)


# --- what every backend does with its env ------------------------------------------------------------


def build_failed(error: str) -> WorkerStartError:
    return WorkerStartError(f"cannot build the environment: {error.splitlines()[0]}", error)


def build_env(entry_point: Any, kwargs: dict) -> tuple[Any, list[str]]:
    """Build the env with the keyword arguments its factory takes, its episodes held to the step budget
    `kwargs["max_steps"]` (`TimeLimit`) whether the factory takes it or not; returns (env, names passed)."""
    import inspect

    from agent_sft.envs.time_limit import TimeLimit

    budget = kwargs.get("max_steps")
    factory = load_entry_point(entry_point)
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        params = []
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    env = factory(**kwargs)
    return (TimeLimit(env, budget) if budget is not None else env), sorted(kwargs)


def run_command(env: Any, cmd: str, args: tuple) -> Any:
    """One request on an env: `reset` (seed, options), `step` (action,) or `tasks` ()."""
    if cmd == "reset":
        return env.reset(seed=args[0], options=args[1])
    if cmd == "step":
        return env.step(args[0])
    if cmd == "tasks":
        return env.tasks()
    raise ValueError(f"unknown env command {cmd!r}")


def describe_error(e: BaseException) -> str:
    """The exception being handled and its traceback, cut to `MAX_ERROR_CHARS` (call in `except`)."""
    text = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    return text[-MAX_ERROR_CHARS:]


def timed_out(cmd: str, timeout_s: float) -> Reply:
    return Reply(False, error=f"env {cmd} timed out after {timeout_s:g} s (env.step_timeout_s)")
