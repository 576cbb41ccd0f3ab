"""TextWorld's task types (a challenge and a level, e.g. `tw-cooking-l2`), the built-in levels and the experts."""

from __future__ import annotations

LEVELS: dict[str, dict[str, list[str]]] = {
    # tw-simple has one fixed house; levels change how often points come and how much the goal says.
    "tw-simple": {
        "l1": ["--rewards", "dense", "--goal", "detailed"],
        "l2": ["--rewards", "balanced", "--goal", "detailed"],
        "l3": ["--rewards", "sparse", "--goal", "brief"],
    },
    # More ingredients, rooms and preparation skills per level; the recipe is drawn from the seed.
    "tw-cooking": {
        "l1": ["--recipe", "1", "--take", "1", "--go", "1"],
        "l2": ["--recipe", "2", "--take", "2", "--go", "6", "--open", "--cut"],
        "l3": ["--recipe", "3", "--take", "3", "--go", "9", "--open", "--cook", "--cut"],
    },
    # A chain of rooms to the coin: 5 rooms; 5 with dead ends (10 rooms); 10 with dead ends (20 rooms).
    "tw-coin_collector": {
        "l1": ["--level", "5"],
        "l2": ["--level", "105"],
        "l3": ["--level", "110"],
    },
    # Find an object in a maze: easy (5 rooms), medium (closed doors and containers), hard (locks).
    "tw-treasure_hunter": {
        "l1": ["--level", "5"],
        "l2": ["--level", "15"],
        "l3": ["--level", "25"],
    },
}
"""Built-in set: challenge -> level -> the challenge's `tw-make` arguments."""

TASK_TYPES = tuple(f"{challenge}-{level}" for challenge, levels in LEVELS.items() for level in levels)
"""The built-in games' task types. A user's games report their challenge (`tw-cooking`) or `custom`."""

EXPERTS = ("walkthrough", "policy")


def select_task_types(wanted: list[str] | str | None, available: list[str], source: str) -> list[str]:
    """The task types of `available` that `wanted` names: a type itself, or a challenge for all its levels.

    Raises:
        ValueError: a name matches none of `available` (the message lists them).
    """
    if wanted is None:
        return list(available)
    if isinstance(wanted, str):
        wanted = [wanted]
    out: list[str] = []
    for name in wanted:
        key = str(name).strip()
        hits = [t for t in available if t == key or t.startswith(key + "-")]
        if not hits:
            raise ValueError(
                f"unknown TextWorld task type {name!r} for the games in {source}; "
                f"allowed: {', '.join(available)} (or a challenge name for all its levels)"
            )
        out.extend(t for t in hits if t not in out)
    return out
