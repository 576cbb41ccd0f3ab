"""What recording token ids and logprobs costs: bytes per step on disk and steps per second, the tiny model on CPU.

    python bench/bench_tokens.py                       # 16 FrozenLake episodes of up to 6 steps per side
    python bench/bench_tokens.py --episodes 32 --repeats 3

One vLLM engine (the tiny random chat model, built here) plays the same episodes three ways, into fresh folders:
  text            policy.record_tokens=false: today's rows
  tokens          policy.record_tokens=true: each step's prompt and completion ids and the sampled logprobs
  tokens+top5     ... and policy.logprobs=5: the top 5 tokens' logprobs at each position
Bytes per step: the `raw` config's shards on disk (zstd Arrow, as the folder keeps them) over the steps played;
steps/s: the steps over the wall time of the collection (engine and envs), best of the repeats (sides alternate).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent_sft.config import load_config  # noqa: E402
from agent_sft.dataset.writer import BuildSpec, DatasetWriter  # noqa: E402
from agent_sft.rollout import iter_collect  # noqa: E402
from agent_sft.run import schema_additions  # noqa: E402

SIDES = {"text": [], "tokens": ["policy.record_tokens=true"],
         "tokens+top5": ["policy.record_tokens=true", "policy.logprobs=5"]}


def dir_bytes(d: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def run_side(llm, model: str, folder: str, extra: list[str], episodes: int, steps: int) -> tuple[int, float, int]:
    """(steps played, wall seconds, raw bytes on disk) of one collection."""
    from agent_sft.policies.vllm import VLLMPolicy

    cfg = load_config(None, [
        "env.env_name=frozenlake", f"env.num_episodes={episodes}", f"env.max_steps={steps}", "data.val_fraction=0",
        f"data.val_batch_size={min(episodes, 8)}", "env.backend=thread", "policy.type=vllm", f"policy.model={model}",
        "policy.max_tokens=48", "policy.temperature=1.0", "policy.enforce_eager=true", "policy.dtype=bfloat16",
        "policy.max_model_len=2048", f"output.dir={folder}", *extra], environ={})
    policy = VLLMPolicy(cfg.policy, llm=llm)
    played = 0
    t0 = time.perf_counter()
    with DatasetWriter(folder, fingerprint={"bench": extra}, build=BuildSpec(), additions=schema_additions(cfg)) as w:
        for ep in iter_collect(cfg, policy, w.done_ids):
            played += len(ep.steps)
            w.add(ep)
        wall = time.perf_counter() - t0
        w.finalize()
    return played, wall, dir_bytes(os.path.join(folder, "data", "raw"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    from vllm import LLM

    from agent_sft.tiny_model import build_tiny_chat_model

    tmp = tempfile.mkdtemp(prefix="bench_tokens_")
    try:
        model = str(build_tiny_chat_model(os.path.join(tmp, "tiny-chat"), seed=0))
        llm = LLM(model=model, dtype="bfloat16", max_model_len=2048, enforce_eager=True, enable_chunked_prefill=False)
        best: dict[str, tuple[int, float, int]] = {}
        for r in range(a.repeats):
            for side, extra in SIDES.items():
                folder = os.path.join(tmp, f"{side}-{r}")
                got = run_side(llm, model, folder, extra, a.episodes, a.max_steps)
                if side not in best or got[1] < best[side][1]:
                    best[side] = got
                shutil.rmtree(folder)
        base_steps, base_wall, base_bytes = best["text"]
        print(f"{a.episodes} FrozenLake episodes (max {a.max_steps} steps, 48 tokens a turn), tiny model, vLLM on CPU; "
              f"best of {a.repeats}")
        print(f"{'side':<12} {'steps':>6} {'steps/s':>8} {'raw B/step':>11} {'vs text':>9}")
        for side, (steps, wall, size) in best.items():
            per = size / max(steps, 1)
            print(f"{side:<12} {steps:>6} {steps / wall:>8.1f} {per:>11.0f} {per - base_bytes / max(base_steps, 1):>+8.0f}B"
                  f"  ({(steps / wall) / (base_steps / base_wall) - 1:+.1%} steps/s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
