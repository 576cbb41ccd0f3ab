"""Writer throughput and memory: agent-sft's DatasetWriter vs a bare pyarrow IPC write of the same rows.

    python bench/bench_writer.py --episodes 5000            # throughput
    python bench/bench_writer.py --memory 10000 100000      # peak memory, each size in a fresh process

What each side does with the same episodes (built before timing starts), `--flush-every` at a time:
  bare pyarrow IPC   raw rows (`episode_to_row`) and their sft rows (`derive_sft`) -> `Table.from_pylist`
                     -> one raw and one sft zstd Arrow IPC file per flush, written in place: no splits,
                     no temporary names, no sync, no listing. The baseline of the ratio.
  bare, per split    the same rows and calls, with the files the folder format needs: one raw and one sft
                     file per split and flush (a split is a list of files in the README), no sync.
  ... + fsync        the same, each file synced: what a sealed shard must at least cost. These two lines
                     only show where the time goes; they take no part in the ratio.
  agent-sft writer   `DatasetWriter.add` -> per flush and split, a raw and an sft shard (zstd Arrow IPC
                     files, as the folder format has them), written under temporary names, synced,
                     renamed into place, then the README and checksums rewritten to list them, the
                     directories synced in the background (`close` waits): what a kill at any instant
                     leaves is a folder that loads, and every sealed episode survives a crash of the machine.
  writer+finalize    the same, then one `finalize` (compaction of the run's shards, stats, plots, card).
Repeats alternate the sides, and the best time of each is kept (the machine's load moves over time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import pyarrow as pa

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from fixtures_data import make_episode  # noqa: E402

from agent_sft.dataset.filters import build_filters, derive_sft  # noqa: E402
from agent_sft.dataset.formats import episode_to_row  # noqa: E402
from agent_sft.dataset.writer import DatasetWriter  # noqa: E402
from agent_sft.records import RAW_SCHEMA, SFT_SCHEMA  # noqa: E402


def episodes(n: int):
    # 64 distinct shapes, re-identified: building 100k distinct episodes would dominate the benchmark.
    base = [make_episode(i % 64, 0, steps=4 + i % 8) for i in range(64)]
    for i in range(n):
        yield dataclasses.replace(base[i % 64], episode_id=f"{i:020d}", sample_index=i)


def dir_mb(d: str) -> float:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs) / 1e6


def bare(eps, out: str, every: int) -> None:
    opts = pa.ipc.IpcWriteOptions(compression="zstd")
    filters = build_filters({})
    buf, k = [], 0

    def seal(rows):
        nonlocal k
        sft, _ = derive_sft(rows, filters, "auto")
        for name, schema, data in (("raw", RAW_SCHEMA, rows), ("sft", SFT_SCHEMA, sft)):
            t = pa.Table.from_pylist(data, schema=schema)
            with pa.OSFile(os.path.join(out, f"{name}-{k:06d}.arrow"), "wb") as fh, pa.ipc.new_file(fh, schema, options=opts) as w:
                w.write_table(t)
        k += 1

    for e in eps:
        buf.append(episode_to_row(e))
        if len(buf) >= every:
            seal(buf)
            buf = []
    if buf:
        seal(buf)


def bare_per_split(eps, out: str, every: int, sync: bool = False) -> None:
    opts = pa.ipc.IpcWriteOptions(compression="zstd")
    filters = build_filters({})
    buf, k = [], 0

    def seal(rows):
        nonlocal k
        by_split: dict[str, list[dict]] = {}
        for r in rows:
            by_split.setdefault(r["split"], []).append(r)
        for split, split_rows in by_split.items():
            sft, _ = derive_sft(split_rows, filters, "auto")
            for name, schema, data in (("raw", RAW_SCHEMA, split_rows), ("sft", SFT_SCHEMA, sft)):
                t = pa.Table.from_pylist(data, schema=schema)
                path = os.path.join(out, f"{name}-{split}-{k:06d}.arrow")
                with pa.OSFile(path, "wb") as fh, pa.ipc.new_file(fh, schema, options=opts) as w:
                    w.write_table(t)
                if sync:
                    fd = os.open(path, os.O_RDONLY)
                    os.fsync(fd)
                    os.close(fd)
        k += 1

    for e in eps:
        buf.append(episode_to_row(e))
        if len(buf) >= every:
            seal(buf)
            buf = []
    if buf:
        seal(buf)


def bare_per_split_synced(eps, out: str, every: int) -> None:
    bare_per_split(eps, out, every, sync=True)


FINALIZE_S: list[float] = []


def ours(eps, out: str, every: int) -> None:
    w = DatasetWriter.open(out, fingerprint={}, flush_every_episodes=every, flush_every_s=3600)
    for e in eps:
        w.add(e)
    w.close()


def ours_finalized(eps, out: str, every: int) -> None:
    ours(eps, out, every)
    t = time.perf_counter()
    DatasetWriter.open(out, fingerprint={}).finalize()  # compaction, stats, plots, card: once per run
    FINALIZE_S.append(time.perf_counter() - t)


def timed(fn, n: int, every: int) -> tuple[float, float]:
    d = tempfile.mkdtemp(prefix="agent-sft-bench-")
    try:
        eps = list(episodes(n)) if n <= 20000 else episodes(n)
        t = time.perf_counter()
        fn(eps, d, every)
        dt = time.perf_counter() - t
        return dt, dir_mb(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


SIDES = (("bare pyarrow IPC", bare), ("  bare, per split", bare_per_split), ("  ... + fsync", bare_per_split_synced),
         ("agent-sft writer", ours), ("writer+finalize", ours_finalized))


def throughput(n: int, every: int, repeats: int) -> None:
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in SIDES}
    for _ in range(repeats):
        for name, fn in SIDES:
            runs[name].append(timed(fn, n, every))
    rate = {}
    print(f"{n} episodes, flush every {every} (best of {repeats}, the sides alternating):")
    print(f"{'':<18} {'episodes/s':>11} {'MB/s':>8} {'MB on disk':>11}")
    for name, _ in SIDES:
        dt, mb = min(runs[name], key=lambda x: x[0])
        rate[name.strip()] = n / dt
        print(f"{name:<18} {n / dt:>11.0f} {mb / dt:>8.2f} {mb:>11.1f}")
    bare_rate, ours_rate = rate["bare pyarrow IPC"], rate["agent-sft writer"]
    print(f"writer / bare: {ours_rate / bare_rate:.2f}x episodes/s while streaming (target >= 0.80); "
          f"{rate['writer+finalize'] / bare_rate:.2f}x including the one-off finalize ({min(FINALIZE_S):.2f} s)")
    print(f"(the folder's file layout alone: {rate['bare, per split'] / bare_rate:.2f}x; with each file synced: "
          f"{rate['... + fsync'] / bare_rate:.2f}x; the writer reaches {ours_rate / rate['... + fsync']:.2f}x of that)")


def memory(sizes: list[int], every: int) -> None:
    peaks = {}
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--flush-every", str(every)],
                             capture_output=True, text=True, check=True)
        peaks[n] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'episodes':>9} {'peak RSS MB':>12} {'seconds':>8}")
    for n, p in peaks.items():
        print(f"{n:>9} {p['rss_mb']:>12.1f} {p['s']:>8.1f}")
    a, b = peaks[sizes[0]]["rss_mb"], peaks[sizes[-1]]["rss_mb"]
    print(f"peak memory {sizes[-1]} / {sizes[0]} episodes: {b / a:.2f}x (target <= 1.2)")


def child(n: int, every: int) -> None:
    d = tempfile.mkdtemp(prefix="agent-sft-bench-")
    try:
        t = time.perf_counter()
        ours_finalized(episodes(n), d, every)
        s = time.perf_counter() - t
        print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "s": s}))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=5000)
    ap.add_argument("--flush-every", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory", type=int, nargs="*", help="episode counts for the peak-memory comparison")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.flush_every)
    elif a.memory:
        memory(a.memory, a.flush_every)
    else:
        throughput(a.episodes, a.flush_every, a.repeats)
