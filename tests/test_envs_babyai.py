"""The BabyAI env on the real minigrid engine: the bot expert, the text view, actions, seeds, options,
and an expert collection end to end."""

import json
import subprocess
import sys

import pytest

import agent_sft
from agent_sft.config import ConfigError
from agent_sft.envs import make, registered, spec
from agent_sft.envs.babyai import DEFAULT_LEVELS, BabyAIEnv, BabyAIOptions
from agent_sft.policies.expert import ExpertPolicy

pytestmark = pytest.mark.envs

ACTIONS = ["turn left", "turn right", "move forward", "pick up", "drop", "toggle", "done"]


@pytest.fixture(scope="module")
def env():
    with BabyAIEnv(seeds_per_level=2, expert="bot") as e:
        yield e


def play(env, task_id, seed=0):
    """Play a task with the expert policy; returns (actions, rewards, last info)."""
    policy = ExpertPolicy("bot", env_name="babyai")
    obs, info = env.reset(seed=seed, options={"task_id": task_id})
    actions, rewards = [], []
    for _ in range(env.max_steps):
        (c,) = policy.act([[{"role": "user", "content": obs}]], [seed], [info])
        assert not c.error, (task_id, info)
        action = c.text.split("<action>")[1].split("</action>")[0]
        assert action in info["admissible_actions"]
        obs, reward, terminated, truncated, info = env.step(action)
        actions.append(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    return actions, rewards, info


@pytest.mark.parametrize("level", DEFAULT_LEVELS)
def test_bot_wins_the_seeded_tasks_of_every_default_level(env, level):
    tasks = [t for t in env.tasks() if t.extra["level"] == level]
    assert [t.task_id for t in tasks] == [f"babyai/{level}/0000", f"babyai/{level}/0001"]
    for task in tasks:
        actions, rewards, info = play(env, task.task_id)
        assert info["won"] is True and info["task_id"] == task.task_id and info["game_split"] == "seeded"
        assert info["task_type"] == level.split("-")[1] and info["step"] == len(actions) < env.max_steps
        # minigrid's reward, once, at success: 1 - 0.9 * steps / the level's own step limit
        assert sum(rewards[:-1]) == 0.0
        assert rewards[-1] == pytest.approx(1 - 0.9 * len(actions) / env._env.max_steps)
        assert info["expert_plan"] == []


def test_view_describes_a_known_layout(env):
    # BabyAI-GoToRedBall-v0 seed 0: the agent at (6, 5) of the 8x8 room, facing west (-x), so its
    # right is north (-y); the red ball at (2, 2), the walls at x=0 and y=7.
    task = "babyai/BabyAI-GoToRedBall-v0/0000"
    obs, info = env.reset(options={"task_id": task})
    assert obs.splitlines()[:4] == [
        "Mission: go to the red ball.",
        "You are facing west and carrying nothing.",
        "In front of you: an empty cell.",
        "You see:",
    ]
    assert obs.splitlines()[4:] == [
        "- a yellow key 1 step forward and 1 step left",  # (5, 6)
        "- a grey ball 1 step forward and 1 step right",  # (5, 4)
        "- a purple key 2 steps forward and 1 step left",  # (4, 6)
        "- a blue key 2 steps forward and 1 step right",  # (4, 4)
        "- a red box 2 steps forward and 2 steps right",  # (4, 3)
        "- a green key 4 steps forward and 2 steps right",  # (2, 3)
        "- a grey ball 5 steps forward and 1 step right",  # (1, 4)
        "- a red ball 4 steps forward and 3 steps right",  # (2, 2)
        "- a wall 6 steps forward",  # x = 0
        "- a wall 2 steps left",  # y = 7
    ]
    assert info["goal"] == "go to the red ball" and info["admissible_actions"] == ACTIONS
    assert info["expert_plan"] == ["move forward"]


def test_view_tells_doors_what_is_carried_and_what_is_in_front(env):
    # BabyAI-UnlockLocal-v0 seed 0: a locked purple door at (7, 8), its key at (9, 13), the agent at
    # (12, 13) facing east. The bot's own route: fetch the key, walk to the door, open it.
    unlock = BabyAIEnv(levels=["UnlockLocal"], seeds_per_level=1)
    obs, info = unlock.reset(options={"task_id": "babyai/BabyAI-UnlockLocal-v0/0000"})
    assert "You are facing east and carrying nothing." in obs and "- a wall 1 step right" in obs
    views = [obs]
    while True:
        obs, reward, terminated, truncated, info = unlock.step(info["expert_plan"][0])
        views.append(obs)
        if terminated or truncated:
            break
    assert "In front of you: a purple key.\nYou see:\n- a purple key 1 step forward" in views[4]
    assert "- a locked purple door 5 steps forward and 3 steps left" in views[5]  # from (10, 13) facing north
    assert "You are facing west and carrying a purple key." in views[7]  # after "pick up"
    assert "In front of you: a wall.\nYou see:\n- a wall 1 step forward" in views[9]
    assert "In front of you: an open purple door." in views[-1] and info["won"] and terminated
    assert sum("locked purple door" in v for v in views) >= 5


def test_invalid_action_changes_nothing_and_counts_a_step():
    short = BabyAIEnv(levels=["GoToRedBall"], seeds_per_level=1, max_steps=3)
    obs, info = short.reset(options={"task_id": "babyai/BabyAI-GoToRedBall-v0/0000"})
    bad, reward, terminated, truncated, info2 = short.step("jump")
    assert bad.startswith("'jump' is not an action here; nothing happens. The actions are: turn left, turn right")
    assert bad.endswith(obs) and (reward, terminated, truncated) == (0.0, False, False)
    assert "jump" not in info2["admissible_actions"] and info2["step"] == 1
    assert info2["expert_plan"] == info["expert_plan"] == ["move forward"]
    assert short._env.step_count == 0  # the engine never saw it
    moved, *_ = short.step("  Move   FORWARD ")  # spelled loosely, still the action
    assert moved != obs and short._env.step_count == 1
    obs, reward, terminated, truncated, info = short.step("done")
    assert (reward, terminated, truncated, info["won"], info["step"]) == (0.0, False, True, False, 3)
    with pytest.raises(RuntimeError, match="reset"):
        short.step("turn left")


def test_same_task_same_observations_whatever_the_seed(env):
    task = "babyai/BabyAI-PutNextLocal-v0/0001"
    first = play(env, task, seed=1)
    views = [env.reset(seed=1, options={"task_id": task})[0]]
    views += [env.step(a)[0] for a in first[0]]
    again = play(env, task, seed=99)
    assert again == first
    fresh = BabyAIEnv(levels=["PutNextLocal"], seeds_per_level=2, expert=None)
    obs, info = fresh.reset(seed=5, options={"task_id": task})
    assert obs == views[0] and "expert_plan" not in info and "expert" not in info
    assert [fresh.step(a)[0] for a in first[0]] == views[1:]
    # Without a task id the seed picks the task.
    assert fresh.reset(seed=3)[1]["task_id"] == fresh.reset(seed=3)[1]["task_id"]


def test_level_generation_prints_nothing(capfd):
    # Seeds 4 and 8 of PutNextLocal go through BabyAI's rejection sampling, which prints to stdout.
    e = BabyAIEnv(levels=["PutNextLocal"], seeds_per_level=10, expert=None)
    for t in e.tasks():
        e.reset(options={"task_id": t.task_id})
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_tasks_options_and_filters():
    e = BabyAIEnv(levels=["GoToLocal", "BabyAI-OpenDoor-v0"], seeds_per_level=3, seed_offset=7, expert=None)
    assert [t.task_id for t in e.tasks()] == [
        f"babyai/BabyAI-{lvl}-v0/{s:04d}" for lvl in ("GoToLocal", "OpenDoor") for s in (7, 8, 9)
    ]
    assert {t.task_type for t in e.tasks()} == {"GoToLocal", "OpenDoor"}
    assert {t.game_split for t in e.tasks()} == {"seeded"}
    only = BabyAIEnv(levels=["GoToLocal", "OpenDoor"], task_types=["opendoor"], expert=None)
    assert {t.task_type for t in only.tasks()} == {"OpenDoor"} and len(only.tasks()) == 10
    assert len(BabyAIEnv(expert=None).tasks()) == 10 * len(DEFAULT_LEVELS)
    with pytest.raises(ValueError, match="did you mean BabyAI-GoToRedBall-v0"):
        BabyAIEnv(levels=["GoToRedBal"])
    with pytest.raises(ValueError, match="unknown BabyAI task type 'PickupLoc'"):
        BabyAIEnv(levels=["GoToLocal"], task_types=["PickupLoc"])
    with pytest.raises(ValueError, match="expert"):
        BabyAIEnv(expert="oracle")
    with pytest.raises(KeyError, match="unknown BabyAI task_id"):
        e.reset(options={"task_id": "babyai/BabyAI-GoToLocal-v0/0000"})

    opts = BabyAIOptions(levels=["GoToRedBall", "BabyAI-GoToObjS6-v1"], task_types=["GoToObjS6"])
    assert opts.kwargs() == {"levels": ["BabyAI-GoToRedBall-v0", "BabyAI-GoToObjS6-v1"], "seeds_per_level": 10,
                             "seed_offset": 0, "task_types": ["GoToObjS6"]}
    s = spec("babyai")
    assert s.fingerprint(opts) == {}  # every option only selects tasks: the task id decides the episode
    for values, message in (
        ({"levels": ["Go To Red Ball"]}, r"env.babyai.levels: 'Go To Red Ball' is not a BabyAI level id"),
        ({"seeds_per_level": 0}, "env.babyai.seeds_per_level: must be at least 1"),
        ({"seed_offset": -1}, "env.babyai.seed_offset"),
        ({"task_types": ["Pickup"]}, r"env.babyai.task_types: unknown BabyAI task type 'Pickup'"),
    ):
        with pytest.raises(ConfigError, match=message):
            s.build_options(values)


def test_registry_builds_the_env_and_importing_stays_light():
    assert "babyai" in registered()
    s = spec("babyai")
    assert s.default_expert() == "bot" and s.expert_model("bot") == "babyai-bot" and s.extra == "babyai"
    e = make("babyai", levels=["OpenDoor"], seeds_per_level=1, max_steps=10, expert=None)
    assert isinstance(e, BabyAIEnv) and e.max_steps == 10 and len(e.tasks()) == 1
    code = "import sys, agent_sft.envs; print(*(m in sys.modules for m in ('minigrid', 'gymnasium', 'pygame')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
    quiet = "from agent_sft.envs.babyai import BabyAIEnv; BabyAIEnv(levels=['GoToRedBall'], seeds_per_level=1)"
    out = subprocess.run([sys.executable, "-c", quiet], capture_output=True, text=True, check=True)
    assert out.stdout == "" and out.stderr == ""  # no pygame banner, no window


def test_missing_minigrid_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "minigrid.utils.baby_ai_bot", None)
    with pytest.raises(ImportError, match=r"pip install 'agent-sft\[babyai\]'"):
        BabyAIEnv()


