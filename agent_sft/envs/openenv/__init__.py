"""The `openenv` env: episodes played on OpenEnv servers (a Hub Space, a container, a local server), speaking
OpenEnv's protocol itself (`/ws`, `/schema`, the Task API; no `openenv` package needed):

    agent-sft collect env.env_name=openenv env.openenv.url=http://127.0.0.1:8000 policy.type=openai ...

Before a run, every server is described (`prepare`): one that does not answer, or that plays another env,
version or task set than the first, stops the run before any episode. What they play (name and version
from /metadata, the Task API's splits and a fingerprint of their tasks) is recorded in the folder's config
(`env.openenv.served`), in every episode's `extra`, and on the dataset card. A server that is agent-sft's
(`agent-sft serve-env NAME --protocol openenv`) is played as its env: the episodes record that env's name
(as the `http` env's do), so its prompt template, action handling, per-episode info keys and expert apply.
"""

from __future__ import annotations

from typing import Any

from agent_sft.envs.openenv.options import OpenEnvOptions, token_env_for
from agent_sft.envs.specs import EnvCard, EnvSpec


def prepare(options: OpenEnvOptions) -> dict[str, Any]:
    """Describe every server; the option values to set (`served`).

    Raises:
        ConfigError: no URL, a server that does not answer as an OpenEnv server, or servers that differ.
    """
    from agent_sft.envs.openenv.server import DESCRIPTIONS, describe, summary
    from agent_sft.envs.remote_client import JsonClient, ServerError
    from agent_sft.errors import ConfigError

    if not options.url:
        raise ConfigError("env.openenv.url: give the OpenEnv server URL(s), e.g. env.openenv.url=http://127.0.0.1:8000")
    seen: dict[str, Any] = {}
    for u in options.url:
        c = JsonClient(u, min(options.timeout_s, 10.0), retries=1,
                       token_env=token_env_for(u, options.token_env))
        try:
            d = describe(c, options.split)
            DESCRIPTIONS.put(c.base_url, options.split, d)  # the run plays what it records, not what an earlier one saw
        except ServerError as err:
            raise ConfigError(f"env.openenv.url: {err}. Nothing was played.") from None
        finally:
            c.close()
        served = {**summary(d), "success": options.success_rule()}
        if seen and served != seen:
            raise ConfigError(f"env.openenv.url: {u} serves {served}, but {options.url[0]} serves {seen}; give "
                              "servers of one env, version and task set")
        seen = served
    return {"served": seen}


def card_line(options: dict[str, Any]) -> str:
    """What the dataset card says of the servers played, from the folder's recorded `env.openenv` options."""
    s = options.get("served") or (options.get("options") or {}).get("served") or {}
    if not s:
        return ""
    types = s.get("split_types") or {}
    played = ", ".join(f"{n} ({types[n]})" if n in types else n for n in s.get("splits") or [])
    tasks = (f"Task API split(s) played {played}, {s.get('tasks')} tasks (fingerprint "
             f"`{s.get('tasks_hash')}`)" if s.get("tasks_hash") else "seeded resets, no Task API")
    kind = "MCP-tool env" if s.get("mcp") else "env"
    own = f" (agent-sft's `{s['agent_sft'].get('env')}`)" if isinstance(s.get("agent_sft"), dict) else ""
    return (f"OpenEnv {kind} `{s.get('env')}`{own} version {s.get('version')}, {tasks}; success: {s.get('success')}.")


SPEC = EnvSpec(
    name="openenv",
    entry_point="agent_sft.envs.openenv.env:OpenEnvEnv",
    options=OpenEnvOptions,
    packages=("httpx", "websockets"),
    expert_kwarg="expert",  # an agent-sft server's (`--expert`); other OpenEnv servers give no plan
    shared_process=True,  # connections wait on the network: many run as threads of one process
    prepare=prepare,
    extra="openenv",
    episode_keys=("mcp_tools",),
    tools="agent_sft.envs.openenv.schema:mcp_tools",
    card=EnvCard(
        title="OpenEnv",
        description="Episodes played on OpenEnv servers (Hub Spaces, containers), through OpenEnv's own protocol.",
        expert_source="the served env, on agent-sft's servers started with --expert",
        served="agent_sft.envs.openenv:card_line",
    ),
)

__all__ = ["SPEC", "OpenEnvOptions", "card_line", "prepare"]
