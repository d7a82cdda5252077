"""Judging a rollout step (pure), and reading `rollout_plan:` from routes.yaml."""

from __future__ import annotations

import pytest

from proxy.config import parse
from proxy.model import FailureKind, Gates, RolloutPlan, Side
from proxy.model.errors import ConfigError
from proxy.model.evidence import BINS, PlanState, SideEvidence, StepEvidence, bin_bound, latency_bin, quantile
from proxy.observe.tally import SETTLE_AT
from proxy.rollout.evidence import Evidence
from proxy.rollout.gates import judge

PLAN = RolloutPlan(steps=(0, 5, 25, 100),
                   advance=Gates(min_comparisons=100, min_seconds=60, max_divergence_rate=0.01,
                                 max_error_rate=0.01, max_latency_ratio=1.5),
                   rollback=Gates(min_comparisons=20, max_divergence_rate=0.05, max_error_rate=0.05,
                                  max_latency_ratio=3.0))
FAST = SideEvidence(1000, 0, 0.010)


def evidence(compared: int = 200, diverged: int = 0, seconds: float = 120, new: SideEvidence = FAST,
             legacy: SideEvidence = FAST) -> StepEvidence:
    return StepEvidence(0.0, seconds, compared, diverged, 0, legacy, new)


def at(percent: int, held: bool = False) -> PlanState:
    return PlanState("orders", percent, 0.0, held)


def test_every_advance_gate_holding_moves_one_step_up():
    judged = judge(PLAN, at(5), evidence(), evidence(), ceiling=100)
    assert (judged.action, judged.to) == ("advance", 25)
    assert all(check.ok for check in judged.advance)


@pytest.mark.parametrize("step, waiting_for", [
    (evidence(compared=99), "comparisons 99 (needs >= 100)"),
    (evidence(seconds=30), "seconds 30 (needs >= 60)"),
    (evidence(diverged=3), "divergence_rate 0.015 (needs <= 0.01)"),
    (evidence(new=SideEvidence(1000, 20, 0.010)), "error_rate 0.02 (needs <= 0.01)"),
    (evidence(new=SideEvidence(1000, 0, 0.020)), "latency_ratio 2 (needs <= 1.5)"),
    (evidence(new=SideEvidence(1000, 0, 0.020), legacy=SideEvidence(1000, 0, 0.001)), "latency_ratio 2 (needs"),
    (evidence(new=SideEvidence(0, 0, None)), "error_rate n/a"),
])
def test_a_step_stays_until_each_advance_gate_holds(step, waiting_for):
    judged = judge(PLAN, at(5), step, evidence(compared=0), ceiling=100)
    assert (judged.action, judged.to) == ("stay", None)
    assert waiting_for in judged.reason


@pytest.mark.parametrize("recent, breached", [
    (evidence(compared=40, diverged=4), "divergence_rate 0.1 (needs <= 0.05)"),
    (evidence(new=SideEvidence(100, 10, 0.01)), "error_rate 0.1 (needs <= 0.05)"),
    (evidence(new=SideEvidence(100, 0, 0.05)), "latency_ratio 5 (needs <= 3)"),
])
def test_a_breached_rollback_gate_moves_one_step_back_even_when_advancing_would_be_allowed(recent, breached):
    judged = judge(PLAN, at(25), evidence(), recent, ceiling=100)
    assert (judged.action, judged.to) == ("rollback", 5)
    assert breached in judged.reason


def test_rollback_to_legacy_goes_straight_to_no_users():
    plan = RolloutPlan(steps=PLAN.steps, advance=PLAN.advance, rollback=PLAN.rollback, rollback_to="legacy")
    judged = judge(plan, at(100), evidence(), evidence(compared=40, diverged=10), ceiling=100)
    assert (judged.action, judged.to) == ("rollback", 0)


def test_too_little_recent_evidence_breaches_nothing():
    """Two bad answers out of three are not a verdict: rollback gates wait for min_comparisons."""
    recent = evidence(compared=3, diverged=2, new=SideEvidence(3, 2, 0.5))
    judged = judge(PLAN, at(25), evidence(), recent, ceiling=100)
    assert judged.action != "rollback"


def test_a_p99_of_a_few_answers_is_no_verdict():
    """Fifty answers' p99 is their slowest one: the latency gate waits for a hundred of each side."""
    recent = evidence(new=SideEvidence(50, 0, 0.5), legacy=SideEvidence(50, 0, 0.01))
    assert judge(PLAN, at(25), evidence(), recent, ceiling=100).action != "rollback"


def test_a_held_plan_does_not_advance_but_still_rolls_back():
    assert judge(PLAN, at(5, held=True), evidence(), evidence(), 100).action == "stay"
    assert judge(PLAN, at(5, held=True), evidence(), evidence(compared=40, diverged=10), 100).to == 0


def test_routes_yaml_is_the_ceiling():
    judged = judge(PLAN, at(5), evidence(), evidence(), ceiling=20)
    assert judged.action == "stay" and "above routes.yaml's rollout (20%)" in judged.reason


def test_the_last_step_stays():
    assert judge(PLAN, at(100), evidence(), evidence(), 100).reason == "at the last step"


