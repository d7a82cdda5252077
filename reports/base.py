"""The report seam: where comparisons are counted and divergences kept. Never blocks, never raises."""

from __future__ import annotations

from typing import Protocol, Sequence

from proxy.model import Divergence


class DivergenceSink(Protocol):
    def count(self, route: str, diverged: bool, at: float) -> None:
        """Count one comparison of `route`."""
        ...

    def record(self, divergence: Divergence) -> None:
        """Keep one divergence (redacted); under load it may be dropped, and that is counted."""
        ...

    def learn_noise(self, route: str, paths: Sequence[str], at: float) -> None:
        """Note paths that differ between two answers of legacy itself."""
        ...

    def start(self) -> None:
        ...

    def close(self) -> None:
        """Write what is queued, then stop (blocking: run it in a thread)."""
        ...
