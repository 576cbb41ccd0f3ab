"""Configs built over the whole folder at once: `scores`, `dpo` and named builds (`agent-sft build --name X`).

`sft` is derived shard by shard as the raw shards are sealed; these need every episode (a task's shortest
success, its successes against its failures, a selection per task), so a build writes them whole, at a new
generation of each, beside the old files:
```
DIR/data/<view>/{train,validation}/g<gen>-<part>.arrow
```
and switches to them in one write of meta/info.json, whose `views` lists each view's kind, generation, files,
rows and spec. Files of a view that the manifest does not list are deleted once the README no longer names them
(`garbage`), so a build killed at any instant leaves the previous generation in place. A writer's `finalize`
and `agent-sft build` write them again; between two builds a collection's new episodes are in `raw` and `sft`
only.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

import pyarrow as pa

from agent_sft.dataset import shards
from agent_sft.errors import ConfigError, CorruptShardError
from agent_sft.records import RESERVED_CONFIGS, SCHEMAS, SPLITS
from agent_sft.records import schema as config_schema

BUILD = "build"  # the kinds of view
SCORES = "scores"
DPO = "dpo"

KINDS = (BUILD, SCORES, DPO)

OWN_DIRS = ("raw", "sft", "judge", "rationale")  # data/ folders that are not views

PART_ROWS = 20_000  # rows per file of a view at most (and held before a file is sealed)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

_FILE = re.compile(r"^g(\d+)-")


def schema(kind: str, additions: tuple[str, ...] = ()) -> pa.Schema:
    """The Arrow schema of a view of `kind` in a folder with schema `additions` (a named build has the rows of
    `sft`)."""
    return config_schema("sft", additions) if kind == BUILD else SCHEMAS[kind]


def check_build_name(name: str) -> str:
    """A named build's name: lower-case letters, digits and `_`, not a reserved config name.

    Raises:
        ConfigError: naming the rule.
    """
    if name in RESERVED_CONFIGS:
        raise ConfigError(f"--name {name}: {', '.join(RESERVED_CONFIGS)} are reserved config names; choose another")
    if not _NAME.match(name):
        raise ConfigError(f"--name {name!r}: a build name is a lower-case letter then letters, digits or `_` "
                          "(it becomes a config name and a folder under data/)")
    return name


def manifest(info: dict | None) -> dict[str, dict]:
    """name -> entry (kind, generation, files {split: [file names]}, rows {split: n}, ...) of the folder's views."""
    views = (info or {}).get("views") or {}
    return {n: v for n, v in views.items() if isinstance(v, dict) and v.get("kind") in KINDS}


def listed_files(views: dict[str, dict]) -> dict[str, dict[str, list[str]]]:
    """view -> split -> paths relative to the folder, of the files with rows that `views` names."""
    out: dict[str, dict[str, list[str]]] = {}
    for name, v in views.items():
        files = v.get("files") or {}
        by_split = {sp: [f"data/{name}/{sp}/{f}" for f in files.get(sp, [])] for sp in SPLITS if files.get(sp)}
        if by_split:
            out[name] = by_split
    return out


def garbage(folder: str, views: dict[str, dict]) -> None:
    """Delete view files that `views` does not list (other generations, dropped views, a build cut short).

    Call under the folder lock, after the README was written from the same manifest."""
    data = os.path.join(folder, "data")
    try:
        dirs = sorted(os.listdir(data))
    except FileNotFoundError:
        return
    for name in dirs:
        if name in OWN_DIRS or not os.path.isdir(os.path.join(data, name)):
            continue
        keep = {sp: set((views.get(name) or {}).get("files", {}).get(sp, [])) for sp in SPLITS}
        for sp in SPLITS:
            d = os.path.join(data, name, sp)
            with contextlib.suppress(FileNotFoundError):
                for f in os.listdir(d):
                    if f.endswith(shards.SHARD_SUFFIX) and _FILE.match(f) and f not in keep[sp]:
                        with contextlib.suppress(OSError):
                            os.remove(os.path.join(d, f))


