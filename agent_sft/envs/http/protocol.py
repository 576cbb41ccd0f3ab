"""agent-sft's env-server protocol (`agent-sft serve-env`), version 1: JSON over HTTP, one env per session.

    GET    /health                      {"status": "ok", "env": NAME, "sessions": n, "max_sessions": m,
                                          "protocol": 1, "steps": total steps served, "counters":
                                          {"sessions_created", "sessions_closed" (by a DELETE),
                                          "sessions_expired" (by their lease or the idle timeout),
                                          "renewals" (sessions renewed), "resets", "steps",
                                          "step_replays", "env_errors", "conflicts", "busy"}: counts
                                          since the server started}
    GET    /info                        {"env": NAME, "protocol": 1, "title", "experts": [...],
                                          "default_expert", "fingerprint": {option: value}, "packages":
                                          {dist: version}, "episode_keys": [info keys kept once per
                                          episode, not in each step's info], "shared_process": bool}
    GET    /tasks                       {"tasks": [TASK, ...]}   TASK = {"task_id", "task_type",
                                                                        "game_split", "extra"}
    POST   /sessions                    body {"seed", "max_steps", "task_types", "expert"} (the generic
                                          env kwargs; the env's options are the server's), and
                                          optionally "lease_s": seconds (see Leases)
                                        -> {"session_id": str, "lease_s": the session's time to live}
    POST   /sessions/{id}/reset         body {"seed": int|null, "options": {"task_id": ...}}
                                        -> {"observation": str, "info": {...}}
    POST   /sessions/{id}/step          body {"action": str, "index": k (0-based step index since reset)}
                                        -> {"observation", "reward", "terminated", "truncated", "info"}
    DELETE /sessions/{id}               -> {"closed": true}  (also for an unknown id: closing is idempotent)
    POST   /renew                       body {"session_ids": [id, ...]}
                                        -> {"renewed": [id, ...], "unknown": [id, ...]}

Errors are JSON `{"error": message, "kind": KIND}` with a status code: 401 `unauthorized` (a server
started with a token and a request without `Authorization: Bearer <token>`), 403 `forbidden` (a server
on the loopback and a Host that is not a loopback name, or a server without a token and a web page of
another site's Origin), 404 `unknown_session`
(never made, closed, or expired), 409 `conflict` (a step before any reset, or a
step index that is neither the next one nor the last one answered), 422 `bad_request`, 500
`env_error` (the env raised, hung past the step timeout or died: its process is replaced, the session
lives on and needs a new reset), 503 `busy` (max sessions reached).

A step is applied once: a step whose `index` is the one just answered gets that same answer again
(a client retrying after a lost reply never makes the env step twice).

Leases: a session is closed, and its env's worker stopped, once it goes unused for its time to live:
every request on it (reset, step, a renewal) starts that time again, and a request in progress keeps it
open. The time to live is the server's idle timeout (`--idle-timeout-s`, 600 s by default), or the
`lease_s` the client asked for when it opened the session, bounded by [0.5 s, the idle timeout]; the
reply says which. A client that asks for a lease renews its sessions (`POST /renew`, one request for
all of them, more often than the lease: agent-sft's client every quarter of it), so that its sessions
end soon after its renewals stop: when it is killed, exits without closing them, or is cut off.
agent-sft's client renews from a background thread: a client process that is alive but stuck keeps its
sessions until it exits. A client that asks for no lease needs no renewals.
A renewal answers at once, even while that session's step is in progress.
"""

from __future__ import annotations

import json
import math
from typing import Any

from agent_sft.envs.base import TaskSpec

PROTOCOL = 1
TOKEN_HEADER = "Authorization"


def task_to_json(t: TaskSpec) -> dict[str, Any]:
    return {"task_id": t.task_id, "task_type": t.task_type, "game_split": t.game_split, "extra": jsonable(t.extra)}


def task_from_json(d: dict[str, Any]) -> TaskSpec:
    return TaskSpec(str(d["task_id"]), str(d.get("task_type") or ""), str(d.get("game_split") or ""),
                    dict(d.get("extra") or {}))


def jsonable(value: Any) -> Any:
    """`value` as JSON can carry it: tuples and sets as lists, other objects as their str, non-finite floats
    as None (so a server never fails on what an env put in its info)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    try:
        return jsonable(value.item())  # numpy scalars
    except (AttributeError, ValueError):
        return str(value)


def dumps(value: Any) -> bytes:
    return json.dumps(jsonable(value)).encode()
