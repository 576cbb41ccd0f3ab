"""The README's promises, checked the way a user would: collected folders loaded with `datasets`, the
card, `agent-sft info`, what is on disk after a write fails or a process is killed, and what an
OpenAI-compatible server sees.

Collections play `partial-test` (tests/partial_env.py): instant scripted episodes, with the built-in
expert policy, so whole runs take a few seconds.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import partial_env
import pyarrow as pa
import pyarrow.ipc
import pytest
from datasets import load_dataset
from fixtures_data import make_episode

import agent_sft
from agent_sft.cli import main
from agent_sft.dataset import atomic, layout, shards
from agent_sft.dataset.formats import episode_to_row
from agent_sft.dataset.writer import DatasetWriter
from agent_sft.errors import DatasetError
from agent_sft.records import RAW_SCHEMA

TESTS = os.path.dirname(os.path.abspath(__file__))
SWITCHES = ("COLLECT_SFT", "SFT_SEED", "SFT_REQUIRE_SUCCESS")
FP = {"env": "alfworld", "seed": 0}


# --- helpers ---------------------------------------------------------------------------------------

@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh cwd and none of the SFT_* switches."""
    monkeypatch.chdir(tmp_path)
    for var in SWITCHES:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def collect(folder, *overrides):
    """`agent-sft collect` on the scripted env (play tasks unless overridden), as a user runs it."""
    args = ["collect", "--no-progress", f"env.env_name={partial_env.NAME}", "env.task_types=[play]",
            "data.val_batch_size=2", f"output.dir={folder}", *overrides]
    assert main(args) == 0


def rows(folder, config):
    """split -> list of rows, as `datasets.load_dataset(folder, config)` gives them."""
    return {split: list(ds) for split, ds in load_dataset(str(folder), config).items()}


def flat(by_split):
    return [r for split_rows in by_split.values() for r in split_rows]


def cli_out(capsys, *argv):
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def card_body(folder):
    return (folder / "README.md").read_text().split("---", 2)[2]


def write(folder, eps, **kw):
    kw.setdefault("fingerprint", FP)
    with DatasetWriter(folder, **kw) as w:
        for e in eps:
            w.add(e)
    return w


def assert_sft_matches_raw(folder):
    """What the README lists: every raw episode has its sft rows (one per step), and sft nothing else."""
    raw = {r["episode_id"]: r for r in flat(rows(folder, "raw"))}
    sft = Counter(r["episode_id"] for r in flat(rows(folder, "sft")))
    assert sft == Counter({eid: r["episode_length"] for eid, r in raw.items()})
    return raw


# --- filters: `filters.*` and SFT_REQUIRE_SUCCESS reach the collected folder -----------------------

@pytest.mark.parametrize("how", ["override", "env-var"])
def test_collect_with_require_success_keeps_failed_episodes_out_of_sft_only(workdir, monkeypatch, capsys, how):
    if how == "env-var":
        monkeypatch.setenv("SFT_REQUIRE_SUCCESS", "True")
        collect("ds")
    else:
        collect("ds", "filters.require_success=true")
    raw = flat(rows("ds", "raw"))
    lost = {r["episode_id"] for r in raw if r["task_id"] in partial_env.PLAY_LOST}
    assert len(raw) == partial_env.PLAY_TASKS and len(lost) == len(partial_env.PLAY_LOST) > 0
    assert {r["episode_id"] for r in raw if not r["success"]} == lost  # raw keeps every episode
    sft = flat(rows("ds", "sft"))
    assert {r["episode_id"] for r in sft} == {r["episode_id"] for r in raw} - lost
    assert all(r["success"] for r in sft)
    info = cli_out(capsys, "info", "ds")
    assert "require_success=True" in info and f"dropped by filter: not_success {len(lost)}" in info
    assert f"not_success: {len(lost)}" in card_body(workdir / "ds")


# --- seeds and splits of several samples per task --------------------------------------------------

