"""The `http` env on AgentGym's servers: each protocol played end to end against a loopback fake of that
server (tests/agentgym_servers.py, wrapping a real env of agent-sft), and the errors a user meets."""

import json
import socket

import httpx
import pytest
from agentgym_servers import SERVERS

import agent_sft
from agent_sft.config import ConfigError
from agent_sft.envs.http.agentgym import ADAPTERS, BABYAI_LEVELS, clean_action, make_adapter
from agent_sft.envs.http.client import ServerError
from agent_sft.envs.http.env import HttpEnv
from agent_sft.policies.base import Completion
from agent_sft.records import PolicyInfo
from agent_sft.rollout import policy as run_policy

pytestmark = pytest.mark.envs


@pytest.fixture(scope="session")
def fakes():
    """protocol -> (fake, url): the five fakes, serving until the session ends (their envs load lazily)."""
    made = {name: cls() for name, cls in SERVERS.items()}
    served = {name: fake.serve() for name, fake in made.items()}
    yield {name: (fake, served[name].url) for name, fake in made.items()}
    for s in served.values():
        s.stop()


class ScriptedPolicy:
    """Plays the wrapped env's plan (which the fake exposes, AgentGym servers giving none) as AgentGym's
    clients send actions; `script[data_idx]` replaces it by actions per step."""

    def __init__(self, fake, protocol: str, script: dict | None = None):
        self.fake, self.protocol, self.script = fake, protocol, script or {}

    def act(self, conversations, seeds, infos=None):
        out = []
        for info in infos:
            idx, step = int(info["task_id"].rsplit("/", 1)[1]), info["step"]
            if step < len(self.script.get(idx, [])):
                action = self.script[idx][step]
            elif info.get("action_patterns"):  # WebShop's search page
                action = f"search[{info['goal'][:40]}]"
            else:
                action = (self.fake.plans.get(idx) or ["look"])[0]
                if self.protocol == "agentgym-webshop":
                    action = f"click[{action}]"
            out.append(Completion(f"<think>follow the plan</think><action>{action}</action>", 5, 3, "stop"))
        return out

    def describe(self):
        return PolicyInfo("scripted", "agentgym-plan")

    def close(self):
        pass


INDICES = {"agentgym-babyai": [0, 1, 2, 40]}  # BabyAI's level 4 (GoToObjS6-v0) is not in minigrid 3


def indices(protocol):
    return INDICES.get(protocol, [0, 1, 2, 3])


def collect(monkeypatch, out, protocol, url, policy, *extra):
    """`agent_sft.collect` into `out` with `policy` (policies are built from the config; this one is the test's),
    and the folder's raw rows by task id."""
    monkeypatch.setattr(run_policy, "make_run_policy", lambda run: policy)
    chosen = ",".join(map(str, indices(protocol)))
    result = agent_sft.collect([
        "env.env_name=http", f"env.http.protocol={protocol}", f"env.http.url={url}", f"env.http.data_indices={chosen}",
        "env.backend=thread", "data.val_batch_size=2", "env.max_steps=20", "env.seed=5", f"output.dir={out}",
        "policy.type=hf", "policy.model=scripted-test-policy", *extra,  # a model policy: AgentGym has no expert
    ])
    raw = agent_sft.load(str(out), "raw")
    rows = sorted((row for split in raw.values() for row in split), key=lambda row: row["task_id"])
    return result, rows


def infos(row):
    return [json.loads(s["info"]) for s in row["steps"]]


# --- without a server ---------------------------------------------------------------------------------


def test_tasks_come_from_the_data_indices_and_babyai_levels_as_agentgym_maps_them():
    for protocol, cls in ADAPTERS.items():
        tasks = make_adapter(protocol, "3,0-1", 50).tasks(None)
        assert [t.task_id for t in tasks] == [f"{protocol}/3", f"{protocol}/0", f"{protocol}/1"]
        assert all(t.game_split == "agentgym" and t.extra["data_idx"] in (0, 1, 3) for t in tasks)
        assert isinstance(make_adapter(protocol), cls)
    babyai = {t.extra["data_idx"]: t for t in make_adapter("agentgym-babyai", "0,1,39,40,81").tasks(None)}
    assert len(BABYAI_LEVELS) == 40
    assert (babyai[0].task_type, babyai[0].extra["level"], babyai[0].extra["layout_seed"]) == (
        "GoToRedBallGrey", "BabyAI-GoToRedBallGrey-v0", 0)
    assert (babyai[1].task_type, babyai[39].task_type) == ("GoToRedBall", "BossLevelNoUnlock")
    assert (babyai[40].task_type, babyai[40].extra["layout_seed"]) == ("GoToRedBallGrey", 1)
    assert (babyai[81].extra["level"], babyai[81].extra["layout_seed"]) == ("BabyAI-GoToRedBall-v0", 2)
    assert make_adapter("agentgym-sciworld", "7").tasks(None)[0].task_type == "sciworld"
    assert clean_action("pickup red-ball 1.") == "pickup redball 1"
    assert clean_action("  craft 1 light_blue_dye using  1 blue orchid ") == "craft 1 lightbluedye using 1 blue orchid"
    with pytest.raises(ValueError, match="unknown AgentGym protocol 'agentgym-webarena'"):
        make_adapter("agentgym-webarena")


