from fixtures_data import make_episode

from agent_sft.dataset.formats import episode_to_row, resolve_style, seed_record, sft_rows, verl_row
from agent_sft.records import SFT_SCHEMA, episode_id, prompt_of, task_split


def test_window_episode_gives_one_row_per_step_with_its_own_prompt():
    ep = make_episode(3, steps=4)
    row = episode_to_row(ep)
    rows = sft_rows(row)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for r, step in zip(rows, ep.steps):
        assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
        assert r["messages"][1]["content"].endswith(step.observation)
        assert r["messages"][-1]["content"] == step.response
        assert r["episode_id"] == ep.episode_id and r["task_type"] == ep.task_type
    assert "prompt" not in rows[0]  # TRL would switch to its prompt-completion path
    assert set(rows[0]) == set(SFT_SCHEMA.names)


def test_chat_episode_gives_one_row_with_every_turn():
    ep = make_episode(4, steps=3, style="chat")
    rows = sft_rows(episode_to_row(ep))
    assert len(rows) == 1
    roles = [m["role"] for m in rows[0]["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert rows[0]["step"] is None and rows[0]["reward"] == ep.final_reward


def test_chat_step_prompts_are_prefixes_not_copies():
    ep = make_episode(5, steps=3, style="chat")
    p2 = ep.step_prompt(ep.steps[2])
    assert p2 == ep.messages[:6] and p2[-1]["role"] == "user"
    assert all(s.prompt_start == 1 for s in ep.steps)  # stored as a window, never copied


def test_style_override_and_unknown_style():
    row = episode_to_row(make_episode(1, steps=3, style="chat"))
    assert len(sft_rows(row, "step")) == 3
    assert resolve_style("auto", "window") == "step"
    try:
        resolve_style("sideways", "chat")
    except ValueError as e:
        assert "sideways" in str(e)
    else:
        raise AssertionError("unknown style accepted")


def test_raw_row_totals_and_original_record_fields():
    ep = make_episode(2, steps=5, success=True, invalid_at=1)
    row = episode_to_row(ep)
    assert row["final_reward"] == sum(row["rewards"]) == 1.0
    assert row["episode_length"] == 5 and row["num_invalid"] == 1
    assert row["prompt_tokens"] == sum(40 + t for t in range(5))
    rec = seed_record(row)
    assert set(rec) == {"messages_list", "success", "rewards", "final_reward", "task_info", "episode_length"}
    assert rec["task_info"]["task_id"] == ep.task_id and rec["success"] is True


def test_verl_row_prompt_is_messages_before_the_trained_turn():
    sft = sft_rows(episode_to_row(make_episode(0, steps=2)))[1]
    v = verl_row(sft, "train", 7)
    assert v["prompt"] == sft["messages"][:-1] and v["prompt"][-1]["role"] == "user"
    assert v["response"] == sft["messages"][-1]["content"]
    assert v["extra_info"]["index"] == 7 and v["extra_info"]["split"] == "train"
    assert v["reward_model"]["ground_truth"] == sft["goal"]


def test_ids_and_splits_are_functions_of_the_task_only():
    a = episode_id("alfworld", "json_2.1.1/train/x/trial_1", 0, 0)
    assert a == episode_id("alfworld", "json_2.1.1/train/x/trial_1", 0, 0)
    assert a != episode_id("alfworld", "json_2.1.1/train/x/trial_1", 0, 1)
    assert a != episode_id("alfworld", "json_2.1.1/train/x/trial_1", 1, 0)
    tasks = [f"json_2.1.1/train/t{i}/trial_0" for i in range(2000)]
    val = [t for t in tasks if task_split(t, 0.1) == "validation"]
    assert 150 < len(val) < 250  # about the configured fraction
    assert all(task_split(t, 0.1) == "validation" for t in val)  # stable
    assert task_split(tasks[0], 0.0) == "train"


def test_prompt_of_adds_the_system_message_to_a_window():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u0"},
            {"role": "assistant", "content": "a0"}, {"role": "user", "content": "u1"}]
    assert prompt_of(msgs, 3, 4) == [msgs[0], msgs[3]]
    assert prompt_of(msgs, 0, 2) == msgs[:2]
