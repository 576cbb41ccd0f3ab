"""The collect config: its dataclasses (`schema`), dotted keys and aliases (`dotted`), the run's envs as
lanes (`lanes`), loading and checking (`load`).

Every field is documented in its `metadata["help"]`. Keys are dotted paths (`env.max_steps=30`); the
verl-agent spellings used by the original PPO-trainer feature are accepted as aliases
(`actor_rollout_ref.model.path`, `actor_rollout_ref.rollout.val_kwargs.temperature`, ...), and the
`COLLECT_SFT`, `SFT_SEED` and `SFT_REQUIRE_SUCCESS` environment variables are honored.
"""

from agent_sft.config.dotted import set_key
from agent_sft.config.load import describe, keys, load_config, parse_shard, to_dict, validate
from agent_sft.config.schema import (
    CollectConfig,
    DataConfig,
    EnvConfig,
    FilterConfig,
    LoopConfig,
    OutputConfig,
    PolicyConfig,
    PromptConfig,
    RolloutConfig,
    ScaleConfig,
    env_options,
)
from agent_sft.errors import ConfigError

__all__ = ["CollectConfig", "ConfigError", "DataConfig", "EnvConfig", "FilterConfig", "LoopConfig", "OutputConfig",
           "PolicyConfig", "PromptConfig", "RolloutConfig", "ScaleConfig", "describe", "env_options", "keys",
           "load_config", "parse_shard", "set_key", "to_dict", "validate"]
