"""`loop.mode=async`: each env worker plays its episodes in its own thread.

An episode's request goes to the policy as soon as its observation is ready (`policies.dispatch`: vLLM's
running engine, the HTTP policy's concurrent requests, experts inline) and its env steps while other
episodes generate. Ids, seeds, splits and sampling seeds are the same as `sync`, so an episode's text is
the same wherever the policy's answer depends only on its request and seed; finished episodes are yielded
in the plan's order, passing over those the feed leaves out (`feed.Feed`: past their task's stop).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from agent_sft.policies.base import Policy
from agent_sft.records import Episode
from agent_sft.rollout.episode import ASK, DONE, EpisodeMachine
from agent_sft.rollout.feed import Feed
from agent_sft.rollout.health import EnvHealth
from agent_sft.rollout.run_state import LaneRun, RunStats
from agent_sft.rollout.tasks import EpisodeTask


class _Shared:
    """What the threads of the async loop share, under `cond`: the feed of episodes by plan order, the
    finished episodes by plan order, the next order to yield, the first fatal error."""

    def __init__(self, feed: Feed, window: int) -> None:
        self.cond = threading.Condition()
        self.feed = feed
        self.window = window
        self.done: dict[int, Episode] = {}
        self.next_out = 0
        self.error: BaseException | None = None
        self.stop = False


class AsyncLoop:
    """One thread per env worker of the lanes' pools (sized and ready), named `agent-sft-episode-<worker>`.

    Args:
        reorder_window: `loop.reorder_window` (0: four times the episodes in flight).
    """

    def __init__(self, runs: list[LaneRun], policy: Policy, stats: RunStats, health: EnvHealth,
                 reorder_window: int = 0) -> None:
        self.runs = runs
        self.policy = policy
        self.stats = stats
        self.health = health
        self.reorder_window = reorder_window
        self._stats_lock = threading.Lock()

    def play(self, feed: Feed, size: int) -> Iterator[Episode]:
        """Each env worker plays the episodes `feed` hands out in its own thread: an episode asks the policy
        as soon as its observation is ready and steps its env as soon as its answer is. Finished episodes
        are yielded in the plan's order; an episode starts only within `loop.reorder_window` of the next
        one to yield, so what is held back stays bounded (episodes the feed leaves out take no room)."""
        from agent_sft.policies.dispatch import requests_for

        total = len(feed.episodes)
        st = _Shared(feed, max(1, self.reorder_window or 4 * size))
        asker = requests_for(self.policy)
        threads = [
            threading.Thread(target=self._slot_main, args=(st, asker, j, local), name=f"agent-sft-episode-{r.offset + local}",
                             daemon=True)
            for j, r in enumerate(self.runs)
            for local in range(r.size)
        ]
        for th in threads:
            th.start()
        join_s = 10.0  # a thread inside a hung env step is left to its pool's close
        try:
            while st.next_out < total:
                with st.cond:
                    while st.next_out not in st.done and not feed.is_skipped(st.next_out) and st.error is None:
                        st.cond.wait(timeout=1.0)
                    error = st.error
                    if error is not None:  # the episodes that finished are handed out (sealed) first
                        held = [st.done.pop(k) for k in sorted(st.done)]
                    else:
                        held = [st.done.pop(st.next_out)] if st.next_out in st.done else []
                        st.next_out += 1
                        st.cond.notify_all()
                yield from held
                if error is not None:
                    raise error
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: threads still waiting on the policy or an env are not waited for
            join_s = 0.0
            raise
        finally:
            with st.cond:
                st.stop = True
                st.cond.notify_all()
            asker.close()
            deadline = time.monotonic() + join_s
            for th in threads:
                th.join(max(0.0, deadline - time.monotonic()))

    def _slot_main(self, st: _Shared, asker: Any, j: int, local: int) -> None:
        """Body of one env worker's thread: take the lane's next episode, play it."""
        try:
            while True:
                with st.cond:
                    while True:
                        if st.stop or st.error is not None or not st.feed.has_queued(j):
                            return
                        got = st.feed.take([j], before=st.next_out + st.window)
                        if got is not None:
                            break
                        st.cond.wait(timeout=1.0)
                    order, et = got
                ep = self._play_one(asker, self.runs[j], local, et)
                with st.cond:
                    st.done[order] = ep
                    st.feed.done(ep)
                    st.cond.notify_all()
                self.health.check()
        except BaseException as e:  # noqa: BLE001 - the run stops and the main thread raises it
            with st.cond:
                if st.error is None and not st.stop:
                    st.error = e
                st.cond.notify_all()

    def _play_one(self, asker: Any, r: LaneRun, local: int, et: EpisodeTask) -> Episode:
        """One whole episode on worker `local` of `r`'s pool."""
        m = EpisodeMachine(r.setup, et)
        nxt = m.reset(self._env_one(r, local, m.reset_request))
        while nxt.kind != DONE:
            if nxt.kind == ASK:
                conversation, seed, info = m.ask()
                t = time.perf_counter()
                c = asker.ask(conversation, seed, info)
                dt = time.perf_counter() - t
                with self._stats_lock:
                    self.stats.policy_s += dt
                    self.stats.count_answer(c)
                nxt = m.answered(c, dt)
            else:
                reply = self._env_one(r, local, nxt.request)
                with self._stats_lock:
                    self.stats.steps += 1
                nxt = m.stepped(reply)
        self.health.ended(et.lane, nxt.env_error)
        return m.episode

    def _env_one(self, r: LaneRun, local: int, request: tuple) -> Any:
        t = time.perf_counter()
        reply = r.pool.call({local: request})[local]
        with self._stats_lock:
            self.stats.env_s += time.perf_counter() - t
        return reply
