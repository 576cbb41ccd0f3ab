"""The LLM judge (`agent-sft judge`): verdicts of a scripted loopback judge stored with their model, prompt,
seed and raw answer; malformed answers counted as failures and retried by the next run; listwise scores per
task; a judge killed mid-run completed by the next run; a judge server failing for good stops the run with
exit code 3, verdicts kept; another judge name is another score."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
from fixtures_data import make_episode
from fixtures_models import needs_vllm
from judge_server import JudgeServer

from agent_sft.cli import main
from agent_sft.config import PolicyConfig
from agent_sft.dataset import judged as store
from agent_sft.dataset.shards import read_shard
from agent_sft.dataset.writer import DatasetWriter
from agent_sft.judge import JudgeFailedError, judge_folder
from agent_sft.judge.prompts import POINTWISE_TEMPLATE, load_template
from agent_sft.judge.run import verdict_seed
from agent_sft.judge.verdict import read_score, read_scores
from agent_sft.policies.base import Completion
from agent_sft.records import END_ERROR, PolicyInfo

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> pathlib.Path:
    """Six expert episodes of FrozenLake: two tasks, three samples each."""
    d = tmp_path_factory.mktemp("judge") / "fl"
    assert main(["collect", "--no-progress", "env.env_name=frozenlake", "env.num_episodes=6", "env.samples_per_task=3",
                 "env.pool=thread", "data.val_fraction=0", f"output.dir={d}"]) == 0
    return d


@pytest.fixture
def folder(collected, tmp_path) -> pathlib.Path:
    shutil.copytree(collected, tmp_path / "fl")
    return tmp_path / "fl"


def raw_rows(folder) -> dict[str, dict]:
    import agent_sft

    return {r["episode_id"]: r for split in agent_sft.load(str(folder), "raw").values() for r in split}


def all_rows(folder, name) -> list[dict]:
    return [r for split, n in store.shard_files(str(folder), name)
            for r in read_shard(os.path.join(store.judge_dir(str(folder), name, split), n)).to_pylist()]


def answer(seed: int) -> str:
    """The scripted judge's answer to a request with this seed: JSON in prose, `score: n`, or no score."""
    kind = seed % 3
    if kind == 0:
        return f'Looking at the steps... ```json\n{{"score": {seed % 11}, "reason": "fine"}}\n```'
    if kind == 1:
        return f"<think>the agent went down</think>Score: {seed % 11}"
    return "I cannot judge this episode."


def test_verdicts_are_stored_with_model_prompt_seed_and_answer_and_malformed_ones_are_retried(folder, capsys):
    asked: dict[int, int] = {}

    def script(prompt, seed):  # the first answer to each request as `answer` says; a second one always reads
        asked[seed] = asked.get(seed, 0) + 1
        return answer(seed) if asked[seed] == 1 else '{"score": 10}'

    eps = raw_rows(folder)
    malformed = {e for e in eps if verdict_seed(0, [e]) % 3 == 2}
    assert 0 < len(malformed) < len(eps)
    with JudgeServer(script) as server:
        assert main(["judge", str(folder), "--name", "rubric", *server.overrides()]) == 0
        out = capsys.readouterr().out
        assert f"judge rubric: {len(eps) - len(malformed)} episodes scored, {len(malformed)} failed" in out
        verdicts = store.read_verdicts(str(folder), "rubric")
        assert set(verdicts) == set(eps)
        for eid, v in verdicts.items():
            seed = verdict_seed(0, [eid])
            assert (v["seed"], v["output"], v["model"], v["mode"]) == (seed, answer(seed), "judge-model", "pointwise")
            assert v["template_sha256"] == load_template("pointwise").sha256
            (message,) = json.loads(v["prompt"])
            assert eps[eid]["goal"] in message["content"] and eps[eid]["steps"][-1]["action"] in message["content"]
            if eid in malformed:
                assert v["score"] is None and "no score in the answer" in v["error"]
            else:
                assert v["score"] == pytest.approx((seed % 11) / 10) and v["error"] == ""
        assert store.judged_ids(str(folder), "rubric") == set(eps) - malformed

        before = server.requests
        assert main(["judge", str(folder), "--name", "rubric", *server.overrides()]) == 0
        assert f"judge rubric: {len(malformed)} episodes scored, {len(eps) - len(malformed)} scored before" \
            in capsys.readouterr().out
        assert server.requests - before == len(malformed)  # only the failed verdicts were asked again
    verdicts = store.read_verdicts(str(folder), "rubric")
    assert {eid for eid, v in verdicts.items() if v["score"] == 1.0} >= malformed
    assert store.judged_ids(str(folder), "rubric") == set(eps)
    assert len(all_rows(folder, "rubric")) == len(eps) + len(malformed)  # the failed rows stay; the latest wins


