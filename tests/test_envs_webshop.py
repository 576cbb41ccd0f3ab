"""The WebShop env on its real engine: a scratch copy of the shared checkout with an authored catalog and its
pyserini index (tests/fixtures_webshop.py), the oracle expert, the engine's scores, validity, collections
(the original command, SIGKILL and resume, a mix with another env, the tiny model over HTTP)."""

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest
from faults import CLI, TESTS, check_folders
from fixtures_models import SERVED_NAME, needs_vllm
from fixtures_sts import check_episodes
from webshop_catalog import UNSATISFIABLE_OPTION, copy_engine

import agent_sft
from agent_sft.config import ConfigError, load_config
from agent_sft.envs import spec
from agent_sft.envs.specs import OptionError
from agent_sft.envs.webshop import WebshopEnv, WebshopOptions, find_checkout
from agent_sft.envs.webshop.checkout import VERL_AGENT_COPY, CheckoutError, load_engine
from agent_sft.envs.webshop.env import SEARCH_PATTERN
from agent_sft.policies.expert import ExpertPolicy

pytestmark = [pytest.mark.envs, pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # bs4's, in the engine

TEST_GOALS = 8  # goals 0-7 are the test split: the catalog has 48 human goals, not verl-agent's 500+
HUMAN_GOALS, SYNTHETIC_GOALS = 48, 47
TIMING = {"started_at", "duration_s"}


@pytest.fixture(scope="module")
def env(webshop_checkout):
    with WebshopEnv(path=webshop_checkout, test_goals=TEST_GOALS) as e:
        yield e


def play(env, task_id, seed=0, first=()):
    """Play `first` actions, then the expert's plan (every action checked valid) to the end."""
    policy = ExpertPolicy()
    obs, info = env.reset(seed=seed, options={"task_id": task_id})
    for action in first:
        obs, reward, terminated, truncated, info = env.step(action)
    for _ in range(env.max_steps):
        (c,) = policy.act([[{"role": "user", "content": obs}]], [seed], [info])
        action = c.text.split("<action>")[1].split("</action>")[0]
        assert action in info["admissible_actions"] or (action.startswith("search[") and info["action_patterns"])
        obs, reward, terminated, truncated, info = env.step(action)
        assert info["action_valid"] and info["invalid_reason"] == "", (action, info)
        if terminated or truncated:
            break
    return obs, reward, terminated, info


def test_oracle_buys_every_goal_the_catalog_can_satisfy_with_full_score(env, webshop_checkout):
    test_env = WebshopEnv(path=webshop_checkout, test_goals=TEST_GOALS, game_split="test")
    synthetic = WebshopEnv(path=webshop_checkout, goals="synthetic", test_goals=0)
    played = 0
    for e in (env, test_env, synthetic):
        for task in e.tasks()[:: 3 if e is synthetic else 1]:  # every third synthetic goal: they repeat products
            obs, reward, terminated, info = play(e, task.task_id)
            played += 1
            assert terminated and info["page"] == "done" and info["purchased_asin"] == task.extra["asin"]
            assert info["reward_info.spacy_model"].startswith("en_core_web_sm")
            if UNSATISFIABLE_OPTION in info["goal"]:  # the one option the product does not come in
                assert reward == pytest.approx(2 / 3) and info["won"] is False
                assert info["reward_info.r_option"] == 0.0 and info["reward_info.r_att"] == 1.0
            else:
                assert reward == 1.0 and info["won"] is True, (task.task_id, info)
                assert obs == "Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] 1.0"
    assert played == HUMAN_GOALS + len(synthetic.tasks()[::3]) and len(synthetic.tasks()) == SYNTHETIC_GOALS


def test_a_wrong_purchase_scores_what_the_engine_says(env):
    from web_agent_site.engine.goal import get_reward

    server = env.engine.server
    task = next(t for t in env.tasks() if len(server.product_item_dict[t.extra["asin"]]["options"]) >= 2)
    goal = server.goals[task.extra["goal_index"]]
    product = server.product_item_dict[goal["asin"]]
    name, values = next(iter(product["options"].items()))
    wrong = next(v for v in values if v not in goal["goal_options"])
    obs, info = env.reset(seed=0, options={"task_id": task.task_id})
    env.step(f"search[{goal['query']}]")
    env.step(f"click[{goal['asin'].lower()}]")
    env.step(f"click[{wrong}]")
    obs, reward, terminated, truncated, info = env.step("click[buy now]")
    expected, verbose = get_reward(product, goal, price=server.product_prices[goal["asin"]], options={name: wrong},
                                   verbose=True)
    assert terminated and not truncated and info["won"] is False
    assert 0 < reward < 1 and reward == pytest.approx(expected)
    assert {k: info[f"reward_info.{k}"] for k in verbose} == verbose
    assert info["purchased_options"] == f"{name}: {wrong}"

    other = next(p for p in server.all_products if p["category"] != goal["category"])
    env.reset(seed=0, options={"task_id": task.task_id})
    env.step(f"search[{other['Title'].lower()}]")
    env.step(f"click[{other['asin'].lower()}]")
    obs, reward, terminated, truncated, info = env.step("click[buy now]")
    expected = get_reward(other, goal, price=server.product_prices[other["asin"]], options={})
    assert terminated and info["won"] is False and reward == pytest.approx(expected) and reward < 0.5
    assert info["purchased_asin"] == other["asin"]


def test_actions_are_judged_against_the_page_and_never_crash(env, webshop_checkout):
    task = env.tasks()[0]
    obs, info = env.reset(seed=0, options={"task_id": task.task_id})
    assert obs == "'Search'" and info["admissible_actions"] == ["search[<your query>]"]
    assert info["action_patterns"] == [SEARCH_PATTERN] and info["page"] == "search"
    for action, reason in (("click[buy now]", "'buy now' is not a clickable of this page"),
                           ("click[search]", "click[search] does nothing"),
                           ("look around", "not search[<query>] or click[")):
        again, reward, terminated, truncated, step = env.step(action)
        assert (again, reward, terminated, step["action_valid"]) == (obs, 0.0, False, False)
        assert step["invalid_reason"].startswith(reason)
    obs, _, _, _, step = env.step("search[honey]")
    assert step["action_valid"] and step["page"] == "results" and "'Raw Unfiltered Wildflower Honey'" in obs
    assert "click[back to search]" in step["admissible_actions"] and step["action_patterns"] == []
    # The engine searches from any page; its available actions say this page has no search bar.
    obs, _, _, _, step = env.step("search[olive oil]")
    assert not step["action_valid"] and "no search bar" in step["invalid_reason"] and "Olive Oil" in obs
    env.step("click[back to search]")
    # The engine's "<r>" keyword samples 50 products; the catalog has 35: the engine raises, the env does not.
    before = env.engine.observation
    obs, reward, terminated, truncated, step = env.step("search[<r> anything]")
    assert not step["action_valid"] and "the engine failed" in step["invalid_reason"]
    assert (reward, terminated) == (0.0, False) and env.engine.observation == before

    short = WebshopEnv(path=webshop_checkout, test_goals=TEST_GOALS, max_steps=2, expert=None)
    obs, info = short.reset(seed=0, options={"task_id": task.task_id})
    assert "expert_plan" not in info
    short.step("search[honey]")
    obs, reward, terminated, truncated, info = short.step("click[next >]")
    assert (reward, terminated, truncated, info["step"]) == (0.0, False, True, 2)
    with pytest.raises(RuntimeError, match="reset"):
        short.step("click[back to search]")


def test_oracle_pages_to_its_target_and_comes_back_from_elsewhere(env):
    broad = "shoes shirt pants hat boots moisturizer balm shampoo lipstick extensions toothbrush headphones"
    server = env.engine.server
    from web_agent_site.engine.engine import get_top_n_product_from_keywords

    ranked = [p["asin"] for p in get_top_n_product_from_keywords(broad.split(" "), server.search_engine,
                                                                 server.all_products, server.product_item_dict)]
    task = next(t for t in env.tasks() if t.extra["asin"] in ranked[10:] and UNSATISFIABLE_OPTION not in
                server.goals[t.extra["goal_index"]]["instruction_text"])
    obs, info = env.reset(seed=0, options={"task_id": task.task_id})
    obs, _, _, _, info = env.step(f"search[{broad}]")
    pages = ranked.index(task.extra["asin"]) // 10
    assert info["expert_plan"][:pages + 1] == ["click[next >]"] * pages + [f"click[{task.extra['asin'].lower()}]"]
    decoy = next(a for a in ranked[:10] if a != task.extra["asin"]).lower()
    obs, reward, terminated, info = play(env, task.task_id, first=[f"search[{broad}]", f"click[{decoy}]",
                                                                    "click[reviews]"])
    assert terminated and reward == 1.0 and info["won"]


def test_reset_is_reproducible_and_leaves_global_random_alone(env, webshop_checkout):
    task = env.tasks()[5]
    random.seed(123)
    expected = random.random()
    random.seed(123)
    first = env.reset(seed=7, options={"task_id": task.task_id})
    assert random.random() == expected
    step1 = env.step(first[1]["expert_plan"][0])
    assert env.reset(seed=7, options={"task_id": task.task_id}) == first
    assert env.step(first[1]["expert_plan"][0]) == step1
    # Another engine over the same catalog: the same goals, prices and pages.
    fresh = WebshopEnv(path=webshop_checkout, test_goals=TEST_GOALS)
    assert [t.task_id for t in fresh.tasks()] == [t.task_id for t in env.tasks()]
    assert fresh.engine.server.product_prices == env.engine.server.product_prices
    assert fresh.reset(seed=7, options={"task_id": task.task_id}) == first
    assert fresh.reset(seed=3)[1]["task_id"] == fresh.reset(seed=3)[1]["task_id"]
    assert first[1]["goal"] == env.engine.server.goals[task.extra["goal_index"]]["instruction_text"].strip()


def test_splits_task_ids_and_task_types(env, webshop_checkout):
    train = env.tasks()
    test = WebshopEnv(path=webshop_checkout, test_goals=TEST_GOALS, game_split="test").tasks()
    assert len(test) == TEST_GOALS and len(train) == HUMAN_GOALS - TEST_GOALS
    for split, tasks in (("test", test), ("train", train)):
        for t in tasks:
            i = t.extra["goal_index"]
            assert t.task_id == f"webshop/human/{i:05d}/{t.extra['asin']}" and t.game_split == split
            assert (i < TEST_GOALS) == (split == "test")
            assert t.task_type in ("fashion", "beauty", "electronics", "food", "furniture")
    assert [t.extra["goal_index"] for t in test + train] == list(range(HUMAN_GOALS))
    food = WebshopEnv(path=webshop_checkout, test_goals=TEST_GOALS, task_types=["food"])
    assert [t.task_id for t in food.tasks()] == [t.task_id for t in train if t.task_type == "food"]
    with pytest.raises(ValueError, match="unknown WebShop task type.*garden.*beauty, electronics"):
        WebshopEnv(path=webshop_checkout, task_types=["garden"])
    with pytest.raises(ValueError, match="expert"):
        WebshopEnv(path=webshop_checkout, expert="planner")
    with pytest.raises(KeyError, match="unknown WebShop task_id"):
        env.reset(options={"task_id": "webshop/human/99999/B0"})
    s = spec("webshop/WebShopEnv")
    assert s.name == "webshop" and s.eval_splits == ("test",) and s.experts == ("oracle",) and not s.shared_process


def test_checkout_layouts_options_and_errors(env, webshop_checkout, tmp_path, monkeypatch):
    verl = tmp_path / "verl-agent"
    (verl / VERL_AGENT_COPY).parent.mkdir(parents=True)
    (verl / VERL_AGENT_COPY).symlink_to(webshop_checkout, target_is_directory=True)
    real = webshop_checkout.resolve()
    assert find_checkout(verl) == real and find_checkout(verl / VERL_AGENT_COPY).resolve() == real
    assert find_checkout(verl / VERL_AGENT_COPY.rsplit("/", 1)[0]) == real
    monkeypatch.setenv("WEBSHOP_PATH", str(verl))
    assert find_checkout() == real
    monkeypatch.delenv("WEBSHOP_PATH")
    with pytest.raises(CheckoutError, match=r"env.webshop.path \(or \$WEBSHOP_PATH\)"):
        find_checkout()
    with pytest.raises(OptionError, match="not a WebShop checkout"):
        WebshopOptions(path=str(tmp_path / "nowhere"))
    bare = copy_engine(webshop_checkout, tmp_path / "bare")  # the engine, no catalog, no index
    with pytest.raises(ConfigError, match=r"env.webshop.path: .*no data/items_shuffle_1000.json.*search_engine/indexes/"):
        load_config(None, ["env.env_name=webshop/WebShopEnv", f"env.webshop.path={bare}"])
    with pytest.raises(ConfigError, match="env.webshop.num_products"):
        load_config(None, ["env.env_name=webshop", f"env.webshop.path={webshop_checkout}", "env.webshop.num_products=5"])
    assert WebshopOptions(path=str(verl)).kwargs()["path"] == str(verl)
    with pytest.raises(ImportError, match="one checkout per process"):
        load_engine(bare.resolve())


def test_agent_sft_envs_says_whether_a_checkout_is_usable(webshop_checkout, tmp_path, capsys, monkeypatch):
    from agent_sft.cli import main

    monkeypatch.setenv("WEBSHOP_PATH", str(webshop_checkout))
    assert main(["envs", "webshop"]) == 0
    out = capsys.readouterr().out
    assert "[MISSING]" not in out and "[ok] java: openjdk version" in out
    assert (f"[ok] engine: 35 products, {HUMAN_GOALS} human goals, {SYNTHETIC_GOALS} synthetic goals, 35 documents "
            "indexed; reward scored with spaCy en_core_web_sm") in out
    (tmp_path / "half").mkdir()
    half = copy_engine(webshop_checkout, tmp_path / "half" / "webshop")
    shutil.copytree(webshop_checkout / "data", half / "data")
    monkeypatch.setenv("WEBSHOP_PATH", str(half))
    assert main(["envs", "webshop", "--json"]) == 0
    found = {c["what"]: c for c in json.loads(capsys.readouterr().out)["check"]}
    assert found["catalog"]["ok"] and not found["search index"]["ok"] and "engine" not in found
    assert "run_indexing.sh" in found["search index"]["fix"]


def _collect_cmd(folder, checkout, *extra):
    return [*CLI, "collect", "--no-progress", "env.env_name=webshop/WebShopEnv", f"env.webshop.path={checkout}",
            f"env.webshop.test_goals={TEST_GOALS}", "env.seed=3", "data.val_fraction=0.25",
            "output.flush_every_episodes=2", f"output.dir={folder}", *extra]


def _rows(folder):
    raw = agent_sft.load_raw(str(folder))
    out = {}
    for r in (r for sp in raw for r in raw[sp]):
        r = {k: v for k, v in r.items() if k not in TIMING}
        r["steps"] = [{k: v for k, v in s.items() if k != "latency_s"} for s in r["steps"]]
        out[r["episode_id"]] = r
    return out


def _original_env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLLECT_SFT": "True", "SFT_REQUIRE_SUCCESS": "True",
           "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _reference_rows(webshop_checkout, tmp_path, env):
    """The original command run to its end; its raw rows by episode id."""
    ref = tmp_path / "ref"
    done = subprocess.run(_collect_cmd(ref, webshop_checkout, "data.val_batch_size=2"), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return ref, _rows(ref)


def test_original_command_require_success(webshop_checkout, tmp_path):
    env = _original_env()
    ref, rows = _reference_rows(webshop_checkout, tmp_path, env)
    assert len(rows) == HUMAN_GOALS - TEST_GOALS
    partial = [r for r in rows.values() if not r["success"]]
    assert [UNSATISFIABLE_OPTION in r["goal"] for r in partial] == [True]
    assert partial[0]["final_reward"] == pytest.approx(2 / 3) and partial[0]["end_reason"] == "failure"
    last = json.loads(partial[0]["steps"][-1]["info"])
    assert last["reward_info.r_option"] == 0.0 and last["won"] is False and "final_observation" in last
    assert all(r["final_reward"] == 1.0 and r["task_id"].startswith("webshop/human/") for r in rows.values()
               if r["success"])
    assert all(s["valid"] for r in rows.values() for s in r["steps"])
    check_episodes(rows.values())
    sft = agent_sft.load(str(ref), "sft")
    assert {r["episode_id"] for sp in sft for r in sft[sp]} == {k for k, r in rows.items() if r["success"]}
    card = (ref / "README.md").read_text()
    assert f"- webshop: 0.6667 × 1, 1 × {len(rows) - 1}" in card and "en_core_web_sm 3.8.0" in card
    exports = glob.glob(str(tmp_path / "sft_data_*" / "**" / "*.parquet"), recursive=True)
    assert exports, os.listdir(tmp_path)
    # Partial scores stay for reward filters: a lower bar keeps the partial purchase too.
    plain = {k: v for k, v in env.items() if k not in ("COLLECT_SFT", "SFT_REQUIRE_SUCCESS")}
    built = subprocess.run([*CLI, "build", str(ref), "--min-final-reward", "0.5"], env=plain, capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    sft = agent_sft.load(str(ref), "sft")
    assert {r["episode_id"] for sp in sft for r in sft[sp]} == set(rows)


@pytest.mark.extended
def test_original_command_killed_and_resumed(webshop_checkout, tmp_path):
    # SIGKILL once episodes are sealed, then resume: nothing lost, nothing twice, the same rows.
    env = _original_env()
    _, rows = _reference_rows(webshop_checkout, tmp_path, env)
    killed = tmp_path / "killed"
    cmd = _collect_cmd(killed, webshop_checkout, "data.val_batch_size=1")
    p = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    end = time.monotonic() + 300
    while time.monotonic() < end and p.poll() is None and not glob.glob(str(killed / "data" / "raw" / "*" / "*.arrow")):
        time.sleep(0.02)
    time.sleep(0.5)  # a sealed shard is listed on the folder's card a moment later: kill once episodes show
    assert p.poll() is None, "the run ended before it could be killed"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    got = check_folders([str(killed)], str(tmp_path / "hf"))[str(killed)]
    assert "error" not in got and 0 < len(got["raw"]) < len(rows)
    again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming" in again.stdout
    assert _rows(killed) == rows


@needs_vllm
def test_tiny_model_drives_webshop_in_a_mix_through_the_http_policy(vllm_server, webshop_checkout, tmp_path):
    mix = (f"env.mix=[{{env: webshop, episodes: 2, path: '{webshop_checkout}', test_goals: {TEST_GOALS}}}, "
           "{env: frozenlake, episodes: 2}]")
    # one run: that the same seed gives the same text over the HTTP policy is tests/test_model_collect.py's
    res = agent_sft.collect([mix, "env.max_steps=2", "data.val_batch_size=2", "env.seed=5", "policy.type=openai",
                             f"policy.model={SERVED_NAME}", f"policy.base_url={vllm_server}", "policy.max_tokens=16",
                             "policy.temperature=1.0", f"output.dir={tmp_path / 'a'}",
                             f"output.export_dir={tmp_path / 'a_verl'}"])
    assert res.run["errors"] == 0 and sum(res.export_counts.values()) > 0
    a = _rows(tmp_path / "a")
    assert len(a) == 4 and {r["env"] for r in a.values()} == {"webshop", "frozenlake"}
    for r in (r for r in a.values() if r["env"] == "webshop"):
        users = [m["content"] for m in r["messages"] if m["role"] == "user"]
        assert "WebShop e\u2011commerce environment" in users[0] and r["goal"] in users[0]
        assert "'search[<your query>]'" in users[0] and r["steps"]
        for s in r["steps"]:
            assert s["prompt_tokens"] and (s["valid"] or s["invalid_reason"])
    assert (tmp_path / "a" / "README.md").read_text().count("- webshop: ") == 1


@pytest.mark.extended  # two runs, each starting WebShop's engine: ~30 s
def test_the_expert_plays_webshop_with_search_and_click_calls_as_with_text(webshop_checkout, tmp_path):
    base = ["env.env_name=webshop", f"env.webshop.path={webshop_checkout}", f"env.webshop.test_goals={TEST_GOALS}",
            "env.num_episodes=2", "env.seed=3", "prompt.style=chat", "policy.type=expert"]
    agent_sft.collect([*base, f"output.dir={tmp_path / 'text'}"])
    agent_sft.collect([*base, "prompt.actions=tools", f"output.dir={tmp_path / 'tools'}"])
    text, tools = _rows(tmp_path / "text"), _rows(tmp_path / "tools")
    assert text.keys() == tools.keys() and any(r["success"] for r in text.values())
    for eid, t in text.items():
        r = tools[eid]
        assert [s["action"] for s in r["steps"]] == [s["action"] for s in t["steps"]]
        assert (r["success"], r["final_reward"], r["num_invalid"]) == (t["success"], t["final_reward"], 0)
        assert [t["function"]["name"] for t in json.loads(r["tools"])] == ["search", "click"]
        calls = [m["tool_calls"][0]["function"] for m in r["messages"] if m["role"] == "assistant"]
        made = [f"{c['name']}[{next(iter(json.loads(c['arguments']).values()))}]" for c in calls]
        assert made == [s["action"] for s in r["steps"]] and calls[0]["name"] == "search"
        first = next(m["content"] for m in r["messages"] if m["role"] == "user")
        assert "search[x] is a call of search with query x" in first and "<action>" not in first
