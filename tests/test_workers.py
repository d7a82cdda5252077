"""`serve --workers 2`: one port, one admin for all, reloads and the store across processes, drain."""

import asyncio
import json
import os
import signal
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reports import query, timeline
from tests.helpers import ProxyProcess, eventually, free_port, route, routes_yaml


def admin(proxy: ProxyProcess, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}{path}", timeout=5) as response:
        return response.read()


def status(proxy: ProxyProcess) -> dict:
    return json.loads(admin(proxy, "/status"))


def workers_ready(proxy: ProxyProcess) -> int:
    """Workers that said they serve, restarted ones included."""
    return sum(1 for line in proxy.log_lines() if line["logger"] == "strangler" and line["msg"] == "strangler is ready")


def children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def end(pids: list[int]) -> None:
    """SIGKILL what a test left behind (a dead worker's orphans), unless gone already."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


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
    memory = {s.labels.get("worker", "supervisor") for f in text_string_to_metric_families(metrics)
              for s in f.samples if s.name == "process_resident_memory_bytes"}
    assert memory == {"supervisor", "0", "1"}  # summed, the whole proxy's
    counted = sum(s.value for f in text_string_to_metric_families(metrics) for s in f.samples
                  if s.name == "strangler_worker_requests_total")
    assert counted == 40  # a counter now: each worker adds what it answered since it last published


async def test_an_edit_reaches_every_worker_and_their_comparisons_one_store(workers):
    proxy, write, database = workers
    write("new")
    sent = 0

    async def all_new() -> bool:
        nonlocal sent
        sides = await fresh_connections(f"http://127.0.0.1:{proxy.port}/items/1", 20)
        sent += len(sides)
        return set(sides) == {"new"}
    await eventually(all_new, timeout=3, interval=0, what="not every worker applied the edit")
    counted = {}

    async def each_counted_once() -> bool:  # compared once (whichever worker served it) into one file, or skipped
        summary = query.summary([str(database)]) if database.exists() else []
        counted["compared"] = summary[0].compared if summary else 0
        counted["skipped"] = sum(s.value for f in text_string_to_metric_families(
            (await asyncio.to_thread(admin, proxy, "/metrics")).decode()) for s in f.samples
            if s.name == "strangler_shadows_skipped_total")
        assert counted["compared"] + counted["skipped"] <= sent, (counted, sent)  # never one twice
        return counted["compared"] + counted["skipped"] == sent
    await eventually(each_counted_once, interval=0.2, what=lambda: f"{counted} of {sent} sent")


async def test_a_worker_that_dies_is_started_again(workers):
    proxy, _, _ = workers
    first = (await asyncio.to_thread(status, proxy))["workers"][0]["pid"]
    orphans = children(first)  # its comparison process, which outlives a SIGKILL (see the next test)
    os.kill(first, signal.SIGKILL)
    try:
        async def replaced() -> bool:
            worker = (await asyncio.to_thread(status, proxy))["workers"][0]
            return worker["pid"] != first and worker["alive"]
        await eventually(replaced, timeout=20, interval=0.2)
        # and serving: a SIGTERM while it starts would keep the supervisor from exiting (see below)
        await eventually(lambda: workers_ready(proxy) == 3, timeout=20, interval=0.2)
    finally:
        end(orphans)
    assert set(await fresh_connections(f"http://127.0.0.1:{proxy.port}/x", 10)) == {"legacy"}
    errors = [line for line in proxy.log_lines() if line["level"] == "ERROR"]
    assert [line["msg"] for line in errors] == ["a worker died; starting it again"]


async def test_sigterm_while_a_worker_is_started_again_still_exits_in_time(workers):
    proxy, _, _ = workers
    first = (await asyncio.to_thread(status, proxy))["workers"][0]["pid"]
    orphans = children(first)
    os.kill(first, signal.SIGKILL)
    try:
        await eventually(lambda: any(line["msg"] == "a worker died; starting it again" for line in proxy.log_lines()))
        proxy.signal(signal.SIGTERM)  # while the new worker starts
        code = await asyncio.to_thread(proxy.stop, 10)  # its drain timeout is 5 s; SIGKILL after 10
    finally:
        end(orphans)
    assert code == 0


async def test_a_worker_killed_outright_leaves_no_process_behind(workers):
    proxy, _, _ = workers
    first = (await asyncio.to_thread(status, proxy))["workers"][0]["pid"]
    orphans = children(first)
    assert orphans  # its comparison process
    os.kill(first, signal.SIGKILL)
    try:
        await eventually(lambda: not any(Path(f"/proc/{pid}").exists() for pid in orphans), timeout=5)
    finally:
        end(orphans)
        await eventually(lambda: workers_ready(proxy) == 3, timeout=20, interval=0.2)  # a quick teardown


async def test_a_worker_that_keeps_dying_is_started_again_later_each_time_and_said_so_once(workers):
    proxy, _, _ = workers
    ready = workers_ready(proxy)
    for death in range(3):  # each soon after its start: a crash loop
        pid = (await asyncio.to_thread(status, proxy))["workers"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        expected = ready + death + 1
        await eventually(lambda: workers_ready(proxy) == expected, timeout=20, interval=0.2)  # noqa: B023
    errors = [line["msg"] for line in proxy.log_lines() if line["level"] == "ERROR"]
    assert errors == ["a worker died; starting it again",
                      "a worker keeps dying; starting it again with a growing delay"]
    assert set(await fresh_connections(f"http://127.0.0.1:{proxy.port}/x", 6)) == {"legacy"}


async def test_a_supervisor_killed_outright_takes_its_workers_and_their_children_with_it(workers):
    proxy, _, _ = workers
    pids = [w["pid"] for w in (await asyncio.to_thread(status, proxy))["workers"]]
    descendants = pids + [child for pid in pids for child in children(pid)]
    os.kill(proxy.proc.pid, signal.SIGKILL)
    try:
        await eventually(lambda: not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in descendants),
                         timeout=15)
    finally:
        end(descendants)


def _alive(pid: int) -> bool:
    """Not a zombie waiting for a parent to read its exit status."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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
        rollouts = []

        async def at_100() -> bool:
            rollouts[:] = (await asyncio.to_thread(status, proxy))["rollouts"]
            if any(p["percent"] == 100 for p in rollouts):
                return True
            await fresh_connections(f"http://127.0.0.1:{proxy.port}/items/1", 10)  # more evidence
            return False
        await eventually(at_100, timeout=30, interval=0, what=lambda: f"rollouts {rollouts}")
        answered = [w["requests"] for w in (await asyncio.to_thread(status, proxy))["workers"]]
    finally:
        await asyncio.to_thread(proxy.stop, 30)
    moves = [(e["action"], e["to_percent"]) for e in query_events(database)]
    assert moves == [("start", 0), ("advance", 100)]
    assert all(n > 0 for n in answered), answered  # both workers served, both judged


def query_events(database) -> list[dict]:
    return timeline.plan_timeline([str(database)], "items").events


async def test_every_line_says_which_process_wrote_it(workers):
    """One SIGHUP is one line from each process: the supervisor's and each worker's, told apart."""
    proxy, _, _ = workers
    pids = {w["worker"]: w["pid"] for w in (await asyncio.to_thread(status, proxy))["workers"]}
    proxy.signal(signal.SIGHUP)

    def unchanged() -> list[dict]:
        return [line for line in proxy.log_lines() if line["msg"] == "routes.yaml unchanged"]
    await eventually(lambda: len(unchanged()) == 3, timeout=10, interval=0.1)
    assert sorted((line["pid"], line.get("worker", -1)) for line in unchanged()) == sorted(
        [(proxy.proc.pid, -1), *((pid, index) for index, pid in pids.items())])
    ready = [line for line in proxy.log_lines() if line["msg"] == "strangler is ready" and "worker" in line]
    assert ready and all("admin" not in line for line in ready)  # a worker has no admin listener to name
    assert all("pid" in line for line in proxy.log_lines())
