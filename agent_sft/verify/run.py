"""The verify pass over a folder: each live raw episode replayed in an env built as the folder's recorded config
built it (`source`), compared step by step (`replay`), in parallel over one env pool per env of the run as
collection plays them (`env.backend`), resumable (`progress`), and summed up in meta/verify.json and the card.

    summary = verify_folder("agent_sft_data", workers=4)
    summary["matched"], summary["mismatched"], summary["mismatches"][:1]

Raw shards are only read. A pass that completes writes meta/verify.json (atomically) and rewrites the card.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from agent_sft.config import CollectConfig, ConfigError
from agent_sft.config.lanes import Lane, lanes
from agent_sft.dataset import atomic, layout, reading
from agent_sft.dataset.verified import VERIFIED
from agent_sft.errors import DatasetError, RunFailedError
from agent_sft.rollout.pools import EnvPool, Reply, backend, make_pool
from agent_sft.verify.progress import PARTIAL, Progress
from agent_sft.verify.replay import ERROR, MATCHED, MISMATCHED, NOT_REPLAYABLE, Outcome, replay
from agent_sft.verify.response import Reading
from agent_sft.verify.source import (
    cannot_replay,
    content_key,
    folder_config,
    imported_row,
    index,
    iter_rows,
    not_replayable,
)
from agent_sft.version import __version__, run_versions

VERIFY = VERIFIED  # meta/verify.json, which the card reads
INDEX_TRIES = 5  # scans of a folder whose shards a compaction replaces while verify reads them
WAIT_S = 0.2  # how often a blocked worker or feeder looks whether the pass is stopping
LISTED = 50  # mismatches (and errors) listed in meta/verify.json; the rest are counted


class _Lanes:
    """The folder's envs by the name their episodes record, each with its pool once one of its episodes comes."""

    def __init__(self, cfg: CollectConfig | None, run_lanes: list[Lane], workers: int | None) -> None:
        self.cfg = cfg
        self.by_name: dict[str, list[Lane]] = {}
        for lane in run_lanes:
            self.by_name.setdefault(lane.name, []).append(lane)
        self.workers = workers
        self.pools: dict[str, EnvPool] = {}  # by lane label
        self._tasks: dict[str, set[str]] = {}

    def lane_of(self, row: dict) -> Lane:
        """The lane that played `row`: the one of its env, or among several entries of one env, the one whose
        env lists its task."""
        found = self.by_name[row["env"]]
        if len(found) == 1:
            return found[0]
        for lane in found:
            if lane.label not in self._tasks:
                reply = self.pool(lane, 1).call({0: ("tasks", ())})[0]
                self._tasks[lane.label] = {t.task_id for t in reply.value} if reply.ok else set()
            if row["task_id"] in self._tasks[lane.label]:
                return lane
        return found[0]

    def pool(self, lane: Lane, size: int) -> EnvPool:
        if lane.label not in self.pools:
            cfg = self.cfg
            self.pools[lane.label] = make_pool(cfg.env.backend, lane.spec, 1, lane.env_kwargs(cfg),
                                               timeout_s=cfg.env.step_timeout_s,
                                               start_timeout_s=max(300.0, cfg.env.step_timeout_s),
                                               cpus_per_env=cfg.scale.cpus_per_env)
        p = self.pools[lane.label]
        if len(p) < size:
            p.resize(size)
            p.await_ready()
        return p

    def close(self) -> None:
        for p in self.pools.values():
            p.close()


def _check_engines(run_lanes: list[Lane], cfg: CollectConfig) -> None:
    """Refuse, in one line naming the extra, an env whose engine is not installed here."""
    for lane in run_lanes:
        missing = lane.spec.missing_packages()
        if missing:
            raise ConfigError(f"environment {lane.name!r} needs {', '.join(missing)}, which is not installed: "
                              f"{lane.spec.install_hint()}")
        backend(cfg.env.backend, lane.spec)


