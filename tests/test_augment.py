"""Reasoning for expert steps (`agent-sft augment`): a scripted loopback model answers right, wrong, or without
reasoning; wrong answers are asked again and then left out, counted; a named build with `--reasoning` puts the
rationales in its assistant turns (`<think>` with text actions, `reasoning_content` with tool calls) while every
action stays the recorded one, and it trains in TRL; a kill mid-run is completed by the next run without asking
again about finished steps; one name is one model, template and seed."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc

import datasets
import pytest
from fixtures_models import needs_vllm
from judge_server import JudgeServer

import agent_sft
from agent_sft.augment import augment_folder
from agent_sft.augment.answer import read_text_answer, read_tools_answer, recorded_call
from agent_sft.augment.run import attempt_seed
from agent_sft.augment.template import load_template
from agent_sft.cli import main
from agent_sft.config import PolicyConfig
from agent_sft.dataset import rationales as store
from agent_sft.dataset.reasoning import with_reasoning
from agent_sft.policies.base import Completion
from agent_sft.prompts import parse_action

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _collect(d: pathlib.Path, *extra: str) -> pathlib.Path:
    assert main(["collect", "--no-progress", "env.env_name=frozenlake", "env.pool=thread", "data.val_fraction=0.3",
                 f"output.dir={d}", *extra]) == 0
    return d


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> pathlib.Path:
    """Four expert episodes of FrozenLake (train and validation), six steps each, text actions."""
    return _collect(tmp_path_factory.mktemp("augment") / "fl", "env.num_episodes=4")


@pytest.fixture
def folder(collected, tmp_path) -> pathlib.Path:
    shutil.copytree(collected, tmp_path / "fl")
    return tmp_path / "fl"


def raw_rows(folder) -> dict[str, dict]:
    return {r["episode_id"]: r for split in agent_sft.load(str(folder), "raw").values() for r in split}


def kind_of(eid: str, step: int) -> int:
    """How the scripted model answers a step: 0 right at once, 1 wrong then right, 2 never right."""
    return hashlib.sha256(f"{eid}/{step}".encode()).digest()[0] % 3


def thought(eid: str, step: int) -> str:
    return f"Step {step + 1} of {eid[:6]}: this move keeps clear of the holes and nears the goal."


def test_wrong_answers_are_asked_again_then_left_out_and_the_build_keeps_every_action(folder, tiny_model_dir, tmp_path,
                                                                                        capsys):
    eps = raw_rows(folder)
    steps = {(eid, s["index"]): s for eid, ep in eps.items() for s in ep["steps"]}
    asked = {attempt_seed(0, eid, i, a): (eid, i, a) for eid, i in steps for a in (1, 2)}

    def script(prompt, seed):
        eid, i, attempt = asked[seed]
        action, k = steps[(eid, i)]["action"], kind_of(eid, i)
        if k == 0 or (k == 1 and attempt == 2):
            return f"<think>{thought(eid, i)}</think>\n<action>{action.upper()} </action>"  # normalised: the same
        if attempt == 1:
            return f"<think>Better go elsewhere.</think><action>{'up' if action != 'up' else 'left'}</action>"
        return f"<action>{action}</action>"  # the right action, but no reasoning

    n = [sum(kind_of(*k) == c for k in steps) for c in range(3)]
    assert all(n)
    with JudgeServer(script) as server:
        assert main(["augment", str(folder), "--name", "r", "--max-attempts", "2", *server.overrides("writer")]) == 0
        out = capsys.readouterr().out
        assert (f"augment r: {n[0] + n[1]} steps given reasoning in 4 episodes, {n[1] + n[2]} answers asked again "
                f"(another action or no reasoning), {n[2]} steps left out") in out
        assert server.requests == len(steps) + n[1] + n[2]
        first = server.prompts[0]
        assert "The right action now is known: " in first and "Your admissible actions" in first
        assert main(["augment", str(folder), "--name", "r", "--max-attempts", "2", *server.overrides("writer")]) == 0
        assert server.requests == len(steps) + n[1] + n[2]  # nothing asked again
        assert "0 steps given reasoning in 0 episodes" in capsys.readouterr().out

    rows = store.read_rationales(str(folder), "r")
    assert set(rows) == set(steps)
    sha = load_template(False).sha256
    for (eid, i), r in rows.items():
        k = kind_of(eid, i)
        assert (r["model"], r["template_sha256"], r["seed"]) == ("writer", sha, 0)
        assert r["attempts"] == (1 if k == 0 else 2)
        if k == 2:
            assert (r["status"], r["rationale"], r["error"]) == ("left_out", None, "no reasoning before the action")
        else:
            assert (r["status"], r["rationale"], r["action"]) == ("ok", thought(eid, i), steps[(eid, i)]["action"])

    assert main(["build", str(folder), "--name", "thinking", "--reasoning", "r"]) == 0
    assert f"; reasoning from r in {n[0] + n[1]} steps" in capsys.readouterr().out
    card = (folder / "README.md").read_text()
    assert f"reasoning from rationales `r` (`agent-sft augment`) in {n[0] + n[1]} steps" in card
    assert "data/rationale" not in card.split("\n---", 1)[0]  # never a config: load_dataset would mix them in
    ds = datasets.load_dataset(str(folder), "thinking")
    built = [row for split in ds.values() for row in split]
    assert len(built) == len(steps)
    for row in built:
        s = steps[(row["episode_id"], row["step"])]
        answer = row["messages"][-1]["content"]
        assert parse_action(answer, require_think=True).action == s["action"]  # the recorded action, always
        if kind_of(row["episode_id"], row["step"]) == 2:
            assert answer == s["response"]
        else:
            assert answer == f"<think>\n{thought(row['episode_id'], row['step'])}\n</think>\n<action>{s['action']}</action>"
    assert {r["messages"][-1]["content"] for split in agent_sft.load(str(folder), "sft").values() for r in split} \
        == {s["response"] for s in steps.values()}  # sft and raw keep the recorded answers
    assert all(s["response"].startswith("<think></think>") for ep in raw_rows(folder).values() for s in ep["steps"])

    from test_trl import assert_trained, train_two_steps

    trainer, result, _ = train_two_steps(tiny_model_dir, ds, tmp_path / "out")
    assert_trained(trainer, result)


def test_a_kill_mid_augment_is_completed_by_the_next_run_without_asking_again(folder, capsys):
    eps = raw_rows(folder)
    total = sum(len(ep["steps"]) for ep in eps.values())
    right = lambda prompt, seed: f"<think>Why: {seed}</think><action>{prompt.rsplit('<action>', 1)[1].split('<')[0]}</action>"  # noqa: E731
    with JudgeServer(right, delay_s=0.3) as slow:
        cmd = [sys.executable, "-m", "agent_sft", "augment", str(folder), "--name", "k", "--flush-every", "2",
               *slow.overrides()]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not store.shard_files(str(folder), "k") and p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert p.poll() is None, p.stderr.read().decode()[-2000:]
        finally:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    kept = store.finished_steps(str(folder), "k")
    assert 2 <= len(kept) < total
    before = {k: r["rationale"] for k, r in store.read_rationales(str(folder), "k").items()}
    with JudgeServer(right) as server:
        assert main(["augment", str(folder), "--name", "k", *server.overrides()]) == 0
        assert server.requests == total - len(kept)
    rows = store.read_rationales(str(folder), "k")
    assert len(rows) == total and {r["status"] for r in rows.values()} == {"ok"}
    assert all(rows[k]["rationale"] == before[k] for k in kept)
    shards = [os.path.join(store.rationale_dir(str(folder), "k", sp), f) for sp, f in store.shard_files(str(folder), "k")]
    from agent_sft.dataset.shards import read_shard

    assert sum(read_shard(p).num_rows for p in shards) == total  # no step written twice

    sums = json.loads((folder / "meta" / "checksums.json").read_text())
    assert set(store.rationale_files(str(folder))) <= set(sums)  # checksummed when augment ends, no build needed
    with open(shards[-1], "rb") as src, open(shards[0], "wb") as dst:  # overwritten: still a shard that reads whole
        dst.write(src.read())
    assert main(["info", str(folder)]) == 1
    rel = os.path.relpath(shards[0], folder).replace(os.sep, "/")
    assert f"  {rel}: " in capsys.readouterr().out
    assert main(["repair", str(folder), "--check"]) == 1
    assert main(["repair", str(folder)]) == 0
    assert not os.path.exists(shards[0]) and len(store.finished_steps(str(folder), "k")) < total
    with JudgeServer(right) as server:
        assert main(["augment", str(folder), "--name", "k", *server.overrides()]) == 0
        assert 0 < server.requests < total
    assert store.finished_steps(str(folder), "k") == set(rows)


def test_one_name_is_one_model_template_and_seed_and_bad_input_gets_one_line(folder, tmp_path, capsys):
    right = lambda prompt, seed: f"<think>ok</think><action>{prompt.rsplit('<action>', 1)[1].split('<')[0]}</action>"  # noqa: E731
    with JudgeServer(right) as server:
        assert main(["augment", str(folder), "--name", "a", "--limit", "1", *server.overrides()]) == 0
        assert "3 episodes left for a later run (--limit)" in capsys.readouterr().out
        assert main(["augment", str(folder), "--name", "a", "--seed", "1", *server.overrides("other")]) == 2
        err = capsys.readouterr().err
        assert "rationales 'a'" in err and "model 'judge-model' (now 'other'), seed 0 (now 1)" in err
        assert main(["build", str(folder), "--name", "t", "--reasoning", "a"]) == 0
        assert "; reasoning from a in 6 steps" in capsys.readouterr().out
        assert main(["augment", str(folder), "--name", "a", *server.overrides()]) == 0  # the build follows
        assert "rebuilt t." in capsys.readouterr().out
        assert main(["info", str(folder), "--quick"]) == 0
        assert "; reasoning from a in 24 steps" in capsys.readouterr().out
    no_action = tmp_path / "t.txt"
    no_action.write_text("Explain the move toward {goal}.")
    base = ["augment", str(folder), "policy.type=openai", "policy.model=m", "policy.base_url=http://127.0.0.1:9/v1"]
    for args, said in (
        (["--name", "Bad Name"], "a rationale name is 1-64 lower-case letters"),
        (["--name", "b", "--template", str(no_action)], "must contain {action} or {call}"),
        (["--name", "b", "--max-attempts", "0"], "--max-attempts: must be at least 1"),
        (["--name", "b", "env.seed=3"], "takes the policy.* keys only"),
    ):
        assert main([*base, *args]) == 2
        assert said in capsys.readouterr().err
    assert main(["augment", str(folder), "--name", "b"]) == 2
    assert "plays no model, so it cannot write reasoning" in capsys.readouterr().err
    assert main(["build", str(folder), "--name", "t", "--reasoning", "nope"]) == 2
    err = capsys.readouterr().err
    assert "has no rationales of that name" in err and "it has: a" in err
    assert main(["build", str(folder), "--reasoning", "a"]) == 2
    assert "--reasoning needs --name" in capsys.readouterr().err
    assert main(["build", str(folder), "--name", "rationale"]) == 2  # a reserved config name
    assert store.names(str(folder)) == ["a"]


def test_tool_calls_get_reasoning_content_and_keep_their_calls(tmp_path):
    folder = _collect(tmp_path / "tools", "env.num_episodes=2", "prompt.actions=tools", "prompt.style=chat")
    eps = raw_rows(folder)
    calls = {(eid, s["index"]): ep["messages"][s["prompt_end"]]["tool_calls"][0]
             for eid, ep in eps.items() for s in ep["steps"]}
    asked = {attempt_seed(0, eid, i, a): (eid, i, a) for eid, i in calls for a in (1, 2, 3)}

    def script(prompt, seed):
        eid, i, attempt = asked[seed]
        f = calls[(eid, i)]["function"]
        if i == 0 and attempt == 1:  # another direction first
            f = {"name": f["name"], "arguments": json.dumps({k: "nowhere" for k in json.loads(f["arguments"])})}
        call = {"id": f"c{i}", "type": "function", "function": f}
        if i % 2:
            return {"content": f"<think>Reason {i}.</think>", "tool_calls": [call]}
        return {"content": "", "reasoning_content": f"Reason {i}.", "tool_calls": [call]}

    with JudgeServer(script) as server:
        r = augment_folder(str(folder), "t", PolicyConfig(type="openai", model="m", base_url=server.url, max_retries=0))
        assert all(b.get("tools") for b in server.bodies)  # offered the episode's tools, as in collection
    assert (r.augmented, r.regenerated, r.left_out, r.episodes) == (len(calls), len(eps), 0, len(eps))
    assert main(["build", str(folder), "--name", "thinking", "--reasoning", "t"]) == 0
    ds = datasets.load_dataset(str(folder), "thinking")
    built = [row for split in ds.values() for row in split]
    assert len(built) == len(eps)  # a chat: one row per episode
    for row in built:
        turns = [m for m in row["messages"] if m["role"] == "assistant"]
        recorded = [m for m in eps[row["episode_id"]]["messages"] if m["role"] == "assistant"]
        assert [m["reasoning_content"] for m in turns] == [f"Reason {i}." for i in range(len(turns))]
        assert [(m["content"], m["tool_calls"]) for m in turns] == [(m["content"], m["tool_calls"]) for m in recorded]
    assert all(m["reasoning_content"] is None for ep in raw_rows(folder).values() for m in ep["messages"]
               if m["role"] == "assistant")


def test_a_build_and_a_run_hold_a_batch_of_rationales_not_the_folders(folder):
    eps = raw_rows(folder)
    ident = {"model": "m", "template_sha256": "t", "seed": 0}

    def row(eid, step, split, text):
        return {"episode_id": eid, "split": split, "step": step, "rationale": text, "output": "", "action": "a",
                "attempts": 1, "status": "ok", "error": "", "augmented_at": 0.0, **ident}

    n = 20_000  # steps of episodes in other raw shards than those read at once (here: gone from the folder)
    other = [row(f"other{i // 6:015d}", i % 6, "train", f"{i:08d} " + "x" * 150) for i in range(n)]
    for k in range(0, n, 5000):
        store.write_rationales(str(folder), "r", other[k:k + 5000], ident)
    store.write_rationales(str(folder), "r", [row(eid, s["index"], ep["split"], f"Because {s['index']}.")
                                              for eid, ep in eps.items() for s in ep["steps"]], ident)
    texts = sum(len(r["rationale"]) for r in other)
    del other
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        finished = store.finished_steps(str(folder), "r")
        assert len(finished) == n + sum(len(ep["steps"]) for ep in eps.values())
        assert tracemalloc.get_traced_memory()[1] - before < 300 * n  # the keys, not a row's dict per step
        del finished
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        assert main(["build", str(folder), "--name", "t", "--reasoning", "r"]) == 0
        assert tracemalloc.get_traced_memory()[1] - before < texts  # never every text of the store at once
    finally:
        tracemalloc.stop()
    built = [r for split in agent_sft.load(str(folder), "t").values() for r in split]
    assert {r["messages"][-1]["content"].split("\n")[1] for r in built} == {f"Because {i}." for i in range(6)}


def test_answers_are_read_after_normalisation_and_a_build_changes_only_the_reasoning():
    assert read_text_answer("<think>go</think><action> Go  North </action>", "go north").error == ""
    for answer in ("Because the door is north. <action>go north</action>",
                   "<think> </think> Because the door is north. <action>go north</action>",  # an empty block
                   "<THINK>Because the door is north.<action>go north</action>",  # an unclosed one
                   "<think>Because the door is north.</think>\n<action>go north</action>"):
        assert read_text_answer(answer, "go north").rationale == "Because the door is north.", answer
    for answer in ("<think></think><action>go north</action>", "<think> <action>go north</action>",
                   "<think></think></think> <action>go north</action>"):
        assert read_text_answer(answer, "go north").error == "no reasoning before the action", answer
    call = [{"id": "c", "type": "function", "function": {"name": "move", "arguments": '{"to": "north"}'}}]
    recorded = recorded_call({"tool_calls": call})
    assert read_tools_answer(Completion("", tool_calls=call, content="<think>Because north."), recorded).rationale \
        == "Because north."
    assert read_tools_answer(Completion("", tool_calls=call, content="<think> </think>"), recorded).error \
        == "no reasoning before the call"
    assert "not the recorded 'go north'" in read_text_answer("<think>x</think><action>go south</action>", "go north").error
    assert read_text_answer("<think>x</think> no tag", "go north").error.startswith("no action could be read")
    row = {"episode_id": "e", "messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "<think>"
           "</think><action>a</action>"}], "steps": [{"index": 0, "prompt_end": 1, "response": "<think></think><action>a</action>"}]}
    new, n = with_reasoning(row, {0: "because"})
    assert n == 1 and new["steps"][0]["response"] == new["messages"][1]["content"] == "<think>\nbecause\n</think>\n<action>a</action>"
    assert row["messages"][1]["content"] == "<think></think><action>a</action>"  # the row given is not changed
    assert with_reasoning(row, {0: "<think>because</think>"})[0] == new  # never a block in a block
    assert with_reasoning(row, {0: "<think> </think>"})[1] == 0


@pytest.mark.extended
@pytest.mark.vllm
@needs_vllm
def test_the_tiny_model_writes_through_vllm(folder, vllm_policy, tiny_model_dir):
    cfg = PolicyConfig(type="vllm", model=tiny_model_dir, max_tokens=16)
    r = augment_folder(str(folder), "tiny", cfg, policy=vllm_policy, limit=1, max_attempts=2)
    assert r.episodes == 1 and r.augmented + r.left_out == 6 and r.left == 3
    rows = store.read_rationales(str(folder), "tiny")
    assert len(rows) == 6 and {r["model"] for r in rows.values()} == {vllm_policy.describe().model}
    assert all(r["output"] and r["attempts"] >= 1 for r in rows.values())
    assert main(["build", str(folder), "--name", "thinking", "--reasoning", "tiny"]) == 0
