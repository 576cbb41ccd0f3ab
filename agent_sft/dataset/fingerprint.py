"""A folder's fingerprint: what decides its episodes' content, so what must match for a run to continue it.

Built from a checked config (`of_config`), stored in `meta/info.json` with its digest (`digest`), carried in
published form by every raw shard (`public`), and compared when a folder is resumed or merged (`mismatches`).

Not included: how many episodes or samples per task, or sampling until success (an episode's content depends
on its env, task, seed and sample index only, so a folder takes a higher `env.until_success` or budget), how
many in parallel, timeouts, output and filter settings, and the env options its spec
leaves out of the fingerprint (e.g. ALFWorld's task_types, a task filter). With `env.mix`, each env's part
sits under `env.mix.<label>`: entries may be added to a folder's mix later, and their episode counts change
freely.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from agent_sft.dataset.public import public as public_value

GROWABLE = ("env.mix.",)
"""Fingerprint mappings a resume may add keys to (a longer `env.mix`)."""

POLICY_KEYS = ("type", "model", "expert", "expert_think", "do_sample", "temperature", "top_p", "top_k",
               "max_tokens", "stop", "max_model_len", "chat_template")
TOKEN_KEYS = ("record_tokens", "logprobs")
"""Policy keys that change what a step holds; in the fingerprint only when tokens are recorded, so a folder
written before they existed (or without them) keeps its fingerprint."""


def of_config(cfg: Any, lanes: list | None = None) -> dict[str, Any]:
    """The fingerprint of a checked `CollectConfig` whose envs are `lanes` (resolved here when not given)."""
    if lanes is None:
        from agent_sft.config.lanes import lanes as resolve_lanes

        lanes = resolve_lanes(cfg)
    e, p, pr = cfg.env, cfg.policy, cfg.prompt
    policy = {k: getattr(p, k) for k in POLICY_KEYS}
    if getattr(p, "record_tokens", False):
        policy.update({k: getattr(p, k) for k in TOKEN_KEYS})
    prompt = {"style": pr.style, "template_sha256": None, "system": pr.system, "require_think": pr.require_think}
    if getattr(pr, "actions", "text") != "text":  # a text run keeps the fingerprint folders had before
        prompt["actions"] = pr.actions
        if _parses_calls(policy):
            policy["tool_parser"] = p.tool_parser
        if getattr(p, "tool_choice", "auto") != "auto":  # a tools folder of the default keeps its fingerprint
            policy["tool_choice"] = p.tool_choice
    if len(lanes) == 1:  # a plain run, or a mix of one entry: the same folder
        lane = lanes[0].fingerprint()
        env = {"env_name": lane.pop("env_name"), "seed": e.seed, "max_steps": lane.pop("max_steps"),
               "history_length": e.history_length}
        policy["expert"] = lane.pop("expert")
        prompt["template_sha256"] = lane.pop("template_sha256")
        env.update(lane)
    else:
        env = {"seed": e.seed, "history_length": e.history_length,
               "mix": {lane.label: lane.fingerprint() for lane in lanes}}
        policy["expert"] = None
    return {"env": env, "prompt": prompt, "policy": policy, "data": {"val_fraction": cfg.data.val_fraction}}


def digest(fingerprint: dict) -> str:
    """The sha256 of a fingerprint (local values included), as `meta/info.json` and every raw shard carry it."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()


def public(fingerprint: dict) -> dict:
    """The fingerprint as published: local paths and server addresses reduced."""
    return public_value(fingerprint)


def as_mix(fingerprint: dict) -> dict:
    """A plain run's fingerprint in the shape of a mix of its one env (`env.mix.<env_name>`), so that a
    folder collected from one env can be continued as a mix that adds others."""
    env = fingerprint.get("env")
    if not isinstance(env, dict) or "mix" in env or "env_name" not in env:
        return fingerprint
    lane = {k: v for k, v in env.items() if k not in ("seed", "history_length")}
    lane["expert"] = (fingerprint.get("policy") or {}).get("expert")
    lane["template_sha256"] = (fingerprint.get("prompt") or {}).get("template_sha256")
    out = {**fingerprint, "env": {"seed": env.get("seed"), "history_length": env.get("history_length"),
                                  "mix": {env["env_name"]: lane}}}
    if "policy" in out:
        out["policy"] = {**out["policy"], "expert": None}
    if "prompt" in out:
        out["prompt"] = {**out["prompt"], "template_sha256": None}
    return out


def diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """`key: folder value vs now` for each fingerprint value that differs (keys added under `GROWABLE`
    are not differences)."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if k not in a and prefix in GROWABLE:
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} (folder) vs {vb!r} (now)")
    return out


def _with_policy_kind(fingerprint: dict) -> dict:
    """A fingerprint whose `policy.type` was left unset (a config built in Python and never checked) with the
    kind that run played: `vllm` when it named a model, else `expert`."""
    from agent_sft.policies.registry import policy_kind

    policy = fingerprint.get("policy")
    if not isinstance(policy, dict) or policy.get("type") is not None or "type" not in policy:
        return fingerprint
    return {**fingerprint, "policy": {**policy, "type": policy_kind(policy)}}


# The backends that read calls with `policy.tool_parser`; experts and OpenAI-compatible servers never use it.
PARSING_KINDS = ("vllm", "hf")


def _parses_calls(policy: dict) -> bool:
    from agent_sft.policies.registry import policy_kind

    return policy_kind(policy) in PARSING_KINDS


def _without_unused_parser(fingerprint: dict) -> dict:
    """`fingerprint` less a `policy.tool_parser` its backend never used (folders recorded it for every tools run)."""
    policy = fingerprint.get("policy")
    if not isinstance(policy, dict) or "tool_parser" not in policy or _parses_calls(policy):
        return fingerprint
    return {**fingerprint, "policy": {k: v for k, v in policy.items() if k != "tool_parser"}}


def mismatches(info: dict, fingerprint: dict) -> list[str]:
    """How `fingerprint` differs from the one a folder's `info` records; empty when the run may continue it.

    A folder whose info was rebuilt from its shards knows the published fingerprint and the digest of the
    whole one: the digests are compared, and the published values name what differs. A plain run and a
    mix of its env are compared in the mix's shape.
    """
    if info.get("recovered_from") and info.get("fingerprint_sha256"):
        recorded = (info.get("fingerprint") or {}).get("policy") or {}
        candidates = [fingerprint]
        if "tool_parser" in recorded and "tool_parser" not in fingerprint.get("policy", {}):
            candidates.append({**fingerprint, "policy": {**fingerprint["policy"], "tool_parser": recorded["tool_parser"]}})
        if info["fingerprint_sha256"] in {digest(fp) for fp in candidates}:
            return []
        return diff(info.get("fingerprint", {}), public(fingerprint)) or ["(values that are not published, e.g. local paths)"]
    old = _without_unused_parser(_with_policy_kind(info.get("fingerprint", {})))
    found = diff(old, fingerprint)
    envs = [fp.get("env") for fp in (old, fingerprint)]
    if found and any(isinstance(e, dict) and "mix" in e for e in envs):
        found = diff(as_mix(old), as_mix(fingerprint))
    return found
