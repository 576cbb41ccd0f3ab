"""Configuration: dataclasses with defaults and help text, YAML files, dotted overrides, env vars.

Every field is documented in its `metadata["help"]`. Keys are dotted paths (`env.max_steps=30`); the
verl-agent spellings used by the original PPO-trainer feature are accepted as aliases
(`actor_rollout_ref.model.path`, `actor_rollout_ref.rollout.val_kwargs.temperature`, ...), and the
`COLLECT_SFT`, `SFT_SEED` and `SFT_REQUIRE_SUCCESS` environment variables are honored.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from agent_sft.config_keys import ALIASES, check_fields, env_spec, flatten, ignored, set_key, yaml_syntax_error
from agent_sft.config_keys import describe as describe_keys
from agent_sft.config_keys import keys as keys_of
from agent_sft.errors import ConfigError

__all__ = ["CollectConfig", "ConfigError", "DataConfig", "EnvConfig", "FilterConfig", "LoopConfig", "OutputConfig",
           "PolicyConfig", "PromptConfig", "RolloutConfig", "ScaleConfig", "describe", "env_options", "keys", "load_config", "set_key", "to_dict"]


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
    num_episodes: int | None = _f(None, "Total episodes; default one pass over the selected games x rollout.n.")
    rollout: RolloutConfig = field(default_factory=RolloutConfig, metadata={"help": "Sampling per task."})
    task_types: list[str] = _f([], "Only these task types (e.g. pick_and_place, clean); empty for all. For an env "
                                   "with a task_types option of its own, this key names it (env.<env>.task_types).")
    step_timeout_s: float = _f(120.0, "An env reset/step slower than this ends the episode as an error.")
    max_consecutive_errors: int = _f(20, "Episodes of one env in a row that end in an env error (a reset or step "
                                     "that failed or timed out): then every server the env plays on is asked "
                                     "GET /health, and when none answers (or the env plays in this process) the "
                                     "run stops with exit code 3; the sealed episodes are kept and a rerun plays "
                                     "the error ones again.")
    backend: str = _f("process", "How envs run: `process` (a spawned worker process each; a crashed or hung env is "
                                 "killed and replaced), `thread` (threads of this process, for envs that wait on "
                                 "the network; a hung env is abandoned; refused for envs that may not share a process) "
                                 "or `ray` (a Ray actor each, anywhere on the cluster; scale.cpus_per_env each).")
    mix: dict = field(default_factory=dict, metadata={
        "help": "Several envs in one run: a list of entries ({env: textworld, episodes: 40} or weight: w, with "
                "max_steps, expert, template, task_types and env options per entry), or dotted keys "
                "env.mix.<label>.<field>; see agent_sft.mix.", "mix": True})
    options: dict = field(default_factory=dict, repr=False, metadata={
        "help": "Each env's own options, set as env.<env>.<option> (or env.<option> for the selected env).",
        "env_options": True})


@dataclass
class PromptConfig:
    style: str = _f("window", "`window`: each prompt carries its own history (verl-agent); `chat`: a growing conversation.", ("window", "chat"))
    template: str | None = _f(None, "Path of a prompt template file replacing the built-in one: sections `=== first ===` and `=== step ===`, str.format placeholders such as {current_observation} (see agent_sft.prompts).")
    system: str | None = _f(None, "System message; none by default.")
    require_think: bool = _f(True, "A response without <think>...</think> counts as invalid (verl-agent's rule).")


@dataclass
class DataConfig:
    val_batch_size: int = _f(8, "Episodes played at once (envs in parallel); alias loop.parallel. `sync`: one "
                              "policy batch per turn; `async`: episodes in flight.")
    val_fraction: float = _f(0.1, "Fraction of tasks (by a stable hash of the task id) in the validation split.")


@dataclass
class LoopConfig:
    mode: str = _f("sync", "`sync`: lock-step turns, every live episode answered in one policy batch (bit-for-bit "
                   "batches); `async`: each episode advances as soon as its own observation or answer is ready, "
                   "generation and env steps overlap. Both give the same ids, seeds and splits.", ("sync", "async"))
    reorder_window: int | None = _f(None, "async: finished episodes held back at most to be written in plan order "
                                    "(default 4x data.val_batch_size); a new episode waits while it is full.")


@dataclass
class ScaleConfig:
    backend: str = _f("local", "`local`: this process plays every episode; `ray`: collector actors on a Ray cluster "
                      "play them, and this process plans and writes (pip install 'agent-sft[ray]').", ("local", "ray"))
    address: str | None = _f(None, "ray: the cluster to join (`auto`: the running one; `ray://host:10001`, or "
                             "host:port); default $RAY_ADDRESS (set by `ray job submit`), else a new local Ray.")
    collectors: int = _f(1, "ray: collector actors, each with its own policy and data.val_batch_size env workers.")
    gpus_per_collector: float = _f(0.0, "ray: GPUs each collector reserves (its vLLM/transformers model runs there).")
    cpus_per_collector: float = _f(1.0, "ray: CPUs each collector reserves for itself (its env workers are processes "
                                   "beside it, or Ray actors with env.backend=ray).")
    cpus_per_env: float = _f(1.0, "env.backend=ray: CPUs each env actor reserves.")
    chunk_episodes: int | None = _f(None, "ray: episodes handed to a collector at a time (default 4x data.val_batch_size); "
                                    "a collector holds two chunks, so faster collectors take more.")
    max_restarts: int = _f(3, "ray: times a dead collector actor is restarted; its unfinished episodes are played again.")
    start_timeout_s: float = _f(600.0, "ray: a collector that is not ready (its policy and envs built) by then is an error.")
    stall_timeout_s: float = _f(1800.0, "ray: no episode finishing for this long anywhere is an error (no wait is unbounded).")


@dataclass
class PolicyConfig:
    type: str | None = _f(None, "Policy kind; default `expert`, or `vllm` when a model is set.", ("expert", "vllm", "hf", "openai"))
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
    enforce_eager: bool = _f(False, "vLLM: skip CUDA graph / compile warm-up.")
    batch_invariant: bool = _f(False, "vLLM on a GPU: batch-invariant kernels (VLLM_BATCH_INVARIANT=1), so an answer's "
                               "numerics do not depend on what else is in the batch (slower; not on CPU).")
    device: str | None = _f(None, "transformers: device (default cuda when available, else cpu).")
    base_url: str = _f("http://127.0.0.1:8000/v1", "OpenAI-compatible server URL.")
    api_key_env: str = _f("OPENAI_API_KEY", "Environment variable holding the API key (never stored).")
    concurrency: int = _f(32, "HTTP requests in flight at most.")
    request_timeout_s: float = _f(120.0, "HTTP request timeout.")
    max_retries: int = _f(4, "HTTP retries on 429/5xx/connection errors, with backoff.")
    max_consecutive_failures: int = _f(20, "HTTP: requests in a row, across all episodes, that failed for good "
                                       "(5xx, 429 or an unreadable answer after their retries, a timeout, a 400 "
                                       "not about the context length) with no good answer since: the run stops "
                                       "with exit code 3; the sealed episodes are kept and a rerun plays the "
                                       "error ones again.")


@dataclass
class FilterConfig:
    """What reaches `sft` (`raw` keeps every episode). `agent-sft build` takes each field as a flag too:
    `--require-success`, `--max-steps N`, ...; `drop_errors`, on by default, is turned off by `--keep-errors`."""

    require_success: bool = _f(False, "Keep only won episodes in `sft` (SFT_REQUIRE_SUCCESS).")
    drop_errors: bool = _f(True, "Leave out episodes that ended in an env or policy error.", flag="--keep-errors")
    min_final_reward: float | None = _f(None, "Keep episodes whose return is at least this.")
    valid_only: bool = _f(False, "Keep only episodes whose every step parsed and was admissible.")
    min_steps: int | None = _f(None, "Keep episodes with at least this many steps.")
    max_steps: int | None = _f(None, "Keep episodes with at most this many steps.")
    max_tokens: int | None = _f(None, "Drop sft rows longer than this many tokens (needs filters.tokenizer).")
    tokenizer: str | None = _f(None, "Tokenizer (path or name) for token-length filters.")
    callable: str | None = _f(None, "`module:function` or `file.py:function` taking a raw row, returning bool.")


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


@dataclass
class CollectConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


def env_options(cfg: CollectConfig) -> Any:
    """The selected env's options (its options dataclass, checked), None for an env without options.

    Raises:
        ConfigError: an unknown env, or a bad option value (naming `env.<env>.<option>`).
    """
    spec = env_spec(cfg.env.env_name)
    return spec.build_options(cfg.env.options.get(spec.name, {}))


def load_config(
    yaml_path: str | None = None,
    overrides: list[str] | None = None,
    environ: dict[str, str] | None = None,
    cls: type = CollectConfig,
) -> Any:
    """Build a config: defaults, then a YAML file, then `key=value` overrides, then env vars.

    Raises:
        ConfigError: naming the key and the allowed keys or values.
    """
    cfg = cls()
    pairs: list[tuple[str, Any]] = []
    if yaml_path:
        import yaml

        try:
            with open(yaml_path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {yaml_path}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {yaml_path} is not UTF-8 text: {e.reason}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {yaml_path}: {yaml_syntax_error(e)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{yaml_path}: expected a mapping at the top level")
        pairs += flatten(data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        pairs.append((k.strip().lstrip("+"), v))
    valid = set(keys(cls))
    # The selected env decides what `env.<option>` names, whatever the order of the keys.
    pairs.sort(key=lambda kv: ALIASES.get(kv[0], kv[0]) != "env.env_name")
    for k, v in pairs:
        if not ignored(k, valid):
            set_key(cfg, k, v)
    if cls is CollectConfig:
        apply_env_vars(cfg, os.environ if environ is None else environ)
        validate(cfg)
    return cfg


def _truthy(v: str) -> bool:
    return v.strip().lower() in ("1", "true", "yes", "on")


def apply_env_vars(cfg: CollectConfig, environ: Any) -> None:
    """The original feature's switch: SFT_SEED overrides env.seed, SFT_REQUIRE_SUCCESS filters."""
    if environ.get("SFT_SEED", "").strip():
        set_key(cfg, "env.seed", environ["SFT_SEED"])
    if "SFT_REQUIRE_SUCCESS" in environ:
        cfg.filters.require_success = _truthy(environ["SFT_REQUIRE_SUCCESS"])
    if _truthy(environ.get("COLLECT_SFT", "")) and not cfg.output.export_dir:
        import time

        cfg.output.export_dir = time.strftime("sft_data_%Y%m%d_%H%M%S")


