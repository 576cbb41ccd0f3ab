"""The configs written over the whole folder beside `sft`: `scores` (every episode's quality scores), `dpo`
(success-against-failure pairs of a task) and named builds (`agent-sft build --name`). Each loads as a config of
its own, is listed and checksummed like `sft`, is written again by `agent-sft build` without touching `raw`, and a
damaged or missing file of one is found by `repair --check` and written again by `repair`."""

from __future__ import annotations

import json
import os

import datasets
import pytest
from fixtures_data import make_episode

import agent_sft
from agent_sft.cli import main
from agent_sft.dataset.builder import read_readme
from agent_sft.dataset.writer import DatasetWriter

FP = {"env": "alfworld", "seed": 0}

# task -> outcome of samples 0, 1, 2, ...: tasks 0 and 3 have both outcomes, task 1 is always solved, task 2 never
OUTCOMES = {0: (False, True, False, True), 1: (True, True), 2: (False, False), 3: (True, False)}


def episodes(outcomes=OUTCOMES):
    return [make_episode(t, s, success=won, steps=3 + s + t, val_fraction=0.0)
            for t, wins in outcomes.items() for s, won in enumerate(wins)]


def write(d, eps):
    with DatasetWriter.open(d, fingerprint=FP, flush_every_episodes=3) as w:
        for ep in eps:
            w.add(ep)


def rows(d, config):
    ds = agent_sft.load(str(d), config)
    return [r for split in ds.values() for r in split]


def cli(capsys, *args):
    rc = main(list(args))
    return rc, capsys.readouterr().out


def test_scores_and_pairs_are_configs_of_the_folder(tmp_path, capsys):
    d = tmp_path / "ds"
    eps = episodes()
    write(d, eps)
    by_id = {e.episode_id: e for e in eps}

    scores = {r["episode_id"]: r for r in rows(d, "scores")}
    assert set(scores) == set(by_id)
    t0 = [e for e in eps if e.task_id.endswith("T0000")]
    shortest = min(e.episode_length for e in t0 if e.success)
    for e in t0:
        assert scores[e.episode_id]["length_ratio"] == pytest.approx(e.episode_length / shortest)
        assert scores[e.episode_id]["invalid_rate"] == 0.0
    assert all(scores[e.episode_id]["length_ratio"] is None for e in eps if e.task_id.endswith("T0002"))

    pairs = rows(d, "dpo")
    assert pairs, "tasks 0 and 3 have both outcomes"
    for p in pairs:
        win, loss = by_id[p["chosen_episode_id"]], by_id[p["rejected_episode_id"]]
        assert win.success and not loss.success and win.task_id == loss.task_id == p["task_id"]
        assert p["chosen"][0]["role"] == "assistant" and p["rejected"][0]["role"] == "assistant"
    assert {p["task_id"] for p in pairs} == {e.task_id for e in eps if e.task_id.endswith(("T0000", "T0003"))}

    configs, why = read_readme(str(d))
    assert why is None and list(configs) == ["sft", "dpo", "scores", "raw"]
    direct = datasets.load_dataset(str(d), "dpo")  # as a user loads it, from the README's listing
    assert sum(len(s) for s in direct.values()) == len(pairs)

    rc, out = cli(capsys, "info", str(d))
    assert rc == 0 and f"scores: train {len(eps)}, validation 0 episodes scored" in out, out
    assert "dpo: train" in out


def test_a_folder_without_both_outcomes_in_a_task_has_no_pairs_and_says_why(tmp_path, capsys):
    d = tmp_path / "ds"
    write(d, episodes({1: (True, True), 2: (False, False)}))
    configs, _ = read_readme(str(d))
    assert "dpo" not in configs and "scores" in configs
    rc, out = cli(capsys, "info", str(d))
    assert "dpo: no pairs: no dpo config: no task has both a successful and a failed episode" in out, out
    assert rows(d, "dpo") == []


