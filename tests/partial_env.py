"""A small scripted text env: rewards and verdicts on chosen steps, no game engine, instant steps.

Registered on import as `partial-test`. Env worker processes are spawned and rebuild the factory by
importing this module, which they can: tests/ is on sys.path (conftest.py) and it imports nothing heavy.

Tasks:
- `script/<name>` (task type `scripted`): play the steps of `SCRIPTS[name]` whatever the actions, so
  an episode's rewards and the env's verdict (`info["won"]`) are chosen independently of each other.
- `play/<k>` (task type `play`), k = 0..PLAY_TASKS-1: 1 + k % 3 steps; won (reward 1 on the last step)
  unless k % 4 == 3, then lost (reward 0). `PLAY_LOST` lists the lost ones.

Observations carry the episode seed, so two samples of a task differ when their seeds do. Every info
carries an `expert_plan`, so `policy.type=expert` plays it.
"""

from __future__ import annotations

from agent_sft.envs import TaskSpec, register

NAME = "partial-test"

# name -> [(reward, outcome)] with outcome "" (the episode goes on), "won" or "lost" (the env ends it).
SCRIPTS: dict[str, list[tuple[float, str]]] = {
    "partial-win": [(0.25, ""), (0.25, ""), (0.5, "won")],  # return 1.0, last reward 0.5
    "win-last-zero": [(1.0, ""), (0.0, "won")],  # a win whose last reward is 0
    "win-no-reward": [(0.0, ""), (0.0, "won")],  # won by the env's verdict, return 0
    "reward-no-win": [(0.5, ""), (0.5, "lost")],  # positive rewards, lost
    "penalty": [(1.0, ""), (-1.0, "lost")],  # return 0, last reward -1
}

PLAY_TASKS = 24
PLAY_LOST = {f"play/{k:02d}" for k in range(PLAY_TASKS) if k % 4 == 3}


def play_script(k: int) -> list[tuple[float, str]]:
    n = 1 + k % 3
    won = k % 4 != 3
    return [(0.0, "")] * (n - 1) + [(1.0 if won else 0.0, "won" if won else "lost")]


def script_of(task_id: str) -> list[tuple[float, str]]:
    kind, name = task_id.split("/", 1)
    return SCRIPTS[name] if kind == "script" else play_script(int(name))


class PartialEnv:
    ACTIONS = ["step", "look"]

    def __init__(self, max_steps: int = 50):
        self.max_steps = max_steps
        self._tasks = [TaskSpec(f"script/{name}", "scripted", "test") for name in SCRIPTS]
        self._tasks += [TaskSpec(f"play/{k:02d}", "play", "test") for k in range(PLAY_TASKS)]

    def tasks(self) -> list[TaskSpec]:
        return list(self._tasks)

    def _info(self, won: bool = False) -> dict:
        return {
            "admissible_actions": list(self.ACTIONS),
            "task_id": self.task_id,
            "goal": f"finish {self.task_id}",
            "won": won,
            "expert_plan": ["step"],
        }

    def reset(self, *, seed=None, options=None):
        self.task_id = options["task_id"]
        self.script = script_of(self.task_id)
        self.t = 0
        return f"Room {seed}. Your task is to: finish {self.task_id}", self._info()

    def step(self, action: str):
        reward, outcome = self.script[self.t]
        self.t += 1
        obs = f"You did {action!r} ({self.t} of {len(self.script)})."
        truncated = not outcome and self.t >= self.max_steps
        return obs, reward, outcome == "lost", truncated, self._info(won=outcome == "won")

    def close(self) -> None:
        pass


register(NAME, PartialEnv)


class OtherPartialEnv(PartialEnv):
    """The same scripted tasks under another env's namespace (`partial-b/...`), for runs mixing two envs."""

    def __init__(self, max_steps: int = 50):
        super().__init__(max_steps)
        self._tasks = [TaskSpec(f"partial-b/{t.task_id}", t.task_type, "test-b") for t in self._tasks]

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options={"task_id": options["task_id"].split("/", 1)[1]})
        self.task_id = options["task_id"]
        info["task_id"] = self.task_id
        return "B: " + obs, info


register(NAME_B := "partial-b-test", OtherPartialEnv)
