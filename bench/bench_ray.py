"""`scale.backend=ray` against a local run: episodes/s with 1, 2 and 4 collectors, and Ray's cost per episode.

    python bench/bench_ray.py                          # a sleeping control env and ALFWorld, local Ray
    python bench/bench_ray.py --collectors 1 2 4 8 --episodes 96 --parallel 2

Each collector plays with `--parallel` env workers and the env's expert. The control env only sleeps
(50 ms per step, no CPU), so its figures show how the collectors scale without CPU contention;
ALFWorld's show what a CPU-bound env gets on this machine. The local run (`scale.backend=local`, the same
`--parallel`) is the 1-collector baseline in the same run; Ray's overhead per episode is the 1-collector
Ray loop time minus the local one, over the episodes. Start-up (Ray, actors, env workers) is timed apart.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# the collectors (Ray workers) import the control env from this folder too
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def run(env: str, episodes: int, parallel: int, collectors: int | None, extra: list[str]) -> tuple[float, float, dict]:
    """(loop seconds, start-up seconds, run figures) of one collection into a fresh folder."""
    import agent_sft
    from agent_sft.config import load_config

    with tempfile.TemporaryDirectory() as d:
        overrides = [f"output.dir={d}/ds", f"env.env_name={env}", f"env.num_episodes={episodes}",
                     f"data.val_batch_size={parallel}", "env.max_steps=10", *extra]
        if collectors:
            overrides += ["scale.backend=ray", "scale.address=auto", f"scale.collectors={collectors}"]
        r = agent_sft.collect(load_config(None, overrides, environ={}))
    return r.run["wall_s"], r.run["startup_s"], r.run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collectors", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--episodes", type=int, default=48)
    ap.add_argument("--alfworld-episodes", type=int, default=16)
    ap.add_argument("--parallel", type=int, default=2, help="env workers per collector")
    ap.add_argument("--envs", nargs="+", default=["bench-sleep", "alfworld"])
    ap.add_argument("--chunk", type=int, default=None, help="scale.chunk_episodes (default: the config's)")
    args = ap.parse_args()

    import bench_rollout
    import ray

    from agent_sft.envs import register
    from agent_sft.rollout.ray_pool import init_ray

    register("bench-sleep", bench_rollout.SleepEnv)
    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    os.makedirs("/tmp/ray", exist_ok=True)
    t = time.perf_counter()
    init_ray(None, num_cpus=max(8, 2 * max(args.collectors)), _temp_dir=temp, object_store_memory=256 * 1024**2)
    print(f"local Ray (on 127.0.0.1) started in {time.perf_counter() - t:.1f} s\n")
    print("| env | run | episodes | loop s | episodes/s | vs local | vs 1 collector | start-up s | per collector |")
    print("|---|---|---|---|---|---|---|---|---|")
    for env in args.envs:
        n = args.episodes if env == "bench-sleep" else args.alfworld_episodes
        extra: list[str] = [f"scale.chunk_episodes={args.chunk}"] if args.chunk else []
        local_s, local_up, _ = run(env, n, args.parallel, None, extra)
        print(f"| {env} | local | {n} | {local_s:.2f} | {n / local_s:.2f} | 1.00x | | {local_up:.1f} | |")
        one = None
        for k in args.collectors:
            s, up, fig = run(env, n, args.parallel, k, extra)
            one = one or s
            shares = ", ".join(str(c["episodes"]) for c in fig["collectors"])
            print(f"| {env} | ray x{k} | {n} | {s:.2f} | {n / s:.2f} | {local_s / s:.2f}x | {one / s:.2f}x | {up:.1f} "
                  f"| {shares} |")
            if k == 1:
                print(f"| {env} | Ray overhead | | {1000 * (s - local_s) / n:+.1f} ms per episode | | | | | |")
    ray.shutdown()


if __name__ == "__main__":
    main()
