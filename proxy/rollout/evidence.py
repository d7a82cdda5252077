"""Evidence for rollout plans, tallied in memory by each process and handed to the store each second.

Per route with a plan: comparisons by signature ('' for a match). Per route with a new side: each
side's answers, failures, status classes and a latency histogram (bins 20% apart: a p99 read off
it is within 20%), for the gates and the review console's sides.
Request code only holds an answer here; the answers held are added in a few hundred at a time, and
whatever is held when the period is taken.
"""

from __future__ import annotations

from collections import Counter

from proxy.model import FailureKind, Side
from proxy.model.evidence import Answers, EvidenceBatch, StatusClass, latency_bin, status_class
from proxy.observe.tally import SETTLE_AT  # answers are held as requests are, and added in as often


def failed(status: int | None, error: FailureKind | None) -> bool:
    """A failure of the side itself: no answer (timeout, refused, broken) or a 5xx. Our own
    shedding (`busy`) is not the side's fault."""
    if error is not None:
        return error is not FailureKind.BUSY
    return status is None or status >= 500


# (status, error) -> whether the side failed, and the answer's status class: both follow from these two
# alone, and a side gives few pairs (statuses have three digits), so each is worked out once
_VERDICTS: dict[tuple[int | None, FailureKind | None], tuple[bool, StatusClass]] = {}


class Evidence:
    """The tallies of the current period."""

    def __init__(self) -> None:
        self._compared: Counter[tuple[str, str]] = Counter()
        self._answers: dict[tuple[str, Side], Answers] = {}
        self._held: list[tuple[str, Side, int | None, FailureKind | None, float]] = []  # not yet added in

    def compared(self, route: str, signature: str) -> None:
        self._compared[(route, signature)] += 1

    def answered(self, route: str, side: Side, status: int | None, error: FailureKind | None,
                 seconds: float) -> None:
        """One answer of a side: held, and added in with the others held (as proxy.observe.tally does)."""
        held = self._held
        held.append((route, side, status, error, seconds))
        if len(held) >= SETTLE_AT:
            self._settle()

    def _settle(self) -> None:
        """Add in the answers held (see proxy.observe.tally's `_settle` for why they are held)."""
        held, self._held = self._held, []
        for route, side, status, error, seconds in held:
            if error is FailureKind.BUSY:
                continue  # never reached the side
            answers = self._answers.get((route, side))
            if answers is None:
                answers = self._answers[(route, side)] = Answers()
            verdict = _VERDICTS.get((status, error))
            if verdict is None:
                verdict = _VERDICTS[(status, error)] = (failed(status, error), status_class(status, error))
            answers.count += 1
            answers.errors += verdict[0]
            answers.bins[latency_bin(seconds)] += 1
            answers.classes[verdict[1]] += 1

    def take(self, at: float) -> EvidenceBatch | None:
        """The period's tallies (None when nothing happened); a new period starts."""
        self._settle()
        if not self._compared and not self._answers:
            return None
        compared, answers = self._compared, self._answers
        self._compared, self._answers = Counter(), {}
        return EvidenceBatch(at, tuple((route, sig, n) for (route, sig), n in compared.items()),
                             tuple((route, side, a) for (route, side), a in answers.items()))
