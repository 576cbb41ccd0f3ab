"""One episode's step machine: what each turn's policy answer and env reply make of the episode.

The machine holds the episode and its conversation and never calls anything: the loop that drives it
sends the env's reset, asks the policy, steps the env, and hands each result back. After each one the
machine says what comes next (`Next`): ask the policy (`ASK`), step the env with an action (`STEP`), or
the episode is over (`DONE`: its end reason, success and error are set).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_sft.envs.tools import ToolCallError, Toolset, toolset_for
from agent_sft.policies.base import Completion
from agent_sft.policies.tool_calls import call as tool_call
from agent_sft.policies.tool_calls import split_reasoning
from agent_sft.prompts import (
    Conversation,
    ParsedAction,
    PromptTemplate,
    admit,
    env_verdict,
    fallback_action,
    normalize_action,
    parse_action,
)
from agent_sft.records import (
    END_CONTEXT,
    END_ERROR,
    END_FAILURE,
    END_STEP_LIMIT,
    END_SUCCESS,
    Episode,
    PolicyInfo,
    Step,
    turn_seed,
)
from agent_sft.rollout.tasks import EpisodeTask

if TYPE_CHECKING:
    from agent_sft.rollout.pools import Reply

ASK, STEP, DONE = "ask", "step", "done"


@dataclass(frozen=True)
class EpisodeSetup:
    """What every episode of one env of the run is played with."""

    env: str  # the env's name in the rows
    template: PromptTemplate
    max_steps: int
    episode_keys: frozenset  # env info keys that describe the episode, not the step (left out of step info)
    policy_info: PolicyInfo
    versions: str  # JSON of the package versions that produced the data
    run_seed: int = 0  # env.seed
    prompt_style: str = "window"
    history_length: int = 2
    system: str | None = None
    require_think: bool = True
    actions: str = "text"  # prompt.actions: `tools` offers the env's actions as tools, the answer a call
    env_spec: Any = None  # the env's `EnvSpec`, whose tools an episode offers (`envs.tools.toolset_for`)
    record_tokens: bool = False  # policy.record_tokens: steps keep the turn's token ids and logprobs
    top_logprobs: bool = False  # policy.logprobs is set: a turn's capture is complete with its top logprobs only
    task_hash: bool = False  # the folder records each task's hash (the `task_hash` addition), as the env gives it


@dataclass(frozen=True)
class Next:
    """What the episode waits for: the policy (`ASK`), the env to play `action` (`STEP`), or nothing (`DONE`;
    `env_error` is the env's error when a reset or step failed it, else "")."""

    kind: str
    action: str = ""
    env_error: str = ""

    @property
    def request(self) -> tuple[str, tuple]:
        """The env pool's request for a `STEP`."""
        return "step", (self.action,)


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _merge_info(info_json: str, more: dict) -> str:
    info = json.loads(info_json)
    info.update(more)
    return json.dumps(info, sort_keys=True, default=str)


def captured(step: Step, top_logprobs: bool = False) -> bool:
    """Whether a step holds its whole turn as the engine gave it: the prompt's and the completion's ids, a
    logprob per completion token (and its top logprobs when they were asked for)."""
    ids, lps = step.completion_token_ids, step.logprobs
    if step.prompt_token_ids is None or ids is None or lps is None or len(lps) != len(ids):
        return False
    return not top_logprobs or (step.top_logprobs is not None and len(step.top_logprobs) == len(ids))


class EpisodeMachine:
    """One episode from its env's reset to its end.

    Typical use (one loop; the sync and async loops interleave many)::

        m = EpisodeMachine(setup, task)
        nxt = m.reset(pool_reply_to(m.reset_request))
        while nxt.kind != DONE:
            if nxt.kind == ASK:
                nxt = m.answered(policy_answer(*m.ask()), latency)
            else:
                nxt = m.stepped(pool_reply_to(nxt.request))
        m.episode  # finished
    """

    def __init__(self, setup: EpisodeSetup, task: EpisodeTask) -> None:
        self.setup = setup
        self.task = task
        self.episode = Episode(
            episode_id=task.episode_id,
            env=setup.env,
            task_id=task.task.task_id,
            task_type=task.task.task_type,
            goal="",
            seed=task.seed,
            run_seed=setup.run_seed,
            sample_index=task.sample_index,
            split=task.split,
            game_split=task.task.game_split,
            policy=setup.policy_info,
            prompt_style=setup.prompt_style,
            started_at=time.time(),
            versions=setup.versions,
            extra=json.dumps(task.task.extra, sort_keys=True, default=str),
        )
        self.conv = Conversation(setup.template, setup.prompt_style, setup.history_length, setup.max_steps, setup.system,
                                 tools=setup.actions == "tools")
        self.toolset: Toolset | None = None  # the episode's tools, from its first info (tool actions)
        self.episode.messages = self.conv.messages
        self.t0 = time.perf_counter()
        self.obs = ""
        self.info: dict = {}
        self.window = (0, 0)
        self.form: ParsedAction | None = None  # the last response parsed for its format only
        self._step: Step | None = None  # the step whose action the env is playing
        self._lost_turn = False  # a model turn failed and left no tokens

    @property
    def reset_request(self) -> tuple[str, tuple]:
        """The env pool's request that starts the episode."""
        return "reset", (self.task.seed, {"task_id": self.task.task.task_id})

    def reset(self, reply: Reply) -> Next:
        """The env's reply to `reset_request`."""
        if not reply.ok:
            return self._end(END_ERROR, f"env reset failed: {reply.error}", env_failed=True)
        self.obs, self.info = reply.value
        ep = self.episode
        ep.goal = str(self.info.get("goal") or "")
        ep.task_type = ep.task_type or str(self.info.get("task_type") or "")
        if self.setup.task_hash and self.info.get("task_hash"):
            ep.task_hash = str(self.info["task_hash"])
        plan = self.info.get("expert_plan")
        if isinstance(plan, list):  # what an episode's length is measured against
            ep.extra = _merge_info(ep.extra, {"expert_plan_length": len(plan)})
        self.conv.goal = ep.goal
        if self.setup.actions == "tools":
            self.toolset = toolset_for(self.setup.env_spec, self.info)
            ep.tools = json.dumps(self.toolset.schemas(), sort_keys=True)
        return Next(ASK)

    def ask(self) -> tuple[list, int, dict]:
        """The episode's next prompt, its sampling seed and env info."""
        self.window = self.conv.observe(self.obs, list(self.info.get("admissible_actions") or []))
        self.episode.goal = self.episode.goal or self.conv.goal
        return self.conv.prompt(*self.window), turn_seed(self.episode.seed, len(self.episode.steps)), self._policy_info()

    def _policy_info(self) -> dict:
        """The env info the policy is given; with tool actions, the tools offered and the call that plays the
        expert's next step (`expert_call`, for the expert policy)."""
        if self.toolset is None:
            return self.info
        out = {**self.info, "tools": self.toolset.schemas()}
        plan = self.info.get("expert_plan")
        if isinstance(plan, list) and plan:
            found = self.toolset.call(str(plan[0]))
            out["expert_call"] = tool_call(*found) if found else None
        return out

    def answered(self, c: Completion, latency: float) -> Next:
        """The policy's answer to `ask`'s prompt: the episode ends (a policy error, a prompt past the
        context) or the env plays its action."""
        if c.error or c.finish_reason == END_CONTEXT:
            self.conv.retract()
            self._lost_turn = self._lost_turn or bool(c.error)
            reason = END_ERROR if c.error else END_CONTEXT
            return self._end(reason, f"policy error: {c.error}" if c.error else "")
        self._step, env_action = self._make_step(c, latency)
        return Next(STEP, action=env_action)

    def stepped(self, reply: Reply) -> Next:
        """The env's reply to the `STEP` request."""
        step, self._step = self._step, None
        assert step is not None, "stepped() without a step in play"
        self.episode.steps.append(step)
        if not reply.ok:
            step.done = True
            step.info = _merge_info(step.info, {"env_error": True})
            return self._end(END_ERROR, f"env step failed: {reply.error}", env_failed=True)
        obs, reward, terminated, truncated, info = reply.value
        won = bool(info.get("won", False))
        step.reward = float(reward)
        step.done = bool(terminated or truncated or won)
        verdict = env_verdict(self.form, info)
        if verdict is not None:
            step.valid, step.invalid_reason = verdict
        extra = {k: v for k, v in info.items() if k not in self.setup.episode_keys and _jsonable(v)}
        extra["won"] = won
        if step.done:
            extra["final_observation"] = obs
        step.info = _merge_info(step.info, extra)
        if won:
            reason = END_SUCCESS
        elif terminated:
            reason = END_FAILURE
        elif truncated:  # the step budget (`envs.TimeLimit`, around every env the pools build), or the env's own
            reason = END_STEP_LIMIT
        else:
            self.obs, self.info = obs, info
            return Next(ASK)
        return self._end(reason, "")

    def _make_step(self, c: Completion, latency: float) -> tuple[Step, str]:
        admissible = list(self.info.get("admissible_actions") or [])
        patterns = list(self.info.get("action_patterns") or [])
        if self.toolset is not None:
            parsed, env_action = self._read_calls(c, admissible, patterns)
        else:
            parsed = parse_action(c.text, admissible, self.setup.require_think, patterns)
            # The format alone, for an env that judges the action itself (`action_valid` in its step info).
            self.form = parse_action(c.text, None, self.setup.require_think)
            # As verl-agent: an answer without an action tag still reaches the env, as its last 30 chars.
            no_tag = not parsed.action and parsed.reason != "empty <action> tag"
            env_action = fallback_action(c.text) if no_tag else parsed.action
            self.conv.respond(self.obs, c.text, env_action)
        info: dict[str, Any] = {"admissible_actions": admissible}
        if patterns:
            info["action_patterns"] = patterns
        if env_action != parsed.action:
            info["env_action"] = env_action
        step = Step(
            index=len(self.episode.steps),
            observation=self.obs,
            prompt_start=self.window[0],
            prompt_end=self.window[1],
            response=c.text,
            action=parsed.action,
            valid=parsed.valid,
            invalid_reason=parsed.reason,
            info=json.dumps(info),
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            finish_reason=c.finish_reason,
            latency_s=latency,
        )
        if self.setup.record_tokens:
            step.prompt_token_ids, step.completion_token_ids = c.prompt_token_ids, c.completion_token_ids
            step.logprobs, step.top_logprobs = c.logprobs, c.top_logprobs
        return step, env_action

    def _read_calls(self, c: Completion, admissible: list[str], patterns: list[str]) -> tuple[ParsedAction, str]:
        """A tool-call answer: the action its first call makes, and whether the env allows it. More than one call
        plays the first and makes the step invalid (as several action tags do); no call, a call the backend could
        not read, an unknown tool or bad arguments make no action (the env then gets verl-agent's fallback)."""
        turn = len(self.episode.steps)
        calls = [dict(x) for x in c.tool_calls or []]
        for k, x in enumerate(calls):
            x["id"] = x.get("id") or f"call_{turn}_{k}"  # the same run gives the same ids
        content, reasoning = c.content if c.content is not None else c.text, c.reasoning
        if reasoning is None:
            content, reasoning = split_reasoning(content)
        message = {"role": "assistant", "content": content, "tool_calls": calls or None, "tool_call_id": None,
                   "reasoning_content": reasoning}
        if not calls:
            self.form = ParsedAction("", False, c.tool_error or "no tool call")
        else:
            f = calls[0]["function"]
            try:
                action = normalize_action(self.toolset.action(f["name"], f["arguments"]))
            except ToolCallError as e:
                self.form = ParsedAction("", False, str(e))
            else:
                several = f"several tool calls ({len(calls)}); the first was played" if len(calls) > 1 else ""
                self.form = ParsedAction(action, not several, several)
        parsed = self.form
        if self.form.action:
            allowed = admit(self.form.action, admissible, patterns)
            parsed = allowed if not allowed.valid else self.form._replace(action=allowed.action)
        env_action = parsed.action or fallback_action(c.text)
        self.conv.respond_call(self.obs, message, env_action)
        return parsed, env_action

    def _end(self, reason: str, error: str, *, env_failed: bool = False) -> Next:
        ep = self.episode
        ep.end_reason = reason
        ep.success = reason == END_SUCCESS
        ep.error = error
        ep.duration_s = time.perf_counter() - self.t0
        if self.setup.record_tokens:
            top = self.setup.top_logprobs
            ep.tokens_complete = bool(ep.steps) and not self._lost_turn and all(captured(s, top) for s in ep.steps)
        return Next(DONE, env_error=error if env_failed else "")
