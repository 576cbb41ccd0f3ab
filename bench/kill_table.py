"""The kill table: SIGKILL every command that writes a dataset folder at seeded random moments.

    python bench/kill_table.py                      # 24 kills of each command, the fast scripted env
    python bench/kill_table.py --kills 20 --alfworld  # collect and resume on the built-in ALFWorld games too

For each command: how many runs were killed, how many killed folders did not load in a fresh process
(`load_dataset` of every listed config, `agent_sft.load` of both), episodes lost or duplicated, and how
many folders, after running the same command again, differ from an uninterrupted run (timing aside).
The scenarios are those of tests/test_faults.py (tests/faults.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import faults  # noqa: E402


def alfworld_scenarios(episodes: int) -> list[faults.Scenario]:
    """collect and a resume on the built-in ALFWorld games with the planner expert (the real engine)."""
    empty = faults.scratch()
    env = {"ALFWORLD_DATA": empty}

    def args(extra=()):
        return [*faults.CLI, "collect", "output.dir=ds", f"env.num_episodes={episodes}", "data.val_batch_size=4",
                "output.flush_every_s=0.5", "--no-progress", *extra]

    def prepare_resume(wd: str) -> list[str]:
        p = faults.run(args() + [f"env.num_episodes={episodes // 2}"], wd, env)
        assert p.returncode == 0, p.stderr[-2000:]
        faults._with_errors(os.path.join(wd, "ds"), every=3)
        return args()

    return [faults.Scenario("collect (ALFWorld)", lambda wd: args(), env=env),
            faults.Scenario("resume (ALFWorld, error episodes to replay)", prepare_resume, env=env)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=24, help="kill attempts per command")
    ap.add_argument("--alfworld", action="store_true", help="also collect and resume on the built-in ALFWorld games")
    ap.add_argument("--alfworld-episodes", type=int, default=8)
    ap.add_argument("--only-alfworld", action="store_true")
    a = ap.parse_args()
    base = faults.scratch()
    t0 = time.monotonic()
    try:
        h = faults.Harness(base)
        scenarios = [] if a.only_alfworld else faults.all_scenarios()
        if a.alfworld or a.only_alfworld:
            scenarios += alfworld_scenarios(a.alfworld_episodes)
        h.setup(scenarios)
        for sc in scenarios:
            print(f"{sc.name}: uninterrupted run {sc.duration_s:.1f} s, {len(sc.reference['raw'])} episodes, "
                  f"{len(sc.reference['sft'])} sft rows", flush=True)
        trials = []
        for sc in scenarios:  # one scenario at a time keeps the scratch space small
            trials += h.trials([(sc, list(range(a.kills)))])
            bad = [t for t in trials if t.scenario == sc.name and (not t.loads or t.lost or t.duplicated or not t.final_identical)]
            for t in bad:
                print(f"  FAILED {t}", flush=True)
            print(f"{sc.name}: {a.kills} runs done ({time.monotonic() - t0:.0f} s)", flush=True)
        print()
        print(faults.summarize(trials))
        return 1 if any(not t.loads or t.lost or t.duplicated or not t.final_identical for t in trials) else 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
