"""Preference pairs from the episodes of one task: rows of the `dpo` config (pure functions).

TRL's conversational preference format: `prompt`, `chosen` and `rejected` are lists of messages, and
`DPOTrainer` scores `chosen` and `rejected` each as a continuation of `prompt`. Two kinds of pair:

- `episode` (ETO's): a successful episode against a failed one of the same task, the i-th success by
  sample index with the i-th failure. The prompt is what the two conversations share up to their first
  divergence, cut back to end on a user turn (at least the system message and the first user turn);
  `chosen` and `rejected` are the rest of each conversation: its assistant turns with the env's
  observations between them as user turns, ending on its last assistant turn. A conversation is the
  episode as the `episode` sft style trains it: a windowed run's is its sequence of window prompts and answers.
- `step`: two episodes that take the same actions up to step t and then act differently at t, one
  succeeding and the other not. The prompt is the step-t prompt, the same in both (a pair whose prompts
  differ is left out); `chosen` and `rejected` are the single answer each gave at t.

Episodes that ended in an error are never used; identical pairs are kept once.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from agent_sft.dataset.formats import sft_rows
from agent_sft.records import END_ERROR, prompt_of

PAIR_KINDS = ("episode", "step")


def _one_task(rows: list[dict]) -> list[dict]:
    tasks = {(r["env"], r["task_id"]) for r in rows}
    if len(tasks) > 1:
        raise ValueError(f"pairs come from the episodes of one task, got {len(tasks)} tasks")
    return rows


def _outcomes(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(successes, failures) by sample index; error episodes left out."""
    played = sorted((r for r in _one_task(rows) if r["end_reason"] != END_ERROR),
                    key=lambda r: (r["sample_index"], r["episode_id"]))
    return [r for r in played if r["success"]], [r for r in played if not r["success"]]


def _row(kind: str, prompt: list, chosen: list, rejected: list, win: dict, loss: dict, step: int | None) -> dict:
    return {
        "prompt": prompt, "chosen": chosen, "rejected": rejected, "pair": kind,
        "env": win["env"], "task_id": win["task_id"], "task_type": win["task_type"], "step": step,
        "chosen_episode_id": win["episode_id"], "rejected_episode_id": loss["episode_id"],
        "chosen_reward": float(win["final_reward"]), "rejected_reward": float(loss["final_reward"]),
    }


def _unique(pairs: Iterable[dict], max_pairs: int | None) -> list[dict]:
    out, seen = [], set()
    for p in pairs:
        if max_pairs is not None and len(out) >= max_pairs:
            break
        key = json.dumps([p["prompt"], p["chosen"], p["rejected"]])
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _conversation(row: dict) -> list[dict]:
    """The episode as one conversation, ending on its last assistant turn (the `episode` sft style's)."""
    rows = sft_rows(row, "episode")
    return [{"role": m["role"], "content": m["content"]} for m in rows[0]["messages"]] if rows else []


def _split_point(a: list[dict], b: list[dict]) -> int | None:
    """Where the prompt of two conversations ends: the last index up to their first difference where both
    go on with an assistant turn after a user turn, past the first user turn; None when there is none."""
    shared = 0
    while shared < min(len(a), len(b)) and a[shared] == b[shared]:
        shared += 1
    first_user = next((i for i, m in enumerate(a) if m["role"] == "user"), None)
    if first_user is None:
        return None
    for cut in range(min(shared, len(a) - 1, len(b) - 1), first_user, -1):
        if a[cut - 1]["role"] == "user" and a[cut]["role"] == "assistant" and b[cut]["role"] == "assistant":
            return cut
    return None


def episode_pairs(rows: list[dict], max_pairs: int | None = None) -> list[dict]:
    """ETO's pairs of one task's raw rows: its i-th success against its i-th failure, by sample index.

    A pair whose conversations share no prompt (their first user turns differ) or do not differ is left
    out. `step` is the step whose answer starts the completions (null when it is the first).

    Raises:
        ValueError: rows of more than one task.
    """
    wins, losses = _outcomes(rows)

    def pairs():
        for win, loss in zip(wins, losses):
            a, b = _conversation(win), _conversation(loss)
            cut = _split_point(a, b)
            if cut is None or a[cut:] == b[cut:]:
                continue
            step = sum(m["role"] == "assistant" for m in a[:cut])
            yield _row("episode", a[:cut], a[cut:], b[cut:], win, loss, step or None)

    return _unique(pairs(), max_pairs)


def _act(step: dict) -> str:
    """What a step did: its parsed action, or its response when none parsed (the env got a fallback)."""
    return step["action"] or "\x00" + (step["response"] or "")


def _divergence(a: list[dict], b: list[dict]) -> int | None:
    """The first step at which two episodes act differently, None when one's actions extend the other's."""
    return next((t for t, (x, y) in enumerate(zip(a, b)) if _act(x) != _act(y)), None)


def step_pairs(rows: list[dict], max_pairs: int | None = None) -> list[dict]:
    """Pairs of one answer each to the same prompt: every success against every failure of one task (by
    sample index) that act alike up to step t and differently at t, with the same step-t prompt.

    Raises:
        ValueError: rows of more than one task.
    """
    wins, losses = _outcomes(rows)

    def pairs():
        for win in wins:
            for loss in losses:
                t = _divergence(win["steps"], loss["steps"])
                if t is None:
                    continue
                x, y = win["steps"][t], loss["steps"][t]
                prompt = prompt_of(win["messages"], x["prompt_start"], x["prompt_end"])
                if not x["response"] or not y["response"] \
                        or prompt != prompt_of(loss["messages"], y["prompt_start"], y["prompt_end"]):
                    continue
                prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
                yield _row("step", prompt, [{"role": "assistant", "content": x["response"]}],
                           [{"role": "assistant", "content": y["response"]}], win, loss, t)

    return _unique(pairs(), max_pairs)


def pairs_of(rows: list[dict], kind: str = "episode", max_pairs: int | None = None) -> list[dict]:
    """The `kind` pairs of any raw rows, task by task in (env, task id) order, at most `max_pairs` per task."""
    if kind not in PAIR_KINDS:
        raise ValueError(f"unknown pair kind {kind!r}; use {' or '.join(PAIR_KINDS)}")
    make = episode_pairs if kind == "episode" else step_pairs
    by_task: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        by_task[(r["env"], r["task_id"])].append(r)
    return [p for key in sorted(by_task) for p in make(by_task[key], max_pairs)]


def _field(x: Any, name: str) -> Any:
    return x.get(name) if isinstance(x, dict) else getattr(x, name)


def why_no_pairs(rows_or_eps: Iterable[Any]) -> str | None:
    """One line saying why no task can give a pair (none has both a success and a failure), else None.

    Takes raw rows or records with `env`, `task_id`, `success` and `error` (`stages.Ep`).
    """
    outcomes: dict[tuple[str, str], set[bool]] = defaultdict(set)
    for x in rows_or_eps:
        error = _field(x, "end_reason") == END_ERROR if isinstance(x, dict) else bool(_field(x, "error"))
        if not error:
            outcomes[(_field(x, "env"), _field(x, "task_id"))].add(bool(_field(x, "success")))
    if any(len(seen) == 2 for seen in outcomes.values()):
        return None
    if not outcomes:
        return "no dpo config: the folder has no episode that ended without an error"
    tally = Counter(next(iter(seen)) for seen in outcomes.values())
    return (f"no dpo config: no task has both a successful and a failed episode ({len(outcomes)} tasks: "
            f"{tally[True]} always solved, {tally[False]} never solved)")
