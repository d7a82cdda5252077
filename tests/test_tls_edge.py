"""TLS on the edge and admin listeners, through real sockets, with certificates the tests make: what a
client sees, what reaches the upstream, renewals under load, and what /status and /metrics say."""

from __future__ import annotations

import asyncio
import re
import signal
import ssl
import time
import warnings
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from proxy import config as config_file
from proxy.app import Options, Proxy
from tests.certs import Authority, Issued
from tests.conftest import RunningProxy
from tests.helpers import ProxyProcess, _get, admin_json, free_port, raw_exchange, read_for, route, routes_yaml

EDGE = {"cert": "certs/edge.pem", "key": "certs/edge-key.pem"}


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "certs")


@pytest.fixture
async def start_tls(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RunningProxy]]]:
    """A proxy in this process; `watch_interval` large keeps the file watcher out of a test of reloads."""
    started: list[Proxy] = []

    async def start(upstreams: dict[str, str], routes: list[dict[str, Any]], watch_interval: float = 0.1,
                    **top: Any) -> RunningProxy:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_yaml(upstreams, routes, **top))
        proxy = Proxy(Options(str(path), drain_timeout=5.0, watch_interval=watch_interval), config_file.load(path))
        await proxy.start()
        started.append(proxy)
        return RunningProxy(proxy, path)

    yield start
    for proxy in started:
        if proxy.lifecycle.state != "draining":
            await proxy.stop()


def https(proxy: RunningProxy, path: str = "/") -> str:
    return f"https://127.0.0.1:{proxy.port}{path}"


async def handshake(port: int, context: ssl.SSLContext) -> ssl.SSLObject:
    """A new TLS connection to 127.0.0.1:port (closed again): its SSL object, to look at."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    try:
        return writer.get_extra_info("ssl_object")
    finally:
        writer.close()


async def serial_of_new_connection(port: int, ca: Authority) -> str:
    return (await handshake(port, ca.client_context())).getpeercert()["serialNumber"]


async def test_a_verifying_client_gets_answers_and_the_upstream_sees_https(make_upstream, start_tls, ca):
    ca.issue("edge")
    upstream = await make_upstream()
    proxy = await start_tls({"legacy": upstream.url}, [route("all")], tls=EDGE)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ca.client_context())) as client:
        for n in range(3):  # one keep-alive connection: every request of it is https
            async with client.get(https(proxy, f"/api/{n}")) as response:
                assert response.status == 200 and (await response.json()) == {"path": f"/api/{n}"}
    assert [seen.header("X-Forwarded-Proto") for seen in upstream.seen] == ["https"] * 3
    assert upstream.seen[0].header("X-Forwarded-Host") == f"127.0.0.1:{proxy.port}"


async def test_plain_http_on_the_tls_port_reaches_no_upstream(make_upstream, start_tls, ca):
    ca.issue("edge")
    upstream = await make_upstream()
    proxy = await start_tls({"legacy": upstream.url}, [route("all")], tls=EDGE)
    answer = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n", timeout=3.0)
    assert not answer.startswith(b"HTTP/")  # the handshake failed: no HTTP answer at all
    assert upstream.seen == []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ca.client_context())) as client:
        async with client.get(https(proxy)) as response:  # and the listener goes on serving TLS
            assert response.status == 200


async def test_a_handshake_that_stalls_is_cut_off_at_the_header_timeout(make_upstream, start_tls, ca):
    ca.issue("edge")
    upstream = await make_upstream()
    proxy = await start_tls({"legacy": upstream.url}, [route("all")], tls=EDGE, server={"header_timeout": 0.5})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    started = time.monotonic()
    writer.write(b"\x16\x03\x01\x02\x00")  # the start of a ClientHello, and then nothing
    received, closed = await read_for(reader, 5.0)
    writer.close()
    assert closed and received == b"" and time.monotonic() - started < 3.0  # not asyncio's 60 s


async def test_tls_1_1_is_refused_and_alpn_says_http_1_1(make_upstream, start_tls, ca, tmp_path):
    edge = ca.issue("edge")
    upstream = await make_upstream()
    proxy = await start_tls({"legacy": upstream.url}, [route("all")], tls=EDGE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1 itself is deprecated
        old = ca.client_context()
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # this client would speak TLS 1.1 to a server that took it...
    taker = await _tls_1_1_server(edge)
    assert (await handshake(taker.sockets[0].getsockname()[1], old)).version() == "TLSv1.1"
    taker.close()
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await handshake(proxy.port, old)  # ...and the edge does not,
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    assert (await handshake(proxy.port, old)).version() == "TLSv1.2"  # for the version alone
    modern = ca.client_context()
    modern.set_alpn_protocols(["h2", "http/1.1"])
    negotiated = await handshake(proxy.port, modern)
    assert negotiated.selected_alpn_protocol() == "http/1.1" and negotiated.version() in ("TLSv1.2", "TLSv1.3")


async def _tls_1_1_server(edge: Issued) -> asyncio.Server:
    """A server that still takes TLS 1.1, to show the client above offers it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(edge.cert, edge.key)
    return await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=context)


