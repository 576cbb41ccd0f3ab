"""An OpenEnv server's HTTP routes, as the `openenv` env reads them: `/health`, `/metadata`, `/schema`,
`/list_environments` and the Task API (`GET /{env}/splits`, `POST /{env}/tasks`), each a call safe to repeat
(`JsonClient`'s retries), what each plays, asked once per process (`Descriptions`), and which servers this
process holds sessions on or found full (`Board`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from agent_sft.envs.base import task_hash
from agent_sft.envs.remote_client import JsonClient, ServerError


def env_name(c: JsonClient) -> str | None:
    """The name the server's Task API routes use (`/list_environments`), None when it lists none."""
    try:
        names = c.call("GET", "/list_environments")
    except ServerError as err:
        if err.status in (404, 405):
            return None
        raise
    return str(names[0]) if isinstance(names, list) and names else None


SPLIT_TYPES = ("train", "validation", "test")


def splits(c: JsonClient, name: str | None) -> list[tuple[str, str]] | None:
    """The Task API's splits as `(name, type)`, in the server's order; None when the server has no Task API. A
    split listed by name alone is typed as OpenEnv types it (train, validation and test keep theirs, any other
    name is validation)."""
    if not name:
        return None
    try:
        listed = c.call("GET", f"/{name}/splits")
    except ServerError as err:
        if err.status in (404, 405, 501):
            return None
        raise
    if not isinstance(listed, list):
        raise ServerError(f"GET {c.base_url}/{name}/splits: malformed reply: {str(listed)[:200]}")
    out = []
    for s in listed:
        split = str(s.get("name") if isinstance(s, dict) else s)
        kind = str(s.get("type") or "") if isinstance(s, dict) else ""
        out.append((split, kind or (split if split in SPLIT_TYPES else "validation")))
    return out


def tasks_of(c: JsonClient, name: str, split: str) -> list[Any]:
    """The tasks of `split` as the Task API lists them (`POST /{env}/tasks`)."""
    r = c.call("POST", f"/{name}/tasks", {"split": split})
    if not isinstance(r, dict) or not isinstance(r.get("tasks"), list):
        raise ServerError(f"POST {c.base_url}/{name}/tasks: malformed reply: {str(r)[:200]}")
    return r["tasks"]


def agent_sft_env(meta: dict[str, Any]) -> dict[str, Any] | None:
    """What an agent-sft server (`agent-sft serve-env NAME --protocol openenv`) says of the env it serves in its
    /metadata (`env`, `fingerprint`, `packages`, `episode_keys`, `experts`, `default_expert`, `has_expert`); None
    for any other server."""
    own = meta.get("agent_sft")
    if not isinstance(own, dict) or not isinstance(own.get("env"), str) or not own["env"]:
        return None
    return {"env": own["env"], "fingerprint": dict(own.get("fingerprint") or {}),
            "packages": {str(k): str(v) for k, v in dict(own.get("packages") or {}).items()},
            "episode_keys": [str(k) for k in own.get("episode_keys") or []],
            "experts": [str(e) for e in own.get("experts") or []], "default_expert": own.get("default_expert"),
            "has_expert": bool(own.get("has_expert"))}


def describe(c: JsonClient, split: str | None = None) -> dict[str, Any]:
    """What a server plays: `{"name", "version", "description"}` from /metadata, `schema` (/schema), `mcp`, for
    an agent-sft server `agent_sft` (`agent_sft_env`), and with a Task API `task_env` (its route name), `splits` (the
    ones played: `split`, else those of type train, else for an agent-sft server all), `split_types` (split -> its
    type), `tasks` (split -> the listed tasks) and `tasks_hash` (their fingerprint).

    Raises:
        ServerError: a route that fails, `split` not among the server's splits, or none to play by default.
    """
    from agent_sft.envs.openenv.schema import is_mcp

    meta = c.call("GET", "/metadata")
    schema = c.call("GET", "/schema")
    if not isinstance(meta, dict) or not isinstance(schema, dict) or not isinstance(schema.get("action"), dict):
        raise ServerError(f"{c.base_url} is not an OpenEnv server: /metadata gave {str(meta)[:100]}, /schema gave "
                          f"{str(schema)[:100]}")
    out: dict[str, Any] = {"name": str(meta.get("name") or ""), "version": str(meta.get("version") or ""),
                           "description": str(meta.get("description") or ""), "schema": schema,
                           "mcp": is_mcp(schema.get("action"))}
    own = agent_sft_env(meta)
    if own is not None:
        out.update(agent_sft=own, mcp=False)  # its text actions are played, whatever /schema shows
    name = env_name(c)
    listed = splits(c, name)
    if listed is None:
        if split:
            raise ServerError(f"{c.base_url} has no Task API, so env.openenv.split={split} names nothing; leave it "
                              "unset to play seeds")
        return out
    types = dict(listed)
    named = ", ".join(f"{n} ({t})" for n, t in listed)
    if split and split not in types:
        raise ServerError(f"{c.base_url} has no split {split!r} (its splits: {named})")
    if split:
        chosen = [split]
    elif own is not None:
        chosen = list(types)  # the env's own tasks, every split as played in process (each episode records its split)
    else:
        chosen = [n for n, t in listed if t == "train"]
        if not chosen:
            raise ServerError(f"{c.base_url} lists no split of type train (its splits: {named}); choose one with "
                              "env.openenv.split")
    tasks = {s: tasks_of(c, name, s) for s in chosen}
    out.update(task_env=name, splits=chosen, split_types={s: types[s] for s in chosen}, tasks=tasks,
               tasks_hash=task_hash(*[[s, tasks[s]] for s in chosen]))
    return out


