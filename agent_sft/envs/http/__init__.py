"""The `http` env: episodes played on env servers, agent-sft's own (`agent-sft serve-env`) or AgentGym's.

    agent-sft serve-env alfworld --port 8100 &
    agent-sft collect env.env_name=http env.http.url=http://127.0.0.1:8100

Before a run, every server is asked what it serves (`prepare`): a server that does not answer stops the
run before any episode, and the episodes record the served env's name, so their ids, seeds and splits
are those of the same env played in process.
"""

from __future__ import annotations

from typing import Any

from agent_sft.envs.http.options import PROTOCOLS, HttpOptions
from agent_sft.envs.specs import EnvCard, EnvSpec


def prepare(options: HttpOptions) -> dict[str, Any]:
    """Ask every server what it serves; the option values to set (`served_env`, `served`).

    Raises:
        ConfigError: no URL, a server that does not answer, servers serving different envs or options,
            or `served_env` naming another env than the servers play.
    """
    from agent_sft.envs.http.client import ServerError
    from agent_sft.errors import ConfigError

    if not options.url:
        raise ConfigError("env.http.url: give the env server URL(s), e.g. env.http.url=http://127.0.0.1:8100")
    if options.protocol != "agent-sft":
        from agent_sft.envs.http.agentgym import probe

        for u in options.url:
            try:
                probe(options.protocol, u, options.timeout_s, token_env=options.token_env)
            except ServerError as err:
                raise ConfigError(f"env.http.url: {err}. Nothing was played.") from None
        return {}
    from agent_sft.envs.http.env import describe_server

    seen: dict[str, Any] = {}
    for u in options.url:
        try:
            info = describe_server(u, min(options.timeout_s, 10.0), retries=1, token_env=options.token_env)
        except ServerError as err:
            raise ConfigError(f"env.http.url: {err}. Nothing was played.") from None
        served = {"env": info["env"], "fingerprint": info.get("fingerprint") or {},
                  "experts": list(info.get("experts") or []), "default_expert": info.get("default_expert"),
                  "packages": dict(info.get("packages") or {}),
                  "episode_keys": list(info.get("episode_keys") or []),
                  "has_expert": bool(info.get("has_expert", True))}
        if seen and (served["env"], served["fingerprint"]) != (seen["env"], seen["fingerprint"]):
            raise ConfigError(f"env.http.url: {u} serves {served['env']} {served['fingerprint']}, but "
                              f"{options.url[0]} serves {seen['env']} {seen['fingerprint']}; give servers of one env")
        seen = served
    if options.served_env and options.served_env != seen["env"]:
        raise ConfigError(f"env.http.served_env: the servers play {seen['env']!r}, not {options.served_env!r}")
    return {"served_env": seen.pop("env"), "served_options": seen.pop("fingerprint"), "served": seen}


SPEC = EnvSpec(
    name="http",
    entry_point="agent_sft.envs.http.env:HttpEnv",
    options=HttpOptions,
    packages=("httpx",),
    expert_kwarg="expert",
    shared_process=True,  # sessions wait on the network: many run as threads of one process
    prepare=prepare,
    extra="openai",
    card=EnvCard(
        title="Env servers (HTTP)",
        description="Episodes played on env servers: agent-sft serve-env, or AgentGym's servers.",
        expert_source="the served env",
    ),
)

__all__ = ["PROTOCOLS", "SPEC", "HttpOptions", "prepare"]
