"""Text environments behind the `TextEnv` protocol, described by an `EnvSpec` and registered by name.

    from agent_sft import envs
    envs.register("maze", "my_pkg.maze:MazeEnv", options=MazeOptions)   # or an installed entry point
    envs.spec("alfworld/AlfredTWEnv").name                               # 'alfworld'
"""

from agent_sft.envs import alfworld
from agent_sft.envs import babyai as babyai_env
from agent_sft.envs import gym as gym_env
from agent_sft.envs import http as http_env
from agent_sft.envs import openenv as openenv_env
from agent_sft.envs import textarena as textarena_env
from agent_sft.envs import textworld as textworld_env
from agent_sft.envs import webshop as webshop_env
from agent_sft.envs.base import TaskSpec, TextEnv, files_hash, task_hash
from agent_sft.envs.registry import (
    ENTRY_POINT_GROUP,
    UnknownEnvError,
    canonical_name,
    find_spec,
    make,
    register,
    registered,
    spec,
)
from agent_sft.envs.specs import GENERIC_KWARGS, EnvCard, EnvOptions, EnvSpec, OptionError, PlayedEnv, option

register(alfworld.SPEC)
register(babyai_env.SPEC)
list(map(register, gym_env.SPECS))
register(http_env.SPEC)
register(openenv_env.SPEC)
register(textarena_env.SPEC)
register(textworld_env.SPEC)
register(webshop_env.SPEC)

__all__ = [
    "ENTRY_POINT_GROUP",
    "GENERIC_KWARGS",
    "EnvCard",
    "EnvOptions",
    "EnvSpec",
    "OptionError",
    "PlayedEnv",
    "TaskSpec",
    "TextEnv",
    "UnknownEnvError",
    "canonical_name",
    "files_hash",
    "find_spec",
    "make",
    "option",
    "register",
    "registered",
    "spec",
    "task_hash",
]