def test_bot_advises_an_agent_that_does_not_follow_it():
    e = BabyAIEnv(levels=["GoToLocal"], seeds_per_level=1)
    obs, info = e.reset(options={"task_id": "babyai/BabyAI-GoToLocal-v0/0000"})
    for action in ("turn left", "turn left", "drop", "move forward"):
        obs, reward, terminated, truncated, info = e.step(action)
        if terminated:
            break
    steps = 4
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = e.step(info["expert_plan"][0])
        steps += 1
    assert info["won"] and "expert_error" not in info and steps < e.max_steps


def test_expert_collection_end_to_end(tmp_path):
    def collect(out):
        r = agent_sft.collect([
            "env.env_name=babyai", "env.num_episodes=4", f"output.dir={out}", "policy.type=expert",
            "policy.expert=bot", "env.babyai.levels=[GoToRedBall,UnlockLocal]", "env.babyai.seeds_per_level=2",
            "data.val_batch_size=1",
        ])
        raw = agent_sft.load(str(out), "raw")
        return r, sorted((row for split in raw.values() for row in split), key=lambda row: row["episode_id"])

    r, rows = collect(tmp_path / "a")
    assert r.run["episodes"] == 4 and len(rows) == 4
    assert all(row["success"] and row["end_reason"] == "success" and row["env"] == "babyai" for row in rows)
    assert {row["task_id"] for row in rows} == {
        f"babyai/BabyAI-{lvl}-v0/{s:04d}" for lvl in ("GoToRedBall", "UnlockLocal") for s in (0, 1)
    }
    assert {row["task_type"] for row in rows} == {"GoToRedBall", "UnlockLocal"}
    for row in rows:
        assert json.loads(row["extra"])["level"] in ("BabyAI-GoToRedBall-v0", "BabyAI-UnlockLocal-v0")
        assert row["goal"] in ("go to the red ball", "open the door")
        assert all(step["valid"] for step in row["steps"])
        assert json.loads(row["steps"][-1]["info"])["won"] is True
    sft = agent_sft.load_sft(str(tmp_path / "a"))
    samples = [x for split in sft.values() for x in split]
    assert samples and all(x["messages"][-1]["content"].startswith("<think></think><action>") for x in samples)
    assert any("BabyAI grid world" in m["content"] for x in samples for m in x["messages"])

    def stable(rows):
        out = []
        for row in rows:
            row = {k: v for k, v in row.items() if k not in ("started_at", "duration_s")}
            row["steps"] = [{k: v for k, v in s.items() if k != "latency_s"} for s in row["steps"]]
            out.append(row)
        return out

    assert stable(collect(tmp_path / "b")[1]) == stable(rows)