def client(url):
    # A new connection per request: uvicorn closes a connection after an HTTP 500 of an uncaught error.
    return httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def test_the_fakes_answer_as_agentgyms_servers_do(fakes):
    """The shapes the adapters rely on, as AgentGym's servers give them (see tests/agentgym_servers.py)."""
    with client(fakes["agentgym-webshop"][1]) as c:
        sid = c.post("/create").json()
        assert isinstance(sid, int) and sid in c.get("/list_envs").json()
        obs, none = c.post("/reset", json={"env_idx": sid, "session_id": 2}).json()
        assert none is None and obs.startswith("WebShop [SEP] Instruction: [SEP] ") and obs.endswith(" [SEP] Search")
        assert c.get("/available_actions", params={"env_idx": sid}).json() == {"has_search_bar": True,
                                                                               "clickables": ["search"]}
        assert c.get("/instruction_text", params={"env_idx": sid}).json().startswith("Instruction: ")
        step = c.post("/step", json={"env_idx": sid, "action": "jump"}).json()
        assert step == {"state": obs, "reward": 0.0, "done": False, "info": None}
        assert c.post("/close", json={"env_idx": sid}).status_code == 404
        assert c.post("/reset", json={"env_idx": sid + 1, "session_id": 0}).status_code == 500
    with client(fakes["agentgym-babyai"][1]) as c:
        sid = c.post("/create").json()["id"]
        assert c.post("/step", json={"id": sid, "action": "turn left"}).json() == {"error": f"{sid}"}  # before reset
        first = c.post("/reset", json={"id": sid, "data_idx": 0}).json()
        assert set(first) == {"observation", "reward", "score", "deleted", "done"}
        assert first["observation"].startswith("Your goal: go to the red ball\n")
        step = c.post("/step", json={"id": sid, "action": "Jump"}).json()
        assert set(step) == {"observation", "reward", "score", "done"}
        assert step["observation"].startswith("The action is not recognized. Please check valid actions.\n"
                                              'Available actions: ["turn left", "turn right", ')
        assert c.post("/close", json={"id": sid}).json() is True and c.post("/close", json={"id": sid}).json() is False
        assert c.post("/step", json={"id": sid, "action": "turn left"}).json() == {"error": f"The id {sid} is not valid."}
    with client(fakes["agentgym-sciworld"][1]) as c:
        sid = c.post("/create").json()["id"]
        first = c.post("/reset", json={"id": sid, "data_idx": 9}).json()
        assert (first["task_name"], first["var_num"], first["score"], first["deleted"]) == ("tw-cooking-l1", 0, 0, False)
        assert c.post("/reset", json={"id": sid, "data_idx": 999}).json() == {"error": "list index out of range"}
        assert c.post("/close", json={"id": sid}).json() is True
        assert c.post("/close", json={"id": sid}).status_code == 500
        assert c.post("/step", json={"id": sid, "action": "look"}).json() == {
            "error": f"The task with environment {sid} has been deleted."}
    with client(fakes["agentgym-textcraft"][1]) as c:
        assert c.post("/create").status_code == 422  # a JSON body is required, even {}
        made = c.post("/create", json={}).json()
        assert set(made) == {"id", "observation", "done", "reward"} and made["observation"].startswith("Crafting commands:\n")
        assert c.get("/commands", params={"id": made["id"]}).status_code == 500
    with client(fakes["agentgym-alfworld"][1]) as c:
        assert c.post("/reset", json={"id": 0, "game": 0, "world_type": "Real"}).json() == {
            "error": 'world_type must be one of "Text", "Embody" and "Hybrid"'}
        assert c.post("/reset", json={"id": 10**6, "game": 0, "world_type": "Text"}).json() == {
            "error": f"The id {10**6} is not valid."}
        assert c.post("/close", json={"id": 0}).status_code == 404


