"""Episodes for the curation tests (scores, preference pairs): some played by hand in a tiny grid world, with
the rollout's own prompts and parser, and real folders collected on FrozenLake by the expert with failures
injected (wrong turns, answers without tags), so that tasks have both outcomes."""

from __future__ import annotations

import json

import pytest

from agent_sft.dataset.formats import episode_to_row
from agent_sft.policies import Completion
from agent_sft.policies.expert import ExpertPolicy
from agent_sft.prompts import Conversation, PromptTemplate, fallback_action, parse_action
from agent_sft.records import END_FAILURE, END_SUCCESS, Episode, PolicyInfo, Step, episode_id, episode_seed

MOVES = {"north": (0, 1), "south": (0, -1), "east": (1, 0), "west": (-1, 0)}
TEMPLATE = PromptTemplate.from_text(
    "=== first ===\nTask: {task_description}\n{current_observation}\nActions: {admissible_actions}\n"
    "=== step ===\nTask: {task_description}\n{action_history}\nNow: {current_observation}\nActions: {admissible_actions}"
)
SYSTEM = "You walk a grid."


def answer(action: str, thought: str = "") -> str:
    return f"<think>{thought}</think><action>{action}</action>"


def play(sample: int, answers: list[str], won: bool, *, style: str = "window", task: int = 0,
         extra: dict | None = None, end_reason: str | None = None) -> dict:
    """The raw row of an episode of grid task `task` answered with `answers`, built as the rollout builds one.

    The agent moves on a valid step only; the observation is where it stands.
    """
    task_id = f"grid/{task}"
    conv = Conversation(TEMPLATE, style=style, history_length=2, system=SYSTEM, goal=f"reach the exit of grid {task}")
    ep = Episode(
        episode_id=episode_id("grid", task_id, 0, sample), env="grid", task_id=task_id, task_type="walk",
        goal=conv.goal, seed=episode_seed(0, task_id, sample), run_seed=0, sample_index=sample, split="train",
        game_split="builtin", policy=PolicyInfo("hand", "hand"), prompt_style=style,
        extra=json.dumps(extra or {}),
    )
    x = y = 0
    for t, text in enumerate(answers):
        obs = f"You stand at ({x}, {y})."
        start, end = conv.observe(obs, list(MOVES))
        parsed = parse_action(text, list(MOVES))
        conv.respond(obs, text, parsed.action or fallback_action(text))
        last = t == len(answers) - 1
        ep.steps.append(Step(index=t, observation=obs, prompt_start=start, prompt_end=end, response=text,
                             action=parsed.action, valid=parsed.valid, invalid_reason=parsed.reason,
                             reward=1.0 if last and won else 0.0, done=last))
        if parsed.valid:
            x, y = x + MOVES[parsed.action][0], y + MOVES[parsed.action][1]
    ep.messages = conv.messages
    ep.success = won
    ep.end_reason = end_reason or (END_SUCCESS if won else END_FAILURE)
    return episode_to_row(ep)


class FlakyExpert(ExpertPolicy):
    """The expert, but on some turns (by the turn's seed) a wrong admissible move, an answer without tags, or
    one without its <think> block."""

    def __init__(self, cfg, **kwargs):
        super().__init__(**kwargs)

    def act(self, conversations, seeds, infos=None):
        out = super().act(conversations, seeds, infos)
        for i, (seed, info) in enumerate(zip(seeds, infos or [{}] * len(seeds))):
            right = out[i].text
            wrong = [a for a in info.get("admissible_actions") or [] if f"<action>{a}</action>" not in right]
            if seed % 10 < 2 and wrong:
                out[i] = Completion(text=answer(wrong[seed // 10 % len(wrong)], "a wrong turn"), finish_reason="stop")
            elif seed % 10 == 2:
                out[i] = Completion(text="I am lost", finish_reason="stop")
            elif seed % 10 == 3:
                out[i] = Completion(text=right.replace("<think></think>", ""), finish_reason="stop")
        return out


@pytest.fixture(scope="session")
def flaky_folders(tmp_path_factory) -> dict[str, str]:
    """prompt style -> a FrozenLake folder of 20 episodes (5 tasks x 4 samples) by the flaky expert."""
    import agent_sft
    from agent_sft.policies.registry import POLICIES, PolicyEntry

    root = tmp_path_factory.mktemp("flaky")
    expert = POLICIES["expert"]
    POLICIES["expert"] = PolicyEntry(FlakyExpert, needs_model=False)  # the env hands the expert its plan
    try:
        for style in ("window", "chat"):
            agent_sft.collect(["env.env_name=frozenlake", "env.backend=thread", "env.num_episodes=20",
                               "env.samples_per_task=4", "env.max_steps=12", "data.val_batch_size=8",
                               f"prompt.style={style}", f"output.dir={root / style}"])
    finally:
        POLICIES["expert"] = expert
    return {style: str(root / style) for style in ("window", "chat")}


def raw_rows(folder: str) -> list[dict]:
    import agent_sft

    ds = agent_sft.load(folder, "raw")
    return sorted((r for split in ds.values() for r in split), key=lambda r: (r["task_id"], r["sample_index"]))
