"""ATIF: `agent-sft export --format atif` writes one document per episode that Harbor's own validator accepts, and
`agent-sft import --format atif` reads documents (agent-sft's, or any tool's) back into a folder as raw rows.

Harbor's models come from `harbor==0.26.0`, which `bash scripts/install.sh --test` installs.
"""

import json
import os
import shutil

import pytest
from fixtures_curation import raw_rows
from fixtures_data import make_episode
from harbor.utils.trajectory_validator import TrajectoryValidator

import agent_sft
from agent_sft.cli import main as cli_main
from agent_sft.dataset.formats import episode_to_row
from agent_sft.dataset.writer import DatasetWriter
from agent_sft.publish.atif import to_atif
from agent_sft.publish.atif_import import END_UNJUDGED, from_atif, read_document, shape_errors
from agent_sft.records import RAW_SCHEMA

# raw -> ATIF -> raw gives back every column of the raw row, given the env and the task key it was exported with
# (`--env` names the env; the task id comes from `--task-key task_id`).
ROUND_TRIP = [f.name for f in RAW_SCHEMA]


def validate(doc_or_path) -> list[str]:
    v = TrajectoryValidator()
    return [] if v.validate(doc_or_path) else v.get_errors()


def atif_files(out) -> dict[str, list[str]]:
    return {split: sorted(os.listdir(out / split)) for split in ("train", "validation")}


@pytest.fixture(scope="module")
def exported(flaky_folders, tmp_path_factory):
    """Per prompt style: the collected folder, its ATIF export (by the CLI) and its raw rows."""
    root = tmp_path_factory.mktemp("atif")
    out = {}
    for style, folder in flaky_folders.items():
        assert cli_main(["export", folder, "--format", "atif", "--out", str(root / style)]) == 0
        out[style] = (folder, root / style, raw_rows(folder))
    return out


def test_export_writes_a_valid_document_per_episode(exported, capsys):
    for _folder, out, rows in exported.values():
        files = atif_files(out)
        assert files == {sp: sorted(f"{r['episode_id']}.json" for r in rows if r["split"] == sp)
                         for sp in ("train", "validation")}
        for r in rows:
            path = out / r["split"] / f"{r['episode_id']}.json"
            assert validate(path) == [], path
            doc = json.loads(path.read_text())
            assert doc["schema_version"] == "ATIF-v1.7" and doc["session_id"] == doc["trajectory_id"] == r["episode_id"]
            assert doc["agent"]["name"] == "agent-sft" and doc["agent"]["model_name"] == r["policy"]["model"]
            agent = [s for s in doc["steps"] if s["source"] == "agent"]
            assert [s["message"] for s in agent] == [s["response"] for s in r["steps"]]
            assert [s["extra"]["reward"] for s in agent] == r["rewards"]
            assert [s["extra"]["valid"] for s in agent] == [s["valid"] for s in r["steps"]]
            assert [s["extra"]["invalid_reason"] for s in agent] == [s["invalid_reason"] for s in r["steps"]]
            users = [s["message"] for s in doc["steps"] if s["source"] == "user"]
            assert users == [m["content"] for m in r["messages"] if m["role"] == "user"]
            assert doc["extra"]["success"] == r["success"] and doc["extra"]["task_id"] == r["task_id"]
            assert doc["final_metrics"]["total_steps"] == len(doc["steps"])
        assert any(not s["valid"] for r in rows for s in r["steps"])  # the flaky expert's invalid steps are there
    folder, _, rows = exported["chat"]
    out18 = out.parent / "v18"
    assert cli_main(["export", folder, "--format", "atif", "--atif-version", "1.8", "--out", str(out18)]) == 0
    assert f"exported atif to {out18}: train " in capsys.readouterr().out
    one = out18 / rows[0]["split"] / f"{rows[0]['episode_id']}.json"
    assert json.loads(one.read_text())["schema_version"] == "ATIF-v1.8" and validate(one) == []


