"""The report's time series: buckets aligned to minutes and hours, cut exactly at their edges, and the
trend, rollout steps and signature sparklines read back the same on both engines."""

import time

import pytest

from reports import accepted
from reports.plans import StorePlans
from reports.schema import open_database
from reports.series import FORTNIGHT, LAST_HOUR, Span, route_trend, rollout_steps, signature_trends
from tests.test_divergence_store import divergence
from tests.test_store import sink_on

NOW = 360_000 + 30.5  # 100 hours and half a minute after the epoch


@pytest.mark.parametrize("span, at, index", [
    (LAST_HOUR, NOW, 59),  # the newest bucket holds now
    (LAST_HOUR, 360_000, 59),  # its first second
    (LAST_HOUR, 359_999.9, 58),  # the last moment of the minute before
    (LAST_HOUR, 360_000 - 59 * 60, 0),  # the first bucket's first second
    (LAST_HOUR, 360_000 - 59 * 60 - 0.1, None),  # just before the span
    (LAST_HOUR, NOW + 600, 59),  # a clock ahead of ours: the newest bucket, not lost
    (FORTNIGHT, NOW, 335),
    (FORTNIGHT, 360_000, 335),  # the hour that holds now starts at 100 h
    (FORTNIGHT, 359_999, 334),
    (FORTNIGHT, 360_000 - 335 * 3600, 0),
    (FORTNIGHT, 360_000 - 335 * 3600 - 1, None),
])
def test_a_moment_falls_in_the_bucket_whose_start_is_at_or_before_it(span, at, index):
    assert span.index(at, NOW) == index


def test_buckets_are_aligned_and_end_with_the_one_holding_now():
    starts = LAST_HOUR.starts(NOW)
    assert (len(starts), starts[0], starts[-1]) == (60, 360_000 - 59 * 60, 360_000)
    hours = FORTNIGHT.starts(NOW)
    assert (len(hours), hours[-1], hours[1] - hours[0]) == (14 * 24, 360_000, 3600)
    assert Span(60, 1).starts(60.0) == [60] and Span(60, 1).starts(59.99) == [0]


def test_trend_steps_and_sparklines_read_back_the_same(store):
    hour = (int(time.time()) // 3600 - 1) * 3600  # the last whole hour: within retention, wholly past
    now = hour + 3599.5
    sink = sink_on(store)
    # (when, signature): '' a match; "sig-price" is accepted below, "sig-tax" stays open
    for at, signature in [(hour - 1, "sig-tax"), (hour, ""), (hour + 59, "sig-price"), (hour + 60, "sig-tax"),
                          (hour + 3599, "sig-price"), (hour + 3599, "")]:
        sink.count("orders", bool(signature), at)
        if signature:
            sink.record(divergence(at=at, signature=signature, path="$.price" if signature == "sig-price" else "$.tax"))
    sink.close()
    db = open_database(store)
    accepted.accept(db, "sig-price", "orders", "prices now include tax", None, "tester", time.time())
    db.close()

    minutes = route_trend([store], "orders", LAST_HOUR, now)
    assert [(p.at, p.compared, p.diverged, p.open) for i, p in enumerate(minutes) if i in (0, 1, 59)] == [
        (hour, 2, 1, 0), (hour + 60, 1, 1, 1), (hour + 3540, 2, 1, 0)]
    assert sum(p.compared for p in minutes) == 5  # hour - 1 is before the span
    hours = route_trend([store], "orders", FORTNIGHT, now)
    assert [(p.compared, p.diverged, p.open) for p in hours[-2:]] == [(1, 1, 1), (5, 3, 1)]

    trends = signature_trends([store], "orders", LAST_HOUR, now)
    assert sorted(trends) == ["sig-price", "sig-tax"]
    price, tax = trends["sig-price"], trends["sig-tax"]
    assert (price.first_seen, price.last_seen, price.counts[0], price.counts[59], sum(price.counts)) == (
        hour + 59, hour + 3599, 1, 1, 2)
    assert (tax.first_seen, tax.counts[1], sum(tax.counts)) == (hour - 1, 1, 1)  # first seen before the span
    assert signature_trends([store], "orders", FORTNIGHT, now)["sig-tax"].counts[-2:] == (1, 1)


def test_rollout_steps_within_the_span(store):
    hour = (int(time.time()) // 3600 - 1) * 3600
    plans = StorePlans(store)
    state = plans.begin("orders", 0, now=hour - 10)  # before the last hour
    state = plans.move(state, "advance", 5, "every advance gate holds", "gates", now=hour + 30)
    plans.move(state, "rollback", 0, "rollback gate breached", "gates", now=hour + 90)
    plans.close()
    steps = rollout_steps([store], "orders", LAST_HOUR, hour + 3599)
    assert [(s.at, s.action, s.from_percent, s.to_percent, s.by) for s in steps] == [
        (hour + 30, "advance", 0, 5, "gates"), (hour + 90, "rollback", 5, 0, "gates")]
    assert [s.action for s in rollout_steps([store], "orders", FORTNIGHT, hour + 3599)] == [
        "start", "advance", "rollback"]
    assert rollout_steps([store], "payments", FORTNIGHT, hour + 3599) == []
