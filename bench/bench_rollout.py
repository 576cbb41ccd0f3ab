"""Rollout throughput on ALFWorld with the planner expert.

    python bench/bench_rollout.py                 # 24 episodes of the built-in games
    python bench/bench_rollout.py --episodes 48 --workers 1 2 4 --data-path ~/alfworld

Measures env steps/s of

- a bare loop: one env in this process, `policy.act` on a one-message conversation, `env.step`; no
  prompts, no parsing, no records, no processes;
- the collector (`agent_sft.rollout.Collector`) with 1, 2 and 4 env worker processes: the same games,
  seeds and policy, with prompts, parsing, step records and pipes.

The collector's overhead per step is its 1-worker time per step against the bare loop's. Worker start-up
is timed apart (it is paid once per run). The episodes must match between the two: same steps, same wins.
CPU ms/step counts this process and the (closed) worker processes, so it is fair on a busy machine where
wall times are not. A control env that only sleeps shows how the pool itself scales with workers.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the env workers, once closed)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class SleepEnv:
    """Control env: each step sleeps `sleep_s` and uses no CPU, so worker scaling shows the pool's own
    parallelism however busy the machine is. Task `k` is won after k steps of `next`."""

    def __init__(self, sleep_s: float = 0.05, **_):
        from agent_sft.envs import TaskSpec

        self.sleep_s = sleep_s
        self._tasks = [TaskSpec(f"sleep/{k}", "sleep", "bench") for k in range(3, 9)]

    def tasks(self):
        return list(self._tasks)

    def _info(self):
        return {"admissible_actions": ["next"], "won": self.left == 0, "goal": "wait", "expert_plan": ["next"] * self.left}

    def reset(self, *, seed=None, options=None):
        self.left = int(options["task_id"].split("/")[1])
        return "waiting", self._info()

    def step(self, action):
        time.sleep(self.sleep_s)
        self.left -= 1
        return "still waiting", 0.0, self.left == 0, False, self._info()

    def close(self):
        pass


def sleep_control(workers, episodes=24):
    """(workers, steps/s) of the collector on `SleepEnv` with the expert policy."""
    from agent_sft.config import load_config
    from agent_sft.envs import register
    from agent_sft.policies.expert import ExpertPolicy
    from agent_sft.rollout import Collector

    register("bench-sleep", SleepEnv)
    out = []
    for w in workers:
        cfg = load_config(None, ["env.env_name=bench-sleep", f"data.val_batch_size={w}", f"env.num_episodes={episodes}"], environ={})
        with Collector(cfg, ExpertPolicy()) as c:
            list(c.run(c.plan()))
            out.append((w, c.stats.steps / c.stats.wall_s))
    return out


def bare_loop(cfg, episodes, policy):
    """Play `episodes` one after another on one in-process env; returns (steps, wins, seconds)."""
    from agent_sft.config import env_options
    from agent_sft.envs.alfworld import AlfworldEnv

    opts = env_options(cfg)
    env = AlfworldEnv(data_path=opts.data_path, game_split=opts.game_split, max_steps=cfg.env.max_steps,
                      expert=cfg.policy.expert)
    steps = wins = 0
    t = time.perf_counter()
    for et in episodes:
        obs, info = env.reset(seed=et.seed, options={"task_id": et.task.task_id})
        for k in range(cfg.env.max_steps):
            c = policy.act([[{"role": "user", "content": obs}]], [k], [info])[0]
            action = c.text.split("<action>")[-1].split("</action>")[0]
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            if terminated or truncated:
                break
        wins += bool(info.get("won"))
    seconds = time.perf_counter() - t
    env.close()
    return steps, wins, seconds


def collector_run(cfg, episodes, policy):
    """The same episodes through the collector; returns (steps, wins, seconds, startup seconds)."""
    from agent_sft.rollout import Collector
    from agent_sft.rollout.tasks import Plan

    with Collector(cfg, policy) as c:
        c.start()
        plan = Plan(list(episodes), 0, len(episodes), len(episodes), 0)
        done = list(c.run(plan))
        st = c.stats
        own = (st.wall_s - st.env_s - st.policy_s) / max(st.steps, 1)
        return st.steps, sum(e.success for e in done), st.wall_s, st.startup_s, own


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=24)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-path", help="ALFWorld data root (default: $ALFWORLD_DATA, else the built-in games)")
    args = ap.parse_args()

    from agent_sft.config import load_config
    from agent_sft.policies.registry import make_policy
    from agent_sft.rollout import Collector

    overrides = [f"env.seed={args.seed}", f"env.num_episodes={args.episodes}", "data.val_batch_size=1"]
    if args.data_path:
        overrides.append(f"env.data_path={args.data_path}")
    cfg = load_config(None, overrides, environ={})
    policy = make_policy(cfg.policy)
    with Collector(cfg, policy) as c:
        episodes = c.plan().episodes
    print(f"{len(episodes)} episodes of the ALFWorld games ({episodes[0].task.game_split}), "
          f"planner expert, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")

    cpu = cpu_seconds()
    bare_steps, bare_wins, bare_s = bare_loop(cfg, episodes, policy)
    rows = [("bare env loop (1 env, in process)", bare_steps, bare_wins, bare_s, 0.0, cpu_seconds() - cpu)]
    loop_ms = []
    for w in args.workers:
        cfg.data.val_batch_size = w
        cpu = cpu_seconds()
        steps, wins, secs, startup, own = collector_run(cfg, episodes, policy)
        rows.append((f"collector, {w} worker{'s' if w > 1 else ''}", steps, wins, secs, startup, cpu_seconds() - cpu))
        loop_ms.append((w, 1000 * own))

    print(f"\n{'':<36}{'steps':>7}{'wins':>6}{'seconds':>9}{'steps/s':>9}{'ms/step':>9}{'startup s':>11}{'CPU ms/step':>13}")
    for name, steps, wins, secs, startup, cpu in rows:
        print(f"{name:<36}{steps:>7}{wins:>6}{secs:>9.2f}{steps / secs:>9.1f}{1000 * secs / steps:>9.2f}{startup:>11.2f}"
              f"{1000 * cpu / steps:>13.2f}")
    one, bare = rows[1], rows[0]
    overhead = (one[3] / one[1]) / (bare_s / bare_steps) - 1
    print(f"\ncollector overhead per step (1 worker vs bare loop): {100 * overhead:+.1f}% wall "
          f"({1000 * (one[3] / one[1] - bare_s / bare_steps):+.2f} ms/step); CPU incl. worker start-up "
          f"{100 * ((one[5] / one[1]) / (bare[5] / bare[1]) - 1):+.1f}%")
    print("the loop's own time (prompts, parsing, records; not env, not policy): "
          + ", ".join(f"{w} worker{'s' if w > 1 else ''} {ms:.2f} ms/step" for w, ms in loop_ms))
    control = sleep_control(args.workers)
    print("control, an env that sleeps 50 ms a step (no CPU): "
          + ", ".join(f"{w} worker{'s' if w > 1 else ''} {r:.1f} steps/s" for w, r in control)
          + f" (ideal {1 / 0.05:.0f} per worker); overhead per step with 1 worker "
          f"{1000 / control[0][1] - 50:.2f} ms = {100 * (1 / control[0][1] / 0.05 - 1):.1f}% of a 50 ms step")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) * 0.75:
        print(f"note: load average {load:.1f} on {os.cpu_count()} CPUs during the run; other work skews the wall times")
    if any(r[1] != bare_steps or r[2] != bare_wins for r in rows[1:]):
        print("warning: the collector's episodes differ from the bare loop's (steps or wins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
