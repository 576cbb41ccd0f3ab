"""The dataset folder on disk: layout, immutable Arrow shards, and the scan that finds the live ones.

```
DIR/README.md                       card; YAML `configs:` lists exactly the live shards
DIR/data/raw/{train,validation}/*.arrow       one row per episode (Arrow IPC file, zstd)
DIR/data/sft/{train,validation}/g<gen>-*.arrow  training rows derived from the raw shard of the same name
DIR/meta/info.json                  schema version, config fingerprint, resolved config, sft build spec
DIR/meta/checksums.json             size and sha256 of every shard the README lists
DIR/meta/stats.json, meta/plots/    figures of the last finalize
DIR/.quarantine/                    corrupt raw shards moved aside by `agent-sft repair` (never uploaded)
```
A shard is written under a dot-name and renamed into place, so a sealed shard is always complete and
never changes. A shard that rewrites others names them in `replaces`; the scan ignores replaced shards,
so one rename switches a folder from the old rows to the new ones. A shard written to take part of a
rewrite names in `after` the shards that must be replaced first: it counts only once they are, so two
files can appear together through one rename. sft shards are derived data: one per live raw shard and
build generation, re-derived when missing.

Readers see the README's listing. Every rewrite seals its new shards, then rewrites the README, and
only then deletes what the README no longer names (`garbage`), so a process killed at any instant
leaves a README whose every file exists, and the next command finishes the interrupted work.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from agent_sft.dataset import views as views_mod
from agent_sft.dataset.atomic import TMP_PREFIX, write_json_atomic
from agent_sft.dataset.shards import SHARD_SUFFIX, cached_meta
from agent_sft.errors import (
    ConfigError,
    ConfigMismatchError,
    CorruptShardError,
    DatasetError,
    NotADatasetError,
    SchemaVersionError,
)
from agent_sft.records import CONFIGS, END_ERROR, SCHEMA_VERSION, SPLITS, check_additions

INFO = "meta/info.json"

STATS = "meta/stats.json"

CHECKSUMS = "meta/checksums.json"

LOCK = "meta/.lock"

STAGE_DROPS = "meta/stage_drops-g{generation}.json"
"""Episode id -> the reason a build stage over the whole folder dropped it, for one build generation."""

QUARANTINE = ".quarantine"

_GEN = re.compile(r"^g(\d+)-(.+)$")


def shard_dir(folder: str, config: str, split: str) -> str:
    return os.path.join(folder, "data", config, split)


def shard_path(folder: str, config: str, split: str, name: str) -> str:
    return os.path.join(folder, "data", config, split, name)


def sft_name(raw_name: str, generation: int) -> str:
    return f"g{generation}-{raw_name}"


def raw_name(sft_file: str) -> str:
    """The raw shard an sft file name (`g<generation>-<raw name>`) was derived from."""
    return sft_file.split("-", 1)[1]


@dataclass
class BuildSpec:
    """How `sft` is derived from `raw`: row style and filters (a `FilterConfig` as a dict); a named build may
    put the rationales of `agent-sft augment --name <reasoning>` in its assistant turns (`dataset.reasoning`)."""

    style: str = "auto"
    filters: dict = field(default_factory=dict)
    reasoning: str | None = None

    def to_dict(self) -> dict:
        out = {"style": self.style, "filters": dict(sorted(self.filters.items()))}
        return out | ({"reasoning": self.reasoning} if self.reasoning else {})


def build_spec(info: dict | None) -> BuildSpec:
    """The folder's sft build spec, from its info (defaults when it has none)."""
    b = (info or {}).get("build") or {}
    return BuildSpec(b.get("style", "auto"), b.get("filters", {}))


def generation(info: dict | None) -> int:
    """The folder's current sft build generation."""
    return int(((info or {}).get("build") or {}).get("generation", 0))


def read_info(folder: str) -> dict | None:
    path = os.path.join(folder, INFO)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as fh:
            info = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: unreadable ({e})") from None
    try:
        check_additions(info.get("schema_additions"))
    except ValueError as e:
        raise SchemaVersionError(f"{folder}: {e}; use the agent-sft version that wrote it") from None
    if info.get("schema_version") != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{folder}: dataset schema version {info.get('schema_version')} but this agent-sft writes and "
            f"reads version {SCHEMA_VERSION}; collect into a new folder or use the matching agent-sft version"
        )
    return info


