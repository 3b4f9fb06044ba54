"""The architecture rules of CONVENTIONS.md, checked on the source: imports flow one way, modules and functions
stay short."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "llmrec"
ENTRY_POINTS = {"llmrec.cli", "llmrec.__main__"}  # dispatchers: they may reach llmrec.commands


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every llmrec module a file imports, at any depth of the file (function-local imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("llmrec")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmrec"):
            out.add(node.module)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        deps = set()
        for imp in _imports(path):
            # `from llmrec.data import X` imports the package llmrec.data; keep the deepest known module
            while imp not in files and "." in imp:
                imp = imp.rsplit(".", 1)[0]
            if imp in files and imp != name:
                deps.add(imp)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                found.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_cycles():
    graph = _graph()
    # package faces (__init__) re-export their submodules; a submodule importing its own package's face is not a
    # cycle of code, so drop the edge package -> own submodule
    flat = {n: {d for d in deps if not d.startswith(n + ".")} for n, deps in graph.items()}
    assert _cycles(flat) == []


def test_the_library_never_imports_the_commands():
    offenders = {
        name: sorted(d for d in deps if d.startswith("llmrec.commands"))
        for name, deps in _graph().items()
        if not name.startswith("llmrec.commands") and name not in ENTRY_POINTS
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_modules_stay_short():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_training_loop_functions_stay_short():
    too_long = {}
    for path in (SRC / "llm").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    too_long[f"{path.name}:{node.name}"] = n
    assert too_long == {}


def test_the_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
