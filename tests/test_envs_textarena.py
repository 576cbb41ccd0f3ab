"""The TextArena env on the real engine: its offline single-player games, the solver expert, invalid moves."""

import json
import random
import subprocess
import sys
from collections import deque

import pytest

import agent_sft
from agent_sft.config import ConfigError
from agent_sft.envs import make, spec
from agent_sft.envs.textarena import DEFAULT_GAMES, TASK_TYPES
from agent_sft.envs.textarena.env import TextArenaEnv
from agent_sft.envs.textarena.solvers import hanoi_plan
from agent_sft.policies.expert import NO_PLAN, ExpertPolicy

pytestmark = pytest.mark.envs

# Per game: a move the rules refuse at the start, with the game's own reason.
RULE_BREAKS = {
    "TowerOfHanoi-v0": ("[B C]", "You tried to move a disk from an empty tower."),
    "Sokoban-v0": ("[jump]", "The submitted move does not follow the correct format."),
    "Minesweeper-v0": ("[9 9]", "The specified row and column coordinates are out of bounds."),
    "FrozenLake-v0": ("[up]", "You tried to move up but hit a wall!"),
}


@pytest.fixture(scope="module")
def env():
    with TextArenaEnv(seeds_per_game=3, max_steps=200) as e:
        yield e


def play_expert(env, task_id):
    """Play a task with the expert policy; returns (rewards, last info, observations)."""
    policy = ExpertPolicy("solver", env_name="textarena")
    obs, info = env.reset(options={"task_id": task_id})
    rewards, observations = [], [obs]
    for _ in range(env.max_steps):
        (c,) = policy.act([[{"role": "user", "content": obs}]], [0], [info])
        assert not c.error, (task_id, info)
        obs, reward, terminated, truncated, info = env.step(c.text.split("<action>")[1].split("</action>")[0])
        assert info["action_valid"] and info["invalid_reason"] == ""
        rewards.append(reward)
        observations.append(obs)
        if terminated or truncated:
            break
    return rewards, info, observations


@pytest.mark.parametrize("game, disks", [("TowerOfHanoi-v0", 3), ("TowerOfHanoi-v0-hard", 5)])
def test_solver_wins_tower_of_hanoi_in_the_fewest_moves(game, disks):
    hanoi = TextArenaEnv(games=[game], seeds_per_game=4, max_steps=100)
    for task in hanoi.tasks():
        rewards, info, observations = play_expert(hanoi, task.task_id)
        assert info["won"] is True and info["outcome"] == "Congratulations! You solved the Tower of Hanoi puzzle."
        assert rewards[-1] == 1.0 and sum(rewards[:-1]) == 0.0
        assert len(rewards) == 2**disks - 1 and info["turn"] == len(rewards)
        assert f"C: {list(range(disks, 0, -1))}" in observations[-1]
        assert info["expert_plan"] == [] and info["task_type"] == "TowerOfHanoi" and info["game_split"] == "seeded"


def test_hanoi_plan_is_shortest_from_any_position():
    def bfs(start):
        key = lambda t: tuple(tuple(t[p]) for p in "ABC")  # noqa: E731
        goal = ((), (), (3, 2, 1))
        seen, queue = {key(start)}, deque([(start, 0)])
        while queue:
            towers, d = queue.popleft()
            if key(towers) == goal:
                return d
            for s in "ABC":
                for t in "ABC":
                    if s != t and towers[s] and (not towers[t] or towers[t][-1] > towers[s][-1]):
                        nxt = {p: list(v) for p, v in towers.items()}
                        nxt[t].append(nxt[s].pop())
                        if key(nxt) not in seen:
                            seen.add(key(nxt))
                            queue.append((nxt, d + 1))

    for start in ({"A": [3], "B": [2, 1], "C": []}, {"A": [1], "B": [3], "C": [2]}, {"A": [], "B": [3, 2], "C": [1]}):
        plan = hanoi_plan(start)
        assert len(plan) == bfs(start)
        towers = {p: list(v) for p, v in start.items()}
        for move in plan:
            s, t = move[1], move[3]
            assert not towers[t] or towers[t][-1] > towers[s][-1]
            towers[t].append(towers[s].pop())
        assert towers == {"A": [], "B": [], "C": [3, 2, 1]}


@pytest.mark.parametrize("game", ["FrozenLake-v0", "FrozenLake-v0-random", "Sokoban-v0"])
def test_solver_wins_frozenlake_and_sokoban(game):
    e = TextArenaEnv(games=[game], seeds_per_game=3, max_steps=100)
    for task in e.tasks():
        rewards, info, _ = play_expert(e, task.task_id)
        assert info["won"] and rewards[-1] == 1.0, (task.task_id, info)


