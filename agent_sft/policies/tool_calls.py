"""Tool calls in a model's answer (`prompt.actions=tools`): reading them, and the messages a template or API is given.

In-process backends (vllm, hf) render the prompt with the chat template's `tools` and read the answer with
vLLM's own tool-call parser for the model's family (`policy.tool_parser`, e.g. `hermes` for Qwen2.5) when vLLM
is installed, else with agent-sft's parser of the Hermes format (`<tool_call>{"name": ..., "arguments":
{...}}</tool_call>`, what Qwen2.5's template asks for). Either way a call gets no id here: the episode gives
its calls ids of its own (the same run gives the same ids), and an answer whose calls cannot be read says why.
Reasoning in a `<think>` block is taken out of the content and kept apart (`reasoning_content`).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_sft.errors import ConfigError
from agent_sft.policies.base import Completion
from agent_sft.records import END_CONTEXT, Message, split_think

_CALL = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)
OWN_PARSERS = ("hermes",)


@dataclass
class ParsedAnswer:
    """What an answer holds: its text beside the calls, its reasoning, its calls, and why they could not be read."""

    content: str
    reasoning: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


def split_reasoning(text: str) -> tuple[str, str | None]:
    """(the text without its `<think>` blocks, their text or None when there is none)."""
    reasoning, rest = split_think(text)
    return rest, reasoning


def call(name: str, arguments: Any, call_id: str = "") -> dict[str, Any]:
    """A call as chat templates and the OpenAI API have it (`arguments` a JSON string)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def parse_hermes(text: str) -> tuple[str, list[dict[str, Any]], str]:
    """(content, calls, error) of an answer in the Hermes format; error says why its calls cannot be read
    (then no call is kept, as vLLM's parser keeps none)."""
    start = text.find("<tool_call>")
    if start < 0:
        if "</tool_call>" in text:
            return text, [], "malformed tool call: </tool_call> without <tool_call>"
        return text, [], ""
    calls = []
    for closed, open_ in _CALL.findall(text):
        body = (closed or open_).strip()
        try:
            data = json.loads(body)
        except ValueError as e:
            return text, [], f"malformed tool call: not JSON ({e}): {_short(body)}"
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
            return text, [], f"malformed tool call: no function name: {_short(body)}"
        if "arguments" not in data:
            return text, [], f"malformed tool call: no arguments: {_short(body)}"
        calls.append(call(data["name"], data["arguments"]))
    return text[:start], calls, ""


