"""What `agent-sft verify` replays: the folder's recorded config rebuilt, its envs as lanes, its live raw
episodes read a batch at a time, and which of them can be replayed at all."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Iterator
from typing import Any

import pyarrow.dataset as pads

from agent_sft.config import CollectConfig, ConfigError, EnvConfig
from agent_sft.config.dotted import ALIASES, ignored, set_key
from agent_sft.config.lanes import Lane
from agent_sft.config.load import complete, keys
from agent_sft.dataset import layout
from agent_sft.envs import canonical_name
from agent_sft.envs.registry import UnknownEnvError
from agent_sft.records import END_ERROR, END_UNJUDGED

COLUMNS = ["episode_id", "env", "task_id", "seed", "success", "end_reason", "goal", "steps", "messages", "extra", "error"]
"""The raw columns a replay reads (and `task_hash` where the folder has it)."""
INDEX = ["episode_id", "env", "task_id", "end_reason", "extra"]


def folder_config(info: dict) -> CollectConfig:
    """The config the folder was collected with, rebuilt from meta/info.json as the collection resolved it
    (keys this version no longer knows are left out; environment variables are not read).

    Raises:
        ConfigError: the recorded config no longer loads (naming the key).
    """
    data = dict(info.get("config") or {})
    env = dict(data.get("env") or {})
    mix = env.pop("mix", None) or {}
    cfg = CollectConfig()
    valid = set(keys(CollectConfig))
    pairs = list(_pairs({**data, "env": env}, CollectConfig))
    pairs.sort(key=lambda kv: ALIASES.get(kv[0], kv[0]) != "env.env_name")  # the env decides what env.<x> is
    try:
        for k, v in pairs:
            if not ignored(k, valid):
                set_key(cfg, k, v)
        if mix:
            set_key(cfg, "env.mix", mix)
            # the options recorded for `env.env_name` (its default env, which a mix does not play) are no entry's
            played = {canonical_name(str(e.get("env") or label)) for label, e in cfg.env.mix.items()}
            cfg.env.options = {k: v for k, v in cfg.env.options.items() if k in played}
        complete(cfg)
    except (ConfigError, UnknownEnvError) as err:
        msg = err.args[0] if isinstance(err, KeyError) else err
        raise ConfigError(f"the folder's recorded config does not load in this agent-sft: {msg}") from None
    return cfg


def _pairs(data: dict, cls: type, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of a recorded config: its sections walked down, each env's options kept whole (an
    option may be a mapping)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for k, v in data.items():
        if k in fields and dataclasses.is_dataclass(hints.get(k)) and isinstance(v, dict):
            yield from _pairs(v, hints[k], f"{prefix}{k}.")
        elif k not in fields and cls is EnvConfig and isinstance(v, dict):
            yield from ((f"{prefix}{k}.{opt}", x) for opt, x in v.items())
        else:
            yield f"{prefix}{k}", v


def index(folder: str, s: layout.Scan) -> list[dict]:
    """Every live raw episode's id, env, task id, end reason, extra and shard (`shard`, its path), in the
    folder's order: split by split, shard by shard in name order."""
    out = []
    for path in _live_paths(folder, s):
        rows = pads.dataset([path], format="ipc").to_table(columns=INDEX).to_pylist()
        out += [{**r, "shard": path} for r in rows]
    return out


def iter_rows(folder: str, paths: list[str], task_hash: bool, wanted: set[str]) -> Iterator[dict]:
    """The episodes of `wanted` in the shards at `paths`, with the columns a replay reads, a batch at a time, each
    once. A shard gone meanwhile (a compaction replaced it) makes the folder scanned again for the live shards not
    read yet, where the episodes not read yet now are."""
    import pyarrow.compute as pc

    columns = COLUMNS + (["task_hash"] if task_hash else [])
    left, read, todo = set(wanted), set(), list(paths)
    while todo and left:
        path = todo.pop(0)
        read.add(path)
        try:
            keep = pc.field("episode_id").isin(sorted(left))
            for batch in pads.dataset([path], format="ipc").to_batches(columns=columns, filter=keep, batch_size=64):
                for row in batch.to_pylist():
                    if row["episode_id"] in left:
                        left.discard(row["episode_id"])
                        yield row
        except FileNotFoundError:
            s = layout.open_scan(folder, layout.read_info(folder))
            todo = [p for p in _live_paths(folder, s) if p not in read]


def _live_paths(folder: str, s: layout.Scan) -> list[str]:
    return [layout.shard_path(folder, "raw", *name.split("/", 1)) for name in layout.raw_shard_rows(s)]


def content_key(row: dict) -> str:
    """A key of a raw row as a replay reads it: another for an edited row (a shard replacing it), the same for the
    row moved into another shard (a compaction)."""
    return hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()[:20]


def imported_row(row: dict) -> bool:
    """Whether an episode came from another tool's trajectory (`agent-sft import`): no seed to replay it with."""
    if row["end_reason"] == END_UNJUDGED:
        return True
    try:
        extra = json.loads(row["extra"] or "{}")
    except (TypeError, ValueError):
        return False
    return isinstance(extra, dict) and "atif" in extra


def not_replayable(row: dict, lanes: dict[str, list[Lane]], imported: bool) -> str:
    """Why `row` cannot be replayed ("" when it can): imported, ended by an error, or an env that cannot."""
    if imported or imported_row(row):
        return "imported (no seed or config to replay it with)"
    if row["end_reason"] == END_ERROR:
        return "ended by an error"
    found = lanes.get(row["env"])
    if not found:
        return f"env {row['env']} is not in the folder's config"
    return cannot_replay(found[0])


def cannot_replay(lane: Lane) -> str:
    """Why the episodes of a lane cannot be replayed ("" when they can): its env says so (`EnvCard.replays`,
    or its options' `replays()` for an env that depends on a server)."""
    says: Any = lane.options.replays() if lane.options is not None and hasattr(lane.options, "replays") else None
    if says is None:
        says = "" if lane.spec.card.replays else f"{lane.spec.card.title or lane.spec.name} cannot replay an episode"
    return says or ""