def test_minesweeper_has_no_expert_plan(env):
    task = next(t for t in env.tasks() if t.task_type == "Minesweeper")
    obs, info = env.reset(options={"task_id": task.task_id})
    assert info["expert_plan"] == [] and info["expert"] == "solver"
    (c,) = ExpertPolicy("solver", env_name="textarena").act([[]], [0], [info])
    assert c.error == NO_PLAN and c.finish_reason == "error"


@pytest.mark.parametrize("game", DEFAULT_GAMES)
def test_each_default_game_judges_valid_and_invalid_moves(env, game):
    task = next(t for t in env.tasks() if t.extra["env_id"] == game)
    obs, info = env.reset(options={"task_id": task.task_id})
    assert info["goal"] and "a move is [" in info["goal"] and obs and "won" in info and info["step"] == 0
    bad, reason = RULE_BREAKS[game]
    obs, reward, terminated, truncated, info = env.step(bad)
    assert info["action_valid"] is False and info["invalid_reason"].startswith(reason)
    assert f"You attempted an invalid move. Reason: {info['invalid_reason']}" in obs
    assert (reward, terminated, truncated, info["won"], info["turn"], info["step"]) == (0.0, False, False, False, 0, 1)
    good = info["expert_plan"][0] if info["expert_plan"] else "[3 3]"
    obs, reward, terminated, truncated, info = env.step(good)
    assert info["action_valid"] is True and info["invalid_reason"] == ""
    assert (reward, terminated, info["turn"]) == (0.0, False, 1) and "invalid" not in obs
    # The games allow one invalid move in a row: the second ends the game, lost.
    assert env.step("[fly]")[4]["action_valid"] is False
    obs, reward, terminated, truncated, info = env.step("[fly]")
    assert terminated and not truncated and info["won"] is False and info["action_valid"] is False
    assert info["outcome"].startswith("Invalid Move: ") and obs.endswith(info["outcome"])
    assert 0.0 <= reward < 1.0 and info["expert_plan"] == []
    with pytest.raises(RuntimeError, match="reset"):
        env.step("[up]")


@pytest.mark.parametrize("game", ["Minesweeper-v0", "Sokoban-v0"])
def test_same_seed_same_observations(game):
    moves = ["[3 3]", "[0 0]", "[7 7]", "[0 7]"] if game == "Minesweeper-v0" else ["[up]", "[left]", "[down]", "[right]"]
    other = TextArenaEnv(games=["FrozenLake-v0"], seeds_per_game=1)

    def episode(seed, meddle):
        e = TextArenaEnv(games=[game], seeds_per_game=1, seed_offset=seed, expert=None)
        out = [e.reset(seed=5, options={"task_id": f"textarena/{game}/{seed}"})]
        for m in moves:
            if meddle:  # other work in the process between steps: another game's reset reseeds the global random
                other.reset(options={"task_id": "textarena/FrozenLake-v0/0"})
                random.random()
            out.append(e.step(m))
            if out[-1][2]:
                break
        return out

    first = episode(2, meddle=False)
    assert first == episode(2, meddle=True)
    assert first != episode(4, meddle=False)


def test_global_random_is_left_alone(env):
    random.seed(123)
    expected = [random.random() for _ in range(3)]
    random.seed(123)
    got = [random.random()]
    env.reset(options={"task_id": "textarena/Minesweeper-v0/1"})
    got.append(random.random())
    env.step("[4 4]")
    got.append(random.random())
    assert got == expected


def test_task_list_and_filters(env):
    ids = [t.task_id for t in env.tasks()]
    assert ids[:3] == ["textarena/TowerOfHanoi-v0/0", "textarena/TowerOfHanoi-v0/1", "textarena/TowerOfHanoi-v0/2"]
    assert len(ids) == len(set(ids)) == 3 * len(DEFAULT_GAMES)
    assert {t.task_type for t in env.tasks()} == set(TASK_TYPES) and {t.game_split for t in env.tasks()} == {"seeded"}
    some = TextArenaEnv(games=["FrozenLake-v0", "Sokoban-v0"], seeds_per_game=2, seed_offset=10, task_types=["sokoban"])
    assert [t.task_id for t in some.tasks()] == ["textarena/Sokoban-v0/10", "textarena/Sokoban-v0/11"]
    assert some.tasks()[0].extra == {"env_id": "Sokoban-v0", "game_seed": 10}
    with pytest.raises(KeyError, match="unknown TextArena task_id"):
        some.reset(options={"task_id": "textarena/FrozenLake-v0/10"})
    with pytest.raises(ValueError, match="unknown TextArena task type 'chess'"):
        TextArenaEnv(task_types=["chess"])
    with pytest.raises(ValueError, match="expert"):
        TextArenaEnv(expert="oracle")
    short = TextArenaEnv(games=["FrozenLake-v0"], seeds_per_game=1, max_steps=1, expert=None)
    obs, info = short.reset(options={"task_id": "textarena/FrozenLake-v0/0"})
    assert "expert_plan" not in info
    obs, reward, terminated, truncated, info = short.step("[down]")
    assert (terminated, truncated, info["won"]) == (False, True, False)


