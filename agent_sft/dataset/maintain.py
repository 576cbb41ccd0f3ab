"""Work on a whole dataset folder after (or between) collections: re-derive `sft`, compact, merge, repair.

Each operation writes its new shards first, then the README, and deletes old files last, so a process
killed at any instant leaves a folder that loads; running the same command again finishes the work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections import Counter

from agent_sft.dataset import atomic, checksums, curate, judged, layout, rationales, score_rules, shards, stages, views
from agent_sft.dataset.derive import SftDeriver
from agent_sft.dataset.fingerprint import diff as config_diff
from agent_sft.dataset.layout import BuildSpec
from agent_sft.dataset.rewrite import check_not_corrupt, compact_shards, repair
from agent_sft.dataset.writer import DatasetWriter, new_writer_tag
from agent_sft.errors import ConfigError, ConfigMismatchError, NotADatasetError
from agent_sft.records import SPLITS


def _info_under_lock(folder: str) -> dict:
    info = layout.read_info(folder) or layout.recover_info(folder)
    if info is None:
        raise NotADatasetError(f"{folder}: not an agent-sft dataset folder (no {layout.INFO} and no shards)")
    return info


def rebuild(folder: str, build: BuildSpec, name: str | None = None, dpo: dict | None = None) -> dict:
    """Re-derive `sft` (or the named build `name`) from `raw` with a new build spec, and the folder's other views
    (`scores`, `dpo` with the settings `dpo`, the other named builds), without collecting again.

    The new generation is written beside the old one and switched to atomically (meta/info.json), so a
    crash mid-build leaves the old files in place.
    """
    require_folder(folder)
    SftDeriver(build)  # fails early on a bad filter
    check_folder_filters(folder, build)
    if name is not None:
        views.check_build_name(name)
    with layout.locked(folder):
        info = _info_under_lock(folder)  # read under the lock: writers update it
        if name is None:
            s, deriver = stages.rederive(folder, build, info)
            builds = None
        else:
            deriver = SftDeriver.for_folder(folder, info)
            s = layout.open_scan(folder, info)
            check_not_corrupt(folder, s)
            s = repair(folder, s, deriver)
            builds = curate.named_builds(info) | {name: build}
        s = curate.rewrite_views(folder, info, s, deriver, builds, dpo)
        from agent_sft.dataset import reading

        return reading.finalize_folder(folder, s)


def check_folder_filters(folder: str, build: BuildSpec) -> None:
    """Refuse filters the folder cannot answer: a judge that has not scored it, token capture it did not record.

    Raises:
        ConfigError: naming the filter and what the folder lacks.
    """
    score_rules.check_judges(build.filters, judged.judge_names(folder))
    if build.reasoning and build.reasoning not in rationales.names(folder):
        raise ConfigError(f"--reasoning {build.reasoning}: {folder} has no rationales of that name (write them with "
                          f"`agent-sft augment {folder} --name {build.reasoning}`); it has: "
                          f"{', '.join(rationales.names(folder)) or 'none'}")
    if build.filters.get("require_tokens") and "tokens" not in layout.additions(layout.read_info(folder)):
        raise ConfigError(f"filters.require_tokens: {folder} recorded no token ids (collect with "
                          "policy.record_tokens=true); it would drop every episode")


def refresh_views(folder: str) -> dict:
    """Write the folder's views (`scores`, `dpo`, named builds) again with its current settings, as after a
    judge run whose scores the `scores` config should show; `sft` too when its build reads a judge's score."""
    require_folder(folder)
    with layout.locked(folder):
        info = _info_under_lock(folder)
        build = layout.build_spec(info)
        if any(n.startswith("judge.") for n in score_rules.needed(build.filters)):
            s, deriver = stages.rederive(folder, build, info)
        else:
            deriver = SftDeriver.for_folder(folder, info)
            s = layout.open_scan(folder, info)
            check_not_corrupt(folder, s)
            s = repair(folder, s, deriver)
        s = curate.rewrite_views(folder, info, s, deriver)
        from agent_sft.dataset import reading

        return reading.finalize_folder(folder, s)


def drop_build(folder: str, name: str) -> dict:
    """Remove the named build `name` from the folder (its files go once the README no longer lists them).

    Raises:
        ConfigError: `name` is reserved, or the folder has no build of that name (naming those it has).
    """
    require_folder(folder)
    views.check_build_name(name)
    with layout.locked(folder):
        info = _info_under_lock(folder)
        builds = curate.named_builds(info)
        if name not in builds:
            raise ConfigError(f"{folder} has no build named {name!r}; its named builds: {', '.join(builds) or 'none'}")
        del info["views"][name]
        atomic.write_json_atomic(os.path.join(folder, layout.INFO), info)
        s = repair(folder, layout.open_scan(folder, info), SftDeriver.for_folder(folder, info))
        from agent_sft.dataset import reading

        return reading.finalize_folder(folder, s)


