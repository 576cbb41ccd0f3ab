"""Rationales for recorded steps on disk (`agent-sft augment`), kept like `raw` (`dataset.kept`: sealed once,
never rewritten or deleted).

```
DIR/data/rationale/<name>/{train,validation}/<time_ns>-<pid>-<n>.arrow     rows of RATIONALE_SCHEMA
```
An augment run appends shards, one row per step it asked about, keyed by (episode id, step index). A step may
have several rows under one name: a failed one (its request failed; `status` `failed`) is asked again by the
next run, which appends a new row. A step's rationale row is its latest finished row (`ok`, or `left_out` when
no answer matched the recorded action), else its latest failed row; a finished step is never asked again.

One name is one set of rationales: its identity is the model, the template sha256 and the seed.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from agent_sft.dataset.kept import KeptStore
from agent_sft.errors import ConfigError

CONFIG = "rationale"

OK = "ok"
LEFT_OUT = "left_out"
FAILED = "failed"
FINISHED = (OK, LEFT_OUT)

IDENTITY = ("model", "template_sha256", "seed")  # what one name stands for

STORE = KeptStore(CONFIG, "rationale", IDENTITY, "the next augment run with that name writes its steps again")

check_name = STORE.check_name
rationale_dir = STORE.dir
names = STORE.names
shard_files = STORE.shard_files
rationale_files = STORE.files
identity = STORE.identity


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
    for table in STORE.tables(folder, name, cols, skip_corrupt):
        for row in table.to_pylist():
            key = (row["episode_id"], int(row["step"]))
            prev = out.get(key)
            if row["status"] in FINISHED or prev is None or prev["status"] not in FINISHED:
                out[key] = row
    return out


def finished_steps(folder: str, name: str) -> set[tuple[str, int]]:
    """The (episode id, step) that `name` has a rationale for or left out: a later run does not ask again.
    Read as two columns of the finished rows, shard by shard."""
    out: set[tuple[str, int]] = set()
    for t in STORE.tables(folder, name, ["episode_id", "step"], where=pc.field("status").isin(FINISHED)):
        out.update(zip(t["episode_id"].to_pylist(), t["step"].to_pylist()))
    return out


class RationaleTexts:
    """The rationales of `name` a build puts in, read for one batch of episodes at a time (`of`): a pass over a
    folder holds the index of which shards hold which episodes, and one batch's texts."""

    def __init__(self, folder: str, name: str) -> None:
        self.index = STORE.index(folder, name)

    def of(self, episode_ids: pa.Array) -> dict[str, dict[int, str]]:
        """episode id -> {step index: rationale} of the steps of `episode_ids` that have one (their latest
        finished row is `ok`)."""
        out: dict[str, dict[int, str | None]] = {}
        for t in self.index.tables(episode_ids, ["episode_id", "step", "status", "rationale"],
                                   pc.field("status").isin(FINISHED)):
            for eid, step, status, text in zip(*(t[c].to_pylist() for c in t.column_names)):
                out.setdefault(eid, {})[step] = text if status == OK else None
        return {eid: texts for eid, steps in out.items() if (texts := {k: v for k, v in steps.items() if v})}


def check_identity(folder: str, name: str, ident: dict) -> None:
    """Refuse to add rationales of another model, template or seed under an existing name.

    Raises:
        ConfigError: naming what differs.
    """
    diff = STORE.identity_differs(folder, name, ident)
    if diff:
        raise ConfigError(f"rationales {name!r} of {folder} were written with another {diff}; other rationales are "
                          "another name: give --name a new one (these are never overwritten)")


def write_rationales(folder: str, name: str, rows: list[dict], ident: dict) -> list[str]:
    """Seal `rows` (RATIONALE_SCHEMA dicts with a `split` key too), one shard per split, under the folder lock;
    returns the paths written."""
    return STORE.write(folder, name, rows, ident)
