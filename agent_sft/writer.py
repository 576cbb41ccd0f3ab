"""The streaming, crash-safe writer: episodes in, immutable Arrow shards out.

Lifecycle, as in a recorder: `DatasetWriter(folder, ...)` creates or resumes a folder -> `add(episode)`
as episodes finish -> `finalize()` (compaction, stats, the card; idempotent). Episodes are sealed into
shards at least every `flush_every_s` seconds (a background timer) or `flush_every_episodes` episodes, so
a run killed at any moment loses at most that much and leaves a folder that loads. Several writers may
share a folder: each seals its own shards under the folder lock, and an episode already sealed by
anyone is never written again.

Episodes that ended in an error are played again when a folder is resumed. They stay in the folder until
their replacements are sealed: a resume first moves them into shards of their own, and the shard that
seals a replacement takes the error row out of its shard in the same rename (`folder.live_raw`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.dataset as pads

from agent_sft import folder as F
from agent_sft.filters import build_filters, derive_sft
from agent_sft.formats import episode_to_row
from agent_sft.folder import DatasetError
from agent_sft.records import SCHEMA_VERSION, SFT_SCHEMA, SPLITS, Episode

log = logging.getLogger(__name__)

COMPACT_MAX_BYTES = 512 * 1024 * 1024  # a compacted shard grows to about this size at most
COMPACT_EVERY = 128  # a writer merges its small shards once it has sealed this many in a split
COMPACT_SMALL_BYTES = 64 * 1024 * 1024  # at the end of a run, live shards below this size are merged


class ConfigMismatchError(DatasetError):
    """The folder was collected with a different configuration."""


@dataclass
class BuildSpec:
    """How `sft` is derived from `raw`: row style and filters (a `FilterConfig` as a dict)."""

    style: str = "auto"
    filters: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"style": self.style, "filters": dict(sorted(self.filters.items()))}


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} (folder) vs {vb!r} (now)")
    return out


def new_writer_tag() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{secrets.token_hex(3)}"


def _ids_by_shard(folder: str, shards: list[tuple[str, str]]) -> tuple[set[str], dict[str, tuple[str, str]]]:
    """(ids of episodes that did not end in an error, error episode id -> (split, shard name))."""
    done: set[str] = set()
    errors: dict[str, tuple[str, str]] = {}
    for split, name in shards:
        path = os.path.join(F.shard_dir(folder, "raw", split), name)
        try:
            t = pads.dataset([path], format="ipc").to_table(columns=["episode_id", "end_reason"])
        except (pa.ArrowInvalid, OSError) as e:
            raise F.CorruptShardError(f"{path}: cannot read episode ids ({e}); run `agent-sft repair {folder}`") from None
        for eid, reason in zip(t.column("episode_id").to_pylist(), t.column("end_reason").to_pylist()):
            if reason == "error":
                errors[eid] = (split, name)
            else:
                done.add(eid)
    return done, errors


class SftDeriver:
    """Turns raw rows into sft rows with a fixed build spec (filters are built once)."""

    def __init__(self, build: BuildSpec):
        self.build = build
        self.filters = build_filters(build.filters)

    def derive(self, raw_rows: list[dict]) -> tuple[list[dict], Counter]:
        return derive_sft(raw_rows, self.filters, self.build.style)

    def write_for(self, folder: str, split: str, raw_name: str, generation: int, raw_rows: list[dict] | None = None) -> dict:
        """Seal the sft shard of raw shard `raw_name` (read batch by batch when not given); returns its metadata."""
        if raw_rows is not None:
            batches = iter([raw_rows])
        else:
            path = os.path.join(F.shard_dir(folder, "raw", split), raw_name)
            batches = (b.to_pylist() for b in F.iter_shard_batches(path))
        tables, drops, episodes = [], Counter(), 0
        for rows in batches:
            sft, d = self.derive(rows)
            drops.update(d)
            episodes += len(rows)
            if sft:
                tables.append(pa.Table.from_pylist(sft, schema=SFT_SCHEMA))
        table = pa.concat_tables(tables) if tables else SFT_SCHEMA.empty_table()
        meta = {"split": split, "generation": generation, "source": raw_name, "episodes": episodes, "drops": dict(drops)}
        path = os.path.join(F.shard_dir(folder, "sft", split), F.sft_name(raw_name, generation))
        n = F.write_shard(path, "sft", table, meta)
        return {**meta, "rows": n}


def _folder_build(folder: str) -> BuildSpec:
    b = (F.read_info(folder) or {}).get("build") or {}
    return BuildSpec(b.get("style", "auto"), b.get("filters", {}))


def split_errors(folder: str, s: F.Scan, deriver: SftDeriver, tag: str) -> F.Scan:
    """Move error episodes out of shards that also hold others, so a resume can replace them cheaply.

    Per shard: the error rows go to a new shard that counts only `after` the shard is replaced, then the
    other rows to a shard that `replaces` it; one rename switches the folder over. Call under the lock.
    """
    changed = False
    for split in SPLITS:
        raw_dir = F.shard_dir(folder, "raw", split)
        for name in sorted(s.raw[split]):
            if not s.raw[split][name]["rows"]:
                continue
            path = os.path.join(raw_dir, name)
            reasons = pads.dataset([path], format="ipc").to_table(columns=["end_reason"]).column("end_reason").to_pylist()
            n_err = reasons.count("error")
            if not n_err or n_err == len(reasons):
                continue
            table = F.read_shard(path)
            is_err = pa.compute.equal(table.column("end_reason"), "error")
            base = f"{tag}-e{secrets.token_hex(2)}"
            F.write_shard(os.path.join(raw_dir, f"{base}-err{F.SHARD_SUFFIX}"), "raw", table.filter(is_err),
                          {"split": split, "writer": tag, "after": [name], "errors_of": name})
            F.write_shard(os.path.join(raw_dir, f"{base}{F.SHARD_SUFFIX}"), "raw", table.filter(pa.compute.invert(is_err)),
                          {"split": split, "writer": tag, "replaces": [name]})
            changed = True
            log.info("%s: %d error episodes will be played again", name, n_err)
    return repair(folder, F.scan(folder, s.generation), deriver) if changed else s


def repair(folder: str, s: F.Scan, deriver: SftDeriver, body: str | None = None) -> F.Scan:
    """Bring a folder to a consistent state after a crash (call under the folder lock).

    Derives missing sft shards, rewrites the README to list exactly the live shards, and only then
    deletes the files it no longer names.
    """
    for split in SPLITS:
        for n in s.missing_sft[split]:
            deriver.write_for(folder, split, n, s.generation)
    s = F.scan(folder, s.generation)
    write_readme(folder, s, body)
    collect_garbage(folder, s)
    return s


def collect_garbage(folder: str, s: F.Scan) -> None:
    """Delete replaced raw shards (in a safe order), stale sft shards and dead temporary files."""
    for split in SPLITS:
        for n in s.replaced_raw[split]:
            _remove(os.path.join(F.shard_dir(folder, "raw", split), n))
        for n in s.stale_sft[split]:
            _remove(os.path.join(F.shard_dir(folder, "sft", split), n))
    F.remove_dead_tmp(folder)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def write_readme(folder: str, s: F.Scan, body: str | None = None) -> None:
    """Rewrite README.md atomically: front matter listing exactly the live shards, and a body.

    With no `body`, the card's current body is kept (a progress note when there is none yet). The
    checksums of the listed files are recorded first.
    """
    from agent_sft import card

    files = F.listing(folder, s)
    F.record_checksums(folder, [p for c in files.values() for ps in c.values() for p in ps])
    text = card.front_matter(F.configs_front_matter(files), F.read_info(folder) or {})
    if body is None:
        body = card.current_body(folder)
        if body is None or (s.raw_rows() and body.startswith(card.EMPTY_TITLE)):
            body = card.progress_body(s)
    F.write_text_atomic(os.path.join(folder, "README.md"), text + body)


def check_not_corrupt(folder: str, s: F.Scan) -> None:
    """Refuse to go on when a raw shard cannot be read: its episodes would be played twice."""
    bad = [f"data/raw/{sp}/{n}" for sp in SPLITS for n in s.corrupt_raw[sp]]
    if bad:
        raise F.CorruptShardError(
            f"{folder}: {len(bad)} raw shard(s) cannot be read ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); "
            f"run `agent-sft repair {folder}` to move them aside (their episodes are then played again by the next collect)"
        )


class DatasetWriter:
    """Create or resume a dataset folder and stream episodes into it.

    Args:
        path: the dataset folder (created when missing).
        fingerprint: config values that must match to resume this folder (env, policy, seed, ...).
        meta: the resolved run config, stored in `meta/info.json` and shown on the card.
        build: how `sft` is derived; a folder built with another spec is re-derived to this one. None
            keeps the folder's spec (e.g. one chosen later with `agent-sft build`).
        allow_config_change: continue a folder whose fingerprint differs instead of refusing.
        flush_every_s, flush_every_episodes: sealing cadence.
        retry_errors: episodes that ended in an error (a crashed env, a failed request) are not counted
            as done when a folder is resumed, so they are played again; each stays in the folder until
            its replacement is sealed.

    Raises:
        ConfigMismatchError, SchemaVersionError, CorruptShardError: naming the folder or file.
    """

    def __init__(
        self,
        path: str,
        *,
        fingerprint: dict | None = None,
        meta: dict | None = None,
        build: BuildSpec | None = None,
        allow_config_change: bool = False,
        flush_every_s: float = 5.0,
        flush_every_episodes: int = 64,
        versions: dict | None = None,
        retry_errors: bool = True,
    ):
        self.path = os.path.abspath(path)
        self.build = build
        self.flush_every_s = flush_every_s
        self.flush_every_episodes = max(1, flush_every_episodes)
        self.tag = new_writer_tag()
        self.retry_errors = retry_errors
        self._seq = 0
        self._buf: list[dict] = []
        self._lock = threading.RLock()
        self._own: dict[str, list[str]] = {sp: [] for sp in SPLITS}  # sealed by this writer, small
        self._own_big: dict[str, list[str]] = {sp: [] for sp in SPLITS}  # compacted during the run
        self._known: set[tuple[str, str]] = set()
        self._foreign_ids: set[str] = set()
        self._error_at: dict[str, tuple[str, str]] = {}  # error episode to replace -> (split, shard)
        self.duplicates_skipped = 0
        self.episodes_written = 0
        self._finalized = False
        self._closed = False
        self._error: BaseException | None = None
        os.makedirs(self.path, exist_ok=True)
        if not os.path.exists(os.path.join(self.path, F.INFO)) and any(
            e.name not in ("meta", "data", "README.md", F.QUARANTINE) for e in os.scandir(self.path)
        ):
            raise F.NotADatasetError(
                f"{self.path}: folder is not empty and is not an agent-sft dataset; choose another output.dir"
            )
        with F.locked(self.path):
            info = F.read_info(self.path) or F.recover_info(self.path)
            if self.build is None:
                b = (info or {}).get("build") or {}
                self.build = BuildSpec(b.get("style", "auto"), b.get("filters", {}))
            self.deriver = SftDeriver(self.build)
            self._identity = shard_identity(fingerprint, meta, self.build)
            if info is None:
                info = {
                    "schema_version": SCHEMA_VERSION,
                    "created_at": time.time(),
                    "fingerprint": fingerprint or {},
                    "fingerprint_sha256": fingerprint_hash(fingerprint or {}),
                    "config": meta or {},
                    "build": {**self.build.to_dict(), "generation": 0},
                    "versions": versions or {},
                    "writers": [],
                }
            else:
                if fingerprint is not None:
                    self._check_fingerprint(info, fingerprint, allow_config_change)
                if meta:
                    info["config"] = meta
            info.setdefault("writers", []).append(self.tag)
            info["writers"] = info["writers"][-64:]
            generation = int(info["build"].get("generation", 0))
            if {k: v for k, v in info["build"].items() if k != "generation"} != self.build.to_dict():
                generation += 1
                info["build"] = {**self.build.to_dict(), "generation": generation}
            F.write_json_atomic(os.path.join(self.path, F.INFO), info)
            self.generation = generation
            s = F.scan(self.path, generation)
            check_not_corrupt(self.path, s)
            s = repair(self.path, s, self.deriver)
            if retry_errors:
                s = split_errors(self.path, s, self.deriver, new_writer_tag())
            done, errors = _ids_by_shard(self.path, [(sp, n) for sp in SPLITS for n, m in s.raw[sp].items() if m["rows"]])
            if retry_errors:
                self._error_at = errors
            else:
                done |= set(errors)
            self.done_ids: set[str] = done
            self._known = {(sp, n) for sp in SPLITS for n in s.raw[sp]}
        self.resumed_episodes = len(self.done_ids)
        self.errors_to_retry = len(self._error_at)
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._tick, name="agent-sft-flush", daemon=True)
        self._last_flush = time.monotonic()
        self._timer.start()

    def _check_fingerprint(self, info: dict, fingerprint: dict, allow_config_change: bool) -> None:
        if info.get("recovered_from") and "fingerprint_sha256" in info:
            # identity rebuilt from the shards: compare the whole fingerprint by its hash
            same = info["fingerprint_sha256"] == fingerprint_hash(fingerprint)
            diff = [] if same else (config_diff(info.get("fingerprint", {}), public_fingerprint(fingerprint))
                                    or ["(values that are not published, e.g. local paths)"])
        else:
            diff = config_diff(info.get("fingerprint", {}), fingerprint)
        if diff and not allow_config_change:
            raise ConfigMismatchError(
                f"{self.path} was collected with a different configuration:\n  " + "\n  ".join(diff[:20])
                + "\nUse another output.dir, or set output.allow_config_change=true to continue this folder."
            )
        if diff:
            info.setdefault("config_changes", []).append({"at": time.time(), "diff": diff})
        info.pop("recovered_from", None)
        info["fingerprint"] = fingerprint
        info["fingerprint_sha256"] = fingerprint_hash(fingerprint)

    # -- streaming ------------------------------------------------------------------------------

    def add(self, episode: Episode | dict) -> bool:
        """Buffer a finished episode; False when its id was already written (it is then skipped)."""
        row = episode if isinstance(episode, dict) else episode_to_row(episode)
        with self._lock:
            if self._error is not None:
                raise DatasetError(f"{self.path}: an earlier flush failed: {self._error}") from self._error
            if row["split"] not in SPLITS:
                raise DatasetError(f"episode {row['episode_id']}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
            if row["episode_id"] in self.done_ids:
                self.duplicates_skipped += 1
                return False
            self.done_ids.add(row["episode_id"])
            self._buf.append(row)
            if len(self._buf) >= self.flush_every_episodes:
                self.flush()
        return True

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.flush_every_s)):
            with self._lock:
                if self._buf and self._error is None and time.monotonic() - self._last_flush >= self.flush_every_s:
                    try:
                        self.flush()
                    except BaseException as e:  # surfaced on the next add/finalize
                        self._error = e
                        log.error("flush of %s failed: %s", self.path, e)

    def flush(self) -> int:
        """Seal every buffered episode now; returns the number sealed."""
        with self._lock:
            self._last_flush = time.monotonic()
            if not self._buf:
                return 0
            by_split: dict[str, list[dict]] = {}
            for r in self._buf:
                by_split.setdefault(r["split"], []).append(r)
            self._buf = []
            try:
                return self._seal(by_split)
            except BaseException:
                # what was not sealed goes back to the buffer: the next flush tries again
                self._buf[:0] = [r for rows in by_split.values() for r in rows]
                raise

    def _seal(self, by_split: dict[str, list[dict]]) -> int:
        """Seal each split's rows; a split is removed from `by_split` once sealed."""
        from agent_sft import card

        sealed = 0
        with F.locked(self.path):
            self._follow_build()
            self._catch_up()
            for split in list(by_split):
                srows = [r for r in by_split[split] if r["episode_id"] not in self._foreign_ids]
                self.duplicates_skipped += len(by_split[split]) - len(srows)
                if not srows:
                    del by_split[split]
                    continue
                name = f"{self.tag}-{self._seq:05d}{F.SHARD_SUFFIX}"
                self._seq += 1
                replaces, moved, rests = self._take_out_errors(split, name, srows)
                F.write_shard(os.path.join(F.shard_dir(self.path, "raw", split), name), "raw", srows,
                              {"split": split, "writer": self.tag, "replaces": replaces, "identity": self._identity})
                for r in srows:
                    self._error_at.pop(r["episode_id"], None)
                self._error_at.update(moved)
                self._known.update((split, n) for n in rests)
                # sealed: from here on the rows are in the folder (a missing sft shard is re-derived)
                del by_split[split]
                self._own[split].append(name)
                self._known.add((split, name))
                sealed += len(srows)
                self.episodes_written += len(srows)
                try:
                    self.deriver.write_for(self.path, split, name, self.generation, srows)
                except BaseException:
                    # list the sealed raw rows before giving up: the folder loads, and a resume re-derives
                    write_readme(self.path, F.scan(self.path, self.generation))
                    raise
                if len(self._own[split]) >= COMPACT_EVERY:
                    # keep the shard count (and the cost of each flush) bounded on long runs
                    merged = compact_shards(self.path, split, self._own[split], self.generation, self.tag, self.deriver)
                    self._known.update((split, n) for n in merged)
                    self._own_big[split] += merged
                    self._own[split] = []
            s = F.scan(self.path, self.generation)
            repair(self.path, s, self.deriver, body=card.progress_body(s))
        return sealed

    def _take_out_errors(self, split: str, name: str,
                         rows: list[dict]) -> tuple[list[str], dict[str, tuple[str, str]], list[str]]:
        """Prepare the removal of the error episodes that `rows` replace.

        The rest of each shard holding such an episode is sealed first under a name that counts only
        once that shard is replaced, so the new shard `name` (which replaces it) switches both over with
        its own rename. Returns the shards to replace, the new place of the error episodes left, and the
        shards holding the rest.
        """
        holders: dict[str, set[str]] = {}
        for r in rows:
            at = self._error_at.get(r["episode_id"])
            if at is not None and at[0] == split:
                holders.setdefault(at[1], set()).add(r["episode_id"])
        raw_dir = F.shard_dir(self.path, "raw", split)
        moved: dict[str, tuple[str, str]] = {}
        rests: list[str] = []
        for holder, ids in sorted(holders.items()):
            table = F.read_shard(os.path.join(raw_dir, holder))
            keep = table.filter(pa.compute.invert(pa.compute.is_in(table.column("episode_id"), pa.array(sorted(ids)))))
            if keep.num_rows:
                rest = f"{name[:-len(F.SHARD_SUFFIX)]}-{secrets.token_hex(2)}-err{F.SHARD_SUFFIX}"
                F.write_shard(os.path.join(raw_dir, rest), "raw", keep,
                              {"split": split, "writer": self.tag, "after": [holder], "errors_of": holder})
                ends = keep.column("end_reason").to_pylist()
                moved.update({eid: (split, rest) for eid, e in zip(keep.column("episode_id").to_pylist(), ends)
                              if e == "error" and eid in self._error_at})
                rests.append(rest)
        return sorted(holders), moved, rests

    def _follow_build(self) -> None:
        """Adopt a build spec changed by `agent-sft build` while this writer runs (under the lock)."""
        info = F.read_info(self.path) or {}
        gen = int(info.get("build", {}).get("generation", self.generation))
        if gen != self.generation:
            b = info["build"]
            self.build = BuildSpec(b.get("style", "auto"), b.get("filters", {}))
            self.deriver = SftDeriver(self.build)
            self.generation = gen
            self._identity = {**self._identity, "build": self.build.to_dict()}
            log.warning("%s was rebuilt (sft generation %d) while collecting; new episodes follow it", self.path, gen)

    def _catch_up(self) -> None:
        """Learn the episodes other processes sealed since we last looked (under the lock)."""
        s = F.scan(self.path, self.generation)
        check_not_corrupt(self.path, s)
        new = [(sp, n) for sp in SPLITS for n in s.raw[sp] if (sp, n) not in self._known]
        self._known.update(new)
        if not new:
            return
        done, errors = _ids_by_shard(self.path, new)
        for eid in done:
            self._error_at.pop(eid, None)
        self._foreign_ids |= done
        self.done_ids |= done
        for eid, at in errors.items():
            if eid in self._error_at or (self.retry_errors and eid not in self.done_ids):
                # moved by a compaction, or another writer's error episode that a replay here may replace
                self._error_at[eid] = at
            elif not self.retry_errors:
                self._foreign_ids.add(eid)
                self.done_ids.add(eid)

    # -- end of run -----------------------------------------------------------------------------

    def close(self) -> None:
        """Seal what is buffered and stop the timer (no compaction, no card)."""
        if self._closed:
            return
        self._stop.set()
        self._timer.join(timeout=5)
        with self._lock:
            self.flush()
            self._closed = True

    def finalize(self, summary: dict | None = None) -> dict:
        """Flush, compact small shards (this run's and those left by earlier runs), write stats and the card.

        Idempotent.
        """
        self.close()
        if self._error is not None:
            raise DatasetError(f"{self.path}: a flush failed: {self._error}") from self._error
        with F.locked(self.path):
            self._follow_build()
            s = repair(self.path, F.scan(self.path, self.generation), self.deriver)
            for split in SPLITS:
                small = small_shards(self.path, split, s)
                if len(small) > 1:
                    self._own_big[split] = compact_shards(self.path, split, small, self.generation, self.tag, self.deriver)
                    self._own[split] = []
            s = repair(self.path, F.scan(self.path, self.generation), self.deriver)
            from agent_sft import dataset

            stats = dataset.finalize_folder(self.path, s, summary=summary)
        self._finalized = True
        return stats

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.close()


