"""Judge verdicts on disk, kept like `raw`: they cannot be derived again, so they are sealed once and never
rewritten, and nothing in agent-sft deletes them.

```
DIR/data/judge/<name>/{train,validation}/<time_ns>-<pid>-<n>.arrow     rows of JUDGE_SCHEMA
```
A judge run appends shards (one per split per flush, written under the folder lock). An episode may have
several rows under one name: a failed verdict (score null, `error` says why) is retried by the next run,
which appends a new row. An episode's verdict is its latest row with a score, else its latest failed row,
so a failure never hides a score; "judged" means having a score. File names sort in the order they were
written, which is what "latest" means.

Every shard's metadata carries the judge's identity (mode, model, template sha256): one name is one
judge, and a run under an existing name with another identity is refused.
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

CONFIG = "judge"

_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")

IDENTITY = ("mode", "model", "template_sha256")  # what one judge name stands for

_SEQ = itertools.count()


def check_name(name: str) -> str:
    """A judge's name: lower-case letters, digits, `_` and `-` (at most 64).

    Raises:
        ConfigError: naming the rule.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"--name {name!r}: a judge name is 1-64 lower-case letters, digits, `_` or `-` "
                          "(it names the folder data/judge/<name>/)")
    return name


def judge_dir(folder: str, name: str, split: str | None = None) -> str:
    parts = [folder, "data", CONFIG, name] + ([split] if split else [])
    return os.path.join(*parts)


def judge_names(folder: str) -> list[str]:
    """The names of the judges that wrote verdicts into `folder`."""
    try:
        names = os.listdir(os.path.join(folder, "data", CONFIG))
    except FileNotFoundError:
        return []
    return sorted(n for n in names if _NAME.match(n) and os.path.isdir(judge_dir(folder, n)))


def shard_files(folder: str, name: str) -> list[tuple[str, str]]:
    """(split, file name) of a judge's shards, oldest first."""
    out = []
    for split in SPLITS:
        try:
            names = os.listdir(judge_dir(folder, name, split))
        except FileNotFoundError:
            continue
        out += [(split, n) for n in names if n.endswith(SHARD_SUFFIX) and not n.startswith(".")]
    return sorted(out, key=lambda s: (s[1], s[0]))


def judge_files(folder: str) -> list[str]:
    """Paths (relative, `/`-separated) of every judge's shards: for checksums, `info` and `repair`."""
    return [f"data/{CONFIG}/{name}/{split}/{n}" for name in judge_names(folder) for split, n in shard_files(folder, name)]


def read_verdicts(folder: str, name: str, columns: list[str] | None = None,
                  skip_corrupt: bool = False) -> dict[str, dict]:
    """episode id -> its verdict (its latest row with a score, else its latest failed row) under judge `name`.

    Args:
        columns: the columns to read (`episode_id` and `score` are always read).
        skip_corrupt: leave damaged shards out instead of raising.

    Raises:
        CorruptShardError: a shard cannot be read, saying how to repair the folder.
    """
    cols = None if columns is None else list(dict.fromkeys(["episode_id", "score", *columns]))
    out: dict[str, dict] = {}
    for split, n in shard_files(folder, name):
        path = os.path.join(judge_dir(folder, name, split), n)
        try:
            rows = read_shard(path, cols).to_pylist()
        except CorruptShardError as e:
            if skip_corrupt:
                continue
            raise CorruptShardError(f"{e}; run `agent-sft repair {folder}`: it moves the shard aside, and the next "
                                    "judge run scores its episodes again") from None
        for row in rows:
            prev = out.get(row["episode_id"])
            if row["score"] is not None or prev is None or prev["score"] is None:
                out[row["episode_id"]] = row
    return out


def judged_ids(folder: str, name: str) -> set[str]:
    """The episodes judge `name` scored (a failed verdict does not count: the next run retries it)."""
    return {eid for eid, r in read_verdicts(folder, name, ["episode_id"]).items() if r["score"] is not None}


def judge_scores(folder: str) -> dict[str, list[dict]]:
    """episode id -> [{"name", "score"}] of every judge that scored it, by judge name (the `judge` column
    of the `scores` config)."""
    out: dict[str, list[dict]] = {}
    for name in judge_names(folder):
        for eid, row in read_verdicts(folder, name, [], skip_corrupt=True).items():  # repair finds damaged ones
            if row["score"] is not None:
                out.setdefault(eid, []).append({"name": name, "score": row["score"]})
    return out


def identity(folder: str, name: str) -> dict | None:
    """The identity (`IDENTITY` keys) judge `name` recorded in its shards, or None when it has none yet."""
    for split, n in shard_files(folder, name):
        try:
            meta = cached_meta(os.path.join(judge_dir(folder, name, split), n))
        except (CorruptShardError, OSError):
            continue
        return {k: meta.get(k) for k in IDENTITY}
    return None


def check_identity(folder: str, name: str, ident: dict) -> None:
    """Refuse to add verdicts of another judge (mode, model or template) under an existing name.

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
        raise ConfigError(f"judge {name!r} of {folder} was run with another " + ", ".join(diff) +
                          "; another judge is another name: give --name a new one (its scores never overwrite these)")


def write_verdicts(folder: str, name: str, rows: list[dict], ident: dict) -> list[str]:
    """Seal `rows` (JUDGE_SCHEMA dicts with a `split` key too), one shard per split, under the folder lock;
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
            path = os.path.join(judge_dir(folder, name, split), fname)
            write_shard(path, CONFIG, by_split[split], {"judge": name, "split": split, **ident})
            paths.append(path)
    return paths