def test_listwise_scores_the_episodes_of_a_task_against_each_other(folder, tmp_path, capsys):
    eps = raw_rows(folder)
    tasks = sorted({e["task_id"] for e in eps.values()})
    template = tmp_path / "rank.txt"
    template.write_text("Rank these attempts at {task_id} ({goal}):\n{episodes}\nAnswer with {count} scores, as {example}.")

    def script(prompt, seed):  # RULER's shape for the first task; too few scores for the second
        return '{"scores": [{"score": 9}, {"score": 5}, {"score": 1}]}' if tasks[0] in prompt else "[8, 2]"

    with JudgeServer(script) as server:
        assert main(["judge", str(folder), "--name", "ranked", "--mode", "listwise", "--template", str(template),
                     *server.overrides()]) == 0
        assert server.requests == len(tasks)  # one prompt per task
    assert "judge ranked: 3 episodes scored, 3 failed" in capsys.readouterr().out
    verdicts = store.read_verdicts(str(folder), "ranked")
    assert set(verdicts) == set(eps) and {v["mode"] for v in verdicts.values()} == {"listwise"}
    for task, scores in zip(tasks, ([0.9, 0.5, 0.1], [None] * 3)):
        mine = sorted((eps[eid]["sample_index"], v) for eid, v in verdicts.items() if eps[eid]["task_id"] == task)
        assert len({v["prompt"] for _, v in mine}) == 1 and len({v["seed"] for _, v in mine}) == 1
        assert "=== Attempt 3 (6 steps) ===" in mine[0][1]["prompt"]
        assert [v["score"] for _, v in mine] == (pytest.approx(scores) if scores[0] else scores)
    assert {v["error"] for v in verdicts.values() if v["score"] is None} == {"expected 3 scores, one per attempt, got 2"}


