"""A pool backend that is one file: every env runs inline, in the thread that calls the pool.

It implements only the backend's part of `SlotPool` (launch, built, send, poll, kill); the slots,
counters, replacement and deadlines are the base's. Inline envs cannot be interrupted, so a hung step
is not cut short here: this backend is for tests only.
"""

from __future__ import annotations

from typing import Any

from agent_sft.rollout.pool_base import EnvHandle, SlotPool
from agent_sft.rollout.pools import Reply, build_env, describe_error, run_command


class _Inline(EnvHandle):
    def __init__(self, factory: Any, kwargs: dict) -> None:
        self.env = None
        try:
            self.env, accepted = build_env(factory, kwargs)
            self.build = Reply(True, accepted)
        except Exception as e:  # noqa: BLE001 - the pool raises it as a build failure
            self.build = Reply(False, error=describe_error(e))


class InlinePool(SlotPool):
    def _launch(self, slot: int) -> _Inline:
        return _Inline(self.factory, self.kwargs)

    def _built(self, handle: _Inline, timeout_s: float) -> Reply:
        return handle.build

    def _send(self, handle: _Inline, msg: tuple[str, tuple]) -> Reply:
        if not handle.build.ok:
            return Reply(False, error="not built")
        try:
            return Reply(True, run_command(handle.env, *msg))
        except Exception as e:  # noqa: BLE001 - the episode's error
            return Reply(False, error=describe_error(e))

    def _poll(self, waiting: dict[int, tuple[_Inline, Reply]], timeout_s: float) -> list[tuple[int, Reply, bool]]:
        out = []
        for slot, (handle, reply) in waiting.items():
            if not handle.ready:
                out.append((slot, handle.build, True))  # raises for a failed build
            out.append((slot, reply, False))
        return out

    def _kill(self, handle: _Inline) -> None:
        if handle.env is not None:
            handle.env.close()
