"""Collect expert trajectories on the built-in ALFWorld games from Python, then load them for training.

    pip install -e ".[alfworld]"
    python examples/collect_from_python.py [OUTPUT_DIR]

The same config keys as `agent-sft collect` (see `agent-sft collect --keys`); running it again resumes.
"""

from __future__ import annotations

import sys

import agent_sft


def main(out: str = "alfworld_expert_example") -> None:
    result = agent_sft.collect([
        "env.num_episodes=6",          # six built-in games (no ALFWorld download needed)
        "data.val_fraction=0.5",       # half of the tasks go to the validation split
        "loop.parallel=3",             # three envs in parallel
        "filters.require_success=true",  # sft keeps won episodes only; raw keeps every episode
        f"output.dir={out}",
    ])
    print(f"{result.run['episodes']} episodes played, {result.run['skipped_done']} already there; "
          f"folder success rate {100 * result.stats['success_rate']:.0f}%")
    sft = agent_sft.load(result.folder, "sft")
    print(sft)
    print(sft["train"][0]["messages"][-1]["content"])


if __name__ == "__main__":
    main(*sys.argv[1:])
