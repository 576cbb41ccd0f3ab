"""Pure functions from episodes to rows: raw rows, sft rows, verl rows, seed-format records.

Nothing here does I/O; each function takes plain dicts (raw rows, as stored) and returns plain dicts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from agent_sft.records import ADDITIONS, Episode, Step, prompt_of

STEP_STYLES = ("step", "episode")
TOKEN_STEP_FIELDS = [name for name, _ in ADDITIONS["tokens"]["step"]]
_STEP_FIELDS = [f.name for f in fields(Step) if f.name not in TOKEN_STEP_FIELDS]


def episode_to_row(ep: Episode) -> dict[str, Any]:
    """The `raw` row of an episode (its stored form); an episode that recorded tokens (`tokens_complete` set)
    carries the `tokens` addition's fields, one that recorded its task's hash the `task_hash` addition's, any other
    exactly the version-1 row."""
    tokens = ep.tokens_complete is not None
    keys = _STEP_FIELDS + TOKEN_STEP_FIELDS if tokens else _STEP_FIELDS
    steps = [{f: getattr(s, f) for f in keys} for s in ep.steps]
    prompt_tokens = [s.prompt_tokens for s in ep.steps]
    completion_tokens = [s.completion_tokens for s in ep.steps]
    return {
        "episode_id": ep.episode_id,
        "env": ep.env,
        "task_id": ep.task_id,
        "task_type": ep.task_type,
        "goal": ep.goal,
        "seed": ep.seed,
        "run_seed": ep.run_seed,
        "sample_index": ep.sample_index,
        "split": ep.split,
        "game_split": ep.game_split,
        "policy": asdict(ep.policy),
        "prompt_style": ep.prompt_style,
        "messages": [_message(m, ep.tools is not None) for m in ep.messages],
        "steps": steps,
        "success": bool(ep.success),
        "rewards": ep.rewards,
        "final_reward": ep.final_reward,
        "episode_length": ep.episode_length,
        "num_invalid": sum(1 for s in ep.steps if not s.valid),
        "prompt_tokens": sum(prompt_tokens) if steps and None not in prompt_tokens else None,
        "completion_tokens": sum(completion_tokens) if steps and None not in completion_tokens else None,
        "end_reason": ep.end_reason,
        "error": ep.error,
        "started_at": ep.started_at,
        "duration_s": ep.duration_s,
        "versions": ep.versions,
        "extra": ep.extra,
        **({"tools": ep.tools} if ep.tools is not None else {}),
        **({"tokens_complete": bool(ep.tokens_complete)} if tokens else {}),
        **({"task_hash": ep.task_hash} if ep.task_hash is not None else {}),
    }


_TOOL_KEYS = ("tool_calls", "tool_call_id", "reasoning_content")


def _message(m: dict, tools: bool) -> dict[str, Any]:
    """A stored message: role and content, and with tool actions its call fields (None where absent)."""
    out = {"role": m["role"], "content": m["content"]}
    if tools:
        out.update({k: m.get(k) for k in _TOOL_KEYS})
    return out


def resolve_style(style: str, prompt_style: str) -> str:
    """`auto` follows the prompt style: a windowed prompt trains per step, a growing chat per episode."""
    if style == "auto":
        return "episode" if prompt_style == "chat" else "step"
    if style not in STEP_STYLES:
        raise ValueError(f"unknown sft style {style!r}; use auto, step or episode")
    return style


def _meta(row: dict) -> dict[str, Any]:
    return {
        "episode_id": row["episode_id"],
        "env": row["env"],
        "task_id": row["task_id"],
        "task_type": row["task_type"],
        "goal": row["goal"],
        "success": row["success"],
        "final_reward": row["final_reward"],
        "episode_length": row["episode_length"],
        "sample_index": row["sample_index"],
        "seed": row["seed"],
        **({"tools": row["tools"]} if "tools" in row else {}),  # a tools folder's rows offer the model its tools
    }


def sft_rows(row: dict, style: str = "auto") -> list[dict[str, Any]]:
    """Training rows of one raw row: `[system?, user, assistant]` per step, or one whole chat.

    Steps whose response is empty (e.g. the prompt no longer fit the context) train nothing.
    """
    style = resolve_style(style, row["prompt_style"])
    msgs = row["messages"]
    meta = _meta(row)
    if style == "step":
        out = []
        for s in row["steps"]:
            if not s["response"]:
                continue
            prompt = prompt_of(msgs, s["prompt_start"], s["prompt_end"])
            out.append(
                {
                    "messages": prompt + [_answer(row, s)],
                    **meta,
                    "step": s["index"],
                    "reward": s["reward"],
                    "valid": s["valid"],
                }
            )
        return out
    # One row per episode: the whole conversation, ending on the last assistant turn.
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=-1)
    if last < 0:
        return []
    return [
        {
            "messages": list(msgs[: last + 1]),
            **meta,
            "step": None,
            "reward": row["final_reward"],
            "valid": row["num_invalid"] == 0,
        }
    ]


def _answer(row: dict, step: dict) -> dict[str, Any]:
    """A step's assistant turn: with tool actions the stored one (its calls and reasoning), else its response."""
    msgs = row["messages"]
    at = step["prompt_end"]
    if "tools" in row and at < len(msgs) and msgs[at]["role"] == "assistant":
        return dict(msgs[at])
    return {"role": "assistant", "content": step["response"]}


