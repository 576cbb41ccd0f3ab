"""The wheel built from this checkout ships every package and every data file (prompts, games, templates) it tracks."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _tracked(*args: str) -> list[str]:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", *args], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout to know which files are tracked")
    # A copy of the tracked files (with their working-tree edits) so the build writes nothing into the checkout.
    src = tmp_path_factory.mktemp("src")
    for rel in _tracked("--cached", "--others", "--exclude-standard"):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    out = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("agent_sft-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_ships_every_tracked_data_file(wheel_names):
    data = [p for p in _tracked("agent_sft") if not p.endswith(".py") and "__pycache__" not in p]
    assert data, "no data files tracked under agent_sft/"
    assert sorted(p for p in data if p not in wheel_names) == []


def test_wheel_ships_every_package(wheel_names):
    inits = [p for p in _tracked("agent_sft") if p.endswith("/__init__.py")]
    assert "agent_sft/envs/alfworld/__init__.py" in inits
    assert sorted(p for p in inits if p not in wheel_names) == []
    # Every tracked module too, not only the packages' __init__ files.
    modules = [p for p in _tracked("agent_sft") if p.endswith(".py")]
    assert sorted(p for p in modules if p not in wheel_names) == []
