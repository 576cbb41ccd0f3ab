"""Shard files: immutable Arrow IPC files (zstd) carrying agent-sft metadata, written under a temporary
name and renamed into place when complete, with their sha256 computed as they are written.

Also the atomic writes of the folder's small text files, and the one-line error of a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from agent_sft.errors import CorruptShardError, DiskFullError, SchemaVersionError
from agent_sft.records import SCHEMA_VERSION, SCHEMAS

META_KEY = b"agent_sft"

SHARD_SUFFIX = ".arrow"

TMP_PREFIX = ".tmp-"


def disk_full_error(folder: str, needed: int | None = None) -> DiskFullError:
    """The one-line error of a full disk: the folder, the space left there, what to do."""
    where = folder if os.path.isdir(folder) else os.path.dirname(os.path.abspath(folder))
    try:
        free = f"{_mb(shutil.disk_usage(where).free)} free"
    except OSError:
        free = "free space unknown"
    need = f"; about {_mb(needed)} more is needed for the next shard" if needed else ""
    return DiskFullError(f"no space left on the device of {folder} ({free} there){need}; the episodes sealed so far "
                         "are kept: free some space and run the same command again to resume")


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def write_json_atomic(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str), fsync=True)


def write_text_atomic(path: str, text: str) -> None:
    """Replace a small text file atomically (no fsync: it is rewritten often and can be regenerated)."""
    _write_atomic(path, text, fsync=False)


def _write_atomic(path: str, text: str, fsync: bool) -> None:
    tmp = os.path.join(os.path.dirname(path) or ".", f"{TMP_PREFIX}{os.getpid()}-{os.path.basename(path)}")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if is_disk_full(e):
            raise disk_full_error(os.path.dirname(path) or ".", len(text.encode())) from None
        raise
    os.replace(tmp, path)


def _schema_with_meta(config: str, meta: dict) -> pa.Schema:
    meta = {"schema_version": SCHEMA_VERSION, "config": config, **meta}
    return SCHEMAS[config].with_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})


def _write_options() -> pa.ipc.IpcWriteOptions:
    return pa.ipc.IpcWriteOptions(compression="zstd")


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


@contextlib.contextmanager
def sealing(path: str, config: str, meta: dict) -> Iterator[pa.ipc.RecordBatchFileWriter]:
    """Write a shard batch by batch under a temporary name; rename it into place only when complete.

    Raises:
        DiskFullError: the device is full (the temporary file is removed; nothing else changed).
    """
    d, name = os.path.split(path)
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f"{TMP_PREFIX}{os.getpid()}-{name}")
    try:
        with open(tmp, "wb") as fh:
            hf = _HashingFile(fh)
            with pa.ipc.new_file(hf, _schema_with_meta(config, meta), options=_write_options()) as w:
                yield w
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as e:
        size = hf.size if "hf" in locals() else 0
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if is_disk_full(e):
            raise disk_full_error(os.path.dirname(os.path.dirname(os.path.dirname(d))), size or None) from None
        raise
    os.replace(tmp, path)
    _SEALED[os.path.abspath(path)] = {"size": hf.size, "sha256": hf.sha.hexdigest()}


def is_disk_full(e: BaseException | None) -> bool:
    """Whether `e`, or an error it was raised from, is "no space left on device"."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return True
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(e, (OSError, pa.ArrowException)) and "No space left" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def write_shard(path: str, config: str, rows: list[dict] | pa.Table, meta: dict) -> int:
    """Seal a shard of `rows`; returns the row count (also stored in the shard's metadata)."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=SCHEMAS[config])
    with sealing(path, config, {**meta, "rows": table.num_rows}) as w:
        if table.num_rows:
            w.write_table(table, max_chunksize=1024)
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


def cached_meta(path: str) -> dict:
    st = os.stat(path)
    key = (path, st.st_ino, st.st_size)
    if key not in _META_CACHE:
        _META_CACHE[key] = shard_meta(path)
    return _META_CACHE[key]


def file_checksum(path: str) -> dict:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": sha.hexdigest()}


def take_sealed_checksum(path: str) -> dict | None:
    """The checksum of a shard this process sealed, once (the caller records it)."""
    return _SEALED.pop(os.path.abspath(path), None)
