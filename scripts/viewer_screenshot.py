"""Take docs/viewer.png, the README's picture of `agent-sft view`, from a real collection.

    python scripts/viewer_screenshot.py [--out docs/viewer.png]

Collects a small mix (BabyAI, FrozenLake, Taxi by their experts; Taxi's step budget too short for some of its
tasks, so that the table has failures) into a temporary folder, writes its viewer, and photographs it in headless
Chromium (Debian's chromium and chromium-driver, driven by Selenium): the episode table above an episode's steps
(observation, prompt, reasoning, response, action).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

os.environ.setdefault("SE_OFFLINE", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _driver(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
              "--hide-scrollbars"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))


def _until(driver, script: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not driver.execute_script(script):
        if time.monotonic() > end:
            raise TimeoutError(script)
        time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "docs", "viewer.png")))
    a = ap.parse_args()
    from PIL import Image

    import agent_sft
    from agent_sft.viewer.build import write_viewer

    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "mixed-expert")
        agent_sft.collect(["env.num_episodes=24", "env.backend=thread", "env.mix.babyai.weight=1",
                           "env.mix.frozenlake.weight=1", "env.mix.taxi.weight=1", "env.mix.taxi.max_steps=12",
                           "filters.require_success=true", "prompt.system=You are a careful agent.",
                           f"output.dir={folder}"])
        out = write_viewer(folder, folder + "-viewer", source="runs/mixed-expert").out
        driver = _driver(1200, 800)
        try:
            driver.get("file://" + os.path.join(out, "index.html"))
            _until(driver, "return document.body.getAttribute('data-ready') === '1'")
            table = Image.open(io.BytesIO(driver.get_screenshot_as_png()))
            driver.execute_script(
                "var r = Array.from(document.querySelectorAll('#rows tr')).find(t => t.textContent.includes('taxi'));"
                "(r || document.querySelector('#rows tr')).querySelector('a').click()")
            _until(driver, "return document.querySelectorAll('#episode-view section.step').length > 0")
            driver.execute_script(
                "var s = document.querySelectorAll('#episode-view section.step')[1] ||"
                " document.querySelector('#episode-view section.step');"
                "window.scrollTo(0, s.offsetTop - 8)")
            episode = Image.open(io.BytesIO(driver.get_screenshot_as_png()))
        finally:
            driver.quit()
    top, bottom = table.crop((0, 0, table.width, 430)), episode.crop((0, 0, episode.width, 540))
    shot = Image.new("RGB", (table.width, top.height + bottom.height + 6), "#9aa3b2")
    shot.paste(top, (0, 0))
    shot.paste(bottom, (0, top.height + 6))
    shot = shot.convert("P", palette=Image.ADAPTIVE, colors=128)
    shot.save(a.out, optimize=True)
    print(f"wrote {a.out}: {os.path.getsize(a.out) / 1e3:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
