"""The gymnasium envs: FrozenLake and Taxi built in with their shortest-path experts, and any env id by name."""

from __future__ import annotations

import subprocess
import sys

import pytest

import agent_sft
from agent_sft.config import ConfigError, load_config
from agent_sft.envs import make, registered, spec
from agent_sft.envs.gym import FrozenLakeTextEnv, GymTextEnv, TaxiTextEnv
from agent_sft.policies.expert import ExpertPolicy
from agent_sft.prompts import PromptTemplate

pytestmark = pytest.mark.envs

CLIFF_ACTIONS = ["up", "right", "down", "left"]


def cliff_text(obs):
    """CliffWalking's observation (row * 12 + col) in words: the obs_to_text of these tests."""
    row, col = divmod(int(obs), 12)
    return f"You stand at row {row + 1}, column {col + 1} of the cliff path; the goal is at row 4, column 12."


def play(env, task_id, seed=0):
    """Play a task with the expert policy; returns (rewards, observations, last info, plan at the start)."""
    policy = ExpertPolicy(env.expert, env_name=env.name)
    obs, info = env.reset(seed=seed, options={"task_id": task_id})
    first_plan, rewards, seen = list(info["expert_plan"]), [], [obs]
    for _ in range(env.max_steps):
        (c,) = policy.act([[{"role": "user", "content": obs}]], [seed], [info])
        assert not c.error, (task_id, obs)
        action = c.text.split("<action>")[1].split("</action>")[0]
        assert action in info["admissible_actions"]
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        seen.append(obs)
        if terminated or truncated:
            break
    return rewards, seen, info, first_plan


@pytest.mark.parametrize(
    "env",
    [
        FrozenLakeTextEnv(seeds=20, expert="shortest_path"),
        FrozenLakeTextEnv(map_name="8x8", seeds=20, seed_offset=1000, expert="shortest_path"),
        TaxiTextEnv(seeds=20, expert="shortest_path"),
    ],
    ids=["frozenlake-4x4", "frozenlake-8x8", "taxi"],
)
def test_the_shortest_path_expert_wins_every_seeded_task(env):
    tasks = env.tasks()
    assert len(tasks) == 20 and len({t.task_id for t in tasks}) == 20
    for task in tasks:
        rewards, seen, info, plan = play(env, task.task_id)
        assert info["won"] is True and info["expert_plan"] == [], task.task_id
        assert len(rewards) == len(plan)  # the first plan was followed to the end: no detour
        assert info["task_id"] == task.task_id and info["game_split"] == "seeded"
        if env.name == "taxi":
            assert rewards[-1] == 20.0 and set(rewards[:-1]) == {-1.0}
            assert seen[-1].startswith("You dropped off the passenger at their destination!")
        else:
            assert rewards == [0.0] * (len(rewards) - 1) + [1.0]
            assert "You reached the goal!" in seen[-1] and "on the goal" in seen[-1]


def test_task_ids_types_and_goals():
    fl = FrozenLakeTextEnv(seeds=3, seed_offset=7)
    assert [t.task_id for t in fl.tasks()] == [f"frozenlake/FrozenLake-v1/{s:04d}" for s in (7, 8, 9)]
    assert {(t.task_type, t.game_split) for t in fl.tasks()} == {("FrozenLake-v1", "seeded")}
    obs, info = fl.reset(seed=0, options={"task_id": "frozenlake/FrozenLake-v1/0007"})
    assert info["admissible_actions"] == ["left", "down", "right", "up"] and "expert_plan" not in info
    assert info["goal"] == (
        "Cross the frozen lake from the start S (row 1, column 1) to the goal G (row 4, column 4) "
        "without stepping into a hole H."
    )
    lines = obs.splitlines()
    assert lines[0].startswith("The frozen lake, 4x4 (S: start") and lines[1][0] == "P" and "\x1b" not in obs
    assert lines[-1] == "You are at row 1, column 1; the goal is at row 4, column 4."
    taxi = TaxiTextEnv(seeds=2)
    obs, info = taxi.reset(seed=0, options={"task_id": "taxi/Taxi-v4/0001"})
    assert info["task_type"] == "Taxi-v4" and info["admissible_actions"][-2:] == ["pickup", "dropoff"]
    assert info["goal"].startswith("Pick up the passenger at ") and " and drop them off at " in info["goal"]
    assert "+---------+" in obs and obs.count("T") >= 1 and "The passenger is waiting at " in obs
    with pytest.raises(KeyError, match="unknown taxi task_id"):
        taxi.reset(options={"task_id": "taxi/Taxi-v4/0005"})


