"""The attacks of the second hardening round, replayed as raw bytes on real sockets.

Each test is one reproduction from the attack report: a hostile or slow client, or a broken
upstream, and what the proxy must answer. docs/hardening.md lists them beside nginx's answers.
"""

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from aiohttp import web

from tests.helpers import (REPO, ProxyProcess, admin_json, answers, eventually, free_port, json_body, raw_exchange,
                           read_for, route, routes_yaml, sent_regardless, status_of)


def metric(proxy, name: str, labels: dict) -> float:
    return proxy.proxy.metrics.registry.get_sample_value(name, labels) or 0.0


async def echo(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(body=await request.read())


async def trickle(port: int, head: bytes, body: bytes, every: float) -> bytes:
    """Send `head`, then `body` a byte at a time `every` seconds apart; what came back once the proxy closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for byte in body:
            await asyncio.sleep(every)
            writer.write(bytes([byte]))
        received, _ = await read_for(reader, 10)
    finally:
        writer.close()
    return received


def post(body_length: int, path: str = "/up") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {body_length}\r\nConnection: close\r\n\r\n".encode()


# -- 1. a client's slowness is never the upstream's failure


@pytest.mark.parametrize("request_buffer", [None, 4], ids=["buffered", "streamed"])
async def test_a_slow_client_body_is_not_an_upstream_timeout(make_upstream, start_proxy, http, request_buffer):
    orders = await make_upstream("orders", echo)
    server = {"body_timeout": 5} | ({"request_buffer": request_buffer} if request_buffer is not None else {})
    proxy = await start_proxy({"orders": {"url": orders.url, "timeout": 0.5, "breaker": {"failures": 2}}},
                              [route("all", legacy="orders")], server=server)
    answers = await asyncio.gather(*(trickle(proxy.port, post(8), b"12345678", 0.2) for _ in range(3)))
    assert [(status_of(raw), raw.endswith(b"\r\n\r\n12345678")) for raw in answers] == [(200, True)] * 3
    assert proxy.proxy.resilience.states().get("orders", "closed") == "closed"
    assert metric(proxy, "strangler_upstream_errors_total", {"upstream": "orders", "kind": "timeout"}) == 0


async def test_slow_bodies_within_the_buffer_hold_no_upstream_connection(make_upstream, start_proxy, http):
    orders = await make_upstream("orders", echo)
    proxy = await start_proxy({"orders": {"url": orders.url, "max_connections": 2, "max_pending": 10,
                                          "connect_timeout": 0.5}}, [route("all", legacy="orders")])
    slow = [asyncio.create_task(trickle(proxy.port, post(10), b"abcdefghij", 0.2)) for _ in range(4)]
    await asyncio.sleep(0.3)  # all four are sending their bodies
    async with http.get(proxy.url + "/meanwhile") as response:
        assert response.status == 200  # nginx answers it too: it buffers request bodies
    assert [status_of(raw) for raw in await asyncio.gather(*slow)] == [200] * 4


async def test_a_body_trickling_past_the_body_timeout_is_the_clients_408(make_upstream, start_proxy):
    orders = await make_upstream("orders", echo)
    proxy = await start_proxy({"orders": orders.url}, [route("all", legacy="orders")],
                              server={"body_timeout": 0.3, "request_buffer": 4})
    raw = await raw_exchange(proxy.port, post(100) + b"x" * 10, timeout=3)
    assert status_of(raw) == 408
    assert metric(proxy, "strangler_client_errors_total", {"kind": "body_timeout"}) == 1
    assert metric(proxy, "strangler_upstream_errors_total", {"upstream": "orders", "kind": "client_body_timeout"}) == 0


def big(size: int):
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=b"z" * size)
    return answer


async def slow_reader(port: int, request: bytes, pause: float) -> tuple[int, float]:
    """Send `request` on a socket with a small receive buffer and read it in 16 KiB pieces, `pause` seconds
    apart (the kernel would otherwise take megabytes at once): bytes received, and how long it took."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 14)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 14)
    writer.write(request)
    received, started = 0, time.monotonic()
    try:
        async with asyncio.timeout(30):
            while chunk := await reader.read(1 << 14):
                received += len(chunk)
                await asyncio.sleep(pause)
    finally:
        writer.close()
    return received, time.monotonic() - started


async def test_a_slow_reader_is_not_cut_at_the_upstream_timeout(make_upstream, start_proxy):
    size = 16 << 20
    orders = await make_upstream("orders", big(size))
    proxy = await start_proxy({"orders": {"url": orders.url, "timeout": 0.5}}, [route("all", legacy="orders")])
    received, took = await slow_reader(proxy.port, b"GET /big HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                                       0.002)
    assert took > 1  # slower than the upstream's timeout, or the test shows nothing
    assert received > size  # the whole body, and its head
    assert metric(proxy, "strangler_upstream_errors_total", {"upstream": "orders", "kind": "timeout"}) == 0


async def test_a_client_that_stops_reading_is_cut_at_the_send_timeout_and_counted_as_its_own(
        make_upstream, start_proxy):
    orders = await make_upstream("orders", big(16 << 20))
    proxy = await start_proxy({"orders": {"url": orders.url, "timeout": 30}}, [route("all", legacy="orders")],
                              server={"send_timeout": 0.5})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
    await reader.read(1024)  # the answer started, then nothing more is read
    started = time.monotonic()
    try:
        await eventually(lambda: proxy.proxy.handler and metric(proxy, "strangler_client_errors_total",
                                                                {"kind": "send_timeout"}))
    finally:
        writer.close()
    assert time.monotonic() - started < 5
    assert metric(proxy, "strangler_upstream_errors_total", {"upstream": "orders", "kind": "timeout"}) == 0
    assert proxy.proxy.resilience.states().get("orders", "closed") == "closed"


# -- 2. a request head's total size is bounded


async def test_a_head_over_max_header_bytes_is_a_431_and_never_forwarded(make_upstream, start_proxy):
    orders = await make_upstream("orders")
    proxy = await start_proxy({"orders": orders.url}, [route("all", legacy="orders")],
                              server={"max_header_bytes": 16384})
    lines = "".join(f"X-Filler-{n}: {'v' * 1000}\r\n" for n in range(20))  # 20 KB in lines of 1 KB
    raw = await raw_exchange(proxy.port, f"GET / HTTP/1.1\r\nHost: h\r\n{lines}\r\n".encode())
    assert status_of(raw) == 431 and json_body(raw)["error"] == "headers_too_large"
    assert not raw.endswith(b"<<timeout: connection still open>>") and orders.seen == []


async def test_a_head_just_under_max_header_bytes_passes(make_upstream, start_proxy):
    orders = await make_upstream("orders")
    proxy = await start_proxy({"orders": orders.url}, [route("all", legacy="orders")],
                              server={"max_header_bytes": 16384})
    lines = "".join(f"X-Filler-{n}: {'v' * 1000}\r\n" for n in range(14))
    raw = await raw_exchange(proxy.port, f"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n{lines}\r\n".encode())
    assert status_of(raw) == 200 and len(orders.seen) == 1


async def test_a_head_sent_in_pieces_is_refused_before_it_is_whole(make_upstream, start_proxy):
    orders = await make_upstream("orders")
    proxy = await start_proxy({"orders": orders.url}, [route("all", legacy="orders")],
                              server={"max_header_bytes": 16384})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n")
        for n in range(40):  # 40 KB, never finished: the proxy must not wait for the end to refuse it
            writer.write(f"X-Filler-{n}: {'v' * 1000}\r\n".encode())
            await writer.drain()
            await asyncio.sleep(0.005)
        received, closed = await read_for(reader, 3)
    except ConnectionError:
        received, closed = b"", True
    finally:
        writer.close()
    assert closed and (received == b"" or status_of(received) == 431)
    assert orders.seen == []


# -- 3. an answer whose body ends when the connection closes


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_an_answer_delimited_by_close_arrives_whole(raw_upstream, start_proxy, version):
    page = b"<html>" + b"legacy page " * 500 + b"</html>"
    upstream = await raw_upstream(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n" + page)
    upstream.close_after_reply = True
    proxy = await start_proxy({"legacy": upstream.url}, [route("all")])
    raw = await raw_exchange(proxy.port, f"GET / HTTP/{version}\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    if version == "1.1":
        assert b"Transfer-Encoding: chunked" in head
        body = b"".join(dechunk(body))
    assert status_of(raw) == 200 and body == page


def dechunk(data: bytes):
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return
        yield rest[:n]
        data = rest[n + 2:]


async def test_a_close_delimited_answer_is_compared_whole_in_a_parallel_run(raw_upstream, start_proxy):
    page = b"<p>same</p>" * 100
    answers = [b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n" + page,
               b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s" % (len(page), page)]
    legacy, new = await raw_upstream(answers[0]), await raw_upstream(answers[1])
    legacy.close_after_reply = True
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              [route("all", new="new", parallel_run={"enabled": True})])
    raw = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 200
    await eventually(lambda: metric(proxy, "strangler_comparisons_total", {"route": "all", "result": "matched"}),
                     timeout=5, interval=0.02)
    assert metric(proxy, "strangler_comparisons_total", {"route": "all", "result": "diverged"}) == 0


# -- 7. pipelined requests before a bad one are answered


def get(path: str, *more: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: h", *more, "", ""]).encode()


async def test_requests_pipelined_before_a_malformed_one_are_answered_first(make_upstream, start_proxy):
    orders = await make_upstream("orders")
    proxy = await start_proxy({"orders": orders.url}, [route("all", legacy="orders")])
    raw = await raw_exchange(proxy.port, get("/v1") + get("/v2") + b"GET /v3 HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n")
    assert [status for status, _ in answers(raw)] == [200, 200, 400]
    assert [seen.target for seen in orders.seen] == ["/v1", "/v2"]
    assert not raw.endswith(b"<<timeout: connection still open>>")


async def test_an_upgrade_not_honoured_leaves_no_silent_gap(make_upstream, start_proxy):
    orders = await make_upstream("orders")
    proxy = await start_proxy({"orders": orders.url}, [route("all", legacy="orders")])
    raw = await raw_exchange(proxy.port, get("/h2c", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
                                             "HTTP2-Settings: AAMAAABkAAQAAP__") + get("/a") + get("/b"))
    statuses = [status for status, _ in answers(raw)]
    closed = not raw.endswith(b"<<timeout: connection still open>>")
    assert statuses == [200, 200, 200] or (statuses == [200] and closed), raw  # every request answered, or a close
    assert b"101" not in raw.split(b"\r\n")[0]


# -- 8. a body cut short on a hanging upstream writes no ERROR


async def test_an_answer_before_the_body_ended_leaves_no_unretrieved_task_error(raw_upstream, start_proxy, caplog):
    async def early(reader, writer):  # answers at once, reading none of the body
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
    upstream = await raw_upstream(early)
    proxy = await start_proxy({"legacy": upstream.url}, [route("all")], server={"request_buffer": 4})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        for _ in range(3):  # the rest of each body arrives after its answer, and is read past
            writer.write(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
            async with asyncio.timeout(5):
                assert (await reader.readuntil(b"early")).startswith(b"HTTP/1.1 200 ")
            writer.write(b"y" * 90)
        writer.write(b"GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        rest, closed = await read_for(reader, 5)
    finally:
        writer.close()
    assert status_of(rest) == 200 and closed
    import gc
    gc.collect()  # an exception nobody retrieved is reported when its task is collected
    await asyncio.sleep(0.05)
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


# -- 9, 10, 11. Host, transfer codings, versions


@pytest.mark.parametrize("host", [b"a/b?c", b"", b"user:pw@evil.com", b"a b", b"[::1", b"h:port"])
async def test_an_invalid_host_is_a_400_and_never_forwarded(make_upstream, start_proxy, host):
    orders = await make_upstream("orders")
    proxy = await start_proxy({"orders": orders.url}, [route("all", legacy="orders")])
    raw = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert status_of(raw) == 400 and json_body(raw)["error"] == "bad_request", raw
    assert orders.seen == []


@pytest.mark.parametrize("host", ["shop.example.com", "shop.example.com:8443", "127.0.0.1:80", "[::1]:8080",
                                  "xn--bcher-kva.example"])
async def test_a_valid_host_passes(make_upstream, start_proxy, host):
    orders = await make_upstream("orders")
    proxy = await start_proxy({"orders": orders.url}, [route("all", legacy="orders")])
    raw = await raw_exchange(proxy.port, f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    assert status_of(raw) == 200 and orders.seen[0].header("Host") == host


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"deflate, chunked", b"br, chunked"])
async def test_a_transfer_coding_other_than_chunked_is_a_501(make_upstream, start_proxy, coding):
    orders = await make_upstream("orders")
    proxy = await start_proxy({"orders": orders.url}, [route("all", legacy="orders")])
    raw = await raw_exchange(proxy.port, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + coding +
                             b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert status_of(raw) == 501 and json_body(raw)["error"] == "not_implemented"
    assert not raw.endswith(b"<<timeout: connection still open>>") and orders.seen == []


@pytest.mark.parametrize("request_line", [b"GET /x\r\n\r\n", b"GET /two HTTP/2.0\r\nHost: h\r\n\r\n",
                                          b"GET /nine HTTP/0.9\r\nHost: h\r\n\r\n"])
async def test_refusals_of_other_versions_answer_as_http_1_1(make_upstream, start_proxy, request_line):
    proxy = await start_proxy({"orders": (await make_upstream("orders")).url}, [route("all", legacy="orders")])
    raw = await raw_exchange(proxy.port, request_line)
    assert raw.startswith(b"HTTP/1.1 400 "), raw


# -- 12. an answer that switches protocols unasked


async def test_an_unasked_101_is_a_502(raw_upstream, start_proxy):
    upstream = await raw_upstream(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                  b"Connection: Upgrade\r\n\r\n\x81\x05hello")
    proxy = await start_proxy({"legacy": upstream.url}, [route("all")])
    raw = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 502 and json.loads(raw.partition(b"\r\n\r\n")[2])["error"] == "upstream_broken"


async def test_thirty_connections_with_1_mb_heads_leave_memory_bounded(tmp_path, blackhole):
    path = tmp_path / "routes.yaml"  # the first request waits on the upstream, the rest would queue behind it
    path.write_text(routes_yaml({"legacy": {"url": blackhole.url, "connect_timeout": 3}}, [route("all")],
                                listen=f"127.0.0.1:{free_port()}", admin={"listen": f"127.0.0.1:{free_port()}"}))
    proxy = ProxyProcess(path)
    try:
        baseline = proxy.rss_kib()
        head = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-Big-%d: %s\r\n" % (n, b"v" * 8000) for n in range(120))
        head += b"\r\n"  # about 1 MB, under the parser's own limits (8190 bytes a line, 128 lines)
        answers = await asyncio.gather(*(sent_regardless(proxy.port, head * 8) for _ in range(30)))  # pipelined
        peak = proxy.peak_rss_kib()
    finally:
        proxy.stop(10)
    assert all(raw == b"" or status_of(raw) == 431 for raw in answers)
    assert (peak - baseline) < 50 * 1024, f"RSS grew {(peak - baseline) / 1024:.1f} MiB"


# -- 4, 5, 14. routes.yaml that cannot be read, or read safely: a reload error, never a dead watcher

NESTED = "a: " + "[" * 900 + "]" * 900 + "\n"
ALIAS_BOMB = "".join(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9 if prev else ['lol'] * 9)}]\n"
                     for prev, name in zip(["", *"abcdefg"], "abcdefgh", strict=True))
ALIAS_LOOP = "a: &a [b, *a]\n"


def orders(serve: str) -> list[dict]:
    return [route("orders", "/api/orders", new="new", serve=serve), route("all")]


async def served_by(http, url: str) -> str:
    async with http.get(url) as response:
        return response.headers.get("X-Upstream", "")


@pytest.mark.parametrize("bad", [NESTED, ALIAS_BOMB, ALIAS_LOOP], ids=["nested-900-deep", "alias-bomb", "alias-loop"])
async def test_an_unreadable_edit_is_a_reload_error_and_the_watcher_goes_on(make_upstream, start_proxy, http, bad):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    ups = {"legacy": legacy.url, "new": new.url}
    proxy = await start_proxy(ups, orders("legacy"))
    proxy.path.write_text(bad)

    async def reload_error():
        async with http.get(proxy.admin_url + "/status") as response:
            return (await response.json())["config"]["last_reload_error"]
    problems = (await eventually(reload_error))["problems"]
    assert len(problems) == 1 and re.match(rf"{re.escape(str(proxy.path))}:\d+: YAML ", problems[0])
    assert await served_by(http, proxy.url + "/api/orders/1") == "legacy"  # the last good configuration
    assert metric(proxy, "strangler_config_reloads_total", {"result": "invalid"}) == 1
    proxy.rewrite(ups, orders("new"))
    assert await eventually(lambda: _is(served_by(http, proxy.url + "/api/orders/1"), "new"), timeout=5)


async def _is(value, expected) -> bool:
    return await value == expected


@pytest.mark.parametrize(("bad", "message"), [
    (NESTED, "1: YAML is nested more than 64 levels deep"),
    (ALIAS_BOMB, "YAML aliases expand to more than 100000 nodes"),
    (ALIAS_LOOP, "1: YAML alias '*a' stands inside the collection it names (a loop)"),
    ("version: 1\nlisten: 2001-13-14\n", "2: YAML syntax error: '2001-13-14' is not a valid timestamp"),
], ids=["nested-900-deep", "alias-bomb", "alias-loop", "bad-date"])
def test_check_refuses_what_pyyaml_cannot_read_safely_with_one_line(tmp_path, bad, message):
    path = tmp_path / "routes.yaml"
    path.write_text(bad)
    done = subprocess.run([sys.executable, "-m", "proxy", "check", "--config", str(path)], capture_output=True,
                          text=True, timeout=30, cwd=REPO)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith(f"{path}:") and message in line


def test_a_fifo_in_place_of_routes_yaml_is_refused_and_sigterm_still_ends_the_proxy(tmp_path):
    path = tmp_path / "routes.yaml"
    text = routes_yaml({"legacy": f"http://127.0.0.1:{free_port()}"}, [route("all")],
                       listen=f"127.0.0.1:{free_port()}", admin={"listen": f"127.0.0.1:{free_port()}"})
    path.write_text(text)
    proxy = ProxyProcess(path)
    try:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        os.replace(fifo, path)
        error = asyncio.run(eventually(lambda: admin_json(proxy.admin_port, "/status")["config"]["last_reload_error"]))
        assert error["problems"] == [f"{path}: not a regular file (a FIFO)"]
        (tmp_path / "again.yaml").write_text(text.replace("name: all", "name: everything"))
        os.replace(tmp_path / "again.yaml", path)
        asyncio.run(eventually(lambda: admin_json(proxy.admin_port, "/status")["config"]["routes"] == ["everything"]))
    finally:
        assert proxy.stop(timeout=15) == 0


# -- 6. an admin token variable that is named must be set


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_serve_refuses_to_start_when_the_admin_token_variable_is_unset(tmp_path, command):
    path = tmp_path / "routes.yaml"
    path.write_text(routes_yaml({"legacy": "http://127.0.0.1:9"}, [route("all")],
                                admin={"listen": "127.0.0.1:0", "token_env": "TEST_UNSET_ADMIN_TOKEN"}))
    env = {k: v for k, v in os.environ.items() if k != "TEST_UNSET_ADMIN_TOKEN"}
    for value in (None, ""):
        done = subprocess.run([sys.executable, "-m", "proxy", command, "--config", str(path)], capture_output=True,
                              text=True, timeout=30, cwd=REPO,
                              env=env if value is None else {**env, "TEST_UNSET_ADMIN_TOKEN": value})
        assert done.returncode == 1
        assert "admin.token_env names TEST_UNSET_ADMIN_TOKEN, which is not set or is empty" in done.stderr


def test_check_only_warns_when_the_admin_token_variable_is_unset_where_it_runs(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(routes_yaml({"legacy": "http://127.0.0.1:9"}, [route("all")],
                                admin={"listen": "127.0.0.1:0", "token_env": "TEST_UNSET_ADMIN_TOKEN"}))
    env = {k: v for k, v in os.environ.items() if k != "TEST_UNSET_ADMIN_TOKEN"}
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "token_env" in text)
    for value, warned in ((None, True), ("", True), ("secret", False)):  # the file is checked, not this shell
        done = subprocess.run([sys.executable, "-m", "proxy", "check", "--config", str(path)], capture_output=True,
                              text=True, timeout=30, cwd=REPO,
                              env=env if value is None else {**env, "TEST_UNSET_ADMIN_TOKEN": value})
        assert done.returncode == 0 and done.stdout.splitlines()[-1] == "ok: 1 routes, 1 upstreams"
        assert done.stdout.startswith(f"{path}:{line}: warning: admin.token_env names TEST_UNSET_ADMIN_TOKEN, "
                                      "which is not set or is empty") == warned


async def test_a_reload_naming_an_unset_admin_token_variable_keeps_the_last_good_config(
        make_upstream, start_proxy, http, monkeypatch):
    monkeypatch.delenv("TEST_UNSET_ADMIN_TOKEN", raising=False)
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    ups = {"legacy": legacy.url, "new": new.url}
    proxy = await start_proxy(ups, orders("legacy"))
    proxy.rewrite(ups, orders("new"), admin={"listen": "127.0.0.1:0", "token_env": "TEST_UNSET_ADMIN_TOKEN"})
    assert await proxy.proxy.reload("test") is False
    assert await served_by(http, proxy.url + "/api/orders/1") == "legacy"
    async with http.get(proxy.admin_url + "/status") as response:  # still open: no token was ever in force
        assert "TEST_UNSET_ADMIN_TOKEN" in (await response.json())["config"]["last_reload_error"]["problems"][0]


@pytest.mark.parametrize(("listen", "admin", "expected"), [
    ("127.0.0.1:8080", {"listen": "127.0.0.1:8080"}, "admin.listen 127.0.0.1:8080 is the edge's own address"),
    ("0.0.0.0:8080", {"listen": "127.0.0.1:8080"}, "admin.listen 127.0.0.1:8080 is the edge's own address"),
    ("127.0.0.1:8080", {"listen": "0.0.0.0:9901"}, "warning: admin.listen 0.0.0.0:9901 is reachable from other hosts"),
])
def test_check_guards_the_admin_listener(tmp_path, listen, admin, expected):
    path = tmp_path / "routes.yaml"
    path.write_text(routes_yaml({"legacy": "http://127.0.0.1:9"}, [route("all")], listen=listen, admin=admin))
    done = subprocess.run([sys.executable, "-m", "proxy", "check", "--config", str(path)], capture_output=True,
                          text=True, timeout=30, cwd=REPO)
    assert expected in done.stdout
    assert done.returncode == (0 if "warning" in expected else 1)


# -- 13. credentials echoed by an upstream never reach the report store


async def test_echoed_credentials_never_reach_the_database_or_the_html_file(make_upstream, start_proxy, http,
                                                                           tmp_path):
    secrets = {name: f"secret-{n}-for-{name.lower()}" for n, name in enumerate(
        ["X-Api-Key", "X-Auth-Token", "X-Session-Id", "X-Csrf-Token", "X-Amz-Security-Token", "Api-Key",
         "X-Access-Token", "X-Client-Secret"])}

    def echo_service(answer: str):
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            pairs = [[name, value] for name, value in request.headers.items() if name in secrets]
            if answer == "text":  # as lines, and as a Python service would print them
                return web.Response(text="\n".join(f"{name}: {value}" for name, value in pairs) +
                                    f"\ntoken: {secrets['X-Api-Key']}-text\nside: legacy\n"
                                    f"{request.headers!r}\n{[tuple(pair) for pair in pairs]!r}")
            return web.json_response({"headers": pairs, "fields": dict(pairs), "side": answer})
        return handle
    database = tmp_path / "divergence.db"
    legacy = await make_upstream("legacy", echo_service("legacy"))
    new = await make_upstream("new", echo_service("text"))
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              [route("echo", "/", new="new", parallel_run={"enabled": True})],
                              reports={"database": str(database)})
    async with http.get(proxy.url + "/echo", headers=secrets) as response:
        assert response.status == 200
    await eventually(lambda: metric(proxy, "strangler_comparisons_total", {"route": "echo", "result": "diverged"}))
    await asyncio.to_thread(proxy.proxy.sink.flush)
    page = tmp_path / "report.html"
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "proxy", "report", "html", "--db",
                                                    str(database), "--out", str(page)],
                                   capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("divergence.db*")) + page.read_bytes()
    assert [name for name, value in secrets.items() if value.encode() in stored] == []
    assert b"side" in stored  # what is not a secret is kept
    assert page.stat().st_mode & 0o077 == 0  # as private as the database it shows
