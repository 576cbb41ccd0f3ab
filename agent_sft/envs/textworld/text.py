"""The text between agent and game: commands made safe for the interpreter, observations freed of its chrome."""

from __future__ import annotations

import re

REFUSED = "That command is not available in this game."
"""What the env answers, without asking the game, to a refused interpreter command."""

_META_VERBS = frozenset(
    {"save", "restore", "script", "transcript", "unscript", "noscript", "restart", "quit", "q", "undo"}
)
# Inform runs several commands typed on one line, separated by periods, commas or "then".
_SEPARATORS = re.compile(r"[.,]|\bthen\b", re.IGNORECASE)
_STATUS_LINE = re.compile(r"(?:\A|\n)>[^\n]*\Z")  # the prompt and status line ("> ... -= Kitchen =-7/20")
_BLANK_RUN = re.compile(r"\n[ \t]*(\n[ \t]*)+\n")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


def sanitize(action: str) -> str:
    """One line of printable text: line breaks would send the rest as further commands."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(action)).split())


def is_refused(command: str) -> bool:
    """Whether a command reaches for the interpreter itself: saving or restoring files, transcripts,
    restarting or quitting the story, undo, or TextWorld's `tw-*` control commands. Those would write
    files or move the story away from the state TextWorld tracks."""
    for part in _SEPARATORS.split(command.lower()):
        words = part.split()
        if words and (words[0] in _META_VERBS or words[0].startswith("tw-")):
            return True
    return False


def clean_feedback(text: str, first: bool = False) -> str:
    """The game's text without the interpreter's prompt and status line, and runs of blank lines.

    On the first observation, the ASCII-art banner (the lines before the first one holding a letter
    or digit) goes too.
    """
    text = _STATUS_LINE.sub("", text.rstrip())
    if first:
        lines = text.split("\n")
        start = next((i for i, line in enumerate(lines) if any(c.isalnum() for c in line)), len(lines))
        text = "\n".join(lines[start:])
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_RUN.sub("\n\n", text).strip()


def one_line(text: str) -> str:
    return " ".join(str(text).split())
