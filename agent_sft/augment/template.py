"""What the model is asked for each step: the step's own prompt (the folder's template: the task, the history,
the observation and the answer format) followed by a hint naming the known-good action, filled from a
template (built in, or a file of the user's).

A template is text with `str.format` placeholders (write a literal brace as `{{` or `}}`): `{action}` (the
recorded action, as the env received it), `{call}` (with tool-call actions the recorded call, as JSON
`{"name": ..., "arguments": {...}}`; with text actions the action again), `{goal}`, `{env}`, `{step}` (the
step's number, from 1). It must name `{action}` or `{call}`. The whole template's sha256 is recorded with every
rationale. The built-in ones ask for the reasoning in a `<think>` block, then the action in the format the
prompt asked for (an `<action>` tag, or the tool call).
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass

from agent_sft.errors import ConfigError

FIELDS = ("action", "call", "goal", "env", "step")

TEXT_TEMPLATE = """\
The right action now is known: {action}
Explain, step by step, why this action is the right one at this point, from the task and what has been \
observed so far, as if you were working it out yourself (do not mention that you were told it). Write the \
reasoning inside <think> </think> tags, then give exactly this action in the required format: \
<action>{action}</action>"""

TOOLS_TEMPLATE = """\
The right action now is known: {action}, played by the tool call {call}
Explain, step by step, why this action is the right one at this point, from the task and what has been \
observed so far, as if you were working it out yourself (do not mention that you were told it). Write the \
reasoning inside <think> </think> tags, then make exactly this tool call."""


@dataclass(frozen=True)
class Template:
    text: str
    source: str = "built-in"  # or the file it came from

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def render(self, **values: object) -> str:
        return self.text.format(**values)


def load_template(tools: bool, path: str | None = None) -> Template:
    """The built-in template (for tool-call actions when `tools`), or the one in the file at `path`, checked.

    Raises:
        ConfigError: a file that cannot be read, or a template with an unknown placeholder, a stray brace, or
            neither `{action}` nor `{call}`.
    """
    if path is None:
        return Template(TOOLS_TEMPLATE if tools else TEXT_TEMPLATE)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise ConfigError(f"--template {path}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"--template {path}: not UTF-8 text ({e.reason})") from None
    check_template(text, path)
    return Template(text, path)


def check_template(text: str, where: str) -> None:
    """Refuse a template `str.format` cannot fill, or one that does not give the model the action."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise ConfigError(f"--template {where}: {e}; write a literal brace as {{{{ or }}}}") from None
    for f in names:
        if f not in FIELDS:
            raise ConfigError(f"--template {where}: unknown placeholder {{{f}}}; an augment template takes "
                              + ", ".join("{" + a + "}" for a in FIELDS) + " (a literal brace is {{ or }})")
    try:  # a format spec that does not fit its value (`{step:s}`) fails only when filled
        text.format(**{a: 1 if a == "step" else "x" for a in FIELDS})
    except (ValueError, TypeError) as e:
        raise ConfigError(f"--template {where}: {e}") from None
    if "action" not in names and "call" not in names:
        raise ConfigError(f"--template {where}: an augment template must contain {{action}} or {{call}}, the "
                          "known-good action the reasoning is written for")
