"""The ALFWorld env on the real engine, its built-in games, the expert policy and the game generator."""

import json
import logging
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("alfworld", reason="needs the alfworld package (pip install 'agent-sft[alfworld]')")

from agent_sft.envs import make, registered  # noqa: E402
from agent_sft.envs.alfworld import TASK_TYPES, AlfworldEnv, normalize_task_types  # noqa: E402
from agent_sft.policies.expert import ExpertPolicy  # noqa: E402

pytestmark = pytest.mark.alfworld


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("agent_sft_cache")
        mp.setenv("AGENT_SFT_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def env(cache):
    with AlfworldEnv(data_path="builtin", expert="planner") as e:
        yield e


def play(env, task_id, seed=0, policy=None):
    """Play a game with the expert policy; returns (steps, last info, rewards)."""
    policy = policy or ExpertPolicy()
    obs, info = env.reset(seed=seed, options={"task_id": task_id})
    rewards = []
    for _ in range(env.max_steps):
        (c,) = policy.act([[{"role": "user", "content": obs}]], [seed], [info])
        assert not c.error, (task_id, info)
        action = c.text.split("<action>")[1].split("</action>")[0]
        assert action in info["admissible_actions"]
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    return len(rewards), info, rewards


@pytest.mark.parametrize("task_type", list(TASK_TYPES))
def test_planner_expert_wins_each_task_type(env, task_type):
    task = next(t for t in env.tasks() if t.task_type == task_type)
    steps, info, rewards = play(env, task.task_id)
    assert info["won"] is True
    assert rewards[-1] == 1.0 and sum(rewards[:-1]) == 0.0
    assert info["task_type"] == task_type and info["task_id"] == task.task_id
    assert info["game_split"] == "builtin"
    assert 3 <= steps < env.max_steps


def test_builtin_set_covers_every_task_type(env):
    tasks = env.tasks()
    counts = {t: sum(1 for x in tasks if x.task_type == t) for t in TASK_TYPES}
    assert min(counts.values()) >= 12, counts
    ids = [t.task_id for t in tasks]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for t in tasks:
        assert not Path(t.task_id).is_absolute() and "\\" not in t.task_id
        assert t.task_id.startswith("json_2.1.1/train/") and t.game_split == "builtin"
        assert (env.root / t.task_id / "traj_data.json").is_file()
    again = AlfworldEnv(data_path="builtin", task_types=["pick_two", "clean"])
    wanted = ("pick_two_obj", "pick_clean_then_place")
    assert [t.task_id for t in again.tasks()] == [t.task_id for t in tasks if t.task_type in wanted]


def test_reset_with_the_same_seed_is_reproducible(env, cache):
    task = next(t for t in env.tasks() if t.task_type == "pick_clean_then_place")
    obs1, info1 = env.reset(seed=7, options={"task_id": task.task_id})
    env.step(info1["expert_plan"][0])
    obs2, info2 = env.reset(seed=7, options={"task_id": task.task_id})
    assert (obs1, info1) == (obs2, info2)
    assert info1["goal"] and f"Your task is to: {info1['goal']}." in obs1
    assert "clean" in info1["goal"]
    fresh = AlfworldEnv(data_path="builtin", task_types=["clean"], expert=None)
    obs3, info3 = fresh.reset(seed=7, options={"task_id": task.task_id})
    assert obs3 == obs1 and info3 == {k: v for k, v in info1.items() if k not in ("expert_plan", "expert")}
    # Without a task id the seed picks the game.
    assert fresh.reset(seed=3)[1]["task_id"] == fresh.reset(seed=3)[1]["task_id"]


def test_reset_leaves_global_random_and_argv_alone(env):
    argv = list(sys.argv)
    random.seed(123)
    expected = random.random()
    random.seed(123)
    env.reset(seed=1, options={"task_id": env.tasks()[0].task_id})
    assert random.random() == expected
    assert sys.argv == argv


def test_unknown_task_type_and_bad_args_are_clear_errors(cache):
    with pytest.raises(ValueError, match=r"unknown ALFWorld task type 'juggle'.*pick_and_place.*pick_two"):
        AlfworldEnv(data_path="builtin", task_types=["juggle"])
    with pytest.raises(ValueError, match="game_split"):
        AlfworldEnv(data_path="builtin", game_split="test")
    with pytest.raises(ValueError, match="only train games"):
        AlfworldEnv(data_path="builtin", game_split="valid_seen")
    with pytest.raises(ValueError, match="expert"):
        AlfworldEnv(data_path="builtin", expert="oracle")
    with pytest.raises(FileNotFoundError, match="json_2.1.1"):
        AlfworldEnv(data_path=str(cache / "nowhere"))


def test_task_type_aliases():
    assert normalize_task_types(["clean", "heat", "cool", "pick_two", "examine", "look_at_in_light"]) == [
        "pick_clean_then_place", "pick_heat_then_place", "pick_cool_then_place", "pick_two_obj", "look_at_obj_in_light",
    ]
    assert normalize_task_types("pick_and_place_simple") == ["pick_and_place"]
    assert normalize_task_types(None) == list(TASK_TYPES)


def test_unknown_task_id_and_finished_episode(env):
    with pytest.raises(KeyError, match="unknown ALFWorld task_id"):
        env.reset(options={"task_id": "json_2.1.1/train/nope/trial_0"})
    short = AlfworldEnv(data_path="builtin", task_types=["pick_and_place"], max_steps=2, expert=None)
    obs, info = short.reset(seed=0, options={"task_id": short.tasks()[0].task_id})
    assert "expert_plan" not in info and info["admissible_actions"]
    assert short.step("fly to the moon")[0] == "Nothing happens."
    obs, reward, terminated, truncated, info = short.step("look")
    assert (reward, terminated, truncated, info["won"], info["step"]) == (0.0, False, True, False, 2)
    with pytest.raises(RuntimeError, match="reset"):
        short.step("look")


def test_data_path_in_alfworld_layout_plays_those_games(env, tmp_path):
    picks = [next(t for t in env.tasks() if t.task_type == k) for k in ("pick_and_place", "pick_heat_then_place")]
    data = tmp_path / "alfworld_data"
    for i, t in enumerate(picks):
        dst = data / t.task_id
        dst.mkdir(parents=True)
        for name in ("initial_state.pddl", "traj_data.json") + (("game.tw-pddl",) if i == 0 else ()):
            shutil.copy(env.root / t.task_id / name, dst / name)
    (data / "json_2.1.1" / "valid_seen").mkdir()
    real = AlfworldEnv(data_path=data)
    assert [t.task_id for t in real.tasks()] == sorted(t.task_id for t in picks)
    assert {t.game_split for t in real.tasks()} == {"train"}
    for t in real.tasks():
        steps, info, _ = play(real, t.task_id)
        assert info["won"] and info["game_split"] == "train"
    assert not (data / picks[1].task_id / "game.tw-pddl").exists()  # written to the cache, not the data
    assert AlfworldEnv(data_path=data, game_split="valid_seen").tasks() == []


def test_default_data_path_uses_alfworld_data_or_falls_back(cache, tmp_path, monkeypatch, caplog, env):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "empty"))
    with caplog.at_level(logging.WARNING, logger="agent_sft.envs.alfworld"):
        fallback = AlfworldEnv(task_types=["cool"])
    assert fallback.builtin and "built-in game set" in caplog.text
    task = fallback.tasks()[0]
    dst = tmp_path / "data" / task.task_id
    shutil.copytree(env.root / task.task_id, dst)
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "data"))
    real = AlfworldEnv(task_types=["cool"])
    assert not real.builtin and real.tasks()[0].task_id == task.task_id and real.tasks()[0].game_split == "train"


