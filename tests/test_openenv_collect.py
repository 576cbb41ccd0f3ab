"""The `openenv` env: OpenEnv environments written with OpenEnv's own server classes (tests/openenv_envs),
served by OpenEnv's own server code from its virtualenv (tests/fixtures_openenv.py), collected by agent-sft
speaking OpenEnv's protocol itself: the rows, the provenance, the faults a user meets."""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fixtures_openenv import OpenEnvServer

import agent_sft
from agent_sft.config import ConfigError
from agent_sft.envs.http.client import ServerError
from agent_sft.envs.openenv import prepare
from agent_sft.envs.openenv.env import OpenEnvEnv
from agent_sft.envs.openenv.options import OpenEnvOptions, token_env_for
from agent_sft.envs.openenv.server import BOARD, DESCRIPTIONS
from agent_sft.envs.remote_client import JsonClient
from agent_sft.errors import RunFailedError
from agent_sft.policies.base import Completion
from agent_sft.records import PolicyInfo
from agent_sft.rollout import policy as run_policy

TOKEN = "hf_openenv_test_secret_4242"
TARGETS = {"train": [3, 7, 1, 9, 5], "test": [2, 8, 4]}  # tests/openenv_envs/guess.py's tasks
TIMING = {"started_at", "duration_s"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The guessing game (a bearer token required; a guess of 0 hangs, of 10 gets garbage) and the MCP room
    (3 sessions at most), started together, once for the module."""
    logs = tmp_path_factory.mktemp("openenv")
    made: dict = {}
    specs = {"guess": ("openenv_envs.guess", "--hang-on", "0", "--garbage-on", "10", "--token", TOKEN),
             "room": ("openenv_envs.room", "--max-sessions", "3")}

    def start(name):
        made[name] = OpenEnvServer(*specs[name], log_dir=logs, token=TOKEN if name == "guess" else None)

    threads = [threading.Thread(target=start, args=(n,)) for n in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert set(made) == set(specs), f"an OpenEnv server did not start; logs in {logs}"
        yield made
    finally:
        for s in made.values():
            s.stop()


class Scripted:
    """Plays each task's script (actions by step; `kill` at a step runs it first), then the right answer:
    the guess of the game's target, or taking the key. With `tools`, answers with tool calls."""

    def __init__(self, script=None, tools=False, hooks=None):
        self.script, self.tools, self.hooks = script or {}, tools, hooks or {}

    def act(self, conversations, seeds, infos=None):
        out = []
        for info in infos:
            task, step = info["task_id"], int(info.get("step") or 0)
            hook = self.hooks.pop((task, step), None)
            if hook:
                hook()
            split, _, n = task.partition("/")
            actions = self.script.get(task, [])
            action = actions[step] if step < len(actions) else (
                str(TARGETS[split][int(n)]) if split in TARGETS else "take key")
            if self.tools:
                name, _, arg = action.partition(" ")
                args = json.dumps({"obj": arg} if arg else {})
                out.append(Completion("", 5, 3, "stop", tool_calls=[
                    {"type": "function", "function": {"name": name, "arguments": args}}], content="<think>go</think>"))
            else:
                out.append(Completion(f"<think>play</think><action>{action}</action>", 5, 3, "stop"))
        return out

    def describe(self):
        return PolicyInfo("scripted", "openenv-script")

    def close(self):
        pass


def collect(monkeypatch, out, url, policy, *extra):
    """`agent_sft.collect` into `out` with `policy`, HF_TOKEN set; the raw rows by task id."""
    monkeypatch.setattr(run_policy, "make_run_policy", lambda run: policy)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = agent_sft.collect([
        "env.env_name=openenv", f"env.openenv.url={url}", "env.backend=thread", "env.max_steps=6", "env.seed=5",
        "data.val_batch_size=2", f"output.dir={out}", "policy.type=hf", "policy.model=scripted-test-policy",
        "env.openenv.token_env=HF_TOKEN", *extra])
    raw = agent_sft.load(str(out), "raw")
    return result, {row["task_id"]: row for split in raw.values() for row in split}


def stable(rows):
    return {k: {**{f: v for f, v in r.items() if f not in TIMING},
                "steps": [{f: v for f, v in s.items() if f != "latency_s"} for s in r["steps"]]} for k, r in rows.items()}


def folder_text(folder) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


# --- the text game with a Task API --------------------------------------------------------------------

GUESS_SCRIPT = {
    "train/0": ["5"],  # wrong: "lower", then right
    "train/1": ["11"],  # out of the schema's range: the server's VALIDATION_ERROR, an invalid action
    "train/2": ['{"guess": 1}'],  # the action as a JSON object is right at once
    "train/3": ["nine"],  # not an integer: invalid, never sent
}


def test_a_text_game_is_collected_from_its_task_api_with_provenance_and_no_token(servers, monkeypatch, tmp_path):
    url = servers["guess"].url
    result, rows = collect(monkeypatch, tmp_path / "a", url, Scripted(GUESS_SCRIPT))  # the train split by default
    assert result.run["episodes"] == 5 and result.run["errors"] == 0
    assert sorted(rows) == [f"train/{i}" for i in range(5)]
    for task, row in rows.items():
        assert row["success"] and row["end_reason"] == "success", (task, row["error"], row["steps"])
        assert row["env"] == "openenv" and row["game_split"] == "train"
        assert row["goal"] == "Guess the number between 0 and 10."
        extra = json.loads(row["extra"])
        assert (extra["openenv_env"], extra["openenv_version"], extra["split"]) == ("guess", "0.3.1", "train")
        assert extra["index"] == int(task.split("/")[1]) and len(extra["openenv_tasks_hash"]) == 16
        assert (extra["split_type"], extra["openenv_task_id"]) == ("train", f"train-{extra['index']}")
        assert row["steps"][0]["observation"] == "Guess a number from 0 to 10."
        assert [s["reward"] for s in row["steps"]][-1] == 1.0
    assert len({json.loads(r["extra"])["openenv_tasks_hash"] for r in rows.values()}) == 1
    first = rows["train/0"]["steps"]
    assert [s["action"] for s in first] == ["5", "3"] and first[1]["observation"] == "5 is wrong: guess lower.\nattempts: 1"
    bad = rows["train/1"]["steps"][0]
    assert not bad["valid"] and "guess: Input should be less than or equal to 10" in bad["invalid_reason"]
    assert rows["train/1"]["steps"][1]["valid"] and len(rows["train/1"]["steps"]) == 2
    assert len(rows["train/2"]["steps"]) == 1 and rows["train/2"]["steps"][0]["valid"]
    unread = rows["train/3"]["steps"][0]
    assert not unread["valid"] and "'nine' is not of type integer" in unread["invalid_reason"]
    info = json.loads((tmp_path / "a" / "meta" / "info.json").read_text())
    served = info["config"]["env"]["openenv"]["served"]
    assert served["env"] == "guess" and served["version"] == "0.3.1" and served["tasks"] == 5
    card = (tmp_path / "a" / "README.md").read_text()
    assert "OpenEnv env `guess` version 0.3.1, Task API split(s) played train (train), 5 tasks" in card
    assert served["tasks_hash"] in card
    assert TOKEN.encode() not in folder_text(tmp_path / "a")
    # The same run again: the same rows.
    _, again = collect(monkeypatch, tmp_path / "b", url, Scripted(GUESS_SCRIPT))
    assert stable(again) == stable(rows)


def test_a_success_function_is_given_the_state_and_a_state_that_fails_scores_the_episode_not_won(servers, monkeypatch,
                                                                                                 tmp_path):
    hooks = tmp_path / "won.py"
    hooks.write_text("def won(step, state):\n    return state['solved'] and step['state'] == state\n")
    result, rows = collect(monkeypatch, tmp_path / "a", servers["guess"].url, Scripted(),
                           f"env.openenv.success_fn={hooks}:won")
    assert result.run["episodes"] == 5 and result.run["errors"] == 0
    assert sorted(t for t, r in rows.items() if r["success"]) == [f"train/{i}" for i in range(4)]
    sealed = rows["train/4"]  # the target 5, whose state raises once solved
    assert not sealed["success"] and sealed["end_reason"] != "error" and not sealed["error"]
    why = json.loads(sealed["steps"][-1]["info"])["success_error"]
    assert "could not be read" in why and "EXECUTION_ERROR: the state of a solved five is sealed" in why


def test_a_server_that_is_not_there_or_a_split_it_lacks_stops_the_run_before_anything(servers, monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match=r"env.openenv.url: .*cannot connect.*Nothing was played"):
        collect(monkeypatch, tmp_path / "down", "http://127.0.0.1:9", Scripted())
    with pytest.raises(ConfigError, match=r"has no split 'dev' \(its splits: train \(train\), test \(test\)\)"):
        collect(monkeypatch, tmp_path / "dev", servers["guess"].url, Scripted(), "env.openenv.split=dev")
    assert not (tmp_path / "down").exists() and not (tmp_path / "dev").exists()


def test_an_env_error_a_hang_and_garbage_end_only_their_episode(servers, monkeypatch, tmp_path):
    url = servers["guess"].url
    script = {"test/0": ["6"], "test/1": ["0"], "test/2": ["10"]}  # raises, hangs, answered with garbage
    result, rows = collect(monkeypatch, tmp_path / "a", url, Scripted(script), "env.openenv.split=test",
                           "env.openenv.timeout_s=3", "env.openenv.success_field=state.solved")
    assert result.run["episodes"] == 3 and result.run["errors"] == 3
    assert all(r["end_reason"] == "error" and len(r["steps"]) == 1 for r in rows.values())
    assert "EXECUTION_ERROR: six is cursed" in rows["test/0"]["error"]
    assert "no reply to step within 3 s" in rows["test/1"]["error"]
    assert "the reply to step is not JSON: '<html>502 Bad Gateway</html>'" in rows["test/2"]["error"]
    # A resume plays the error episodes again (on fresh connections) and keeps the rest.
    result, rows = collect(monkeypatch, tmp_path / "a", url, Scripted(), "env.openenv.split=test",
                           "env.openenv.timeout_s=3", "env.openenv.success_field=state.solved")
    assert result.run["episodes"] == 3 and result.run["errors"] == 0
    assert all(r["success"] and r["steps"][0]["action"] == str(TARGETS["test"][int(t[-1])]) for t, r in rows.items())


def test_a_server_killed_mid_run_ends_its_episodes_stops_the_run_and_a_resume_completes(servers, monkeypatch,
                                                                                       tmp_path):
    server = servers["guess"]
    common = ("env.openenv.split=train", "env.openenv.retries=1", "data.val_batch_size=1",
              "env.max_consecutive_errors=2")
    policy = Scripted(hooks={("train/2", 0): server.kill})
    try:
        with pytest.raises(RunFailedError, match=r"2 episodes in a row ended in an env error and none of its "
                                                 r"servers answers \(http://127.0.0.1:\d+: GET .*/health: cannot connect"):
            collect(monkeypatch, tmp_path / "a", server.url, policy, *common)
    finally:
        server.restart()
    rows = {r["task_id"]: r for split in agent_sft.load(str(tmp_path / "a"), "raw").values() for r in split}
    # One episode at a time: those played before the kill are won; the one it hit is an error, its step sent once.
    assert rows["train/2"]["end_reason"] == "error" and len(rows["train/2"]["steps"]) == 1
    assert re.search(r"the connection closed (during|before) step", rows["train/2"]["error"])
    assert sum(r["success"] for r in rows.values()) == 2
    second, rows = collect(monkeypatch, tmp_path / "a", server.url, Scripted(), *common)
    assert second.run["errors"] == 0
    assert sorted(rows) == [f"train/{i}" for i in range(5)] and all(r["success"] for r in rows.values())


def test_a_hub_token_goes_only_to_hub_spaces_unless_a_token_env_is_set_and_never_over_plain_http(monkeypatch,
                                                                                                   tmp_path):
    seen = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization"))
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"detail": "Not Found"}')

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("MY_ENV_TOKEN", "t0ken")
    base = ["env.env_name=openenv", f"env.openenv.url={url}", "policy.type=hf", "policy.model=x"]
    try:
        with pytest.raises(ConfigError, match="Nothing was played"):
            agent_sft.collect([*base, f"output.dir={tmp_path / 'a'}"])
        assert seen and set(seen) == {None}  # HF_TOKEN stays home
        seen.clear()
        with pytest.raises(ConfigError, match="Nothing was played"):
            agent_sft.collect([*base, "env.openenv.token_env=MY_ENV_TOKEN", f"output.dir={tmp_path / 'b'}"])
        assert seen and set(seen) == {"Bearer t0ken"}
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ConfigError, match=r"token_env: a token is not sent over plain http to http://10.1.2.3:8000"):
        agent_sft.collect(["env.env_name=openenv", "env.openenv.url=http://10.1.2.3:8000", "policy.type=hf",
                           "policy.model=x", "env.openenv.token_env=HF_TOKEN", f"output.dir={tmp_path / 'c'}"])
    assert token_env_for("https://user-game.hf.space", None) == "HF_TOKEN"
    assert token_env_for("http://user-game.hf.space", None) is None
    assert token_env_for("https://example.com", None) is None