def test_a_judge_killed_mid_run_is_completed_by_the_next_run_judging_only_what_is_missing(folder):
    eps = raw_rows(folder)
    with JudgeServer(lambda prompt, seed: '{"score": 6}', delay_s=0.4) as slow:
        cmd = [sys.executable, "-m", "agent_sft", "judge", str(folder), "--name", "k", "--flush-every", "2",
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
    kept = store.judged_ids(str(folder), "k")
    assert 2 <= len(kept) < len(eps)
    with JudgeServer(lambda prompt, seed: '{"score": 4}') as server:
        assert main(["judge", str(folder), "--name", "k", *server.overrides()]) == 0
        assert server.requests == len(eps) - len(kept)
    verdicts = store.read_verdicts(str(folder), "k")
    assert set(verdicts) == set(eps)
    assert {eid: v["score"] for eid, v in verdicts.items()} == {eid: 0.6 if eid in kept else 0.4 for eid in eps}
    assert len(all_rows(folder, "k")) == len(eps)  # nothing judged twice


def test_a_judge_server_that_fails_for_good_stops_the_run_with_exit_3_and_the_verdicts_are_kept(folder, capsys):
    eps = raw_rows(folder)
    with JudgeServer(lambda prompt, seed: '{"score": 7}', fail_after=2) as server:
        rc = main(["judge", str(folder), "--name", "down", "--flush-every", "1", *server.overrides(),
                   "policy.max_consecutive_failures=2"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "failed 2 requests in a row" in err and "The verdicts sealed so far are kept" in err
    verdicts = store.read_verdicts(str(folder), "down")
    assert sorted(v["score"] for v in verdicts.values() if v["score"] is not None) == [0.7, 0.7]
    assert [v["error"][:30] for v in verdicts.values() if v["score"] is None] == ["the judge's request failed: ga"]
    with JudgeServer(lambda prompt, seed: '{"score": 3}') as server:
        assert main(["judge", str(folder), "--name", "down", *server.overrides()]) == 0
        assert server.requests == len(eps) - 2
    assert store.judged_ids(str(folder), "down") == set(eps)


def test_another_judge_name_is_another_score_and_one_name_is_one_judge(folder, tmp_path, capsys):
    template = tmp_path / "strict.txt"
    template.write_text("Be strict. Goal: {goal}\n{episode}\nAnswer {{\"score\": n}} from 0 to 10.")
    with JudgeServer(lambda prompt, seed: '{"score": 2}' if "Be strict" in prompt else '{"score": 8}') as server:
        assert main(["judge", str(folder), "--name", "lenient", *server.overrides()]) == 0
        assert main(["judge", str(folder), "--name", "strict", "--template", str(template),
                     *server.overrides("judge-two")]) == 0
        lenient = store.read_verdicts(str(folder), "lenient")
        assert main(["judge", str(folder), "--name", "lenient", *server.overrides("judge-two")]) == 2
        err = capsys.readouterr().err
        assert "judge 'lenient'" in err and "model 'judge-model' (now 'judge-two')" in err and "give --name a new one" in err
    strict = store.read_verdicts(str(folder), "strict")
    assert {v["score"] for v in lenient.values()} == {0.8} and {v["score"] for v in strict.values()} == {0.2}
    assert {v["template_sha256"] for v in strict.values()} == {load_template("pointwise", str(template)).sha256}
    assert {v["model"] for v in strict.values()} == {"judge-two"}
    assert store.read_verdicts(str(folder), "lenient") == lenient  # never overwritten
    assert store.judge_names(str(folder)) == ["lenient", "strict"]
    assert all(sorted(s["name"] for s in v) == ["lenient", "strict"] for v in store.judge_scores(str(folder)).values())


def test_bad_names_templates_and_keys_are_refused_with_one_line(folder, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("Goal {goal}, episode {episode}, and {reward}")
    no_episode = tmp_path / "none.txt"
    no_episode.write_text("Goal {goal}: score it")
    base = ["judge", str(folder), "policy.type=openai", "policy.model=m", "policy.base_url=http://127.0.0.1:9/v1"]
    for args, said in (
        (["--name", "Bad Name"], "a judge name is 1-64 lower-case letters"),
        (["--name", "j", "--template", str(bad)], "unknown placeholder {reward}"),
        (["--name", "j", "--template", str(no_episode)], "must contain {episode}"),
        (["--name", "j", "--template", str(tmp_path / "missing.txt")], "cannot read it"),
        (["--name", "j", "env.seed=3"], "takes the policy.* keys only"),
    ):
        assert main([*base, *args]) == 2
        assert said in capsys.readouterr().err
    assert main(["judge", str(folder), "--name", "j"]) == 2
    assert "plays no model, so it cannot judge" in capsys.readouterr().err
    assert not (folder / "data" / "judge").exists()


def test_answers_are_read_wherever_the_score_is_and_refused_out_of_range():
    assert read_score('Sure. {"reason": "ok", "score": 7}').score == pytest.approx(0.7)
    assert read_score('{"verdict": {"score": "10"}}').score == 1.0
    assert read_score("<think>score: 2? no</think>Final score = 9").score == pytest.approx(0.9)
    assert read_score('{"score": 11}').error == "the score 11 is outside 0-10"
    assert read_score('{"score": true}').score is None
    assert read_score("").error == "the answer is empty"
    assert [v.score for v in read_scores('{"scores": [{"id": 1, "score": 4}, {"id": 2, "score": 6}]}', 2)] == [0.4, 0.6]
    assert [v.score for v in read_scores("ranking [1, 2, 3] then [3, 10]", 2)] == [0.3, 1.0]
    assert read_scores("[3]", 2)[1].error == "expected 2 scores, one per attempt, got 1"


class _Backend:
    """A backend answering every request with `completion` (as vLLM's or transformers' policies answer)."""

    def __init__(self, completion: Completion):
        self.completion = completion

    def act(self, conversations, seeds, infos=None):
        return [self.completion for _ in conversations]

    def describe(self):
        return PolicyInfo("vllm", "tiny")

    def close(self):
        pass


def test_error_episodes_are_left_aside_and_a_failing_backend_stops_after_its_limit(tmp_path):
    d = tmp_path / "ds"
    with DatasetWriter.open(d, fingerprint={"env": "alfworld", "seed": 0}) as w:
        for i in range(5):
            ep = make_episode(i, val_fraction=0.5)
            if i == 0:
                ep.end_reason, ep.error = END_ERROR, "env step failed"
            w.add(ep)
    eps = {e["episode_id"]: e for e in raw_rows(d).values() if e["end_reason"] != END_ERROR}
    cfg = PolicyConfig(type="vllm", model="tiny", max_consecutive_failures=3)
    failing = _Backend(Completion(text="", finish_reason="error", error="engine died"))
    with pytest.raises(JudgeFailedError, match="failed 3 requests in a row"):
        judge_folder(str(d), "t", cfg, policy=failing, flush_every=1)
    rows = store.read_verdicts(str(d), "t")
    assert len(rows) == 3 and {r["error"] for r in rows.values()} == {"the judge's request failed: engine died"}
    result = judge_folder(str(d), "t", cfg, policy=_Backend(Completion(text='{"score": 5}')))
    assert (result.judged, result.failed, result.skipped, result.errors) == (4, 0, 0, 1)
    assert store.judged_ids(str(d), "t") == set(eps)
    for split, name in store.shard_files(str(d), "t"):  # each verdict lies in its episode's split
        path = os.path.join(store.judge_dir(str(d), "t", split), name)
        assert {eps[eid]["split"] for eid in read_shard(path).column("episode_id").to_pylist()} == {split}
    assert {split for split, _ in store.shard_files(str(d), "t")} == {e["split"] for e in eps.values()}


@pytest.mark.extended
@pytest.mark.vllm
@needs_vllm
def test_the_tiny_model_judges_through_vllm(folder, vllm_policy, tiny_model_dir):
    cfg = PolicyConfig(type="vllm", model=tiny_model_dir, max_tokens=16)
    result = judge_folder(str(folder), "tiny", cfg, policy=vllm_policy, limit=3)
    assert result.judged + result.failed == 3 and result.left == 3
    rows = store.read_verdicts(str(folder), "tiny")
    assert len(rows) == 3 and {r["model"] for r in rows.values()} == {vllm_policy.describe().model}
    assert all(r["output"] or r["error"] for r in rows.values())
    assert POINTWISE_TEMPLATE.split("\n")[0] in next(iter(rows.values()))["prompt"]
