"""The `solver` expert: shortest plans from a game's current state, in the game's action syntax.

Tower of Hanoi uses the classic recursion (optimal from any legal position); FrozenLake and Sokoban a
breadth-first search over positions (Sokoban: player and boxes), so every plan is a shortest one.
Minesweeper has no expert: winning it takes guesses no plan can know in advance. The functions take
plain data read from the engine's state, so they never depend on textarena.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

MOVES = (("up", (-1, 0)), ("down", (1, 0)), ("left", (0, -1)), ("right", (0, 1)))
"""Directions in the order FrozenLake and Sokoban list them, as (name, (row step, column step))."""

SOKOBAN_STATE_LIMIT = 500_000
"""States a Sokoban search may visit before it gives up (a 6x6 room with 3 boxes has a few thousand)."""


def hanoi_plan(towers: Mapping[str, Sequence[int]], target: str = "C") -> list[str]:
    """The shortest sequence of moves `[X Y]` putting every disk on `target`.

    Args:
        towers: tower name -> its disks from bottom to top (disk 1 is the smallest), as the game keeps them.
        target: the tower that must end up holding every disk.
    """
    peg = {disk: name for name, disks in towers.items() for disk in disks}
    names = list(towers)
    moves: list[str] = []

    def place(disk: int, dest: str) -> None:
        # Put disks 1..disk on `dest`: the largest moves at most once, after the others cleared the way.
        if disk == 0:
            return
        src = peg[disk]
        if src == dest:
            place(disk - 1, dest)
            return
        spare = next(n for n in names if n not in (src, dest))
        place(disk - 1, spare)
        moves.append(f"[{src} {dest}]")
        peg[disk] = dest
        place(disk - 1, dest)

    place(max(peg, default=0), target)
    return moves


def _path(parents: dict, end) -> list[str]:
    out = []
    while parents[end] is not None:
        end, move = parents[end]
        out.append(f"[{move}]")
    return out[::-1]


def frozenlake_plan(grid: Sequence[Sequence[str]], start: tuple[int, int], goal: tuple[int, int]) -> list[str]:
    """The shortest walk from `start` to `goal` around the holes ('H'); [] when there is none."""
    rows, cols = len(grid), len(grid[0]) if grid else 0
    start, goal = tuple(start), tuple(goal)
    if grid[start[0]][start[1]] == "H":
        return []
    parents: dict = {start: None}
    queue = deque([start])
    while queue:
        pos = queue.popleft()
        if pos == goal:
            return _path(parents, pos)
        for name, (dr, dc) in MOVES:
            r, c = pos[0] + dr, pos[1] + dc
            if 0 <= r < rows and 0 <= c < cols and (r, c) not in parents and grid[r][c] != "H":
                parents[(r, c)] = (pos, name)
                queue.append((r, c))
    return []


def sokoban_plan(
    walls: Iterable[tuple[int, int]],
    targets: Iterable[tuple[int, int]],
    boxes: Iterable[tuple[int, int]],
    player: tuple[int, int],
    shape: tuple[int, int],
) -> list[str]:
    """The fewest moves that put every box on a target; [] when none is found.

    Args:
        walls: wall cells; targets: goal cells; boxes: box cells; player: the player's cell (row, column).
        shape: the room's (rows, columns): cells outside are walls too.
    """
    walls = {tuple(w) for w in walls}
    targets = frozenset(tuple(t) for t in targets)
    rows, cols = shape

    def free(cell: tuple[int, int]) -> bool:
        return 0 <= cell[0] < rows and 0 <= cell[1] < cols and cell not in walls

    start = (tuple(player), frozenset(tuple(b) for b in boxes))
    parents: dict = {start: None}
    queue = deque([start])
    while queue and len(parents) < SOKOBAN_STATE_LIMIT:
        state = queue.popleft()
        pos, crates = state
        if crates <= targets:
            return _path(parents, state)
        for name, (dr, dc) in MOVES:
            nxt = (pos[0] + dr, pos[1] + dc)
            if not free(nxt):
                continue
            if nxt in crates:
                beyond = (nxt[0] + dr, nxt[1] + dc)
                if not free(beyond) or beyond in crates:
                    continue
                new = (nxt, (crates - {nxt}) | {beyond})
            else:
                new = (nxt, crates)
            if new not in parents:
                parents[new] = (state, name)
                queue.append(new)
    return []
