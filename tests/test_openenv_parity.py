"""An agent-sft env served through OpenEnv's protocol (`agent-sft serve-env NAME --protocol openenv`) and
collected with the `openenv` env gives the episodes of the same env collected in process: the same ids,
env name, tasks, prompts, actions, rewards, infos and successes, only the OpenEnv provenance added to each
episode's `extra`. Played with the expert the server serves (`--expert`) and with a scripted policy (the
expert's plan then left out, as the env in process gives none). TextWorld's built-in games.
"""

from __future__ import annotations

import json

import pytest
from serve_helpers import Server

import agent_sft
from agent_sft.cli import main
from agent_sft.policies.base import Completion
from agent_sft.records import PolicyInfo
from agent_sft.rollout import policy as run_policy

pytestmark = pytest.mark.envs

TIMING = {"started_at", "duration_s"}
PROVENANCE = {"openenv_env", "openenv_version", "openenv_tasks_hash"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    pytest.importorskip("textworld")
    s = Server(tmp_path_factory.mktemp("tw-openenv"), "textworld", "--protocol", "openenv", "--expert", "walkthrough")
    yield s.url
    s.stop()


class Cycling:
    """A scripted policy: at step k, the k-th admissible action (cycling), or `look` when none is listed."""

    def act(self, conversations, seeds, infos=None):
        out = []
        for info in infos:
            listed = list(info.get("admissible_actions") or []) or ["look"]
            action = listed[int(info.get("step") or 0) % len(listed)]
            out.append(Completion(f"<think>next</think><action>{action}</action>", 5, 3, "stop"))
        return out

    def describe(self):
        return PolicyInfo("scripted", "cycling-test-policy")

    def close(self):
        pass


def rows(folder) -> dict[str, dict]:
    """The raw rows by episode id, timing and the OpenEnv provenance left out (the provenance checked here)."""
    raw = agent_sft.load_raw(str(folder))
    out = {}
    for split in raw:
        for r in raw[split]:
            r = {k: v for k, v in r.items() if k not in TIMING}
            extra = json.loads(r["extra"])
            found = {k: extra.pop(k) for k in PROVENANCE if k in extra}
            assert not found or (found["openenv_env"] == "textworld" and len(found["openenv_tasks_hash"]) == 16
                                 and "textworld" in found["openenv_version"]), found
            r["extra"], r["provenance"] = extra, bool(found)
            r["steps"] = [{k: v for k, v in s.items() if k != "latency_s"} for s in r["steps"]]
            out[r["episode_id"]] = r
    return out


def both(tmp_path, url, name, *args):
    local = agent_sft.collect(["env.env_name=textworld", *args, f"output.dir={tmp_path / (name + '_local')}"])
    remote = agent_sft.collect(["env.env_name=openenv", f"env.openenv.url={url}", *args,
                                f"output.dir={tmp_path / (name + '_openenv')}"])
    assert local.run["errors"] == remote.run["errors"] == 0
    a, b = rows(tmp_path / (name + "_local")), rows(tmp_path / (name + "_openenv"))
    assert a.keys() == b.keys() and a
    for k in a:
        assert not a[k].pop("provenance") and b[k].pop("provenance"), k
        assert a[k] == b[k], (name, k)
    return a


def test_textworld_played_through_openenv_is_the_episode_in_process(served, tmp_path, monkeypatch):
    common = ["env.seed=7", "data.val_batch_size=2", "data.val_fraction=0.5", "env.backend=thread"]
    expert = both(tmp_path, served, "expert", "policy.type=expert", "env.num_episodes=4", *common)
    assert all(r["success"] and r["env"] == "textworld" and r["task_id"].startswith("textworld/builtin/")
               and r["extra"]["expert_plan_length"] > 0 for r in expert.values())
    monkeypatch.setattr(run_policy, "make_run_policy", lambda run: Cycling())
    # a step budget past the served env's default (50): each episode is cut where the one in process is
    scripted = both(tmp_path, served, "scripted", "policy.type=hf", "policy.model=cycling-test-policy",
                    "env.num_episodes=2", "env.max_steps=53", *common)
    assert all(len(r["steps"]) == 53 and "expert_plan_length" not in r["extra"] for r in scripted.values())


@pytest.mark.parametrize(("args", "message"), [
    (["--protocol", "openenv", "--expert", "oracle"], "'oracle' is not an expert of textworld (one of walkthrough, policy)"),
    (["--expert", "walkthrough"], "takes each session's expert from its client"),
])
def test_serve_env_expert_is_checked(capsys, args, message):
    assert main(["serve-env", "textworld", *args, "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
