"""The build stages over the whole folder. `filters.dedup`: repeated episodes are dropped from `sft`, each task's
first sample kept whatever order the episodes were sealed in. The selection: tasks by their success rate,
episodes per task (`select`, `per_task`) and per task type. Every drop is counted per env; `raw` never changes,
and another build brings the episodes back."""

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
    # Task 0: samples 0 and 1 take the same actions; sample 2 takes 20 steps and sample 3 the same 20 and
    # one more (alike, not the same). Task 6: its sample 0 answers word for word as task 0's sample 0, but it
    # is another task; its sample 1 takes two more steps.
    t0 = [make_episode(0, s, steps=n, val_fraction=0.0) for s, n in ((0, 3), (1, 3), (2, 20), (3, 21))]
    t6s0, t6s1 = make_episode(6, 0, steps=3, val_fraction=0.0), make_episode(6, 1, steps=5, val_fraction=0.0)
    d = tmp_path / "ds"
    with DatasetWriter.open(d, fingerprint=FP, build=BuildSpec("episode", {"dedup": "exact"}),
                            flush_every_episodes=2) as w:
        for ep in (t6s0, t0[1], t0[3], t0[0], t0[2], t6s1):  # later samples sealed first, in shards of their own
            w.add(ep)
    every = {e.episode_id for e in (*t0, t6s0, t6s1)}
    assert sft_ids(d) == every - {t0[1].episode_id}
    assert info(d)["stages"]["drops"] == {"alfworld": {"duplicate": 1}}
    stats = json.loads((d / "meta" / "stats.json").read_text())
    assert stats["drops"]["duplicate"] == 1

    rebuild(str(d), BuildSpec("episode", {"dedup": "near", "dedup_threshold": 0.9}))
    assert sft_ids(d) == every - {t0[1].episode_id, t0[3].episode_id}
    assert info(d)["stages"]["drops"] == {"alfworld": {"duplicate": 1, "near_duplicate": 1}}

    rebuild(str(d), BuildSpec("episode", {}))
    assert sft_ids(d) == every and "stages" not in info(d)
    assert raw_ids(d) == sorted(every)


def test_what_the_stages_dropped_stays_dropped_when_a_shard_is_derived_again(tmp_path):
    from agent_sft.dataset import layout
    from agent_sft.dataset.maintain import compact, repair_folder

    d = tmp_path / "ds"
    eps = [make_episode(t, s, steps=3, val_fraction=0.0) for t in (0, 1) for s in range(3)]
    with DatasetWriter.open(d, fingerprint=FP, build=BuildSpec("episode", {"dedup": "exact"}),
                            flush_every_episodes=2) as w:
        for ep in eps:
            w.add(ep)
    firsts = {e.episode_id for e in eps if e.sample_index == 0}
    assert sft_ids(d) == firsts
    sft = sorted((d / "data" / "sft" / "train").glob("*.arrow"))[0]
    sft.write_bytes(sft.read_bytes()[:100])  # a damaged sft shard: repair derives it again
    repair_folder(str(d))
    assert sft_ids(d) == firsts
    compact(str(d))
    assert sft_ids(d) == firsts
    with DatasetWriter.open(d, fingerprint=FP, build=BuildSpec("episode", {"dedup": "exact"})) as w:
        w.add(make_episode(2, 0, steps=3, val_fraction=0.0))
        w.add(make_episode(2, 1, steps=3, val_fraction=0.0))
    assert sft_ids(d) == firsts | {make_episode(2, 0).episode_id}
    gen = layout.generation(info(d))
    assert [p.name for p in (d / "meta").glob("stage_drops-*")] == [f"stage_drops-g{gen}.json"]


def test_a_collection_with_dedup_keeps_one_demonstration_per_task_and_build_brings_the_rest_back(tmp_path, capsys):
    d = tmp_path / "ds"
    args = ["collect", "--no-progress", "env.env_name=frozenlake", "env.num_episodes=6", "env.samples_per_task=3",
            "env.pool=thread", f"output.dir={d}"]
    assert main([*args, "filters.dedup=exact"]) == 0
    assert "dropped by filter duplicate 4" in capsys.readouterr().out  # the expert replays the same plan
    sft = agent_sft.load(str(d), "sft")
    assert {r["sample_index"] for split in sft.values() for r in split} == {0}
    assert info(d)["stages"]["drops"] == {"frozenlake": {"duplicate": 4}}
    assert len(raw_ids(d)) == 6
    assert main(["info", str(d)]) == 0
    assert "dropped by the build stages, per env: frozenlake duplicate 4" in capsys.readouterr().out
    assert "(the build stages over the whole folder, per env: frozenlake duplicate 4)" in (d / "README.md").read_text()
    assert main(["build", str(d), "filters.dedup=off"]) == 0
    sft = agent_sft.load(str(d), "sft")
    assert {r["sample_index"] for split in sft.values() for r in split} == {0, 1, 2}
    assert len(raw_ids(d)) == 6


