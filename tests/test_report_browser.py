"""The admin /reports page in a real headless Chromium: what a reviewer sees, and that upstream bodies stay text."""

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
from playwright.async_api import Locator, Page, async_playwright

from tests.helpers import route
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
    assert "last hour 12.5% (1 of 8 diverged)" in await orders.locator("figure.trend figcaption").inner_text()
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
