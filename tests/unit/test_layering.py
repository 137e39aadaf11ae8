"""The house rules, read off the source: code outside `endpoints/` asks an endpoint what it can
do, never which class it is; and no tether module imports another that imports it back
(function-level imports count: they are how a circle hides)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "tether"


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(tree: ast.AST, mods: dict[str, Path]) -> set[str]:
    deps: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("tether"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                deps.add(sub if sub in mods else node.module)
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names if a.name.startswith("tether")}
    return {d for d in deps if d in mods}


def test_no_code_outside_endpoints_asks_an_endpoint_its_class() -> None:
    found = []
    for name, path in _modules().items():
        if name.startswith("tether.endpoints"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        classes = {
            a.asname or a.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tether.endpoints")
            for a in node.names
            if a.name[:1].isupper()
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
                arg = node.args[1]
                names = {n.id for n in ast.walk(arg) if isinstance(n, ast.Name)}
                if names & classes:
                    found.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: isinstance(..., {ast.unparse(arg)})")
    assert not found, "ask the endpoint what it can do instead:\n" + "\n".join(found)


def test_no_import_circle_among_tether_modules() -> None:
    mods = _modules()
    graph = {m: _imports(ast.parse(p.read_text(), str(p)), mods) - {m} for m, p in mods.items()}
    # Tarjan's strongly connected components, iteratively
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        circles.append(sorted(comp))
    assert not circles, f"import circles: {circles}"
