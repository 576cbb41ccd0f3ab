"""Env specs: options under `env.<env>.*` (old spellings too), aliases, envs registered at run time or by an
installed package's entry point, the fingerprint a spec decides, and validity an env states itself."""

from __future__ import annotations

import json
import pathlib
import sys
import textwrap

import pytest

import agent_sft.envs as envs
from agent_sft.cli import main
from agent_sft.config import ConfigError, env_options, load_config, to_dict
from agent_sft.dataset.fingerprint import of_config
from agent_sft.policies.base import Completion
from agent_sft.records import PolicyInfo
from agent_sft.rollout import Collector

TESTS = pathlib.Path(__file__).parent
LEGACY_INFO = TESTS / "data" / "legacy_alfworld" / "meta" / "info.json"


@pytest.fixture(autouse=True)
def _no_switches(monkeypatch):
    for var in ("COLLECT_SFT", "SFT_SEED", "SFT_REQUIRE_SUCCESS"):
        monkeypatch.delenv(var, raising=False)


def test_alias_resolves_to_alfworld():
    s = envs.spec("alfworld/AlfredTWEnv")
    assert (
        s is envs.spec("alfworld")
        and s.name == "alfworld"
        and envs.canonical_name("alfworld/AlfredTWEnv") == "alfworld"
    )
    assert s.eval_splits == ("valid_seen", "valid_unseen") and s.expert_model("handcoded") == "alfworld-handcoded"
    with pytest.raises(
        envs.UnknownEnvError, match="unknown environment 'alfworld/AlfredThorEnv'; registered: .*alfworld"
    ):
        envs.spec("alfworld/AlfredThorEnv")


def test_misspelled_env_option_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["env.alfworld.data_pth=/data"], environ={})
    msg = str(e.value)
    assert (
        "'env.alfworld.data_pth'" in msg
        and "env.alfworld.data_path, env.alfworld.game_split, env.alfworld.task_types" in msg
    )
    with pytest.raises(ConfigError, match=r"unknown config key 'env.data_pth'.*allowed: .*data_path"):
        load_config(overrides=["env.data_pth=/data"], environ={})
    with pytest.raises(
        ConfigError, match=r"env.alfworld.game_split: 'test' is not one of train, valid_seen, valid_unseen"
    ):
        load_config(overrides=["env.alfworld.game_split=test"], environ={})
    import freeform_env  # noqa: F401 - registers freeform-test, an env without options

    with pytest.raises(ConfigError, match="environment 'freeform-test' has no option 'size' .*takes no options"):
        load_config(overrides=["env.freeform-test.size=3"], environ={})


def test_old_spellings_set_the_alfworld_options_and_the_fingerprint_is_unchanged(tmp_path):
    data = tmp_path / "alfworld" / "json_2.1.1" / "valid_seen"
    data.mkdir(parents=True)
    old = load_config(
        overrides=[f"env.data_path={tmp_path / 'alfworld'}", "env.game_split=valid_seen", "env.task_types=[clean]"],
        environ={},
    )
    new = load_config(
        overrides=[
            f"env.alfworld.data_path={tmp_path / 'alfworld'}",
            "env.alfworld.game_split=valid_seen",
            "env.alfworld.task_types=[clean]",
        ],
        environ={},
    )
    (tmp_path / "c.yaml").write_text(
        f"env:\n  task_types: [clean]\n  game_split: valid_seen\n  data_path: {tmp_path / 'alfworld'}\n"
    )
    yaml_cfg = load_config(str(tmp_path / "c.yaml"), environ={})
    for cfg in (old, yaml_cfg):
        assert cfg.env.options == new.env.options and cfg.env.task_types == []
    opts = env_options(old)
    assert (opts.game_split, opts.task_types) == ("valid_seen", ["clean"])
    assert to_dict(old)["env"]["alfworld"] == {
        "data_path": str(tmp_path / "alfworld"),
        "game_split": "valid_seen",
        "task_types": ["clean"],
    }
    assert of_config(old)["env"] == {
        "env_name": "alfworld",
        "seed": 0,
        "max_steps": 50,
        "history_length": 2,
        "data_path": str(tmp_path / "alfworld"),
        "game_split": "valid_seen",
    }
    # the fingerprint of the legacy fixture's config is exactly the one it stored
    legacy = json.loads(LEGACY_INFO.read_text())
    cfg = load_config(
        overrides=["env.num_episodes=6", "data.val_fraction=0.5", "data.val_batch_size=3", "env.max_steps=30"],
        environ={},
    )
    assert of_config(cfg) == legacy["fingerprint"]


