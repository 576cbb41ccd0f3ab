"""The episodes a judge reads: the live `raw` rows of a folder, shard by shard, each once."""

from __future__ import annotations

from collections.abc import Iterator

from agent_sft.dataset.live import live_rows

COLUMNS = ["episode_id", "env", "task_id", "task_type", "goal", "split", "sample_index", "steps", "end_reason"]


def live_episodes(folder: str) -> Iterator[dict]:
    """The live raw rows of `folder` (the `COLUMNS` a judge uses), each episode once (`dataset.live.live_rows`)."""
    return live_rows(folder, COLUMNS)
