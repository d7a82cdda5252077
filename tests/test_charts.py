"""The console's finer charts as values: one column per bucket, the plan's moves where they happened, open
divergences (not accepted ones) as the height, sparklines that fit their box; and the SVG parses."""

import time
import xml.etree.ElementTree as ElementTree

from proxy.model import ReportsSpec
from reports import charts, html, view
from reports.series import FORTNIGHT, LAST_HOUR, Point, SignatureTrend, Step
from reports.store import StoreSink
from tests.test_report_html import divergence, plant


def points(span, open_at: dict[int, int], now: float = 1_800_000_000.0) -> list[Point]:
    return [Point(at, 10, open_at.get(n, 0) + 1, open_at.get(n, 0)) for n, at in enumerate(span.starts(now))]


def test_a_zoom_has_a_column_per_bucket_scaled_to_the_worst_and_marks_where_the_plan_moved():
    found = points(LAST_HOUR, {59: 5, 30: 1})
    move = Step(found[30].at + 30, "advance", 0, 5, "gates held", "gates")
    [minute, fortnight] = charts.zooms({"last hour, per minute": found,
                                        "last 14 days, per hour": points(FORTNIGHT, {})},
                                       {"last hour, per minute": [move], "last 14 days, per hour": []})
    assert len(minute.columns) == 60 and len(fortnight.columns) == 14 * 24
    assert minute.top == "50%"  # the worst minute: 5 of 10 open
    assert minute.columns[59].height > minute.columns[30].height > minute.columns[0].height
    assert minute.columns[0].kind == "ok" and "1 more accepted" in minute.columns[0].title  # open 0, accepted 1
    [mark] = minute.marks
    assert minute.columns[30].x < mark.x < minute.columns[31].x and "advance 0% → 5%" in mark.title
    assert minute.ticks[0][1] == "60 min ago" and fortnight.ticks[0][1] == "14 d ago"


def test_a_sparkline_fits_its_box_and_is_empty_without_counts():
    trend = SignatureTrend("s", 0, 0, (0, 2, 4, 0))
    xs, ys = zip(*(map(float, p.split(",")) for p in charts.sparkline(trend).split()), strict=True)
    assert xs[0] == 0 and xs[-1] == 96 and min(ys) == 1.0 and max(ys) == 16.0
    assert charts.sparkline(SignatureTrend("s", 0, 0, (0, 0))) == "" and charts.sparkline(None) == ""


def test_the_charts_are_well_formed_svg_in_the_page(tmp_path):
    database = plant(tmp_path / "d.db", "orders", 0, [divergence()])
    sink = StoreSink(ReportsSpec(str(database)))
    sink.start()
    for n in range(8):
        sink.count("orders", n == 0, time.time(), "/api/orders/{id}", "sig-price" if n == 0 else "")
    sink.close()
    page = html.render([str(database)])
    figures = page.split('<figure class="zoom"')[1:]
    assert len(figures) == 2
    for figure in figures:
        svg = "<svg" + figure.split("<svg", 1)[1].split("</svg>", 1)[0] + "</svg>"
        root = ElementTree.fromstring(svg.replace('xmlns="http://www.w3.org/2000/svg" ', ""))
        assert root.find("title") is not None and len(root.findall("rect")) in (60, 14 * 24)
    assert '<svg class="spark"' in page and 'data-endpoint="/api/orders/{id}"' in page
    assert view.page([str(tmp_path / "d.db")]).routes[0].endpoints[0].compared == 8


def test_the_latency_histogram_puts_both_sides_on_one_axis_as_shares_of_their_answers():
    pairs = charts.histogram([(0.001, 10, 0), (0.0012, 0, 2), (0.00144, 10, 2)])
    assert len(pairs) == 3 and pairs[0].x < pairs[1].x < pairs[2].x
    bottom = charts.TOP + charts.HEIGHT
    assert pairs[0].legacy_y == pairs[1].new_y == pairs[2].new_y == charts.TOP  # 50% of each side: the tallest
    assert pairs[0].new_y == pairs[1].legacy_y == bottom  # no answers there
    assert "legacy 10, new 2" in pairs[2].title and charts.histogram([]) == []
