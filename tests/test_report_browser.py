"""The admin /reports page in a real headless Chromium: what a reviewer sees, and that upstream bodies stay text."""

import asyncio
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Locator, Page, async_playwright

from reports.db import Where
from reports.plans import StorePlans
from reports.sides import sides
from tests.helpers import eventually, route
from tests.servers import CHROMIUM, install_chromium
from tests.test_report_html import PLANTED, divergence, plant

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TRANSPARENT = ("rgba(0, 0, 0, 0)", "transparent")

# Chromium is an outside program (`-m "not external"` leaves these out), installed on first use: minutes, once.
pytestmark = [pytest.mark.external, pytest.mark.timeout(600)]


@asynccontextmanager
async def chromium_page() -> AsyncIterator[Page]:
    """A page in Debian's Chromium (installed on first use: this test never skips)."""
    await asyncio.to_thread(install_chromium)  # Debian's, installed on first use if missing
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 1000})
            yield await context.new_page()
            await context.close()
        finally:
            await browser.close()


async def test_a_reviewer_sees_the_route_its_paths_and_the_bodies_side_by_side(make_upstream, start_proxy, tmp_path):
    database = plant(tmp_path / "d.db", "orders", 8, [divergence()])
    proxy = await start_proxy({"legacy": (await make_upstream()).url}, [route("orders")],
                              reports={"database": str(database)})
    async with chromium_page() as page:
        dialogs = []
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        response = await page.goto(proxy.admin_url + "/reports")
        assert response is not None and response.status == 200
        orders = page.locator('section.route[data-route="orders"]')
        await sees_the_route(orders)
        example = orders.locator("article.example").first
        await sees_the_bodies_side_by_side(example)
        await sees_upstream_markup_as_text(page, example)
        assert dialogs == []
        await page.screenshot(path=str(tmp_path / "report.png"), full_page=True)


async def sees_the_route(orders: Locator) -> None:
    await orders.get_by_role("heading", name="Route orders").wait_for()
    rate = orders.locator('[data-field="rate"]')
    assert await rate.is_visible() and await rate.inner_text() == "12.5%"
    caption = await orders.locator("figure.trend figcaption").first.inner_text()
    assert "1 of 8 comparisons open (12.5%)" in caption
    assert await orders.locator("table.signatures").get_by_text("$.price", exact=True).is_visible()


async def sees_the_bodies_side_by_side(example: Locator) -> None:
    legacy_head, new_head = await box(example.locator("th.body-legacy")), await box(example.locator("th.body-new"))
    assert legacy_head["x"] + legacy_head["width"] <= new_head["x"] + 1  # legacy left, new right
    assert abs(legacy_head["y"] - new_head["y"]) < 2 and legacy_head["width"] > 300
    changed = example.locator("tr.differs td.code.legacy")
    assert await changed.count() == 1 and '"price": 10' in await changed.inner_text()
    legacy_cell, new_cell = await box(changed), await box(example.locator("tr.differs td.code.new"))
    assert legacy_cell["x"] < new_cell["x"] and abs(legacy_cell["y"] - new_cell["y"]) < 2
    equal = example.locator("tr:not(.differs) td.code.legacy", has_text='"id": 7')
    assert "hl" in (await changed.get_attribute("class")).split()
    assert "hl" not in (await equal.get_attribute("class")).split()
    assert await background(changed) not in TRANSPARENT and await background(equal) in TRANSPARENT
    assert await example.locator("tr.differs td.sign.legacy").inner_text() == "~"  # not colour alone


async def sees_upstream_markup_as_text(page: Page, example: Locator) -> None:
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    planted = example.locator("td.code.legacy", has_text="<script>window.__pwned = 1</script>")
    assert await planted.is_visible()
    assert PLANTED.replace('"', '\\"') in await planted.inner_text()  # as JSON writes it
    assert await page.locator("script, img").count() == 0


async def box(locator: Locator) -> dict:
    found = await locator.bounding_box()
    assert found is not None, f"{locator} is not laid out"
    return found


async def background(locator: Locator) -> str:
    return await locator.evaluate("cell => getComputedStyle(cell).backgroundColor")


