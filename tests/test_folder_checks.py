"""The folder's checks see every damage, and the folder's invariants hold when a write fails midway.

`agent-sft info` and `repair --check` read the README as `datasets` reads it and the checksum manifest,
and report what they cannot use; `collect` finds a damaged raw shard before it plays anything. A shard
appears under its name complete or not at all, a shard written for a rewrite that was not switched on
never counts, and a flush cut short between its renames leaves no orphan.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import partial_env
import pytest
from datasets import load_dataset
from fixtures_data import make_episode

import agent_sft
from agent_sft.cli import main
from agent_sft.dataset import atomic, layout, shards
from agent_sft.dataset.maintain import compact
from agent_sft.dataset.reading import stats_json
from agent_sft.dataset.writer import DatasetWriter
from agent_sft.errors import DatasetError

FP = {"env": {"env_name": "alfworld", "seed": 0}}


def write(folder, eps, **kw):
    with DatasetWriter(str(folder), fingerprint=FP, **kw) as w:
        for e in eps:
            w.add(e)
    return w


def cli(capsys, *argv):
    """(exit code, stdout + stderr) of an `agent-sft` command."""
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


def ids(folder, config="raw"):
    ds = agent_sft.load(str(folder), config)
    return sorted(i for split in ds.values() for i in split["episode_id"])


def files(folder):
    """Relative path -> bytes of every file a user would see (the folder lock aside)."""
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            if n != ".lock":
                path = os.path.join(root, n)
                with open(path, "rb") as fh:
                    out[os.path.relpath(path, folder)] = fh.read()
    return out


def shard_files(folder):
    """Relative paths of the shard files the listing sees (dot-files are temporary)."""
    return {f"data/{c}/{sp}/{n}" for (c, sp), names in layout.shard_names(str(folder)).items() for n in names}


def flip_bytes(path, at=0.5, n=64):
    with open(path, "r+b") as fh:
        fh.seek(int(os.path.getsize(path) * at))
        data = fh.read(n)
        fh.seek(int(os.path.getsize(path) * at))
        fh.write(bytes(b ^ 0xFF for b in data))


# --- the README as `datasets` reads it -----------------------------------------------------------------

@pytest.mark.parametrize("cut", ["inside a path", "before the end marker"])
def test_a_readme_cut_inside_its_front_matter_is_reported_and_repaired(tmp_path, capsys, cut):
    d = tmp_path / "ds"
    eps = [make_episode(i) for i in range(6)]
    write(d, eps)
    readme = d / "README.md"
    text = readme.read_text()
    end = text.index("\n---\n", 3)
    # cut inside a quoted path (not YAML any more), or after the last path (YAML, but no front matter for datasets)
    readme.write_text(text[:text.rindex("data/raw/") + 7] if cut == "inside a path" else text[:end + 1])

    rc, out = cli(capsys, "info", str(d))
    assert rc == 1 and "README.md" in out and f"agent-sft repair {d}" in out, out
    rc, out = cli(capsys, "repair", "--check", str(d))
    assert rc == 1 and "README.md" in out and f"agent-sft repair {d}" in out, out
    with pytest.raises(DatasetError, match="README.md.*agent-sft repair"):
        agent_sft.load(str(d), "raw")

    assert cli(capsys, "repair", str(d))[0] == 0
    assert cli(capsys, "info", str(d))[0] == 0
    got = load_dataset(str(d), "raw")
    assert sorted(i for split in got.values() for i in split["episode_id"]) == sorted(e.episode_id for e in eps)


def test_the_card_is_read_as_plain_yaml_where_the_helpers_of_datasets_and_the_hub_moved(tmp_path, capsys, monkeypatch):
    from huggingface_hub import repocard

    from agent_sft.dataset import builder

    d = tmp_path / "ds"
    eps = [make_episode(i) for i in range(4)]
    write(d, eps)
    builder._card_reader.cache_clear()
    as_datasets_reads_it = builder.read_readme(str(d))
    monkeypatch.delattr(repocard, "REGEX_YAML_BLOCK")
    builder._card_reader.cache_clear()
    try:
        assert builder._card_reader() is None
        assert builder.read_readme(str(d)) == as_datasets_reads_it and as_datasets_reads_it[0]["sft"]
        assert ids(d) == sorted(e.episode_id for e in eps)
        text = (d / "README.md").read_text()
        (d / "README.md").write_text(text[:text.index("\n---\n", 3) + 1])
        rc, out = cli(capsys, "repair", "--check", str(d))
        assert rc == 1 and "front matter has no end" in out and f"agent-sft repair {d}" in out, out
    finally:
        builder._card_reader.cache_clear()


@pytest.mark.parametrize("garbage", ["", '{"data/raw/train/x.arrow": {"size": "big"}}'])
def test_garbage_in_the_checksum_manifest_is_reported_and_repair_writes_it_again(tmp_path, capsys, garbage):
    d = tmp_path / "ds"
    write(d, [make_episode(i) for i in range(6)])
    manifest = d / layout.CHECKSUMS
    manifest.write_text(garbage)

    rc, out = cli(capsys, "info", str(d))
    assert rc == 1 and layout.CHECKSUMS in out and f"agent-sft repair {d}" in out, out
    assert "every shard matches" not in out
    assert cli(capsys, "repair", "--check", str(d))[0] == 1

    rc, out = cli(capsys, "repair", str(d))
    assert rc == 0 and layout.CHECKSUMS in out, out
    sums = json.loads(manifest.read_text())
    listed = shard_files(d)
    assert set(sums) == listed and all(sums[rel] == shards.file_checksum(str(d / rel)) for rel in listed)
    assert cli(capsys, "info", str(d))[0] == 0


# --- collect finds a damaged raw shard before playing --------------------------------------------------

def collect_args(folder, episodes):
    return ["collect", "--no-progress", f"env.env_name={partial_env.NAME}", "env.task_types=[play]",
            "env.backend=thread", "data.val_fraction=0", f"env.num_episodes={episodes}", f"output.dir={folder}"]


def test_collect_on_a_damaged_raw_shard_stops_before_playing_with_the_repair_hint(tmp_path, capsys):
    d = tmp_path / "ds"
    assert cli(capsys, *collect_args(d, 6))[0] == 0
    (bad,) = [rel for rel in shard_files(d) if rel.startswith("data/raw/")]
    flip_bytes(str(d / bad))
    before = files(d)

    rc, out = cli(capsys, *collect_args(d, 12))
    assert rc == 2 and os.path.basename(bad) in out and f"agent-sft repair {d}" in out, out
    assert files(d) == before  # nothing played, sealed or rewritten

    assert cli(capsys, "repair", str(d))[0] == 0
    assert cli(capsys, *collect_args(d, 12))[0] == 0
    assert len(ids(d)) == 12  # the quarantined episodes were played again


def test_a_damaged_sft_shard_is_derived_again_when_the_folder_is_resumed(tmp_path, capsys):
    d = tmp_path / "ds"
    eps = [make_episode(i, val_fraction=0.0) for i in range(8)]
    write(d, eps)
    rows = sorted(agent_sft.load(str(d), "sft")["train"].to_list(), key=lambda r: (r["episode_id"], r["step"]))
    (sft,) = [rel for rel in shard_files(d) if rel.startswith("data/sft/")]
    flip_bytes(str(d / sft))

    write(d, eps + [make_episode(8, val_fraction=0.0)])  # a resume, then compaction copies sft shards
    again = [r for r in agent_sft.load(str(d), "sft")["train"].to_list() if r["episode_id"] != make_episode(8).episode_id]
    assert sorted(again, key=lambda r: (r["episode_id"], r["step"])) == rows
    assert cli(capsys, "info", str(d))[0] == 0


# --- a shard appears under its name complete, or not at all ---------------------------------------------

@pytest.mark.parametrize("how", ["flush", "compaction"])
def test_a_shard_file_write_cut_short_leaves_nothing_under_a_final_name(tmp_path, monkeypatch, how):
    d = tmp_path / "ds"
    eps = [make_episode(i, val_fraction=0.0) for i in range(8)]
    for k in range(2):  # two shards per config, for the compaction (closed, not finalized: not compacted yet)
        w = DatasetWriter(str(d), fingerprint=FP, flush_every_s=1e9)
        for e in eps[4 * k:4 * k + 4]:
            w.add(e)
        w.close()
    before = shard_files(d)
    seen = []

    def cut_short(write_half):
        """Write half of a shard file's bytes, note what a kill now would leave, then fail as a full disk."""
        write_half()
        seen.append(shard_files(d))
        raise OSError(errno.ENOSPC, "No space left on device")

    if how == "flush":
        real = os.write

        def failing_write(fd, data):
            if os.readlink(f"/proc/self/fd/{fd}").endswith(shards.SHARD_SUFFIX):
                cut_short(lambda: real(fd, bytes(data[:len(data) // 2])))
            return real(fd, data)

        w = DatasetWriter(str(d), fingerprint=FP, flush_every_s=1e9)
        w.add(make_episode(8, val_fraction=0.0))
        monkeypatch.setattr(os, "write", failing_write)
        with pytest.raises(DatasetError, match="no space left"):
            w.flush()
        monkeypatch.undo()
        w.close()
    else:
        real = shards._HashingFile.write

        def failing_write(self, data):
            cut_short(lambda: (real(self, memoryview(data)[:len(data) // 2]), self.fh.flush()))

        monkeypatch.setattr(shards._HashingFile, "write", failing_write)
        with pytest.raises(DatasetError, match="no space left"):
            compact(str(d))
        monkeypatch.undo()
    assert seen and all(names == before for names in seen)
    assert not [n for _, _, names in os.walk(d) for n in names if n.startswith(atomic.TMP_PREFIX)]
    assert ids(d) == sorted(e.episode_id for e in eps + ([make_episode(8, val_fraction=0.0)] if how == "flush" else []))


# --- a shard written for a rewrite that was not switched on never counts ----------------------------------

def test_a_crash_while_splitting_out_error_episodes_lists_each_episode_once(tmp_path, monkeypatch):
    d = tmp_path / "ds"
    eps = [make_episode(i, val_fraction=0.0) for i in range(8)]
    for i in (2, 5, 6):
        eps[i].end_reason, eps[i].error, eps[i].success = "error", "RuntimeError: env crashed", False
    write(d, eps)
    real, written = shards.write_shard, []

    def crash_after_the_error_shard(path, config, rows, meta):
        if written and "errors_of" in written[-1]:
            raise OSError(errno.EIO, "Input/output error")  # as a kill between the two shards of the split
        written.append(meta)
        return real(path, config, rows, meta)

    monkeypatch.setattr(shards, "write_shard", crash_after_the_error_shard)
    with pytest.raises(OSError, match="Input/output error"):
        DatasetWriter(str(d), fingerprint=FP)
    monkeypatch.undo()
    assert any("errors_of" in m for m in written)  # the error episodes' shard is there, not yet switched on
    assert json.loads(stats_json(str(d)))["total_episodes"] == 8
    w = DatasetWriter(str(d), fingerprint=FP)
    assert w.errors_to_retry == 3
    w.close()
    assert ids(d) == sorted(e.episode_id for e in eps)


# --- the shards of a flush are renamed raw first ------------------------------------------------------------

def test_a_flush_whose_second_rename_fails_leaves_no_orphan_sft_shard_and_no_temporary_file(tmp_path, monkeypatch):
    d = tmp_path / "ds"
    eps = [make_episode(i, val_fraction=0.0) for i in range(4)]
    w = DatasetWriter(str(d), fingerprint=FP, flush_every_s=1e9)
    for e in eps:
        w.add(e)
    real, renames = os.replace, []

    def second_shard_rename_fails(src, dst, *args, **kwargs):
        if os.path.basename(str(src)).startswith(atomic.TMP_PREFIX) and str(dst).endswith(shards.SHARD_SUFFIX):
            renames.append(dst)
            if len(renames) == 2:
                raise OSError(errno.EIO, "Input/output error")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", second_shard_rename_fails)
    with pytest.raises(OSError, match="Input/output error"):
        w.flush()
    monkeypatch.undo()
    w.close()
    present = shard_files(d)
    orphans = [rel for rel in present if rel.startswith("data/sft/")
               and f"data/raw/train/{rel.rsplit('/', 1)[1].split('-', 1)[1]}" not in present]
    assert not orphans
    assert not [n for _, _, names in os.walk(d) for n in names if n.startswith(atomic.TMP_PREFIX)]
    assert ids(d) == sorted(e.episode_id for e in eps)  # the raw shard is sealed and listed
    write(d, eps)  # the next command derives its sft shard
    assert sorted(set(ids(d, "sft"))) == sorted(e.episode_id for e in eps)


def test_a_datasets_without_its_key_class_still_loads_a_folder(tmp_path):
    d = tmp_path / "ds"
    shutil.copytree(os.path.join(os.path.dirname(__file__), "data", "pre_house_mix"), d)
    code = ("import datasets.builder as b; key = b.Key; del b.Key\n"  # agent-sft's builder finds no Key class,
            "import agent_sft.dataset.builder; b.Key = key\n"  # as with a datasets older than it
            "import agent_sft, sys\n"
            "ds = agent_sft.load(sys.argv[1], 'raw')\n"
            "print(sum(len(v) for v in ds.values()))")
    p = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "6"
