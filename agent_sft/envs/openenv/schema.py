"""OpenEnv observations as text and actions from text, read off the env's `/schema` (pure functions).

Observations (the default rendering; `env.openenv.obs_to_text` replaces it):
- an MCP tool call's observation is the tool's text content (its error, as `Error: ...`, when it failed);
- any other observation shows its fields in the schema's order, leaving out `done`, `reward` and
  `metadata`: the first text field as it is, each other field that has a value other than its default as
  `name: value` (JSON for what is not text); an observation with no such field shows its `metadata` that
  way instead.

Actions (for an env that is not an MCP env):
- an action schema with one field (besides `metadata`) takes the model's action as that field: as it is
  for a text field, read as JSON for a number, boolean, list or object;
- an action schema with several fields takes a JSON object of them (in a ```json fence or not).
An action that does not read so is an invalid action, with the reason, and is not sent.

MCP envs, text actions (`prompt.actions=text`) name a tool and its arguments:
- `look`: the tool `look` without arguments;
- `take key`: a tool with one parameter, given the rest of the line (read as JSON when the parameter is
  not text);
- `take {"obj": "key"}`: any tool, its arguments as a JSON object.
With `prompt.actions=tools` the model calls the tools, and each call is recorded as that text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agent_sft.envs.tools import Tool, ToolCallError

HIDDEN = ("done", "reward", "metadata")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class ActionError(ValueError):
    """An action that makes no OpenEnv action (the message is the step's invalid reason)."""


# --- schemas ----------------------------------------------------------------------------------------


def fields(schema: dict | None) -> dict[str, dict]:
    """A pydantic JSON schema's properties (name -> schema), `$ref`s into its `$defs` resolved, in order."""
    if not isinstance(schema, dict):
        return {}
    defs = schema.get("$defs") or {}
    out = {}
    for name, sub in (schema.get("properties") or {}).items():
        out[name] = _resolve(sub, defs)
    return out


def _resolve(sub: Any, defs: dict) -> dict:
    if not isinstance(sub, dict):
        return {}
    ref = sub.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return {**_resolve(defs.get(ref.rsplit("/", 1)[1]) or {}, defs), **{k: v for k, v in sub.items() if k != "$ref"}}
    return sub


def json_type(sub: dict) -> str:
    """The JSON type a field holds (`string`, `integer`, ...), its null alternative left out; "" when unsaid."""
    if isinstance(sub.get("type"), str):
        return sub["type"]
    for alt in sub.get("anyOf") or sub.get("oneOf") or []:
        if isinstance(alt, dict) and alt.get("type") not in (None, "null"):
            return str(alt["type"])
    return ""


def is_mcp(action_schema: dict | None) -> bool:
    """Whether an env's action schema is OpenEnv's MCP tool call (`CallToolAction`)."""
    props = fields(action_schema)
    title = (action_schema or {}).get("title")
    return title in ("CallToolAction", "ListToolsAction") or ("tool_name" in props and "arguments" in props)


# --- observations -----------------------------------------------------------------------------------


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)


def _empty(v: Any) -> bool:
    return v is None or v == "" or v == [] or v == {}


def render(observation: dict, schema: dict | None = None) -> str:
    """The default text of an observation (see the module's docstring)."""
    if not isinstance(observation, dict):
        return _value(observation)
    if "tool_name" in observation and ("result" in observation or "error" in observation):
        return tool_result_text(observation)
    if "tools" in observation and isinstance(observation["tools"], list):
        return "Tools:\n" + "\n".join(f"- {t.get('name')}: {t.get('description') or ''}".rstrip()
                                      for t in observation["tools"] if isinstance(t, dict))
    order = list(fields(schema)) or list(observation)
    order += [k for k in observation if k not in order]
    props = fields(schema)
    lines, bare = [], False
    for name in order:
        if name in HIDDEN or name not in observation or _empty(observation[name]):
            continue
        if "default" in props.get(name, {}) and observation[name] == props[name]["default"] and lines:
            continue
        v = observation[name]
        text_field = json_type(props.get(name, {})) == "string" or (not props and isinstance(v, str))
        if not bare and not lines and text_field and isinstance(v, str):
            lines.append(v)
            bare = True
        else:
            lines.append(f"{name}: {_value(v)}")
    if not lines and isinstance(observation.get("metadata"), dict):
        lines = [f"{k}: {_value(v)}" for k, v in observation["metadata"].items() if not _empty(v)]
    return "\n".join(lines)


def tool_result_text(observation: dict) -> str:
    """An MCP tool call's observation as text: its content's text, or its error."""
    error = observation.get("error")
    if isinstance(error, dict) and error:
        return f"Error: {error.get('message') or error.get('error_type') or error}"
    result = observation.get("result")
    if not isinstance(result, dict):
        return "" if result is None else _value(result)
    parts = [c.get("text") for c in result.get("content") or [] if isinstance(c, dict) and isinstance(c.get("text"), str)]
    text = "\n".join(parts) if parts else _value(result.get("structured_content") or result.get("data") or "")
    return f"Error: {text}" if result.get("is_error") else text


def tool_error(observation: dict) -> str:
    """Why an MCP call was refused as a call (an unknown tool, bad arguments): "" when it was not."""
    error = observation.get("error")
    if isinstance(error, dict) and error.get("error_type") in ("tool_not_found", "invalid_args"):
        return str(error.get("message") or error.get("error_type"))
    return ""