def test_random_maps_differ_by_seed_and_fixed_maps_do_not():
    def maps(env):
        return {tuple(env.reset(seed=0, options={"task_id": t.task_id})[0].splitlines()[1:5]) for t in env.tasks()}

    assert len(maps(FrozenLakeTextEnv(seeds=20))) >= 15
    assert len(maps(FrozenLakeTextEnv(seeds=5, random_maps=False))) == 1


def test_same_seed_same_observations():
    slippery = FrozenLakeTextEnv(map_name="8x8", is_slippery=True, seeds=3)
    walk = ["right", "down"] * 6

    def run(env, seed):
        obs, _ = env.reset(seed=seed, options={"task_id": env.tasks()[1].task_id})
        out = [obs]
        for a in walk:
            obs, reward, terminated, truncated, _ = env.step(a)
            out.append(obs)
            if terminated or truncated:
                break
        return out

    first = run(slippery, 5)
    assert run(slippery, 5) == first == run(FrozenLakeTextEnv(map_name="8x8", is_slippery=True, seeds=3), 5)
    assert any("slipped" in o for o in first)
    # the episode seed drives the slips, the task seed the map
    others = [run(slippery, s) for s in range(6, 12)]
    assert any(o != first for o in others) and {o[0] for o in others} == {first[0]}
    rainy = TaxiTextEnv(is_rainy=True, seeds=2, expert="shortest_path")
    a, b = play(rainy, rainy.tasks()[0].task_id, seed=3), play(rainy, rainy.tasks()[0].task_id, seed=3)
    assert a[:3] == b[:3]


def test_invalid_actions_and_truncation():
    env = TaxiTextEnv(seeds=1, max_steps=3)
    obs, info = env.reset(seed=0, options={"task_id": env.tasks()[0].task_id})
    obs2, reward, terminated, truncated, info = env.step("fly away")
    assert obs2.startswith("'fly away' is not an action of this game; the actions are: south, north, east, west")
    assert obs2.endswith(obs.splitlines()[-1]) and reward == 0.0 and not (terminated or truncated)
    assert "fly away" not in info["admissible_actions"] and info["step"] == 1
    assert "no passenger to pick up" in env.step("PICKUP")[0]  # names match loosely, as the parser sends them
    obs, reward, terminated, truncated, info = env.step("dropoff")
    assert (reward, terminated, truncated, info["won"], info["step"]) == (-10.0, False, True, False, 3)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("south")
    fl = FrozenLakeTextEnv(seeds=1, random_maps=False)
    fl.reset(seed=0, options={"task_id": fl.tasks()[0].task_id})
    assert fl.step("up")[0].startswith("You tried to move up, but the edge of the lake stopped you.")
    fl.step("right")
    obs, reward, terminated, truncated, info = fl.step("down")  # gymnasium's 4x4 map has a hole at row 2, column 2
    assert terminated and not info["won"] and reward == 0.0 and "You fell into a hole." in obs