def _short(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


class ToolCallParser:
    """Reads the calls of a family's answers: vLLM's parser `name` when vLLM is installed, else agent-sft's own.

    Raises:
        ConfigError: a parser vLLM does not have, or (without vLLM) one agent-sft does not have.
    """

    def __init__(self, name: str, tokenizer: Any) -> None:
        self.name = name
        self._vllm = None
        self._request = None
        vllm = _vllm_parsers() if importlib.util.find_spec("vllm") is not None else None
        if vllm is not None:
            manager, self._request = vllm
            known = set(manager.tool_parsers) | set(getattr(manager, "lazy_parsers", {}))
            check_tool_parser(name, sorted(known))
            self._vllm = manager.get_tool_parser(name)(tokenizer)
        elif importlib.util.find_spec("vllm") is not None and name not in OWN_PARSERS:
            raise ConfigError(f"policy.tool_parser: {name!r} needs vLLM's tool parsers, which this vLLM does not "
                              f"have where agent-sft looks (vLLM >= 0.11 has them; without them agent-sft reads "
                              f"{', '.join(OWN_PARSERS)})")
        else:
            check_tool_parser(name, OWN_PARSERS)

    def parse(self, text: str, tools: list[dict]) -> ParsedAnswer:
        """The answer `text` to a prompt that offered `tools`."""
        own = self.name in OWN_PARSERS
        # agent-sft's reading: the answer when vLLM is not here, and the reason when vLLM's parser reads no call
        content, calls, error = parse_hermes(text) if own else (text, [], "")
        if self._vllm is not None:
            got = self._vllm.extract_tool_calls(text, self._request(model="agent-sft", messages=[], tools=tools or None))
            if got.tools_called:
                content, error = got.content or "", ""
                calls = [call(tc.function.name, tc.function.arguments) for tc in got.tool_calls]
            elif calls:
                content, calls = text, []
                error = error or f"malformed tool call (vLLM's {self.name} parser read none)"
        content, reasoning = split_reasoning(content)
        return ParsedAnswer(content, reasoning, calls, error)


def tool_parser_names() -> list[str] | None:
    """The names `policy.tool_parser` may take: vLLM's parsers when vLLM is installed, else agent-sft's own.

    vLLM's are read from the source of its registry (`vllm/tool_parsers/__init__.py`), so that a config is
    checked without importing vLLM (seconds, and torch with it); None when that file does not list them the
    way it does in the vLLM versions agent-sft knows (the parser is then checked when the policy is built).
    """
    found = importlib.util.find_spec("vllm")
    if found is None:
        return list(OWN_PARSERS)
    for where in found.submodule_search_locations or []:
        try:
            tree = ast.parse((Path(where) / "tool_parsers" / "__init__.py").read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else getattr(
                node, "target", None)
            if isinstance(target, ast.Name) and target.id == "_TOOL_PARSERS_TO_REGISTER" and node.value is not None:
                try:
                    return sorted(ast.literal_eval(node.value))
                except ValueError:
                    return None
    return None


def check_tool_parser(name: str, known: list[str] | tuple[str, ...] | None = None) -> None:
    """Refuse a `policy.tool_parser` that is not among `known` (default `tool_parser_names()`; None: not checked).

    Raises:
        ConfigError: naming the closest parser and the ones there are.
    """
    known = tool_parser_names() if known is None else known
    if known is None or name in known:
        return
    close = difflib.get_close_matches(name, known, n=1)
    near = f"; did you mean {close[0]}?" if close else ""
    if importlib.util.find_spec("vllm") is not None:
        raise ConfigError(f"policy.tool_parser: vLLM has no tool parser {name!r}{near} (it has {', '.join(known)})")
    raise ConfigError(f"policy.tool_parser: {name!r} needs vLLM's parsers (pip install 'agent-sft[vllm]'){near} "
                      f"(without vLLM agent-sft reads {', '.join(known)})")


# Where vLLM keeps its tool parsers' registry and the request type they read, newest layout first.
VLLM_PARSER_MODULES = (
    ("vllm.tool_parsers.abstract_tool_parser", "vllm.entrypoints.openai.chat_completion.protocol"),
    ("vllm.entrypoints.openai.tool_parsers", "vllm.entrypoints.openai.protocol"),
)


def _vllm_parsers() -> tuple[Any, Any] | None:
    """vLLM's `ToolParserManager` and `ChatCompletionRequest`, from whichever layout this vLLM has; None if none."""
    import importlib

    for registry, protocol in VLLM_PARSER_MODULES:
        try:
            manager = importlib.import_module(registry).ToolParserManager
            request = importlib.import_module(protocol).ChatCompletionRequest
        except (ImportError, AttributeError):
            continue
        return manager, request
    return None


def template_messages(conversation: list[Message]) -> list[dict[str, Any]]:
    """Messages for a chat template: the call fields only where set, a call's arguments decoded (Qwen2.5's
    template writes them with `tojson`)."""
    out = []
    for m in conversation:
        d: dict[str, Any] = {k: v for k, v in m.items() if v is not None}
        if d.get("tool_calls"):
            d["tool_calls"] = [{**c, "function": {**c["function"], "arguments": _decoded(c["function"]["arguments"])}}
                               for c in d["tool_calls"]]
        else:
            d.pop("tool_calls", None)
        out.append(d)
    return out


def api_messages(conversation: list[Message]) -> list[dict[str, Any]]:
    """Messages for an OpenAI-compatible API: role and content, an assistant's calls, a tool message's call id."""
    out = []
    for m in conversation:
        d: dict[str, Any] = {"role": m["role"], "content": m["content"]}
        if m.get("tool_calls"):
            d["tool_calls"] = [dict(c) for c in m["tool_calls"]]
        if m.get("tool_call_id"):
            d["tool_call_id"] = m["tool_call_id"]
        out.append(d)
    return out


def _decoded(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def hermes_text(content: str, calls: list[dict[str, Any]]) -> str:
    """An answer written out in the Hermes format (the response recorded for an answer that came as calls)."""
    parts = [content] if content else []
    for c in calls:
        f = c["function"]
        parts.append("<tool_call>\n" + json.dumps({"name": f["name"], "arguments": _decoded(f["arguments"])},
                                                  ensure_ascii=False) + "\n</tool_call>")
    return "\n".join(parts)


def read_answer(c: Completion, tools: list[dict], parser: ToolCallParser) -> Completion:
    """`c` (an in-process backend's answer to a prompt that offered `tools`) with its calls read by `parser`."""
    if c.error or c.finish_reason == END_CONTEXT:
        return c
    a = parser.parse(c.text, tools)
    c.content, c.reasoning, c.tool_calls, c.tool_error = a.content, a.reasoning, a.calls, a.error
    return c


def read_api_answer(c: Completion, message: dict[str, Any]) -> Completion:
    """`c` (an OpenAI-compatible server's answer to a request with `tools`) with the calls of its `message`;
    reasoning from the server's `reasoning_content` (or `reasoning`), else the content's `<think>` block.
    `c.text` becomes the answer written out in the Hermes format (the recorded response)."""
    calls: list[dict[str, Any]] = []
    error = ""
    for tc in message.get("tool_calls") or []:
        f = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            calls, error = [], f"malformed tool call from the server: {_short(json.dumps(tc, default=str))}"
            break
        args = f.get("arguments")
        calls.append(call(f["name"], "{}" if args is None else args, str(tc.get("id") or "")))
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    content = c.text
    if not reasoning:
        content, reasoning = split_reasoning(content)
    c.content, c.reasoning, c.tool_calls, c.tool_error = content, reasoning or None, calls, error
    c.text = hermes_text(c.text, calls)
    return c


def tools_offered(infos: list[dict[str, Any]] | None, i: int) -> list[dict] | None:
    """The tools the episode of conversation `i` offers (its info's `tools`), None with text actions."""
    return (infos[i] or {}).get("tools") if infos is not None else None
