"""OpenEnv servers that are agent-sft's (`agent-sft serve-env NAME --protocol openenv`), played as the env they
serve (pure functions).

Such a server says so in its /metadata (`agent_sft`: the env's registered name, options, experts, info keys;
`server.agent_sft_env`). Its tasks are the env's own (the Task API lists their ids, types, splits and extras),
a reset names the task by its id and builds the env as this run's (its step budget and seed), an
observation's `text` is the env's observation and its `metadata` the env's info, and a step is the env's
text action: so an episode played through it has the prompts, actions, rewards and infos of the same
episode played in process.
"""

from __future__ import annotations

from typing import Any

from agent_sft.envs.base import TaskSpec

EXPERT_KEYS = ("expert_plan", "expert")
"""Info keys the served env adds when it plans with an expert: left out unless this run's policy is the expert,
as the env played in process has them only then."""


def tasks(served: dict[str, Any], provenance: dict[str, Any]) -> list[TaskSpec]:
    """The served env's tasks, in its order within each split, each recording `provenance` in its extra."""
    out = []
    for split in served["splits"]:
        for t in served["tasks"][split]:
            if not isinstance(t, dict) or not t.get("task_id"):
                raise ValueError(f"an agent-sft server's task has no task_id: {str(t)[:200]}")
            out.append(TaskSpec(str(t["task_id"]), str(t.get("task_type") or ""), str(t.get("game_split") or split),
                                {**dict(t.get("extra") or {}), **provenance}))
    return out


def reset_data(task: TaskSpec, seed: int | None, max_steps: int, env_seed: int) -> dict[str, Any]:
    """The /ws reset of `task` (by its id) with the episode's seed, on the env this run builds in process:
    its step budget and seed (the generic env kwargs `max_steps` and `seed`)."""
    data: dict[str, Any] = {"task_id": task.task_id, "max_steps": int(max_steps), "env_seed": int(env_seed)}
    if seed is not None:
        data["seed"] = int(seed)
    return data


def info_of(observation: dict[str, Any], expert: str | None) -> dict[str, Any]:
    """The env's info, as the observation's `metadata` carries it (its expert's keys only with `expert`)."""
    info = observation.get("metadata")
    if not isinstance(info, dict):
        raise ValueError(f"an agent-sft server's observation has no metadata (the env's info): {str(observation)[:200]}")
    return dict(info) if expert else {k: v for k, v in info.items() if k not in EXPERT_KEYS}


def text_of(observation: dict[str, Any]) -> str:
    """The env's observation text."""
    text = observation.get("text")
    if not isinstance(text, str):
        raise ValueError(f"an agent-sft server's observation has no text: {str(observation)[:200]}")
    return text


def step_of(reply: dict[str, Any], expert: str | None) -> tuple[str, float, bool, bool, dict]:
    """A step's reply as the env answered it: (observation, reward, terminated, truncated, info)."""
    observation = reply["observation"]
    truncated = bool(observation.get("truncated"))
    return (text_of(observation), float(reply.get("reward") or 0.0), bool(reply.get("done")) and not truncated,
            truncated, info_of(observation, expert))
