"""Quality scores per episode (the `scores` config's rows): each score on an episode played for the purpose,
the length relative to the expert's plan or the task's shortest success, score names and bounds checked with a
did-you-mean, and every score on a real FrozenLake folder collected by an expert that sometimes goes wrong."""

from __future__ import annotations

import pyarrow as pa
import pytest
from fixtures_curation import answer, play, raw_rows

from agent_sft.dataset import scores
from agent_sft.dataset.stages import Ep
from agent_sft.errors import ConfigError
from agent_sft.records import END_ERROR, SCORES_SCHEMA

# At (0,0) north, back south, north again (a repeat and a loop), then at (0,1): east without <think> (invalid,
# out of format), a move the grid does not have (invalid, in format), no tag at all, east again (a repeat, and
# a loop of the unthought east), north at (1,1) (a repeat, not a loop).
WANDER = [answer("north", "go up there"), answer("south", "back"), answer("north", "again up"), "<action>east</action>",
          answer("fly", "hmm"), "I give up", answer("east", "go"), answer("north")]


def test_each_score_of_an_episode_played_for_the_purpose():
    row = play(0, WANDER, won=False, extra={"expert_plan_length": 4})
    assert [s["invalid_reason"] for s in row["steps"]][3:6] == [
        "missing <think>...</think> tag", "not admissible: 'fly'", "missing <action>...</action> tag"]
    got = scores.episode_scores(row)
    assert {k: got[k] for k in ("invalid_rate", "format_rate", "repeat_rate", "loop_rate", "reasoning_words")} == {
        "invalid_rate": 3 / 8, "format_rate": 6 / 8, "repeat_rate": 3 / 8, "loop_rate": 2 / 8, "reasoning_words": 8 / 8}
    assert (got["episode_length"], got["plan_length"], got["length_ratio"], got["judge"]) == (8, 4, None, [])
    assert (got["episode_id"], got["success"], got["end_reason"]) == (row["episode_id"], False, "failure")
    assert scores.episode_scores(row, require_think=False)["format_rate"] == 7 / 8
    pa.Table.from_pylist([got], schema=SCORES_SCHEMA)


def test_length_ratio_is_over_the_plan_when_known_else_the_tasks_shortest_success():
    rows = [
        play(0, WANDER, won=False, extra={"expert_plan_length": 4}),
        play(1, [answer(a) for a in ("north", "east", "north")], won=True),
        play(2, [answer(a) for a in ("north", "south", "north", "east", "west", "east")], won=True),
        play(3, [], won=False, end_reason=END_ERROR),
        play(4, [answer(a) for a in ("east", "west")], won=False, extra={"expert_plan_length": 0}),
        play(0, [answer(a) for a in ("east",) * 4], won=False, task=1),
    ]
    assert scores.task_references(rows) == {("grid", "grid/0"): 3}
    out = scores.relative([scores.episode_scores(r) for r in rows])
    assert [r["length_ratio"] for r in out] == [2.0, 1.0, 2.0, None, None, None]
    empty = out[3]
    assert empty["episode_length"] == 0 and all(
        empty[k] is None for k in ("invalid_rate", "format_rate", "repeat_rate", "loop_rate", "reasoning_words"))
    pa.Table.from_pylist(out, schema=SCORES_SCHEMA)
    eps = [Ep(order=(), episode_id=str(i), env="grid", task_id="grid/0", task_type="walk", success=won, length=n,
              passes=True, error=False) for i, (won, n) in enumerate([(True, 7), (False, 2), (True, 5)])]
    assert scores.task_references(eps) == {("grid", "grid/0"): 5}


def test_unknown_scores_and_bounds_out_of_range_are_refused_with_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"filters.select_by: unknown score 'invalid_rat'; did you mean 'invalid_rate'\?"):
        scores.check_score_name("invalid_rat", "filters.select_by")
    with pytest.raises(ConfigError, match="names no judge"):
        scores.check_score_name("judge.Big Model")
    assert scores.check_score_name("judge.qwen-7b").kind == "judge"
    assert {s.kind for s in scores.SCORES.values()} == {"episode", "relative"}
    assert set(scores.SCORES) == {f.name for f in SCORES_SCHEMA} - {
        "episode_id", "env", "task_id", "task_type", "sample_index", "split", "success", "end_reason", "judge", "dropped_by"}
    with pytest.raises(ConfigError, match=r"1.5 is out of range for invalid_rate, which lies in \[0, 1\]"):
        scores.check_threshold("invalid_rate", 1.5)
    with pytest.raises(ConfigError, match=r"-1 is out of range for reasoning_words, which lies in \[0, inf\]"):
        scores.check_threshold("reasoning_words", -1)
    with pytest.raises(ConfigError, match="must be a number, got 'high'"):
        scores.check_threshold("format_rate", "high")
    with pytest.raises(ConfigError, match="out of range for judge.gpt"):
        scores.check_threshold("judge.gpt", 2)
    assert scores.check_threshold("judge.gpt", 0.5) == 0.5 and scores.check_threshold("length_ratio", 3) == 3.0

    row = {**scores.episode_scores(play(0, WANDER, won=False)), "judge": [{"name": "gpt", "score": 0.7}]}
    assert scores.score_value(row, "judge.gpt") == 0.7
    assert scores.score_value(row, "judge.other") is None and scores.score_value(row, "plan_length") is None
    assert scores.score_value(row, "invalid_rate") == 3 / 8
    with pytest.raises(ConfigError, match="did you mean 'loop_rate'"):
        scores.score_value(row, "loops_rate")


def test_scores_of_a_real_folder(flaky_folders):
    rows = raw_rows(flaky_folders["window"])
    out = scores.relative([scores.episode_scores(r) for r in rows])
    pa.Table.from_pylist(out, schema=SCORES_SCHEMA)
    assert [r["episode_id"] for r in out] == [r["episode_id"] for r in rows]
    assert any(r["invalid_rate"] > 0 for r in out) and any(r["repeat_rate"] > 0 for r in out)
    for raw, got in zip(rows, out):
        n = raw["episode_length"]
        assert got["invalid_rate"] == raw["num_invalid"] / n
        # The flaky expert's wrong turns are admissible moves: every invalid answer is out of format.
        assert got["format_rate"] == pytest.approx(1 - got["invalid_rate"])
        assert got["reasoning_words"] * n == pytest.approx(3 * sum("a wrong turn" in s["response"] for s in raw["steps"]))
        assert got["loop_rate"] <= got["repeat_rate"]
        if got["success"]:
            assert got["length_ratio"] >= 1
    for task in {r["task_id"] for r in out}:
        won = [r for r in out if r["task_id"] == task and r["success"]]
        if won and all(r["plan_length"] is None for r in won):
            assert min(r["length_ratio"] for r in won) == 1.0
