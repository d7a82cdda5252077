"""The toggles seam: one question, asked per request of a `serve: toggle` route."""

from __future__ import annotations

from typing import Any, Mapping, Protocol


class Toggles(Protocol):
    def is_enabled(self, name: str, context: Mapping[str, Any]) -> bool:
        """Whether feature `name` is on for this context; anything unknown or failing is False."""
        ...


class AllOff:
    """No toggle provider: every toggle is off, so toggle routes answer from legacy."""

    def is_enabled(self, name: str, context: Mapping[str, Any]) -> bool:
        return False
