"""HTTP calls to env servers (`agent_sft.envs.remote_client`, where every remote env finds them)."""

from agent_sft.envs.remote_client import JsonClient, ServerError, load_httpx, probe_health

__all__ = ["JsonClient", "ServerError", "load_httpx", "probe_health"]
