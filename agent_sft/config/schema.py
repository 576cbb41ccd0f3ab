"""The collect config as dataclasses: every field with its default and help text (`metadata["help"]`).

Loading, checking and the key listings are in `agent_sft.config.load`; `agent_sft.config` holds the public names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent_sft.config.dotted import env_spec
from agent_sft.policies.registry import DEFAULT_KIND, DEFAULT_MODEL_KIND, POLICY_TYPES


def _f(default: Any, help: str, choices: tuple | None = None, flag: str | None = None, **kw: Any) -> Any:
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if flag is not None:
        meta["flag"] = flag  # the command-line shorthand where its name is not the field's
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class RolloutConfig:
    n: int = _f(1, "Samples (episodes) per task.")


@dataclass
class EnvConfig:
    env_name: str = _f("alfworld", "Environment name in the registry (`alfworld/AlfredTWEnv` also works).")
    seed: int = _f(0, "Run seed: episode ids, env seeds and sampling seeds derive from it.")
    max_steps: int = _f(50, "Steps before an episode is cut (end reason `step_limit`).")
    history_length: int = _f(2, "Observation/action pairs shown in a windowed prompt.")
    num_episodes: int | None = _f(None, "Total episodes; default one pass over the selected games x "
                                        "env.samples_per_task.")
    rollout: RolloutConfig = field(default_factory=RolloutConfig, metadata={"help": "Sampling per task."})
    until_success: int | None = _f(None, "Sample each task until this many of its episodes succeed, counting by sample "
                                         "index, or env.max_samples_per_task are played (the ids and seeds of a fixed "
                                         "run with that many samples per task, whose list env.num_episodes cuts).")
    max_samples_per_task: int | None = _f(None, "With env.until_success: a task's budget of samples (default 8), one "
                                                "pass at most.")
    task_types: list[str] = _f([], "Only these task types (e.g. pick_and_place, clean; empty: all), the same key as "
                                   "env.<env>.task_types for an env with that option.")
    step_timeout_s: float = _f(120.0, "An env reset/step slower than this ends the episode as an error.")
    max_consecutive_errors: int = _f(20, "Episodes of one env in a row ending in an env error (a failed or "
                                     "timed-out reset or step) after which, unless a server of the env answers GET "
                                     "/health, the run stops with exit code 3 (sealed episodes kept; a rerun replays "
                                     "the errors).")
    backend: str = _f("process", "The env pool: `process` (a worker process per env, replaced when it crashes or "
                                 "hangs), `thread` (threads of this process, for network-bound envs that may share "
                                 "a process) or `ray` (a Ray actor per env, scale.cpus_per_env CPUs each).")
    mix: dict = field(default_factory=dict, metadata={
        "help": "Several envs in one run: a list of entries ({env: textworld, episodes: 40} or weight: w, each with "
                "its own max_steps, expert, template, task_types and env options) or keys env.mix.<label>.<field>.",
        "mix": True})
    options: dict = field(default_factory=dict, repr=False, metadata={
        "help": "Each env's own options, set as env.<env>.<option> (or env.<option> for the selected env).",
        "env_options": True})


@dataclass
class PromptConfig:
    style: str = _f("window", "`window`: each prompt carries its own history (verl-agent); `chat`: a growing conversation.", ("window", "chat"))
    template: str | None = _f(None, "Prompt template file replacing the built-in one (sections `=== first ===` and "
                                    "`=== step ===`, str.format placeholders such as {current_observation}).")
    system: str | None = _f(None, "System message; none by default.")
    require_think: bool = _f(True, "A response without <think>...</think> counts as invalid (verl-agent's rule; "
                                   "text actions only).")
    actions: str = _f("text", "`text`: the action written in <action>...</action>; `tools`: the env's actions offered "
                      "as tools (JSON schemas), the answer a tool call, the observation a `tool` message (chat style).",
                      ("text", "tools"))


@dataclass
class DataConfig:
    val_batch_size: int = _f(8, "Episodes in flight at once, each with its env (in `sync`, the policy batch of a turn).")
    val_fraction: float = _f(0.1, "Fraction of tasks (by a stable hash of the task id) in the validation split.")


@dataclass
class LoopConfig:
    mode: str = _f("sync", "`sync`: lock-step turns, one policy batch per turn (bit-for-bit batches); `async`: each "
                   "episode advances as soon as its answer or observation is ready (the same ids, seeds and splits).",
                   ("sync", "async"))
    reorder_window: int | None = _f(None, "async: finished episodes held back at most to be written in plan order, "
                                    "new ones waiting while it is full (default 4x loop.parallel).")


@dataclass
class ScaleConfig:
    backend: str = _f("local", "`local`: this process plays every episode; `ray`: collector actors on a Ray cluster "
                      "play them while this process plans and writes (pip install 'agent-sft[ray]').", ("local", "ray"))
    address: str | None = _f(None, "ray: the cluster to join (`auto`, `ray://host:10001` or host:port); default "
                             "$RAY_ADDRESS (set by `ray job submit`), else a new local Ray.")
    collectors: int = _f(1, "ray: collector actors, each with its own policy and loop.parallel env workers.")
    gpus_per_collector: float = _f(0.0, "ray: GPUs each collector reserves (its vLLM/transformers model runs there).")
    cpus_per_collector: float = _f(1.0, "ray: CPUs each collector reserves for itself (its env workers are processes "
                                   "beside it, or Ray actors with env.pool=ray).")
    cpus_per_env: float = _f(1.0, "env.pool=ray: CPUs each env actor reserves.")
    chunk_episodes: int | None = _f(None, "ray: episodes handed to a collector at a time (default 4x loop.parallel), "
                                    "two chunks per collector, so faster collectors take more.")
    max_restarts: int = _f(3, "ray: times a dead collector actor is restarted; its unfinished episodes are played again.")
    start_timeout_s: float = _f(600.0, "ray: a collector that is not ready (its policy and envs built) by then is an error.")
    stall_timeout_s: float = _f(1800.0, "ray: no episode finishing for this long anywhere is an error (no wait is unbounded).")


@dataclass
class PolicyConfig:
    type: str | None = _f(None, f"Policy kind, a row of the policy table ({', '.join(POLICY_TYPES)}); default "
                                f"`{DEFAULT_KIND}`, or `{DEFAULT_MODEL_KIND}` when a model is set.", POLICY_TYPES)
    model: str | None = _f(None, "Model path or name (vllm, hf, openai).")
    expert: str | None = _f(None, "The expert `policy.type=expert` replays: one the env offers (default its first: ALFWorld planner, TextWorld walkthrough, ...).")
    expert_think: bool = _f(False, "Experts write their remaining plan inside <think>; empty otherwise.")
    do_sample: bool = _f(True, "Sample; false means greedy (temperature 0).")
    temperature: float = _f(0.4, "Sampling temperature.")
    top_p: float = _f(1.0, "Nucleus sampling mass.")
    top_k: int = _f(-1, "Top-k sampling (-1: off).")
    max_tokens: int = _f(512, "Tokens generated per turn at most.")
    stop: list[str] = _f([], "Stop strings.")
    tensor_parallel_size: int = _f(1, "vLLM tensor parallel size.")
    gpu_memory_utilization: float = _f(0.9, "vLLM GPU memory fraction.")
    max_model_len: int | None = _f(None, "Context length (vLLM); longer prompts end the episode as context_truncated.")
    dtype: str = _f("auto", "Model dtype (auto, bfloat16, float16, float32).")
    chat_template: str | None = _f(None, "Path of a chat template overriding the model's.")
    tool_parser: str = _f("hermes", "prompt.actions=tools, vllm and hf: vLLM's tool-call parser for the model's family "
                          "(`hermes` for Qwen2.5; agent-sft's own Hermes parser when vLLM is not installed).")
    tool_choice: str = _f("auto", "prompt.actions=tools, openai: `required` asks the server for a call every turn (vLLM "
                          "constrains the answer to the tools' schemas with guided decoding); `auto` lets the model "
                          "answer without one.", ("auto", "required"))
    enforce_eager: bool = _f(False, "vLLM: skip CUDA graph / compile warm-up.")
    batch_invariant: bool = _f(False, "vLLM on a GPU: batch-invariant kernels (VLLM_BATCH_INVARIANT=1), so an answer "
                               "does not depend on the rest of its batch (slower; not on CPU).")
    device: str | None = _f(None, "transformers: device (default cuda when available, else cpu).")
    base_url: str = _f("http://127.0.0.1:8000/v1", "OpenAI-compatible server URL.")
    api_key_env: str = _f("OPENAI_API_KEY", "Environment variable holding the API key (never stored).")
    concurrency: int = _f(32, "HTTP requests in flight at most.")
    request_timeout_s: float = _f(120.0, "HTTP request timeout.")
    max_retries: int = _f(4, "HTTP retries on 429/5xx/connection errors, with backoff.")
    max_consecutive_failures: int = _f(20, "HTTP: requests in a row, across all episodes, that failed for good "
                                       "(after their retries), after which the run stops with exit code 3 (sealed "
                                       "episodes kept; a rerun replays the errors).")
    record_tokens: bool = _f(False, "Keep each step's prompt and completion token ids and the completion's logprobs "
                             "as the engine produced them (vllm, hf, an openai server that returns them, as vLLM's "
                             "does); each episode says whether its capture is complete (`tokens_complete`).")
    logprobs: int | None = _f(None, "With record_tokens: also keep the top-N tokens' logprobs at each position "
                              "(`top_logprobs`); unset keeps only the sampled token's logprob.")


@dataclass
class FilterConfig:
    """What reaches `sft` (`raw` keeps every episode). `agent-sft build` takes each field as a flag too:
    `--require-success`, `--max-steps N`, ...; `drop_errors`, on by default, is turned off by `--keep-errors`."""

    require_success: bool = _f(False, "Keep only won episodes in `sft` (SFT_REQUIRE_SUCCESS).")
    drop_errors: bool = _f(True, "Leave out episodes that ended in an env or policy error.", flag="--keep-errors")
    min_final_reward: float | None = _f(None, "Keep episodes whose return is at least this.")
    valid_only: bool = _f(False, "Keep only episodes whose every step parsed and was admissible.")
    require_tokens: bool = _f(False, "Keep only episodes whose token capture is complete (`tokens_complete`: every "
                              "model turn's prompt and completion ids and logprobs as the engine gave them; "
                              "policy.record_tokens), as RL trainers need them.")
    min_steps: int | None = _f(None, "Keep episodes with at least this many steps.")
    max_steps: int | None = _f(None, "Keep episodes with at most this many steps.")
    max_tokens: int | None = _f(None, "Drop sft rows longer than this many tokens (needs filters.tokenizer).")
    tokenizer: str | None = _f(None, "Tokenizer (path or name) for token-length filters.")
    callable: str | None = _f(None, "`module:function` or `file.py:function` taking a raw row, returning bool.")
    dedup: str = _f("off", "Drop repeated episodes from `sft`, keeping each task's first sample: `exact` (same actions on the same task), `near` (also responses alike by MinHash) or `off`.", ("off", "exact", "near"))
    task_success: str = _f("any", "Keep only tasks whose success rate over their episodes (error episodes aside) is `mixed` (strictly between 0 and 1), `solved` (above 0) or `unsolved` (0); `any` keeps every task.", ("any", "mixed", "solved", "unsolved"))
    select: str = _f("all", "Which episodes of a task stay: `all`, `first_success` (its successes by sample index), `shortest_success` (fewest steps first) or `best` (best first by filters.select_by).", ("all", "first_success", "shortest_success", "best"))
    select_by: str | None = _f(None, "The score `select=best` ranks a task's episodes by: a `scores` column (invalid_rate, length_ratio, ...) or judge.<name>.")
    scores: list[str] = _f([], "Rules on the episodes' quality scores, all kept: `<score> <op> <number>` with op <, <=, >, >= or ==, e.g. invalid_rate<=0.2, judge.rubric>=0.6 (an episode without the score is dropped).")
    per_task: int | None = _f(None, "At most this many episodes per task, in the order `select` gives (1 when `select` picks successes and this is unset).")
    per_task_type: int | None = _f(None, "At most this many episodes per env and task type, by task id and sample index.")
    dedup_threshold: float = _f(0.9, "The responses' Jaccard similarity (word 3-grams) at which `dedup=near` drops an episode.")


@dataclass
class DpoConfig:
    """The `dpo` config: preference pairs from episodes of one task, written by a run's end and `agent-sft build`."""

    pairs: str = _f("episode", "`episode`: a successful episode against a failed one of the same task (the shared "
                    "turns as the prompt); `step`: two answers at the step where episodes with the same actions so far "
                    "diverge, one of them succeeding; `both`; `off` (no `dpo` config).", ("episode", "step", "both", "off"))
    per_task: int = _f(4, "Pairs of each kind per task at most (successes and failures taken by sample index).")


