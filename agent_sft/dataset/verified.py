"""The card's line on replay verification: what the folder's last `agent-sft verify` found (meta/verify.json),
and whether the folder's live raw shards changed since."""

from __future__ import annotations

import json
import os
import time

from agent_sft.dataset import layout

VERIFIED = "meta/verify.json"  # written by `agent-sft verify`


def read_verified(folder: str) -> dict | None:
    """What the folder's last `agent-sft verify` found (meta/verify.json), None when it was never verified; with
    `changed_since`, what the folder's live raw shards gained and lost since (`layout.raw_shard_rows`)."""
    try:
        with open(os.path.join(folder, VERIFIED)) as fh:
            out = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(out, dict):
        return None
    then = out.get("shards")
    if isinstance(then, dict):
        now = layout.raw_shard_rows(layout.open_scan(folder, layout.read_info(folder)))
        out["changed_since"] = {"rewritten_shards": sum(1 for k in then if k not in now),
                                "new_shards": sum(1 for k in now if k not in then),
                                "episodes_then": sum(then.values()), "episodes_now": sum(now.values())}
    return out


def verified_line(v: dict | None) -> str:
    """The card's line on replay verification: how many episodes, when, with which engines, what differed, and
    whether the folder changed since."""
    if not v:
        return ""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(v.get("verified_at") or 0))
    engines = ", ".join(f"{k} {x}" for e in (v.get("versions") or {}).get("engines", {}).values() for k, x in sorted(e.items()))
    what = f"{v.get('matched', 0)} matched, {v.get('mismatched', 0)} mismatched"
    what += f", {v['errors']} failed to replay" if v.get("errors") else ""
    if v.get("not_replayable"):
        why = "; ".join(f"{r} {n}" for r, n in sorted((v.get("not_replayable_reasons") or {}).items()))
        what += f"; {v['not_replayable']} not replayable ({why})"
    return f"**Verified{_since(v.get('changed_since') or {})}:** " + (
        f"{v.get('verified', 0)} of {v.get('episodes', 0)} episodes replayed in their envs "
        f"(`agent-sft verify`, {when}; agent-sft {v.get('agent_sft', '?')}{', ' + engines if engines else ''}): "
        f"{what}. The details are in `meta/verify.json`.")


def _since(c: dict) -> str:
    """What the "Verified" line says of a folder whose live raw shards changed since it was verified."""
    then, now = c.get("episodes_then", 0), c.get("episodes_now", 0)
    if c.get("rewritten_shards"):  # a compaction or an edit: which of the episodes are those replayed is unknown
        more = f"; {now} episodes now, {then} then" if now != then else ""
        return (f" (of an earlier state of the folder: {c['rewritten_shards']} of the shards it replayed were "
                f"rewritten since, compacted or edited{more})")
    if c.get("new_shards"):
        return f" (before the last {now - then} new episodes, which it did not replay)"
    return ""
