"""Prompts the policy sees, and parsing of what it answers.

Two memory styles:

- ``window`` (verl-agent): every step's prompt is one user message carrying the task, the step count,
  the last ``history_length`` observation/action pairs, the current observation and the admissible
  actions. The first step uses the no-history variant.
- ``chat``: the conversation grows turn by turn. The first user message holds the instructions, the
  task and the first observation; each later one the new observation and the admissible actions.

Templates are text files that ``prompt.template`` replaces. Built in: ``<env>_<style>.txt`` in the
folder the env's spec names (`EnvSpec.templates`, e.g. ``agent_sft/envs/alfworld/prompts/``), falling
back to ``agent_sft/envs/prompts/generic_<style>.txt``; with tool-call actions (``prompt.actions=tools``)
``<env>_<style>_tools.txt``, then ``generic_<style>_tools.txt``, whose wording asks for a tool call (reasoning
before it allowed) instead of tags. A file has two sections, each opened by a
line ``=== first ===`` or ``=== step ===``; text above the first section line is a comment. A file
without section lines is used for every step. Placeholders are ``str.format`` fields (write ``{{`` and
``}}`` for literal braces), the names verl-agent uses:

=====================  ===========================================================================
``task_description``   the goal ("put a clean apple in fridge")
``current_observation`` the observation the policy acts on
``admissible_actions`` the admissible actions, ``'a'`` quoted and joined by newline-space
``action_history``     the last ``history_length`` pairs, ``[Observation n: '...', Action n: '...']``
``step_count``         steps taken so far
``current_step``       ``step_count + 1``
``history_length``     how many pairs ``action_history`` holds
``max_steps``          the episode's step budget
=====================  ===========================================================================

With text actions, answers are expected as ``<think>...</think><action>...</action>``; `parse_action` checks them the way
verl-agent does, plus validity as the env states it (a list of admissible actions, or regular
expressions for free-form actions), and says precisely why an answer is invalid.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from agent_sft.errors import AgentSFTError
from agent_sft.records import Message, split_think

PLACEHOLDERS = (
    "task_description",
    "current_observation",
    "admissible_actions",
    "action_history",
    "step_count",
    "current_step",
    "history_length",
    "max_steps",
)
STYLES = ("window", "chat")
ACTIONS = ("text", "tools")
_SECTION = re.compile(r"^=== *(first|step) *===[ \t]*$", re.MULTILINE)


class PromptError(AgentSFTError, ValueError):
    """A prompt template a user can fix (unreadable, unknown placeholder, bad sections)."""


@dataclass(frozen=True)
class PromptTemplate:
    """The two texts of a prompt style: `first` for the first step, `step` for every later one, and for
    an env whose info gives no goal, the text of its first observation that the goal follows
    (`goal_marker`, from the env's spec: `resolve_template` sets it)."""

    first: str
    step: str
    source: str = "<string>"
    goal_marker: str = ""

    @classmethod
    def from_text(cls, text: str, source: str = "<string>") -> PromptTemplate:
        """Parse a template file's text (see the module docstring for the format).

        Raises:
            PromptError: on a repeated or missing section, or an unknown placeholder.
        """
        marks = list(_SECTION.finditer(text))
        if not marks:
            first = step = text.strip()
        else:
            sections: dict[str, str] = {}
            for i, m in enumerate(marks):
                end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
                name = m.group(1)
                if name in sections:
                    raise PromptError(f"{source}: section '=== {name} ===' appears twice")
                sections[name] = text[m.end() : end].strip()
            if "step" not in sections:
                raise PromptError(f"{source}: has '=== first ===' but no '=== step ===' section")
            step = sections["step"]
            first = sections.get("first", step)
        for name, body in (("first", first), ("step", step)):
            _check_placeholders(body, f"{source} ({name})")
        return cls(first=first, step=step, source=source)

    @classmethod
    def load(cls, path: str | Path) -> PromptTemplate:
        """Read a template file.

        Raises:
            PromptError: when the file cannot be read or does not parse.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise PromptError(f"prompt.template: cannot read {path}: {e.strerror}") from None
        return cls.from_text(text, str(path))

    @classmethod
    def builtin(cls, env_name: str, style: str, actions: str = "text") -> PromptTemplate:
        """The packaged template of an env (`<name>_<style>.txt` where its spec keeps templates; an alias
        such as `alfworld/AlfredTWEnv` finds its env's), else the generic one; with tool-call actions
        (`actions="tools"`) the `<name>_<style>_tools.txt` variant, else the generic tools one."""
        if style not in STYLES:
            raise PromptError(f"prompt.style: {style!r} is not one of {', '.join(STYLES)}")
        if actions not in ACTIONS:
            raise PromptError(f"prompt.actions: {actions!r} is not one of {', '.join(ACTIONS)}")
        from agent_sft.envs import find_spec

        spec = find_spec(env_name)
        family = (spec.name if spec else env_name).split("/")[0].lower()
        suffix = "_tools" if actions == "tools" else ""
        places = []
        if spec is not None and spec.templates:
            package, _, sub = spec.templates.partition(":")
            places.append((resources.files(package).joinpath(*filter(None, sub.split("/"))),
                           f"{family}_{style}{suffix}"))
        places.append((resources.files("agent_sft.envs") / "prompts", f"generic_{style}{suffix}"))
        for folder, stem in places:
            res = folder / f"{stem}.txt"
            if res.is_file():
                return cls.from_text(res.read_text(encoding="utf-8"), f"builtin:{stem}.txt")
        raise PromptError(f"no built-in {style} template (looked for {family}_{style}{suffix}.txt)")

    def render(self, first: bool, **fields: Any) -> str:
        return (self.first if first else self.step).format(**fields)


def _check_placeholders(body: str, where: str) -> None:
    try:
        parsed = list(string.Formatter().parse(body))
    except ValueError as e:
        raise PromptError(f"{where}: {e} (write {{{{ and }}}} for literal braces)") from None
    for _, name, _, _ in parsed:
        if name is None:
            continue
        base = re.split(r"[.\[]", name, maxsplit=1)[0]
        if base not in PLACEHOLDERS:
            shown = "{" + name + "}" if name else "{}"
            raise PromptError(f"{where}: unknown placeholder {shown}; allowed: {', '.join(PLACEHOLDERS)}")


def resolve_template(env_name: str, style: str, path: str | None, actions: str = "text") -> PromptTemplate:
    """The template a run uses: the file at `path` when given, else the built-in one for the run's action
    mode (`prompt.actions`); with the env's goal marker (`EnvSpec.goal_marker`)."""
    from agent_sft.envs import find_spec

    template = PromptTemplate.load(path) if path else PromptTemplate.builtin(env_name, style, actions)
    spec = find_spec(env_name)
    marker = spec.goal_marker if spec is not None else None
    return dataclasses.replace(template, goal_marker=marker) if marker else template


def format_admissible(actions: list[str]) -> str:
    """verl-agent's rendering: quoted, joined by newline-space, without `help`."""
    return "\n ".join(f"'{a}'" for a in actions if a != "help")


def format_history(pairs: list[tuple[str, str]], first_index: int) -> str:
    """`[Observation n: '...', Action n: '...']` lines, numbered from `first_index + 1`."""
    return "\n".join(
        f"[Observation {first_index + j + 1}: '{obs}', Action {first_index + j + 1}: '{act}']"
        for j, (obs, act) in enumerate(pairs)
    )


def task_description(goal: str, observation: str, marker: str = "") -> str:
    """The goal; when the env gave none, the text of `observation` after the env's goal marker."""
    if goal or not marker:
        return goal
    i = observation.find(marker)
    return observation[i + len(marker) :].strip() if i >= 0 else ""


@dataclass
class Conversation:
    """One episode's messages and memory; renders each turn's prompt and records the answers.

    `messages` is the episode's full message list (`[system], user, assistant, user, ...`). In the
    window style the policy sees `[system] + [latest user]`; in the chat style all of it.

    With tool actions (`tools`), an assistant turn carries its calls (`respond_call`); in the chat style the
    next observation answers the played call as a `tool` message tied to its id (a call not played gets a
    `tool` message saying so, so that every call has its answer), and in the window style it comes in the
    next window's user message, as with text actions.
    """

    template: PromptTemplate
    style: str = "window"
    history_length: int = 2
    max_steps: int = 50
    system: str | None = None
    goal: str = ""
    messages: list[Message] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)  # (observation, action sent)
    tools: bool = False
    _pending: list[str] = field(default_factory=list)  # ids of the last turn's calls, answered by the next observation
    _mark: int = 0  # len(messages) before the last observation

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise PromptError(f"prompt.style: {self.style!r} is not one of {', '.join(STYLES)}")
        if self.system and not self.messages:
            self.messages.append({"role": "system", "content": self.system})

    def observe(self, observation: str, admissible: list[str]) -> tuple[int, int]:
        """Append the user message for the current turn; returns its prompt window (start, end)."""
        n = len(self.history)
        recent = self.history[-self.history_length :] if self.history_length > 0 else []
        text = self.template.render(
            n == 0,
            task_description=task_description(self.goal, observation if n == 0 else "", self.template.goal_marker),
            current_observation=observation,
            admissible_actions=format_admissible(admissible),
            action_history=format_history(recent, n - len(recent)),
            step_count=n,
            current_step=n + 1,
            history_length=len(recent),
            max_steps=self.max_steps,
        )
        if n == 0 and not self.goal:
            self.goal = task_description("", observation, self.template.goal_marker)
        self._mark = len(self.messages)
        if self.tools and self.style == "chat" and self._pending:
            played, *others = self._pending
            self.messages.append({"role": "tool", "content": text, "tool_call_id": played})
            self.messages += [{"role": "tool", "content": NOT_PLAYED, "tool_call_id": i} for i in others]
        else:
            self.messages.append({"role": "user", "content": text})
        self._pending = []
        end = len(self.messages)
        if self.style == "chat":
            return (1 if self.system else 0), end
        return end - 1, end

    def prompt(self, start: int, end: int) -> list[Message]:
        """The messages the policy sees for the window (start, end)."""
        head = [self.messages[0]] if start > 0 and self.system else []
        return head + self.messages[start:end]

    def respond(self, observation: str, response: str, env_action: str) -> None:
        """Record the policy's answer and the action the env received."""
        self.messages.append({"role": "assistant", "content": response})
        self.history.append((observation, env_action))

    def respond_call(self, observation: str, message: Message, env_action: str) -> None:
        """Record an assistant turn with tool calls (`message`, as stored) and the action the env received."""
        self.messages.append(message)
        self.history.append((observation, env_action))
        self._pending = [c["id"] for c in message.get("tool_calls") or []]

    def retract(self) -> None:
        """Drop the last observation's messages (a turn the policy could not answer)."""
        if self.messages and self.messages[-1]["role"] in ("user", "tool"):
            del self.messages[self._mark:]


# --- action parsing ------------------------------------------------------------------------------

_ACTION = re.compile(r"<action>(.*?)</action>", re.IGNORECASE | re.DOTALL)
_QUOTES = "'\"`"
NOT_PLAYED = "Not played: one tool call is played per turn, the first."


class ParsedAction(NamedTuple):
    action: str  # the action for the env: admissible spelling when it matched; "" when nothing parsed
    valid: bool
    reason: str  # "" when valid


def normalize_action(text: str) -> str:
    """Lowercase, collapse whitespace, drop surrounding quotes."""
    text = " ".join(text.split()).lower()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in _QUOTES:
        text = text[1:-1].strip()
    return text


def think_text(response: str) -> str:
    """The text inside a response's `<think>...</think>` blocks, joined by newlines ("" when there is none)."""
    return split_think(response)[0] or ""


def parse_action(
    response: str,
    admissible: list[str] | None = None,
    require_think: bool = True,
    patterns: list[str] | None = None,
) -> ParsedAction:
    """Read `<think>...</think><action>...</action>` from a response.

    Invalid (with the reason) when: there is no `<action>...</action>`; there are several; the action
    is empty; it is not allowed by the env; or, with `require_think`, there is no `<think>...</think>`.
    An action is allowed when it is among `admissible` (compared after `normalize_action`) or matches
    one of `patterns` in full (regular expressions, case-insensitive); when the env gives neither,
    any action is (the env may still judge it itself: see `env_verdict`).

    Returns:
        `(action, valid, reason)`. `action` is what the env receives: the admissible spelling when it
        matched, the normalized text otherwise, the first one when there are several, and "" when no
        action tag parsed (the loop then sends verl-agent's fallback, see `fallback_action`).
    """
    found = _ACTION.findall(response)
    if not found:
        lower = response.lower()
        if "<action>" in lower:
            return ParsedAction("", False, "unclosed <action> tag (no </action>)")
        if "</action>" in lower:
            return ParsedAction("", False, "</action> without an opening <action> tag")
        return ParsedAction("", False, "missing <action>...</action> tag")
    action = normalize_action(found[0])
    if len(found) > 1:
        return ParsedAction(action, False, f"several <action> tags ({len(found)}); the first was used")
    if not action:
        return ParsedAction("", False, "empty <action> tag")
    allowed = admit(action, admissible, patterns)
    if not allowed.valid:
        return allowed
    action = allowed.action
    if require_think and split_think(response)[0] is None:
        return ParsedAction(action, False, "missing <think>...</think> tag")
    return ParsedAction(action, True, "")


def admit(action: str, admissible: list[str] | None = None, patterns: list[str] | None = None) -> ParsedAction:
    """Whether the env allows `action` (normalized): among `admissible` (then in its admissible spelling) or
    matching one of `patterns` in full; any action when the env gives neither."""
    if admissible or patterns:
        canon = {normalize_action(a): a for a in admissible or []}
        if action in canon:
            return ParsedAction(canon[action], True, "")
        if not any(p.fullmatch(action) for p in _compiled(tuple(patterns or ()))):
            what = "not admissible" if admissible else "matches no action pattern"
            return ParsedAction(action, False, f"{what}: {action!r}")
    return ParsedAction(action, True, "")


@functools.lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> list[re.Pattern]:
    """The env's action patterns compiled; one that does not compile matches nothing."""
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p, re.IGNORECASE | re.DOTALL))
        except re.error:
            continue
    return out


def env_verdict(form: ParsedAction, info: dict) -> tuple[bool, str] | None:
    """A step's validity when the env judged the action itself, None when it did not.

    `form` is the response parsed for its format only (`parse_action` without admissible actions or
    patterns); `info` is what the env's `step` returned. The env's `action_valid` (bool) and
    `invalid_reason` (str) replace the admissibility check; a malformed answer stays invalid.
    """
    if "action_valid" not in info:
        return None
    if not form.valid:
        return False, form.reason
    if info["action_valid"]:
        return True, ""
    reason = str(info.get("invalid_reason") or "").strip()
    return False, f"rejected by the env: {reason}" if reason else "rejected by the env"


def fallback_action(response: str) -> str:
    """What verl-agent sends to the env when no action tag parsed: the response's last 30 chars."""
    return response.lower()[-30:]
