"""The policy protocol: one call per turn over every live conversation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from agent_sft.errors import AgentSFTError
from agent_sft.records import Message, PolicyInfo


@dataclass
class Completion:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None  # "stop", "length", records.END_CONTEXT, "error"
    error: str = ""  # set when this request failed for good (the episode ends as an error)
    cached_tokens: int | None = None  # prompt tokens the engine found in its prefix cache, when it says
    # With prompt.actions=tools: the answer's calls as the backend read them ([]: none; None: a text answer), its
    # text beside them, its reasoning kept apart, and why its calls could not be read when they could not.
    tool_calls: list[dict] | None = None
    content: str | None = None
    reasoning: str | None = None
    tool_error: str = ""
    # With policy.record_tokens, as the engine gave them (None where the backend or server did not):
    prompt_token_ids: list[int] | None = None  # the prompt exactly as the engine was given it
    completion_token_ids: list[int] | None = None
    logprobs: list[float] | None = None  # the sampled token's logprob, one per completion token
    top_logprobs: list[list[dict]] | None = None  # policy.logprobs=N: [{"token_id", "logprob"}] by rank, per token


class PolicyError(AgentSFTError, RuntimeError):
    """The policy cannot go on for any episode (bad credentials, unknown model): the run stops."""


@runtime_checkable
class Policy(Protocol):
    def act(
        self,
        conversations: list[list[Message]],
        seeds: list[int],
        infos: list[dict[str, Any]] | None = None,
    ) -> list[Completion]:
        """Answer every conversation (same order). `seeds[i]` seeds sampling for conversation i;
        `infos[i]` is the env info of its episode (experts read their plan from it)."""
        ...

    def describe(self) -> PolicyInfo:
        """Kind, model and sampling parameters, for the episode record and the card."""
        ...

    def close(self) -> None: ...
