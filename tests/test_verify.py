"""`agent-sft verify`: episodes replayed in their envs with their seeds and recorded actions. Expert and model
episodes verify clean; an edited action or reward (a new shard replacing the original, as the layout writes one)
and an edited game file (through the task hash) are caught by episode, step and field; imported and error
episodes count as not replayable; a pass killed mid-way resumes without replaying what it finished."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import paced_env
import pyarrow as pa
import pytest
from policy_server import PolicyServer

import agent_sft
from agent_sft.cli import main
from agent_sft.dataset import layout, shards

TESTS = Path(__file__).parent


def verify_json(d) -> dict:
    return json.loads((Path(d) / "meta" / "verify.json").read_text())


def copy(folder, tmp_path, name="copy") -> Path:
    """A copy of a session fixture's folder (verify writes meta/verify.json and the card)."""
    return Path(shutil.copytree(folder, tmp_path / name))


def raw_files(d) -> list[Path]:
    return [Path(layout.shard_path(str(d), "raw", sp, n)) for sp in ("train", "validation")
            for n in sorted(layout.open_scan(str(d), layout.read_info(str(d))).raw[sp])]


def tamper(d, edit) -> tuple[str, int]:
    """Rewrite the first raw shard with `edit(row)` applied to its first episode that `edit` changes (it returns
    the step it edited, else None), as a new shard that `replaces` it; (that episode's id, the step)."""
    path = raw_files(d)[0]
    meta = shards.shard_meta(str(path))
    rows = shards.read_shard(str(path)).to_pylist()
    for row in rows:
        step = edit(row)
        if step is not None:
            break
    else:
        raise AssertionError("no episode to edit")
    out = path.with_name("zz-tampered.arrow")
    shards.write_shard(str(out), "raw", pa.Table.from_pylist(rows, schema=shards.read_shard(str(path)).schema),
                       {**meta, "replaces": [path.name]})
    assert path.name not in layout.open_scan(str(d), layout.read_info(str(d))).raw[meta["split"]]
    return row["episode_id"], step


def test_expert_and_off_plan_episodes_verify_clean_and_edited_shards_are_caught(flaky_folders, tool_folders,
                                                                                 tmp_path, capsys):
    # the flaky expert's wrong turns and answers without tags (their text reached the env in the action's place)
    d = copy(flaky_folders["window"], tmp_path, "flaky")
    assert main(["verify", str(d), "--no-progress"]) == 0
    v = verify_json(d)
    assert (v["selected"], v["verified"], v["matched"], v["mismatched"], v["errors"]) == (20, 20, 20, 0, 0)
    assert v["per_env"] == {"frozenlake": {"matched": 20, "mismatched": 0, "error": 0, "not_replayable": 0}}
    assert v["versions"]["engines"]["frozenlake"]["gymnasium"] and v["shards"] and not v["resumed"]
    assert not (d / "meta" / "verify.partial.jsonl").exists()
    card = (d / "README.md").read_text()
    assert "**Verified:** 20 of 20 episodes replayed in their envs" in card and "20 matched, 0 mismatched" in card
    assert "20 of 20 episodes replayed (0 from an earlier pass): 20 matched" in capsys.readouterr().out
    before = {p.name: p.read_bytes() for p in raw_files(d)}

    def reward(row):  # the last step's reward of a won episode
        if row["success"]:
            row["steps"][-1]["reward"] = 0.5
            return len(row["steps"]) - 1
        return None

    episode, step = tamper(d, reward)
    assert main(["compact", str(d)]) == 0  # the card written again: the shards verify replayed are gone
    assert "**Verified (of an earlier state of the folder: " in (d / "README.md").read_text()
    assert main(["verify", str(d), "--no-progress"]) == 1
    v = verify_json(d)
    assert (v["matched"], v["mismatched"]) == (19, 1)
    m = v["mismatches"][0]
    assert (m["episode_id"], m["step"], m["field"], m["recorded"], m["replayed"]) == (episode, step, "reward", 0.5, 1.0)
    out = capsys.readouterr().out
    assert f"mismatch {episode} ({m['task_id']}) step {step}, reward: recorded 0.5, replayed 1.0" in out
    assert all((d / "data" / "raw" / sp).is_dir() for sp in ("train", "validation"))
    assert {p.name: p.read_bytes() for p in raw_files(d) if p.name in before} == {
        k: b for k, b in before.items() if k in {p.name for p in raw_files(d)}}  # raw shards are only read

    # tool-call episodes: an edited action (a step the policy played as it was parsed) is no longer what the step's
    # call gives
    d = copy(tool_folders["window"], tmp_path, "tools")

    def action(row):
        for s in row["steps"][:-1]:
            if "env_action" not in json.loads(s["info"]) and s["action"] in ("left", "right"):
                s["action"] = "up" if s["action"] != "up" else "down"
                return s["index"]
        return None

    assert main(["verify", str(d), "--no-progress"]) == 0 and verify_json(d)["matched"] == 4
    episode, step = tamper(d, action)
    assert main(["verify", str(d), "--no-progress"]) == 1
    m = verify_json(d)["mismatches"][0]
    assert (m["episode_id"], m["step"], m["field"], m["reason"]) == (episode, step, "response",
                                                                    "the answer gives another action")
    capsys.readouterr()


