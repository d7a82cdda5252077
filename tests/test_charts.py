"""The charts as SVG (reports/charts.py) and the values the report feeds them (reports/figures.py): each parses
as XML, every text is escaped, a bar per bucket with a title, a labelled rule where the plan moved, two latency
series on one logarithmic axis, and a status mix whose parts add up to the row."""

import math
import time
import xml.etree.ElementTree as ElementTree

import pytest

from proxy.model import ReportsSpec, Side
from proxy.model.evidence import STATUS_CLASSES
from reports import charts, figures, html, view
from reports.charts import Bucket, Histogram, Mix, Rule, Series, Spark, Trend
from reports.series import FORTNIGHT, LAST_HOUR, Point, SignatureTrend, Step
from reports.sides import RouteSides, SideFigures
from reports.store import StoreSink
from tests.test_report_html import divergence, plant

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script> & \'q\''


def parse(markup: str) -> ElementTree.Element:
    root = ElementTree.fromstring(str(markup))
    assert root.tag == SVG + "svg" and root.find(SVG + "title") is not None
    return root


def groups(root: ElementTree.Element, kind: str) -> list[ElementTree.Element]:
    return [g for g in root.iter(SVG + "g") if g.get("class") == kind]


def rect(group: ElementTree.Element, kind: str) -> ElementTree.Element | None:
    return next((r for r in group.iter(SVG + "rect") if r.get("class") == kind), None)


def number(element: ElementTree.Element, name: str) -> float:
    return float(element.get(name))


def test_a_trend_draws_a_titled_bar_per_bucket_with_its_open_share_on_it():
    buckets = (Bucket("a", 0, 0), Bucket("b", 10, 0), Bucket("c", 20, 5, 5), Bucket("d", 10, 10))
    root = parse(charts.trend(Trend("last hour, per minute", buckets)))
    bars = groups(root, "bucket")
    assert [bar.find(SVG + "title").text for bar in bars] == [
        "a: no comparisons", "b: 0 of 10 compared open (0.0%), 0 more accepted",
        "c: 5 of 20 compared open (25.0%), 5 more accepted", "d: 10 of 10 compared open (100.0%), 0 more accepted"]
    heights = [number(rect(bar, "compared"), "height") for bar in bars[1:]]
    assert heights[1] == pytest.approx(2 * heights[0]) == pytest.approx(2 * heights[2])  # compared, to the most
    assert number(rect(bars[2], "open"), "height") == pytest.approx(heights[1] / 4)
    assert number(rect(bars[2], "accepted"), "height") == pytest.approx(heights[1] / 4)
    assert number(rect(bars[3], "open"), "height") == pytest.approx(heights[2])  # all of it open
    assert rect(bars[1], "open") is None and rect(bars[0], "none") is not None
    assert "15 of 40 comparisons open (37.5%), 5 more accepted" in root.get("aria-label")


def test_a_trend_marks_each_plan_move_with_a_labelled_rule_where_it_happened():
    buckets = tuple(Bucket(str(n), 4, 1) for n in range(10))
    rules = (Rule(2.5, "0% → 5%", "advance, gates held"), Rule(7.0, "hold at 5%", "hold: looking"))
    root = parse(charts.trend(Trend("t", buckets, rules, ((0, "10 min ago"), (10, "now")))))
    bars = groups(root, "bucket")
    marks = groups(root, "rule")
    assert [m.find(SVG + "text").text for m in marks] == ["0% → 5%", "hold at 5%"]
    assert [m.find(SVG + "title").text for m in marks] == ["advance, gates held", "hold: looking"]
    x = [number(m.find(SVG + "line"), "x1") for m in marks]
    starts = [number(rect(bar, "compared"), "x") for bar in bars]
    assert starts[2] < x[0] < starts[3] and x[1] == pytest.approx(starts[7])
    texts = [t.text for t in root.iter(SVG + "text")]
    assert "10 min ago" in texts and "now" in texts