# --- end to end, one protocol at a time ---------------------------------------------------------------

WRONG = {  # data index 1 opens with an action the server refuses, and the episode goes on
    "agentgym-webshop": "click[dance]",
    "agentgym-alfworld": "dance",
    "agentgym-babyai": "dance",
    "agentgym-sciworld": "dance",
    "agentgym-textcraft": "dance",
}


@pytest.mark.parametrize("protocol", [
    "agentgym-babyai", "agentgym-textcraft", "agentgym-webshop", "agentgym-sciworld",
    pytest.param("agentgym-alfworld", marks=pytest.mark.alfworld),
])
def test_every_server_is_played_end_to_end(fakes, monkeypatch, tmp_path, protocol):
    fake, url = fakes[protocol]
    script = {1: [WRONG[protocol]]}
    if protocol == "agentgym-webshop":
        script = {1: ["search[a coin]", "click[dance]"]}
    result, rows = collect(monkeypatch, tmp_path / "a", protocol, url, ScriptedPolicy(fake, protocol, script))
    assert result.run["episodes"] == 4 and result.run["errors"] == 0
    assert [row["task_id"] for row in rows] == [f"{protocol}/{i}" for i in indices(protocol)]
    for row in rows:
        assert row["env"] == protocol and row["game_split"] == "agentgym", row
        assert row["success"] and row["end_reason"] == "success", (row["task_id"], row["error"], row["steps"][-1])
        assert row["goal"] and row["policy"]["kind"] == "scripted"
        assert json.loads(row["extra"])["data_idx"] == int(row["task_id"].rsplit("/", 1)[1])
        last = infos(row)[-1]
        assert last["won"] is True and "final_observation" in last
    wrong = rows[1]["steps"][len(script[1]) - 1]
    assert not wrong["valid"] and wrong["invalid_reason"]
    assert all(s["valid"] for row in rows for s in row["steps"] if s is not wrong)
    rewards = [[s["reward"] for s in row["steps"]] for row in rows]
    if protocol == "agentgym-babyai":
        # BabyAI's reward is discounted by steps; its running score is what AgentGym's client reports.
        assert rows[0]["task_type"] == "GoToRedBallGrey" and rows[1]["task_type"] == "GoToRedBall"
        assert rows[0]["goal"] == "go to the red ball"
        assert all(0.5 < r[-1] < 1 and sum(r) == r[-1] for r in rewards)
        assert all(infos(row)[-1]["score"] == row["steps"][-1]["reward"] for row in rows)
        assert "check available actions" in json.loads(rows[0]["steps"][0]["info"])["admissible_actions"]
        assert wrong["invalid_reason"] == "not admissible: 'dance'"
        assert "The action is not recognized" in rows[1]["steps"][1]["observation"]
    elif protocol == "agentgym-sciworld":
        assert all(sum(r) == 100 and infos(row)[-1]["score"] == 100 for r, row in zip(rewards, rows))
        assert wrong["invalid_reason"] == "rejected by the env: No known action matches that input."
        assert infos(rows[0])[0]["task_name"] == "tw-coin_collector-l1" and infos(rows[1])[0]["var_num"] == 1
    elif protocol == "agentgym-textcraft":
        assert all(r[-1] == 1.0 and sum(r) == 1.0 for r in rewards)
        assert wrong["invalid_reason"] == "rejected by the env: Could not execute dance"
        assert rows[0]["goal"].startswith("Cross the frozen lake") and not rows[0]["goal"].endswith(".")
    elif protocol == "agentgym-webshop":
        assert all(r[-1] == 1.0 and sum(r) == 1.0 for r in rewards)
        first = json.loads(rows[0]["steps"][0]["info"])
        assert first["action_patterns"] == [r"search\[.+\]"] and rows[0]["steps"][0]["action"].startswith("search[")
        assert all(a.startswith("click[") for a in json.loads(rows[0]["steps"][1]["info"])["admissible_actions"])
        assert wrong["invalid_reason"] == "not admissible: 'click[dance]'"
    else:
        assert all(r[-1] == 1.0 and sum(r) == 1.0 for r in rewards)
        assert wrong["invalid_reason"] == "not admissible: 'dance'" and rows[1]["steps"][1]["observation"]
        assert infos(rows[0])[0]["alfworld_task"].startswith("look_at_obj_in_light-")
        assert rows[0]["goal"] == "look at bowl under the desklamp"
    sft = agent_sft.load_sft(str(tmp_path / "a"))
    assert sum(len(split) for split in sft.values()) > 0
    if protocol == "agentgym-babyai":  # the same run again: the same rows
        _, again = collect(monkeypatch, tmp_path / "b", protocol, url, ScriptedPolicy(fake, protocol, script))

        def stable(rs):
            return [{k: v for k, v in r.items() if k not in ("started_at", "duration_s")}
                    | {"steps": [{k: v for k, v in s.items() if k != "latency_s"} for s in r["steps"]]} for r in rs]

        assert stable(again) == stable(rows)