def verify_folder(folder: str, *, workers: int | None = None, env: str | None = None, limit: int | None = None,
                  on_outcome: Callable[[Outcome, int, int], None] | None = None) -> dict[str, Any]:
    """Replay the folder's episodes and write meta/verify.json; returns what it holds.

    Args:
        folder: a dataset folder.
        workers: envs replaying at once, per env (default: the folder's `loop.parallel`).
        env: replay only the episodes of this env.
        limit: at most this many episodes, the first in the folder's order (after `env`).
        on_outcome: called with each outcome, the outcomes so far and the episodes selected.

    Raises:
        ConfigError: an env not in the folder, an engine not installed, a recorded config that does not load.
        NotADatasetError: not a dataset folder.
    """
    info, s, rows = _read_index(folder)
    imported = (info.get("fingerprint") or {}).get("imported") is not None
    cfg = None if imported else folder_config(info)
    run_lanes = [] if cfg is None else lanes(cfg)
    if env is not None:
        known = sorted({r["env"] for r in rows} | {lane.name for lane in run_lanes})
        if env not in known:
            raise ConfigError(f"--env {env}: the folder's episodes are of {', '.join(known) or 'no env'}")
        rows = [r for r in rows if r["env"] == env]
        run_lanes = [lane for lane in run_lanes if lane.name == env]
    rows = rows[:limit] if limit is not None else rows
    used = {r["env"] for r in rows if not imported and not imported_row(r)}
    envs = _Lanes(cfg, run_lanes, workers)
    _check_engines([lane for lane in run_lanes if lane.name in used and not cannot_replay(lane)], cfg)

    progress = Progress(folder)
    outcomes: dict[str, Outcome] = {}
    todo: dict[str, dict] = {}
    for r in rows:
        why = not_replayable(r, envs.by_name, imported)
        if why:
            outcomes[r["episode_id"]] = Outcome(r["episode_id"], r["env"], r["task_id"], NOT_REPLAYABLE, reason=why)
        else:
            todo[r["episode_id"]] = r
    t0 = time.time()
    completed = False
    try:
        replayed, resumed = _replay_all(folder, info, todo, envs, progress, outcomes, len(rows), on_outcome)
        summary = _summary(info, s, rows, outcomes, envs, resumed=resumed, replayed=replayed, seconds=time.time() - t0,
                           selection={"env": env, "limit": limit})
        atomic.write_json_atomic(os.path.join(folder, VERIFY), summary)
        completed = True
    finally:
        envs.close()
        progress.close(completed)
    _rewrite_card(folder)
    return summary


def _read_index(folder: str) -> tuple[dict, layout.Scan, list[dict]]:
    """The folder's info, scan and `source.index`, scanned again when a shard went meanwhile (a compaction)."""
    for _ in range(INDEX_TRIES):
        info, s = reading.folder_status(folder)
        try:
            return info, s, index(folder, s)
        except FileNotFoundError:
            continue
    raise DatasetError(f"{folder}: its raw shards kept being replaced while verify read them; run verify again once "
                       "the collection or compaction writing them has ended")


def _replay_all(folder: str, info: dict, todo: dict[str, dict], envs: _Lanes, progress: Progress,
                outcomes: dict[str, Outcome], total: int, on_outcome: Callable | None) -> tuple[int, int]:
    """Replay the episodes of `todo`, each env's on its own pool, its slots in threads of their own; an episode
    replayed by an earlier pass from the same row is taken from `progress`. Returns (replayed, resumed)."""
    if not todo:
        return 0, 0
    by_lane: dict[str, dict[str, dict]] = {}
    for eid, r in todo.items():
        by_lane.setdefault(envs.lane_of(r).label, {})[eid] = r
    size = {label: max(1, min(envs.workers or envs.cfg.data.val_batch_size, len(rs))) for label, rs in by_lane.items()}
    queues: dict[str, queue.Queue] = {label: queue.Queue(maxsize=2 * n) for label, n in size.items()}
    lock = threading.Lock()
    stop = threading.Event()
    failed: list[BaseException] = []  # the first error that stopped the pass
    counts = Counter()

    def record(o: Outcome, how: str) -> None:
        with lock:
            outcomes[o.episode_id] = o
            counts[how] += 1
            if on_outcome is not None:
                on_outcome(o, len(outcomes), total)

    def fail(e: BaseException) -> None:
        with lock:
            failed.append(e)
        stop.set()

    def work(pool: EnvPool, slot: int, q: queue.Queue, reading: Reading) -> None:
        def call(cmd: str, args: tuple) -> Reply:
            return pool.call({slot: (cmd, args)})[slot]

        while not stop.is_set():
            try:
                row = q.get(timeout=WAIT_S)
            except queue.Empty:
                continue
            if row is None:
                return
            row, content = row
            try:
                o = replay(row, call, reading)
            except Exception as e:  # noqa: BLE001 - a fresh env that cannot be built: this episode is unverified
                o = Outcome(row["episode_id"], row["env"], row["task_id"], ERROR, reason=f"{type(e).__name__}: {e}"[:500])
            try:
                progress.add(o, content)
                record(o, "replayed")
            except BaseException as e:  # noqa: BLE001 - a full disk, a callback that raised: the pass stops
                fail(e)
                return

    def put(q: queue.Queue, item: tuple[dict, str] | None) -> bool:
        """`item` queued, or False once the pass is stopping (no worker may be left to take it)."""
        while not stop.is_set():
            try:
                q.put(item, timeout=WAIT_S)
                return True
            except queue.Full:
                continue
        return False

    def feed(label: str, rows: dict[str, dict]) -> None:
        paths = list(dict.fromkeys(r["shard"] for r in rows.values()))
        try:
            for row in iter_rows(folder, paths, "task_hash" in layout.additions(info), set(rows)):
                content = content_key(row)
                done = progress.reusable(row["episode_id"], content)
                if done is not None:
                    record(done, "resumed")
                elif not put(queues[label], (row, content)):
                    return
            for _ in range(size[label]):
                put(queues[label], None)
        except BaseException as e:  # noqa: BLE001 - a shard that cannot be read: the pass stops
            fail(e)

    threads = []
    try:
        for label, n in size.items():
            lane = next(lane for ls in envs.by_name.values() for lane in ls if lane.label == label)
            pool = envs.pool(lane, n)
            reading = Reading(envs.cfg.prompt.actions, envs.cfg.prompt.require_think, lane.spec)
            for slot in range(n):
                t = threading.Thread(target=work, args=(pool, slot, queues[label], reading), daemon=True,
                                     name=f"verify-{label}-{slot}")
                t.start()
                threads.append(t)
            # each env's own feeder: an env slower than the others fills only its own queue
            t = threading.Thread(target=feed, args=(label, by_lane[label]), daemon=True, name=f"verify-{label}-feed")
            t.start()
            threads.append(t)
        for t in threads:
            while t.is_alive():
                t.join(0.5)  # in slices: Ctrl-C reaches the main thread
    finally:
        stop.set()
    if failed:
        e = failed[0]
        said = (str(e).strip().splitlines() or ["?"])[0]
        raise RunFailedError(f"the pass stopped: {type(e).__name__}: {said} (the episodes replayed so far are kept in "
                             f"{PARTIAL}: verify again resumes)") from e
    return counts["replayed"], counts["resumed"]


