"""The `openenv` env: episodes played on OpenEnv servers through their own protocol, as a `TextEnv`.

Each instance holds one `/ws` connection (one env on a server) at a time, on the server where this process
holds the fewest, kept across episodes; a reset that finds it gone opens another (a reset is safe to send
again), while a step is sent once: a connection that closes or a reply that does not come ends the
episode as an error. Tasks are the Task API's (`<split>/<index>`, reset with that split and index and the
episode's seed) or, without one, seeds (`seed/<n>`, reset with seed n). A server that is agent-sft's
(`serve-env NAME --protocol openenv`) is played as the env it serves (`envs.openenv.own`): its tasks, text,
actions and infos are the env's.

    env = OpenEnvEnv(url=["http://127.0.0.1:8000"])
    obs, info = env.reset(seed=3, options={"task_id": env.tasks()[0].task_id})
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent_sft.envs.base import TaskList, TaskSpec, task_hash
from agent_sft.envs.openenv import own
from agent_sft.envs.openenv import schema as sch
from agent_sft.envs.openenv.options import token_env_for
from agent_sft.envs.openenv.server import BOARD, DESCRIPTIONS, changed
from agent_sft.envs.openenv.wire import Socket, WireError
from agent_sft.envs.remote import RemoteEnv
from agent_sft.envs.remote_client import JsonClient, ServerError

logger = logging.getLogger(__name__)

SEED_SPLIT = "seeds"
BUSY = "busy"
CHANGED = "changed"


_LISTS: dict[tuple, tuple[dict, TaskList]] = {}
"""The task lists built from each shared description (`server.DESCRIPTIONS`), by the options that shape them:
one copy of every task per process."""
_LISTS_LOCK = threading.Lock()


@dataclass
class _Session:
    """One `/ws` connection and the episode played on it."""

    url: str
    socket: Socket | None
    tools: list[dict] | None = None
    task: TaskSpec | None = None
    steps: int = 0
    last_text: str = ""
    extra: dict = field(default_factory=dict)


def wants_state(fn: Any) -> bool:
    """Whether the success function `fn` takes the env's state: a second parameter (`def won(step, state)`)."""
    if fn is None:
        return False
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in positional)


