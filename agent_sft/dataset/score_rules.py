"""Rules over the episodes' quality scores (`scores`), a stage of `stages` after dedup and before the selection:

- `filters.scores`: rules `<score> <op> <number>`, `op` one of `<`, `<=`, `>`, `>=`, `==`, for example
  `invalid_rate<=0.2`, `length_ratio<=1.5` or `judge.rubric>=0.6`; an episode is kept when it meets every rule (an
  episode without the score, such as a length ratio with no reference or a judge that did not score it, does not).
- `filters.select=best` keeps a task's episodes best first by `filters.select_by` (higher or lower is better as
  the score says), then by sample index.

No expression is evaluated: a rule is a score name, an operator and a number, checked when the build is made
(an unknown score name is refused with the nearest names; a number outside the score's range is refused).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from agent_sft.errors import ConfigError

SCORE = "score"  # the drop reason

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "<": operator.lt, ">": operator.gt,
}

_RULE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(<=|>=|==|<|>)\s*(\S+)\s*$")


def parse(rule: str) -> tuple[str, str, float]:
    """`"invalid_rate<=0.2"` -> ("invalid_rate", "<=", 0.2), checked against the score's name and range.

    Raises:
        ConfigError: not of the form `<score> <op> <number>`, an unknown score (with the nearest names), or a
            number outside the score's range.
    """
    from agent_sft.dataset import scores

    m = _RULE.match(str(rule))
    if not m:
        raise ConfigError(f"filters.scores: {rule!r} is not a rule `<score> <op> <number>` with op one of "
                          f"{', '.join(sorted(OPS, key=len))} (for example invalid_rate<=0.2)")
    name, op, text = m.groups()
    scores.check_score_name(name, "filters.scores")
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"filters.scores: {rule!r}: {text!r} is not a number") from None
    return name, op, scores.check_threshold(name, value, "filters.scores")


def rules(spec: dict[str, Any]) -> list[tuple[str, str, float]]:
    """The build's score rules, checked."""
    value = spec.get("scores") or []
    return [parse(r) for r in ([value] if isinstance(value, str) else value)]


def check(spec: dict[str, Any]) -> None:
    """Refuse a build whose score rules or `select=best` cannot work (before anything is read)."""
    from agent_sft.dataset import scores

    rules(spec)
    by = spec.get("select_by")
    if (spec.get("select") or "all") == "best" and not by:
        raise ConfigError("filters.select=best needs filters.select_by: the score to rank a task's episodes by "
                          f"(one of {', '.join(scores.SCORES)} or judge.<name>)")
    if by:
        scores.check_score_name(by, "filters.select_by")


def check_judges(spec: dict[str, Any], judges: list[str]) -> None:
    """Refuse a rule on a judge that has not scored the folder (`judges`: the names that have), with the nearest.

    Raises:
        ConfigError: naming the judge, the nearest name and the judges there are.
    """
    import difflib

    from agent_sft.dataset import scores

    for name in sorted(needed(spec)):
        judge = name.removeprefix(scores.JUDGE_PREFIX)
        if name.startswith(scores.JUDGE_PREFIX) and judge not in judges:
            near = difflib.get_close_matches(judge, judges, n=1)
            hint = f"; did you mean '{scores.JUDGE_PREFIX}{near[0]}'?" if near else ""
            raise ConfigError(f"filters: no judge named {judge!r} has scored this folder{hint} (judges here: "
                              f"{', '.join(judges) or 'none'}; `agent-sft judge DIR --name {judge}` scores it)")


def needed(spec: dict[str, Any]) -> set[str]:
    """The score names the build reads (empty when it uses no score)."""
    out = {name for name, _, _ in rules(spec)}
    if (spec.get("select") or "all") == "best" and spec.get("select_by"):
        out.add(spec["select_by"])
    return out


def drops(candidates: list[Any], spec: dict[str, Any]) -> dict[str, str]:
    """Of `candidates` (`stages.Ep` with their `scores`), those that fail a rule: episode id -> `score`."""
    wanted = rules(spec)
    if not wanted:
        return {}
    out = {}
    for e in candidates:
        for name, op, value in wanted:
            v = (e.scores or {}).get(name)
            if v is None or not OPS[op](v, value):
                out[e.episode_id] = SCORE
                break
    return out


def best_first(eps: list[Any], name: str) -> list[Any]:
    """A task's episodes best first by score `name` (those without it last), then by sample index."""
    from agent_sft.dataset import scores

    sign = -1.0 if scores.check_score_name(name).better == "higher" else 1.0

    def key(e: Any) -> tuple:
        v = (e.scores or {}).get(name)
        return (v is None, sign * v if v is not None else 0.0, e.order)

    return sorted(eps, key=key)