def test_round_trip_gives_the_rows_back(exported, tmp_path, capsys):
    for style, (folder, out, rows) in exported.items():
        dest = tmp_path / style
        # agent-sft's own documents carry their task id: no --task-key needed (the window style gives one)
        key = ["--task-key", "task_id"] if style == "chat" else []
        code = cli_main(["import", "--format", "atif", str(dest), str(out), "--env", "frozenlake", *key])
        assert code == 0, capsys.readouterr()
        assert f"imported {len(rows)} trajectories into {dest} as env frozenlake" in capsys.readouterr().out
        back = {r["episode_id"]: r for r in raw_rows(str(dest))}
        assert set(back) == {r["episode_id"] for r in rows}
        for r in rows:
            assert {k: back[r["episode_id"]][k] for k in ROUND_TRIP} == {k: r[k] for k in ROUND_TRIP}, style
        # the imported folder builds sft as the collected one did (same filters: the defaults)
        sft, orig = agent_sft.load(str(dest), "sft"), agent_sft.load(folder, "sft")
        for split in ("train", "validation"):
            key = lambda r: (r["episode_id"], r["step"] if r["step"] is not None else -1)  # noqa: E731
            assert sorted(sft[split], key=key) == sorted(orig[split], key=key)
        info = json.loads((dest / "meta" / "info.json").read_text())
        assert info["fingerprint"] == {"imported": "atif", "env": "frozenlake"}