async def test_curl_through_the_tls_edge_as_a_user_would(make_upstream, start_tls, ca):
    ca.issue("edge")
    upstream = await make_upstream()
    proxy = await start_tls({"legacy": upstream.url}, [route("all")], tls=EDGE)
    url, resolve = f"https://localhost:{proxy.port}/api/orders?x=1", f"localhost:{proxy.port}:127.0.0.1"

    async def curl(*args: str) -> tuple[int, str]:
        done = await asyncio.create_subprocess_exec("curl", "-sS", "--max-time", "10", "--resolve", resolve, *args,
                                                    url, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await done.communicate()
        return done.returncode, out.decode()

    assert await curl("--cacert", str(ca.pem)) == (0, '{"path": "/api/orders?x=1"}')
    code, said = await curl()  # without the CA, curl does not trust the edge
    assert code == 60 and "certificate" in said
    assert len(upstream.seen) == 1 and upstream.seen[0].header("X-Forwarded-Proto") == "https"


async def test_status_and_metrics_show_the_certificate_and_its_expiry(make_upstream, start_tls, ca):
    edge = ca.issue("edge", common_name="shop.example.com")
    upstream = await make_upstream()
    proxy = await start_tls({"legacy": upstream.url}, [route("all")], tls=EDGE)
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.admin_url + "/status") as response:
            shown = (await response.json())["tls"]
        async with client.get(proxy.admin_url + "/metrics") as response:
            metrics = await response.text()
    assert list(shown) == ["edge"]
    assert shown["edge"]["subject"] == "CN=shop.example.com, O=Strangler Tests"
    assert shown["edge"]["issuer"] == "CN=Strangler Test CA" and shown["edge"]["serial"] == edge.serial_hex
    assert shown["edge"]["not_after"].endswith("+00:00")
    assert 9 * 86400 < shown["edge"]["expires_in_seconds"] <= 10 * 86400
    [seconds] = re.findall(r'^strangler_tls_certificate_expiry_seconds\{listener="edge"\} (\S+)$', metrics, re.M)
    assert 9 * 86400 < float(seconds) <= 10 * 86400


async def test_a_renewal_reaches_new_connections_under_load_and_drops_none(make_upstream, start_tls, ca):
    first = ca.issue("edge")
    upstream = await make_upstream()
    proxy = await start_tls({"legacy": upstream.url}, [route("all")], watch_interval=3600, tls=EDGE)
    before = proxy.path.read_bytes()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port, ssl=ca.client_context(),
                                                   server_hostname="localhost")  # open across the renewal
    assert await _get_on(reader, writer, "/before") == 200
    load = _Load(https(proxy, "/load"), ca.client_context())
    async with load:
        await load.answered(50)
        second = ca.issue("edge")  # the files replaced, as a renewal does; routes.yaml untouched
        assert await proxy.proxy.reload("SIGHUP") is True  # SIGHUP's reload, on a byte-identical routes.yaml
        await load.answered(load.count + 50)
    assert proxy.path.read_bytes() == before and first.serial != second.serial
    assert load.failures == [] and load.count >= 100
    assert await serial_of_new_connection(proxy.port, ca) == second.serial_hex
    assert await _get_on(reader, writer, "/after") == 200  # the connection opened before goes on...
    assert writer.get_extra_info("peercert")["serialNumber"] == first.serial_hex  # ...with the certificate it had
    writer.close()
    assert (await status_of(proxy))["tls"]["edge"]["serial"] == second.serial_hex


async def test_renewed_files_are_served_without_an_edit_or_a_signal(make_upstream, start_tls, ca):
    ca.issue("edge")
    upstream = await make_upstream()
    proxy = await start_tls({"legacy": upstream.url}, [route("all")], tls=EDGE)
    second = ca.issue("edge")

    async def renewed() -> bool:
        return await serial_of_new_connection(proxy.port, ca) == second.serial_hex

    await _eventually(renewed)
    assert proxy.proxy.live.last_failure is None  # a watcher between the cert and the key clears once both are in


async def test_a_bad_pair_on_reload_keeps_the_last_good_one_and_says_why(make_upstream, start_tls, ca, tmp_path):
    first = ca.issue("edge")
    upstream = await make_upstream()
    proxy = await start_tls({"legacy": upstream.url}, [route("all")], watch_interval=3600, tls=EDGE)
    other = ca.issue("other")
    (tmp_path / "certs" / "edge-key.pem").write_bytes(other.key.read_bytes())  # a key that is not the cert's
    assert await proxy.proxy.reload("SIGHUP") is False
    line = proxy.path.read_text().splitlines().index("  key: certs/edge-key.pem") + 1
    error = (await status_of(proxy))["config"]["last_reload_error"]
    assert error["problems"] == [f"{proxy.path}:{line}: tls: the key in {tmp_path}/certs/edge-key.pem does not "
                                 f"belong to the certificate in {tmp_path}/certs/edge.pem"]
    assert await serial_of_new_connection(proxy.port, ca) == first.serial_hex
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ca.client_context())) as client:
        async with client.get(https(proxy)) as response:
            assert response.status == 200


