"""The package runs one way: architecture → symbolic → graph → numeric → models → render → cli.

Built from the source with ``ast`` (nothing imported): every import goes to the same layer or
one on its left, except display methods reaching ``render`` lazily (as sympy's objects reach
its printers); module-level imports — with the implicit import of each parent package —
form no cycle; numeric never imports models; the package root (``pathexpand/__init__``) is the
one module that wires the layers (lazy public names, the loader hook) and is exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pathexpand"

# layer of each top-level part of the package (left to right)
LAYERS = {
    "errors": 0, "names": 0, "architecture": 0, "_hooks": 0, "_files": 0, "ranking": 0,
    "symbolic": 1, "graph": 2, "numeric": 3, "models": 4, "render": 5, "cli": 6,
}
# the one backward reach: display methods importing render, lazily
DISPLAY = {"_repr_latex_", "_repr_svg_", "_repr_html_", "_repr_mimebundle_", "to_latex",
           "to_markdown", "to_mathml", "to_text", "diagram", "_latex", "_sympystr", "__str__", "rich_table"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = ("pathexpand",) + p.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def _imports(module: str, path: Path):
    """``(target module, enclosing function or None)`` for every import in ``module``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]

    def targets(node):
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
        mod = ".".join(base + ([node.module] if node.module else []))
        return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]

    def walk(node, func):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for t in targets(child):
                    if t.startswith("pathexpand") and t in MODULES:
                        yield t, func
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            yield from walk(child, inner)

    yield from walk(tree, None)


def _module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, p in MODULES.items():
        for target, func in _imports(m, p):
            if func is not None or target == m:
                continue
            graph[m].add(target)
            # importing a.b.c runs a.b's __init__ first, unless a.b is m's own package
            t_parent = target.rsplit(".", 1)[0]
            if t_parent in MODULES and not (m + ".").startswith(t_parent + "."):
                graph[m].add(t_parent)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle_at_module_level():
    graph = _module_graph()
    graph["pathexpand"] = set()  # the root wires the layers lazily; importing it is the entry
    assert _cycles(graph) == []


def test_a_cycle_is_found():
    """The cycle finder itself finds a planted cycle (so the test above can fail)."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_left_except_display():
    wrong = []
    for m, p in MODULES.items():
        src = _layer(m)
        if src is None:
            continue
        for target, func in _imports(m, p):
            dst = _layer(target)
            if dst is None or dst <= src:
                continue
            if func in DISPLAY and target.startswith("pathexpand.render"):
                continue
            wrong.append(f"{m}:{func or '<module>'} imports {target}")
    assert wrong == []


@pytest.mark.parametrize("package", ["numeric", "symbolic", "graph", "ranking", "names"])
def test_left_layers_do_not_import_models(package):
    offenders = [f"{m} imports {t}" for m, p in MODULES.items() if m.split(".")[1:2] == [package]
                 for t, _ in _imports(m, p) if t.startswith("pathexpand.models")]
    assert offenders == []


def test_every_part_has_a_layer():
    parts = {m.split(".")[1] for m in MODULES if m != "pathexpand"}
    assert parts <= set(LAYERS), parts - set(LAYERS)


def test_the_loader_hook_is_the_one_other_reach_and_only_the_input_rules_use_it():
    """``pe.load`` lives in ``models``; the input rules on its left (``as_weights``,
    ``as_architecture``, ``Architecture.from_weights``) call it through ``_hooks.load_model``, which
    the package root points at ``models.load``. This test lists every caller, so any new use of
    the hook — a hidden backward import — fails here."""
    callers = set()
    for m, p in MODULES.items():
        if m == "pathexpand._hooks" or "pathexpand._hooks" not in {t for t, _ in _imports(m, p)}:
            continue  # only modules that import the hook (the CLI's own load_model is pe.load)
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for n in ast.walk(func):
                    if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == "load_model":
                        callers.add(f"{m}.{func.name}")
    assert callers == {
        "pathexpand.architecture.as_architecture",
        "pathexpand.architecture.from_weights",
        "pathexpand.numeric.weights.as_weights",
    }
