"""`loop.mode=async`: each episode advances on its own; the data must be the lock-step loop's.

- On a small deterministic env, with policies that batch (any policy) or answer inline (the expert):
  the same episodes as `sync`, yielded in the plan's order, faults ending only their own episode, a
  policy that breaks stopping the run, and the reorder window holding new episodes back.
- On ALFWorld's built-in games: the expert, and an HTTP policy whose answers depend only on the request
  and its seed (a loopback server answering after a delay that varies with the answer's length, some
  requests failing for good), give the sync rows.
- On the tiny vLLM model: the same ids, seeds and splits; the same text where the engine runs one
  sequence at a time; the prefix cache hit rate in the run's stats.
"""

from __future__ import annotations

import threading
import time

import pytest
from fixtures_models import needs_vllm
from policy_server import PolicyServer
from test_rollout import CounterEnv, NoisyPolicy, PickyPolicy, PlanPolicy, make_cfg, play, strip_times

import agent_sft
from agent_sft.config import load_config
from agent_sft.envs import register
from agent_sft.policies.base import PolicyError
from agent_sft.policies.dispatch import MicroBatcher, requests_for
from agent_sft.records import END_CONTEXT, END_ERROR
from agent_sft.rollout import Collector


def both_modes(*overrides, policy_factory, env="counter-test", **kw):
    """(plan, episodes, stats) of a sync run and of an async run of the same config."""
    out = []
    for mode in ("sync", "async"):
        out.append(play(make_cfg(*overrides, f"loop.mode={mode}", env=env), policy_factory(), **kw))
    return out


@pytest.mark.parametrize("policy", [PlanPolicy, NoisyPolicy])
@pytest.mark.parametrize("style", ["window", "chat"])
def test_async_plays_the_sync_episodes_and_yields_them_in_plan_order(policy, style):
    (plan, sync_eps, _), (plan2, async_eps, stats) = both_modes("env.rollout.n=2", f"prompt.style={style}",
                                                                policy_factory=policy)
    assert [e.episode_id for e in plan.episodes] == [e.episode_id for e in plan2.episodes]
    by_id = {e.episode_id: strip_times(e) for e in sync_eps}
    assert sorted(by_id) == sorted(e.episode_id for e in async_eps)
    for e in async_eps:
        assert strip_times(e) == by_id[e.episode_id]
    assert [e.episode_id for e in async_eps] == [et.episode_id for et in plan.episodes]
    assert stats.mode == "async" and stats.episodes == len(plan.episodes) == 12
    assert stats.requests == sum(len(e.steps) for e in async_eps)


def test_a_policy_that_is_not_thread_safe_is_batched_and_one_that_is_answers_inline():
    from agent_sft.policies.expert import ExpertPolicy

    policy = PlanPolicy()
    _, eps, _ = play(make_cfg("loop.mode=async", "env.rollout.n=2"), policy)
    assert sum(policy.batches) == sum(len(e.steps) for e in eps)  # each step answered once, from one thread
    assert isinstance(requests_for(PlanPolicy()), MicroBatcher)
    assert type(requests_for(ExpertPolicy())).__name__ == "Inline"


def test_env_faults_and_failed_requests_end_only_their_episode_in_async():
    register("counter-faulty-async", CounterEnv)
    kwargs = {"faults": [("crash", 5), ("hang", 6)], "targets": (3, 4, 5, 7)}
    t = time.monotonic()
    plan, episodes, stats = play(make_cfg("env.step_timeout_s=2", "loop.mode=async", env="counter-faulty-async"),
                                 PlanPolicy(), env_kwargs=kwargs)
    assert time.monotonic() - t < 30
    by_id = {e.task_id: e for e in episodes}
    assert len(episodes) == 6
    assert by_id["crash/5"].end_reason == END_ERROR and "ValueError: the counter broke" in by_id["crash/5"].error
    assert by_id["hang/6"].end_reason == END_ERROR and "timed out after 2 s" in by_id["hang/6"].error
    assert all(by_id[f"count/{t}"].success for t in (3, 4, 5, 7))
    assert stats.errors == 2 and stats.workers_replaced == 2

    (_, sync_eps, _), (_, async_eps, _) = both_modes(policy_factory=PickyPolicy)
    assert {e.episode_id: strip_times(e) for e in sync_eps} == {e.episode_id: strip_times(e) for e in async_eps}
    by_task = {e.task_id: e for e in async_eps}
    assert by_task["count/6"].end_reason == END_CONTEXT
    assert by_task["count/7"].end_reason == END_ERROR and by_task["count/7"].error == "policy error: server said 500"
    assert by_task["count/8"].success