@pytest.mark.parametrize("ref", [f"{__file__}:cliff_text", "test_envs_gym:cliff_text"])
def test_generic_adapter_with_named_actions_and_obs_to_text(ref):
    opts = spec("gymnasium").build_options(
        {"env_id": "CliffWalking-v1", "action_names": CLIFF_ACTIONS, "obs_to_text": ref,
         "success_on_termination": True, "seeds": 3}
    )
    env = make("gymnasium", **opts.kwargs(), max_steps=30, expert="shortest_path")
    assert [t.task_id for t in env.tasks()] == [f"gymnasium/CliffWalking-v1/{s:04d}" for s in range(3)]
    rewards, seen, info, plan = play(env, env.tasks()[2].task_id)
    assert info["won"] and plan == ["up"] + ["right"] * 11 + ["down"] and sum(rewards) == -13
    assert seen[0] == cliff_text(36) and seen[-1] == cliff_text(47)
    assert info["task_type"] == "CliffWalking-v1" and info["goal"].startswith("Play the gymnasium game CliffWalking-v1")
    # without a verdict the env never claims a win, and the expert has nothing to plan for
    plain = GymTextEnv("CliffWalking-v1", action_names=CLIFF_ACTIONS, goal="Reach the goal without falling.", seeds=1)
    obs, info = plain.reset(seed=0, options={"task_id": plain.tasks()[0].task_id})
    assert info["goal"] == "Reach the goal without falling." and "x" in obs and "\x1b" not in obs  # the ansi map
    for a in ["up"] + ["right"] * 11 + ["down"]:
        obs, reward, terminated, truncated, info = plain.step(a)
    assert terminated and info["won"] is False
    with pytest.raises(ValueError, match="set success_reward or success_on_termination"):
        GymTextEnv("CliffWalking-v1", action_names=CLIFF_ACTIONS, seeds=1, expert="shortest_path")
    with pytest.raises(ValueError, match="transition table"):
        GymTextEnv("CartPole-v1", action_names=["push left", "push right"], obs_to_text=ref, success_reward=1,
                   seeds=1, expert="shortest_path")


def test_generic_adapter_knows_the_toy_text_names_and_success():
    env = GymTextEnv("Taxi-v4", seeds=2, expert="shortest_path")  # action names and success reward known
    rewards, seen, info, plan = play(env, "gymnasium/Taxi-v4/0001")
    assert info["won"] and rewards[-1] == 20.0 and "prob" in info  # the engine's scalar info passes through
    assert "+---------+" in seen[0] and "\x1b" not in seen[0]  # the ansi render, colors removed
    colored = GymTextEnv("Taxi-v4", seeds=1, ansi_colors=True)
    assert "\x1b[" in colored.reset(seed=0, options={"task_id": colored.tasks()[0].task_id})[0]


@pytest.mark.parametrize(
    ("values", "key", "message"),
    [
        ({"env_id": "NoSuchGame-v0"}, "env_id", "doesn't exist"),
        ({"env_id": "Taxi-v3"}, "env_id", "deprecated. Please use `Taxi-v4`"),
        ({"env_id": "MountainCarContinuous-v0", "action_names": ["push"]}, "env_id", "Box action space"),
        ({"env_id": "CliffWalking-v1"}, "action_names", r"4 actions \(ids 0..3\): give 4 action names"),
        ({"env_id": "CliffWalking-v1", "action_names": ["up", "right", "down"]}, "action_names", "got 3"),
        ({"env_id": "FrozenLake-v1", "action_names": ["a", "b"]}, "action_names", "give 4 names"),
        ({"action_names": ["Left", "left", "b", "c"]}, "action_names", "same action name"),
        ({"env_id": "Blackjack-v1", "action_names": ["stick", "hit"]}, "obs_to_text", "does not render as text"),
        ({"obs_to_text": "no_such_module_here:f"}, "obs_to_text", "cannot import no_such_module_here"),
        ({"obs_to_text": "json:no_such_function"}, "obs_to_text", "json has no function 'no_such_function'"),
        ({"obs_to_text": "nowhere/obs.py:f"}, "obs_to_text", "no file"),
        ({"obs_to_text": "not a reference"}, "obs_to_text", "is not 'module:function'"),
        ({"env_id": "CliffWalking-v1", "action_names": CLIFF_ACTIONS, "env_kwargs": {"windy": True}},
         "env_kwargs", "unexpected keyword argument 'windy'"),
        ({"env_kwargs": {"render_mode": "human"}}, "env_kwargs", "render_mode is chosen"),
        ({"success_reward": 1, "success_on_termination": True}, "success_on_termination", "either"),
        ({"seeds": 0}, "seeds", ">= 1"),
    ],
)
@pytest.mark.filterwarnings("ignore:.*Taxi-v3 is out of date")
def test_bad_generic_options_are_config_errors(values, key, message):
    with pytest.raises(ConfigError, match=rf"env\.gymnasium\.{key}: .*{message}"):
        spec("gymnasium").build_options(values)


