"""The policy a run plays with: the configured backend, with what the run's envs tell an expert."""

from __future__ import annotations

from agent_sft.errors import AgentSFTError
from agent_sft.policies import registry
from agent_sft.policies.base import Policy, PolicyError
from agent_sft.run import Run


def make_run_policy(run: Run) -> Policy:
    """The configured policy; an expert replays its env's plan under the model label the env's spec gives
    (each env of a mix relabels it with its own).

    Raises:
        ConfigError: an unknown `policy.type`, or a model backend without `policy.model`.
        PolicyError: the backend's package is missing, or the backend cannot be built from the config.
    """
    kind, cfg = run.policy_kind, run.cfg
    extra = {}
    if kind == "expert":
        lane = run.lanes[0]
        extra = {"expert_type": lane.expert or "expert", "env_name": lane.name, "model": lane.expert_model()}
    try:
        return registry.make_policy(cfg.policy, **extra)
    except ImportError as err:
        raise PolicyError(str(err)) from None
    except (OSError, ValueError, RuntimeError) as err:
        if isinstance(err, AgentSFTError):
            raise
        raise PolicyError(f"cannot load the {kind} policy (policy.model={cfg.policy.model}): "
                          f"{type(err).__name__}: {err}") from None