def test_collect_keys_lists_each_envs_options(capsys):
    assert main(["collect", "--keys"]) == 0
    out = capsys.readouterr().out
    assert "env.alfworld.data_path = None\n    ALFWorld data root" in out
    assert "env.alfworld.task_types = []" in out and "env.env_name = 'alfworld'" in out


def test_nothing_outside_envs_reads_the_private_registry():
    root = TESTS.parent / "agent_sft"
    readers = [
        p for p in root.rglob("*.py") if "_REGISTRY" in p.read_text() and "envs" not in p.relative_to(root).parts[:1]
    ]
    assert readers == []


MAZE = """
from dataclasses import dataclass

from agent_sft.envs import EnvOptions, OptionError, TaskSpec, option, register


@dataclass
class MazeOptions(EnvOptions):
    size: int = option(3, "Corridor length.")
    label: str = option("maze", "Shown in the observation; not part of the fingerprint.", fingerprint=False)

    def __post_init__(self):
        if self.size < 1:
            raise OptionError("size", f"must be at least 1 (got {self.size})")


class MazeEnv:
    def __init__(self, size=3, label="maze", max_steps=50, expert=None):
        self.size, self.label, self.expert = size, label, expert

    def tasks(self):
        return [TaskSpec(f"corridor/{k}", "corridor", "test") for k in range(2)]

    def _info(self):
        return {"task_id": self.task_id, "goal": "reach the end", "won": self.pos >= self.size,
                "admissible_actions": ["forward", "wait"], "expert_plan": ["forward"] if self.expert else [],
                "board": "#" * self.size, "expert": self.expert}

    def reset(self, *, seed=None, options=None):
        self.task_id, self.pos = options["task_id"], 0
        return f"{self.label}: a corridor. Your task is to: reach the end", self._info()

    def step(self, action):
        self.pos += action == "forward"
        info = self._info()
        return f"{self.label} at {self.pos}", float(info["won"]), info["won"], False, info

    def close(self):
        pass


register("maze-test", "tmp_maze_env:MazeEnv", options=MazeOptions, aliases=("maze-test/v0",),
         packages=("datasets",), episode_keys=("board",), expert_label="maze-{expert}")
"""


def test_env_registered_at_run_time_outside_the_package_is_collected(tmp_path, monkeypatch, capsys):
    from datasets import load_dataset

    (tmp_path / "tmp_maze_env.py").write_text(textwrap.dedent(MAZE))
    monkeypatch.syspath_prepend(str(tmp_path))
    import tmp_maze_env  # noqa: F401

    with pytest.raises(ConfigError, match=r"env.maze-test.size: must be at least 1 \(got 0\)"):
        load_config(overrides=["env.env_name=maze-test", "env.size=0"], environ={})
    out = tmp_path / "ds"
    args = [
        "collect",
        "--no-progress",
        "env.env_name=maze-test/v0",
        "env.size=2",
        "env.maze-test.label=hall",
        "data.val_batch_size=2",
        "data.val_fraction=0",
        f"output.dir={out}",
    ]
    assert main(args) == 0
    assert "Collected 2 episodes" in capsys.readouterr().out
    rows = list(load_dataset(str(out), "raw", split="train"))
    assert {r["env"] for r in rows} == {"maze-test"} and all(r["success"] and r["episode_length"] == 2 for r in rows)
    assert rows[0]["policy"]["model"] == "maze-planner" and rows[0]["steps"][0]["observation"].startswith("hall:")
    assert "datasets" in json.loads(rows[0]["versions"])
    step_info = json.loads(rows[0]["steps"][0]["info"])
    assert "board" not in step_info and "expert_plan" not in step_info and step_info["expert"] == "planner"
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["fingerprint"]["env"] == {
        "env_name": "maze-test",
        "seed": 0,
        "max_steps": 50,
        "history_length": 2,
        "size": 2,
    }
    assert info["config"]["env"]["maze-test"] == {"size": 2, "label": "hall"}
    # a changed option outside the fingerprint resumes; one inside it is refused
    assert main([*args, "env.maze-test.label=corridor"]) == 0
    assert main([*args, "env.size=3"]) == 2
    assert "size" in capsys.readouterr().err


ENTRY_MODULE = """
from agent_sft.envs import EnvSpec, TaskSpec, register


class Env:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def tasks(self):
        return [TaskSpec("only", "one", "test")]


SPEC = EnvSpec(name="ep-test", entry_point="ep_env_mod:Env", aliases=("ep-test/v1",), title="EP")


def register_more():
    register("ep-fn-test", Env)
"""