def test_an_edited_textworld_game_is_caught_through_its_task_hash(tmp_path, capsys):
    pytest.importorskip("textworld")
    from agent_sft.envs.textworld.games import builtin_games_root

    games = tmp_path / "games"
    games.mkdir()
    for suffix in (".z8", ".json"):
        shutil.copy(builtin_games_root() / f"tw-coin_collector-l1-s1{suffix}", games)
    d = tmp_path / "tw"
    agent_sft.collect(["env.env_name=textworld", f"env.textworld.games={games}", "env.backend=thread",
                       "env.num_episodes=2", "env.max_steps=8", f"output.dir={d}"])
    rows = [r for sp in agent_sft.load(str(d), "raw").values() for r in sp]
    assert len(rows) == 2 and all(r["task_hash"] for r in rows)
    assert main(["verify", str(d), "--no-progress"]) == 0 and verify_json(d)["matched"] == 2
    data = games / "tw-coin_collector-l1-s1.json"
    data.write_text(data.read_text() + "\n")  # the same game, another file
    assert main(["verify", str(d), "--no-progress"]) == 1
    v = verify_json(d)
    assert v["mismatched"] == 2 and {(m["step"], m["field"]) for m in v["mismatches"]} == {(None, "task_hash")}
    assert {m["recorded"] for m in v["mismatches"]} == {rows[0]["task_hash"]}
    assert "at the reset, the task changed since collection (task_hash)" in capsys.readouterr().out


def test_a_model_s_episodes_verify_and_its_error_episodes_are_not_replayable(tmp_path):
    d = tmp_path / "model"
    with PolicyServer(fail_seeds_mod=(5, 1)) as server:
        agent_sft.collect(["env.env_name=frozenlake", "env.backend=thread", "env.num_episodes=10", "env.max_steps=6",
                           "policy.type=openai", "policy.model=det", f"policy.base_url={server.url}",
                           "policy.max_retries=0", f"output.dir={d}"])
    rows = [r for sp in agent_sft.load(str(d), "raw").values() for r in sp]
    errors = sum(r["end_reason"] == "error" for r in rows)
    assert 0 < errors < len(rows) == 10
    assert main(["verify", str(d), "--no-progress", "--workers", "2"]) == 0  # the server is gone: no model is asked
    v = verify_json(d)
    assert (v["matched"], v["not_replayable"]) == (10 - errors, errors)
    assert v["not_replayable_reasons"] == {"ended by an error": errors}
    assert main(["verify", str(d), "--no-progress", "--limit", "3"]) == 0 and verify_json(d)["selected"] == 3