def preview(folder: str, build: BuildSpec) -> dict:
    """What `rebuild(folder, build)` would keep and drop, written nowhere: the episodes, the sft rows per split,
    and the drops by reason (filters and stages), in all and per env."""
    from agent_sft.dataset import reading

    require_folder(folder)
    check_folder_filters(folder, build)
    _, s = reading.folder_status(folder)
    check_not_corrupt(folder, s)
    info = layout.read_info(folder) or {}
    rules = stages.stop_rules(info)
    dropped = stages.drops(stages.episodes(folder, s, build, rules), build.filters, rules) \
        if stages.needed(build, info) else {}
    deriver = SftDeriver(build, dropped)
    rows = {split: 0 for split in SPLITS}
    drops: Counter = Counter()
    by_env: dict[str, Counter] = {}
    episodes = 0
    for split in SPLITS:
        for name, meta in sorted(s.raw[split].items()):
            if not meta["rows"]:
                continue
            for batch in shards.iter_shard_batches(layout.shard_path(folder, "raw", split, name)):
                per_env: dict[str, list[dict]] = {}
                for row in batch.to_pylist():
                    per_env.setdefault(row["env"], []).append(row)
                for env, env_rows in per_env.items():
                    sft, d = deriver.derive(env_rows)
                    episodes += len(env_rows)
                    rows[split] += len(sft)
                    drops.update(d)
                    by_env.setdefault(env, Counter()).update(d)
    return {"episodes": episodes, "sft_rows": rows, "drops": dict(drops),
            "by_env": {env: dict(c) for env, c in sorted(by_env.items())}}


def compact(folder: str) -> dict:
    """Compact every live shard of a folder (all writers) into few large ones."""
    require_folder(folder)
    with layout.locked(folder):
        info = _info_under_lock(folder)  # read under the lock: a writer or a build may change it
        gen = layout.generation(info)
        deriver = SftDeriver.for_folder(folder, info)
        s = layout.scan(folder, gen)
        check_not_corrupt(folder, s)
        s = repair(folder, s, deriver)
        tag = new_writer_tag()
        for split in SPLITS:
            names = sorted(s.raw[split])
            if len(names) > 1:
                compact_shards(folder, split, names, gen, tag, deriver)
        s = repair(folder, layout.scan(folder, gen), deriver)
        from agent_sft.dataset import reading

        return reading.finalize_folder(folder, s)


def merge(dest: str, sources: list[str], *, allow_config_change: bool = False) -> dict:
    """Combine dataset folders (e.g. collected on several machines) into `dest`.

    Episodes are deduplicated by id (the same id means the same task, seed and sample). Returns counts.
    """
    infos = [layout.require_dataset(src) for src in sources]
    for src, info in zip(sources, infos):
        check_not_corrupt(src, layout.open_scan(src, info))
    first = infos[0]
    for src, info in zip(sources[1:], infos[1:]):
        diff = config_diff(first.get("fingerprint", {}), info.get("fingerprint", {}))
        if diff and not allow_config_change:
            raise ConfigMismatchError(
                f"{src} was collected with a different configuration than {sources[0]}:\n  " + "\n  ".join(diff[:20])
                + "\nPass --allow-config-change to merge anyway."
            )
    build = BuildSpec(first["build"]["style"], first["build"]["filters"])
    # rows of other additions would not load beside the first's; a task's hash is a check, not content: folders
    # with and without it merge, and the rows written without it have none
    kept = [tuple(a for a in layout.additions(i) if a != "task_hash") for i in infos]
    for src, info, adds in zip(sources[1:], infos[1:], kept[1:]):
        if adds != kept[0]:
            layout.check_same_additions(src, info, layout.additions(first))
    hashed = any("task_hash" in layout.additions(i) for i in infos)
    w = DatasetWriter.open(dest, fingerprint=first.get("fingerprint", {}), meta=first.get("config", {}), build=build,
                      additions=tuple(sorted({*kept[0], *(["task_hash"] if hashed else [])})),
                      allow_config_change=allow_config_change, flush_every_s=1e9, flush_every_episodes=4096,
                      versions=first.get("versions", {}),
                      # every source's envs; where two record one env, the first source's entry
                      env_versions={k: v for i in reversed(infos) for k, v in (i.get("env_versions") or {}).items()})
    added = dup = 0
    try:
        for src, info in zip(sources, infos):
            s = layout.open_scan(src, info)
            for split in SPLITS:
                for name in sorted(s.raw[split]):
                    for batch in shards.iter_shard_batches(layout.shard_path(src, "raw", split, name)):
                        for row in batch.to_pylist():
                            if w.add(row):
                                added += 1
                            else:
                                dup += 1
    finally:
        w.close()
    stats = w.finalize()
    return {"added": added, "duplicates": dup, "stats": stats}


