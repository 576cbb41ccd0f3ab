"""ATIF import: trajectories written by any tool, as raw rows of a dataset folder.

    agent-sft import --format atif imported/ runs/*.json --env terminal --task-key task_name

Each document becomes one raw row, written with `DatasetWriter` into a folder whose fingerprint says what it
holds (`{"imported": "atif", "env": NAME}`), so it is filtered, built, exported and pushed like a collected
one. The steps become messages in order (`system` -> system, `user` -> user, `agent` -> assistant with its
`reasoning_content` and `tool_calls`; an agent step's observation results -> `tool` messages tied to their call,
or user messages when they answer no call) and each agent step one step of the episode.

What ATIF does not say is taken from the document's `extra` where agent-sft's own export put it (so raw ->
ATIF -> raw gives the row back), and otherwise:
- the episode id: `trajectory_id`, else `session_id`, else a hash of the document's content (importing the same
  file twice adds nothing); the split: the one `extra` records, else a stable hash of the episode id;
- the task id: `extra[--task-key]` when given and present, else the episode id;
- success: `extra["success"]` when it is a boolean. Otherwise nothing judged the episode: the row says
  `success: false` (the raw schema's column is a boolean, and a filter or a pair must not take an unjudged
  episode for a success) with `end_reason: "unjudged"`, which no collected episode has;
- a step's action: the first tool call as `name(arguments)`, else the agent's message; its reward 0, valid.
Embedded `subagent_trajectories` are not imported (import their files of their own).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from agent_sft.errors import AgentSFTError, ConfigError
from agent_sft.records import ADDITIONS, END_FAILURE, END_SUCCESS, END_UNJUDGED, SPLITS, task_split

"""The end reason of an imported episode whose document says nothing of its success."""
VAL_FRACTION = 0.1  # of episodes in the validation split, as `data.val_fraction` defaults to for collected folders
_SOURCES = ("system", "user", "agent")
_STEP_FIELDS = ("index", "observation", "prompt_start", "prompt_end", "action", "valid", "invalid_reason", "reward",
                "done", "info", "finish_reason", "latency_s", "response")


class ImportRefused(AgentSFTError):
    """The folder cannot take these trajectories (a collected folder, another env's import)."""


def fingerprint(env: str) -> dict:
    """The fingerprint of a folder of ATIF trajectories imported as env `env`."""
    return {"imported": "atif", "env": env}


# --- checking a document -------------------------------------------------------------------------------


def harbor_validator() -> Callable[[dict], list[str]] | None:
    """Harbor's `TrajectoryValidator` as a function (document -> errors), or None when harbor is not installed."""
    try:
        from harbor.utils.trajectory_validator import TrajectoryValidator
    except ImportError:
        return None

    def validate(doc: dict) -> list[str]:
        v = TrajectoryValidator()
        return [] if v.validate(doc, validate_images=False) else list(v.get_errors()) or ["invalid"]

    return validate


def shape_errors(doc: Any) -> list[str]:
    """What makes `doc` unreadable as an ATIF trajectory, checked without Harbor's models (the shape only)."""
    if not isinstance(doc, dict):
        return ["a trajectory must be a JSON object"]
    errors = []
    agent = doc.get("agent")
    if not isinstance(agent, dict) or not isinstance(agent.get("name"), str) or not isinstance(agent.get("version"), str):
        errors.append("agent: an object with a name and a version is required")
    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        return errors + ["steps: a non-empty list is required"]
    for i, s in enumerate(steps):
        where = f"steps[{i}]"
        if not isinstance(s, dict):
            errors.append(f"{where}: not an object")
            continue
        if s.get("step_id") != i + 1:
            errors.append(f"{where}.step_id: expected {i + 1}")
        if s.get("source") not in _SOURCES:
            errors.append(f"{where}.source: one of {', '.join(_SOURCES)} is required")
        if not isinstance(s.get("message"), (str, list)):
            errors.append(f"{where}.message: text is required")
        for j, tc in enumerate(s.get("tool_calls") or []):
            if not (isinstance(tc, dict) and isinstance(tc.get("tool_call_id"), str)
                    and isinstance(tc.get("function_name"), str) and isinstance(tc.get("arguments"), dict)):
                errors.append(f"{where}.tool_calls[{j}]: tool_call_id, function_name and arguments (an object) are required")
        obs = s.get("observation")
        if obs is not None and not (isinstance(obs, dict) and isinstance(obs.get("results"), list)):
            errors.append(f"{where}.observation: an object with a results list is required")
    return errors


# --- a document as a raw row ---------------------------------------------------------------------------


def _text(content: Any) -> str:
    """A message as text: a string as it is, the text parts of multimodal content joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _openai_call(tc: dict) -> dict:
    args = (tc.get("extra") or {}).get("arguments")  # a malformed call's text, kept by agent-sft's export
    if not isinstance(args, str):
        args = json.dumps(tc.get("arguments") or {}, ensure_ascii=False)
    return {"id": tc.get("tool_call_id") or "", "type": "function",
            "function": {"name": tc.get("function_name") or "", "arguments": args}}


def _seconds(ts: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _get(d: dict, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """`d[key]` when it is of `kind` (a boolean is not a number here), else `default`."""
    v = d.get(key)
    if isinstance(v, bool) and kind is not bool:
        return default
    return v if isinstance(v, kind) else default


def _json_text(v: Any) -> str:
    """A value as the JSON text a raw row stores (text stays as it is), written as agent-sft writes it."""
    return v if isinstance(v, str) else json.dumps(v if v is not None else {})


def content_id(doc: dict) -> str:
    """A stable id of a document by its content (key order and spacing aside)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]


