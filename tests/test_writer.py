import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pyarrow as pa
import pytest
from fixtures_data import make_episode

import agent_sft
from agent_sft.dataset import atomic, layout, shards
from agent_sft.dataset.formats import episode_to_row
from agent_sft.dataset.maintain import compact, merge, rebuild
from agent_sft.dataset.writer import BuildSpec, ConfigMismatchError, DatasetWriter
from agent_sft.errors import CorruptShardError, DatasetError, NotADatasetError, SchemaVersionError

TESTS = os.path.dirname(__file__)
FP = {"env": "alfworld", "seed": 0}


def load_in_fresh_process(folder, config="sft", streaming=False):
    """Row count per split and episode ids, as `datasets.load_dataset` sees them in a new process."""
    code = textwrap.dedent(f"""
        import json, datasets
        ds = datasets.load_dataset({str(folder)!r}, {config!r}, streaming={streaming})
        print(json.dumps({{sp: [r["episode_id"] for r in d] for sp, d in ds.items()}}))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def write(folder, eps, **kw):
    kw.setdefault("fingerprint", FP)
    with DatasetWriter(folder, **kw) as w:
        for e in eps:
            w.add(e)
    return w


def test_folder_loads_with_datasets_and_agent_sft(tmp_path, episodes):
    d = tmp_path / "ds"
    write(d, episodes, flush_every_episodes=5)
    raw = load_in_fresh_process(d, "raw")
    assert sorted(raw["train"] + raw.get("validation", [])) == sorted(e.episode_id for e in episodes)
    sft = agent_sft.load(str(d), "sft")
    n_steps = sum(len(e.steps) for e in episodes)
    assert len(sft["train"]) + len(sft["validation"]) == n_steps
    # no episode (and so no task) in both splits
    train_tasks = set(agent_sft.load(str(d), "raw", split="train")["task_id"])
    val_tasks = set(agent_sft.load(str(d), "raw", split="validation")["task_id"])
    assert train_tasks and val_tasks and not train_tasks & val_tasks
    streamed = load_in_fresh_process(d, "sft", streaming=True)
    assert len(streamed["train"]) == len(sft["train"])


def test_shards_are_sealed_atomically_and_compacted_at_the_end(tmp_path, episodes):
    d = tmp_path / "ds"
    w = DatasetWriter(d, fingerprint=FP, flush_every_episodes=3)
    for e in episodes[:9]:
        w.add(e)
    before = sorted(os.listdir(d / "data/raw/train"))
    assert len(before) >= 2 and not any(n.startswith(".") for n in before)
    w.finalize()
    after = os.listdir(d / "data/raw/train")
    assert len(after) == 1 and after[0] not in before
    assert shards.read_shard(str(d / "data/raw/train" / after[0])).num_rows == sum(1 for e in episodes[:9] if e.split == "train")
    readme = (d / "README.md").read_text()
    assert f"data/raw/train/{after[0]}" in readme and before[0] not in readme
    assert w.finalize()["total_episodes"] == 9  # idempotent


def test_timer_seals_buffered_episodes_without_more_adds(tmp_path, episodes):
    d = tmp_path / "ds"
    w = DatasetWriter(d, fingerprint=FP, flush_every_s=0.3, flush_every_episodes=1000)
    w.add(episodes[0])
    time.sleep(1.6)
    assert layout.scan(str(d), 0).raw_rows() == 1  # on disk before any flush() or finalize()
    w.close()


WRITER_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from fixtures_data import make_episode
from agent_sft.dataset.writer import DatasetWriter
w = DatasetWriter({folder!r}, fingerprint={fp!r}, flush_every_episodes=1)
part, parts = {part}, {parts}
for i in range({n}):
    if i % parts != part:
        continue
    for s in range(2):
        w.add(make_episode(i, s))
    print(i, flush=True)
    time.sleep({delay})
w.finalize()
print("done", flush=True)
"""


def run_writer(folder, n, part=0, parts=1, delay=0.0):
    code = WRITER_SCRIPT.format(tests=TESTS, folder=str(folder), fp=FP, part=part, parts=parts, n=n, delay=delay)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    d = tmp_path / "ds"
    p = run_writer(d, 40, delay=0.02)
    seen = 0
    for _line in p.stdout:
        seen += 1
        if seen >= 12:
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    # the killed folder loads as it is, in a fresh process
    got = load_in_fresh_process(d, "raw")
    ids = [i for v in got.values() for i in v]
    assert len(ids) == len(set(ids)) >= 22
    # resume: the same run on the same folder writes only what is missing
    w = DatasetWriter(d, fingerprint=FP, flush_every_episodes=4)
    already = set(w.done_ids)
    assert already == set(ids)
    added = sum(w.add(make_episode(i, s)) for i in range(40) for s in range(2))
    assert added == 80 - len(already) and w.duplicates_skipped == len(already)
    w.finalize()
    final = load_in_fresh_process(d, "raw")
    all_ids = [i for v in final.values() for i in v]
    assert len(all_ids) == len(set(all_ids)) == 80
    sft = load_in_fresh_process(d, "sft")
    assert set(i for v in sft.values() for i in v) == set(all_ids)


KILLED_BETWEEN_RENAMES = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from fixtures_data import make_episode
from agent_sft.dataset.writer import DatasetWriter

w = DatasetWriter({folder!r}, fingerprint={fp!r}, flush_every_episodes=1000, flush_every_s=3600)
for i in range(6):
    w.add(make_episode(i))
w.flush()
real, renamed = os.replace, []

def dying_replace(src, dst, *args, **kwargs):
    # a flush renames its raw and sft shards of each split (4 here), then rewrites the README
    if dst.endswith(".arrow"):
        renamed.append(dst)
    if len(renamed) > {after} or (len(renamed) == {after} and dst.endswith("README.md")):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)

