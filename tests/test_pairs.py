"""Preference pairs (the `dpo` config's rows): a success against a failure of the same task with their shared
prompt (ETO's pairs), and per step where two episodes act alike and then diverge; in both prompt styles, on
episodes played for the purpose and on real FrozenLake folders; and a 2-step TRL DPOTrainer run on them."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from fixtures_curation import answer, play, raw_rows

from agent_sft.dataset import pairs
from agent_sft.dataset.formats import sft_rows
from agent_sft.records import DPO_SCHEMA, END_ERROR, prompt_of


def moves(*actions: str) -> list[str]:
    return [answer(a) for a in actions]


def conversation(row: dict) -> list[dict]:
    """The episode as the `episode` sft style trains it."""
    return sft_rows(row, "episode")[0]["messages"]


@pytest.mark.parametrize("style", ["window", "chat"])
def test_a_success_against_a_failure_keeps_their_shared_prompt(style):
    rows = [
        play(0, moves("north", "east", "north"), won=True, style=style),
        play(1, moves("north", "west", "south", "south"), won=False, style=style),
        play(2, moves("east", "north", "north"), won=True, style=style),
        play(3, moves("north", "west"), won=False, style=style, end_reason=END_ERROR),
        play(4, moves("north", "north", "east"), won=False, style=style),
        play(5, moves("east", "east", "north"), won=True, style=style),
    ]
    got = pairs.episode_pairs(rows)
    pa.Table.from_pylist(got, schema=DPO_SCHEMA)
    # The i-th success with the i-th failure by sample index; the error episode is never used.
    assert [(p["chosen_episode_id"], p["rejected_episode_id"]) for p in got] == [
        (rows[0]["episode_id"], rows[1]["episode_id"]), (rows[2]["episode_id"], rows[4]["episode_id"])]
    first, second = got
    a, b = conversation(rows[0]), conversation(rows[1])
    assert first["prompt"] == a[:4] and [m["role"] for m in first["prompt"]] == ["system", "user", "assistant", "user"]
    assert first["chosen"] == a[4:] and first["rejected"] == b[4:] and first["step"] == 1
    assert [m["role"] for m in first["rejected"]] == ["assistant", "user", "assistant", "user", "assistant"]
    assert "You stand at (-1, 1)." in first["rejected"][1]["content"]  # the env's observation, a user turn
    assert (first["chosen_reward"], first["rejected_reward"], first["pair"]) == (1.0, 0.0, "episode")
    # Diverging at the first answer: the prompt is the system message and the first user turn.
    assert second["prompt"] == conversation(rows[2])[:2] and second["step"] is None
    assert second["prompt"] + second["rejected"] == conversation(rows[4])
    assert pairs.episode_pairs(rows, max_pairs=1) == [first]


def test_pairs_that_share_no_prompt_or_no_difference_are_left_out():
    win = play(0, moves("north", "east"), won=True)
    other_goal = play(1, moves("north", "west"), won=False)
    other_goal["messages"][1] = {"role": "user", "content": "Task: another goal"}
    assert pairs.episode_pairs([win, other_goal]) == []
    same = play(1, moves("north", "east"), won=False)  # the same answers, and the env said otherwise
    assert pairs.episode_pairs([win, same]) == []
    with pytest.raises(ValueError, match="one task, got 2 tasks"):
        pairs.episode_pairs([win, play(1, moves("north"), won=False, task=1)])


def test_step_pairs_are_one_answer_each_to_the_same_prompt():
    def rows(style):
        return [
            play(0, moves("north", "east", "north"), won=True, style=style),
            play(1, [answer("north", "hmm"), answer("west"), answer("west")], won=False, style=style),
            play(2, moves("north", "west", "south"), won=False, style=style),
            play(3, moves("north", "east", "north"), won=True, style=style),
            play(4, moves("north", "east", "north", "west"), won=False, style=style),
            play(5, moves("south"), won=False, style=style),
        ]

    window = rows("window")
    got = pairs.step_pairs(window)
    pa.Table.from_pylist(got, schema=DPO_SCHEMA)
    # (0, 1), (0, 2), (3, 1) and (3, 2) are one pair at step 1; 4 acts as 0 did and goes on; 5 differs at step 0.
    assert [(p["step"], p["chosen_episode_id"], p["rejected_episode_id"]) for p in got] == [
        (1, window[0]["episode_id"], window[1]["episode_id"]), (0, window[0]["episode_id"], window[5]["episode_id"])]
    one, zero = got
    step = window[0]["steps"][1]
    assert one["prompt"] == prompt_of(window[0]["messages"], step["prompt_start"], step["prompt_end"])
    assert [m["role"] for m in one["prompt"]] == ["system", "user"]
    assert one["chosen"] == [{"role": "assistant", "content": answer("east")}]
    assert one["rejected"] == [{"role": "assistant", "content": answer("west")}]
    assert zero["rejected"] == [{"role": "assistant", "content": answer("south")}] and zero["pair"] == "step"
    assert pairs.step_pairs(window, max_pairs=1) == [one]
    # In a growing chat the step-1 prompt holds the step-0 answer: episode 1 thought otherwise, so its prompt
    # differs and only episode 2 pairs at step 1.
    chat = rows("chat")
    assert [(p["step"], p["rejected_episode_id"]) for p in pairs.step_pairs(chat)] == [
        (1, chat[2]["episode_id"]), (0, chat[5]["episode_id"])]


def test_why_a_folder_has_no_pairs():
    solved = [play(s, moves("north"), won=True, task=t) for t in (0, 1) for s in range(2)]
    never = play(0, moves("south"), won=False, task=2)
    broken = play(1, [], won=False, task=0, end_reason=END_ERROR)
    assert pairs.why_no_pairs([*solved, never, broken]) == (
        "no dpo config: no task has both a successful and a failed episode (3 tasks: 2 always solved, 1 never solved)")
    assert pairs.why_no_pairs([broken]) == "no dpo config: the folder has no episode that ended without an error"
    assert pairs.why_no_pairs([*solved, play(5, moves("south"), won=False, task=1)]) is None
    assert pairs.pairs_of([*solved, never, broken]) == []


def real_pairs(folder: str) -> tuple[list[dict], dict[str, dict]]:
    rows = raw_rows(folder)
    made = pairs.pairs_of(rows, "episode", max_pairs=4) + pairs.pairs_of(rows, "step", max_pairs=4)
    pa.Table.from_pylist(made, schema=DPO_SCHEMA)
    return made, {r["episode_id"]: r for r in rows}


@pytest.mark.parametrize("style", ["window", "chat"])
def test_pairs_of_a_real_folder(flaky_folders, style):
    made, by_id = real_pairs(flaky_folders[style])
    assert pairs.why_no_pairs(by_id.values()) is None
    kinds = [p["pair"] for p in made]
    assert kinds.count("episode") >= 2 and kinds.count("step") >= 2
    for p in made:
        win, loss = by_id[p["chosen_episode_id"]], by_id[p["rejected_episode_id"]]
        assert win["success"] and not loss["success"] and win["task_id"] == loss["task_id"] == p["task_id"]
        assert p["chosen"][0]["role"] == p["rejected"][0]["role"] == "assistant" and p["prompt"][-1]["role"] == "user"
        if p["pair"] == "episode":
            assert p["prompt"] + p["chosen"] == conversation(win) and p["prompt"] + p["rejected"] == conversation(loss)
        else:
            t = p["step"]
            assert [s["action"] for s in win["steps"][:t]] == [s["action"] for s in loss["steps"][:t]]
            assert win["steps"][t]["action"] != loss["steps"][t]["action"]
            for ep in (win, loss):
                s = ep["steps"][t]
                assert p["prompt"] == prompt_of(ep["messages"], s["prompt_start"], s["prompt_end"])
            assert (p["chosen"][0]["content"], p["rejected"][0]["content"]) == (
                win["steps"][t]["response"], loss["steps"][t]["response"])


def test_dpo_trainer_trains_two_steps_on_a_real_folders_dpo_config(flaky_folders, tiny_model_dir, tmp_path):
    import shutil

    import datasets
    import transformers
    import trl

    from agent_sft.cli import main

    # The folder's own dpo config, as a user loads it, after a build that adds the per-step pairs.
    folder = tmp_path / "chat"
    shutil.copytree(flaky_folders["chat"], folder)
    assert main(["build", str(folder), "--dpo-pairs", "both"]) == 0
    loaded = datasets.concatenate_datasets(list(datasets.load_dataset(str(folder), "dpo").values()))
    made = list(loaded)
    assert sorted((p["chosen_episode_id"], p["rejected_episode_id"], p["pair"], p["step"]) for p in made) == sorted(
        (p["chosen_episode_id"], p["rejected_episode_id"], p["pair"], p["step"]) for p in real_pairs(str(folder))[0])
    # A growing chat's episode pairs fit the tiny model's 4096 positions (a windowed run's repeat the whole window
    # prompt in every user turn and run past them). Two steps of two: the shortest episode pair and three step pairs.
    episode = min((i for i, p in enumerate(made) if p["pair"] == "episode"), key=lambda i: len(str(made[i])))
    ds = loaded.select([episode] + [i for i, p in enumerate(made) if p["pair"] == "step"][:3])  # as loaded
    made = list(ds)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    args = trl.DPOConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, max_length=4096,
                         learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                         dataloader_num_workers=0, seed=0)
    trainer = trl.DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer.train()
    assert trainer.state.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    # TRL scores the whole completion: an episode pair's env observations (user turns) are in it, unmasked.
    tokenized = trainer.train_dataset
    assert any(m["role"] == "user" for m in made[0]["chosen"] + made[0]["rejected"])
    assert "<|im_start|>user" in tok.decode(tokenized[0]["chosen_ids"] + tokenized[0]["rejected_ids"])
    assert "<|im_start|>user" not in tok.decode(tokenized[1]["chosen_ids"] + tokenized[1]["rejected_ids"])
