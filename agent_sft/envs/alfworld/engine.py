"""The ALFWorld/TextWorld engine, imported on first use, and the game files it plays.

Games are folders in ALFWorld's own layout, `<root>/json_2.1.1/<split>/<task>/<trial>/`, holding
`traj_data.json`, `initial_state.pddl` and (usually) `game.tw-pddl`. A trial without `game.tw-pddl`
gets one written into the agent-sft cache. The built-in game set is an archive in `games/` (authored by
`python -m agent_sft.envs.alfworld.make_games`), unpacked into the cache once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path

from agent_sft.envs.cache import unpack_once, writable_cache

logger = logging.getLogger(__name__)

GAME_FILE = "game.tw-pddl"
BUILTIN = "builtin"
BUILTIN_ARCHIVE = Path(__file__).parent / "games" / "builtin.tar.xz"
_INSTALL_HINT = "pip install 'agent-sft[alfworld]'"


def load_engine():
    """Import the ALFWorld/TextWorld engine, naming the extra to install when it is missing.

    Importing alfworld sets $ALFWORLD_DATA to its default when unset; that is undone here, so the
    variable keeps meaning "the user pointed at real ALFWorld data".
    """
    had_data_var = "ALFWORLD_DATA" in os.environ
    try:
        import textworld
        import textworld.gym
        from alfworld.agents.environment import alfred_tw_env
        from alfworld.agents.utils.misc import add_task_to_grammar
        from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH
    except ImportError as e:
        raise ImportError(
            f"the ALFWorld environment needs the alfworld package ({e}); install it with: {_INSTALL_HINT}"
        ) from e
    finally:
        if not had_data_var:
            os.environ.pop("ALFWORLD_DATA", None)
    return textworld, alfred_tw_env, add_task_to_grammar, ALFRED_PDDL_PATH, ALFRED_TWL2_PATH


@contextlib.contextmanager
def engine_guard(seed: int | None = None) -> Iterator[None]:
    """Keep `sys.argv` (the PDDL translator overwrites it) and seed the global `random` meanwhile.

    ALFWorld draws goal templates from the global `random`; seeding it here makes whatever the engine
    draws a function of `seed`, and the caller's random state is restored afterwards.
    """
    argv = list(sys.argv)
    state = random.getstate() if seed is not None else None
    if seed is not None:
        random.seed(seed)
    try:
        yield
    finally:
        sys.argv[:] = argv
        if state is not None:
            random.setstate(state)


def stable_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def write_game_file(trial_dir: str | Path, out_dir: str | Path | None = None, *, goal_seed: str = "") -> Path:
    """Write ALFWorld's `game.tw-pddl` for a trial folder (initial_state.pddl + traj_data.json).

    The file embeds ALFWorld's PDDL domain and grammar with the goal text filled in; the goal
    template is drawn from a seed derived from `goal_seed` (default: the trial folder name), so the
    same trial always reads the same goal. `traj_data.json` is copied next to it when `out_dir`
    differs from `trial_dir` (ALFWorld's handcoded expert reads it from there). Returns the path.
    """
    _, _, add_task_to_grammar, pddl_path, twl2_path = load_engine()
    trial_dir = Path(trial_dir)
    out_dir = Path(out_dir) if out_dir is not None else trial_dir
    traj_text = (trial_dir / "traj_data.json").read_text()
    traj = json.loads(traj_text)
    problem = (trial_dir / "initial_state.pddl").read_text()
    with engine_guard(stable_seed(goal_seed or trial_dir.name)):
        grammar = add_task_to_grammar(Path(twl2_path).read_text(), traj)
    data = {
        "pddl_domain": Path(pddl_path).read_text(),
        "grammar": grammar,
        "pddl_problem": problem,
        "solvable": True,
        "walkthrough": list(traj.get("walkthrough") or []),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if out_dir.resolve() != trial_dir.resolve():
        _atomic_write(out_dir / "traj_data.json", traj_text)
    path = out_dir / GAME_FILE
    _atomic_write(path, json.dumps(data))
    return path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def builtin_games_root(archive: str | Path = BUILTIN_ARCHIVE) -> Path:
    """Unpack the built-in game set once into the cache and write its game files; returns its root.

    The folder is keyed by a hash of the archive and of ALFWorld's domain and grammar, and is built
    in a temporary folder then renamed into place, so concurrent workers never see half a game set.
    """
    _, _, _, pddl_path, twl2_path = load_engine()
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"built-in ALFWorld game set not found at {archive}; reinstall agent-sft")
    h = hashlib.sha256(archive.read_bytes())
    h.update(Path(pddl_path).read_bytes())
    h.update(Path(twl2_path).read_bytes())

    def prepare(tmp: Path) -> None:
        for traj in sorted(tmp.glob("json_2.1.1/*/*/*/traj_data.json")):
            write_game_file(traj.parent, goal_seed=traj.parent.relative_to(tmp).as_posix())

    return unpack_once(archive, writable_cache("games"), h.hexdigest()[:16], prepare)


def resolve_root(data_path: str | Path | None) -> tuple[Path | None, str]:
    """(game root, description) for `data_path`; root None means the built-in set."""
    if data_path is None:
        env = os.environ.get("ALFWORLD_DATA")
        candidates = [Path(env).expanduser()] if env else []
        candidates.append(Path("~/.cache/alfworld").expanduser())
        for cand in candidates:
            if (cand / "json_2.1.1").is_dir():
                return cand, str(cand)
        where = f"$ALFWORLD_DATA={env}" if env else "$ALFWORLD_DATA (unset) and ~/.cache/alfworld"
        logger.warning(
            "no ALFWorld data (json_2.1.1) under %s; using agent-sft's built-in game set. "
            "Pass data_path=... or set ALFWORLD_DATA to play the real ALFWorld games.",
            where,
        )
        return None, BUILTIN
    if str(data_path) == BUILTIN:
        return None, BUILTIN
    path = Path(data_path).expanduser()
    if (path / "json_2.1.1").is_dir():
        return path, str(path)
    if path.name == "json_2.1.1" and path.is_dir():
        return path.parent, str(path.parent)
    raise FileNotFoundError(
        f"ALFWorld data_path {str(data_path)!r} has no json_2.1.1 folder; expected "
        f"<data_path>/json_2.1.1/{{train,valid_seen,valid_unseen}}/<task>/<trial>/ "
        f"(as alfworld-download writes it), or data_path='builtin' for the built-in games"
    )