os.replace = dying_replace
for i in range(6, 12):
    w.add(make_episode(i))
w.flush()
print("not killed")
"""


@pytest.mark.parametrize("after", [1, 2, 3, 4])
def test_a_kill_between_the_renames_of_a_flush_loses_nothing_sealed_and_plays_the_rest_once(tmp_path, after):
    d = tmp_path / "ds"
    first, second = [make_episode(i) for i in range(6)], [make_episode(i) for i in range(6, 12)]
    assert {e.split for e in first} == {e.split for e in second} == {"train", "validation"}
    code = KILLED_BETWEEN_RENAMES.format(tests=TESTS, folder=str(d), fp=FP, after=after)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, (p.stdout + p.stderr)[-2000:]
    # the folder loads as the last README lists it: the first flush, raw and sft alike
    raw = load_in_fresh_process(d, "raw")
    assert sorted(i for v in raw.values() for i in v) == sorted(e.episode_id for e in first)
    sft = agent_sft.load(str(d), "sft")
    assert sorted(set(sft["train"]["episode_id"]) | set(sft["validation"]["episode_id"])) == sorted(e.episode_id for e in first)
    # a resume keeps the shards renamed before the kill and plays the others, each exactly once
    w = DatasetWriter(d, fingerprint=FP)
    assert set(e.episode_id for e in first) <= w.done_ids
    kept = len(w.done_ids) - len(first)
    assert sum(w.add(e) for e in first + second) == len(second) - kept
    w.finalize()
    raw = agent_sft.load(str(d), "raw")
    ids = [i for split in raw.values() for i in split["episode_id"]]
    assert sorted(ids) == sorted(e.episode_id for e in first + second)
    steps = {r["episode_id"]: r["episode_length"] for split in raw.values() for r in split}
    sft = agent_sft.load(str(d), "sft")
    per_episode = Counter(i for split in sft.values() for i in split["episode_id"])
    assert per_episode == Counter(steps)
    assert not [n for _, _, names in os.walk(d) for n in names if n.startswith(atomic.TMP_PREFIX)]


def test_each_flush_lists_the_shards_the_folder_holds_even_when_another_process_changed_them(tmp_path):
    d = tmp_path / "ds"
    w = DatasetWriter(d, fingerprint=FP, flush_every_episodes=1000, flush_every_s=3600)
    eps = [make_episode(i, val_fraction=0.0) for i in range(9)]
    for e in eps[:3]:
        w.add(e)
    w.flush()
    # meanwhile, elsewhere: a shard of another writer appears, and this writer's first shard is moved away
    (mine,) = os.listdir(d / "data/raw/train")
    shards.write_shard(str(d / "data/raw/train/other.arrow"), "raw", [episode_to_row(eps[3])], {"split": "train"})
    os.rename(d / "data/raw/train" / mine, tmp_path / mine)
    for e in eps[3:]:
        w.add(e)
    w.flush()
    w.close()
    got = load_in_fresh_process(d, "raw")
    assert sorted(got["train"]) == sorted(e.episode_id for e in eps[3:])  # eps[3] once: the other's copy
    assert w.duplicates_skipped == 1


def test_two_writers_into_one_folder(tmp_path):
    d = tmp_path / "ds"
    procs = [run_writer(d, 30, part=k, parts=2) for k in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
    got = load_in_fresh_process(d, "raw")
    ids = [i for v in got.values() for i in v]
    assert len(ids) == len(set(ids)) == 60


def test_writers_racing_on_the_same_episodes_write_each_once(tmp_path):
    d = tmp_path / "ds"
    procs = [run_writer(d, 20) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
    got = load_in_fresh_process(d, "raw")
    ids = [i for v in got.values() for i in v]
    assert len(ids) == len(set(ids)) == 40


def test_crash_during_compaction_leaves_no_duplicates(tmp_path, episodes):
    d = tmp_path / "ds"
    w = DatasetWriter(d, fingerprint=FP, flush_every_episodes=2)
    for e in episodes:
        w.add(e)
    w.close()
    # a compacted shard sealed, its sources not yet deleted: what a kill mid-compaction leaves
    names = sorted(os.listdir(d / "data/raw/train"))
    table = pa.concat_tables([shards.read_shard(str(d / "data/raw/train" / n)) for n in names])
    shards.write_shard(str(d / "data/raw/train/zz-compacted.arrow"), "raw", table, {"split": "train", "replaces": names})
    w2 = DatasetWriter(d, fingerprint=FP)
    w2.finalize()
    assert sorted(os.listdir(d / "data/raw/train")) == ["zz-compacted.arrow"]
    got = agent_sft.load(str(d), "raw")
    ids = list(got["train"]["episode_id"]) + list(got["validation"]["episode_id"])
    assert len(ids) == len(set(ids)) == len(episodes)
    assert len(agent_sft.load(str(d), "sft", split="train")) == sum(len(e.steps) for e in episodes if e.split == "train")


def test_a_resumed_folder_is_not_served_from_a_stale_cache(tmp_path, episodes):
    d = tmp_path / "ds"
    write(d, episodes[:10])
    assert len(load_in_fresh_process(d, "raw")["train"]) + len(load_in_fresh_process(d, "raw").get("validation", [])) == 10
    write(d, episodes)
    got = load_in_fresh_process(d, "raw")
    assert sum(len(v) for v in got.values()) == len(episodes)
    got = agent_sft.load(str(d), "raw")
    assert sum(len(v) for v in got.values()) == len(episodes)


def test_a_different_config_is_refused_unless_allowed(tmp_path, episodes):
    d = tmp_path / "ds"
    write(d, episodes[:4])
    with pytest.raises(ConfigMismatchError, match=r"seed: 0 \(folder\) vs 1 \(now\)"):
        DatasetWriter(d, fingerprint={**FP, "seed": 1})
    w = DatasetWriter(d, fingerprint={**FP, "seed": 1}, allow_config_change=True)
    w.close()
    assert json.loads((d / "meta/info.json").read_text())["config_changes"]


def test_a_folder_whose_config_left_the_policy_kind_unset_resumes_under_the_kind_it_played(tmp_path, episodes):
    # A config built in Python and never checked recorded `policy.type: None`; that run played the expert
    # (no model) or vLLM (a model). Resuming it with the kind filled in is the same run; another kind is not.
    d = tmp_path / "ds"
    old = {**FP, "policy": {"type": None, "model": None}}
    DatasetWriter.open(d, fingerprint=old).close()
    DatasetWriter.open(d, fingerprint={**FP, "policy": {"type": "expert", "model": None}}).close()
    with pytest.raises(ConfigMismatchError, match=r"policy.type: 'expert' \(folder\) vs 'hf' \(now\)"):
        DatasetWriter.open(d, fingerprint={**FP, "policy": {"type": "hf", "model": None}})


def test_bad_folders_and_shards_get_clear_errors(tmp_path, episodes):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(NotADatasetError, match="not an agent-sft dataset"):
        DatasetWriter(tmp_path / "notes", fingerprint=FP)
    with pytest.raises(NotADatasetError, match="not an agent-sft dataset folder"):
        agent_sft.load(str(tmp_path / "notes"))
    d = tmp_path / "ds"
    write(d, episodes[:6])
    with pytest.raises(DatasetError, match="unknown config 'sfft'"):
        agent_sft.load(str(d), "sfft")
    # a truncated shard names its file
    shard = sorted((d / "data/raw").glob("*/*.arrow"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CorruptShardError, match=shard.name):
        DatasetWriter(d, fingerprint=FP)


def test_another_schema_version_is_refused(tmp_path, episodes):
    d = tmp_path / "ds"
    write(d, episodes[:4])
    info = json.loads((d / "meta/info.json").read_text())
    info["schema_version"] = 99
    (d / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(SchemaVersionError, match="schema version 99"):
        DatasetWriter(d, fingerprint=FP)
    d2 = tmp_path / "ds2"
    write(d2, episodes[:4])
    shard = sorted((d2 / "data/raw").glob("*/*.arrow"))[0]
    table = shards.read_shard(str(shard))
    meta = json.loads(table.schema.metadata[b"agent_sft"])
    meta["schema_version"] = 0
    with pa.OSFile(str(shard), "wb") as fh, pa.ipc.new_file(fh, table.schema.with_metadata({b"agent_sft": json.dumps(meta)})) as wr:
        wr.write_table(table)
    with pytest.raises(SchemaVersionError, match=shard.name):
        DatasetWriter(d2, fingerprint=FP)


def test_rebuild_rederives_sft_with_new_filters_and_counts_drops(tmp_path, episodes):
    d = tmp_path / "ds"
    write(d, episodes)
    st = rebuild(str(d), BuildSpec("auto", {"require_success": True}))
    won = [e for e in episodes if e.success]
    assert st["drops"]["not_success"] == len(episodes) - len(won)
    sft = agent_sft.load(str(d), "sft")
    assert set(sft["train"]["episode_id"]) | set(sft["validation"]["episode_id"]) == {e.episode_id for e in won}
    assert all(list(sft["train"]["success"]))
    # raw keeps every episode
    raw = agent_sft.load(str(d), "raw")
    assert len(raw["train"]) + len(raw["validation"]) == len(episodes)
    # another style: one row per episode
    rebuild(str(d), BuildSpec("episode", {}))
    sft = agent_sft.load(str(d), "sft")
    assert len(sft["train"]) + len(sft["validation"]) == len(episodes)
    assert len(os.listdir(d / "data/sft/train")) == 1  # old generations removed


def test_all_rows_filtered_loads_empty_with_a_clear_message(tmp_path, caplog):
    d = tmp_path / "ds"
    write(d, [make_episode(i, success=False) for i in range(4)], build=BuildSpec("auto", {"require_success": True}))
    with caplog.at_level("WARNING"):
        sft = agent_sft.load(str(d), "sft")
    assert "all 4 episodes were dropped by the filters" in caplog.text
    assert len(sft["train"]) == len(sft["validation"]) == 0
    assert "messages" in sft["train"].features
    raw = agent_sft.load(str(d), "raw")
    assert len(raw["train"]) + len(raw.get("validation", [])) == 4


def test_merge_combines_folders_and_skips_duplicates(tmp_path):
    a, b, dest = tmp_path / "a", tmp_path / "b", tmp_path / "m"
    write(a, [make_episode(i) for i in range(0, 10)])
    write(b, [make_episode(i) for i in range(5, 15)])
    r = merge(str(dest), [str(a), str(b)])
    assert r["added"] == 15 and r["duplicates"] == 5
    got = load_in_fresh_process(dest, "raw")
    assert sum(len(v) for v in got.values()) == 15
    write(tmp_path / "c", [make_episode(20)], fingerprint={**FP, "seed": 9})
    with pytest.raises(ConfigMismatchError):
        merge(str(tmp_path / "m2"), [str(a), str(tmp_path / "c")])


def test_compact_all_writers(tmp_path):
    d = tmp_path / "ds"
    for k in range(3):  # three runs killed before their end: each leaves its own small shard
        w = DatasetWriter(d, fingerprint=FP)
        for i in range(k * 5, k * 5 + 5):
            w.add(make_episode(i))
        w.close()
    assert len(os.listdir(d / "data/raw/train")) == 3
    st = compact(str(d))
    assert len(os.listdir(d / "data/raw/train")) == 1 and st["total_episodes"] == 15


def test_a_later_run_compacts_small_shards_left_by_killed_runs(tmp_path):
    d = tmp_path / "ds"
    for k in range(4):
        w = DatasetWriter(d, fingerprint=FP, flush_every_episodes=2)
        for i in range(k * 6, k * 6 + 6):
            w.add(make_episode(i))
        w.close()  # killed before its end: no compaction
    assert len(os.listdir(d / "data/raw/train")) >= 8
    write(d, [make_episode(i) for i in range(24, 26)])
    assert len(os.listdir(d / "data/raw/train")) == 1
    raw = load_in_fresh_process(d, "raw")
    assert sorted(raw["train"] + raw.get("validation", [])) == sorted(make_episode(i).episode_id for i in range(26))


def test_rows_carry_no_absolute_paths(tmp_path, episodes):
    d = tmp_path / "ds"
    write(d, episodes[:4], meta={"env": {"env_name": "alfworld", "data_path": str(tmp_path / "games")}})
    raw = agent_sft.load(str(d), "raw")
    assert not any(str(tmp_path) in json.dumps(r) for split in raw.values() for r in split)
    assert str(tmp_path) not in (d / "README.md").read_text()


def test_error_episodes_are_played_again_on_resume(tmp_path):
    d = tmp_path / "ds"
    eps = [make_episode(i) for i in range(8)]
    failed = make_episode(3)
    failed.end_reason, failed.error = "error", "RuntimeError: env worker died"
    write(d, eps[:3] + [failed] + eps[4:])
    raw = agent_sft.load(str(d), "raw")
    assert [r["episode_id"] for split in raw.values() for r in split if r["end_reason"] == "error"] == [failed.episode_id]
    w = DatasetWriter(d, fingerprint=FP)
    assert failed.episode_id not in w.done_ids and len(w.done_ids) == 7
    assert [w.add(e) for e in eps] == [e.episode_id == failed.episode_id for e in eps]
    w.finalize()
    raw = agent_sft.load(str(d), "raw")
    rows = [r for split in raw.values() for r in split]
    assert len(rows) == len({r["episode_id"] for r in rows}) == 8
    assert all(r["end_reason"] != "error" for r in rows)


def test_a_rebuild_or_compaction_while_collecting_is_followed(tmp_path):
    d = tmp_path / "ds"
    w = DatasetWriter(d, fingerprint=FP, flush_every_episodes=1)
    eps = [make_episode(i, success=i % 2 == 0) for i in range(12)]
    for e in eps[:4]:
        w.add(e)
    rebuild(str(d), BuildSpec("auto", {"require_success": True}))  # another terminal: agent-sft build
    for e in eps[4:8]:
        w.add(e)
    compact(str(d))  # another terminal: agent-sft compact
    for e in eps[8:]:
        w.add(e)
    st = w.finalize()
    assert st["total_episodes"] == 12 and st["drops"] == {"not_success": 6}
    sft = agent_sft.load(str(d), "sft")
    assert {i for split in sft.values() for i in split["episode_id"]} == {e.episode_id for e in eps if e.success}


def test_resume_without_filters_keeps_the_folders_build(tmp_path, episodes):
    d = tmp_path / "ds"
    write(d, episodes[:10])
    rebuild(str(d), BuildSpec("auto", {"require_success": True}))
    write(d, episodes, build=None)
    info = json.loads((d / "meta/info.json").read_text())
    assert info["build"]["filters"] == {"require_success": True}
    sft = agent_sft.load(str(d), "sft")
    assert all(all(list(split["success"])) for split in sft.values())


def test_a_failed_flush_keeps_its_episodes_for_the_next_one(tmp_path, monkeypatch):
    d = tmp_path / "ds"
    w = DatasetWriter(d, fingerprint=FP, flush_every_episodes=1000, flush_every_s=3600)
    eps = [make_episode(i) for i in range(6)]
    for e in eps:
        w.add(e)
    real = shards.write_shard
    calls = []

    def disk_full_once(path, config, rows, meta):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(path, config, rows, meta)

    monkeypatch.setattr(shards, "write_shard", disk_full_once)
    with pytest.raises(OSError, match="No space left"):
        w.flush()
    monkeypatch.setattr(shards, "write_shard", real)
    w.flush()
    w.finalize()
    raw = agent_sft.load(str(d), "raw")
    ids = [r["episode_id"] for split in raw.values() for r in split]
    assert sorted(ids) == sorted(e.episode_id for e in eps)


def test_an_episode_with_an_unknown_split_is_refused_when_added(tmp_path):
    w = DatasetWriter(tmp_path / "ds", fingerprint=FP)
    e = make_episode(0)
    e.split = "test"
    with pytest.raises(DatasetError, match="split 'test' is not one of train, validation"):
        w.add(e)
    w.close()
