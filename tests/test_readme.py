"""The README stays a true front door: its quick start runs what CI runs, its example is a valid
routes.yaml, its benchmark figures are the latest run's, and it stays short enough to read."""

import re

from proxy import config
from tests.helpers import REPO

README = REPO / "README.md"


def section(title: str) -> str:
    return README.read_text().split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def quick_start_commands() -> list[str]:
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section("Quick start"), re.S)]


def test_quick_start_is_two_commands_install_and_demo_then_tests():
    install_and_demo, tests = quick_start_commands()
    assert "pip install" in install_and_demo and install_and_demo.endswith("strangler demo")
    assert "\n" not in install_and_demo and "\n" not in tests


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == quick_start_commands()[1]


def test_the_readme_example_is_a_valid_routes_yaml(tmp_path):
    example = re.search(r"```yaml\n(.*?)```", section("routes.yaml"), re.S)[1]
    path = tmp_path / "routes.yaml"
    path.write_text(example)
    loaded = config.load(path)
    assert [route.name for route in loaded.routes] == ["orders", "everything-else"]
    assert not loaded.warnings


def test_the_readme_benchmark_figures_are_those_of_docs_performance():
    """Measurements go stale: the README quotes a few, and only ones the latest run in
    docs/performance.md holds, so replacing that run shows which to update."""
    latest = (REPO / "docs" / "performance.md").read_text().split("## The latest run", 1)[1].split("\n## ", 1)[0]
    quoted = re.findall(r"\d+\.\d+|\d{4}-\d\d-\d\d", section("Performance"))
    assert quoted and [figure for figure in quoted if figure not in latest] == []


def test_the_readme_is_a_front_door_not_a_manual():
    assert len(README.read_text().splitlines()) < 250
