"""Fault injection on the commands that write a dataset folder: SIGKILL at seeded random moments.

A scenario prepares a folder (and whatever the command reads), knows the command, and is run once
uninterrupted for the reference rows. Each trial copies the prepared state, starts the command in its
own process group, kills the whole group with SIGKILL after a seeded delay, checks the folder in a fresh
process as a user would (`datasets.load_dataset` of every config the README lists and `agent_sft.load`
of both), then runs the same command again to its end and compares the rows with the reference.

Used by tests/test_faults.py (a few kills of each command) and bench/kill_table.py (the soak).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

# `agent-sft` with the fast scripted env of tests/partial_env.py registered (env workers import it too)
CLI_WITH_TEST_ENV = [sys.executable, "-c",
                     "import sys, partial_env; from agent_sft.cli import main; sys.exit(main(sys.argv[1:]))"]
CLI = [sys.executable, "-m", "agent_sft"]

# Reads folders as a user would, in a process that never saw them being written. For each folder:
# raw episode id -> digest of the row without timing fields, the number of sft rows and their digest,
# or the error that stopped loading it.
_CHECK = textwrap.dedent(r'''
    import hashlib, json, os, sys
    import datasets, yaml
    import agent_sft
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    TIMING = {"started_at", "duration_s"}

    def digest(row):
        row = {k: v for k, v in row.items() if k not in TIMING}
        if "steps" in row:
            row["steps"] = [{k: v for k, v in s.items() if k != "latency_s"} for s in row["steps"]]
        return hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def listed(d):
        try:
            text = open(os.path.join(d, "README.md")).read()
        except FileNotFoundError:
            return []
        return [c["config_name"] for c in (yaml.safe_load(text.split("---")[1]) or {}).get("configs") or []]

    out = {}
    for d in json.loads(sys.argv[1]):
        if not os.path.exists(os.path.join(d, "meta", "info.json")) and not os.path.isdir(os.path.join(d, "data")):
            out[d] = {"absent": True}
            continue
        try:
            r = {}
            names = listed(d)
            for config in ("raw", "sft"):
                ds = agent_sft.load(d, config)
                rows = [x for sp in ("train", "validation") for x in ds[sp]]
                if config in names:
                    other = datasets.load_dataset(d, config)
                    assert sum(len(v) for v in other.values()) == len(rows), "load_dataset and agent_sft.load differ"
                elif rows:
                    raise AssertionError(f"{config} has rows but the README lists no {config} config")
                if config == "raw":
                    r["raw"] = [[x["episode_id"], x["end_reason"], digest(x)] for x in rows]
                else:
                    r["sft"] = sorted(digest(x) for x in rows)
            out[d] = r
        except Exception as e:
            out[d] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
    print(json.dumps(out))
''')


def check_folders(folders: list[str], cache: str) -> dict[str, dict]:
    """Load each folder in one fresh process; see `_CHECK`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": cache,
           "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", _CHECK, json.dumps(folders)], capture_output=True, text=True,
                         env=env, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"folder check failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(cmd: list[str], cwd: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def run_and_kill(cmd: list[str], cwd: str, delay: float, env: dict | None = None) -> float | None:
    """Start `cmd` in its own process group and SIGKILL the group after `delay` s.

    Returns None when it was killed, else the seconds it took to end on its own.
    """
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **(env or {})}
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        p.wait(timeout=delay)
        return time.monotonic() - t0
    except subprocess.TimeoutExpired:
        pass
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    _wait_group_gone(p.pid)
    return None


