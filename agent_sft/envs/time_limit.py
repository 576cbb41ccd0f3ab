"""`TimeLimit`: an episode's step budget, kept by a wrapper around the env (as Gymnasium's `TimeLimit`).

The pools wrap every env they build with the run's budget (`env.max_steps`, or an `env.mix` entry's), and
so do the env server's sessions, which build theirs the same way: an env need not count steps itself.

    env = TimeLimit(make("alfworld", data_path="builtin"), max_steps=30)
"""

from __future__ import annotations

from typing import Any


class TimeLimit:
    """`env` whose episodes end truncated after `max_steps` steps.

    A step is answered as the env answers it, except that the step reaching the budget is truncated when
    the env did not end the episode itself (the built-in envs that count their own steps answer alike).
    Everything else (`tasks`, `close`, the env's attributes) is the env's.

    Args:
        env: a `TextEnv`.
        max_steps: the steps an episode may take (at least 1).
    """

    def __init__(self, env: Any, max_steps: int) -> None:
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.env = env
        self.max_steps = int(max_steps)
        self.elapsed = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        self.elapsed = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.elapsed += 1
        if self.elapsed >= self.max_steps and not terminated:
            truncated = True
        return obs, reward, terminated, truncated, info

    def tasks(self) -> list:
        return self.env.tasks()

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> TimeLimit:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        if name == "env":  # not set yet (while unpickling): never look it up on itself
            raise AttributeError(name)
        return getattr(self.env, name)