def _field(value: Any, path: str) -> Any:
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class OpenEnvAdapter:
    """OpenEnv's protocol behind `RemoteEnv` (see the module's docstring; options as `OpenEnvOptions`)."""

    def __init__(self, split: str | None = None, seeds: int = 100, seed_offset: int = 0,
                 success_reward: float | None = None, success_field: str | None = None, success_fn: str | None = None,
                 obs_to_text: str | None = None, token_env: str | None = None, timeout_s: float = 60.0,
                 retries: int = 3, capacity_wait_s: float = 30.0, expert: str | None = None, max_steps: int = 50,
                 env_seed: int = 0, recorded: dict | None = None):
        from agent_sft.envs.hooks import load_function

        self.split, self.seeds, self.seed_offset = split, int(seeds), int(seed_offset)
        self.success_reward = 1.0 if success_reward is None else float(success_reward)
        self.success_field = success_field
        self.success_fn = load_function(success_fn) if success_fn else None
        self._wants_state = bool(success_field and success_field.startswith("state.")) or wants_state(self.success_fn)
        self.obs_to_text, self._to_text = obs_to_text, load_function(obs_to_text) if obs_to_text else None
        self.token_env, self.timeout_s, self.retries = token_env, float(timeout_s), int(retries)
        self.capacity_wait_s = float(capacity_wait_s)
        self.expert = expert
        self.max_steps, self.env_seed = int(max_steps), int(env_seed)  # an agent-sft server's env is built so
        self.recorded = dict(recorded or {})
        self._served: dict[str, Any] | None = None
        self._tasks: TaskList | None = None

    # --- what the server plays ----------------------------------------------------------------------

    def served(self, c: JsonClient) -> dict[str, Any]:
        """The server's description, shared by the envs of this process (`server.DESCRIPTIONS`).

        Raises:
            ServerError: the server does not answer, or plays another env, version or task set than the run
                recorded (`recorded`, `env.openenv.served`): not one episode is played on it then.
        """
        d = DESCRIPTIONS.get(c, self.split)
        if d is not self._served:
            why = changed(self.recorded, d)
            if why:
                DESCRIPTIONS.forget(c.base_url)  # asked again next time: it may be set right meanwhile
                raise ServerError(f"{c.base_url} {why}; its episodes are not played", kind=CHANGED)
            if self._served is not None and self._served.get("tasks_hash") != d.get("tasks_hash"):
                self._tasks = None
            self._served = d
        return d

    @property
    def own(self) -> bool:
        """Whether the server is agent-sft's, played as the env it serves (`envs.openenv.own`)."""
        return bool((self._served or {}).get("agent_sft"))

    def _provenance(self) -> dict[str, Any]:
        s = self._served or {}
        return {"openenv_env": s.get("name"), "openenv_version": s.get("version"),
                "openenv_tasks_hash": s.get("tasks_hash")}

    def tasks(self, c: JsonClient) -> list[TaskSpec]:
        served = self.served(c)
        if self._tasks is None:
            key = (id(served), self.seeds, self.seed_offset)
            with _LISTS_LOCK:
                known = _LISTS.get(key)
                if known is None or known[0] is not served:
                    known = _LISTS[key] = (served, self._task_list(c, served))
            self._tasks = known[1]
        return list(self._tasks.tasks)

    def _task_list(self, c: JsonClient, served: dict[str, Any]) -> TaskList:
        out = []
        if self.own and "tasks" in served:
            try:
                out = own.tasks(served, self._provenance())
            except ValueError as err:
                raise ServerError(f"{c.base_url}: {err}") from None
        elif "tasks" in served:
            types = served.get("split_types") or {}
            for split in served["splits"]:
                for i, task in enumerate(served["tasks"][split]):
                    kind = task.get("type") or task.get("task_type") if isinstance(task, dict) else None
                    extra = {**self._provenance(), "split": split, "split_type": types.get(split), "index": i,
                             "openenv_task_hash": task_hash(task)}
                    listed_id = next((task[k] for k in ("id", "task_id") if isinstance(task, dict)
                                      and isinstance(task.get(k), (str, int)) and task[k] != ""), None)
                    if listed_id is not None:
                        extra["openenv_task_id"] = listed_id  # the Task API's own name for it
                    out.append(TaskSpec(f"{split}/{i}", str(kind or ""), split, extra))
        else:
            for n in range(self.seed_offset, self.seed_offset + self.seeds):
                out.append(TaskSpec(f"{SEED_SPLIT}/{n}", "", SEED_SPLIT, {**self._provenance(), "seed": n}))
        return TaskList(out, served.get("name") or "OpenEnv", "tasks")

    def goal(self, task: TaskSpec) -> str:
        """The task's goal as the Task API lists it (a `goal`, `instruction`, `prompt`, ... field), else the
        env's description from /metadata."""
        served = self._served or {}
        found = None
        if "tasks" in served:
            t = served["tasks"][task.game_split][task.extra["index"]]
            if isinstance(t, dict):
                found = next((t[k] for k in ("goal", "instruction", "prompt", "question", "description")
                              if isinstance(t.get(k), str) and t[k].strip()), None)
        return " ".join(str(found or served.get("description") or "").split())

    # --- sessions -----------------------------------------------------------------------------------

    def load(self, c: JsonClient) -> float:
        return BOARD.load(c.base_url)

    def _headers(self, url: str) -> dict[str, str]:
        name = token_env_for(url, self.token_env)
        token = os.environ.get(name) if name else None
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _connect(self, c: JsonClient, s: _Session | None = None) -> Socket:
        """A new connection, checked by a first message (the tools of an MCP env, else the state): a full
        server answers it with CAPACITY_REACHED, and is then offered no session for `capacity_wait_s`."""
        wait = BOARD.full_for(c.base_url)
        if wait > 0:
            raise ServerError(f"{BOARD.why_full(c.base_url)} (offered no session for {wait:.1f} s more)", kind=BUSY)
        mcp = self.served(c)["mcp"]
        socket = Socket(c.base_url, self._headers(c.base_url), self.timeout_s, min(self.timeout_s, 10.0))
        try:
            if mcp:
                tools = socket.request("step", {"type": "list_tools"}).get("observation", {}).get("tools")
                if s is not None:
                    s.tools = list(tools or [])
            else:
                socket.request("state")
        except WireError as err:
            if err.code == "CAPACITY_REACHED":
                socket.close()
                BOARD.mark_full(c.base_url, self.capacity_wait_s, str(err))
                raise ServerError(str(err), kind=BUSY) from None
            # A state asked before any reset may fail in the env: the connection stays usable.
        except ServerError:
            socket.close()
            DESCRIPTIONS.forget(c.base_url)
            raise
        return socket

    def create(self, c: JsonClient) -> _Session:
        s = _Session(c.base_url, None)
        s.socket = self._connect(c, s)
        BOARD.opened(c.base_url)
        return s

    def close(self, c: JsonClient, s: _Session) -> None:
        if s.socket is not None:
            if s.socket.closed:  # lost: a server started again may play something else, so it is described again
                DESCRIPTIONS.forget(s.url)
            s.socket.close()
        BOARD.closed(s.url)

    # --- episodes -----------------------------------------------------------------------------------

    def reset(self, c: JsonClient, s: _Session, seed: int | None, task_id: str | None) -> tuple[str, dict]:
        self.tasks(c)
        task = self._tasks.choose(task_id, seed)
        if self.own:
            data = own.reset_data(task, seed, self.max_steps, self.env_seed)
        elif task.game_split == SEED_SPLIT:
            data = {"seed": task.extra["seed"]}
        else:
            data = {"split": task.game_split, "index": task.extra["index"]}
            if seed is not None:
                data["seed"] = int(seed)
        reply = None
        for attempt in range(self.retries + 1):
            try:
                if s.socket is None or s.socket.closed:
                    s.socket = self._connect(c, s)
                reply = s.socket.request("reset", data)
                break
            except WireError:
                raise  # the server answered: sending it again gets the same answer
            except ServerError:
                if attempt >= self.retries:
                    raise
                time.sleep(min(2.0, 0.1 * 2**attempt) * (0.5 + random.random()))
        observation = self._observation(c, reply)
        s.task, s.steps = task, 0
        if self.own:
            try:
                s.last_text = own.text_of(observation)
                return s.last_text, own.info_of(observation, self.expert)
            except ValueError as err:
                raise ServerError(f"{c.base_url}: {err}") from None
        s.last_text = self._text(c, observation)
        info = {"task_id": task.task_id, "task_type": task.task_type, "game_split": task.game_split,
                "goal": self.goal(task), "step": 0, "won": False}
        if task.game_split != SEED_SPLIT:
            info["task_hash"] = task.extra["openenv_task_hash"]
        if s.tools is not None:
            info["mcp_tools"] = s.tools
        return s.last_text, info

    def step(self, c: JsonClient, s: _Session, action: str) -> tuple[str, float, bool, bool, dict]:
        if s.task is None or s.socket is None:
            raise RuntimeError("no episode on this OpenEnv connection; call reset() first")
        s.steps += 1
        try:
            payload = self._payload(s, action)
        except sch.ActionError as err:
            return self._invalid(s, str(err))
        try:
            reply = s.socket.request("step", payload)
        except WireError as err:
            if err.code == "VALIDATION_ERROR":  # the action, refused before the env saw it
                return self._invalid(s, str(err).split(": ", 1)[-1])
            raise
        observation = self._observation(c, reply)
        if self.own:
            try:
                answer = own.step_of(reply, self.expert)
            except ValueError as err:
                raise ServerError(f"{c.base_url}: {err}") from None
            s.last_text = answer[0]
            return answer
        refused = sch.tool_error(observation) if s.tools is not None else ""
        if refused:
            return self._invalid(s, refused, self._text(c, observation))
        reward = reply.get("reward")
        done = bool(reply.get("done"))
        s.last_text = self._text(c, observation)
        won, unknown = self._won(s, observation, reward) if done else (False, "")
        info: dict[str, Any] = {"task_id": s.task.task_id, "task_type": s.task.task_type,
                                "game_split": s.task.game_split, "step": s.steps, "won": won}
        if unknown:
            info["success_error"] = unknown
        if reply.get("metadata"):
            info["openenv_metadata"] = reply["metadata"]
        return s.last_text, float(reward or 0.0), done, False, info

    def _invalid(self, s: _Session, reason: str, text: str | None = None) -> tuple[str, float, bool, bool, dict]:
        info = {"task_id": s.task.task_id, "task_type": s.task.task_type, "game_split": s.task.game_split,
                "step": s.steps, "won": False, "action_valid": False, "invalid_reason": reason}
        return text if text is not None else f"Invalid action: {reason}", 0.0, False, False, info

    def _payload(self, s: _Session, action: str) -> dict:
        if self.own:
            return {"action": action}
        if s.tools is not None:
            name, arguments = sch.tool_call(action, s.tools)
            return {"type": "call_tool", "tool_name": name, "arguments": arguments}
        return sch.action_payload(action, (self._served or {}).get("schema", {}).get("action"))

    def _observation(self, c: JsonClient, reply: Any) -> dict:
        observation = reply.get("observation") if isinstance(reply, dict) else None
        if not isinstance(observation, dict):
            raise ServerError(f"{c.base_url}: malformed observation: {json.dumps(reply, default=str)[:200]}")
        return observation

    def _text(self, c: JsonClient, observation: dict) -> str:
        if self._to_text is None:
            return sch.render(observation, (self._served or {}).get("schema", {}).get("observation"))
        try:
            return str(self._to_text(observation))
        except Exception as err:  # noqa: BLE001 - the user's function: its error ends the episode, named
            raise RuntimeError(f"obs_to_text {self.obs_to_text} failed: {type(err).__name__}: {err}") from err

    def _won(self, s: _Session, observation: dict, reward: Any) -> tuple[bool, str]:
        """The success rule, asked on the step that ends the episode: (won, why it could not be told). A state
        that cannot be read scores the episode not won, the episode itself finished."""
        state = None
        if self._wants_state:
            try:
                state = s.socket.request("state")
            except ServerError as err:  # answered with an error, or the connection went: the next reset reconnects
                return False, f"the state, which the success rule reads, could not be read: {err}"
        if self.success_field:
            where, _, path = self.success_field.partition(".")
            return bool(_field(state if where == "state" else observation, path)), ""
        if self.success_fn is not None:
            step = {"observation": observation, "reward": reward, "done": True}
            if self._wants_state:
                return bool(self.success_fn({**step, "state": state}, state)), ""
            return bool(self.success_fn(step)), ""
        return reward is not None and float(reward) >= self.success_reward, ""


