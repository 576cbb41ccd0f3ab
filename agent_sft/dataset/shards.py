"""Shard files: immutable Arrow IPC files (zstd) carrying agent-sft metadata, written under a temporary
name and renamed into place when complete and synced, with their sha256 computed as they are written.
A `ShardGroup` seals the shards of one flush together (one round of syncs).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from agent_sft.dataset.atomic import TMP_PREFIX, disk_full_error, is_disk_full
from agent_sft.errors import CorruptShardError, SchemaVersionError
from agent_sft.records import SCHEMA_VERSION, check_additions
from agent_sft.records import schema as config_schema

META_KEY = b"agent_sft"

SHARD_SUFFIX = ".arrow"

def _schema_with_meta(config: str, meta: dict) -> pa.Schema:
    """The shard's schema: the config's, with the folder's additions when its metadata names some (`additions`)."""
    meta = {"schema_version": SCHEMA_VERSION, "config": config, **meta}
    if not meta.get("additions"):
        meta.pop("additions", None)  # a folder without additions writes exactly the version-1 metadata
    return config_schema(config, meta.get("additions")).with_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})


_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")

# A small shard (one flush) is compressed faster on the calling thread than spread over Arrow's pool.
_SMALL_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd", use_threads=False)

_SMALL_ROWS = 4096  # rows up to which a shard counts as small

@functools.cache
def _struct(config: str, additions: tuple[str, ...]) -> pa.DataType:
    return pa.struct(list(config_schema(config, additions)))


def rows_table(config: str, rows: list[dict], additions: Any = ()) -> pa.Table:
    """The rows (dicts, keys as in the config's schema with `additions`; missing keys are null) as a table of that
    schema."""
    return pa.Table.from_struct_array(pa.array(rows, type=_struct(config, check_additions(additions))))


class _HashingFile:
    """A binary file that hashes what is written through it (the shard's checksum, at no extra read)."""

    def __init__(self, fh):
        self.fh, self.sha, self.size, self.closed = fh, hashlib.sha256(), 0, False

    def write(self, data) -> int:
        data = memoryview(data)
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True


# absolute path -> {"size", "sha256"} of shards this process sealed, until a README write records them
_SEALED: dict[str, dict] = {}


def _tmp_path(path: str) -> str:
    d, name = os.path.split(path)
    return os.path.join(d, f"{TMP_PREFIX}{os.getpid()}-{name}")


def _folder_of(shard_dir: str) -> str:
    """The dataset folder of a shard directory (`<folder>/data/<config>/<split>`)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(shard_dir)))


def _fsync_dirs(dirs) -> None:
    """Make renames into these directories durable."""
    for d in dict.fromkeys(dirs):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def sealing(path: str, config: str, meta: dict) -> Iterator[pa.ipc.RecordBatchFileWriter]:
    """Write a shard batch by batch under a temporary name; rename it into place only when complete
    (and durable: the file, then its directory entry, are synced).

    Raises:
        DiskFullError: the device is full (the temporary file is removed; nothing else changed).
    """
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            hf = _HashingFile(fh)
            with pa.ipc.new_file(hf, _schema_with_meta(config, meta), options=_OPTIONS) as w:
                yield w
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dirs([d])
    except BaseException as e:
        size = hf.size if "hf" in locals() else 0
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if is_disk_full(e):
            raise disk_full_error(_folder_of(d), size or None) from None
        raise
    _SEALED[os.path.abspath(path)] = {"size": hf.size, "sha256": hf.sha.hexdigest()}


class _Staged:
    """A shard written completely under its temporary name (synced once `fd` is None), not yet renamed."""

    __slots__ = ("path", "tmp", "fd", "size", "sha256")

    def __init__(self, path: str, tmp: str, fd: int | None, size: int, sha256: str):
        self.path, self.tmp, self.fd, self.size, self.sha256 = path, tmp, fd, size, sha256

    def sync(self) -> None:
        if self.fd is not None:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None

    def discard(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        with contextlib.suppress(OSError):
            os.remove(self.tmp)


def _stage(path: str, schema: pa.Schema, table: pa.Table) -> _Staged:
    """Encode a shard in memory and write it under its temporary name in one write (not synced yet)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema, options=_SMALL_OPTIONS if table.num_rows <= _SMALL_ROWS else _OPTIONS) as w:
        if table.num_rows:
            w.write_table(table, max_chunksize=1024)
    data = memoryview(sink.getvalue())
    d = os.path.dirname(path)
    tmp = _tmp_path(path)
    st = _Staged(path, tmp, None, len(data), "")
    try:
        os.makedirs(d, exist_ok=True)
        st.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        done = 0
        while done < len(data):
            done += os.write(st.fd, data[done:])
        st.sha256 = hashlib.sha256(data).hexdigest()
    except BaseException as e:
        st.discard()
        if is_disk_full(e):
            raise disk_full_error(_folder_of(d), len(data)) from None
        raise
    return st


