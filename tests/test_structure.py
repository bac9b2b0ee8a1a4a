"""The package's shape: no import circle, stored-results readers that never reach the measuring
side, and no file grown past what one concept needs (see ../shared/DESIGN.md)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sciml_bench"
MAX_LINES = 500
# The measuring side: what reads stored results must not import it (it would pull in the runner and torch).
MEASURING = {"sciml_bench.runner", "sciml_bench.worker", "sciml_bench.workloads", "sciml_bench.rounds",
             "sciml_bench.supervise", "sciml_bench.records"}
READERS = ("sciml_bench.report", "sciml_bench.compare", "sciml_bench.history", "sciml_bench.results")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the package modules it imports}, at any depth of the file (lazy imports count too).

    ``from sciml_bench.x import y`` is an import of ``sciml_bench.x.y`` where that is a module
    (``from sciml_bench.measure import anchor``), else of ``sciml_bench.x``."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package this file is in
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                deps |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_the_graph_reader_sees_the_known_imports():
    """The checks below are only as good as the graph: it must see plain, lazy and from-package imports."""
    g = import_graph()
    assert "sciml_bench.worker" in g["sciml_bench.supervise"]  # top-level from-import
    assert "sciml_bench.training" in g["sciml_bench.worker"]  # an import inside a function
    assert "sciml_bench.measure.anchor" in g["sciml_bench.rounds"]  # from a package import a module
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_in_the_package():
    assert circles(import_graph()) == []


@pytest.mark.parametrize("reader", READERS)
def test_stored_results_readers_never_reach_the_measuring_side(reader):
    g = import_graph()
    for name in [m for m in g if m == reader or m.startswith(reader + ".")]:
        assert not reaches(g, name) & MEASURING, f"{name} reaches {sorted(reaches(g, name) & MEASURING)}"


def test_no_file_in_the_package_over_the_line_limit():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