@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """One collection of every play task x 4 samples, half the tasks (by hash) in validation."""
    folder = tmp_path_factory.mktemp("sampled") / "ds"
    with pytest.MonkeyPatch.context() as mp:
        for var in SWITCHES:
            mp.delenv(var, raising=False)
        collect(folder, "env.rollout.n=4", "data.val_fraction=0.5", "data.val_batch_size=4")
    return rows(folder, "raw"), rows(folder, "sft")


def test_samples_of_a_task_have_their_own_seeds_and_ids(sampled):
    raw, sft = sampled
    by_task = defaultdict(list)
    for r in flat(raw):
        by_task[r["task_id"]].append(r)
    assert len(by_task) == partial_env.PLAY_TASKS
    for task, eps in by_task.items():
        assert sorted(r["sample_index"] for r in eps) == [0, 1, 2, 3], task
        assert len({r["episode_id"] for r in eps}) == 4, task
        assert len({r["seed"] for r in eps}) == 4, task
        # the env was reset with each sample's own seed: four different episodes, not one four times
        assert len({r["messages"][0]["content"] for r in eps}) == 4, task
    sft_seeds = defaultdict(set)
    for r in flat(sft):
        sft_seeds[r["task_id"]].add(r["seed"])
    assert all(len(s) == 4 for s in sft_seeds.values())


def test_no_task_in_both_splits_with_several_samples_per_task(sampled):
    raw, sft = sampled
    for by_split in (raw, sft):
        tasks = {split: {r["task_id"] for r in split_rows} for split, split_rows in by_split.items()}
        assert tasks.get("train") and tasks.get("validation")
        assert not tasks["train"] & tasks["validation"]
    assert all(r["split"] == split for split, split_rows in raw.items() for r in split_rows)
    per_task = Counter(r["task_id"] for r in flat(raw))
    assert set(per_task.values()) == {4}


def test_val_fraction_sets_the_share_of_validation_tasks(sampled, workdir, capsys):
    raw, _ = sampled
    val = {r["task_id"] for r in raw["validation"]}
    train = {r["task_id"] for r in raw["train"]}
    assert 0.25 <= len(val) / len(val | train) <= 0.75, (len(val), len(train))
    collect("no_val", "data.val_fraction=0")
    got = rows("no_val", "raw")
    assert list(got) == ["train"] and len(got["train"]) == partial_env.PLAY_TASKS
    assert f"(train {partial_env.PLAY_TASKS}, validation 0)" in cli_out(capsys, "info", "no_val")


# --- sealing: a shard appears under its name complete, or not at all -------------------------------

class _ArrowWriterFault:
    """Replaces pyarrow's IPC file writer: `on_batch(n)` runs before the n-th batch (from 0) of a shard is
    written. Tables are written one row per batch, so a failure can come after some rows are on disk."""

    def __init__(self, on_batch):
        class Writer(pyarrow.ipc.RecordBatchFileWriter):
            batches = 0

            def write_batch(self, batch, *args, **kwargs):
                on_batch(self.batches)
                super().write_batch(batch, *args, **kwargs)
                self.batches += 1

            def write_table(self, table, *args, **kwargs):
                for batch in table.to_batches(max_chunksize=1):
                    self.write_batch(batch)

            def write(self, table_or_batch):
                if isinstance(table_or_batch, pa.Table):
                    self.write_table(table_or_batch)
                else:
                    self.write_batch(table_or_batch)

        self.writer = Writer

    def install(self, monkeypatch):
        monkeypatch.setattr(pyarrow.ipc, "RecordBatchFileWriter", self.writer)
        monkeypatch.setattr(pa, "RecordBatchFileWriter", self.writer)


def raw_ids(folder):
    return sorted(r["episode_id"] for r in flat(rows(folder, "raw")))


