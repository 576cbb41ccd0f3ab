"""The import rules of docs/architecture.md hold in the code, and `import agent_sft` stays light."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "agent_sft")
DOC = os.path.join(ROOT, "docs", "architecture.md")


def rules() -> dict[str, set[str]]:
    """module -> modules it may import, from the doc's table (`anything` -> None)."""
    text = open(DOC).read()
    table = text.split("## Modules and what they may import", 1)[1]
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        name = re.match(r"`([^`]+)`", cells[0]).group(1)
        allowed = set(re.findall(r"`([^`]+)`", cells[2]))
        out[name] = None if cells[2] == "anything" else allowed
    return out


def top(module: str) -> str:
    """`agent_sft.envs.alfworld.env` -> `envs`; `agent_sft` -> `agent_sft`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "agent_sft"


def imports() -> dict[str, set[str]]:
    """Top-level unit (module or subpackage) -> the units it imports, lazily imported ones included."""
    out: dict[str, set[str]] = {}
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            mod = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
            unit = top(mod)
            found = out.setdefault(unit, set())
            for node in ast.walk(ast.parse(open(path).read())):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module] + ([f"agent_sft.{a.name}" for a in node.names] if node.module == "agent_sft" else [])
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for n in names:
                    if n == "agent_sft" or not n.startswith("agent_sft."):
                        continue
                    if top(n) != unit:
                        found.add(top(n))
    return out


def test_every_module_is_in_the_map():
    units = set(imports())
    missing = units - set(rules())
    assert not missing, f"modules missing from docs/architecture.md: {sorted(missing)}"


def test_imports_follow_the_map():
    allowed = rules()
    bad = []
    for unit, deps in sorted(imports().items()):
        if allowed.get(unit) is None:
            continue
        for dep in sorted(deps - allowed[unit]):
            bad.append(f"{unit} imports {dep}")
    assert not bad, "imports the map does not allow:\n  " + "\n  ".join(bad)


def test_nothing_imports_the_cli():
    for unit, deps in imports().items():
        if unit not in ("cli", "__main__"):
            assert "cli" not in deps, f"{unit} imports cli"


def test_import_agent_sft_stays_light():
    code = ("import sys, agent_sft\n"
            "heavy = [m for m in ('pyarrow', 'datasets', 'torch', 'vllm', 'transformers', 'alfworld', 'textworld', 'httpx')"
            " if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"import agent_sft loads {out.stdout.strip()}"
