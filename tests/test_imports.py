"""DESIGN.md's layers, enforced: imports flow one way, with no cycles, and every module imports alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("proxy", "comparators", "toggles", "reports")
SEAMS = ("toggles", "comparators", "reports")  # below layer 4, reached only through `<pkg>.base`
LAYERS = {
    0: {"proxy", "proxy.model", "proxy.errors", "proxy.paths", "proxy.codings", "proxy.evidence", "proxy.gates"},
    1: {"proxy.yamlsource", "proxy.fields", "proxy.config", "proxy.environment", "proxy.config_routes", "proxy.config_plans", "proxy.logs",
        "proxy.metrics", "proxy.buildinfo", "proxy.demo", "proxy.demo.shop", "proxy.demo.monolith",
        "proxy.demo.orders"},
    2: {"proxy.target", "proxy.headers", "proxy.connection", "proxy.upstream", "proxy.relayed", "proxy.routing", "proxy.forward", "proxy.request",
        "proxy.responses", "proxy.live", "proxy.toggling", "proxy.experiment", "proxy.worker",
        "proxy.resilience", "proxy.body", "proxy.deadline", "proxy.rollout"},
    3: {"proxy.handler", "proxy.admin", "proxy.edge", "proxy.explain", "proxy.replay"},
    4: {"proxy.app", "proxy.cli", "proxy.__main__", "proxy.demo.run", "proxy.report_cli", "proxy.accept_cli", "proxy.supervisor",
        "proxy.rollout_cli", "proxy.replay_cli"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = modules()


def layer(module: str) -> int:
    if module.split(".")[0] in SEAMS:
        return 1
    return next((n for n, members in LAYERS.items() if module in members), 99)  # 99: unplaced


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
    """Every import that goes up a layer, across packages within a layer, or around a seam."""
    breaks = []
    for module, imported_set in sorted(graph.items()):
        for imported in sorted(imported_set):
            mine, theirs = layer(module), layer(imported)
            same_package = module.split(".")[0] == imported.split(".")[0]
            if theirs > mine or (theirs == mine and not same_package):
                breaks.append(f"{module} (layer {mine}) imports {imported} (layer {theirs})")
            elif imported.split(".")[0] in SEAMS and mine < 4 and not same_package \
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


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if m.split(".")[0] not in SEAMS and not any(m in s for s in LAYERS.values())]
    assert unplaced == [], "give each new module a layer in tests/test_imports.py (see DESIGN.md)"


def test_imports_flow_down_the_layers():
    assert layer_breaks(GRAPH) == []


def test_there_is_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_rules_catch_what_they_forbid():
    planted = {**GRAPH, "proxy.model": {"proxy.handler"}, "toggles.base": {"reports.base"},
               "proxy.routing": GRAPH["proxy.routing"] | {"toggles.unleash"}}
    assert layer_breaks(planted) == [
        "proxy.model (layer 0) imports proxy.handler (layer 3)",
        "proxy.routing reaches toggles.unleash instead of its Protocol module",
        "toggles.base (layer 1) imports reports.base (layer 1)",
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
