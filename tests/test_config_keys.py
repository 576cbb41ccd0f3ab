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


# Each canonical key, its other spellings, and a value other than the default.
CANONICAL = [
    ("loop.parallel", ["data.val_batch_size"], 5),
    ("env.samples_per_task", ["env.rollout.n"], 3),
    ("env.pool", ["env.backend"], "thread"),
]


def _nested(key, value):
    """`a.b.c=v` as the YAML mapping `{a: {b: {c: v}}}`."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


@pytest.mark.parametrize("name, others, value", CANONICAL)
def test_a_canonical_key_sets_what_its_old_spellings_set(tmp_path, name, others, value):
    import yaml

    def loaded(key, how):
        if how == "dotted":
            return load_config(None, [f"{key}={value}"], environ={})
        f = tmp_path / f"{how}.yaml"
        f.write_text(yaml.safe_dump({key: value} if how == "flat" else _nested(key, value)))
        return load_config(str(f), environ={})

    default = load_config(environ={})
    for how in ("dotted", "flat", "nested"):
        cfg = loaded(name, how)
        assert cfg != default and all(loaded(old, how) == cfg for old in others), (name, how)
    # a bad value is refused under the key as written
    for key in [name, *others]:
        with pytest.raises(ConfigError, match=rf"^{key}: "):
            load_config(None, [f"{key}={'none' if value == 'thread' else 'x'}"], environ={})


def test_bounds_checks_name_the_canonical_key(tmp_path):
    for key in ("loop.parallel", "data.val_batch_size"):
        with pytest.raises(ConfigError, match=r"^loop\.parallel: must be at least 1 \(got 0\)$"):
            load_config(None, [f"{key}=0"], environ={})
    with pytest.raises(ConfigError, match=r"^env\.samples_per_task: must be at least 1 \(got 0\)$"):
        load_config(None, ["env.rollout.n=0"], environ={})


def test_keys_lists_canonical_names_each_with_one_sentence_of_help(capsys):
    import re

    assert main(["collect", "--keys"]) == 0
    out = capsys.readouterr().out
    listed = dict(re.findall(r"^(\S+) = .*\n    (.*)$", out, re.M))
    for name, others, _ in CANONICAL:
        assert name in listed and f"(also {', '.join(others)})." in listed[name]
        assert not set(others) & set(listed)
    assert "(also actor_rollout_ref.model.path)." in listed["policy.model"]
    assert list(listed).index("loop.parallel") == list(listed).index("loop.mode") - 1
    assert len(listed) > 110
    for key, help in listed.items():
        # one sentence: no sentence ends inside it
        assert help.endswith(".") and not re.search(r"(?<!e\.g)[.!?] +[A-Z`]", help), (key, help)


def test_old_and_canonical_keys_give_one_fingerprint(tmp_path):
    old = load_config(None, ["data.val_batch_size=4", "env.rollout.n=2", "env.backend=thread",
                             "actor_rollout_ref.rollout.val_kwargs.temperature=0.7"], environ={})
    (tmp_path / "run.yaml").write_text("loop: {parallel: 4}\nenv: {samples_per_task: 2, pool: thread}\n"
                                       "policy: {temperature: 0.7}\n")
    new = load_config(str(tmp_path / "run.yaml"), environ={})
    assert of_config(new) == of_config(old) and new == old
    assert of_config(new) != of_config(load_config(None, ["env.samples_per_task=3"], environ={}))