class BreakingPolicy(PlanPolicy):
    """Answers twice, then cannot go on for any episode."""

    def act(self, conversations, seeds, infos=None):
        if len(self.batches) >= 2:
            raise PolicyError("the model server went away")
        return super().act(conversations, seeds, infos)


def test_a_policy_that_cannot_go_on_stops_the_async_run_and_its_threads():
    before = threading.active_count()
    t = time.monotonic()
    with pytest.raises(PolicyError, match="went away"):
        play(make_cfg("loop.mode=async"), BreakingPolicy())
    assert time.monotonic() - t < 20
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert threading.active_count() <= before


class SlowFor(PlanPolicy):
    """Takes `delay_s` per answer of one task, so its episode ends long after the others would."""

    thread_safe = True

    def __init__(self, task_id, delay_s):
        super().__init__()
        self.task_id, self.delay_s = task_id, delay_s

    def act(self, conversations, seeds, infos=None):
        if infos[0]["task_id"] == self.task_id:
            time.sleep(self.delay_s)
        return super().act(conversations, seeds, infos)


def test_the_reorder_window_holds_new_episodes_back_behind_a_slow_one():
    cfg = make_cfg("loop.mode=async", "loop.reorder_window=2", "env.rollout.n=2")
    with Collector(cfg, PlanPolicy()) as c:
        first = c.plan().episodes[0]
    plan, episodes, _ = play(cfg, SlowFor(first.task.task_id, 0.3))
    assert [e.episode_id for e in episodes] == [et.episode_id for et in plan.episodes]
    slow = episodes[0]
    slow_end = slow.started_at + slow.duration_s
    held = episodes[2:]  # plan orders >= window: may start only once the first one is out
    assert held and all(e.started_at >= slow_end - 0.05 for e in held)
    # without the window's bound the fast episodes would all have started while the slow one played
    _, free_eps, _ = play(make_cfg("loop.mode=async", "loop.reorder_window=100", "env.rollout.n=2"),
                          SlowFor(first.task.task_id, 0.3))
    free_slow = free_eps[0]
    assert any(e.started_at < free_slow.started_at + free_slow.duration_s - 0.1 for e in free_eps[2:])


# --- ALFWorld's built-in games, through the CLI's library call ------------------------------------------


def rows_of(folder):
    raw = agent_sft.load(str(folder), "raw")
    out = {}
    for split in raw.values():
        for r in split:
            r = {k: v for k, v in r.items() if k not in ("started_at", "duration_s")}
            r["steps"] = [{k: v for k, v in s.items() if k != "latency_s"} for s in r["steps"]]
            out[r["episode_id"]] = r
    return out


def alfworld(tmp_path, name, *extra):
    return agent_sft.collect(load_config(None, [
        f"output.dir={tmp_path / name}", "env.num_episodes=4", "env.max_steps=6", "data.val_batch_size=4",
        "env.seed=5", *extra], environ={}))