def require_folder(folder: str) -> None:
    if not os.path.isdir(folder):
        raise NotADatasetError(f"{folder}: " + ("a file, not a dataset folder" if os.path.isfile(folder) else "no such folder"))
    if not os.path.exists(os.path.join(folder, layout.INFO)) and not os.path.isdir(os.path.join(folder, "data")):
        raise NotADatasetError(f"{folder}: not an agent-sft dataset folder (no {layout.INFO})")


def repair_folder(folder: str) -> list[str]:
    """Verify every shard; re-derive damaged or missing sft shards, move damaged raw shards aside.

    A damaged raw shard goes to `.quarantine/` (not uploaded); the episodes it held are missing from the
    folder, so the next `agent-sft collect` with the same config plays them again. Returns what was done,
    one line per action.
    """
    require_folder(folder)
    done: list[str] = []
    with layout.locked(folder):
        had_info = os.path.exists(os.path.join(folder, layout.INFO))
        info = _info_under_lock(folder)
        if not had_info:
            done.append(f"rebuilt {layout.INFO} from the identity recorded in shard {info.get('recovered_from')}")
        gen = layout.generation(info)
        deriver = SftDeriver.for_folder(folder, info)
        sums, sums_why = checksums.load_checksums(folder)
        if sums_why:
            done.append(f"{layout.CHECKSUMS}: {sums_why}; written again from the shards")
        s = layout.scan(folder, gen)
        q_dir = os.path.join(folder, layout.QUARANTINE, time.strftime("%Y%m%dT%H%M%S", time.gmtime()))
        found = checksums.find_damage(folder, s, sums)
        raw_bad, sft_bad = found.raw, found.sft
        # every step keeps the README's files in place: damaged raw shards are copied aside, then replaced
        # by an empty shard, and deleted only once the README no longer names them
        tag = new_writer_tag()
        unreadable = []
        for split in SPLITS:
            for n, why in sorted(raw_bad[split].items()):
                src = layout.shard_path(folder, "raw", split, n)
                dest = os.path.join(q_dir, "raw", split)
                os.makedirs(dest, exist_ok=True)
                shutil.copy2(src, os.path.join(dest, n))
                if n in s.raw[split]:
                    shards.write_shard(layout.shard_path(folder, "raw", split, f"{tag}-q{len(unreadable):03d}{shards.SHARD_SUFFIX}"),
                                  "raw", [], {"split": split, "writer": tag, "replaces": [n], "quarantined": n,
                                              **{k: v for k, v in s.raw[split][n].items() if k == "additions" and v}})
                unreadable.append(src)
                rows = (s.raw[split].get(n) or {}).get("rows")
                held = f"its {rows} episodes" if rows is not None else "its episodes"
                done.append(f"data/raw/{split}/{n}: {why}; moved to {os.path.relpath(os.path.join(dest, n), folder)} "
                            f"({held} are played again by the next `agent-sft collect` with the same config)")
            for n, why in sorted(sft_bad[split].items()):
                raw = layout.raw_name(n)
                if raw in s.raw[split] and raw not in raw_bad[split]:
                    deriver.write_for(folder, split, raw, gen)  # replaces the damaged file in one rename
                done.append(f"data/sft/{split}/{n}: {why}; derived again from its raw shard")
        before = layout.scan(folder, gen)
        garbage = sum(len(before.replaced_raw[sp]) + len(before.stale_sft[sp]) for sp in SPLITS)
        missing = sum(len(before.missing_sft[sp]) for sp in SPLITS)
        s = repair(folder, before, deriver)
        for path in unreadable:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        for rel, why in sorted(found.judge.items()):
            dest = os.path.join(q_dir, os.path.dirname(rel))
            os.makedirs(dest, exist_ok=True)
            shutil.move(os.path.join(folder, rel), os.path.join(dest, os.path.basename(rel)))
            again = ("`agent-sft augment` with the same name writes its steps again" if rel.startswith("data/rationale/")
                     else "`agent-sft judge` with the same name scores its episodes again")
            done.append(f"{rel}: {why}; moved to {os.path.relpath(os.path.join(dest, os.path.basename(rel)), folder)} "
                        f"({again})")
        if found.views or found.judge or unreadable or not had_info:  # what they hold changed, or may have
            s = curate.rewrite_views(folder, info, s, deriver)
            for rel, why in sorted(found.views.items()):
                done.append(f"{rel}: {why}; its view ({rel.split('/')[1]}) written again from raw")
        if missing:
            done.append(f"derived {missing} missing sft shard(s)")
        if garbage:
            done.append(f"deleted {garbage} file(s) left by an interrupted rewrite")
        from agent_sft.dataset import reading

        reading.finalize_folder(folder, s)
        done.append("rewrote README.md: it lists exactly the intact shards")
    return done
