"""Make agent-sft's built-in TextWorld game set with TextWorld's own challenge generators (as `tw-make`).

Four challenges at three levels each (`tasks.LEVELS`), a few fixed seeds per level (`SEEDS`). Each game is compiled
by Inform 7 to a `.z8` story file with its `.json` game data (the two files the engine plays; the
Inform 7 source is dropped), played once with its walkthrough and kept only if that wins. Inform 7
stamps the compile date into story files, so a regenerated set is equal in play but not in bytes:
the set is shipped as it was made, one `.tar.xz` archive (story files share most of their bytes, so
the archive is a fraction of the loose files).

    python -m agent_sft.envs.textworld.make_games                   # the package archive
    python -m agent_sft.envs.textworld.make_games --out /tmp/games  # loose files, usable as `games=`
"""

from __future__ import annotations

import argparse
import io
import lzma
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from agent_sft.envs.textworld.games import BUILTIN_ARCHIVE, load_engine
from agent_sft.envs.textworld.tasks import LEVELS

SEEDS = (1, 2, 3)
"""Games per challenge level. Game `s<k>` of level `l<n>` uses generator seed `100 * n + k`, so that levels
differing only in wording or rewards (tw-simple) still get different games."""


def game_stem(challenge: str, level: str, seed: int) -> str:
    """The built-in game's file stem, `<challenge>-<level>-s<seed>` (its task id's last part)."""
    return f"{challenge}-{level}-s{seed}"


def generator_seed(level: str, seed: int) -> int:
    return 100 * int(level.lstrip("l")) + seed


def make_game(challenge: str, args: list[str], seed: int, out_dir: Path, stem: str) -> Path:
    """Generate and compile one game into `out_dir/<stem>.z8` (+ `.json`); returns the story file."""
    textworld, challenges = load_engine(generator=True)
    _, make, add_arguments = challenges.CHALLENGES[challenge]
    parser = argparse.ArgumentParser(prog=f"tw-make {challenge}")
    add_arguments(parser)
    settings = vars(parser.parse_args(args + (["--recipe-seed", str(seed)] if challenge == "tw-cooking" else [])))
    with tempfile.TemporaryDirectory() as tmp:
        options = textworld.GameOptions()
        options.seeds = seed
        options.path = os.path.join(tmp, stem + ".z8")
        options.file_ext = ".z8"
        options.force_recompile = True
        game = make(settings=settings, options=options)
        story = Path(textworld.generator.compile_game(game, options))
        out_dir.mkdir(parents=True, exist_ok=True)
        for suffix in (".z8", ".json"):
            shutil.copyfile(story.with_suffix(suffix), out_dir / (stem + suffix))
    return out_dir / (stem + ".z8")


def wins_with_walkthrough(story: Path) -> int | None:
    """Steps the game's walkthrough takes to win it on the engine, or None when it does not win."""
    textworld, _ = load_engine()
    infos = textworld.EnvInfos(won=True, lost=True, extras=["walkthrough"])
    env = textworld.start(str(story), infos)
    try:
        state = env.reset()
        for n, command in enumerate(state["extra.walkthrough"] or [], 1):
            state, _, done = env.step(command)
            if done:
                return n if state["won"] else None
        return None
    finally:
        env.close()


def write_archive(folder: Path, path: Path) -> None:
    """A reproducible tar.xz of the folder's games (sorted names, no times or owners)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:xz", preset=9 | lzma.PRESET_EXTREME) as tar:
        for file in sorted(f for f in folder.iterdir() if f.suffix in (".z8", ".json")):
            data = file.read_bytes()
            info = tarfile.TarInfo(file.name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="game numbers per challenge level (see SEEDS)")
    ap.add_argument("--challenges", nargs="+", default=list(LEVELS), choices=list(LEVELS), help="challenges to make")
    ap.add_argument("--out", type=Path, help="write the games here as loose .z8 + .json files")
    ap.add_argument("--archive", type=Path, help=f"write the shipped archive here (default: {BUILTIN_ARCHIVE})")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out) if args.out is not None else Path(tmp)
        made = 0
        for challenge in args.challenges:
            for level, tw_args in LEVELS[challenge].items():
                for seed in args.seeds:
                    stem = game_stem(challenge, level, seed)
                    story = make_game(challenge, tw_args, generator_seed(level, seed), folder, stem)
                    steps = wins_with_walkthrough(story)
                    if steps is None:
                        raise RuntimeError(f"{stem}: the walkthrough does not win the game")
                    made += 1
                    print(f"  {stem}: walkthrough wins in {steps} steps", flush=True)
        if args.archive is not None or args.out is None:
            path = args.archive or BUILTIN_ARCHIVE
            write_archive(folder, path)
            print(f"wrote {made} games to {path} ({path.stat().st_size / 1e6:.2f} MB)")
        else:
            print(f"wrote {made} games to {folder}")
    print(f"done in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
