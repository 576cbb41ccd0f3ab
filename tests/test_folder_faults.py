"""Damaged and unusual folders: lost meta/info.json, flipped bytes, truncated shards, a filter that
raises mid-run, a folder with no rows, error episodes kept until their replacements are sealed, a README
rewrite cut short."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fixtures_data import make_episode

import agent_sft
from agent_sft.dataset import atomic, layout
from agent_sft.dataset import shards as shard_io
from agent_sft.dataset.filters import FilterError
from agent_sft.dataset.writer import BuildSpec, ConfigMismatchError, DatasetWriter
from agent_sft.errors import CorruptShardError

FP = {"env": {"env_name": "alfworld", "seed": 0}}


def write(folder, eps, **kw):
    kw.setdefault("fingerprint", FP)
    with DatasetWriter(str(folder), **kw) as w:
        for e in eps:
            w.add(e)
    return w


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "agent_sft", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


def raw_ids(folder):
    ds = agent_sft.load(str(folder), "raw")
    return sorted(list(ds["train"]["episode_id"]) + list(ds["validation"]["episode_id"]))


def load_dataset_fresh(folder, config):
    code = ("import json, sys, datasets\n"
            "ds = datasets.load_dataset(sys.argv[1], sys.argv[2])\n"
            "print(json.dumps(sorted(r['episode_id'] for d in ds.values() for r in d)))")
    p = subprocess.run([sys.executable, "-c", code, str(folder), config], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def shards(folder, config="raw", split="train"):
    d = os.path.join(folder, "data", config, split)
    return sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".arrow"))


def flip_bytes(path, at=0.5, n=64):
    with open(path, "r+b") as fh:
        size = os.path.getsize(path)
        fh.seek(int(size * at))
        data = fh.read(n)
        fh.seek(int(size * at))
        fh.write(bytes(b ^ 0xFF for b in data))


def test_a_lost_info_json_is_rebuilt_from_the_shards_and_another_seed_is_still_refused(tmp_path):
    d = tmp_path / "ds"
    eps = [make_episode(i) for i in range(6)]
    write(d, eps, meta={"env": {"env_name": "alfworld", "seed": 0}}, build=BuildSpec("auto", {"require_success": True}))
    os.remove(d / layout.INFO)
    # read-only commands work without it
    p = cli("info", str(d))
    assert p.returncode == 0 and "info.json is missing" in p.stdout, p.stdout + p.stderr
    assert raw_ids(d) == sorted(e.episode_id for e in eps)
    with pytest.raises(ConfigMismatchError, match="seed"):
        DatasetWriter(str(d), fingerprint={"env": {"env_name": "alfworld", "seed": 1}})
    # the same config resumes, and the folder has its identity (and sft build spec) back
    write(d, [make_episode(6)])
    info = layout.read_info(str(d))
    assert info["fingerprint"] == FP and info["build"]["filters"] == {"require_success": True}
    assert "recovered_from" not in info
    assert len(raw_ids(d)) == 7


def test_info_reports_flipped_bytes_and_repair_moves_the_raw_shard_aside(tmp_path):
    d = tmp_path / "ds"
    for k in range(3):  # three shards of 4 episodes
        w = DatasetWriter(str(d), fingerprint=FP, flush_every_s=1e9)
        for i in range(4 * k, 4 * k + 4):
            w.add(make_episode(i, val_fraction=0.0))
        w.close()
    bad = shards(d)[1]
    bad_ids = set(shard_io.read_shard(bad).column("episode_id").to_pylist())
    flip_bytes(bad)
    p = cli("info", str(d))
    assert p.returncode == 1, p.stdout
    assert "DAMAGED" in p.stdout and os.path.basename(bad) in p.stdout and "agent-sft repair" in p.stdout
    assert cli("repair", "--check", str(d)).returncode == 1

    p = cli("repair", str(d))
    assert p.returncode == 0, p.stderr
    assert ".quarantine" in p.stdout and "played again" in p.stdout
    assert not os.path.exists(bad) and any(os.path.basename(bad) in fs for _, _, fs in os.walk(d / ".quarantine"))
    left = sorted(set(make_episode(i, val_fraction=0.0).episode_id for i in range(12)) - bad_ids)
    assert load_dataset_fresh(d, "raw") == left
    assert cli("info", str(d)).returncode == 0
    # the next resume plays the quarantined episodes again
    w = DatasetWriter(str(d), fingerprint=FP)
    assert not bad_ids & w.done_ids
    for i in range(12):
        w.add(make_episode(i, val_fraction=0.0))
    w.finalize()
    assert load_dataset_fresh(d, "raw") == sorted(make_episode(i, val_fraction=0.0).episode_id for i in range(12))


def test_a_damaged_sft_shard_never_blocks_info_build_or_collect(tmp_path):
    d = tmp_path / "ds"
    eps = [make_episode(i, val_fraction=0.0) for i in range(8)]
    write(d, eps)
    sft = shards(d, "sft")[0]
    with open(sft, "r+b") as fh:  # truncated: not a readable Arrow file any more
        fh.truncate(os.path.getsize(sft) // 2)
    assert cli("info", str(d)).returncode == 1  # reported, not called healthy
    p = cli("build", str(d), "--require-success")
    assert p.returncode == 0, p.stderr
    assert sorted(set(load_dataset_fresh(d, "sft"))) == sorted(e.episode_id for e in eps if e.success)
    with open(shards(d, "sft")[0], "r+b") as fh:
        fh.truncate(100)
    write(d, [make_episode(8, val_fraction=0.0)])  # a resume derives it again
    assert cli("info", str(d)).returncode == 0
    assert set(load_dataset_fresh(d, "sft")) == {e.episode_id for e in eps + [make_episode(8, val_fraction=0.0)] if e.success}


def test_an_unreadable_raw_shard_stops_a_resume_with_the_command_that_fixes_it(tmp_path):
    d = tmp_path / "ds"
    write(d, [make_episode(i) for i in range(4)])
    with open(shards(d)[0], "r+b") as fh:
        fh.truncate(200)
    with pytest.raises(CorruptShardError, match="agent-sft repair"):
        DatasetWriter(str(d), fingerprint=FP)


def test_a_filter_that_raises_keeps_the_sealed_episodes_listed(tmp_path):
    d = tmp_path / "ds"
    bad = tmp_path / "bad_filter.py"
    bad.write_text("def keep(row):\n    raise ValueError('broken filter')\n")
    eps = [make_episode(i) for i in range(5)]
    w = DatasetWriter(str(d), fingerprint=FP, build=BuildSpec("auto", {"callable": f"{bad}:keep"}), flush_every_s=1e9)
    for e in eps:
        w.add(e)
    with pytest.raises(FilterError, match="broken filter"):
        w.flush()
    w._stop.set()
    # the raw rows of the split sealed before the filter ran are listed: the folder loads
    sealed = load_dataset_fresh(d, "raw")
    first = [e.episode_id for e in eps if e.split == eps[0].split]
    assert sealed == sorted(first)
    # a resume with a filter that works derives sft for them and plays the rest again
    w = write(d, eps, build=BuildSpec("auto", {"require_success": True}))
    assert w.duplicates_skipped == len(first)
    assert load_dataset_fresh(d, "raw") == sorted(e.episode_id for e in eps)
    assert sorted(set(load_dataset_fresh(d, "sft"))) == sorted(e.episode_id for e in eps if e.success)


def test_a_folder_with_no_rows_loads_as_empty_splits(tmp_path):
    d = tmp_path / "ds"
    DatasetWriter(str(d), fingerprint=FP).close()
    for config in ("raw", "sft"):
        ds = agent_sft.load(str(d), config)
        assert {sp: len(v) for sp, v in ds.items()} == {"train": 0, "validation": 0}
    assert "nothing collected yet" in (d / "README.md").read_text()
    p = cli("info", str(d))
    assert p.returncode == 0 and "episodes: 0" in p.stdout


def test_error_episodes_stay_until_their_replacements_are_sealed(tmp_path):
    d = tmp_path / "ds"
    eps = [make_episode(i, val_fraction=0.0) for i in range(8)]
    failed = {3, 5, 6}
    for i in failed:
        eps[i].end_reason, eps[i].error, eps[i].success = "error", "RuntimeError: env crashed", False
    write(d, eps)
    all_ids = sorted(e.episode_id for e in eps)

    w = DatasetWriter(str(d), fingerprint=FP, flush_every_s=1e9)
    assert {eps[i].episode_id for i in failed}.isdisjoint(w.done_ids)  # they are played again
    assert load_dataset_fresh(d, "raw") == all_ids  # but still there until replaced
    w.add(make_episode(3, val_fraction=0.0))
    w.flush()
    w._stop.set()  # killed here: 5 and 6 not replayed yet
    ds = agent_sft.load(str(d), "raw")["train"]
    assert sorted(list(ds["episode_id"])) == all_ids
    reasons = dict(zip(list(ds["episode_id"]), list(ds["end_reason"])))
    assert reasons[eps[3].episode_id] != "error"
    assert reasons[eps[5].episode_id] == reasons[eps[6].episode_id] == "error"

    w2 = DatasetWriter(str(d), fingerprint=FP)
    assert w2.errors_to_retry == 2
    for i in (5, 6):
        w2.add(make_episode(i, val_fraction=0.0))
    w2.finalize()
    ds = agent_sft.load(str(d), "raw")["train"]
    assert sorted(list(ds["episode_id"])) == all_ids and "error" not in list(ds["end_reason"])


@pytest.mark.parametrize("fail_at", [0, 1])
def test_a_rewrite_of_the_readme_cut_short_at_any_step_leaves_it_whole(tmp_path, monkeypatch, fail_at):
    folder = tmp_path / "ds"
    folder.mkdir()
    readme = folder / "README.md"
    atomic.keep_spares(str(folder))  # as while a writer streams: the replaced copy is kept for the next write
    try:
        for k in range(4):
            atomic.write_text_atomic(str(readme), f"version {k}\n" * (4 - k))
            assert readme.read_text() == f"version {k}\n" * (4 - k)
        real, calls = os.replace, []

        def failing(src, dst, *args, **kwargs):
            calls.append(dst)
            if len(calls) - 1 == fail_at:
                raise OSError(5, "Input/output error")
            return real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", failing)
        with pytest.raises(OSError, match="Input/output error"):
            atomic.write_text_atomic(str(readme), "cut short\n")
        monkeypatch.setattr(os, "replace", real)
        assert readme.read_text() in ("version 3\n", "cut short\n")
        # the next writes never write through a name that still links to the README
        for text in ("a longer text than any before it\n" * 3, "short\n"):
            atomic.write_text_atomic(str(readme), text)
            assert readme.read_text() == text
            assert os.stat(readme).st_nlink == 1
    finally:
        atomic.drop_spares(str(folder))
    assert os.listdir(folder) == ["README.md"]
