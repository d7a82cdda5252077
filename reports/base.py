"""The report seam: where comparisons are counted and divergences kept. Never blocks, never raises."""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from proxy.model import Divergence, StoreState
from proxy.model.evidence import EvidenceBatch, PlanState, StepEvidence


class StoreHealth(Protocol):
    """How the store's writer is faring (reports/health.py)."""

    down_since: float | None
    problem: str | None

    @property
    def state(self) -> StoreState: ...


class DivergenceSink(Protocol):
    health: StoreHealth

    def count(self, route: str, diverged: bool, at: float, endpoint: str | None = None, signature: str = "") -> None:
        """Count one comparison of `route`; with its endpoint template, also by endpoint and `signature`
        ('' for a match)."""
        ...

    def record(self, divergence: Divergence) -> None:
        """Keep one divergence (redacted); under load it may be dropped, and that is counted."""
        ...

    def learn_noise(self, route: str, paths: Sequence[str], at: float) -> None:
        """Note paths that differ between two answers of legacy itself."""
        ...

    def evidence(self, batch: EvidenceBatch) -> None:
        """Add a period's rollout evidence (comparisons, each side's answers) to the shared tallies."""
        ...

    def start(self) -> None:
        ...

    def close(self) -> None:
        """Write what is queued, then stop (blocking: run it in a thread)."""
        ...


class PlanStore(Protocol):
    """Where rollout plans keep their state and find their evidence, shared by the processes of an
    instance. Blocking: called from a thread."""

    def state(self, route: str) -> PlanState | None: ...

    def begin(self, route: str, percent: int, now: float) -> PlanState:
        """The plan's state, created at `percent` when it has none."""
        ...

    def move(self, state: PlanState, action: str, to: int, reason: str, by: str, now: float,
             evidence: dict[str, Any] | None = None, held: bool | None = None) -> PlanState | None:
        """Move from `state`; None when another process moved it first."""
        ...

    def evidence(self, route: str, since: float, until: float, accepted: frozenset[str]) -> StepEvidence: ...

    def accepted(self, now: float) -> frozenset[str]:
        """Signatures accepted as intended differences, not expired."""
        ...

    def close(self) -> None: ...
