"""The task list of a run: which (task, sample index) pairs are played, in which order.

A function of the config, the env's task list and the run seed only, so two machines (or a resumed run)
agree on every episode's id, seed and split without talking to each other.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent_sft.config import CollectConfig, ConfigError, parse_shard
from agent_sft.config.lanes import DEFAULT_MAX_SAMPLES
from agent_sft.envs.base import TaskSpec
from agent_sft.records import episode_id, episode_seed, past_stop, task_split


@dataclass(frozen=True)
class EpisodeTask:
    """One episode to play; `lane` is its env's index in the run's lanes (`agent_sft.config.lanes.lanes`)."""

    task: TaskSpec
    sample_index: int
    episode_id: str
    seed: int
    split: str
    lane: int = 0


@dataclass
class Plan:
    """The episodes this process plays, and what was left out."""

    episodes: list[EpisodeTask]
    selected_tasks: int  # tasks left after the task-type filter
    total: int  # episodes in the whole run (all shards), before skipping finished ones
    in_shard: int  # episodes of this shard, before skipping
    skipped_done: int  # episodes of this shard already in the folder
    per_lane: list[dict] = field(default_factory=list)  # per env: label, env, tasks, episodes (whole run)
    # Lanes sampled until success: lane -> (until_success, max samples per task); the others play every episode.
    stopping: dict[int, tuple[int, int]] = field(default_factory=dict)
    # Their finished episodes' success, by (lane, task id, sample index): the folder's, this shard's or not.
    outcomes: dict[tuple[int, str, int], bool] = field(default_factory=dict)
    skipped_stopped: int = 0  # episodes of this shard past their task's stop by what the folder holds


@dataclass(frozen=True)
class LaneTasks:
    """One env's part of a plan: its tasks, how many episodes (None: one pass x env.rollout.n) and
    the task-type filter to apply (None when the env filtered its tasks itself); with `until_success`,
    `max_samples` samples per task and at most one pass."""

    env_name: str
    tasks: list[TaskSpec]
    episodes: int | None = None
    task_types: list[str] | None = None
    label: str = ""
    until_success: int | None = None
    max_samples: int | None = None


def matches_task_type(task_type: str, wanted: list[str]) -> bool:
    """`wanted` entries match a task type exactly or as a part of it (`clean` matches
    `pick_clean_then_place_in_recep`); an empty `wanted` matches everything."""
    return not wanted or any(w == task_type or w in task_type for w in wanted)


def select_tasks(tasks: list[TaskSpec], wanted: list[str], key: str = "env.task_types") -> list[TaskSpec]:
    """The tasks whose type matches `wanted`.

    Raises:
        ConfigError: when an entry matches no task (naming the task types there are).
    """
    known = sorted({t.task_type for t in tasks})
    for w in wanted:
        if not any(matches_task_type(tt, [w]) for tt in known):
            raise ConfigError(f"{key}: {w!r} matches no task; task types here: {', '.join(known) or '(none)'}")
    return [t for t in tasks if matches_task_type(t.task_type, wanted)]


def _pass_order(tasks: list[TaskSpec], run_seed: int, pass_index: int) -> list[TaskSpec]:
    """The tasks in a seeded order, new for each pass, independent of Python's hash seed."""
    key = hashlib.sha256(f"{run_seed}\x1f{pass_index}".encode()).digest()
    order = list(tasks)
    random.Random(key).shuffle(order)
    return order


_FROM_CONFIG: Any = object()


def episode_list(
    cfg: CollectConfig, env_name: str, tasks: list[TaskSpec], total: int | None = _FROM_CONFIG, lane: int = 0,
    n: int | None = None,
) -> list[EpisodeTask]:
    """Every episode of one env in the run, all shards, in play order.

    A pass visits every task once in a seeded order, playing `n` (default `env.rollout.n`) samples of each
    in a row; `total` (default `env.num_episodes`; None: one pass) cuts the list or continues with further
    passes whose samples have new indices. The list for a larger total extends the one for a smaller. It
    depends on this env's tasks, the run seed, `n` and `data.val_fraction` only.
    """
    n = cfg.env.rollout.n if n is None else n
    if total is _FROM_CONFIG:
        total = cfg.env.num_episodes
    total = total if total is not None else len(tasks) * n
    run_seed = cfg.env.seed
    out: list[EpisodeTask] = []
    pass_index = 0
    while len(out) < total and tasks:
        for spec in _pass_order(tasks, run_seed, pass_index):
            for k in range(n):
                if len(out) == total:
                    break
                s = pass_index * n + k
                out.append(
                    EpisodeTask(
                        task=spec,
                        sample_index=s,
                        episode_id=episode_id(env_name, spec.task_id, run_seed, s),
                        seed=episode_seed(run_seed, spec.task_id, s),
                        split=task_split(spec.task_id, cfg.data.val_fraction),
                        lane=lane,
                    )
                )
        pass_index += 1
    return out


