"""The episodes a loop plays next: a plan's, in plan order, less those sampling until success makes needless.

An env sampled until success (`env.until_success=k`, `env.max_samples_per_task=B`) plans the episodes of a
fixed run with B samples per task. A task's result is its samples 0..j, j the first index at which k of
them have succeeded counting in index order (or B - 1); every sample up to j is played, whatever order
they end in. The feed knows each such task's outcomes so far (the folder's, then each episode as it ends)
and hands out a sample only while it may still be needed:

- a sample with k known successes below it is past the stop (`records.past_stop`) and never played;
- a sample is held back while the successes below it and the samples below it still in play could
  reach k, so almost nothing past j is played; the samples a task needs after a failure start as soon
  as it ends, and other tasks fill the workers meanwhile.

A sample past j that was in play anyway is sealed as it is; the build leaves it out (`dataset.stopping`).
Lanes with a fixed number of samples play every episode, in the plan's order, as a plain queue.

The feed is not thread-safe: the async loop calls it under its lock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from agent_sft.records import Episode, past_stop
from agent_sft.rollout.tasks import EpisodeTask, Plan

QUEUED, TAKEN, DONE, SKIPPED = range(4)


@dataclass
class _Task:
    """What the feed knows of one task sampled until success."""

    k: int
    budget: int
    wins: list[int] = field(default_factory=list)  # sample indices known to have succeeded
    playing: set[int] = field(default_factory=set)  # sample indices handed out and not done
    orders: list[int] = field(default_factory=list)  # its episodes' places in the plan

    def below(self, s: int) -> tuple[int, int]:
        """(successes, samples in play) among the task's samples below index `s`."""
        return sum(1 for w in self.wins if w < s), sum(1 for p in self.playing if p < s)


class Feed:
    """The plan's episodes handed out in plan order, each lane on its own (`take`), with the outcomes
    of the episodes that end (`done`) deciding which samples of a task sampled until success are left.

    Episodes are named by their place in the plan (`order`).
    """

    def __init__(self, plan: Plan) -> None:
        self.episodes = plan.episodes
        self.skipped = 0  # episodes left out as past their task's stop
        self.queued = len(self.episodes)  # episodes neither handed out nor left out
        self._state = [QUEUED] * len(self.episodes)
        self._order = {et.episode_id: o for o, et in enumerate(self.episodes)}
        self._lanes: dict[int, list[int]] = {}
        for o, et in enumerate(self.episodes):
            self._lanes.setdefault(et.lane, []).append(o)
        self._head = dict.fromkeys(self._lanes, 0)
        self._queued_in = {j: len(orders) for j, orders in self._lanes.items()}
        self._tasks: dict[tuple[int, str], _Task] = {}
        for o, et in enumerate(self.episodes):
            if et.lane in plan.stopping:
                self._task(et, plan.stopping).orders.append(o)
        for (lane, task_id, s), success in plan.outcomes.items():
            t = self._tasks.get((lane, task_id))
            if t is not None and success:
                t.wins.append(s)
        for t in self._tasks.values():
            self._skip_past_stop(t)

    def _task(self, et: EpisodeTask, stopping: dict[int, tuple[int, int]]) -> _Task:
        key = (et.lane, et.task.task_id)
        if key not in self._tasks:
            self._tasks[key] = _Task(*stopping[et.lane])
        return self._tasks[key]

    def has_queued(self, lane: int) -> bool:
        """Whether `lane` has episodes left to hand out (some may be held back for now)."""
        return self._queued_in.get(lane, 0) > 0

    def is_skipped(self, order: int) -> bool:
        """Whether the episode at `order` is left out (past its task's stop): it will never be played."""
        return self._state[order] == SKIPPED

    def take(self, lanes: Iterable[int], before: int | None = None) -> tuple[int, EpisodeTask] | None:
        """The earliest episode of `lanes` that may be played now, placed before `before` in the plan when
        given, marked as in play; None when there is none."""
        best = None
        for j in lanes:
            o = self._first(j, before)
            if o is not None and (best is None or o < best):
                best = o
        if best is None:
            return None
        et = self.episodes[best]
        self._state[best] = TAKEN
        self.queued -= 1
        self._queued_in[et.lane] -= 1
        t = self._tasks.get((et.lane, et.task.task_id))
        if t is not None:
            t.playing.add(et.sample_index)
        return best, et

    def take_many(self, count: int) -> list[EpisodeTask]:
        """Up to `count` episodes of any lane that may be played now, in plan order."""
        out = []
        while len(out) < count:
            got = self.take(self._lanes)
            if got is None:
                break
            out.append(got[1])
        return out

    def done(self, episode: Episode) -> None:
        """An episode handed out has ended: its success (an error is no outcome) may put later samples of
        its task past the stop, and frees those held back behind it."""
        o = self._order[episode.episode_id]
        self._state[o] = DONE
        et = self.episodes[o]
        t = self._tasks.get((et.lane, et.task.task_id))
        if t is None:
            return
        t.playing.discard(et.sample_index)
        if episode.success:
            t.wins.append(et.sample_index)
            self._skip_past_stop(t)

    def release(self, et: EpisodeTask) -> None:
        """An episode handed out that will not end (its player died): it is handed out again, first."""
        o = self._order[et.episode_id]
        if self._state[o] != TAKEN:
            return
        self._state[o] = QUEUED
        self.queued += 1
        self._queued_in[et.lane] += 1
        lane = self._lanes[et.lane]
        self._head[et.lane] = min(self._head[et.lane], bisect.bisect_left(lane, o))
        t = self._tasks.get((et.lane, et.task.task_id))
        if t is not None:
            t.playing.discard(et.sample_index)

    def _first(self, lane: int, before: int | None) -> int | None:
        """The earliest queued episode of `lane` that is not held back (before `before`)."""
        orders = self._lanes.get(lane)
        if not orders:
            return None
        h = self._head[lane]
        while h < len(orders) and self._state[orders[h]] != QUEUED:
            h += 1
        self._head[lane] = h
        for o in orders[h:]:
            if before is not None and o >= before:
                return None
            if self._state[o] != QUEUED:
                continue
            et = self.episodes[o]
            t = self._tasks.get((et.lane, et.task.task_id))
            if t is None:
                return o
            wins, playing = t.below(et.sample_index)
            if wins + playing < t.k:  # not held back: the samples in play below it cannot reach the stop
                return o
        return None

    def _skip_past_stop(self, t: _Task) -> None:
        for o in t.orders:
            et = self.episodes[o]
            if self._state[o] == QUEUED and past_stop(et.sample_index, t.below(et.sample_index)[0], t.k, t.budget):
                self._state[o] = SKIPPED
                self.skipped += 1
                self.queued -= 1
                self._queued_in[et.lane] -= 1