def missing(folder: str, views: dict[str, dict]) -> list[str]:
    """Paths (relative) of files the manifest lists that are not in the folder."""
    return [p for by_split in listed_files(views).values() for ps in by_split.values() for p in ps
            if not os.path.isfile(os.path.join(folder, p))]


class ViewSink:
    """Writes the rows of one view at one generation, split by split, in files of at most `PART_ROWS` rows.

    Args:
        folder: the dataset folder.
        name: the view's config name.
        kind: `build`, `scores` or `dpo`.
        generation: the generation being written (the files are not listed until `entry` goes into info).
    """

    def __init__(self, folder: str, name: str, kind: str, generation: int, additions: tuple[str, ...] = (),
                 **extra: Any) -> None:
        self.folder, self.name, self.kind, self.generation = folder, name, kind, generation
        self.schema = schema(kind, additions)
        self.adds = {"additions": list(additions)} if additions and kind == BUILD else {}
        self.pending: dict[str, list[dict]] = {sp: [] for sp in SPLITS}
        self.files: dict[str, list[str]] = {sp: [] for sp in SPLITS}
        self.rows: dict[str, int] = {sp: 0 for sp in SPLITS}
        self.extra = extra

    def add(self, split: str, rows: list[dict]) -> None:
        self.pending[split].extend(rows)
        if len(self.pending[split]) >= PART_ROWS:
            self._seal(split)

    def _seal(self, split: str) -> None:
        rows, self.pending[split] = self.pending[split], []
        if not rows:
            return
        part = len(self.files[split])
        fname = f"g{self.generation}-{part:05d}{shards.SHARD_SUFFIX}"
        path = os.path.join(self.folder, "data", self.name, split, fname)
        table = pa.Table.from_pylist(rows, schema=self.schema)
        meta = {"split": split, "generation": self.generation, "view": self.name, "kind": self.kind, **self.extra,
                **self.adds}
        self.rows[split] += shards.write_shard(path, self.kind if self.kind != BUILD else "sft", table, meta)
        self.files[split].append(fname)

    def entry(self) -> dict:
        """Seal what is pending; the view's manifest entry."""
        for sp in SPLITS:
            self._seal(sp)
        return {"kind": self.kind, "generation": self.generation, "files": {sp: f for sp, f in self.files.items() if f},
                "rows": dict(self.rows), **self.extra}


def recover(folder: str) -> dict[str, dict]:
    """The views of a folder whose meta/info.json was lost, from the metadata their files carry: each view's kind,
    spec and newest generation, with no files listed (the newest may be a build cut short), so the next build,
    run end or `agent-sft repair` writes them again instead of their specs being lost."""
    out: dict[str, dict] = {}
    data = os.path.join(folder, "data")
    try:
        dirs = sorted(os.listdir(data))
    except FileNotFoundError:
        return {}
    for name in dirs:
        if name in OWN_DIRS:
            continue
        for sp in SPLITS:
            d = os.path.join(data, name, sp)
            with contextlib.suppress(FileNotFoundError):
                for f in sorted(os.listdir(d)):
                    if not (f.endswith(shards.SHARD_SUFFIX) and _FILE.match(f)):
                        continue
                    try:
                        m = shards.cached_meta(os.path.join(d, f))
                    except CorruptShardError:
                        continue
                    if m.get("kind") not in KINDS or int(m.get("generation", 0)) < int(out.get(name, {}).get("generation", 0)):
                        continue
                    entry = {"kind": m["kind"], "generation": int(m["generation"]), "files": {}, "rows": {}}
                    entry.update({k: m[k] for k in ("build", "spec") if k in m})
                    out[name] = entry
    return out


def next_generation(views: dict[str, dict], name: str) -> int:
    return int((views.get(name) or {}).get("generation", 0)) + 1
