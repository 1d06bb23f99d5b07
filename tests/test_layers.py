"""The import graph of src/needletrack: no cycles and no imports that run up the layers (issue 15).

Layers, lowest first (a module may import its own layer and those below):

    io, geometry, utils, errors, resources, scoring, the root package  <  sim  <  data  <  models  <  track
    <  train  <  eval  <  serve  <  commands, cli, __main__

The graph is read with ``ast`` from every module, imports inside functions included. Module-level imports
must never run upward and never form a cycle. An import inside a function that runs upward, or that closes a
cycle, is allowed only where it is listed below with its reason; the lists can only shrink (a listed import
that no longer exists fails the test too, so the entry must be deleted).
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "needletrack"

LAYERS = [
    ("needletrack.io", "needletrack.geometry", "needletrack.utils", "needletrack.errors", "needletrack.resources",
     "needletrack.scoring", "needletrack"),
    ("needletrack.sim",),
    ("needletrack.data",),
    ("needletrack.models",),
    ("needletrack.track",),
    ("needletrack.train",),
    ("needletrack.eval",),
    ("needletrack.serve",),
    ("needletrack.commands", "needletrack.cli", "needletrack.__main__"),
]

# Imports inside functions that run upward: (importer, imported) -> reason. Shrink only.
ALLOWED_UPWARD = {
    ("needletrack", "needletrack.track"):
        "the package's lazy `needletrack.Tracker` facade: `import needletrack` must not import torch",
}

# Imports inside functions that close a cycle: (importer, imported) -> reason. Shrink only.
ALLOWED_CYCLE_EDGES = {
}


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (p, is_pkg)
    return mods


def _edges() -> set[tuple[str, str, bool]]:
    """(importer, imported module, inside a function) for every internal import."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges = set()
    for mod, (path, is_pkg) in mods.items():
        pkg = mod if is_pkg else mod.rpartition(".")[0]

        def visit(node, inner: bool):
            for ch in ast.iter_child_nodes(node):
                fn = inner or isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                targets = []
                if isinstance(ch, ast.Import):
                    targets = [resolve(a.name) for a in ch.names if a.name.split(".")[0] == "needletrack"]
                elif isinstance(ch, ast.ImportFrom):
                    base = ch.module or ""
                    if ch.level:
                        up = pkg
                        for _ in range(ch.level - 1):
                            up = up.rpartition(".")[0]
                        base = up + ("." + ch.module if ch.module else "")
                    if base.split(".")[0] == "needletrack":
                        targets = [resolve(f"{base}.{a.name}") if f"{base}.{a.name}" in mods else resolve(base)
                                   for a in ch.names]
                for t in targets:
                    if t and t != mod:
                        edges.add((mod, t, fn))
                visit(ch, fn)

        visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return edges


def _layer(mod: str) -> int:
    best = None
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if mod == prefix or (prefix != "needletrack" and mod.startswith(prefix + ".")):
                best = i
    assert best is not None, f"{mod} is in no layer: add it to LAYERS in {__file__}"
    return best


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
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
            strong(v)
    return out


def test_the_graph_is_read():
    edges = _edges()
    assert len(edges) > 100
    assert ("needletrack.track.tracker", "needletrack.track.engine", False) in edges
    assert all(_layer(m) is not None for m in _modules())


def test_no_cycles_between_modules_at_module_level():
    assert _cycles({(a, b) for a, b, fn in _edges() if not fn}) == []


def test_no_module_level_import_runs_upward():
    up = sorted((a, b) for a, b, fn in _edges() if not fn and _layer(b) > _layer(a))
    assert up == [], f"module-level imports that run up the layers: {up}"


def test_upward_imports_inside_functions_only_the_listed_ones():
    up = {(a, b) for a, b, fn in _edges() if fn and _layer(b) > _layer(a)}
    assert sorted(up - set(ALLOWED_UPWARD)) == [], "new upward imports (move the helper down instead)"
    assert sorted(set(ALLOWED_UPWARD) - up) == [], "gone: delete these entries from ALLOWED_UPWARD"


def test_no_cycles_even_with_imports_inside_functions():
    edges = {(a, b) for a, b, _ in _edges()}
    assert _cycles(edges - set(ALLOWED_CYCLE_EDGES)) == []
    for edge in ALLOWED_CYCLE_EDGES:   # each listed edge still exists and still closes a cycle
        assert edge in edges, f"gone: delete {edge} from ALLOWED_CYCLE_EDGES"
        assert any(set(edge) <= set(c) for c in _cycles(edges - (set(ALLOWED_CYCLE_EDGES) - {edge}))), \
            f"{edge} no longer closes a cycle: delete it from ALLOWED_CYCLE_EDGES"
    # the two cycles of issue 15 stay broken
    assert ("needletrack.io.folder", "needletrack.eval.metrics") not in edges
    assert ("needletrack.track.onnx_quant", "needletrack.track.tracker") not in edges
