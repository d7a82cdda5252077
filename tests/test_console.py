"""The review console on the admin listener, through real sockets: signing in, acting as the CLI does, and
every forged, replayed or wrong form refused with nothing changed."""

import re
import time

import aiohttp
import pytest
from aiohttp import web

from proxy.admin import console as console_guard
from reports import accepted, query
from reports.schema import open_for_reading
from tests.helpers import eventually, route

TOKEN = "s3cret-admin-token"
HTML = {"Accept": "text/html"}


async def legacy_answer(request: web.BaseRequest) -> web.Response:
    return web.json_response({"id": 7, "status": "paid", "updated_at": time.time()})


async def new_answer(request: web.BaseRequest) -> web.Response:
    return web.json_response({"id": 7, "status": "shipped", "updated_at": time.time()})


@pytest.fixture
async def console(make_upstream, start_proxy, tmp_path, monkeypatch):
    """A proxy with a diverging parallel run on `orders` (a plan on it) and an admin token; 10 comparisons made."""
    monkeypatch.setenv("TEST_ADMIN_TOKEN", TOKEN)
    legacy, new = await make_upstream("legacy", legacy_answer), await make_upstream("new", new_answer)
    database = str(tmp_path / "d.db")
    proxy = await start_proxy(
        {"legacy": legacy.url, "new": new.url},
        [route("orders", "/orders", new="new", parallel_run={"enabled": True},
               compare={"ignore_paths": ["$.updated_at"]},
               rollout_plan={"steps": [0, 50, 100], "check_interval": 60}), route("all")],
        admin={"listen": "127.0.0.1:0", "token_env": "TEST_ADMIN_TOKEN"}, reports={"database": database})
    async with aiohttp.ClientSession() as http:
        for n in range(10):
            async with http.get(f"{proxy.url}/orders/{n}") as response:
                assert response.status == 200
    await eventually(lambda: proxy.proxy.metrics.registry.get_sample_value(
        "strangler_comparisons_total", {"route": "orders", "result": "diverged"}) == 10, timeout=10)
    proxy.proxy.sink.flush()
    return proxy, database


async def signed_in(proxy) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # keeps cookies for 127.0.0.1
    async with http.post(proxy.admin_url + "/login", data={"token": TOKEN, "next": "/reports"},
                         headers={"Origin": proxy.admin_url}, allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/reports"
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    return http


def accept_form(page: str) -> dict[str, str]:
    form = page.split('<input type="hidden" name="action" value="accept">', 1)[1].split("</form>", 1)[0]
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))
    before = page.split('<input type="hidden" name="action" value="accept">', 1)[0].rsplit("<form", 1)[1]
    fields |= dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', before))
    return {**fields, "action": "accept", "reason": "status wording changed on purpose", "by": "ana"}


def acceptances(database: str) -> dict:
    db = open_for_reading(database)
    try:
        return accepted.current(db, time.time())
    finally:
        db.close()


