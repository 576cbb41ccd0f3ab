"""Author agent-sft's built-in ALFWorld game set, in ALFWorld's own format.

Each game is a trial folder `json_2.1.1/train/<task_type>-<Object>-None-<Recep>-<scene>/<trial>/` with
`initial_state.pddl` (an ALFRED-style PDDL problem: receptacles, objects, locations, the goal from
ALFWorld's goal library) and `traj_data.json` (task type, pddl_params, goal descriptions). Every game is
played by ALFWorld's planner expert on the real engine when it is made, and kept only if it is won.
Output is deterministic from `--seed`.

    python -m agent_sft.envs.alfworld.make_games                      # 12 per task type -> the package archive
    python -m agent_sft.envs.alfworld.make_games --per-type 1 --out /tmp/games   # ALFWorld-ready folder tree
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from agent_sft.envs.alfworld.authoring import author
from agent_sft.envs.alfworld.engine import BUILTIN_ARCHIVE, write_game_file
from agent_sft.envs.alfworld.env import AlfworldEnv
from agent_sft.envs.alfworld.tasks import TASK_TYPES


def verify(root: Path, rel: str, max_steps: int) -> list[str] | None:
    """Play the game with the planner expert; its winning walkthrough, or None if it is not won."""
    task_id = f"json_2.1.1/train/{rel}"
    env = AlfworldEnv(data_path=root, expert="planner", max_steps=max_steps, cache_size=1)
    try:
        obs, info = env.reset(seed=0, options={"task_id": task_id})
        actions = []
        for _ in range(max_steps):
            if not info["expert_plan"]:
                return None
            actions.append(info["expert_plan"][0])
            obs, reward, terminated, truncated, info = env.step(actions[-1])
            if terminated:
                return actions if info["won"] else None
            if truncated:
                return None
        return None
    finally:
        env.close()


def generate(per_type: int, seed: int, max_steps: int, log=print) -> dict[str, tuple[str, dict]]:
    """{relative trial path: (initial_state.pddl, traj_data)} for every kept game."""
    games = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for task_type in TASK_TYPES.values():
            kept, index = 0, 0
            while kept < per_type:
                if index >= per_type * 5:
                    raise RuntimeError(f"too many unsolvable {task_type} games; last tried index {index}")
                rel, problem, traj = author(task_type, seed, index)
                index += 1
                trial = root / "json_2.1.1" / "train" / rel
                trial.mkdir(parents=True)
                (trial / "initial_state.pddl").write_text(problem)
                (trial / "traj_data.json").write_text(json.dumps(traj, indent=1))
                write_game_file(trial, goal_seed=f"json_2.1.1/train/{rel}")
                t0 = time.perf_counter()
                walkthrough = verify(root, rel, max_steps)
                if walkthrough is None:
                    log(f"  dropped (planner did not win): {rel}")
                    continue
                traj["walkthrough"] = walkthrough
                games[rel] = (problem, traj)
                kept += 1
                b = traj["builtin"]
                log(f"  {rel}: {b['receptacles']} receptacles, {b['objects']} objects, "
                    f"plan {len(walkthrough)} steps ({time.perf_counter() - t0:.1f}s)")
    return games


def write_archive(games: dict[str, tuple[str, dict]], path: Path) -> None:
    """A reproducible tar.xz of initial_state.pddl + traj_data.json per game (no game files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:xz", preset=9) as tar:
        for rel in sorted(games):
            problem, traj = games[rel]
            for name, text in (("initial_state.pddl", problem), ("traj_data.json", json.dumps(traj, indent=1))):
                data = text.encode()
                info = tarfile.TarInfo(f"json_2.1.1/train/{rel}/{name}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))


def write_tree(games: dict[str, tuple[str, dict]], out: Path) -> None:
    """ALFWorld's layout with game files, usable as `AlfworldEnv(data_path=out)`."""
    for rel in sorted(games):
        problem, traj = games[rel]
        trial = out / "json_2.1.1" / "train" / rel
        trial.mkdir(parents=True, exist_ok=True)
        (trial / "initial_state.pddl").write_text(problem)
        (trial / "traj_data.json").write_text(json.dumps(traj, indent=1))
        write_game_file(trial, goal_seed=f"json_2.1.1/train/{rel}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-type", type=int, default=12, help="games per task type (six task types)")
    ap.add_argument("--seed", type=int, default=0, help="seed: the same seed gives the same games")
    ap.add_argument("--max-steps", type=int, default=50, help="the planner must win within this many steps")
    ap.add_argument("--out", type=Path, help="write an ALFWorld folder tree here (with game files)")
    ap.add_argument("--archive", type=Path, help=f"write the shipped archive here (default: {BUILTIN_ARCHIVE})")
    args = ap.parse_args(argv)
    if args.per_type < 1:
        ap.error("--per-type must be >= 1")
    t0 = time.perf_counter()
    games = generate(args.per_type, args.seed, args.max_steps)
    if args.out is not None:
        write_tree(games, args.out)
        print(f"wrote {len(games)} games to {args.out}")
    if args.archive is not None or args.out is None:
        path = args.archive or BUILTIN_ARCHIVE
        write_archive(games, path)
        print(f"wrote {len(games)} games to {path} ({path.stat().st_size / 1024:.1f} KiB)")
    print(f"done in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
