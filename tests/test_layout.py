"""The library's layout: imports point one way, and there is no cycle.

Layers, bottom to top (README "The library"): the top level (the maths, networks, agents, the
toys and what chapters 1-7 import) -> ``data`` -> ``training`` -> ``experiments``; the book
tooling (``book``) beside ``experiments``; ``cli`` above everything. A module may import its own
layer and those below it, never one above; ``book`` and ``experiments`` never import each other.
Every import counts, those inside functions included: an import moved into a function to dodge
this test would still run, and still tie the layers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qam_lite"
LAYERS = {"data": 1, "training": 2, "experiments": 3, "book": 3, "cli": 4, "__main__": 4}
SIBLINGS = {frozenset({"experiments", "book"})}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def group(module: str) -> str:
    """``'data'`` for ``qam_lite.data.tasks``, ``''`` for a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else ""


def imported(module: str, path: Path) -> set[str]:
    """The qam_lite modules ``module`` imports, anywhere in its file."""
    out = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "qam_lite"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.split(".")[0] != "qam_lite":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in MODULES else base)
    return {m for m in out if m in MODULES and m != module}


GRAPH = {m: imported(m, p) for m, p in MODULES.items()}


def test_the_graph_was_read():
    # Guards the test itself: a parser that found nothing would pass everything below.
    assert "qam_lite.training.train" in GRAPH["qam_lite.cli"] or any(
        m.startswith("qam_lite.training") for m in GRAPH["qam_lite.cli"]
    )
    assert "qam_lite.data.tasks" in GRAPH["qam_lite.training.settings"]
    assert {"qam_lite.data", "qam_lite.training", "qam_lite.experiments", "qam_lite.book"} <= set(
        MODULES
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    mine = group(module)
    wrong = []
    for other in sorted(GRAPH[module]):
        theirs = group(other)
        if LAYERS.get(theirs, 0) > LAYERS.get(mine, 0):
            wrong.append(f"{other} (layer {theirs} is above {mine or 'the top level'})")
        elif frozenset({mine, theirs}) in SIBLINGS and mine != theirs:
            wrong.append(f"{other} ({mine} and {theirs} never import each other)")
    assert not wrong, f"{module} imports upward: " + "; ".join(wrong)


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(GRAPH):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_cli_and_the_sweep_planner_do_not_load_jax():
    # `qam-lite --help`, a sweep's dry run and its parent process stay light: JAX (and the
    # agents) load only in the processes that train, evaluate or read a checkpoint.
    code = (
        "import sys, qam_lite.cli, qam_lite.experiments.plan, qam_lite.experiments.sweep, "
        "qam_lite.experiments.table; qam_lite.cli.build_parser(); "
        "print(sorted(m for m in ('jax', 'flax', 'optax', 'mujoco') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_python_m_qam_lite_runs_a_verb():
    # `python -m qam_lite VERB` is `qam-lite VERB` (qam_lite/__main__.py); no module has a main.
    out = subprocess.run(
        [sys.executable, "-m", "qam_lite", "table", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("usage: qam-lite table"), out.stderr
    mains = [m for m, p in MODULES.items() if '__name__ == "__main__"' in p.read_text()]
    assert mains == [], f"modules with their own main: {mains}"


def test_the_readme_map_names_every_module():
    # The README's library map is the tree itself: every module is named there, under its folder.
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("## The library", 1)[1].split("```", 2)[1]
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" and path.parent != PACKAGE:
            continue  # a folder is named by its line ("data/", ...)
        rel = path.relative_to(PACKAGE)
        folder_ok = len(rel.parts) == 1 or f"{rel.parts[0]}/" in block
        if path.name != "__init__.py" and (path.name not in block or not folder_ok):
            missing.append(str(rel))
    assert not missing, f"modules missing from README's library map: {missing}"
