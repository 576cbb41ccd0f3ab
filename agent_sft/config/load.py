"""Loading and checking the collect config: defaults, then a YAML file, then dotted overrides (any
spelling `config.dotted` knows), then the original feature's environment variables; `complete` fills in
what defaults decide, `validate` checks without changing anything."""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

from agent_sft.config.dotted import (
    ALIASES,
    check_fields,
    env_spec,
    flatten,
    ignored,
    normalize_mix,
    set_key,
    yaml_syntax_error,
)
from agent_sft.config.dotted import describe as describe_keys
from agent_sft.config.dotted import keys as keys_of
from agent_sft.config.lanes import Lane, lanes
from agent_sft.config.schema import CollectConfig, FilterConfig, env_options
from agent_sft.errors import ConfigError
from agent_sft.policies.registry import policy_entry, policy_kind
from agent_sft.policies.tool_calls import check_tool_parser


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
        complete(cfg)
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
    cross-field rules and the run's envs. It changes nothing (a copy is completed and checked).

    Raises:
        ConfigError: naming the key, as loading does.
    """
    complete(copy.deepcopy(cfg))


def complete(cfg: CollectConfig) -> list[Lane]:
    """Fill in what a default decides (`env.mix` as a mapping, the policy kind, a single local env's own
    expert: shown as such in the folder's config) and check the result as `validate` does; returns the
    run's lanes. For a config being built (loading, `agent_sft.run.resolve`'s copy).

    Raises:
        ConfigError: naming the key.
    """
    check_fields(cfg)
    if not isinstance(cfg.env.mix, dict):
        cfg.env.mix = normalize_mix(cfg.env.mix)
    if not isinstance(cfg.env.options, dict):
        raise ConfigError(f"env.options: expected a mapping env -> {{option: value}}, got {cfg.env.options!r}")
    cfg.policy.type = policy_kind(cfg)
    if policy_entry(cfg.policy.type).needs_model and not cfg.policy.model:
        raise ConfigError(f"policy.type={cfg.policy.type} needs policy.model (or actor_rollout_ref.model.path)")
    for key, v, lo in (
        ("env.max_steps", cfg.env.max_steps, 1),
        ("env.samples_per_task", cfg.env.rollout.n, 1),
        ("loop.parallel", cfg.data.val_batch_size, 1),
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
    check_tokens(cfg.policy)
    if cfg.prompt.actions == "tools" and policy_entry(cfg.policy.type).tool_parser:
        check_tool_parser(cfg.policy.tool_parser)  # here, not when the model has loaded
    if cfg.policy.tool_choice != "auto" and (cfg.prompt.actions != "tools" or cfg.policy.type != "openai"):
        raise ConfigError(f"policy.tool_choice={cfg.policy.tool_choice} needs prompt.actions=tools and policy.type="
                          "openai (a server that constrains its answers, as vLLM's does)")
    if cfg.env.num_episodes is not None and cfg.env.num_episodes < 1:
        raise ConfigError(f"env.num_episodes: must be at least 1 (got {cfg.env.num_episodes})")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: must be in [0, 1) (got {cfg.data.val_fraction})")
    if cfg.output.shard is not None:
        parse_shard(cfg.output.shard)
    parse_traces(cfg.output.traces)
    check_stages(cfg.filters)
    check_dpo(cfg.dpo)
    if cfg.filters.require_tokens and not cfg.policy.record_tokens:
        raise ConfigError("filters.require_tokens needs policy.record_tokens=true (else it drops every episode)")
    if cfg.filters.max_tokens is not None and not cfg.filters.tokenizer:
        raise ConfigError("filters.max_tokens needs filters.tokenizer (a tokenizer path or name)")
    run = lanes(cfg)  # each env's options, expert and count
    if len(run) == 1 and cfg.policy.expert is None and run[0].spec.prepare is None:
        cfg.policy.expert = run[0].expert
    return run


def check_tokens(p: Any) -> None:
    """`policy.record_tokens` needs a model backend (an expert writes text, no tokens); `policy.logprobs` needs it."""
    if p.logprobs is not None:
        if p.logprobs < 1:
            raise ConfigError(f"policy.logprobs: must be at least 1 (got {p.logprobs}); leave it unset to keep only "
                              "the sampled token's logprob")
        if not p.record_tokens:
            raise ConfigError("policy.logprobs needs policy.record_tokens=true (top logprobs are kept with the tokens)")
    if p.record_tokens and not policy_entry(policy_kind(p)).needs_model:
        raise ConfigError(f"policy.record_tokens: policy.type={policy_kind(p)} plays no model, so it has no tokens to "
                          "record; use a model policy (vllm, hf, openai) or leave record_tokens off")


def check_stages(f: FilterConfig) -> None:
    """The bounds of the build stages' keys (`filters.per_task`, `per_task_type`, `dedup_threshold`)."""
    for key, v in (("filters.per_task", f.per_task), ("filters.per_task_type", f.per_task_type)):
        if v is not None and v < 1:
            raise ConfigError(f"{key}: must be at least 1 (got {v})")
    if not 0.0 < f.dedup_threshold <= 1.0:
        raise ConfigError(f"filters.dedup_threshold: must be in (0, 1] (got {f.dedup_threshold})")


def check_dpo(d: Any) -> None:
    """The bounds of the `dpo` keys."""
    if d.per_task < 1:
        raise ConfigError(f"dpo.per_task: must be at least 1 (got {d.per_task})")


def parse_shard(spec: str) -> tuple[int, int]:
    """`"i/n"` -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ConfigError(f"output.shard: expected i/n such as 0/4, got {spec!r}") from None
    if not 0 <= i < n:
        raise ConfigError(f"output.shard: need 0 <= i < n, got {spec!r}")
    return i, n


def parse_traces(spec: str | int | None, key: str = "output.traces") -> str | int:
    """`auto`, `all`, `none` (or null) or a count of episodes -> `auto`, `all`, `none` or an int.

    Raises:
        ConfigError: anything else, naming `key`.
    """
    text = "none" if spec is None else str(spec).strip().lower()
    if text in ("auto", "all", "none"):
        return text
    if text.isdigit():
        return int(text)
    raise ConfigError(f"{key}: expected auto, all, none or a number of episodes, got {spec!r}")


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