def test_a_threshold_out_of_range_is_refused_before_anything_is_played(tmp_path, capsys):
    assert main(["collect", "env.env_name=frozenlake", "filters.dedup=near", "filters.dedup_threshold=0",
                 f"output.dir={tmp_path / 'x'}"]) == 2
    assert "filters.dedup_threshold: must be in (0, 1] (got 0.0)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_selection_keeps_the_tasks_and_episodes_it_names(tmp_path):
    def ep(task, sample, steps, won):
        return make_episode(task, sample, steps=steps, success=won, val_fraction=0.0)

    # Task 0 (a task type of its own) is sometimes solved; task 1 never; tasks 2 and 8 (one task type) always.
    t0 = [ep(0, 0, 4, False), ep(0, 1, 5, True), ep(0, 2, 3, True)]
    t1 = [ep(1, 0, 4, False), ep(1, 1, 6, False)]
    t2 = [ep(2, 0, 6, True), ep(2, 1, 2, True)]
    t8 = [ep(8, 0, 3, True)]
    every = t0 + t1 + t2 + t8
    d = tmp_path / "ds"
    with DatasetWriter.open(d, fingerprint=FP, build=BuildSpec("episode", {}), flush_every_episodes=3) as w:
        for e in reversed(every):
            w.add(e)

    def kept(**filters):
        rebuild(str(d), BuildSpec("episode", filters))
        return sft_ids(d)

    ids = lambda *eps: {e.episode_id for e in eps}  # noqa: E731
    assert kept(task_success="mixed") == ids(*t0)
    assert kept(task_success="solved") == ids(*t0, *t2, *t8)
    assert kept(task_success="unsolved") == ids(*t1)
    assert kept(select="first_success") == ids(t0[1], t2[0], t8[0])
    assert kept(select="shortest_success") == ids(t0[2], t2[1], t8[0])
    assert kept(select="first_success", per_task=2) == ids(t0[1], t0[2], *t2, *t8)
    assert kept(per_task=1) == ids(t0[0], t1[0], t2[0], t8[0])
    assert kept(per_task_type=1) == ids(t0[0], t1[0], t2[0])  # tasks 2 and 8 are one task type
    assert kept(task_success="mixed", select="first_success") == ids(t0[1])
    assert info(d)["stages"]["drops"] == {"alfworld": {"task_success": 5, "not_selected": 2}}
    stats = json.loads((d / "meta" / "stats.json").read_text())
    assert stats["drops"] == {"task_success": 5, "not_selected": 2}
    assert raw_ids(d) == sorted(e.episode_id for e in every)


def test_a_selection_count_below_one_is_refused(tmp_path, capsys):
    assert main(["build", str(tmp_path), "filters.per_task=0"]) == 2
    assert "filters.per_task: must be at least 1 (got 0)" in capsys.readouterr().err


def test_a_dry_run_prints_what_the_build_would_drop_and_writes_nothing(tmp_path, capsys):
    d = tmp_path / "ds"
    assert main(["collect", "--no-progress", "env.env_name=frozenlake", "env.num_episodes=6", "env.samples_per_task=3",
                 "env.pool=thread", f"output.dir={d}"]) == 0
    before = {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["build", str(d), "--dry-run", "filters.dedup=exact", "filters.per_task_type=1"]) == 0
    out = capsys.readouterr().out
    assert "from 6 episodes" in out and "(nothing written)" in out
    assert "dropped by duplicate: 4 (frozenlake 4)" in out and "dropped by task_type_cap: 1 (frozenlake 1)" in out
    assert {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()} == before
    assert main(["build", str(d), "filters.dedup=exact", "filters.per_task_type=1"]) == 0
    assert info(d)["stages"]["drops"] == {"frozenlake": {"duplicate": 4, "task_type_cap": 1}}


def test_a_build_spec_from_python_with_an_unknown_choice_is_refused_naming_the_nearest(tmp_path):
    import pytest

    from agent_sft.dataset.filters import FilterError

    d = tmp_path / "ds"
    with DatasetWriter.open(d, fingerprint=FP) as w:
        w.add(make_episode(0, 0, val_fraction=0.0))
    with pytest.raises(FilterError, match=r"filters.dedup: 'nera' is not one of off, exact, near; did you mean 'near'\?"):
        rebuild(str(d), BuildSpec("episode", {"dedup": "nera"}))
    assert "dedup" not in info(d)["build"]["filters"]
