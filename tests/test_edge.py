"""The edge's HTTP/1.1 connections: keep-alive, pipelining, bodies left unread, protocol switches,
clients that leave, and its own answers (a bug in a handler is a JSON 500 and one ERROR line)."""

import asyncio
import gzip
import json
import logging
import re

from aiohttp import web

from proxy.observe.logs import RequestIdFilter
from proxy.wire.intake import MAX_QUEUED
from proxy.wire.server import EdgeServer
from tests.helpers import answers, eventually, json_body, raw_exchange, read_for, route, status_of


def get(path: str, *more: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: h", *more, "", ""]).encode()


async def test_pipelined_requests_are_answered_in_order(make_upstream, start_proxy):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    raw = await raw_exchange(proxy.port, get("/a") + get("/b") + get("/c", "Connection: close"))
    assert [json.loads(body)["path"] for _, body in answers(raw)] == ["/a", "/b", "/c"]


async def test_an_http_1_0_client_keeps_its_connection_only_when_it_asks(make_upstream, start_proxy):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    kept = b"GET /a HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"
    raw = await raw_exchange(proxy.port, kept + b"GET /b HTTP/1.0\r\nHost: h\r\n\r\n")
    first, second = raw.split(b"HTTP/1.1 200 OK\r\n")[1:]  # answered as 1.1, as nginx does
    assert b"Connection: keep-alive\r\n" in first and b"keep-alive" not in second.lower()
    assert not raw.endswith(b"<<timeout: connection still open>>")  # closed after the second


async def test_a_flood_of_pipelined_requests_is_parsed_a_bounded_batch_at_a_time(make_upstream, start_proxy):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    count = MAX_QUEUED * 10 + 3  # the parser pauses at every MAX_QUEUED and resumes as they are answered
    flood = b"".join(get(f"/{n}") for n in range(count - 1)) + get("/last", "Connection: close")
    raw = await raw_exchange(proxy.port, flood, timeout=30)
    paths = [json.loads(body)["path"] for _, body in answers(raw)]
    assert paths == [f"/{n}" for n in range(count - 1)] + ["/last"]


async def test_a_body_the_answer_did_not_need_is_read_past_and_the_connection_kept(make_upstream, start_proxy):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("api", path="/api")])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"POST /elsewhere HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhalf")
        refused = await reader.readuntil(b"}")  # the 404 leaves before the body has all arrived
        writer.write(b"-rest!" + get("/api/x", "Connection: close"))
        rest, closed = await read_for(reader, 5)
    finally:
        writer.close()
    assert status_of(refused) == 404 and b'"no_route"' in refused
    assert [(status, json.loads(body)["path"]) for status, body in answers(rest)] == [(200, "/api/x")] and closed
    assert [seen.target for seen in legacy.seen] == ["/api/x"]


async def test_a_request_to_switch_to_another_protocol_is_answered_and_then_the_connection_closes(
        make_upstream, start_proxy):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    raw = await raw_exchange(proxy.port, get("/ws", "Connection: Upgrade", "Upgrade: spdy/3") + get("/after"))
    assert b"<<timeout" not in raw  # closed: what followed the request is not read as HTTP
    assert [status for status, _ in answers(raw)] == [200]
    assert [seen.target for seen in legacy.seen] == ["/ws"]
    assert "upgrade" not in legacy.seen[0].names()


async def test_a_compressed_request_body_reaches_the_upstream_as_sent(raw_upstream, start_proxy, http):
    packed = gzip.compress(b'{"name": "x"}' * 50)
    bodies = []

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bodies.append(await reader.readexactly(len(packed)))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    upstream = await raw_upstream(reply)
    proxy = await start_proxy({"legacy": upstream.url}, [route("all")])
    async with http.post(proxy.url + "/up", data=packed, headers={"Content-Encoding": "gzip"}) as response:
        assert response.status == 204
    assert bodies == [packed]
    assert b"content-encoding: gzip" in upstream.heads[0].lower()


async def test_a_body_that_breaks_its_chunked_framing_is_a_400_and_the_connection_closes(
        make_upstream, start_proxy, caplog):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await eventually(lambda: proxy.proxy.handler.in_flight)  # the bad chunk comes while the request is handled
        writer.write(b"zz\r\nsmuggled\r\n0\r\n\r\n")
        raw, closed = await read_for(reader, 5)
    finally:
        writer.close()
    assert status_of(raw) == 400 and json_body(raw)["error"] == "bad_request" and closed
    assert b"smuggled" not in raw
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("strangler")]


async def test_the_proxys_own_answer_to_a_head_has_no_body(make_upstream, start_proxy):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("api", path="/api")])
    raw = await raw_exchange(proxy.port, b"HEAD /elsewhere HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert status_of(head) == 404 and re.search(rb"(?im)^content-length: *[1-9]", head) and body == b""


async def test_a_client_that_goes_away_cancels_its_request_upstream(raw_upstream, start_proxy):
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # no answer; returns when the proxy hangs up

    upstream = await raw_upstream(never)
    proxy = await start_proxy({"legacy": upstream.url}, [route("all")])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(get("/slow"))
    async with asyncio.timeout(5):
        await eventually(lambda: upstream.heads, interval=0.01)
        writer.close()
        await upstream.hung_up.wait()
    assert proxy.proxy.handler.in_flight == 0


async def test_an_unexpected_exception_is_a_json_500_and_an_error_log(caplog):
    async def broken(request: web.BaseRequest) -> web.StreamResponse:
        raise RuntimeError("secret internals")

    caplog.handler.addFilter(RequestIdFilter())
    runner = web.ServerRunner(EdgeServer(broken))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        raw = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", timeout=2)
    finally:
        await runner.cleanup()
    assert status_of(raw) == 500
    body = json_body(raw)
    assert body == {"error": "internal_error", "detail": "the proxy failed to handle this request",
                    "request_id": body["request_id"]}
    assert f"X-Request-Id: {body['request_id']}".encode() in raw
    assert b"Traceback" not in raw and b"secret" not in raw
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["unexpected error while serving a request"]
    assert errors[0].exc_info[0] is RuntimeError
    assert errors[0].request_id == body["request_id"]
