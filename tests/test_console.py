"""The review console on the admin listener, through real sockets: signing in, acting as the CLI does, and
every forged, replayed or wrong form refused with nothing changed."""

import asyncio
import re
import sys
import time

import aiohttp
import pytest
from aiohttp import web

from proxy.admin import console as console_guard
from reports import accepted, query, timeline
from reports.schema import open_for_reading
from tests.helpers import REPO, eventually, route

TOKEN = "s3cret-admin-token"
HTML = {"Accept": "text/html"}
BEARER = {"Authorization": f"Bearer {TOKEN}"}
LATER = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 30 * 86400))  # an expiry ahead


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
    return {**fields, "action": "accept", "reason": "status wording changed on purpose", "by": "ana",
            "expires": LATER}


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
    ({"form": ""}, 403, "no token"),
    ({"signature": "ffffffffffff"}, 403, "forged"),  # the token is for another subject
    ({"action": "unaccept"}, 403, "forged"),  # ... and another act
    ({"reason": "  "}, 400, "reason"),
    ({"expires": "2020-01-01"}, 400, "in the past"),
    ({"expires": ""}, 400, "expiry"),
    ({"expires": "soon"}, 400, "expiry"),
    ({"by": ""}, 400, "who you are"),
    ({"reason": "x" * 1001}, 400, "over 1000 characters"),
    ({"route": "all"}, 404, "on route 'all'"),  # the signature is another route's
    ({"action": "publish"}, 400, "no act"),
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


@pytest.mark.parametrize("act, status, why", [
    ({"action": "accept", "route": "orders", "signature": "ffffffffffff"}, 404, "no signature"),
    ({"action": "unaccept", "route": "orders", "signature": "ffffffffffff"}, 404, "no accepted signature"),
    ({"action": "hold", "route": "nowhere"}, 404, "no route 'nowhere'"),
    ({"action": "rollback", "route": "all"}, 404, "no route 'all' with a rollout_plan"),
    ({"action": "rollback", "route": "orders"}, 409, "nothing to roll back"),
    ({"action": "hold", "route": "orders", "reason": ""}, 400, "reason"),
])
async def test_an_unknown_signature_or_route_is_refused_and_changes_nothing(console, act, status, why):
    proxy, database = console
    before = timeline.plan_timeline([database], "orders")
    async with aiohttp.ClientSession() as script:
        form = {"reason": "r", "by": "ci", "expires": LATER} | act
        async with script.post(proxy.admin_url + "/reports/actions", data=form, headers=BEARER) as response:
            assert response.status == status and why in (await response.json())["detail"]
    assert acceptances(database) == {}
    assert timeline.plan_timeline([database], "orders") == before


async def test_a_script_acts_with_the_bearer_token_and_html_stays_text(console):
    proxy, database = console
    [signature] = [s.signature for s in query.summary([database])[0].signatures]
    reason = '<script>alert("x")</script><b>intended</b>'
    async with aiohttp.ClientSession() as script:
        act = {"action": "hold", "route": "orders", "reason": "reviewing the status wording", "by": "ci"}
        async with script.post(proxy.admin_url + "/reports/actions", data=act, headers=BEARER) as response:
            assert response.status == 200 and "(held)" in (await response.json())["done"]
        act = {"action": "accept", "route": "orders", "signature": signature[:8], "reason": reason,
               "by": "<i>ci</i>", "expires": LATER}
        async with script.post(proxy.admin_url + "/reports/actions", data=act, headers=BEARER) as response:
            assert response.status == 200 and reason in (await response.json())["done"]
        async with script.get(proxy.admin_url + "/reports?route=orders", headers=BEARER) as response:
            page = await response.text()
            assert response.headers["Content-Security-Policy"].endswith("form-action 'self'; frame-ancestors 'none'")
    hold, accept = timeline.plan_timeline([database], "orders").events[-2:]  # after the plan's own start
    assert (hold["action"], hold["by"], hold["reason"]) == ("hold", "console:ci", "reviewing the status wording")
    assert (accept["action"], accept["by"], accept["subject"]) == ("accept", "<i>ci</i>", signature)
    assert "<script" not in page and "<b>intended" not in page and "<i>ci" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;intended&lt;/b&gt;" in page


async def test_a_wrong_or_missing_token_gets_no_session_and_no_answer(console):
    proxy, _ = console
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            async with http.get(proxy.admin_url + "/status", headers=headers) as response:
                assert response.status == 401 and (await response.json())["error"] == "unauthorized"
        async with http.post(proxy.admin_url + "/login", data={"token": "wrong"}, headers=HTML,
                             allow_redirects=False) as response:
            assert response.status == 401 and "Set-Cookie" not in response.headers
            assert "not the admin token" in await response.text()
        async with http.post(proxy.admin_url + "/login", data={"token": TOKEN},
                             headers={"Origin": "https://evil.example"}, allow_redirects=False) as response:
            assert response.status == 403 and "Set-Cookie" not in response.headers
        forged = {"strangler_session": f"0.{int(time.time()) + 3600}.{'0' * 64}"}
        async with http.get(proxy.admin_url + "/status", cookies=forged) as response:
            assert response.status == 401


