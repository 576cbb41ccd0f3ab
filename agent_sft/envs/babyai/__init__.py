"""BabyAI (MiniGrid's language-conditioned grid levels) as text: its spec, options, adapter, prompts.

`import agent_sft.envs.babyai` stays light: gymnasium and minigrid are imported when an env is built.
"""

from agent_sft.envs.babyai.env import BabyAIEnv
from agent_sft.envs.babyai.options import BabyAIOptions
from agent_sft.envs.babyai.tasks import DEFAULT_LEVELS, EXPERTS, GAME_SPLIT, short_name
from agent_sft.envs.specs import EnvCard, EnvSpec

SPEC = EnvSpec(
    name="babyai",
    entry_point="agent_sft.envs.babyai.env:BabyAIEnv",
    options=BabyAIOptions,
    packages=("minigrid", "gymnasium"),
    expert_kwarg="expert",
    experts=EXPERTS,
    expert_label="babyai-{expert}",
    shared_process=True,  # each level's engine draws from its own seeded np_random; the bot draws nothing
    templates="agent_sft.envs.babyai:prompts",
    extra="babyai",
    card=EnvCard(
        title="BabyAI",
        split_notes={
            GAME_SPLIT: "BabyAI levels (minigrid) played on fixed layout seeds: the task id names the level and the "
            "seed that gymnasium's reset(seed=...) generates the layout from"
        },
        run_notes={GAME_SPLIT: "BabyAI levels on seeded layouts (env.babyai.levels x env.babyai.seeds_per_level)"},
        expert_source="minigrid's BabyAIBot",
        description="BabyAI's language-conditioned grid levels (MiniGrid), the agent's partial view told in text.",
    ),
    filters_tasks=True,
)

__all__ = ["SPEC", "BabyAIEnv", "BabyAIOptions", "DEFAULT_LEVELS", "EXPERTS", "short_name"]
