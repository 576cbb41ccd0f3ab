"""Where envs keep files they make from what the package ships (unpacked game sets, generated game files).

`$AGENT_SFT_CACHE`, else `$XDG_CACHE_HOME/agent_sft` (`~/.cache/agent_sft`); a cache that cannot be
written falls back to a folder in the system's temporary directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """$AGENT_SFT_CACHE, else $XDG_CACHE_HOME/agent_sft."""
    if os.environ.get("AGENT_SFT_CACHE"):
        return Path(os.environ["AGENT_SFT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "agent_sft"


def writable_cache(sub: str) -> Path:
    """The cache's folder `sub`, created; the temporary-directory fallback when the cache is not writable."""
    path = cache_dir() / sub
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        return path
    except OSError as e:
        fallback = Path(tempfile.gettempdir()) / f"agent_sft-{os.getuid() if hasattr(os, 'getuid') else 0}" / sub
        logger.info("cache %s is not writable (%s); using %s", path, e, fallback)
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def unpack_once(archive: Path, parent: Path, key: str, prepare: Callable[[Path], None] | None = None) -> Path:
    """`parent/key`, holding `archive` unpacked (and `prepare`d), made once.

    The archive is unpacked in a temporary folder, `prepare(folder)` runs on it, and the folder is renamed
    into place with a `.complete` marker, so concurrent workers never see half of it.
    """
    root = parent / key
    if (root / ".complete").exists():
        return root
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=parent))
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)
        if prepare is not None:
            prepare(tmp)
        (tmp / ".complete").write_text("")
        tmp.chmod(0o755)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / ".complete").exists():
                shutil.rmtree(root, ignore_errors=True)
                os.rename(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
