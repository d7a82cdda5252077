"""The one exception of our own: routes.yaml is not valid. Everything else is data (and `one_line`
says another library's exception in a line)."""

from __future__ import annotations

from typing import Iterable

from proxy.model import Problem


class ConfigError(ValueError):
    """routes.yaml could not be loaded; `problems` says where and why, one line each."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def one_line(exc: BaseException) -> str:
    """What an exception says, in its first line (a driver's messages run over several), or its kind."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
