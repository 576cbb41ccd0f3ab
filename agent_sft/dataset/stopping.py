"""Sampling until success, as the build sees it: which episodes lie past their task's stop.

An env collected with `env.until_success=k` and `env.max_samples_per_task=B` (or the same keys of an
`env.mix` entry) keeps, per task, its samples 0..j: j is the first sample index at which k of the task's
samples have succeeded, counting in index order, or B - 1. Episodes past j that were in play when the task
reached its stop (async, several workers, Ray) are sealed in `raw` like any other; the build leaves them
out (`beyond_stop`), so a run gives the same derived rows as the first j + 1 episodes per task of a fixed
run with B samples per task, whatever order its episodes ended in.

A task whose samples below the stop are not all known yet (not played, or ended in an error, which a
resume plays again) drops only what is past the stop for certain: the samples with k known successes
below them (`records.past_stop`). Filling a gap can only move the stop earlier.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any, Protocol

from agent_sft.config.dotted import normalize_mix
from agent_sft.config.lanes import DEFAULT_MAX_SAMPLES
from agent_sft.dataset import layout, shards
from agent_sft.records import END_ERROR, SPLITS, past_stop

REASON = "beyond_stop"


class Sample(Protocol):
    """What the rule reads of an episode (`stages.Ep` carries it)."""

    episode_id: str
    env: str
    task_id: str
    sample_index: int
    success: bool
    error: bool


def beyond_stop(episodes: Iterable[Sample], rules: dict[str, tuple[int, int]]) -> dict[str, str]:
    """episode id -> `"beyond_stop"` for the episodes past their task's stop.

    Args:
        episodes: every live episode of the folder (any order).
        rules: env name -> (until_success, max samples per task), as `rules_from_config` gives them; the
            episodes of other envs are never past a stop.
    """
    by_task: dict[tuple[str, str], list[Sample]] = {}
    for e in episodes:
        if e.env in rules:
            by_task.setdefault((e.env, e.task_id), []).append(e)
    out: dict[str, str] = {}
    for (env, _), eps in by_task.items():
        k, budget = rules[env]
        wins = sorted(e.sample_index for e in eps if e.success and not e.error)  # an error is no outcome
        for e in eps:
            if past_stop(e.sample_index, bisect.bisect_left(wins, e.sample_index), k, budget):
                out[e.episode_id] = REASON
    return out


def rules_from_config(config: dict[str, Any], fingerprint: dict[str, Any] | None = None) -> dict[str, tuple[int, int]]:
    """env name -> (until_success, max samples per task) for the envs a folder's recorded config samples
    until success (`meta/info.json`'s `config`); {} when none does.

    A mix entry's own keys come first, then the run's (`env.until_success`, `env.max_samples_per_task`,
    default 8). Env names are those the episodes record: given the folder's `fingerprint`, its names (an
    env server's entry records the env it serves); else the config's names, an alias made canonical when
    the env is registered here.
    """
    env = config.get("env") if isinstance(config, dict) else None
    if not isinstance(env, dict):
        return {}
    k0, b0 = env.get("until_success"), env.get("max_samples_per_task")
    played = _played_names(fingerprint)
    mix = normalize_mix(env.get("mix"))
    if not mix:
        return _rule(played.get(None) or str(env.get("env_name") or ""), k0, b0)
    out: dict[str, tuple[int, int]] = {}
    for label, entry in mix.items():
        k, b = entry.get("until_success"), entry.get("max_samples_per_task")
        name = played.get(label) or (played.get(None) if len(mix) == 1 else None) or str(entry.get("env") or label)
        out.update(_rule(name, k0 if k is None else k, b0 if b is None else b))
    return out


def _rule(name: str, k: Any, budget: Any) -> dict[str, tuple[int, int]]:
    if k is None:
        return {}
    return {_name(name): (int(k), int(budget) if budget is not None else DEFAULT_MAX_SAMPLES)}


def _name(name: str) -> str:
    """The canonical name of an env registered here (an alias's target), else `name` as it is."""
    from agent_sft.envs import canonical_name, find_spec

    return canonical_name(name) if name and find_spec(name) is not None else name


def _played_names(fingerprint: dict[str, Any] | None) -> dict[str | None, str]:
    """The env names a fingerprint records: mix label -> name, or None -> the one env's name."""
    env = (fingerprint or {}).get("env") if isinstance(fingerprint, dict) else None
    if not isinstance(env, dict):  # a fingerprint written by hand or by another tool
        return {}
    if isinstance(env.get("mix"), dict):
        return {label: lane["env_name"] for label, lane in env["mix"].items()
                if isinstance(lane, dict) and lane.get("env_name")}
    return {None: env["env_name"]} if env.get("env_name") else {}


def finished_outcomes(folder: str) -> dict[str, bool]:
    """episode id -> success for every live episode of `folder` that did not end in an error (which a
    resume plays again): what a resumed run sampling until success knows of its tasks already."""
    info = layout.read_info(folder)
    s = layout.open_scan(folder, info)
    out: dict[str, bool] = {}
    for split in SPLITS:
        for name, meta in sorted(s.raw[split].items()):
            if not meta["rows"]:
                continue
            for batch in shards.iter_shard_batches(layout.shard_path(folder, "raw", split, name)):
                ids, wins, ends = (batch.column(c).to_pylist() for c in ("episode_id", "success", "end_reason"))
                out.update((i, bool(w)) for i, w, end in zip(ids, wins, ends) if end != END_ERROR)
    return out
