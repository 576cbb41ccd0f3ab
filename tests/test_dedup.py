"""`filters.dedup`: repeated episodes are dropped from `sft` over the whole folder, each task's first sample kept
whatever order the episodes were sealed in, every drop counted per env; `raw` never changes, and another build
brings them back."""

from __future__ import annotations

import json

from fixtures_data import make_episode

import agent_sft
from agent_sft.cli import main
from agent_sft.dataset.maintain import rebuild
from agent_sft.dataset.writer import BuildSpec, DatasetWriter

FP = {"env": "alfworld", "seed": 0}


def sft_ids(folder) -> set[str]:
    ds = agent_sft.load(str(folder), "sft")
    return {r["episode_id"] for split in ds.values() for r in split}


def raw_ids(folder) -> list[str]:
    ds = agent_sft.load(str(folder), "raw")
    return sorted(r["episode_id"] for split in ds.values() for r in split)


def info(folder) -> dict:
    return json.loads((folder / "meta" / "info.json").read_text())


def test_each_tasks_first_sample_is_kept_whatever_order_the_episodes_were_sealed_in(tmp_path):
    # Task 0: samples 0 and 1 take the same actions, sample 2 one step more. Task 6: its sample 0 answers
    # word for word as task 0's sample 0 (another task: a near duplicate, not an exact one); its sample 1
    # takes two more steps.
    t0s0, t0s1, t0s2 = (make_episode(0, s, steps=n, val_fraction=0.0) for s, n in ((0, 3), (1, 3), (2, 4)))
    t6s0, t6s1 = make_episode(6, 0, steps=3, val_fraction=0.0), make_episode(6, 1, steps=5, val_fraction=0.0)
    d = tmp_path / "ds"
    with DatasetWriter.open(d, fingerprint=FP, build=BuildSpec("episode", {"dedup": "exact"}),
                            flush_every_episodes=2) as w:
        for ep in (t6s0, t0s1, t0s0, t0s2, t6s1):  # the later samples sealed first, in shards of their own
            w.add(ep)
    assert sft_ids(d) == {t0s0.episode_id, t0s2.episode_id, t6s0.episode_id, t6s1.episode_id}
    assert info(d)["stages"]["dedup"] == {"alfworld": {"duplicate": 1}}
    stats = json.loads((d / "meta" / "stats.json").read_text())
    assert stats["drops"]["duplicate"] == 1

    rebuild(str(d), BuildSpec("episode", {"dedup": "near", "dedup_threshold": 0.9}))
    assert sft_ids(d) == {t0s0.episode_id, t0s2.episode_id, t6s1.episode_id}
    assert info(d)["stages"]["dedup"] == {"alfworld": {"duplicate": 1, "near_duplicate": 1}}

    rebuild(str(d), BuildSpec("episode", {}))
    assert len(sft_ids(d)) == 5 and "stages" not in info(d)
    assert raw_ids(d) == sorted(e.episode_id for e in (t0s0, t0s1, t0s2, t6s0, t6s1))


def test_a_collection_with_dedup_keeps_one_demonstration_per_task_and_build_brings_the_rest_back(tmp_path, capsys):
    d = tmp_path / "ds"
    args = ["collect", "--no-progress", "env.env_name=frozenlake", "env.num_episodes=6", "env.samples_per_task=3",
            "env.pool=thread", f"output.dir={d}"]
    assert main([*args, "filters.dedup=exact"]) == 0
    assert "dropped by filter duplicate 4" in capsys.readouterr().out  # the expert replays the same plan
    sft = agent_sft.load(str(d), "sft")
    assert {r["sample_index"] for split in sft.values() for r in split} == {0}
    assert info(d)["stages"]["dedup"] == {"frozenlake": {"duplicate": 4}}
    assert len(raw_ids(d)) == 6
    assert main(["build", str(d), "filters.dedup=off"]) == 0
    sft = agent_sft.load(str(d), "sft")
    assert {r["sample_index"] for split in sft.values() for r in split} == {0, 1, 2}
    assert len(raw_ids(d)) == 6


def test_a_threshold_out_of_range_is_refused_before_anything_is_played(tmp_path, capsys):
    assert main(["collect", "env.env_name=frozenlake", "filters.dedup=near", "filters.dedup_threshold=0",
                 f"output.dir={tmp_path / 'x'}"]) == 2
    assert "filters.dedup_threshold: must be in (0, 1] (got 0.0)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
