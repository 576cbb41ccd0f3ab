"""`agent-sft view` at scale: the time and peak memory of writing the viewer, and the page's open time and JS heap
in headless Chromium.

    python bench/bench_viewer.py --episodes 100000

A folder of N synthetic episodes (as bench/bench_build.py writes it: 3 to 8 steps each, window prompts, the
`scores` config) is written once. Then, each in a fresh process: the viewer of it is written (`write_viewer`, the
work of `agent-sft view`), with its time and peak RSS beside the RSS of a process that only imports it; the same at
N/10 episodes shows whether memory grows with the folder. Then Chromium (Debian's, through Selenium) opens the
viewer from file://: the time from navigation until the table is drawn (the index read), the JS heap then, the time a text search takes to redraw
the table, and the time an episode takes to open (its chunk read).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

# Peak RSS is VmHWM, this process's own since its exec: ru_maxrss also counts the pages of the (large) parent it was
# forked from.
WRITE = r"""
import json, sys, time
from agent_sft.viewer.build import write_viewer
def peak_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
if sys.argv[1] == "-":
    print(json.dumps({"rss_mb": peak_mb()}))
    sys.exit()
t = time.perf_counter()
b = write_viewer(sys.argv[1], sys.argv[2], chunk=int(sys.argv[3]))
print(json.dumps({"s": time.perf_counter() - t, "rss_mb": peak_mb(), "episodes": b.episodes, "chunks": b.chunks,
                  "mb": b.bytes / 1e6}))
"""


def _write(folder: str, out: str, chunk: int) -> dict:
    p = subprocess.run([sys.executable, "-c", WRITE, folder, out, str(chunk)], capture_output=True, text=True,
                       check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def _browser():
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))


def _until(driver, script: str, timeout: float = 300) -> float:
    t = time.perf_counter()
    while not driver.execute_script(script):
        if time.perf_counter() - t > timeout:
            raise TimeoutError(script)
        time.sleep(0.02)
    return time.perf_counter() - t


def _page(out: str) -> dict:
    driver = _browser()
    try:
        driver.execute_cdp_cmd("Performance.enable", {})
        t = time.perf_counter()
        driver.get("file://" + os.path.join(out, "index.html"))
        _until(driver, "return document.body && document.body.getAttribute('data-ready') === '1'")
        opened = time.perf_counter() - t
        metrics = {m["name"]: m["value"] for m in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
        heap_mb = metrics["JSHeapUsedSize"] / 1e6
        search = driver.find_element("id", "f-text")
        first = driver.execute_script("return document.querySelector('#rows a.episode-link').textContent")
        t = time.perf_counter()
        search.send_keys(first)  # the table redraws 150 ms after the last key
        _until(driver, "return document.getElementById('count').textContent.indexOf('1 of ') === 0")
        searched = time.perf_counter() - t
        t = time.perf_counter()
        driver.execute_script("document.querySelector('#rows a.episode-link').click()")
        _until(driver, "return document.querySelectorAll('#episode-view section.step').length > 0")
        episode = time.perf_counter() - t
        return {"open_s": opened, "heap_mb": heap_mb, "search_s": searched, "episode_s": episode}
    finally:
        driver.quit()


def main() -> int:
    from bench_build import write_folder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=200)
    ap.add_argument("--no-browser", action="store_true", help="only the viewer's writing")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = json.loads(subprocess.run([sys.executable, "-c", WRITE, "-"], capture_output=True, text=True,
                                         check=True).stdout)
        print(f"a process importing the viewer: {base['rss_mb']:.0f} MB RSS")
        for n in (a.episodes // 10, a.episodes):
            folder, out = os.path.join(tmp, f"ds{n}"), os.path.join(tmp, f"ds{n}-viewer")
            t = time.perf_counter()
            write_folder(folder, n)
            print(f"{n} episodes: folder written in {time.perf_counter() - t:.0f} s")
            w = _write(folder, out, a.chunk)
            index_mb = os.path.getsize(os.path.join(out, "data", "index.js")) / 1e6
            print(f"  view: {w['s']:.1f} s, peak RSS {w['rss_mb']:.0f} MB; {w['chunks']} chunks, {w['mb']:.0f} MB "
                  f"written (index {index_mb:.1f} MB)")
            if not a.no_browser and n == a.episodes:
                p = _page(out)
                print(f"  page (Chromium, file://): opened with its table drawn in {p['open_s']:.2f} s, JS heap "
                      f"{p['heap_mb']:.0f} MB; a search redrawn in {p['search_s']:.2f} s (150 ms of it the typing "
                      f"pause); an episode opened in {p['episode_s']:.2f} s")
            shutil.rmtree(folder)
            shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
