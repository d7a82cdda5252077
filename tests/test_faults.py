"""Faults between the proxy and an upstream (tests/faults.py), on the served side and the shadow side:
what the client gets, and that nothing is left behind (requests in flight, connections, tasks, memory)."""

import asyncio
import gc
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from reports import query
from tests.faults import FaultProxy, faults  # noqa: F401
from tests.helpers import eventually, route
from tests.test_parallel_run import settle

FAST = {"timeout": 1.0, "connect_timeout": 0.5}
BIG = [f"item-{n:04d}" for n in range(1000)]  # ~13 KB of JSON: far longer than `reset_after`


async def answer(request: web.BaseRequest) -> web.StreamResponse:
    """/small: a body a slow drip still finishes within the timeout; anything else: a big one."""
    if request.path == "/small":
        return web.json_response({"ok": True})
    return web.json_response({"path": request.path, "items": BIG})


# mode, FaultProxy settings, path, what the client gets on the served side, connections the FaultProxy sees
SERVED = {
    "refuse": ("refuse", {}, "/x", (502, "upstream_refused"), 0),
    # a broken connection is tried once more (it may have been a stale pooled one): two connections
    "reset": ("reset", {}, "/x", (502, "upstream_broken"), 2),
    "malformed": ("malformed", {}, "/x", (502, "upstream_broken"), 2),
    "hang": ("hang", {}, "/x", (504, "upstream_timeout"), 1),
    "reset_mid_body": ("reset_mid_body", {"reset_after": 1000}, "/x", (200, "cut"), 1),
    "drip": ("drip", {"drip_delay": 0.001}, "/small", (200, "whole"), 1),
    "drip_too_slow": ("drip", {"drip_delay": 0.001}, "/x", (200, "cut"), 1),
}
# what the comparison says of the shadow's answer (None: it matched)
SHADOW = {"refuse": "refused", "reset": "broken", "malformed": "broken", "hang": "timeout",
          "reset_mid_body": "broken", "drip": None, "drip_too_slow": "timeout"}