def split_prompt_response(messages: list[dict]) -> tuple[list[dict], str]:
    """(every message before the final assistant turn, the final assistant turn's text)."""
    return list(messages[:-1]), messages[-1]["content"]


def verl_row(sft: dict, split: str, index: int) -> dict[str, Any]:
    """A row for verl's `RLHFDataset` and `MultiTurnSFTDataset` (and the original feature's files).

    `prompt` is the list of messages before the trained assistant turn, `response` that turn's text,
    `messages` the whole chat. `split` is "train" or "val" as in the original Parquet files. A row of a
    tool-call folder also has `tools`, the schemas offered as a list (what `MultiTurnSFTDataset` gives the
    chat template), its messages keeping their calls with each call's arguments as an object (chat templates
    write them with `tojson`; JSON text would train as a string), None where they are not a JSON object.
    """
    tools = {"tools": json.loads(sft["tools"]) if sft["tools"] else []} if "tools" in sft else {}
    messages = [_object_arguments(m) for m in sft["messages"]] if tools else sft["messages"]
    prompt, response = split_prompt_response(messages)
    return {
        "data_source": sft["env"],
        "prompt": prompt,
        "response": response,
        "ability": "agent",
        "reward_model": {"style": "rule", "ground_truth": sft.get("goal") or sft["task_id"]},
        "extra_info": {
            "split": split,
            "index": index,
            "episode_id": sft["episode_id"],
            "step": -1 if sft["step"] is None else sft["step"],
            "task_id": sft["task_id"],
            "task_type": sft["task_type"],
            "success": sft["success"],
            "reward": float(sft["reward"]),
            "final_reward": float(sft["final_reward"]),
            "episode_length": sft["episode_length"],
        },
        "messages": messages,
        **tools,
    }


def call_arguments(arguments: Any) -> dict | None:
    """A stored call's arguments (JSON text) as an object; None where they are not a JSON object."""
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _object_arguments(m: dict) -> dict:
    if not m.get("tool_calls"):
        return m
    return {**m, "tool_calls": [{**c, "function": {**c["function"], "arguments": call_arguments(c["function"]["arguments"])}}
                                for c in m["tool_calls"]]}


def seed_record(row: dict) -> dict[str, Any]:
    """An entry of the original feature's `raw_trajectories.json`."""
    return {
        "messages_list": row["messages"],
        "success": row["success"],
        "rewards": row["rewards"],
        "final_reward": row["final_reward"],
        "task_info": {
            "episode_id": row["episode_id"],
            "env": row["env"],
            "task_id": row["task_id"],
            "task_type": row["task_type"],
            "goal": row["goal"],
            "seed": row["seed"],
            "sample_index": row["sample_index"],
            "split": row["split"],
            "game_split": row["game_split"],
            "end_reason": row["end_reason"],
        },
        "episode_length": row["episode_length"],
    }
