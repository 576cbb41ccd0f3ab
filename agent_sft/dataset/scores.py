"""Quality scores of episodes: the rows of the `scores` config, from raw rows alone (pure functions).

Every score has a `ScoreSpec` in `SCORES`: its range, which way is better, and whether it comes from the
episode alone (`episode`), needs the other episodes of its task (`relative`: `length_ratio`), or is a
judge's verdict (`judge`, addressed as `judge.<name>`, in [0, 1]). `episode_scores(row)` gives a row of
`SCORES_SCHEMA` with the episode scores; `relative(rows)` fills `length_ratio` over a folder's rows. Filters
and selection name a score with `check_score_name` and a bound with `check_threshold`, and read it with
`score_value`.

A rate is a fraction of the episode's steps, None for an episode without steps. How a response is read
is the rollout's own parser (`agent_sft.prompts`): `<think>...</think><action>...</action>`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent_sft.errors import ConfigError
from agent_sft.prompts import parse_action, think_text
from agent_sft.records import END_ERROR

JUDGE_PREFIX = "judge."
_JUDGE_NAME = re.compile(r"[a-z0-9_-]+")


@dataclass(frozen=True)
class ScoreSpec:
    name: str
    help: str
    lo: float  # the score's range, bounds included
    hi: float
    better: str  # "higher" or "lower": which end `best k by a score` keeps
    kind: str  # "episode" (the row alone), "relative" (the task's reference length) or "judge"


_RATE = (0.0, 1.0)
_COUNT = (0.0, math.inf)

SCORES: dict[str, ScoreSpec] = {s.name: s for s in (
    ScoreSpec("invalid_rate", "Steps whose response did not parse or whose action was not allowed (the step's "
              "`valid` is false: a missing, unclosed, repeated or empty <action> tag, a missing <think> tag when "
              "the run required one, or an action the env did not admit), over all steps.", *_RATE, "lower", "episode"),
    ScoreSpec("format_rate", "Steps whose response has the answer format, whatever the env made of the action: "
              "exactly one non-empty <action>...</action> and, unless the run did not require it, a "
              "<think>...</think> block; over all steps.", *_RATE, "higher", "episode"),
    ScoreSpec("repeat_rate", "Steps whose action (as parsed, normalized) was already played earlier in the "
              "episode, over all steps; a step whose response gave no action never counts.", *_RATE, "lower", "episode"),
    ScoreSpec("loop_rate", "Steps that repeat an (observation, action) pair of an earlier step: the agent "
              "does again what it did in the same situation, going round; over all steps.", *_RATE, "lower", "episode"),
    ScoreSpec("reasoning_words", "Words (whitespace-separated) inside the <think>...</think> blocks of a "
              "response, averaged over the steps (a step without a block counts 0).", *_COUNT, "higher", "episode"),
    ScoreSpec("plan_length", "Steps of the env expert's plan at reset (`expert_plan_length` in the episode's "
              "`extra`, recorded where the env has an expert); null when unknown. The task's length, not the "
              "episode's quality.", *_COUNT, "lower", "episode"),
    ScoreSpec("length_ratio", "Steps taken over the task's reference length: the expert's plan length when "
              "known, else the fewest steps of a successful episode of the task in the folder; null when there "
              "is neither, or the episode has no steps. 1 is as short as the reference.", *_COUNT, "lower",
              "relative"),
    ScoreSpec("episode_length", "Steps taken.", *_COUNT, "lower", "episode"),
)}
"""The scores filters and selection can name, besides `judge.<name>`."""

_CALL_FORMAT_FAILURES = ("malformed tool call", "no tool call")  # a tools step's reasons that are about its format

_PER_STEP = ("invalid_rate", "format_rate", "repeat_rate", "loop_rate", "reasoning_words")  # null without steps


def judge_spec(name: str) -> ScoreSpec:
    """The spec of judge `name`'s score (`judge.<name>`)."""
    return ScoreSpec(f"{JUDGE_PREFIX}{name}", f"The verdict of judge {name!r}, normalized to [0, 1].",
                     *_RATE, "higher", "judge")


