"""One request at a time, from many threads: how the asynchronous loop (`loop.mode=async`) reaches a policy.

In the async loop every episode runs in its own thread and asks for one answer at a time with
`Requests.ask`, which blocks that thread only. `requests_for(policy)` picks how the answers are made:

- the policy's own `requests()` when it has one (vLLM: every request joins the running engine at once,
  continuous batching inside the engine);
- `Inline` for a policy marked `thread_safe` (the expert, the HTTP policy with its `policy.concurrency`):
  each ask calls `act` on its own conversation in the asking thread;
- `MicroBatcher` for any other policy (transformers, a user's class): one thread gathers the asks that
  arrive while the previous batch runs and answers them with one `act` call.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from agent_sft.policies.base import Completion, Policy, PolicyError
from agent_sft.policies.inbox import InboxThread, PolicyClosed
from agent_sft.records import Message


@runtime_checkable
class Requests(Protocol):
    def ask(self, conversation: list[Message], seed: int, info: dict[str, Any] | None = None) -> Completion:
        """The answer to one conversation, sampled with `seed` (blocks the calling thread only).

        Raises:
            PolicyError: the policy cannot go on for any episode (the run stops).
        """
        ...

    def close(self) -> None:
        """Stop answering; asks waiting or arriving later raise `PolicyClosed`."""
        ...


def requests_for(policy: Policy) -> Requests:
    """How the async loop asks `policy` (see the module's docstring)."""
    own = getattr(policy, "requests", None)
    if callable(own):
        found = own()
        if found is not None:
            return found
    if getattr(policy, "thread_safe", False):
        return Inline(policy)
    return MicroBatcher(policy)


class Inline:
    """Each ask is an `act` call on one conversation, in the asking thread (for thread-safe policies)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._closed = False

    def ask(self, conversation: list[Message], seed: int, info: dict[str, Any] | None = None) -> Completion:
        if self._closed:
            raise PolicyClosed("the policy is closed")
        return self.policy.act([conversation], [seed], [info or {}])[0]

    def close(self) -> None:
        self._closed = True


class MicroBatcher(InboxThread):
    """One thread answers, with one `act` call, every ask that arrived while its previous call ran.

    Args:
        policy: Any policy (its `act` is only ever called from the batcher's thread).
        max_batch: Conversations per `act` call at most (default: all waiting).
    """

    def __init__(self, policy: Policy, max_batch: int | None = None) -> None:
        self.policy = policy
        self.max_batch = max_batch
        self.batches = 0  # act calls made
        super().__init__("agent-sft-policy")

    def ask(self, conversation: list[Message], seed: int, info: dict[str, Any] | None = None) -> Completion:
        return self._ask((conversation, seed, info or {}))

    def _serve(self) -> None:
        while (batch := self._next(block=True, limit=self.max_batch)) is not None:
            asks = [b[0] for b in batch]
            try:
                out = self.policy.act([a[0] for a in asks], [a[1] for a in asks], [a[2] for a in asks])
                if len(out) != len(batch):
                    raise PolicyError(f"the policy answered {len(out)} of {len(batch)} conversations")
            except BaseException as e:  # noqa: BLE001 - every waiting episode learns it; the run stops
                self._fail(e, [b[1] for b in batch])
                return
            self.batches += 1
            for (_, answer), c in zip(batch, out):
                answer.set_result(c)
        self._drain(PolicyClosed("the policy is closed"))