class OpenEnvEnv(RemoteEnv):
    """Play tasks on OpenEnv servers.

    Args:
        url: server URLs; a connection goes to the one where this process holds the fewest.
        split, seeds, seed_offset, success_reward, success_field, success_fn, obs_to_text, token_env,
            timeout_s, retries, capacity_wait_s: as `OpenEnvOptions` says.
        served: what `prepare` recorded (`env.openenv.served`): a server that plays another env, version or
            task set is refused.
        seed, max_steps: the generic env arguments (the step budget is `TimeLimit`'s; an agent-sft server's
            env is built with both, as the env in process is).
        expert: the expert policy's expert (None for any other policy): an agent-sft server plans with the
            one it serves (`--expert`); the run checked it is this one. Without it, the plan is left out of
            the infos, as the env in process gives none.
    """

    def __init__(self, url: list[str] | str, split: str | None = None, seeds: int = 100, seed_offset: int = 0,
                 success_reward: float | None = None, success_field: str | None = None,
                 success_fn: str | None = None, obs_to_text: str | None = None, token_env: str | None = None,
                 timeout_s: float = 60.0, retries: int = 3, capacity_wait_s: float = 30.0,
                 served: dict | None = None, seed: int = 0, max_steps: int = 50, expert: str | None = None) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("the openenv env needs at least one server URL (env.openenv.url)")
        self.timeout_s = float(timeout_s)
        adapter = OpenEnvAdapter(split, seeds, seed_offset, success_reward, success_field, success_fn, obs_to_text,
                                 token_env, timeout_s, retries, capacity_wait_s, expert, max_steps, seed, served)
        super().__init__([JsonClient(u, timeout_s, retries, token_env_for(u, token_env)) for u in urls], adapter,
                         open_now=False)

    def _open(self) -> None:
        """Open a connection; while every server is at its session limit, wait (at most `timeout_s`)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return super()._open()
            except ServerError:
                waits = [BOARD.full_for(c.base_url) for c in self.clients]
                left = deadline - time.monotonic()
                if not all(w > 0 for w in waits) or left <= 0:
                    raise
                time.sleep(min(1.0, left, min(waits)))

    def __repr__(self) -> str:
        return f"OpenEnvEnv(servers={[c.base_url for c in self.clients]!r})"