async def test_a_browser_signs_in_accepts_once_and_the_act_is_recorded(console):
    proxy, database = console
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(proxy.admin_url + "/reports", headers=HTML, allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"].startswith("/login?next=")
        async with anonymous.get(proxy.admin_url + "/reports") as response:
            assert response.status == 401  # an API client: JSON, not a page
    http = await signed_in(proxy)
    async with http:
        async with http.get(proxy.admin_url + "/reports", headers=HTML) as response:
            page = await response.text()
        form = accept_form(page)
        post = {"headers": {**HTML, "Origin": proxy.admin_url}, "allow_redirects": False}
        async with http.post(proxy.admin_url + "/reports/actions", data=form, **post) as response:
            assert response.status == 303
            assert "done=accepted" in response.headers["Location"]
        [(signature, found)] = acceptances(database).items()
        assert (found.reason, found.by) == ("status wording changed on purpose", "ana")
        async with http.post(proxy.admin_url + "/reports/actions", data=form, **post) as response:
            assert response.status == 403 and "replayed" in await response.text()
        async with http.get(proxy.admin_url + "/reports?route=orders", headers=HTML) as response:
            page = await response.text()
    assert re.search(r'data-field="rate">0.0%<', page)  # the headline counts as the gates do
    timeline = page.split('class="timeline"', 1)[1].split("</table>", 1)[0]
    assert 'data-action="accept"' in timeline and "ana" in timeline and signature in timeline
    [summary] = query.summary([database])
    assert (summary.open, summary.accepted) == (0, 10)


@pytest.mark.parametrize("change, status, why", [
    ({"form": "0.1.forged"}, 403, "forged"),
    ({"reason": "  "}, 400, "reason"),
    ({"expires": "2020-01-01"}, 400, "in the past"),
    ({"by": ""}, 400, "who you are"),
])
async def test_a_bad_form_is_refused_and_changes_nothing(console, change, status, why):
    proxy, database = console
    async with await signed_in(proxy) as http:
        async with http.get(proxy.admin_url + "/reports", headers=HTML) as response:
            form = accept_form(await response.text()) | change
        async with http.post(proxy.admin_url + "/reports/actions", data=form,
                             headers={"Origin": proxy.admin_url}) as response:
            assert response.status == status
            assert why in (await response.json())["detail"]
    assert acceptances(database) == {}


async def test_a_form_posted_from_another_site_or_without_a_session_is_refused(console):
    proxy, database = console
    async with await signed_in(proxy) as http:
        async with http.get(proxy.admin_url + "/reports", headers=HTML) as response:
            form = accept_form(await response.text())
        async with http.post(proxy.admin_url + "/reports/actions", data=form,
                             headers={"Origin": "https://evil.example"}) as response:
            assert (response.status, (await response.json())["error"]) == (403, "cross_site")
    async with aiohttp.ClientSession() as stranger:  # the same form, but no session: no way in
        async with stranger.post(proxy.admin_url + "/reports/actions", data=form,
                                 headers={"Origin": proxy.admin_url}) as response:
            assert response.status == 401
    assert acceptances(database) == {}


async def test_an_unknown_signature_is_a_404_and_a_script_acts_with_the_bearer_token(console):
    proxy, database = console
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as script:
        act = {"action": "accept", "route": "orders", "signature": "ffffffffffff", "reason": "r", "by": "ci"}
        async with script.post(proxy.admin_url + "/reports/actions", data=act, headers=bearer) as response:
            assert response.status == 404
        act = {"action": "hold", "route": "orders", "reason": "reviewing the status wording", "by": "ci"}
        async with script.post(proxy.admin_url + "/reports/actions", data=act, headers=bearer) as response:
            assert response.status == 200 and "(held)" in (await response.json())["done"]
    event = query.plan_timeline([database], "orders").events[-1]  # after the plan's own start
    assert (event["action"], event["by"], event["reason"]) == ("hold", "console:ci", "reviewing the status wording")


async def test_without_a_token_the_console_reads_and_says_how_to_act(make_upstream, start_proxy, tmp_path):
    proxy = await start_proxy({"legacy": (await make_upstream()).url}, [route("all")],
                              reports={"database": str(tmp_path / "d.db")})
    async with aiohttp.ClientSession() as http:
        async with http.get(proxy.admin_url + "/") as response:
            paths = [e["path"] for e in (await response.json())["endpoints"]]
            assert paths == ["/healthz", "/readyz", "/status", "/metrics", "/reports"]
        async with http.get(proxy.admin_url + "/reports?route=all&since=2026-01-01", headers=HTML) as response:
            page = await response.text()
            assert response.status == 200 and "admin.token_env" in page and 'name="form"' not in page
        act = {"action": "hold", "route": "all", "reason": "r", "by": "x"}
        async with http.post(proxy.admin_url + "/reports/actions", data=act) as response:
            assert (response.status, (await response.json())["error"]) == (403, "actions_off")
        async with http.get(proxy.admin_url + "/reports?since=yesterday") as response:
            assert response.status == 400


@pytest.mark.parametrize("headers, same", [
    ({"Origin": "http://127.0.0.1:9901"}, True),
    ({"Origin": "https://evil.example"}, False),
    ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, True),  # Chromium under Referrer-Policy: no-referrer
    ({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, False),  # a sandboxed frame elsewhere
    ({"Origin": "null"}, False),
    ({"Sec-Fetch-Site": "same-site"}, False),  # another port or subdomain is another origin
    ({}, True),  # no browser at all (a script); the form token or bearer still decides
])
def test_same_origin_reads_origin_then_sec_fetch_site(headers, same):
    assert console_guard.same_origin(headers, "http", "127.0.0.1:9901") is same


async def test_the_endpoint_filter_shows_that_endpoints_signatures_only(console):
    proxy, _ = console
    async with await signed_in(proxy) as http:
        async with http.get(proxy.admin_url + "/reports", params={"route": "orders", "endpoint": "/orders/{id}"},
                            headers=HTML) as response:
            page = await response.text()
            assert 'data-endpoint="/orders/{id}"' in page and page.count("data-signature=") == 1
            assert 'value="/orders/{id}"' in page  # the filter form shows what it filters by
        async with http.get(proxy.admin_url + "/reports", params={"route": "orders", "endpoint": "/elsewhere"},
                            headers=HTML) as response:
            page = await response.text()
            assert "data-endpoint=" not in page and "data-signature=" not in page