def test_a_shard_write_failing_midway_leaves_nothing_under_the_shard_name(tmp_path, monkeypatch):
    d = tmp_path / "ds"
    write(d, [make_episode(i) for i in range(6)])
    before = raw_ids(d)
    final = os.path.join(layout.shard_dir(str(d), "raw", "train"), "zz-new.arrow")
    new_rows = [episode_to_row(make_episode(i, val_fraction=0.0)) for i in range(20, 26)]
    seen = []

    def disk_full_after_first_batch(n):
        if n >= 1:
            seen.append(os.path.exists(final))  # what a kill at this instant would leave
            raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        _ArrowWriterFault(disk_full_after_first_batch).install(m)
        with pytest.raises((OSError, DatasetError)):
            shards.write_shard(final, "raw", new_rows, {"split": "train"})
        with pytest.raises((OSError, DatasetError)):
            with shards.sealing(final, "raw", {"split": "train"}) as w:
                for batch in pa.Table.from_pylist(new_rows, schema=RAW_SCHEMA).to_batches(max_chunksize=1):
                    w.write_batch(batch)
    assert seen == [False, False]
    assert not os.path.exists(final)
    assert raw_ids(d) == before
    assert sorted(i for split in agent_sft.load(str(d), "raw").values() for i in split["episode_id"]) == before
    w = DatasetWriter(d, fingerprint=FP)
    assert sorted(w.done_ids) == before
    w.close()


KILLED_MID_SHARD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import pyarrow as pa, pyarrow.ipc
from fixtures_data import make_episode
from agent_sft.dataset import shards
from agent_sft.dataset.formats import episode_to_row

class Dying(pyarrow.ipc.RecordBatchFileWriter):
    batches = 0
    def write_batch(self, batch, *args, **kwargs):
        if Dying.batches:
            os.kill(os.getpid(), signal.SIGKILL)
        super().write_batch(batch, *args, **kwargs)
        Dying.batches += 1
    def write_table(self, table, *args, **kwargs):
        for batch in table.to_batches(max_chunksize=1):
            self.write_batch(batch)

pyarrow.ipc.RecordBatchFileWriter = pa.RecordBatchFileWriter = Dying
rows = [episode_to_row(make_episode(i, val_fraction=0.0)) for i in range(20, 26)]
shards.write_shard({final!r}, "raw", rows, {{"split": "train"}})
print("not killed")
"""


def test_a_process_killed_mid_shard_leaves_a_folder_that_loads_and_resumes(tmp_path):
    d = tmp_path / "ds"
    eps = [make_episode(i) for i in range(6)]
    write(d, eps)
    before = raw_ids(d)
    final = os.path.join(layout.shard_dir(str(d), "raw", "train"), "zz-new.arrow")
    code = KILLED_MID_SHARD.format(tests=TESTS, final=final)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert not os.path.exists(final)
    assert raw_ids(d) == before
    # a resume opens the folder as it is and plays on
    more = [make_episode(i) for i in range(6, 9)]
    write(d, eps + more)
    assert raw_ids(d) == sorted(e.episode_id for e in eps + more)
    assert not [n for _, _, names in os.walk(d) for n in names if n.startswith(atomic.TMP_PREFIX)]


# --- the README lists an sft shard with every raw shard ---------------------------------------------

def test_after_every_flush_sft_holds_the_rows_of_every_listed_raw_episode(tmp_path):
    d = tmp_path / "ds"
    w = DatasetWriter(d, fingerprint=FP, flush_every_episodes=1000, flush_every_s=3600)
    eps = [make_episode(i) for i in range(7)]
    for chunk in (eps[:3], eps[3:6], eps[6:]):
        for e in chunk:
            w.add(e)
        w.flush()
        assert len(assert_sft_matches_raw(d)) == eps.index(chunk[-1]) + 1
    w.finalize()
    assert len(assert_sft_matches_raw(d)) == 7


KILLED_SEALING_SFT = """
import json, os, signal, sys
sys.path.insert(0, {tests!r})
import pyarrow as pa, pyarrow.ipc
from fixtures_data import make_episode
from agent_sft.dataset import layout
from agent_sft.dataset.writer import DatasetWriter