def test_handcoded_expert_is_selectable(cache):
    hc = AlfworldEnv(data_path="builtin", task_types=["pick_and_place"], expert="handcoded")
    steps, info, _ = play(hc, hc.tasks()[0].task_id, policy=ExpertPolicy("handcoded"))
    assert info["won"] and info["expert"] == "handcoded"


def test_a_failing_expert_leaves_the_game_playable(cache, monkeypatch):
    from alfworld.agents.expert import HandCodedAgentFailed, HandCodedTWAgent

    hc = AlfworldEnv(data_path="builtin", task_types=["pick_and_place"], expert="handcoded")
    obs, info = hc.reset(seed=0, options={"task_id": hc.tasks()[0].task_id})
    first = next(a for a in info["admissible_actions"] if a.startswith("go to"))

    def fail(*args, **kwargs):
        raise HandCodedAgentFailed()

    monkeypatch.setattr(HandCodedTWAgent, "act", fail)
    obs, reward, terminated, truncated, info = hc.step(first)
    assert obs.startswith("You arrive at") and info["step"] == 1 and not (terminated or truncated)
    assert info["expert_plan"] == [] and "HandCodedAgentFailed" in info["expert_error"]
    (c,) = ExpertPolicy("handcoded").act([[]], [0], [info])
    assert c.error == "expert has no plan"
    assert hc.step("look")[4]["step"] == 2
    assert "expert_error" not in hc.reset(seed=0, options={"task_id": hc.tasks()[0].task_id})[1]


