"""Rollout evidence as values: a period's answers and comparisons (EvidenceBatch), a step's totals
(StepEvidence) and a plan's state (PlanState), and the latency bins both the proxy and the store read.

Bins are 20% apart, so a p99 read off them is within 20%.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Collection, Iterable

from proxy.model.kinds import FailureKind, Side

FIRST_BOUND, GROWTH, BINS = 0.0005, 1.2, 72  # seconds: 0.5 ms up to about 250 s
LATENCY_FLOOR = 0.010  # seconds: p99s below it count as 10 ms in the latency ratio
P99_SAMPLES = 100  # answers of each side a rollback needs before it judges their p99s


def bin_bound(index: int) -> float:
    return FIRST_BOUND * GROWTH ** index


_BOUNDS = tuple(bin_bound(index) for index in range(BINS - 1))  # the last bin has no upper bound


def latency_bin(seconds: float) -> int:
    """The bin whose upper bound is the first at or above `seconds`: a bisection in C, as every answer of a
    route with a new side is binned."""
    return bisect_left(_BOUNDS, seconds)


def quantile(bins: Counter[int], q: float) -> float | None:
    """The upper bound of the bin holding the q-quantile, or None without answers."""
    total = sum(bins.values())
    if not total:
        return None
    rank, seen = q * total, 0
    for index in sorted(bins):
        seen += bins[index]
        if seen >= rank:
            return bin_bound(index)
    return bin_bound(max(bins))


def rate(part: int, whole: int) -> float:
    """`part` over `whole`, 0 when there is no whole: every divergence rate the gates and reports show."""
    return part / whole if whole else 0.0


@dataclass(frozen=True, slots=True)
class Tally:
    """Comparisons as the gates count them: all, those that diverged, and of those the ones whose
    signature is accepted. Learned noise never makes a divergence (proxy.shadow.compare), so it is
    not here to leave out."""

    compared: int = 0
    diverged: int = 0
    accepted: int = 0

    @property
    def open(self) -> int:
        """Divergences no one has explained: what `max_divergence_rate` judges."""
        return self.diverged - self.accepted

    @property
    def open_rate(self) -> float:
        return rate(self.open, self.compared)


def tally(counts: Iterable[tuple[str, int]], accepted: Collection[str]) -> Tally:
    """Add up (signature, count) pairs, '' for a comparison that matched."""
    compared = diverged = excused = 0
    for signature, count in counts:
        compared += count
        if signature:
            diverged += count
            excused += count if signature in accepted else 0
    return Tally(compared, diverged, excused)


@dataclass
class Answers:
    """One side's answers to one route in one period."""

    count: int = 0
    errors: int = 0
    bins: Counter[int] = field(default_factory=Counter)
    classes: Counter[StatusClass] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class EvidenceBatch:
    """What a process gathered in one period, for the store."""

    at: float
    comparisons: tuple[tuple[str, str, int], ...]  # route, signature ('' matched), count
    answers: tuple[tuple[str, Side, Answers], ...]


@dataclass(frozen=True, slots=True)
class SideEvidence:
    """One side's answers at a step: how many, how many failed (5xx, timeout, refused), and p99."""

    answers: int = 0
    errors: int = 0
    p99: float | None = None  # seconds; None without answers

    @property
    def error_rate(self) -> float:
        return self.errors / self.answers if self.answers else 0.0


@dataclass(frozen=True, slots=True)
class StepEvidence:
    """What a step has shown between two moments."""

    since: float
    until: float
    compared: int = 0
    diverged: int = 0  # accepted signatures left out
    accepted: int = 0  # divergences of accepted signatures
    legacy: SideEvidence = SideEvidence()
    new: SideEvidence = SideEvidence()

    @property
    def seconds(self) -> float:
        return max(0.0, self.until - self.since)

    @property
    def divergence_rate(self) -> float:
        return rate(self.diverged, self.compared)

    @property
    def latency_ratio(self) -> float | None:
        if self.legacy.p99 is None or self.new.p99 is None:
            return None
        # Under LATENCY_FLOOR a difference is noise (a scheduler's hiccup on a fast service), not a regression.
        return max(self.new.p99, LATENCY_FLOOR) / max(self.legacy.p99, LATENCY_FLOOR)

    def as_json(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, "compared": self.compared, "diverged": self.diverged,
                "accepted": self.accepted, "divergence_rate": round(self.divergence_rate, 4),
                "legacy": _side_json(self.legacy), "new": _side_json(self.new),
                "latency_ratio": None if self.latency_ratio is None else round(self.latency_ratio, 2)}


@dataclass(frozen=True, slots=True)
class PlanState:
    """Where a route's plan stands: the percent on the new side, since when, and whether held."""

    route: str
    percent: int
    since: float
    held: bool = False
    reason: str = ""
    version: int = 0  # bumped by every move: two processes cannot both move from one state


def _side_json(side: SideEvidence) -> dict[str, Any]:
    return {"answers": side.answers, "errors": side.errors, "error_rate": round(side.error_rate, 4),
            "p99_ms": None if side.p99 is None else round(side.p99 * 1000, 2)}


class StatusClass(StrEnum):
    """What a side answered, as the review console's status mix counts it."""

    INFORMATIONAL = "1xx"
    SUCCESS = "2xx"
    REDIRECT = "3xx"
    CLIENT_ERROR = "4xx"
    SERVER_ERROR = "5xx"
    NO_ANSWER = "none"  # a failure before any status: refused, timed out, broken, breaker open


STATUS_CLASSES = tuple(StatusClass)


def status_class(status: int | None, error: FailureKind | None) -> StatusClass:
    """A 5xx held back for a retry or a fallback is still the side's 5xx; any other failure is no answer
    (a connection that broke after its status included: the answer was not whole)."""
    if error is FailureKind.STATUS:
        return StatusClass.SERVER_ERROR
    if error is not None or status is None or not 100 <= status <= 599:
        return StatusClass.NO_ANSWER
    return STATUS_CLASSES[status // 100 - 1]
