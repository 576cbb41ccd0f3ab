"""Folders for the interchange tests (ATIF, ShareGPT): FrozenLake collected by the expert with tool-call actions,
in both prompt styles, with a system message."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tool_folders(tmp_path_factory) -> dict[str, str]:
    """prompt style -> a FrozenLake folder of 4 episodes played with `prompt.actions=tools`."""
    import agent_sft

    root = tmp_path_factory.mktemp("tool_folders")
    for style in ("window", "chat"):
        agent_sft.collect(["env.env_name=frozenlake", "env.backend=thread", "env.num_episodes=4", "env.max_steps=12",
                           "prompt.actions=tools", "prompt.system=You cross frozen lakes.", f"prompt.style={style}",
                           f"output.dir={root / style}"])
    return {style: str(root / style) for style in ("window", "chat")}
