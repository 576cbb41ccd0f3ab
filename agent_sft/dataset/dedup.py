"""Duplicate episodes over the whole folder (`filters.dedup`), found among the episodes the build's filters keep.

- `exact`: the same actions, in the same order, on the same task (env and task id) as an episode kept before.
- `near`: also a trajectory whose responses are alike above `filters.dedup_threshold`: the Jaccard similarity of
  the word 3-grams of its assistant responses, estimated by MinHash (datasketch) and found through LSH, with
  any episode kept before, of any task.

"Before" is the order of env, task id and sample index, so a task's first sample is the one kept and two
runs with the same seed drop the same episodes. Episodes are read shard by shard, a record batch at a time;
what stays in memory per episode is its id, its order, a hash of its actions and, for `near`, its MinHash.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from agent_sft.dataset import layout, shards
from agent_sft.dataset.filters import build_filters, keeps_episode
from agent_sft.records import SPLITS

DUPLICATE = "duplicate"  # the drop reasons, as the drop counters name them
NEAR_DUPLICATE = "near_duplicate"
NUM_PERM = 128  # MinHash permutations: a Jaccard estimate within about 0.09 (one standard error) of the truth
MINHASH_SEED = 1  # fixed, so the same folder gives the same drops
_WORDS = re.compile(r"\w+")


def mode(spec: dict[str, Any]) -> str:
    """The build's `filters.dedup`: `off`, `exact` or `near`."""
    return str(spec.get("dedup") or "off")


def action_key(row: dict) -> str:
    """What makes two episodes exact duplicates: their env, task and actions in order."""
    actions = "\x1e".join(s.get("action") or "" for s in row.get("steps") or [])
    return hashlib.sha256(f"{row['env']}\x1f{row['task_id']}\x1f{actions}".encode()).hexdigest()


def shingles(row: dict) -> set[bytes]:
    """The word 3-grams (lowercased) of an episode's assistant responses; its words when it has fewer than three."""
    words = _WORDS.findall(" ".join(s.get("response") or "" for s in row.get("steps") or []).lower())
    if len(words) < 3:
        return {w.encode() for w in words}
    return {" ".join(words[i:i + 3]).encode() for i in range(len(words) - 2)}


def _minhash(row: dict) -> Any:
    try:
        from datasketch import MinHash
    except ImportError:
        raise ImportError("filters.dedup=near needs datasketch: pip install datasketch") from None
    m = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)
    m.update_batch(sorted(shingles(row)))
    return m


def find(folder: str, s: layout.Scan, spec: dict[str, Any]) -> tuple[dict[str, str], dict[str, Counter]]:
    """The live episodes of scan `s` that `spec` (a build's filters) drops as duplicates.

    Returns:
        episode id -> `duplicate` or `near_duplicate`, and the same counted per env.
    """
    how = mode(spec)
    if how == "off":
        return {}, {}
    filters = build_filters(spec)
    threshold = float(spec.get("dedup_threshold", 0.9))
    seen = []  # (order, episode id, env, action key, minhash)
    for split in SPLITS:
        for name, meta in sorted(s.raw[split].items()):
            if not meta["rows"]:
                continue
            for batch in shards.iter_shard_batches(layout.shard_path(folder, "raw", split, name)):
                for row in batch.to_pylist():
                    if not keeps_episode(row, filters):
                        continue
                    order = (row["env"], row["task_id"], row["sample_index"], row["episode_id"])
                    seen.append((order, row["episode_id"], row["env"], action_key(row),
                                 _minhash(row) if how == "near" else None))
    seen.sort(key=lambda e: e[0])
    return _drops(seen, how, threshold)


def _drops(seen: Iterable[tuple], how: str, threshold: float) -> tuple[dict[str, str], dict[str, Counter]]:
    out: dict[str, str] = {}
    by_env: dict[str, Counter] = {}
    keys: set[str] = set()
    kept: dict[str, Any] = {}  # episode id -> MinHash, of the episodes kept (`near`)
    lsh = None
    if how == "near":
        from datasketch import MinHashLSH

        lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    for _, episode_id, env, key, mh in seen:
        reason = None
        if key in keys:
            reason = DUPLICATE
        elif lsh is not None and any(mh.jaccard(kept[k]) >= threshold for k in lsh.query(mh)):
            reason = NEAR_DUPLICATE
        if reason is not None:
            out[episode_id] = reason
            by_env.setdefault(env, Counter())[reason] += 1
            continue
        keys.add(key)
        if lsh is not None:
            lsh.insert(episode_id, mh)
            kept[episode_id] = mh
    return out, by_env