def additions(info: dict | None) -> tuple[str, ...]:
    """The folder's schema additions (`records.ADDITIONS`; none for a folder written without any)."""
    return check_additions((info or {}).get("schema_additions"))


def check_same_additions(folder: str, info: dict, wanted: tuple[str, ...]) -> None:
    """Refuse to add rows of other schema additions to a folder (its shards would not load together).

    Raises:
        ConfigMismatchError: naming what the folder holds and what the run would write.
    """
    have = additions(info)
    if have != tuple(wanted):
        def say(a: tuple[str, ...]) -> str:
            return ", ".join(a) or "none"

        raise ConfigMismatchError(f"{folder}: its rows have schema additions {say(have)}, this run's {say(tuple(wanted))} "
                                  "(prompt.actions, policy.record_tokens); collect into a new folder")


def require_dataset(folder: str) -> dict:
    """The folder's info, or a clear error when it is not an agent-sft dataset folder."""
    if not os.path.isdir(folder):
        raise NotADatasetError(f"{folder}: " + ("a file, not a dataset folder" if os.path.isfile(folder) else "no such folder"))
    info = read_info(folder)
    if info is None:
        raise NotADatasetError(f"{folder}: not an agent-sft dataset folder (no {INFO})")
    return info


@contextlib.contextmanager
def locked(folder: str) -> Iterator[None]:
    """An exclusive lock on the folder (writers on one machine or a shared POSIX filesystem)."""
    path = os.path.join(folder, LOCK)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _shards(d: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(d) if n.endswith(SHARD_SUFFIX) and not n.startswith("."))
    except FileNotFoundError:
        return []


def shard_names(folder: str) -> dict[tuple[str, str], set[str]]:
    """(config, split) -> names of the shard files there, views' included (no metadata read: a cheap look for
    changes)."""
    try:
        extra = sorted(n for n in os.listdir(os.path.join(folder, "data")) if n not in (*CONFIGS, "judge", "rationale"))
    except FileNotFoundError:
        extra = []
    return {(c, sp): set(_shards(shard_dir(folder, c, sp))) for c in (*CONFIGS, *extra) for sp in SPLITS}


@dataclass
class Scan:
    """What a folder holds. Names are file names within `data/<config>/<split>/`."""

    generation: int
    raw: dict[str, dict[str, dict]] = field(default_factory=dict)  # split -> name -> meta (live)
    sft: dict[str, dict[str, dict]] = field(default_factory=dict)  # split -> raw name -> sft meta (live)
    replaced_raw: dict[str, list[str]] = field(default_factory=dict)  # split -> names to delete, in order
    stale_sft: dict[str, list[str]] = field(default_factory=dict)  # split -> sft file names to delete
    missing_sft: dict[str, list[str]] = field(default_factory=dict)  # split -> raw names lacking sft
    corrupt_raw: dict[str, dict[str, str]] = field(default_factory=dict)  # split -> name -> why unreadable
    corrupt_sft: dict[str, dict[str, str]] = field(default_factory=dict)  # split -> sft file name -> why
    views: dict[str, dict] = field(default_factory=dict)  # the views meta/info.json lists (`views.manifest`)

    def raw_rows(self, split: str | None = None) -> int:
        return sum(m["rows"] for s in ([split] if split else SPLITS) for m in self.raw.get(s, {}).values())

    def sft_rows(self, split: str | None = None) -> int:
        return sum(m["rows"] for s in ([split] if split else SPLITS) for m in self.sft.get(s, {}).values())

    @property
    def complete(self) -> bool:
        return not any(self.missing_sft.values())

    @property
    def has_corrupt_raw(self) -> bool:
        return any(self.corrupt_raw.values())


def raw_shard_rows(s: Scan) -> dict[str, int]:
    """The live raw shards that hold episodes, as `split/name` -> rows (a shard never changes: another name is
    other rows)."""
    return {f"{sp}/{n}": m["rows"] for sp in SPLITS for n, m in sorted(s.raw.get(sp, {}).items()) if m["rows"]}


