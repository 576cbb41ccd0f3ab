"""Duplicate episodes over the whole folder (`filters.dedup`), found among the episodes the build's filters keep
(a stage of `stages`).

- `exact`: the same actions, in the same order, on the same task (env and task id) as an episode kept before.
- `near`: also an episode whose responses are alike above `filters.dedup_threshold` to those of an episode of
  the same task kept before: the Jaccard similarity of the word 3-grams of their assistant responses, estimated
  by MinHash (datasketch). Two tasks' episodes are never duplicates of each other, whatever their words.

"Before" is the order of env, task id and sample index, so a task's first sample is the one kept and two
runs with the same seed drop the same episodes. What `stages` keeps in memory per episode for this stage is a
hash of its actions and, for `near`, its MinHash.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

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


def minhash(row: dict) -> Any:
    """The MinHash of an episode's response 3-grams (a compact `LeanMinHash`); None when it has no words."""
    try:
        from datasketch import LeanMinHash, MinHash
    except ImportError:
        raise ImportError("filters.dedup=near needs datasketch: pip install datasketch") from None
    words = shingles(row)
    if not words:
        return None
    m = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)
    m.update_batch(sorted(words))
    return LeanMinHash(m)


def drops(episodes: list[Any], spec: dict[str, Any]) -> dict[str, str]:
    """Of `episodes` (`stages.Ep`, in keeping order, each with its `action_key` and, for `near`, its `minhash`:
    None when it has no words), the ones `spec` drops as duplicates: episode id -> `duplicate` or
    `near_duplicate`."""
    how = mode(spec)
    if how == "off":
        return {}
    threshold = float(spec.get("dedup_threshold", 0.9))
    out: dict[str, str] = {}
    keys: set[str] = set()
    kept: dict[tuple[str, str], list[Any]] = {}  # (env, task id) -> the MinHashes of its episodes kept (`near`)
    for e in episodes:
        task = kept.setdefault((e.env, e.task_id), [])
        if e.action_key in keys:
            out[e.episode_id] = DUPLICATE
        elif how == "near" and e.minhash is not None and any(e.minhash.jaccard(m) >= threshold for m in task):
            out[e.episode_id] = NEAR_DUPLICATE
        else:
            keys.add(e.action_key)
            if e.minhash is not None:
                task.append(e.minhash)
    return out
