"""Token ids and logprobs recorded when asked (`policy.record_tokens`, `policy.logprobs`): from vLLM offline as a
bare `LLM.chat` gives them, from an OpenAI-compatible server as it sent them (a scripted loopback server and
vLLM's own), an incomplete capture flagged and filtered out, and the RL export's layout."""

from __future__ import annotations

import json
import os
import threading

import pyarrow.parquet as pq
import pytest
from fixtures_models import SERVED_NAME, TEST_MAX_MODEL_LEN, needs_hf, needs_vllm
from token_server import TokenServer

import agent_sft
from agent_sft.cli import main
from agent_sft.config import load_config
from agent_sft.dataset.formats import TOKEN_STEP_FIELDS, episode_to_row
from agent_sft.dataset.writer import BuildSpec, DatasetWriter
from agent_sft.publish.tokens import sequences
from agent_sft.records import turn_seed

LEGACY = os.path.join(os.path.dirname(__file__), "data", "legacy_alfworld")


def frozenlake(folder, *extra):
    return ["env.env_name=frozenlake", "env.num_episodes=4", "env.max_steps=3", "data.val_fraction=0",
            "data.val_batch_size=2", "env.backend=thread", f"output.dir={folder}", *extra]


def raw_rows(folder):
    return {r["episode_id"]: r for sp in agent_sft.load(str(folder), "raw").values() for r in sp}


# --- the HTTP path, against a scripted server ----------------------------------------------------

def test_http_tokens_are_what_the_server_sent_and_an_incomplete_capture_is_flagged_filtered_and_not_exported(tmp_path):
    d, out = tmp_path / "ds", tmp_path / "rl"
    omitted: set[int] = set()
    lock = threading.Lock()

    def omit(seed):  # the server answers its third request without any token ids
        with lock:
            omit.n += 1
            if omit.n == 3:
                omitted.add(seed)
            return seed in omitted
    omit.n = 0

    with TokenServer(omit=omit) as server:
        policy = ["policy.type=openai", "policy.model=tok", f"policy.base_url={server.url}", "policy.record_tokens=true",
                  "policy.logprobs=2"]
        assert main(["collect", "--no-progress", *frozenlake(d, *policy)]) == 0
        sent, bodies = dict(server.sent), list(server.bodies)

    assert all(b["logprobs"] is True and b["top_logprobs"] == 2 and b["return_token_ids"] is True
               and b["return_tokens_as_token_ids"] is True for b in bodies)
    rows = raw_rows(d)
    assert len(rows) == 4
    for r in rows.values():
        for s in r["steps"]:
            answer = sent[turn_seed(r["seed"], s["index"])]
            choice = answer["choices"][0]
            if turn_seed(r["seed"], s["index"]) in omitted:
                assert s["prompt_token_ids"] is None and s["completion_token_ids"] is None
                continue
            assert s["prompt_token_ids"] == answer["prompt_token_ids"]
            assert s["completion_token_ids"] == choice["token_ids"]
            content = choice["logprobs"]["content"]
            assert s["logprobs"] == pytest.approx([e["logprob"] for e in content], abs=1e-5)
            assert [[t["token_id"] for t in at] for at in s["top_logprobs"]] == [
                [int(t["token"].split(":")[1]) for t in e["top_logprobs"]] for e in content]
    incomplete = {eid for eid, r in rows.items() if any(turn_seed(r["seed"], s["index"]) in omitted for s in r["steps"])}
    assert len(incomplete) == 1
    assert {eid: r["tokens_complete"] for eid, r in rows.items()} == {eid: eid not in incomplete for eid in rows}
    info = json.loads((d / "meta" / "info.json").read_text())
    assert info["schema_additions"] == ["task_hash", "tokens"]
    assert info["fingerprint"]["policy"]["record_tokens"] is True and info["fingerprint"]["policy"]["logprobs"] == 2

    assert main(["build", str(d), "filters.require_tokens=true"]) == 0
    assert {r["episode_id"] for sp in agent_sft.load(str(d), "sft").values() for r in sp} == set(rows) - incomplete
    assert main(["export", str(d), "--format", "tokens", "--out", str(out)]) == 0
    exported = pq.read_table(out / "train.parquet").to_pylist()
    assert {e["episode_id"] for e in exported} == set(rows) - incomplete
    for e in exported:  # a windowed prompt: one row per turn, the completion the only model tokens
        s = rows[e["episode_id"]]["steps"][e["steps"][0]]
        assert e["steps"] == [e["sequence"]] and e["prompt_ids"] == s["prompt_token_ids"]
        assert e["response_ids"] == s["completion_token_ids"] and e["response_mask"] == [1] * len(e["response_ids"])
        assert e["response_logprobs"] == pytest.approx(s["logprobs"], abs=1e-6)


