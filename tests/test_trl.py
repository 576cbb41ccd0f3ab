"""The `sft` config trains as-is with TRL's SFTTrainer: real steps on the tiny offline chat model (CPU)."""

import math

import datasets
import pytest
import transformers
import trl
from fixtures_data import make_episode

from agent_sft.dataset.writer import DatasetWriter
from agent_sft.tiny_model import build_tiny_chat_model

FP = {"env": "alfworld", "policy": "expert"}
META_COLUMNS = {"episode_id", "env", "task_id", "task_type", "goal", "success", "final_reward", "episode_length",
                "sample_index", "seed", "step", "reward", "valid"}


def write_folder(folder, style):
    eps = [make_episode(i, s, style=style, steps=2 + (i + s) % 4, invalid_at=1 if i == 3 else None)
           for i in range(8) for s in range(2)]
    with DatasetWriter(str(folder), fingerprint={**FP, "style": style}, meta={"prompt": {"style": style}}) as w:
        for ep in eps:
            w.add(ep)
    return eps


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_gen(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny_gen") / "model", generation_markers=True)


def load_sft(folder):
    ds = datasets.load_dataset(str(folder), "sft")
    assert set(ds) == {"train", "validation"}
    assert "prompt" not in ds["train"].column_names
    assert META_COLUMNS <= set(ds["train"].column_names)
    return ds


def train_two_steps(model_dir, ds, out, **cfg):
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    args = trl.SFTConfig(
        output_dir=str(out), max_steps=2, per_device_train_batch_size=2, per_device_eval_batch_size=2,
        max_length=192, learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        dataloader_num_workers=0, seed=0, **cfg,
    )
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["validation"],
                             processing_class=tok)
    result = trainer.train()
    return trainer, result, tok


def assert_trained(trainer, result):
    assert trainer.state.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses), trainer.state.log_history
    assert math.isfinite(result.training_loss)
    # Tokenized from `messages` (the conversational path), not from a prompt/completion pair.
    cols = trainer.train_dataset.column_names
    assert "input_ids" in cols and "prompt" not in cols and "completion_mask" not in cols
    ev = trainer.evaluate()
    assert math.isfinite(ev["eval_loss"])


@pytest.mark.parametrize("style,rows_per", [("window", "step"), ("chat", "episode")])
def test_sft_trains(tmp_path, tiny, style, rows_per):
    eps = write_folder(tmp_path / "data", style)
    ds = load_sft(tmp_path / "data")
    n_rows = len(ds["train"]) + len(ds["validation"])
    assert n_rows == (sum(len(e.steps) for e in eps) if rows_per == "step" else len(eps))
    first = ds["train"][0]
    assert first["messages"][-1]["role"] == "assistant"
    if rows_per == "step":
        assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
        assert first["step"] is not None
    else:
        assert first["step"] is None
        assert sum(m["role"] == "assistant" for m in first["messages"]) == first["episode_length"]
    trainer, result, _ = train_two_steps(tiny, ds, tmp_path / "out")
    assert_trained(trainer, result)


def test_assistant_only_loss(tmp_path, tiny_gen):
    write_folder(tmp_path / "data", "chat")
    ds = load_sft(tmp_path / "data")
    trainer, result, tok = train_two_steps(tiny_gen, ds, tmp_path / "out", assistant_only_loss=True)
    assert_trained(trainer, result)
    row = trainer.train_dataset[0]
    mask = [label != -100 for label in row["labels"]]
    assert 0 < sum(mask) < len(mask)
    trained = tok.decode([t for t, m in zip(row["input_ids"], mask) if m])
    source = ds["train"][0]["messages"]
    expected = "".join(m["content"] + "<|im_end|>" for m in source if m["role"] == "assistant")
    assert expected.startswith(trained) and len(trained) > 0
    assert "<|im_start|>" not in trained and "Observation" not in trained and "You arrive" not in trained


def test_assistant_only_loss_needs_generation_markers(tmp_path, tiny):
    write_folder(tmp_path / "data", "window")
    ds = load_sft(tmp_path / "data")
    with pytest.raises(Exception, match="generation"):
        train_two_steps(tiny, ds, tmp_path / "out", assistant_only_loss=True)
