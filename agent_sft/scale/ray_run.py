"""`scale.backend=ray`: collector actors on a Ray cluster play the plan; the driver writes every episode.

The driver (the process running `agent-sft collect`) plans the episodes exactly as a local run does, so
ids, seeds and splits are the plan's, whoever plays them. It hands the plan out in chunks of
`scale.chunk_episodes`, in plan order, to `scale.collectors` actors, each holding two chunks at most:
a faster collector comes back sooner and takes more. An env sampled until success is gated here, as a
local run gates it (`rollout.feed.Feed`): a chunk holds only samples their tasks may still need, and the
actors play their chunks as they are. Each actor is a whole local collector: its own policy
(a vLLM replica on its `scale.gpus_per_collector` GPUs, transformers, an HTTP endpoint or an expert) and
its own `data.val_batch_size` env workers, playing with `loop.mode` as configured. Finished episodes
stream back to the driver one by one (Ray's streaming generators) and its writer seals them into the
folder, so the output needs no shared filesystem.

Faults: an actor that dies (its process, or its node) is restarted by Ray up to `scale.max_restarts`
times; the episodes of its chunks that had not come back are handed out again, first, and played from
their start with the same seeds, so the run ends with every episode once. Every wait is bounded: an actor
not ready within `scale.start_timeout_s`, or no episode finishing anywhere for `scale.stall_timeout_s`,
is an error. A cluster without the GPUs or CPUs asked for is an error before any episode.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agent_sft.config import CollectConfig, ConfigError
from agent_sft.errors import AgentSFTError
from agent_sft.policies.registry import POLICIES
from agent_sft.records import END_ERROR, Episode
from agent_sft.rollout import Collector, RunStats
from agent_sft.rollout.feed import Feed
from agent_sft.rollout.pools import BACKENDS
from agent_sft.rollout.tasks import EpisodeTask, Plan
from agent_sft.run import Run

# Environment variables the driver passes on to the actors (where data and caches are, engine settings);
# each env of the run adds the prefixes its spec names (`EnvSpec.forward_env_vars`).
FORWARDED_ENV = ("AGENT_SFT_", "HF_", "VLLM_", "TRANSFORMERS_", "OPENAI_")
# Test hook: "<collector index>:<k>" SIGKILLs that collector's first incarnation after its k-th episode.
KILL_HOOK = "AGENT_SFT_RAY_KILL_AFTER"
POLL_S = 1.0


class RayRunError(AgentSFTError, RuntimeError):
    """The Ray run cannot go on: no collector left, a collector that cannot start, a stalled cluster."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"scale.backend=ray needs the 'ray' package ({e}); pip install 'agent-sft[ray]'") from e
    return ray


class CollectorActor:
    """A local collector inside a Ray actor: the policy and env workers of one share of the run.

    Built again from the config when Ray restarts the actor, so a restarted collector is a fresh one.
    """

    def __init__(self, cfg: CollectConfig, index: int, specs: list | None = None, rows: dict | None = None,
                 additions: tuple[str, ...] | None = None) -> None:
        from agent_sft.envs import find_spec, register
        from agent_sft.policies.registry import register_policy
        from agent_sft.rollout.policy import make_run_policy
        from agent_sft.rollout.pools import register_pool
        from agent_sft.run import resolve

        for spec in specs or []:  # envs the driver registered at run time (a user's own, in their script)
            if find_spec(spec.name) is None:
                register(spec)
        if rows:  # the run's policy and pool backends as the driver's tables have them (a user's own included)
            register_policy(*rows["policy"])
            register_pool(*rows["pool"])
        self.index = index
        self.played = 0
        run = resolve(cfg, prepare=False)  # the driver's complete config: its env servers were asked there
        if additions is not None:  # as the driver decided them where the folder is (this node may not see it)
            run = replace(run, additions=tuple(additions))
        self.policy = make_run_policy(run)
        self.collector = Collector(run, self.policy)
        self.collector.start()
        self.node = _node_id()

    def ready(self) -> dict:
        return {"node": self.node, "pid": os.getpid(), "restarted": _restarted()}

    def play(self, tasks: list[EpisodeTask]) -> Iterator[Episode]:
        """Play `tasks` (in the configured loop mode), yielding each finished episode."""
        plan = Plan(episodes=list(tasks), selected_tasks=0, total=len(tasks), in_shard=len(tasks), skipped_done=0)
        kill_after = self._kill_after()
        for ep in self.collector.run(plan):
            self.played += 1
            yield ep
            if kill_after is not None and self.played >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    def stats(self) -> RunStats:
        return self.collector.stats

    def close(self) -> None:
        self.collector.close()
        self.policy.close()

    def _kill_after(self) -> int | None:
        hook = os.environ.get(KILL_HOOK, "")
        if not hook or _restarted():
            return None
        index, _, k = hook.partition(":")
        return int(k) if int(index) == self.index else None