def test_a_tokens_folder_is_not_continued_without_them_and_text_rows_stay_as_they_were(tmp_path, capsys):
    from fixtures_data import make_episode

    row = episode_to_row(make_episode(0, steps=2))
    assert "tokens_complete" not in row and not set(TOKEN_STEP_FIELDS) & set(row["steps"][0])
    d = tmp_path / "ds"
    with TokenServer() as server:
        policy = ["policy.type=openai", "policy.model=tok", f"policy.base_url={server.url}"]
        assert main(["collect", "--no-progress", *frozenlake(d, *policy, "policy.record_tokens=true")]) == 0
        capsys.readouterr()
        assert main(["collect", "--no-progress", *frozenlake(d, *policy, "env.num_episodes=5")]) == 2
        assert "schema additions task_hash, tokens, this run's task_hash" in capsys.readouterr().err
    # a filter on a capture the folder never made is refused, not left to drop everything
    import shutil

    shutil.copytree(LEGACY, tmp_path / "legacy")
    assert main(["build", str(tmp_path / "legacy"), "--require-tokens"]) == 2
    assert "filters.require_tokens" in capsys.readouterr().err


def test_record_tokens_is_refused_for_an_expert_and_logprobs_needs_it(tmp_path, capsys):
    assert main(["collect", "--no-progress", *frozenlake(tmp_path / "a", "policy.record_tokens=true")]) == 2
    assert "policy.record_tokens: policy.type=expert plays no model" in capsys.readouterr().err
    assert main(["collect", "--no-progress", *frozenlake(tmp_path / "b", "policy.type=openai", "policy.model=m", "policy.logprobs=3")]) == 2
    assert "policy.logprobs needs policy.record_tokens=true" in capsys.readouterr().err
    assert main(["export", str(LEGACY), "--format", "tokens", "--out", str(tmp_path / "out")]) == 2
    assert "collected without policy.record_tokens" in capsys.readouterr().err


def test_a_folder_written_before_the_keys_keeps_its_fingerprint():
    from agent_sft.dataset.fingerprint import of_config

    info = json.loads(open(os.path.join(LEGACY, "meta", "info.json")).read())
    args = ["env.num_episodes=6", "data.val_fraction=0.5", "data.val_batch_size=3", "env.max_steps=30"]
    now = of_config(load_config(None, args, environ={}))
    assert now["policy"] == info["fingerprint"]["policy"]  # no record_tokens or logprobs: it resumes as it did


def test_turns_of_one_chat_make_one_sequence_and_a_rewritten_prompt_starts_another():
    def step(i, prompt, completion, reward=0.0):
        return {"index": i, "prompt_token_ids": prompt, "completion_token_ids": completion,
                "logprobs": [-0.5] * len(completion), "reward": reward}

    row = {"episode_id": "e", "env": "x", "task_id": "t", "task_type": "", "split": "train", "policy": {"model": "m"},
           "success": True, "end_reason": "success", "final_reward": 1.0,
           "steps": [step(0, [1, 2], [3, 4]), step(1, [1, 2, 3, 4, 5, 6], [7], 1.0), step(2, [9, 1, 2], [8])]}
    first, second = sequences(row)
    assert first["prompt_ids"] == [1, 2] and first["response_ids"] == [3, 4, 5, 6, 7]
    assert first["response_mask"] == [1, 1, 0, 0, 1] and first["response_logprobs"] == [-0.5, -0.5, 0.0, 0.0, -0.5]
    assert first["steps"] == [0, 1] and first["step_rewards"] == [0.0, 1.0]
    assert second["sequence"] == 1 and second["prompt_ids"] == [9, 1, 2] and second["response_mask"] == [1]


# --- vLLM offline and vLLM's server ----------------------------------------------------------------

def _tokens_cfg(model_dir, **kw):
    from agent_sft.config import PolicyConfig

    return PolicyConfig(type="vllm", model=model_dir, dtype="bfloat16", max_model_len=TEST_MAX_MODEL_LEN,
                        max_tokens=16, temperature=1.0, enforce_eager=True, record_tokens=True, **kw)


CONVS = [[{"role": "user", "content": f"You are in room {i}. Your admissible actions are: ['go north', 'look']."}]
         for i in range(3)]


@needs_vllm
@pytest.mark.vllm
def test_vllm_records_what_a_bare_llm_chat_gives(vllm_policy, tiny_model_dir):
    from vllm import SamplingParams

    from agent_sft.policies.vllm import VLLMPolicy

    policy = VLLMPolicy(_tokens_cfg(tiny_model_dir, logprobs=3), llm=vllm_policy.llm)
    seeds = [11, 12, 13]
    got = policy.act(CONVS, seeds)
    loop = policy.requests()
    try:
        async_answer = loop.ask(CONVS[0], seeds[0])
    finally:
        loop.close()
    bare = vllm_policy.llm.chat(CONVS, [SamplingParams(temperature=1.0, top_p=1.0, max_tokens=16, seed=s, logprobs=3)
                                        for s in seeds], use_tqdm=False)
    for c, ref in zip(got, bare):
        o = ref.outputs[0]
        assert c.prompt_token_ids == list(ref.prompt_token_ids) and c.completion_token_ids == list(o.token_ids)
        assert c.logprobs == pytest.approx([o.logprobs[i][t].logprob for i, t in enumerate(o.token_ids)], abs=1e-5)
        for at, ref_at in zip(c.top_logprobs, o.logprobs):
            top = sorted((lp.rank, t, lp.logprob) for t, lp in ref_at.items() if lp.rank <= 3)
            assert [a["token_id"] for a in at] == [t for _, t, _ in top]
            assert [a["logprob"] for a in at] == pytest.approx([lp for _, _, lp in top], abs=1e-5)
    assert async_answer.completion_token_ids == got[0].completion_token_ids
    assert async_answer.logprobs == pytest.approx(got[0].logprobs, abs=1e-5)


