"""A verify pass's progress, kept so that a killed pass resumes without replaying what it finished.

`meta/verify.partial.jsonl`: a first line naming the folder's live raw shards (`source.shard_set`), then one
line per replayed episode (its `Outcome`), each written whole, flushed and synced before the next. A pass
reads back the outcomes of a file naming the same shards (a line cut short by a kill is left out) and starts
a new file otherwise; the pass that completes writes meta/verify.json and removes this file.
"""

from __future__ import annotations

import json
import os
import threading

from agent_sft.dataset import atomic
from agent_sft.verify.replay import ERROR, Outcome

PARTIAL = "meta/verify.partial.jsonl"


class Progress:
    """The outcomes replayed so far for the shard set `key` of `folder`; `done` holds those read back.

    An outcome that is an env error is not read back: its episode is replayed again.
    """

    def __init__(self, folder: str, key: str) -> None:
        self.path = os.path.join(folder, PARTIAL)
        self.key = key
        self.done: dict[str, Outcome] = self._read()
        if not self.done:
            atomic.write_text_atomic(self.path, json.dumps({"shards": key}) + "\n")
        self._lock = threading.Lock()
        self._fh = open(self.path, "a", encoding="utf-8")
        if self._fh.tell() and not self._ends_a_line():
            self._fh.write("\n")  # after a line a kill cut short, which stays unread

    def _read(self) -> dict[str, Outcome]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        except (OSError, UnicodeDecodeError):
            return {}
        try:
            if json.loads(lines[0]).get("shards") != self.key:
                return {}
        except (ValueError, AttributeError):
            return {}
        out = {}
        for line in lines[1:]:
            try:
                o = Outcome(**json.loads(line))
            except (ValueError, TypeError):
                continue  # the line a kill cut short
            if o.status != ERROR:
                out[o.episode_id] = o
        return out

    def _ends_a_line(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def add(self, outcome: Outcome) -> None:
        """Record one replayed episode durably (several threads may add at once)."""
        line = json.dumps(outcome.to_dict(), default=str) + "\n"
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