def _restarted() -> bool:
    """Whether this actor is a restart of one that died."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray's own property calls a deprecated accessor
        return bool(_ray().get_runtime_context().was_current_actor_reconstructed)


def _node_id() -> str:
    try:
        return _ray().get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - only used in the stats
        return ""


@dataclass
class _Stream:
    """One chunk handed to one collector: its episodes not yet back, by id, and the collector's life
    (how many times it had died) when the chunk was handed out."""

    actor: int
    life: int
    tasks: list[EpisodeTask]
    waiting: dict[str, EpisodeTask] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.waiting = {et.episode_id: et for et in self.tasks}


@dataclass
class ClusterStats:
    """What the cluster did: per collector (episodes, node, restarts), actors restarted, requeued episodes."""

    collectors: list[dict] = field(default_factory=list)
    actors_restarted: int = 0
    requeued: int = 0


class RayCollector:
    """The driver's side of a Ray run, used as `rollout.Collector` is: `plan(done_ids)`, `run(plan)`, `stats`.

    Args:
        run: The run (`scale.*` says how many collectors and what they reserve).
    """

    def __init__(self, run: Run) -> None:
        self.lanes, self.policy_kind, self.additions = run.lanes, run.policy_kind, run.additions
        self.cfg = cfg = run.cfg
        self.ray = _ray()
        self.stats = RunStats(env_backend=cfg.env.backend, mode=cfg.loop.mode)
        self.cluster = ClusterStats()
        self.actors: list[Any] = []
        self._dead: set[int] = set()
        self._probing: dict[int, tuple[Any, float]] = {}  # collector -> (its `ready` call, when asked)
        self._planner = Collector(run, None)
        self._owns_ray = False

    def __enter__(self) -> RayCollector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def plan(self, done_ids: set[str] | frozenset = frozenset(), outcomes: Mapping[str, bool] | None = None) -> Plan:
        """The episodes to play, planned here exactly as a local run plans them."""
        self._connect()  # first: with env.backend=ray the planner's env is an actor on this cluster
        try:
            return self._planner.plan(done_ids, outcomes)
        finally:
            self._planner.close()

    # --- start-up ----------------------------------------------------------------------------------

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        from agent_sft.rollout.ray_pool import init_ray

        address = self.cfg.scale.address or os.environ.get("RAY_ADDRESS") or None
        if address is None:
            self._owns_ray = True
        try:
            init_ray(address, log_to_driver=True)
        except ConnectionError as e:
            raise RayRunError(f"scale.address={address}: no Ray cluster answers there ({e})") from None

    def _check_resources(self) -> None:
        s, have = self.cfg.scale, self.ray.cluster_resources()
        gpus, cpus = s.collectors * s.gpus_per_collector, s.collectors * s.cpus_per_collector
        if gpus > have.get("GPU", 0):
            raise ConfigError(f"scale.gpus_per_collector: {s.collectors} collectors x {s.gpus_per_collector} GPUs need "
                              f"{gpus:g} GPUs; the Ray cluster has {have.get('GPU', 0):g}. Nothing was played.")
        if cpus > have.get("CPU", 0):
            raise ConfigError(f"scale.cpus_per_collector: {s.collectors} collectors x {s.cpus_per_collector} CPUs need "
                              f"{cpus:g} CPUs; the Ray cluster has {have.get('CPU', 0):g}. Nothing was played.")

    def _start_actors(self) -> None:
        ray, s = self.ray, self.cfg.scale
        remote = ray.remote(CollectorActor)
        specs = list({lane.spec.name: lane.spec for lane in self.lanes}.values())
        rows = {"policy": (self.policy_kind, POLICIES[self.policy_kind]),
                "pool": (self.cfg.env.backend, BACKENDS[self.cfg.env.backend])}
        prefixes = FORWARDED_ENV + tuple(p for spec in specs for p in spec.forward_env_vars)
        env_vars = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
        for i in range(s.collectors):
            self.actors.append(remote.options(
                num_cpus=s.cpus_per_collector, num_gpus=s.gpus_per_collector, max_restarts=s.max_restarts,
                max_task_retries=0, name=None, runtime_env={"env_vars": env_vars} if env_vars else None,
            ).remote(self.cfg, i, specs, rows, self.additions))
        refs = [a.ready.remote() for a in self.actors]
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=s.start_timeout_s)
        if pending:
            raise RayRunError(f"{len(pending)} of {len(refs)} collectors were not ready within {s.start_timeout_s:g} s "
                              "(scale.start_timeout_s): the cluster may lack the resources they ask for, or their "
                              "policy or envs take longer to build")
        for i, ref in enumerate(refs):
            try:
                info = ray.get(ref, timeout=s.start_timeout_s)
            except Exception as e:  # noqa: BLE001 - the actor's constructor raised
                raise RayRunError(f"collector {i} could not start: {_cause(e)}") from None
            self.cluster.collectors.append({"index": i, "node": info["node"], "episodes": 0, "steps": 0, "restarts": 0})

    # --- the run -----------------------------------------------------------------------------------

    def run(self, plan: Plan) -> Iterator[Episode]:
        """Play `plan` on the collectors, yielding each episode as it comes back (in no set order)."""
        t0 = time.perf_counter()
        self._connect()
        self._check_resources()
        self._start_actors()
        self.stats.startup_s += time.perf_counter() - t0
        s = self.cfg.scale
        chunk = s.chunk_episodes or 4 * self.cfg.data.val_batch_size
        todo = Feed(plan)
        streams: dict[Any, _Stream] = {}
        busy = [0] * len(self.actors)
        t_run = last = time.perf_counter()
        try:
            while todo.queued or streams:
                for _ in range(2):  # one chunk to each collector with room, then a second
                    for i in self._live():
                        tasks = todo.take_many(chunk) if busy[i] < 2 else []
                        if tasks:
                            gen = self.actors[i].play.options(num_returns="streaming").remote(tasks)
                            streams[gen] = _Stream(i, self.cluster.collectors[i]["restarts"], tasks)
                            busy[i] += 1
                self._check_probes()
                if not streams:
                    if not self._probing:
                        raise RayRunError(f"no collector is left to play {todo.queued} episodes: every one died more "
                                          f"than scale.max_restarts={s.max_restarts} times")
                    time.sleep(POLL_S / 10)
                    continue
                ready, _ = self.ray.wait(list(streams), num_returns=1, timeout=POLL_S)
                for gen in ready:
                    st = streams[gen]
                    try:
                        ref = next(gen)
                        ep: Episode = self.ray.get(ref, timeout=s.stall_timeout_s)
                    except StopIteration:
                        del streams[gen]
                        busy[st.actor] -= 1
                        continue
                    except self.ray.exceptions.RayActorError as e:
                        del streams[gen]
                        busy[st.actor] -= 1
                        self._lost(st, todo, e)
                        continue
                    except self.ray.exceptions.RayTaskError as e:
                        cause = getattr(e, "cause", None)
                        if isinstance(cause, AgentSFTError):
                            raise cause from None  # e.g. a policy that cannot go on, an env that cannot start
                        raise RayRunError(f"collector {st.actor} failed: {_cause(e)}") from None
                    if st.waiting.pop(ep.episode_id, None) is None:
                        continue  # a late copy of an episode already handed out again
                    todo.done(ep)
                    last = time.perf_counter()
                    self._count(st.actor, ep)
                    yield ep
                if time.perf_counter() - last > s.stall_timeout_s:
                    raise RayRunError(f"no episode finished on the cluster for {s.stall_timeout_s:g} s "
                                      "(scale.stall_timeout_s)")
        finally:
            self.stats.wall_s += time.perf_counter() - t_run
            self.stats.past_stop += todo.skipped

    def _live(self) -> list[int]:
        """Collectors that take chunks: not dead, not being restarted."""
        return [i for i in range(len(self.actors)) if i not in self._dead and i not in self._probing]

    def _check_probes(self) -> None:
        """A collector being restarted takes chunks again once it answers; past the start timeout, or
        when Ray gave up on it, it is left out of the run."""
        for i, (ref, since) in list(self._probing.items()):
            done, _ = self.ray.wait([ref], timeout=0)
            if done:
                del self._probing[i]
                try:
                    self.cluster.collectors[i]["node"] = self.ray.get(ref, timeout=10)["node"]
                except Exception as e:  # noqa: BLE001 - dead for good
                    self._dead.add(i)
                    self.cluster.collectors[i]["last_error"] = _cause(e)
            elif time.perf_counter() - since > self.cfg.scale.start_timeout_s:
                del self._probing[i]
                self._dead.add(i)

    def _lost(self, st: _Stream, todo: Feed, error: Exception) -> None:
        """A collector died with `st` unfinished: its episodes go back to the feed, before any later one.
        Ray restarts the collector (`scale.max_restarts`); one past that, it is left out of the run."""
        back = [et for et in st.tasks if et.episode_id in st.waiting]
        for et in back:
            todo.release(et)
        self.cluster.requeued += len(back)
        info = self.cluster.collectors[st.actor]
        if st.life == info["restarts"]:  # the first of this death's chunks to report it
            info["restarts"] += 1
            self.cluster.actors_restarted += 1
            info["last_error"] = _cause(error)
            if info["restarts"] > self.cfg.scale.max_restarts:
                self._dead.add(st.actor)
            else:  # no chunk for it until Ray has it back
                self._probing[st.actor] = (self.actors[st.actor].ready.remote(), time.perf_counter())

    def _count(self, i: int, ep: Episode) -> None:
        st = self.stats
        st.episodes += 1
        st.steps += len(ep.steps)
        st.errors += ep.end_reason == END_ERROR
        per = st.per_env.setdefault(ep.env, {"episodes": 0, "steps": 0, "errors": 0})
        per["episodes"] += 1
        per["steps"] += len(ep.steps)
        per["errors"] += ep.end_reason == END_ERROR
        info = self.cluster.collectors[i]
        info["episodes"] += 1
        info["steps"] += len(ep.steps)

    def close(self) -> None:
        """Gather the collectors' own figures, close them, and leave a Ray this run started."""
        ray = self.ray
        for i in self._live():
            try:
                rs: RunStats = ray.get(self.actors[i].stats.remote(), timeout=30)
                self.stats.env_s += rs.env_s
                self.stats.policy_s += rs.policy_s
                self.stats.workers_started += rs.workers_started
                self.stats.workers_replaced += rs.workers_replaced
                for k in ("requests", "prompt_tokens", "cached_tokens", "cache_reported", "completion_tokens"):
                    setattr(self.stats, k, getattr(self.stats, k) + getattr(rs, k))
                ray.get(self.actors[i].close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a collector that is gone has nothing to report
                pass
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        self.actors = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()


def _cause(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__