@needs_vllm
@pytest.mark.vllm
def test_a_vllm_collection_exports_ids_that_decode_to_its_conversation(vllm_policy, tiny_model_dir, tmp_path):
    from agent_sft.policies.vllm import VLLMPolicy
    from agent_sft.rollout import iter_collect

    d, out = tmp_path / "ds", tmp_path / "rl"
    cfg = load_config(None, [*frozenlake(d, "env.num_episodes=2", "env.max_steps=2"), "policy.type=vllm",
                             f"policy.model={tiny_model_dir}", "policy.max_tokens=16", "policy.record_tokens=true"],
                      environ={})
    policy = VLLMPolicy(_tokens_cfg(tiny_model_dir), llm=vllm_policy.llm)
    with DatasetWriter(d, fingerprint={"policy": "vllm"}, build=BuildSpec(), additions=("tokens",)) as w:
        for ep in iter_collect(cfg, policy, w.done_ids):
            w.add(ep)
        w.finalize()
    rows = raw_rows(d)
    assert rows and all(r["tokens_complete"] is True for r in rows.values())
    assert main(["export", str(d), "--format", "tokens", "--out", str(out)]) == 0
    tok = policy.tokenizer
    exported = pq.read_table(out / "train.parquet").to_pylist()
    assert len(exported) == sum(len(r["steps"]) for r in rows.values())
    for e in exported:
        r = rows[e["episode_id"]]
        s = r["steps"][e["steps"][0]]
        prompt = agent_sft.records.prompt_of(r["messages"], s["prompt_start"], s["prompt_end"])
        assert tok.decode(e["prompt_ids"]) == tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        text = tok.decode(e["response_ids"], skip_special_tokens=True)
        # vLLM's text leaves out a last character whose bytes the turn did not finish; the ids keep them
        assert text.startswith(s["response"]) and set(text[len(s["response"]):]) <= {"\ufffd"}
        assert sum(e["response_mask"]) == len(e["response_ids"]) == len(e["response_logprobs"]) == s["completion_tokens"]


@needs_vllm
@pytest.mark.vllm
def test_vllm_server_returns_the_prompt_and_completion_ids(vllm_server, vllm_policy, tiny_model_dir):
    from agent_sft.config import PolicyConfig
    from agent_sft.policies.openai import OpenAIPolicy

    cfg = PolicyConfig(type="openai", model=SERVED_NAME, base_url=vllm_server, max_tokens=16, temperature=1.0,
                       record_tokens=True, logprobs=2)
    policy = OpenAIPolicy(cfg)
    try:
        got = policy.act(CONVS[:2], [5, 6])
    finally:
        policy.close()
    for conv, c in zip(CONVS, got):
        assert c.prompt_token_ids == vllm_policy.prompt_ids(conv)  # the server's own prompt, as the template gives it
        assert c.completion_token_ids and len(c.completion_token_ids) == c.completion_tokens == len(c.logprobs)
        assert all(len(at) == 2 for at in c.top_logprobs)
        assert all(lp <= 0.0 for lp in c.logprobs)


@needs_hf
def test_transformers_records_the_logprobs_a_forward_pass_gives(tiny_model_dir):
    import torch

    from agent_sft.config import PolicyConfig
    from agent_sft.policies.hf import HFPolicy

    policy = HFPolicy(PolicyConfig(type="hf", model=tiny_model_dir, max_tokens=12, temperature=1.0, record_tokens=True,
                                   logprobs=2))
    (c,) = policy.act(CONVS[:1], [3])
    assert c.prompt_token_ids == policy.prompt_ids(CONVS[0]) and len(c.completion_token_ids) == c.completion_tokens
    ids = torch.tensor([c.prompt_token_ids + c.completion_token_ids])
    with torch.inference_mode():
        logits = policy.model(input_ids=ids).logits[0, len(c.prompt_token_ids) - 1 : -1].float().log_softmax(-1)
    want = logits.gather(-1, torch.tensor(c.completion_token_ids)[:, None])[:, 0].tolist()
    assert c.logprobs == pytest.approx(want, abs=1e-4)
    assert [[t["token_id"] for t in at] for at in c.top_logprobs] == logits.topk(2, dim=-1).indices.tolist()
