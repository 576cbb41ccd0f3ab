"""Write your own environment in one file, register it, and collect from it.

    python examples/custom_env.py [OUTPUT_DIR]

An env is a class with `tasks()`, `reset(seed=, options={"task_id": ...})`, `step(action)` and `close()`
(the `agent_sft.envs.TextEnv` protocol). `info` carries the admissible actions, the task and goal, the
env's own verdict `won`, and, for an env with an expert, the expert's remaining plan. Env workers are
separate processes that import this module to build the env, so keep it importable (no work at import
time besides the registration).
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

import agent_sft
from agent_sft.envs import EnvCard, EnvOptions, OptionError, TaskSpec, option


@dataclass
class GuessOptions(EnvOptions):
    """`env.guess.*` keys, checked when the config is read."""

    high: int = option(16, "Numbers are drawn from 1..high.")
    tasks_per_level: int = option(4, "Tasks (secret numbers) per level.", fingerprint=False)

    def __post_init__(self) -> None:
        if self.high < 2:
            raise OptionError("high", f"must be at least 2 (got {self.high})")


class GuessEnv:
    """Guess a secret number; the env answers "higher" or "lower". The expert bisects."""

    def __init__(self, high: int = 16, tasks_per_level: int = 4, max_steps: int = 20, expert: str | None = None):
        self.high, self.n, self.max_steps, self.expert = high, tasks_per_level, max_steps, expert

    def tasks(self) -> list[TaskSpec]:
        return [TaskSpec(f"guess/{k}", "guess", "train") for k in range(self.n)]

    def _info(self, won: bool = False) -> dict:
        plan = [f"guess {(self.lo + self.hi) // 2}"] if self.expert and not won else []
        return {"task_id": self.task_id, "task_type": "guess", "goal": f"find the number between 1 and {self.high}",
                "won": won, "admissible_actions": [f"guess {k}" for k in range(self.lo, self.hi + 1)],
                "expert_plan": plan}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        self.task_id = options["task_id"]
        rng = random.Random(f"{self.task_id}-{self.high}")  # the secret is the task's, the same for every seed
        self.secret, self.lo, self.hi, self.t = rng.randint(1, self.high), 1, self.high, 0
        return f"I am thinking of a number. Your task is to: find the number between 1 and {self.high}.", self._info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        self.t += 1
        guess = int(action.split()[-1])
        if guess == self.secret:
            return f"{guess} is right!", 1.0, True, False, self._info(won=True)
        if guess < self.secret:
            self.lo = max(self.lo, guess + 1)
            obs = f"{guess} is too low."
        else:
            self.hi = min(self.hi, guess - 1)
            obs = f"{guess} is too high."
        return obs, 0.0, False, self.t >= self.max_steps, self._info()

    def close(self) -> None:
        pass


# One line of registration; a package would name GuessEnv in its `agent_sft.envs` entry points instead.
agent_sft.register_env("guess", f"{__name__}:GuessEnv", options=GuessOptions,
                       card=EnvCard(title="Guess the number", description="Find a secret number from higher/lower hints."))


def main(out: str = "guess_example") -> None:
    result = agent_sft.collect(["env.env_name=guess", "env.guess.high=32", "env.samples_per_task=2",
                                "data.val_fraction=0.25", f"output.dir={out}"])
    print(f"{result.stats['total_episodes']} episodes, success rate {100 * result.stats['success_rate']:.0f}%, "
          f"mean length {result.stats['mean_length']:.1f} steps")
    print(agent_sft.load(result.folder, "sft"))


if __name__ == "__main__":
    main(*sys.argv[1:])
