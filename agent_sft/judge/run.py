"""`judge_folder`: score a folder's episodes with an LLM judge through any policy backend, resumably.

    from agent_sft.config import PolicyConfig
    from agent_sft.judge import judge_folder

    cfg = PolicyConfig(type="openai", base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
    result = judge_folder("agent_sft_data", "qwen7b", cfg)              # pointwise, the built-in rubric
    result = judge_folder("agent_sft_data", "qwen7b-rank", cfg, mode="listwise")

The episodes judged are the live `raw` episodes that did not end in an error and that this judge has not
scored yet, so a run that was killed, or whose answers could not be read, is completed by running it again.
Verdicts are sealed every `flush_every` of them (`store`). A request that fails for good is a failed
verdict; `policy.max_consecutive_failures` of them in a row stop the run with `JudgeFailedError` (exit code
3), as a policy server failing for good stops a collection; the verdicts sealed so far are kept.

A listwise score is relative to the episodes of its prompt (its `prompt` column shows them): the episodes of
a task that a later run judges (added since, or left out by `limit`) are compared among themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_sft.dataset import judged as store
from agent_sft.dataset import layout
from agent_sft.errors import ConfigError, RunFailedError
from agent_sft.judge.prompts import POINTWISE, Template, listwise_prompt, load_template, pointwise_prompt
from agent_sft.judge.source import live_episodes
from agent_sft.judge.verdict import Verdict, read_score, read_scores
from agent_sft.policies.common import model_label
from agent_sft.policies.registry import make_policy, policy_entry, policy_kind, precheck_policy
from agent_sft.records import END_CONTEXT, END_ERROR

if TYPE_CHECKING:
    from agent_sft.config import PolicyConfig
    from agent_sft.policies.base import Policy

DEFAULT_MAX_FAILURES = 20  # requests failed for good in a row that stop a run given a policy without its config


class JudgeFailedError(RunFailedError):
    """The judge's backend failed `policy.max_consecutive_failures` requests in a row."""


@dataclass
class JudgeResult:
    """What a judge run did, in episodes."""

    name: str
    judged: int = 0  # scored in this run
    failed: int = 0  # verdicts written without a score (the answer could not be read, or its request failed)
    skipped: int = 0  # scored by this judge before
    errors: int = 0  # episodes that ended in an error, never judged
    left: int = 0  # not judged because of `limit`


@dataclass
class _Prompt:
    episodes: list[dict]
    text: str
    seed: int


