"""Selection per task and per task type (a stage of `stages`), after the filters and dedup:

- `filters.task_success`: which tasks stay, by the success rate of all their episodes in the folder (those
  that ended in an error are left out: a resume plays them again; a task with no other episode stays only
  under `any`): `any`; `mixed` (strictly between 0 and 1: the tasks a policy sometimes solves,
  as rLLM's from-eval keeps); `solved` (above 0); `unsolved` (0).
- `filters.select`: which episodes of a task stay: `all`; `first_success` (its successes by sample index);
  `shortest_success` (its successes, fewest steps first, then by sample index); `best` (every episode, best
  first by the score `filters.select_by`: `score_rules.best_first`).
- `filters.per_task`: at most this many episodes per task, in that order (`first_success`,
  `shortest_success` and `best` keep 1 when it is not set).
- `filters.per_task_type`: at most this many episodes per env and task type, by task id and sample index.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from agent_sft.dataset import score_rules

NOT_SELECTED = "not_selected"  # the drop reasons
TASK_OUTCOME = "task_success"
TASK_TYPE_CAP = "task_type_cap"


def active(spec: dict[str, Any]) -> bool:
    """Whether `spec` (a build's filters) selects anything."""
    return (spec.get("task_success") or "any") != "any" or (spec.get("select") or "all") != "all" \
        or spec.get("per_task") is not None or spec.get("per_task_type") is not None


def _task_kept(rate: float, rule: str) -> bool:
    return {"any": True, "mixed": 0.0 < rate < 1.0, "solved": rate > 0.0, "unsolved": rate == 0.0}[rule]


def drops(all_episodes: list[Any], candidates: list[Any], spec: dict[str, Any]) -> dict[str, str]:
    """Of `candidates` (`stages.Ep` the earlier stages kept, in keeping order), those the selection drops;
    `all_episodes` are every live episode of the folder, for the tasks' success rates."""
    out: dict[str, str] = {}
    rule = spec.get("task_success") or "any"
    if rule != "any":
        tally: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
        for e in all_episodes:
            if e.error:  # played again on a resume: not an attempt yet
                continue
            t = tally[(e.env, e.task_id)]
            t[0] += 1
            t[1] += int(e.success)
        for e in candidates:
            n, c = tally[(e.env, e.task_id)]
            if n == 0 or not _task_kept(c / n, rule):
                out[e.episode_id] = TASK_OUTCOME
    how = spec.get("select") or "all"
    cap = spec.get("per_task")
    if how != "all" and cap is None:
        cap = 1
    if how != "all" or cap is not None:
        by_task: dict[tuple, list[Any]] = defaultdict(list)
        for e in candidates:
            if e.episode_id not in out:
                by_task[(e.env, e.task_id)].append(e)
        for eps in by_task.values():
            chosen = eps if how in ("all", "best") else [e for e in eps if e.success]
            if how == "shortest_success":
                chosen = sorted(chosen, key=lambda e: (e.length, e.order))
            elif how == "best":
                chosen = score_rules.best_first(chosen, spec["select_by"])
            keep = {e.episode_id for e in (chosen if cap is None else chosen[:cap])}
            for e in eps:
                if e.episode_id not in keep:
                    out[e.episode_id] = NOT_SELECTED
    most = spec.get("per_task_type")
    if most is not None:
        count: dict[tuple, int] = defaultdict(int)
        for e in candidates:
            if e.episode_id in out:
                continue
            key = (e.env, e.task_type)
            if count[key] >= most:
                out[e.episode_id] = TASK_TYPE_CAP
            else:
                count[key] += 1
    return out
