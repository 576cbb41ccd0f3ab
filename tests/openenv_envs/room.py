"""An MCP-tool environment on OpenEnv's server classes: tools `look` and `take`; taking the key wins.

    python -m openenv_envs.room --port 8000 [--max-sessions 4]

MCPEnvironment sets no reward or done for a tool call: this env scores through `step` and `step_async`
(the /ws path calls the latter), as OpenEnv's own scoring MCP envs do. No Task API: resets are seeded.
"""

import argparse

import uvicorn
from fastmcp import FastMCP
from openenv.core.env_server import CallToolAction, CallToolObservation, MCPEnvironment, Observation, State, create_app
from openenv.core.env_server.types import EnvironmentMetadata


class RoomEnv(MCPEnvironment):
    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self):
        mcp = FastMCP("room")
        env = self

        @mcp.tool
        def look() -> str:
            """Describe the room."""
            return f"You see a {env._things()}."

        @mcp.tool
        def take(obj: str) -> str:
            """Take an object from the room."""
            env._taken = obj
            if obj not in env._objects:
                raise ValueError(f"there is no {obj} here")
            return f"You take the {obj}."

        super().__init__(mcp)
        self._state = State(step_count=0)
        self._objects = ["key", "lamp"]
        self._taken = None

    def _things(self):
        return " and a ".join(self._objects)

    def reset(self, seed=None, episode_id=None, **kw):
        self._state = State(episode_id=episode_id, step_count=0)
        self._objects = ["lamp", "key"] if (seed or 0) % 2 else ["key", "lamp"]
        self._taken = None
        return Observation(metadata={"intro": "A small room. Find the way out."})

    def _score(self, obs):
        self._state.step_count += 1
        won = isinstance(obs, CallToolObservation) and obs.tool_name == "take" and self._taken == "key"
        obs.reward, obs.done = (1.0, True) if won else (0.0, False)
        return obs

    def step(self, action, timeout_s=None, **kw):
        self._taken = None
        return self._score(super().step(action, timeout_s=timeout_s, **kw))

    async def step_async(self, action, timeout_s=None, **kw):
        self._taken = None
        return self._score(await super().step_async(action, timeout_s=timeout_s, **kw))

    def _step_impl(self, action, timeout_s=None, **kw):
        return Observation(metadata={"error": "use the tools"})

    @property
    def state(self):
        return self._state

    def get_metadata(self):
        return EnvironmentMetadata(name="room", description="Take the key.", version="1.2.0", author="agent-sft tests")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-sessions", type=int, default=4)
    a = p.parse_args()
    app = create_app(RoomEnv, CallToolAction, CallToolObservation, env_name="room", max_concurrent_envs=a.max_sessions)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")
