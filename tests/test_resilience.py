"""The circuit breaker and the retry budget, on a clock the test turns by hand."""

import logging

from proxy.model import BreakerSpec, Upstream
from proxy.serve.resilience import Breaker, Resilience, RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(failures=3, open_seconds=10.0, probes=1) -> tuple[Breaker, Clock, list[str]]:
    clock, changes = Clock(), []
    made = Breaker("orders", BreakerSpec(failures, open_seconds, probes), clock,
                   lambda upstream, state: changes.append(state))
    return made, clock, changes


def test_it_opens_after_consecutive_failures_only():
    b, _, changes = breaker(failures=3)
    for ok in (False, False, True, False, False):  # a success in between starts the count again
        assert b.admit()
        b.record(ok)
    assert b.state == "closed"
    b.admit()
    b.record(False)
    assert (b.state, changes) == ("open", ["open"])


def test_open_it_refuses_at_once_and_says_when_to_come_back():
    b, clock, _ = breaker(failures=1, open_seconds=10)
    b.admit()
    b.record(False)
    assert not b.admit()
    clock.now += 6.5
    assert (b.admit(), b.retry_after()) == (False, 4)


def test_half_open_lets_a_probe_through_and_a_success_closes_it():
    b, clock, changes = breaker(failures=1, open_seconds=10, probes=1)
    b.admit()
    b.record(False)
    clock.now += 10
    assert b.admit() and not b.admit()  # one probe at a time
    b.record(True)
    assert (b.state, changes) == ("closed", ["open", "half_open", "closed"])
    assert b.admit()


def test_a_failed_probe_opens_it_again_for_twice_as_long_up_to_ten_times():
    b, clock, _ = breaker(failures=1, open_seconds=10)
    b.admit()
    b.record(False)
    opened_for = []
    for _ in range(6):
        start = clock.now
        clock.now = b.until
        assert b.admit()
        b.record(False)
        opened_for.append(b.until - start - (clock.now - start))
    assert opened_for == [20, 40, 80, 100, 100, 100]


def test_an_inconclusive_outcome_frees_the_probe_without_deciding():
    b, clock, _ = breaker(failures=1, open_seconds=10)
    b.admit()
    b.record(False)
    clock.now += 10
    assert b.admit()
    b.record(None)  # e.g. the pool was busy: says nothing about the upstream
    assert b.state == "half_open" and b.admit()


def test_each_state_change_is_logged_once(caplog):
    caplog.set_level(logging.INFO)
    b, clock, _ = breaker(failures=2, open_seconds=1)
    for _ in range(5):
        if b.admit():
            b.record(False)
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "strangler.resilience"]
    assert said == [("WARNING", "circuit breaker closed -> open")]


def test_the_budget_keeps_retries_to_a_share_of_recent_requests():
    clock = Clock()
    budget = RetryBudget(share=0.2, minimum=3, window=10, clock=clock)
    for _ in range(50):
        budget.note_request()
    spent = sum(budget.spend() for _ in range(50))
    assert spent == 10  # 20% of 50
    clock.now += 11  # the window moved on: old requests and retries no longer count
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]  # the minimum, 3


def test_breakers_outlive_reloads_unless_the_upstream_changes():
    resilience = Resilience()
    first = resilience.breaker(Upstream("orders", "http://127.0.0.1:9002"))
    assert resilience.breaker(Upstream("orders", "http://127.0.0.1:9002")) is first
    assert resilience.breaker(Upstream("orders", "http://127.0.0.1:9003")) is not first