def test_options_are_checked_when_the_config_is_read():
    s = spec("textarena")
    opts = s.build_options({})
    assert opts.games == list(DEFAULT_GAMES) and s.fingerprint(opts)["seeds_per_game"] == 100
    with pytest.raises(ConfigError, match=r"env.textarena.games: 'Wordle-v0' .*NLTK"):
        s.build_options({"games": ["Wordle-v0"]})
    with pytest.raises(ConfigError, match="env.textarena.seeds_per_game"):
        s.build_options({"seeds_per_game": 0})
    with pytest.raises(ConfigError, match="listed twice"):
        s.build_options({"games": ["Sokoban-v0", "Sokoban-v0"]})


def test_spec_and_registry_stay_light():
    s = spec("textarena")
    assert (s.experts, s.shared_process, s.extra, s.packages) == (("solver",), False, "textarena", ("textarena",))
    assert set(s.task_types) == set(TASK_TYPES)
    e = make("textarena", games=["TowerOfHanoi-v0"], seeds_per_game=1)
    assert isinstance(e, TextArenaEnv) and len(e.tasks()) == 1
    out = subprocess.run(
        [sys.executable, "-c", "import sys, agent_sft, agent_sft.envs; print('textarena' in sys.modules, 'nltk' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == ["False", "False"]


def test_default_games_touch_no_network():
    script = """
import socket, nltk
def refuse(*a, **k):
    raise RuntimeError("network touched")
socket.socket.connect = socket.create_connection = socket.getaddrinfo = refuse
nltk.download = refuse
from agent_sft.envs.textarena.env import TextArenaEnv
env = TextArenaEnv(seeds_per_game=1)
for t in env.tasks():
    obs, info = env.reset(options={"task_id": t.task_id})
    env.step(info["expert_plan"][0] if info["expert_plan"] else "[3 3]")
print("ok", len(env.tasks()))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["ok", str(len(DEFAULT_GAMES))], out.stderr[-2000:]


def test_missing_textarena_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "textarena", None)
    with pytest.raises(ImportError, match=r"pip install 'agent-sft\[textarena\]'"):
        TextArenaEnv()


def test_expert_collection_end_to_end(tmp_path):
    def collect(out):
        r = agent_sft.collect([
            "env.env_name=textarena", "env.num_episodes=4", f"output.dir={out}", "policy.type=expert",
            "policy.expert=solver", "env.textarena.games=[TowerOfHanoi-v0]", "env.textarena.seeds_per_game=4",
            "data.val_batch_size=1",
        ])
        raw = agent_sft.load(str(out), "raw")
        return r, list(raw["train"]) + list(raw["validation"])

    r, rows = collect(tmp_path / "a")
    assert r.run["episodes"] == 4 and r.stats["success_rate"] == 1.0
    assert sorted(x["task_id"] for x in rows) == [f"textarena/TowerOfHanoi-v0/{i}" for i in range(4)]
    for row in rows:
        assert row["success"] and row["end_reason"] == "success" and row["episode_length"] == 7
        assert row["policy"]["model"] == "textarena-solver" and row["num_invalid"] == 0
        assert json.loads(row["extra"])["env_id"] == "TowerOfHanoi-v0"
        last = json.loads(row["steps"][-1]["info"])
        assert last["won"] and last["outcome"].startswith("Congratulations")
    sft = agent_sft.load_sft(str(tmp_path / "a"))
    assert len(sft["train"]) + len(sft["validation"]) == 28

    def stable(rows):
        drop = {"started_at", "duration_s"}
        out = []
        for row in sorted(rows, key=lambda x: x["episode_id"]):
            row = {k: v for k, v in row.items() if k not in drop}
            row["steps"] = [{k: v for k, v in s.items() if k != "latency_s"} for s in row["steps"]]
            out.append(row)
        return out

    assert stable(collect(tmp_path / "b")[1]) == stable(rows)
