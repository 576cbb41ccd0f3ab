"""`agent-sft view`: the viewer folder written from a dataset folder, and the page in a real headless Chromium.

A FrozenLake folder collected by the expert (sft keeps successes only) gets one more episode whose observation,
action and reasoning are an HTML injection; the viewer of it is served by `agent-sft view --serve` on 127.0.0.1
and driven with Selenium: filters, search, an episode's steps and the exact prompt, the injection shown as text.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from fixtures_data import make_episode

from agent_sft.cli import main as cli_main
from agent_sft.dataset import layout
from agent_sft.dataset.writer import BuildSpec, DatasetWriter
from agent_sft.records import prompt_of
from agent_sft.viewer.build import write_viewer
from agent_sft.viewer.episodes import episode_record

HOSTILE = '<img src=x onerror="window.__pwned=1">'
HOSTILE_ID = "hostile0000000000000"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _calls(path: str, name: str) -> list:
    """The arguments of each `AgentSFTViewer.<name>(...)` line of a data file."""
    out = []
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    for m in re.finditer(rf"^AgentSFTViewer\.{name}\((.*?)\);$", text, re.S | re.M):
        out.append(json.loads(f"[{m[1]}]"))
    return out


def _index(out: str) -> tuple[dict, list[dict]]:
    (meta,), = _calls(os.path.join(out, "data", "meta.js"), "meta")
    rows = [dict(zip(meta["fields"], r)) for (part,) in _calls(os.path.join(out, "data", "index.js"), "rows")
            for r in part]
    return meta, rows


def _chunk(out: str, k: int) -> list[dict]:
    ((at, episodes),) = _calls(os.path.join(out, "data", "chunks", f"{k}.js"), "chunk")
    assert at == k
    return episodes


def _raw(folder: str) -> dict[str, dict]:
    import agent_sft

    return {r["episode_id"]: r for split in agent_sft.load(folder, "raw").values() for r in split}


def _sft_counts(folder: str) -> dict[str, int]:
    import agent_sft

    counts: dict[str, int] = {}
    for split in agent_sft.load(folder, "sft").values():
        for r in split:
            counts[r["episode_id"]] = counts.get(r["episode_id"], 0) + 1
    return counts


def test_index_and_chunks_hold_every_episode_paged(tmp_path, monkeypatch):
    import agent_sft
    from agent_sft.viewer import build

    monkeypatch.setattr(build, "SCORES_BLOCK", 4)  # scores looked up a few episodes at a time, as at scale
    folder = str(tmp_path / "ds")
    with DatasetWriter.open(folder, fingerprint={"test": "viewer"}, flush_every_episodes=7) as w:
        for i in range(13):
            for s in range(2):
                w.add(make_episode(i, s, style="chat" if i % 3 == 0 else "window", invalid_at=1 if i == 4 else None))
    out = str(tmp_path / "ds-viewer")
    assert cli_main(["view", folder, "--chunk", "10"]) == 0
    meta, rows = _index(out)
    raw = _raw(folder)
    assert meta["episodes"] == len(rows) == len(raw) == 26 and meta["chunks"] == 3
    assert sorted(r["id"] for r in rows) == sorted(raw)
    assert [sum(r["chunk"] == k for r in rows) for k in range(3)] == [10, 10, 6]
    sft = _sft_counts(folder)
    for k in range(3):
        for ep in _chunk(out, k):
            index = next(r for r in rows if r["id"] == ep["id"])
            row = raw[ep["id"]]
            assert index["chunk"] == k and index["steps"] == row["episode_length"] == len(ep["steps"])
            assert index["success"] == row["success"] and index["end_reason"] == row["end_reason"]
            assert len(ep["sft"]) == sft.get(ep["id"], 0)
            for s, stored in zip(ep["steps"], row["steps"]):  # the page's prompt rule gives the stored prompt
                assert prompt_of(ep["messages"], s["prompt_start"], s["prompt_end"]) == \
                    prompt_of(row["messages"], stored["prompt_start"], stored["prompt_end"])
                assert s["reasoning"] == "" and s["action"] == stored["action"]
            for r in ep["sft"]:  # sft rows name the episode's messages by position
                assert all(isinstance(m, int) for m in r["messages"])
    bad = next(r for r in rows if r["invalid"])
    assert bad["scores"][meta["score_names"].index("invalid_rate")] > 0
    scored = {r["episode_id"]: r for split in agent_sft.load(folder, "scores").values() for r in split}
    assert len(scored) == len(rows)
    for r in rows:  # every episode's own scores, in the order the index names them
        assert r["scores"] == [pytest.approx(scored[r["id"]][n], rel=1e-5) if scored[r["id"]][n] is not None else None
                               for n in meta["score_names"]], r["id"]
    # written again over itself; a folder of other files, or one inside the dataset, is refused
    assert cli_main(["view", folder, "--out", out, "--chunk", "100"]) == 0
    assert _index(out)[0]["chunks"] == 1 and not os.path.exists(os.path.join(out, "data", "chunks", "1.js"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    for bad_out in (str(tmp_path / "other"), os.path.join(folder, "data", "viewer")):
        with pytest.raises(Exception, match="--out") as e:
            write_viewer(folder, bad_out)
        assert type(e.value).__name__ == "ConfigError"
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    assert not os.path.exists(os.path.join(folder, "data", "viewer"))


def test_tool_calls_are_set_apart_from_the_response(tool_folders, tmp_path):
    out = str(tmp_path / "tools-viewer")
    write_viewer(tool_folders["window"], out)
    raw = _raw(tool_folders["window"])
    episodes = _chunk(out, 0)
    assert sorted(e["id"] for e in episodes) == sorted(raw)
    for ep in episodes:
        row = raw[ep["id"]]
        assert json.loads(ep["tools"]) == json.loads(row["tools"])
        for s, stored in zip(ep["steps"], row["steps"]):
            calls = row["messages"][stored["prompt_end"]]["tool_calls"]
            assert s["tool_calls"] == [{"id": c["id"], "name": c["function"]["name"],
                                        "arguments": c["function"]["arguments"]} for c in calls]
            assert s["response"] == stored["response"] and s["reasoning"] is None


def test_reasoning_is_read_by_one_rule_in_the_viewer_the_traces_and_the_parser():
    from agent_sft.policies.tool_calls import split_reasoning
    from agent_sft.prompts import parse_action, think_text
    from agent_sft.publish.sts import to_sts
    from agent_sft.records import split_think

    answer = "<THINK> go west </Think>\n<action>west</action>"
    assert split_think(answer) == ("go west", "<action>west</action>")
    assert split_think("<action>west</action>") == (None, "<action>west</action>")
    assert split_think("<think></think><action>west</action>") == ("", "<action>west</action>")
    row = {"episode_id": "e", "env": "grid", "task_id": "grid/1", "task_type": "", "split": "train", "success": True,
           "end_reason": "success", "steps": [{"index": 0, "prompt_start": 0, "prompt_end": 1, "response": answer}],
           "messages": [{"role": "user", "content": "Go."}, {"role": "assistant", "content": answer}]}
    assert episode_record(row, [], None)["steps"][0]["reasoning"] == "go west"
    assert to_sts(row)[2]["message"]["reasoningContent"] == "go west"
    assert to_sts(row)[2]["message"]["content"] == "<action>west</action>"
    assert think_text(answer) == "go west" and parse_action(answer).valid
    assert split_reasoning(answer) == ("<action>west</action>", "go west")


def test_view_refuses_what_it_cannot_show(tmp_path, capsys):
    assert cli_main(["view", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    folder, out = str(tmp_path / "ds"), tmp_path / "ds-viewer"
    with DatasetWriter.open(folder, fingerprint={"test": "viewer"}) as w:
        w.add(make_episode(0, 0))
    with socket.socket() as busy:  # a port another server listens on
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        for argv, said in ((["--host", "0.0.0.0"], "loopback interface only"), (["--port", "70000"], "--port 70000"),
                           (["--port", "-1"], "--port -1"), (["--port", str(taken)], f"cannot serve on 127.0.0.1:{taken}")):
            assert cli_main(["view", folder, "--serve", *argv]) == 2, argv
            err = capsys.readouterr().err
            assert said in err and len(err.strip().splitlines()) == 1, err
            assert not out.exists()  # refused before the viewer is written
    assert "--allow-remote" not in capsys.readouterr().err


# --- the page in Chromium -----------------------------------------------------------------------------------


def _hostile_row(row: dict) -> dict:
    """A failed copy of a collected episode, of no task type, whose first step's observation, reasoning and action are
    HTML."""
    row = json.loads(json.dumps(row))
    step = row["steps"][0]
    user = row["messages"][step["prompt_end"] - 1]
    user["content"] = user["content"].replace(step["observation"], HOSTILE)
    step["observation"] = HOSTILE
    step["response"] = row["messages"][step["prompt_end"]]["content"] = f"<think>{HOSTILE}</think><action>{HOSTILE}</action>"
    step.update(action=HOSTILE, valid=False, invalid_reason=f"not admissible: {HOSTILE}")
    row.update(episode_id=HOSTILE_ID, task_id="frozenlake/FrozenLake-v1/hostile", task_type=None, goal=f"Cross it. {HOSTILE}",
               success=False, end_reason="failure", final_reward=0.0, steps=row["steps"][:2],
               rewards=row["rewards"][:2], episode_length=2, num_invalid=1)
    return row


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> str:
    """A FrozenLake folder by the expert (sft: successes only), and one failed episode written into it."""
    import agent_sft

    root = tmp_path_factory.mktemp("view")
    folder = str(root / "lake")
    agent_sft.collect(["env.env_name=frozenlake", "env.backend=thread", "env.num_episodes=6", "env.max_steps=12",
                       "filters.require_success=true", "prompt.system=You cross frozen lakes.", f"output.dir={folder}"])
    info = layout.read_info(folder)
    b = info["build"]
    row = _hostile_row(next(iter(_raw(folder).values())))
    with DatasetWriter(folder, fingerprint=info["fingerprint"], meta=info["config"],
                       build=BuildSpec(b["style"], b["filters"]), additions=layout.additions(info)) as w:
        w.add(row)
    return folder


@pytest.fixture(scope="module")
def served(collected):
    """`agent-sft view --serve --port 0` of the folder: (its URL, the viewer folder)."""
    out = os.path.join(os.path.dirname(collected), "lake-viewer")
    proc = subprocess.Popen([sys.executable, "-m", "agent_sft", "view", collected, "--serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()  # read by a thread, so a child that prints nothing cannot hang the wait
    threading.Thread(target=lambda: [lines.put(line) for line in iter(proc.stdout.readline, "")] + [lines.put("")],
                     daemon=True).start()
    try:
        url, deadline = None, time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not line:
                break
            m = re.search(r"Serving it at (http://127\.0\.0\.1:\d+/)", line)
            url = m[1] if m else None
        assert url, f"no URL printed: {proc.stderr.read() if proc.poll() is not None else ''}"
        yield url, out
    finally:
        proc.send_signal(signal.SIGTERM)  # how a service manager stops it: it stops serving and exits 0
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_served_pages_answer_the_loopback_names_only(served):
    import http.client

    url, _ = served
    port = int(url.rstrip("/").rsplit(":", 1)[1])

    def get(path: str, host: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": host})
            return conn.getresponse().status
        finally:
            conn.close()

    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", f"[::1]:{port}"):
        assert get("/data/index.js", host) == 200, host
    # a name of another site resolved to 127.0.0.1 (DNS rebinding), or another port, reads nothing
    for host in (f"rebind.example:{port}", "rebind.example", f"127.0.0.1:{port + 1}", ""):
        assert get("/data/index.js", host) == 403, host
        assert get("/", host) == 403, host


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module, driven by Selenium (Debian's chromium and chromium-driver)."""
    os.environ.setdefault("SE_OFFLINE", "true")  # no Selenium Manager lookups: the driver is given
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
        "the viewer tests need chromium and chromium-driver: bash scripts/install.sh --test installs them"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, what, timeout: float = 10):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: what(d))


