"""Model policies playing the built-in ALFWorld games for real, on the tiny offline model.

The tiny model's output is gibberish: every episode must still be recorded, with invalid actions and
their reasons counted, and a second run with the same seed must give the same text.
"""

import json

import pytest
from fixtures_models import SERVED_NAME, needs_hf, needs_vllm

import agent_sft
from agent_sft.config import load_config, to_dict
from agent_sft.dataset.writer import BuildSpec, DatasetWriter
from agent_sft.rollout import iter_collect

pytestmark = pytest.mark.alfworld


EPISODES = 3  # a batch of three games: enough for invalid actions and a real prompt; the count itself is not the point


def cfg_for(folder, *extra):
    return load_config(overrides=[
        f"env.num_episodes={EPISODES}", f"data.val_batch_size={EPISODES}", "env.max_steps=3", "env.seed=11",
        "policy.max_tokens=24", "policy.temperature=1.0", f"output.dir={folder}", *extra,
    ], environ={})


def collect_into(folder, cfg, policy):
    with DatasetWriter(folder, fingerprint={"policy": cfg.policy.type}, meta=to_dict(cfg), build=BuildSpec()) as w:
        for ep in iter_collect(cfg, policy, w.done_ids):
            w.add(ep)
        stats = w.finalize()
    raw = agent_sft.load(str(folder), "raw")
    rows = [r for split in raw.values() for r in split]
    return {r["episode_id"]: r for r in rows}, stats


def check_gibberish_run(rows, stats, kind):
    assert len(rows) == EPISODES
    steps = [s for r in rows.values() for s in r["steps"]]
    assert steps, "no step was played"
    for r in rows.values():
        assert r["policy"]["kind"] == kind
        assert r["end_reason"] in ("step_limit", "failure", "success", "context_truncated")
        assert r["episode_length"] == len(r["steps"]) <= 3
    for s in steps:
        assert s["response"] is not None
        assert s["prompt_tokens"] and s["prompt_tokens"] > 100  # a real ALFWorld prompt, counted
        assert s["completion_tokens"] and s["completion_tokens"] >= 1
        if not s["valid"]:
            assert s["invalid_reason"]  # e.g. "missing <action>...</action> tag"
    invalid = sum(1 for s in steps if not s["valid"])
    assert invalid > 0 and stats["invalid_steps"] == invalid


def collect_twice(tmp_path, build_policy, *overrides):
    """The same run into two folders; (rows, stats) of each."""
    runs = []
    for name in ("a", "b"):
        cfg = cfg_for(tmp_path / name, *overrides)
        policy = build_policy(cfg)
        try:
            runs.append(collect_into(tmp_path / name, cfg, policy))
        finally:
            policy.close()
    return runs


def same_text(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert [s["response"] for s in a[k]["steps"]] == [s["response"] for s in b[k]["steps"]]
        assert a[k]["messages"] == b[k]["messages"]


@needs_vllm
def test_vllm_collects_reproducibly_on_builtin_games(vllm_policy, tiny_model_dir, tmp_path):
    from agent_sft.policies.vllm import VLLMPolicy

    # one engine per test session: each run's policy shares it (and closing one leaves the engine up)
    runs = []
    for name in ("a", "b"):
        cfg = cfg_for(tmp_path / name, "policy.type=vllm", f"policy.model={tiny_model_dir}", "policy.max_model_len=2048")
        runs.append(collect_into(tmp_path / name, cfg, VLLMPolicy(cfg.policy, llm=vllm_policy.llm)))
    check_gibberish_run(*runs[0], "vllm")
    same_text(runs[0][0], runs[1][0])


@needs_vllm
def test_vllm_growing_chat_past_the_context_is_recorded_as_truncated(vllm_policy, tiny_model_dir, tmp_path):
    from agent_sft.policies.vllm import VLLMPolicy

    cfg = cfg_for(tmp_path / "c", "policy.type=vllm", f"policy.model={tiny_model_dir}", "prompt.style=chat",
                  "env.max_steps=12", "policy.max_tokens=200", "env.num_episodes=2", "data.val_batch_size=2")
    rows, stats = collect_into(tmp_path / "c", cfg, VLLMPolicy(cfg.policy, llm=vllm_policy.llm))
    assert len(rows) == 2
    assert stats["end_reasons"].get("context_truncated", 0) >= 1
    truncated = [r for r in rows.values() if r["end_reason"] == "context_truncated"]
    for r in truncated:
        # the turn whose prompt no longer fit is not a step: what was played before it is kept
        assert all(s["response"] for s in r["steps"])
    sft = agent_sft.load(str(tmp_path / "c"), "sft")
    trained = {e for split in sft.values() for e in split["episode_id"]}
    assert {r["episode_id"] for r in truncated if r["steps"]} <= trained


@needs_hf
def test_transformers_collects_reproducibly_on_builtin_games(tiny_model_dir, tmp_path):
    from agent_sft.policies.registry import make_policy

    runs = collect_twice(tmp_path, lambda cfg: make_policy(cfg.policy),
                         "policy.type=hf", f"policy.model={tiny_model_dir}", "policy.max_model_len=2048")
    check_gibberish_run(*runs[0], "hf")
    same_text(runs[0][0], runs[1][0])


@needs_vllm
def test_http_policy_collects_from_a_real_vllm_server(vllm_server, tmp_path, monkeypatch):
    from agent_sft.policies.registry import make_policy

    monkeypatch.setenv("AGENT_SFT_TEST_KEY", "sk-test-secret-123")
    runs = collect_twice(tmp_path, lambda cfg: make_policy(cfg.policy), "policy.type=openai",
                         f"policy.model={SERVED_NAME}", f"policy.base_url={vllm_server}", "policy.api_key_env=AGENT_SFT_TEST_KEY")
    check_gibberish_run(*runs[0], "openai")
    same_text(runs[0][0], runs[1][0])
    # the key is read from the environment and never written anywhere
    for path in (tmp_path / "a").rglob("*"):
        if path.is_file():
            assert b"sk-test-secret-123" not in path.read_bytes(), path
    assert "sk-test-secret-123" not in json.dumps(runs[0][1])


def test_collect_stops_at_once_when_the_server_refuses_the_key(fault_server, tmp_path, capsys, monkeypatch):
    from agent_sft.cli import main

    monkeypatch.setenv("AGENT_SFT_TEST_KEY", "sk-wrong-key")
    code = main(["collect", "--no-progress", "policy.type=openai", "policy.model=m", "policy.api_key_env=AGENT_SFT_TEST_KEY",
                 f"policy.base_url={fault_server.url('401-echo')}", "env.num_episodes=4", "data.val_batch_size=2",
                 f"output.dir={tmp_path / 'ds'}"])
    err = capsys.readouterr().err
    assert code == 2 and "HTTP 401" in err and "api_key_env" in err and "sk-wrong-key" not in err
    assert "Traceback" not in err
    assert fault_server.count("401-echo") == 2  # one turn of two episodes, no retries, no further turns