def check_score_name(name: str, key: str = "score") -> ScoreSpec:
    """The spec of score `name` (one of `SCORES`, or `judge.<name>`).

    Raises:
        ConfigError: an unknown score, with the nearest known name; a judge name outside [a-z0-9_-].
    """
    if not isinstance(name, str):
        raise ConfigError(f"{key}: expected a score name, got {name!r}")
    if name in SCORES:
        return SCORES[name]
    if name.startswith(JUDGE_PREFIX):
        judge = name[len(JUDGE_PREFIX):]
        if not _JUDGE_NAME.fullmatch(judge):
            raise ConfigError(f"{key}: {name!r} names no judge: a judge's name is lowercase letters, digits, _ and -")
        return judge_spec(judge)
    near = difflib.get_close_matches(name, list(SCORES), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise ConfigError(f"{key}: unknown score {name!r}{hint} (known: {', '.join(SCORES)}, judge.<name>)")


def check_threshold(name: str, value: Any, key: str = "score") -> float:
    """`value` as a bound on score `name`, when it lies in the score's range.

    Raises:
        ConfigError: an unknown score (see `check_score_name`), a value that is not a number, or one out of range.
    """
    spec = check_score_name(name, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{key}: a bound on {name} must be a number, got {value!r}")
    if not spec.lo <= value <= spec.hi:
        hi = "inf" if math.isinf(spec.hi) else f"{spec.hi:g}"
        raise ConfigError(f"{key}: {value!r} is out of range for {name}, which lies in [{spec.lo:g}, {hi}]")
    return float(value)


def score_value(score_row: dict, name: str) -> float | None:
    """Score `name` of a `scores` row; None when the episode has none (a judge that has not scored it)."""
    check_score_name(name)
    if name.startswith(JUDGE_PREFIX):
        judge = name[len(JUDGE_PREFIX):]
        return next((j["score"] for j in score_row.get("judge") or [] if j["name"] == judge), None)
    value = score_row.get(name)
    return None if value is None else float(value)


def plan_length(row: dict) -> int | None:
    """The env expert's plan length recorded with the episode (`extra.expert_plan_length`), else None."""
    try:
        n = json.loads(row.get("extra") or "{}").get("expert_plan_length")
    except (ValueError, AttributeError):
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None


def episode_scores(row: dict, require_think: bool = True) -> dict[str, Any]:
    """The `scores` row of a raw row: every episode score, `length_ratio` null and no judge scores.

    Args:
        row: a raw row (`RAW_SCHEMA`).
        require_think: whether the run asked for a <think> block (`prompt.require_think`), for `format_rate`.
    """
    steps = row["steps"] or []
    out: dict[str, Any] = {k: row[k] for k in ("episode_id", "env", "task_id", "task_type", "sample_index", "split",
                                               "success", "end_reason")}
    out["episode_length"] = len(steps)
    out.update(dict.fromkeys(_PER_STEP))
    tools = "tools" in row  # tool-call actions: the format is a readable call, the reasoning beside it
    if steps:
        n = len(steps)
        actions: set[str] = set()
        situations: set[tuple[str, str]] = set()
        repeats = loops = formatted = words = 0
        if tools:
            words = sum(len((m.get("reasoning_content") or "").split()) for m in row["messages"] or []
                        if m["role"] == "assistant")
        for s in steps:
            response, action = s["response"] or "", s["action"] or ""
            if tools:
                formatted += not (s["invalid_reason"] or "").startswith(_CALL_FORMAT_FAILURES)
            else:
                formatted += parse_action(response, None, require_think).valid
                words += len(think_text(response).split())
            if action:
                repeats += action in actions
                loops += (s["observation"], action) in situations
                actions.add(action)
                situations.add((s["observation"], action))
        out.update(invalid_rate=sum(not s["valid"] for s in steps) / n, format_rate=formatted / n,
                   repeat_rate=repeats / n, loop_rate=loops / n, reasoning_words=words / n)
    out["plan_length"] = plan_length(row)
    out["length_ratio"] = None
    out["judge"] = []
    out["dropped_by"] = []
    return out


def _field(x: Any, name: str, default: Any = None) -> Any:
    return x.get(name, default) if isinstance(x, dict) else getattr(x, name, default)


def task_references(rows_or_eps: Iterable[Any]) -> dict[tuple[str, str], int]:
    """(env, task id) -> the fewest steps of a successful episode of the task, for the tasks that have one.

    Takes raw rows, `scores` rows, or records with `env`, `task_id`, `success` and `length` (`stages.Ep`).
    """
    out: dict[tuple[str, str], int] = {}
    for x in rows_or_eps:
        # a row's `error` is the error's text, an `Ep`'s whether it ended in one
        if not _field(x, "success") or _field(x, "end_reason") == END_ERROR or _field(x, "error") is True:
            continue
        n = _field(x, "episode_length", _field(x, "length"))
        key = (_field(x, "env"), _field(x, "task_id"))
        if n is not None and (key not in out or n < out[key]):
            out[key] = int(n)
    return out


def with_relative(score_row: dict, shortest_success: int | None) -> dict[str, Any]:
    """`score_row` with `length_ratio`: its steps over the row's plan length when known, else over
    `shortest_success` (its task's, from `task_references`); null with neither, a reference of 0, or no steps."""
    ref = score_row.get("plan_length")
    if ref is None:
        ref = shortest_success
    n = score_row.get("episode_length") or 0
    return {**score_row, "length_ratio": n / ref if ref and n else None}


def relative(score_rows: list[dict]) -> list[dict]:
    """The `scores` rows of a folder (every live episode) with `length_ratio` filled in."""
    refs = task_references(score_rows)
    return [with_relative(r, refs.get((r["env"], r["task_id"]))) for r in score_rows]
