"""Synthetic episodes shaped like real ALFWorld ones, for dataset-layer tests."""

import json
import random

import pytest

from agent_sft.records import (
    END_FAILURE,
    END_STEP_LIMIT,
    END_SUCCESS,
    Episode,
    PolicyInfo,
    Step,
    episode_id,
    episode_seed,
    task_split,
)

TASK_TYPES = ["pick_and_place_simple", "look_at_obj_in_light", "pick_clean_then_place_in_recep",
              "pick_heat_then_place_in_recep", "pick_cool_then_place_in_recep", "pick_two_obj_and_place"]


def make_episode(task_index: int, sample_index: int = 0, *, run_seed: int = 0, style: str = "window",
                 val_fraction: float = 0.2, steps: int | None = None, success: bool | None = None,
                 system: bool = True, invalid_at: int | None = None) -> Episode:
    """A deterministic episode of `steps` turns with a windowed or growing-chat prompt."""
    tt = TASK_TYPES[task_index % len(TASK_TYPES)]
    task_id = f"json_2.1.1/train/{tt}-Apple-None-Fridge-{task_index}/trial_T{task_index:04d}"
    rng = random.Random(f"{task_id}{sample_index}{run_seed}")
    n = steps if steps is not None else rng.randint(2, 9)
    won = success if success is not None else rng.random() < 0.6
    messages = [{"role": "system", "content": "You are an expert agent in a household."}] if system else []
    ep = Episode(
        episode_id=episode_id("alfworld", task_id, run_seed, sample_index), env="alfworld", task_id=task_id,
        task_type=tt, goal=f"put a clean apple {task_index} in fridge", seed=episode_seed(run_seed, task_id, sample_index),
        run_seed=run_seed, sample_index=sample_index, split=task_split(task_id, val_fraction), game_split="builtin",
        policy=PolicyInfo("expert", "alfworld-planner", "{}"), prompt_style=style, messages=messages,
        started_at=1_700_000_000.0, duration_s=0.5, versions=json.dumps({"agent_sft": "test"}),
    )
    for t in range(n):
        obs = f"You arrive at location {t}. You see a drawer {t} and an apple {t}."
        action = f"go to drawer {t}"
        response = f"<think></think><action>{action}</action>"
        valid = invalid_at != t
        if style == "chat":
            messages.append({"role": "user", "content": obs if t else f"Your task: {ep.goal}\n{obs}"})
            start, end = (1 if system else 0), len(messages)
        else:
            messages.append({"role": "user", "content": f"Task: {ep.goal}\nStep {t}\nObservation: {obs}"})
            start, end = len(messages) - 1, len(messages)
        messages.append({"role": "assistant", "content": response})
        last = t == n - 1
        ep.steps.append(Step(index=t, observation=obs, prompt_start=start, prompt_end=end, response=response,
                             action=action if valid else "", valid=valid,
                             invalid_reason="" if valid else "not admissible: 'fly'",
                             reward=1.0 if (last and won) else 0.0, done=last,
                             info=json.dumps({"admissible_actions": [action, "look"], "won": last and won}),
                             prompt_tokens=40 + t, completion_tokens=12))
    ep.success = won
    ep.end_reason = END_SUCCESS if won else (END_STEP_LIMIT if n >= 9 else END_FAILURE)
    return ep


@pytest.fixture
def episodes():
    return [make_episode(i, s) for i in range(12) for s in range(2)]
