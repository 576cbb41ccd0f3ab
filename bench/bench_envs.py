"""Per env: the bare engine's steps/s against the collector's, with each env's expert, same games, same run.

    python bench/bench_envs.py                       # every built-in env, 12 episodes each
    python bench/bench_envs.py --envs babyai taxi --episodes 40 --workers 1 4

For each env the run's plan (its first `--episodes` episodes) is played twice:

- bare: one env built in this process from the same options, `reset`/`step` with the expert's next
  action, nothing else (no prompts, parsing, records or processes);
- collector: `agent_sft.rollout.Collector` with the expert policy and `--workers` env worker processes
  (prompts rendered, answers parsed, steps recorded, env calls over pipes), start-up timed apart.

The collector's overhead per step is its 1-worker time per step minus the bare time per step. The two
must play the same episodes: same steps, same wins (a warning says otherwise).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

DEFAULT_ENVS = ["alfworld", "textworld", "babyai", "frozenlake", "taxi", "textarena"]


def bare(lane, cfg, episodes, policy) -> tuple[int, int, float]:
    """(steps, wins, seconds) of the episodes on one in-process env; env construction not timed."""
    env = lane.spec.make(**_accepted(lane, lane.env_kwargs(cfg)))
    steps = wins = 0
    t = time.perf_counter()
    for et in episodes:
        obs, info = env.reset(seed=et.seed, options={"task_id": et.task.task_id})
        for k in range(lane.max_steps):
            c = policy.act([[{"role": "user", "content": obs}]], [k], [info])[0]
            if c.error:
                break
            action = c.text.split("<action>")[-1].split("</action>")[0]
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            if terminated or truncated or info.get("won"):
                break
        wins += bool(info.get("won"))
    seconds = time.perf_counter() - t
    env.close()
    return steps, wins, seconds


def _accepted(lane, kwargs: dict) -> dict:
    """The keyword arguments the env's factory takes (as the env pools pass them)."""
    import inspect

    params = inspect.signature(lane.spec.load()).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return kwargs
    names = {p.name for p in params}
    return {k: v for k, v in kwargs.items() if k in names}


def collector(cfg, episodes, policy) -> tuple[int, int, float, float]:
    """(steps, wins, seconds, start-up seconds) of the same episodes through the collector."""
    from agent_sft.rollout import Collector
    from agent_sft.rollout.tasks import Plan

    with Collector(cfg, policy) as c:
        c.start()
        done = list(c.run(Plan(list(episodes), 0, len(episodes), len(episodes), 0)))
        return c.stats.steps, sum(e.success for e in done), c.stats.wall_s, c.stats.startup_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", nargs="+", default=DEFAULT_ENVS)
    ap.add_argument("--episodes", type=int, default=12)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from agent_sft.config import load_config
    from agent_sft.config.lanes import lanes
    from agent_sft.policies.expert import ExpertPolicy
    from agent_sft.rollout import Collector

    print(f"{args.episodes} episodes per env, each env's expert, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    head = f"{'env':<12}{'steps':>7}{'wins':>6}{'bare steps/s':>14}"
    head += "".join(f"{f'collector x{w}':>15}" for w in args.workers)
    head += f"{'x1 / bare':>11}{'overhead ms/step':>18}{'start-up s':>12}"
    print(head)
    for name in args.envs:
        cfg = load_config(None, [f"env.env_name={name}", f"env.seed={args.seed}", f"env.num_episodes={args.episodes}",
                                 "data.val_batch_size=1"], environ={})
        lane = lanes(cfg)[0]
        policy = ExpertPolicy()
        with Collector(cfg, policy) as c:
            episodes = c.plan().episodes
        steps, wins, secs = bare(lane, cfg, episodes, policy)
        rates, startup, same = [], 0.0, True
        one_s = None
        for w in args.workers:
            cfg.data.val_batch_size = w
            c_steps, c_wins, c_secs, c_start = collector(cfg, episodes, policy)
            same &= (c_steps, c_wins) == (steps, wins)
            rates.append(c_steps / c_secs)
            if w == args.workers[0]:
                one_s, startup = c_secs, c_start
        bare_rate = steps / secs
        overhead = 1000 * (one_s / steps - secs / steps)
        line = f"{name:<12}{steps:>7}{wins:>6}{bare_rate:>14.1f}" + "".join(f"{r:>15.1f}" for r in rates)
        line += f"{rates[0] / bare_rate:>10.2f}x{overhead:>18.2f}{startup:>12.2f}"
        print(line + ("" if same else "   warning: the collector's episodes differ from the bare ones"))
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) * 0.75:
        print(f"note: load average {load:.1f} on {os.cpu_count()} CPUs; other work skews the wall times")
    return 0


if __name__ == "__main__":
    sys.exit(main())
