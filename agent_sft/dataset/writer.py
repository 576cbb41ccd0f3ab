"""The streaming, crash-safe writer: episodes in, immutable Arrow shards out.

Lifecycle, as in a recorder: `DatasetWriter(folder, ...)` creates or resumes a folder -> `add(episode)`
as episodes finish -> `finalize()` (compaction, stats, the card; idempotent). Episodes are sealed into
shards at least every `flush_every_s` seconds (a background timer) or `flush_every_episodes` episodes, so
a run killed at any moment loses at most that much and leaves a folder that loads. Several writers may
share a folder: each seals its own shards under the folder lock, and an episode already sealed by
anyone is never written again.

Episodes that ended in an error are played again when a folder is resumed. They stay in the folder until
their replacements are sealed: a resume first moves them into shards of their own, and the shard that
seals a replacement takes the error row out of its shard in the same rename (`layout.live_raw`).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
import weakref
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from agent_sft.dataset import atomic, curate, layout, shards, stages
from agent_sft.dataset.derive import SftDeriver, same_build, stage_drops
from agent_sft.dataset.fingerprint import digest, mismatches
from agent_sft.dataset.fingerprint import public as public_fingerprint
from agent_sft.dataset.formats import episode_to_row
from agent_sft.dataset.layout import BuildSpec
from agent_sft.dataset.public import public
from agent_sft.dataset.rewrite import (
    COMPACT_EVERY,
    check_not_corrupt,
    compact_shards,
    repair,
    small_shards,
    split_errors,
    write_readme,
)
from agent_sft.errors import ConfigMismatchError, DatasetError, NotADatasetError
from agent_sft.records import END_ERROR, SCHEMA_VERSION, SPLITS, Episode, check_additions

__all__ = ["BuildSpec", "ConfigMismatchError", "DatasetWriter"]

log = logging.getLogger(__name__)


class _Unit:
    """One split's part of a flush: its raw shard (and, once written, its sft shard's metadata)."""

    __slots__ = ("split", "name", "path", "rows", "moved", "rests", "raw_meta", "sft")

    def __init__(self, split: str, name: str, path: str, rows: list[dict], moved: dict, rests: list[str], raw_meta: dict):
        self.split, self.name, self.path, self.rows = split, name, path, rows
        self.moved, self.rests, self.raw_meta = moved, rests, raw_meta
        self.sft: dict | None = None


def new_writer_tag() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{secrets.token_hex(3)}"


class DatasetWriter:
    """Create or resume a dataset folder and stream episodes into it.

    `DatasetWriter.open(path, ...)` (or `DatasetWriter(path, ...)`, the same) makes a writer in two visible
    steps: the settings, then `prepare()`, which reads and repairs the folder under its lock; the writer then
    starts its flush timer.

    Args:
        path: the dataset folder (created when missing).
        fingerprint: config values that must match to resume this folder (env, policy, seed, ...).
        meta: the resolved run config, stored in `meta/info.json` and shown on the card.
        build: how `sft` is derived; a folder built with another spec is re-derived to this one. None
            keeps the folder's spec (e.g. one chosen later with `agent-sft build`).
        allow_config_change: continue a folder whose fingerprint differs instead of refusing.
        flush_every_s, flush_every_episodes: sealing cadence.
        versions: package versions recorded when the folder is created (those of its first env).
        env_versions: each env's package versions by its label in the run (`env.mix.<label>`, the env's
            name in a plain run); an env a resumed folder has not recorded yet is added.
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
        env_versions: dict[str, dict] | None = None,
        retry_errors: bool = True,
        additions: tuple[str, ...] | list[str] = (),
    ):
        self.path = os.path.abspath(path)
        self.build = build
        self.additions = check_additions(additions)  # `records.ADDITIONS` the run's rows carry
        self._adds = {"additions": list(self.additions)} if self.additions else {}
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
        self._scan: layout.Scan | None = None  # the folder as this writer last left it (None: scan it again)
        self._names: dict[tuple[str, str], set[str]] = {}  # its shard file names then
        self._syncing: list[shards.ShardGroup] = []  # flushes whose renames are being synced
        self.duplicates_skipped = 0
        self.episodes_written = 0
        self._finalized = False
        self._closed = False
        self._error: BaseException | None = None
        self.done_ids: set[str] = set()
        self._prepared = False
        self.prepare(fingerprint=fingerprint, meta=meta, allow_config_change=allow_config_change,
                     versions=versions, env_versions=env_versions)
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._tick, name="agent-sft-flush", daemon=True)
        self._last_flush = time.monotonic()
        self._timer.start()

    @classmethod
    def open(cls, path: str, **settings: Any) -> DatasetWriter:
        """Create or resume the folder at `path` and return its writer (the arguments are the class's)."""
        return cls(path, **settings)

    # -- preparing the folder ---------------------------------------------------------------------

    def prepare(self, *, fingerprint: dict | None, meta: dict | None, allow_config_change: bool,
                versions: dict | None, env_versions: dict[str, dict] | None) -> None:
        """Make the folder ready to write, under its lock: read `meta/info.json` (or rebuild it from the
        shards), check the fingerprint, note this writer and its build, check the shards against their
        checksums (a damaged sft shard is derived again), finish an interrupted rewrite (`repair`), and move
        error episodes into shards of their own so that they are played again. Sets `done_ids`. Once per
        writer: `open` calls it."""
        if self._prepared:
            raise RuntimeError(f"{self.path}: this writer has prepared its folder already")
        self._prepared = True
        self._ensure_dataset_folder()
        with layout.locked(self.path):
            info = layout.read_info(self.path) or layout.recover_info(self.path)
            if self.build is None:
                self.build = layout.build_spec(info)
            self._identity = shard_identity(fingerprint, meta, self.build)
            info = self._updated_info(info, fingerprint, meta, allow_config_change, versions, env_versions)
            # a shard derived again at this generation drops what the stages dropped at it
            self.deriver = SftDeriver(self.build, stage_drops(self.path, self.generation))
            s = layout.scan(self.path, self.generation)
            # before anything is written or played: a damaged raw shard's episodes would count as done
            damaged_sft = check_not_corrupt(self.path, s, verify=True)
            atomic.write_json_atomic(os.path.join(self.path, layout.INFO), info)
            for split, name in damaged_sft:
                log.warning("%s: the sft shard of %s/%s does not match its checksum; derived again", self.path, split, name)
                self.deriver.write_for(self.path, split, name, self.generation)  # replaces it in one rename
            s = repair(self.path, s, self.deriver)
            if self.retry_errors:
                s = split_errors(self.path, s, self.deriver, new_writer_tag())
            done, errors = layout.episode_ids(self.path, [(sp, n) for sp in SPLITS for n, m in s.raw[sp].items() if m["rows"]])
            if self.retry_errors:
                self._error_at = errors
            else:
                done |= set(errors)
            self.done_ids = done
            self._known = {(sp, n) for sp in SPLITS for n in s.raw[sp]}
            self._remember(s)
        atomic.keep_spares(self.path)
        self._spares = weakref.finalize(self, atomic.drop_spares, self.path)  # once: at close, or when dropped
        self.resumed_episodes = len(self.done_ids)
        self.errors_to_retry = len(self._error_at)

    def _ensure_dataset_folder(self) -> None:
        """Create the folder, or refuse one that holds other files and is not a dataset."""
        os.makedirs(self.path, exist_ok=True)
        if not os.path.exists(os.path.join(self.path, layout.INFO)) and any(
            e.name not in ("meta", "data", "README.md", layout.QUARANTINE) and not e.name.startswith(atomic.TMP_PREFIX)
            for e in os.scandir(self.path)
        ):
            raise NotADatasetError(
                f"{self.path}: folder is not empty and is not an agent-sft dataset; choose another output.dir"
            )

    def _updated_info(self, info: dict | None, fingerprint: dict | None, meta: dict | None, allow_config_change: bool,
                      versions: dict | None, env_versions: dict[str, dict] | None) -> dict:
        """The folder's info with this writer in it: new, or checked against `fingerprint`; sets `generation`."""
        if info is None:
            info = {
                "schema_version": SCHEMA_VERSION,
                "created_at": time.time(),
                "fingerprint": fingerprint or {},
                "fingerprint_sha256": digest(fingerprint or {}),
                "config": meta or {},
                "build": {**self.build.to_dict(), "generation": 0},
                "versions": versions or {},
                "writers": [],
                **({"schema_additions": list(self.additions)} if self.additions else {}),
            }
        else:
            layout.check_same_additions(self.path, info, self.additions)
            if fingerprint is not None:
                self._check_fingerprint(info, fingerprint, allow_config_change)
            if meta:
                info["config"] = meta
        for label, v in (env_versions or {}).items():
            info.setdefault("env_versions", {}).setdefault(label, v)
        info.setdefault("writers", []).append(self.tag)
        info["writers"] = info["writers"][-64:]
        generation = layout.generation(info)
        if not same_build(layout.build_spec(info), self.build):
            generation += 1
            info["build"] = {**self.build.to_dict(), "generation": generation}
            info.pop("stages", None)  # the stages' drops were those of the generation left
        self.generation = generation
        return info

    def _check_fingerprint(self, info: dict, fingerprint: dict, allow_config_change: bool) -> None:
        diff = mismatches(info, fingerprint)
        if diff and not allow_config_change:
            raise ConfigMismatchError(
                f"{self.path} was collected with a different configuration:\n  " + "\n  ".join(diff[:20])
                + "\nUse another output.dir, or set output.allow_config_change=true to continue this folder."
            )
        if diff:
            info.setdefault("config_changes", []).append({"at": time.time(), "diff": diff})
        info.pop("recovered_from", None)
        info["fingerprint"] = fingerprint
        info["fingerprint_sha256"] = digest(fingerprint)

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
                    except BaseException as e:  # surfaced (once, by the caller) on the next add/finalize
                        self._error = e
                        log.info("flush of %s failed: %s", self.path, e)

    def flush(self) -> int:
        """Seal every buffered episode now; returns the number sealed.

        Sealed: the shards are complete on disk (their contents synced before they were renamed into
        place) and the README lists them. Their directory entries are synced in the background, and
        `close` waits for that."""
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
        """Seal each split's rows; a split is removed from `by_split` once sealed.

        The raw and sft shards of every split are written under temporary names, then synced and renamed
        together (`ShardGroup`: raw before its sft, split after split), so a kill anywhere leaves the last
        README's listing intact and each shard complete or absent. A shard written before an error in the
        flush is sealed all the same, and listed.
        """
        units: list[_Unit] = []
        with layout.locked(self.path):
            self._synced()
            self._follow_build()
            self._catch_up()
            group = shards.ShardGroup()
            try:
                with group:
                    for split in list(by_split):
                        srows = [r for r in by_split[split] if r["episode_id"] not in self._foreign_ids]
                        self.duplicates_skipped += len(by_split[split]) - len(srows)
                        if not srows:
                            del by_split[split]
                            continue
                        name = f"{self.tag}-{self._seq:05d}{shards.SHARD_SUFFIX}"
                        self._seq += 1
                        replaces, moved, rests = self._take_out_errors(split, name, srows)
                        meta = {"split": split, "writer": self.tag, "replaces": replaces, "identity": self._identity,
                                **self._adds}
                        path = layout.shard_path(self.path, "raw", split, name)
                        shards.write_shard(path, "raw", srows, meta)
                        unit = _Unit(split, name, path, srows, moved, rests, {**meta, "rows": len(srows)})
                        units.append(unit)
                        unit.sft = self.deriver.write_for(self.path, split, name, self.generation, srows, self.additions)
            except BaseException:
                self._syncing.append(group)
                self._record(units, group.renamed, by_split, failed=True)
                raise
            self._syncing.append(group)
            return self._record(units, group.renamed, by_split, failed=False)

    def _synced(self, wait: bool = False) -> None:
        """Take note of the flushes whose directory entries are synced (their contents were synced before
        they were renamed into place), raising the error of one that failed; wait for them all with `wait`,
        else only while more than two are pending."""
        while self._syncing and (wait or len(self._syncing) > 2 or self._syncing[0].is_durable()):
            self._syncing.pop(0).durable()

    def _record(self, units: list[_Unit], renamed: list[str], by_split: dict[str, list[dict]], failed: bool) -> int:
        """Take note of the units whose raw shard was renamed into place, and list them in the README
        (under the lock)."""
        from agent_sft.dataset import card

        renamed_paths = set(renamed)
        done = [u for u in units if u.path in renamed_paths]
        for u in done:
            for r in u.rows:
                self._error_at.pop(r["episode_id"], None)
            self._error_at.update(u.moved)
            self._known.update((u.split, n) for n in u.rests)
            self._known.add((u.split, u.name))
            # sealed: from here on the rows are in the folder (a missing sft shard is re-derived)
            del by_split[u.split]
            self._own[u.split].append(u.name)
            self.episodes_written += len(u.rows)
        sealed = sum(len(u.rows) for u in done)
        if failed:
            if done:
                # list the sealed raw rows before giving up: the folder loads, and a resume re-derives
                self._scan = None
                try:
                    write_readme(self.path, layout.scan(self.path, self.generation))
                except Exception as e:  # the error of the flush is the one to report
                    log.info("%s: README not rewritten after a failed flush: %s", self.path, e)
            return sealed
        if self._scan is not None and not any(u.moved or u.rests or u.raw_meta["replaces"] for u in units):
            # nobody else changed the folder and nothing was replaced: list the new shards without a scan
            s = self._scan
            for u in units:
                s.raw[u.split][u.name] = u.raw_meta
                s.sft[u.split][u.name] = u.sft
                self._names[("raw", u.split)].add(u.name)
                self._names[("sft", u.split)].add(layout.sft_name(u.name, self.generation))
            if units:
                write_readme(self.path, s, body=card.progress_body(s))
        else:
            s = layout.scan(self.path, self.generation)
            self._remember(repair(self.path, s, self.deriver, body=card.progress_body(s)))
        compacted = False
        for split in SPLITS:
            if len(self._own[split]) >= COMPACT_EVERY:
                # keep the shard count (and the cost of each flush) bounded on long runs
                merged = compact_shards(self.path, split, self._own[split], self.generation, self.tag, self.deriver)
                self._known.difference_update((split, n) for n in self._own[split] if n not in merged)
                self._known.update((split, n) for n in merged)
                self._own_big[split] += merged
                self._own[split] = []
                compacted = True
        if compacted:
            self._remember(layout.scan(self.path, self.generation))
        return sealed

    def _remember(self, s: layout.Scan) -> None:
        """`s` is the folder as this writer leaves it (under the lock); the next flush starts from it
        unless the shard files there changed meanwhile."""
        self._scan = s
        self._names = layout.shard_names(self.path)

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
        raw_dir = layout.shard_dir(self.path, "raw", split)
        moved: dict[str, tuple[str, str]] = {}
        rests: list[str] = []
        for holder, ids in sorted(holders.items()):
            table = shards.read_shard(os.path.join(raw_dir, holder))
            keep = table.filter(pa.compute.invert(pa.compute.is_in(table.column("episode_id"), pa.array(sorted(ids)))))
            if keep.num_rows:
                rest = f"{name[:-len(shards.SHARD_SUFFIX)]}-{secrets.token_hex(2)}-err{shards.SHARD_SUFFIX}"
                shards.write_shard(os.path.join(raw_dir, rest), "raw", keep,
                              {"split": split, "writer": self.tag, "after": [holder], "errors_of": holder, **self._adds})
                ends = keep.column("end_reason").to_pylist()
                moved.update({eid: (split, rest) for eid, e in zip(keep.column("episode_id").to_pylist(), ends)
                              if e == END_ERROR and eid in self._error_at})
                rests.append(rest)
        return sorted(holders), moved, rests

    def _follow_build(self) -> None:
        """Adopt a build spec changed by `agent-sft build` while this writer runs (under the lock)."""
        info = layout.read_info(self.path) or {}
        gen = int(info.get("build", {}).get("generation", self.generation))
        if gen != self.generation:
            self.build = layout.build_spec(info)
            self.deriver = SftDeriver.for_folder(self.path, info)
            self.generation = gen
            self._scan = None
            self._identity = {**self._identity, "build": self.build.to_dict()}
            log.warning("%s was rebuilt (sft generation %d) while collecting; new episodes follow it", self.path, gen)

    def _catch_up(self) -> None:
        """Learn the episodes other processes sealed since we last looked (under the lock)."""
        if self._scan is not None and layout.shard_names(self.path) == self._names:
            return  # the shard files are the ones this writer left: nothing new
        self._scan = None
        s = layout.scan(self.path, self.generation)
        check_not_corrupt(self.path, s)
        new = [(sp, n) for sp in SPLITS for n in s.raw[sp] if (sp, n) not in self._known]
        self._known.update(new)
        if not new:
            return
        done, errors = layout.episode_ids(self.path, new)
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
            self._synced(wait=True)
            self._closed = True
            self._spares()

    def finalize(self, summary: dict | None = None) -> dict:
        """Flush, compact small shards (this run's and those left by earlier runs), write stats and the card.

        Idempotent.
        """
        self.close()
        if self._error is not None:
            raise DatasetError(f"{self.path}: a flush failed: {self._error}") from self._error
        with layout.locked(self.path):
            self._follow_build()
            s = repair(self.path, layout.scan(self.path, self.generation), self.deriver)
            for split in SPLITS:
                small = small_shards(self.path, split, s)
                if len(small) > 1:
                    self._own_big[split] = compact_shards(self.path, split, small, self.generation, self.tag, self.deriver)
                    self._own[split] = []
            s = repair(self.path, layout.scan(self.path, self.generation), self.deriver)
            info = layout.read_info(self.path) or layout.recover_info(self.path)
            if info is not None:
                if stages.needed(self.build, info):  # drops that need every episode: derived again over the whole folder
                    s, self.deriver = stages.rederive(self.path, self.build, info)
                    self.generation = s.generation
                s = curate.rewrite_views(self.path, info, s, self.deriver, dpo=curate.run_dpo(info))
            from agent_sft.dataset import reading

            stats = reading.finalize_folder(self.path, s, summary=summary)
        self._finalized = True
        return stats

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.close()


def shard_identity(fingerprint: dict | None, meta: dict | None, build: BuildSpec | None) -> dict:
    """What each raw shard carries so a lost meta/info.json can be rebuilt (published values only)."""
    out: dict = {"schema_version": SCHEMA_VERSION}
    if fingerprint is not None:
        out["fingerprint"] = public_fingerprint(fingerprint)
        out["fingerprint_sha256"] = digest(fingerprint)
    if meta:
        out["config"] = public(meta)
    if build is not None:
        out["build"] = build.to_dict()
    return out
