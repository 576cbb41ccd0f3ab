"""Filters deciding which raw episodes (and sft rows) reach the `sft` config; every drop is counted.

Episode filters look at a raw row; row filters (token length) at an sft row. The built-in ones are
the fields of `config.FilterConfig`; a user callable is named as `module:function` or `path/to/file.py:function`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent_sft.config import FilterConfig
from agent_sft.dataset.formats import sft_rows
from agent_sft.errors import AgentSFTError
from agent_sft.records import END_ERROR


class FilterError(AgentSFTError, ValueError):
    """A filter could not be built, or raised on a row."""


@dataclass(frozen=True)
class Filter:
    reason: str  # the drop counter's key
    keep: Callable[[dict], bool]
    level: str = "episode"  # "episode" (raw row) or "row" (sft row)


def load_callable(spec: str) -> Callable[[dict], bool]:
    """Import `module:function` or `file.py:function`."""
    if ":" not in spec:
        raise FilterError(f"filters.callable: expected module:function or file.py:function, got {spec!r}")
    target, name = spec.rsplit(":", 1)
    try:
        if target.endswith(".py"):
            path = os.path.abspath(os.path.expanduser(target))
            if not os.path.exists(path):
                raise FilterError(f"filters.callable: file not found: {target}")
            modspec = importlib.util.spec_from_file_location(f"agent_sft_user_filter_{abs(hash(path))}", path)
            module = importlib.util.module_from_spec(modspec)
            modspec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except FilterError:
        raise
    except Exception as e:
        raise FilterError(f"filters.callable: cannot import {target!r}: {type(e).__name__}: {e}") from e
    fn = getattr(module, name, None)
    if not callable(fn):
        raise FilterError(f"filters.callable: {target!r} has no callable {name!r}")
    return fn


def _token_counter(tokenizer: str) -> Callable[[list[dict]], int]:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ImportError("token-length filters need transformers: pip install 'agent-sft[hf]'") from None
    tok = AutoTokenizer.from_pretrained(tokenizer)

    def count(messages: list[dict]) -> int:
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False)
        else:
            text = "".join(m["content"] for m in messages)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    return count


FILTER_NAMES = tuple(f.name for f in dataclasses.fields(FilterConfig))
_DEFAULTS = dataclasses.asdict(FilterConfig())


def active_filters(spec: dict[str, Any]) -> dict[str, Any]:
    """The filters of a spec that differ from their defaults: `{}` and every key at its default mean the
    same, and compare equal this way."""
    return {k: v for k, v in sorted(spec.items()) if k not in _DEFAULTS or v != _DEFAULTS[k]}


def build_filters(spec: dict[str, Any]) -> list[Filter]:
    """Filters from a `FilterConfig` as a dict; keys left out take the field's default.

    Raises:
        FilterError: a key that is not a `FilterConfig` field, or a filter that cannot be built.
    """
    unknown = set(spec) - set(FILTER_NAMES)
    if unknown:
        raise FilterError(f"unknown filter {sorted(unknown)[0]!r}; known: {', '.join(sorted(FILTER_NAMES))}")
    for f in dataclasses.fields(FilterConfig):
        choices = f.metadata.get("choices")
        if choices and f.name in spec and spec[f.name] not in choices:
            near = difflib.get_close_matches(str(spec[f.name]), choices, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise FilterError(f"filters.{f.name}: {spec[f.name]!r} is not one of {', '.join(choices)}{hint}")
    c = FilterConfig(**spec)
    out: list[Filter] = []
    if c.drop_errors:
        out.append(Filter("error", lambda r: r["end_reason"] != END_ERROR))
    if c.require_success:
        out.append(Filter("not_success", lambda r: bool(r["success"])))
    if c.min_final_reward is not None:
        lo = float(c.min_final_reward)
        out.append(Filter("final_reward_below_min", lambda r: r["final_reward"] >= lo))
    if c.valid_only:
        out.append(Filter("invalid_action", lambda r: r["num_invalid"] == 0))
    if c.require_tokens:
        out.append(Filter("tokens_incomplete", lambda r: r.get("tokens_complete") is True))
    if c.min_steps is not None:
        fewest = int(c.min_steps)
        out.append(Filter("too_few_steps", lambda r: r["episode_length"] >= fewest))
    if c.max_steps is not None:
        most = int(c.max_steps)
        out.append(Filter("too_many_steps", lambda r: r["episode_length"] <= most))
    if c.callable:
        fn = load_callable(c.callable)
        out.append(Filter(f"callable:{c.callable.rsplit(':', 1)[1]}", fn))
    if c.max_tokens is not None:
        if not c.tokenizer:
            raise FilterError("filters.max_tokens needs filters.tokenizer")
        count, limit = _token_counter(c.tokenizer), int(c.max_tokens)
        out.append(Filter("too_many_tokens", lambda r: count(r["messages"]) <= limit, level="row"))
    return out


def _check(f: Filter, row: dict) -> bool:
    try:
        return bool(f.keep(row))
    except Exception as e:
        raise FilterError(
            f"filter {f.reason!r} raised on episode {row.get('episode_id')!r}: {type(e).__name__}: {e}"
        ) from e


def keeps_episode(row: dict, filters: list[Filter]) -> bool:
    """Whether every episode-level filter keeps the raw row (a filter that raises is a `FilterError`)."""
    return all(_check(f, row) for f in filters if f.level == "episode")


def yields_rows(row: dict, filters: list[Filter], style: str) -> bool:
    """Whether the raw row passes the episode filters and gives at least one sft row the row filters keep."""
    if not keeps_episode(row, filters):
        return False
    row_filters = [f for f in filters if f.level == "row"]
    return any(all(_check(f, r) for f in row_filters) for r in sft_rows(row, style))


def episode_drop(row: dict, filters: list[Filter]) -> str | None:
    """The reason of the first episode filter that leaves the raw row out, or None when they all keep it."""
    return next((f.reason for f in filters if f.level == "episode" and not _check(f, row)), None)


def derive_sft(raw_rows: list[dict], filters: list[Filter], style: str) -> tuple[list[dict], Counter]:
    """sft rows of the raw rows that pass every filter, and drops counted by reason.

    An episode is counted once, under the first filter that rejects it; rows are counted as rows.
    """
    out: list[dict] = []
    drops: Counter = Counter()
    ep_filters = [f for f in filters if f.level == "episode"]
    row_filters = [f for f in filters if f.level == "row"]
    for row in raw_rows:
        failed = next((f for f in ep_filters if not _check(f, row)), None)
        if failed is not None:
            drops[failed.reason] += 1
            continue
        rows = sft_rows(row, style)
        if not rows:
            drops["no_assistant_turn"] += 1
        for r in rows:
            bad = next((f for f in row_filters if not _check(f, r)), None)
            if bad is not None:
                drops[f"{bad.reason}_rows"] += 1
            else:
                out.append(r)
    return out, drops
