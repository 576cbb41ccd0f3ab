"""Write a dataset folder's viewer: a static folder that a browser opens from disk or from `agent-sft view --serve`.

    OUT/index.html, app.js, style.css   the page (agent_sft/viewer/assets), no remote anything
    OUT/data/meta.js                    the folder's name, counts, the index's fields and score names
    OUT/data/index.js                   one compact record per episode (`episodes.INDEX_FIELDS`)
    OUT/data/chunks/<k>.js              the episodes of chunk k in full, loaded when one of them is opened
    OUT/viewer.json                     what wrote it (an OUT holding it may be written over)

Data files are scripts calling `AgentSFTViewer.<part>(...)`, loaded with <script src>, so the page works from
file:// too, where browsers refuse fetches. Everything streams shard by shard, a few rows at a time: the rows of a
chunk are written as they come, so memory holds a slice of rows, one chunk's index records and the `scores` rows
of a block of episodes (`SCORES_BLOCK`), never the episodes, whatever the folder's size. The folder is written
under a temporary name beside OUT and renamed into place whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from agent_sft.dataset import layout
from agent_sft.errors import ConfigError, CorruptShardError
from agent_sft.records import SPLITS
from agent_sft.viewer import episodes

ASSETS = Path(__file__).parent / "assets"
PAGE_FILES = ("index.html", "app.js", "style.css")
MARKER = "viewer.json"
CHUNK = 200  # episodes per chunk file
SLICE = 64  # rows turned into Python objects at a time
# Raw rows whose `scores` rows are looked up together: each lookup scans the config's ids once, so larger blocks
# mean fewer scans, smaller ones less memory (a compacted raw shard can hold the whole folder).
SCORES_BLOCK = 4096
_SCORE_READ = ("episode_id", *episodes.SCORE_COLUMNS, "judge", "dropped_by")


@dataclass
class Built:
    out: str
    episodes: int
    chunks: int
    bytes: int


def default_out(folder: str) -> str:
    """`<folder>-viewer` beside the folder (never inside it: a dataset folder holds only its own files)."""
    path = os.path.abspath(folder).rstrip(os.sep)
    return os.path.join(os.path.dirname(path), os.path.basename(path) + "-viewer")


def _inside(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_out(folder: str, out: str) -> None:
    """Refuse an OUT that lies inside the dataset folder, holds it, or is a folder (or file) of something else.

    Raises:
        ConfigError: naming OUT and what to do.
    """
    if _inside(out, folder):
        raise ConfigError(f"--out {out} lies inside the dataset folder {folder}, which holds only its own files "
                          "(they are pushed and collected as garbage); choose a place outside it")
    if _inside(folder, out):
        raise ConfigError(f"--out {out} holds the dataset folder {folder}; choose another place")
    if os.path.isfile(out) or os.path.islink(out):
        raise ConfigError(f"--out {out} is a file; choose a folder")
    if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, MARKER)):
        raise ConfigError(f"--out {out} is a folder of other files (no {MARKER}); choose a new or empty folder")


class _Scores:
    """The `scores` config's columns the page shows, read for one raw shard's episodes at a time (none when the
    folder has no `scores` config)."""

    def __init__(self, folder: str, s: layout.Scan):
        view = s.views.get("scores") or {}
        self.paths = {sp: [p for f in (view.get("files") or {}).get(sp, [])
                           if os.path.isfile(p := os.path.join(folder, "data", "scores", sp, f))] for sp in SPLITS}
        self.present = any(self.paths.values())
        judges: set[str] = set()
        for p in (p for paths in self.paths.values() for p in paths):
            for batch in _batches(p, "judge"):
                names = pc.list_flatten(batch.column(0)).field("name")
                judges.update(n for n in pc.unique(names).to_pylist() if n)
        self.names = episodes.score_names(sorted(judges))

    def of(self, split: str, ids: pa.Array) -> dict[str, dict]:
        """Episode id -> its `scores` row, for the episodes `ids` of `split`: the config's files are read a batch
        at a time and only these episodes' rows kept, so memory holds a block's scores whatever the folder's size."""
        found: dict[str, dict] = {}
        for p in self.paths[split]:
            for batch in _batches(p):
                hit = batch.filter(pc.is_in(batch.column("episode_id"), value_set=ids))
                if hit.num_rows:
                    hit = hit.select([c for c in _SCORE_READ if c in hit.schema.names])
                    found.update((row["episode_id"], row) for row in hit.to_pylist())
        return found


