"""Layering: every module imports on its own, and the import graph of the package has no cycle.

A module that imports only after some other module was imported first, or two modules that import
each other (even lazily, inside a function), are the signs of a concept split across modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP_FOLDERS = {"tinymvlm": "tinymvlm", "tinymvlm.index": "index", "tinymvlm.serve": "serve",
               "tinymvlm.cli": "cli"}  # as pyproject installs them


def packages() -> dict[str, Path]:
    """Installed package name -> folder: the top folders and the subpackages of `tinymvlm/`."""
    found = dict((name, ROOT / folder) for name, folder in TOP_FOLDERS.items())
    for init in sorted((ROOT / "tinymvlm").glob("*/__init__.py")):
        found[f"tinymvlm.{init.parent.name}"] = init.parent
    return found


def modules() -> dict[str, Path]:
    """Installed module name -> source file, `__main__` left out (importing it runs the CLI)."""
    found = {}
    for package, folder in packages().items():
        for path in sorted(folder.glob("*.py")):
            if path.stem != "__main__":
                found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports anywhere in its source, lazy imports included.
    `from pkg import sub` counts as importing the submodule, not the package's __init__."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            subs = {f"{base}.{alias.name}" for alias in node.names} & set(known)
            targets.update(subs)
            if len(subs) < len(node.names):
                targets.add(base)
    return (targets & set(known)) - {name}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_a_lazy_import_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def x():\n    from . import a\n")
    (tmp_path / "c.py").write_text("from .a import y\n")
    known = {f"p.{s}": tmp_path / f"{s}.py" for s in "abc"}
    graph = {name: imported(name, path, known) for name, path in known.items()}
    assert cycles(graph) == [{"p.a", "p.b"}]


def test_the_import_graph_has_no_cycle():
    known = modules()
    found = cycles({name: imported(name, path, known) for name, path in known.items()})
    assert not found, f"import cycles: {[sorted(c) for c in found]}"


# Each module is imported in a process of its own, forked from one that has loaded only third-party
# libraries: as clean as a fresh interpreter for this package's modules, without paying torch's
# import time once per module.
CHILD = """
import importlib, os, sys, traceback
for lib in sys.argv[1].split(","):
    try:
        importlib.import_module(lib)
    except Exception:
        pass
failed = []
for name in sys.argv[2:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print("FAILED", " ".join(failed))
sys.exit(1 if failed else 0)
"""


def third_party(known: dict[str, Path]) -> set[str]:
    libs = set()
    for path in known.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                libs.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                libs.add(node.module.split(".")[0])
    return {lib for lib in libs if lib != "tinymvlm" and lib not in sys.stdlib_module_names}


def test_every_module_imports_on_its_own():
    known = modules()
    assert len(known) > 40 and "tinymvlm.inference.runtime" in known and "tinymvlm.index.python_api" in known
    result = subprocess.run([sys.executable, "-c", CHILD, ",".join(sorted(third_party(known))), *known],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]


# What each area may import (besides itself and the shared modules directly in tinymvlm/), lowest first;
# each package's __init__ docstring says the same in words.
LAYERS = {
    "tinymvlm.data": set(),
    "tinymvlm.models": {"tinymvlm.data"},
    "tinymvlm.inference": {"tinymvlm.models", "tinymvlm.data"},
    "tinymvlm.evaluation": {"tinymvlm.inference", "tinymvlm.models", "tinymvlm.data"},
    "tinymvlm.training": {"tinymvlm.evaluation", "tinymvlm.inference", "tinymvlm.models", "tinymvlm.data"},
    "tinymvlm.index": {"tinymvlm.evaluation", "tinymvlm.inference", "tinymvlm.models", "tinymvlm.data"},
    "tinymvlm.serve": {"tinymvlm.index", "tinymvlm.evaluation", "tinymvlm.inference", "tinymvlm.models",
                       "tinymvlm.data"},
}


def area(module: str) -> str:
    """The area a module belongs to: its package below tinymvlm, or 'shared' for tinymvlm's own modules."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or module in packages() else "shared"


def test_every_area_imports_only_the_areas_below_it():
    assert set(LAYERS) | {"tinymvlm.cli", "tinymvlm"} == set(packages()), "a package without a layer"
    known = modules()
    wrong = []
    for name, path in known.items():
        mine = area(name)
        for target in imported(name, path, known):
            theirs = area(target)
            if mine in LAYERS and theirs not in {mine, "shared"} | LAYERS[mine]:
                wrong.append(f"{name} -> {target}")
            if mine == "shared" and theirs != "shared" and name != "tinymvlm":
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports against the layering: " + ", ".join(sorted(wrong))


def test_the_layer_check_sees_an_upward_import():
    assert area("tinymvlm.models.builtin") == "tinymvlm.models" and area("tinymvlm.errors") == "shared"
    assert "tinymvlm.training" not in LAYERS["tinymvlm.models"]


def readme_packages() -> dict[str, str]:
    """The package -> folder rows of the README's "How the code is laid out" table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| `")]
    return {row[1].strip(" `"): row[2].strip(" `/") for row in rows}


def test_the_readme_names_every_package_and_its_folder():
    named = readme_packages()
    actual = {name: str(folder.relative_to(ROOT)) for name, folder in packages().items()}
    assert named == actual
