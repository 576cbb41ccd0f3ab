"""The rollout: task scheduling (`tasks`), env pools chosen by `env.backend` (`pools`: worker processes in
`workers`, threads in `threads`), the turn loop (`loop`)."""

from agent_sft.rollout.loop import (
    Collector,
    RolloutError,
    RunStats,
    default_env_kwargs,
    iter_collect,
    package_versions,
    turn_seed,
)
from agent_sft.rollout.pools import BACKENDS, EnvPool, PoolCounters, Reply, WorkerStartError, backend, make_pool
from agent_sft.rollout.tasks import EpisodeTask, Plan, episode_list, make_plan, select_tasks
from agent_sft.rollout.workers import WorkerPool, canonical_env_name

__all__ = [
    "BACKENDS",
    "Collector",
    "EnvPool",
    "EpisodeTask",
    "Plan",
    "PoolCounters",
    "Reply",
    "RolloutError",
    "RunStats",
    "WorkerPool",
    "WorkerStartError",
    "backend",
    "canonical_env_name",
    "default_env_kwargs",
    "episode_list",
    "iter_collect",
    "make_plan",
    "make_pool",
    "package_versions",
    "select_tasks",
    "turn_seed",
]
