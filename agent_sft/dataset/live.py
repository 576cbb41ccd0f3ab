"""A folder's live `raw` rows read shard by shard, each episode once, while other commands may rewrite it."""

from __future__ import annotations

import os
from collections.abc import Iterator

from agent_sft.dataset import layout
from agent_sft.dataset.shards import iter_shard_batches
from agent_sft.records import SPLITS


def live_rows(folder: str, columns: list[str]) -> Iterator[dict]:
    """The live raw rows of `folder` (`columns`, `episode_id` among them), each episode once.

    Shards are read as the folder lists them; when one is gone (a compaction replaced it meanwhile), the folder is
    scanned again and the shards not read yet are read, so every episode still comes once.
    """
    read: set[tuple[str, str]] = set()
    seen: set[str] = set()
    while True:
        s = layout.open_scan(folder, layout.read_info(folder))
        todo = [(split, n) for split in SPLITS for n in sorted(s.raw[split]) if (split, n) not in read]
        if not todo:
            return
        for split, n in todo:
            path = layout.shard_path(folder, "raw", split, n)
            if not os.path.exists(path):
                break  # scan again
            read.add((split, n))
            for batch in iter_shard_batches(path):
                for row in batch.select(columns).to_pylist():
                    if row["episode_id"] not in seen:
                        seen.add(row["episode_id"])
                        yield row