async def fetch(client: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    """Status, and how the body ended: its JSON error code, "whole", or "cut" (ClientPayloadError)."""
    async with client.get(url) as response:
        try:
            body = await asyncio.wait_for(response.read(), 10)
        except aiohttp.ClientPayloadError:
            return response.status, "cut", b""
        if response.status >= 500:
            assert response.content_type == "application/json"
            return response.status, (await response.json())["error"], body
        return response.status, "whole", body


def idle_pooled(proxy, url: str | None = None) -> int:
    """Idle keep-alive connections in the proxy's pools (to `url` only, if given)."""
    pools = [p for p in proxy.proxy.live.current.all_pools() if url is None or p.spec.url == url]
    return sum(p.idle for p in pools)


async def assert_nothing_left(proxy, fault: FaultProxy, tasks_before: int) -> None:
    """Once the client has its answer (and its session is closed): no request in flight in any pool,
    no connection in use, no shadow in flight, the FaultProxy holding only idle pooled connections (none
    after a fault), and no more asyncio tasks than before but those serving such idle connections."""
    def left_behind() -> str:
        pools = proxy.proxy.live.current.all_pools()
        busy = {p.spec.name: p.in_flight for p in pools if p.in_flight}
        acquired = sum(p.open - p.idle for p in pools)  # connections open and not idle: in use
        shadows = sum(proxy.proxy.parallel_run.in_flight.values())
        # each idle pooled connection keeps one aiohttp server task at its upstream; one through the
        # FaultProxy also keeps the FaultProxy's own three (the connection and its two directions)
        allowed = tasks_before + idle_pooled(proxy) + 3 * fault.open
        tasks = asyncio.all_tasks()
        state = dict(busy=busy, acquired=acquired, shadows=shadows, fault_open=fault.open,
                     fault_idle=idle_pooled(proxy, fault.url), tasks=len(tasks), allowed=allowed)
        if not busy and not acquired and not shadows and fault.open == state["fault_idle"] \
                and len(tasks) <= allowed:
            return ""
        return f"left behind: {state}; tasks: {sorted(t.get_coro().__qualname__ for t in tasks)}"
    await eventually(lambda: not left_behind(), timeout=5, what=left_behind)


@pytest.mark.parametrize("case", list(SERVED))
async def test_a_fault_on_the_served_side(case, make_upstream, start_proxy, faults):  # noqa: F811
    mode, settings, path, (status, ending), connections = SERVED[case]
    legacy = await make_upstream("legacy", answer)
    fault = await faults(legacy.url, mode, **settings)
    proxy = await start_proxy({"legacy": {"url": fault.url, **FAST}}, [route("all")])
    tasks_before = len(asyncio.all_tasks())
    async with aiohttp.ClientSession() as client:
        started = time.monotonic()
        got = await fetch(client, proxy.url + path)
        elapsed = time.monotonic() - started
    assert got[:2] == (status, ending), got
    if ending == "whole":
        async with aiohttp.ClientSession() as direct:
            async with direct.get(legacy.url + path) as response:
                assert got[2] == await response.read()
    if mode == "hang":
        assert 0.9 <= elapsed < 2.0, elapsed  # the route's timeout (1 s), not the upstream's whim
    elif case != "drip_too_slow":
        assert elapsed < 1.0, elapsed
    assert fault.accepted == connections
    await assert_nothing_left(proxy, fault, tasks_before)


@pytest.mark.parametrize("case", list(SERVED))
async def test_a_fault_on_the_shadow_side(case, make_upstream, start_proxy, faults, tmp_path: Path):  # noqa: F811
    mode, settings, path, _, _ = SERVED[case]
    legacy, new = await make_upstream("legacy", answer), await make_upstream("new", answer)
    fault = await faults(new.url, mode, **settings)
    database = str(tmp_path / "d.db")
    proxy = await start_proxy(
        {"legacy": {"url": legacy.url, **FAST}, "new": {"url": fault.url, **FAST}},
        [route("items", "/", new="new", serve="legacy", parallel_run={"enabled": True, "timeout": 1.0})],
        reports={"database": database})
    tasks_before = len(asyncio.all_tasks())
    async with aiohttp.ClientSession() as client:
        started = time.monotonic()
        status, ending, body = await fetch(client, proxy.url + path)
        elapsed = time.monotonic() - started
    assert (status, ending, elapsed < 0.8) == (200, "whole", True), (status, ending, elapsed)
    assert body == web.json_response(expected(path)).body
    await settle(proxy, 1, name="items")
    [summary] = query.summary([database])
    kind = SHADOW[case]
    if kind is None:
        assert (summary.compared, summary.diverged) == (1, 0)
    else:
        assert (summary.compared, summary.diverged) == (1, 1)
        example = query.show([database], summary.signatures[0].example)
        assert example["differences"] == [{"path": "status", "kind": "changed", "legacy": 200,
                                           "new": f"no answer ({kind})"}]
    assert fault.accepted == (0 if mode == "refuse" else 1)  # a shadow is never sent twice
    await assert_nothing_left(proxy, fault, tasks_before)


def expected(path: str) -> dict:
    return {"ok": True} if path == "/small" else {"path": path, "items": BIG}


def rss_kib() -> int:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


async def test_memory_stays_steady_over_repeated_faults(make_upstream, start_proxy, faults):  # noqa: F811
    async def closing(request: web.BaseRequest) -> web.StreamResponse:
        response = await answer(request)
        response.force_close()  # so the next request opens a new connection, and meets the next fault
        return response
    legacy = await make_upstream("legacy", closing)
    fault = await faults(legacy.url, reset_after=1000, drip_delay=0.0)
    upstream = {"url": fault.url, "timeout": 0.2, "connect_timeout": 0.5, "breaker": {"failures": 10000}}
    proxy = await start_proxy({"legacy": upstream}, [route("all")])
    cycle = ["pass", "refuse", "reset", "malformed", "reset_mid_body", "drip"]
    outcomes: dict[str, set] = {}
    figures = []
    tasks_before = len(asyncio.all_tasks())
    started = time.monotonic()
    async with aiohttp.ClientSession() as client:
        for n in range(300):
            fault.mode = "hang" if n % 60 == 59 else cycle[n % len(cycle)]
            status, ending, _ = await fetch(client, proxy.url + ("/x" if fault.mode == "reset_mid_body" else "/small"))
            outcomes.setdefault(fault.mode, set()).add((status, ending))
            if n + 1 in (100, 300):
                figures.append(rss_kib())
    growth = figures[1] - figures[0]
    print(f"\nRSS after 100 requests: {figures[0]} KiB, after 300: {figures[1]} KiB, growth {growth} KiB; "
          f"{fault.accepted} connections in {time.monotonic() - started:.1f}s; outcomes {outcomes}")
    assert outcomes == {"pass": {(200, "whole")}, "refuse": {(502, "upstream_refused")},
                        "reset": {(502, "upstream_broken")}, "malformed": {(502, "upstream_broken")},
                        "reset_mid_body": {(200, "cut")}, "drip": {(200, "whole")},
                        "hang": {(504, "upstream_timeout")}}
    assert growth < 8 * 1024
    await assert_nothing_left(proxy, fault, tasks_before)
