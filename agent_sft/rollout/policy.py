"""The policy a run plays with: the configured backend, with what the run's envs tell an expert."""

from __future__ import annotations

from agent_sft.config import CollectConfig
from agent_sft.errors import AgentSFTError
from agent_sft.policies.base import Policy, PolicyError


def make_run_policy(cfg: CollectConfig, env_name: str) -> Policy:
    """The configured policy; an expert replays its env's plan under the model label the env's spec gives
    (each env of a mix relabels it with its own).

    Raises:
        ConfigError: an unknown `policy.type`, or a model backend without `policy.model`.
        PolicyError: the backend's package is missing, or the backend cannot be built from the config.
    """
    from agent_sft.config.lanes import lanes
    from agent_sft.policies import registry

    kind = registry.policy_kind(cfg)
    extra = {}
    if kind == "expert":
        lane = lanes(cfg)[0]
        extra = {"expert_type": lane.expert or "expert", "env_name": env_name, "model": lane.expert_model()}
    try:
        return registry.make_policy(cfg.policy, **extra)
    except ImportError as err:
        raise PolicyError(str(err)) from None
    except (OSError, ValueError, RuntimeError) as err:
        if isinstance(err, AgentSFTError):
            raise
        raise PolicyError(f"cannot load the {kind} policy (policy.model={cfg.policy.model}): "
                          f"{type(err).__name__}: {err}") from None