@dataclass
class OutputConfig:
    dir: str = _f("agent_sft_data", "Dataset folder (created, or resumed when it exists).")
    sft_style: str = _f("auto", "sft rows: `auto` follows prompt.style; `step` one row per step; `episode` one per episode.", ("auto", "step", "episode"), flag="--style")
    flush_every_s: float = _f(5.0, "Seal a shard at least this often while episodes finish.")
    flush_every_episodes: int = _f(64, "Seal a shard once this many episodes are buffered.")
    allow_config_change: bool = _f(False, "Continue a folder collected with a different config.")
    shard: str | None = _f(None, "`i/n`: this process collects the i-th of n interleaved parts of the task list.")
    push_to_hub: str | None = _f(None, "Hub repo id to push to when the run ends.")
    private: bool = _f(False, "Create the Hub repo as private.")
    license: str = _f("mit", "License in the dataset card's metadata (Hub license id; ALFWorld itself is MIT).")
    export_dir: str | None = _f(None, "Also write the verl/seed-format export here (COLLECT_SFT sets a timestamped one).")
    traces: str | None = _f("auto", "Episodes pushed as Hub trace-viewer sessions under traces/: `auto` (a few per env "
                                    "and outcome), `all`, `none`, or a number.")


@dataclass
class CollectConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    dpo: DpoConfig = field(default_factory=DpoConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


def env_options(cfg: CollectConfig) -> Any:
    """The selected env's options (its options dataclass, checked), None for an env without options.

    Raises:
        ConfigError: an unknown env, or a bad option value (naming `env.<env>.<option>`).
    """
    spec = env_spec(cfg.env.env_name)
    return spec.build_options(cfg.env.options.get(spec.name, {}))
