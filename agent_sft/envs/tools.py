"""An env's actions offered as tools (`prompt.actions=tools`): JSON schemas, and the map between calls and actions.

A `Tool` is a function the model may call and the env action a call makes: `action` is a format over its
arguments (`search[{query}]`), so an action the env's expert plans maps back to a call the same way. An env
declares its own tools in its spec (`EnvSpec.tools`: a function of the episode's first info, so a game's
moves can follow its task); every other env gets `act(command)`, whose description lists the commands
admissible when the episode starts (each observation still lists those admissible then).

    toolset = toolset_for(spec, info)
    toolset.schemas()                              # the chat template's / the API's `tools`
    toolset.action("search", '{"query": "red shoes"}')   # 'search[red shoes]'
    toolset.call("search[red shoes]")              # ('search', {'query': 'red shoes'})
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent_sft.envs.specs import load_entry_point
from agent_sft.errors import AgentSFTError

_TYPES = {"string": str, "integer": int}


class ToolCallError(AgentSFTError, ValueError):
    """A call that makes no action: an unknown tool or bad arguments (the message is the step's reason)."""


@dataclass(frozen=True)
class Tool:
    """One function: its name, description, arguments (name -> JSON schema, all required) and the env action
    a call makes (a `str.format` over the arguments)."""

    name: str
    description: str
    parameters: dict[str, dict[str, Any]]
    action: str

    def schema(self) -> dict[str, Any]:
        """The OpenAI-style tool schema (`{"type": "function", "function": {...}}`)."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": {"type": "object", "properties": {k: dict(v) for k, v in self.parameters.items()},
                           "required": list(self.parameters)}}}

    def to_action(self, args: Any) -> str:
        """The env action of a call with `args` (decoded JSON).

        Raises:
            ToolCallError: arguments that are not an object, missing, unexpected, of the wrong type or not allowed.
        """
        if not isinstance(args, dict):
            raise ToolCallError(f"bad arguments for {self.name}: expected a JSON object, got {_short(args)}")
        missing = [k for k in self.parameters if k not in args]
        extra = [k for k in args if k not in self.parameters]
        if missing or extra:
            what = "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                             + ([f"unexpected {', '.join(extra)}"] if extra else []))
            raise ToolCallError(f"bad arguments for {self.name}: {what}")
        values = {}
        for k, sch in self.parameters.items():
            v = args[k]
            want = _TYPES.get(sch.get("type", "string"), str)
            if not isinstance(v, want) or isinstance(v, bool):
                raise ToolCallError(f"bad arguments for {self.name}: {k} must be a {sch.get('type', 'string')}, "
                                    f"got {_short(v)}")
            if "enum" in sch and v not in sch["enum"]:
                raise ToolCallError(f"bad arguments for {self.name}: {k}={_short(v)} is not one of "
                                    f"{', '.join(map(str, sch['enum']))}")
            if want is str and not v.strip():
                raise ToolCallError(f"bad arguments for {self.name}: {k} is empty")
            values[k] = v
        return self.action.format(**values)

    def from_action(self, action: str) -> dict[str, Any] | None:
        """The arguments of the call that makes `action`, or None when this tool cannot make it."""
        m = _action_pattern(self.action, tuple((k, json.dumps(v, sort_keys=True)) for k, v in self.parameters.items()))
        found = m.fullmatch(action.strip())
        if not found:
            return None
        out = {}
        for k, sch in self.parameters.items():
            v = found.group(k)
            out[k] = int(v) if sch.get("type") == "integer" else v
        return out


def _action_pattern(fmt: str, params: tuple[tuple[str, str], ...]) -> re.Pattern:
    kinds = {k: json.loads(v) for k, v in params}
    out = []
    for literal, name, _, _ in string.Formatter().parse(fmt):
        out.append(re.escape(literal))
        if name is not None:
            sch = kinds[name]
            if "enum" in sch:
                body = "|".join(re.escape(str(e)) for e in sch["enum"])
            elif sch.get("type") == "integer":
                body = r"-?\d+"
            else:
                body = ".+"
            out.append(f"(?P<{name}>{body})")
    return re.compile("".join(out), re.DOTALL)


def _short(v: Any, n: int = 80) -> str:
    text = json.dumps(v) if not isinstance(v, str) else repr(v)
    return text if len(text) <= n else text[:n] + "..."


@dataclass(frozen=True)
class Toolset:
    """The tools offered for one episode."""

    tools: tuple[Tool, ...]

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self.tools]

    def action(self, name: str, arguments: str | dict | None) -> str:
        """The env action of a call (`arguments` a JSON string, as calls carry them, or decoded).

        Raises:
            ToolCallError: an unknown tool, arguments that are not JSON, or bad arguments.
        """
        by_name = {t.name: t for t in self.tools}
        if name not in by_name:
            raise ToolCallError(f"unknown tool {name!r} (offered: {', '.join(by_name)})")
        args = arguments
        if isinstance(arguments, str):
            try:
                args = json.loads(arguments) if arguments.strip() else {}
            except ValueError as e:
                raise ToolCallError(f"bad arguments for {name}: not JSON ({e})") from None
        return by_name[name].to_action(args if args is not None else {})

    def call(self, action: str) -> tuple[str, dict[str, Any]] | None:
        """The (tool, arguments) of the first tool that makes `action`; None when none does."""
        for t in self.tools:
            args = t.from_action(action)
            if args is not None:
                return t.name, args
        return None


def act_tool(admissible: Sequence[str] = ()) -> Tool:
    """The generic tool: `act(command)`, the command played as it is."""
    desc = "Play one command in the environment."
    shown = [a for a in admissible if a != "help"]
    if shown:
        desc += (" Commands admissible when the episode starts: " + "; ".join(shown)
                 + ". Each observation lists the commands admissible then.")
    return Tool("act", desc, {"command": {"type": "string", "description": "The command, as the environment "
                                          "spells it."}}, "{command}")


def toolset_for(spec: Any, info: dict[str, Any]) -> Toolset:
    """The tools of an episode of the env `spec` (None: an env without a spec), from its first `info`: the
    env's own (`EnvSpec.tools`) when it declares some for it, else `act(command)`."""
    own: Callable[[dict], Any] | None = None
    if spec is not None and getattr(spec, "tools", None) is not None:
        own = load_entry_point(spec.tools)
    tools = own(info) if own is not None else None
    if tools:
        return Toolset(tuple(tools))
    return Toolset((act_tool(list(info.get("admissible_actions") or [])),))
