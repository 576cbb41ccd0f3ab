"""The collector: plays a plan of episodes with one env pool per env of the run (`env.backend`) and a
policy in this process, in the loop `loop.mode` names (`sync_loop` or `async_loop`); each episode is one
`episode.EpisodeMachine`."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

from agent_sft.config import CollectConfig
from agent_sft.config.lanes import lanes
from agent_sft.envs import EnvSpec
from agent_sft.policies.base import Policy
from agent_sft.prompts import PromptTemplate, resolve_template
from agent_sft.records import END_ERROR, Episode, PolicyInfo
from agent_sft.rollout.async_loop import AsyncLoop
from agent_sft.rollout.episode import EpisodeSetup
from agent_sft.rollout.feed import Feed
from agent_sft.rollout.health import EnvHealth
from agent_sft.rollout.pools import EnvPool, backend, make_pool
from agent_sft.rollout.run_state import LaneRun, RolloutError, RunStats
from agent_sft.rollout.sync_loop import SyncLoop
from agent_sft.rollout.tasks import LaneTasks, Plan, make_plan
from agent_sft.run import Run, resolve


def default_env_kwargs(cfg: CollectConfig) -> dict[str, Any]:
    """What the env of a single-env run is built with: the generic keyword arguments
    (`agent_sft.envs.GENERIC_KWARGS`) and the env's own options (`env.<env>.*`)."""
    return lanes(cfg)[0].env_kwargs(cfg)