def validate(cfg: CollectConfig) -> None:
    """Check a config, whether loaded from keys or built in Python: each value's type and choices, bounds,
    cross-field rules and the run's envs. Idempotent: it fills in only what a default decides (the policy
    kind, the env's expert), as loading does.

    Raises:
        ConfigError: naming the key, as loading does.
    """
    check_fields(cfg)
    if not isinstance(cfg.env.mix, dict):
        from agent_sft.mix import normalize_mix

        cfg.env.mix = normalize_mix(cfg.env.mix)
    if not isinstance(cfg.env.options, dict):
        raise ConfigError(f"env.options: expected a mapping env -> {{option: value}}, got {cfg.env.options!r}")
    if cfg.policy.type is None:
        cfg.policy.type = "vllm" if cfg.policy.model else "expert"
    if cfg.policy.type in ("vllm", "hf", "openai") and not cfg.policy.model:
        raise ConfigError(f"policy.type={cfg.policy.type} needs policy.model (or actor_rollout_ref.model.path)")
    for key, v, lo in (
        ("env.max_steps", cfg.env.max_steps, 1),
        ("env.rollout.n", cfg.env.rollout.n, 1),
        ("data.val_batch_size", cfg.data.val_batch_size, 1),
        ("loop.reorder_window", cfg.loop.reorder_window or 1, 1),
        ("scale.collectors", cfg.scale.collectors, 1),
        ("scale.chunk_episodes", cfg.scale.chunk_episodes or 1, 1),
        ("scale.max_restarts", cfg.scale.max_restarts, 0),
        ("policy.max_tokens", cfg.policy.max_tokens, 1),
        ("env.history_length", cfg.env.history_length, 0),
        ("env.max_consecutive_errors", cfg.env.max_consecutive_errors, 1),
        ("policy.max_consecutive_failures", cfg.policy.max_consecutive_failures, 1),
    ):
        if v < lo:
            raise ConfigError(f"{key}: must be at least {lo} (got {v})")
    if cfg.env.num_episodes is not None and cfg.env.num_episodes < 1:
        raise ConfigError(f"env.num_episodes: must be at least 1 (got {cfg.env.num_episodes})")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: must be in [0, 1) (got {cfg.data.val_fraction})")
    if cfg.output.shard is not None:
        parse_shard(cfg.output.shard)
    if cfg.filters.max_tokens is not None and not cfg.filters.tokenizer:
        raise ConfigError("filters.max_tokens needs filters.tokenizer (a tokenizer path or name)")
    from agent_sft.mix import lanes

    run = lanes(cfg)  # each env's options, expert and count
    if len(run) == 1 and cfg.policy.expert is None and run[0].spec.prepare is None:
        cfg.policy.expert = run[0].expert  # the env's own default, shown as such in the folder's config


def parse_shard(spec: str) -> tuple[int, int]:
    """`"i/n"` -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ConfigError(f"output.shard: expected i/n such as 0/4, got {spec!r}") from None
    if not 0 <= i < n:
        raise ConfigError(f"output.shard: need 0 <= i < n, got {spec!r}")
    return i, n


def to_dict(cfg: Any) -> dict:
    """The config as plain data; each env's options under `env.<env>`, the selected env's complete."""
    out = dataclasses.asdict(cfg)
    if isinstance(cfg, CollectConfig):
        env = out["env"]
        for name, values in env.pop("options").items():
            env[name] = dict(values)
        opts = env_options(cfg)
        if opts is not None:
            env[env_spec(cfg.env.env_name).name] = dataclasses.asdict(opts)
    return out




def describe(cls: type = CollectConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key, default, help) for every key of `collect` (each registered env's options included)."""
    return describe_keys(cls, prefix)


def keys(cls: type = CollectConfig, prefix: str = "") -> list[str]:
    """Every dotted key of `collect` (with `env.<env>.<option>` for every registered env's options)."""
    return keys_of(cls, prefix)