def _commit(staged: list[_Staged], renamed: list[str] | None = None, sync_dirs: bool = True) -> None:
    """Sync every staged file, rename them into place in order, then (with `sync_dirs`) sync their
    directories: each shard appears complete, and once the directories are synced every one of them
    survives a crash of the machine.

    The paths renamed into place are appended to `renamed` as they are. A failure while syncing renames
    nothing, and every temporary file not renamed is removed.
    """
    done = 0
    try:
        for st in staged:
            st.sync()
        for st in staged:
            os.replace(st.tmp, st.path)
            done += 1
            _SEALED[os.path.abspath(st.path)] = {"size": st.size, "sha256": st.sha256}
            if renamed is not None:
                renamed.append(st.path)
        if sync_dirs:
            _fsync_dirs(os.path.dirname(st.path) for st in staged)
    except BaseException as e:
        for st in staged[done:]:
            st.discard()
        if is_disk_full(e):
            raise disk_full_error(_folder_of(os.path.dirname(staged[0].path))) from None
        raise


_GROUP = threading.local()

_WORKER: tuple[int, ThreadPoolExecutor] | None = None

_WORKER_LOCK = threading.Lock()


_SYNC_THREADS = 4  # syncs issued together are committed together by a journaling filesystem


def _worker() -> ThreadPoolExecutor:
    """The threads that sync staged shards and their directories (made when first used)."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None or _WORKER[0] != os.getpid():  # a forked child does not inherit threads
            _WORKER = (os.getpid(), ThreadPoolExecutor(max_workers=_SYNC_THREADS, thread_name_prefix="agent-sft-sync"))
        return _WORKER[1]


class ShardGroup:
    """Shards that `write_shard` writes in this block (in this thread) are sealed together when it ends.

    Each is encoded and written under its temporary name as it comes, and synced by worker threads while
    the block goes on (a sync releases the GIL, so it overlaps the block's next shard, and syncs issued
    together are committed together). When the block ends and all are synced, they are renamed into
    place in the order they were written; the workers then sync their directories while the caller
    writes its listing, and `durable()` waits for that.

    The shards written before an error (in the block, or while staging a shard) are sealed all the same,
    as if each had been sealed on its own, and then the error is raised; the shards after a staging error
    are discarded. `renamed` lists the paths now in place, in order. When sealing itself fails (e.g. a
    full disk), the shards not renamed are removed and that error is raised.
    """

    def __init__(self):
        self.pending: list[tuple[_Staged, Future]] = []
        self.renamed: list[str] = []
        self._dirs: list[Future] = []

    def __enter__(self) -> ShardGroup:
        if getattr(_GROUP, "current", None) is not None:
            raise RuntimeError("shard groups do not nest")
        _GROUP.current = self
        return self

    def stage(self, path: str, schema: pa.Schema, table: pa.Table) -> None:
        st = _stage(path, schema, table)
        self.pending.append((st, _worker().submit(st.sync)))

    def __exit__(self, exc_type, exc, tb) -> None:
        _GROUP.current = None
        pending, self.pending = self.pending, []
        staged: list[_Staged] = []
        error: BaseException | None = None
        for st, synced in pending:
            try:
                synced.result()
            except BaseException as e:
                error = error or e
            if error is None:
                staged.append(st)
            else:
                st.discard()
        if staged:
            _commit(staged, self.renamed, sync_dirs=False)
            # one job: the first directory's sync commits the renames of all on a journaling filesystem
            self._dirs = [_worker().submit(_fsync_dirs, [os.path.dirname(p) for p in self.renamed])]
        if error is not None:
            if is_disk_full(error):
                raise disk_full_error(_folder_of(os.path.dirname(pending[0][0].path))) from None
            raise error

    def is_durable(self) -> bool:
        """Whether the renames of the shards sealed are synced (or their sync failed: see `durable`)."""
        return all(f.done() for f in self._dirs)

    def durable(self) -> None:
        """Wait until the renames of the shards sealed are synced."""
        dirs, self._dirs = self._dirs, []
        error = None
        for fut in dirs:
            try:
                fut.result()
            except BaseException as e:
                error = error or e
        if error is not None:
            if is_disk_full(error):
                raise disk_full_error(_folder_of(os.path.dirname(self.renamed[0]))) from None
            raise error


def write_shard(path: str, config: str, rows: list[dict] | pa.Table, meta: dict) -> int:
    """Seal a shard of `rows`; returns the row count (also stored in the shard's metadata).

    Inside a `ShardGroup` the shard is only staged here, and sealed with the others when the group ends.
    """
    table = rows if isinstance(rows, pa.Table) else rows_table(config, rows, meta.get("additions"))
    sealed = _schema_with_meta(config, {**meta, "rows": table.num_rows})
    group = getattr(_GROUP, "current", None)
    if group is not None:
        group.stage(path, sealed, table)
    else:
        _commit([_stage(path, sealed, table)])
    return table.num_rows


def shard_meta(path: str) -> dict:
    """The agent_sft metadata of a sealed shard (reads the footer only)."""
    try:
        with pa.memory_map(path) as src:
            schema = pa.ipc.open_file(src).schema
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptShardError(f"{path}: not a readable Arrow shard ({e}); it is corrupt or truncated") from None
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise CorruptShardError(f"{path}: an Arrow file without agent_sft metadata; not written by agent-sft")
    meta = json.loads(raw)
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path}: shard schema version {meta.get('schema_version')} but this agent-sft reads version "
            f"{SCHEMA_VERSION}; use the agent-sft version that wrote it, or collect into a new folder"
        )
    try:
        check_additions(meta.get("additions"))
    except ValueError as e:
        raise SchemaVersionError(f"{path}: {e}; use the agent-sft version that wrote it") from None
    return meta


def read_shard(path: str, columns: list[str] | None = None) -> pa.Table:
    try:
        with pa.memory_map(path) as src:
            table = pa.ipc.open_file(src).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptShardError(f"{path}: cannot read shard ({e}); it is corrupt or truncated") from None
    return table.select(columns) if columns else table


def iter_shard_batches(path: str) -> Iterator[pa.RecordBatch]:
    try:
        with pa.memory_map(path) as src:
            reader = pa.ipc.open_file(src)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptShardError(f"{path}: cannot read shard ({e}); it is corrupt or truncated") from None


_META_CACHE: dict[tuple[str, int, int], dict] = {}

_META_CACHE_MAX = 2048  # entries, least recently used first out (those of shards compacted away go first)


def cached_meta(path: str) -> dict:
    st = os.stat(path)
    key = (path, st.st_ino, st.st_size)
    meta = _META_CACHE.pop(key, None)
    if meta is None:
        meta = shard_meta(path)
        while len(_META_CACHE) >= _META_CACHE_MAX:
            del _META_CACHE[next(iter(_META_CACHE))]
    _META_CACHE[key] = meta
    return meta


def file_checksum(path: str) -> dict:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": sha.hexdigest()}


def sealed_under(folder: str) -> dict[str, str]:
    """Relative path -> absolute path of the shards under `folder` this process sealed and whose checksum
    is not recorded yet."""
    prefix = os.path.join(os.path.abspath(folder), "")
    return {p[len(prefix):].replace(os.sep, "/"): p for p in list(_SEALED) if p.startswith(prefix)}


def take_sealed_checksum(path: str) -> dict | None:
    """The checksum of a shard this process sealed, once (the caller records it)."""
    return _SEALED.pop(os.path.abspath(path), None)
