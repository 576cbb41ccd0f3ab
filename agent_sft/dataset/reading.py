"""The dataset folder as a whole: loading (`agent_sft.load`), statistics, and finalizing the card."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from typing import Any

import pyarrow.dataset as pads

from agent_sft.dataset import atomic, checksums, derive, layout, per_task, shards, views
from agent_sft.dataset.derive import stage_drops
from agent_sft.dataset.filters import active_filters
from agent_sft.dataset.stopping import REASON as BEYOND_STOP
from agent_sft.errors import DatasetError, NotADatasetError
from agent_sft.records import CONFIGS, SPLITS
from agent_sft.records import schema as config_schema

log = logging.getLogger(__name__)

STAT_COLUMNS = ["split", "task_type", "success", "episode_length", "final_reward", "end_reason", "num_invalid",
                "prompt_tokens", "completion_tokens", "duration_s", "game_split", "env", "task_id"]


def _paths(folder: str, s: layout.Scan, config: str = "raw", exclude: frozenset[str] = frozenset()) -> list[str]:
    out = []
    for sp in SPLITS:
        items = s.raw[sp] if config == "raw" else s.sft[sp]
        for name, m in sorted(items.items()):
            if m["rows"]:
                fname = name if config == "raw" else layout.sft_name(name, s.generation)
                if f"data/{config}/{sp}/{fname}" not in exclude:
                    out.append(layout.shard_path(folder, config, sp, fname))
    return out


def _hist(counts: Counter, bins: int = 20) -> dict:
    """A histogram of whole numbers given as {value: count}."""
    if not counts:
        return {"edges": [], "counts": []}
    lo, hi = min(counts), max(counts)
    width = max(1, -(-(hi - lo + 1) // bins))
    edges = list(range(lo, hi + width + 1, width))
    out = [0] * (len(edges) - 1)
    for v, k in counts.items():
        out[min((v - lo) // width, len(out) - 1)] += k
    return {"edges": edges, "counts": out}


def _reward_dist(counts: Counter, bins: int = 10, max_values: int = 12) -> dict:
    """Final rewards as {value: episodes} when they take few values (WebShop's partial scores), and a
    histogram of `bins` equal bins over [min(0, lowest), max(1, highest)], the last bin closed."""
    if not counts:
        return {"values": {}, "histogram": {"edges": [], "counts": []}}
    lo, hi = min(0.0, min(counts)), max(1.0, max(counts))
    width = (hi - lo) / bins
    out = [0] * bins
    for v, k in counts.items():
        out[min(int((v - lo) / width), bins - 1)] += k
    values = {f"{v:g}": k for v, k in sorted(counts.items())} if len(counts) <= max_values else {}
    return {"values": values, "histogram": {"edges": [round(lo + i * width, 6) for i in range(bins + 1)], "counts": out}}


def compute_stats(folder: str, s: layout.Scan, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Counts, success by env and by task type, lengths, rewards, tokens, end reasons, filter drops, and
    attempts, successes and pass@k per task and averaged by env and task type (`per_task`).

    Reads only the columns it needs, batch by batch, so memory grows with the tasks, not the episodes. Shards
    in `exclude` (relative paths of damaged shards) are left out.
    """
    paths = _paths(folder, s, "raw", exclude)
    n = successes = invalid = 0
    reward = seconds = 0.0
    pt = ct = with_counts = 0
    by_type: dict[str, dict] = defaultdict(lambda: {"episodes": 0, "successes": 0, "_len": 0})
    by_env: dict[str, dict] = defaultdict(lambda: {"episodes": 0, "successes": 0, "_len": 0, "_reward": 0.0, "_rewards": Counter(),
                                                   "by_task_type": defaultdict(lambda: {"episodes": 0, "successes": 0, "_len": 0})})
    per_split: Counter = Counter()
    lengths: Counter = Counter()
    end_reasons: Counter = Counter()
    game_splits: Counter = Counter()
    tally = per_task.TaskTally()
    # episodes played past their task's stop (env.until_success) are no attempt: how many got played is timing
    beyond = {i for i, why in stage_drops(folder, s.generation).items() if why == BEYOND_STOP}
    columns = STAT_COLUMNS + (["episode_id"] if beyond else [])
    batches = pads.dataset(paths, format="ipc").to_batches(columns=columns) if paths else []
    for batch in batches:
        c = batch.to_pydict()
        ids = c["episode_id"] if beyond else [None] * batch.num_rows
        for sp, tt, ok, ln, fr, er, ni, p, q, du, gs, env, tid, eid in zip(*(c[k] for k in STAT_COLUMNS), ids):
            n += 1
            successes += bool(ok)
            if eid not in beyond:
                tally.add(env or "(none)", tid, tt or "(none)", bool(ok))
            e = by_env[env or "(none)"]
            e["_reward"] += fr
            e["_rewards"][round(fr, 4)] += 1
            for b in (by_type[tt or "(none)"], e, e["by_task_type"][tt or "(none)"]):
                b["episodes"] += 1
                b["successes"] += int(bool(ok))
                b["_len"] += ln
            per_split[sp] += 1
            lengths[ln] += 1
            end_reasons[er] += 1
            game_splits[gs] += 1
            reward += fr
            invalid += ni
            seconds += du
            if q is not None:
                with_counts += 1
                ct += q
                pt += p or 0
    for b in [*by_type.values(), *by_env.values(), *(t for e in by_env.values() for t in e["by_task_type"].values())]:
        b["success_rate"] = b["successes"] / b["episodes"]
        b["mean_length"] = b.pop("_len") / b["episodes"]
    for e in by_env.values():
        e["mean_final_reward"] = e.pop("_reward") / e["episodes"]
        e["final_rewards"] = _reward_dist(e.pop("_rewards"))
        e["by_task_type"] = dict(sorted(e["by_task_type"].items()))
    drops: Counter = Counter()
    for sp in SPLITS:
        for m in s.sft[sp].values():
            drops.update(m.get("drops", {}))
    steps = sum(k * v for k, v in lengths.items())
    by_task, pass_k = tally.figures()
    return {
        "episodes": {sp: per_split.get(sp, 0) for sp in SPLITS},
        "sft_rows": {sp: s.sft_rows(sp) for sp in SPLITS},
        "total_episodes": n,
        "successes": successes,
        "success_rate": successes / n if n else 0.0,
        "by_task_type": dict(sorted(by_type.items())),
        "by_env": dict(sorted(by_env.items())),
        "end_reasons": dict(end_reasons),
        "game_splits": dict(game_splits),
        "mean_final_reward": reward / n if n else 0.0,
        "mean_length": steps / n if n else 0.0,
        "episode_length": {"min": min(lengths, default=0), "max": max(lengths, default=0), "histogram": _hist(lengths)},
        "steps": steps,
        "invalid_steps": invalid,
        "tokens": {"prompt": pt if with_counts else None, "completion": ct if with_counts else None,
                   "episodes_with_counts": with_counts},
        "drops": dict(drops),
        "episodes_filtered": sum(drops.values()) - sum(v for k, v in drops.items() if k.endswith("_rows")),
        "collection_seconds": seconds,
        "shards": {"raw": sum(len(s.raw[sp]) for sp in SPLITS), "sft": sum(len(s.sft[sp]) for sp in SPLITS)},
        "pass_at_k": pass_k,
        "by_task": by_task,
        "views": {name: {k: v.get(k) for k in ("kind", "generation", "rows", "drops", "build", "spec", "why_none", "reasoning_steps") if k in v}
                  for name, v in sorted(s.views.items())},
    }


def views_lines(st: dict) -> list[str]:
    """One line per view (`views`) of a folder's stats: its rows per split, or why it has none."""
    out = []
    for name, v in (st.get("views") or {}).items():
        rows = v.get("rows") or {}
        counts = f"train {rows.get('train', 0)}, validation {rows.get('validation', 0)}"
        if v["kind"] == views.DPO:
            spec = v.get("spec") or {}
            text = (f"dpo: {counts} pairs ({spec.get('pairs')} pairs, at most {spec.get('per_task')} per task)"
                    if not v.get("why_none") else f"dpo: no pairs: {v['why_none']}")
        elif v["kind"] == views.SCORES:
            text = f"scores: {counts} episodes scored"
        else:
            b = v.get("build") or {}
            active = active_filters(b.get("filters") or {})
            drops = v.get("drops") or {}
            text = (f"{name} (named build, style {b.get('style')}; filters: "
                    f"{', '.join(f'{k}={x}' for k, x in sorted(active.items())) or 'none'}): {counts} rows; dropped: "
                    f"{', '.join(f'{k} {n}' for k, n in sorted(drops.items())) or 'none'}"
                    + (f"; reasoning from {b['reasoning']} in {v.get('reasoning_steps', 0)} steps" if b.get("reasoning") else ""))
        out.append(text)
    return out


def sample_episode(folder: str, s: layout.Scan, look_at: int = 256) -> dict | None:
    """A short episode to show on the card: the shortest won one among the first few, else the shortest."""
    best, seen = None, 0
    for path in _paths(folder, s, "raw"):
        for batch in shards.iter_shard_batches(path):
            for row in batch.to_pylist():
                key = (not row["success"], row["episode_length"])
                if best is None or key < best[0]:
                    best = (key, row)
                seen += 1
            if seen >= look_at:
                return best[1]
    return best[1] if best else None


def finalize_folder(folder: str, s: layout.Scan, summary: dict | None = None) -> dict:
    """Write meta/stats.json, plots and the full card (call under the folder lock)."""
    from agent_sft.dataset import card

    stats = compute_stats(folder, s)
    if summary:
        stats["run"] = summary
    stats["finalized_at"] = time.time()
    atomic.write_json_atomic(os.path.join(folder, layout.STATS), stats)
    info = layout.read_info(folder) or {}
    plots = card.write_plots(folder, stats)
    body = card.render_body(info, stats, sample_episode(folder, s), plots, verified=card.read_verified(folder))
    from agent_sft.dataset.rewrite import write_readme

    write_readme(folder, s, body, stats)
    return stats


def folder_status(folder: str) -> tuple[dict, layout.Scan]:
    """The folder's info and scan; a lost meta/info.json is read back from the shards (not written)."""
    if os.path.isdir(folder) and not os.path.exists(os.path.join(folder, layout.INFO)):
        info = layout.recover_info(folder, write=False)
        if info is not None:
            return info, layout.open_scan(folder, info)
    info = layout.require_dataset(folder)
    return info, layout.open_scan(folder, info)


def data_files(folder: str) -> dict[str, dict[str, list[str]]]:
    """config -> split -> absolute paths of the live shards with rows (the loadable files)."""
    info, s = folder_status(folder)
    files = layout.listing(folder, s)
    return {c: {sp: [os.path.join(os.path.abspath(folder), p) for p in ps] for sp, ps in v.items()} for c, v in files.items()}


def load(folder: str, config: str = "sft", split: str | None = None, streaming: bool = False, **kwargs: Any):
    """Load a dataset folder with the agent-sft builder.

    Args:
        folder: a dataset folder written by agent-sft (local path).
        config: "sft" (training rows) or "raw" (one row per episode).
        split: "train" or "validation"; None for a DatasetDict of both.
        streaming: return an IterableDataset(Dict) instead of preparing Arrow.

    Returns:
        `datasets.Dataset`, `DatasetDict`, or their iterable counterparts. A split with no rows (nothing
        collected yet, or every episode dropped by the filters) is an empty dataset with the config's
        features; `load_dataset` cannot load such a split, this function can.

    Raises:
        DatasetError: not a dataset folder, unknown config or split.
    """
    if split is not None and split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    info, s = folder_status(folder)
    adds = layout.additions(info)
    known = [*CONFIGS, *sorted(s.views)]
    if config not in known:
        why = "" if config not in (views.DPO, views.SCORES) else f" (it is written by `agent-sft build {folder}`)"
        raise DatasetError(f"{folder}: unknown config {config!r}{why}; choose one of {', '.join(known)}")
    import datasets

    from agent_sft.dataset.builder import AgentSFT, readme_error

    # what the README lists is what load_dataset reads: the same files here
    root = os.path.abspath(folder)
    configs, why, _ = readme_listing(root, s)
    if why:
        raise readme_error(folder, why)
    listed = {sp: [os.path.join(root, p) for p in ps] for sp, ps in configs.get(config, {}).items()}
    kind = (s.views.get(config) or {}).get("kind", "")
    features = datasets.Features.from_arrow_schema(views.schema(kind, adds) if kind else config_schema(config, adds))
    wanted = [split] if split is not None else list(SPLITS)
    if not any(sp in listed for sp in wanted):
        total = s.raw_rows()
        why = (s.views.get(config) or {}).get("why_none") or (
            f"all {total} episodes were dropped by the filters" if total and kind != views.SCORES else "no episodes yet")
        log.warning("%s: config %r has no rows in %s (%s); see `agent-sft info %s`", folder, config,
                    split or "either split", why, folder)
        parts = {sp: datasets.Dataset.from_dict({k: [] for k in features}, features=features) for sp in wanted}
        if streaming:
            parts = {sp: d.to_iterable_dataset() for sp, d in parts.items()}
            return parts[split] if split is not None else datasets.IterableDatasetDict(parts)
        return parts[split] if split is not None else datasets.DatasetDict(parts)
    kwargs.setdefault("data_files", listed)
    if adds:
        kwargs.setdefault("additions", adds)
    builder = (AgentSFT.named(config) if kind == views.BUILD else AgentSFT)(config_name=config, data_dir=root, **kwargs)
    if streaming:
        ds = builder.as_streaming_dataset(split=split)
    else:
        builder.download_and_prepare()
        ds = builder.as_dataset(split=split)
    if split is None:
        # a split with no rows yet (or none left after the filters) is there, empty, as users index it
        for sp in SPLITS:
            if sp not in ds:
                empty = datasets.Dataset.from_dict({k: [] for k in features}, features=features)
                ds[sp] = empty.to_iterable_dataset() if streaming else empty
    return ds


def load_raw(folder: str, split: str | None = None, **kw: Any):
    return load(folder, "raw", split, **kw)


def load_sft(folder: str, split: str | None = None, **kw: Any):
    return load(folder, "sft", split, **kw)


def readme_listing(folder: str, s: layout.Scan) -> tuple[dict[str, dict[str, list[str]]], str | None, int]:
    """What `load_dataset(folder)` reads: config -> split -> relative paths, as the README lists them; why
    it cannot load them (None when it can); and how many shards the listing lags behind (live shards with
    rows it leaves out, or shards it names that the folder no longer counts: a rewrite cut short, which the
    next command finishes).

    A writer at work rewrites the README before it deletes what the README no longer lists, so a README
    replaced while it is checked is checked again, in its new version.
    """
    path = os.path.join(folder, "README.md")
    for _ in range(3):
        seen = checksums.file_id(path)
        out = _readme_listing(folder, s)
        if out[1] is None or checksums.file_id(path) == seen:
            break
    return out


def _readme_listing(folder: str, s: layout.Scan) -> tuple[dict[str, dict[str, list[str]]], str | None, int]:
    from agent_sft.dataset.builder import read_readme

    configs, why = read_readme(folder)
    if why is not None:
        return {}, f"{why}, so `load_dataset` cannot load the folder", 0
    rows = s.raw_rows()
    if configs is None:
        return {}, (f"missing, so `load_dataset` finds none of the {rows} episodes" if rows else None), 0
    listed = {p for c, by_split in configs.items() for ps in by_split.values() for p in ps}
    absent = sorted(p for p in listed if not os.path.isfile(os.path.join(folder, p)))
    if absent:
        more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
        return configs, f"lists {absent[0]}{more}, not in the folder, so `load_dataset` fails", 0
    misplaced = sorted(p for c, by_split in configs.items() for sp, ps in by_split.items() for p in ps
                       if not p.startswith(f"data/{c}/{sp}/"))
    if misplaced:
        return configs, f"lists {misplaced[0]} under another config or split than its own", 0
    live = {p for by_split in layout.listing(folder, s).values() for ps in by_split.values() for p in ps}
    return configs, None, len(live ^ listed)


def check_folder(folder: str) -> dict:
    """Verify what a user loads without changing anything: the README's listing as `datasets` reads it,
    the checksum manifest, and every shard the folder lists against its checksum.

    Returns {"checked": shards verified, "damaged": {relative path: why}, "missing_sft": sft shards to
    derive, "unlisted": shards the README's listing lags behind}.
    """
    if not os.path.isdir(folder):
        raise NotADatasetError(f"{folder}: " + ("a file, not a dataset folder" if os.path.isfile(folder) else "no such folder"))
    info = layout.read_info(folder) or layout.recover_info(folder, write=False) or {}
    s = layout.open_scan(folder, info)
    sums, sums_why = checksums.load_checksums(folder)
    _, readme_why, unlisted = readme_listing(folder, s)
    damaged: dict[str, str] = {}
    if readme_why:
        damaged["README.md"] = readme_why
    if sums_why:
        damaged[layout.CHECKSUMS] = f"{sums_why}; the shards were verified by reading them whole instead"
    found = checksums.find_damage(folder, s, sums)
    damaged.update(found.paths())
    return {"checked": found.checked, "damaged": damaged, "missing_sft": sum(len(v) for v in s.missing_sft.values()), "unlisted": unlisted}



def info_text(folder: str, check: bool = True) -> tuple[str, bool]:
    """What `agent-sft info DIR` prints (live: works on a folder still being written), and whether the
    folder is intact. With `check`, every listed shard is verified against its checksum; damaged shards
    are reported and left out of the figures."""
    info, s = folder_status(folder)
    damaged: dict[str, str] = {}
    unlisted = 0
    if check:
        r = check_folder(folder)
        damaged, unlisted = r["damaged"], r["unlisted"]
    st = compute_stats(folder, s, exclude=frozenset(damaged))
    b = info.get("build", {})
    lines = []
    if info.get("recovered_from"):
        lines.append(f"note: {layout.INFO} is missing; identity read from the shards (`agent-sft repair {folder}` writes it back)")
    lines += [
        f"dataset: {os.path.abspath(folder)}",
        f"schema version {info['schema_version']}; sft style {b.get('style')} (generation {b.get('generation')})",
        f"episodes: {st['total_episodes']} (train {st['episodes']['train']}, validation {st['episodes']['validation']}); "
        f"sft rows: train {st['sft_rows']['train']}, validation {st['sft_rows']['validation']}",
        f"success: {st['successes']}/{st['total_episodes']} ({100 * st['success_rate']:.1f}%); "
        f"mean reward {st['mean_final_reward']:.3f}; mean length {st['mean_length']:.1f} "
        f"(min {st['episode_length']['min']}, max {st['episode_length']['max']}); invalid steps {st['invalid_steps']}/{st['steps']}",
    ]
    row = "  {:<32} {:>6}/{:<6} {:5.1f}%  mean length {:.1f}"
    if len(st["by_env"]) > 1:
        lines.append("success by env and task type:")
        for env, e in st["by_env"].items():
            lines.append(row.format(env, e["successes"], e["episodes"], 100 * e["success_rate"], e["mean_length"]))
            for tt, b2 in e["by_task_type"].items():
                lines.append(row.format("  " + tt, b2["successes"], b2["episodes"], 100 * b2["success_rate"], b2["mean_length"]))
    else:
        lines.append("success by task type:")
        for tt, b2 in st["by_task_type"].items():
            lines.append(row.format(tt, b2["successes"], b2["episodes"], 100 * b2["success_rate"], b2["mean_length"]))
    lines += per_task.info_lines(st["pass_at_k"])
    lines.append("end reasons: " + (", ".join(f"{k} {v}" for k, v in sorted(st["end_reasons"].items())) or "none"))
    active = active_filters(b.get("filters") or {})
    lines.append("filters: " + (", ".join(f"{k}={v}" for k, v in sorted(active.items())) or "none"))
    lines.append("dropped by filter: " + (", ".join(f"{k} {v}" for k, v in sorted(st["drops"].items())) or "none"))
    if derive.stage_drops_by_env(info):
        lines.append("dropped by the build stages, per env: " + derive.stage_drops_text(info))
        for env, types in derive.stage_drops_by_task_type(info).items():
            lines += [f"  {env} {tt or '(no task type)'}: " + ", ".join(f"{k} {n}" for k, n in sorted(d.items()))
                      for tt, d in types.items()]
    lines += views_lines(st)
    if st["tokens"]["completion"] is not None:
        lines.append(f"tokens: prompt {st['tokens']['prompt']}, completion {st['tokens']['completion']}")
    lines.append(f"shards: raw {st['shards']['raw']}, sft {st['shards']['sft']}")
    files = {rel: why for rel, why in damaged.items() if not rel.startswith("data/")}
    shards = {rel: why for rel, why in damaged.items() if rel.startswith("data/")}
    lines += [f"DAMAGED: {rel}: {why}" for rel, why in sorted(files.items())]
    if shards:
        lines.append(f"DAMAGED: {len(shards)} shard(s) do not match their checksum or cannot be read "
                     "(left out of the figures above):")
        lines += [f"  {rel}: {why}" for rel, why in sorted(shards.items())]
    if damaged:
        lines.append(f"run `agent-sft repair {folder}`: {repair_does(damaged)}")
    elif check:
        lines.append("integrity: every shard matches its checksum" + (
            f"; README.md lags {unlisted} shard(s) behind (a run cut short): `agent-sft repair {folder}` lists them"
            if unlisted else ""))
    return "\n".join(lines), not damaged


def repair_does(damaged: dict[str, str]) -> str:
    """What `agent-sft repair` does about these damaged files (relative path -> why)."""
    out = []
    if "README.md" in damaged or layout.CHECKSUMS in damaged:
        out.append(f"it writes {' and '.join(r for r in ('README.md', layout.CHECKSUMS) if r in damaged)} again from the shards")
    if any(rel.startswith("data/sft/") for rel in damaged):
        out.append("it derives damaged sft shards again")
    if any(rel.startswith("data/raw/") for rel in damaged):
        out.append("it moves damaged raw shards aside, whose episodes the next collect plays again")
    return "; ".join(out)


def stats_json(folder: str) -> str:
    info, s = folder_status(folder)
    return json.dumps(compute_stats(folder, s), indent=2)