def verdict_seed(seed: int, episode_ids: list[str]) -> int:
    """The sampling seed of one judge request: a function of the run's seed and the episodes it judges."""
    digest = hashlib.sha256("\x1f".join([str(seed), *episode_ids]).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def judge_folder(
    folder: str,
    name: str,
    policy_cfg: PolicyConfig | None = None,
    mode: str = POINTWISE,
    template: str | Template | None = None,
    seed: int = 0,
    limit: int | None = None,
    *,
    policy: Policy | None = None,
    flush_every: int = 32,
    group_size: int = 8,
    on_verdicts: Callable[[int], None] | None = None,
) -> JudgeResult:
    """Judge the episodes of `folder` not yet scored by judge `name`; returns the counts.

    Args:
        folder: a dataset folder.
        name: the judge's name (`[a-z0-9_-]+`): its verdicts go to data/judge/<name>/. One name is one judge
            (mode, model, template); another judge under an existing name is refused.
        policy_cfg: the judge's model: a `PolicyConfig` of a model backend (vllm, hf, openai, ...).
        mode: `pointwise` (each episode on its own) or `listwise` (up to `group_size` episodes of a task at once).
        template: a template file (see `agent_sft.judge.prompts`) or a `Template`; None for the built-in one.
        seed: the run's seed; each request's sampling seed is derived from it and the episodes judged.
        limit: judge at most this many episodes in this run.
        policy: a policy to use instead of building one from `policy_cfg` (it is not closed here).
        flush_every: seal the verdicts every this many episodes (a kill loses at most those unsealed).
        group_size: the most episodes of one task a listwise prompt compares.
        on_verdicts: called with the number of verdicts after each flush.

    Raises:
        ConfigError: a bad name, mode, template, number, or a policy that plays no model.
        NotADatasetError: `folder` is not a dataset folder.
        JudgeFailedError: the backend failed `policy.max_consecutive_failures` requests in a row.
        PolicyError: the backend refused the judge (e.g. a server that does not know the model).
    """
    folder = os.fspath(folder)
    store.check_name(name)
    for key, v in (("limit", limit), ("flush_every", flush_every), ("group_size", group_size)):
        if v is not None and v < 1:
            raise ConfigError(f"--{key.replace('_', '-')}: must be at least 1 (got {v})")
    tpl = template if isinstance(template, Template) else load_template(mode, template)
    if tpl.mode != mode:
        raise ConfigError(f"the template is a {tpl.mode} one, but mode is {mode}")
    layout.require_dataset(folder)
    if policy is None:
        if policy_cfg is None:
            raise ConfigError("the judge needs a model: give policy_cfg (or policy)")
        kind = policy_kind(policy_cfg)
        if not policy_entry(kind).needs_model:
            raise ConfigError(f"policy.type={kind} plays no model, so it cannot judge: give policy.type (vllm, hf, "
                              "openai) and policy.model")
    model = policy.describe().model if policy is not None else model_label(policy_cfg.model)
    ident = {"mode": mode, "model": model, "template_sha256": tpl.sha256}
    store.check_identity(folder, name, ident)
    judged = store.judged_ids(folder, name)
    owned = policy is None
    if owned:
        precheck_policy(policy_cfg)
        policy = make_policy(policy_cfg)
    max_failures = policy_cfg.max_consecutive_failures if policy_cfg is not None else DEFAULT_MAX_FAILURES
    run = _Run(folder, name, policy, tpl, ident, seed, max_failures, on_verdicts)
    try:
        prompts = run.pointwise(judged, limit) if mode == POINTWISE else run.listwise(judged, limit, group_size)
        batch: list[_Prompt] = []
        for p in prompts:
            batch.append(p)
            if sum(len(b.episodes) for b in batch) >= flush_every:
                run.judge(batch)
                batch = []
        if batch:
            run.judge(batch)
    finally:
        if owned:
            policy.close()
    return run.result


class _Run:
    """One judge run: its prompts, the answers made verdicts, sealed as they come."""

    def __init__(self, folder: str, name: str, policy: Policy, template: Template, ident: dict, seed: int,
                 max_failures: int, on_verdicts: Callable[[int], None] | None) -> None:
        self.folder, self.name, self.policy, self.template = folder, name, policy, template
        self.ident, self.seed, self.max_failures, self.on_verdicts = ident, seed, max_failures, on_verdicts
        self.result = JudgeResult(name)
        self.failed_in_a_row = 0

    def _wanted(self, judged: set[str], limit: int | None):
        """The episodes to judge, in the folder's order; counts the others."""
        taken = 0
        for ep in live_episodes(self.folder):
            if ep["end_reason"] == END_ERROR:
                self.result.errors += 1
            elif ep["episode_id"] in judged:
                self.result.skipped += 1
            elif limit is not None and taken >= limit:
                self.result.left += 1
            else:
                taken += 1
                yield ep

    def pointwise(self, judged: set[str], limit: int | None):
        for ep in self._wanted(judged, limit):
            yield _Prompt([ep], pointwise_prompt(self.template, ep), verdict_seed(self.seed, [ep["episode_id"]]))

    def listwise(self, judged: set[str], limit: int | None, group_size: int):
        by_task: dict[tuple[str, str], list[dict]] = {}
        for ep in self._wanted(judged, limit):
            by_task.setdefault((ep["env"], ep["task_id"]), []).append(ep)
        for key in sorted(by_task):
            eps = sorted(by_task[key], key=lambda e: (e["sample_index"], e["episode_id"]))
            for i in range(0, len(eps), group_size):
                group = eps[i:i + group_size]
                yield _Prompt(group, listwise_prompt(self.template, group),
                              verdict_seed(self.seed, [e["episode_id"] for e in group]))

    def judge(self, batch: list[_Prompt]) -> None:
        """Ask the judge about every prompt of `batch` at once, then seal the verdicts."""
        conversations = [[{"role": "user", "content": p.text}] for p in batch]
        completions = self.policy.act(conversations, [p.seed for p in batch])
        rows, stop = [], None
        for p, conv, c in zip(batch, conversations, completions):
            if c.error:
                self.failed_in_a_row += 1
                verdicts = [Verdict(None, f"the judge's request failed: {c.error}")] * len(p.episodes)
                if self.failed_in_a_row >= self.max_failures and stop is None:
                    stop = JudgeFailedError(
                        f"the judge {self.name!r} failed {self.failed_in_a_row} requests in a row "
                        f"(policy.max_consecutive_failures={self.max_failures}); the last: {c.error}")
            else:
                self.failed_in_a_row = 0
                if c.finish_reason == END_CONTEXT:
                    verdicts = [Verdict(None, "the prompt is longer than the judge's context")] * len(p.episodes)
                elif self.ident["mode"] == POINTWISE:
                    verdicts = [read_score(c.text)]
                else:
                    verdicts = read_scores(c.text, len(p.episodes))
            rows += [self._row(ep, v, conv, c.text, p.seed) for ep, v in zip(p.episodes, verdicts)]
        store.write_verdicts(self.folder, self.name, rows, self.ident)
        for r in rows:
            if r["score"] is None:
                self.result.failed += 1
            else:
                self.result.judged += 1
        if self.on_verdicts is not None:
            self.on_verdicts(len(rows))
        if stop is not None:
            raise stop

    def _row(self, ep: dict, v: Verdict, conversation: list[dict], output: str, seed: int) -> dict[str, Any]:
        return {
            "episode_id": ep["episode_id"], "split": ep["split"], "judge": self.name, "mode": self.ident["mode"],
            "score": v.score, "model": self.ident["model"], "template_sha256": self.ident["template_sha256"],
            "prompt": json.dumps(conversation, ensure_ascii=False), "output": output or "", "seed": seed,
            "error": v.error, "judged_at": time.time(),
        }