def interleave(lists: list[list[EpisodeTask]]) -> list[EpisodeTask]:
    """The lanes' episode lists merged so that each env is spread evenly over the run: episode k of a
    list of c sits at (k + 1/2) / c, ties in lane order. A list's own order is kept."""
    if len(lists) == 1:
        return list(lists[0])
    keyed = [((k + 0.5) / len(lst), j, k) for j, lst in enumerate(lists) for k in range(len(lst))]
    keyed.sort()
    return [lists[j][k] for _, j, k in keyed]


def make_plan(
    cfg: CollectConfig,
    env_name: str | list[LaneTasks],
    tasks: list[TaskSpec] | None = None,
    done_ids: set[str] | frozenset = frozenset(),
    filter_types: bool = True,
    outcomes: Mapping[str, bool] | None = None,
) -> Plan:
    """This process's part of the run (`output.shard`), without the episodes already written.

    `make_plan(cfg, env_name, tasks, ...)` plans one env (`filter_types=False` when the env already
    applied `env.task_types` itself); `make_plan(cfg, [LaneTasks, ...], done_ids=...)` plans several,
    interleaved (see `interleave`).

    An env sampled until success plans the list of a fixed run with `max_samples` samples per task, cut
    by its episode count but never past one pass; `outcomes` (episode id -> success of the folder's
    finished episodes) leaves out the samples already past their task's stop (`records.past_stop`) and
    goes with the plan for the loop's `rollout.feed.Feed`, which decides the rest as episodes end.

    Raises:
        ConfigError: an env with no task to play, a task-type filter matching nothing, or two envs of a
            mix playing the same task id.
    """
    if isinstance(env_name, str):
        wanted = list(cfg.env.task_types) if filter_types else None
        k = cfg.env.until_success
        budget = (cfg.env.max_samples_per_task or DEFAULT_MAX_SAMPLES) if k is not None else None
        lane_tasks = [LaneTasks(env_name, list(tasks or []), cfg.env.num_episodes, wanted, env_name, k, budget)]
    else:
        lane_tasks = env_name
    lists, per_lane, selected_total, owner = [], [], 0, {}
    stopping: dict[int, tuple[int, int]] = {}
    for j, lt in enumerate(lane_tasks):
        where = "env.task_types" if len(lane_tasks) == 1 else f"env.mix.{lt.label}.task_types"
        selected = select_tasks(lt.tasks, lt.task_types, where) if lt.task_types else list(lt.tasks)
        if not selected:
            what = f"environment {lt.env_name!r}" + (f" (env.mix.{lt.label})" if len(lane_tasks) > 1 else "")
            raise ConfigError(f"{what} lists no tasks to play")
        for t in selected:
            other = owner.setdefault((lt.env_name, t.task_id), lt.label)
            if other != lt.label:
                raise ConfigError(f"env.mix: entries {other!r} and {lt.label!r} both play {lt.env_name} task "
                                  f"{t.task_id!r}; give them different tasks (options or task_types)")
        selected_total += len(selected)
        episodes, n = lt.episodes, None
        if lt.until_success is not None:
            n = lt.max_samples or DEFAULT_MAX_SAMPLES
            stopping[j] = (lt.until_success, n)
            episodes = len(selected) * n if episodes is None else min(episodes, len(selected) * n)
        lst = episode_list(cfg, lt.env_name, selected, episodes, lane=j, n=n)
        lists.append(lst)
        per_lane.append({"label": lt.label, "env": lt.env_name, "tasks": len(selected), "episodes": len(lst)})
    everything = interleave(lists)
    i, n = parse_shard(cfg.output.shard) if cfg.output.shard else (0, 1)
    mine = everything[i::n]
    todo = [e for e in mine if e.episode_id not in done_ids]
    known: dict[tuple[int, str, int], bool] = {}
    if stopping and outcomes:
        known = {(e.lane, e.task.task_id, e.sample_index): bool(outcomes[e.episode_id])
                 for e in everything if e.lane in stopping and e.episode_id in outcomes}
    left = [e for e in todo if not _stopped(e, stopping, known)]
    return Plan(left, selected_total, len(everything), len(mine), len(mine) - len(todo), per_lane,
                stopping, known, len(todo) - len(left))


def _stopped(e: EpisodeTask, stopping: dict[int, tuple[int, int]], known: dict[tuple[int, str, int], bool]) -> bool:
    """Whether the folder's outcomes already put `e` past its task's stop."""
    if e.lane not in stopping:
        return False
    k, budget = stopping[e.lane]
    wins = sum(1 for s in range(e.sample_index) if known.get((e.lane, e.task.task_id, s)))
    return past_stop(e.sample_index, wins, k, budget)
