"""The import layering of docs/architecture.md holds: no cycles among dream3d's modules, no lower layer importing
a higher one, every module in a layer. The checker itself is tested on small packages with known violations."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def read_layers(doc: Path) -> dict[str, int]:
    """{top-level module or package name: layer index} from the layers block of docs/architecture.md."""
    text = doc.read_text()
    block = re.search(r"<!-- layers:.*?-->\s*```\n(.*?)```", text, re.S)
    assert block, f"no layers block in {doc}"
    layers: dict[str, int] = {}
    for i, line in enumerate(block.group(1).strip().splitlines()):
        _, names = line.split(":", 1)
        for name in names.split():
            assert name not in layers, f"{name} is in two layers"
            layers[name] = i
    return layers


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (annotations only)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """{module: modules of the same package it imports} for every .py file under `package_dir` (all imports,
    function-level included, `if TYPE_CHECKING:` excluded)."""
    pkg = package_dir.name
    files = {}
    for path in package_dir.rglob("*.py"):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        here = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if t.split(".")[0] == pkg and (r := resolve(t)) and r != mod:
                    graph[mod].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layering_violations(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    """Imports that leave their own top-level component for one of the same or a higher layer, and modules of
    no layer."""
    def top(mod: str) -> str:
        parts = mod.split(".")
        return parts[1] if len(parts) > 1 else ""

    bad = []
    for mod, targets in sorted(graph.items()):
        if top(mod) and top(mod) not in layers:
            bad.append(f"{mod} is in no layer")
            continue
        for t in sorted(targets):
            a, b = top(mod), top(t)
            if a == b or not a:
                continue
            if b not in layers or layers[b] >= layers[a]:
                bad.append(f"{mod} -> {t}")
    return bad


# --- the rules hold for dream3d ---------------------------------------------------------------------------------
def test_no_import_cycles():
    assert cycles(import_graph(ROOT / "dream3d")) == []


def test_no_layer_imports_a_higher_or_equal_one():
    layers = read_layers(ROOT / "docs" / "architecture.md")
    assert layering_violations(import_graph(ROOT / "dream3d"), layers) == []


# --- the checker finds what it should ---------------------------------------------------------------------------
def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / "pkg" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "pkg"


def test_checker_finds_cycles_through_function_level_and_relative_imports(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg.b import f\n",
        "b.py": "def f():\n    from . import c\n",
        "c.py": "import pkg.a\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n",
        "sub/__init__.py": "from .e import g\n",
        "sub/e.py": "from ..d import y\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.d"] == set()  # annotations only
    assert graph["pkg.sub"] == {"pkg.sub.e"} and graph["pkg.sub.e"] == {"pkg.d"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_checker_finds_upward_and_sideways_imports_and_unlisted_modules(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "", "low.py": "import pkg.high\n", "high.py": "from pkg.low import x\n",
        "side.py": "from pkg import low\nfrom pkg.twin import y\n", "twin.py": "", "stray.py": "",
    })
    layers = {"low": 0, "high": 1, "side": 1, "twin": 1}
    assert layering_violations(import_graph(pkg), layers) == [
        "pkg.low -> pkg.high", "pkg.side -> pkg.twin", "pkg.stray is in no layer"]


def test_layers_block_parses(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text("x\n<!-- layers: lowest first -->\n```\ncore: errors events\nup: cli\n```\n")
    assert read_layers(doc) == {"errors": 0, "events": 0, "cli": 1}
    doc.write_text("<!-- layers: -->\n```\na: x\nb: x\n```\n")
    with pytest.raises(AssertionError, match="two layers"):
        read_layers(doc)