def test_sciworld_failure_scores_minus_100_and_is_not_won(fakes, monkeypatch, tmp_path):
    fake, url = fakes["agentgym-sciworld"]
    # Built-in TextWorld game 27 (treasure hunter, level 1): taking the keycard loses it.
    policy = ScriptedPolicy(fake, "agentgym-sciworld", {27: ["go south", "take keycard"]})
    result, rows = collect(monkeypatch, tmp_path / "a", "agentgym-sciworld", url, policy,
                           "env.http.data_indices=27")
    (row,) = rows
    assert row["end_reason"] == "failure" and not row["success"]
    assert [s["reward"] for s in row["steps"]] == [0.0, -100.0]
    assert infos(row)[-1]["score"] == -100 and infos(row)[-1]["won"] is False


# --- errors -------------------------------------------------------------------------------------------


def test_a_server_that_is_down_or_another_stops_the_run_before_anything(fakes, monkeypatch, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    policy = ScriptedPolicy(None, "agentgym-babyai")
    with pytest.raises(ConfigError, match=r"env.http.url: .*does not answer as AgentGym's BabyAI server.*cannot "
                                          r"connect.*Nothing was played"):
        collect(monkeypatch, tmp_path / "down", "agentgym-babyai", down, policy)
    assert not (tmp_path / "down").exists()
    _, babyai = fakes["agentgym-babyai"]
    with pytest.raises(ConfigError, match=r"does not answer as AgentGym's TextCraft server: GET / gave "
                                          r"'This is environment BabyAI.', not 'This is environment TextCraft.'"):
        collect(monkeypatch, tmp_path / "other", "agentgym-textcraft", babyai, policy)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("protocol", ["agentgym-babyai", "agentgym-webshop"])
def test_an_error_reply_mid_episode_ends_that_episode_and_the_run_goes_on(fakes, monkeypatch, tmp_path, protocol):
    fake, url = fakes[protocol]
    fake.faults[2] = 2  # BabyAI answers {"error": ...} with HTTP 200; WebShop fails with HTTP 500
    try:
        result, rows = collect(monkeypatch, tmp_path / "a", protocol, url, ScriptedPolicy(fake, protocol))
    finally:
        fake.faults.clear()
    assert result.run["episodes"] == 4 and result.run["errors"] == 1
    failed = rows[2]
    assert failed["end_reason"] == "error" and len(failed["steps"]) == 2
    if protocol == "agentgym-babyai":
        assert "env step failed" in failed["error"] and "injected fault at step 2 of data index 2" in failed["error"]
    else:
        assert "env step failed" in failed["error"] and "HTTP 500: Internal Server Error" in failed["error"]
    assert all(row["success"] for row in rows if row is not failed)


def test_a_step_after_the_end_is_the_servers_error(fakes):
    fake, url = fakes["agentgym-babyai"]
    env = HttpEnv(url, protocol="agentgym-babyai", data_indices="1", max_steps=3)
    try:
        obs, info = env.reset(options={"task_id": "agentgym-babyai/1"})
        assert info["admissible_actions"][:3] == ["turn left", "turn right", "move forward"]
        for _ in range(3):
            obs, reward, terminated, truncated, info = env.step("turn left")
        assert (reward, terminated, truncated, info["step"], info["won"]) == (0.0, False, True, 3, False)
        env.reset(options={"task_id": "agentgym-babyai/1"})
        while True:
            obs, reward, terminated, truncated, info = env.step(fake.plans[1][0])
            if terminated:
                break
        with pytest.raises(ServerError, match="The task with environment .* has finished"):
            env.step("turn left")
    finally:
        env.close()


def test_agentgym_servers_have_no_expert(fakes, tmp_path):
    _, url = fakes["agentgym-babyai"]
    with pytest.raises(ConfigError, match=r"agentgym-babyai has no expert to replay"):
        agent_sft.collect(["env.env_name=http", "env.http.protocol=agentgym-babyai", f"env.http.url={url}",
                           "policy.type=expert", f"output.dir={tmp_path / 'x'}"])
    assert not (tmp_path / "x").exists()
