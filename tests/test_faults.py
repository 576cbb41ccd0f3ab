"""SIGKILL at seeded random moments of every command that writes a dataset folder.

After each kill the folder must load in a fresh process (`load_dataset` of every config its README lists,
`agent_sft.load` of both) with no episode lost or duplicated, and the same command run again must end
with exactly the rows of an uninterrupted run. The default suite kills each command once, the extended
run (`pytest -m extended`) three more times at other moments; the soak (`pytest -m soak tests/test_faults.py`,
or `python bench/kill_table.py`) kills each at least 20 times.
"""

from __future__ import annotations

import os
import shutil

import faults
import pytest

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SCENARIOS = ["collect", "collect (async)", "resume (with error episodes to replay)", "build", "compact", "merge"]


def _kill_each(seeds):
    base = faults.scratch()
    try:
        h = faults.Harness(base)
        scenarios = faults.all_scenarios(small=True)
        h.setup(scenarios)
        trials = h.trials([(sc, seeds) for sc in scenarios])
        print("\n" + faults.summarize(trials))
        yield trials
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def kill_trials():
    yield from _kill_each([0])


@pytest.fixture(scope="module")
def more_kill_trials():
    yield from _kill_each([1, 2, 3])


def _assert_trials(trials, name):
    ts = [t for t in trials if t.scenario == name]
    assert ts
    for t in ts:
        where = f"{name}, seed {t.seed}, killed after {t.delay} s"
        assert t.loads, f"{where}: the folder does not load: {t.error}"
        assert t.lost == 0, f"{where}: {t.lost} episodes sealed before the command were lost"
        assert t.duplicated == 0, f"{where}: {t.duplicated} episodes are in the folder twice"
        assert t.final_identical, f"{where}: after running it again: {t.error}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_killed_command_leaves_a_folder_that_loads_and_finishes_when_run_again(kill_trials, name):
    _assert_trials(kill_trials, name)


@pytest.mark.extended
@pytest.mark.parametrize("name", SCENARIOS)
def test_a_command_killed_at_other_moments_leaves_a_folder_that_loads_and_finishes(more_kill_trials, name):
    _assert_trials(more_kill_trials, name)


@pytest.mark.soak
def test_soak_kills(capsys):
    base = faults.scratch()
    try:
        h = faults.Harness(base)
        scenarios = faults.all_scenarios()
        h.setup(scenarios)
        trials = h.trials([(sc, list(range(100, 100 + int(os.environ.get("AGENT_SFT_SOAK_KILLS", "24")))))
                           for sc in scenarios])
        with capsys.disabled():
            print("\n" + faults.summarize(trials))
        for name in SCENARIOS:
            _assert_trials(trials, name)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_killed_push_leaves_the_folder_as_it_was_and_the_next_push_completes(hub, tmp_path):
    import random
    import time

    folder = tmp_path / "ds"
    faults._synthetic(str(folder), range(300), flush_every=30)
    before = faults.check_folders([str(folder)], str(tmp_path / "cache"))[str(folder)]
    repo_id = hub.new_repo_id()
    env = hub.env()
    t0 = time.monotonic()
    assert hub.cli("push", str(folder), hub.new_repo_id()).returncode == 0
    duration = time.monotonic() - t0
    rng = random.Random(7)
    kills = 0
    for _ in range(2):
        kills += faults.run_and_kill(faults.CLI + ["push", str(folder), repo_id], str(tmp_path),
                                     duration * rng.uniform(0.3, 0.95), env=env) is None
    after = faults.check_folders([str(folder)], str(tmp_path / "cache"))[str(folder)]
    assert after == before  # a push never changes the local folder
    proc = hub.cli("push", str(folder), repo_id)
    assert proc.returncode == 0, proc.stderr
    got = hub.python(
        "import sys, json, datasets\n"
        "ds = datasets.load_dataset(sys.argv[1], 'raw')\n"
        "print(json.dumps(sorted(r['episode_id'] for d in ds.values() for r in d)))",
        repo_id,
    )
    assert got == sorted(r[0] for r in before["raw"])