def test_every_text_in_a_chart_is_escaped_and_reads_back_as_written():
    trend = charts.trend(Trend(HOSTILE, (Bucket(HOSTILE, 1, 1),), (Rule(0.5, HOSTILE, HOSTILE),), ((0, HOSTILE),)))
    mix = charts.mix(Mix(HOSTILE, ((HOSTILE, ((HOSTILE, 3),)),)))
    histogram = charts.histogram(Histogram(HOSTILE, (0.001, 0.002), (Series(HOSTILE, (1, 2)),)))
    spark = charts.sparkline(Spark(HOSTILE, (1, 2)))
    for markup in (trend, mix, histogram, spark):
        assert "<script" not in markup and 'alert("x")' not in markup
        root = parse(markup)
        assert root.find(SVG + "title").text.startswith(HOSTILE)
        assert root.get("aria-label").startswith(HOSTILE)
    assert HOSTILE in [t.text for t in parse(trend).iter(SVG + "text")]
    assert 'class="part-script-alert-x-script-q"' in mix  # a category's class keeps letters and digits alone


def test_a_sparkline_fits_its_box_and_is_nothing_without_counts():
    root = parse(charts.sparkline(Spark("per hour", (0, 2, 4, 0))))
    points = [tuple(map(float, p.split(","))) for p in root.find(SVG + "polyline").get("points").split()]
    xs, ys = zip(*points, strict=True)
    assert xs[0] == 0 and xs[-1] == 96 and min(ys) == 1.0 and max(ys) == 16.0
    assert charts.sparkline(Spark("s", (0, 0))) == "" and charts.draw(None) == ""
    assert figures.sparkline(SignatureTrend("s", 0, 0, (0, 0))) is None and figures.sparkline(None) is None


def test_the_two_latency_series_share_one_logarithmic_axis():
    bounds = tuple(0.001 * 1.2 ** n for n in range(20))  # the store's bins: 20% apart
    legacy = tuple(10 if n < 5 else 0 for n in range(20))
    new = tuple(5 if n >= 15 else 0 for n in range(20))
    root = parse(charts.histogram(Histogram("latency", bounds, (Series("legacy", legacy), Series("new", new)),
                                            ((0.010, "10 ms floor"), (9.0, "out of range")))))
    bins = groups(root, "bin")
    assert len(bins) == 40  # a bar per bin and side
    legacy_x = [number(rect(b, "series-0"), "x") for b in bins[0::2]]
    new_x = [number(rect(b, "series-1"), "x") for b in bins[1::2]]
    widths = [b - a for a, b in zip(legacy_x, legacy_x[1:], strict=False)]
    assert max(widths) - min(widths) < 0.02  # bins 20% apart are equally wide: the axis is logarithmic
    assert all(a < b < c for a, b, c in zip(legacy_x, new_x, legacy_x[1:], strict=False))  # side by side, one axis
    heights = [number(rect(b, "series-0"), "height") for b in bins[0::2]]
    assert heights[0] == pytest.approx(heights[4]) and heights[5] == 0  # 20% of legacy's answers each
    assert number(rect(bins[31], "series-1"), "height") == pytest.approx(heights[0])  # 20% of new's
    assert bins[1].find(SVG + "title").text.startswith("new: 0 of 25 (0.0%) in 0.833 ms to 1 ms")
    [floor] = groups(root, "rule")  # a mark outside the bins is left out
    ticks = {t.text: number(t, "x") for t in root.iter(SVG + "text") if t.text.endswith(" ms")}
    assert set(ticks) >= {"1 ms", "10 ms"} and number(floor.find(SVG + "line"), "x1") == pytest.approx(ticks["10 ms"])
    one_to_two = ticks["2 ms"] - ticks["1 ms"]
    assert ticks["20 ms"] - ticks["10 ms"] == pytest.approx(one_to_two) and ticks["5 ms"] > ticks["2 ms"]
    assert math.isclose(ticks["10 ms"] - ticks["1 ms"], one_to_two * math.log(10) / math.log(2), rel_tol=1e-3)
    assert [t.text for t in root.iter(SVG + "text")][-2:] == ["legacy", "new"]  # the key


