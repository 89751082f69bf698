"""Imports go one way: down the floors of DESIGN.md, inside functions too, and never in a cycle.

Every ``import`` and ``from … import`` in the package is read from the source (module level and function level alike)
and checked against the floor table below. A registry is filled by its own package; nothing below reaches up to fill
it. The package facade ``modelpress/__init__.py`` is the one module allowed to import from any floor (re-exports).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import modelpress

ROOT = Path(modelpress.__file__).parent

#: Floors, bottom (0) to top. A module may import modules of its own floor (without cycles) or of lower floors.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("errors", "io", "progress", "registry", "config", "metric_schema"),
    ("refs", "onnx_utils"),
    ("data", "images", "artifacts", "zoo", "hf", "text_pairs"),
    ("sources", "runtime"),
    ("compress", "evaluate", "diagnose"),
    ("reports",),
    ("pipeline", "search"),
    ("cli",),
)
#: Packages on one floor that must not import each other at all (siblings share what they need through lower floors).
SIBLINGS = {"compress", "evaluate", "diagnose"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            base = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in MODULES else base)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in MODULES and m != name and not m.startswith(name + ".")}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _unit(module: str) -> str:
    """The floor entry a module belongs to: ``modelpress.compress.prune`` → ``compress``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _floor(module: str) -> int:
    unit = _unit(module)
    for level, names in enumerate(FLOORS):
        if unit in names:
            return level
    raise AssertionError(f"{module} is on no floor: add {unit!r} to FLOORS in this test (and to DESIGN.md)")


def test_every_module_is_on_a_floor():
    for module in MODULES:
        if module != "modelpress":
            _floor(module)


def test_no_import_goes_up():
    upward = []
    for module, targets in GRAPH.items():
        if module == "modelpress":
            continue
        for target in targets:
            if target == "modelpress":
                upward.append(f"{module} imports the package facade modelpress (import the module itself)")
            elif _floor(target) > _floor(module):
                upward.append(f"{module} (floor {_floor(module)}) imports {target} (floor {_floor(target)})")
            elif _unit(target) != _unit(module) and {_unit(target), _unit(module)} <= SIBLINGS:
                upward.append(f"{module} imports its sibling {target}")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycle():
    cycles: set[str] = set()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt == "modelpress":
                continue
            if state.get(nxt) == 1:
                cycles.add(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state and module != "modelpress":
            visit(module)
    assert not cycles, "\n".join(sorted(cycles))


@pytest.mark.parametrize("module", ["modelpress.data", "modelpress.artifacts", "modelpress.sources", "modelpress.hf",
                                    "modelpress.runtime.sessions", "modelpress.compress", "modelpress.pipeline",
                                    "modelpress.cli"])
def test_each_layer_imports_alone(module):
    """Each layer imports in a fresh interpreter by itself: none needs another module imported first."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
