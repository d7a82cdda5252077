"""`serve --workers 2`: one port, one admin for all, reloads and the store across processes, drain."""

import asyncio
import json
import os
import signal
import time
import urllib.request

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reports import query
from tests.helpers import ProxyProcess, free_port, route, routes_yaml


def admin(proxy: ProxyProcess, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}{path}", timeout=5) as response:
        return response.read()


def status(proxy: ProxyProcess) -> dict:
    return json.loads(admin(proxy, "/status"))


async def fresh_connections(url: str, count: int) -> list[str]:
    """`count` requests, each on a connection of its own (so the kernel picks a worker for each)."""
    sides = []
    for _ in range(count):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async with http.get(url) as response:
                assert response.status == 200
                sides.append(response.headers["X-Upstream"])
    return sides


@pytest.fixture
async def workers(make_upstream, tmp_path):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    path = tmp_path / "routes.yaml"
    ups = {"legacy": legacy.url, "new": new.url}

    def write(serve: str) -> None:
        path.write_text(routes_yaml(ups, [route("items", "/items", new="new", serve=serve,
                                                parallel_run={"enabled": True}), route("all")],
                                    listen=f"127.0.0.1:{port}", admin={"listen": f"127.0.0.1:{admin_port}"},
                                    reports={"database": str(tmp_path / "d.db")}))
    port, admin_port = free_port(), free_port()
    write("legacy")
    proxy = await asyncio.to_thread(ProxyProcess, path, "--workers", "2", "--drain-timeout", "5")
    try:
        yield proxy, write, tmp_path / "d.db"
    finally:
        await asyncio.to_thread(proxy.stop, 30)


async def test_two_workers_share_the_port_and_admin_speaks_for_both(workers):
    proxy, _, _ = workers
    await fresh_connections(f"http://127.0.0.1:{proxy.port}/x", 40)
    state = await asyncio.to_thread(status, proxy)
    assert [(w["worker"], w["alive"]) for w in state["workers"]] == [(0, True), (1, True)]
    await asyncio.sleep(1.2)  # workers publish their gauges every second
    state = await asyncio.to_thread(status, proxy)
    assert all(w["requests"] > 0 for w in state["workers"]), state["workers"]  # the kernel spread them
    metrics = (await asyncio.to_thread(admin, proxy, "/metrics")).decode()
    requests = sum(s.value for f in text_string_to_metric_families(metrics) for s in f.samples
                   if s.name == "strangler_requests_total")
    assert requests == 40


async def test_an_edit_reaches_every_worker_and_their_comparisons_one_store(workers):
    proxy, write, database = workers
    write("new")
    edited, sent = time.monotonic(), 0
    while True:
        sides = await fresh_connections(f"http://127.0.0.1:{proxy.port}/items/1", 20)
        sent += len(sides)
        if set(sides) == {"new"}:
            break
        assert time.monotonic() - edited < 3, "not every worker applied the edit"
    deadline = time.monotonic() + 10
    while True:  # each request compared once (whichever worker served it) into one file, or counted as skipped
        summary = query.summary([str(database)]) if database.exists() else []
        compared = summary[0].compared if summary else 0
        skipped = sum(s.value for f in text_string_to_metric_families(
            (await asyncio.to_thread(admin, proxy, "/metrics")).decode()) for s in f.samples
            if s.name == "strangler_shadows_skipped_total")
        if compared + skipped == sent:
            break
        assert time.monotonic() < deadline and compared + skipped < sent, (compared, skipped, sent)
        await asyncio.sleep(0.2)


async def test_a_worker_that_dies_is_started_again(workers):
    proxy, _, _ = workers
    first = (await asyncio.to_thread(status, proxy))["workers"][0]["pid"]
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:
        worker = (await asyncio.to_thread(status, proxy))["workers"][0]
        if worker["pid"] != first and worker["alive"]:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert set(await fresh_connections(f"http://127.0.0.1:{proxy.port}/x", 10)) == {"legacy"}
    errors = [line for line in proxy.log_lines() if line["level"] == "ERROR"]
    assert [line["msg"] for line in errors] == ["a worker died; starting it again"]


async def test_sigterm_drains_every_worker_and_exits_zero(workers):
    proxy, _, _ = workers
    pids = [w["pid"] for w in (await asyncio.to_thread(status, proxy))["workers"]]
    proxy.signal(signal.SIGTERM)
    assert await asyncio.to_thread(proxy.stop, 30) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_workers_judge_one_shared_plan_and_move_it_once(make_upstream, tmp_path):
    """Both workers gather evidence into one file and judge it; the plan advances once, not twice."""
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    path, database = tmp_path / "routes.yaml", tmp_path / "d.db"
    plan = {"steps": [0, 100], "check_interval": 0.2,
            "advance": {"min_comparisons": 30, "min_seconds": 0.5, "max_latency_ratio": None},
            "rollback": {"max_latency_ratio": None}}
    path.write_text(routes_yaml(
        {"legacy": legacy.url, "new": new.url},
        [route("items", "/items", new="new", serve="toggle", parallel_run={"enabled": True}, rollout_plan=plan,
               toggle={"name": "items-to-new", "stickiness": "header:X-User-Id"}), route("all")],
        listen=f"127.0.0.1:{free_port()}", admin={"listen": f"127.0.0.1:{free_port()}"},
        reports={"database": str(database)}))
    proxy = await asyncio.to_thread(ProxyProcess, path, "--workers", "2", "--drain-timeout", "5")
    try:
        deadline = time.monotonic() + 30
        while not [p for p in (await asyncio.to_thread(status, proxy))["rollouts"] if p["percent"] == 100]:
            assert time.monotonic() < deadline, (await asyncio.to_thread(status, proxy))["rollouts"]
            await fresh_connections(f"http://127.0.0.1:{proxy.port}/items/1", 10)
        answered = [w["requests"] for w in (await asyncio.to_thread(status, proxy))["workers"]]
    finally:
        await asyncio.to_thread(proxy.stop, 30)
    moves = [(e["action"], e["to_percent"]) for e in query_events(database)]
    assert moves == [("start", 0), ("advance", 100)]
    assert all(n > 0 for n in answered), answered  # both workers served, both judged


def query_events(database) -> list[dict]:
    return query.plan_timeline([str(database)], "items").events
