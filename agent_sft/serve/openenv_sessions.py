"""`OpenEnvSessions`: OpenEnv's episodes on agent-sft's session table (`SessionManager`).

Each OpenEnv session is one of the manager's sessions, so its env runs in its own worker process, counts
against `--max-sessions` and closes when unused past the idle timeout, as the agent-sft protocol's do.
A /ws connection opens one and closes it when it ends; `openenv/session/create` over /mcp opens one that
lives until `openenv/session/close` or the idle timeout, and a /ws connection may attach to it
(`/ws?session_id=ID`, one at a time). This table keeps what OpenEnv adds: the episode id, the step
count, the task played and the episode's tools. Every method blocks (the env is asked in its worker):
the app calls them in threads.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from agent_sft.envs.base import TaskSpec
from agent_sft.envs.http.protocol import task_from_json
from agent_sft.envs.tools import ToolCallError, Toolset, toolset_for
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
    attached: bool = False  # a /ws connection speaks for this session now
    last_used: float = field(default_factory=time.monotonic)


class OpenEnvSessions:
    """OpenEnv sessions of `manager`'s env: text actions and tool calls both played; each session's env
    plans with `expert` when one is given."""

    def __init__(self, manager: SessionManager, expert: str | None = None):
        self.manager = manager
        self.expert = expert
        self.tasks: list[TaskSpec] = [task_from_json(t) for t in manager.tasks]
        self._episodes: dict[str, _Episode] = {}
        self._lock = threading.Lock()
        self._default_tools = toolset_for(manager.spec, {})

    # --- the table ----------------------------------------------------------------------------------

    def create(self) -> str:
        """A new session (its env built in its own worker).

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
            self._episodes[sid] = _Episode()
        return sid

    def attach(self, sid: str) -> None:
        """Let a /ws connection speak for the HTTP-created session `sid`.

        Raises:
            KeyError: no such session, or one a connection already speaks for.
        """
        with self._lock:
            ep = self._episodes.get(sid)
            if ep is None:
                raise KeyError(f"Unknown session_id: {sid}")
            if ep.attached:
                raise KeyError(f"Session {sid} already has an attached WebSocket")
            ep.attached = True

    def detach(self, sid: str) -> None:
        with self._lock:
            ep = self._episodes.get(sid)
            if ep is not None:
                ep.attached = False

    def close(self, sid: str) -> bool:
        """Close session `sid` and its env; False when there was none."""
        with self._lock:
            known = self._episodes.pop(sid, None) is not None
        return self.manager.close_session(sid) or known

    def known(self, sid: str) -> bool:
        with self._lock:
            return sid in self._episodes

    def _episode(self, sid: str) -> _Episode:
        with self._lock:
            ep = self._episodes.get(sid)
        if ep is None:
            raise ServeError("unknown_session", f"Unknown session_id: {sid}")
        ep.last_used = time.monotonic()
        return ep

    def _forget_expired(self) -> None:
        """Drop the entries of sessions the manager has surely closed for idleness (unused past its idle
        timeout, the longest a session lives unused)."""
        limit = time.monotonic() - 2 * self.manager.idle_timeout_s - 1.0
        with self._lock:
            for sid in [s for s, ep in self._episodes.items() if ep.last_used < limit and not ep.attached]:
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

    def reset(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        """Start an episode: `data` as OpenEnv's reset sends it (`seed`, `episode_id`, and `task_id` or
        `split` + `index`; other keys are not the env's and are left out)."""
        ep = self._episode(sid)
        task = self.task_of(data)
        body: dict[str, Any] = {"seed": data.get("seed")}
        if task is not None:
            body["options"] = {"task_id": task}
        answer = self.manager.reset(sid, body)
        info = answer["info"]
        ep.episode_id = str(data.get("episode_id") or uuid.uuid4().hex)
        ep.step_count, ep.task_id = 0, info.get("task_id", task)
        ep.tools = toolset_for(self.manager.spec, info)
        return wire.observation(answer["observation"], info)

    def step(self, sid: str, action: str) -> dict[str, Any]:
        """Play `action` (the env's next step)."""
        ep = self._episode(sid)
        got = self.manager.step(sid, {"action": action}).body
        ep.step_count += 1
        return wire.observation(got["observation"], got["info"], got["reward"], got["terminated"], got["truncated"])

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
        return {"episode_id": ep.episode_id, "step_count": ep.step_count, "task_id": ep.task_id}

    def close_all(self) -> None:
        with self._lock:
            self._episodes.clear()
