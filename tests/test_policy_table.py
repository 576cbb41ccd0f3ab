"""The policy table: a backend is one file plus one row, and the default policy rule lives in one place."""

import json

import pytest
from toy_policy import LABEL

import agent_sft
from agent_sft.cli import main
from agent_sft.config import CollectConfig, ConfigError, PolicyConfig, load_config
from agent_sft.config.lanes import lanes
from agent_sft.policies import PolicyError
from agent_sft.policies.registry import POLICIES, PolicyEntry, make_policy, policy_kind, register_policy


@pytest.fixture
def toy():
    """The toy backend registered as `toy` for one test."""
    yield register_policy("toy", PolicyEntry("toy_policy:ToyPolicy", needs_model=False))
    POLICIES.pop("toy", None)


def run_keys(out, *extra):
    return ["env.env_name=taxi", "env.backend=thread", "env.num_episodes=2", "env.max_steps=3",
            "data.val_batch_size=2", f"output.dir={out}", *extra]


def test_a_registered_backend_collects_a_folder_under_its_own_label(tmp_path, toy):
    result = agent_sft.collect(run_keys(tmp_path / "ds", "policy.type=toy"))
    assert result.stats["total_episodes"] == 2
    raw = agent_sft.load(str(tmp_path / "ds"), "raw")
    rows = [row for split in raw.values() for row in split]
    assert len(rows) == 2
    assert {(r["policy"]["kind"], r["policy"]["model"]) for r in rows} == {("toy", LABEL)}
    assert all(r["num_invalid"] == 0 and r["episode_length"] == 3 for r in rows)  # every answer was a valid move
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    assert info["config"]["policy"]["type"] == "toy"


def test_a_rows_model_check_and_precheck_run_before_anything_is_played(tmp_path, toy):
    register_policy("toy", toy, local_model=True)
    with pytest.raises(ConfigError, match="policy.model: no model folder at ./no-such-model"):
        agent_sft.collect(run_keys(tmp_path / "ds", "policy.type=toy", "policy.model=./no-such-model"))

    def refuse(cfg):
        raise PolicyError(f"toy server for {cfg.model} is down")

    register_policy("toy", toy, precheck=refuse)
    with pytest.raises(PolicyError, match="toy server for m is down"):
        agent_sft.collect(run_keys(tmp_path / "ds", "policy.type=toy", "policy.model=m"))
    assert not (tmp_path / "ds" / "meta").exists()
    register_policy("toy", toy, needs_model=True)
    with pytest.raises(ConfigError, match="policy.type=toy needs policy.model"):
        load_config(None, ["policy.type=toy"], environ={})


def test_policy_kind_is_the_one_default_rule():
    assert policy_kind(PolicyConfig(type="hf", model="m")) == "hf"
    assert policy_kind(PolicyConfig(model="m")) == "vllm"
    assert policy_kind(PolicyConfig()) == "expert"
    assert policy_kind({"policy": {"type": None, "model": "m"}}) == "vllm"  # a folder's recorded config
    assert policy_kind({"type": None, "model": None}) == "expert"
    cfg = CollectConfig()
    cfg.policy.model = "m"  # not yet checked: the type is still unset
    assert policy_kind(cfg) == "vllm"
    assert lanes(cfg)[0].env_kwargs(cfg)["expert"] is None  # a model policy gets no expert plan


def test_an_unknown_type_is_refused_naming_the_tables_choices(toy, capsys):
    with pytest.raises(ConfigError, match=r"policy.type: 'gpt' is not one of expert, vllm, hf, openai, toy$"):
        load_config(None, ["policy.type=gpt"], environ={})
    with pytest.raises(ConfigError, match=r"unknown policy 'gpt'; choose one of expert, vllm, hf, openai, toy$"):
        make_policy(PolicyConfig(type="gpt", model="x"))
    assert main(["collect", "--keys"]) == 0
    assert "policy.type = None\n    Policy kind, a row of the policy table (expert, vllm, hf, openai)" in capsys.readouterr().out
