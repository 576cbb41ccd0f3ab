"""Deriving `sft` shards from `raw` ones with a build spec (style and filters) and what the folder-wide stages drop."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pyarrow as pa

from agent_sft.dataset import layout, score_rules, shards
from agent_sft.dataset.filters import active_filters, build_filters, derive_sft, episode_drop
from agent_sft.dataset.layout import BuildSpec
from agent_sft.records import check_additions
from agent_sft.records import schema as config_schema


class SftDeriver:
    """Turns raw rows into sft rows with a fixed build spec (filters are built once).

    Args:
        build: the style and filters.
        dropped: episodes a folder-wide stage drops (`stages`): episode id -> the reason counted.
    """

    def __init__(self, build: BuildSpec, dropped: Mapping[str, str] | None = None):
        self.build = build
        self.filters = build_filters(build.filters)
        score_rules.check(build.filters)
        self.dropped = dropped or {}

    @classmethod
    def for_folder(cls, folder: str, info: dict | None) -> SftDeriver:
        """The deriver of a folder's current build: its build spec, and what the stages over the whole folder
        dropped at its generation (`stages`), so that an sft shard derived again drops them too."""
        return cls(layout.build_spec(info), stage_drops(folder, layout.generation(info)))

    def dropped_by(self, row: dict) -> str | None:
        """Why the build leaves the raw row out (a stage's reason, else an episode filter's), or None (a row
        filter, such as a token limit, may still leave out some of its rows)."""
        return self.dropped.get(row["episode_id"]) or episode_drop(row, self.filters)

    def derive(self, raw_rows: list[dict]) -> tuple[list[dict], Counter]:
        if not self.dropped:
            return derive_sft(raw_rows, self.filters, self.build.style)
        stage_drops: Counter = Counter()
        kept = []
        for row in raw_rows:
            reason = self.dropped.get(row["episode_id"])
            if reason is None:
                kept.append(row)
            else:
                stage_drops[reason] += 1
        sft, drops = derive_sft(kept, self.filters, self.build.style)
        return sft, drops + stage_drops

    def write_for(self, folder: str, split: str, raw_name: str, generation: int, raw_rows: list[dict] | None = None,
                  additions: tuple[str, ...] | None = None) -> dict:
        """Seal the sft shard of raw shard `raw_name` (read batch by batch when not given); returns its metadata.
        Its schema additions are the raw shard's (`additions`, read from the shard when not given)."""
        path = layout.shard_path(folder, "raw", split, raw_name)
        if additions is None:
            additions = check_additions(shards.cached_meta(path).get("additions"))
        if raw_rows is not None:
            batches = iter([raw_rows])
        else:
            batches = (b.to_pylist() for b in shards.iter_shard_batches(path))
        schema = config_schema("sft", additions)
        tables, drops, episodes = [], Counter(), 0
        for rows in batches:
            sft, d = self.derive(rows)
            drops.update(d)
            episodes += len(rows)
            if sft:
                tables.append(pa.Table.from_pylist(sft, schema=schema))
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        meta = {"split": split, "generation": generation, "source": raw_name, "episodes": episodes, "drops": dict(drops)}
        if additions:
            meta["additions"] = list(additions)
        path = layout.shard_path(folder, "sft", split, layout.sft_name(raw_name, generation))
        n = shards.write_shard(path, "sft", table, meta)
        return {**meta, "rows": n}


def same_build(a: BuildSpec, b: BuildSpec) -> bool:
    """Whether two build specs derive the same sft rows (filters left at their defaults or left out are alike)."""
    return a.style == b.style and active_filters(a.filters) == active_filters(b.filters)


def stage_drops(folder: str, generation: int) -> dict[str, str]:
    """What the build stages dropped at `generation` ({} when they did not run at it, or their record cannot
    be read: `agent-sft build` runs them again)."""
    import json
    import os

    try:
        with open(os.path.join(folder, layout.STAGE_DROPS.format(generation=generation))) as fh:
            data = json.load(fh)
        return dict(data["dropped"]) if data.get("generation") == generation else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def stage_drops_by_env(info: dict | None) -> dict[str, dict[str, int]]:
    """What the build stages over the whole folder dropped at the folder's generation, per env and reason
    ({} when they did not run at it)."""
    stages = (info or {}).get("stages") or {}
    if stages.get("generation") != layout.generation(info):
        return {}
    return {env: d for env, d in sorted((stages.get("drops") or {}).items()) if d}


def stage_drops_by_task_type(info: dict | None) -> dict[str, dict[str, dict[str, int]]]:
    """What the build stages dropped at the folder's generation, per env, task type and reason ({} when they
    did not run at it, or the folder's record predates the count per task type)."""
    stages = (info or {}).get("stages") or {}
    if stages.get("generation") != layout.generation(info):
        return {}
    return {env: {tt: d for tt, d in sorted(types.items()) if d}
            for env, types in sorted((stages.get("by_task_type") or {}).items()) if types}


def stage_drops_text(info: dict | None) -> str:
    """`stage_drops_by_env` as one line: `env reason n, ...; env ...`."""
    return "; ".join(f"{env} " + ", ".join(f"{k} {v}" for k, v in sorted(d.items()))
                     for env, d in stage_drops_by_env(info).items())
