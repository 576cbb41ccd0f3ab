"""Shortest-path experts: breadth-first search on the FrozenLake map, or on a toy-text env's transition table.

Both plan with the intended outcome of every action and replan after each step, so on slippery ice or a
rainy road they follow the shortest path from wherever the agent ended up; such a path can still fail
(the ice may slip the agent into a hole). Ties between equally short paths go to the earlier action id,
so plans are deterministic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from agent_sft.envs.gym.text import FROZENLAKE_MOVES


def frozenlake_plan(desc: Sequence[str], state: int, actions: Sequence[str]) -> list[str]:
    """The shortest move sequence from `state` to the goal that avoids holes ([] when there is none).

    Args:
        desc: the map rows (`S`, `F`, `H`, `G`).
        state: the player's cell, `row * ncol + col`.
        actions: the action names in gymnasium's id order (left, down, right, up).
    """
    nrow, ncol = len(desc), len(desc[0])
    start = divmod(int(state), ncol)
    if desc[start[0]][start[1]] in "GH":
        return []
    back: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        for name in actions:
            dr, dc = FROZENLAKE_MOVES[name]
            nxt = (min(max(cell[0] + dr, 0), nrow - 1), min(max(cell[1] + dc, 0), ncol - 1))
            if nxt in back or desc[nxt[0]][nxt[1]] == "H":
                continue
            back[nxt] = (cell, name)
            if desc[nxt[0]][nxt[1]] == "G":
                return _unwind(back, nxt)
            queue.append(nxt)
    return []


class TablePlanner:
    """Shortest plans over a tabular env's transitions `P[state][action] = [(prob, next, reward, terminated)]`.

    A transition ending the episode counts as the goal when `is_goal(reward)`; one ending it otherwise
    (a hole, a cliff that ends the game) is never taken. The intended outcome of an action is its most
    likely transition, the first listed on a tie (gymnasium lists the intended move first for Taxi's rain).
    The plan is kept while the env follows it and recomputed when it does not.

    Args:
        table: the env's `P`.
        actions: the action names, by action id from `first_id` on.
        is_goal: whether a terminating transition with this reward is a success.
        first_id: the id of the first action (a `Discrete` space's `start`).
    """

    def __init__(
        self, table: dict, actions: Sequence[str], is_goal: Callable[[float], bool], first_id: int = 0
    ) -> None:
        self.table = table
        self.actions = [(first_id + i, name) for i, name in enumerate(actions)]
        self.is_goal = is_goal
        self._origin = -1  # the state the kept plan starts from
        self._steps: list[tuple[str, int]] = []  # (action, state expected after it)

    def plan(self, state: int) -> list[str]:
        """The remaining shortest plan from `state` ([] when the goal cannot be reached)."""
        state = int(state)
        if state != self._origin or not self._steps:
            self._origin, self._steps = state, self._search(state)
        return [a for a, _ in self._steps]

    def advance(self, action: str, state: int) -> None:
        """Note the step just taken: the kept plan moves on when it went as planned."""
        if self._steps and self._steps[0] == (action, int(state)):
            self._origin, self._steps = int(state), self._steps[1:]
        else:
            self._origin, self._steps = -1, []

    def _search(self, start: int) -> list[tuple[str, int]]:
        back: dict[int, tuple[int, tuple[str, int]] | None] = {start: None}
        queue = deque([start])
        while queue:
            s = queue.popleft()
            for a, name in self.actions:
                outcomes = self.table[s].get(a) if isinstance(self.table[s], dict) else self.table[s][a]
                if not outcomes:
                    continue
                _, nxt, reward, done = max(outcomes, key=lambda t: t[0])  # max keeps the first on a tie
                nxt = int(nxt)
                if done:
                    if self.is_goal(float(reward)):
                        back[-1] = (s, (name, nxt))
                        return _unwind(back, -1)
                    continue
                if nxt not in back:
                    back[nxt] = (s, (name, nxt))
                    queue.append(nxt)
        return []


def _unwind(back: dict, end) -> list:
    """The labels on the path from the search's root to `end`, in order."""
    out = []
    node = end
    while back[node] is not None:
        node, label = back[node]
        out.append(label)
    return out[::-1]
