"""The tally: what /metrics shows for answered requests and comparisons, in one process and added up over workers."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.observe.tally import LATENCY_BUCKETS, SETTLE_AT, Tally, TallyFiles


def samples(registry: CollectorRegistry, family: str) -> dict[tuple, float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) if f.name == family for s in f.samples}


def tallied(*collectors) -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return registry


LATENCIES = (0.0004, 0.001, 0.0011, 0.02, 0.02, 3.0, 75.0)


def test_latencies_read_exactly_as_prometheus_clients_own_histograms_would():
    tally, reference = Tally(), CollectorRegistry()
    requests = Histogram("strangler_request_duration_seconds", "-", ["route", "upstream"],
                         buckets=LATENCY_BUCKETS, registry=reference)
    shadows = Histogram("strangler_shadow_duration_seconds", "-", ["route"], buckets=LATENCY_BUCKETS,
                        registry=reference)
    for seconds in LATENCIES:
        tally.observe("orders", "legacy", "GET", 200, seconds)
        requests.labels("orders", "legacy").observe(seconds)
        tally.shadow("orders", seconds)
        shadows.labels("orders").observe(seconds)
    for family in ("strangler_request_duration_seconds", "strangler_shadow_duration_seconds"):
        expected = {key: value for key, value in samples(reference, family).items()
                    if not key[0].endswith("_created")}
        assert samples(tallied(tally), family) == expected


def test_requests_are_counted_by_method_class_and_status_class():
    tally = Tally()
    for method, status in (("GET", 200), ("HEAD", 204), ("POST", 201), ("GET", 502), ("DELETE", 404)):
        tally.observe("orders", "legacy", method, status, 0.01)
    counted = {dict(labels)["method_class"] + " " + dict(labels)["status_class"]: value
               for (name, labels), value in samples(tallied(tally), "strangler_requests").items()}
    assert counted == {"safe 2xx": 2, "unsafe 2xx": 1, "safe 5xx": 1, "unsafe 4xx": 1}


def test_every_request_is_counted_however_the_scrapes_fall_among_those_held():
    tally = Tally()
    registry = tallied(tally)

    def answered() -> float:
        return sum(value for (name, labels), value in samples(registry, "strangler_requests").items()
                   if dict(labels)["status_class"] == "2xx")

    for _ in range(SETTLE_AT + 3):  # past the count at which held requests are added in, and three more
        tally.observe("orders", "legacy", "GET", 200, 0.01)
    assert answered() == SETTLE_AT + 3
    tally.observe("orders", "legacy", "GET", 200, 0.01)
    assert answered() == SETTLE_AT + 4


def test_the_supervisor_adds_up_what_each_worker_saved(tmp_path: Path):
    one, two, together = Tally(), Tally(), Tally()
    for index, seconds in enumerate(LATENCIES):
        (one if index % 2 else two).observe("orders", "new" if index % 3 else "legacy", "GET", 200, seconds)
        together.observe("orders", "new" if index % 3 else "legacy", "GET", 200, seconds)
    shadows = (("matched", 0.5), ("matched", 0.25), ("diverged", 1.0), ("matched", 2.0), ("diverged", 0.125))
    for index, (result, seconds) in enumerate(shadows):  # seconds that add up exactly in any order
        for tally in ((one if index % 2 else two), together):
            tally.comparison("orders", result)
            tally.shadow("orders", seconds)
    one.save(str(tmp_path), "101")
    two.save(str(tmp_path), "102")
    files = tallied(TallyFiles(str(tmp_path)))
    for family in ("strangler_requests", "strangler_request_duration_seconds", "strangler_comparisons",
                   "strangler_shadow_duration_seconds"):
        assert samples(files, family) == samples(tallied(together), family)
    compared = samples(files, "strangler_comparisons")
    assert compared[("strangler_comparisons_total", (("result", "diverged"), ("route", "orders")))] == 2
    assert samples(files, "strangler_shadow_duration_seconds")[
        ("strangler_shadow_duration_seconds_count", (("route", "orders"),))] == 5