def test_installed_package_registers_through_its_entry_point(tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "ep_env_pkg-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "ep_env_mod.py").write_text(textwrap.dedent(ENTRY_MODULE))
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-env-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[agent_sft.envs]\nep-test = ep_env_mod:SPEC\nep-fn-test = ep_env_mod:register_more\n"
    )
    monkeypatch.syspath_prepend(str(site))
    assert "ep_env_mod" not in sys.modules and "ep-test" not in envs.registered()
    s = envs.spec("ep-test/v1")  # not registered yet: found through the entry point
    assert s.name == "ep-test" and s.title == "EP" and "ep_env_mod" in sys.modules
    assert envs.make("ep-test", a=1).kwargs == {"a": 1}
    assert envs.spec("ep-fn-test").name == "ep-fn-test"  # a callable entry point registers what it names
    cfg = load_config(overrides=["env.env_name=ep-test/v1"], environ={})
    assert env_options(cfg) is None


class Scripted:
    """Answers turn k of every episode with `ANSWERS[k]` (the chat style shows it the whole conversation)."""

    ANSWERS = [
        "<think>look</think><action>search[Red Shoes]</action>",
        "<think>hm</think><action>dance</action>",
        "<action>click[buy]</action>",
    ]

    def act(self, conversations, seeds, infos=None):
        return [Completion(self.ANSWERS[sum(m["role"] == "assistant" for m in c)], 5, 3, "stop") for c in conversations]

    def describe(self):
        return PolicyInfo("expert", "scripted")

    def close(self):
        pass


def test_free_form_actions_judged_by_patterns_or_by_the_env():
    import freeform_env  # noqa: F401

    cfg = load_config(
        overrides=["env.env_name=freeform-test", "prompt.style=chat", "data.val_batch_size=2"], environ={}
    )
    with Collector(cfg, Scripted()) as c:
        episodes = {e.task_id: e for e in c.run(c.plan())}
    pat, ver = episodes["patterns/0"], episodes["verdict/0"]
    for ep in (pat, ver):
        assert ep.success and [s.action for s in ep.steps] == ["search[red shoes]", "dance", "click[buy]"]
        assert ep.steps[0].valid and ep.steps[0].invalid_reason == ""
        assert ep.steps[2].invalid_reason == "missing <think>...</think> tag"  # the format still counts
    assert pat.steps[1].invalid_reason == "matches no action pattern: 'dance'"
    assert ver.steps[1].invalid_reason == "rejected by the env: unknown command 'dance'"
    assert json.loads(pat.steps[0].info)["action_patterns"] == freeform_env.PATTERNS


class EndlessEnv:
    """Never ends an episode itself and takes no `max_steps`: only a step budget outside it can end one."""

    def tasks(self):
        return [envs.TaskSpec("loop/0", "loop", "test")]

    def reset(self, *, seed=None, options=None):
        return "a loop", {"task_id": "loop/0", "admissible_actions": ["go"]}

    def step(self, action):
        return "still looping", 0.0, False, False, {"admissible_actions": ["go"]}

    def close(self):
        pass


def test_an_env_card_is_what_the_listing_shows(capsys):
    envs.register("carded-test", EndlessEnv, card=envs.EnvCard(
        title="Carded loop", description="A loop that a card describes.", task_types=("loop",)))
    envs.register("titled-test", EndlessEnv, title="Titled loop")  # the keyword spelling before the card
    assert main(["envs", "carded-test"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("carded-test: Carded loop; installed") and "A loop that a card describes." in out
    assert "task types: loop" in out
    assert envs.spec("titled-test").card.title == "Titled loop"
    assert main(["envs", "titled-test"]) == 0 and capsys.readouterr().out.startswith("titled-test: Titled loop;")


def test_the_pools_env_is_truncated_at_the_step_budget():
    from agent_sft.rollout.pools import build_env

    env, passed = build_env(EndlessEnv, {"seed": 0, "max_steps": 3})
    assert passed == []  # the factory takes no max_steps: the budget is kept outside it
    for _ in range(2):
        env.reset(seed=0)
        ends = [env.step("go")[2:4] for _ in range(3)]
        assert ends == [(False, False), (False, False), (False, True)]
    assert env.tasks()[0].task_id == "loop/0"


GENERIC = ("dataset", "prompts.py", "policies", "rollout", "scale")


def test_generic_modules_name_no_env():
    import ast

    root = pathlib.Path(envs.__file__).parent.parent
    found = []
    for part in GENERIC:
        for path in sorted((root / part).rglob("*.py")) if (root / part).is_dir() else [root / part]:
            tree = ast.parse(path.read_text())
            docs = {id(n.body[0].value) for n in ast.walk(tree)
                    if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                    and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
            found += [f"{path.relative_to(root)}:{n.lineno}" for n in ast.walk(tree)
                      if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
                      and "alfworld" in n.value.lower()]
    assert found == []