# --- actions ----------------------------------------------------------------------------------------


def _json_object(text: str, what: str) -> dict:
    body = text.strip()
    m = _FENCE.match(body)
    if m:
        body = m.group(1)
    try:
        value = json.loads(body)
    except ValueError as err:
        raise ActionError(f"{what}: not JSON ({err})") from None
    if not isinstance(value, dict):
        raise ActionError(f"{what}: expected a JSON object, got {_value(value)[:80]}")
    return value


def _typed(text: str, sub: dict, what: str) -> Any:
    """`text` as the value of a field of schema `sub`: as it is for text, else read as JSON."""
    kind = json_type(sub)
    if kind in ("string", ""):
        return text.strip()
    try:
        return json.loads(text.strip())
    except ValueError:
        raise ActionError(f"{what}: {text.strip()[:80]!r} is not of type {kind}") from None


def action_payload(text: str, schema: dict | None) -> dict:
    """The OpenEnv action (the `data` of a `/ws` step) that the model's action text makes.

    Raises:
        ActionError: the text does not make one (why, naming the fields wanted).
    """
    props = {k: v for k, v in fields(schema).items() if k != "metadata"}
    if len(props) == 1:
        (name, sub), = props.items()
        stripped = text.strip()
        if json_type(sub) not in ("string", "") and stripped.startswith("{"):
            value = _json_object(stripped, f"the action's field {name}")
            if name in value:
                return value
        return {name: _typed(text, sub, f"the action's field {name}")}
    names = ", ".join(props) or "none"
    return _json_object(text, f"the action must be a JSON object of the fields {names}")


# --- MCP tools --------------------------------------------------------------------------------------


def _params(tool: dict) -> dict[str, dict]:
    return fields(tool.get("input_schema") or tool.get("inputSchema") or {})


def tool_call(text: str, tools: list[dict]) -> tuple[str, dict]:
    """The MCP call (tool name, arguments) a text action makes (the mapping in the module's docstring).

    Raises:
        ActionError: no tool of that name, or arguments that do not read.
    """
    stripped = text.strip()
    name, _, rest = stripped.partition(" ")
    if "(" in name and not rest:  # `look()` reads as `look`
        name = name.removesuffix("()")
    by_name = {t.get("name"): t for t in tools if isinstance(t, dict)}
    if name not in by_name:
        raise ActionError(f"unknown tool {name!r} (tools: {', '.join(map(str, by_name)) or 'none'})")
    rest = rest.strip()
    if not rest:
        return name, {}
    params = _params(by_name[name])
    if rest.startswith("{"):
        try:
            return name, _json_object(rest, f"the arguments of {name}")
        except ActionError:
            if len(params) != 1:
                raise
    if len(params) != 1:
        raise ActionError(f"{name} takes {len(params)} arguments ({', '.join(params) or 'none'}): give them as "
                          f"{name} {{\"...\": ...}} (a JSON object)")
    (param, sub), = params.items()
    return name, {param: _typed(rest, sub, f"{name}'s argument {param}")}


def call_text(name: str, arguments: dict, tools: list[dict]) -> str:
    """The text action of an MCP call: the inverse of `tool_call`."""
    if not arguments:
        return name
    tool = next((t for t in tools if isinstance(t, dict) and t.get("name") == name), {})
    params = _params(tool)
    if len(params) == 1 and set(arguments) == set(params):
        (value,) = arguments.values()
        if isinstance(value, str) and value.strip() == value and value and not value.startswith("{"):
            return f"{name} {value}"
    return f"{name} {json.dumps(arguments, ensure_ascii=False, sort_keys=True)}"


class McpTool(Tool):
    """One MCP tool offered with `prompt.actions=tools`: its own JSON schema, and a call recorded as its text
    action (`call_text`)."""

    def __init__(self, spec: dict) -> None:
        schema = dict(spec.get("input_schema") or spec.get("inputSchema") or {"type": "object", "properties": {}})
        super().__init__(str(spec["name"]), str(spec.get("description") or ""),
                         {k: dict(v) for k, v in fields(schema).items()}, str(spec["name"]))
        object.__setattr__(self, "input_schema", schema)
        object.__setattr__(self, "spec", dict(spec))

    def schema(self) -> dict[str, Any]:
        params = {k: v for k, v in self.input_schema.items() if k not in ("title", "$schema")}
        params.setdefault("type", "object")
        params.setdefault("properties", {})
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                  "parameters": params}}

    def to_action(self, args: Any) -> str:
        if not isinstance(args, dict):
            raise ToolCallError(f"bad arguments for {self.name}: expected a JSON object, got {_value(args)[:80]}")
        required = [k for k in self.input_schema.get("required") or [] if k not in args]
        if required:
            raise ToolCallError(f"bad arguments for {self.name}: missing {', '.join(required)}")
        return call_text(self.name, args, [self.spec])

    def from_action(self, action: str) -> dict[str, Any] | None:
        try:
            name, args = tool_call(action, [self.spec])
        except ActionError:
            return None
        return args if name == self.name else None


def mcp_tools(info: dict) -> list[Tool]:
    """The episode's MCP tools (`EnvSpec.tools`), from its first info's `tools` (what `list_tools` gave)."""
    return [McpTool(t) for t in info.get("mcp_tools") or [] if isinstance(t, dict) and t.get("name")]
