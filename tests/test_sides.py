"""Each side of a route (reports/sides.py): status classes, error rate, p50/p95/p99 and the latency
histogram, gathered by the proxy, added up in the store on both engines, and shown by report summary
with the gates' 10 ms floor stated where it applies."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from aiohttp import web

from proxy.model import FailureKind, Side
from proxy.model.evidence import Answers, EvidenceBatch, StatusClass, latency_bin, status_class
from reports import sides
from tests.test_divergence_store import strangler
from tests.test_parallel_run import get_all, item, items_route, legacy_items, settle
from tests.test_store import sink_on


@pytest.mark.parametrize(("status", "error", "expected"), [
    (200, None, "2xx"), (101, None, "1xx"), (304, None, "3xx"), (404, None, "4xx"), (503, None, "5xx"),
    (None, FailureKind.STATUS, "5xx"),  # a 5xx held back for a fallback is still the side's 5xx
    (502, FailureKind.REFUSED, "none"), (None, FailureKind.TIMEOUT, "none"), (200, FailureKind.BROKEN, "none"),
    (None, None, "none")])
def test_a_status_class_or_no_answer(status, error, expected):
    assert status_class(status, error) == expected


def answers(seconds: float, count: int, statuses: dict[StatusClass, int]) -> Answers:
    errors = statuses.get(StatusClass.SERVER_ERROR, 0) + statuses.get(StatusClass.NO_ANSWER, 0)
    return Answers(count, errors, Counter({latency_bin(seconds): count}), Counter(statuses))


def test_two_writers_add_up_and_the_floor_is_stated_under_10_ms(store):
    writers = [sink_on(store) for _ in range(2)]
    now = time.time()
    for sink in writers:
        sink.evidence(EvidenceBatch(now, (), (
            ("items", Side.LEGACY, answers(0.001, 50, {StatusClass.SUCCESS: 50})),
            ("items", Side.NEW, answers(0.005, 50, {StatusClass.SUCCESS: 45, StatusClass.SERVER_ERROR: 3,
                                                    StatusClass.NO_ANSWER: 2})))))
    for sink in writers:
        sink.close()
    [route] = sides.sides([store])
    assert (route.legacy.answers, route.new.answers, route.new.errors, route.new.error_rate) == (100, 100, 10, 0.1)
    assert dict(route.new.classes) == {"1xx": 0, "2xx": 90, "3xx": 0, "4xx": 0, "5xx": 6, "none": 4}
    assert route.new.p99 == pytest.approx(0.005, rel=0.2) and route.legacy.p99 == pytest.approx(0.001, rel=0.2)
    assert route.latency_ratio == 1.0 and route.floored
    assert route.ratio_text().endswith("(x1.0; a p99 under 10 ms counts as 10 ms in the ratio, as the gates count it)")
    assert [(round(bound, 4), old, new) for bound, old, new in route.axis][0] == (round(route.legacy.p99, 4), 100, 0)
    assert route.axis[-1][1:] == (0, 100)
    assert sides.sides([store], since=now) == []  # the second `since` falls in is left out, as the gates do


async def test_report_summary_shows_each_sides_mix_errors_and_latency(make_upstream, start_proxy, http, tmp_path):
    """A toggle sends some users to a new side that fails every third request; the parallel run has each
    request answered by both."""
    async def flaky(request: web.BaseRequest) -> web.StreamResponse:
        n = int(request.path.rsplit("/", 1)[1])
        return web.json_response({"error": "boom"}, status=500) if n % 3 == 0 else item(request, 10)
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", flaky)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, items_route(),
                              reports={"database": str(tmp_path / "divergence.db")})
    await get_all(http, proxy.url, [f"/items/{n}" for n in range(30)])
    await settle(proxy, 30)
    await proxy.proxy.stop()  # the last evidence handed over
    out = json.loads(strangler("report", "summary", "--format", "json", "--config", str(proxy.path)).stdout)
    [route] = out["routes"]
    legacy_side, new_side = route["sides"]["legacy"], route["sides"]["new"]
    assert (legacy_side["answers"], legacy_side["status_classes"]["2xx"], legacy_side["errors"]) == (30, 30, 0)
    assert (new_side["answers"], new_side["status_classes"]["5xx"], new_side["error_rate"]) == (30, 10, 0.3333)
    assert sum(b["count"] for b in new_side["histogram"]) == 30
    assert new_side["p50_ms"] <= new_side["p95_ms"] <= new_side["p99_ms"]
    assert route["sides"]["latency_floor_ms"] == 10.0
    text = strangler("report", "summary", "--config", str(proxy.path)).stdout.splitlines()
    rows = [line.split() for line in text if line.startswith("items  ")]
    assert rows[-2][:10] == ["items", "legacy", "30", "0.0%", "0", "30", "0", "0", "0", "0"]
    assert rows[-1][:10] == ["items", "new", "30", "33.3%", "0", "20", "0", "0", "10", "0"]
    [ratio] = [line for line in text if line.startswith("items: p99 new ")]
    if route["sides"]["floored"]:
        assert ratio.endswith("; a p99 under 10 ms counts as 10 ms in the ratio, as the gates count it)")
    page = strangler("report", "html", "--config", str(proxy.path)).stdout
    row = page.split('<tr data-side="new">', 1)[1].split("</tr>", 1)[0]
    cells = [cell.split("</td>")[0] for cell in row.split("<td>")[1:]]
    assert cells[:9] == ["new", "30", "33.3%", "0", "20", "0", "0", "10", "0"]
    assert f"{new_side['p99_ms']:.2f} ms" in cells[-1] and ratio.split(": ", 1)[1] in page