def live_raw(metas: dict[str, dict]) -> tuple[dict[str, dict], list[str]]:
    """The live shards among `metas` (name -> meta of the shards present) and the rest in deletion order.

    A shard is live unless a present shard `replaces` it, or it names in `after` a shard that is present
    and not replaced (the rewrite it belongs to was not completed). Shards are deleted so that a shard is
    always gone before the shard that replaces it: a deletion cut short never brings a replaced shard back.
    """
    replaced = {r for m in metas.values() for r in m.get("replaces", [])}

    def pending(m: dict) -> bool:
        return any(a in metas and a not in replaced for a in m.get("after", []))

    live = {n: m for n, m in metas.items() if n not in replaced and not pending(m)}
    dead = [n for n in metas if n not in live]
    order, left = [], set(dead)
    while left:
        # a dead shard may go once no other dead shard still present is replaced by it
        ready = sorted(n for n in left if not any(r in left for r in metas[n].get("replaces", [])))
        if not ready:  # a cycle cannot be written by agent-sft; delete the rest in name order
            ready = sorted(left)
        order += ready
        left -= set(ready)
    return live, order


def _views(folder: str) -> dict[str, dict]:
    """The views meta/info.json lists ({} when it cannot be read: a repair writes it again)."""
    try:
        with open(os.path.join(folder, INFO)) as fh:
            return views_mod.manifest(json.load(fh))
    except (OSError, ValueError, AttributeError):
        return {}


def scan(folder: str, generation: int) -> Scan:
    out = Scan(generation, views=_views(folder))
    for split in SPLITS:
        raw_dir = shard_dir(folder, "raw", split)
        metas, bad = {}, {}
        for n in _shards(raw_dir):
            try:
                metas[n] = cached_meta(os.path.join(raw_dir, n))
            except SchemaVersionError:
                raise
            except CorruptShardError as e:
                bad[n] = str(e)
        out.raw[split], out.replaced_raw[split] = live_raw(metas)
        out.corrupt_raw[split] = bad
        live_sft, stale, bad_sft = {}, [], {}
        sft_dir = shard_dir(folder, "sft", split)
        for n in _shards(sft_dir):
            m = _GEN.match(n)
            if m and int(m.group(1)) == generation and m.group(2) in out.raw[split]:
                try:
                    live_sft[m.group(2)] = cached_meta(os.path.join(sft_dir, n))
                except SchemaVersionError:
                    raise
                except CorruptShardError as e:
                    bad_sft[n] = str(e)
            else:
                stale.append(n)
        out.sft[split] = live_sft
        out.stale_sft[split] = stale
        out.corrupt_sft[split] = bad_sft
        out.missing_sft[split] = sorted(set(out.raw[split]) - set(live_sft))
    return out


def open_scan(folder: str, info: dict | None) -> Scan:
    """The scan of a folder at its current build generation."""
    return scan(folder, generation(info))


def episode_ids(folder: str, shards: list[tuple[str, str]]) -> tuple[set[str], dict[str, tuple[str, str]]]:
    """For raw shards given as (split, name): ids of episodes that did not end in an error, and error
    episode id -> (split, shard name)."""
    done: set[str] = set()
    errors: dict[str, tuple[str, str]] = {}
    for split, name in shards:
        path = shard_path(folder, "raw", split, name)
        try:
            t = pads.dataset([path], format="ipc").to_table(columns=["episode_id", "end_reason"])
        except (pa.ArrowInvalid, OSError) as e:
            raise CorruptShardError(f"{path}: cannot read episode ids ({e}); run `agent-sft repair {folder}`") from None
        for eid, reason in zip(t.column("episode_id").to_pylist(), t.column("end_reason").to_pylist()):
            if reason == END_ERROR:
                errors[eid] = (split, name)
            else:
                done.add(eid)
    return done, errors


