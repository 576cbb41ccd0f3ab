"""`augment_folder`: reasoning written by a model for a folder's recorded steps, through any policy backend,
resumably.

    from agent_sft.augment import augment_folder
    from agent_sft.config import PolicyConfig

    cfg = PolicyConfig(type="openai", base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
    result = augment_folder("agent_sft_data", "qwen7b", cfg)      # the expert's episodes
    # then: agent-sft build agent_sft_data --name sft_thinking --reasoning qwen7b

For each step the model gets the step's own prompt (the folder's template: the task, the history, the
observation, the answer format) and a hint naming the recorded action (`template`), and answers a thought then
the action. An answer whose action is not the recorded one (after normalisation), or that has no reasoning, is
counted and asked again with a new seed, up to `max_attempts` answers; then the step is left out (a build keeps
its recorded answer). The action itself never changes: only the reasoning is kept.

Rationales are sealed every `flush_every` steps (`dataset.rationales`); the steps a run finished are never
asked again, so a run that was killed is completed by running it again. A request that fails for good is a
failed step (the next run asks again); `policy.max_consecutive_failures` of them in a row stop the run with
`AugmentFailedError` (exit code 3), the rationales sealed so far kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_sft.augment.answer import read_text_answer, read_tools_answer, recorded_call
from agent_sft.augment.template import Template, load_template
from agent_sft.dataset import layout
from agent_sft.dataset import rationales as store
from agent_sft.dataset.live import live_rows
from agent_sft.errors import ConfigError, RunFailedError
from agent_sft.policies.common import model_label
from agent_sft.policies.registry import make_policy, policy_entry, policy_kind, precheck_policy
from agent_sft.records import END_CONTEXT, END_ERROR, prompt_of

if TYPE_CHECKING:
    from agent_sft.config import PolicyConfig
    from agent_sft.policies.base import Completion, Policy

DEFAULT_MAX_FAILURES = 20  # requests failed for good in a row that stop a run given a policy without its config

EPISODES = ("expert", "success", "all")
"""Which episodes' steps are augmented: those the expert played (`policy.kind` expert), the successful ones of
any policy, or every one; never an episode that ended in an error, and only valid steps."""

_COLUMNS = ["episode_id", "env", "goal", "split", "policy", "success", "end_reason", "messages", "steps"]


class AugmentFailedError(RunFailedError):
    """The backend failed `policy.max_consecutive_failures` requests in a row."""


@dataclass
class AugmentResult:
    """What an augment run did, in steps (and episodes)."""

    name: str
    augmented: int = 0  # steps given a rationale in this run
    regenerated: int = 0  # answers that did not match the recorded action (or gave no reasoning), asked again
    left_out: int = 0  # steps whose every answer failed to match: a build keeps their recorded answer
    failed: int = 0  # steps whose request failed (the next run asks again)
    done_before: int = 0  # steps an earlier run under this name finished
    episodes: int = 0  # episodes whose steps this run asked about
    not_wanted: int = 0  # episodes outside `episodes`, or ended in an error
    left: int = 0  # episodes left for a later run by `limit`


@dataclass
class _Job:
    """One step to write a rationale for, and what its answers made of it."""

    episode_id: str
    split: str
    step: int
    conversation: list[dict]
    recorded: str  # the recorded action (text) or call (tools, `recorded_call` JSON)
    tools: list | None = None
    attempts: int = 0
    status: str = ""
    rationale: str | None = None
    output: str = ""
    action: str = ""
    error: str = ""


def attempt_seed(seed: int, episode_id: str, step: int, attempt: int) -> int:
    """The sampling seed of one answer: a function of the run's seed, the step and the attempt (from 1)."""
    digest = hashlib.sha256("\x1f".join(map(str, (seed, episode_id, step, attempt))).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def augment_folder(
    folder: str,
    name: str,
    policy_cfg: PolicyConfig | None = None,
    template: str | Template | None = None,
    seed: int = 0,
    limit: int | None = None,
    max_attempts: int = 3,
    episodes: str = "expert",
    *,
    policy: Policy | None = None,
    flush_every: int = 32,
    on_rationales: Callable[[int], None] | None = None,
) -> AugmentResult:
    """Write rationales for the steps of `folder` not yet finished under `name`; returns the counts.

    Args:
        folder: a dataset folder.
        name: the rationales' name (`[a-z0-9_-]+`): they go to data/rationale/<name>/. One name is one model,
            template and seed; another under an existing name is refused.
        policy_cfg: the model: a `PolicyConfig` of a model backend (vllm, hf, openai, ...).
        template: a template file (see `agent_sft.augment.template`) or a `Template`; None for the built-in one.
        seed: the run's seed; each answer's sampling seed is derived from it, the step and the attempt.
        limit: augment the steps of at most this many episodes in this run.
        max_attempts: answers asked per step at most before it is left out.
        episodes: whose steps: `expert` (default), `success` or `all` (`EPISODES`).
        policy: a policy to use instead of building one from `policy_cfg` (it is not closed here).
        flush_every: seal the rationales every this many steps (a kill loses at most those unsealed).
        on_rationales: called with the number of steps sealed after each flush.

    Raises:
        ConfigError: a bad name, template, number or episode choice, or a policy that plays no model.
        NotADatasetError: `folder` is not a dataset folder.
        AugmentFailedError: the backend failed `policy.max_consecutive_failures` requests in a row.
        PolicyError: the backend refused the model (e.g. a server that does not know it).
    """
    folder = os.fspath(folder)
    store.check_name(name)
    for key, v in (("limit", limit), ("max_attempts", max_attempts), ("flush_every", flush_every)):
        if v is not None and v < 1:
            raise ConfigError(f"--{key.replace('_', '-')}: must be at least 1 (got {v})")
    if episodes not in EPISODES:
        raise ConfigError(f"--episodes {episodes!r}: choose {', '.join(EPISODES)}")
    info = layout.require_dataset(folder)
    tools = "tools" in layout.additions(info)
    tpl = template if isinstance(template, Template) else load_template(tools, template)
    if policy is None:
        if policy_cfg is None:
            raise ConfigError("augment needs a model: give policy_cfg (or policy)")
        kind = policy_kind(policy_cfg)
        if not policy_entry(kind).needs_model:
            raise ConfigError(f"policy.type={kind} plays no model, so it cannot write reasoning: give policy.type "
                              "(vllm, hf, openai) and policy.model")
    model = policy.describe().model if policy is not None else model_label(policy_cfg.model)
    ident = {"model": model, "template_sha256": tpl.sha256, "seed": int(seed)}
    store.check_identity(folder, name, ident)
    finished = store.finished_steps(folder, name)
    owned = policy is None
    if owned:
        precheck_policy(policy_cfg)
        policy = make_policy(policy_cfg)
    max_failures = policy_cfg.max_consecutive_failures if policy_cfg is not None else DEFAULT_MAX_FAILURES
    run = _Run(folder, name, policy, tpl, ident, tools, max_attempts, max_failures, on_rationales)
    try:
        batch: list[_Job] = []
        for job in run.jobs(finished, episodes, limit):
            batch.append(job)
            if len(batch) >= flush_every:
                run.augment(batch)
                batch = []
        if batch:
            run.augment(batch)
    finally:
        if owned:
            policy.close()
    return run.result


class _Run:
    """One augment run: the steps asked about, their answers checked, the rationales sealed as they come."""

    def __init__(self, folder: str, name: str, policy: Policy, template: Template, ident: dict, tools: bool,
                 max_attempts: int, max_failures: int, on_rationales: Callable[[int], None] | None) -> None:
        self.folder, self.name, self.policy, self.template, self.ident = folder, name, policy, template, ident
        self.tools, self.max_attempts, self.max_failures = tools, max_attempts, max_failures
        self.on_rationales = on_rationales
        self.result = AugmentResult(name)
        self.failed_in_a_row = 0

    def _wanted(self, row: dict, episodes: str) -> bool:
        if row["end_reason"] == END_ERROR:
            return False
        if episodes == "expert":
            return (row["policy"] or {}).get("kind") == "expert"
        return episodes == "all" or bool(row["success"])

    def jobs(self, finished: set[tuple[str, int]], episodes: str, limit: int | None) -> Iterator[_Job]:
        """The steps to ask about, episode by episode in the folder's order; counts the others."""
        taken = 0
        for row in live_rows(self.folder, _COLUMNS + (["tools"] if self.tools else [])):
            if not self._wanted(row, episodes):
                self.result.not_wanted += 1
                continue
            steps = [s for s in row["steps"] if s["valid"] and s["action"] and s["response"]]
            todo = [s for s in steps if (row["episode_id"], s["index"]) not in finished]
            self.result.done_before += len(steps) - len(todo)
            if not todo:
                continue
            if limit is not None and taken >= limit:
                self.result.left += 1
                continue
            taken += 1
            self.result.episodes += 1
            for s in todo:
                yield self._job(row, s)

    def _job(self, row: dict, s: dict) -> _Job:
        messages = row["messages"]
        prompt = [dict(m) for m in prompt_of(messages, s["prompt_start"], s["prompt_end"])]
        answer = messages[s["prompt_end"]] if s["prompt_end"] < len(messages) else {}
        call = recorded_call(answer) if self.tools else ""
        hint = self.template.render(action=s["action"], call=call or s["action"], goal=row["goal"], env=row["env"],
                                    step=s["index"] + 1)
        if prompt and prompt[-1]["role"] == "user":
            prompt[-1]["content"] = f"{prompt[-1]['content']}\n\n{hint}"
        else:  # after a tool message (a chat of tool calls) the hint is a user turn of its own
            prompt.append({"role": "user", "content": hint, **({"tool_calls": None, "tool_call_id": None,
                                                                  "reasoning_content": None} if self.tools else {})})
        tools = json.loads(row["tools"]) if self.tools and row.get("tools") else None
        return _Job(row["episode_id"], row["split"], s["index"], prompt, call if self.tools else s["action"], tools)

    def _read(self, job: _Job, c: Completion):
        if self.tools:
            return read_tools_answer(c, job.recorded)
        return read_text_answer(c.text, job.recorded)

    def augment(self, batch: list[_Job]) -> None:
        """Ask about every step of `batch` at once, again for those whose answer did not match (up to
        `max_attempts` answers), then seal their rows."""
        pending, stop = list(batch), None
        for attempt in range(1, self.max_attempts + 1):
            if not pending or stop is not None:
                break
            if attempt > 1:
                self.result.regenerated += len(pending)
            seeds = [attempt_seed(self.ident["seed"], j.episode_id, j.step, attempt) for j in pending]
            infos = [{"tools": j.tools} for j in pending] if self.tools else None
            completions = self.policy.act([j.conversation for j in pending], seeds, infos)
            again = []
            for j, c in zip(pending, completions):
                j.attempts = attempt
                if c.error:
                    self.failed_in_a_row += 1
                    j.status, j.error = store.FAILED, f"the request failed: {c.error}"
                    if self.failed_in_a_row >= self.max_failures and stop is None:
                        stop = AugmentFailedError(
                            f"augment {self.name!r} failed {self.failed_in_a_row} requests in a row "
                            f"(policy.max_consecutive_failures={self.max_failures}); the last: {c.error}")
                    continue
                self.failed_in_a_row = 0
                j.output = c.text or ""
                if c.finish_reason == END_CONTEXT:
                    j.status, j.error = store.LEFT_OUT, "the prompt is longer than the model's context"
                    continue
                answer = self._read(j, c)
                j.action, j.error = answer.action, answer.error
                if not answer.error:
                    j.status, j.rationale = store.OK, answer.rationale
                elif attempt < self.max_attempts:
                    again.append(j)
                else:
                    j.status = store.LEFT_OUT
            pending = again
        for j in pending:  # not asked again: the run stops
            j.status = store.FAILED
        store.write_rationales(self.folder, self.name, [self._row(j) for j in batch], self.ident)
        for j in batch:
            if j.status == store.OK:
                self.result.augmented += 1
            elif j.status == store.LEFT_OUT:
                self.result.left_out += 1
            else:
                self.result.failed += 1
        if self.on_rationales is not None:
            self.on_rationales(len(batch))
        if stop is not None:
            raise stop

    def _row(self, j: _Job) -> dict[str, Any]:
        return {
            "episode_id": j.episode_id, "split": j.split, "step": j.step, "rationale": j.rationale,
            "output": j.output, "action": j.action, "attempts": j.attempts, "status": j.status, "error": j.error,
            "model": self.ident["model"], "template_sha256": self.ident["template_sha256"], "seed": self.ident["seed"],
            "augmented_at": time.time(),
        }
