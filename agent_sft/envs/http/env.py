"""The `http` env: episodes played on env servers (agent-sft's `serve-env`, or AgentGym's), as a `TextEnv`.

Each instance holds one session on one server at a time, opened on the least busy of `url` at its first
reset and closed after an error and by `close()`. Tasks, observations, rewards and infos pass through as
the server gives them, so an episode played through an agent-sft server equals the one played in process.

    env = HttpEnv(url=["http://127.0.0.1:8100"], expert="planner")
    obs, info = env.reset(seed=3, options={"task_id": env.tasks()[0].task_id})
"""

from __future__ import annotations

import logging
from typing import Any

from agent_sft.envs import remote_client
from agent_sft.envs.base import TaskSpec
from agent_sft.envs.http.leases import close_session, open_session
from agent_sft.envs.http.protocol import PROTOCOL, task_from_json
from agent_sft.envs.remote import RemoteEnv
from agent_sft.envs.remote_client import JsonClient, ServerError

logger = logging.getLogger(__name__)


class HttpEnv(RemoteEnv):
    """Play tasks on env servers.

    Args:
        url: server URLs; sessions go to the one with the fewest sessions in use.
        protocol: `agent-sft`, or an AgentGym server's (`agentgym-webshop`, ...; see `agentgym.ADAPTERS`).
        served_env: the env the servers play (checked against what an agent-sft server reports).
        data_indices: AgentGym servers: the task indices, `a-b` or `a,b,c`.
        timeout_s, retries, token_env: see `JsonClient`.
        lease_s: agent-sft servers: the lease of each session, renewed in the background
            (`agent_sft.envs.http.leases`); 0 for none (the server's idle timeout applies).
        seed, max_steps, expert: the generic env arguments, passed to the server's env for each session.
    """

    def __init__(
        self,
        url: list[str] | str,
        protocol: str = "agent-sft",
        served_env: str | None = None,
        data_indices: str = "0-99",
        timeout_s: float = 60.0,
        retries: int = 3,
        token_env: str | None = "AGENT_SFT_ENV_TOKEN",
        seed: int = 0,
        max_steps: int = 50,
        expert: str | None = None,
        lease_s: float = 30.0,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("the http env needs at least one server URL (env.http.url)")
        self.protocol = protocol
        self.served_env = served_env
        self.max_steps = int(max_steps)
        if protocol == "agent-sft":
            adapter: Any = AgentSftAdapter(seed=seed, max_steps=max_steps, expert=expert, lease_s=lease_s)
        else:
            from agent_sft.envs.http.agentgym import make_adapter

            adapter = make_adapter(protocol, data_indices=data_indices, max_steps=max_steps)
        super().__init__([JsonClient(u, timeout_s, retries, token_env) for u in urls], adapter)

    def __repr__(self) -> str:
        return f"HttpEnv(protocol={self.protocol!r}, servers={[c.base_url for c in self.clients]!r})"


class AgentSftAdapter:
    """agent-sft's own protocol (`agent_sft.envs.http.protocol`)."""

    def __init__(self, seed: int, max_steps: int, expert: str | None, lease_s: float = 0.0):
        self.params = {"seed": seed, "max_steps": max_steps, "task_types": None, "expert": expert}
        self.lease_s = lease_s
        self._index: dict[str, int] = {}

    def tasks(self, c: JsonClient) -> list[TaskSpec]:
        return [task_from_json(t) for t in c.call("GET", "/tasks")["tasks"]]

    def load(self, c: JsonClient) -> float:
        h = c.call("GET", "/health")
        return float(h.get("sessions", 0)) / max(1.0, float(h.get("max_sessions") or 1))

    def create(self, c: JsonClient) -> str:
        sid, _ = open_session(c, self.params, self.lease_s)
        self._index[sid] = 0
        return sid

    def reset(self, c: JsonClient, sid: str, seed: int | None, task_id: str | None) -> tuple[str, dict]:
        r = c.call("POST", f"/sessions/{sid}/reset", {"seed": seed, "options": {"task_id": task_id}})
        self._index[sid] = 0
        return _text(r, "observation"), _info(r)

    def step(self, c: JsonClient, sid: str, action: str) -> tuple[str, float, bool, bool, dict]:
        k = self._index.get(sid, 0)
        r = c.call("POST", f"/sessions/{sid}/step", {"action": action, "index": k}, idempotent=False)
        self._index[sid] = k + 1
        try:
            return (_text(r, "observation"), float(r["reward"]), bool(r["terminated"]), bool(r["truncated"]), _info(r))
        except (KeyError, TypeError, ValueError) as e:
            raise ServerError(f"malformed step reply from {c.base_url}: {type(e).__name__}: {e}: {str(r)[:200]}") from None

    def close(self, c: JsonClient, sid: str) -> None:
        self._index.pop(sid, None)
        close_session(c, sid)


def _text(r: Any, key: str) -> str:
    if not isinstance(r, dict) or not isinstance(r.get(key), str):
        raise ServerError(f"malformed reply: no {key!r} text in {str(r)[:200]}")
    return r[key]


def _info(r: dict) -> dict:
    info = r.get("info")
    if not isinstance(info, dict):
        raise ServerError(f"malformed reply: no 'info' mapping in {str(r)[:200]}")
    return info


def describe_server(url: str, timeout_s: float = 10.0, retries: int = 2, token_env: str | None = None) -> dict:
    """A server's `/info`, checked to speak this protocol version.

    Raises:
        ServerError: it does not answer, or speaks another protocol.
    """
    c = JsonClient(url, timeout_s, retries, token_env)
    try:
        info = c.call("GET", "/info")
    finally:
        c.close()
    if not isinstance(info, dict) or info.get("protocol") != PROTOCOL or not info.get("env"):
        raise ServerError(f"{url} is not an agent-sft env server (protocol {PROTOCOL}): /info gave {str(info)[:200]}")
    return info


def probe_health(url: str, protocol: str = "agent-sft", timeout_s: float = 5.0, token_env: str | None = None) -> str:
    """An empty string when the server at `url` answers its health check (agent-sft's GET /health, an AgentGym server's
    GET /), else why not (`remote_client.probe_health`)."""
    return remote_client.probe_health(url, "/health" if protocol == "agent-sft" else "/", timeout_s, token_env)