armed = False
class Dying(pyarrow.ipc.RecordBatchFileWriter):
    def __init__(self, sink, schema, *args, **kwargs):
        if armed and json.loads(schema.metadata[b"agent_sft"])["config"] == "sft":
            os.kill(os.getpid(), signal.SIGKILL)
        super().__init__(sink, schema, *args, **kwargs)

pyarrow.ipc.RecordBatchFileWriter = pa.RecordBatchFileWriter = Dying
w = DatasetWriter({folder!r}, fingerprint={fp!r}, flush_every_episodes=1000, flush_every_s=3600)
eps = [make_episode(i) for i in range(5)]
for chunk in (eps[:2], eps[2:4]):
    for e in chunk:
        w.add(e)
    w.flush()
w.add(eps[4])
armed = True  # the last flush dies once its raw shard is sealed, while its sft shard is written
w.flush()
print("not killed")
"""


def test_a_run_killed_while_sealing_its_last_sft_shard_lists_matching_raw_and_sft(tmp_path):
    d = tmp_path / "ds"
    code = KILLED_SEALING_SFT.format(tests=TESTS, folder=str(d), fp=FP)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, (p.stdout + p.stderr)[-2000:]
    listed = assert_sft_matches_raw(d)
    assert len(listed) >= 4
    # the resume derives what the killed run did not, and loses nothing that was sealed
    eps = [make_episode(i) for i in range(5)]
    write(d, eps)
    assert sorted(assert_sft_matches_raw(d)) == sorted(e.episode_id for e in eps)


# --- drops are counted over every record batch -----------------------------------------------------

def test_rebuild_counts_every_drop_of_a_shard_with_several_record_batches(tmp_path, capsys):
    d = tmp_path / "ds"
    eps = [make_episode(i, steps=1, success=i % 3 != 0, val_fraction=0.0) for i in range(1100)]
    failed = sum(not e.success for e in eps)
    write(d, eps, flush_every_episodes=5000, flush_every_s=3600)
    shards = [os.path.join(layout.shard_dir(str(d), "raw", "train"), n) for n in os.listdir(layout.shard_dir(str(d), "raw", "train"))]
    assert len(shards) == 1
    with pa.memory_map(shards[0]) as src:
        assert pa.ipc.open_file(src).num_record_batches > 1, "the shard must span several record batches"
    out = cli_out(capsys, "build", str(d), "--require-success")
    assert f'"not_success": {failed}' in out
    assert f"dropped by filter: not_success {failed}" in cli_out(capsys, "info", str(d))
    assert json.loads(cli_out(capsys, "info", str(d), "--json"))["drops"] == {"not_success": failed}
    assert f"not_success: {failed}" in card_body(d)
    assert len(agent_sft.load(str(d), "sft", split="train")) == len(eps) - failed


# --- the card counts the whole folder --------------------------------------------------------------

def test_card_totals_are_the_folders_after_a_resume(workdir, capsys):
    collect("ds", "env.num_episodes=4")
    collect("ds", "env.num_episodes=10")
    raw = rows("ds", "raw")
    n = len(flat(raw))
    assert n == 10
    won = sum(r["success"] for r in flat(raw))
    stats = json.loads((workdir / "ds" / "meta" / "stats.json").read_text())
    assert stats["total_episodes"] == n and stats["successes"] == won
    assert {sp: c for sp, c in stats["episodes"].items() if c} == {sp: len(r) for sp, r in raw.items()}
    body = card_body(workdir / "ds")
    assert f"{n} episodes ({100 * won / n:.1f}% won)" in body
    table = dict(re.findall(r"^\| (train|validation) \| (\d+) \|", body, re.M))
    assert {sp: int(c) for sp, c in table.items() if int(c)} == {sp: len(r) for sp, r in raw.items()}
    assert f"episodes: {n} (" in cli_out(capsys, "info", "ds")


# --- HTTP: client errors are final, rate limits and server errors are retried -----------------------

class StatusServer:
    """Loopback `/<status>/v1/chat/completions` answering that HTTP status (200: a completion); counts requests."""

    def __init__(self):
        self.counts: Counter = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = int(self.path.strip("/").split("/")[0])
                server.counts[status] += 1
                if status == 200:
                    payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                            "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
                else:
                    payload = {"error": {"message": "Invalid value for 'temperature': expected a number",
                                         "type": "BadRequestError", "code": status}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, status: int) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{status}/v1"


@pytest.fixture(scope="module")
def status_server():
    server = StatusServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def ask(server, status, max_retries=3):
    pytest.importorskip("httpx")
    from agent_sft.config import PolicyConfig
    from agent_sft.policies.registry import make_policy

    cfg = PolicyConfig(type="openai", model="m", base_url=server.url(status), max_retries=max_retries,
                       request_timeout_s=10, concurrency=2, api_key_env="")
    policy = make_policy(cfg, backoff_s=0.001, max_backoff_s=0.005)
    server.counts.clear()
    try:
        return policy.act([[{"role": "user", "content": "You see a drawer."}]], [1])[0]
    finally:
        policy.close()


@pytest.mark.parametrize("status", [400, 422])
def test_openai_client_error_is_sent_once_and_ends_only_its_episode(status_server, status):
    out = ask(status_server, status)
    assert status_server.counts[status] == 1
    assert out.finish_reason == "error" and f"HTTP {status}" in out.error and out.text == ""


@pytest.mark.parametrize("status", [429, 500, 503])
def test_openai_rate_limit_and_server_errors_are_retried(status_server, status):
    out = ask(status_server, status, max_retries=2)
    assert status_server.counts[status] == 3
    assert out.finish_reason == "error" and f"HTTP {status}" in out.error
    assert ask(status_server, 200).text == "ok" and status_server.counts[200] == 1


# --- success is the env's verdict, final_reward the return ------------------------------------------

def test_success_is_the_envs_verdict_and_final_reward_the_sum_of_rewards(workdir, capsys):
    collect("ds", "env.task_types=[scripted]", "data.val_fraction=0")
    raw = {r["task_id"]: r for r in flat(rows("ds", "raw"))}
    assert set(raw) == {f"script/{name}" for name in partial_env.SCRIPTS}
    returns = {}
    for name, script in partial_env.SCRIPTS.items():
        r = raw[f"script/{name}"]
        rewards = [reward for reward, _ in script]
        won = script[-1][1] == "won"
        assert r["rewards"] == rewards and [s["reward"] for s in r["steps"]] == rewards, name
        assert r["success"] is won and r["end_reason"] == ("success" if won else "failure"), name
        assert r["final_reward"] == pytest.approx(sum(rewards)), name
        returns[r["episode_id"]] = (won, sum(rewards))
    for row in flat(rows("ds", "sft")):
        won, ret = returns[row["episode_id"]]
        assert row["success"] is won and row["final_reward"] == pytest.approx(ret)
    wins = sum(w for w, _ in returns.values())
    mean = sum(g for _, g in returns.values()) / len(returns)
    info = cli_out(capsys, "info", "ds")
    assert f"success: {wins}/{len(returns)} " in info and f"mean reward {mean:.3f}" in info
    # filters see the same values: the episodes whose return is at least 1
    cli_out(capsys, "build", "ds", "--min-final-reward", "1")
    kept = {r["task_id"] for r in flat(rows("ds", "sft"))}
    assert kept == {t for t, r in raw.items() if r["final_reward"] >= 1} == {
        "script/partial-win", "script/win-last-zero", "script/reward-no-win"}
