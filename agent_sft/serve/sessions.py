"""`SessionManager`: the env server's sessions, one env each in its own worker process.

A session is made by `POST /sessions` with the generic env kwargs (seed, max_steps, task_types, expert);
the env's own options are the server's. Each session holds a `WorkerPool` of one worker, so an env that
raises, hangs past the step timeout or dies only fails its own session's request: the pool replaces
the worker, and the session needs a new reset. Calls on one session are serialized by its lock; calls on
different sessions run at the same time (each in its own process).

The protocol's step rule lives here: a step whose index is the next one is applied; one whose index is
the one just answered gets that answer again (a client retrying after a lost reply never makes the env
step twice); any other index is a conflict.

A session lives while it is used: every request on it (a renewal included) starts its time to live
again, and a background thread closes the sessions whose time ran out, stopping their env's worker.
That time is `idle_timeout_s`, or the shorter lease the client asked for when it opened the session
(`lease_s`): a client that renews a short lease in the background has its sessions closed soon after
it is gone (killed, or cut off), where a client that asks for none keeps the idle timeout.

Errors are raised as `ServeError(kind, message)` with the protocol's kinds; `agent_sft.serve.app`
turns them into replies.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from agent_sft.envs import EnvSpec
from agent_sft.envs.http.protocol import jsonable, task_to_json
from agent_sft.errors import AgentSFTError

# kind -> HTTP status, as agent_sft/envs/http/protocol.py lists them
STATUS = {
    "unauthorized": 401,
    "forbidden": 403,
    "unknown_session": 404,
    "conflict": 409,
    "bad_request": 422,
    "env_error": 500,
    "busy": 503,
}

DEFAULT_MAX_STEPS = 50  # env.max_steps' default, for a client that sends none
MIN_LEASE_S = 0.5  # a shorter lease would be renewed more often than a loaded machine can promise


class ServeError(AgentSFTError):
    """A request the server refuses or could not answer: `kind` is one of the protocol's (`STATUS`)."""

    def __init__(self, kind: str, message: str, details: str = ""):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.details = details

    @property
    def status(self) -> int:
        return STATUS[self.kind]

    def body(self) -> dict[str, Any]:
        out = {"error": self.message, "kind": self.kind}
        if self.details:
            out["details"] = self.details
        return out


@dataclass
class ServerCounters:
    """What the server did since it started (reported by `/health`)."""

    sessions_created: int = 0
    sessions_closed: int = 0
    sessions_expired: int = 0
    renewals: int = 0  # sessions whose lease a `POST /renew` renewed
    resets: int = 0
    steps: int = 0  # steps applied to an env (replayed answers not counted)
    step_replays: int = 0
    env_errors: int = 0
    conflicts: int = 0
    busy: int = 0


@dataclass
class StepResult:
    """A step's answer, and whether it was the step after which the server is to exit (a test hook)."""

    body: dict[str, Any]
    exit_after: bool = False


@dataclass
class _Session:
    id: str
    kwargs: dict[str, Any]
    pool: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    lease_s: float = 600.0  # closed when unused this long
    last_used: float = field(default_factory=time.monotonic)
    steps: int | None = None  # steps applied since the last reset; None before a reset or after an env error
    last: tuple[int, ServeError | dict] | None = None  # (index, answer) of the last step answered
    closed: bool = False

    def close(self) -> None:
        self.closed = True
        if self.pool is not None:
            try:
                self.pool.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
            self.pool = None


def _int(body: dict, key: str, default: Any, minimum: int | None = None) -> Any:
    value = body.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ServeError("bad_request", f"{key}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ServeError("bad_request", f"{key}: must be at least {minimum}, got {value}")
    return value


def _check_keys(body: Any, allowed: tuple[str, ...], what: str) -> dict:
    if not isinstance(body, dict):
        raise ServeError("bad_request", f"{what}: expected a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ServeError("bad_request", f"{what}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})")
    return body