def test_a_named_build_is_a_config_of_its_own_and_can_be_dropped(tmp_path, capsys):
    d = tmp_path / "ds"
    eps = episodes()
    write(d, eps)
    raw_before = sorted(r["episode_id"] for r in rows(d, "raw"))
    sft_before = len(rows(d, "sft"))

    rc, out = cli(capsys, "build", str(d), "--name", "sft_steps", "--style", "step", "--require-success")
    assert rc == 0 and "built sft_steps" in out, out
    won = [e for e in eps if e.success]
    steps = rows(d, "sft_steps")
    assert len(steps) == sum(e.episode_length for e in won)
    assert {r["episode_id"] for r in steps} == {e.episode_id for e in won}
    assert len(rows(d, "sft")) == sft_before  # sft keeps its own spec
    assert sorted(r["episode_id"] for r in rows(d, "raw")) == raw_before
    assert len(datasets.load_dataset(str(d), "sft_steps")["train"]) == len(steps)
    rc, out = cli(capsys, "info", str(d))
    assert rc == 0 and "sft_steps (named build, style step; filters: require_success=True)" in out, out

    # another build of sft keeps the named build, written again from raw
    assert cli(capsys, "build", str(d), "--max-steps", "4")[0] == 0
    assert len(rows(d, "sft_steps")) == len(steps)

    rc, out = cli(capsys, "build", str(d), "--name", "sft_steps", "--drop")
    assert rc == 0
    configs, _ = read_readme(str(d))
    assert "sft_steps" not in configs and not any(os.scandir(d / "data" / "sft_steps" / "train"))
    assert main(["build", str(d), "--name", "sft_steps", "--drop"]) == 2
    assert "has no build named 'sft_steps'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["dpo", "raw", "Bad-Name"])
def test_a_reserved_or_malformed_build_name_is_refused(tmp_path, capsys, name):
    d = tmp_path / "ds"
    write(d, episodes({1: (True,)}))
    assert main(["build", str(d), "--name", name]) == 2
    assert "--name" in capsys.readouterr().err


