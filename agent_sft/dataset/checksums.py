"""Checksums of a folder's shards: the manifest `meta/checksums.json` (read, checked, written for exactly
the shards the README lists) and the verification that finds damaged shards (`find_damage`)."""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa

from agent_sft.dataset import judged, rationales
from agent_sft.dataset import views as views_mod
from agent_sft.dataset.atomic import write_text_atomic
from agent_sft.dataset.layout import CHECKSUMS, Scan, sft_name
from agent_sft.dataset.shards import file_checksum, read_shard, sealed_under, take_sealed_checksum
from agent_sft.errors import CorruptShardError
from agent_sft.records import SPLITS


def read_checksums(folder: str) -> dict[str, dict]:
    """Relative shard path -> {"size", "sha256"} as recorded when the README last listed it ({} when the
    manifest is missing or unreadable: shards are then verified by reading them whole)."""
    return load_checksums(folder)[0]


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def load_checksums(folder: str) -> tuple[dict[str, dict], str | None]:
    """The checksum manifest, and why it cannot be used when it is there but unreadable (else None).

    A manifest with one malformed entry is not trusted at all: whatever garbled it may have changed the
    entries that still look right."""
    path = os.path.join(folder, CHECKSUMS)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return {}, None
    except OSError as e:
        return {}, f"cannot be read ({e.strerror or e})"
    try:
        sums = json.loads(data)
    except ValueError as e:
        return {}, f"not JSON ({'empty file' if not data.strip() else e})"
    if not isinstance(sums, dict):
        return {}, f"not a mapping of shard paths to checksums (a JSON {type(sums).__name__})"
    for rel, entry in sums.items():
        if not (isinstance(entry, dict) and type(entry.get("size")) is int and entry["size"] >= 0
                and isinstance(entry.get("sha256"), str) and _SHA256.match(entry["sha256"])):
            return {}, f"the entry of {rel!r} is not a size and a sha256 ({json.dumps(entry)[:80]})"
    return sums, None


# checksums file path -> (its stat when this process last wrote it, what it wrote)
_WRITTEN_SUMS: dict[str, tuple[tuple[int, int, int], dict[str, dict]]] = {}


def file_id(path: str) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of the file at `path`: changes when it is rewritten or replaced (None when absent)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def record_checksums(folder: str, rel_paths: list[str]) -> dict[str, dict]:
    """Write meta/checksums.json for exactly `rel_paths` (call under the lock, before the README names them).

    Sums of shards sealed by this process are known from writing them; a shard sealed by a process that
    died before recording it is read once, and recorded only when it reads as a whole.
    """
    path = os.path.join(folder, CHECKSUMS)
    mine = _WRITTEN_SUMS.get(path)
    key = file_id(path)
    # the file as this process last wrote it is not read again (a shard's sum never changes, so even an
    # older copy holds only true sums; what it lacks is computed from the shard)
    old, unreadable = (mine[1], None) if mine is not None and key == mine[0] else load_checksums(folder)
    sealed = sealed_under(folder)
    out = {}
    for rel in rel_paths:
        known = (take_sealed_checksum(sealed[rel]) if rel in sealed else None) or old.get(rel)
        if known is None:
            shard = os.path.join(folder, rel)
            try:
                read_shard(shard)
            except CorruptShardError:
                continue
            known = file_checksum(shard)
        out[rel] = known
    if out != old or key is None or unreadable:
        # not fsynced: a lost or stale manifest only means sums are computed again from the shards
        write_text_atomic(path, _sums_json(path, out))
        key = file_id(path)
    if key is not None:
        _WRITTEN_SUMS[path] = (key, out)
    return out


# checksums file path -> relative shard path -> (its sum, its `"path": {...}` entry as last encoded)
_SUM_ENTRIES: dict[str, dict[str, tuple[dict, str]]] = {}


def _sums_json(path: str, sums: dict[str, dict]) -> str:
    """`json.dumps(sums, sort_keys=True)`, encoding only the entries not encoded for the last write."""
    before = _SUM_ENTRIES.get(path, {})
    entries = {}
    for rel in sorted(sums):
        hit = before.get(rel)
        if hit is None or hit[0] != sums[rel]:
            hit = (sums[rel], json.dumps({rel: sums[rel]}, sort_keys=True)[1:-1])
        entries[rel] = hit
    _SUM_ENTRIES[path] = entries
    return "{" + ", ".join(e for _, e in entries.values()) + "}"


