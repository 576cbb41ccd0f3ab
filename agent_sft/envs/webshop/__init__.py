"""WebShop (shopping for a described product on a simulated web store) on its real engine: spec, options,
adapter, oracle expert, prompts, and a check of a checkout.

WebShop is not a package: the env imports its engine from a checkout (a clone of princeton-nlp/WebShop,
or verl-agent's vendored copy) with its catalog and search index, named by `env.webshop.path` or
$WEBSHOP_PATH. `import agent_sft.envs.webshop` stays light: the engine is imported when an env is built.
`agent-sft envs webshop` runs `check()`: is the checkout usable here, and what to do if not.
"""

from agent_sft.envs.specs import EnvCard, EnvSpec
from agent_sft.envs.webshop.checkout import ENV_VAR, Finding, check, check_report, find_checkout
from agent_sft.envs.webshop.env import EXPERTS, WebshopEnv
from agent_sft.envs.webshop.options import WebshopOptions

SPEC = EnvSpec(
    name="webshop",
    entry_point="agent_sft.envs.webshop.env:WebshopEnv",
    aliases=("webshop/WebShopEnv",),
    options=WebshopOptions,
    # en_core_web_sm: the spaCy model the reward's type match parses product names with (recorded: it
    # decides scores); pyserini: the search.
    packages=("pyserini", "gym", "spacy", "en_core_web_sm", "thefuzz", "beautifulsoup4"),
    eval_splits=("test",),
    expert_kwarg="expert",
    experts=EXPERTS,
    expert_label="webshop-{expert}",
    shared_process=False,  # the engine builds its goals and prices from the global `random`; one engine per process
    templates="agent_sft.envs.webshop:prompts",
    extra="webshop",
    card=EnvCard(
        title="WebShop",
        split_notes={
            "test": "WebShop goals 0 to env.webshop.test_goals-1 (default 500): verl-agent's test goals",
            "train": "WebShop goals from env.webshop.test_goals on (default 500), verl-agent's training goals",
        },
        run_notes={
            "test": "WebShop's test goals (an evaluation split)",
            "train": "WebShop's training goals",
        },
        expert_source="the goal's target product and options, read from the WebShop engine",
        description="Shopping for a described product on WebShop's simulated store (search, click, buy), from a checkout.",
    ),
    filters_tasks=True,
    forward_env_vars=("WEBSHOP_",),
    tools="agent_sft.envs.webshop.env:tools",
)

__all__ = ["ENV_VAR", "EXPERTS", "SPEC", "Finding", "WebshopEnv", "WebshopOptions", "check", "check_report",
           "find_checkout"]
