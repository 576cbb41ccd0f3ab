"""Several envs in one run (`env.mix`): the plan, episode identity across mixes, counts and weights,
resuming with a longer mix, per-env figures, and bad mixes. Scripted envs keep it fast; the mixed run of
the real engines is in tests/test_envs_mix.py."""

import json
import os

import partial_env
import pytest

import agent_sft
from agent_sft.cli import main
from agent_sft.config import ConfigError, load_config
from agent_sft.config.lanes import lanes
from agent_sft.dataset.reading import info_text
from agent_sft.errors import ConfigMismatchError

A, B = partial_env.NAME, partial_env.NAME_B


def cfg(*overrides):
    return load_config(None, ["data.val_batch_size=4", "env.step_timeout_s=10", *overrides], environ={})


def rows(folder):
    raw = agent_sft.load_raw(str(folder))
    out = {}
    for split in ("train", "validation"):
        for r in raw[split]:
            r = dict(r)
            for k in ("started_at", "duration_s"):
                r.pop(k, None)
            r["steps"] = [{k: v for k, v in s.items() if k != "latency_s"} for s in r["steps"]]
            out[r["episode_id"]] = r
    return out


def test_one_entry_mix_is_the_plain_run(tmp_path):
    plain = agent_sft.collect(cfg(f"env.env_name={A}", "env.num_episodes=6", f"output.dir={tmp_path / 'plain'}"))
    mixed = agent_sft.collect(cfg(f"env.mix.{A}.episodes=6", f"output.dir={tmp_path / 'mix'}"))
    assert plain.stats["total_episodes"] == mixed.stats["total_episodes"] == 6
    assert rows(tmp_path / "plain") == rows(tmp_path / "mix")
    info = [json.loads((tmp_path / d / "meta" / "info.json").read_text()) for d in ("plain", "mix")]
    assert info[0]["fingerprint"] == info[1]["fingerprint"]


def test_mix_counts_interleaving_and_identity(tmp_path):
    c = cfg(f"env.mix=[{{env: {A}, episodes: 6}}, {{env: {B}, weight: 1}}]", "env.num_episodes=10")
    run = lanes(c)
    assert [(lane.name, lane.episodes) for lane in run] == [(A, 6), (B, 4)]
    out = tmp_path / "mix"
    res = agent_sft.collect(cfg(f"env.mix=[{{env: {A}, episodes: 6}}, {{env: {B}, weight: 1}}]",
                                "env.num_episodes=10", f"output.dir={out}"))
    st = res.stats
    assert st["by_env"][A]["episodes"] == 6 and st["by_env"][B]["episodes"] == 4
    assert res.run["per_env"][A]["episodes"] == 6 and res.run["per_env"][B]["episodes"] == 4
    got = rows(out)
    assert all(r["task_id"].startswith("partial-b/") for r in got.values() if r["env"] == B)
    # An env's episodes do not depend on the other envs of the mix: A alone gives the same rows.
    alone = tmp_path / "alone"
    agent_sft.collect(cfg(f"env.env_name={A}", "env.num_episodes=6", f"output.dir={alone}"))
    assert {k: v for k, v in got.items() if v["env"] == A} == rows(alone)
    # The plan spreads the envs over the run instead of playing one after the other.
    from agent_sft.rollout.tasks import LaneTasks, make_plan

    tasks_a, tasks_b = partial_env.PartialEnv().tasks(), partial_env.OtherPartialEnv().tasks()
    plan = make_plan(cfg("env.num_episodes=10"), [LaneTasks(A, tasks_a, 6, None, A), LaneTasks(B, tasks_b, 4, None, B)])
    order = [e.lane for e in plan.episodes]
    assert sorted(order) == [0] * 6 + [1] * 4 and order[:5].count(1) == 2
    assert [p["episodes"] for p in plan.per_lane] == [6, 4]
    # The card and `agent-sft info` show each env.
    card = (out / "README.md").read_text()
    assert f"| **{A}** | all | 6 |" in card and f"| **{B}** | all | 4 |" in card
    text, ok = info_text(str(out))
    assert ok and "success by env and task type" in text and B in text


