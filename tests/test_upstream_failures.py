"""When an upstream refuses, stalls, breaks or speaks bad HTTP: JSON 502/503/504, never a traceback."""

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from tests.helpers import eventually, free_port, route


def upstream(url: str, **limits) -> dict:
    return {"url": url, **limits}


async def error_of(http: aiohttp.ClientSession, url: str) -> tuple[int, dict, aiohttp.ClientResponse]:
    async with http.get(url) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json(), response


async def test_refused_connection_is_502(start_proxy, http):
    proxy = await start_proxy({"legacy": f"http://127.0.0.1:{free_port()}"}, [route("all")])
    status, body, response = await error_of(http, proxy.url + "/x")
    assert status == 502
    assert body == {"error": "upstream_refused", "detail": "upstream legacy refused the connection",
                    "request_id": response.headers["X-Request-Id"]}


async def test_slow_answer_is_504_after_the_upstream_timeout(make_upstream, start_proxy, http):
    async def slow(request: web.BaseRequest) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(text="late")
    legacy = await make_upstream(handler=slow)
    proxy = await start_proxy({"legacy": upstream(legacy.url, timeout=0.5)}, [route("all")])
    started = time.monotonic()
    status, body, _ = await error_of(http, proxy.url + "/x")
    assert (status, body["error"]) == (504, "upstream_timeout")
    assert "within 0.5s" in body["detail"]
    assert time.monotonic() - started < 4  # the timeout fired, not the upstream's own answer


async def test_connect_timeout_is_504(blackhole, start_proxy, http):
    proxy = await start_proxy({"legacy": upstream(blackhole.url, connect_timeout=0.3)}, [route("all")])
    status, body, _ = await error_of(http, proxy.url + "/x")
    assert (status, body["error"]) == (504, "upstream_timeout")
    assert body["detail"] == "upstream legacy did not accept a connection in time"


async def test_a_full_pool_answers_503_while_other_upstreams_keep_serving(make_upstream, start_proxy, http):
    release = asyncio.Event()

    async def held(request: web.BaseRequest) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="done")
    legacy, new = await make_upstream("legacy", held), await make_upstream("new")
    proxy = await start_proxy(
        {"legacy": upstream(legacy.url, max_connections=1, connect_timeout=0.3), "new": new.url},
        [route("orders", "/api/orders", new="new", serve="new"), route("all")])
    first = asyncio.create_task(http.get(proxy.url + "/held"))
    await eventually(lambda: legacy.seen, interval=0.01)
    status, body, response = await error_of(http, proxy.url + "/waits")
    assert (status, body["error"], response.headers["Retry-After"]) == (503, "upstream_busy", "1")
    async with http.get(proxy.url + "/api/orders/1") as other:  # a bulkhead: the new service is unaffected
        assert other.status == 200
    release.set()
    async with await first as held_response:
        assert await held_response.text() == "done"


@pytest.mark.parametrize("reply, detail", [
    (b"garbage\r\n\r\n", "upstream legacy sent an invalid HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     "upstream legacy sent an invalid HTTP response"),
    (b"", "upstream legacy broke the connection (ServerDisconnectedError)"),
])
async def test_a_broken_answer_before_its_headers_is_502(raw_upstream, start_proxy, http, reply, detail):
    async def answer_then_hang_up(reader, writer):
        writer.write(reply)
        await writer.drain()
        writer.close()
    legacy = await raw_upstream(answer_then_hang_up)
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    status, body, _ = await error_of(http, proxy.url + "/x")
    assert (status, body["error"], body["detail"]) == (502, "upstream_broken", detail)


async def test_a_break_after_the_headers_truncates_the_response_visibly(raw_upstream, start_proxy, http):
    async def half(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.close()
    legacy = await raw_upstream(half)
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    async with http.get(proxy.url + "/x") as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    await _wait_for_metric(proxy, 'strangler_upstream_errors_total{kind="broken",upstream="legacy"} 1.0')


async def test_a_stall_after_the_headers_is_cut_at_the_timeout(raw_upstream, start_proxy, http):
    async def stall(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nsome\r\n")
        await writer.drain()
        await reader.read()
    legacy = await raw_upstream(stall)
    proxy = await start_proxy({"legacy": upstream(legacy.url, timeout=0.5)}, [route("all")])
    async with http.get(proxy.url + "/x") as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(response.read(), 5)
    await _wait_for_metric(proxy, 'strangler_upstream_errors_total{kind="timeout",upstream="legacy"} 1.0')


async def _wait_for_metric(proxy, line: str) -> None:
    async with aiohttp.ClientSession() as admin:
        async def shown() -> bool:
            async with admin.get(proxy.admin_url + "/metrics") as response:
                return line in await response.text()
        await eventually(shown, timeout=2.5, what=f"metric never showed: {line}")
