"""When the envs of a run fail for good: env errors in a row, counted per env, and the check of its servers.

An env error (a reset or step that raised, timed out or lost its worker) ends only its episode. Once
`env.max_consecutive_errors` episodes of one env in a row ended in one, every server the env plays on is
asked whether it answers (`EnvOptions.probe_servers`). When one does, the run goes on (a server that died
ends only the episodes it was playing) and the count starts again; when none does, or the env plays in
this process (nothing else to ask), the run stops with `EnvFailedError`.

The servers are asked by the thread whose episode reached the limit, outside the lock (a probe may take
seconds): episodes ending meanwhile in other threads are counted at once, and one env is probed by one
thread at a time.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from agent_sft.errors import RunFailedError

logger = logging.getLogger(__name__)


class EnvFailedError(RunFailedError):
    """An env of the run failed `env.max_consecutive_errors` episodes in a row and no server of it answers."""


class EnvHealth:
    """Env errors in a row per env of the run (episodes may end in any thread).

    Args:
        lanes: the run's envs (`config.lanes.Lane`), in the order the collector numbers them.
        limit: `env.max_consecutive_errors`.
    """

    def __init__(self, lanes: list[Any], limit: int) -> None:
        self.lanes = lanes
        self.limit = limit
        self.failed: EnvFailedError | None = None  # set once the run must stop
        self._in_a_row = [0] * len(lanes)
        self._probing: set[int] = set()  # envs whose servers are being asked
        self._lock = threading.Lock()

    def ended(self, lane: int, env_error: str = "") -> None:
        """An episode of env `lane` ended, in an env error (its message) or not ("")."""
        with self._lock:
            if not env_error:
                self._in_a_row[lane] = 0
                return
            self._in_a_row[lane] += 1
            if self._in_a_row[lane] < self.limit or self.failed is not None or lane in self._probing:
                return  # a probe under way: errors meanwhile count towards the next one
            n, self._in_a_row[lane] = self._in_a_row[lane], 0
            self._probing.add(lane)
        failed = None
        try:
            failed = self._judge(lane, n, env_error)
        finally:
            with self._lock:
                self._probing.discard(lane)
                if failed is not None and self.failed is None:
                    self.failed = failed

    def check(self) -> None:
        """Raise `EnvFailedError` when an env was found failing for good."""
        if self.failed is not None:
            raise self.failed

    def _judge(self, lane: int, n: int, env_error: str) -> EnvFailedError | None:
        """Ask the env's servers: the error that stops the run when none answers (or there is none to ask)."""
        ln = self.lanes[lane]
        what = f"environment {ln.name!r}" + (f" (env.mix.{ln.label})" if len(self.lanes) > 1 else "")
        last = " ".join(env_error.strip().splitlines()[0].split()) if env_error.strip() else "no detail"
        probes = ln.options.probe_servers() if ln.options is not None else None
        if probes and any(why == "" for why in probes.values()):
            alive = [u for u, why in probes.items() if why == ""]
            logger.warning("%s: %d episodes in a row ended in an env error (the last: %s); %s still answer%s, "
                           "so the run goes on", what, n, last, ", ".join(alive), "s" if len(alive) == 1 else "")
            return None
        if probes:
            servers = "; ".join(f"{u}: {' '.join(why.split())}" for u, why in probes.items())
            return EnvFailedError(
                f"{what}: {n} episodes in a row ended in an env error and none of its servers answers "
                f"({servers}); the last error: {last}")
        return EnvFailedError(
            f"{what}: {n} episodes in a row ended in an env error (env.max_consecutive_errors={self.limit}); "
            f"the last: {last}")
