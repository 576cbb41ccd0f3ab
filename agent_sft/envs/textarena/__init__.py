"""TextArena's single-player games that run offline (Tower of Hanoi, Sokoban, Minesweeper, FrozenLake):
its spec, options, adapter, solver expert and prompts.

`import agent_sft.envs.textarena` stays light: textarena is imported when an env is built.
"""

from agent_sft.envs.specs import EnvCard, EnvSpec
from agent_sft.envs.textarena.games import DEFAULT_GAMES, EXPERTS, OFFLINE_GAMES, TASK_TYPES
from agent_sft.envs.textarena.options import TextArenaOptions

SPEC = EnvSpec(
    name="textarena",
    entry_point="agent_sft.envs.textarena.env:TextArenaEnv",
    options=TextArenaOptions,
    packages=("textarena",),
    expert_kwarg="expert",
    experts=EXPERTS,
    expert_label="textarena-{expert}",
    shared_process=False,  # TextArena seeds and draws from the process-wide `random`
    templates="agent_sft.envs.textarena:prompts",
    extra="textarena",
    card=EnvCard(
        title="TextArena",
        split_notes={
            "seeded": "TextArena's single-player games, each reset with the seed in its task id "
            "(Tower of Hanoi starts the same for every seed)"
        },
        run_notes={"seeded": "TextArena single-player games, one task per (game, seed)"},
        expert_source="agent-sft's solver on the game's state (Tower of Hanoi's recursion, breadth-first search for "
        "FrozenLake and Sokoban; Minesweeper has no expert)",
        task_types=TASK_TYPES,
        description="TextArena's offline single-player games (Tower of Hanoi, Sokoban, Minesweeper, FrozenLake).",
    ),
    filters_tasks=True,
    tools="agent_sft.envs.textarena.games:game_tools",
)

__all__ = ["SPEC", "DEFAULT_GAMES", "EXPERTS", "OFFLINE_GAMES", "TASK_TYPES", "TextArenaOptions"]