def test_bad_builtin_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"env\.frozenlake\.map_name: '5x5' is not one of 4x4, 8x8"):
        load_config(None, ["env.env_name=frozenlake", "env.frozenlake.map_name=5x5"])
    with pytest.raises(ConfigError, match=r"env\.taxi\.seed_offset: must be a whole number >= 0"):
        agent_sft.collect(["env.env_name=taxi", "env.taxi.seed_offset=-1", f"output.dir={tmp_path / 'x'}"])
    with pytest.raises(ConfigError, match=r"env\.gymnasium\.env_id: .*`Nope` doesn't exist"):
        agent_sft.collect(["env.env_name=gymnasium", "env.env_id=Nope-v0", f"output.dir={tmp_path / 'y'}"])


def test_registered_and_light_to_import():
    assert {"gymnasium", "frozenlake", "taxi"} <= set(registered())
    for name, first in (("gymnasium", "gymnasium_window"), ("frozenlake", "frozenlake_window"), ("taxi", "taxi_chat")):
        s = spec(name)
        assert s.experts == ("shortest_path",) and s.extra == "gymnasium" and s.packages == ("gymnasium",)
        style = first.rsplit("_", 1)[1]
        assert PromptTemplate.builtin(name, style).source == f"builtin:{first}.txt"
    out = subprocess.run(
        [sys.executable, "-c", "import sys, agent_sft, agent_sft.envs; from agent_sft.envs import spec; "
         "spec('gymnasium').build_options({}); spec('taxi').build_options({}); print('gymnasium' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == ["False"]


def _rows(folder):
    raw = agent_sft.load(folder, "raw")
    rows = [r for split in raw.values() for r in split]
    for r in rows:  # timings aside
        for key in ("started_at", "duration_s"):
            r.pop(key)
        for step in r["steps"]:
            step.pop("latency_s")
    return sorted(rows, key=lambda r: r["episode_id"])


@pytest.mark.parametrize("name", ["frozenlake", "taxi"])
def test_expert_collection_end_to_end(name, tmp_path):
    args = [f"env.env_name={name}", "env.num_episodes=4", "policy.type=expert", "policy.expert=shortest_path",
            f"env.{name}.seeds=10"]
    if name == "frozenlake":  # Taxi plays in worker processes (the default backend), FrozenLake in threads
        args.append("env.backend=thread")
    r = agent_sft.collect([*args, f"output.dir={tmp_path / 'a'}"])
    assert r.run["episodes"] == 4 and r.run["errors"] == 0
    rows = _rows(str(tmp_path / "a"))
    assert len(rows) == 4 and all(row["success"] and row["end_reason"] == "success" for row in rows)
    assert {row["env"] for row in rows} == {name} and all(row["task_id"].startswith(f"{name}/") for row in rows)
    assert {row["game_split"] for row in rows} == {"seeded"}
    assert all(row["policy"]["model"] == f"{name}-shortest_path" and row["num_invalid"] == 0 for row in rows)
    sft = agent_sft.load(str(tmp_path / "a"), "sft")
    assert sum(len(s) for s in sft.values()) == sum(row["episode_length"] for row in rows)
    agent_sft.collect([*args, f"output.dir={tmp_path / 'b'}"])
    assert _rows(str(tmp_path / "b")) == rows


def test_generic_collection_from_config_strings(tmp_path):
    agent_sft.collect([
        "env.env_name=gymnasium", "env.gymnasium.env_id=CliffWalking-v1", "env.gymnasium.action_names=[up, right, down, left]",
        f"env.gymnasium.obs_to_text={__file__}:cliff_text", "env.gymnasium.success_on_termination=true",
        "env.gymnasium.seeds=2", "env.max_steps=20", "policy.type=expert", "policy.expert=shortest_path",
        "env.backend=thread", f"output.dir={tmp_path}",
    ])
    rows = _rows(str(tmp_path))
    assert [row["task_id"] for row in rows] and {row["task_id"] for row in rows} <= {
        "gymnasium/CliffWalking-v1/0000", "gymnasium/CliffWalking-v1/0001"}
    assert all(row["success"] and row["episode_length"] == 13 and row["final_reward"] == -13.0 for row in rows)
    assert rows[0]["steps"][0]["observation"] == cliff_text(36)
