"""Stores kept like `raw` (`judge` verdicts, augment's `rationale`s): a model's answers cannot be derived again,
so they are sealed once and never rewritten, and nothing in agent-sft deletes them.

```
DIR/data/<config>/<name>/{train,validation}/<time_ns>-<pid>-<n>.arrow
```
A run appends shards (one per split per flush, under the folder lock); file names sort in the order they were
written, which is what "latest" means to the stores' readers. Every shard's metadata carries the run's identity
(the store's `identity` keys): one name is one set of answers, and a run under an existing name with another
identity is refused. A store is a `KeptStore` of its config name, noun and identity keys; what its rows mean is
its own module's (`judged`, `rationales`).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from agent_sft.dataset import layout
from agent_sft.dataset.shards import SHARD_SUFFIX, cached_meta, write_shard
from agent_sft.errors import ConfigError, CorruptShardError
from agent_sft.records import SPLITS

_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")

_SEQ = itertools.count()


def _read(path: str, columns: list[str] | None, where: pc.Expression | None = None) -> pa.Table:
    """The columns of a shard (only theirs decompressed), its rows matching `where`."""
    try:
        return pads.dataset(path, format="ipc").to_table(columns=columns, filter=where)
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptShardError(f"{path}: cannot read shard ({e}); it is corrupt or truncated") from None


def _short(v: object) -> str:
    return repr(v[:12] + "...") if isinstance(v, str) and len(v) == 64 else repr(v)  # a sha256, shortened


@dataclass(frozen=True)
class KeptStore:
    """One kind of kept store: its folder under data/, what its names are called, and what one name stands for."""

    config: str  # data/<config>/, and the shards' config
    noun: str  # "a <noun> name" in the name rule
    identity_keys: tuple[str, ...]  # the shard metadata one name stands for
    redo: str  # what becomes of a damaged shard's rows once repair moved it aside

    def check_name(self, name: str) -> str:
        """A name: lower-case letters, digits, `_` and `-` (at most 64).

        Raises:
            ConfigError: naming the rule.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"--name {name!r}: a {self.noun} name is 1-64 lower-case letters, digits, `_` or `-` "
                              f"(it names the folder data/{self.config}/<name>/)")
        return name

    def dir(self, folder: str, name: str, split: str | None = None) -> str:
        return os.path.join(folder, "data", self.config, name, *([split] if split else []))

    def names(self, folder: str) -> list[str]:
        """The names written into `folder`."""
        try:
            found = os.listdir(os.path.join(folder, "data", self.config))
        except FileNotFoundError:
            return []
        return sorted(n for n in found if _NAME.match(n) and os.path.isdir(self.dir(folder, n)))

    def shard_files(self, folder: str, name: str) -> list[tuple[str, str]]:
        """(split, file name) of a name's shards, oldest first."""
        out = []
        for split in SPLITS:
            try:
                found = os.listdir(self.dir(folder, name, split))
            except FileNotFoundError:
                continue
            out += [(split, n) for n in found if n.endswith(SHARD_SUFFIX) and not n.startswith(".")]
        return sorted(out, key=lambda s: (s[1], s[0]))

    def files(self, folder: str) -> list[str]:
        """Paths (relative, `/`-separated) of every shard of every name: for checksums, `info` and `repair`."""
        return [f"data/{self.config}/{name}/{split}/{n}" for name in self.names(folder)
                for split, n in self.shard_files(folder, name)]

    def tables(self, folder: str, name: str, columns: list[str] | None = None, skip_corrupt: bool = False,
               where: pc.Expression | None = None) -> Iterator[pa.Table]:
        """Each shard of `name`, oldest first: its `columns` (None: all), its rows matching `where`.

        Raises:
            CorruptShardError: a shard cannot be read (unless `skip_corrupt`), saying how to repair the folder.
        """
        for split, n in self.shard_files(folder, name):
            try:
                yield _read(os.path.join(self.dir(folder, name, split), n), columns, where)
            except CorruptShardError as e:
                if skip_corrupt:
                    continue
                raise CorruptShardError(f"{e}; run `agent-sft repair {folder}`: it moves the shard aside, and "
                                        f"{self.redo}") from None

    def index(self, folder: str, name: str) -> EpisodeIndex:
        """Which shards of `name` hold which episodes (their damaged shards left out: repair finds them)."""
        return EpisodeIndex([os.path.join(self.dir(folder, name, split), n) for split, n in self.shard_files(folder, name)])

    def identity(self, folder: str, name: str) -> dict | None:
        """The identity `name` recorded in its shards, or None when it has none yet."""
        for split, n in self.shard_files(folder, name):
            try:
                meta = cached_meta(os.path.join(self.dir(folder, name, split), n))
            except (CorruptShardError, OSError):
                continue
            return {k: meta.get(k) for k in self.identity_keys}
        return None

    def identity_differs(self, folder: str, name: str, ident: dict) -> str:
        """What differs between `ident` and the identity `name` recorded, as `key 'was' (now 'is')`, comma
        separated; "" when nothing does or the name has no shard yet."""
        before = self.identity(folder, name)
        if before is None:
            return ""
        return ", ".join(f"{k} {_short(before.get(k))} (now {_short(ident.get(k))})"
                         for k in self.identity_keys if before.get(k) != ident.get(k))

    def write(self, folder: str, name: str, rows: list[dict], ident: dict) -> list[str]:
        """Seal `rows` (dicts of the config's schema with a `split` key too), one shard per split, under the
        folder lock; returns the paths written."""
        by_split: dict[str, list[dict]] = {}
        for row in rows:
            row = dict(row)
            by_split.setdefault(row.pop("split"), []).append(row)
        paths = []
        with layout.locked(folder):
            for split in SPLITS:
                if not by_split.get(split):
                    continue
                fname = f"{time.time_ns():020d}-{os.getpid()}-{next(_SEQ):04d}{SHARD_SUFFIX}"
                path = os.path.join(self.dir(folder, name, split), fname)
                write_shard(path, self.config, by_split[split], {self.config: name, "split": split, **ident})
                paths.append(path)
        return paths


class EpisodeIndex:
    """Which shards of a name hold which episodes, read once as two Arrow columns (each shard's episode ids,
    once each, and its position), so that a pass over a folder's episodes reads, for each batch of them, only
    the shards holding those and only their rows: it holds the index and one batch's rows, never the store."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        ids, at = [], []
        for i, path in enumerate(paths):
            try:
                found = pc.unique(_read(path, ["episode_id"])["episode_id"])
            except CorruptShardError:
                continue
            ids.append(found)
            at.append(pa.nulls(len(found), pa.int32()).fill_null(i))
        self.ids = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
        self.at = pa.concat_arrays(at) if at else pa.array([], pa.int32())

    def tables(self, episode_ids: pa.Array, columns: list[str], where: pc.Expression | None = None) -> Iterator[pa.Table]:
        """The rows of `episode_ids` (and matching `where`), `columns` only, shard by shard, oldest first; a shard
        that cannot be read is left out."""
        holding = pc.unique(self.at.filter(pc.is_in(self.ids, value_set=episode_ids))).to_pylist()
        wanted = pc.field("episode_id").isin(episode_ids)
        for i in sorted(holding):
            try:
                yield _read(self.paths[i], columns, wanted if where is None else wanted & where)
            except CorruptShardError:
                continue
