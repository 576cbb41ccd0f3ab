"""`agent_sft.collect(cfg)`: the library entry point does what `agent-sft collect` does, without argv."""

from __future__ import annotations

import partial_env  # noqa: F401  (registers the partial-test env)
import pytest

import agent_sft
from agent_sft.config import load_config


def config(tmp_path, *extra):
    return load_config(None, ["env.env_name=partial-test", f"output.dir={tmp_path / 'ds'}", "env.rollout.n=2",
                              "data.val_batch_size=4", *extra])


def test_collect_from_python_resumes_and_reports(tmp_path):
    seen, plans = [], []
    r = agent_sft.collect(config(tmp_path, "env.num_episodes=20"), on_plan=plans.append, on_episode=seen.append)
    assert isinstance(r, agent_sft.CollectResult)
    assert r.run["episodes"] == len(seen) == 20 and len(plans[0].episodes) == 20
    assert r.stats["total_episodes"] == 20
    ds = agent_sft.load(r.folder, "raw")
    assert len(ds["train"]) + len(ds["validation"]) == 20
    # the same call again plays only what is missing
    r2 = agent_sft.collect(config(tmp_path))
    assert r2.run["skipped_done"] == 20 and r2.stats["total_episodes"] == 2 * 29


def test_overrides_as_a_list_and_errors_share_one_base(tmp_path):
    r = agent_sft.collect(["env.env_name=partial-test", f"output.dir={tmp_path / 'ds'}", "env.num_episodes=3"])
    assert r.run["episodes"] == 3
    with pytest.raises(agent_sft.AgentSFTError, match="env.env_name"):
        agent_sft.collect(["env.env_name=no-such-env", f"output.dir={tmp_path / 'other'}"])
    # another seed into the same folder is refused, as by the CLI
    with pytest.raises(agent_sft.AgentSFTError, match="different configuration"):
        agent_sft.collect(["env.env_name=partial-test", f"output.dir={tmp_path / 'ds'}", "env.seed=1"])


def test_the_custom_env_example_registers_and_collects_with_no_project_edit(tmp_path, monkeypatch):
    import json
    import os
    import subprocess
    import sys

    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    out = tmp_path / "guess"
    p = subprocess.run([sys.executable, os.path.join(examples, "custom_env.py"), str(out)], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert "8 episodes, success rate 100%" in p.stdout
    raw = agent_sft.load(str(out), "raw")
    rows = list(raw["train"]) + list(raw["validation"])
    assert {r["env"] for r in rows} == {"guess"} and all(r["success"] for r in rows)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["fingerprint"]["env"]["high"] == 32  # the env's own option, in the fingerprint
    with pytest.raises(agent_sft.AgentSFTError, match="env.guess.high"):
        monkeypatch.syspath_prepend(examples)
        import custom_env  # noqa: F401

        agent_sft.collect(["env.env_name=guess", "env.guess.high=1", f"output.dir={tmp_path / 'bad'}"])