def _batches(path: str, column: str | None = None) -> Iterator[pa.RecordBatch]:
    """A shard's record batches (only `column`, when given: none when the shard has no such column), read from the
    file a batch at a time: not memory-mapped, so the pages of a large shard read so far are not held (and counted)
    as the process's memory."""
    try:
        with pa.OSFile(path) as src:
            reader = pa.ipc.open_file(src)
            if column is not None:
                if column not in reader.schema.names:
                    return
                options = pa.ipc.IpcReadOptions(included_fields=[reader.schema.get_field_index(column)])
                reader = pa.ipc.open_file(src, options=options)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptShardError(f"{path}: cannot read shard ({e}); it is corrupt or truncated") from None


def _id_blocks(path: str) -> Iterator[pa.Array]:
    """A shard's episode ids, `SCORES_BLOCK` at a time, read without the other columns."""
    parts: list[pa.Array] = []
    held = 0
    for batch in _batches(path, "episode_id"):
        ids = batch.column(0)
        while len(ids):
            take = ids.slice(0, SCORES_BLOCK - held)
            parts.append(take)
            held += len(take)
            ids = ids.slice(len(take))
            if held == SCORES_BLOCK:
                yield pa.concat_arrays(parts)
                parts, held = [], 0
    if held:
        yield pa.concat_arrays(parts)


def _slices(path: str) -> Iterator[list[dict]]:
    for batch in _batches(path):
        for at in range(0, batch.num_rows, SLICE):
            yield batch.slice(at, SLICE).to_pylist()


def _sft_rows(folder: str, s: layout.Scan, split: str, raw_name: str) -> Iterator[dict]:
    if raw_name not in s.sft.get(split, {}):
        return
    for rows in _slices(layout.shard_path(folder, "sft", split, layout.sft_name(raw_name, s.generation))):
        yield from rows


class _Episodes:
    """Each live raw row of the folder with its `sft` rows and its `scores` row, a slice at a time.

    A raw shard's sft shard holds its rows in the raw shard's order (`derive` writes them row by row), so the
    two are read side by side."""

    def __init__(self, folder: str, s: layout.Scan, scores: _Scores):
        self.folder, self.s, self.scores = folder, s, scores

    def __iter__(self) -> Iterator[list[tuple[dict, list[dict], dict | None]]]:
        for split in SPLITS:
            for name, meta in sorted(self.s.raw.get(split, {}).items()):
                if not meta.get("rows"):
                    continue
                path = layout.shard_path(self.folder, "raw", split, name)
                blocks = _id_blocks(path) if self.scores.present else None
                sft = _sft_rows(self.folder, self.s, split, name)
                pending = next(sft, None)
                at, scores = 0, {}
                for rows in _slices(path):
                    out = []
                    for row in rows:
                        if blocks is not None and at % SCORES_BLOCK == 0:
                            scores = self.scores.of(split, next(blocks))
                        at += 1
                        mine = []
                        while pending is not None and pending["episode_id"] == row["episode_id"]:
                            mine.append(pending)
                            pending = next(sft, None)
                        out.append((row, mine, scores.get(row["episode_id"])))
                    yield out


def _js(call: str, *args: object) -> str:
    body = ",".join(json.dumps(a, ensure_ascii=False, separators=(",", ":"), allow_nan=False) for a in args)
    return f"AgentSFTViewer.{call}({body});\n"


