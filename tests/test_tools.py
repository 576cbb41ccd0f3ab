"""Tool-call actions (`prompt.actions=tools`): each env's tools, experts answering with calls, the rows and
the rules that make a call an action or an invalid step."""

from __future__ import annotations

import json

import pytest

import agent_sft
from agent_sft.config.load import load_config
from agent_sft.dataset.fingerprint import mismatches
from agent_sft.envs import spec
from agent_sft.envs.tools import ToolCallError, toolset_for
from agent_sft.errors import ConfigMismatchError
from agent_sft.policies.tool_calls import parse_hermes
from agent_sft.run import resolve

FAST = {
    "frozenlake": ["env.frozenlake.seeds=4"],
    "taxi": ["env.taxi.seeds=4"],
    "babyai": ["env.babyai.levels=[GoToRedBall]", "env.babyai.seeds_per_level=2"],
    "textarena": ["env.textarena.games=[TowerOfHanoi-v0,FrozenLake-v0]", "env.textarena.seeds_per_game=1"],
}
HEAVY = {
    "alfworld": [],
    "textworld": ["env.textworld.task_types=[tw-cooking-l1,tw-treasure_hunter]"],
}


def _rows(folder):
    raw = agent_sft.load(str(folder), "raw")
    return {r["episode_id"]: r for split in raw.values() for r in split}


def _expert_pair(tmp_path, env, extra, n, style="chat"):
    backend = "thread" if spec(env).shared_process else "process"
    base = [f"env.env_name={env}", f"env.num_episodes={n}", "policy.type=expert", f"env.backend={backend}",
            f"prompt.style={style}", *extra]
    agent_sft.collect([*base, f"output.dir={tmp_path / 'text'}"])
    agent_sft.collect([*base, "prompt.actions=tools", f"output.dir={tmp_path / 'tools'}"])
    return _rows(tmp_path / "text"), _rows(tmp_path / "tools")


def _same_play(text, tools):
    assert text.keys() == tools.keys() and text
    for eid, t in text.items():
        r = tools[eid]
        assert [s["action"] for s in r["steps"]] == [s["action"] for s in t["steps"]]
        assert r["success"] == t["success"] and r["num_invalid"] == t["num_invalid"] == 0
        offered = json.loads(r["tools"])
        calls = [m for m in r["messages"] if m["role"] == "assistant"]
        assert len(calls) == len(r["steps"]) and all(len(m["tool_calls"]) == 1 for m in calls)
        assert {c["tool_calls"][0]["function"]["name"] for c in calls} <= {t["function"]["name"] for t in offered}
        answers = [m for m in r["messages"] if m["role"] == "tool"]  # chat style: each played call is answered
        assert [m["tool_call_id"] for m in answers] == [c["tool_calls"][0]["id"] for c in calls][: len(answers)]
        assert len(answers) == len(calls) - 1 and "tools" not in t


@pytest.mark.envs
@pytest.mark.parametrize("env", sorted(FAST))
def test_experts_play_the_same_episodes_with_tool_calls(env, tmp_path):
    text, tools = _expert_pair(tmp_path, env, FAST[env], 2)
    _same_play(text, tools)
    assert any(r["success"] for r in tools.values())


@pytest.mark.extended
@pytest.mark.alfworld
@pytest.mark.parametrize("env", sorted(HEAVY))
def test_heavy_env_experts_play_the_same_episodes_with_tool_calls(env, tmp_path):
    text, tools = _expert_pair(tmp_path, env, HEAVY[env], 2)
    _same_play(text, tools)
    assert all(r["success"] for r in tools.values())


def test_env_tools_and_the_generic_act_tool():
    web = toolset_for(spec("webshop"), {})
    assert [t["function"]["name"] for t in web.schemas()] == ["search", "click"]
    assert web.action("search", '{"query": "red shoes"}') == "search[red shoes]"
    assert web.call("click[buy now]") == ("click", {"target": "buy now"})
    hanoi = toolset_for(spec("textarena"), {"task_type": "TowerOfHanoi"})
    assert hanoi.action("move", {"source": "A", "target": "C"}) == "[A C]" and hanoi.call("[B A]") == (
        "move", {"source": "B", "target": "A"})
    mines = toolset_for(spec("textarena"), {"task_type": "Minesweeper"})
    assert mines.action("reveal", '{"row": 3, "col": 2}') == "[3 2]" and mines.call("[3 2]") == (
        "reveal", {"row": 3, "col": 2})
    act = toolset_for(spec("alfworld"), {"admissible_actions": ["look", "go to desk 1", "help"]})
    (schema,) = act.schemas()
    assert schema["function"]["name"] == "act" and "look; go to desk 1." in schema["function"]["description"]
    assert act.action("act", '{"command": "go to desk 1"}') == "go to desk 1"
    for name, args, reason in [
        ("fly", "{}", "unknown tool 'fly' (offered: act)"),
        ("act", "{command: look}", "bad arguments for act: not JSON"),
        ("act", "[1]", "bad arguments for act: expected a JSON object, got [1]"),
        ("act", '{"cmd": "look"}', "bad arguments for act: missing command; unexpected cmd"),
        ("act", '{"command": 3}', "bad arguments for act: command must be a string, got 3"),
    ]:
        with pytest.raises(ToolCallError) as e:
            act.action(name, args)
        assert str(e.value).startswith(reason)
    with pytest.raises(ToolCallError, match=r"source='D' is not one of A, B, C"):
        hanoi.action("move", {"source": "D", "target": "C"})


def test_hermes_answers_are_read_or_say_why_not():
    content, calls, error = parse_hermes('<think>go</think>ok<tool_call>\n{"name": "act", "arguments": '
                                         '{"command": "look"}}\n</tool_call>')
    assert (content, error) == ("<think>go</think>ok", "")
    assert calls == [{"id": "", "type": "function", "function": {"name": "act", "arguments": '{"command": "look"}'}}]
    assert parse_hermes("just text") == ("just text", [], "")
    assert parse_hermes("<tool_call>{oops</tool_call>")[2].startswith("malformed tool call: not JSON")
    assert parse_hermes('<tool_call>{"arguments": {}}</tool_call>')[2].startswith("malformed tool call: no function name")
    assert parse_hermes('<tool_call>{"name": "act"}</tool_call>')[2].startswith("malformed tool call: no arguments")


def test_a_text_folder_refuses_a_tools_run(tmp_path):
    args = ["env.env_name=frozenlake", "env.num_episodes=1", "policy.type=expert", "env.backend=thread",
            "env.frozenlake.seeds=2", f"output.dir={tmp_path}"]
    agent_sft.collect(args)
    with pytest.raises(ConfigMismatchError, match=r"schema additions none, this run's tools \(prompt\.actions"):
        agent_sft.collect([*args, "prompt.actions=tools"])
    info = json.loads((tmp_path / "meta" / "info.json").read_text())
    tools_run = load_config(overrides=[*args, "prompt.actions=tools"])
    assert "prompt.actions: None (folder) vs 'tools' (now)" in mismatches(info, resolve(tools_run).fingerprint)
    agent_sft.collect([*args, "env.num_episodes=2"])  # text resumes it as before