async def test_signing_out_ends_the_session_even_where_a_copy_was_kept(console):
    proxy, database = console
    async with await signed_in(proxy) as http:
        [cookie] = [c for c in http.cookie_jar if c.key == "strangler_session"]
        async with http.get(proxy.admin_url + "/reports", headers=HTML) as response:
            form = accept_form(await response.text())
        async with http.post(proxy.admin_url + "/logout", headers={"Origin": "https://evil.example"},
                             allow_redirects=False) as response:
            assert response.status == 403  # another site cannot sign a reviewer out either
        async with http.post(proxy.admin_url + "/logout", headers={"Origin": proxy.admin_url},
                             allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/login"
    async with aiohttp.ClientSession(cookies={"strangler_session": cookie.value}) as copy:
        async with copy.get(proxy.admin_url + "/status") as response:
            assert response.status == 401
        async with copy.post(proxy.admin_url + "/reports/actions", data=form,
                             headers={**HTML, "Origin": proxy.admin_url}) as response:
            assert response.status == 401 and "Sign in" in await response.text()  # a browser: the sign-in page
    assert acceptances(database) == {}


async def test_only_the_consoles_own_notices_are_shown(console):
    proxy, _ = console
    async with await signed_in(proxy) as http:
        async with http.get(proxy.admin_url + "/reports", headers=HTML) as response:
            form = accept_form(await response.text())
        async with http.post(proxy.admin_url + "/reports/actions", data=form,
                             headers={**HTML, "Origin": proxy.admin_url}) as response:
            assert response.status == 200 and "accepted " in await response.text()  # the redirect, followed
            assert 'role="status"' in await response.text()
        spoof = "/reports?done=Your+session+ended:+sign+in+at+evil.example&seal=0123"
        async with http.get(proxy.admin_url + spoof, headers=HTML) as response:
            assert "evil.example" not in await response.text()


async def test_without_a_token_the_console_reads_and_says_how_to_act(make_upstream, start_proxy, tmp_path):
    proxy = await start_proxy({"legacy": (await make_upstream()).url}, [route("all")],
                              reports={"database": str(tmp_path / "d.db")})
    async with aiohttp.ClientSession() as http:
        async with http.get(proxy.admin_url + "/") as response:
            paths = [e["path"] for e in (await response.json())["endpoints"]]
            assert paths == ["/healthz", "/readyz", "/status", "/metrics", "/reports", "/reports/actions", "/login",
                             "/logout"]
        async with http.get(proxy.admin_url + "/", headers=HTML) as response:
            index = await response.text()
            assert '<a href="/reports">' in index and '<a href="/logout">' not in index  # POST only: named
        async with http.post(proxy.admin_url + "/login", data={"token": "anything"}) as response:
            assert response.status == 403 and "admin.token_env" in await response.text()
        async with http.get(proxy.admin_url + "/reports?route=all&since=2026-01-01", headers=HTML) as response:
            page = await response.text()
            assert response.status == 200 and "admin.token_env" in page and 'name="form"' not in page
        act = {"action": "hold", "route": "all", "reason": "r", "by": "x"}
        async with http.post(proxy.admin_url + "/reports/actions", data=act) as response:
            assert (response.status, (await response.json())["error"]) == (403, "actions_off")
        async with http.get(proxy.admin_url + "/reports?since=yesterday") as response:
            assert response.status == 400
        async with http.get(proxy.admin_url + "/reports?since=2026-02-01&until=2026-01-01") as response:
            assert response.status == 400 and "after 'until'" in (await response.json())["detail"]


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


async def test_the_static_snapshot_shows_the_acts_but_has_no_forms(console):
    proxy, database = console
    [signature] = [s.signature for s in query.summary([database])[0].signatures]
    async with aiohttp.ClientSession() as script:
        act = {"action": "accept", "route": "orders", "signature": signature, "reason": "intended", "by": "ci",
               "expires": LATER}
        async with script.post(proxy.admin_url + "/reports/actions", data=act, headers=BEARER) as response:
            assert response.status == 200
    done = await asyncio.create_subprocess_exec(sys.executable, "-m", "proxy", "report", "html", "--db", database,
                                                stdout=asyncio.subprocess.PIPE, cwd=REPO)
    page = (await asyncio.wait_for(done.communicate(), 60))[0].decode()
    assert done.returncode == 0 and 'data-action="accept"' in page and "intended" in page
    assert "<form" not in page and 'name="form"' not in page and "sign out" not in page