def _css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _table_ids(driver) -> list[str]:
    """The episode ids the table shows, read at one instant (the table is redrawn as filters change)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#rows a.episode-link'), a => a.textContent)")


def _type(driver, element_id: str, text: str) -> None:
    e = driver.find_element("id", element_id)
    e.clear()
    e.send_keys(text)


def test_page_filters_searches_and_shows_an_episode(collected, served, browser):
    url, out = served
    raw = _raw(collected)
    sft = _sft_counts(collected)
    browser.get(url)
    _wait(browser, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1")
    assert browser.find_element("id", "count").text == f"{len(raw)} of {len(raw)} episodes"
    assert sorted(_table_ids(browser)) == sorted(raw)

    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "f-success")).select_by_visible_text("no")
    _wait(browser, lambda d: _table_ids(d) == [HOSTILE_ID])
    Select(browser.find_element("id", "f-success")).select_by_visible_text("any")
    task_type = Select(browser.find_element("id", "f-task_type"))
    types = sorted({r["task_type"] for r in raw.values() if r["task_type"]})
    assert [o.text for o in task_type.options] == ["any", "(none)", *types]  # a missing type is a choice of its own
    task_type.select_by_visible_text("(none)")
    _wait(browser, lambda d: _table_ids(d) == [HOSTILE_ID])
    task_type.select_by_visible_text(types[0])
    _wait(browser, lambda d: sorted(_table_ids(d)) == sorted(i for i, r in raw.items() if r["task_type"] == types[0]))
    task_type.select_by_visible_text("any")
    _type(browser, "f-reward-min", "0.5")
    _wait(browser, lambda d: sorted(_table_ids(d)) == sorted(i for i, r in raw.items() if r["final_reward"] >= 0.5))
    browser.find_element("id", "f-clear").click()
    won = next(r for r in raw.values() if r["success"])
    _type(browser, "f-text", won["task_id"].split("/")[-1])
    _wait(browser, lambda d: _table_ids(d) == [won["episode_id"]])

    _css(browser, "#rows a.episode-link")[0].click()
    _wait(browser, lambda d: len(_css(d, "#episode-view section.step")) == won["episode_length"])
    assert len(_css(browser, "#episode-view details.sft-row")) == sft[won["episode_id"]] > 0
    step = _css(browser, "#episode-view section.step")[1]
    assert _css(step, ".observation pre")[0].text == won["steps"][1]["observation"].strip()
    assert _css(step, ".action-text")[0].text == won["steps"][1]["action"]
    prompt = _css(step, "details.prompt")[0]
    prompt.find_element("tag name", "summary").click()
    prompt.find_element("css selector", "details.json summary").click()
    shown = json.loads(prompt.find_element("css selector", "pre.prompt-json").text)
    s = won["steps"][1]
    assert shown == prompt_of(won["messages"], s["prompt_start"], s["prompt_end"])
    assert shown[0] == {"role": "system", "content": "You cross frozen lakes."}
    every = browser.execute_script("return Array.from(document.querySelectorAll('#episode-view pre.prompt-json'), "
                                   "p => JSON.parse(p.textContent))")
    assert every == [prompt_of(won["messages"], s["prompt_start"], s["prompt_end"]) for s in won["steps"]]

    browser.get(url + "#e=" + HOSTILE_ID)
    _wait(browser, lambda d: len(_css(d, "#episode-view section.step")) == 2)
    step = _css(browser, "#episode-view section.step")[0]
    assert _css(step, ".observation pre")[0].text == HOSTILE
    assert _css(step, ".action-text")[0].text == HOSTILE
    assert _css(step, ".reasoning pre")[0].text == HOSTILE
    assert HOSTILE in _css(step, ".badge.bad")[0].text
    assert "sft by not_success" in " ".join(e.text for e in _css(browser, "li.drop"))
    assert _css(browser, "#episode-view img") == []
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert _css(browser, "#episode-view details.sft-row") == []


def test_view_of_a_pushed_repo_downloads_it(collected, hub, tmp_path):
    repo = hub.new_repo_id("lake")
    pushed = hub.cli("push", collected, repo)
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    out = tmp_path / "repo-viewer"
    p = hub.cli("view", repo, "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"Wrote the viewer of {repo}: 7 episodes" in p.stdout
    meta, rows = _index(str(out))
    assert meta["title"] == repo and sorted(r["id"] for r in rows) == sorted(_raw(collected))
    assert sum(len(e["sft"]) for e in _chunk(str(out), 0)) == sum(_sft_counts(collected).values())
    missing = hub.cli("view", hub.new_repo_id("nothing"), "--out", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no such dataset repo" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr
