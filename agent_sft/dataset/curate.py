"""Writing the views (`views`): `scores`, `dpo` and the named builds, in one pass over the folder's episodes.

First the outcomes of every live episode are read (a few columns: `outcomes`), giving what a view needs from
other episodes: each task's shortest success (the `length_ratio` score's reference when the env has no plan),
the tasks with both outcomes (`dpo`'s candidates), and what the stopping rule of `env.until_success` leaves out
(`stopping`). A named build with a stage over the whole folder reads its episodes once more for its drops. Then
every raw shard is read once, a record batch at a time, and each view's rows are written at its next generation;
the caller switches meta/info.json to the new manifest (`refresh`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pyarrow.dataset as pads

from agent_sft.dataset import atomic, layout, rationales, reasoning, shards, stages, stopping, views
from agent_sft.dataset.derive import SftDeriver
from agent_sft.dataset.layout import BuildSpec
from agent_sft.dataset.rewrite import repair
from agent_sft.records import END_ERROR, SPLITS

DPO_PAIRS = ("episode", "step", "both", "off")

DPO_DEFAULTS = {"pairs": "episode", "per_task": 4}


_OUTCOME_COLUMNS = ["episode_id", "env", "task_id", "task_type", "sample_index", "success", "episode_length",
                    "end_reason"]


@dataclass(slots=True)
class Outcome:
    """What a view needs to know of an episode without reading it whole."""

    order: tuple
    episode_id: str
    env: str
    task_id: str
    task_type: str
    sample_index: int
    success: bool
    length: int
    error: bool


def outcomes(folder: str, s: layout.Scan) -> list[Outcome]:
    """Every live episode's outcome, in keeping order (env, task id, sample index)."""
    out = []
    for split in SPLITS:
        for name, meta in sorted(s.raw[split].items()):
            if not meta["rows"]:
                continue
            t = pads.dataset([layout.shard_path(folder, "raw", split, name)], format="ipc").to_table(columns=_OUTCOME_COLUMNS)
            for r in t.to_pylist():
                out.append(Outcome((r["env"], r["task_id"], r["sample_index"], r["episode_id"]), r["episode_id"], r["env"],
                                   r["task_id"], r["task_type"] or "", int(r["sample_index"]), bool(r["success"]),
                                   int(r["episode_length"]), r["end_reason"] == END_ERROR))
    out.sort(key=lambda o: o.order)
    return out


def beyond_stop(eps: list[Any], info: dict) -> dict[str, str]:
    """Episodes past their task's stop under `env.until_success` (none when the run did not sample until success)."""
    rules = stages.stop_rules(info)
    return stopping.beyond_stop(eps, rules) if rules else {}


def dpo_spec(info: dict | None, override: dict | None = None) -> dict:
    """The folder's `dpo` settings: `override` (a build's flags, a run's keys set away from their defaults), else
    those the folder's `dpo` view was last written with, else the defaults."""
    spec = dict(DPO_DEFAULTS)
    spec.update((views.manifest(info).get(views.DPO) or {}).get("spec") or {})
    spec.update({k: v for k, v in (override or {}).items() if v is not None and k in DPO_DEFAULTS})
    return spec


def run_dpo(info: dict | None) -> dict:
    """The `dpo.*` keys the folder's last run set away from their defaults (they win over the folder's)."""
    run = ((info or {}).get("config") or {}).get("dpo") or {}
    return {k: v for k, v in run.items() if k in DPO_DEFAULTS and v != DPO_DEFAULTS[k]}


def named_builds(info: dict | None) -> dict[str, BuildSpec]:
    """The folder's named builds and their specs."""
    return {name: BuildSpec(**v["build"]) for name, v in sorted(views.manifest(info).items()) if v["kind"] == views.BUILD}


def refresh(folder: str, s: layout.Scan, info: dict, builds: dict[str, BuildSpec] | None = None,
            dpo: dict | None = None, judged: dict[str, list[dict]] | None = None) -> dict[str, dict]:
    """Write every view at its next generation (call under the folder lock); returns the new manifest, for
    meta/info.json `views` (the files it does not list are garbage once it is written).

    Args:
        folder: the dataset folder.
        s: its scan (live raw shards).
        info: its info (config, current views).
        builds: the named builds to write (default: those the folder has).
        dpo: the `dpo` settings (default `dpo_spec(info)`).
        judged: episode id -> judge scores ([{name, score}]) for the `scores` view.
    """
    from agent_sft.dataset import pairs, scores

    old = views.manifest(info)
    builds = named_builds(info) if builds is None else builds
    dpo = dpo_spec(info, dpo)
    judged = judged or {}
    think = bool((((info or {}).get("config") or {}).get("prompt") or {}).get("require_think", True))
    eps = outcomes(folder, s)
    beyond = beyond_stop(eps, info)
    counted = [e for e in eps if not e.error and e.episode_id not in beyond]
    references = scores.task_references(counted)
    per_task: dict[tuple, list[Outcome]] = defaultdict(list)
    for e in counted:
        per_task[(e.env, e.task_id)].append(e)
    both = {t for t, es in per_task.items() if any(e.success for e in es) and not all(e.success for e in es)}
    pairs_wanted = dpo["pairs"] != "off" and "tools" not in layout.additions(info)
    candidates = _pair_candidates(per_task, both, dpo) if pairs_wanted else {}
    expected = defaultdict(int)
    for t in candidates.values():
        expected[t] += 1
    pair_sink = _PairSink(folder, old, dpo, pairs) if dpo["pairs"] != "off" else None

    reasoned = {name: rationales.RationaleTexts(folder, b.reasoning) for name, b in builds.items() if b.reasoning}
    reasoning_steps = dict.fromkeys(reasoned, 0)
    derivers = {}
    for name, b in builds.items():
        dropped = dict(beyond)
        if stages.active(b):
            rules = stages.stop_rules(info)
            dropped.update(stages.drops(stages.episodes(folder, s, b, rules), b.filters, rules))
        derivers[name] = SftDeriver(b, dropped)
    sinks = {name: views.ViewSink(folder, name, views.BUILD, views.next_generation(old, name), layout.additions(info),
                                  build=b.to_dict()) for name, b in builds.items()}
    score_sink = views.ViewSink(folder, views.SCORES, views.SCORES, views.next_generation(old, views.SCORES))
    every = {"sft": SftDeriver.for_folder(folder, info), **derivers}  # whose drops each scores row records
    chosen: dict[tuple, list[dict]] = defaultdict(list)  # a task's candidates read so far (paired once all are)
    drops: dict[str, dict[str, int]] = {name: {} for name in builds}
    for split in SPLITS:
        for name, meta in sorted(s.raw[split].items()):
            if not meta["rows"]:
                continue
            for batch in shards.iter_shard_batches(layout.shard_path(folder, "raw", split, name)):
                rows = batch.to_pylist()
                for view, d in derivers.items():
                    view_rows = rows
                    if view in reasoned:  # its assistant turns carry the rationales; raw keeps the recorded answers
                        texts = reasoned[view].of(batch.column("episode_id"))
                        view_rows, given = reasoning.rows_with_reasoning(rows, texts)
                        reasoning_steps[view] += sum(n for r, n in zip(rows, given) if d.dropped_by(r) is None)
                    sft, dropped_here = d.derive(view_rows)
                    sinks[view].add(split, sft)
                    for reason, n in dropped_here.items():
                        drops[view][reason] = drops[view].get(reason, 0) + n
                for r in rows:
                    if r["episode_id"] in beyond:
                        continue
                    row = scores.with_relative(scores.episode_scores(r, think), references.get((r["env"], r["task_id"])))
                    row["judge"] = judged.get(r["episode_id"], [])
                    row["dropped_by"] = [{"config": view, "reason": why} for view, d in every.items()
                                         if (why := d.dropped_by(r)) is not None]
                    score_sink.add(split, [row])
                    task = candidates.get(r["episode_id"])
                    if task is not None:
                        chosen[task].append(r)
                        if len(chosen[task]) == expected[task]:
                            pair_sink.add(chosen.pop(task))
    out: dict[str, dict] = {}
    for name, sink in sinks.items():
        out[name] = sink.entry() | {"drops": drops[name]}
        if name in reasoned:
            out[name]["reasoning_steps"] = reasoning_steps[name]
    out[views.SCORES] = score_sink.entry()
    if pair_sink is not None and "tools" in layout.additions(info):  # pairs keep role and content only, so far
        out[views.DPO] = {"kind": views.DPO, "generation": views.next_generation(old, views.DPO), "files": {},
                          "rows": {sp: 0 for sp in SPLITS}, "spec": dict(dpo),
                          "why_none": "no dpo config: pairs of tool-call episodes are not written (their calls would be lost)"}
    elif pair_sink is not None:
        for task in sorted(chosen):  # none left unless a candidate was read twice or not at all
            pair_sink.add(chosen.pop(task))
        out[views.DPO] = pair_sink.entry([e for es in per_task.values() for e in es])
    else:  # kept, files none, so that the setting stays the folder's
        out[views.DPO] = {"kind": views.DPO, "generation": views.next_generation(old, views.DPO), "files": {},
                          "rows": {sp: 0 for sp in SPLITS}, "spec": dict(dpo), "why_none": "dpo.pairs=off"}
    return out