async def test_the_charts_render_under_the_csp_and_an_ignored_field_reads_as_ignored(make_upstream, start_proxy,
                                                                                     tmp_path):
    """The demo's case through real traffic: `$.updated_at` ignored by the route, `$.status` really changed."""
    def answering(status: str):
        async def answer(request: web.BaseRequest) -> web.Response:
            return web.json_response({"id": 7, "status": status, "updated_at": f"{time.time():.6f}"})
        return answer
    legacy, new = await make_upstream("legacy", answering("paid")), await make_upstream("new", answering("shipped"))
    database = tmp_path / "d.db"
    proxy = await start_proxy(
        {"legacy": legacy.url, "new": new.url},
        [route("orders", "/orders", new="new", parallel_run={"enabled": True},
               compare={"ignore_paths": ["$.updated_at"]}, rollout_plan={"steps": [0, 50, 100], "check_interval": 60})],
        reports={"database": str(database)})
    async with aiohttp.ClientSession() as http:
        for n in range(8):
            async with http.get(f"{proxy.url}/orders/{n}") as response:
                assert response.status == 200
    registry = proxy.proxy.metrics.registry
    await eventually(lambda: registry.get_sample_value(
        "strangler_comparisons_total", {"route": "orders", "result": "diverged"}) == 8, timeout=10)
    proxy.proxy.sink.flush()
    answered = [(8, 8)]  # each side's answers, handed to the store once a second
    await eventually(lambda: [(s.legacy.answers, s.new.answers) for s in sides([Where(str(database))])] == answered,
                     timeout=10)
    plans = StorePlans(Where(str(database)))
    plans.move(plans.begin("orders", 0, time.time()), "advance", 50, "every advance gate holds", "gates", time.time())
    plans.close()
    async with chromium_page() as page:
        response = await page.goto(proxy.admin_url + "/reports")
        assert response is not None and "default-src 'none'" in response.headers["content-security-policy"]
        orders = page.locator('section.route[data-route="orders"]')
        await sees_the_charts_drawn(orders)
        await sees_the_ignored_field_as_ignored(orders.locator("article.example").first)
        await page.screenshot(path=str(tmp_path / "charts.png"), full_page=True)


async def sees_the_charts_drawn(orders: Locator) -> None:
    kinds = await orders.locator("svg.chart").evaluate_all("all => all.map(s => s.dataset.chart)")
    assert kinds.count("trend") == 2 and {"mix", "histogram", "spark"} <= set(kinds)
    for chart in await orders.locator("svg.chart").all():
        drawn = await box(chart)
        assert drawn["width"] > 0 and drawn["height"] > 0
    minute = orders.locator("figure.trend").first
    bar = minute.locator("rect.open").last  # 8 of 8 open this minute
    assert (await box(bar))["height"] > 10
    assert await bar.evaluate("r => getComputedStyle(r).fill") == "rgb(229, 83, 75)"  # the page's style applies
    assert await minute.locator("g.rule text", has_text="0% → 50%").is_visible()
    assert "advance 0% → 50%, every advance gate holds" in await minute.locator("g.rule title").last.text_content()
    assert await orders.locator("figure.latency rect.series-0").count() >= 1
    assert await orders.locator("figure.latency rect.series-1").count() >= 1
    assert await orders.locator("figure.mix g.part title").first.text_content() == "legacy 2xx: 8 of 8 (100.0%)"


async def sees_the_ignored_field_as_ignored(example: Locator) -> None:
    ignored = example.locator('td.code[data-excused="ignored"]')
    assert await ignored.count() == 2 and "updated_at" in await ignored.first.inner_text()
    assert await example.locator("td.sign.ignored").first.inner_text() == "≈"
    assert await example.locator("td.sign.ignored").first.get_attribute("title") == "ignored: not compared"
    changed = example.locator("td.code.changed")
    assert await changed.count() == 2 and "status" in await changed.first.inner_text()
    assert await example.locator("td.changed", has_text="updated_at").count() == 0  # never drawn as a change
    assert await background(ignored.first) != await background(changed.first)
    assert await example.locator(".legend .ignored").is_visible()