def test_a_server_is_described_once_per_process_and_refused_once_it_plays_another_version(servers, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    url = servers["guess"].url
    recorded = prepare(OpenEnvOptions(url=[url], token_env="HF_TOKEN"))["served"]
    older = {**recorded, "version": "0.3.0"}  # what the run recorded before the server was upgraded
    envs = [OpenEnvEnv(url, token_env="HF_TOKEN", served=served) for served in (recorded, recorded, older)]
    try:
        assert envs[0].tasks()[0] is envs[1].tasks()[0]  # one description, one copy of every task
        assert envs[1].reset(options={"task_id": "train/0"})[0] == "Guess a number from 0 to 10."
        with pytest.raises(ServerError, match=r"now serves `guess` version 0.3.1 \(tasks fingerprint \w+\), not the "
                                              r"`guess` version 0.3.0 .* this run recorded; its episodes are not played"):
            envs[2].reset(options={"task_id": "train/0"})
        why = OpenEnvOptions(url=[url], token_env="HF_TOKEN", served=older).probe_servers()[url]
        assert "not the `guess` version 0.3.0" in why  # the run's check of its servers: it stops the run
    finally:
        for env in envs:
            env.close()


def test_a_run_plays_what_its_prepare_recorded_not_what_an_earlier_run_of_the_process_saw(servers, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    url = servers["guess"].url
    c = JsonClient(url, 5.0, token_env="HF_TOKEN")
    try:
        DESCRIPTIONS.get(c, None)["version"] = "0.3.0"  # as an earlier run saw the server, before its upgrade
    finally:
        c.close()
    recorded = prepare(OpenEnvOptions(url=[url], token_env="HF_TOKEN"))["served"]
    assert recorded["version"] == "0.3.1"
    env = OpenEnvEnv(url, token_env="HF_TOKEN", served=recorded)
    try:
        assert env.reset(options={"task_id": "train/0"})[0] == "Guess a number from 0 to 10."
    finally:
        env.close()


# --- the MCP-tool env -----------------------------------------------------------------------------------


def test_an_mcp_env_is_played_with_text_actions_and_with_tool_calls(servers, monkeypatch, tmp_path):
    url = servers["room"].url
    script = {"seeds/0": ["look", "take sofa", "fly away"]}
    result, rows = collect(monkeypatch, tmp_path / "text", url, Scripted(script), "env.openenv.seeds=2")
    assert result.run["episodes"] == 2 and result.run["errors"] == 0
    row = rows["seeds/0"]
    assert row["success"] and json.loads(row["extra"])["openenv_env"] == "room" and row["goal"] == "Take the key."
    assert row["steps"][0]["observation"] == "intro: A small room. Find the way out."
    steps = row["steps"]
    assert [s["action"] for s in steps] == ["look", "take sofa", "fly away", "take key"]
    assert [s["valid"] for s in steps] == [True, True, False, True]
    assert steps[1]["observation"] == "You see a key and a lamp."
    assert steps[2]["observation"] == "Error: Error calling tool 'take': there is no sofa here"
    assert "unknown tool 'fly' (tools: look, take)" in steps[2]["invalid_reason"]
    assert [s["reward"] for s in steps] == [0.0, 0.0, 0.0, 1.0]
    # With tool calls, and the user's hooks: the observation's text, and the success rule.
    hooks = tmp_path / "hooks.py"
    hooks.write_text("def text(observation):\n    return 'seen: ' + (observation.get('tool_name') or 'the room')\n\n"
                     "def won(step):\n    return step['observation'].get('tool_name') == 'take' and step['reward'] == 1\n")
    result, rows = collect(monkeypatch, tmp_path / "tools", url, Scripted(script, tools=True),
                           "env.openenv.seeds=2", "prompt.actions=tools", "prompt.style=chat",
                           f"env.openenv.obs_to_text={hooks}:text", f"env.openenv.success_fn={hooks}:won")
    assert result.run["episodes"] == 2 and result.run["errors"] == 0 and all(r["success"] for r in rows.values())
    assert [s["observation"] for s in rows["seeds/1"]["steps"]] == ["seen: the room"]
    assert rows["seeds/0"]["steps"][2]["observation"] == "seen: take"
    assert "OpenEnv MCP-tool env `room` version 1.2.0, seeded resets, no Task API; success: hooks.py:won says so" in (tmp_path / "tools" / "README.md").read_text()
    recorded = json.loads((tmp_path / "tools" / "meta" / "info.json").read_text())["config"]["env"]["openenv"]
    assert recorded["served"]["success"] == "hooks.py:won says so"  # no local path
    offered = {t["function"]["name"]: t["function"] for t in json.loads(rows["seeds/1"]["tools"])}
    assert set(offered) == {"look", "take"} and offered["take"]["parameters"]["required"] == ["obj"]
    actions = [s["action"] for s in rows["seeds/0"]["steps"]]
    assert actions[:2] == ["look", "take sofa"] and actions[-1] == "take key" and not rows["seeds/0"]["steps"][2]["valid"]


def test_a_full_server_is_offered_no_session_until_its_wait_is_over(servers):
    url = servers["room"].url
    held = [OpenEnvEnv(url, seeds=1) for _ in range(3)]
    waiting = OpenEnvEnv(url, seeds=1, capacity_wait_s=3.0, timeout_s=2.0)  # the wait outlasts the timeout
    try:
        for env in held:
            env.reset(options={"task_id": "seeds/0"})
        with pytest.raises(ServerError, match=r"CAPACITY_REACHED: Server at capacity: 3/3"):
            waiting.reset(options={"task_id": "seeds/0"})  # after waiting its timeout_s for a slot
        assert BOARD.load(url) == float("inf")  # offered no session meanwhile
        held.pop().close()  # a slot frees: once the wait is over, the server is offered sessions again
        deadline = time.monotonic() + 15
        while True:
            try:
                obs, info = waiting.reset(options={"task_id": "seeds/0"})
                break
            except ServerError:
                assert time.monotonic() < deadline, "the freed slot was never offered"
                time.sleep(0.05)
        assert obs == "intro: A small room. Find the way out." and [t["name"] for t in info["mcp_tools"]] == ["look", "take"]
    finally:
        for env in [*held, waiting]:
            env.close()


# --- the tiny model -----------------------------------------------------------------------------------


@pytest.mark.hf
@pytest.mark.extended
def test_the_tiny_model_plays_the_text_game_reproducibly_by_seed(servers, tiny_model_dir, monkeypatch, tmp_path):
    """A random model writes no number: every step is an invalid action with its reason, never sent, and the
    same seed gives the same rows."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    def run(name):
        result = agent_sft.collect([
            "env.env_name=openenv", f"env.openenv.url={servers['guess'].url}", "env.openenv.token_env=HF_TOKEN",
            "env.openenv.split=test",
            "env.max_steps=3", "env.seed=5", "data.val_batch_size=3", "policy.type=hf", f"policy.model={tiny_model_dir}",
            "policy.max_tokens=24", "policy.temperature=1.0", "policy.max_model_len=2048", f"output.dir={tmp_path / name}"])
        raw = agent_sft.load(str(tmp_path / name), "raw")
        return result, {row["task_id"]: row for split in raw.values() for row in split}

    result, rows = run("a")
    assert result.run["episodes"] == 3 and result.run["errors"] == 0 and sorted(rows) == ["test/0", "test/1", "test/2"]
    for row in rows.values():
        assert row["end_reason"] in ("step_limit", "success", "failure") and json.loads(row["extra"])["openenv_env"] == "guess"
        assert all(s["valid"] or s["invalid_reason"] for s in row["steps"])
    _, again = run("b")
    assert stable(again) == stable(rows)
