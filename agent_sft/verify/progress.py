"""A verify pass's progress, kept so that a killed or stopped pass resumes without replaying what it finished.

`meta/verify.partial.jsonl`: a first line naming the file's format, then one line per replayed episode (its
`Outcome` and `content`, the key of the raw row it replayed: `source.content_key`), each written whole, flushed
and synced before the next. A pass reads back every outcome (a line cut short by a kill is left out) and reuses
one only for a row of the same episode id and content: a row rewritten since (a replacing shard) is replayed
again, while shards added since (a resumed collection) or rows moved by a compaction leave the others' outcomes
standing. The pass that completes writes meta/verify.json and removes this file.
"""

from __future__ import annotations

import json
import os
import threading

from agent_sft.dataset import atomic
from agent_sft.verify.replay import ERROR, Outcome

PARTIAL = "meta/verify.partial.jsonl"
FORMAT = "per-episode"


class Progress:
    """The outcomes replayed so far in `folder`; `done` holds those read back, by episode id, each with the
    content key of the row it was replayed from.

    An outcome that is an env error is not read back: its episode is replayed again.
    """

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, PARTIAL)
        self.done: dict[str, tuple[str, Outcome]] = self._read()
        if not self.done:
            atomic.write_text_atomic(self.path, json.dumps({"progress": FORMAT}) + "\n")
        self._lock = threading.Lock()
        self._fh = open(self.path, "a", encoding="utf-8")
        if self._fh.tell() and not self._ends_a_line():
            self._fh.write("\n")  # after a line a kill cut short, which stays unread

    def _read(self) -> dict[str, tuple[str, Outcome]]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        except (OSError, UnicodeDecodeError):
            return {}
        out = {}
        for line in lines[1:]:
            try:
                d = json.loads(line)
                content = d.pop("content")
                o = Outcome(**d)
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # the line a kill cut short, or a line without its row's key
            if o.status != ERROR:
                out[o.episode_id] = (content, o)
        return out

    def _ends_a_line(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def reusable(self, episode_id: str, content: str) -> Outcome | None:
        """The outcome read back for this episode when it was replayed from a row of the same `content`."""
        found = self.done.get(episode_id)
        return found[1] if found is not None and found[0] == content else None

    def add(self, outcome: Outcome, content: str) -> None:
        """Record one replayed episode, from a row of key `content`, durably (several threads may add at once)."""
        line = json.dumps({**outcome.to_dict(), "content": content}, default=str) + "\n"
        with self._lock:
            if self._fh.closed:  # a pass being stopped: what its envs answer now is not kept
                return
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self, completed: bool) -> None:
        """Close the file; remove it when the pass `completed` (its outcomes are in meta/verify.json)."""
        with self._lock:
            self._fh.close()
        if completed:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
