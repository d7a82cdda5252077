"""Request smuggling, ambiguous targets, parser limits and 100-continue at the edge, over raw sockets."""

import asyncio
import os
import subprocess
import sys

import aiohttp.http_parser
import pytest

from tests.helpers import REPO, json_body, raw_exchange, read_for, route, status_of

ERROR_KEYS = {"error", "detail", "request_id"}
HIDDEN = b"GET /admin HTTP/1.1\r\nHost: h\r\nX-Smuggled: yes\r\n\r\n"
TIMEOUT = b"<<timeout"


def framed(head: bytes, body: bytes = b"", length: int | None = None) -> bytes:
    """`head` (lines without the final blank line), with `{n}` replaced by len(body) or `length`."""
    size = len(body) if length is None else length
    return head.replace(b"{n}", str(size).encode()) + b"\r\n\r\n" + body


SMUGGLING = {
    "cl-and-te": framed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {n}\r\nTransfer-Encoding: chunked",
                        b"0\r\n\r\n" + HIDDEN),
    "duplicate-cl": framed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: {n}", HIDDEN),
    "cl-list": framed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4, 4", b"abcd"),
    "cl-plus-sign": framed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +4", b"abcd"),
    "te-xchunked": framed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked", b"0\r\n\r\n" + HIDDEN),
    "te-chunked-identity": framed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity",
                                  b"0\r\n\r\n" + HIDDEN),
    "te-space-before-colon": framed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {n}\r\n"
                                    b"Transfer-Encoding : chunked", b"0\r\n\r\n" + HIDDEN),
    "obs-fold": framed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Smuggled-Fold: first\r\n  Transfer-Encoding: chunked"),
    "bare-lf": b"GET /bare HTTP/1.1\nHost: h\nX-Smuggled-Lf: yes\n\n",
    "lf-chunk-size": framed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked",
                            b"4\nabcd\r\n0\r\n\r\n" + HIDDEN),
    "nul-in-header": framed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Smuggled-Nul: a\x00b"),
    "duplicate-host": framed(b"GET / HTTP/1.1\r\nHost: h\r\nHost: evil.example"),
    "lowercase-method": framed(b"get /lower HTTP/1.1\r\nHost: h"),
    "http-0.9": b"GET /x\r\n\r\n",
    "http-2.0": framed(b"GET /two HTTP/2.0\r\nHost: h"),
    "te-on-http-1.0": framed(b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked", b"0\r\n\r\n" + HIDDEN),
    "absolute-form": framed(b"GET http://evil.example/x HTTP/1.1\r\nHost: h"),
    "authority-form": framed(b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443"),
    "no-host": framed(b"GET /nohost HTTP/1.1\r\nX-Smuggled-None: 1"),
}


def head_lines(data: bytes) -> list[bytes]:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return [line.strip(b"\r") for line in head.split(b"\n") if line.strip()]


def assert_json_refusal(raw: bytes, sent: bytes, statuses: tuple[int, ...] = (400,)) -> None:
    assert status_of(raw) in statuses, raw
    body = json_body(raw)
    assert set(body) == ERROR_KEYS, raw
    assert body["error"] == "bad_request", raw
    text = raw.partition(b"\r\n\r\n")[2]
    for echoed in [*head_lines(sent), b"evil", b"admin", b"smuggled"]:
        assert echoed.lower() not in text.lower(), (echoed, raw)


@pytest.fixture
async def catch_all(make_upstream, start_proxy):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    return proxy, legacy


@pytest.mark.parametrize("data", SMUGGLING.values(), ids=SMUGGLING.keys())
async def test_smuggling_is_refused_closed_and_never_forwarded(catch_all, data):
    proxy, legacy = catch_all
    raw = await raw_exchange(proxy.port, data, timeout=2)
    assert TIMEOUT not in raw, raw  # the proxy hung up
    assert_json_refusal(raw, data)
    assert legacy.seen == []  # neither the request nor anything hidden in its body


@pytest.mark.parametrize("target", [
    "/api/../admin", "/api/%2e%2e/admin", "/api/%2E%2e/admin", "/api%2Fadmin", "/api/%2fadmin",
    "/api/%5cadmin", "/api/..;/admin", "//admin", "/api/./x", "/api/x%00", "/a#frag", "/api/%zz",
])
async def test_ambiguous_paths_are_refused(catch_all, target):
    proxy, legacy = catch_all
    data = f"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()
    raw = await raw_exchange(proxy.port, data, timeout=2)
    assert status_of(raw) == 400, raw
    assert json_body(raw)["error"] == "bad_request"
    assert set(json_body(raw)) == ERROR_KEYS
    assert legacy.seen == []


@pytest.mark.parametrize("target, side", [
    ("/api/orders/7?x=%2F&y=a+b", "orders"),
    ("/api/%6Frders", "orders"),
    ("/api/orders;jsessionid=abc/7", "orders"),
    ("/api/orders/", "orders"),
    ("/static/app.min.js", "monolith"),
    ("/api/ordersX", "monolith"),
])
async def test_plain_paths_are_routed_and_forwarded_byte_for_byte(make_upstream, start_proxy, target, side):
    upstreams = {"orders": await make_upstream("orders"), "monolith": await make_upstream("monolith")}
    proxy = await start_proxy({name: u.url for name, u in upstreams.items()},
                              [route("orders", "/api/orders", legacy="orders"),
                               route("everything-else", "/", legacy="monolith")])
    data = f"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()
    raw = await raw_exchange(proxy.port, data, timeout=2)
    assert status_of(raw) == 200, raw
    assert [s.target for s in upstreams[side].seen] == [target]
    other = next(u for name, u in upstreams.items() if name != side)
    assert other.seen == []


async def test_a_long_request_line_and_100_headers_pass(catch_all):
    proxy, legacy = catch_all
    line = b"GET /" + b"a" * (8189 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 8189
    raw = await raw_exchange(proxy.port, line + b"\r\nHost: h\r\nConnection: close\r\n\r\n", timeout=2)
    assert status_of(raw) == 200, raw[:200]
    headers = b"".join(b"X-H-%d: v\r\n" % i for i in range(98))
    raw = await raw_exchange(proxy.port, b"GET /many HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
                             + headers + b"\r\n", timeout=2)
    assert status_of(raw) == 200, raw[:200]
    assert [s.target for s in legacy.seen] == [line.split(b" ")[1].decode(), "/many"]
    assert legacy.seen[1].header("X-H-97") == "v"


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 8200 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-H-%d: v\r\n" % i for i in range(199)) + b"\r\n",
], ids=["header-line-over-8190", "200-headers"])
async def test_oversized_headers_are_refused_and_closed(catch_all, data):
    proxy, legacy = catch_all
    raw = await raw_exchange(proxy.port, data, timeout=2)
    assert TIMEOUT not in raw, raw[:300]
    assert status_of(raw) in (400, 431), raw[:300]
    assert set(json_body(raw)) == ERROR_KEYS
    assert b"aaaa" not in raw and b"X-H-1" not in raw
    assert legacy.seen == []


async def test_expect_100_continue_is_answered_by_the_proxy_and_not_forwarded(catch_all):
    proxy, legacy = catch_all
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\n\r\n")
        await writer.drain()
        interim, _ = await read_for(reader, 1)
        writer.write(b"hello")
        await writer.drain()
        raw = interim + (await read_for(reader, 2))[0]
    finally:
        writer.close()
    assert [(s.target, s.body) for s in legacy.seen] == [("/up", b"hello")]
    assert legacy.seen[0].header("Expect") is None
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", raw
    assert status_of(raw[len(interim):]) == 200, raw


def test_the_c_parser_is_in_use():
    assert aiohttp.http_parser.HttpRequestParser.__module__ == "aiohttp._http_parser"


def test_the_proxy_refuses_to_run_on_the_python_parser():
    check = "import asyncio; from proxy.wire import internals; asyncio.run(internals.require())"
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO, env={**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "RuntimeError" in done.stderr and "C HTTP parser" in done.stderr
