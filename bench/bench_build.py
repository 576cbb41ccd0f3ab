"""`agent-sft build` time and peak memory with dedup, score rules and the views against a plain build of the same
folder.

    python bench/bench_build.py --episodes 100000

A folder of N synthetic episodes (tasks of 4 samples; samples of a task with the same number of steps take
the same actions, so `exact` finds duplicates) is written once; then each build runs in a fresh process, in
turn, `--repeats` times: `plain` (the default filters; `sft` again, and the `scores` and `dpo` configs, as every
build writes them), `no dpo` (`dpo.pairs=off`), `dedup=exact`, `dedup=near`, a selection
(`select=first_success task_success=solved per_task_type=1000`), a score rule (`invalid_rate<=0.5`),
`dedup+scores` (both, and `select=best` by `length_ratio`), and `dpo both` (episode and step pairs). The best time of
each is kept (the machine's load moves over time), with the process's peak RSS, and the ratio to `plain`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

BUILD = r"""
import json, resource, sys, time
from agent_sft.dataset.maintain import rebuild
from agent_sft.dataset.writer import BuildSpec
t = time.perf_counter()
stats = rebuild(sys.argv[1], BuildSpec("auto", json.loads(sys.argv[2])), dpo=json.loads(sys.argv[3]))
print(json.dumps({"s": time.perf_counter() - t, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "drops": stats.get("drops", {})}))
"""


def write_folder(folder: str, n: int) -> None:
    from fixtures_data import make_episode

    from agent_sft.dataset.writer import DatasetWriter

    tasks = max(1, n // 4)
    base = {}
    with DatasetWriter.open(folder, fingerprint={"bench": "build"}, flush_every_episodes=4096, flush_every_s=3600) as w:
        for i in range(n):
            task, sample = i % tasks, i // tasks
            steps = 3 + (task + sample % 2) % 6
            key = (task % 256, steps)  # building 100k distinct episodes would dominate the benchmark
            if key not in base:
                base[key] = make_episode(task % 256, 0, steps=steps, val_fraction=0.1)
            ep = base[key]
            w.add(dataclasses.replace(ep, episode_id=f"e{i:09d}", task_id=f"{ep.task_id}#{task}", sample_index=sample))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "ds")
        t = time.perf_counter()
        write_folder(folder, a.episodes)
        print(f"{a.episodes} episodes written in {time.perf_counter() - t:.1f} s")
        rule = {"scores": ["invalid_rate<=0.5"]}
        sides = {"plain": ({}, {}), "no dpo": ({}, {"pairs": "off"}), "dedup=exact": ({"dedup": "exact"}, {}),
                 "dedup=near": ({"dedup": "near"}, {}),
                 "select": ({"select": "first_success", "task_success": "solved", "per_task_type": 1000}, {}),
                 "score rule": (rule, {}),
                 "dedup+scores": ({"dedup": "near", **rule, "select": "best", "select_by": "length_ratio"}, {}),
                 "dpo both": ({}, {"pairs": "both"})}
        best: dict[str, dict] = {}
        for _ in range(a.repeats):
            for name, (filters, dpo) in sides.items():
                dpo = {"pairs": "episode", "per_task": 4, **dpo}  # a build's dpo settings stay the folder's: give all
                p = subprocess.run([sys.executable, "-c", BUILD, folder, json.dumps(filters), json.dumps(dpo)],
                                   capture_output=True, text=True, check=True)
                got = json.loads(p.stdout.strip().splitlines()[-1])
                if name not in best or got["s"] < best[name]["s"]:
                    best[name] = got
        plain = best["plain"]["s"]
        print(f"{'build':<14}{'seconds':>9}{'x plain':>9}{'peak MiB':>10}  drops")
        for name, got in best.items():
            print(f"{name:<14}{got['s']:>9.1f}{got['s'] / plain:>9.2f}{got['rss_mb']:>10.0f}  {got['drops']}")
        print("(every build reads the folder for the views; `no dpo` still writes sft and scores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
