"""`policy.type=hf`: transformers `generate` over every live conversation of a turn, left-padded.

For small models, debugging, and machines without vLLM. A sampled batch is seeded from the seeds of
its requests, so the same config and seeds (the rollout loop batches deterministically) reproduce.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from agent_sft.policies.base import Completion
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
from agent_sft.policies.tool_calls import ToolCallParser, read_answer, tools_offered
from agent_sft.records import Message, PolicyInfo

if TYPE_CHECKING:
    from agent_sft.config import PolicyConfig

_DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "half": "float16",
           "fp16": "float16", "float32": "float32", "float": "float32", "fp32": "float32"}


class HFPolicy:
    """A policy backed by a transformers causal LM.

    Args:
        cfg: Model and sampling settings; `device` (default cuda when available, else cpu), `dtype`
            (`auto`: bfloat16 on cuda, float32 on cpu), `max_model_len` (default the model's
            `max_position_embeddings`), `chat_template`.
        batch_size: Conversations generated together at most (default: the whole turn at once).
        model: A loaded causal LM to use instead of loading `cfg.model`'s weights (the tokenizer is still
            read from `cfg.model`); it is moved to the device and put in eval mode.
    """

    def __init__(self, cfg: PolicyConfig, *, batch_size: int | None = None, model: Any = None) -> None:
        self.cfg = cfg
        self.chat_template = read_chat_template(cfg.chat_template)
        self.torch = torch = require("torch", "hf")
        transformers = require("transformers", "hf")
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if cfg.dtype == "auto":
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        elif cfg.dtype in _DTYPES:
            dtype = getattr(torch, _DTYPES[cfg.dtype])
        else:
            raise ValueError(f"policy.dtype: unknown dtype {cfg.dtype!r}; use auto, bfloat16, float16 or float32")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(cfg.model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        check_chat_template(self.tokenizer, self.chat_template, cfg.model)
        if model is None:
            model = transformers.AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
        self.model = model.to(self.device)
        self.model.eval()
        self.max_model_len = cfg.max_model_len or _context_length(self.model.config, self.tokenizer)
        self.batch_size = batch_size
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self._tool_parser: ToolCallParser | None = None  # made when tools are first offered

    def act(
        self,
        conversations: list[list[Message]],
        seeds: list[int],
        infos: list[dict[str, Any]] | None = None,
    ) -> list[Completion]:
        check_seeds(conversations, seeds)
        out: list[Completion | None] = [None] * len(conversations)
        live: list[tuple[int, list[int]]] = []
        tools = [tools_offered(infos, i) for i in range(len(conversations))]
        for i, conv in enumerate(conversations):
            ids = self.prompt_ids(conv, tools[i])
            if len(ids) >= self.max_model_len:
                out[i] = context_truncated(len(ids))
            else:
                live.append((i, ids))
        step = self.batch_size or max(len(live), 1)
        for start in range(0, len(live), step):
            chunk = live[start : start + step]
            for (i, _), c in zip(chunk, self._generate([ids for _, ids in chunk], [seeds[i] for i, _ in chunk])):
                out[i] = self._read_calls(c, tools[i])
        return out  # type: ignore[return-value]

    def prompt_ids(self, conversation: list[Message], tools: list[dict] | None = None) -> list[int]:
        """The prompt token ids of `conversation` (chat template offering `tools`, generation prompt)."""
        return prompt_ids(self.tokenizer, conversation, self.chat_template, tools)

    def _read_calls(self, c: Completion, tools: list[dict] | None) -> Completion:
        """With tools offered, the answer's calls read by vLLM's parser `policy.tool_parser` (agent-sft's own
        Hermes parser without vLLM)."""
        if tools is None:
            return c
        if self._tool_parser is None:
            self._tool_parser = ToolCallParser(self.cfg.tool_parser, self.tokenizer)
        return read_answer(c, tools, self._tool_parser)

    def _generate(self, prompts: list[list[int]], seeds: list[int]) -> list[Completion]:
        torch, cfg = self.torch, self.cfg
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        # Left padding makes every row as long as the longest prompt, so that one bounds the whole batch.
        max_new = min(cfg.max_tokens, self.max_model_len - width)
        gen: dict[str, Any] = dict(
            max_new_tokens=max_new,
            pad_token_id=pad,
            eos_token_id=self.eos_ids,
        )
        sample = cfg.do_sample and cfg.temperature > 0
        gen["do_sample"] = sample
        if sample:
            gen.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k if cfg.top_k > 0 else 0)
        else:
            gen.update(temperature=None, top_p=None, top_k=None)
        if cfg.stop:
            gen.update(stop_strings=list(cfg.stop), tokenizer=self.tokenizer)
        if cfg.record_tokens:  # the raw logits of each step (before temperature), as vLLM's logprobs are
            gen.update(return_dict_in_generate=True, output_logits=True)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(_batch_seed(seeds))
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, **gen)
            picked = tops = None
            if cfg.record_tokens:
                picked, tops = self._step_logprobs(out.logits, out.sequences[:, width:])
                out = out.sequences
        generated = out.shape[1] - width
        done = []
        for b, (p, row) in enumerate(zip(prompts, out)):
            c = self._completion(len(p), row[width:].tolist(), generated)
            if picked is not None:
                n = c.completion_tokens
                c.prompt_token_ids, c.completion_token_ids = list(p), row[width:].tolist()[:n]
                c.logprobs = picked[b][:n]
                if self.cfg.logprobs:
                    c.top_logprobs = tops[b][:n]
            done.append(c)
        return done

    def _step_logprobs(self, logits: Any, new: Any) -> tuple[list[list[float]], list[list[list[dict]]]]:
        """Per row: the logprob of each generated token, and the top `policy.logprobs` at each position. One
        position at a time, so memory stays at batch x vocabulary, not x new tokens."""
        rows = new.shape[0]
        picked: list[list[float]] = [[] for _ in range(rows)]
        tops: list[list[list[dict]]] = [[] for _ in range(rows)]
        n = self.cfg.logprobs
        for t, step in enumerate(logits):
            lp = step.float().log_softmax(-1)  # [batch, vocabulary]
            got = lp.gather(-1, new[:, t:t + 1].to(lp.device))[:, 0].tolist()
            best = lp.topk(n, dim=-1) if n else None
            for b in range(rows):
                picked[b].append(float(got[b]))
                if best is not None:
                    tops[b].append([{"token_id": int(i), "logprob": float(v)}
                                    for i, v in zip(best.indices[b].tolist(), best.values[b].tolist())])
        return picked, tops

    def _completion(self, prompt_len: int, new: list[int], generated: int) -> Completion:
        finish = "length"
        for n, tok in enumerate(new):
            if tok in self.eos_ids:
                new, finish = new[: n + 1], "stop"
                break
        else:
            pad = self.tokenizer.pad_token_id
            while new and new[-1] == pad:
                new = new[:-1]
            if len(new) < generated:  # padded after the others: a stop string ended this row
                finish = "stop"
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        cut = _first_stop(text, self.cfg.stop)
        if cut is not None:
            text, finish = text[:cut], "stop"
        return Completion(text=text, prompt_tokens=prompt_len, completion_tokens=len(new), finish_reason=finish)

    def describe(self) -> PolicyInfo:
        return PolicyInfo(kind="hf", model=model_label(self.cfg.model), sampling=sampling_json(self.cfg))

    def close(self) -> None:
        self.model = None
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()


def _batch_seed(seeds: list[int]) -> int:
    """One seed for a batch, from its requests' seeds in order."""
    key = ",".join(str(int(s)) for s in seeds).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") & 0x7FFFFFFFFFFFFFFF


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([] if ids is None else [ids])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _context_length(config: Any, tokenizer: Any) -> int:
    n = getattr(config, "max_position_embeddings", None)
    if n:
        return int(n)
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if n and n < 10**7 else 2048
