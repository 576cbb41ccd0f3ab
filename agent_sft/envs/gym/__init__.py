"""Gymnasium games as text: any env id with Discrete actions (`gymnasium`), and FrozenLake and Taxi built in.

`import agent_sft.envs.gym` stays light: gymnasium is imported when an env is built (and when the
generic env's options check an env id agent-sft does not know).
"""

from agent_sft.envs.gym.env import GameError, GymTextEnv
from agent_sft.envs.gym.games import EXPERT, FROZENLAKE_ACTIONS, FROZENLAKE_ID, SPLIT, TAXI_ACTIONS, TAXI_ID
from agent_sft.envs.gym.options import FrozenLakeOptions, GymnasiumOptions, TaxiOptions
from agent_sft.envs.gym.toy_text import FrozenLakeTextEnv, TaxiTextEnv
from agent_sft.envs.specs import EnvCard, EnvSpec

_SEEDS = "one task per seed (env.<name>.seeds from env.<name>.seed_offset on)"
_RUN_NOTES = {SPLIT: f"seeded tasks, {_SEEDS}: the task seed fixes the start, the episode seed the randomness after it"}
_COMMON = dict(
    packages=("gymnasium",),
    extra="gymnasium",
    expert_kwarg="expert",
    experts=(EXPERT,),
    templates="agent_sft.envs.gym:prompts",
)

GYMNASIUM_SPEC = EnvSpec(
    name="gymnasium",
    entry_point="agent_sft.envs.gym.env:GymTextEnv",
    options=GymnasiumOptions,
    **_COMMON,
    card=EnvCard(
        title="Gymnasium",
        description="Any gymnasium env with Discrete actions as a text game (ansi render or obs_to_text, named "
        "actions).",
        split_notes={SPLIT: f"a gymnasium env's seeded starts, {_SEEDS}"},
        expert_source="breadth-first search on the env's transition table (gymnasium's toy-text envs)",
        run_notes=_RUN_NOTES,
    ),
)

FROZENLAKE_SPEC = EnvSpec(
    name="frozenlake",
    entry_point="agent_sft.envs.gym.toy_text:FrozenLakeTextEnv",
    options=FrozenLakeOptions,
    **_COMMON,
    card=EnvCard(
        title="FrozenLake",
        description="Gymnasium's FrozenLake: cross the ice to the goal without falling into a hole; a random map "
        "per seed.",
        split_notes={SPLIT: f"FrozenLake maps made by gymnasium's generate_random_map, {_SEEDS}"},
        expert_source="breadth-first search on the FrozenLake map (the shortest path to the goal)",
        task_types=(FROZENLAKE_ID,),
        run_notes=_RUN_NOTES,
    ),
)

TAXI_SPEC = EnvSpec(
    name="taxi",
    entry_point="agent_sft.envs.gym.toy_text:TaxiTextEnv",
    options=TaxiOptions,
    **_COMMON,
    card=EnvCard(
        title="Taxi",
        description="Gymnasium's Taxi: drive to the passenger, pick them up and drop them off at their destination.",
        split_notes={SPLIT: f"Taxi starts drawn by gymnasium's reset, {_SEEDS}"},
        expert_source="breadth-first search on Taxi's transition table (the shortest pickup and dropoff)",
        task_types=(TAXI_ID,),
        run_notes=_RUN_NOTES,
    ),
)

SPECS = (GYMNASIUM_SPEC, FROZENLAKE_SPEC, TAXI_SPEC)

__all__ = [
    "EXPERT",
    "FROZENLAKE_ACTIONS",
    "FROZENLAKE_SPEC",
    "GYMNASIUM_SPEC",
    "SPECS",
    "TAXI_ACTIONS",
    "TAXI_SPEC",
    "FrozenLakeOptions",
    "FrozenLakeTextEnv",
    "GameError",
    "GymTextEnv",
    "GymnasiumOptions",
    "TaxiOptions",
    "TaxiTextEnv",
]
