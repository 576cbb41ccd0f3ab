"""TextWorld game files: finding and checking them, reading their metadata, and the built-in set.

A playable game is a `.z8` story file with its `.json` game data next to it (as `tw-make` writes
them): the story file runs in Jericho's Z-machine interpreter, the json lets TextWorld track the
game state (admissible commands, the winning policy). Story files are checked here before the
interpreter sees them, because frotz ends the whole process on a malformed one.

The built-in set is an archive in `games/` (made by `python -m agent_sft.envs.textworld.make_games`),
unpacked once into the agent-sft cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from agent_sft.envs.cache import unpack_once, writable_cache

BUILTIN = "builtin"
CUSTOM = "custom"
BUILTIN_ARCHIVE = Path(__file__).parent / "games" / "builtin.tar.xz"
INSTALL_HINT = "pip install 'agent-sft[textworld]'"
CHALLENGES = ("tw-simple", "tw-cooking", "tw-coin_collector", "tw-treasure_hunter")
_BUILTIN_STEM = re.compile(r"^(?P<type>tw-[a-z_]+-l\d+)-s\d+$")


class GameFileError(ValueError):
    """A game the user pointed at cannot be played; the message names the file and why."""


def load_engine(generator: bool = False):
    """Import TextWorld (and its challenge generators when `generator`), naming the extra when missing."""
    try:
        import textworld
        import textworld.challenges as challenges

        if generator:
            import textworld.generator  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the TextWorld environment needs the textworld package ({e}); install it with: "
                          f"{INSTALL_HINT}") from e
    return textworld, challenges


def check_story(story: Path) -> None:
    """Refuse a story file the interpreter cannot run (frotz would exit the process on it).

    Raises:
        GameFileError: not a .z8 file with its .json, a bad Z-machine header, a wrong length or checksum,
            or game data that is not TextWorld's json.
    """
    if story.suffix == ".ulx":
        raise GameFileError(
            f"{story}: Glulx (.ulx) games cannot be played with TextWorld 1.7, which dropped Glulx; "
            "make the game as .z8 (tw-make ... --format z8)"
        )
    if story.suffix != ".z8":
        raise GameFileError(f"{story}: not a TextWorld game file; expected a .z8 story file with its .json")
    try:
        data = story.read_bytes()
    except OSError as e:
        raise GameFileError(f"{story}: cannot read the story file ({e.strerror or e})") from None
    if len(data) < 64 or data[0] != 8:
        raise GameFileError(f"{story}: not a Z-machine version 8 story file (bad header)")
    length = int.from_bytes(data[0x1A:0x1C], "big") * 8
    if not 64 <= length <= len(data):
        raise GameFileError(f"{story}: truncated story file ({len(data)} bytes, the header says {length})")
    checksum = int.from_bytes(data[0x1C:0x1E], "big")
    if checksum and sum(data[0x40:length]) & 0xFFFF != checksum:
        raise GameFileError(f"{story}: corrupt story file (checksum mismatch)")
    read_game_data(story)


def read_game_data(story: Path) -> dict:
    """The game's `.json` (TextWorld's serialized game), checked for the parts the engine needs."""
    path = story.with_suffix(".json")
    if not path.is_file():
        raise GameFileError(
            f"{story}: no game data {path.name} next to it; TextWorld needs the .json that tw-make writes "
            "with the story file"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GameFileError(f"{path}: unreadable TextWorld game data ({e})") from None
    if not isinstance(data, dict) or not {"world", "grammar", "quests", "infos"} <= set(data):
        raise GameFileError(f"{path}: not TextWorld game data (expected the json tw-make writes)")
    return data


def challenge_of(data: dict) -> str:
    """The TextWorld challenge a game was made with, read from its metadata uuid; else `custom`."""
    uuid = str((data.get("metadata") or {}).get("uuid") or "")
    for name in CHALLENGES:
        if uuid.startswith(name + "-"):
            return name
    return CUSTOM


def builtin_task_type(stem: str) -> str:
    """A built-in game's task type from its file stem: `tw-cooking-l2-s1` -> `tw-cooking-l2`."""
    m = _BUILTIN_STEM.match(stem)
    if m is None:
        raise GameFileError(f"built-in game {stem!r} is not named <challenge>-l<level>-s<seed>; reinstall agent-sft")
    return m.group("type")


def find_games(path: str | os.PathLike) -> tuple[Path, list[Path]]:
    """(root, story files) for a game file or a folder of them (searched recursively), all checked.

    The root is what task ids are relative to: the folder, or the file's own folder.

    Raises:
        GameFileError: the path does not exist, a folder holds no games, or a game cannot be played.
    """
    p = Path(path).expanduser()
    if p.suffix == ".json" and p.with_suffix(".z8").is_file():
        p = p.with_suffix(".z8")  # the game's data file named instead of its story file
    if p.is_file():
        check_story(p)
        return p.parent, [p]
    if not p.is_dir():
        raise GameFileError(f"{path}: no such game file or folder")
    stories = sorted(p.rglob("*.z8"), key=lambda s: s.relative_to(p).as_posix())
    glulx = [s for s in sorted(p.rglob("*.ulx")) if not s.with_suffix(".z8").is_file()]
    if glulx:
        check_story(glulx[0])
    if not stories:
        raise GameFileError(f"{path}: no TextWorld games (.z8 story files with their .json) in this folder")
    for story in stories:
        check_story(story)
    return p, stories


def builtin_games_root(archive: Path = BUILTIN_ARCHIVE) -> Path:
    """Unpack the built-in game set once into the cache (keyed by the archive's hash); returns its folder.

    The set is unpacked in a temporary folder and renamed into place, so concurrent workers never
    see half of it. An unwritable cache falls back to the system's temporary folder.
    """
    if not archive.is_file():
        raise FileNotFoundError(f"built-in TextWorld game set not found at {archive}; reinstall agent-sft")
    key = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    return unpack_once(archive, writable_cache("textworld"), key)