def _wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    """Env workers of a killed collect are in its group: wait until none is left."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@dataclass
class Scenario:
    """A command that writes a folder, the state it starts from, and what must hold after a kill.

    prepare(workdir) builds the starting state in `workdir` and returns the command's argv;
    `folder` is the dataset folder (relative to workdir) the command writes; `kept` names folders whose
    episodes must all survive a kill (the folder itself for commands that rewrite it).
    """

    name: str
    prepare: Callable[[str], list[str]]
    folder: str = "ds"
    env: dict = field(default_factory=dict)
    must_keep_start: bool = True  # the episodes in the folder before the command survive any kill
    reference: dict | None = None
    duration_s: float = 0.0
    start_ids: dict | None = None


@dataclass
class Trial:
    scenario: str
    seed: int
    delay: float
    killed: bool
    loads: bool
    lost: int
    duplicated: int
    final_identical: bool
    error: str = ""


def ids_of(result: dict) -> list[str]:
    return [r[0] for r in result.get("raw", [])]


class Harness:
    """Runs trials of several scenarios in a scratch folder, loading their folders in few processes."""

    def __init__(self, base: str):
        self.base = base
        self.cache = os.path.join(base, "hf-cache")
        self.templates: dict[str, str] = {}
        self.cmds: dict[str, list[str]] = {}

    def _dir(self, wd: str, sc: Scenario) -> str:
        return os.path.join(wd, sc.folder)

    def setup(self, scenarios: list[Scenario]) -> None:
        """Prepare each starting state once and run each command uninterrupted for the reference rows."""
        refs = []
        for sc in scenarios:
            tpl = os.path.join(self.base, f"{sc.name}-template")
            os.makedirs(tpl)
            self.cmds[sc.name] = sc.prepare(tpl)
            self.templates[sc.name] = tpl
            ref = os.path.join(self.base, f"{sc.name}-reference")
            shutil.copytree(tpl, ref, symlinks=True)
            refs.append(ref)
        starts = check_folders([self._dir(r, sc) for r, sc in zip(refs, scenarios)], self.cache)
        for ref, sc in zip(refs, scenarios):
            sc.start_ids = starts[self._dir(ref, sc)]
            t0 = time.monotonic()
            p = run(self.cmds[sc.name], ref, sc.env)
            sc.duration_s = time.monotonic() - t0
            if p.returncode != 0:
                raise RuntimeError(f"{sc.name}: the uninterrupted command failed ({p.returncode}):\n{p.stderr[-3000:]}")
        got = check_folders([self._dir(r, sc) for r, sc in zip(refs, scenarios)], self.cache)
        for ref, sc in zip(refs, scenarios):
            sc.reference = got[self._dir(ref, sc)]
            if "error" in sc.reference or "raw" not in sc.reference:
                raise RuntimeError(f"{sc.name}: the reference folder does not load: {sc.reference}")

    def trials(self, plan: list[tuple[Scenario, list[int]]]) -> list[Trial]:
        """Kill each run at a seeded moment; check every killed folder, then finish each and compare."""
        runs = []
        for sc, seeds in plan:
            for seed in seeds:
                rng = random.Random(f"{sc.name}-{seed}")
                delay, took = sc.duration_s * rng.uniform(0.1, 0.95), None
                for _attempt in range(4):  # a run that ended before its kill is tried again, killed earlier
                    wd = os.path.join(self.base, f"{sc.name}-{seed}")
                    shutil.rmtree(wd, ignore_errors=True)
                    shutil.copytree(self.templates[sc.name], wd, symlinks=True)
                    took = run_and_kill(self.cmds[sc.name], wd, delay, sc.env)
                    if took is None:
                        break
                    delay = took * rng.uniform(0.1, 0.95)
                runs.append((sc, seed, delay, took is None, wd))
        after_kill = check_folders([self._dir(wd, sc) for sc, *_, wd in runs], self.cache)
        finals = [run(self.cmds[sc.name], wd, sc.env) for sc, *_, wd in runs]
        after_rerun = check_folders([self._dir(wd, sc) for sc, *_, wd in runs], self.cache)
        out = []
        for (sc, seed, delay, killed, wd), p in zip(runs, finals):
            got, fin = after_kill[self._dir(wd, sc)], after_rerun[self._dir(wd, sc)]
            loads = "error" not in got
            ids = ids_of(got)
            lost = 0
            if loads and sc.must_keep_start and not got.get("absent"):
                lost = len(set(ids_of(sc.start_ids or {})) - set(ids))
            dup = len(ids) - len(set(ids))
            identical = (p.returncode == 0 and "error" not in fin and "raw" in fin
                         and sorted(map(tuple, fin["raw"])) == sorted(map(tuple, sc.reference["raw"]))
                         and fin["sft"] == sc.reference["sft"])
            err = got.get("error", "") or ("" if p.returncode == 0 else f"rerun exit {p.returncode}: {p.stderr[-500:]}")
            if not identical and not err:
                err = _difference(fin, sc.reference)
            out.append(Trial(sc.name, seed, round(delay, 3), killed, loads, lost, dup, identical, err))
            shutil.rmtree(wd, ignore_errors=True)
        return out


def _difference(got: dict, ref: dict) -> str:
    if "error" in got:
        return f"final folder does not load: {got['error']}"
    a, b = {r[0]: r for r in map(tuple, got["raw"])}, {r[0]: r for r in map(tuple, ref["raw"])}
    missing, extra = set(b) - set(a), set(a) - set(b)
    changed = [k for k in set(a) & set(b) if a[k] != b[k]]
    return (f"final rows differ: {len(missing)} missing, {len(extra)} extra, {len(changed)} changed, "
            f"{len(got['raw'])} raw rows vs {len(ref['raw'])}; sft {len(got['sft'])} vs {len(ref['sft'])}")


def summarize(trials: list[Trial]) -> str:
    """The kill table: per command, kills, folders that did not load, episodes lost or duplicated, finals."""
    lines = ["| killed during | kills | folders that did not load | episodes lost | duplicated | final != uninterrupted |",
             "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(t.scenario for t in trials):
        ts = [t for t in trials if t.scenario == name]
        k = [t for t in ts if t.killed]
        lines.append(f"| {name} | {len(k)} (of {len(ts)} runs) | {sum(not t.loads for t in k)} | {sum(t.lost for t in k)} "
                     f"| {sum(t.duplicated for t in k)} | {sum(not t.final_identical for t in ts)} |")
    return "\n".join(lines)


def scratch() -> str:
    return tempfile.mkdtemp(prefix="agent-sft-faults-")


# -- scenarios -------------------------------------------------------------------------------------

def _collect_args(folder: str, extra: list[str] = (), samples: int = 4) -> list[str]:
    return [*CLI_WITH_TEST_ENV, "collect", "env.env_name=partial-test", f"output.dir={folder}", f"env.rollout.n={samples}",
            "data.val_batch_size=8", "output.flush_every_episodes=4", "output.flush_every_s=0.2", "--no-progress", *extra]


def _synthetic(folder: str, indices: range, samples: int = 2, flush_every: int = 40) -> None:
    """A folder of synthetic episodes left as a killed collection leaves it: many small shards."""
    from fixtures_data import make_episode

    from agent_sft.dataset.writer import DatasetWriter

    w = DatasetWriter(folder, fingerprint={"env": "alfworld", "seed": 0}, flush_every_s=1e9, flush_every_episodes=flush_every)
    for i in indices:
        for s in range(samples):
            w.add(make_episode(i, s))
    w.close()


def _with_errors(folder: str, every: int) -> int:
    """Turn every `every`-th episode of a collected folder into an error episode (as a crashed env leaves it)."""
    import pyarrow as pa

    from agent_sft.dataset import layout, shards
    from agent_sft.dataset.writer import BuildSpec, DatasetWriter
    from agent_sft.records import SPLITS

    info = layout.read_info(folder)
    rows = []
    for sp in SPLITS:
        for name in sorted(layout.scan(folder, info["build"]["generation"]).raw[sp]):
            rows += shards.read_shard(os.path.join(layout.shard_dir(folder, "raw", sp), name)).to_pylist()
    shutil.rmtree(folder)
    rows.sort(key=lambda r: r["episode_id"])
    n = 0
    for i, r in enumerate(rows):
        if i % every == 0:
            r.update(end_reason="error", error="RuntimeError: the env crashed", success=False)
            n += 1
    b = info["build"]
    w = DatasetWriter(folder, fingerprint=info["fingerprint"], meta=info["config"],
                      build=BuildSpec(b["style"], b["filters"]), flush_every_s=1e9, flush_every_episodes=16)
    for r in rows:
        w.add(r)
    w.finalize()
    del pa
    return n


def collect_scenario(samples: int = 4, mode: str = "sync") -> Scenario:
    name = "collect" if mode == "sync" else f"collect ({mode})"
    return Scenario(name, lambda wd: _collect_args("ds", [f"loop.mode={mode}"], samples=samples))


def resume_scenario(samples: int = 4) -> Scenario:
    def prepare(wd: str) -> list[str]:
        p = run(_collect_args("ds", [f"env.num_episodes={15 * samples}"], samples), wd)
        assert p.returncode == 0, p.stderr[-2000:]
        _with_errors(os.path.join(wd, "ds"), every=4)
        return _collect_args("ds", samples=samples)

    return Scenario("resume (with error episodes to replay)", prepare)


def build_scenario(n: int = 600) -> Scenario:
    def prepare(wd: str) -> list[str]:
        _synthetic(os.path.join(wd, "ds"), range(n))
        return [*CLI, "build", "ds", "--style", "episode", "--require-success"]

    return Scenario("build", prepare)


def compact_scenario(n: int = 600) -> Scenario:
    def prepare(wd: str) -> list[str]:
        _synthetic(os.path.join(wd, "ds"), range(n), flush_every=20)
        return [*CLI, "compact", "ds"]

    return Scenario("compact", prepare)


def merge_scenario(n: int = 400) -> Scenario:
    def prepare(wd: str) -> list[str]:
        _synthetic(os.path.join(wd, "a"), range(0, n))
        _synthetic(os.path.join(wd, "b"), range(n // 2, n + n // 2))
        return [*CLI, "merge", "ds", "a", "b"]

    return Scenario("merge", prepare, must_keep_start=False)


def all_scenarios(small: bool = False) -> list[Scenario]:
    """Every scenario; `small` halves their work (for the default test run)."""
    k = 1 if small else 2
    return [collect_scenario(2 * k), collect_scenario(2 * k, "async"), resume_scenario(2 * k), build_scenario(300 * k),
            compact_scenario(300 * k), merge_scenario(200 * k)]
