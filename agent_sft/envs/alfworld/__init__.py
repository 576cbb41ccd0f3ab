"""ALFWorld (text games on TextWorld's PDDL engine): its spec, options, adapter, built-in games, prompts.

`import agent_sft.envs.alfworld` stays light: the alfworld package is imported when an env is built.
`python -m agent_sft.envs.alfworld.make_games` authors the built-in game set in `games/`.
"""

from agent_sft.envs.alfworld.env import AlfworldEnv
from agent_sft.envs.alfworld.options import AlfworldOptions
from agent_sft.envs.alfworld.tasks import EXPERTS, SPLITS, TASK_TYPES, normalize_task_types
from agent_sft.envs.specs import EnvCard, EnvSpec

SPEC = EnvSpec(
    name="alfworld",
    entry_point="agent_sft.envs.alfworld.env:AlfworldEnv",
    aliases=("alfworld/AlfredTWEnv",),
    options=AlfworldOptions,
    packages=("alfworld", "textworld"),
    eval_splits=("valid_seen", "valid_unseen"),
    episode_keys=("gamefile", "extra.gamefile"),
    expert_kwarg="expert",
    experts=EXPERTS,
    expert_label="alfworld-{expert}",
    shared_process=False,  # the PDDL translator rewrites sys.argv; the engine draws from the global random
    templates="agent_sft.envs.alfworld:prompts",
    extra="alfworld",
    card=EnvCard(
        title="ALFWorld",
        split_notes={"builtin": "the game set built into agent-sft, in ALFWorld's own format"},
        run_notes={
            "builtin": "the built-in ALFWorld game set (no ALFWorld data configured: set env.alfworld.data_path "
            "or $ALFWORLD_DATA for the real games)"
        },
        expert_source="the ALFWorld engine",
        task_types=tuple(TASK_TYPES),
        description="Household tasks in text (ALFRED scenes) on TextWorld's PDDL engine.",
    ),
    filters_tasks=True,
    goal_marker="Your task is to: ",
    forward_env_vars=("ALFWORLD_",),
)

__all__ = ["SPEC", "AlfworldEnv", "AlfworldOptions", "EXPERTS", "SPLITS", "TASK_TYPES", "normalize_task_types"]