class Collector:
    """Plays a plan of episodes with pools of envs (`env.backend`, one pool per env of the run) and a
    policy in this process.

    Typical use::

        with Collector(cfg, policy) as c:
            plan = c.plan(writer.done_ids)
            for episode in c.run(plan):
                writer.add(episode)

    With `env.mix`, every turn's policy batch holds episodes of every env; each env has its own pool,
    sized by its share of the plan, and the envs of a turn step at the same time.

    Args:
        run: The run (`agent_sft.run.resolve`), or a config to resolve (its env servers are not asked again).
        policy: Answers every live conversation once per turn (None: a collector that only plans).
        env_kwargs: Keyword arguments for the env factory of a single-env run (default: from the config).
        template: Prompt template for every env (default: the lane's `template`, else `prompt.template`,
            else the env's built-in one).

    Raises:
        ConfigError: `env.backend` is unknown or cannot run an env of the run (before any env starts).
    """

    def __init__(self, run: Run | CollectConfig, policy: Policy | None, *, env_kwargs: dict | None = None,
                 template: PromptTemplate | None = None):
        run = resolve(run, prepare=False)
        self.cfg = cfg = run.cfg
        self.policy = policy
        self.lanes = list(run.lanes)
        for lane in self.lanes:
            backend(cfg.env.backend, lane.spec)
        if env_kwargs is not None and len(self.lanes) > 1:
            raise ValueError("env_kwargs applies to a single-env run, not to env.mix")
        info = policy.describe() if policy is not None else PolicyInfo(kind="", model="")
        self._runs: list[LaneRun] = []
        for lane in self.lanes:
            pinfo = info
            if info.kind == "expert" and lane.expert:
                pinfo = dataclasses.replace(info, model=lane.expert_model())
            versions = lane.package_versions(info.kind)
            setup = EpisodeSetup(
                env=lane.name,
                template=template or resolve_template(lane.name, cfg.prompt.style, lane.template, cfg.prompt.actions),
                max_steps=lane.max_steps,
                episode_keys=frozenset(lane.played.episode_keys),
                policy_info=pinfo,
                versions=json.dumps(versions, sort_keys=True),
                run_seed=cfg.env.seed,
                prompt_style=cfg.prompt.style,
                history_length=cfg.env.history_length,
                system=cfg.prompt.system,
                require_think=cfg.prompt.require_think,
                actions=cfg.prompt.actions,
                env_spec=lane.spec,
                record_tokens=cfg.policy.record_tokens,
                top_logprobs=bool(cfg.policy.logprobs),
                task_hash="task_hash" in run.additions,
            )
            kwargs = lane.env_kwargs(cfg) if env_kwargs is None else {"max_steps": lane.max_steps, **env_kwargs}
            self._runs.append(LaneRun(lane, setup, kwargs))  # `max_steps`: the env's TimeLimit (pools.build_env)
        first = self._runs[0]
        self.spec: EnvSpec = first.lane.spec
        self.env_name = first.lane.name
        self.template = first.setup.template
        self.env_kwargs = first.env_kwargs
        self.policy_info = first.setup.policy_info
        self.stats = RunStats(env_backend=cfg.env.backend)
        self.health = EnvHealth(self.lanes, cfg.env.max_consecutive_errors)

    @property
    def pool(self) -> EnvPool | None:
        """The env pool of a single-env run (the first env's with `env.mix`)."""
        return self._runs[0].pool

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        """Start one env of each lane (the others start once the plan says how many are useful)."""
        t = time.perf_counter()
        for r in self._runs:
            if r.pool is None:
                r.pool = make_pool(
                    self.cfg.env.backend,
                    r.lane.spec,
                    1,
                    r.env_kwargs,
                    timeout_s=self.cfg.env.step_timeout_s,
                    start_timeout_s=max(300.0, self.cfg.env.step_timeout_s),
                    cpus_per_env=self.cfg.scale.cpus_per_env,
                )
        self.stats.startup_s += time.perf_counter() - t

    def tasks(self, lane: int = 0) -> list:
        """Every task an env of the run offers (asked of its pool: with `process`, this process never
        imports the env)."""
        r = self._runs[lane]
        if r.tasks is None:
            self.start()
            assert r.pool is not None
            reply = r.pool.call({0: ("tasks", ())})[0]
            if not reply.ok:
                what = "the environment" if len(self._runs) == 1 else f"environment {r.lane.name!r} (env.mix.{r.lane.label})"
                raise RolloutError(f"{what} could not list its tasks:\n{reply.error}")
            r.tasks = list(reply.value)
        return r.tasks

    def plan(self, done_ids: set[str] | frozenset = frozenset(), outcomes: Mapping[str, bool] | None = None) -> Plan:
        """The episodes to play: see `rollout.tasks.make_plan` (`outcomes`: the success of the folder's
        finished episodes, by id, for the envs sampled until success)."""
        parts = []
        for j, r in enumerate(self._runs):
            tasks = self.tasks(j)
            # An env whose spec filters its own tasks was given the task types (it knows their aliases).
            wanted = None if r.lane.spec.filters_tasks else list(r.lane.task_types)
            parts.append(LaneTasks(r.lane.name, tasks, r.lane.episodes, wanted, r.lane.label,
                                   r.lane.until_success, r.lane.max_samples))
        return make_plan(self.cfg, parts, done_ids=done_ids, outcomes=outcomes)

    def close(self) -> None:
        self._count()
        for r in self._runs:
            if r.pool is not None:
                r.pool.close()
                r.pool = None

    def _size_pools(self, plan: Plan, size: int) -> None:
        """Give each env a pool sized by its share of the plan (at least one env, at most `size`)."""
        demand = [0] * len(self._runs)
        for et in plan.episodes:
            demand[et.lane] += 1
        total = max(1, sum(demand))
        offset = 0
        for r, want in zip(self._runs, demand):
            r.size = min(want, size, max(1, math.ceil(size * want / total))) if want else 0
            r.offset = offset
            offset += max(r.size, 1)
            assert r.pool is not None
            r.pool.resize(max(r.size, 1))
        for r in self._runs:
            r.pool.await_ready()

    def run(self, plan: Plan) -> Iterator[Episode]:
        """Play `plan`, yielding each episode as it finishes (in a deterministic order: `sync`, the order
        episodes end in, turn by turn; `async`, the plan's order). An env sampled until success plays the
        samples its tasks still need (`feed.Feed`)."""
        self.start()
        size = min(self.cfg.data.val_batch_size, max(1, len(plan.episodes)))
        t = time.perf_counter()
        self._size_pools(plan, size)
        self.stats.startup_s += time.perf_counter() - t
        self.stats.mode = self.cfg.loop.mode
        feed = Feed(plan)
        if self.cfg.loop.mode == "async":
            play = AsyncLoop(self._runs, self.policy, self.stats, self.health, self.cfg.loop.reorder_window).play(feed, size)
        else:
            play = SyncLoop(self._runs, self.policy, self.stats, self.health).play(feed, size)
        t_run = time.perf_counter()
        try:
            for ep in play:
                self.stats.episodes += 1
                self.stats.errors += ep.end_reason == END_ERROR
                per = self.stats.per_env.setdefault(ep.env, {"episodes": 0, "steps": 0, "errors": 0})
                per["episodes"] += 1
                per["steps"] += len(ep.steps)
                per["errors"] += ep.end_reason == END_ERROR
                yield ep
        finally:
            play.close()
            self.stats.wall_s += time.perf_counter() - t_run
            self.stats.past_stop += feed.skipped
            self._count()

    def _count(self) -> None:
        pools = [r.pool for r in self._runs if r.pool is not None]
        if pools:
            self.stats.workers_started = sum(p.counters.started for p in pools)
            self.stats.workers_replaced = sum(p.counters.replaced for p in pools)


def iter_collect(cfg: CollectConfig, policy: Policy, done_ids: set[str] | frozenset = frozenset(), **kwargs: Any) -> Iterator[Episode]:
    """Play the run `cfg` describes (this shard, skipping `done_ids`), yielding finished episodes."""
    with Collector(cfg, policy, **kwargs) as c:
        yield from c.run(c.plan(done_ids))
