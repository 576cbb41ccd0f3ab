"""Collection throughput on a GPU with a 7B-shaped model: episodes/hour, generated tokens/s, collector/bare.

    python bench/gpu_throughput.py                           # vLLM if installed, else transformers
    python bench/gpu_throughput.py --backend hf --env babyai --episodes 64 --parallel 32
    python bench/gpu_throughput.py --shape tiny --episodes 8 --parallel 4 --max-tokens 16   # a dry run on CPU

The model has Qwen2.5-7B-Instruct's architecture (`--shape qwen2.5-7b`: 28 layers, width 3584, 28 query
and 4 key/value heads, MLP 18944, vocabulary 152064) with random weights made from its config, so nothing
is downloaded: vLLM starts it with `load_format="dummy"`, transformers builds it on the device. The
tokenizer is agent-sft's tiny one (prompts are shorter in tokens than with Qwen's; ids past its vocabulary
decode to nothing), answers are gibberish of `--max-tokens` tokens at most, and every episode plays to
`--max-steps` unless the env ends it.

Both loop modes (`loop.mode=sync|async`) play the same plan of built-in games (`--env`, default BabyAI:
it installs from wheels). For each, the bare engine then answers the exact prompts the run recorded, with
their seeds, one batch per turn, and the table gives: episodes/hour, generated tokens/s, the collector's
loop time / the bare generation time, and the engine's prefix cache hit rate where it reports one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHAPES = {
    # Qwen/Qwen2.5-7B-Instruct's config.json, weights aside
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rope_theta=1000000.0,
                       rms_norm_eps=1e-6, tie_word_embeddings=False),
    # a dry run of the script on a CPU
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                 num_key_value_heads=1, vocab_size=None, max_position_embeddings=4096, tie_word_embeddings=True),
}


def model_folder(out: str, shape: str) -> tuple[str, object]:
    """A folder with the shape's config.json, generation config and the tiny tokenizer (no weights)."""
    from transformers import GenerationConfig, Qwen2Config

    from agent_sft.tiny_model import SPECIAL_TOKENS, build_tokenizer

    os.makedirs(out, exist_ok=True)
    tok = build_tokenizer(1024)
    tok.save_pretrained(out)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    dims = dict(SHAPES[shape])
    dims["vocab_size"] = dims["vocab_size"] or len(tok)
    config = Qwen2Config(**dims, head_dim=dims["hidden_size"] // dims["num_attention_heads"],
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"], architectures=["Qwen2ForCausalLM"])
    config.save_pretrained(out)
    GenerationConfig(eos_token_id=[ids["<|im_end|>"]], pad_token_id=ids["<|endoftext|>"]).save_pretrained(out)
    return out, config


def make_policy(backend: str, cfg, config, device: str | None):
    if backend == "vllm":
        from agent_sft.policies.vllm import VLLMPolicy

        return VLLMPolicy(cfg.policy, load_format="dummy")
    import torch
    from transformers import Qwen2ForCausalLM

    from agent_sft.policies.hf import HFPolicy

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    t = time.perf_counter()
    with dev:
        model = Qwen2ForCausalLM._from_config(config, dtype=dtype)
    print(f"model built on {dev} in {time.perf_counter() - t:.1f} s: "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, {dtype}")
    return HFPolicy(cfg.policy, model=model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("auto", "vllm", "hf"), default="auto")
    ap.add_argument("--shape", choices=tuple(SHAPES), default="qwen2.5-7b")
    ap.add_argument("--env", default="babyai")
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--max-steps", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--modes", nargs="+", default=["sync", "async"], choices=("sync", "async"))
    ap.add_argument("--device", default=None, help="transformers: device (default cuda when available)")
    ap.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".cache", "agent-sft", "gpu-bench"))
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()

    from bench_async import bare_generation, cold_cache, play

    from agent_sft.config import load_config

    backend = args.backend
    if backend == "auto":
        backend = "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    folder, config = model_folder(os.path.join(args.workdir, args.shape), args.shape)
    common = [f"env.env_name={args.env}", f"env.num_episodes={args.episodes}", f"data.val_batch_size={args.parallel}",
              f"env.max_steps={args.max_steps}", f"policy.type={backend}", f"policy.model={folder}",
              f"policy.max_tokens={args.max_tokens}", "policy.temperature=1.0", "policy.max_model_len=4096"]
    t = time.perf_counter()
    policy = make_policy(backend, load_config(None, common, environ={}), config, args.device)
    print(f"policy {backend} ready in {time.perf_counter() - t:.1f} s; {args.episodes} {args.env} episodes, "
          f"{args.parallel} in parallel, max {args.max_steps} steps, max {args.max_tokens} tokens per answer\n")
    print("| mode | loop s | episodes/hour | steps | gen tokens/s | bare gen s | bare tokens/s | collector / bare "
          "| prefix cache hits |")
    print("|---|---|---|---|---|---|---|---|---|")
    results = {}
    for mode in args.modes:
        cfg = load_config(None, [*common, f"loop.mode={mode}"], environ={})
        cold_cache(policy)
        eps, st = play(cfg, policy)
        gen_s, gen_tokens = bare_generation(policy, eps)
        rate = st.prefix_cache_hit_rate()
        r = {"loop_s": st.wall_s, "episodes": len(eps), "steps": st.steps,
             "episodes_per_hour": 3600 * len(eps) / st.wall_s, "gen_tokens_per_s": st.completion_tokens / st.wall_s,
             "bare_gen_s": gen_s, "bare_tokens_per_s": gen_tokens / gen_s if gen_s else 0.0,
             "collector_over_bare": st.wall_s / gen_s if gen_s else None, "prefix_cache_hit_rate": rate,
             "env_busy_s": st.env_s, "policy_busy_s": st.policy_s}
        results[mode] = r
        print(f"| {mode} | {st.wall_s:.1f} | {r['episodes_per_hour']:.0f} | {st.steps} | {r['gen_tokens_per_s']:.0f} "
              f"| {gen_s:.1f} | {r['bare_tokens_per_s']:.0f} | {r['collector_over_bare']:.2f}x "
              f"| {'-' if rate is None else f'{100 * rate:.1f}%'} |")
    if len(results) == 2:
        print(f"\nasync / sync episodes/hour: {results['async']['episodes_per_hour'] / results['sync']['episodes_per_hour']:.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"backend": backend, "shape": args.shape, "args": vars(args), "results": results}, fh, indent=1)
    policy.close()


if __name__ == "__main__":
    main()
