"""WebShop: the bare engine's steps/s for search and for click actions, against the collector's with the oracle.

    python bench/bench_webshop.py                          # the test catalog, built in a temporary folder
    python bench/bench_webshop.py --path ~/WebShop --episodes 100 --workers 1 2

The run's plan (its first `--episodes` goals) is played three ways, the same goals in the same run:

- engine: WebShop's own `WebAgentTextEnv` built in this process, `reset(session=goal)` then the oracle's
  actions (computed beforehand) with nothing else; search and click steps are timed apart (a search runs
  Lucene through pyserini's JVM and renders a results page, a click renders a page);
- env: agent-sft's `WebshopEnv` in this process with the oracle's plans (validity, page text, the plan);
- collector: `agent_sft.rollout.Collector` with the expert policy and `--workers` env worker processes, its
  start-up (each worker imports the engine and builds it: seconds) timed apart.

Without `--path` (or $WEBSHOP_PATH), the engine in ../shared/third_party/webshop is copied to a temporary
folder with the tests' catalog (tests/webshop_catalog.py) and its index.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def checkout(path: str | None, tmp: str) -> Path:
    """The checkout to run: the one given, else a copy of the shared engine with the test catalog."""
    if path or os.environ.get("WEBSHOP_PATH"):
        from agent_sft.envs.webshop import find_checkout

        return find_checkout(path)
    sys.path.insert(0, str(ROOT / "tests"))
    from webshop_catalog import prepare_checkout

    t = time.perf_counter()
    out = prepare_checkout(ROOT.parent / "shared" / "third_party" / "webshop", Path(tmp) / "webshop")
    print(f"test catalog and index built in {time.perf_counter() - t:.1f} s")
    return out


def plans(env, episodes) -> list[tuple[int, list[str]]]:
    """(goal index, the oracle's actions) of each episode, played once on agent-sft's env."""
    out = []
    for et in episodes:
        obs, info = env.reset(seed=et.seed, options={"task_id": et.task.task_id})
        actions = []
        while info["expert_plan"]:
            actions.append(info["expert_plan"][0])
            obs, _, terminated, truncated, info = env.step(actions[-1])
            if terminated or truncated:
                break
        out.append((et.task.extra["goal_index"], actions))
    return out


def engine_rates(engine, played) -> dict[str, tuple[int, float]]:
    """{"search" | "click" | "reset": (count, seconds)} on the bare engine."""
    from agent_sft.envs.webshop.checkout import quiet

    times = {"search": [0, 0.0], "click": [0, 0.0], "reset": [0, 0.0]}
    with quiet():
        for index, actions in played:
            t = time.perf_counter()
            engine.reset(session=index)
            times["reset"][0] += 1
            times["reset"][1] += time.perf_counter() - t
            for a in actions:
                t = time.perf_counter()
                engine.step(a)
                kind = "search" if a.startswith("search[") else "click"
                times[kind][0] += 1
                times[kind][1] += time.perf_counter() - t
    return {k: (n, s) for k, (n, s) in times.items()}


def env_rate(env, episodes, policy) -> tuple[int, int, float]:
    """(steps, wins, seconds) of agent-sft's env with the expert policy, in this process."""
    steps = wins = 0
    t = time.perf_counter()
    for et in episodes:
        obs, info = env.reset(seed=et.seed, options={"task_id": et.task.task_id})
        for k in range(env.max_steps):
            c = policy.act([[{"role": "user", "content": obs}]], [k], [info])[0]
            obs, _, terminated, truncated, info = env.step(c.text.split("<action>")[-1].split("</action>")[0])
            steps += 1
            if terminated or truncated:
                break
        wins += bool(info.get("won"))
    return steps, wins, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", help="a WebShop checkout (default $WEBSHOP_PATH, else the test catalog)")
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--test-goals", type=int, default=8, help="env.webshop.test_goals (train goals are played)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from agent_sft.config import load_config
    from agent_sft.envs.webshop import WebshopEnv
    from agent_sft.policies.expert import ExpertPolicy
    from agent_sft.rollout import Collector
    from agent_sft.rollout.tasks import Plan

    with tempfile.TemporaryDirectory() as tmp:
        root = checkout(args.path, tmp)
        overrides = ["env.env_name=webshop", f"env.webshop.path={root}", f"env.webshop.test_goals={args.test_goals}",
                     f"env.seed={args.seed}", f"env.num_episodes={args.episodes}", "data.val_batch_size=1"]
        cfg = load_config(None, overrides, environ={})
        policy = ExpertPolicy()
        t = time.perf_counter()
        env = WebshopEnv(path=root, test_goals=args.test_goals)
        built = time.perf_counter() - t
        with Collector(cfg, policy) as c:
            episodes = c.plan().episodes
        played = plans(env, episodes)
        rates = engine_rates(env.engine, played)
        steps, wins, secs = env_rate(env, episodes, policy)
        print(f"{len(episodes)} WebShop goals ({root}), the oracle; {os.cpu_count()} CPUs, python "
              f"{sys.version.split()[0]}; engine import + build in this process {built:.1f} s")
        for kind in ("search", "click", "reset"):
            n, s = rates[kind]
            print(f"  engine {kind:<7} {n:>5} calls  {n / s:>8.1f} /s  {1000 * s / n:>7.2f} ms each")
        n = rates["search"][0] + rates["click"][0]
        s = rates["search"][1] + rates["click"][1]
        print(f"  engine steps   {n:>5}        {n / s:>8.1f} /s  (search and click together, resets not counted)")
        print(f"  env steps      {steps:>5}        {steps / secs:>8.1f} /s  wins {wins} "
              "(validity, page text, plans; resets counted)")
        for w in args.workers:
            cfg.data.val_batch_size = w
            with Collector(cfg, policy) as c:
                c.start()
                done = list(c.run(Plan(list(episodes), 0, len(episodes), len(episodes), 0)))
                c_steps, c_wins = c.stats.steps, sum(e.success for e in done)
                print(f"  collector x{w:<2} {c_steps:>5}        {c_steps / c.stats.wall_s:>8.1f} /s  wins {c_wins}; "
                      f"start-up {c.stats.startup_s:.1f} s" + ("" if (c_steps, c_wins) == (steps, wins) else
                                                            "  warning: not the episodes played in process"))
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) * 0.75:
        print(f"note: load average {load:.1f} on {os.cpu_count()} CPUs; other work skews the wall times")
    return 0


if __name__ == "__main__":
    sys.exit(main())
