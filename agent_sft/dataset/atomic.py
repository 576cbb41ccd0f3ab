"""The folder's small files and full disks: JSON and text files replaced atomically (a temporary file
renamed over the old one), the spare files kept while a writer streams, and the one-line error of a full
disk."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from typing import Any

import pyarrow as pa

from agent_sft.errors import DiskFullError

TMP_PREFIX = ".tmp-"
"""Files being written; a dead process's are removed by `layout.remove_dead_tmp`."""


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
    folder = None if fsync else _spares_folder(path)
    if folder is not None:
        _replace_keeping_spare(path, tmp, text, folder)
        return
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


# folder (absolute) -> how many writers of this process keep spare files there; the spare files made
_SPARE_USERS: dict[str, int] = {}
_SPARE_FILES: dict[str, set[str]] = {}


def keep_spares(folder: str) -> None:
    """While a writer streams into `folder`, the small files it replaces at every flush (README, checksums)
    are replaced through a spare file that keeps the replaced copy's inode and disk space for the next
    write: creating a file and freeing the blocks of the one replaced cost far more than the write (most of
    all on a disk mounted with online discard). `drop_spares` removes the spare files; those of a process
    that died are temporary files like any other (`layout.remove_dead_tmp`)."""
    folder = os.path.abspath(folder)
    _SPARE_USERS[folder] = _SPARE_USERS.get(folder, 0) + 1


def drop_spares(folder: str) -> None:
    folder = os.path.abspath(folder)
    n = _SPARE_USERS.get(folder, 0) - 1
    if n > 0:
        _SPARE_USERS[folder] = n
        return
    _SPARE_USERS.pop(folder, None)
    for p in _SPARE_FILES.pop(folder, ()):
        with contextlib.suppress(OSError):
            os.remove(p)


def _spares_folder(path: str) -> str | None:
    if not _SPARE_USERS:
        return None
    path = os.path.abspath(path)
    return next((f for f in _SPARE_USERS if path.startswith(os.path.join(f, ""))), None)


def _replace_keeping_spare(path: str, tmp: str, text: str, folder: str) -> None:
    """Write `text` to `tmp` (the spare: the copy `path` held before the last replace), rename it over
    `path`, and keep the copy replaced as the next spare (a hard link taken before the rename).

    A spare is written only when no other name links to it, so `path` is never written in place: a kill
    at any point leaves `path` whole (old or new) and at worst a temporary file behind."""
    spare = f"{tmp}.old"
    _SPARE_FILES.setdefault(folder, set()).update((tmp, spare))
    data = memoryview(text.encode())
    fd = None
    try:
        try:
            if os.stat(tmp).st_nlink == 1:
                fd = os.open(tmp, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
            else:
                os.remove(tmp)
        except FileNotFoundError:
            pass
        if fd is None:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        done = 0
        while done < len(data):
            done += os.write(fd, data[done:])
        if os.fstat(fd).st_size > len(data):
            os.ftruncate(fd, len(data))
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if is_disk_full(e):
            raise disk_full_error(os.path.dirname(path) or ".", len(data)) from None
        raise
    finally:
        if fd is not None:
            os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.remove(spare)  # left by an earlier call cut short: it may be linked to `path`
    try:
        os.link(path, spare)
        kept = True
    except OSError:  # no `path` yet, or a filesystem without hard links: the old copy goes
        kept = False
    os.replace(tmp, path)
    if kept:
        os.replace(spare, tmp)


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
