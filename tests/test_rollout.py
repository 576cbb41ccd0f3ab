"""The rollout loop on a small deterministic text env: scheduling, batching, faults, determinism."""

from __future__ import annotations

import json
import random
import time

import pytest

from agent_sft.config import ConfigError, load_config
from agent_sft.envs import TaskSpec, register
from agent_sft.policies.base import Completion
from agent_sft.records import END_CONTEXT, END_ERROR, END_FAILURE, END_STEP_LIMIT, END_SUCCESS, PolicyInfo, turn_seed
from agent_sft.rollout import Collector, episode_list, make_plan


class CounterEnv:
    """Reach a target number with `add 1` / `add 2`; overshooting loses.

    Task ids `count/<target>`; `crash/<target>` raises and `hang/<target>` sleeps at step 2 (fault
    injection). The info carries the remaining plan, like an env with an expert.
    """

    ACTIONS = ["add 1", "add 2", "wait", "help"]

    def __init__(self, targets=(3, 4, 5, 6, 7, 8), faults=(), max_steps=50, **_):
        self._tasks = [TaskSpec(f"count/{t}", "even" if t % 2 == 0 else "odd", "test", {"target": t}) for t in targets]
        self._tasks += [TaskSpec(f"{kind}/{t}", "fault", "test", {"target": t}) for kind, t in faults]
        self.max_steps = max_steps

    def tasks(self):
        return list(self._tasks)

    def _info(self):
        left = self.target - self.pos
        plan = ["add 2"] * (left // 2) + ["add 1"] * (left % 2)
        return {
            "admissible_actions": list(self.ACTIONS),
            "task_id": self.task_id,
            "task_type": "x",
            "goal": f"reach {self.target}",
            "won": self.pos == self.target,
            "expert_plan": plan,
        }

    def reset(self, *, seed=None, options=None):
        self.task_id = options["task_id"]
        self.kind, t = self.task_id.split("/")
        self.target, self.pos, self.steps = int(t), 0, 0
        return f"You are at 0. Your task is to: reach {self.target}", self._info()

    def step(self, action):
        self.steps += 1
        if self.steps == 2 and self.kind == "crash":
            raise ValueError("the counter broke")
        if self.steps == 2 and self.kind == "hang":
            time.sleep(600)
        if action in ("add 1", "add 2"):
            self.pos += int(action[-1])
            obs = f"You are at {self.pos}."
        else:
            obs = "Nothing happens."
        info = self._info()
        won = info["won"]
        lost = self.pos > self.target
        return obs, float(won), won or lost, not (won or lost) and self.steps >= self.max_steps, info

    def close(self):
        pass


register("counter-test", CounterEnv)
register("counter-test/Alias", CounterEnv)


class PlanPolicy:
    """Follows the env's plan; answers in the think/action format."""

    def __init__(self):
        self.batches = []

    def act(self, conversations, seeds, infos=None):
        self.batches.append(len(conversations))
        return [Completion(f"<think></think><action>{i['expert_plan'][0]}</action>", 5, 3, "stop") for i in infos]

    def describe(self):
        return PolicyInfo("expert", "plan")

    def close(self):
        pass


class NoisyPolicy(PlanPolicy):
    """Seeded: sometimes a wrong or malformed answer, so trajectories depend on the turn seeds."""

    def act(self, conversations, seeds, infos=None):
        out = []
        for seed, info in zip(seeds, infos):
            r = random.Random(seed).random()
            if r < 0.2:
                text = "I will add one"  # no tags
            elif r < 0.4:
                text = "<think>hm</think><action>jump</action>"
            elif r < 0.55:
                text = "<think>x</think><action>wait</action>"
            else:
                text = f"<think>go</think><action>{info['expert_plan'][0].upper()}</action>"
            out.append(Completion(text, 5, 3, "stop"))
        return out


def make_cfg(*overrides, env="counter-test"):
    return load_config(None, [f"env.env_name={env}", "data.val_batch_size=3", "env.step_timeout_s=5", *overrides], environ={})


def play(cfg, policy, done_ids=frozenset(), **kw):
    with Collector(cfg, policy, **kw) as c:
        plan = c.plan(done_ids)
        episodes = list(c.run(plan))
        return plan, episodes, c.stats


def strip_times(ep):
    d = ep.to_dict()
    for k in ("started_at", "duration_s"):
        d.pop(k)
    for s in d["steps"]:
        s.pop("latency_s")
    return d


def test_plan_is_deterministic_sharded_and_extends():
    tasks = CounterEnv().tasks()
    cfg = make_cfg("env.rollout.n=2", "env.seed=7")
    full = episode_list(cfg, "counter-test", tasks)
    assert len(full) == 12  # one pass x n
    assert [e.sample_index for e in full[:4]] == [0, 1, 0, 1]  # n samples of a task in a row
    assert len({e.episode_id for e in full}) == 12
    assert full == episode_list(cfg, "counter-test", tasks)
    more = episode_list(make_cfg("env.rollout.n=2", "env.seed=7", "env.num_episodes=20"), "counter-test", tasks)
    assert more[:12] == full and {e.sample_index for e in more[12:]} == {2, 3}
    other = episode_list(make_cfg("env.rollout.n=2", "env.seed=8"), "counter-test", tasks)
    assert {e.episode_id for e in other}.isdisjoint(e.episode_id for e in full)
    parts = [make_plan(make_cfg("env.rollout.n=2", "env.seed=7", f"output.shard={i}/3"), "counter-test", tasks).episodes for i in range(3)]
    assert sorted(e.episode_id for p in parts for e in p) == sorted(e.episode_id for e in full)
    done = {full[0].episode_id, full[5].episode_id}
    plan = make_plan(cfg, "counter-test", tasks, done)
    assert plan.skipped_done == 2 and len(plan.episodes) == 10 and done.isdisjoint(e.episode_id for e in plan.episodes)


def test_task_type_filter():
    tasks = CounterEnv().tasks()
    plan = make_plan(make_cfg("env.task_types=[even]"), "counter-test", tasks)
    assert {e.task.task_type for e in plan.episodes} == {"even"} and len(plan.episodes) == 3
    with pytest.raises(ConfigError, match="'blue' matches no task; task types here: even, odd"):
        make_plan(make_cfg("env.task_types=[blue]"), "counter-test", tasks)


def test_expert_wins_every_task_with_continuous_batching():
    policy = PlanPolicy()
    plan, episodes, stats = play(make_cfg(), policy)
    assert len(episodes) == 6 and all(e.success and e.end_reason == END_SUCCESS for e in episodes)
    # 6 episodes of 2-4 steps on 3 slots: a freed slot takes the next task at once.
    assert max(policy.batches) == 3 and sum(policy.batches) == sum(len(e.steps) for e in episodes)
    assert len(policy.batches) < sum(len(e.steps) for e in episodes) / 2
    ep = next(e for e in episodes if e.task_id == "count/5")
    assert [s.action for s in ep.steps] == ["add 2", "add 2", "add 1"]
    assert all(s.valid and s.invalid_reason == "" for s in ep.steps)
    assert ep.goal == "reach 5" and ep.rewards == [0.0, 0.0, 1.0] and ep.steps[-1].done
    assert ep.policy.kind == "expert" and json.loads(ep.versions)["agent_sft"]
    # window style: each prompt is one user message; messages alternate user/assistant
    assert [m["role"] for m in ep.messages] == ["user", "assistant"] * 3
    last = ep.step_prompt(ep.steps[2])
    assert len(last) == 1 and "[Observation 2: 'You are at 2.', Action 2: 'add 2']" in last[0]["content"]
    assert "'add 1'\n 'add 2'\n 'wait'" in last[0]["content"] and "'help'" not in last[0]["content"]
    info = json.loads(ep.steps[-1].info)
    assert info["won"] is True and info["final_observation"] == "You are at 5." and "add 1" in info["admissible_actions"]
    assert stats.steps == sum(len(e.steps) for e in episodes) and stats.errors == 0


def test_same_seed_same_episodes_any_batch_size():
    a = [strip_times(e) for e in play(make_cfg("env.seed=3", "env.rollout.n=2"), NoisyPolicy())[1]]
    b = [strip_times(e) for e in play(make_cfg("env.seed=3", "env.rollout.n=2", "data.val_batch_size=1"), NoisyPolicy())[1]]
    key = lambda d: d["episode_id"]  # noqa: E731
    assert sorted(a, key=key) == sorted(b, key=key)
    c = [strip_times(e) for e in play(make_cfg("env.seed=4", "env.rollout.n=2"), NoisyPolicy())[1]]
    assert [d["steps"] for d in sorted(c, key=key)] != [d["steps"] for d in sorted(a, key=key)]


def test_invalid_answers_are_recorded_and_the_episode_goes_on():
    plan, episodes, _ = play(make_cfg("env.seed=3", "env.max_steps=6"), NoisyPolicy())
    steps = [s for e in episodes for s in e.steps]
    reasons = {s.invalid_reason for s in steps if not s.valid}
    assert "missing <action>...</action> tag" in reasons and "not admissible: 'jump'" in reasons
    no_tag = next(s for s in steps if s.invalid_reason.startswith("missing <action>"))
    assert no_tag.action == "" and json.loads(no_tag.info)["env_action"] == "i will add one"
    upper = next(s for s in steps if s.response.endswith("</action>") and "ADD" in s.response)
    assert upper.valid and upper.action in ("add 1", "add 2")
    assert {e.end_reason for e in episodes} <= {END_SUCCESS, END_FAILURE, END_STEP_LIMIT}
    limited = [e for e in episodes if e.end_reason == END_STEP_LIMIT]
    assert all(len(e.steps) == 6 for e in limited)


def test_chat_style_grows_one_conversation():
    cfg = make_cfg("prompt.style=chat", "prompt.system=Be brief.", "env.task_types=[odd]")
    _, episodes, _ = play(cfg, PlanPolicy())
    ep = next(e for e in episodes if e.task_id == "count/5")
    assert [m["role"] for m in ep.messages] == ["system"] + ["user", "assistant"] * 3
    assert "Your task is to: reach 5" in ep.messages[1]["content"]
    assert ep.messages[3]["content"].startswith("Step 2. Your current observation is: You are at 2.")
    p = ep.step_prompt(ep.steps[2])
    assert p == ep.messages[:6] and p[0]["role"] == "system"


def test_env_that_raises_or_hangs_ends_as_error_and_the_run_goes_on():
    register("counter-faulty", CounterEnv)
    cfg = make_cfg("env.step_timeout_s=2", env="counter-faulty")
    kwargs = {"faults": [("crash", 5), ("hang", 6)], "targets": (3, 4, 5, 7)}
    t = time.monotonic()
    plan, episodes, stats = play(cfg, PlanPolicy(), env_kwargs=kwargs)
    assert time.monotonic() - t < 30
    by_id = {e.task_id: e for e in episodes}
    assert len(episodes) == 6
    crash, hang = by_id["crash/5"], by_id["hang/6"]
    assert crash.end_reason == END_ERROR and "ValueError: the counter broke" in crash.error and not crash.success
    assert hang.end_reason == END_ERROR and "timed out after 2 s" in hang.error
    assert len(crash.steps) == 2 and json.loads(crash.steps[-1].info)["env_error"] is True
    assert all(by_id[f"count/{t}"].success for t in (3, 4, 5, 7))
    assert stats.errors == 2 and stats.workers_replaced == 2


class PickyPolicy(PlanPolicy):
    """Fails some requests for good, and reports others as too long for the context."""

    def act(self, conversations, seeds, infos=None):
        out = super().act(conversations, seeds, infos)
        for k, info in enumerate(infos):
            if info["task_id"] == "count/6":
                out[k] = Completion("", finish_reason="context_truncated")
            if info["task_id"] == "count/7" and info["expert_plan"] == ["add 1"]:
                out[k] = Completion("", finish_reason="error", error="server said 500")
        return out


def test_policy_errors_and_context_truncation_end_episodes():
    _, episodes, _ = play(make_cfg(), PickyPolicy())
    by_id = {e.task_id: e for e in episodes}
    assert by_id["count/6"].end_reason == END_CONTEXT and by_id["count/6"].steps == []
    e7 = by_id["count/7"]
    assert e7.end_reason == END_ERROR and e7.error == "policy error: server said 500" and len(e7.steps) == 3
    assert e7.messages[-1]["role"] == "assistant" and len(e7.messages) == 6
    assert by_id["count/8"].success


@pytest.mark.parametrize("style", ["window", "chat"])
def test_policy_seeds_and_prompts_are_what_the_episode_records(style):
    seen, prompts = {}, {}

    class Recording(PlanPolicy):
        def act(self, conversations, seeds, infos=None):
            for c, s, i in zip(conversations, seeds, infos):
                seen.setdefault(i["task_id"], []).append(s)
                prompts.setdefault(i["task_id"], []).append([dict(m) for m in c])
            return super().act(conversations, seeds, infos)

    _, episodes, _ = play(make_cfg(f"prompt.style={style}", "prompt.system=Be brief.", "env.task_types=[odd]"), Recording())
    for ep in episodes:
        assert seen[ep.task_id] == [turn_seed(ep.seed, k) for k in range(len(ep.steps))]
        assert prompts[ep.task_id] == [ep.step_prompt(s) for s in ep.steps]


def test_env_that_cannot_start_fails_the_run_clearly():
    from agent_sft.rollout import WorkerStartError

    register("counter-broken", "agent_sft_no_such_module:Env")
    with pytest.raises(WorkerStartError, match="cannot build the environment: ModuleNotFoundError: No module named 'agent_sft_no_such_module'") as e:
        play(make_cfg(env="counter-broken"), PlanPolicy())
    assert "Traceback" in e.value.details


def faulty_counter(**kwargs):
    """Counter games plus one that raises and one that hangs at step 2."""
    return CounterEnv(targets=(3, 4, 5), faults=[("crash", 5), ("hang", 6)], **kwargs)


register("counter-faulty-cli", faulty_counter)


def test_collect_cli_records_env_faults_in_the_folder_and_finishes(tmp_path, monkeypatch, capsys):
    from datasets import load_dataset

    import agent_sft.policies.registry as registry
    from agent_sft.cli import main

    monkeypatch.setattr(registry, "make_policy", lambda cfg, **kw: PlanPolicy())
    for var in ("COLLECT_SFT", "SFT_SEED", "SFT_REQUIRE_SUCCESS"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "ds"
    args = ["collect", "--no-progress", "env.env_name=counter-faulty-cli", "env.step_timeout_s=2", "data.val_batch_size=2", f"output.dir={out}"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Collected 5 episodes" in text and "end reasons       error 2, success 3" in text
    assert "errors            2 episodes ended in an error (2 env workers replaced)" in text
    raw = load_dataset(str(out), "raw", split="train")
    errors = {r["task_id"]: r["error"] for r in raw if r["end_reason"] == "error"}
    assert set(errors) == {"crash/5", "hang/6"} and "the counter broke" in errors["crash/5"]
    sft = load_dataset(str(out), "sft", split="train")
    assert {r["task_id"] for r in sft} == {"count/3", "count/4", "count/5"}  # error episodes are not trained on
    stats = json.loads((out / "meta" / "stats.json").read_text())
    assert stats["end_reasons"] == {"success": 3, "error": 2} and stats["run"]["errors"] == 2
