"""The README's quick start stays true: two commands, the second being exactly what CI runs."""

import re

from tests.helpers import REPO


def quick_start_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_quick_start_is_two_commands_install_and_demo_then_tests():
    install_and_demo, tests = quick_start_commands()
    assert "pip install" in install_and_demo and install_and_demo.endswith("strangler demo")
    assert "\n" not in install_and_demo and "\n" not in tests


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == quick_start_commands()[1]
