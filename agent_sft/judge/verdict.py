"""Reading a score out of a judge's answer, normalised to [0, 1] (higher is better).

The answer may wrap its JSON in prose or a code fence, or think first (`<think>...</think>` is left
aside): the first JSON value of the right shape counts. Pointwise: an object with `score`, else the text
`score: n` (or `score = n`). Listwise: a list of scores (numbers, or objects with `score`), or an object
whose `scores` is one, with one score per attempt. Scores run from 0 to `MAX_SCORE`; an answer with none,
or one out of range, is a failed verdict with the reason, never an exception.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_SCORE = 10

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_SCORE_TEXT = re.compile(r"\bscore\b\W{0,3}\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Verdict:
    score: float | None  # in [0, 1]; None when the answer could not be read
    error: str = ""


def _json_values(text: str) -> Iterator[Any]:
    """Every JSON object or list that starts somewhere in `text`, in order (nested ones too)."""
    for m in re.finditer(r"[\[{]", text):
        try:
            value, _ = _DECODER.raw_decode(text, m.start())
        except ValueError:
            continue
        yield value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _normalised(raw: Any) -> Verdict:
    x = _number(raw)
    if x is None:
        return Verdict(None, f"the score {raw!r} is not a number")
    if not 0 <= x <= MAX_SCORE:
        return Verdict(None, f"the score {raw!r} is outside 0-{MAX_SCORE}")
    return Verdict(x / MAX_SCORE)


def _answer(text: str) -> str:
    return _THINK.sub(" ", text or "")


def read_score(text: str) -> Verdict:
    """The score of a pointwise answer."""
    answer = _answer(text)
    for value in _json_values(answer):
        if isinstance(value, dict) and "score" in value:
            return _normalised(value["score"])
    m = _SCORE_TEXT.search(answer)
    if m:
        return _normalised(m.group(1))
    return Verdict(None, 'no score in the answer (expected JSON {"score": n} or "score: n")'
                   if answer.strip() else "the answer is empty")


def _score_list(value: Any) -> list | None:
    """The list of scores `value` holds: itself, or its `scores`; items may be objects with `score`."""
    if isinstance(value, dict):
        value = value.get("scores")
    if not isinstance(value, list) or not value:
        return None
    items = [v.get("score") if isinstance(v, dict) else v for v in value]
    return items if all(_number(v) is not None for v in items) else None


def read_scores(text: str, n: int) -> list[Verdict]:
    """The `n` scores of a listwise answer, in the order of the attempts (each failed, with the reason,
    when the answer holds no list of `n` scores)."""
    answer = _answer(text)
    found = None
    for value in _json_values(answer):
        scores = _score_list(value)
        if scores is not None and len(scores) == n:
            return [_normalised(v) for v in scores]
        found = found or scores
    if found is not None:
        why = f"expected {n} scores, one per attempt, got {len(found)}"
    else:
        why = f"no list of scores in the answer (expected a JSON list of {n} numbers)" if answer.strip() \
            else "the answer is empty"
    return [Verdict(None, why)] * n
