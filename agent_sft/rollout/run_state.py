"""What the collector and its two loops (`sync_loop`, `async_loop`) share: each env of the run while it
plays (`LaneRun`), the run's counters (`RunStats`) and the error that stops the loop (`RolloutError`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent_sft.config.lanes import Lane
from agent_sft.errors import AgentSFTError
from agent_sft.policies.base import Completion
from agent_sft.rollout.episode import EpisodeSetup
from agent_sft.rollout.pools import EnvPool


class RolloutError(AgentSFTError, RuntimeError):
    """The loop cannot go on (a policy that breaks its contract, an env that cannot start)."""


@dataclass
class LaneRun:
    """One env of the run while it plays: its lane, what its episodes are played with, env kwargs and pool.

    The lane's envs are workers `offset .. offset + size - 1` of the run's global numbering."""

    lane: Lane
    setup: EpisodeSetup
    env_kwargs: dict
    pool: EnvPool | None = None
    tasks: list | None = None
    offset: int = 0
    size: int = 0


@dataclass
class RunStats:
    episodes: int = 0
    steps: int = 0
    errors: int = 0
    env_backend: str = ""  # env.backend: the env pool the episodes were played with
    workers_started: int = 0
    workers_replaced: int = 0
    env_s: float = 0.0  # wall time waiting on env workers
    policy_s: float = 0.0  # wall time inside policy.act
    wall_s: float = 0.0  # wall time of `run` (the turn loop)
    startup_s: float = 0.0  # starting the env workers
    turns: int = 0  # sync: policy batches; async: 0 (every request goes alone)
    per_env: dict = field(default_factory=dict)  # env name -> {"episodes", "steps", "errors"}
    mode: str = "sync"  # loop.mode the episodes were played in
    requests: int = 0  # policy requests answered
    prompt_tokens: int = 0  # prompt tokens of the answers whose engine counted them
    cached_tokens: int = 0  # of those, tokens the engine found in its prefix cache
    cache_reported: int = 0  # answers that said how many prompt tokens were cached
    completion_tokens: int = 0
    past_stop: int = 0  # planned episodes left unplayed: their task had reached its stop (env.until_success)

    def prefix_cache_hit_rate(self) -> float | None:
        """Share of prompt tokens served from the engine's prefix cache (None when the engine said nothing)."""
        if not self.cache_reported or not self.prompt_tokens:
            return None
        return self.cached_tokens / self.prompt_tokens

    def count_answer(self, c: Completion) -> None:
        self.requests += 1
        if c.prompt_tokens and c.cached_tokens is not None:
            self.prompt_tokens += c.prompt_tokens
            self.cached_tokens += c.cached_tokens
            self.cache_reported += 1
        self.completion_tokens += c.completion_tokens or 0
