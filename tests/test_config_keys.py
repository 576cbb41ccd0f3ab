"""Which keys a config accepts: a misspelled key in any section is refused with a did-you-mean, verl's trainer
keys are ignored; a config built in Python is checked as a loaded one is; a mixed run records each env's versions."""

import json

import pytest

import agent_sft
from agent_sft.cli import main
from agent_sft.config import CollectConfig, ConfigError, load_config
from agent_sft.dataset.fingerprint import of_config


@pytest.mark.parametrize("key, meant", [
    ("env.max_step", "env.max_steps"),
    ("env.rollout.m", "env.rollout.n"),
    ("env.alfworld.data_pth", "env.alfworld.data_path"),
    ("env.mix.taxi.max_step", "env.mix.taxi.max_steps"),
    ("policy.temprature", "policy.temperature"),
    ("prompt.stlye", "prompt.style"),
    ("loop.paralel", "loop.parallel"),  # an alias is a key one may have meant
    ("scale.colectors", "scale.collectors"),
    ("filters.require_sucess", "filters.require_success"),
    ("output.dri", "output.dir"),
    ("data.val_batch_sise", "data.val_batch_size"),
    ("polcy.type", "policy.type"),
])
def test_a_misspelled_key_in_any_section_is_refused_with_the_key_it_meant(key, meant):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{key}=1"], environ={})
    assert f"unknown config key '{key}'" in str(err.value) and f"; did you mean {meant}?" in str(err.value)


def test_a_misspelled_key_in_a_file_is_refused_by_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text("data:\n  val_batch_sise: 4\n")
    assert main(["collect", "--config", "run.yaml"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'data.val_batch_sise'" in err and "did you mean data.val_batch_size?" in err
    assert not (tmp_path / "agent_sft_data").exists()


def test_verl_trainer_keys_and_listed_data_keys_are_ignored(tmp_path):
    verl = ["trainer.n_gpus_per_node=8", "algorithm.gigpo.mode=mean_norm", "critic.optim.lr=1e-5",
            "reward_model.enable=False", "actor_rollout_ref.actor.ppo_mini_batch_size=8",
            "data.train_files=train.parquet", "data.train_batch_size=16", "data.max_prompt_length=2048",
            "data.max_response_length=256", "data.filter_overlong_prompts=True", "data.truncation=error",
            "data.return_raw_chat=True", "+data.gen_batch_size=32", "data.custom_cls.path=null"]
    assert load_config(None, verl, environ={}) == load_config(environ={})
    f = tmp_path / "verl.yaml"
    f.write_text("data:\n  val_batch_size: 6\n  prompt_key: prompt\n  apply_chat_template_kwargs: {}\n"
                 "  sampler: {class_path: null}\ntrainer:\n  total_epochs: 1\n")
    assert load_config(str(f), environ={}).data.val_batch_size == 6


@pytest.mark.parametrize("field, value", [
    ("data.val_batch_size", 0), ("env.max_steps", 0), ("loop.mode", "asink"), ("env.seed", "many"),
])
def test_a_config_built_in_python_is_refused_as_the_cli_refuses_it(tmp_path, capsys, field, value):
    cfg = CollectConfig()
    cfg.output.dir = str(tmp_path / "ds")
    section, name = field.split(".")
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(ConfigError) as err:
        agent_sft.collect(cfg)
    assert main(["collect", f"output.dir={tmp_path / 'ds'}", f"{field}={value}"]) == 2
    assert capsys.readouterr().err.strip() == f"agent-sft collect: error: {err.value}"
    assert not (tmp_path / "ds").exists()


def test_a_mixed_run_records_every_envs_versions(tmp_path):
    cfg = CollectConfig()
    cfg.env.mix = [{"env": "frozenlake", "episodes": 1}, {"env": "taxi", "episodes": 1}]
    cfg.env.backend, cfg.env.max_steps, cfg.data.val_batch_size = "thread", 8, 2
    cfg.output.dir = str(tmp_path / "ds")
    assert agent_sft.collect(cfg).stats["total_episodes"] == 2
    # validating again changes nothing: the same config resumes the folder it wrote
    assert agent_sft.collect(cfg).run["skipped_done"] == 2
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    assert set(info["env_versions"]) == {"frozenlake", "taxi"}
    assert all({"python", "agent_sft", "gymnasium"} <= set(v) for v in info["env_versions"].values())
    assert info["versions"] == info["env_versions"]["frozenlake"]  # the first env's, as before
    # the identity is the one the same keys give on the command line, and holds no versions
    same = load_config(None, ["env.mix=[{env: frozenlake, episodes: 1}, {env: taxi, episodes: 1}]",
                              "env.backend=thread", "env.max_steps=8"], environ={})
    assert info["fingerprint"] == json.loads(json.dumps(of_config(same)))
