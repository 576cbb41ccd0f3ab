"""Attempts, successes and pass@k per task, per env and per task type: meta/stats.json, the card, `info`."""

import json

import pytest
from fixtures_data import make_episode

from agent_sft.dataset.per_task import pass_at_k
from agent_sft.dataset.reading import info_text
from agent_sft.dataset.writer import DatasetWriter
from agent_sft.records import END_ERROR


def test_pass_at_k_hand_computed_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0 and pass_at_k(4, 1, 4) == 1.0  # fewer than k failures
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(3, 4, 1)


def _write(folder, eps):
    with DatasetWriter(folder, fingerprint={}, meta={}) as w:
        for e in eps:
            w.add(e)
    return json.loads((folder / "meta" / "stats.json").read_text()), (folder / "README.md").read_text()


def test_four_samples_per_task_give_pass_at_1_and_pass_at_4(tmp_path):
    # task 0 (pick_and_place_simple): one success of 4; task 1 (look_at_obj_in_light): none, one attempt an error
    eps = [make_episode(0, i, success=i == 1) for i in range(4)] + [make_episode(1, i, success=False) for i in range(4)]
    eps[-1].end_reason = END_ERROR
    stats, card = _write(tmp_path / "d", eps)

    t0, t1 = (f"alfworld/{eps[0].task_id}", f"alfworld/{eps[4].task_id}")
    assert stats["by_task"] == {
        t0: {"attempts": 4, "successes": 1, "pass@1": 0.25, "pass@4": 1.0},
        t1: {"attempts": 4, "successes": 0, "pass@1": 0.0, "pass@4": 0.0},
    }
    pk = stats["pass_at_k"]
    assert pk["k"] == 4 and pk["samples_per_task"] == {"4": 2}
    every = {"tasks": 2, "attempts": 8, "successes": 1, "pass@1": 0.125, "pass@4": 0.5, "tasks_pass@4": 2}
    assert {k: pk[k] for k in every} == every
    assert pk["by_task_type"] == {
        "look_at_obj_in_light": {"tasks": 1, "attempts": 4, "successes": 0, "pass@1": 0.0, "pass@4": 0.0, "tasks_pass@4": 1},
        "pick_and_place_simple": {"tasks": 1, "attempts": 4, "successes": 1, "pass@1": 0.25, "pass@4": 1.0, "tasks_pass@4": 1},
    }
    env = pk["by_env"]["alfworld"]
    assert {k: env[k] for k in every} == every and env["by_task_type"] == pk["by_task_type"]
    # an error episode is an attempt, as it counts in the success rate
    assert stats["end_reasons"][END_ERROR] == 1
    assert stats["total_episodes"] == pk["attempts"] and stats["successes"] == pk["successes"]

    assert "\n".join([
        "Attempts and pass@k:",
        "",
        "| task type | tasks | attempts | won | pass@1 | pass@4 |",
        "|---|---:|---:|---:|---:|---:|",
        "| **all** | 2 | 8 | 1 | 12.5% | 50.0% |",
        "| look_at_obj_in_light | 1 | 4 | 0 | 0.0% | 0.0% |",
        "| pick_and_place_simple | 1 | 4 | 1 | 25.0% | 100.0% |",
    ]) in card
    assert "mean over the tasks with at least 4 attempts: 2 of 2" in card

    text, intact = info_text(str(tmp_path / "d"))
    assert intact
    assert ("pass@k alfworld: 2 tasks, 8 attempts, 1 won; pass@1 12.5%, pass@4 50.0% "
            "(over 2 tasks with 4+ attempts)") in text.splitlines()


def test_tasks_with_fewer_samples_are_left_out_of_pass_at_k(tmp_path):
    # 2 tasks of 3 samples and one of 1 (a run cut short): k is 3; pass@3 averages the 2 complete tasks
    eps = [make_episode(t, i, success=(t, i) == (0, 2)) for t in (0, 6) for i in range(3)] + [make_episode(12, 0, success=True)]
    stats, card = _write(tmp_path / "d", eps)
    pk = stats["pass_at_k"]
    assert pk["k"] == 3 and pk["samples_per_task"] == {"1": 1, "3": 2}
    assert (pk["tasks"], pk["attempts"], pk["tasks_pass@3"]) == (3, 7, 2)
    assert pk["pass@1"] == pytest.approx((1 / 3 + 0 + 1) / 3) and pk["pass@3"] == pytest.approx(0.5)
    assert stats["by_task"][f"alfworld/{eps[-1].task_id}"]["pass@3"] is None
    # all three are pick_and_place_simple (task index mod 6): the row says the average covers 2 tasks
    assert "| pick_and_place_simple | 3 | 7 | 2 | 44.4% | 50.0% (2 tasks) |" in card


def test_one_sample_per_task_is_one_line(tmp_path):
    stats, card = _write(tmp_path / "d", [make_episode(i, success=i % 2 == 0) for i in range(4)])
    pk = stats["pass_at_k"]
    assert pk["k"] == 1 and "pass@2" not in pk and pk["pass@1"] == stats["success_rate"] == 0.5
    assert len(stats["by_task"]) == 4
    assert "pass@1 equals the success rate: one sample per task." in card and "Attempts and pass@k" not in card
    text, _ = info_text(str(tmp_path / "d"))
    assert "pass@k alfworld: 4 tasks, 4 attempts, 2 won; pass@1 50.0% (one attempt per task: the success rate)" in text.splitlines()


def test_several_envs_get_a_row_each_and_their_task_types(tmp_path):
    eps = [make_episode(0, i, success=i == 0) for i in range(2)] + [make_episode(1, i, success=True) for i in range(2)]
    for e in eps[2:]:
        e.env = "textworld"
    stats, card = _write(tmp_path / "d", eps)
    assert list(stats["pass_at_k"]["by_env"]) == ["alfworld", "textworld"]
    assert "\n".join([
        "| env | task type | tasks | attempts | won | pass@1 | pass@2 |",
        "|---|---|---:|---:|---:|---:|---:|",
        "| **alfworld** | all | 1 | 2 | 1 | 50.0% | 100.0% |",
        "| alfworld | pick_and_place_simple | 1 | 2 | 1 | 50.0% | 100.0% |",
        "| **textworld** | all | 1 | 2 | 2 | 100.0% | 100.0% |",
        "| textworld | look_at_obj_in_light | 1 | 2 | 2 | 100.0% | 100.0% |",
    ]) in card
    lines = info_text(str(tmp_path / "d"))[0].splitlines()
    assert [ln for ln in lines if ln.startswith("pass@k ")] == [
        "pass@k alfworld: 1 task, 2 attempts, 1 won; pass@1 50.0%, pass@2 100.0% (over 1 task with 2+ attempts)",
        "pass@k textworld: 1 task, 2 attempts, 2 won; pass@1 100.0%, pass@2 100.0% (over 1 task with 2+ attempts)",
    ]
