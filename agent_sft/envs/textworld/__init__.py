"""TextWorld (generated text adventures played by Jericho, state tracked by TextWorld): spec, options, adapter,
built-in games, prompts.

`import agent_sft.envs.textworld` stays light: the textworld package is imported when an env is built.
`python -m agent_sft.envs.textworld.make_games` makes the built-in game set in `games/`.
"""

from agent_sft.envs.specs import EnvCard, EnvSpec
from agent_sft.envs.textworld.env import TextworldEnv
from agent_sft.envs.textworld.options import TextworldOptions
from agent_sft.envs.textworld.tasks import EXPERTS, LEVELS, TASK_TYPES

SPEC = EnvSpec(
    name="textworld",
    entry_point="agent_sft.envs.textworld.env:TextworldEnv",
    options=TextworldOptions,
    packages=("textworld",),
    episode_keys=("max_score",),
    expert_kwarg="expert",
    experts=EXPERTS,
    expert_label="textworld-{expert}",
    # Each game runs in its own Jericho interpreter, and Jericho loads a private copy of its frotz library
    # per interpreter (no C state shared between games); TextWorld's tracking is plain per-env Python
    # state, and nothing draws from the global `random`. (Glulx, whose interpreter was a process
    # singleton, is gone from TextWorld 1.7.)
    shared_process=True,
    templates="agent_sft.envs.textworld:prompts",
    extra="textworld",
    card=EnvCard(
        title="TextWorld",
        split_notes={
            "builtin": "the game set built into agent-sft: TextWorld's tw-simple, tw-cooking, tw-coin_collector "
            "and tw-treasure_hunter challenges at three levels each (l1 easiest), made with tw-make",
            "custom": "TextWorld games the user supplied (env.textworld.games)",
        },
        run_notes={
            "builtin": "the built-in TextWorld game set (set env.textworld.games to play your own .z8 games)",
            "custom": "TextWorld games from env.textworld.games",
        },
        expert_source="the game's walkthrough, then TextWorld's replanned winning policy once the agent leaves it",
        task_types=TASK_TYPES,
        description="Generated text adventures (TextWorld's simple, cooking, coin and treasure challenges).",
    ),
    filters_tasks=True,
)

__all__ = ["SPEC", "EXPERTS", "LEVELS", "TASK_TYPES", "TextworldEnv", "TextworldOptions"]