def _summary(info: dict, s: layout.Scan, rows: list[dict], outcomes: dict[str, Outcome], envs: _Lanes, *,
             resumed: int, replayed: int, seconds: float, selection: dict) -> dict[str, Any]:
    got = [outcomes[r["episode_id"]] for r in rows if r["episode_id"] in outcomes]
    status = Counter(o.status for o in got)
    per_env: dict[str, Counter] = {}
    for o in got:
        per_env.setdefault(o.env, Counter())[o.status] += 1
    mismatches = [o.to_dict() for o in got if o.status == MISMATCHED]
    errors = [o.to_dict() for o in got if o.status == ERROR]
    engines = {name: ls[0].spec.package_versions() for name, ls in envs.by_name.items() if name in per_env}
    return {
        "verified_at": time.time(),
        "agent_sft": __version__,
        "versions": {**run_versions(), "engines": engines},
        "recorded_versions": info.get("env_versions") or {},
        "generation": layout.generation(info),
        "shards": layout.raw_shard_rows(s),
        "episodes": s.raw_rows(),
        "selected": len(rows),
        "selection": selection,
        "verified": status[MATCHED] + status[MISMATCHED],
        "matched": status[MATCHED],
        "mismatched": status[MISMATCHED],
        "errors": status[ERROR],
        "not_replayable": status[NOT_REPLAYABLE],
        "not_replayable_reasons": dict(Counter(o.reason for o in got if o.status == NOT_REPLAYABLE)),
        "per_env": {env: {k: c[k] for k in (MATCHED, MISMATCHED, ERROR, NOT_REPLAYABLE)} for env, c in sorted(per_env.items())},
        "mismatches": mismatches[:LISTED],
        "mismatches_left_out": max(0, len(mismatches) - LISTED),
        "error_list": errors[:LISTED],
        "errors_left_out": max(0, len(errors) - LISTED),
        "replayed": replayed,
        "resumed": resumed,
        "seconds": round(seconds, 3),
    }


def _rewrite_card(folder: str) -> None:
    """The card again, now with its verification line (`dataset.card`); the figures of the last finalize kept."""
    with layout.locked(folder):
        info = layout.read_info(folder) or layout.recover_info(folder)
        try:
            with open(os.path.join(folder, layout.STATS)) as fh:
                run = json.load(fh).get("run")
        except (OSError, ValueError, AttributeError):
            run = None
        reading.finalize_folder(folder, layout.open_scan(folder, info), summary=run)
