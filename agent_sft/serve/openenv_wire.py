"""What an agent-sft env looks like on OpenEnv's wire (`openenv` 0.10): schemas, observations, states,
the Task API's splits, tool results, and error messages in OpenEnv's shapes and codes. Pure: no I/O.

A text env's action is `{"action": "<command>"}` (`TextAction`); its tools (`agent_sft.envs.tools`) are
called as OpenEnv's `CallToolAction` (`{"type": "call_tool", "tool_name", "arguments"}`) and listed with
`{"type": "list_tools"}`. An observation carries the env's text, the admissible actions when the env
lists them, the goal, `won`, the task id and whether the step budget cut the episode short
(`truncated`); `metadata` is the env's whole info.

pydantic comes with FastAPI (`pip install 'agent-sft[serve]'`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_sft.envs.base import TaskSpec
from agent_sft.envs.http.protocol import jsonable, task_to_json
from agent_sft.envs.tools import Toolset

__all__ = ["CallToolAction", "EnvState", "TextAction", "TextObservation", "ToolObservation", "ValidationError",
           "action_of", "capacity_message", "observation", "rpc_error", "rpc_result", "schema", "split_of", "splits",
           "tool_observation", "tools_list", "ws_error"]

# JSON-RPC 2.0 error codes, as OpenEnv's /mcp answers them
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR, SERVER_ERROR = (
    -32700, -32600, -32601, -32602, -32603, -32000)
_SPLIT_TYPES = ("train", "validation", "test")


class TextAction(BaseModel):
    """One command, played as the env spells it."""

    model_config = ConfigDict(extra="forbid", title="TextAction")
    action: str = Field(description="The command, as the environment spells it")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Additional metadata for the action")


class CallToolAction(BaseModel):
    """A call of one of the env's tools (OpenEnv's `CallToolAction`)."""

    model_config = ConfigDict(extra="forbid", title="CallToolAction")
    type: Literal["call_tool"] = Field(default="call_tool", description="Action type discriminator")
    tool_name: str = Field(description="Name of the tool to call")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Arguments to pass to the tool")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Additional metadata for the action")


class TextObservation(BaseModel):
    """What the env shows after a reset or a step."""

    model_config = ConfigDict(extra="forbid", title="TextObservation")
    done: bool = Field(default=False, description="Whether the episode has ended")
    reward: bool | int | float | None = Field(default=None, description="Reward of the last action")
    metadata: dict[str, Any] = Field(default_factory=dict, description="The env's info")
    text: str = Field(default="", description="The env's observation text")
    admissible_actions: list[str] = Field(default_factory=list, description="The actions allowed now, when the env lists them")
    goal: str = Field(default="", description="The task's goal")
    won: bool = Field(default=False, description="Whether the task is done")
    task_id: str | None = Field(default=None, description="The task played")
    truncated: bool = Field(default=False, description="Whether the step budget ended the episode")


class ToolError(BaseModel):
    """Why a tool call played nothing (OpenEnv's `ToolError`)."""

    model_config = ConfigDict(extra="forbid", title="ToolError")
    error_type: str = Field(description="tool_not_found or invalid_args")
    message: str = Field(description="What was wrong")


class ToolObservation(TextObservation):
    """What a `call_tool` step shows (OpenEnv's `CallToolObservation`: `tool_name`, `result`, `error`, with
    the step's observation fields) or a `list_tools` step (`tools`)."""

    model_config = ConfigDict(extra="forbid", title="CallToolObservation")
    tool_name: str | None = Field(default=None, description="The tool called")
    result: dict[str, Any] | None = Field(
        default=None, description="The call's result as an MCP server returns it: content and data (the observation "
                                  "text), structured_content (the observation's fields, reward and done), is_error")
    error: ToolError | None = Field(default=None, description="Why the call played nothing, if it did not")
    tools: list[dict[str, Any]] = Field(default_factory=list, description="The tools (a list_tools step): name, "
                                                                          "description, input_schema")


class EnvState(BaseModel):
    """The episode's state."""

    model_config = ConfigDict(extra="allow", title="EnvState")
    episode_id: str | None = Field(default=None, description="Unique identifier of the current episode")
    step_count: int = Field(default=0, ge=0, description="Steps taken in the current episode")
    task_id: str | None = Field(default=None, description="The task played")


def schema(actions: str) -> dict[str, Any]:
    """`GET /schema`: the action and the observation a step answers (`TextAction` and `TextObservation`, or
    with `actions == "tools"` `CallToolAction` and `CallToolObservation`), the state, and the reset's
    observation (`TextObservation`)."""
    tools = actions == "tools"
    action, obs = (CallToolAction, ToolObservation) if tools else (TextAction, TextObservation)
    return {"action": action.model_json_schema(), "observation": obs.model_json_schema(),
            "state": EnvState.model_json_schema(), "reset_observation": TextObservation.model_json_schema()}


def observation(text: str, info: dict[str, Any], reward: float | None = None, terminated: bool = False,
                truncated: bool = False, **extra: Any) -> dict[str, Any]:
    """A reset's or step's answer as OpenEnv sends it: `{"observation", "reward", "done", "metadata"}`, the
    reward and done lifted out of the observation, its metadata (the env's info) also at the top."""
    info = jsonable(info or {})
    obs = {"text": str(text), "admissible_actions": list(info.get("admissible_actions") or []),
           "goal": str(info.get("goal") or ""), "won": bool(info.get("won")), "task_id": info.get("task_id"),
           "truncated": bool(truncated), **extra, "metadata": info}
    out = {"observation": obs, "reward": None if reward is None else jsonable(float(reward)),
           "done": bool(terminated or truncated)}
    if info:
        out["metadata"] = info
    return out


def tool_result(text: str, answer: dict[str, Any] | None = None) -> dict[str, Any]:
    """A tool call's result as an MCP server returns it: the observation text as content and `data`, the
    step's whole answer (reward, done, won) as structured content."""
    return {"content": [{"type": "text", "text": text}], "structured_content": answer, "meta": None,
            "data": text, "is_error": False}


def tool_observation(name: str, answer: dict[str, Any] | None, error: tuple[str, str] | None = None) -> dict[str, Any]:
    """A `call_tool` step's answer: OpenEnv's `CallToolObservation` (`tool_name`, `result`, `error`) with
    the step's observation fields; `error` is (error_type, message) for a call that made no action."""
    if error is not None:
        out = observation("", {}, **{"tool_name": name, "result": None,
                                     "error": {"error_type": error[0], "message": error[1]}})
        out["observation"]["text"] = error[1]
        return out
    assert answer is not None
    obs = answer["observation"]
    obs.update(tool_name=name, result=tool_result(obs["text"], {k: v for k, v in obs.items() if k != "metadata"}
                                                  | {"reward": answer["reward"], "done": answer["done"]}), error=None)
    return answer


def tools_list(toolset: Toolset, camel: bool = False) -> list[dict[str, Any]]:
    """The tools as OpenEnv lists them: `input_schema` over /ws, `inputSchema` (MCP's spelling) over /mcp."""
    key = "inputSchema" if camel else "input_schema"
    return [{"name": s["function"]["name"], "description": s["function"]["description"],
             key: s["function"]["parameters"]} for s in toolset.schemas()]


def action_of(data: Any) -> TextAction | CallToolAction | Literal["list_tools"]:
    """A step message's action: `list_tools`, a tool call, or a text action.

    Raises:
        ValidationError: data that is none of them (a missing or mistyped field, an unknown one).
    """
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "list_tools":
        return "list_tools"
    if kind == "call_tool" or (isinstance(data, dict) and "tool_name" in data):
        return CallToolAction.model_validate(data)
    return TextAction.model_validate(data)


def splits(tasks: list[TaskSpec]) -> list[dict[str, str]]:
    """`GET /{env}/splits`: the tasks' `game_split`s in order of appearance, typed as OpenEnv types a plain
    split name (train, validation and test keep theirs, any other is validation)."""
    names = list(dict.fromkeys(t.game_split for t in tasks))
    return [{"name": n, "type": n if n in _SPLIT_TYPES else "validation"} for n in names]


def split_of(tasks: list[TaskSpec], split: str) -> list[dict[str, Any]]:
    """The tasks of `split` as the Task API lists them (`task_id`, `task_type`, `game_split`, `extra`, and
    `index`, the position `reset(split=..., index=...)` takes).

    Raises:
        KeyError: an unknown split (the message names the known ones).
    """
    out = [task_to_json(t) for t in tasks if t.game_split == split]
    if not out:
        known = ", ".join(s["name"] for s in splits(tasks)) or "none"
        raise KeyError(f"unknown split {split!r} (splits: {known})")
    return [{**t, "index": i} for i, t in enumerate(out)]


def ws_error(message: str, code: str, **extra: Any) -> dict[str, Any]:
    """A /ws error message: `{"type": "error", "data": {"message", "code", ...}}`."""
    return {"type": "error", "data": {"message": message, "code": code, **extra}}


def capacity_message(active: int, most: int) -> str:
    return f"Server at capacity: {active}/{most} sessions active. Cannot accept new connections."


def rpc_result(result: Any, request_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": jsonable(result)}


def rpc_error(code: int, message: str, request_id: Any = None, data: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message, "data": jsonable(data)}}