@pytest.mark.alfworld
def test_alfworld_expert_and_a_deterministic_http_policy_give_the_sync_rows_in_async(tmp_path):
    a = alfworld(tmp_path, "expert-sync", "loop.mode=sync")
    b = alfworld(tmp_path, "expert-async", "loop.mode=async")
    assert rows_of(tmp_path / "expert-sync") == rows_of(tmp_path / "expert-async")
    assert a.run["mode"] == "sync" and b.run["mode"] == "async"
    assert b.stats["success_rate"] == a.stats["success_rate"] > 0
    card = (tmp_path / "expert-async" / "README.md").read_text()
    assert "| Rollout | `async` loop, 4 episodes at once" in card

    with PolicyServer(ms_per_token=1.0, fail_seeds_mod=(13, 4)) as server:
        http = ["policy.type=openai", "policy.model=det", f"policy.base_url={server.url}", "policy.max_retries=0",
                "policy.do_sample=true", "env.max_steps=5", "filters.drop_errors=false"]
        alfworld(tmp_path, "http-sync", *http, "loop.mode=sync")
        alfworld(tmp_path, "http-async", *http, "loop.mode=async")
    sync_rows, async_rows = rows_of(tmp_path / "http-sync"), rows_of(tmp_path / "http-async")
    assert sync_rows == async_rows and len(async_rows) == 4
    failed = [r for r in async_rows.values() if r["end_reason"] == "error"]
    assert failed and all("HTTP 500" in r["error"] for r in failed)  # a failed request ends only its episode
    assert any(r["end_reason"] != "error" and len(r["steps"]) == 5 for r in async_rows.values())
    assert server.max_in_flight > 1


# --- the tiny vLLM model -------------------------------------------------------------------------------


@needs_vllm
@pytest.mark.alfworld
def test_vllm_async_keeps_ids_seeds_and_splits_and_reports_prefix_cache_hits(vllm_policy, tiny_model_dir, tmp_path):
    from test_model_collect import cfg_for

    from agent_sft.policies.vllm import EngineLoop, VLLMPolicy

    model = ["policy.type=vllm", f"policy.model={tiny_model_dir}", "policy.max_model_len=2048"]
    runs = {}
    for mode, parallel in (("sync", 1), ("async", 1), ("sync", 3), ("async", 3)):
        cfg = cfg_for(tmp_path, *model, f"loop.mode={mode}", f"data.val_batch_size={parallel}",
                      f"env.num_episodes={2 * parallel}")
        policy = VLLMPolicy(cfg.policy, llm=vllm_policy.llm)
        assert isinstance(policy.requests(), EngineLoop)
        plan, eps, stats = play(cfg, policy)
        assert [e.episode_id for e in eps] == [et.episode_id for et in plan.episodes] or mode == "sync"
        runs[mode, parallel] = ({e.episode_id: e for e in eps}, stats)

    def key(run):
        return {k: (e.seed, e.split, e.task_id, e.sample_index) for k, e in run[0].items()}

    assert key(runs["sync", 1]) == key(runs["async", 1]) and len(runs["sync", 1][0]) == 2
    assert key(runs["sync", 3]) == key(runs["async", 3]) and len(runs["sync", 3][0]) == 6
    # one sequence at a time in the engine: the same text in both modes
    for k, e in runs["sync", 1][0].items():
        assert [s.response for s in e.steps] == [s.response for s in runs["async", 1][0][k].steps]
        assert e.messages == runs["async", 1][0][k].messages
    eps, stats = runs["async", 3]
    assert stats.mode == "async" and stats.requests == sum(len(e.steps) for e in eps.values()) > 6
    assert stats.prefix_cache_hit_rate() > 0.5  # the same seeds replayed the sync run's prompts

    # a growing chat: each prompt holds the previous one, which the engine has cached
    vllm_policy.llm.reset_prefix_cache()
    cfg = cfg_for(tmp_path, *model, "loop.mode=async", "data.val_batch_size=3", "env.num_episodes=3",
                  "prompt.style=chat")
    _, eps, stats = play(cfg, VLLMPolicy(cfg.policy, llm=vllm_policy.llm))
    first = sum(e.steps[0].prompt_tokens for e in eps)
    later = sum(s.prompt_tokens for e in eps for s in e.steps[1:])
    assert later and stats.prompt_tokens == first + later
    # the first prompts are new (a few blocks of instructions shared at most); later ones reuse blocks
    assert 0.2 < stats.prefix_cache_hit_rate() < later / (first + later) + 0.2
