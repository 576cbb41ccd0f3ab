"""The episode step machine on its own: the policy's answers and the env's replies handed in by hand, no
env, no pool, no thread."""

from __future__ import annotations

import json

from agent_sft.envs import TaskSpec
from agent_sft.policies.base import Completion
from agent_sft.prompts import PromptTemplate
from agent_sft.records import END_ERROR, END_STEP_LIMIT, END_SUCCESS, PolicyInfo, turn_seed
from agent_sft.rollout.episode import ASK, DONE, STEP, EpisodeMachine, EpisodeSetup
from agent_sft.rollout.pools import Reply
from agent_sft.rollout.tasks import EpisodeTask

ACTIONS = ["go north", "go south"]


def machine(max_steps: int = 5) -> EpisodeMachine:
    setup = EpisodeSetup(
        env="maze",
        template=PromptTemplate(first="{task_description}\n{admissible_actions}", step="{current_observation}\n{admissible_actions}"),
        max_steps=max_steps,
        episode_keys=frozenset({"goal"}),
        policy_info=PolicyInfo(kind="expert", model="maze-expert"),
        versions="{}",
        run_seed=7,
    )
    task = EpisodeTask(TaskSpec("maze/1", "walk"), 0, "ep-1", 1234, "train")
    m = EpisodeMachine(setup, task)
    assert m.reset_request == ("reset", (1234, {"task_id": "maze/1"}))
    assert m.reset(Reply(True, ("a hall", {"goal": "find the exit", "admissible_actions": ACTIONS}))).kind == ASK
    return m


def answer(action: str) -> Completion:
    return Completion(f"<think>walk</think><action>{action}</action>", prompt_tokens=10, completion_tokens=5, finish_reason="stop")


def env_step(obs: str, *, won: bool = False, terminated: bool = False, truncated: bool = False) -> Reply:
    info = {"won": won, "admissible_actions": ACTIONS, "goal": "x"}
    return Reply(True, (obs, float(won), terminated or won, truncated, info))


def test_a_valid_action_is_sent_to_the_env_and_recorded():
    m = machine()
    prompt, seed, info = m.ask()
    assert seed == turn_seed(1234, 0) and info["admissible_actions"] == ACTIONS
    assert "find the exit" in prompt[-1]["content"]
    nxt = m.answered(answer("Go North"), 0.5)
    assert (nxt.kind, nxt.action, nxt.request) == (STEP, "go north", ("step", ("go north",)))
    assert m.stepped(env_step("a corridor")).kind == ASK
    (step,) = m.episode.steps
    assert (step.action, step.valid, step.invalid_reason, step.observation, step.done) == ("go north", True, "", "a hall", False)
    assert "goal" not in json.loads(step.info)  # an episode key stays out of the step's info
    assert m.episode.goal == "find the exit"


def test_an_invalid_action_is_recorded_with_its_reason():
    m = machine()
    m.ask()
    nxt = m.answered(answer("fly"), 0.1)
    assert nxt.kind == STEP and nxt.action == "fly"  # the env still receives it, as verl-agent sends it
    assert m.stepped(env_step("still the hall")).kind == ASK
    step = m.episode.steps[0]
    assert (step.valid, step.invalid_reason) == (False, "not admissible: 'fly'")


def test_the_step_budget_ends_the_episode_as_a_step_limit():
    m = machine(max_steps=2)
    for k in range(2):
        assert m.ask()[1] == turn_seed(1234, k)
        assert m.answered(answer("go south"), 0.1).kind == STEP
        nxt = m.stepped(env_step(f"room {k}", truncated=k == 1))  # as envs.TimeLimit answers the budget's step
    assert nxt.kind == DONE and nxt.env_error == ""
    ep = m.episode
    assert (ep.end_reason, ep.success, len(ep.steps)) == (END_STEP_LIMIT, False, 2)
    assert json.loads(ep.steps[-1].info)["final_observation"] == "room 1"


def test_a_win_ends_the_episode_as_a_success():
    m = machine()
    m.ask()
    m.answered(answer("go north"), 0.1)
    nxt = m.stepped(env_step("the exit", won=True))
    assert nxt.kind == DONE
    ep = m.episode
    assert (ep.end_reason, ep.success, ep.final_reward, ep.steps[-1].done) == (END_SUCCESS, True, 1.0, True)


def test_env_and_policy_errors_end_the_episode():
    m = machine()
    m.ask()
    m.answered(answer("go north"), 0.1)
    nxt = m.stepped(Reply(False, error="Traceback: boom"))
    assert (nxt.kind, nxt.env_error) == (DONE, "env step failed: Traceback: boom")
    assert m.episode.end_reason == END_ERROR and json.loads(m.episode.steps[0].info)["env_error"] is True
    m = machine()
    m.ask()
    nxt = m.answered(Completion("", error="HTTP 500"), 0.1)
    assert (nxt.kind, nxt.env_error) == (DONE, "")  # not the env's fault: its health is not charged
    assert (m.episode.end_reason, m.episode.error, m.episode.steps) == (END_ERROR, "policy error: HTTP 500", [])
