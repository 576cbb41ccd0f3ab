"""One recorded episode replayed in its env and compared, step by step, with what was recorded.

Pure apart from the env, which it reaches through `call(command, args) -> Reply` (an env pool's slot): the
reset the collection sent (the episode's seed and task id), then every action as the env received it (the
parsed action, or the text sent in its place, `env_action` in the step's info). The first difference ends
the replay and is reported with its step and field:

- `task_hash`, at the reset: the task's files or records changed since collection (`info["task_hash"]`);
- `goal`, at the reset; `observation`, before a step (what the policy acted on);
- `reward`, `done` and, at the end, `final_observation`, after a step;
- `response`, before a step: its answer does not give its recorded action, validity or sent text, or the assistant
  message at its position is not that answer (`response.check_step`);
- `success` and `end_reason`, after the last step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from agent_sft.envs.tools import toolset_for
from agent_sft.records import END_FAILURE, END_STEP_LIMIT, END_SUCCESS
from agent_sft.verify.response import Reading, check_step

MATCHED, MISMATCHED, ERROR, NOT_REPLAYABLE = "matched", "mismatched", "error", "not_replayable"
CLIP = 160  # characters of a differing text kept on each side of a report


@dataclass
class Outcome:
    """What replaying one episode found.

    Attributes:
        status: `matched`, `mismatched`, `error` (the env failed while replaying) or `not_replayable`.
        step: the first step that differs (None: at the reset).
        field: what differs there (`observation`, `response`, `reward`, `done`, `final_observation`, `success`,
            `end_reason`, `goal`, `task_hash`).
        recorded, replayed: the two values, texts clipped around their first difference (for `response`, the
            recorded value and what the answer gives).
        reason: why it was not replayed, the env's error, or what of a response differs.
    """

    episode_id: str
    env: str
    task_id: str
    status: str
    step: int | None = None
    field: str = ""
    recorded: Any = None
    replayed: Any = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clip_pair(a: str, b: str, width: int = CLIP) -> tuple[str, str]:
    """Two texts cut to `width` characters from a little before where they first differ."""
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    start = max(0, i - width // 4)

    def cut(t: str) -> str:
        return ("…" if start else "") + t[start:start + width] + ("…" if len(t) > start + width else "")

    return cut(a), cut(b)


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return not math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return True
    return a != b


def sent_action(step: dict) -> str:
    """The text the env received at a recorded step: the parsed action, or what was sent in its place."""
    info = _info(step)
    return str(info["env_action"]) if "env_action" in info else step["action"]


def _info(step: dict) -> dict:
    try:
        info = json.loads(step.get("info") or "{}")
    except (TypeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _end_reason(won: bool, terminated: bool, truncated: bool) -> str | None:
    """The end reason the step machine gives an episode the env ended; None when it did not end it."""
    if won:
        return END_SUCCESS
    if terminated:
        return END_FAILURE
    return END_STEP_LIMIT if truncated else None


def replay(row: dict, call: Callable[[str, tuple], Any], reading: Reading | None = None) -> Outcome:
    """Replay the raw row `row` (its `steps` with `observation`, `action`, `response`, `reward`, `done`, `info`, and
    its `messages`) through `call`, which answers an env pool's `reset`/`step` request with a `Reply` (`ok`,
    `value`, `error`); each step's answer is read as `reading` says the collection read it."""
    base = {"episode_id": row["episode_id"], "env": row["env"], "task_id": row["task_id"]}
    reading = reading or Reading()

    def differs(step: int | None, field: str, recorded: Any, replayed: Any, reason: str = "") -> Outcome:
        if isinstance(recorded, str) and isinstance(replayed, str):
            recorded, replayed = clip_pair(recorded, replayed)
        return Outcome(**base, status=MISMATCHED, step=step, field=field, recorded=recorded, replayed=replayed,
                       reason=reason)

    def failed(what: str, error: str) -> Outcome:
        return Outcome(**base, status=ERROR, reason=f"{what}: {error.strip().splitlines()[0] if error else '?'}"[:500])

    reply = call("reset", (row["seed"], {"task_id": row["task_id"]}))
    if not reply.ok:
        return failed("env reset failed", reply.error)
    obs, info = reply.value
    if row.get("task_hash") and info.get("task_hash") != row["task_hash"]:
        return differs(None, "task_hash", row["task_hash"], info.get("task_hash"))
    if info.get("goal") and str(info["goal"]) != row["goal"]:
        return differs(None, "goal", row["goal"], str(info["goal"]))
    toolset = toolset_for(reading.spec, info) if reading.actions == "tools" else None
    steps = row["steps"] or []
    won = terminated = truncated = False
    for k, step in enumerate(steps):
        if obs != step["observation"]:
            return differs(k, "observation", step["observation"], obs)
        answer = check_step(step, row.get("messages") or [], reading, toolset)
        if answer is not None:
            return differs(k, "response", answer.recorded, answer.read, answer.reason)
        reply = call("step", (sent_action(step),))
        if not reply.ok:
            return failed(f"env step {k} failed", reply.error)
        obs, reward, terminated, truncated, info = reply.value
        won = bool(info.get("won", False))
        done = bool(terminated or truncated or won)
        if _differs(step["reward"], float(reward)):
            return differs(k, "reward", step["reward"], float(reward))
        if done != bool(step["done"]):
            return differs(k, "done", bool(step["done"]), done)
        final = _info(step).get("final_observation")
        if done and final is not None and obs != final:
            return differs(k, "final_observation", final, obs)
    last = len(steps) - 1 if steps else None
    if won != bool(row["success"]):
        return differs(last, "success", bool(row["success"]), won)
    end = _end_reason(won, terminated, truncated)
    if end is not None and row["end_reason"] != end:
        return differs(last, "end_reason", row["end_reason"], end)
    return Outcome(**base, status=MATCHED)
