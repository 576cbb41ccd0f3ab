"""What agent-sft knows about gymnasium games without importing gymnasium: action names, goals, task ids.

Gymnasium's toy-text envs number their actions but do not name them; the names below are the ones the
built-in envs (`frozenlake`, `taxi`) use, and the generic `gymnasium` env uses them too when it plays
one of these ids without `action_names` of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

FROZENLAKE_ID = "FrozenLake-v1"
TAXI_ID = "Taxi-v4"
SPLIT = "seeded"
EXPERT = "shortest_path"

FROZENLAKE_ACTIONS = ("left", "down", "right", "up")
TAXI_ACTIONS = ("south", "north", "east", "west", "pickup", "dropoff")


@dataclass(frozen=True)
class KnownGame:
    """A gymnasium id whose actions, success reward and goal agent-sft knows."""

    actions: tuple[str, ...]
    success_reward: float
    goal: str


FROZENLAKE_GOAL = "Cross the frozen lake from the start S to the goal G without stepping into a hole H."
TAXI_GOAL = "Pick up the passenger with the taxi and drop them off at their destination."

KNOWN_GAMES = {
    FROZENLAKE_ID: KnownGame(FROZENLAKE_ACTIONS, 1.0, FROZENLAKE_GOAL),
    "FrozenLake8x8-v1": KnownGame(FROZENLAKE_ACTIONS, 1.0, FROZENLAKE_GOAL),
    TAXI_ID: KnownGame(TAXI_ACTIONS, 20.0, TAXI_GOAL),
}


def task_id(name: str, env_id: str, seed: int) -> str:
    """`<name>/<env_id>/<seed>`, the seed zero-padded to 4 digits (`frozenlake/FrozenLake-v1/0007`)."""
    return f"{name}/{env_id}/{seed:04d}"


def task_seeds(seeds: int, seed_offset: int) -> range:
    """The task seeds of a run: `seeds` of them from `seed_offset` on."""
    return range(seed_offset, seed_offset + seeds)


def normalize_action(text: str) -> str:
    """An action name compared loosely: lowercase, single spaces."""
    return " ".join(str(text).split()).lower()


def load_gymnasium():
    """The gymnasium module, or an ImportError naming the extra to install."""
    try:
        import gymnasium
    except ImportError as err:
        raise ImportError(
            f"the gymnasium envs need gymnasium: pip install 'agent-sft[gymnasium]' ({err})"
        ) from err
    return gymnasium