def test_evidence_tallies_latency_in_bins_a_fifth_apart():
    tally = Evidence()
    for ms in [1] * 98 + [40, 400]:
        tally.answered("orders", Side.NEW, 200, None, ms / 1000)
    tally.answered("orders", Side.NEW, 503, None, 0.001)
    tally.answered("orders", Side.NEW, None, FailureKind.TIMEOUT, 5.0)
    tally.answered("orders", Side.NEW, None, FailureKind.BUSY, 0.0)  # our own shedding: not the side's doing
    tally.compared("orders", "")
    tally.compared("orders", "abc123")
    batch = tally.take(1000.0)
    assert tally.take(1001.0) is None
    (_, _, answers), = batch.answers
    assert (answers.count, answers.errors) == (102, 2)
    assert sorted(batch.comparisons) == [("orders", "", 1), ("orders", "abc123", 1)]
    p99 = quantile(answers.bins, 0.99)
    assert 0.400 <= p99 < 0.400 * 1.2  # the 101st of 102: 400 ms, read off a bin at most 20% wide
    assert latency_bin(0.0001) == 0


def test_every_answer_is_in_the_period_it_came_in_however_many_are_held():
    evidence = Evidence()
    for _ in range(SETTLE_AT + 2):  # past the count at which held answers are added in
        evidence.answered("orders", Side.NEW, 200, None, 0.01)
    evidence.answered("orders", Side.NEW, None, FailureKind.BUSY, 0.0)  # our own shedding: never counted
    (_, _, answers), = evidence.take(1000.0).answers
    assert (answers.count, answers.errors) == (SETTLE_AT + 2, 0)
    evidence.answered("orders", Side.NEW, 503, None, 0.01)
    (_, _, answers), = evidence.take(1001.0).answers
    assert (answers.count, answers.errors) == (1, 1)


def test_a_latency_falls_in_the_first_bin_whose_bound_is_at_or_above_it():
    for index in range(BINS - 1):
        bound = bin_bound(index)
        assert latency_bin(bound) == index  # a bound is its own bin's
        assert latency_bin(bound * 1.000001) == index + 1  # just past it: the next bin's
    assert latency_bin(0.0) == 0
    assert latency_bin(10_000.0) == BINS - 1  # past the last bound: the open-ended last bin


PLANNED = """\
version: 1
upstreams:
  monolith: {url: "http://127.0.0.1:9001"}
  orders: {url: "http://127.0.0.1:9002"}
routes:
  - name: orders
    match: {path: /api/orders}
    legacy: monolith
    new: orders
    serve: toggle
    toggle: {name: orders-to-new, stickiness: "header:X-User-Id"}
    parallel_run: {enabled: true}
    rollout_plan:
      steps: [0, 10, 100]
      check_interval: 2
      advance: {min_comparisons: 50, max_latency_ratio: null}
      rollback: {window: 30, to: legacy, max_error_rate: 0.1}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text.encode(), "routes.yaml")
    return [str(p) for p in caught.value.problems]


def test_a_plan_reads_with_defaults_for_what_is_left_out():
    route = parse(PLANNED.encode(), "routes.yaml").routes[0]
    plan = route.rollout_plan
    assert plan.steps == (0, 10, 100) and plan.check_interval == 2 and plan.window == 30
    assert plan.rollback_to == "legacy"
    assert plan.advance.min_comparisons == 50 and plan.advance.max_latency_ratio is None
    assert plan.advance.max_divergence_rate == RolloutPlan().advance.max_divergence_rate
    assert plan.rollback.max_error_rate == 0.1
    assert route.ceiling == 100  # no `rollout:` written: the plan decides


@pytest.mark.parametrize("old, new, expected", [
    ("steps: [0, 10, 100]", "steps: [0, 50, 10]", "routes.yaml:14: route 'orders', rollout_plan: 'steps' must go up"),
    ("steps: [0, 10, 100]", "steps: [0, 150]", "routes.yaml:14: route 'orders', rollout_plan: 'steps' must be whole"),
    ("to: legacy", "to: monolith", "routes.yaml:17: route 'orders', rollout_plan, rollback: 'to' must be previous or"),
    ("max_error_rate: 0.1", "max_error_rate: 2", "routes.yaml:17: route 'orders', rollout_plan, rollback: "
                                                 "'max_error_rate' must be between 0 and 1"),
    ("parallel_run: {enabled: true}", "parallel_run: {enabled: false}", "routes.yaml:13: route 'orders': a "
                                                                        "rollout_plan needs parallel_run"),
    ("check_interval: 2", "check_intervall: 2", "routes.yaml:15: unknown key 'check_intervall' in route 'orders', "
                                                "rollout_plan; did you mean 'check_interval'?"),
])
def test_a_wrong_plan_is_named_with_its_line(old, new, expected):
    found = problems(PLANNED.replace(old, new))
    assert any(p.startswith(expected) for p in found), found


def test_a_plan_on_a_route_not_served_by_toggle_is_paused_with_a_warning():
    config = parse(PLANNED.replace("serve: toggle", "serve: legacy").encode(), "routes.yaml")
    assert any("the rollout_plan is paused while serve is legacy" in str(w) for w in config.warnings)
