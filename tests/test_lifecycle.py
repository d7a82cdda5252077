"""Start, reload on SIGHUP, drain on SIGTERM/SIGINT, and the logs of it all, on a real process."""

import asyncio
import os
import signal
import socket
import subprocess
import sys

import aiohttp
import pytest
from aiohttp import web

from tests.helpers import REPO, ProxyProcess, eventually, free_port, route, routes_yaml


async def slow(request: web.BaseRequest) -> web.StreamResponse:
    await asyncio.sleep(0.8)
    return web.Response(text="finished")


def config_file(tmp_path, upstreams, routes, **top):
    path = tmp_path / "routes.yaml"
    text = routes_yaml(upstreams, routes, **top)
    path.write_text(text.replace("127.0.0.1:0", "127.0.0.1:{}").format(free_port(), free_port()))
    return path


async def test_draining_finishes_in_flight_requests_and_refuses_new_ones(make_upstream, start_proxy):
    legacy = await make_upstream(handler=slow)
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")], drain_timeout=10)
    async with aiohttp.ClientSession() as http:
        requests = [asyncio.create_task(http.get(proxy.url + f"/{i}")) for i in range(20)]
        await eventually(lambda: len(legacy.seen) >= 20, interval=0.01)
        stopping = asyncio.create_task(proxy.proxy.stop())
        await asyncio.sleep(0.1)
        async with http.get(proxy.admin_url + "/readyz") as ready:
            assert (ready.status, await ready.json()) == (503, {"status": "draining"})
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
        for response in await asyncio.gather(*requests):
            assert (response.status, await response.text()) == (200, "finished")
            assert response.headers["Connection"] == "close"  # the client will not send another here
        await asyncio.wait_for(stopping, 5)


async def test_the_drain_timeout_bounds_how_long_stopping_takes(make_upstream, start_proxy):
    async def endless(request: web.BaseRequest) -> web.StreamResponse:
        await asyncio.sleep(60)
        return web.Response()
    legacy = await make_upstream(handler=endless)
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")], drain_timeout=0.5)
    async with aiohttp.ClientSession() as http:
        request = asyncio.create_task(http.get(proxy.url + "/"))
        await eventually(lambda: legacy.seen, interval=0.01)
        await asyncio.wait_for(proxy.proxy.stop(), 5)
        with pytest.raises(aiohttp.ClientError):
            await request


async def test_sigterm_drains_and_exits_zero(make_upstream, tmp_path):
    legacy = await make_upstream(handler=slow)
    proxy = await asyncio.to_thread(ProxyProcess, config_file(tmp_path, {"legacy": legacy.url}, [route("all")]))
    try:
        async with aiohttp.ClientSession() as http:
            requests = [asyncio.create_task(http.get(f"http://127.0.0.1:{proxy.port}/{i}")) for i in range(10)]
            await eventually(lambda: len(legacy.seen) >= 10, interval=0.01)
            proxy.signal(signal.SIGTERM)
            for response in await asyncio.gather(*requests):
                assert (response.status, await response.text()) == (200, "finished")
    finally:
        code = await asyncio.to_thread(proxy.stop)
    assert code == 0
    messages = [line["msg"] for line in proxy.log_lines()]
    drained = messages[messages.index("draining") + 1:]
    assert drained == ["request"] * 10 + ["stopped"]  # all ten finished while draining


async def test_sigint_also_exits_zero(make_upstream, tmp_path):
    legacy = await make_upstream()
    proxy = await asyncio.to_thread(ProxyProcess, config_file(tmp_path, {"legacy": legacy.url}, [route("all")]))
    proxy.signal(signal.SIGINT)
    assert await asyncio.to_thread(proxy.stop) == 0


async def test_sighup_reloads_even_when_the_file_looks_untouched(make_upstream, tmp_path):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    path = config_file(tmp_path, {"legacy": legacy.url, "new": new.url},
                       [route("orders", "/api", new="new", serve="legacy"), route("all")])
    proxy = await asyncio.to_thread(ProxyProcess, path)
    url = f"http://127.0.0.1:{proxy.port}/api/1"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as response:
                assert response.headers["X-Upstream"] == "legacy"
            before = os.stat(path)
            path.write_text(path.read_text().replace("serve: legacy", "serve: new   "))  # same size
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # and same mtime: only SIGHUP tells
            proxy.proc.send_signal(signal.SIGHUP)

            async def served_by_new() -> bool:
                async with http.get(url) as response:
                    return response.headers["X-Upstream"] == "new"
            await eventually(served_by_new, timeout=2, interval=0.02)
    finally:
        await asyncio.to_thread(proxy.stop)
    reloads = [line for line in proxy.log_lines() if line["msg"] == "routes.yaml reloaded"]
    assert [line["trigger"] for line in reloads] == ["SIGHUP"]


