"""The map in docs/architecture.md holds in the code: every import goes down a layer and is one the map
allows, no two modules import each other (even through others), no module is longer than the map allows,
and `import agent_sft` stays light.

`python3 tests/test_architecture.py` prints the figures of the import graph.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "agent_sft")
DOC = os.path.join(ROOT, "docs", "architecture.md")
MAX_LINES = 450


def _section(title: str) -> str:
    text = open(DOC).read()
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _rows(title: str) -> list[list[str]]:
    out = []
    for line in _section(title).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.strip().startswith("|") and len(cells) >= 2 and not set(cells[0]) <= set("-: "):
            out.append(cells)
    return out[1:]  # the header


def layers() -> dict[str, tuple[int, set[str] | None]]:
    """unit -> (its layer, the units it may import; None for `anything`), from the doc's table."""
    out = {}
    for layer, module, _holds, allowed in _rows("Layers and modules"):
        name = re.match(r"`([^`]+)`", module).group(1)
        out[name] = (int(layer), None if allowed == "anything" else set(re.findall(r"`([^`]+)`", allowed)))
    return out


def long_modules() -> dict[str, int]:
    """Module file (relative to agent_sft/) -> the lines the doc allows it, with its reason."""
    out = {}
    for module, most, why in _rows("Modules over 450 lines"):
        assert why, f"{module}: say why it is longer than {MAX_LINES} lines"
        out[re.match(r"`([^`]+)`", module).group(1)] = int(most)
    return out


def modules() -> dict[str, str]:
    """Dotted module name -> its file, for every module of the package."""
    out = {}
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                out[os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    t = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"))


def _nodes(tree: ast.AST):
    """Every node of `tree` that runs: the bodies of `if TYPE_CHECKING:` are for annotations only."""
    for child in ast.iter_child_nodes(tree):
        if _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _nodes(other)
            continue
        yield child
        yield from _nodes(child)


def module_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at module level or inside a function (lazy imports)."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        deps = graph.setdefault(mod, set())
        package = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
        for node in _nodes(ast.parse(open(path).read())):
            names = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                while name not in mods and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in mods and name != mod and name.startswith("agent_sft"):
                    deps.add(name)
    return graph


def unit(module: str) -> str:
    """`agent_sft.envs.alfworld.env` -> `envs`; `agent_sft` -> `agent_sft`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "agent_sft"


def unit_graph() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for mod, deps in module_graph().items():
        out.setdefault(unit(mod), set()).update(unit(d) for d in deps if unit(d) != unit(mod))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    n = stack.pop()
                    on_stack.discard(n)
                    comp.append(n)
                    if n == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_every_unit_has_a_layer():
    missing = set(unit_graph()) - set(layers())
    assert not missing, f"modules missing from docs/architecture.md: {sorted(missing)}"


def test_imports_go_down_a_layer_and_follow_the_map():
    table = layers()
    bad = []
    for u, deps in sorted(unit_graph().items()):
        layer, allowed = table[u]
        for dep in sorted(deps):
            if table[dep][0] >= layer:
                bad.append(f"{u} (layer {layer}) imports {dep} (layer {table[dep][0]})")
            elif allowed is not None and dep not in allowed:
                bad.append(f"{u} imports {dep}, which its row does not list")
    assert not bad, "imports the map does not allow:\n  " + "\n  ".join(bad)


def test_no_import_cycles_between_modules():
    found = cycles(module_graph())
    assert not found, "modules that import each other (through the others listed):\n  " + "\n  ".join(map(str, found))


def test_no_module_is_longer_than_the_map_allows():
    allowed = long_modules()
    too_long = []
    for path in modules().values():
        rel = os.path.relpath(path, PKG)
        n = sum(1 for _ in open(path))
        most = allowed.get(rel, MAX_LINES)
        if n > most:
            too_long.append(f"{rel}: {n} lines (at most {most})")
    stale = [rel for rel in allowed if not os.path.exists(os.path.join(PKG, rel))
             or sum(1 for _ in open(os.path.join(PKG, rel))) <= MAX_LINES]
    assert not too_long, "split these, or name them with a reason in the map:\n  " + "\n  ".join(too_long)
    assert not stale, f"the map names modules that are no longer over {MAX_LINES} lines: {stale}"


def test_import_agent_sft_stays_light():
    code = ("import sys, agent_sft\n"
            "heavy = [m for m in ('pyarrow', 'datasets', 'torch', 'vllm', 'transformers', 'alfworld', 'textworld', 'httpx')"
            " if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"import agent_sft loads {out.stdout.strip()}"


def figures() -> dict:
    """The import graph in numbers."""
    mods, units, table = module_graph(), unit_graph(), layers()
    up = [(u, d) for u, deps in units.items() for d in deps if u in table and d in table and table[d][0] >= table[u][0]]
    lines = {m: sum(1 for _ in open(p)) for m, p in modules().items()}
    return {
        "modules": len(mods), "module_imports": sum(map(len, mods.values())),
        "units": len(units), "unit_imports": sum(map(len, units.values())),
        "layers": len({layer for layer, _ in table.values()}),
        "module_cycles": cycles(mods), "unit_cycles": cycles(units), "imports_up": sorted(up),
        "over_450": {m: n for m, n in sorted(lines.items()) if n > MAX_LINES},
        "largest": max(lines.values()),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(figures(), indent=1))
