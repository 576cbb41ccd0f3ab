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
