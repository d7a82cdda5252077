"""The one exception of our own: routes.yaml is not valid. Everything else is data."""

from __future__ import annotations

from typing import Iterable

from proxy.model import Problem


class ConfigError(ValueError):
    """routes.yaml could not be loaded; `problems` says where and why, one line each."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
