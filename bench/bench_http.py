"""Steps/s through the `http` env (an `agent-sft serve-env` server on loopback) against the same env in process.

    python bench/bench_http.py                        # babyai, 32 episodes, 1 and 16 sessions
    python bench/bench_http.py --env textworld --episodes 16 --parallel 1 4

The same plan (env, seed, episodes) is played with the env's expert four ways: in process with the
`thread` env backend (1 and N envs), and through `http` (1 and N sessions, `env.backend=thread`, one
server). The overhead per step is the 1-session time per step minus the in-process one. Session and
worker start-up are timed apart (paid once per env). The episodes must match.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def start_server(env: str, max_sessions: int, log_dir: str) -> tuple[subprocess.Popen, str]:
    out = open(os.path.join(log_dir, "server.out"), "w")
    err = open(os.path.join(log_dir, "server.err"), "w")
    p = subprocess.Popen([sys.executable, "-m", "agent_sft", "serve-env", env, "--port", "0",
                          "--max-sessions", str(max_sessions)], stdout=out, stderr=err)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = open(out.name).read()
        for line in text.splitlines():
            if line.startswith("serving ") and " on http://" in line:
                return p, line.split(" on ", 1)[1].split()[0]
        if p.poll() is not None:
            raise RuntimeError(f"the server exited: {open(err.name).read()[-2000:]}")
        time.sleep(0.1)
    p.kill()
    raise RuntimeError("the server did not start")


def play(overrides: list[str]) -> tuple[int, int, float, float]:
    """(steps, wins, seconds in the turn loop, start-up seconds) of one run through the collector."""
    from agent_sft.config import load_config
    from agent_sft.policies.expert import ExpertPolicy
    from agent_sft.rollout import Collector
    from agent_sft.run import resolve

    run = resolve(load_config(None, overrides, environ={}))  # asks the env servers what they serve
    with Collector(run, ExpertPolicy()) as c:
        episodes = list(c.run(c.plan()))
        return c.stats.steps, sum(e.success for e in episodes), c.stats.wall_s, c.stats.startup_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="babyai")
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 16])
    args = ap.parse_args()
    common = [f"env.num_episodes={args.episodes}", "env.seed=0", "env.backend=thread"]
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_server(args.env, max(args.parallel) * 2, tmp)
        try:
            rows = []
            for n in args.parallel:
                rows.append((f"in process, {n} env{'s' if n > 1 else ''}",
                             *play([f"env.env_name={args.env}", f"data.val_batch_size={n}", *common])))
                rows.append((f"http, {n} session{'s' if n > 1 else ''}",
                             *play(["env.env_name=http", f"env.http.url={url}", f"data.val_batch_size={n}", *common])))
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"{args.env}, {args.episodes} episodes with its expert, {os.cpu_count()} CPUs, one server on loopback")
    print(f"{'':<24}{'steps':>7}{'wins':>6}{'seconds':>9}{'steps/s':>9}{'ms/step':>9}{'start-up s':>12}")
    for name, steps, wins, secs, startup in rows:
        print(f"{name:<24}{steps:>7}{wins:>6}{secs:>9.2f}{steps / secs:>9.1f}{1000 * secs / steps:>9.2f}{startup:>12.2f}")
    local, remote = rows[0], rows[1]
    print(f"\noverhead per step through http (1 session vs 1 env in process): "
          f"{1000 * (remote[3] / remote[1] - local[3] / local[1]):+.2f} ms/step; "
          f"http/in-process steps/s: " + ", ".join(
              f"{n}: {(rows[2 * i + 1][1] / rows[2 * i + 1][3]) / (rows[2 * i][1] / rows[2 * i][3]):.2f}x"
              for i, n in enumerate(args.parallel)))
    if any(r[1:3] != rows[0][1:3] for r in rows):
        print("warning: the runs played different episodes (steps or wins differ)")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) * 0.75:
        print(f"note: load average {load:.1f} on {os.cpu_count()} CPUs; other work skews the wall times")
    return 0


if __name__ == "__main__":
    sys.exit(main())
