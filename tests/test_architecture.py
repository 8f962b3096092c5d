"""The package's shape (ARCHITECTURE.md): no import circles between our modules, and the light CLI stays light.

The import graph is read from the source (every ``import``, also those inside functions: a lazy import is still a
dependency), with the installed names (``tasks/`` is ``rs_transfer.tasks``, ``video/`` ``rs_transfer.video``).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"rs_transfer": ROOT / "rs_transfer", "rs_transfer.tasks": ROOT / "tasks",
            "rs_transfer.video": ROOT / "video", "rs_transfer.configs": ROOT / "configs"}
# Modules whose outgoing imports a cycle may use because they are lazy lookup tables, named here so that nothing
# else hides behind them. Imports FROM them are followed to the module that defines the name (their ``_LAZY`` dict),
# so a package's lazy re-export never hides a real dependency:
# - rs_transfer, rs_transfer.runner, rs_transfer.weights (``__init__.py``): public names imported on first use;
# - rs_transfer.backbones.registry: imports rs_transfer.video.models (the 3D family's registration table) when a
#   model is first looked up; video.models registers its rows through the registry.
LAZY_TABLES = {"rs_transfer", "rs_transfer.runner", "rs_transfer.weights", "rs_transfer.backbones.registry"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            sub = pkg.split(".") + [p for p in parts]
            # nested packages of rs_transfer/ that are installed separately are listed once, under their own name
            name = ".".join(sub)
            if pkg == "rs_transfer" and parts and parts[0] in ("tasks", "video", "configs"):
                continue
            out[name] = path
    return out


def _lazy_names(modules: dict[str, Path]) -> dict[str, dict[str, str]]:
    """``{package: {name: submodule}}`` from each lazy package's ``_LAZY`` dict."""
    out: dict[str, dict[str, str]] = {}
    for pkg in LAZY_TABLES:
        path = modules.get(pkg)
        if path is None or path.name != "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_LAZY" for t in node.targets):
                table = ast.literal_eval(node.value)
                out[pkg] = {k: f"{pkg}.{v.lstrip('.')}" for k, v in table.items()}
    return out


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    lazy = _lazy_names(modules)
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        base = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    src = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in modules
                           else lazy.get(src, {}).get(a.name, src) for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), after dropping the lazy tables' edges."""
    g = {m: {t for t in ts} for m, ts in graph.items() if m not in LAZY_TABLES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
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

    sys.setrecursionlimit(10000)
    for v in g:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    cycles = _cycles(_edges(_modules()))
    assert not cycles, "import circles (A imports B imports ... A):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle():
    """The check above can fail: a planted two-module circle is found."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_cli_help_imports_no_torch():
    code = ("import sys, contextlib, io\nfrom rs_transfer import cli\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    cli.main(['--help'])\nprint('torch' in sys.modules, 'mmengine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
