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

import queue
import threading
from concurrent.futures import Future
from typing import Any, Protocol, runtime_checkable

from agent_sft.policies.base import Completion, Policy, PolicyError
from agent_sft.records import Message


class PolicyClosed(PolicyError):
    """The run is stopping: no more answers."""


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


class MicroBatcher:
    """One thread answers, with one `act` call, every ask that arrived while its previous call ran.

    Args:
        policy: Any policy (its `act` is only ever called from the batcher's thread).
        max_batch: Conversations per `act` call at most (default: all waiting).
    """

    def __init__(self, policy: Policy, max_batch: int | None = None) -> None:
        self.policy = policy
        self.max_batch = max_batch
        self.batches = 0  # act calls made
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._failed: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._main, name="agent-sft-policy", daemon=True)
        self._thread.start()

    def ask(self, conversation: list[Message], seed: int, info: dict[str, Any] | None = None) -> Completion:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise PolicyClosed("the policy is closed")
        answer: Future = Future()
        self._inbox.put((conversation, seed, info or {}, answer))
        return answer.result()

    def _main(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                break
            batch = [item]
            while self.max_batch is None or len(batch) < self.max_batch:
                try:
                    more = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._inbox.put(None)
                    break
                batch.append(more)
            try:
                out = self.policy.act([b[0] for b in batch], [b[1] for b in batch], [b[2] for b in batch])
                if len(out) != len(batch):
                    raise PolicyError(f"the policy answered {len(out)} of {len(batch)} conversations")
            except BaseException as e:  # noqa: BLE001 - every waiting episode learns it; the run stops
                self._failed = e
                for b in batch:
                    b[3].set_exception(e)
                self._drain(e)
                return
            self.batches += 1
            for b, c in zip(batch, out):
                b[3].set_result(c)
        self._drain(PolicyClosed("the policy is closed"))

    def _drain(self, error: BaseException) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[3].set_exception(error)

    def close(self) -> None:
        self._closed = True
        self._inbox.put(None)
        self._thread.join(timeout=5.0)
        self._drain(PolicyClosed("the policy is closed"))