def verify_shard(folder: str, rel: str, recorded: dict | None) -> str | None:
    """Why the shard at `rel` is damaged, or None when it matches its checksum (or reads whole when none)."""
    path = os.path.join(folder, rel)
    try:
        got = file_checksum(path)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if recorded is not None:
        if got["size"] != recorded.get("size"):
            return f"size {got['size']} bytes but {recorded.get('size')} were sealed"
        if got["sha256"] != recorded.get("sha256"):
            return "content differs from its checksum (flipped or overwritten bytes)"
        return None
    try:
        read_shard(path).validate(full=True)
    except (CorruptShardError, pa.ArrowInvalid) as e:
        return str(e)
    return None


_VERIFY_THREADS = max(2, min(8, os.cpu_count() or 1))


def verify_shards(folder: str, rels: list[str], sums: dict[str, dict]) -> dict[str, str]:
    """`verify_shard` for each of `rels`, a few at a time (reading and hashing release the GIL, so the
    time is the disk's); returns relative path -> why, for the damaged ones only."""
    if len(rels) < 2:
        found = {rel: verify_shard(folder, rel, sums.get(rel)) for rel in rels}
    else:
        with ThreadPoolExecutor(max_workers=min(len(rels), _VERIFY_THREADS), thread_name_prefix="agent-sft-verify") as ex:
            found = dict(zip(rels, ex.map(lambda rel: verify_shard(folder, rel, sums.get(rel)), rels)))
    return {rel: why for rel, why in found.items() if why}


@dataclass
class Damage:
    """The damaged shards of a scan: what it could not read, and the live shards that fail verification."""

    raw: dict[str, dict[str, str]]  # split -> raw shard name -> why
    sft: dict[str, dict[str, str]]  # split -> sft file name -> why
    checked: int  # shards looked at
    views: dict[str, str] = field(default_factory=dict)  # relative path of a view's file -> why (`views`)
    judge: dict[str, str] = field(default_factory=dict)  # relative path of a judge or rationale shard -> why

    def paths(self) -> dict[str, str]:
        """Relative path -> why, for every damaged shard."""
        out = {f"data/{config}/{split}/{n}": why for config, by_split in (("raw", self.raw), ("sft", self.sft))
               for split in SPLITS for n, why in by_split[split].items()}
        out.update(self.views)
        out.update(self.judge)
        return out


def find_damage(folder: str, s: Scan, sums: dict[str, dict], verify: bool = True) -> Damage:
    """The shards of `s` that cannot be used: those the scan could not read and, with `verify`, every live
    shard that fails `verify_shard` against `sums` (its checksum manifest)."""
    raw = {sp: dict(s.corrupt_raw[sp]) for sp in SPLITS}
    sft = {sp: dict(s.corrupt_sft[sp]) for sp in SPLITS}
    checked = sum(len(raw[sp]) + len(sft[sp]) for sp in SPLITS)
    if verify:
        live = {f"data/raw/{sp}/{n}": ("raw", sp, n) for sp in SPLITS for n in sorted(s.raw[sp])}
        live.update((f"data/sft/{sp}/{n}", ("sft", sp, n))
                    for sp in SPLITS for n in sorted(sft_name(r, s.generation) for r in s.sft[sp]))
        for rel, why in verify_shards(folder, list(live), sums).items():
            config, sp, n = live[rel]
            (raw if config == "raw" else sft)[sp][n] = why
        checked += len(live)
    views: dict[str, str] = {rel: "listed in meta/info.json but missing" for rel in views_mod.missing(folder, s.views)}
    if verify:
        listed = [p for by_split in views_mod.listed_files(s.views).values() for ps in by_split.values() for p in ps
                  if p not in views]
        views.update(verify_shards(folder, listed, sums))
        checked += len(listed)
    kept = judged.judge_files(folder) + rationales.rationale_files(folder)  # kept like raw, never derived again
    judge = verify_shards(folder, kept, sums) if verify else {}
    checked += len(kept) if verify else 0
    return Damage(raw, sft, checked, views, judge)