def test_registry_names_build_the_env(cache):
    assert {"alfworld", "alfworld/AlfredTWEnv"} <= set(registered())
    e = make("alfworld/AlfredTWEnv", data_path="builtin", task_types=["heat"], max_steps=10)
    assert isinstance(e, AlfworldEnv) and {t.task_type for t in e.tasks()} == {"pick_heat_then_place"}
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys, agent_sft.envs; print('alfworld' in sys.modules, 'textworld' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == ["False", "False"]


def test_missing_alfworld_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "alfworld.agents.environment", None)
    with pytest.raises(ImportError, match=r"pip install 'agent-sft\[alfworld\]'"):
        AlfworldEnv(data_path="builtin")


def test_expert_policy_answers_from_the_plan():
    plan = ["go to fridge 1", "open fridge 1", "take apple 1 from fridge 1"]
    conv = [{"role": "user", "content": "..."}]
    a, b, c = ExpertPolicy().act([conv] * 3, [0, 1, 2], [{"expert_plan": plan}, {"expert_plan": []}, {}])
    assert a.text == "<think></think><action>go to fridge 1</action>" and not a.error
    assert b.error == c.error == "expert has no plan" and b.finish_reason == "error"
    (t,) = ExpertPolicy(think=True).act([conv], [0], [{"expert_plan": plan}])
    assert t.text == (
        "<think>Plan: go to fridge 1; open fridge 1; take apple 1 from fridge 1</think><action>go to fridge 1</action>"
    )
    info = ExpertPolicy("handcoded", env_name="alfworld").describe()
    assert (info.kind, info.model) == ("expert", "alfworld-handcoded")
    (none,) = ExpertPolicy().act([conv], [0])
    assert none.error == "expert has no plan"


@pytest.mark.slow
def test_generator_makes_solvable_games(tmp_path, cache):
    out = tmp_path / "games"
    proc = subprocess.run(
        [sys.executable, "-m", "agent_sft.envs.alfworld.make_games",
         "--per-type", "1", "--seed", "5", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = sorted(out.glob("json_2.1.1/train/*/*"))
    assert len(trials) == 6
    for trial in trials:
        traj = json.loads((trial / "traj_data.json").read_text())
        assert traj["walkthrough"] and (trial / "initial_state.pddl").is_file() and (trial / "game.tw-pddl").is_file()
    gen = AlfworldEnv(data_path=out)
    assert sorted(t.task_type for t in gen.tasks()) == sorted(TASK_TYPES)
    task = gen.tasks()[0]
    steps, info, _ = play(gen, task.task_id)
    assert info["won"]