async def test_logs_are_json_lines_with_the_request_id(make_upstream, tmp_path):
    legacy = await make_upstream()
    path = config_file(tmp_path, {"legacy": legacy.url, "gone": f"http://127.0.0.1:{free_port()}"},
                       [route("gone", "/gone", legacy="gone"), route("all")])
    proxy = await asyncio.to_thread(ProxyProcess, path)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{proxy.port}/x", headers={"X-Request-Id": "trace-1"}):
                pass
            async with http.get(f"http://127.0.0.1:{proxy.port}/gone") as response:
                failed_id = response.headers["X-Request-Id"]
    finally:
        await asyncio.to_thread(proxy.stop)
    text = proxy.log.read_text().splitlines()
    lines = proxy.log_lines()
    assert len(lines) == len(text)  # every line is one JSON object
    by_id = {line.get("request_id"): line for line in lines if "request_id" in line}
    assert by_id["trace-1"]["bytes_out"] > 100  # the answer's head and body, as sent
    assert by_id["trace-1"] | {"ts": None, "ms": None, "bytes_out": None} == {
        "level": "INFO", "logger": "strangler.access", "msg": "request", "method": "GET", "path": "/x",
        "status": 200, "client": "127.0.0.1", "route": "all", "upstream": "legacy", "request_id": "trace-1",
        "side": "legacy", "bytes_in": 0, "bytes_out": None, "pid": proxy.proc.pid, "ts": None, "ms": None}
    assert all(line["pid"] == proxy.proc.pid for line in lines)
    assert not [line for line in text if '"None"' in line]
    assert (by_id[failed_id]["level"], by_id[failed_id]["failure"]) == ("WARNING", "refused")
    assert not [line for line in lines if line["level"] == "ERROR"]  # nothing here needs a person


async def test_the_access_line_says_the_side_the_toggles_verdict_the_shadow_and_bytes_each_way(make_upstream,
                                                                                                tmp_path):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    toggle = {"name": "orders-to-new", "rollout": 100, "stickiness": "header:X-User"}
    path = config_file(tmp_path, {"legacy": legacy.url, "new": new.url},
                       [route("orders", "/orders", new="new", serve="toggle", toggle=toggle,
                              parallel_run={"enabled": True, "methods": ["GET", "POST"]}), route("all")])
    proxy = await asyncio.to_thread(ProxyProcess, path)
    try:
        async with aiohttp.ClientSession() as http:
            for rid, data in (("with-user", None), ("posted", b"x" * 1234)):
                async with http.post(f"http://127.0.0.1:{proxy.port}/orders/1", data=data,
                                     headers={"X-Request-Id": rid, "X-User": "ann"}) as response:
                    sent = len(await response.read())
            async with http.get(f"http://127.0.0.1:{proxy.port}/x", headers={"X-Request-Id": "plain"}):
                pass
    finally:
        await asyncio.to_thread(proxy.stop)
    by_id = {line.get("request_id"): line for line in proxy.log_lines() if line["logger"] == "strangler.access"}
    posted = by_id["posted"]
    assert (posted["side"], posted["toggle"], posted["shadow"], posted["bytes_in"]) == ("new", "on", "sent", 1234)
    assert posted["bytes_out"] > sent  # the body and the head before it
    assert "toggle" not in by_id["plain"] and "shadow" not in by_id["plain"]


async def test_log_level_hides_what_is_below_it(make_upstream, tmp_path):
    legacy = await make_upstream()
    proxy = await asyncio.to_thread(ProxyProcess, config_file(tmp_path, {"legacy": legacy.url}, [route("all")]),
                                    "--log-level", "warning")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{proxy.port}/x"):
            pass
    await asyncio.to_thread(proxy.stop)
    assert [line for line in proxy.log_lines() if line["level"] in ("DEBUG", "INFO")] == []


def test_an_invalid_config_stops_serve_before_it_starts(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text("version: 1\nupstreams: {}\nroutes:\n  - name: a\n    match: {path: /}\n    legacy: nope\n")
    done = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=30, cwd=REPO)
    assert done.returncode == 1
    assert f"{path}:6: route 'a': unknown upstream 'nope' (known: none defined)" in done.stderr


def test_a_busy_port_is_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = config_file(tmp_path, {"legacy": "http://127.0.0.1:9"}, [route("all")])
        done = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(path), "--port", str(port)],
                              capture_output=True, text=True, timeout=30, cwd=REPO)
    assert done.returncode == 1
    assert "address already in use" in done.stderr.lower() and "Traceback" not in done.stderr