def _pair_candidates(per_task: dict[tuple, list[Outcome]], both: set[tuple], dpo: dict) -> dict[str, tuple]:
    """The episodes the pairs of each task with both outcomes are made of (episode id -> its task), read whole in
    the pass: for episode pairs its first `per_task` successes and failures by sample index, for step pairs a few
    more of each."""
    k = int(dpo["per_task"])
    take = k if dpo["pairs"] == "episode" else 4 * k
    out: dict[str, tuple] = {}
    for t in both:
        es = sorted(per_task[t], key=lambda e: e.sample_index)
        for e in [e for e in es if e.success][:take] + [e for e in es if not e.success][:take]:
            out[e.episode_id] = t
    return out


class _PairSink:
    """The `dpo` view being written: each task's pairs are made as soon as its candidates are all read, so the
    pass holds the rows of the tasks whose episodes it is still reading, not of every task."""

    def __init__(self, folder: str, old: dict, dpo: dict, pairs: Any) -> None:
        self.dpo, self.pairs = dpo, pairs
        self.sink = views.ViewSink(folder, views.DPO, views.DPO, views.next_generation(old, views.DPO), spec=dict(dpo))

    def add(self, rows: list[dict]) -> None:
        rows = sorted(rows, key=lambda r: r["sample_index"])
        k, kind = int(self.dpo["per_task"]), self.dpo["pairs"]
        made: list[dict] = []
        if kind in ("episode", "both"):
            made += self.pairs.episode_pairs(rows, max_pairs=k)
        if kind in ("step", "both"):
            made += self.pairs.step_pairs(rows, max_pairs=k)
        self.sink.add(rows[0]["split"], made)

    def entry(self, eps: list[Outcome]) -> dict:
        entry = self.sink.entry()
        if not any(entry["rows"].values()):
            entry["why_none"] = self.pairs.why_no_pairs(eps) or (
                "no dpo config: no two episodes of a task act alike up to a step where they diverge, one succeeding"
                if self.dpo["pairs"] == "step" else "no dpo config: no pair could be made")
        return entry


def rewrite_views(folder: str, info: dict, s: layout.Scan, deriver: SftDeriver, builds: dict[str, BuildSpec] | None = None,
                  dpo: dict | None = None) -> layout.Scan:
    """Write the views again (`refresh`), switch meta/info.json to them, then the README and the garbage (call
    under the folder lock, with `info` as read under it); returns the folder's scan."""
    info["views"] = refresh(folder, s, info, builds, dpo, judge_scores(folder))
    atomic.write_json_atomic(os.path.join(folder, layout.INFO), info)
    return repair(folder, layout.scan(folder, s.generation), deriver)


def judge_scores(folder: str) -> dict[str, list[dict]]:
    """episode id -> [{name, score}] of the judges that scored it (`agent-sft judge`), by judge name."""
    from agent_sft.dataset import judged

    return judged.judge_scores(folder)