def listing(folder: str, s: Scan) -> dict[str, dict[str, list[str]]]:
    """config -> split -> data file paths (relative to the folder) holding at least one row."""
    out: dict[str, dict[str, list[str]]] = {c: {} for c in CONFIGS}
    for split in SPLITS:
        raw = [f"data/raw/{split}/{n}" for n, m in sorted(s.raw[split].items()) if m["rows"]]
        sft = [f"data/sft/{split}/{sft_name(n, s.generation)}" for n, m in sorted(s.sft[split].items()) if m["rows"]]
        if raw:
            out["raw"][split] = raw
        if sft:
            out["sft"][split] = sft
    present = {name: {sp: [p for p in ps if os.path.isfile(os.path.join(folder, p))] for sp, ps in by_split.items()}
               for name, by_split in views_mod.listed_files(s.views).items()}
    out.update({name: {sp: ps for sp, ps in by_split.items() if ps} for name, by_split in present.items()
                if any(by_split.values())})
    return out


def configs_front_matter(files: dict[str, dict[str, list[str]]]) -> list[dict]:
    """The README `configs:` entries (sft first and default, then named builds, dpo, scores and raw; empty
    splits and configs left out)."""
    out = []
    named = sorted(c for c in files if c not in ("sft", "raw", views_mod.DPO, views_mod.SCORES))
    for config in ("sft", *named, views_mod.DPO, views_mod.SCORES, "raw"):
        if not files.get(config):
            continue
        entry: dict[str, Any] = {"config_name": config}
        if config == "sft":
            entry["default"] = True
        entry["data_files"] = [{"split": sp, "path": files[config][sp]} for sp in SPLITS if sp in files[config]]
        out.append(entry)
    return out


def check_out_folder(out: str, what: str = "export folder") -> None:
    """Refuse a folder to write that cannot be one: `out`, or the nearest path above it that exists, is a file.

    Raises:
        ConfigError: naming `what` and the file.
    """
    path = os.path.abspath(out)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        where = "is a file" if path == os.path.abspath(out) else f"is inside the file {path}"
        raise ConfigError(f"{what} {out} {where}: name a new folder, or an existing one")


def recover_info(folder: str, write: bool = True) -> dict | None:
    """Rebuild meta/info.json from the identity the raw shards carry (None when there are no shards).

    Call under the lock when `write`. The fingerprint comes back as published (no local paths) with a hash of the
    whole, so a later run with another configuration is still refused.
    """
    newest, gens = None, set()
    for split in SPLITS:
        d = shard_dir(folder, "raw", split)
        for n in _shards(d):
            try:
                m = cached_meta(os.path.join(d, n))
            except CorruptShardError:
                continue
            if m.get("identity") and (newest is None or n > newest[0]):
                newest = (n, m["identity"])
        for n in _shards(shard_dir(folder, "sft", split)):
            g = _GEN.match(n)
            if g:
                gens.add(int(g.group(1)))
    if newest is None:
        return None
    name, ident = newest
    build = ident.get("build") or {"style": "auto", "filters": {}}
    adds = _additions_of_shards(folder)
    info = {
        "schema_version": SCHEMA_VERSION,
        "created_at": None,
        "fingerprint": ident.get("fingerprint", {}),
        "fingerprint_sha256": ident.get("fingerprint_sha256"),
        "config": ident.get("config", {}),
        "build": {**build, "generation": max(gens, default=0)},
        "versions": {},
        "writers": [],
        "recovered_from": name,
        "views": views_mod.recover(folder),
        **({"schema_additions": list(adds)} if adds else {}),
    }
    if write:
        write_json_atomic(os.path.join(folder, INFO), info)
    return info


def _additions_of_shards(folder: str) -> tuple[str, ...]:
    """The schema additions the folder's raw shards carry (those of the first readable one)."""
    for split in SPLITS:
        d = shard_dir(folder, "raw", split)
        for n in _shards(d):
            with contextlib.suppress(CorruptShardError):
                return check_additions(cached_meta(os.path.join(d, n)).get("additions"))
    return ()


def remove_dead_tmp(folder: str) -> int:
    """Delete temporary files left by writer processes that no longer run."""
    n = 0
    for root, _, names in os.walk(folder):
        for name in names:
            if not name.startswith(TMP_PREFIX):
                continue
            pid = name[len(TMP_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and _alive(int(pid)):
                continue
            with contextlib.suppress(OSError):
                os.remove(os.path.join(root, name))
                n += 1
    return n


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
