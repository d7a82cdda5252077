"""WebSocket tunnels through the edge: real servers (aiohttp's) behind the proxy, real clients (aiohttp's and
the websockets package) in front; handshakes refused, tunnels that end every way, and nothing left behind."""

from __future__ import annotations

import asyncio
import base64
import os
import signal

import aiohttp
import pytest
import websockets
from aiohttp import WSMsgType, web

from tests.helpers import ProxyProcess, eventually, free_port, json_body, raw_exchange, route, routes_yaml, status_of


def metric(proxy, name: str, labels: dict) -> float:
    return proxy.proxy.metrics.registry.get_sample_value(name, labels) or 0.0


async def echo(request: web.BaseRequest) -> web.StreamResponse:
    """A WebSocket echo: text and binary back as they came; `close:CODE` closes with that code."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type is WSMsgType.TEXT and message.data.startswith("close:"):
            await ws.close(code=int(message.data[6:]), message=b"asked to")
        elif message.type is WSMsgType.TEXT:
            await ws.send_str(f"{request.headers.get('X-Upstream-Name', '')}{message.data}")
        elif message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


@pytest.fixture
async def ws_upstream(aiohttp_server):
    async def make(name: str = "legacy"):
        async def handle(request):
            if request.headers.get("Upgrade", "").lower() != "websocket":
                return web.json_response({"plain": True})
            return await echo(request)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        server = await aiohttp_server(app)
        return f"http://127.0.0.1:{server.port}"
    return make


async def test_text_binary_ping_and_close_codes_cross_an_aiohttp_client(ws_upstream, start_proxy):
    proxy = await start_proxy({"legacy": await ws_upstream()}, [route("all")])
    async with aiohttp.ClientSession() as http, http.ws_connect(proxy.url + "/chat", autoping=False) as ws:
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "hello"
        payload = os.urandom(100_000)
        await ws.send_bytes(payload)
        assert (await ws.receive(timeout=5)).data == payload
        await ws.ping(b"are you there")
        pong = await ws.receive(timeout=5)
        assert (pong.type, pong.data) == (WSMsgType.PONG, b"are you there")
        await ws.send_str("close:4001")
        closing = await ws.receive(timeout=5)
        assert closing.type is WSMsgType.CLOSE and closing.data == 4001
    await eventually(lambda: ended(proxy) == 1)
    assert metric(proxy, "strangler_tunnels_open", {"route": "all"}) == 0


def ended(proxy) -> float:
    """Tunnels that ended with a close, by either side (which one closes its socket first is a race)."""
    return sum(metric(proxy, "strangler_tunnels_total", {"route": "all", "outcome": o})
               for o in ("client_closed", "upstream_closed"))


async def test_the_websockets_package_talks_through_the_tunnel_and_closes_it(ws_upstream, start_proxy):
    proxy = await start_proxy({"legacy": await ws_upstream()}, [route("all")])
    async with websockets.connect(f"ws://127.0.0.1:{proxy.port}/ws", open_timeout=5, close_timeout=5) as ws:
        for n in range(20):
            await ws.send(f"message {n}")
            assert await asyncio.wait_for(ws.recv(), 5) == f"message {n}"
        await ws.send(b"\x00\x01binary")
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\x01binary"
    assert ws.close_code == 1000
    assert await eventually(lambda: ended(proxy)) == 1


async def test_200_tunnels_at_once_and_nothing_left_behind(ws_upstream, start_proxy):
    proxy = await start_proxy({"legacy": await ws_upstream()}, [route("all")])

    async def one(n: int, http: aiohttp.ClientSession) -> str:
        async with http.ws_connect(proxy.url + f"/t/{n}") as ws:
            await ws.send_str(f"tunnel {n}")
            return (await ws.receive(timeout=10)).data

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await one(-1, http)  # a first tunnel: the pools and tasks a steady proxy keeps
        await eventually(lambda: metric(proxy, "strangler_tunnels_open", {"route": "all"}) == 0)
        fds, tasks = len(os.listdir("/proc/self/fd")), len(asyncio.all_tasks())
        assert await asyncio.gather(*(one(n, http) for n in range(200))) == [f"tunnel {n}" for n in range(200)]
    await eventually(lambda: metric(proxy, "strangler_tunnels_open", {"route": "all"}) == 0)
    await eventually(lambda: len(os.listdir("/proc/self/fd")) <= fds and len(asyncio.all_tasks()) <= tasks)
    assert ended(proxy) == 201


async def test_a_silent_tunnel_is_closed_after_its_idle_timeout(ws_upstream, start_proxy):
    proxy = await start_proxy({"legacy": await ws_upstream()}, [route("all")], server={"tunnel_idle_timeout": 0.3})
    async with aiohttp.ClientSession() as http, http.ws_connect(proxy.url + "/quiet", autoping=False) as ws:
        message = await ws.receive(timeout=5)  # nothing is said: the proxy closes it
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert metric(proxy, "strangler_tunnels_total", {"route": "all", "outcome": "idle"}) == 1


async def test_an_upstream_that_vanishes_closes_the_client_side(raw_upstream, start_proxy):
    async def accept_then_vanish(reader, writer):
        key = next(line.split(b":", 1)[1].strip() for line in upstream.heads[-1].split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key"))
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + _accept(key) + b"\r\n\r\n")
        await writer.drain()
        writer.transport.abort()
    upstream = await raw_upstream(accept_then_vanish)
    proxy = await start_proxy({"legacy": upstream.url}, [route("all")])
    async with aiohttp.ClientSession() as http, http.ws_connect(proxy.url + "/gone") as ws:
        message = await ws.receive(timeout=5)
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
    assert metric(proxy, "strangler_tunnels_total", {"route": "all", "outcome": "upstream_closed"}) == 1


def _accept(key: bytes) -> bytes:
    import hashlib
    return base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())


async def test_a_tunnel_is_never_shadowed_and_is_counted_as_skipped(ws_upstream, start_proxy):
    legacy, new = await ws_upstream("legacy"), await ws_upstream("new")
    proxy = await start_proxy({"legacy": legacy, "new": new},
                              [route("all", new="new", parallel_run={"enabled": True})])
    async with aiohttp.ClientSession() as http, http.ws_connect(proxy.url + "/ws") as ws:
        await ws.send_str("once")
        assert (await ws.receive(timeout=5)).data == "once"
    assert metric(proxy, "strangler_shadows_skipped_total", {"route": "all", "reason": "upgrade"}) == 1


HANDSHAKE = ("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


@pytest.mark.parametrize("request_bytes", [
    HANDSHAKE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
    HANDSHAKE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Key: c2hvcnQ="),
    HANDSHAKE.replace("Version: 13", "Version: 8"),
    HANDSHAKE.replace("GET /ws", "POST /ws") + "Content-Length: 0\r\n",
    HANDSHAKE.replace("HTTP/1.1", "HTTP/1.0"),
], ids=["no-key", "short-key", "version-8", "post", "http-1.0"])
async def test_a_malformed_handshake_is_a_400_and_reaches_no_upstream(make_upstream, start_proxy, request_bytes):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    raw = await raw_exchange(proxy.port, (request_bytes + "\r\n").encode())
    assert status_of(raw) == 400 and json_body(raw)["error"] == "bad_request", raw
    assert legacy.seen == []


async def test_a_route_with_websocket_false_answers_400(make_upstream, start_proxy):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all", websocket=False)])
    raw = await raw_exchange(proxy.port, (HANDSHAKE + "\r\n").encode())
    assert status_of(raw) == 400 and json_body(raw)["error"] == "websocket_not_allowed"
    assert legacy.seen == []


async def test_an_upstream_that_declines_the_upgrade_is_relayed_as_a_plain_answer(make_upstream, start_proxy):
    legacy = await make_upstream()  # a plain server: it answers the handshake 200, not 101
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    raw = await raw_exchange(proxy.port, (HANDSHAKE + "\r\n").encode())
    assert status_of(raw) == 200 and not raw.endswith(b"<<timeout: connection still open>>")
    seen = legacy.seen[0]
    assert (seen.header("Upgrade"), seen.header("Connection")) == ("websocket", "Upgrade")
    assert seen.header("Sec-WebSocket-Key") == "dGhlIHNhbXBsZSBub25jZQ=="


async def test_sigterm_closes_open_tunnels_when_the_drain_time_is_up(ws_upstream, tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(routes_yaml({"legacy": await ws_upstream()}, [route("all")], listen=f"127.0.0.1:{free_port()}",
                                admin={"listen": f"127.0.0.1:{free_port()}"}))
    proxy = await asyncio.to_thread(ProxyProcess, path, "--drain-timeout", "1")
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{proxy.port}/ws") as ws:
            await ws.send_str("before")
            assert (await ws.receive(timeout=5)).data == "before"
            proxy.signal(signal.SIGTERM)
            assert (await ws.receive(timeout=10)).type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
    finally:
        status = await asyncio.to_thread(proxy.stop, 15)
    assert status == 0
    [line] = [entry for entry in proxy.log_lines() if entry.get("msg") == "tunnel closed"]
    assert (line["tunnel"], line["status"]) == ("shutdown", 101) and line["sent"] > 0 and line["received"] > 0
