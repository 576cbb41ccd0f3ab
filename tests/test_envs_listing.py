"""`agent-sft envs`: every registered env with its options, experts and install state, without importing
any engine; an env whose engine is missing is listed as such and a run of it is refused naming its extra."""

import json
import subprocess
import sys

import pytest

import agent_sft
from agent_sft.cli import main
from agent_sft.config import ConfigError
from agent_sft.envs import register

BUILT_IN = ["alfworld", "babyai", "frozenlake", "gymnasium", "taxi", "textarena", "textworld"]


def test_listing_names_every_env_and_imports_no_engine():
    code = (
        "import json, sys, contextlib, io\n"
        "from agent_sft.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    assert main(['envs', '--json']) == 0\n"
        "heavy = sorted(m for m in ('alfworld', 'textworld', 'minigrid', 'gymnasium', 'textarena', 'nltk', 'pygame')"
        " if m in sys.modules)\n"
        "print(json.dumps({'rows': json.loads(out.getvalue()), 'imported': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["imported"] == []
    rows = {r["name"]: r for r in got["rows"]}
    assert set(BUILT_IN) <= set(rows)
    assert all(rows[n]["installed"] for n in BUILT_IN)
    assert rows["alfworld"]["experts"] == ["planner", "handcoded"] and "alfworld/AlfredTWEnv" in rows["alfworld"]["aliases"]
    assert rows["textworld"]["experts"] and rows["babyai"]["experts"] == ["bot"]
    assert "pick_and_place" in rows["alfworld"]["task_types"]
    assert any(o["key"] == "env.babyai.levels" for o in rows["babyai"]["options"])


def test_one_env_in_full(capsys):
    assert main(["envs", "taxi"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("taxi: Taxi; installed") and "env.taxi.seeds" in out
    assert main(["envs", "nosuch-env"]) == 2
    assert "unknown environment 'nosuch-env'; registered:" in capsys.readouterr().err


def test_missing_engine_is_listed_and_refused(tmp_path, capsys):
    register("needs-engine-test", "agent_sft_no_such_engine:Env", packages=("agent-sft-no-such-engine",),
             extra="nosuch", title="Needs an engine")
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "needs-engine-test: Needs an engine; NOT INSTALLED (pip install 'agent-sft[nosuch]')" in out
    with pytest.raises(ConfigError, match=r"needs agent-sft-no-such-engine, which is not installed: "
                                          r"pip install 'agent-sft\[nosuch\]'"):
        agent_sft.collect(["env.env_name=needs-engine-test", f"output.dir={tmp_path / 'x'}"])
    assert not (tmp_path / "x").exists()