def _raw_step(s: dict, index: int, messages: list[dict], last: bool) -> dict:
    """The raw step of an agent step whose assistant message is `messages[-1]`."""
    extra = s.get("extra") if isinstance(s.get("extra"), dict) else {}
    metrics = s.get("metrics") if isinstance(s.get("metrics"), dict) else {}
    end = len(messages) - 1
    seen = next((m["content"] for m in reversed(messages[:-1]) if m["role"] in ("user", "tool")), "")
    calls = s.get("tool_calls") or []
    if calls:
        action = f"{calls[0].get('function_name')}({json.dumps(calls[0].get('arguments') or {}, ensure_ascii=False)})"
    else:
        action = _text(s.get("message")).strip()
    info = extra.get("info", {})
    rest = {k: v for k, v in extra.items() if k not in _STEP_FIELDS}  # another tool's step metadata, kept
    if rest or not isinstance(info, str):
        info = {**(info if isinstance(info, dict) else {}), **rest}
    step = {
        "index": _get(extra, "index", int, index),
        "observation": _get(extra, "observation", str, seen),
        "prompt_start": _get(extra, "prompt_start", int, 1 if messages[0]["role"] == "system" else 0),
        "prompt_end": _get(extra, "prompt_end", int, end),
        "response": _get(extra, "response", str, _text(s.get("message"))),
        "action": _get(extra, "action", str, action),
        "valid": _get(extra, "valid", bool, True),
        "invalid_reason": _get(extra, "invalid_reason", str, ""),
        "reward": float(_get(extra, "reward", (int, float), 0.0)),
        "done": _get(extra, "done", bool, last),
        "info": _json_text(info),
        "prompt_tokens": _get(metrics, "prompt_tokens", int, None),
        "completion_tokens": _get(metrics, "completion_tokens", int, None),
        "finish_reason": _get(extra, "finish_reason", str, None),
        "latency_s": float(_get(extra, "latency_s", (int, float), 0.0)),
    }
    for key in ("prompt_token_ids", "completion_token_ids", "logprobs"):
        if isinstance(metrics.get(key), list):
            step[key] = metrics[key]
    top = (metrics.get("extra") or {}).get("top_logprobs") if isinstance(metrics.get("extra"), dict) else None
    if isinstance(top, list):
        step["top_logprobs"] = top
    return step


def _messages_and_steps(doc: dict) -> tuple[list[dict], list[dict]]:
    messages: list[dict] = []
    steps: list[dict] = []
    atif_steps = doc["steps"]
    last_agent = max((i for i, s in enumerate(atif_steps) if s.get("source") == "agent"), default=-1)
    for i, s in enumerate(atif_steps):
        source = s.get("source")
        if source != "agent":
            messages.append({"role": "system" if source == "system" else "user", "content": _text(s.get("message"))})
            continue
        m: dict[str, Any] = {"role": "assistant", "content": _text(s.get("message"))}
        if s.get("reasoning_content"):
            m["reasoning_content"] = s["reasoning_content"]
        if s.get("tool_calls"):
            m["tool_calls"] = [_openai_call(tc) for tc in s["tool_calls"]]
        messages.append(m)
        steps.append(_raw_step(s, len(steps), messages, i == last_agent))
        for r in (s.get("observation") or {}).get("results") or []:
            call_id = r.get("source_call_id") or (r.get("extra") or {}).get("tool_call_id")
            if call_id:
                messages.append({"role": "tool", "content": _text(r.get("content")), "tool_call_id": call_id})
            else:
                messages.append({"role": "user", "content": _text(r.get("content"))})
    return messages, steps


