"""The judge's prompts: a rubric template (built in, or a file of the user's) filled with an episode
rendered compactly from its `raw` row.

A template is text with `str.format` placeholders (write a literal brace as `{{` or `}}`):

- pointwise (one episode): `{episode}` (required: the steps), `{goal}`, `{steps}` (how many), `{env}`,
  `{task_id}`, `{task_type}`, `{outcome}` (how the env ended it: success, failure, step_limit, ...);
- listwise (the episodes of one task, as OpenPipe's RULER): `{episodes}` (required: each attempt,
  numbered from 1), `{count}`, `{goal}`, `{env}`, `{task_id}`, `{task_type}`, `{example}` (a JSON list
  of `{count}` numbers, to show the answer's shape).

The built-in rubrics withhold the outcome: the judge scores the behaviour from the steps alone, so its
score is a signal apart from the env's `success` and `final_reward` (which filters read already). A
template that wants it names `{outcome}`. Both ask for a score from 0 to 10 (`verdict` reads it); a
template of one's own must ask for the same scale. The whole template's sha256 is recorded with every
verdict.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass

from agent_sft.errors import ConfigError

POINTWISE = "pointwise"
LISTWISE = "listwise"
MODES = (POINTWISE, LISTWISE)

FIELDS = {
    POINTWISE: ("episode", "goal", "steps", "env", "task_id", "task_type", "outcome"),
    LISTWISE: ("episodes", "count", "goal", "env", "task_id", "task_type", "example"),
}

POINTWISE_TEMPLATE = """\
You are judging how well an AI agent did a task in a text environment.

Task: {goal}

The agent's episode, {steps} steps (each shows what the agent observed, then the action it took):

{episode}

Score the episode from 0 to 10 for how well and how efficiently the agent reached the goal: 10 when it \
reached the goal with no wasted or invalid actions, 0 when it made no progress towards it.
Answer with one JSON object and nothing else: {{"score": <an integer from 0 to 10>, "reason": "<one sentence>"}}"""

LISTWISE_TEMPLATE = """\
You are comparing {count} attempts by AI agents at the same task in a text environment.

Task: {goal}

{episodes}

Score each attempt from 0 to 10 for how well and how efficiently it reached the goal, against the others: \
a better attempt gets a higher score, and attempts that are equally good may share one.
Answer with one JSON list of {count} scores, in the order of the attempts, and nothing else, for example: {example}"""

OBSERVATION_CHARS = 800  # of each observation and invalid answer shown; the rest is cut
EPISODE_CHARS = 16_000  # of an episode's steps; the middle steps are left out beyond it


@dataclass(frozen=True)
class Template:
    mode: str
    text: str
    source: str = "built-in"  # or the file it came from

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def render(self, **values: object) -> str:
        return self.text.format(**values)


def load_template(mode: str, path: str | None = None) -> Template:
    """The built-in template of `mode`, or the one in the file at `path`, checked.

    Raises:
        ConfigError: an unknown mode, a file that cannot be read, or a template with an unknown or
            missing placeholder or a stray brace.
    """
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: choose {' or '.join(MODES)}")
    if path is None:
        return Template(mode, POINTWISE_TEMPLATE if mode == POINTWISE else LISTWISE_TEMPLATE)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise ConfigError(f"--template {path}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"--template {path}: not UTF-8 text ({e.reason})") from None
    check_template(text, mode, path)
    return Template(mode, text, path)


def check_template(text: str, mode: str, where: str) -> None:
    """Refuse a template `str.format` cannot fill with the placeholders of `mode`."""
    allowed = FIELDS[mode]
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise ConfigError(f"--template {where}: {e}; write a literal brace as {{{{ or }}}}") from None
    for f in names:
        if f not in allowed:
            raise ConfigError(f"--template {where}: unknown placeholder {{{f}}}; a {mode} template takes "
                              + ", ".join("{" + a + "}" for a in allowed) + " (a literal brace is {{ or }})")
    try:  # a format spec that does not fit its value (`{goal:d}`) fails only when filled
        text.format(**{a: 1 if a in ("steps", "count") else "x" for a in allowed})
    except (ValueError, TypeError) as e:
        raise ConfigError(f"--template {where}: {e}") from None
    if allowed[0] not in names:
        raise ConfigError(f"--template {where}: a {mode} template must contain {{{allowed[0]}}}, where the "
                          f"{'episode goes' if mode == POINTWISE else 'attempts go'}")


def _cut(text: str, n: int = OBSERVATION_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= n else text[:n] + " [...]"


def _fitting(parts: list[str], budget: int) -> list[str]:
    """The leading `parts` whose lengths add up to at most `budget`."""
    out, size = [], 0
    for p in parts:
        size += len(p)
        if size > budget:
            break
        out.append(p)
    return out


def render_steps(steps: list[dict]) -> str:
    """An episode's steps as text: each observation and the action taken (an invalid answer is shown as
    written, with the reason); when long, the middle steps are left out."""
    parts = []
    for s in steps:
        if s.get("valid", True) and s.get("action"):
            act = f"Action: {s['action']}"
        else:
            act = f"Answer (invalid: {s.get('invalid_reason') or 'no action'}): {_cut(s.get('response') or '')}"
        parts.append(f"Step {s['index'] + 1}\nObservation: {_cut(s.get('observation') or '')}\n{act}")
    if sum(len(p) for p in parts) > EPISODE_CHARS:
        head = _fitting(parts, EPISODE_CHARS // 2)
        tail = _fitting(parts[len(head):][::-1], EPISODE_CHARS // 2)[::-1]
        parts = head + [f"[{len(parts) - len(head) - len(tail)} steps left out]"] + tail
    return "\n\n".join(parts) if parts else "(no steps)"


def pointwise_prompt(template: Template, ep: dict) -> str:
    """The prompt judging one episode (`ep`: a raw row, or its columns the prompt uses)."""
    return template.render(episode=render_steps(ep["steps"]), goal=ep["goal"], steps=len(ep["steps"]),
                           env=ep["env"], task_id=ep["task_id"], task_type=ep["task_type"], outcome=ep["end_reason"])


def listwise_prompt(template: Template, eps: list[dict]) -> str:
    """The prompt comparing the episodes `eps` of one task."""
    first = eps[0]
    episodes = "\n\n".join(f"=== Attempt {i + 1} ({len(ep['steps'])} steps) ===\n{render_steps(ep['steps'])}"
                           for i, ep in enumerate(eps))
    example = "[" + ", ".join(str((7 + 3 * i) % 11) for i in range(len(eps))) + "]"
    return template.render(episodes=episodes, count=len(eps), goal=first["goal"], env=first["env"],
                           task_id=first["task_id"], task_type=first["task_type"], example=example)