async def test_admin_may_have_its_own_tls(make_upstream, start_tls, ca):
    ca.issue("edge")
    admin = ca.issue("admin", common_name="admin.internal")
    upstream = await make_upstream()
    proxy = await start_tls({"legacy": upstream.url}, [route("all")], tls=EDGE,
                            admin={"listen": "127.0.0.1:0",
                                   "tls": {"cert": "certs/admin.pem", "key": "certs/admin-key.pem"}})
    admin_port = proxy.proxy.admin_address.port
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ca.client_context())) as client:
        async with client.get(f"https://127.0.0.1:{admin_port}/status") as response:
            shown = (await response.json())["tls"]
        async with client.get(f"https://127.0.0.1:{admin_port}/metrics") as response:
            metrics = await response.text()
    assert shown["admin"]["subject"] == "CN=admin.internal, O=Strangler Tests"
    assert shown["admin"]["serial"] == admin.serial_hex and shown["edge"]["serial"] != admin.serial_hex
    assert 'strangler_tls_certificate_expiry_seconds{listener="admin"}' in metrics
    assert 'strangler_tls_certificate_expiry_seconds{listener="edge"}' in metrics
    assert not (await raw_exchange(admin_port, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", 3.0)).startswith(b"HTTP")


async def test_a_websocket_crosses_tls_on_both_sides(aiohttp_server, start_tls, ca):
    ca.issue("edge")
    upstream_pair = ca.issue("chat")

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(request.headers["X-Forwarded-Proto"])
        async for message in ws:
            await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/chat", echo)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(upstream_pair.cert, upstream_pair.key)
    server = await aiohttp_server(app, ssl=context)
    proxy = await start_tls({"legacy": {"url": f"https://localhost:{server.port}", "ca": "certs/strangler-test-ca.pem"}},
                            [route("all")], tls=EDGE)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ca.client_context())) as client:
        async with client.ws_connect(f"wss://127.0.0.1:{proxy.port}/chat") as ws:
            assert (await ws.receive(timeout=5)).data == "https"
            await ws.send_str("over TLS twice")
            assert (await ws.receive(timeout=5)).data == "over TLS twice"


async def test_workers_serve_tls_and_sighup_renews_every_worker(make_upstream, tmp_path, ca):
    ca.issue("edge")
    upstream = await make_upstream()
    path = tmp_path / "routes.yaml"
    path.write_text(routes_yaml({"legacy": upstream.url}, [route("all")], listen=f"127.0.0.1:{free_port()}",
                                admin={"listen": f"127.0.0.1:{free_port()}"}, tls=EDGE))
    proxy = await asyncio.to_thread(ProxyProcess, path, "--workers", "2", "--drain-timeout", "5")
    try:
        served = {await serial_of_new_connection(proxy.port, ca) for _ in range(6)}
        second = ca.issue("edge")
        proxy.proc.send_signal(signal.SIGHUP)  # the supervisor forwards it to each worker

        async def all_renewed() -> bool:
            return {await serial_of_new_connection(proxy.port, ca) for _ in range(8)} == {second.serial_hex}

        await _eventually(all_renewed)
        assert len(served) == 1 and served != {second.serial_hex}
        status = await asyncio.to_thread(admin_json, proxy.admin_port, "/status")
        assert status["tls"]["edge"]["serial"] == second.serial_hex
        metrics = (await asyncio.to_thread(_get, proxy.admin_port, "/metrics")).decode()
        assert len(re.findall(r'^strangler_tls_certificate_expiry_seconds\{listener="edge"\} ', metrics, re.M)) == 1
        assert upstream.seen == []
    finally:
        assert await asyncio.to_thread(proxy.stop) == 0


async def status_of(proxy: RunningProxy) -> Any:
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.admin_url + "/status") as response:
            return await response.json()


async def _get_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    """One request on an open keep-alive connection; its status."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)


class _Load:
    """Requests on a few keep-alive connections, one after another on each, until the block ends."""

    def __init__(self, url: str, context: ssl.SSLContext, connections: int = 4) -> None:
        self.url, self.context, self.connections = url, context, connections
        self.count = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> _Load:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.context,
                                                                             limit=self.connections))
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self.connections)]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()

    async def answered(self, count: int) -> None:
        await _eventually(lambda: _now(self.count >= count or bool(self.failures)))

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async with self._session.get(self.url) as response:
                    await response.read()
                    if response.status != 200:
                        self.failures.append(f"status {response.status}")
            except (aiohttp.ClientError, OSError) as exc:
                self.failures.append(repr(exc))
            self.count += 1


async def _now(value: bool) -> bool:
    return value