def test_a_status_mix_splits_each_side_into_its_classes():
    root = parse(charts.mix(Mix("mix", (("legacy", (("2xx", 30), ("5xx", 10))), ("new", (("2xx", 0),))))))
    parts = groups(root, "part")
    ok, failed, nothing = parts
    assert number(rect(ok, "part-2xx"), "width") == pytest.approx(3 * number(rect(failed, "part-5xx"), "width"))
    assert ok.find(SVG + "title").text == "legacy 2xx: 30 of 40 (75.0%)"
    assert nothing.find(SVG + "title").text == "new: no answers" and rect(nothing, "none") is not None


def test_the_report_feeds_the_charts_the_stores_series_and_sides():
    now = 1_800_000_000.0
    points = [Point(at, 10, 3, 1) for at in LAST_HOUR.starts(now)]
    move = Step(points[30].at + 30, "advance", 0, 5, "gates held", "gates")
    chart = figures.trend("last hour, per minute", LAST_HOUR, points, [move], 15, (60, "min"))
    assert len(chart.buckets) == 60 and chart.buckets[0] == Bucket(chart.buckets[0].label, 10, 1, 2)
    assert chart.rules[0].at == 30.5 and chart.rules[0].label == "0% → 5%"
    assert "advance 0% → 5%, gates held (by gates)" in chart.rules[0].title
    assert chart.ticks[0] == (0, "60 min ago") and chart.ticks[-1] == (60, "now")
    hourly = figures.trend("d", FORTNIGHT, [Point(at, 0, 0, 0) for at in FORTNIGHT.starts(now)], [], 72, (86400, "d"))
    assert hourly.ticks[0] == (0, "14 d ago") and len(hourly.buckets) == 14 * 24
    legacy = SideFigures(Side.LEGACY, 3, 1, tuple((c, 1 if str(c) in ("2xx", "5xx", "none") else 0)
                                                   for c in STATUS_CLASSES), ((0, 2), (3, 1)))
    both = RouteSides("orders", legacy, SideFigures(Side.NEW, 1, 0, bins=((2, 1),)))
    latency = figures.latency(both)
    assert [s.counts for s in latency.series] == [(2, 0, 0, 1), (0, 0, 1, 0)]
    assert figures.status_mix(both).rows[0] == ("legacy", tuple((str(c), n) for c, n in legacy.classes))
    assert figures.latency(None) is None and figures.status_mix(None) is None


def test_the_charts_in_the_page_are_well_formed_svg(tmp_path):
    database = plant(tmp_path / "d.db", "orders", 0, [divergence()])
    sink = StoreSink(ReportsSpec(str(database)))
    sink.start()
    for n in range(8):
        sink.count("orders", n == 0, time.time(), "/api/orders/{id}", "sig-price" if n == 0 else "")
    sink.close()
    page = html.render([str(database)])
    drawn = [parse("<svg" + part.split("</svg>", 1)[0] + "</svg>") for part in page.split("<svg")[1:]]
    trends = [root for root in drawn if root.get("data-chart") == "trend"]
    assert [len(groups(root, "bucket")) for root in trends] == [60, 14 * 24]
    assert [root for root in drawn if root.get("data-chart") == "spark"]
    assert "1 of 8 comparisons open (12.5%)" in trends[0].get("aria-label")
    assert 'data-endpoint="/api/orders/{id}"' in page
    assert view.page([str(tmp_path / "d.db")]).routes[0].endpoints[0].compared == 8


def test_a_few_divergences_among_many_comparisons_stay_visible_within_their_bar():
    root = parse(charts.trend(Trend("t", (Bucket("a", 1000, 1, 1), Bucket("b", 1, 1, 0)))))
    many, one = groups(root, "bucket")
    assert number(rect(many, "open"), "height") == 1.5 and number(rect(many, "accepted"), "height") == 1.5
    assert number(rect(one, "open"), "height") == number(rect(one, "compared"), "height")
    tiny = parse(charts.trend(Trend("t", (Bucket("a", 1000, 0, 0), Bucket("b", 2, 1, 1)))))
    bar = groups(tiny, "bucket")[1]  # a bar of 1 unit: open fills it, nothing is drawn above it
    assert number(rect(bar, "open"), "height") == number(rect(bar, "compared"), "height") == 1.0
    assert rect(bar, "accepted") is None