def test_tool_call_folders_export_valid_documents_and_come_back(tool_folders, tmp_path):
    """Collected with `prompt.actions=tools`: each model turn's calls are the agent step's tool_calls, and in the
    chat style the env's answer is the step's observation, tied to the call."""
    for style, folder in tool_folders.items():
        out, dest = tmp_path / f"{style}_atif", tmp_path / f"{style}_back"
        assert cli_main(["export", folder, "--format", "atif", "--out", str(out)]) == 0
        rows = raw_rows(folder)
        for r in rows:
            doc = json.loads((out / r["split"] / f"{r['episode_id']}.json").read_text())
            assert validate(doc) == []
            assert doc["agent"]["tool_definitions"] == json.loads(r["tools"])
            agent = [s for s in doc["steps"] if s["source"] == "agent"]
            calls = [m["tool_calls"] for m in r["messages"] if m["role"] == "assistant"]
            assert [[(c["tool_call_id"], c["function_name"], c["arguments"]) for c in s["tool_calls"]] for s in agent] == \
                [[(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in cs] for cs in calls]
            results = [x for s in agent for x in (s.get("observation") or {}).get("results", [])]
            tool_msgs = [m for m in r["messages"] if m["role"] == "tool"]
            assert [(x["source_call_id"], x["content"]) for x in results] == \
                [(m["tool_call_id"], m["content"]) for m in tool_msgs]
            assert bool(tool_msgs) == (style == "chat")  # a window prompt carries the observation in the next user turn
        assert cli_main(["import", "--format", "atif", str(dest), str(out), "--env", "frozenlake",
                         "--task-key", "task_id"]) == 0
        assert json.loads((dest / "meta" / "info.json").read_text())["schema_additions"] == ["task_hash", "tools"]
        assert raw_rows(str(dest)) == rows  # every column, the tools and task_hash additions' too


def test_round_trip_of_rows_with_a_system_message():
    for style in ("window", "chat"):
        for ep in (make_episode(3, 1, style=style), make_episode(4, 0, style=style, invalid_at=1, success=False)):
            row = episode_to_row(ep)
            doc = to_atif(row)
            assert validate(doc) == []
            assert doc["steps"][0] == {"step_id": 1, "source": "system", "message": row["messages"][0]["content"]}
            assert doc["steps"][2]["metrics"] == {"prompt_tokens": 40, "completion_tokens": 12}
            back = from_atif(json.loads(json.dumps(doc)), "alfworld", "task_id")
            assert {k: back[k] for k in ROUND_TRIP} == {k: row[k] for k in ROUND_TRIP}


def test_tool_calls_reasoning_and_tokens_map_both_ways(tmp_path):
    """A model turn with tool calls, reasoning and recorded tokens (the chat-template shapes) and the tool
    messages answering it: the calls and results tie by id, and everything comes back."""
    row = episode_to_row(make_episode(5, 0, style="chat", steps=2))
    tools = [{"type": "function", "function": {"name": "act", "description": "Play a command.",
                                               "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}]
    row["tools"] = json.dumps(tools)
    calls = [{"id": "call_1", "type": "function", "function": {"name": "act", "arguments": '{"command": "go to drawer 0"}'}},
             {"id": "call_2", "type": "function", "function": {"name": "act", "arguments": "{not json"}}]
    msgs = row["messages"]
    msgs[2] = {"role": "assistant", "content": "", "tool_calls": calls, "reasoning_content": "the drawer first"}
    msgs[3:3] = [{"role": "tool", "content": "You arrive at drawer 0.", "tool_call_id": "call_1"},
                 {"role": "tool", "content": "invalid arguments", "tool_call_id": "call_2"}]
    row["steps"][0]["response"] = ""
    row["steps"][0].update(prompt_token_ids=[1, 2, 3], completion_token_ids=[7, 8], logprobs=[-0.5, -0.25],
                           top_logprobs=[[{"token_id": 7, "logprob": -0.5}], [{"token_id": 8, "logprob": -0.25}]])
    row["tokens_complete"] = False
    doc = to_atif(row)
    assert validate(doc) == []
    agent = next(s for s in doc["steps"] if s["source"] == "agent")
    assert agent["tool_calls"][0] == {"tool_call_id": "call_1", "function_name": "act",
                                      "arguments": {"command": "go to drawer 0"}}
    assert agent["tool_calls"][1]["arguments"] == {} and agent["tool_calls"][1]["extra"] == {"arguments": "{not json"}
    assert agent["observation"]["results"] == [{"content": "You arrive at drawer 0.", "source_call_id": "call_1"},
                                               {"content": "invalid arguments", "source_call_id": "call_2"}]
    assert agent["reasoning_content"] == "the drawer first"
    assert agent["metrics"]["completion_token_ids"] == [7, 8] and agent["metrics"]["logprobs"] == [-0.5, -0.25]
    assert doc["agent"]["tool_definitions"] == tools
    back = from_atif(json.loads(json.dumps(doc)), "alfworld", "task_id")
    assert back["messages"] == msgs and back["tools"] == row["tools"] and back["tokens_complete"] is False
    assert back["steps"] == row["steps"]
    # and through folders with these schema additions: collected -> export -> import
    src, dest = tmp_path / "src", tmp_path / "dest"
    with DatasetWriter(str(src), fingerprint={"env": "alfworld"}, additions=("tokens", "tools")) as w:
        w.add(row)
        w.add(episode_to_row(make_episode(6, 0, style="chat")))
    assert cli_main(["export", str(src), "--format", "atif", "--out", str(tmp_path / "atif")]) == 0
    assert all(validate(tmp_path / "atif" / sp / f) == [] for sp, fs in atif_files(tmp_path / "atif").items() for f in fs)
    assert cli_main(["import", "--format", "atif", str(dest), str(tmp_path / "atif"), "--env", "alfworld",
                     "--task-key", "task_id"]) == 0
    assert json.loads((dest / "meta" / "info.json").read_text())["schema_additions"] == ["tokens", "tools"]
    assert raw_rows(str(dest)) == raw_rows(str(src))  # every column, the additions' too


def test_json_text_spelled_otherwise_comes_back_as_it_was():
    """A row's JSON text fields read as objects in ATIF; text agent-sft would write otherwise is kept as text."""
    row = episode_to_row(make_episode(7, 0, style="chat", steps=1))
    row["steps"][0]["info"] = '{"won":false}'
    row["extra"] = "not json"
    row["tools"] = '[{"type":"function","function":{"name":"act"}}]'
    row["messages"][2]["tool_calls"] = [{"id": "c", "type": "function",
                                         "function": {"name": "act", "arguments": '{"command":"look"}'}}]
    doc = to_atif(row)
    assert validate(doc) == []
    assert doc["agent"]["tool_definitions"] == [{"type": "function", "function": {"name": "act"}}]
    assert doc["steps"][2]["tool_calls"][0]["arguments"] == {"command": "look"}
    assert doc["extra"]["versions"] == {"agent_sft": "test"}  # written as agent-sft writes JSON: an object
    back = from_atif(json.loads(json.dumps(doc)), "alfworld", "task_id")
    assert back["steps"] == row["steps"] and back["messages"] == row["messages"]
    assert (back["extra"], back["tools"], back["versions"]) == (row["extra"], row["tools"], row["versions"])


SPEC_EXAMPLE = {
    "schema_version": "ATIF-v1.7",
    "session_id": "6F1C2A9E-58B4-4D2E-9A71-0C3B5E8D2F14",
    "agent": {"name": "weather-agent", "version": "2.3.0", "model_name": "some-model-7b", "extra": {"temperature": 0.2}},
    "notes": "Two calls in one turn, then an answer.",
    "steps": [
        {"step_id": 1, "timestamp": "2025-11-02T08:00:00Z", "source": "system", "message": "You answer with data."},
        {"step_id": 2, "timestamp": "2025-11-02T08:00:01Z", "source": "user",
         "message": "How warm and how windy is it in Oslo?"},
        {"step_id": 3, "timestamp": "2025-11-02T08:00:03Z", "source": "agent", "model_name": "some-model-7b",
         "reasoning_effort": "low", "message": "I will look up both.",
         "reasoning_content": "Two readings are needed; both calls can go at once.",
         "tool_calls": [
             {"tool_call_id": "call_temp", "function_name": "weather", "arguments": {"city": "Oslo", "what": "temperature"}},
             {"tool_call_id": "call_wind", "function_name": "weather", "arguments": {"city": "Oslo", "what": "wind"}}],
         "observation": {"results": [{"source_call_id": "call_temp", "content": "4 C"},
                                     {"source_call_id": "call_wind", "content": "12 km/h"}]},
         "metrics": {"prompt_tokens": 310, "completion_tokens": 42, "cached_tokens": 100, "cost_usd": 0.0002,
                     "completion_token_ids": [11, 12, 13], "logprobs": [-0.1, -0.2, -0.3]}},
        {"step_id": 4, "timestamp": "2025-11-02T08:00:05Z", "source": "agent", "message": "Oslo: 4 C, wind 12 km/h.",
         "metrics": {"prompt_tokens": 380, "completion_tokens": 15}},
    ],
    "final_metrics": {"total_prompt_tokens": 690, "total_completion_tokens": 57, "total_steps": 4},
    "extra": {"task": "oslo-weather"},
}


def test_a_hand_written_document_in_the_spec_shape_imports(tmp_path, capsys):
    assert validate(SPEC_EXAMPLE) == []
    (tmp_path / "spec.json").write_text(json.dumps(SPEC_EXAMPLE))
    dest = tmp_path / "data"
    assert cli_main(["import", "--format", "atif", str(dest), str(tmp_path / "spec.json"), "--env", "weather",
                     "--task-key", "task"]) == 0
    assert "imported 1 trajectories" in capsys.readouterr().out
    (row,) = raw_rows(str(dest))
    assert row["episode_id"] == SPEC_EXAMPLE["session_id"] and row["env"] == "weather" and row["task_id"] == "oslo-weather"
    assert row["success"] is False and row["end_reason"] == END_UNJUDGED  # nothing in the document judged it
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert [m["content"] for m in row["messages"]][3:] == ["4 C", "12 km/h", "Oslo: 4 C, wind 12 km/h."]
    assert [s["action"] for s in row["steps"]] == ['weather({"city": "Oslo", "what": "temperature"})',
                                                   "Oslo: 4 C, wind 12 km/h."]
    assert [s["prompt_end"] for s in row["steps"]] == [2, 5] and row["steps"][0]["prompt_start"] == 1
    assert row["steps"][0]["observation"] == "How warm and how windy is it in Oslo?"
    assert row["steps"][1]["observation"] == "12 km/h" and row["steps"][1]["done"] is True
    assert (row["prompt_tokens"], row["completion_tokens"]) == (690, 57)
    assert row["steps"][0]["completion_token_ids"] == [11, 12, 13] and row["steps"][1]["completion_token_ids"] is None
    assert row["steps"][0]["logprobs"] == pytest.approx([-0.1, -0.2, -0.3])  # kept as float32, as recorded ones are
    assert row["messages"][2]["reasoning_content"] == "Two readings are needed; both calls can go at once."
    assert row["tools"] is None and row["tokens_complete"] is None  # no tools listed; nothing says the capture is whole
    assert row["started_at"] == 1762070400.0 and row["duration_s"] == 5.0
    assert row["policy"] == {"kind": "atif", "model": "some-model-7b", "sampling": "{}"}
    assert json.loads(row["extra"])["atif"]["agent"]["name"] == "weather-agent"
    # the whole chat trains (a growing conversation), ending on the last answer
    (sft,) = agent_sft.load(str(dest), "sft")[row["split"]]
    assert sft["messages"][-1]["content"] == "Oslo: 4 C, wind 12 km/h."


def test_a_broken_file_is_counted_and_named_and_the_rest_import(tmp_path, capsys):
    files = tmp_path / "files"
    files.mkdir()
    good = {k: v for k, v in SPEC_EXAMPLE.items() if k != "session_id"}  # no id: its content names it
    (files / "a_good.json").write_text(json.dumps(good))
    (files / "b_not_json.json").write_text('{"schema_version": "ATIF-v1.7", "steps": [')
    bad = json.loads(json.dumps(SPEC_EXAMPLE))
    bad["steps"][2]["tool_calls"][0]["arguments"] = '{"city": "Oslo"}'  # ATIF wants an object
    (files / "c_invalid.json").write_text(json.dumps(bad))
    dest = tmp_path / "data"
    assert cli_main(["import", "--format", "atif", str(dest), str(files), "--env", "weather"]) == 1
    out = capsys.readouterr().out
    assert "imported 1 trajectories" in out and "2 failed" in out
    assert f"failed: {files / 'b_not_json.json'}: not JSON" in out
    assert f"failed: {files / 'c_invalid.json'}: not a valid ATIF trajectory: trajectory.steps.2.tool_calls.0.arguments" in out
    (row,) = raw_rows(str(dest))
    assert row["task_id"] == row["episode_id"] and len(row["episode_id"]) == 20  # a content hash
    before = sorted(os.listdir(dest / "data" / "raw" / row["split"]))
    # importing the same files again adds nothing: the id of a document without one is its content's
    assert cli_main(["import", "--format", "atif", str(dest), str(files / "a_good.json"), "--env", "weather"]) == 0
    out = capsys.readouterr().out
    assert "imported 0 trajectories" in out and "1 already there; 0 failed" in out
    assert [r["episode_id"] for r in raw_rows(str(dest))] == [row["episode_id"]]
    assert sorted(os.listdir(dest / "data" / "raw" / row["split"])) == before


TEXT_DOC = {"schema_version": "ATIF-v1.7", "session_id": "text-1", "agent": {"name": "a", "version": "1"},
            "steps": [{"step_id": 1, "source": "user", "message": "Go."},
                      {"step_id": 2, "source": "agent", "message": "<think></think><action>down</action>"}]}


def test_a_collected_folder_takes_imports_only_when_asked(flaky_folders, tmp_path, capsys):
    folder = tmp_path / "collected"
    shutil.copytree(flaky_folders["chat"], folder)
    (tmp_path / "text.json").write_text(json.dumps(TEXT_DOC))
    (tmp_path / "spec.json").write_text(json.dumps(SPEC_EXAMPLE))
    args = ["import", "--format", "atif", str(folder), str(tmp_path / "text.json"), "--env", "frozenlake"]
    info = (folder / "meta" / "info.json").read_bytes()
    assert cli_main(args) == 2
    assert "holds collected episodes; import into another folder, or pass --allow-into-collected" in capsys.readouterr().err
    assert (folder / "meta" / "info.json").read_bytes() == info and len(raw_rows(str(folder))) == 20
    assert cli_main(args + [str(tmp_path / "spec.json"), "--allow-into-collected"]) == 1
    out = capsys.readouterr().out
    assert "imported 1 trajectories" in out
    # a text folder's rows have no columns for tool calls and token ids: that document is refused, not cut down
    assert (f"failed: {tmp_path / 'spec.json'}: holds what the folder's rows have no place for (schema additions "
            "tokens, tools") in out
    rows = raw_rows(str(folder))
    assert len(rows) == 21 and "text-1" in {r["episode_id"] for r in rows}
    # the folder's fingerprint stays the collected one: the same collect still resumes it
    assert json.loads((folder / "meta" / "info.json").read_text())["fingerprint"] == json.loads(info)["fingerprint"]
    other = tmp_path / "imported"
    assert cli_main(["import", "--format", "atif", str(other), str(tmp_path / "spec.json"), "--env", "weather"]) == 0
    assert json.loads((other / "meta" / "info.json").read_text())["schema_additions"] == ["tokens", "tools"]
    assert cli_main(["import", "--format", "atif", str(other), str(tmp_path / "spec.json"), "--env", "terminal"]) == 2
    assert "imported as env 'weather', not 'terminal'" in capsys.readouterr().err


def test_the_shape_check_without_harbor(tmp_path):
    assert shape_errors(SPEC_EXAMPLE) == []
    assert shape_errors([]) == ["a trajectory must be a JSON object"]
    bad = json.loads(json.dumps(SPEC_EXAMPLE))
    bad["steps"][1]["step_id"] = 7
    bad["steps"][2]["tool_calls"][0]["arguments"] = "x"
    del bad["agent"]["version"]
    assert shape_errors(bad) == ["agent: an object with a name and a version is required", "steps[1].step_id: expected 2",
                                 "steps[2].tool_calls[0]: tool_call_id, function_name and arguments (an object) are required"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    doc, why = read_document(str(tmp_path / "bad.json"), None)
    assert doc is None and why == "not a valid ATIF trajectory: agent: an object with a name and a version is required (and 2 more)"
