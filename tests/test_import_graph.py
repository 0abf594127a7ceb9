"""The import graph of svrt points down and has no cycle (issue 21).

Every module of the package (``svrt/`` and the design card's folders, mapped to their import names as
``pyproject.toml``'s package-dir does) is parsed, and every internal import is an edge: module-level and
function-level alike (a lazy import still runs, and still closes a cycle when it does), ``from svrt.x import
y`` as an edge to ``svrt.x`` (and to ``svrt.x.y`` when that is a module), and importing ``svrt.a.b`` also as
importing the package ``svrt.a`` (its ``__init__`` runs first) unless the importer lives inside it. Only
imports under ``if TYPE_CHECKING:`` are left out: they never run.

The rules: the library (``svrt/``, ``runtime/``, ``trainer/``, ``export/``, ``kernels/``) never imports the
benchmarks or the command-line module ``svrt.runtime.cli`` (``svrt/cli.py`` names its sub-commands as strings
in a lazy table, which is no import); no module reaches itself through its imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: import name -> folder, as pyproject.toml's package-dir (runtime/backends is inside runtime/)
PACKAGE_DIRS = {"svrt": "svrt", "svrt.trainer": "trainer", "svrt.export": "export", "svrt.runtime": "runtime",
                "svrt.kernels": "kernels", "svrt.benchmarks": "benchmarks"}
LIBRARY = ("svrt", "svrt.runtime", "svrt.trainer", "svrt.export", "svrt.kernels")
FORBIDDEN = ("svrt.benchmarks", "svrt.runtime.cli")


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(tree: ast.AST) -> set[str]:
    """Every ``svrt...`` name this module imports, at any depth, except under ``if TYPE_CHECKING:``."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {n for n in names if n == "svrt" or n.startswith("svrt.")}


def import_graph() -> dict[str, set[str]]:
    """module -> the svrt modules it imports (see the module doc for what counts)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for target in _imported(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            parts = target.split(".")
            for i in range(2, len(parts) + 1):   # svrt.a.b imports the package svrt.a first
                prefix = ".".join(parts[:i])
                if prefix in modules and not (name == prefix or name.startswith(prefix + ".")):
                    edges.add(prefix)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            strong(v)
    return found


def test_the_graph_covers_the_package():
    graph = import_graph()
    assert {"svrt.metrics", "svrt.runtime.restore", "svrt.runtime.backends.psf_interpolation_backend",
            "svrt.benchmarks.peers", "svrt.trainer.train", "svrt.fileio.burst"} <= set(graph)
    # function-level imports count: svrt.runtime.batch imports the restore module and the solver lazily
    assert {"svrt.runtime.restore", "svrt.runtime.solver"} <= graph["svrt.runtime.batch"]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_library_never_imports_the_benchmarks_or_the_command_line():
    graph = import_graph()
    library = [m for m in graph if any(_within(m, p) for p in LIBRARY) and not _within(m, "svrt.benchmarks")]
    assert "svrt.runtime.batch_cli" in library and "svrt.metrics" in library
    bad = sorted(f"{m} -> {t}" for m in library for t in graph[m] if any(_within(t, f) for f in FORBIDDEN))
    assert bad == []


def test_no_import_cycle():
    assert _cycles(import_graph()) == []


def test_a_cycle_would_be_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    tree = ast.parse("import svrt.x\nif TYPE_CHECKING:\n    import svrt.y\ndef f():\n    from svrt.z import w\n")
    assert _imported(tree) == {"svrt.x", "svrt.z", "svrt.z.w"}
