"""Build stages over the whole folder: what a build drops by looking at other episodes.

Per-episode filters decide each raw shard's sft rows on their own (`derive`), so a writer derives them as it
seals. The stages need every live episode first, in this order: the filters, duplicates (`dedup`:
`filters.dedup`), the rules on quality scores (`score_rules`: `filters.scores`), then the selection per task and
task type (`selection`: `filters.task_success`, `filters.select`, `filters.per_task`, `filters.per_task_type`). `rederive` reads the folder once, a record
batch at a time, keeping a small record per episode (`Ep`), works out what the stages drop, derives every sft
shard again at the next build generation with those drops and switches to that generation in one write of
meta/info.json, as a new build spec does. `agent-sft build` runs it, and so does a writer's `finalize` when
its build has a stage; a run's flushes in between follow the per-episode filters only.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agent_sft.dataset import atomic, dedup, layout, score_rules, scores, selection, shards, stopping
from agent_sft.dataset.derive import SftDeriver
from agent_sft.dataset.filters import build_filters, yields_rows
from agent_sft.dataset.layout import BuildSpec
from agent_sft.dataset.rewrite import check_not_corrupt, repair
from agent_sft.records import END_ERROR, SPLITS


@dataclass(slots=True)
class Ep:
    """What the stages know of one episode."""

    order: tuple  # env, task id, sample index, episode id: the order in which episodes are kept
    episode_id: str
    env: str
    task_id: str
    task_type: str
    success: bool
    length: int
    passes: bool  # the filters keep it (and at least one of its sft rows)
    error: bool  # it ended in an error (it is played again on a resume)
    action_key: str = ""
    minhash: Any = None
    scores: dict | None = None  # the scores the build's rules read (`score_rules`), when it reads any

    @property
    def sample_index(self) -> int:
        return self.order[2]


def active(build: BuildSpec) -> bool:
    """Whether the build has a stage that looks at the whole folder."""
    return dedup.mode(build.filters) != "off" or selection.active(build.filters) or bool(score_rules.needed(build.filters))


def episodes(folder: str, s: layout.Scan, build: BuildSpec, rules: dict[str, tuple[int, int]] | None = None) -> list[Ep]:
    """Every live episode of scan `s` as the stages see it, in keeping order (`rules`: the folder's `stop_rules`,
    whose episodes past a stop count for no task's reference length)."""
    spec = build.filters
    filters = build_filters(spec)
    how = dedup.mode(spec)
    wanted = score_rules.needed(spec)
    think = _require_think(folder)
    out = []
    for split in SPLITS:
        for name, meta in sorted(s.raw[split].items()):
            if not meta["rows"]:
                continue
            for batch in shards.iter_shard_batches(layout.shard_path(folder, "raw", split, name)):
                for row in batch.to_pylist():
                    passes = yields_rows(row, filters, build.style)
                    out.append(Ep(
                        order=(row["env"], row["task_id"], row["sample_index"], row["episode_id"]),
                        episode_id=row["episode_id"], env=row["env"], task_id=row["task_id"],
                        task_type=row["task_type"] or "", success=bool(row["success"]),
                        length=int(row["episode_length"]), passes=passes, error=row["end_reason"] == END_ERROR,
                        action_key=dedup.action_key(row) if passes and how != "off" else "",
                        minhash=dedup.minhash(row) if passes and how == "near" else None,
                        scores=scores.episode_scores(row, think) if passes and wanted else None,
                    ))
    out.sort(key=lambda e: e.order)
    if wanted:
        _score(folder, out, wanted, rules or {})
    return out


def _require_think(folder: str) -> bool:
    info = layout.read_info(folder) or {}
    return bool(((info.get("config") or {}).get("prompt") or {}).get("require_think", True))


def _score(folder: str, eps: list[Ep], wanted: set[str], rules: dict[str, tuple[int, int]]) -> None:
    """Complete the episodes' scores with those needing other episodes (length ratio, judges), keeping only
    the `wanted` ones."""
    from agent_sft.dataset import judged as judge_store

    beyond = stopping.beyond_stop(eps, rules) if rules else {}
    refs = scores.task_references(e for e in eps if not e.error and e.episode_id not in beyond)
    judged = judge_store.judge_scores(folder) if any(n.startswith(scores.JUDGE_PREFIX) for n in wanted) else {}
    for e in eps:
        if e.scores is None:
            continue
        row = scores.with_relative(e.scores, refs.get((e.env, e.task_id)))
        row["judge"] = judged.get(e.episode_id, [])
        e.scores = {n: scores.score_value(row, n) for n in wanted}


def stop_rules(info: dict | None) -> dict[str, tuple[int, int]]:
    """The envs the folder's run sampled until success: env -> (until_success, budget) (`stopping`)."""
    info = info or {}
    return stopping.rules_from_config(info.get("config") or {}, info.get("fingerprint"))


def needed(build: BuildSpec, info: dict | None) -> bool:
    """Whether deriving `sft` with `build` needs the whole folder: a stage, or a run sampled until success."""
    return active(build) or bool(stop_rules(info))


def drops(eps: list[Ep], spec: dict[str, Any], rules: dict[str, tuple[int, int]] | None = None) -> dict[str, str]:
    """episode id -> the stage's drop reason, for the episodes the filters keep but a stage drops. Episodes past
    their task's stop under `env.until_success` (`rules`) come first: they are no part of the run's result,
    for the other stages either."""
    beyond = stopping.beyond_stop(eps, rules) if rules else {}
    eps = [e for e in eps if e.episode_id not in beyond]
    candidates = [e for e in eps if e.passes]
    out = dict(beyond)
    out.update(dedup.drops(candidates, spec))
    out.update(score_rules.drops([e for e in candidates if e.episode_id not in out], spec))
    out.update(selection.drops(eps, [e for e in candidates if e.episode_id not in out], spec))
    return out


def rederive(folder: str, build: BuildSpec, info: dict) -> tuple[layout.Scan, SftDeriver]:
    """Derive `sft` again from every live raw shard at the next generation, with the stages' drops (call under
    the folder lock, with the folder's info as read under it).

    Returns:
        The folder's scan at the new generation and the deriver that wrote it.
    """
    old = layout.generation(info)
    s = layout.scan(folder, old)
    check_not_corrupt(folder, s)
    dropped: dict[str, str] = {}
    by_env: dict[str, Counter] = {}
    by_type: dict[str, dict[str, Counter]] = {}
    if needed(build, info):
        rules = stop_rules(info)
        eps = episodes(folder, s, build, rules)
        dropped = drops(eps, build.filters, rules)
        of = {e.episode_id: e for e in eps}
        for episode_id, reason in dropped.items():
            e = of[episode_id]
            by_env.setdefault(e.env, Counter())[reason] += 1
            by_type.setdefault(e.env, {}).setdefault(e.task_type, Counter())[reason] += 1
    deriver = SftDeriver(build, dropped)
    new = old + 1
    if dropped:  # recorded first: a shard of this generation derived again (repair, compaction, a writer) drops them too
        atomic.write_json_atomic(os.path.join(folder, layout.STAGE_DROPS.format(generation=new)),
                                 {"generation": new, "dropped": dropped})
    for split in SPLITS:
        for name in s.raw[split]:
            deriver.write_for(folder, split, name, new)
    info["build"] = {**build.to_dict(), "generation": new}
    if needed(build, info):
        info["stages"] = {"generation": new, "drops": {env: dict(c) for env, c in sorted(by_env.items())},
                          "by_task_type": {env: {tt: dict(c) for tt, c in sorted(t.items())} for env, t in sorted(by_type.items())}}
    else:
        info.pop("stages", None)
    atomic.write_json_atomic(os.path.join(folder, layout.INFO), info)
    _drop_other_records(folder, new)
    return repair(folder, layout.scan(folder, new), deriver), deriver


def _drop_other_records(folder: str, generation: int) -> None:
    """Remove the stages' records of other generations (the folder has switched to `generation`)."""
    keep = os.path.basename(layout.STAGE_DROPS.format(generation=generation))
    prefix, _, suffix = os.path.basename(layout.STAGE_DROPS).partition("{generation}")
    meta = os.path.join(folder, "meta")
    for name in os.listdir(meta):
        if name.startswith(prefix) and name.endswith(suffix) and name != keep:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(meta, name))
