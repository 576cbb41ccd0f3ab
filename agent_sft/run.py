"""A run resolved once: the checked config and everything decided from it, handed to everything below.

`resolve(cfg)` checks a config without changing it, completes a copy (the defaults it leaves to the run:
the policy kind, the env's own expert), asks each env's `prepare` hook what it needs to know before
playing (an env server says what it serves), builds the run's envs as lanes once and finds their prompt
templates. The `Run` it
returns is frozen: the collector, the Ray driver, the writer and the card read it, and nothing below
works out the lanes, the policy kind or the fingerprint again.

    run = resolve(load_config(None, ["env.num_episodes=8"]))
    run.lanes[0].name, run.policy_kind, run.fingerprint["env"]["seed"]
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from agent_sft.config import CollectConfig, to_dict
from agent_sft.config.lanes import Lane
from agent_sft.config.load import complete
from agent_sft.dataset.fingerprint import of_config
from agent_sft.envs.specs import load_entry_point
from agent_sft.errors import ConfigError
from agent_sft.policies.registry import policy_kind
from agent_sft.prompts import PromptError, resolve_template


@dataclass(frozen=True)
class Run:
    """A checked config and what it decides, worked out once; its fields are read, never changed.

    Attributes:
        cfg: the complete config (a copy: the caller's is never changed); read it, do not change it.
        lanes: the run's envs (`env.mix` entries, or the one env), each with its options, step budget,
            expert, template, task types and episode count.
        policy_kind: the `policy.type` the run plays (`policies.registry.policy_kind`).
        fingerprint: what must match for a folder to be continued (`dataset.fingerprint`).
        config: the complete config as plain data, as `meta/info.json` records it.
        env_versions: each lane's recorded package versions (its env's, its policy's, what its servers
            run), by the lane's label.
        additions: the schema additions its rows carry (`records.ADDITIONS`: `tools` for
            `prompt.actions=tools`, `tokens` for `policy.record_tokens`, `task_hash` for every run but one
            continuing a folder written without it, which `for_folder` decides once, where the folder is).
    """

    cfg: CollectConfig
    lanes: tuple[Lane, ...]
    policy_kind: str
    fingerprint: dict[str, Any]
    config: dict[str, Any]
    env_versions: dict[str, dict[str, str]]
    additions: tuple[str, ...] = ()


def resolve(cfg: CollectConfig | Run, *, prepare: bool = True) -> Run:
    """The run a config describes (a `Run` is returned as it is).

    Args:
        cfg: the config; it is not changed.
        prepare: run each env's `prepare` hook (an env server is reached). False where the config was
            prepared already (a Ray collector actor gets the driver's complete config).

    Raises:
        ConfigError: naming the key and what it may be, as loading does.
    """
    if isinstance(cfg, Run):
        return cfg
    cfg = copy.deepcopy(cfg)
    run_lanes = complete(cfg)
    if prepare and _prepare_envs(cfg, run_lanes):
        run_lanes = complete(cfg)
    run_lanes = tuple(run_lanes)
    for lane in run_lanes:  # before the fingerprint, which holds each template's digest
        try:
            resolve_template(lane.name, cfg.prompt.style, lane.template, cfg.prompt.actions)
        except PromptError as err:
            raise ConfigError(str(err)) from None
    kind = policy_kind(cfg)
    return Run(
        cfg=cfg,
        lanes=run_lanes,
        policy_kind=kind,
        fingerprint=of_config(cfg, list(run_lanes)),
        config=to_dict(cfg),
        env_versions={lane.label: lane.package_versions(kind) for lane in run_lanes},
        additions=schema_additions(cfg),
    )


def schema_additions(cfg: CollectConfig) -> tuple[str, ...]:
    """The schema additions a run's rows carry, from the settings that change what a shard holds, and `task_hash`
    (left out by `for_folder` for a run continuing a folder written without it). Reads no folder."""
    out = ["task_hash"]
    if getattr(cfg.prompt, "actions", "text") == "tools":
        out.append("tools")
    if getattr(cfg.policy, "record_tokens", False):
        out.append("tokens")
    return tuple(sorted(out))


def for_folder(run: Run) -> Run:
    """`run` as it writes its output folder: without `task_hash` where the folder's rows were written without it
    (they keep the schema they were written with). Decided once, where the folder is (the collection's process);
    everything that plays the run, a Ray collector on another node included, is handed this run's additions."""
    if "task_hash" not in run.additions or _new_or_hashing(run.cfg.output.dir):
        return run
    return dataclasses.replace(run, additions=tuple(a for a in run.additions if a != "task_hash"))


def _new_or_hashing(folder: str | None) -> bool:
    """Whether the rows written to `folder` record their task's hash: a new folder's do, an existing folder's as
    its rows already do (a folder that cannot be read is left to the writer, which says what is wrong)."""
    from agent_sft.dataset import layout
    from agent_sft.errors import AgentSFTError

    if not folder or not os.path.isdir(folder):
        return True
    try:
        info = layout.read_info(folder) or layout.recover_info(folder, write=False)
        return info is None or "task_hash" in layout.additions(info)
    except (AgentSFTError, OSError):
        return True


def _prepare_envs(cfg: CollectConfig, run_lanes: list[Lane]) -> bool:
    """Run each env's `prepare` hook on the copy being resolved (an env server is reached, and what it serves
    is written into the env's options); True when an option was set."""
    changed = False
    for lane in run_lanes:
        if lane.spec.prepare is None:
            continue
        updates = load_entry_point(lane.spec.prepare)(lane.options) or {}
        if updates:
            target = cfg.env.mix[lane.label] if cfg.env.mix else cfg.env.options.setdefault(lane.spec.name, {})
            target.update(updates)
            changed = True
    return changed

