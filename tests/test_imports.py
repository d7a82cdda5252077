"""The packages' order (docs/architecture.md), enforced: imports flow one way between packages, with no
cycles, and every module imports alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("proxy", "comparators", "toggles", "reports")
SEAMS = ("toggles", "comparators", "reports")  # below the wiring, reached only through `<pkg>.base`
# proxy/'s packages, lowest first (DESIGN.md): a module may import its own package's modules and
# those of packages on lower rungs, never another package on its own rung or above.
RUNGS = (
    {"proxy", "proxy.model"},
    {"proxy.config", "proxy.observe", *SEAMS},
    {"proxy.wire", "proxy.routing", "proxy.rollout"},
    {"proxy.shadow"},
    {"proxy.serve"},
    {"proxy.admin"},
    {"proxy.app"},  # the wiring: proxy/app.py, and proxy/workers.py for --workers
    {"proxy.demo"},
    {"proxy.cli"},
)
WIRING = RUNGS.index({"proxy.app"})
GROUPS = {"proxy.workers": "proxy.app", "proxy.steer": "proxy.app", "proxy.__main__": "proxy.cli",
          "proxy.children": "proxy"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = modules()


def package(module: str) -> str:
    """The package a module belongs to: `proxy.wire` for proxy.wire.server, `reports` for reports.store."""
    parts = module.split(".")
    if parts[0] != "proxy" or len(parts) == 1:
        return parts[0] if parts[0] != "proxy" else "proxy"
    return GROUPS.get(module, ".".join(parts[:2]))


def layer(module: str) -> int:
    return next((n for n, rung in enumerate(RUNGS) if package(module) in rung), 99)  # 99: unplaced


def project_imports(module: str, path: Path) -> set[str]:
    """Every module of ours that `module` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    return found


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


GRAPH = {m: project_imports(m, p) for m, p in MODULES.items()}


def layer_breaks(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes up a rung, across packages on one rung, or around a seam's Protocol."""
    breaks = []
    for module, imported_set in sorted(graph.items()):
        for imported in sorted(imported_set):
            mine, theirs = layer(module), layer(imported)
            same_package = package(module) == package(imported)
            if not same_package and theirs >= mine:
                breaks.append(f"{module} ({package(module)}, rung {mine}) imports {imported} "
                              f"({package(imported)}, rung {theirs})")
            elif package(imported) in SEAMS and mine < WIRING and not same_package \
                    and not imported.endswith(".base"):
                breaks.append(f"{module} reaches {imported} instead of its Protocol module")
    return breaks


def cycles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, str] = {}
    found: list[str] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                found.append(" -> ".join(trail + [imported]))
            elif imported not in state:
                visit(imported, trail + [imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_every_package_has_a_rung():
    unplaced = sorted({package(m) for m in MODULES if layer(m) == 99})
    assert unplaced == [], "give each new package a rung in tests/test_imports.py (see docs/architecture.md)"


def test_imports_flow_down_the_layers():
    assert layer_breaks(GRAPH) == []


def test_there_is_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_rules_catch_what_they_forbid():
    planted = {**GRAPH, "proxy.model.route": {"proxy.serve.handler"}, "toggles.base": {"reports.base"},
               "proxy.routing.decide": GRAPH["proxy.routing.decide"] | {"toggles.unleash"},
               "proxy.wire.server": GRAPH["proxy.wire.server"] | {"proxy.rollout.gates"}}
    assert layer_breaks(planted) == [
        "proxy.model.route (proxy.model, rung 0) imports proxy.serve.handler (proxy.serve, rung 4)",
        "proxy.routing.decide reaches toggles.unleash instead of its Protocol module",
        "proxy.wire.server (proxy.wire, rung 2) imports proxy.rollout.gates (proxy.rollout, rung 2)",
        "toggles.base (toggles, rung 1) imports reports.base (reports, rung 1)",
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a -> b -> c -> a"]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == 0))
def test_layer_zero_uses_only_the_standard_library(module):
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in PACKAGES or top == "__future__", name


def test_each_module_imports_alone_without_warnings():
    """A fresh interpreter per module, warnings as errors: catches cycles that only bite at import."""
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    for module in sorted(m for m in MODULES if m != "proxy.__main__"):
        done = subprocess.run([sys.executable, "-W", "error", "-c", code, module], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{module}:\n{done.stderr}"