class _Writer:
    """The data files, written as the episodes come: chunk files in turn, the index a chunk at a time."""

    def __init__(self, root: str, chunk: int):
        self.root, self.size = root, chunk
        os.makedirs(os.path.join(root, "data", "chunks"))
        self.index = open(os.path.join(root, "data", "index.js"), "w", encoding="utf-8")
        self.records: list[list] = []
        self.chunk_fh = None
        self.n = 0

    def add(self, record: dict, index: list) -> None:
        k, at = divmod(self.n, self.size)
        if at == 0:
            self._end_chunk()
            self.chunk_fh = open(os.path.join(self.root, "data", "chunks", f"{k}.js"), "w", encoding="utf-8")
            self.chunk_fh.write(f"AgentSFTViewer.chunk({k},[\n")
        else:
            self.chunk_fh.write(",\n")
        self.chunk_fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
        self.records.append(index)
        self.n += 1

    def _end_chunk(self) -> None:
        if self.chunk_fh is None:
            return
        self.chunk_fh.write("]);\n")
        self.chunk_fh.close()
        self.chunk_fh = None
        self.index.write(_js("rows", self.records))
        self.records = []

    def close(self) -> int:
        """Finish the last chunk; returns the number of chunks."""
        self._end_chunk()
        self.index.close()
        return -(-self.n // self.size)


def _meta(folder: str, source: str, info: dict, s: layout.Scan, scores: _Scores, n: int, chunks: int,
          chunk: int) -> dict:
    build = info.get("build") or {}
    return {
        "title": source, "folder": os.path.basename(os.path.abspath(folder).rstrip(os.sep)),
        "written_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "episodes": n, "chunks": chunks, "chunk_size": chunk,
        "fields": list(episodes.INDEX_FIELDS), "score_names": scores.names,
        "has_scores": scores.present, "has_sft": any(s.sft.get(sp) for sp in SPLITS),
        "build": {"style": build.get("style"), "filters": build.get("filters") or {}},
        "views": sorted(s.views),
    }


def write_viewer(folder: str, out: str, *, chunk: int = CHUNK, source: str | None = None) -> Built:
    """Write the viewer of dataset folder `folder` at `out` (replacing a viewer written there before).

    Args:
        folder: an agent-sft dataset folder.
        out: the viewer folder to write; see `check_out` for what is refused.
        chunk: episodes per chunk file.
        source: the name the page shows (default: the folder's path).

    Raises:
        NotADatasetError: `folder` is not a dataset folder.
        ConfigError: a bad `out` or `chunk`.
    """
    if chunk < 1:
        raise ConfigError(f"--chunk {chunk}: give a number of episodes per chunk of at least 1")
    info = layout.require_dataset(folder)
    check_out(folder, out)
    s = layout.open_scan(folder, info)
    out = os.path.abspath(out)
    parent, name = os.path.split(out.rstrip(os.sep))
    tmp, old = os.path.join(parent, f".{name}.partial"), os.path.join(parent, f".{name}.old")
    for leftover in (tmp, old):  # of a write killed before its rename
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        os.makedirs(parent, exist_ok=True)
        os.makedirs(tmp)
    except OSError as e:
        raise ConfigError(f"cannot create the viewer folder {out}: {e.strerror}") from None
    try:
        scores = _Scores(folder, s)
        w = _Writer(tmp, chunk)
        try:
            for part in _Episodes(folder, s, scores):
                for row, sft, score in part:
                    k = w.n // chunk
                    w.add(episodes.episode_record(row, sft, score), episodes.index_record(row, score, scores.names, k))
        finally:
            chunks = w.close()
        meta = _meta(folder, source or folder, info, s, scores, w.n, chunks, chunk)
        with open(os.path.join(tmp, "data", "meta.js"), "w", encoding="utf-8") as fh:
            fh.write(_js("meta", meta))
        for f in PAGE_FILES:
            shutil.copyfile(ASSETS / f, os.path.join(tmp, f))
        with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as fh:
            json.dump({"agent_sft_viewer": 1, "source": source or folder, "episodes": w.n}, fh)
        size = sum(e.stat().st_size for e in _walk(tmp))
        if os.path.isdir(out):
            os.rename(out, old)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isdir(old) and not os.path.exists(out):
            os.rename(old, out)  # the viewer written before stays
        raise
    with contextlib.suppress(OSError):
        shutil.rmtree(old)
    return Built(out, w.n, chunks, size)


def _walk(root: str) -> Iterator[os.DirEntry]:
    for e in os.scandir(root):
        if e.is_dir(follow_symlinks=False):
            yield from _walk(e.path)
        else:
            yield e
