"""AgentGym's data indices as `env.http.data_indices` writes them (`0-99`, `3,5,8`)."""

from __future__ import annotations

import re


def parse_indices(text: str) -> list[int]:
    """`0-99` (inclusive) or `3,5,8` (or a mix: `0-9,20`) -> the indices, in order, without repeats."""
    out: list[int] = []
    seen: set[int] = set()
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"{text!r}: expected ranges such as 0-99 or a list such as 3,5,8")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"{part!r}: the range ends before it starts")
        for i in range(lo, hi + 1):
            if i not in seen:
                seen.add(i)
                out.append(i)
    if not out:
        raise ValueError(f"{text!r} names no index")
    return out
