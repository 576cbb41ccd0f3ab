"""`OpenEnvSessions`: OpenEnv's episodes on agent-sft's session table (`SessionManager`).

Each OpenEnv session is one of the manager's sessions, so its env runs in its own worker process, counts
against `--max-sessions` and closes when unused past the idle timeout, as the agent-sft protocol's do.
A /ws connection opens one and closes it when it ends; `openenv/session/create` over /mcp opens one that
lives until `openenv/session/close` or the idle timeout, and a /ws connection may attach to it
(`/ws?session_id=ID`, one at a time; a session a /ws connection opened is its own): while one is attached
the session is held (`SessionManager.held`: never idle), and a close asked for meanwhile waits for it to
detach (OpenEnv 0.10's rules). This table keeps what OpenEnv adds: the episode id, the step count, the
task played and the episode's tools. Every method blocks (the env is asked in its worker): the app calls
them in threads.

A reset may also set what agent-sft's own protocol sets when it opens a session: the step budget
(`max_steps`, by default the server's), the env's seed (`env_seed`) and, for an env that filters its
tasks by type, `task_types`; the session's env is built again when they change. A reset key the server
cannot honour is refused, named.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

from agent_sft.envs.base import TaskSpec
from agent_sft.envs.http.protocol import task_from_json
from agent_sft.envs.tools import Tool, ToolCallError, Toolset, act_tool, toolset_for
from agent_sft.serve import openenv_wire as wire
from agent_sft.serve.sessions import ServeError, SessionManager


class CapacityError(ServeError):
    """Every session slot is taken (OpenEnv's CAPACITY_REACHED)."""

    def __init__(self, active: int, most: int):
        super().__init__("busy", wire.capacity_message(active, most))
        self.active, self.most = active, most


@dataclass
class _Episode:
    episode_id: str | None = None
    step_count: int = 0
    task_id: str | None = None
    tools: Toolset | None = None
    attachable: bool = False  # opened over HTTP (`openenv/session/create`): a /ws connection may attach
    attached: bool = False  # a /ws connection speaks for this session now
    closing: bool = False  # closed when its /ws connection detaches


class OpenEnvSessions:
    """OpenEnv sessions of `manager`'s env: text actions and tool calls both played; each session's env
    plans with `expert` when one is given."""

    RESET_KEYS = ("seed", "episode_id", "task_id", "split", "index", "max_steps", "env_seed")

    def __init__(self, manager: SessionManager, expert: str | None = None):
        self.manager = manager
        self.expert = expert
        self.tasks: list[TaskSpec] = [task_from_json(t) for t in manager.tasks]
        self.reset_keys = self.RESET_KEYS + (("task_types",) if manager.spec.filters_tasks else ())
        self._episodes: dict[str, _Episode] = {}
        self._lock = threading.Lock()
        self._default_tools = self._offered({})

    # --- the table ----------------------------------------------------------------------------------

    def create(self, *, attachable: bool = False) -> str:
        """A new session (its env built in its own worker); `attachable` for one opened over HTTP
        (`openenv/session/create`), which a /ws connection may attach to.

        Raises:
            CapacityError: every slot is taken.
            ServeError: the env could not be built.
        """
        self._forget_expired()
        try:
            sid = self.manager.create({"expert": self.expert} if self.expert else {})["session_id"]
        except ServeError as err:
            if err.kind == "busy":
                raise CapacityError(len(self.manager), self.manager.max_sessions) from None
            raise
        with self._lock:
            self._episodes[sid] = _Episode(attachable=attachable)
        return sid

    def attach(self, sid: str) -> None:
        """Let a /ws connection speak for the HTTP-created session `sid`.

        Raises:
            KeyError: no such session (or one closed or expired, or one a /ws connection opened), or one a
                connection already speaks for.
        """
        with self._lock:
            ep = self._episodes.get(sid)
            if ep is None or not ep.attachable or ep.closing or sid not in self.manager:
                raise KeyError(f"Unknown session_id: {sid}")
            if ep.attached:
                raise KeyError(f"Session {sid} already has an attached WebSocket")
            ep.attached = True
            self.manager.held.add(sid)
        if self.manager.renew({"session_ids": [sid]})["unknown"]:  # expired meanwhile
            self.detach(sid)
            raise KeyError(f"Unknown session_id: {sid}")

    def detach(self, sid: str) -> None:
        """The /ws connection attached to `sid` is gone: the session closes if its close was asked for."""
        with self._lock:
            ep = self._episodes.get(sid)
            if ep is not None:
                ep.attached = False
            self.manager.held.discard(sid)
            closing = ep is not None and ep.closing
        if closing:
            self.close(sid)
        else:
            self.manager.renew({"session_ids": [sid]})  # its idle time starts now

    def close(self, sid: str) -> bool:
        """Close session `sid` and its env; False when there was none."""
        with self._lock:
            known = self._episodes.pop(sid, None) is not None
            self.manager.held.discard(sid)
        return self.manager.close_session(sid) or known

    def close_request(self, sid: str) -> dict[str, Any]:
        """`openenv/session/close`: the session closed, or, while a /ws connection is attached, closed when
        it detaches (`closing`)."""
        with self._lock:
            ep = self._episodes.get(sid)
            if ep is not None and ep.attached:
                ep.closing = True
                return {"session_id": sid, "closed": False, "closing": True}
        self.close(sid)
        return {"session_id": sid, "closed": True}

    def known(self, sid: str) -> bool:
        """Whether `sid` is an open session (one closed or expired is not)."""
        with self._lock:
            if sid not in self._episodes:
                return False
        if sid in self.manager:
            return True
        with self._lock:
            self._episodes.pop(sid, None)
        return False

    def _episode(self, sid: str) -> _Episode:
        with self._lock:
            ep = self._episodes.get(sid)
        if ep is None:
            raise ServeError("unknown_session", f"Unknown session_id: {sid}")
        return ep

    def _forget_expired(self) -> None:
        """Drop the entries of sessions the manager has closed (for idleness, or a failed env)."""
        with self._lock:
            for sid in [s for s, ep in self._episodes.items() if not ep.attached and s not in self.manager]:
                del self._episodes[sid]

    # --- an episode ---------------------------------------------------------------------------------

    def task_of(self, data: dict[str, Any]) -> str | None:
        """The task id a reset asks for: `task_id`, or `split` and `index` (0 by default) of the Task API.

        Raises:
            ValueError: an unknown split or an index out of range.
        """
        if data.get("task_id") is not None:
            return str(data["task_id"])
        split = data.get("split")
        if split is None:
            return None
        try:
            tasks = wire.split_of(self.tasks, str(split))
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        index = data.get("index") if data.get("index") is not None else 0
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(tasks):
            raise ValueError(f"Invalid task index {index!r} for split {split!r} ({len(tasks)} tasks)")
        return tasks[index]["task_id"]

    def env_of(self, data: dict[str, Any]) -> dict[str, Any]:
        """The session's env as a reset's `data` asks for it (the generic env kwargs).

        Raises:
            ValueError: a key the server cannot honour (named, with the ones it takes), or a bad env_seed.
        """
        unknown = sorted(set(data) - set(self.reset_keys))
        if unknown:
            why = (" (task_types: this env does not filter its tasks by type)" if "task_types" in unknown else "")
            raise ValueError(f"reset: this server cannot honour {', '.join(map(repr, unknown))}{why}; "
                             f"it takes {', '.join(self.reset_keys)}")
        env_seed = data.get("env_seed")
        if env_seed is not None and (isinstance(env_seed, bool) or not isinstance(env_seed, int)):
            raise ValueError(f"env_seed: expected an integer, got {env_seed!r}")
        body: dict[str, Any] = {"seed": env_seed or 0, "max_steps": data.get("max_steps", self.manager.max_steps)}
        if data.get("task_types") is not None:
            body["task_types"] = data["task_types"]
        if self.expert:
            body["expert"] = self.expert
        return body

    def reset(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        """Start an episode: `data` as OpenEnv's reset sends it (`seed`, `episode_id`, and `task_id` or
        `split` + `index`), with the env's settings (`max_steps`, `env_seed`, `task_types`).

        Raises:
            ValueError: a key the server cannot honour, an unknown split or an index out of range.
            ServeError: bad settings, or the env failed.
        """
        ep = self._episode(sid)
        body = self.env_of(data)
        task = self.task_of(data)
        self.manager.rebuild(sid, body)
        reset: dict[str, Any] = {"seed": data.get("seed")}
        if task is not None:
            reset["options"] = {"task_id": task}
        answer = self.manager.reset(sid, reset)
        info = answer["info"]
        tools = self._offered(info)
        with self._lock:
            ep.episode_id = str(data.get("episode_id") or uuid.uuid4().hex)
            ep.step_count, ep.task_id, ep.tools = 0, info.get("task_id", task), tools
        return wire.observation(answer["observation"], info)

    def step(self, sid: str, action: str) -> dict[str, Any]:
        """Play `action` (the env's next step)."""
        ep = self._episode(sid)
        got = self.manager.step(sid, {"action": action}).body
        with self._lock:  # a /mcp tools/call and a /ws step may play the same session at once
            ep.step_count += 1
        return wire.observation(got["observation"], got["info"], got["reward"], got["terminated"], got["truncated"])

    def _offered(self, info: dict[str, Any]) -> Toolset:
        """The tools listed and taken for an episode whose first info is `info`: the env's own, those it
        offers before any reset, and `act(command)`; so a list a client took before a reset (or in an
        episode of another task type) holds after it."""
        candidates = [*toolset_for(self.manager.spec, info).tools, *(self._default_tools.tools if info else ()),
                      act_tool()]
        by_name: dict[str, Tool] = {}
        for t in candidates:  # the episode's own first
            by_name.setdefault(t.name, t)
        return Toolset(tuple(by_name.values()))

    def toolset(self, sid: str | None) -> Toolset:
        """The tools of session `sid`'s episode (before a reset, or with no session: as the env starts)."""
        ep = self._episode(sid) if sid is not None else None
        return ep.tools if ep is not None and ep.tools is not None else self._default_tools

    def call_tool(self, sid: str, name: str, arguments: Any) -> dict[str, Any]:
        """A tool call played as the action it makes; a call that makes none is answered with OpenEnv's
        tool error (`tool_not_found` or `invalid_args`) and plays nothing."""
        tools = self.toolset(sid)
        try:
            action = tools.action(name, arguments)
        except ToolCallError as e:
            kind = "tool_not_found" if name not in {t.name for t in tools.tools} else "invalid_args"
            return wire.tool_observation(name, None, (kind, str(e)))
        return wire.tool_observation(name, self.step(sid, action))

    def state(self, sid: str) -> dict[str, Any]:
        ep = self._episode(sid)
        self.manager.renew({"session_ids": [sid]})  # asking for the state is using the session
        with self._lock:
            return {"episode_id": ep.episode_id, "step_count": ep.step_count, "task_id": ep.task_id}

    def close_all(self) -> None:
        with self._lock:
            self._episodes.clear()
