"""Rationales for recorded steps on disk (`agent-sft augment`), kept like `raw`: a model's answers cannot be
derived again, so they are sealed once and never rewritten, and nothing in agent-sft deletes them.

```
DIR/data/rationale/<name>/{train,validation}/<time_ns>-<pid>-<n>.arrow     rows of RATIONALE_SCHEMA
```
An augment run appends shards (one per split per flush, under the folder lock), one row per step it asked
about, keyed by (episode id, step index). A step may have several rows under one name: a failed one (its
request failed; `status` `failed`) is asked again by the next run, which appends a new row. A step's rationale
row is its latest finished row (`ok`, or `left_out` when no answer matched the recorded action), else its
latest failed row; a finished step is never asked again. File names sort in the order they were written.

Every shard's metadata carries the run's identity (model, template sha256, seed): one name is one set of
rationales, and a run under an existing name with another identity is refused.
"""

from __future__ import annotations

import itertools
import os
import re
import time

from agent_sft.dataset import layout
from agent_sft.dataset.shards import SHARD_SUFFIX, cached_meta, read_shard, write_shard
from agent_sft.errors import ConfigError, CorruptShardError
from agent_sft.records import SPLITS

CONFIG = "rationale"

OK = "ok"
LEFT_OUT = "left_out"
FAILED = "failed"
FINISHED = (OK, LEFT_OUT)

IDENTITY = ("model", "template_sha256", "seed")  # what one name stands for

_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")

_SEQ = itertools.count()


def check_name(name: str) -> str:
    """A rationale set's name: lower-case letters, digits, `_` and `-` (at most 64).

    Raises:
        ConfigError: naming the rule.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"--name {name!r}: a rationale name is 1-64 lower-case letters, digits, `_` or `-` "
                          "(it names the folder data/rationale/<name>/)")
    return name


def rationale_dir(folder: str, name: str, split: str | None = None) -> str:
    return os.path.join(folder, "data", CONFIG, name, *([split] if split else []))


def names(folder: str) -> list[str]:
    """The names of the rationale sets written into `folder`."""
    try:
        found = os.listdir(os.path.join(folder, "data", CONFIG))
    except FileNotFoundError:
        return []
    return sorted(n for n in found if _NAME.match(n) and os.path.isdir(rationale_dir(folder, n)))


def shard_files(folder: str, name: str) -> list[tuple[str, str]]:
    """(split, file name) of a rationale set's shards, oldest first."""
    out = []
    for split in SPLITS:
        try:
            found = os.listdir(rationale_dir(folder, name, split))
        except FileNotFoundError:
            continue
        out += [(split, n) for n in found if n.endswith(SHARD_SUFFIX) and not n.startswith(".")]
    return sorted(out, key=lambda s: (s[1], s[0]))


def rationale_files(folder: str) -> list[str]:
    """Paths (relative, `/`-separated) of every rationale shard: for checksums, `info` and `repair`."""
    return [f"data/{CONFIG}/{name}/{split}/{n}" for name in names(folder) for split, n in shard_files(folder, name)]


def read_rationales(folder: str, name: str, columns: list[str] | None = None,
                    skip_corrupt: bool = False) -> dict[tuple[str, int], dict]:
    """(episode id, step) -> its row under `name` (its latest finished row, else its latest failed one).

    Args:
        columns: the columns to read (`episode_id`, `step` and `status` are always read).
        skip_corrupt: leave damaged shards out instead of raising.

    Raises:
        CorruptShardError: a shard cannot be read, saying how to repair the folder.
    """
    cols = None if columns is None else list(dict.fromkeys(["episode_id", "step", "status", *columns]))
    out: dict[tuple[str, int], dict] = {}
    for split, n in shard_files(folder, name):
        path = os.path.join(rationale_dir(folder, name, split), n)
        try:
            rows = read_shard(path, cols).to_pylist()
        except CorruptShardError as e:
            if skip_corrupt:
                continue
            raise CorruptShardError(f"{e}; run `agent-sft repair {folder}`: it moves the shard aside, and the next "
                                    "augment run with that name writes its steps again") from None
        for row in rows:
            key = (row["episode_id"], int(row["step"]))
            prev = out.get(key)
            if row["status"] in FINISHED or prev is None or prev["status"] not in FINISHED:
                out[key] = row
    return out


def finished_steps(folder: str, name: str) -> set[tuple[str, int]]:
    """The (episode id, step) that `name` has a rationale for or left out: a later run does not ask again."""
    return {k for k, r in read_rationales(folder, name, []).items() if r["status"] in FINISHED}


def rationale_texts(folder: str, name: str) -> dict[str, dict[int, str]]:
    """episode id -> {step index: rationale} of the steps `name` wrote a rationale for (what a build uses)."""
    out: dict[str, dict[int, str]] = {}
    for (eid, step), r in read_rationales(folder, name, ["rationale"], skip_corrupt=True).items():  # repair finds them
        if r["status"] == OK and r["rationale"]:
            out.setdefault(eid, {})[step] = r["rationale"]
    return out


def identity(folder: str, name: str) -> dict | None:
    """The identity (`IDENTITY` keys) `name` recorded in its shards, or None when it has none yet."""
    for split, n in shard_files(folder, name):
        try:
            meta = cached_meta(os.path.join(rationale_dir(folder, name, split), n))
        except (CorruptShardError, OSError):
            continue
        return {k: meta.get(k) for k in IDENTITY}
    return None


def check_identity(folder: str, name: str, ident: dict) -> None:
    """Refuse to add rationales of another model, template or seed under an existing name.

    Raises:
        ConfigError: naming what differs.
    """
    before = identity(folder, name)
    if before is None:
        return

    def show(v: object) -> str:
        return repr(v[:12] + "...") if isinstance(v, str) and len(v) == 64 else repr(v)  # a sha256, shortened

    diff = [f"{k} {show(before.get(k))} (now {show(ident.get(k))})" for k in IDENTITY if before.get(k) != ident.get(k)]
    if diff:
        raise ConfigError(f"rationales {name!r} of {folder} were written with another " + ", ".join(diff) +
                          "; other rationales are another name: give --name a new one (these are never overwritten)")


def write_rationales(folder: str, name: str, rows: list[dict], ident: dict) -> list[str]:
    """Seal `rows` (RATIONALE_SCHEMA dicts with a `split` key too), one shard per split, under the folder lock;
    returns the paths written."""
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
            path = os.path.join(rationale_dir(folder, name, split), fname)
            write_shard(path, CONFIG, by_split[split], {"rationale": name, "split": split, **ident})
            paths.append(path)
    return paths
