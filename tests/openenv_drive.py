"""Plays episodes on an OpenEnv server with OpenEnv's own clients; run by OpenEnv's virtualenv python.

    python openenv_drive.py < job.json > transcripts.json

The job: `{"token", "episodes": [EPISODE, ...]}`, an EPISODE `{"url", "client": "generic" | "mcp",
"reset": {reset kwargs}, "actions": [command, ...]}`. `generic` plays each command as `{"action": ...}`
with `GenericEnvClient`; `mcp` plays them as calls of the env's `act` tool with `MCPToolClient`, the
first half by `call_tool` (HTTP /mcp), the rest by `step(CallToolAction)` over /ws (where reward and done
travel). Prints one JSON object: per episode the reset's and each step's result, the state, the tools.
Imports no agent-sft code (it is not installed there).
"""

from __future__ import annotations

import json
import sys

from openenv.core import GenericEnvClient, MCPToolClient
from openenv.core.env_server import CallToolAction


def result(r) -> dict:
    obs = r.observation if isinstance(r.observation, dict) else r.observation.model_dump()
    return {"observation": obs, "reward": r.reward, "done": r.done}


def generic(url: str, headers: dict, episode: dict) -> dict:
    with GenericEnvClient(base_url=url, headers=headers, message_timeout_s=120).sync() as env:
        steps = [result(env.reset(**episode["reset"]))]
        for action in episode["actions"]:
            steps.append(result(env.step({"action": action})))
        state = env.state()
    return {"steps": steps, "state": state if isinstance(state, dict) else state.model_dump()}


def mcp(url: str, headers: dict, episode: dict) -> dict:
    with MCPToolClient(base_url=url, headers=headers, message_timeout_s=120).sync() as env:
        steps = [result(env.reset(**episode["reset"]))]
        tools = [{"name": t.name, "input_schema": t.input_schema} for t in env.list_tools()]
        half = len(episode["actions"]) // 2
        texts = [env.call_tool("act", command=a) for a in episode["actions"][:half]]
        for action in episode["actions"][half:]:
            steps.append(result(env.step(CallToolAction(tool_name="act", arguments={"command": action}))))
        state = env.state().model_dump()
    return {"steps": steps, "call_tool_texts": texts, "tools": tools, "state": state}


def main() -> None:
    job = json.load(sys.stdin)
    headers = {"Authorization": f"Bearer {job['token']}"} if job.get("token") else None
    out = []
    for episode in job["episodes"]:
        play = mcp if episode["client"] == "mcp" else generic
        out.append(play(episode["url"], headers, episode))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
