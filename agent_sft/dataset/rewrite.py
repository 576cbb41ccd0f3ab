"""Rewrites of a folder's shards, shared by the writer and the folder commands: repairing what a crash
left, moving error episodes aside, compacting small shards, and writing the README.

The rule every function here keeps: new shards are sealed first, then the README is rewritten to list
exactly the live shards, and only then are files it no longer names deleted. All of them run under the
folder lock.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections import Counter

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.dataset as pads

from agent_sft.dataset import atomic, card, checksums, judged, layout, rationales, shards, views
from agent_sft.dataset.derive import SftDeriver
from agent_sft.errors import CorruptShardError
from agent_sft.records import END_ERROR, SPLITS

log = logging.getLogger(__name__)

COMPACT_MAX_BYTES = 512 * 1024 * 1024  # a compacted shard grows to about this size at most

COMPACT_EVERY = 128  # a writer merges its small shards once it has sealed this many in a split

COMPACT_SMALL_BYTES = 64 * 1024 * 1024  # at the end of a run, live shards below this size are merged


def repair(folder: str, s: layout.Scan, deriver: SftDeriver, body: str | None = None) -> layout.Scan:
    """Bring a folder to a consistent state after a crash (call under the folder lock).

    Derives missing sft shards, rewrites the README to list exactly the live shards, and only then
    deletes the files it no longer names.
    """
    for split in SPLITS:
        for n in s.missing_sft[split]:
            deriver.write_for(folder, split, n, s.generation)
    s = layout.scan(folder, s.generation)
    write_readme(folder, s, body)
    collect_garbage(folder, s)
    return s


def collect_garbage(folder: str, s: layout.Scan) -> None:
    """Delete replaced raw shards (in a safe order), stale sft shards, view files the folder no longer lists
    and dead temporary files."""
    for split in SPLITS:
        for n in s.replaced_raw[split]:
            _remove(layout.shard_path(folder, "raw", split, n))
        for n in s.stale_sft[split]:
            _remove(layout.shard_path(folder, "sft", split, n))
    views.garbage(folder, s.views)
    layout.remove_dead_tmp(folder)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def write_readme(folder: str, s: layout.Scan, body: str | None = None, stats: dict | None = None) -> None:
    """Rewrite README.md atomically: front matter listing exactly the live shards, and a body.

    This is the only place the README is written. With no `body`, the card's current body is kept (a
    progress note when there is none yet). The checksums of the listed files are recorded first.
    """
    files = layout.listing(folder, s)
    checksums.record_checksums(folder, [p for c in files.values() for ps in c.values() for p in ps]
                               + judged.judge_files(folder) + rationales.rationale_files(folder))
    text = card.front_matter(layout.configs_front_matter(files), layout.read_info(folder) or {}, stats)
    if body is None:
        body = card.current_body(folder)
        if body is None or (s.raw_rows() and body.startswith(card.EMPTY_TITLE)):
            body = card.progress_body(s)
    atomic.write_text_atomic(os.path.join(folder, "README.md"), text + body)


def check_not_corrupt(folder: str, s: layout.Scan, verify: bool = False) -> list[tuple[str, str]]:
    """Refuse to go on when a raw shard cannot be read: its episodes would be played twice.

    With `verify`, every live shard is also read whole and checked against its checksum, so a shard
    damaged inside (not only at its footer) is found before anything is played or written. Returns the
    (split, raw shard name) whose sft shard is damaged: derived data, to derive again.
    """
    found = checksums.find_damage(folder, s, checksums.read_checksums(folder) if verify else {}, verify)
    bad = {f"data/raw/{sp}/{n}": why for sp in SPLITS for n, why in found.raw[sp].items()}
    # an sft shard the scan could not read is not live: the repair that follows derives it anyway
    sft_bad = [(sp, layout.raw_name(n)) for sp in SPLITS for n in sorted(found.sft[sp]) if n not in s.corrupt_sft[sp]]
    if bad:
        names = sorted(bad)
        raise CorruptShardError(
            f"{folder}: {len(bad)} raw shard(s) damaged ({names[0]}: {bad[names[0]]}"
            f"{f'; and {len(bad) - 1} more' if len(bad) > 1 else ''}); run `agent-sft repair {folder}` to move them "
            "aside (their episodes are then played again by the next collect)"
        )
    return sft_bad


def split_errors(folder: str, s: layout.Scan, deriver: SftDeriver, tag: str) -> layout.Scan:
    """Move error episodes out of shards that also hold others, so a resume can replace them cheaply.

    Per shard: the error rows go to a new shard that counts only `after` the shard is replaced, then the
    other rows to a shard that `replaces` it; one rename switches the folder over. Call under the lock.
    """
    changed = False
    for split in SPLITS:
        raw_dir = layout.shard_dir(folder, "raw", split)
        for name in sorted(s.raw[split]):
            if not s.raw[split][name]["rows"]:
                continue
            path = os.path.join(raw_dir, name)
            reasons = pads.dataset([path], format="ipc").to_table(columns=["end_reason"]).column("end_reason").to_pylist()
            n_err = reasons.count(END_ERROR)
            if not n_err or n_err == len(reasons):
                continue
            table = shards.read_shard(path)
            is_err = pa.compute.equal(table.column("end_reason"), END_ERROR)
            base = f"{tag}-e{secrets.token_hex(2)}"
            adds = {k: v for k, v in s.raw[split][name].items() if k == "additions" and v}
            shards.write_shard(os.path.join(raw_dir, f"{base}-err{shards.SHARD_SUFFIX}"), "raw", table.filter(is_err),
                          {"split": split, "writer": tag, "after": [name], "errors_of": name, **adds})
            shards.write_shard(os.path.join(raw_dir, f"{base}{shards.SHARD_SUFFIX}"), "raw", table.filter(pa.compute.invert(is_err)),
                          {"split": split, "writer": tag, "replaces": [name], **adds})
            changed = True
            log.info("%s: %d error episodes will be played again", name, n_err)
    return repair(folder, layout.scan(folder, s.generation), deriver) if changed else s


def small_shards(folder: str, split: str, s: layout.Scan) -> list[str]:
    """Live raw shards of `split` small enough to be worth merging (any writer's)."""
    raw_dir = layout.shard_dir(folder, "raw", split)
    return sorted(n for n in s.raw[split] if os.path.getsize(os.path.join(raw_dir, n)) < COMPACT_SMALL_BYTES)


def compact_shards(folder: str, split: str, names: list[str], generation: int, tag: str,
                   deriver: SftDeriver | None = None) -> list[str]:
    """Replace `names` (raw shards of one split, and their sft shards) by few large ones.

    Streams batch by batch, so memory stays at one batch whatever the size. Call under the lock.
    """
    raw_dir, sft_dir = layout.shard_dir(folder, "raw", split), layout.shard_dir(folder, "sft", split)
    deriver = deriver or SftDeriver.for_folder(folder, layout.read_info(folder))
    # another process (`agent-sft compact`, a rebuild) may have replaced some of them meanwhile
    s = repair(folder, layout.scan(folder, generation), deriver)
    names = [n for n in names if n in s.raw[split]]
    groups, cur, size = [], [], 0
    for n in names:
        b = os.path.getsize(os.path.join(raw_dir, n))
        if cur and size + b > COMPACT_MAX_BYTES:
            groups.append(cur)
            cur, size = [], 0
        cur.append(n)
        size += b
    if cur:
        groups.append(cur)
    out = []
    for i, group in enumerate(groups):
        if len(group) == 1:
            out.append(group[0])
            continue
        name = f"{tag}-c{secrets.token_hex(2)}{i:03d}{shards.SHARD_SUFFIX}"
        metas = [s.raw[split][n] for n in group]
        sft_metas = [s.sft[split][n] for n in group]
        drops: Counter = Counter()
        for m in sft_metas:
            drops.update(m.get("drops", {}))
        # sft first: until the raw shard exists, the new sft shard is stale (deleted by a repair).
        # one folder, one set of additions (an empty stub, such as a quarantined shard's, may lack them)
        adds = next(({"additions": m["additions"]} for m in metas if m.get("additions")), {})
        sft_meta = {"split": split, "generation": generation, "source": name, "replaces": [layout.sft_name(n, generation) for n in group],
                    "episodes": sum(m.get("episodes", 0) for m in sft_metas), "drops": dict(drops),
                    "rows": sum(m["rows"] for m in sft_metas), **adds}
        with shards.sealing(os.path.join(sft_dir, layout.sft_name(name, generation)), "sft", sft_meta) as w:
            for n in group:
                for batch in shards.iter_shard_batches(os.path.join(sft_dir, layout.sft_name(n, generation))):
                    w.write_batch(batch)
        identity = next((m["identity"] for m in reversed(metas) if m.get("identity")), None)
        raw_meta = {"split": split, "writer": tag, "replaces": group, "rows": sum(m["rows"] for m in metas), **adds}
        if identity:
            raw_meta["identity"] = identity
        with shards.sealing(os.path.join(raw_dir, name), "raw", raw_meta) as w:
            for n in group:
                for batch in shards.iter_shard_batches(os.path.join(raw_dir, n)):
                    w.write_batch(batch)
        out.append(name)
    # the README names the new shards before the replaced ones are deleted
    repair(folder, layout.scan(folder, generation), deriver)
    return out
