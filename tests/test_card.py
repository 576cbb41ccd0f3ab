import yaml
from fixtures_data import make_episode

from agent_sft.dataset.writer import DatasetWriter


def write(folder, eps, meta=None):
    with DatasetWriter(folder, fingerprint={}, meta=meta or {}) as w:
        for e in eps:
            w.add(e)
    return (folder / "README.md").read_text()


def front(card):
    return yaml.safe_load(card.split("---", 2)[1])


def test_card_metadata_lists_configs_splits_and_size(tmp_path):
    card = write(tmp_path / "d", [make_episode(i) for i in range(20)],
                 meta={"env": {"env_name": "alfworld/AlfredTWEnv", "seed": 4}, "policy": {"type": "vllm", "model": "/abs/models/Qwen2.5-7B-Instruct", "temperature": 0.4}})
    meta = front(card)
    assert [c["config_name"] for c in meta["configs"]] == ["sft", "scores", "raw"] and meta["configs"][0]["default"] is True
    assert {d["split"] for d in meta["configs"][0]["data_files"]} == {"train", "validation"}
    assert meta["size_categories"] == ["n<1K"] and "text-generation" in meta["task_categories"]
    assert "alfworld" in meta["tags"] and meta["license"] == "mit"
    other = front(write(tmp_path / "e", [make_episode(1)], meta={"output": {"license": "cc-by-4.0"}}))
    assert other["license"] == "cc-by-4.0"
    assert "model `Qwen2.5-7B-Instruct`" in card and "/abs/models" not in card  # no local paths
    assert "temperature=0.4" in card and "| Run seed | 4" in card


def test_evaluation_games_are_flagged(tmp_path):
    eps = [make_episode(i) for i in range(4)]
    for e in eps:
        e.game_split = "valid_unseen"
    card = write(tmp_path / "d", eps)
    assert "**Warning:** games came from ALFWorld's evaluation split(s) valid_unseen" in card
    assert "Warning" not in write(tmp_path / "e", [make_episode(i) for i in range(4)])


def test_card_tells_what_the_filters_dropped(tmp_path):
    from agent_sft.dataset.writer import BuildSpec

    d = tmp_path / "d"
    with DatasetWriter(d, fingerprint={}, build=BuildSpec("auto", {"require_success": True})) as w:
        for i in range(10):
            w.add(make_episode(i, success=i < 6))
    card = (d / "README.md").read_text()
    assert "`require_success=True`" in card and "not_success: 4" in card
