"""`agent-sft export DIR --format tokens --out OUT`: the recorded token ids and logprobs, laid out for RL trainers.

A folder collected with `policy.record_tokens=true` keeps, per step, the prompt's and the completion's token ids
as the engine saw and produced them. This export writes `train.parquet` and `validation.parquet`, one row per
*sequence*, in the names of verl's agent-loop output (`AgentLoopOutput`):

- `prompt_ids` (list<int32>): the first turn's prompt, as the engine was given it;
- `response_ids` (list<int32>): everything after it: each turn's completion, and between two turns the tokens
  the next prompt adds (the env's observation, the chat template's markers);
- `response_mask` (list<int8>): 1 on the tokens the model sampled (the loss is taken there), 0 on the rest;
- `response_logprobs` (list<float32>): the engine's logprob of each response token (0.0 where the mask is 0);
- `reward_score` (float64): the episode's return; `step_rewards` (list<float32>): each turn's reward, one per
  entry of `steps`;
- `episode_id`, `sequence` (its index in the episode), `steps` (the turns it holds), `env`, `task_id`,
  `task_type`, `split`, `model`, `success`, `end_reason`.

A turn joins the sequence before it when its prompt starts with that sequence's tokens exactly (a growing chat
whose template renders the history as it was sampled): an episode played as one chat is one row. Otherwise
(a windowed prompt, or a template that rewrites earlier turns) the turn starts a new row, so nothing is ever
re-tokenized: `prompt_ids + response_ids` is always what the engine saw and sampled.

A trainer reads a row as one rollout: the sequence `prompt_ids + response_ids`, the policy-gradient loss
masked by `response_mask`, `response_logprobs` as the behaviour policy's logprobs (for an importance ratio or
an off-policy correction), and `reward_score` at the last response token (or `step_rewards` per turn).

Only episodes that the folder's build keeps (those with rows in `sft`) and whose capture is complete
(`tokens_complete`) are written; the others are counted (`incomplete`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from agent_sft.dataset import layout
from agent_sft.errors import ConfigError
from agent_sft.publish.streams import iter_rows, make_out, open_folder
from agent_sft.records import SPLITS

TOKENS_SCHEMA = pa.schema([
    ("episode_id", pa.string()),
    ("sequence", pa.int32()),
    ("steps", pa.list_(pa.int32())),
    ("prompt_ids", pa.list_(pa.int32())),
    ("response_ids", pa.list_(pa.int32())),
    ("response_mask", pa.list_(pa.int8())),
    ("response_logprobs", pa.list_(pa.float32())),
    ("reward_score", pa.float64()),
    ("step_rewards", pa.list_(pa.float32())),
    ("env", pa.string()),
    ("task_id", pa.string()),
    ("task_type", pa.string()),
    ("split", pa.string()),
    ("model", pa.string()),
    ("success", pa.bool_()),
    ("end_reason", pa.string()),
])


def sequences(row: dict) -> list[dict]:
    """The export rows of one raw row whose capture is complete: its turns joined where each prompt extends
    the sequence before it, a new row where it does not."""
    out: list[dict] = []
    seq: dict | None = None
    for s in row["steps"]:
        prompt, completion, lps = s["prompt_token_ids"], s["completion_token_ids"], s["logprobs"]
        whole = seq["prompt_ids"] + seq["response_ids"] if seq is not None else None
        if whole is not None and len(prompt) >= len(whole) and prompt[: len(whole)] == whole:
            added = prompt[len(whole):]
            seq["response_ids"] += added
            seq["response_mask"] += [0] * len(added)
            seq["response_logprobs"] += [0.0] * len(added)
        else:
            seq = {
                "episode_id": row["episode_id"], "sequence": len(out), "steps": [], "prompt_ids": list(prompt),
                "response_ids": [], "response_mask": [], "response_logprobs": [], "reward_score": row["final_reward"],
                "step_rewards": [], "env": row["env"], "task_id": row["task_id"], "task_type": row["task_type"],
                "split": row["split"], "model": (row.get("policy") or {}).get("model", ""),
                "success": row["success"], "end_reason": row["end_reason"],
            }
            out.append(seq)
        seq["steps"].append(s["index"])
        seq["step_rewards"].append(s["reward"])
        seq["response_ids"] += completion
        seq["response_mask"] += [1] * len(completion)
        seq["response_logprobs"] += list(lps)
    return out


def _episodes(folder: str, s: layout.Scan, split: str, kept: set[str], counts: dict[str, int],
              batch_rows: int = 1024) -> Iterator[list[dict]]:
    """The export rows of a split's kept episodes, in batches of about `batch_rows`."""
    batch: list[dict] = []
    for r in iter_rows(folder, s, "raw", split):
        if r["episode_id"] not in kept:
            continue
        if r.get("tokens_complete") is not True:
            counts["incomplete"] += 1
            continue
        counts["episodes"] += 1
        batch += sequences(r)
        if len(batch) >= batch_rows:
            yield batch
            batch = []
    yield batch


def export_tokens(folder: str, out: str) -> dict[str, int]:
    """Write `train.parquet` and `validation.parquet` in the layout above.

    Returns:
        {"train": rows, "validation": rows, "episodes": episodes written, "incomplete": episodes left out}

    Raises:
        ConfigError: the folder was collected without `policy.record_tokens`.
    """
    info = layout.require_dataset(folder)
    if "tokens" not in layout.additions(info):
        raise ConfigError(f"{folder} holds no token ids (it was collected without policy.record_tokens=true); "
                          "collect with policy.record_tokens=true to export tokens")
    s = open_folder(folder)
    make_out(out)
    counts = {"train": 0, "validation": 0, "episodes": 0, "incomplete": 0}
    for split in SPLITS:
        kept = {r["episode_id"] for r in iter_rows(folder, s, "sft", split)}
        path = os.path.join(out, f"{split}.parquet")
        with pq.ParquetWriter(path + ".tmp", TOKENS_SCHEMA) as pw:
            for batch in _episodes(folder, s, split, kept, counts):
                if batch:
                    pw.write_table(pa.Table.from_pylist(batch, schema=TOKENS_SCHEMA))
                    counts[split] += len(batch)
        os.replace(path + ".tmp", path)
    return counts