def test_a_damaged_view_file_is_found_and_written_again(tmp_path, capsys):
    d = tmp_path / "ds"
    write(d, episodes())
    info = json.loads((d / "meta" / "info.json").read_text())
    scores_file = d / "data" / "scores" / "train" / info["views"]["scores"]["files"]["train"][0]
    with open(scores_file, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\0" * 16)
    (d / "data" / "dpo" / "train" / "g99-00000.arrow").write_bytes(b"left by a build cut short")
    rc, out = cli(capsys, "repair", "--check", str(d))
    assert rc == 1 and "data/scores/train/" in out, out
    rc, out = cli(capsys, "repair", str(d))
    assert rc == 0 and "written again from raw" in out, out
    assert cli(capsys, "repair", "--check", str(d))[0] == 0
    assert len(rows(d, "scores")) == sum(len(w) for w in OUTCOMES.values())
    assert not (d / "data" / "dpo" / "train" / "g99-00000.arrow").exists()


def test_builds_filter_and_select_by_any_score_a_judges_too(tmp_path, capsys):
    from agent_sft.dataset import judged

    d = tmp_path / "ds"
    eps = episodes()
    write(d, eps)
    ratio = {r["episode_id"]: r["length_ratio"] for r in rows(d, "scores")}

    assert cli(capsys, "build", str(d), "--scores", "length_ratio<=1.2")[0] == 0
    kept = {r["episode_id"] for r in rows(d, "sft")}
    assert kept == {i for i, v in ratio.items() if v is not None and v <= 1.2}
    info = json.loads((d / "meta" / "info.json").read_text())
    assert info["stages"]["drops"]["alfworld"]["score"] == len(eps) - len(kept)
    # each episode says which build left it out, and by what (a viewer shows it)
    assert {r["episode_id"]: r["dropped_by"] for r in rows(d, "scores")} == {
        e.episode_id: [] if e.episode_id in kept else [{"config": "sft", "reason": "score"}] for e in eps}

    # the best episode of each task by a score where lower is better: the shortest relative to the task
    assert cli(capsys, "build", str(d), "--select", "best", "--select-by", "length_ratio")[0] == 0
    best = {}
    for e in eps:
        v = ratio[e.episode_id]
        key = (v is None, v or 0.0, e.sample_index)
        if e.task_id not in best or key < best[e.task_id][0]:
            best[e.task_id] = (key, e.episode_id)
    assert {r["episode_id"] for r in rows(d, "sft")} == {i for _, i in best.values()}

    # a judge's verdicts are a score like the others once sealed
    now = 1.7e9
    verdicts = [{"episode_id": e.episode_id, "judge": "rubric", "mode": "pointwise", "score": 0.9 if e.success else 0.2,
                 "model": "m", "template_sha256": "t", "prompt": "[]", "output": "{}", "seed": 0, "error": None,
                 "judged_at": now, "split": e.split} for e in eps]
    judged.write_verdicts(str(d), "rubric", verdicts, {"mode": "pointwise", "model": "m", "template_sha256": "t"})
    assert cli(capsys, "build", str(d), "--scores", "judge.rubric>=0.5")[0] == 0
    assert {r["episode_id"] for r in rows(d, "sft")} == {e.episode_id for e in eps if e.success}
    assert {r["episode_id"]: r["judge"] for r in rows(d, "scores")}[eps[1].episode_id] == [{"name": "rubric", "score": 0.9}]
    assert main(["build", str(d), "--scores", "judge.rubrik>=0.5"]) == 2
    assert "did you mean 'judge.rubric'" in capsys.readouterr().err
    # a judge's later verdicts reach sft when its build reads them, as a judge run ends (agent-sft judge)
    from agent_sft.dataset.maintain import refresh_views

    assert eps[1].success
    judged.write_verdicts(str(d), "rubric", [{**verdicts[1], "score": 0.1, "judged_at": now + 1}],
                          {"mode": "pointwise", "model": "m", "template_sha256": "t"})
    refresh_views(str(d))
    assert {r["episode_id"] for r in rows(d, "sft")} == {e.episode_id for e in eps if e.success} - {eps[1].episode_id}


@pytest.mark.parametrize("args, says", [
    (["--scores", "invalid_rat<=0.2"], "did you mean 'invalid_rate'"),
    (["--scores", "invalid_rate<=2"], "out of range for invalid_rate"),
    (["--scores", "invalid_rate is small"], "is not a rule"),
    (["--select", "best"], "needs filters.select_by"),
    (["--select", "best", "--select-by", "lenght_ratio"], "did you mean 'length_ratio'"),
    (["--scores", "judge.rubirc>=0.6"], "no judge named 'rubirc' has scored this folder"),
])
def test_a_bad_score_rule_is_refused_before_anything_is_written(tmp_path, capsys, args, says):
    d = tmp_path / "ds"
    write(d, episodes({1: (True,)}))
    before = (d / "meta" / "info.json").read_text()
    assert main(["build", str(d), *args]) == 2
    assert says in capsys.readouterr().err
    assert (d / "meta" / "info.json").read_text() == before


def test_the_card_and_info_show_the_configs_and_the_stage_drops_per_task_type(tmp_path, capsys):
    d = tmp_path / "ds"
    write(d, episodes())
    assert cli(capsys, "build", str(d), "--name", "best", "--select", "first_success")[0] == 0
    assert cli(capsys, "build", str(d), "--task-success", "mixed")[0] == 0
    card = (d / "README.md").read_text()
    assert "| `dpo` |" in card and "| `scores` | 10 | 0 | quality scores of every episode |" in card
    assert "| `best` |" in card and "a named build: style `auto`, filters `select=first_success`" in card
    # tasks 1 and 2 (one task type each) are not mixed: the stages dropped them, counted per task type
    assert "| alfworld | look_at_obj_in_light | task_success 2 |" in card, card
    rc, out = cli(capsys, "info", str(d))
    assert "  alfworld look_at_obj_in_light: task_success 2" in out, out


KILLED_WRITING_DPO = """
import json, os, signal, sys
sys.path.insert(0, {tests!r})
import pyarrow as pa, pyarrow.ipc
from agent_sft.dataset.maintain import rebuild
from agent_sft.dataset.writer import BuildSpec

class Dying(pyarrow.ipc.RecordBatchFileWriter):
    def __init__(self, sink, schema, *args, **kwargs):
        if json.loads(schema.metadata[b"agent_sft"])["config"] == "dpo":  # the scores view is sealed by now
            os.kill(os.getpid(), signal.SIGKILL)
        super().__init__(sink, schema, *args, **kwargs)

pyarrow.ipc.RecordBatchFileWriter = pa.RecordBatchFileWriter = Dying
rebuild({folder!r}, BuildSpec("auto", {{"require_success": True}}), dpo={{"pairs": "both"}})
print("not killed")
"""


def test_a_build_killed_while_writing_the_views_leaves_the_previous_ones(tmp_path, capsys):
    import signal
    import subprocess
    import sys

    d = tmp_path / "ds"
    write(d, episodes())
    before = {c: sorted(map(str, (d / "data" / c).rglob("*.arrow"))) for c in ("dpo", "scores")}
    pairs = rows(d, "dpo")
    tests = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.run([sys.executable, "-c", KILLED_WRITING_DPO.format(tests=tests, folder=str(d))],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, (p.stdout + p.stderr)[-2000:]
    configs, why = read_readme(str(d))
    assert why is None and all(os.path.isfile(d / path) for c in configs.values() for ps in c.values() for path in ps)
    assert rows(d, "dpo") == pairs and len(rows(d, "scores")) == len(episodes())
    assert cli(capsys, "repair", "--check", str(d))[0] == 0
    # the same build again finishes the work; what the killed one wrote is gone
    assert main(["build", str(d), "--require-success", "--dpo-pairs", "both"]) == 0
    after = {c: sorted(map(str, (d / "data" / c).rglob("*.arrow"))) for c in ("dpo", "scores")}
    assert all(not set(after[c]) & set(before[c]) for c in after)
    assert cli(capsys, "repair", "--check", str(d))[0] == 0


def test_score_rules_and_best_selection_on_a_real_folder(flaky_folders, tmp_path, capsys):
    """A FrozenLake folder by an expert that sometimes goes wrong or answers without its tags: the scores say so,
    and a build keeps exactly what its rules ask for."""
    import shutil

    d = tmp_path / "window"
    shutil.copytree(flaky_folders["window"], d)
    raw = {r["episode_id"]: r for r in rows(d, "raw")}
    scores = {r["episode_id"]: r for r in rows(d, "scores")}
    assert set(scores) == set(raw)
    for i, r in raw.items():
        n = len(r["steps"])
        assert scores[i]["invalid_rate"] == pytest.approx(sum(not s["valid"] for s in r["steps"]) / n)
    assert 0 < sum(s["invalid_rate"] == 0 for s in scores.values()) < len(scores)  # the rule below bites

    assert main(["build", str(d), "--scores", "invalid_rate<=0", "--scores", "format_rate>=1"]) == 0
    clean = {i for i, s in scores.items() if s["invalid_rate"] == 0 and s["format_rate"] == 1}
    assert {r["episode_id"] for r in rows(d, "sft")} == clean

    assert main(["build", str(d), "--select", "best", "--select-by", "invalid_rate", "--per-task", "1"]) == 0
    by_task: dict[str, list] = {}
    for i, s in scores.items():
        by_task.setdefault(s["task_id"], []).append((s["invalid_rate"], s["sample_index"], i))
    assert {r["episode_id"] for r in rows(d, "sft")} == {min(v)[2] for v in by_task.values()}
    capsys.readouterr()


def test_a_builds_dpo_settings_stay_the_folders(tmp_path, capsys):
    d = tmp_path / "ds"
    write(d, episodes())
    assert rows(d, "dpo")
    assert cli(capsys, "build", str(d), "--dpo-pairs", "off")[0] == 0
    assert cli(capsys, "build", str(d), "--max-steps", "20")[0] == 0  # another build, without dpo keys
    assert "dpo" not in read_readme(str(d))[0] and rows(d, "dpo") == []
    assert "dpo: no pairs: dpo.pairs=off" in cli(capsys, "info", str(d))[1]
    write(d, [])  # a run's end (its config leaves dpo.* at the defaults) keeps them too
    assert "dpo" not in read_readme(str(d))[0]


def test_a_lost_info_keeps_the_named_builds(tmp_path, capsys):
    d = tmp_path / "ds"
    write(d, episodes())
    assert cli(capsys, "build", str(d), "--name", "won", "--require-success")[0] == 0
    won = sorted(r["episode_id"] for r in rows(d, "won"))
    (d / "meta" / "info.json").unlink()
    rc, out = cli(capsys, "repair", str(d))
    assert rc == 0, out
    assert sorted(r["episode_id"] for r in rows(d, "won")) == won and rows(d, "dpo") and rows(d, "scores")
    assert cli(capsys, "repair", "--check", str(d))[0] == 0


def test_a_tool_call_folder_scores_its_calls_and_says_why_it_has_no_pairs(tool_folders, capsys):
    for style, folder in tool_folders.items():
        scores = rows(folder, "scores")
        assert scores and all(s["format_rate"] == 1.0 for s in scores), style  # the expert's calls all read
        rc, out = cli(capsys, "info", folder)
        assert "dpo: no pairs: no dpo config: pairs of tool-call episodes are not written" in out, out
