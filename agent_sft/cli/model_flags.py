"""The `policy.*` flags of the commands that ask a model about a folder (`judge`, `augment`): the model is given with
the keys `agent-sft collect` takes, as `key=value` or as `--policy.<key> VALUE`."""

from __future__ import annotations

import argparse
import dataclasses

from agent_sft.config import PolicyConfig


def add_policy_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    """`--policy.<key>` for every policy key but the expert's (the expert plays no model)."""
    g = parser.add_argument_group(f"{title} (the policy.* keys of `agent-sft collect`)")
    for f in dataclasses.fields(PolicyConfig):
        if f.name.startswith("expert"):
            continue
        g.add_argument(f"--policy.{f.name}", dest=f"policy.{f.name}", metavar="VALUE",
                       help=f.metadata.get("help", "").replace("%", "%%"))


def policy_config(a: argparse.Namespace, command: str, model: str, task: str) -> PolicyConfig:
    """The model's `PolicyConfig`: the `--policy.*` flags, then the `key=value` overrides, read as `collect` reads
    them. `command` names the command, `model` the model ("the judge's model"), `task` what it cannot do without
    one ("judge").

    Raises:
        ConfigError: a key that is not a policy key, a bad value, or no model.
    """
    from agent_sft.config import ConfigError, load_config
    from agent_sft.config.dotted import ALIASES
    from agent_sft.policies.registry import policy_entry

    overrides = [f"{k}={v}" for k, v in vars(a).items() if k.startswith("policy.") and v is not None]
    for item in a.overrides:
        key = item.partition("=")[0].strip().lstrip("+")
        if "=" in item and not ALIASES.get(key, key).startswith("policy."):
            raise ConfigError(f"{key!r}: agent-sft {command} takes the policy.* keys only ({model})")
        overrides.append(item)
    cfg = load_config(None, overrides).policy
    if not policy_entry(cfg.type).needs_model:
        raise ConfigError(f"policy.type={cfg.type} plays no model, so it cannot {task}: give --policy.type openai "
                          "--policy.base_url URL --policy.model NAME (a server), or --policy.model PATH (vLLM here)")
    return cfg