def summary(d: dict[str, Any]) -> dict[str, Any]:
    """What a run records of a server's description (`env.openenv.served`, without the success rule)."""
    out = {"env": d["name"], "version": d["version"], "mcp": d["mcp"], "splits": d.get("splits"),
           "split_types": d.get("split_types"),
           "tasks": sum(map(len, d["tasks"].values())) if "tasks" in d else None, "tasks_hash": d.get("tasks_hash")}
    if d.get("agent_sft"):
        out["agent_sft"] = d["agent_sft"]
    return out


IDENTITY = ("env", "version", "tasks_hash", "mcp")
"""What must stay as the run recorded it for a server to be played: its env, version, task set and kind."""


def changed(recorded: dict[str, Any], d: dict[str, Any]) -> str:
    """"" when the description `d` is what the run `recorded` (`env.openenv.served`), else what differs."""
    if not recorded:
        return ""
    now = summary(d)
    if all(now.get(k) == recorded.get(k) for k in IDENTITY if k in recorded):
        return ""

    def said(s: dict) -> str:
        return f"`{s.get('env')}` version {s.get('version')} (tasks fingerprint {s.get('tasks_hash')})"

    return f"now serves {said(now)}, not the {said(recorded)} this run recorded"


class Descriptions:
    """What each server plays (`describe`), asked once per process and split and shared by every env of the
    process; set anew by each run's `prepare` (what that run recorded), and forgotten when a connection to
    the server is lost, as a server started again may play another version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, c: JsonClient, split: str | None) -> dict[str, Any]:
        key = (c.base_url, split or "")
        with self._lock:
            found = self._known.get(key)
        if found is not None:
            return found
        d = describe(c, split)  # outside the lock: envs of other servers need not wait
        with self._lock:
            return self._known.setdefault(key, d)

    def put(self, url: str, split: str | None, d: dict[str, Any]) -> None:
        """`d` is what `url` plays now: every description of it known before is forgotten."""
        with self._lock:
            for key in [k for k in self._known if k[0] == url]:
                del self._known[key]
            self._known[(url, split or "")] = d

    def forget(self, url: str) -> None:
        with self._lock:
            for key in [k for k in self._known if k[0] == url]:
                del self._known[key]


class Board:
    """The sessions this process holds on each server, and the servers that said they were full (offered
    no more sessions until their wait is over): how the least busy server is chosen, OpenEnv servers
    saying nothing of their load."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._full_until: dict[str, float] = {}
        self._why: dict[str, str] = {}

    def load(self, url: str) -> float:
        with self._lock:
            if self._full_until.get(url, 0.0) > time.monotonic():
                return float("inf")
            return float(self._held.get(url, 0))

    def full_for(self, url: str) -> float:
        """Seconds `url` is still offered no session (0 when it is)."""
        with self._lock:
            return max(0.0, self._full_until.get(url, 0.0) - time.monotonic())

    def why_full(self, url: str) -> str:
        """What `url` answered when it was found full."""
        with self._lock:
            return self._why.get(url, "")

    def mark_full(self, url: str, wait_s: float, why: str = "") -> None:
        with self._lock:
            self._full_until[url] = time.monotonic() + wait_s
            self._why[url] = why

    def opened(self, url: str) -> None:
        with self._lock:
            self._held[url] = self._held.get(url, 0) + 1

    def closed(self, url: str) -> None:
        with self._lock:
            self._held[url] = max(0, self._held.get(url, 0) - 1)


BOARD = Board()
DESCRIPTIONS = Descriptions()
