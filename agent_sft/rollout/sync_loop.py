"""`loop.mode=sync`: every live episode advances one step per turn and the policy answers them in one batch.

Continuous batching: each slot (one env worker) plays one episode at a time; when it ends, the slot takes
the next episode of the plan (`feed.Feed`) at the next turn. The order of that refill, the policy's seeds and
the env seeds are all functions of the plan and of the outcomes of the episodes ended before it (which
sampling until success reads), so the trajectories depend only on the config and the run seed, never on
timing, and every policy batch is the same from run to run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from agent_sft.policies.base import Policy
from agent_sft.records import Episode
from agent_sft.rollout.episode import DONE, EpisodeMachine, Next
from agent_sft.rollout.feed import Feed
from agent_sft.rollout.health import EnvHealth
from agent_sft.rollout.run_state import LaneRun, RolloutError, RunStats


class SyncLoop:
    """Lock-step turns over the lanes' pools (sized and ready): every live episode is answered in one
    policy batch, then every env steps. Env workers are numbered globally, lane after lane."""

    def __init__(self, runs: list[LaneRun], policy: Policy, stats: RunStats, health: EnvHealth) -> None:
        self.runs = runs
        self.policy = policy
        self.stats = stats
        self.health = health

    def play(self, feed: Feed, size: int) -> Iterator[Episode]:
        """Play the episodes `feed` hands out with at most `size` live, yielding episodes in the order they
        end, turn by turn."""
        self._feed = feed
        free = [list(range(r.size)) for r in self.runs]
        live: dict[int, EpisodeMachine] = {}
        while True:
            finished: list[Episode] = []
            resets = {}
            # Refill: the earliest queued episode whose env has a free worker, lowest worker first.
            while len(live) < size:
                got = feed.take([j for j in range(len(self.runs)) if free[j]])
                if got is None:
                    break
                et = got[1]
                j = et.lane
                w = self.runs[j].offset + free[j].pop(0)
                live[w] = EpisodeMachine(self.runs[j].setup, et)
                resets[w] = live[w].reset_request
            for w, r in self._env_call(resets).items():
                nxt = live[w].reset(r)
                if nxt.kind == DONE:
                    finished.append(self._finish(live, free, w, nxt))
            active = sorted(live)
            if active:
                finished += self._turn(live, free, active)
                self.stats.turns += 1
            yield from finished
            self.health.check()  # after the turn's episodes are handed out: they are sealed
            if not live and not feed.queued:
                break

    def _turn(self, live: dict[int, EpisodeMachine], free: list[list[int]], active: list[int]) -> list[Episode]:
        """One policy batch over the live episodes, then one env step each."""
        asks = [live[w].ask() for w in active]
        t = time.perf_counter()
        completions = self.policy.act([a[0] for a in asks], [a[1] for a in asks], [a[2] for a in asks])
        dt = time.perf_counter() - t
        self.stats.policy_s += dt
        if len(completions) != len(active):
            raise RolloutError(f"the policy answered {len(completions)} of {len(active)} conversations")
        share = dt / len(active)
        finished: list[Episode] = []
        requests: dict[int, tuple[str, tuple]] = {}
        for w, c in zip(active, completions):
            self.stats.count_answer(c)
            nxt = live[w].answered(c, share)
            if nxt.kind == DONE:
                finished.append(self._finish(live, free, w, nxt))
                continue
            requests[w] = nxt.request
        for w, r in self._env_call(requests).items():
            self.stats.steps += 1
            nxt = live[w].stepped(r)
            if nxt.kind == DONE:
                finished.append(self._finish(live, free, w, nxt))
        return finished

    def _finish(self, live: dict[int, EpisodeMachine], free: list[list[int]], w: int, nxt: Next) -> Episode:
        """The episode of worker `w` ended: count it for its env's health and free the worker."""
        m = live.pop(w)
        j = m.task.lane
        self.health.ended(j, nxt.env_error)
        self._feed.done(m.episode)
        free[j].append(w - self.runs[j].offset)
        free[j].sort()
        return m.episode

    def _env_call(self, requests: dict[int, tuple]) -> dict:
        """Send requests addressed by global worker id to the envs' pools; the pools of several envs
        are called at the same time."""
        if not requests:
            return {}
        t = time.perf_counter()
        by_lane: dict[int, dict[int, tuple]] = {}
        for w, req in requests.items():
            j = self._lane_of(w)
            by_lane.setdefault(j, {})[w - self.runs[j].offset] = req
        out: dict[int, Any] = {}
        if len(by_lane) == 1:
            ((j, reqs),) = by_lane.items()
            parts = {j: self.runs[j].pool.call(reqs)}
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(by_lane), thread_name_prefix="agent-sft-envs") as ex:
                futures = {j: ex.submit(self.runs[j].pool.call, reqs) for j, reqs in by_lane.items()}
                parts = {j: f.result() for j, f in futures.items()}
        for j, replies in parts.items():
            for local, reply in replies.items():
                out[self.runs[j].offset + local] = reply
        self.stats.env_s += time.perf_counter() - t
        return dict(sorted(out.items()))

    def _lane_of(self, w: int) -> int:
        for j in range(len(self.runs) - 1, -1, -1):
            if w >= self.runs[j].offset:
                return j
        return 0
