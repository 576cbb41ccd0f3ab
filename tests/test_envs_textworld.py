"""The TextWorld env on the real engine: the built-in games and their expert, actions, seeds, user game
folders, bad game files, the game generator, and an expert collection end to end."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading

import pytest
from fixtures_sts import check_episodes

import agent_sft
from agent_sft.config import ConfigError
from agent_sft.envs import make, registered, spec
from agent_sft.envs.textworld import SPEC, TASK_TYPES, TextworldEnv
from agent_sft.envs.textworld.games import GameFileError
from agent_sft.envs.textworld.make_games import make_game, wins_with_walkthrough
from agent_sft.envs.textworld.text import REFUSED
from agent_sft.policies.expert import ExpertPolicy

# TextWorld silences Jericho's notes that its games have no Jericho walkthrough; pytest resets that per test.
pytestmark = [pytest.mark.envs, pytest.mark.filterwarnings("ignore::jericho.UnsupportedGameWarning")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("agent_sft_cache")
        mp.setenv("AGENT_SFT_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def env(cache):
    with TextworldEnv(expert="walkthrough", cache_size=1) as e:
        yield e


def play(env, task_id, seed=0, expert="walkthrough", first=()):
    """Play a game with the expert policy (after the actions `first`); returns (steps, rewards, last info)."""
    policy = ExpertPolicy(expert, env_name="textworld")
    obs, info = env.reset(seed=seed, options={"task_id": task_id})
    rewards = []
    for step in range(env.max_steps):
        if step < len(first):
            action = first[step]
        else:
            (c,) = policy.act([[{"role": "user", "content": obs}]], [seed], [info])
            assert not c.error, (task_id, info)
            action = c.text.split("<action>")[1].split("</action>")[0]
            assert action in info["admissible_actions"], (task_id, action)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    return len(rewards), rewards, info


def copy_game(env, task, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for suffix in (".z8", ".json"):
        shutil.copy(env.root / (task.extra["game"] + suffix), dst / (task.extra["game"] + suffix))
    return dst / (task.extra["game"] + ".z8")


def test_walkthrough_expert_wins_every_builtin_game(env):
    tasks = env.tasks()
    assert len(tasks) == 36
    for task in tasks:
        steps, rewards, info = play(env, task.task_id)
        assert info["won"] is True and not info["lost"], task.task_id
        assert info["task_id"] == task.task_id and info["task_type"] == task.task_type
        assert info["game_split"] == "builtin" and info["step"] == steps < env.max_steps
        # The reward is the game's score change: it adds up to the final score, the game's maximum.
        assert sum(rewards) == info["score"] == info["max_score"] > 0
        assert info["expert_plan"] == []


def test_builtin_task_list_ids_and_types(env):
    tasks = env.tasks()
    ids = [t.task_id for t in tasks]
    assert len(set(ids)) == len(ids) == 36 and ids == sorted(ids)
    assert {t.task_type for t in tasks} == set(TASK_TYPES) == set(SPEC.task_types)
    for t in tasks:
        assert re.fullmatch(rf"textworld/builtin/{t.task_type}-s[123]", t.task_id) and t.game_split == "builtin"
    assert sum(t.task_type == "tw-cooking-l2" for t in tasks) == 3
    picked = TextworldEnv(task_types=["tw-cooking", "tw-simple-l3"], expert=None).tasks()
    assert [t.task_id for t in picked] == [t.task_id for t in tasks if t.task_type.startswith("tw-cooking")
                                            or t.task_type == "tw-simple-l3"]
    with pytest.raises(ValueError, match=r"unknown TextWorld task type 'tw-zork'.*tw-simple-l1"):
        TextworldEnv(task_types=["tw-zork"])
    with pytest.raises(ConfigError, match=r"env\.textworld\.task_types: .*'tw-zork'"):
        SPEC.build_options({"task_types": ["tw-zork"]})
    assert SPEC.build_options({"task_types": ["tw-coin_collector"]}).kwargs() == {
        "games": None, "task_types": ["tw-coin_collector"]}


def test_goal_observations_and_info(env):
    task = next(t for t in env.tasks() if t.task_type == "tw-cooking-l1")
    obs, info = env.reset(seed=0, options={"task_id": task.task_id})
    assert info["goal"].startswith("You are hungry! Let's cook a delicious meal.") and "\n" not in info["goal"]
    assert obs.startswith(info["goal"]) and "-= Kitchen =-" in obs  # no banner, no status line
    assert "$$" not in obs and not obs.rstrip().endswith(">")
    assert info["expert_plan"][0] == "inventory" and set(info["admissible_actions"]) >= {"look", "inventory"}
    assert (info["step"], info["score"], info["won"], info["lost"]) == (0, 0, False, False)
    assert info["max_score"] == 3


def test_invalid_and_refused_actions(env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the interpreter would write save files and transcripts here
    task = next(t for t in env.tasks() if t.task_type == "tw-simple-l1")
    env.reset(seed=0, options={"task_id": task.task_id})
    obs, reward, terminated, truncated, info = env.step("fly to the moon")
    assert obs == "That's not a verb I recognise." and "fly to the moon" not in info["admissible_actions"]
    assert (reward, terminated, truncated, info["step"]) == (0.0, False, False, 1)
    for action in ("save", "restore", "script", "restart", "quit", "look. save", "tw-trace-actions", "look then undo"):
        obs, reward, terminated, truncated, info = env.step(action)
        assert (obs, reward, terminated) == (REFUSED, 0.0, False), action
    assert os.listdir(tmp_path) == []
    # A line break would send the rest as another command: it is one line.
    obs, *_ = env.step("look\nsave")
    assert obs == "You can't see any such thing." and os.listdir(tmp_path) == []
    steps, _, info = play(env, task.task_id)  # the game still plays to a win afterwards
    assert info["won"]


def test_lost_game_ends_the_episode(env):
    task = next(t for t in env.tasks() if t.task_type == "tw-cooking-l1")
    obs, info = env.reset(seed=0, options={"task_id": task.task_id})
    ingredient = next(a for a in info["expert_plan"] if a.startswith("take "))
    env.step(ingredient)
    eat = "eat " + ingredient.split(" from ")[0][len("take "):]
    obs, reward, terminated, truncated, info = env.step(eat)
    assert "*** You lost! ***" in obs
    assert (terminated, truncated, info["won"], info["lost"], info["expert_plan"]) == (True, False, False, True, [])
    with pytest.raises(RuntimeError, match="reset"):
        env.step("look")


def test_max_steps_truncates(cache):
    short = TextworldEnv(task_types=["tw-treasure_hunter-l3"], max_steps=2, expert=None)
    obs, info = short.reset(seed=0, options={"task_id": short.tasks()[0].task_id})
    assert "expert_plan" not in info
    short.step("look")
    obs, reward, terminated, truncated, info = short.step("look")
    assert (terminated, truncated, info["won"], info["step"]) == (False, True, False, 2)


def test_the_expert_replans_after_the_agent_leaves_the_walkthrough(env):
    task = next(t for t in env.tasks() if t.task_type == "tw-cooking-l2")
    obs, info = env.reset(seed=0, options={"task_id": task.task_id})
    walkthrough = info["expert_plan"]
    env.step("look")  # changes nothing in the world: the walkthrough still holds
    assert env.step(walkthrough[0])[4]["expert_plan"] == walkthrough[1:]
    info = env.step(walkthrough[1])[4]
    assert info["expert_plan"] == walkthrough[2:]
    detour = next(a for a in info["admissible_actions"] if a.startswith(("go ", "take ")) and a != walkthrough[2])
    replanned = env.step(detour)[4]["expert_plan"]
    assert replanned and replanned != walkthrough[3:] and replanned[0] in env.step("look")[4]["admissible_actions"]
    steps, _, info = play(env, task.task_id, first=[*walkthrough[:2], detour, "look"])
    assert info["won"] and steps > 4
    # The engine's own winning policy, from every state, wins too.
    with TextworldEnv(task_types=["tw-cooking-l3", "tw-treasure_hunter-l3"], expert="policy") as pol:
        for task in pol.tasks()[::3]:
            steps, _, info = play(pol, task.task_id, expert="policy")
            assert info["won"] and info["expert"] == "policy"


def test_same_seed_same_observations(env, cache):
    task = next(t for t in env.tasks() if t.task_type == "tw-treasure_hunter-l2")

    def run(e):
        obs, info = e.reset(seed=7, options={"task_id": task.task_id})
        out = [(obs, info)]
        for action in ["look", "inventory", *info["expert_plan"][:3]]:
            out.append(e.step(action))
        return out

    first = run(env)
    assert run(env) == first
    with TextworldEnv(task_types=["tw-treasure_hunter"], expert="walkthrough") as other:
        assert run(other) == first
        # Without a task id the seed picks the game.
        assert other.reset(seed=3)[1]["task_id"] == other.reset(seed=3)[1]["task_id"]


def test_two_envs_share_a_process(env, cache):
    """Each game has its own interpreter: envs interleaved, or in threads, play as they do alone."""
    tasks = [t for t in env.tasks() if t.task_type in ("tw-coin_collector-l3", "tw-simple-l2")][::3]
    alone = {t.task_id: play(env, t.task_id) for t in tasks}
    a, b = TextworldEnv(task_types=["tw-coin_collector-l3"]), TextworldEnv(task_types=["tw-simple-l2"])
    results = {}

    def worker(e, task):
        results[task.task_id] = play(e, task.task_id)

    threads = [threading.Thread(target=worker, args=(e, t)) for e, t in zip((a, b), tasks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == alone and SPEC.shared_process


def test_a_user_folder_of_games(env, tmp_path):
    picks = [next(t for t in env.tasks() if t.task_type == k) for k in ("tw-coin_collector-l1", "tw-cooking-l2")]
    copy_game(env, picks[0], tmp_path / "mine")
    copy_game(env, picks[1], tmp_path / "mine" / "kitchen")
    (tmp_path / "mine" / "notes.txt").write_text("not a game")
    user = make("textworld", **SPEC.build_options({"games": str(tmp_path / "mine")}).kwargs())
    assert [(t.task_id, t.task_type, t.game_split) for t in user.tasks()] == [
        ("textworld/kitchen/tw-cooking-l2-s1", "tw-cooking", "custom"),
        ("textworld/tw-coin_collector-l1-s1", "tw-coin_collector", "custom"),
    ]
    for t in user.tasks():
        steps, _, info = play(user, t.task_id)
        assert info["won"] and info["game_split"] == "custom" and info["task_type"] == t.task_type
    assert [t.task_id for t in TextworldEnv(games=tmp_path / "mine", task_types=["tw-cooking"]).tasks()] == [
        "textworld/kitchen/tw-cooking-l2-s1"]
    for name in ("tw-cooking-l2-s1.z8", "tw-cooking-l2-s1.json"):
        one = TextworldEnv(games=tmp_path / "mine" / "kitchen" / name)
        assert [t.task_id for t in one.tasks()] == ["textworld/tw-cooking-l2-s1"]


def test_bad_game_files_are_clear_errors(env, tmp_path):
    task = next(t for t in env.tasks() if t.task_type == "tw-simple-l1")
    good = copy_game(env, task, tmp_path / "ok")
    bad = tmp_path / "bad"
    cases = {
        "truncated": (lambda p: p.write_bytes(good.read_bytes()[:100_000]), "truncated story file"),
        "corrupt": (lambda p: p.write_bytes(good.read_bytes()[:5000] + b"x" + good.read_bytes()[5001:]), "checksum"),
        "random": (lambda p: p.write_bytes(os.urandom(2000)), "not a Z-machine version 8 story file"),
    }
    for name, (write, message) in cases.items():
        folder = bad / name
        folder.mkdir(parents=True)
        story = folder / "game.z8"
        write(story)
        shutil.copy(good.with_suffix(".json"), story.with_suffix(".json"))
        with pytest.raises(GameFileError, match=f"{story}: .*{message}"):
            TextworldEnv(games=folder)
        with pytest.raises(ConfigError, match=f"env.textworld.games: {story}: .*{message}"):
            SPEC.build_options({"games": str(folder)})
    nojson = bad / "nojson"
    nojson.mkdir()
    shutil.copy(good, nojson / "game.z8")
    with pytest.raises(GameFileError, match=r"game\.z8: no game data game\.json next to it"):
        TextworldEnv(games=nojson)
    (nojson / "game.json").write_text("{not json")
    with pytest.raises(GameFileError, match=r"game\.json: unreadable TextWorld game data"):
        TextworldEnv(games=nojson / "game.z8")
    (bad / "glulx").mkdir()
    (bad / "glulx" / "old.ulx").write_bytes(b"Glul")
    with pytest.raises(GameFileError, match=r"old\.ulx: Glulx \(\.ulx\) games cannot be played with TextWorld 1\.7"):
        TextworldEnv(games=bad / "glulx")
    (bad / "empty").mkdir()
    (bad / "empty" / "readme.txt").write_text("")
    with pytest.raises(ConfigError, match=r"env\.textworld\.games: .*empty: no TextWorld games"):
        SPEC.build_options({"games": str(bad / "empty")})
    with pytest.raises(ConfigError, match=r"nowhere: no such game file or folder"):
        SPEC.build_options({"games": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match="unknown TextWorld expert 'oracle'"):
        TextworldEnv(expert="oracle")
    with pytest.raises(KeyError, match="unknown TextWorld task_id"):
        env.reset(options={"task_id": "textworld/builtin/nope"})


def test_generator_makes_a_winnable_game(tmp_path, cache):
    story = make_game("tw-treasure_hunter", ["--level", "2"], 5, tmp_path / "made", "hunt")
    assert sorted(p.name for p in (tmp_path / "made").iterdir()) == ["hunt.json", "hunt.z8"]
    assert wins_with_walkthrough(story) >= 1
    made = TextworldEnv(games=tmp_path / "made")
    (task,) = made.tasks()
    assert (task.task_id, task.task_type) == ("textworld/hunt", "tw-treasure_hunter")
    assert play(made, task.task_id)[2]["won"]


def test_registry_and_light_import(cache):
    assert "textworld" in registered() and spec("textworld") is SPEC
    assert SPEC.default_expert() == "walkthrough" and SPEC.expert_model("walkthrough") == "textworld-walkthrough"
    out = subprocess.run(
        [sys.executable, "-c", "import sys, agent_sft.envs; print('textworld' in sys.modules, 'jericho' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == ["False", "False"]


def test_missing_textworld_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "textworld", None)
    with pytest.raises(ImportError, match=r"pip install 'agent-sft\[textworld\]'"):
        TextworldEnv()


def test_expert_collection_end_to_end(tmp_path, cache):
    def collect(out):
        r = agent_sft.collect([
            "env.env_name=textworld", "env.num_episodes=4", f"output.dir={out}", "policy.type=expert",
            "env.textworld.task_types=[tw-cooking-l1,tw-treasure_hunter]", "data.val_batch_size=1",
        ])
        raw = agent_sft.load(str(out), "raw")
        return r, sorted((row for split in raw.values() for row in split), key=lambda row: row["episode_id"])

    r, rows = collect(tmp_path / "a")
    assert r.run["episodes"] == 4 and len(rows) == 4
    assert all(row["success"] and row["end_reason"] == "success" and row["env"] == "textworld" for row in rows)
    for row in rows:
        assert row["task_id"].startswith("textworld/builtin/tw-") and row["game_split"] == "builtin"
        assert row["task_type"] in ("tw-cooking-l1", "tw-treasure_hunter-l1", "tw-treasure_hunter-l2",
                                    "tw-treasure_hunter-l3")
        assert row["policy"]["model"] == "textworld-walkthrough" and json.loads(row["versions"])["textworld"]
        assert all(step["valid"] for step in row["steps"])
        last = json.loads(row["steps"][-1]["info"])
        assert last["won"] is True and last["score"] == sum(row["rewards"]) > 0
    check_episodes(rows)
    sft = agent_sft.load_sft(str(tmp_path / "a"))
    samples = [x for split in sft.values() for x in split]
    assert samples and all(x["messages"][-1]["content"].startswith("<think></think><action>") for x in samples)
    assert any("text-based adventure game in TextWorld" in m["content"] for x in samples for m in x["messages"])

    def stable(rows):
        out = []
        for row in rows:
            row = {k: v for k, v in row.items() if k not in ("started_at", "duration_s")}
            row["steps"] = [{k: v for k, v in s.items() if k != "latency_s"} for s in row["steps"]]
            out.append(row)
        return out

    assert stable(collect(tmp_path / "b")[1]) == stable(rows)