def test_resume_with_a_longer_mix_and_refusals(tmp_path, capsys):
    out = tmp_path / "ds"
    first = [f"env.mix.{A}.episodes=4", f"output.dir={out}", "data.val_batch_size=3", "--no-progress"]
    assert main(["collect", *first]) == 0
    # More episodes of A and a new env B: accepted, only the new episodes are played.
    longer = [f"env.mix.{A}.episodes=6", f"env.mix.{B}.episodes=3", f"output.dir={out}", "data.val_batch_size=3",
              "--no-progress"]
    assert main(["collect", *longer]) == 0
    text = capsys.readouterr().out
    assert "Resuming" in text and "4 episodes already there are skipped" in text
    got = rows(out)
    assert sum(r["env"] == A for r in got.values()) == 6 and sum(r["env"] == B for r in got.values()) == 3
    # Changing what decides an existing entry's episodes is refused.
    with pytest.raises(ConfigMismatchError, match=rf"env.mix.{A}.max_steps"):
        agent_sft.collect(cfg(f"env.mix.{A}.episodes=6", f"env.mix.{A}.max_steps=7", f"env.mix.{B}.episodes=3",
                              f"output.dir={out}"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([f"env.mix.{A}.weight=0", "env.num_episodes=4"], rf"env.mix.{A}.weight: must be > 0"),
        ([f"env.mix.{A}.weight=-1", f"env.mix.{B}.weight=1", "env.num_episodes=4"], rf"env.mix.{A}.weight: must be > 0"),
        ([f"env.mix.{A}.weight=1"], r"weights share env.num_episodes, which is not set"),
        (["env.mix.nosuch.episodes=2"], r"unknown environment 'nosuch'; registered: .*alfworld"),
        ([f"env.mix.{A}.data_path=/x"], rf"neither an entry field nor an option of {A}"),
        ([f"env.mix.{A}.episodes=2", f"env.mix.{A}.weight=1"], r"give episodes or weight, not both"),
        (["env.mix=[{episodes: 3}]"], r"expected a mapping with `env`"),
        ([f"env.mix=[{A}, {A}]"], r"two entries are labelled"),
        ([f"env.mix.{A}.episodes=2", "env.task_types=[play]"], r"per entry"),
        ([f"env.mix.{A}.episodes=3", f"env.mix.{B}.episodes=3", "env.num_episodes=7"], r"add up to 6 episodes"),
        ([f"env.env_name={A}", "env.data_path=/x"], r"it is an option of alfworld \(env.alfworld.data_path\), not of"),
        ([f"env.mix.{A}.episodes=2", "env.alfworld.data_path=builtin"], r"alfworld is not in env.mix"),
        (["env.mix.alfworld.expert=walkthrough", "env.mix.alfworld.episodes=2"],
         r"env.mix.alfworld.expert: 'walkthrough' is not an expert of alfworld"),
    ],
)
def test_bad_mixes_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        cfg(*overrides)


def test_same_env_twice_needs_disjoint_tasks(tmp_path):
    with pytest.raises(ConfigError, match="both play"):
        agent_sft.collect(cfg(f"env.mix=[{{env: {A}, name: one, episodes: 2}}, {{env: {A}, name: two, episodes: 2}}]",
                              f"output.dir={tmp_path / 'x'}"))
    res = agent_sft.collect(cfg(
        f"env.mix=[{{env: {A}, name: scripted, task_types: [scripted]}}, {{env: {A}, name: play, task_types: [play], "
        "episodes: 3, max_steps: 1}]", f"output.dir={tmp_path / 'ok'}"))
    got = rows(tmp_path / "ok")
    assert sum(r["task_type"] == "scripted" for r in got.values()) == len(partial_env.SCRIPTS)
    play = [r for r in got.values() if r["task_type"] == "play"]
    assert len(play) == 3 and all(r["episode_length"] == 1 for r in play)
    assert res.stats["total_episodes"] == len(partial_env.SCRIPTS) + 3


def test_the_example_mix_config_resolves():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "mixed_envs.yaml")
    got = [(lane.name, lane.episodes, lane.max_steps, lane.expert) for lane in lanes(load_config(path, environ={}))]
    assert got == [("alfworld", 24, 50, "planner"), ("textworld", 12, 40, "walkthrough"), ("babyai", 12, 50, "bot"),
                   ("frozenlake", 12, 50, "shortest_path")]
