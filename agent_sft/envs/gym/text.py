"""Gymnasium observations as text: the ansi render made plain, FrozenLake and Taxi described.

The FrozenLake and Taxi texts are gymnasium's ansi maps with the agent drawn as a letter (the ansi
render marks it by color only, which plain text loses), a line saying where everything is, and a line
saying what the last action did. All of them are pure functions of the engine's state.
"""

from __future__ import annotations

import re
from typing import Any

from agent_sft.envs.hooks import load_function as load_function  # user functions: re-exported from here

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

FROZENLAKE_MOVES = {"left": (0, -1), "down": (1, 0), "right": (0, 1), "up": (-1, 0)}
TAXI_MOVES = {"south": (1, 0), "north": (-1, 0), "east": (0, 1), "west": (0, -1)}
TAXI_STOPS = ("R", "G", "Y", "B")  # gymnasium's locs order: Red, Green, Yellow, Blue


def strip_ansi(text: str) -> str:
    """`text` without ANSI escape sequences (gymnasium's ansi renders color the agent's cell)."""
    return _ANSI.sub("", text)


def ansi_text(render: Any, colors: bool = False) -> str:
    """An ansi render as an observation: blank lines around it dropped, colors removed unless `colors`."""
    if not isinstance(render, str):
        raise TypeError(f"the ansi render returned {type(render).__name__}, not text; give obs_to_text")
    return (render if colors else strip_ansi(render)).strip("\n")


def _cell(row: int, col: int) -> str:
    return f"row {row + 1}, column {col + 1}"


def _direction(delta: tuple[int, int], moves: dict[str, tuple[int, int]]) -> str | None:
    return next((name for name, d in moves.items() if d == delta), None)


# --- FrozenLake ------------------------------------------------------------------------------------


def frozenlake_text(desc: list[str], state: int, last: tuple[str, int] | None = None) -> str:
    """The lake with the player as `P`, where the player and the goal are, and what the last move did.

    Args:
        desc: the map rows (`S` start, `F` frozen, `H` hole, `G` goal).
        state: the player's cell, `row * ncol + col` (gymnasium's observation).
        last: (the action name taken, the state before it), or None at the start.
    """
    ncol = len(desc[0])
    row, col = divmod(int(state), ncol)
    grid = [list(line) for line in desc]
    here = grid[row][col]
    grid[row][col] = "P"
    goal = next((r, c) for r, line in enumerate(desc) for c, ch in enumerate(line) if ch == "G")
    lines = []
    if last is not None:
        lines.append(_frozenlake_feedback(last[0], divmod(int(last[1]), ncol), (row, col), here))
    lines.append(f"The frozen lake, {len(desc)}x{ncol} (S: start, F: frozen ice, H: hole, G: goal, P: you):")
    lines += ["".join(line) for line in grid]
    where = f"You are at {_cell(row, col)}"
    if here == "H":
        where += ", in a hole"
    elif here == "G":
        where += ", on the goal"
    lines.append(f"{where}; the goal is at {_cell(*goal)}.")
    return "\n".join(lines)


def _frozenlake_feedback(action: str, before: tuple[int, int], after: tuple[int, int], here: str) -> str:
    moved = _direction((after[0] - before[0], after[1] - before[1]), FROZENLAKE_MOVES)
    if moved is None:
        text = f"You tried to move {action}, but the edge of the lake stopped you."
    elif moved == action:
        text = f"You moved {action}."
    else:
        text = f"You tried to move {action} but slipped {moved}."
    if here == "H":
        text += " You fell into a hole."
    elif here == "G":
        text += " You reached the goal!"
    return text


# --- Taxi ------------------------------------------------------------------------------------------


def taxi_text(
    desc: list[str], locs: list[tuple[int, int]], state: tuple[int, int, int, int], last: tuple | None = None
) -> str:
    """The city with the taxi as `T`, where the taxi, passenger and destination are, and what happened.

    Args:
        desc: gymnasium's Taxi map rows (`|` walls, `:` open, the stops as letters).
        locs: the four stops' (row, col), in gymnasium's order R, G, Y, B.
        state: the decoded state (taxi row, taxi col, passenger index: a stop or 4 = in the taxi, destination).
        last: (action name, decoded state before, reward, terminated), or None at the start.
    """
    row, col, passenger, dest = state
    grid = [list(line) for line in desc]
    grid[1 + row][2 * col + 1] = "T"
    lines = []
    if last is not None:
        size = (len(desc) - 2, (len(desc[0]) - 1) // 2)
        lines.append(_taxi_feedback(last[0], last[1], state, last[2], last[3], size))
    lines.append("The city (R, G, Y, B: the four stops; |: a wall; T: the taxi):")
    lines += ["".join(line) for line in grid]
    at_stop = next((TAXI_STOPS[i] for i, loc in enumerate(locs) if loc == (row, col)), None)
    taxi = f"The taxi is at stop {at_stop} ({_cell(row, col)})." if at_stop else f"The taxi is at {_cell(row, col)}."
    goal = f"{TAXI_STOPS[dest]} ({_cell(*locs[dest])})"
    if passenger == 4:
        who = f"The passenger is in the taxi and wants to go to {goal}."
    elif passenger == dest:
        who = f"The passenger has arrived at {goal}."
    else:
        who = f"The passenger is waiting at {TAXI_STOPS[passenger]} ({_cell(*locs[passenger])}) and wants to go to {goal}."
    lines.append(f"{taxi} {who}")
    return "\n".join(lines)


def _taxi_feedback(
    action: str, before: tuple, after: tuple, reward: float, terminated: bool, size: tuple[int, int]
) -> str:
    (r0, c0, p0, d0), (r1, c1, p1, d1) = before, after
    if action in TAXI_MOVES:
        moved = _direction((r1 - r0, c1 - c0), TAXI_MOVES)
        if moved is None:
            dr, dc = TAXI_MOVES[action]
            inside = 0 <= r0 + dr < size[0] and 0 <= c0 + dc < size[1]
            blocker = "a wall" if inside else "the edge of the city"
            text = f"You tried to drive {action}, but {blocker} is in the way."
        elif moved == action:
            text = f"You drove {action}."
        else:
            text = f"You tried to drive {action} but skidded {moved} on the wet road."
    elif action == "pickup":
        if p0 != 4 and p1 == 4:
            text = "You picked up the passenger."
        elif p0 == 4:
            text = "The passenger is already in the taxi."
        else:
            text = "There is no passenger to pick up here."
    elif terminated and reward > 0:
        text = "You dropped off the passenger at their destination!"
    elif p0 == 4 and p1 != 4:
        text = f"You dropped off the passenger at {TAXI_STOPS[p1]}, which is not their destination."
    else:
        text = "You cannot drop off a passenger here." if p0 == 4 else "There is no passenger in the taxi."
    if d1 != d0:
        text += f" The passenger changed their mind: they now want to go to {TAXI_STOPS[d1]}."
    return text