def from_atif(doc: dict, env: str, task_key: str | None = None) -> dict:
    """The raw row of one ATIF document (checked already), imported as env `env`."""
    extra = doc.get("extra") if isinstance(doc.get("extra"), dict) else {}
    agent = doc.get("agent") or {}
    episode = doc.get("trajectory_id") or doc.get("session_id") or content_id(doc)
    messages, steps = _messages_and_steps(doc)
    # agent-sft's own documents carry their task id; another tool's give it under --task-key, or none
    task = extra.get(task_key) if task_key else extra.get("task_id") if isinstance(extra.get("extra"), (dict, str)) else None
    judged = isinstance(extra.get("success"), bool)
    success = bool(extra.get("success")) if judged else False
    policy = extra.get("policy") if isinstance(extra.get("policy"), dict) else {}
    stamps = [t for t in (_seconds(s.get("timestamp")) for s in doc["steps"] if s.get("timestamp")) if t is not None]
    prompt = [s["prompt_tokens"] for s in steps]
    completion = [s["completion_tokens"] for s in steps]
    own_extra = extra.get("extra")
    if not isinstance(own_extra, (dict, str)):  # a document of another tool: its extra and agent, kept
        own_extra = {**extra, "atif": {"agent": agent, "schema_version": doc.get("schema_version")}}
    rewards = [s["reward"] for s in steps]
    row = {
        "episode_id": str(episode),
        "env": env,
        "task_id": str(task) if task is not None and task != "" else str(episode),
        "task_type": _get(extra, "task_type", str, ""),
        "goal": _get(extra, "goal", str, ""),
        "seed": _get(extra, "seed", int, 0),
        "run_seed": _get(extra, "run_seed", int, 0),
        "sample_index": _get(extra, "sample_index", int, 0),
        "split": extra["split"] if extra.get("split") in SPLITS else task_split(str(episode), VAL_FRACTION),
        "game_split": _get(extra, "game_split", str, "imported"),
        "policy": {"kind": _get(policy, "kind", str, "atif"),
                   "model": _get(policy, "model", str, agent.get("model_name") or ""),
                   "sampling": _json_text(policy.get("sampling", {}))},
        "prompt_style": extra["prompt_style"] if extra.get("prompt_style") in ("window", "chat") else "chat",
        "messages": messages,
        "steps": steps,
        "success": success,
        "rewards": rewards,
        "final_reward": float(sum(rewards)),
        "episode_length": len(steps),
        "num_invalid": sum(1 for s in steps if not s["valid"]),
        "prompt_tokens": sum(prompt) if steps and None not in prompt else None,
        "completion_tokens": sum(completion) if steps and None not in completion else None,
        "end_reason": _get(extra, "end_reason", str, (END_SUCCESS if success else END_FAILURE) if judged else END_UNJUDGED),
        "error": _get(extra, "error", str, ""),
        "started_at": float(_get(extra, "started_at", (int, float), stamps[0] if stamps else 0.0)),
        "duration_s": float(_get(extra, "duration_s", (int, float), stamps[-1] - stamps[0] if stamps else 0.0)),
        "versions": _json_text(extra.get("versions", {})),
        "extra": _json_text(own_extra),
    }
    tools = (agent.get("extra") or {}).get("tools") if isinstance(agent.get("extra"), dict) else None
    if isinstance(tools, str) or isinstance(agent.get("tool_definitions"), list):
        row["tools"] = tools if isinstance(tools, str) else json.dumps(agent["tool_definitions"])
    if isinstance(extra.get("tokens_complete"), bool):
        row["tokens_complete"] = extra["tokens_complete"]
    if isinstance(extra.get("task_hash"), str):
        row["task_hash"] = extra["task_hash"]
    return row


# --- files into a folder -------------------------------------------------------------------------------


def iter_files(paths: list[str]) -> Iterator[str]:
    """The files named, a folder standing for the .json files under it (sorted)."""
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                yield from (os.path.join(root, f) for f in sorted(files) if f.endswith(".json"))
        else:
            yield p


