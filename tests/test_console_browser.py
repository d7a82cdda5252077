"""A reviewer's whole job in the console, in a real headless Chromium: find the worst route, open its worst
signature, read the two bodies (the ignored field marked as ignored), accept the signature with a reason,
see the headline drop and the timeline record the act; and the same act, without the token, refused."""

import os
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.helpers import eventually, route
from tests.test_report_browser import chromium_page

pytestmark = [pytest.mark.external, pytest.mark.timeout(600)]
TOKEN = "reviewer-token-1"
SCREENSHOT = os.environ.get("STRANGLER_CONSOLE_SCREENSHOT")  # docs/console.png is made this way


def answering(status: str, diverging_ids: set[int] | None = None):
    async def answer(request: web.BaseRequest) -> web.Response:
        n = int(request.path.rsplit("/", 1)[1])
        shown = status if diverging_ids is None or n in diverging_ids else "paid"
        return web.json_response({"id": n, "status": shown, "updated_at": f"{time.time():.6f}", "total": 42})
    return answer


@pytest.fixture
async def proxy(make_upstream, start_proxy, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_ADMIN_TOKEN", TOKEN)
    legacy = await make_upstream("legacy", answering("paid"))
    new = await make_upstream("new", answering("shipped"))
    catalog = await make_upstream("catalog", answering("shipped", {3}))
    compare = {"ignore_paths": ["$.updated_at"]}
    running = await start_proxy(
        {"legacy": legacy.url, "new": new.url, "catalog": catalog.url},
        [route("orders", "/orders", new="new", parallel_run={"enabled": True}, compare=compare,
               rollout_plan={"steps": [0, 50, 100], "check_interval": 60}),
         route("catalog", "/catalog", new="catalog", parallel_run={"enabled": True}, compare=compare),
         route("all")],
        admin={"listen": "127.0.0.1:0", "token_env": "TEST_ADMIN_TOKEN"},
        reports={"database": str(tmp_path / "d.db")})
    async with aiohttp.ClientSession() as http:
        for n in range(10):
            for path in (f"/orders/{n}", f"/catalog/{n}"):
                async with http.get(running.url + path) as response:
                    assert response.status == 200
    registry = running.proxy.metrics.registry
    await eventually(lambda: sum(registry.get_sample_value("strangler_comparisons_total", {"route": r, "result": x})
                                 for r in ("orders", "catalog") for x in ("matched", "diverged")) == 20, timeout=10)
    running.proxy.sink.flush()
    return running


async def test_a_reviewer_accepts_the_worst_signature_and_a_stranger_cannot(proxy, tmp_path):
    async with chromium_page() as page:
        await page.goto(proxy.admin_url + "/reports")
        assert "/login" in page.url  # not signed in: the sign-in page, not the console
        await page.get_by_label("admin token").fill(TOKEN)
        await page.get_by_role("button", name="sign in").click()
        await page.wait_for_url("**/reports")

        worst = page.locator("table.overview tbody tr").first
        assert (await worst.locator("td").first.inner_text()).strip() == "orders"
        assert (await worst.locator("td.num").last.inner_text()).strip() == "100.0%"
        await worst.get_by_role("link").click()
        orders = page.locator('section.route[data-route="orders"]')
        signature = orders.locator("table.signatures tbody tr").first
        assert "$.status" in await signature.inner_text()
        await signature.get_by_role("link", name="example").click()

        example = orders.locator("article.example").first
        ignored = example.locator('td.code.legacy[data-excused="ignored"]')
        assert await ignored.count() == 1 and "updated_at" in await ignored.inner_text()
        changed = example.locator("td.code.legacy.changed")
        assert await changed.count() == 1 and '"status": "paid"' in await changed.inner_text()
        assert await example.locator('td.sign.legacy.ignored').inner_text() == "≈"

        form = signature.locator("form.act")
        fields = {name: await form.locator(f'input[name="{name}"]').get_attribute("value")
                  for name in ("action", "route", "signature", "form")}
        await form.get_by_label("reason").fill("shipped is the new word for paid, agreed with ops")
        await form.get_by_label("by").fill("ana")
        await form.get_by_role("button", name="accept").click()  # no expiry yet: the browser keeps the form
        assert "/reports" in page.url and await form.get_by_label("until").evaluate("e => !e.validity.valid")
        await form.get_by_label("until").fill(time.strftime("%Y-%m-%d", time.gmtime(time.time() + 30 * 86400)))
        await form.get_by_role("button", name="accept").click()
        await page.wait_for_url("**/reports?route=orders*")
        assert "accepted" in await page.get_by_role("status").inner_text()
        orders = page.locator('section.route[data-route="orders"]')
        assert await orders.locator('[data-field="rate"]').inner_text() == "0.0%"
        assert await orders.locator('[data-field="accepted"]').inner_text() == "10"
        act = orders.locator('table.timeline tr[data-action="accept"]')
        assert "ana" in await act.inner_text() and "agreed with ops" in await act.inner_text()
        chart = await orders.locator("figure.trend svg").first.bounding_box()
        assert chart is not None and chart["width"] > 200 and chart["height"] > 40  # drawn, under the CSP
        latency = await orders.locator("figure.latency svg").bounding_box()
        assert latency is not None and latency["height"] > 40  # both sides' histogram, one axis
        assert await orders.locator("figure.latency rect.series-1").count() >= 1
        endpoint = orders.locator('tr[data-endpoint="/orders/{id}"]')
        assert [c.strip() for c in await endpoint.locator("td.num").all_inner_texts()] == ["10", "0", "10", "0.0%"]
        await page.screenshot(path=SCREENSHOT or str(tmp_path / "console.png"), full_page=False)

        stranger = await page.context.browser.new_context()  # no session: the same form is refused
        refused = await stranger.request.post(proxy.admin_url + "/reports/actions",
                                              form={**fields, "reason": "sneaky", "by": "mallory"},
                                              headers={"Origin": proxy.admin_url}, max_redirects=0)
        assert refused.status == 401
        await stranger.close()

        await page.get_by_role("button", name="sign out").click()
        await page.wait_for_url("**/login")
        await page.goto(proxy.admin_url + "/reports")
        assert "/login" in page.url  # signed out: the console is closed again
    assert Path(SCREENSHOT or tmp_path / "console.png").stat().st_size > 10_000


async def test_the_console_is_read_by_keyboard_and_without_script(proxy):
    """The filters are a plain GET form: they work with JavaScript off, as the CSP guarantees anyway."""
    async with chromium_page() as page:
        await page.goto(proxy.admin_url + "/login")
        await page.get_by_label("admin token").fill(TOKEN)
        await page.keyboard.press("Enter")
        await page.wait_for_url("**/reports")
        await page.get_by_label("route").select_option("catalog")
        await page.get_by_role("button", name="show").click()
        await page.wait_for_url("**/reports?route=catalog*")
        routes = await page.locator("section.route").evaluate_all("all => all.map(s => s.dataset.route)")
        assert routes == ["catalog"]
