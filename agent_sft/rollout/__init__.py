"""The rollout: task scheduling (`tasks`), env pools chosen by `env.backend` (`pools`: worker processes in
`workers`, threads in `threads`), the `Collector` (`collector`) and its two loops (`sync_loop`, `async_loop`)
driving each episode's step machine (`episode`)."""

from agent_sft.rollout.collector import Collector, default_env_kwargs, iter_collect
from agent_sft.rollout.pools import BACKENDS, EnvPool, PoolCounters, Reply, WorkerStartError, backend, make_pool
from agent_sft.rollout.run_state import RolloutError, RunStats
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
    "select_tasks",
]
