"""Judging a rollout step on its evidence: advance, roll back, or stay. Pure: no I/O, no clock.

Advance gates look at everything gathered since the step began; rollback gates at the
step's last `window` seconds, and only once they hold enough evidence to mean something.
A rollback wins over an advance (at 0% there is nothing to roll back: the plan just
waits), a hold stops advancing only, and routes.yaml's ceiling
caps how far a plan may go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.model import Gates, RolloutPlan
from proxy.model.evidence import P99_SAMPLES, PlanState, StepEvidence


@dataclass(frozen=True, slots=True)
class GateCheck:
    """One gate against its evidence: `value` is what was measured (None: nothing to measure yet)."""

    gate: str
    value: float | None
    limit: float
    ok: bool

    def __str__(self) -> str:
        value = "n/a" if self.value is None else _number(self.value)
        sign = ">=" if self.gate in ("comparisons", "seconds") else "<="
        return f"{self.gate} {value} (needs {sign} {_number(self.limit)})"

    def as_json(self) -> dict[str, Any]:
        return {"gate": self.gate, "value": self.value, "limit": self.limit, "ok": self.ok}


@dataclass(frozen=True, slots=True)
class Judgement:
    """What the evidence says for a plan: `to` is the percent to move to (None: stay), and why."""

    action: str  # advance | rollback | stay
    to: int | None
    reason: str
    advance: tuple[GateCheck, ...] = ()
    rollback: tuple[GateCheck, ...] = ()


def judge(plan: RolloutPlan, state: PlanState, step: StepEvidence, recent: StepEvidence, ceiling: int) -> Judgement:
    """Advance, roll back or stay, given the evidence of the whole step and of its recent window."""
    advance, breaches = advance_checks(plan.advance, step), rollback_checks(plan.rollback, recent)
    failed = [check for check in breaches if not check.ok]
    if failed and state.percent > 0:
        to = 0 if plan.rollback_to == "legacy" else plan.below(state.percent)
        return Judgement("rollback", to, "rollback gate breached: " + "; ".join(map(str, failed)), advance, breaches)
    if state.held:
        return Judgement("stay", None, f"held: {state.reason}" if state.reason else "held", advance, breaches)
    up = plan.above(state.percent)
    if up is None:
        return Judgement("stay", None, "at the last step", advance, breaches)
    if up > ceiling:
        return Judgement("stay", None, f"the next step ({up}%) is above routes.yaml's rollout ({ceiling}%)",
                         advance, breaches)
    waiting = [check for check in advance if not check.ok]
    if waiting:
        return Judgement("stay", None, "waiting for: " + "; ".join(map(str, waiting)), advance, breaches)
    return Judgement("advance", up, "every advance gate holds: " + "; ".join(map(str, advance)), advance, breaches)


def advance_checks(gates: Gates, step: StepEvidence) -> tuple[GateCheck, ...]:
    checks = [GateCheck("comparisons", step.compared, gates.min_comparisons, step.compared >= gates.min_comparisons),
              GateCheck("seconds", round(step.seconds, 1), gates.min_seconds, step.seconds >= gates.min_seconds)]
    return tuple(checks + _limits(gates, step, judged=True))


def rollback_checks(gates: Gates, recent: StepEvidence) -> tuple[GateCheck, ...]:
    """A rollback gate is breached only on enough evidence: `min_comparisons` comparisons for the
    divergence rate, as many answers of the new side for its error rate and latency."""
    return tuple(_limits(gates, recent, judged=False))


def _limits(gates: Gates, evidence: StepEvidence, judged: bool) -> list[GateCheck]:
    """The max_ gates. For advancing, a gate without evidence fails; for rolling back, it holds."""
    enough_compared = judged or evidence.compared >= max(1, gates.min_comparisons)
    enough_answers = judged or evidence.new.answers >= max(1, gates.min_comparisons)
    # A p99 of fewer than P99_SAMPLES answers is their maximum: one slow request would be a verdict.
    enough_timed = judged or min(evidence.new.answers, evidence.legacy.answers) >= max(P99_SAMPLES,
                                                                                       gates.min_comparisons)
    found: list[GateCheck] = []
    if gates.max_divergence_rate is not None:
        rate = evidence.divergence_rate if evidence.compared else None
        found.append(_at_most("divergence_rate", rate, gates.max_divergence_rate, enough_compared, judged))
    if gates.max_error_rate is not None:
        rate = evidence.new.error_rate if evidence.new.answers else None
        found.append(_at_most("error_rate", rate, gates.max_error_rate, enough_answers, judged))
    if gates.max_latency_ratio is not None:
        found.append(_at_most("latency_ratio", evidence.latency_ratio, gates.max_latency_ratio, enough_timed,
                              judged))
    return found


def _at_most(gate: str, value: float | None, limit: float, enough: bool, judged: bool) -> GateCheck:
    if value is None or not enough:
        return GateCheck(gate, value, limit, not judged)
    return GateCheck(gate, round(value, 4), limit, value <= limit)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


