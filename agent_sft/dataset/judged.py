"""Judge verdicts on disk, kept like `raw` (`dataset.kept`: sealed once, never rewritten or deleted).

```
DIR/data/judge/<name>/{train,validation}/<time_ns>-<pid>-<n>.arrow     rows of JUDGE_SCHEMA
```
A judge run appends shards. An episode may have several rows under one name: a failed verdict (score null,
`error` says why) is retried by the next run, which appends a new row. An episode's verdict is its latest row
with a score, else its latest failed row, so a failure never hides a score; "judged" means having a score.

One name is one judge: its identity is its mode, model and template sha256.
"""

from __future__ import annotations

from agent_sft.dataset.kept import KeptStore
from agent_sft.errors import ConfigError

CONFIG = "judge"

IDENTITY = ("mode", "model", "template_sha256")  # what one judge name stands for

STORE = KeptStore(CONFIG, "judge", IDENTITY, "the next judge run scores its episodes again")

check_name = STORE.check_name
judge_dir = STORE.dir
judge_names = STORE.names
shard_files = STORE.shard_files
judge_files = STORE.files
identity = STORE.identity


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
    for table in STORE.tables(folder, name, cols, skip_corrupt):
        for row in table.to_pylist():
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


def check_identity(folder: str, name: str, ident: dict) -> None:
    """Refuse to add verdicts of another judge (mode, model or template) under an existing name.

    Raises:
        ConfigError: naming what differs.
    """
    diff = STORE.identity_differs(folder, name, ident)
    if diff:
        raise ConfigError(f"judge {name!r} of {folder} was run with another {diff}; another judge is another name: "
                          "give --name a new one (its scores never overwrite these)")


def write_verdicts(folder: str, name: str, rows: list[dict], ident: dict) -> list[str]:
    """Seal `rows` (JUDGE_SCHEMA dicts with a `split` key too), one shard per split, under the folder lock;
    returns the paths written."""
    return STORE.write(folder, name, rows, ident)