class SessionManager:
    """The server's sessions of env `spec` with the options `options` (an instance of `spec.options`).

    Built, it has listed the env's tasks (one env built in a worker and closed), which proves the options
    work. Args other than the env's: `max_sessions` open at once (`busy` past it), `max_steps` the step
    budget of a session whose client names none, `idle_timeout_s` after which an unused session is closed
    (and the longest lease granted), `step_timeout_s` for one reset/step (the env is replaced past it),
    `start_timeout_s` for a worker to build its env, and `exit_after_steps`: the step whose answer is the
    N-th in total is flagged (`StepResult.exit_after`), for tests that stop the server at an exact point.
    `pool_factory` builds a session's pool, `WorkerPool` by default.

    Raises:
        WorkerStartError: the env could not be built (bad options, missing data).
    """

    def __init__(
        self,
        spec: EnvSpec,
        options: Any = None,
        *,
        max_sessions: int = 64,
        max_steps: int = DEFAULT_MAX_STEPS,
        idle_timeout_s: float = 600.0,
        step_timeout_s: float = 120.0,
        start_timeout_s: float = 300.0,
        exit_after_steps: int | None = None,
        pool_factory: Callable[..., Any] | None = None,
    ):
        from agent_sft.rollout import WorkerPool

        self.spec = spec
        self.options = options
        self.max_sessions = max_sessions
        self.max_steps = max_steps
        self.idle_timeout_s = idle_timeout_s
        self.step_timeout_s = step_timeout_s
        self.start_timeout_s = start_timeout_s
        self.exit_after_steps = exit_after_steps
        self.pool_factory = pool_factory or WorkerPool
        self.counters = ServerCounters()
        self._sessions: dict[str, _Session] = {}
        self.held: set[str] = set()  # sessions a connection speaks for, however seldom: never idle (`expire`)
        self._lock = threading.Lock()  # guards _sessions and counters
        self._stop = threading.Event()
        self.tasks = self._list_tasks()
        self._task_ids = {t["task_id"] for t in self.tasks}
        self._interval = max(0.05, min(0.25, idle_timeout_s / 4))  # how late an expiry may come
        self._reaper = threading.Thread(target=self._expire_loop, name="agent-sft-serve-expiry", daemon=True)
        self._reaper.start()

    # --- what the server reports --------------------------------------------------------------------

    def _list_tasks(self) -> list[dict[str, Any]]:
        kwargs = self.env_kwargs({})
        pool = self.pool_factory(self.spec, 1, kwargs, timeout_s=self.step_timeout_s,
                                 start_timeout_s=self.start_timeout_s)
        try:
            (reply,) = pool.call({0: ("tasks", ())}).values()
        finally:
            pool.close()
        if not reply.ok:
            from agent_sft.rollout import WorkerStartError

            raise WorkerStartError(f"cannot list the tasks of {self.spec.name}: {reply.error.splitlines()[0]}",
                                   reply.error)
        return [task_to_json(t) for t in reply.value]

    def info(self) -> dict[str, Any]:
        from agent_sft.envs.http.protocol import PROTOCOL
        from agent_sft.version import run_versions

        s = self.spec
        return {
            "env": s.name,
            "protocol": PROTOCOL,
            "title": s.card.title or s.name,
            "description": s.card.description,
            "experts": list(s.experts) if s.expert_kwarg else [],
            "default_expert": s.default_expert() if s.expert_kwarg else None,
            "has_expert": bool(s.expert_kwarg),
            "episode_keys": sorted(s.info_keys_per_episode()),
            "task_types": list(s.card.task_types),
            "fingerprint": jsonable(s.fingerprint(self.options)),
            "packages": {**run_versions(), **s.package_versions()},
            "shared_process": s.shared_process,
        }

    def health(self) -> dict[str, Any]:
        from agent_sft.envs.http.protocol import PROTOCOL

        with self._lock:
            return {
                "status": "ok",
                "env": self.spec.name,
                "sessions": len(self._sessions),
                "max_sessions": self.max_sessions,
                "protocol": PROTOCOL,
                "steps": self.counters.steps,
                "counters": asdict(self.counters),
            }

    # --- sessions -----------------------------------------------------------------------------------

    def env_kwargs(self, body: dict) -> dict[str, Any]:
        """The env factory's kwargs for a session asked for with `body` (the generic env kwargs).

        Raises:
            ServeError: `bad_request` naming the field that is wrong.
        """
        body = _check_keys(body, ("seed", "max_steps", "task_types", "expert", "lease_s"), "session")
        seed = _int(body, "seed", 0)
        max_steps = _int(body, "max_steps", self.max_steps, minimum=1)
        task_types = body.get("task_types") or []
        if not isinstance(task_types, list) or not all(isinstance(t, str) for t in task_types):
            raise ServeError("bad_request", f"task_types: expected a list of strings or null, got {task_types!r}")
        expert = body.get("expert")
        if expert is not None:
            if not isinstance(expert, str):
                raise ServeError("bad_request", f"expert: expected a string or null, got {expert!r}")
            if not self.spec.expert_kwarg:
                raise ServeError("bad_request", f"expert: environment {self.spec.name!r} has no expert")
            if self.spec.experts and expert not in self.spec.experts:
                raise ServeError("bad_request", f"expert: {expert!r} is not an expert of {self.spec.name} "
                                                f"(one of {', '.join(self.spec.experts)})")
        return self.spec.kwargs(self.options, seed=seed, max_steps=max_steps, task_types=task_types, expert=expert)

    def lease_of(self, body: dict) -> float:
        """The time to live of a session asked for with `body`: its `lease_s` within [MIN_LEASE_S,
        idle_timeout_s], else `idle_timeout_s`.

        Raises:
            ServeError: `bad_request` when `lease_s` is not a positive number.
        """
        lease = body.get("lease_s") if isinstance(body, dict) else None
        if lease is None:
            return self.idle_timeout_s
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease > 0:
            raise ServeError("bad_request", f"lease_s: expected a positive number of seconds or null, got {lease!r}")
        return min(self.idle_timeout_s, max(MIN_LEASE_S, float(lease)))

    def create(self, body: dict) -> dict[str, Any]:
        """Start a session's env (in its own worker process).

        Returns:
            `{"session_id", "lease_s"}`: the session closes when unused for `lease_s` seconds.

        Raises:
            ServeError: `bad_request`, `busy` (max sessions open) or `env_error` (the env did not build).
        """
        kwargs = self.env_kwargs(body)
        s = _Session(secrets.token_hex(16), kwargs, lease_s=self.lease_of(body))
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                self.counters.busy += 1
                raise ServeError("busy", f"{self.max_sessions} sessions are open (the server's --max-sessions); "
                                         "close one or try again later")
            self._sessions[s.id] = s
            self.counters.sessions_created += 1
        with s.lock:
            try:
                s.pool = self._pool(kwargs)
            except ServeError:
                self._drop(s.id)
                raise
            if s.closed:  # closed (or expired, or the server stopped) while it was being built
                s.close()
            s.last_used = time.monotonic()
        return {"session_id": s.id, "lease_s": s.lease_s}

    def _pool(self, kwargs: dict[str, Any]) -> Any:
        """A session's worker pool, its env built with `kwargs`; `env_error` when it does not build."""
        try:
            return self.pool_factory(self.spec, 1, kwargs, timeout_s=self.step_timeout_s,
                                     start_timeout_s=self.start_timeout_s)
        except Exception as e:
            with self._lock:
                self.counters.env_errors += 1
            raise ServeError("env_error", f"cannot build the environment: {e}", getattr(e, "details", "")) from None

    def rebuild(self, session_id: str, body: dict) -> bool:
        """Build session `session_id`'s env again with the generic env kwargs `body` (as `create` takes them)
        when they differ from its env's; whether it did. An env that does not build leaves the old one.

        Raises:
            ServeError: `bad_request`, `unknown_session`, or `env_error`.
        """
        kwargs = self.env_kwargs(body)
        s = self._get(session_id)
        with s.lock:
            if s.closed or s.pool is None:
                raise ServeError("unknown_session", f"session {s.id!r} was closed")
            if kwargs == s.kwargs:
                return False
            old, s.pool = s.pool, self._pool(kwargs)
            s.kwargs, s.steps, s.last, s.last_used = kwargs, None, None, time.monotonic()
        try:
            old.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
        return True

    def __contains__(self, session_id: object) -> bool:
        """Whether session `session_id` is open (not closed, not expired)."""
        with self._lock:
            return session_id in self._sessions

    def _get(self, session_id: str) -> _Session:
        with self._lock:
            s = self._sessions.get(session_id)
        if s is None:
            raise ServeError("unknown_session", f"no session {session_id!r}: never made, closed, or expired "
                                                "(unused past its lease or the idle timeout)")
        return s

    def _drop(self, session_id: str) -> _Session | None:
        with self._lock:
            return self._sessions.pop(session_id, None)

    def renew(self, body: Any) -> dict[str, list[str]]:
        """Start again the time to live of the sessions `body["session_ids"]` names (without waiting for a
        request in progress on one); says which were renewed and which are unknown (closed or expired).

        Raises:
            ServeError: `bad_request` when `session_ids` is not a list of strings.
        """
        body = _check_keys(body, ("session_ids",), "renew")
        ids = body.get("session_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ServeError("bad_request", f"session_ids: expected a list of strings, got {ids!r}")
        renewed, unknown = [], []
        now = time.monotonic()
        with self._lock:
            for sid in ids:
                s = self._sessions.get(sid)
                if s is None:
                    unknown.append(sid)
                else:
                    s.last_used = max(s.last_used, now)
                    renewed.append(sid)
            self.counters.renewals += len(renewed)
        return {"renewed": renewed, "unknown": unknown}

    def close_session(self, session_id: str, *, now: bool = False) -> bool:
        """Close a session and its env; False when there was none (closing is idempotent). With `now`, a
        request in progress on it is not waited for: its env's worker is stopped under it (the request fails)."""
        s = self._drop(session_id)
        if s is None:
            return False
        with self._lock:
            self.counters.sessions_closed += 1
        if now and (pool := s.pool) is not None:
            s.closed = True
            pool.close()
        with s.lock:
            s.close()
        return True

    def _call(self, s: _Session, cmd: str, args: tuple) -> Any:
        """One request on the session's env (its lock held); an env failure becomes `env_error`."""
        if s.closed or s.pool is None:
            raise ServeError("unknown_session", f"session {s.id!r} was closed")
        try:
            (reply,) = s.pool.call({0: (cmd, args)}).values()
        except Exception as e:  # noqa: BLE001 - a replacement worker that could not build its env
            reply = None
            error, details = f"the env's worker could not be restarted: {e}", getattr(e, "details", "")
        else:
            if reply.ok:
                return reply.value
            error, details = reply.error.splitlines()[0] if reply.error else "the env failed", reply.error
        s.steps = None
        with self._lock:
            self.counters.env_errors += 1
        raise ServeError("env_error", f"env {cmd} failed: {error} (the env was replaced; reset the session)", details)

    def reset(self, session_id: str, body: dict) -> dict[str, Any]:
        body = _check_keys(body, ("seed", "options"), "reset")
        seed = _int(body, "seed", None)
        options = body.get("options")
        if options is not None and not isinstance(options, dict):
            raise ServeError("bad_request", f"options: expected an object or null, got {options!r}")
        task_id = (options or {}).get("task_id")
        if task_id is not None and task_id not in self._task_ids:
            raise ServeError("bad_request", f"unknown task_id {task_id!r} (GET /tasks lists the env's tasks)")
        s = self._get(session_id)
        with s.lock:
            s.steps, s.last = None, None
            try:
                obs, info = self._call(s, "reset", (seed, options))
            finally:
                s.last_used = time.monotonic()
            s.steps = 0
        with self._lock:
            self.counters.resets += 1
        return {"observation": str(obs), "info": jsonable(info)}

    def step(self, session_id: str, body: dict) -> StepResult:
        body = _check_keys(body, ("action", "index"), "step")
        action = body.get("action")
        if not isinstance(action, str):
            raise ServeError("bad_request", f"action: expected a string, got {action!r}")
        index = _int(body, "index", None, minimum=0)
        s = self._get(session_id)
        with s.lock:
            try:
                return self._step(s, action, index)
            finally:
                s.last_used = time.monotonic()

    def _step(self, s: _Session, action: str, index: int | None) -> StepResult:
        if s.last is not None and index == s.last[0]:
            with self._lock:
                self.counters.step_replays += 1
            answer = s.last[1]
            if isinstance(answer, ServeError):
                raise answer
            return StepResult(answer)
        if s.steps is None:
            with self._lock:
                self.counters.conflicts += 1
            raise ServeError("conflict", "the session needs a reset first (none yet, or the env failed since)")
        if index is None:
            index = s.steps
        if index != s.steps:
            with self._lock:
                self.counters.conflicts += 1
            last = f"; {s.steps - 1} was answered last" if s.steps else ""
            raise ServeError("conflict", f"step index {index}: the next step is {s.steps}{last}")
        try:
            obs, reward, terminated, truncated, info = self._call(s, "step", (action,))
        except ServeError as err:
            s.last = (index, err)
            raise
        answer = {"observation": str(obs), "reward": jsonable(float(reward)), "terminated": bool(terminated),
                  "truncated": bool(truncated), "info": jsonable(info)}
        s.steps, s.last = index + 1, (index, answer)
        with self._lock:
            self.counters.steps += 1
            exit_after = self.exit_after_steps is not None and self.counters.steps == self.exit_after_steps
        return StepResult(answer, exit_after)

    # --- expiry and shutdown ------------------------------------------------------------------------

    def _expire_loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.expire()

    def expire(self) -> list[str]:
        """Close the sessions unused for their lease (not one in the middle of a request, nor one held), and
        stop their env's worker."""
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self._sessions.values() if now - s.last_used > s.lease_s and s.id not in self.held]
        out = []
        for s in idle:
            if not s.lock.acquire(blocking=False):
                continue  # busy: it is not idle
            try:
                with self._lock:  # a renewal takes this lock too: checked and dropped at one instant
                    if self._sessions.get(s.id) is not s or s.id in self.held or now - s.last_used <= s.lease_s:
                        continue
                    del self._sessions[s.id]
                    self.counters.sessions_expired += 1
                s.close()
                out.append(s.id)
            finally:
                s.lock.release()
        return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def close(self) -> None:
        """Close every session's env and stop the expiry thread (the server is going away)."""
        self._stop.set()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            if s.lock.acquire(timeout=1.0):
                try:
                    s.close()
                finally:
                    s.lock.release()
            else:  # a request still runs on it: stop its worker under it
                s.closed = True
                for w in list(getattr(s.pool, "workers", None) or []):
                    try:
                        w.kill()
                    except Exception:  # noqa: BLE001 - best effort while shutting down
                        pass
