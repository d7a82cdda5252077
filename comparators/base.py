"""The comparator seam: how the legacy and the new answer to one request differ."""

from __future__ import annotations

from typing import Protocol

from proxy.model import CompareSpec, Comparison, Observation


class Comparator(Protocol):
    def compare(self, legacy: Observation, new: Observation, spec: CompareSpec) -> Comparison:
        """Every difference, legacy first whoever served; pure and picklable (it runs in a worker)."""
        ...
