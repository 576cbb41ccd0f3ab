"""BabyAI in words: the actions as verbs, and the agent's partial view described from where it stands.

MiniGrid's observation `image` is the agent's view, a (view, view, 3) array of (object, colour, state)
indices (`minigrid.core.constants`) indexed [column, row]. The agent stands at the bottom centre,
(view // 2, view - 1), facing row 0; columns right of the centre are on its right. Cells it cannot see are
"unseen"; what it carries is drawn on its own cell. `direction` is a compass (0 = +x, east; 1 = +y,
south; 2 = west; 3 = north).

A view reads, for example:

    Mission: go to the red ball.
    You are facing north and carrying nothing.
    In front of you: an empty cell.
    You see:
    - a red ball 2 steps forward and 1 step left
    - a closed yellow door 3 steps forward and 2 steps right
    - a wall 3 steps forward
    - a wall 2 steps left

Objects and doors come nearest first. Walls are told only as the nearest one straight forward, left and
right: that gives the room's extent without listing every wall cell in sight.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ACTION_WORDS = {
    "left": "turn left",
    "right": "turn right",
    "forward": "move forward",
    "pickup": "pick up",
    "drop": "drop",
    "toggle": "toggle",
    "done": "done",
}
"""minigrid's `Actions` member names -> the words the env accepts (in the enum's order)."""

COMPASS = ("east", "south", "west", "north")
_STATES = {0: "open", 1: "closed", 2: "locked"}  # STATE_TO_IDX, for doors
_NOT_THINGS = {"unseen", "empty", "wall", "agent", "floor"}


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[dict[int, str], dict[int, str]]:
    from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT

    return dict(IDX_TO_OBJECT), dict(IDX_TO_COLOR)


def _article(words: str) -> str:
    return ("an " if words[:1] in "aeiou" else "a ") + words


def name_cell(cell: np.ndarray) -> str:
    """A cell of the view as a noun phrase: "a red ball", "a locked yellow door", "a wall"."""
    objects, colors = _tables()
    kind, color, state = objects[int(cell[0])], colors[int(cell[1])], int(cell[2])
    if kind == "empty":
        return "an empty cell"
    if kind == "unseen":
        return "something you cannot see"
    if kind == "wall":
        return "a wall"
    if kind == "door":
        return _article(f"{_STATES.get(state, 'closed')} {color} door")
    if kind == "goal":
        return _article(f"{color} goal square")
    if kind == "lava":
        return "lava"
    return _article(f"{color} {kind}")


def _steps(n: int, word: str) -> str:
    return f"{n} step{'s' if n != 1 else ''} {word}"


def where(forward: int, right: int) -> str:
    """A place relative to the agent: "2 steps forward and 1 step left", "3 steps right"."""
    parts = []
    if forward:
        parts.append(_steps(forward, "forward"))
    if right:
        parts.append(_steps(abs(right), "right" if right > 0 else "left"))
    return " and ".join(parts) or "here"


def visible_things(image: np.ndarray) -> list[str]:
    """What the agent sees besides walls, nearest first: "a red ball 2 steps forward and 1 step left"."""
    objects, _ = _tables()
    size = image.shape[0]
    ax, ay = size // 2, size - 1
    found = []
    for y in range(size):
        for x in range(size):
            if (x, y) == (ax, ay) or objects[int(image[x, y, 0])] in _NOT_THINGS:
                continue
            forward, right = ay - y, x - ax
            found.append((forward + abs(right), forward, right, f"{name_cell(image[x, y])} {where(forward, right)}"))
    return [text for *_, text in sorted(found)]


def nearest_walls(image: np.ndarray) -> list[str]:
    """The nearest visible wall straight forward, left and right: "a wall 3 steps forward"."""
    objects, _ = _tables()
    size = image.shape[0]
    ax, ay = size // 2, size - 1
    lines = (
        ("forward", [(ax, ay - d) for d in range(1, size)]),
        ("left", [(ax - d, ay) for d in range(1, ax + 1)]),
        ("right", [(ax + d, ay) for d in range(1, size - ax)]),
    )
    out = []
    for word, cells in lines:
        for d, (x, y) in enumerate(cells, start=1):
            kind = objects[int(image[x, y, 0])]
            if kind == "unseen":
                break
            if kind == "wall":
                out.append(f"a wall {_steps(d, word)}")
                break
    return out


def describe(image: np.ndarray, direction: int, mission: str) -> str:
    """The observation text for one view (see the module docstring)."""
    size = image.shape[0]
    ax, ay = size // 2, size - 1
    held = image[ax, ay]
    carrying = "nothing" if _tables()[0][int(held[0])] in ("empty", "unseen") else name_cell(held)
    lines = [
        f"Mission: {mission.strip().rstrip('.')}.",
        f"You are facing {COMPASS[int(direction) % 4]} and carrying {carrying}.",
        f"In front of you: {name_cell(image[ax, ay - 1])}.",
    ]
    seen = visible_things(image) + nearest_walls(image)
    lines.append("You see:" if seen else "You see nothing else around you.")
    lines.extend(f"- {s}" for s in seen)
    return "\n".join(lines)