def test_imported_episodes_are_not_replayable_and_usage_errors_are_one_line(tool_folders, tmp_path, capsys):
    atif = tmp_path / "atif"
    assert main(["export", tool_folders["window"], "--format", "atif", "--out", str(atif)]) == 0
    d = tmp_path / "imported"
    assert main(["import", "--format", "atif", str(d), str(atif), "--env", "frozenlake"]) == 0
    capsys.readouterr()
    assert main(["verify", str(d), "--no-progress"]) == 0
    v = verify_json(d)
    assert (v["verified"], v["not_replayable"], v["selected"]) == (0, 4, 4)
    assert v["not_replayable_reasons"] == {"imported (no seed or config to replay it with)": 4}
    capsys.readouterr()
    for args, said in ((["--env", "taxi"], "--env taxi: the folder's episodes are of frozenlake"),
                       (["--workers", "0"], "--workers: must be at least 1")):
        assert main(["verify", tool_folders["window"], *args]) == 2
        err = capsys.readouterr().err.strip()
        assert said in err and len(err.splitlines()) == 1
    assert main(["verify", str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_an_old_folder_verifies_by_replay_alone_merges_with_a_new_one_and_a_missing_engine_is_named(tmp_path, capsys):
    d = copy(TESTS / "data" / "pre_house_mix", tmp_path, "old")  # written before the task_hash column
    assert main(["verify", str(d), "--no-progress"]) == 0
    v = verify_json(d)
    assert v["per_env"]["frozenlake"]["matched"] == 3 and v["per_env"]["taxi"]["matched"] == 3
    # merged with a folder written since: its new episodes keep their hash, the old ones have none
    new = tmp_path / "new"
    agent_sft.collect(["env.mix=[{env: frozenlake, episodes: 4}, {env: taxi, episodes: 4}]", "loop.mode=async",
                       "data.val_fraction=0.5", "data.val_batch_size=3", "env.backend=thread", f"output.dir={new}"])
    assert main(["merge", str(tmp_path / "merged"), str(d), str(new)]) == 0
    hashes = [r["task_hash"] for sp in agent_sft.load(str(tmp_path / "merged"), "raw").values() for r in sp]
    assert len(hashes) == 8 and sum(h is None for h in hashes) == 6
    assert main(["verify", str(tmp_path / "merged"), "--no-progress"]) == 0 and verify_json(tmp_path / "merged")["matched"] == 8
    from agent_sft.envs import register, spec

    paced = spec(paced_env.NAME)
    p = tmp_path / "paced"
    agent_sft.collect([f"env.env_name={paced_env.NAME}", "env.backend=thread", "env.num_episodes=1", f"output.dir={p}"])
    register(paced_env.NAME, paced.entry_point, packages=("agent-sft-paced-engine",), extra="paced")
    try:
        capsys.readouterr()
        assert main(["verify", str(p)]) == 2
        err = capsys.readouterr().err.strip()
        assert "needs agent-sft-paced-engine, which is not installed: pip install 'agent-sft[paced]'" in err
        assert len(err.splitlines()) == 1 and not (p / "meta" / "verify.json").exists()
    finally:
        register(paced)


def test_a_verify_killed_mid_way_resumes_without_replaying_finished_episodes(tmp_path):
    d = tmp_path / "paced"
    agent_sft.collect([f"env.env_name={paced_env.NAME}", "env.backend=thread", "env.num_episodes=6", f"output.dir={d}"])
    partial = d / "meta" / "verify.partial.jsonl"
    code = "import sys, paced_env; from agent_sft.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", code, "verify", str(d), "--workers", "1", "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.exists() and len(partial.read_text().splitlines()) >= 3:  # its header and two episodes
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    finished = []
    for line in partial.read_text().splitlines()[1:]:
        try:
            finished.append(json.loads(line)["episode_id"])
        except ValueError:
            pass  # the line the kill cut short
    assert 2 <= len(finished) < 6 and not (d / "meta" / "verify.json").exists()
    assert main(["verify", str(d), "--no-progress"]) == 0
    v = verify_json(d)
    assert (v["matched"], v["resumed"], v["replayed"]) == (6, len(finished), 6 - len(finished))
    assert not partial.exists()
    agent_sft.collect([f"env.env_name={paced_env.NAME}", "env.backend=thread", "env.num_episodes=8", f"output.dir={d}"])
    card = (d / "README.md").read_text()  # the collection compacted its shards with the ones verify replayed
    assert ("**Verified (of an earlier state of the folder: 1 of the shards it replayed were rewritten since, compacted "
            "or edited; 8 episodes now, 6 then):** 6 of 6 episodes replayed") in card
    from agent_sft.dataset.card import verified_line

    added = {"rewritten_shards": 0, "new_shards": 1, "episodes_then": 6, "episodes_now": 8}
    assert verified_line({**v, "changed_since": added}).startswith(
        "**Verified (before the last 2 new episodes, which it did not replay):** 6 of 6 episodes")


def test_episodes_played_on_an_env_server_replay_there(tmp_path):
    from serve_helpers import Server

    from agent_sft.envs.http import HttpOptions

    server = Server(tmp_path, "frozenlake")
    d = tmp_path / "http"
    try:
        agent_sft.collect(["env.env_name=http", f"env.http.url={server.url}", "env.backend=thread", "env.num_episodes=3",
                           "env.max_steps=8", "env.http.retries=0", "env.http.timeout_s=5", f"output.dir={d}"])
        assert all(r["task_hash"] for sp in agent_sft.load(str(d), "raw").values() for r in sp)  # the served env's
        assert main(["verify", str(d), "--no-progress"]) == 0
        assert (verify_json(d)["matched"], verify_json(d)["per_env"].keys()) == (3, {"frozenlake"})
    finally:
        server.stop()
    assert main(["verify", str(d), "--no-progress", "--workers", "1"]) == 1  # no server: replays fail, not differ
    v = verify_json(d)
    assert (v["errors"], v["mismatched"]) == (3, 0) and v["error_list"][0]["reason"].startswith("env reset failed")
    agentgym = HttpOptions(url=["http://127.0.0.1:9"], protocol="agentgym-webshop")
    assert agentgym.replays() == "agentgym-webshop servers take no episode seed to replay an episode with"


@pytest.mark.envs
def test_babyai_and_textarena_expert_episodes_verify_clean(tmp_path):
    pytest.importorskip("minigrid")
    pytest.importorskip("textarena")
    for env, args in (("babyai", ["env.backend=thread"]),  # TextArena may not share a process: one worker process
                      ("textarena", ["env.textarena.games=[TowerOfHanoi-v0, FrozenLake-v0]", "data.val_batch_size=1"])):
        agent_sft.collect([f"env.env_name={env}", *args, "env.num_episodes=3", "env.max_steps=12",
                           f"output.dir={tmp_path / env}"])
        assert main(["verify", str(tmp_path / env), "--no-progress"]) == 0
        assert verify_json(tmp_path / env)["per_env"][env]["matched"] == 3


@pytest.mark.extended
@pytest.mark.alfworld
def test_alfworld_textworld_and_webshop_expert_episodes_verify_clean(webshop_checkout, tmp_path):
    pytest.importorskip("alfworld")
    d = tmp_path / "mix"
    agent_sft.collect(["env.mix=[{env: alfworld, episodes: 3}, {env: textworld, episodes: 3}, {env: taxi, episodes: 2}]",
                       "env.max_steps=30", f"output.dir={d}"])
    w = tmp_path / "webshop"
    agent_sft.collect(["env.env_name=webshop", f"env.webshop.path={webshop_checkout}", "env.webshop.test_goals=4",
                       "env.num_episodes=4", "env.max_steps=15", f"output.dir={w}"])
    for folder, envs in ((d, {"alfworld": 3, "textworld": 3, "taxi": 2}), (w, {"webshop": 4})):
        assert main(["verify", str(folder), "--no-progress"]) == 0
        v = verify_json(folder)
        assert {e: c["matched"] for e, c in v["per_env"].items()} == envs and v["mismatched"] == 0


def test_a_pass_whose_progress_cannot_be_kept_stops_in_one_line_and_keeps_what_it_replayed(flaky_folders, tmp_path):
    import threading

    from agent_sft.errors import RunFailedError
    from agent_sft.verify import verify_folder

    d = copy(flaky_folders["window"], tmp_path)
    seen = []

    def full_disk(o, done, total):
        seen.append(o.episode_id)
        raise OSError(28, "No space left on device")

    got: list[BaseException] = []
    t = threading.Thread(target=lambda: got.append(pytest.raises(RunFailedError, verify_folder, str(d), workers=1,
                                                                 on_outcome=full_disk).value), daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "verify did not end"
    msg = str(got[0])
    assert "the pass stopped: OSError: [Errno 28] No space left on device" in msg and len(msg.splitlines()) == 1
    kept = (d / "meta" / "verify.partial.jsonl").read_text().splitlines()[1:]
    assert [json.loads(line)["episode_id"] for line in kept] == seen[:1] and not (d / "meta" / "verify.json").exists()


def test_a_slow_env_of_a_mix_does_not_hold_up_the_others(tmp_path):
    from agent_sft.dataset import reading
    from agent_sft.verify import verify_folder
    from agent_sft.verify.source import index

    d = tmp_path / "mix"
    agent_sft.collect([f"env.mix=[{{env: {paced_env.NAME}, episodes: 4}}, {{env: frozenlake, episodes: 2}}]",
                       "env.backend=thread", f"output.dir={d}"])
    assert [r["env"] for r in index(str(d), reading.folder_status(str(d))[1])][:4] == [paced_env.NAME] * 4
    order = []
    verify_folder(str(d), workers=1, on_outcome=lambda o, done, total: order.append(o.env))
    assert order == ["frozenlake"] * 2 + [paced_env.NAME] * 4  # the paced env's episodes come first in the folder


def test_a_resumed_pass_replays_only_rows_changed_since_and_a_shard_replaced_mid_pass_is_read_where_it_went(
        flaky_folders, tmp_path):
    from agent_sft.errors import RunFailedError
    from agent_sft.verify import verify_folder
    from agent_sft.verify.source import iter_rows

    d = copy(flaky_folders["window"], tmp_path)

    def stop_at_five(o, done, total):
        if done == 5:
            raise KeyboardInterrupt("stopped")

    with pytest.raises(RunFailedError):
        verify_folder(str(d), workers=1, on_outcome=stop_at_five)
    kept = [json.loads(line)["episode_id"] for line in (d / "meta" / "verify.partial.jsonl").read_text().splitlines()[1:]]
    assert len(kept) == 5

    def reward(row):  # an episode the stopped pass replayed, edited in a shard replacing its own
        if row["episode_id"] == kept[0]:
            row["steps"][-1]["reward"] = 0.25
            return len(row["steps"]) - 1
        return None

    old = raw_files(d)[0]
    episode, step = tamper(d, reward)
    assert main(["verify", str(d), "--no-progress"]) == 1
    v = verify_json(d)
    assert (v["resumed"], v["replayed"], v["matched"], v["mismatched"]) == (4, 16, 19, 1)
    assert (v["mismatches"][0]["episode_id"], v["mismatches"][0]["field"]) == (episode, "reward")
    # the shard a pass was about to read is gone (a compaction's garbage): its episodes are read where they are now
    ids = {r["episode_id"] for r in shards.read_shard(str(old)).to_pylist()}
    old.unlink()
    rows = list(iter_rows(str(d), [str(old)], False, ids))
    assert sorted(r["episode_id"] for r in rows) == sorted(ids)
    assert next(r for r in rows if r["episode_id"] == episode)["steps"][-1]["reward"] == 0.25


def test_an_edited_response_or_assistant_message_is_caught(flaky_folders, tmp_path, capsys):
    d = copy(flaky_folders["chat"], tmp_path)

    def response(row):  # the action in a step's answer, its recorded action left as it was
        for s in row["steps"]:
            if s["valid"] and "<action>" in s["response"]:
                other = "left" if s["action"] != "left" else "right"
                s["response"] = s["response"].replace(f"<action>{s['action']}</action>", f"<action>{other}</action>")
                row["messages"][s["prompt_end"]]["content"] = s["response"]
                return s["index"]
        return None

    episode, step = tamper(d, response)
    assert main(["verify", str(d), "--no-progress"]) == 1
    m = verify_json(d)["mismatches"][0]
    assert (m["episode_id"], m["step"], m["field"], m["reason"]) == (episode, step, "response",
                                                                    "the answer gives another action")
    assert f"step {step}, response (the answer gives another action): recorded " in capsys.readouterr().out

    d = copy(flaky_folders["chat"], tmp_path, "message")

    def message(row):  # what the sft rows train on, the response left as it was
        s = row["steps"][0]
        row["messages"][s["prompt_end"]]["content"] += " (edited)"
        return 0

    episode, step = tamper(d, message)
    assert main(["verify", str(d), "--no-progress"]) == 1
    m = verify_json(d)["mismatches"][0]
    assert (m["episode_id"], m["step"], m["field"], m["reason"]) == (episode, 0, "response",
                                                                    "the assistant message is not the response")
