"""A run is resolved once: `agent_sft.collect` checks a config without changing it, and the run's envs are
worked out once per run, whatever reads them below."""

from __future__ import annotations

import copy
import dataclasses

import pytest

import agent_sft
import agent_sft.config.load as config_load
from agent_sft.config import CollectConfig, ConfigError, load_config
from agent_sft.run import resolve


def _config(tmp_path) -> CollectConfig:
    cfg = CollectConfig()  # built in Python: policy.type and policy.expert left to their defaults
    cfg.env.env_name, cfg.env.num_episodes, cfg.env.backend = "frozenlake", 2, "thread"
    cfg.output.dir = str(tmp_path / "ds")
    return cfg


def test_collect_leaves_the_callers_config_as_it_was(tmp_path):
    cfg = _config(tmp_path)
    before = copy.deepcopy(cfg)
    result = agent_sft.collect(cfg)
    assert result.run["episodes"] == 2
    assert dataclasses.asdict(cfg) == dataclasses.asdict(before)
    assert cfg.policy.type is None  # the run played the expert without writing that into the caller's config
    run = resolve(cfg)
    assert run.policy_kind == "expert" and run.cfg.policy.type == "expert" and cfg.policy.type is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.policy_kind = "vllm"


def test_the_runs_envs_are_worked_out_once_per_run(tmp_path, monkeypatch):
    cfg = load_config(None, ["env.env_name=frozenlake", "env.num_episodes=2", "env.pool=thread",
                             f"output.dir={tmp_path / 'ds'}"], environ={})
    real, calls = config_load.lanes, []
    monkeypatch.setattr(config_load, "lanes", lambda c: calls.append(1) or real(c))
    agent_sft.collect(cfg)
    assert len(calls) == 1


def test_a_bad_value_in_a_config_built_in_python_is_refused_and_nothing_is_written(tmp_path):
    cfg = _config(tmp_path)
    cfg.data.val_batch_size = 0
    with pytest.raises(ConfigError, match="loop.parallel: must be at least 1"):
        agent_sft.collect(cfg)
    assert not (tmp_path / "ds").exists()


def test_a_ray_collector_records_task_hashes_as_the_driver_decided_whatever_folder_its_node_sees(tmp_path,
                                                                                                 monkeypatch):
    """The driver continues a folder written without the task_hash column; a collector on a node where that folder
    is absent records no task hash either, so that its episodes fit the driver's folder. (The collector is built
    here, outside Ray: tests/test_ray.py plays collectors on a cluster.)"""
    import os
    import shutil

    from agent_sft.rollout.collector import Collector
    from agent_sft.run import for_folder
    from agent_sft.scale import ray_run

    monkeypatch.setattr(ray_run, "_node_id", lambda: "elsewhere")  # the only thing a collector asks Ray

    old = tmp_path / "old"
    shutil.copytree(os.path.join(os.path.dirname(__file__), "data", "pre_house_mix"), old)
    cfg = load_config(None, ["env.mix=[{env: frozenlake, episodes: 3}, {env: taxi, episodes: 3}]", "env.backend=thread",
                             f"output.dir={old}"], environ={})
    driver = for_folder(resolve(cfg))
    assert "task_hash" not in driver.additions and "task_hash" in resolve(cfg).additions  # resolve reads no folder
    planner = Collector(driver, None)
    tasks = planner.plan().episodes[:1]
    planner.close()
    old.rename(tmp_path / "elsewhere")  # what a collector on another node sees at output.dir: nothing
    actor = ray_run.CollectorActor(driver.cfg, 0, additions=driver.additions)
    try:
        played = list(actor.play(tasks))
    finally:
        actor.close()
    assert len(played) == 1 and played[0].task_hash is None