def read_document(path: str, validate: Callable[[dict], list[str]] | None) -> tuple[dict | None, str]:
    """(the document, "") or (None, why it cannot be imported)."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as e:
        return None, e.strerror or str(e)
    except ValueError as e:
        return None, f"not JSON ({e})"
    errors = shape_errors(doc) if validate is None or not isinstance(doc, dict) else validate(doc)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return None, f"not a valid ATIF trajectory: {errors[0]}{more}"
    return doc, ""


def row_additions(row: dict) -> set[str]:
    """The schema additions (`records.ADDITIONS`) whose fields `row` holds."""
    out = set()
    for name, parts in ADDITIONS.items():
        keys = {part: {f for f, _ in fields} for part, fields in parts.items()}
        if (keys.get("raw", set()) & row.keys() or any(keys.get("message", set()) & m.keys() for m in row["messages"])
                or any(keys.get("step", set()) & st.keys() for st in row["steps"])):
            out.add(name)
    return out


def check_folder(folder: str, env: str, allow_into_collected: bool) -> tuple[dict | None, tuple[str, ...] | None]:
    """What the writer is to hold the folder to: (the fingerprint, None to leave the folder's as it is; the
    folder's schema additions, None for a new folder).

    Raises:
        ImportRefused: a collected folder without `allow_into_collected`, or a folder imported as another env.
    """
    from agent_sft.dataset import layout

    info = layout.read_info(folder) if os.path.isdir(folder) else None
    if info is None:
        return fingerprint(env), None
    held = info.get("fingerprint") or {}
    if held.get("imported") is None and not allow_into_collected:
        raise ImportRefused(f"{folder} holds collected episodes; import into another folder, or pass "
                            "--allow-into-collected to add the trajectories to it")
    if held.get("imported") is not None and held != fingerprint(env):
        raise ImportRefused(f"{folder} holds trajectories imported as env {held.get('env')!r}, not {env!r}; "
                            "import them into another folder")
    return (None if held.get("imported") is None else fingerprint(env)), layout.additions(info)


def _additions_needed(files: list[str], env: str, task_key: str | None) -> tuple[str, ...]:
    """The schema additions the readable documents among `files` need (a first, unchecked read)."""
    out: set[str] = set()
    for path in iter_files(files):
        try:
            with open(path, encoding="utf-8") as fh:
                out |= row_additions(from_atif(json.load(fh), env, task_key))
        except Exception:  # noqa: BLE001 (the checked read names what is wrong with it)
            continue
    return tuple(sorted(out))


def import_atif(folder: str, files: list[str], env: str, task_key: str | None = None,
                allow_into_collected: bool = False) -> dict[str, Any]:
    """Import the ATIF documents `files` (folders: the .json files under them) into the dataset folder `folder`.

    A file that cannot be read or fails the check (Harbor's validator when harbor is installed, else a check of
    the shape) is a counted failure, named with its reason; the others are imported. A new folder takes the schema
    additions its documents need (`tools` for tool calls, tool results or reasoning; `tokens` for token ids or
    logprobs), so its files are read twice; a document needing one an existing folder does not have fails.

    Returns:
        {"imported": n, "already": n (ids the folder had), "failed": [(file, reason)], "validator": "harbor"|"shape",
        "splits": {split: n}}

    Raises:
        ConfigError: no env name; ImportRefused: see `check_folder`.
    """
    from agent_sft.dataset.writer import DatasetWriter

    if not env:
        raise ConfigError("--env names the env the trajectories are imported as")
    fp, additions = check_folder(folder, env, allow_into_collected)
    if additions is None:
        additions = _additions_needed(files, env, task_key)
    validate = harbor_validator()
    out: dict[str, Any] = {"imported": 0, "already": 0, "failed": [], "validator": "harbor" if validate else "shape",
                           "splits": {sp: 0 for sp in SPLITS}}
    # retry_errors=False: imported episodes that ended in an error are rows like the others, never played again
    writer = DatasetWriter.open(folder, fingerprint=fp, meta={"imported": fingerprint(env)} if fp else None,
                                additions=additions, retry_errors=False)
    try:
        for path in iter_files(files):
            doc, why = read_document(path, validate)
            if doc is not None:
                try:
                    row = from_atif(doc, env, task_key)
                except (AttributeError, KeyError, TypeError, ValueError) as e:
                    doc, why = None, f"cannot be read as an episode: {type(e).__name__}: {e}"
            if doc is not None and "task_hash" not in additions:
                row.pop("task_hash", None)  # a check kept where the folder has its column, never a reason to refuse
            if doc is not None and row_additions(row) - set(additions):
                more = ", ".join(sorted(row_additions(row) - set(additions)))
                doc, why = None, (f"holds what the folder's rows have no place for (schema additions {more}: tool "
                                  "calls, reasoning, token ids); import it into a new folder")
            if doc is None:
                out["failed"].append((path, why))
                continue
            if writer.add(row):
                out["imported"] += 1
                out["splits"][row["split"]] += 1
            else:
                out["already"] += 1
    except BaseException:
        writer.close()  # what was added is sealed; the folder loads
        raise
    writer.finalize()
    return out