def fingerprint_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()


def public_fingerprint(fingerprint: dict) -> dict:
    from agent_sft.card import public

    return public(fingerprint)


def shard_identity(fingerprint: dict | None, meta: dict | None, build: BuildSpec | None) -> dict:
    """What each raw shard carries so a lost meta/info.json can be rebuilt (published values only)."""
    from agent_sft.card import public

    out: dict = {"schema_version": SCHEMA_VERSION}
    if fingerprint is not None:
        out["fingerprint"] = public(fingerprint)
        out["fingerprint_sha256"] = fingerprint_hash(fingerprint)
    if meta:
        out["config"] = public(meta)
    if build is not None:
        out["build"] = build.to_dict()
    return out


def small_shards(folder: str, split: str, s: F.Scan) -> list[str]:
    """Live raw shards of `split` small enough to be worth merging (any writer's)."""
    raw_dir = F.shard_dir(folder, "raw", split)
    return sorted(n for n in s.raw[split] if os.path.getsize(os.path.join(raw_dir, n)) < COMPACT_SMALL_BYTES)


def compact_shards(folder: str, split: str, names: list[str], generation: int, tag: str,
                   deriver: SftDeriver | None = None) -> list[str]:
    """Replace `names` (raw shards of one split, and their sft shards) by few large ones.

    Streams batch by batch, so memory stays at one batch whatever the size. Call under the lock.
    """
    raw_dir, sft_dir = F.shard_dir(folder, "raw", split), F.shard_dir(folder, "sft", split)
    deriver = deriver or SftDeriver(_folder_build(folder))
    # another process (`agent-sft compact`, a rebuild) may have replaced some of them meanwhile
    s = repair(folder, F.scan(folder, generation), deriver)
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
        name = f"{tag}-c{secrets.token_hex(2)}{i:03d}{F.SHARD_SUFFIX}"
        metas = [s.raw[split][n] for n in group]
        sft_metas = [s.sft[split][n] for n in group]
        drops: Counter = Counter()
        for m in sft_metas:
            drops.update(m.get("drops", {}))
        # sft first: until the raw shard exists, the new sft shard is stale (deleted by a repair).
        sft_meta = {"split": split, "generation": generation, "source": name, "replaces": [F.sft_name(n, generation) for n in group],
                    "episodes": sum(m.get("episodes", 0) for m in sft_metas), "drops": dict(drops),
                    "rows": sum(m["rows"] for m in sft_metas)}
        with F.sealing(os.path.join(sft_dir, F.sft_name(name, generation)), "sft", sft_meta) as w:
            for n in group:
                for batch in F.iter_shard_batches(os.path.join(sft_dir, F.sft_name(n, generation))):
                    w.write_batch(batch)
        identity = next((m["identity"] for m in reversed(metas) if m.get("identity")), None)
        raw_meta = {"split": split, "writer": tag, "replaces": group, "rows": sum(m["rows"] for m in metas)}
        if identity:
            raw_meta["identity"] = identity
        with F.sealing(os.path.join(raw_dir, name), "raw", raw_meta) as w:
            for n in group:
                for batch in F.iter_shard_batches(os.path.join(raw_dir, n)):
                    w.write_batch(batch)
        out.append(name)
    # the README names the new shards before the replaced ones are deleted
    repair(folder, F.scan(folder, generation), deriver)
    return out
