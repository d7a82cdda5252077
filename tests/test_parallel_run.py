"""The parallel run through real upstreams that differ in planted ways: who answers, what is counted."""

import asyncio
import gzip
import itertools
import json
import time

import aiohttp
import pytest
from aiohttp import web

from proxy.model import Stickiness, ToggleSpec, Verdict
from proxy.shadow import compare
from proxy.shadow import run as shadow_run
from reports import accepted, query
from reports.schema import open_database
from tests.helpers import eventually, free_port, route
from toggles.unleash import UnleashToggles

STAMP = itertools.count()


def item(request: web.BaseRequest, price: int) -> web.Response:
    n = int(request.path.rsplit("/", 1)[1])
    return web.json_response({"id": n, "name": f"item {n}", "price": price, "updated_at": next(STAMP)})


async def legacy_items(request: web.BaseRequest) -> web.StreamResponse:
    return item(request, 10)


async def new_items(request: web.BaseRequest) -> web.StreamResponse:
    n = int(request.path.rsplit("/", 1)[1])
    return item(request, 11 if n % 4 == 0 else 10)  # the planted bug: every fourth item's price


def compared(proxy, name: str = "items") -> float:
    registry = proxy.proxy.metrics.registry
    return sum(registry.get_sample_value("strangler_comparisons_total", {"route": name, "result": r}) or 0
               for r in ("matched", "diverged"))


def skipped(proxy, reason: str, name: str = "items") -> float:
    value = proxy.proxy.metrics.registry.get_sample_value("strangler_shadows_skipped_total",
                                                          {"route": name, "reason": reason})
    return value or 0.0


async def skips(proxy, reason: str, expected: int = 1, timeout: float = 10) -> None:
    """Wait until `expected` shadows have been skipped for `reason`."""
    await eventually(lambda: skipped(proxy, reason) >= expected, timeout, interval=0.02,
                     what=lambda: f"only {skipped(proxy, reason)} of {expected} skipped ({reason})")


async def settle(proxy, expected: int, name: str = "items", timeout: float = 20) -> None:
    """Wait until `expected` comparisons are done, then until the store has written them."""
    await eventually(lambda: compared(proxy, name) >= expected, timeout, interval=0.02,
                     what=lambda: f"only {compared(proxy, name)} of {expected} comparisons")
    await asyncio.to_thread(proxy.proxy.sink.flush)


@pytest.fixture
def database(tmp_path):
    return str(tmp_path / "divergence.db")


def items_route(**run) -> list[dict]:
    parallel = {"enabled": True, **run.pop("parallel_run", {})}
    return [route("items", "/items", new="new", parallel_run=parallel, **run), route("all")]


async def get_all(http, url: str, paths: list[str], headers=None) -> list[tuple[int, dict, str]]:
    async def one(path):
        async with http.get(url + path, headers=headers or {}) as response:
            return response.status, await response.json(), response.headers["X-Upstream"]
    return await asyncio.gather(*(one(p) for p in paths))


async def test_the_client_gets_the_served_side_and_the_other_side_is_marked(make_upstream, start_proxy, http,
                                                                         database):
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", new_items)
    for serve, answering, shadowed in (("legacy", legacy, new), ("new", new, legacy)):
        answering.seen.clear()
        shadowed.seen.clear()
        proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, items_route(serve=serve),
                                  reports={"database": database})
        results = await get_all(http, proxy.url, ["/items/4"], {"X-Request-Id": f"rid-{serve}"})
        assert results == [(200, results[0][1], answering.name)]
        assert results[0][1]["price"] == (10 if serve == "legacy" else 11)
        await settle(proxy, 1)
        assert [s.header("X-Strangler-Shadow") for s in answering.seen] == [None]
        assert [(s.target, s.header("X-Strangler-Shadow"), s.header("X-Request-Id")) for s in shadowed.seen] == [
            ("/items/4", "1", f"rid-{serve}")]
        await proxy.proxy.stop()


async def test_exact_divergence_counts_with_noise_silenced_by_ignore_paths(make_upstream, start_proxy, http,
                                                                           database):
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", new_items)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              items_route(compare={"ignore_paths": ["$.updated_at"]}), reports={"database": database})
    await get_all(http, proxy.url, [f"/items/{n}" for n in range(20)])
    await settle(proxy, 20)
    [summary] = query.summary([database])
    shown = summary.as_json()
    assert {key: shown[key] for key in ("route", "compared", "diverged", "divergence_rate", "top_paths")} == {
        "route": "items", "compared": 20, "diverged": 5, "divergence_rate": 0.25,
        "top_paths": [{"path": "$.price", "count": 5}]}
    [signature] = summary.signatures
    example = query.show([database], signature.example)
    assert example["differences"] == [{"path": "$.price", "kind": "changed", "legacy": 10, "new": 11}]
    assert json.loads(example["legacy_body"])["price"] == 10 and json.loads(example["new_body"])["price"] == 11


async def test_noise_probe_learns_what_legacy_itself_changes(make_upstream, start_proxy, http, database):
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", new_items)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              items_route(compare={"noise_probe": 1.0}), reports={"database": database})
    await get_all(http, proxy.url, [f"/items/{n}" for n in range(8)])
    await settle(proxy, 8)
    [summary] = query.summary([database])
    assert (summary.compared, summary.diverged, summary.top_paths) == (8, 2, [("$.price", 2)])
    assert summary.noise == [("$.updated_at", 8)]
    example = query.show([database], summary.signatures[0].example)
    assert [d["path"] for d in example["noise"]] == ["$.updated_at"]
    assert len(legacy.seen) == 16 and sum(s.header("X-Strangler-Shadow") == "1" for s in legacy.seen) == 8


async def test_unsafe_methods_are_shadowed_only_when_named_with_the_same_body(make_upstream, start_proxy, http,
                                                                             database):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    ups = {"legacy": legacy.url, "new": new.url}
    proxy = await start_proxy(ups, items_route(), reports={"database": database})
    async with http.post(proxy.url + "/items", data=b'{"name": "x"}') as response:
        assert response.status == 200
    await asyncio.sleep(0.2)
    assert new.seen == []
    await proxy.proxy.stop()
    proxy = await start_proxy(ups, items_route(parallel_run={"methods": ["GET", "POST"]}),
                              reports={"database": database})
    async with http.post(proxy.url + "/items", data=b'{"name": "x"}') as response:
        assert response.headers["X-Upstream"] == "legacy"
    await settle(proxy, 1)
    assert [(s.method, s.body, s.header("X-Strangler-Shadow")) for s in new.seen] == [("POST", b'{"name": "x"}', "1")]
    assert legacy.seen[-1].body == b'{"name": "x"}'


async def test_a_slow_or_dead_shadow_leaves_the_client_unaffected(make_upstream, start_proxy, http, database):
    async def slow(request):
        await asyncio.sleep(2)
        return await new_items(request)
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", slow)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              items_route(parallel_run={"timeout": 1.0}), reports={"database": database})
    started = time.monotonic()
    [(status, body, side)] = await get_all(http, proxy.url, ["/items/1"])
    assert (status, side, time.monotonic() - started < 1.0) == (200, "legacy", True)  # not waiting for 2 s
    await settle(proxy, 1)
    [summary] = query.summary([database])
    example = query.show([database], summary.signatures[0].example)
    assert example["differences"] == [{"path": "status", "kind": "changed", "legacy": 200,
                                       "new": "no answer (timeout)"}]


async def test_a_slow_served_side_does_not_hold_the_shadow_back(make_upstream, start_proxy, http, database):
    """Both sides get the request at the same time: legacy answers only once new has the request too."""
    shadow_arrived = asyncio.Event()

    async def waits_for_the_shadow(request):
        async with asyncio.timeout(5):
            await shadow_arrived.wait()
        return await legacy_items(request)

    async def new(request):
        shadow_arrived.set()
        return await legacy_items(request)
    legacy, new = await make_upstream("legacy", waits_for_the_shadow), await make_upstream("new", new)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, items_route(), reports={"database": database})
    [(status, _, side)] = await get_all(http, proxy.url, ["/items/1"])
    assert (status, side) == (200, "legacy")
    await settle(proxy, 1)


async def test_a_quick_served_answer_reaches_the_client_before_the_shadow_is_sent(
        make_upstream, start_proxy, http, database, monkeypatch):
    """The served side's head start ends when the client has its answer: the shadow's work never sits
    in front of that answer. (A head start longer than the test shows the answer is what ends it.)"""
    monkeypatch.setattr(shadow_run, "HEAD_START", 60.0)
    legacy_answered, seen_by_new = asyncio.Event(), []

    async def legacy(request):
        await asyncio.sleep(0.2)
        legacy_answered.set()
        return await legacy_items(request)

    async def new(request):
        seen_by_new.append(legacy_answered.is_set())
        return await legacy_items(request)
    legacy, new = await make_upstream("legacy", legacy), await make_upstream("new", new)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, items_route(), reports={"database": database})
    started = time.monotonic()
    [(status, _, side)] = await get_all(http, proxy.url, ["/items/1"])
    await settle(proxy, 1)
    assert (status, side, seen_by_new, time.monotonic() - started < 5) == (200, "legacy", [True], True)


async def test_a_shadow_waiting_to_leave_when_the_proxy_drains_is_still_sent_and_compared(
        make_upstream, start_proxy, http, database, monkeypatch):
    """After the answer, the shadow waits for the proxy to go idle (AFTER_ANSWER); a drain sends it
    at once rather than dropping it. (Waits longer than the test show the drain is what sent it.)"""
    monkeypatch.setattr(shadow_run, "HEAD_START", 60.0)
    monkeypatch.setattr(shadow_run, "AFTER_ANSWER", 60.0)
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", new_items)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, items_route(), reports={"database": database})
    [(status, _, side)] = await get_all(http, proxy.url, ["/items/4"])
    await asyncio.sleep(0.2)
    waiting = len(new.seen)
    await proxy.proxy.stop()
    [summary] = query.summary([database])
    assert (status, side, waiting, len(new.seen)) == (200, "legacy", 0, 1)
    assert (summary.compared, summary.diverged) == (1, 1)


async def test_after_a_fallback_the_shadow_is_not_sent(make_upstream, start_proxy, http, database, monkeypatch):
    """The new service refused, legacy answered as the fallback: there is no new answer to compare,
    so legacy is not asked a second time as the shadow; the skip is counted."""
    monkeypatch.setattr(shadow_run, "HEAD_START", 60.0)  # the shadow leaves only after the answer
    legacy = await make_upstream("legacy", legacy_items)
    proxy = await start_proxy({"legacy": legacy.url, "new": f"http://127.0.0.1:{free_port()}"},
                              items_route(serve="new", fallback="legacy"), reports={"database": database})
    [(status, _, side)] = await get_all(http, proxy.url, ["/items/1"])
    await skips(proxy, "fallback")
    await proxy.proxy.stop()
    assert (status, side, skipped(proxy, "fallback"), len(legacy.seen)) == (200, "legacy", 1, 1)


async def test_shadows_over_the_bound_are_skipped_not_queued(make_upstream, start_proxy, http, database):
    release = asyncio.Event()

    async def held(request):
        await release.wait()
        return await new_items(request)
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", held)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              items_route(parallel_run={"max_in_flight": 2}), reports={"database": database})
    results = await get_all(http, proxy.url, [f"/items/{n}" for n in range(1, 6)])
    assert [(status, side) for status, _, side in results] == [(200, "legacy")] * 5
    assert skipped(proxy, "busy") == 3
    release.set()
    await settle(proxy, 2)


async def test_bodies_over_the_cap_are_served_whole_but_not_compared(make_upstream, start_proxy, http, database):
    async def big(request):
        return web.Response(body=b"x" * 5000, content_type="text/plain")
    legacy, new = await make_upstream("legacy", big), await make_upstream("new", big)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              items_route(parallel_run={"max_body": 1000}), reports={"database": database})
    async with http.get(proxy.url + "/items/1") as response:
        assert await response.read() == b"x" * 5000
    await skips(proxy, "body_too_large", timeout=5)
    assert compared(proxy) == 0


async def test_large_comparisons_wait_in_a_short_queue_and_the_rest_are_skipped(make_upstream, start_proxy, http,
                                                                                database):
    """Answers too large to compare inline wait for the worker process, at most COMPARE_QUEUE of them;
    the rest are skipped and counted (compare_busy), and no client waits for any of it."""
    def catalogue(price: int) -> web.Response:
        return web.json_response({"items": [{"n": n, "price": price if n == 0 else 1} for n in range(2000)]})

    async def legacy(request):
        return catalogue(10)

    async def new(request):
        return catalogue(11)
    legacy, new = await make_upstream("legacy", legacy), await make_upstream("new", new)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, items_route(), reports={"database": database})
    runs, worker_free = proxy.proxy.parallel_run.comparer, asyncio.Event()
    compare_away = runs.compare_away

    async def busy_worker(legacy, new, spec):
        await worker_free.wait()
        return await compare_away(legacy, new, spec)
    runs.compare_away = busy_worker
    results = await get_all(http, proxy.url, [f"/items/{n}" for n in range(10)])
    assert [(status, side) for status, _, side in results] == [(200, "legacy")] * 10
    await eventually(lambda: runs.pending + skipped(proxy, "compare_busy") >= 10, interval=0.02)
    assert (runs.pending, skipped(proxy, "compare_busy")) == (compare.COMPARE_QUEUE, 10 - compare.COMPARE_QUEUE)
    worker_free.set()
    await settle(proxy, compare.COMPARE_QUEUE)
    assert [s.count for s in query.summary([database])[0].signatures] == [compare.COMPARE_QUEUE]


async def test_compressed_and_plain_answers_compare_by_content(make_upstream, start_proxy, database):
    document = json.dumps({"id": 1, "price": 10}).encode()

    async def gzipped(request):
        return web.Response(body=gzip.compress(document), headers={"Content-Encoding": "gzip",
                                                                    "Content-Type": "application/json"})

    async def plain(request):
        return web.Response(body=document, content_type="application/json")
    legacy, new = await make_upstream("legacy", gzipped), await make_upstream("new", plain)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, items_route(), reports={"database": database})
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.get(proxy.url + "/items/1", headers={"Accept-Encoding": "gzip"}) as response:
            assert await response.read() == gzip.compress(document)  # the client still gets the bytes as sent
    await settle(proxy, 1)
    assert proxy.proxy.metrics.registry.get_sample_value(
        "strangler_comparisons_total", {"route": "items", "result": "matched"}) == 1


async def test_the_sample_is_the_users_a_canary_moves_next(make_upstream, start_proxy, http, database):
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", new_items)
    toggle = {"name": "items-to-new", "rollout": 0, "stickiness": "header:X-User-Id"}
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              items_route(serve="toggle", toggle=toggle, parallel_run={"sample": 0.3}),
                              reports={"database": database})
    users = [f"user-{n}" for n in range(100)]
    for user in users:
        await get_all(http, proxy.url, ["/items/1"], {"X-User-Id": user})
    canary = UnleashToggles.local([ToggleSpec("items-to-new", 30, Stickiness("header", "X-User-Id"))])
    moved_at_30 = {u for u in users if canary.verdict("items-to-new", {"userId": u}) is Verdict.ON}
    await settle(proxy, len(moved_at_30))  # the last shadows leave just after their answers
    assert {s.header("X-User-Id") for s in new.seen} == moved_at_30
    assert 15 <= len(moved_at_30) <= 45


async def test_metrics_show_comparisons_skips_and_shadow_latency(make_upstream, start_proxy, http, database):
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", new_items)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              items_route(compare={"ignore_paths": ["$.updated_at"]}), reports={"database": database})
    await get_all(http, proxy.url, [f"/items/{n}" for n in range(4)])
    await settle(proxy, 4)
    async with http.get(proxy.admin_url + "/metrics") as response:
        text = await response.text()
    assert 'strangler_comparisons_total{result="diverged",route="items"} 1.0' in text
    assert 'strangler_comparisons_total{result="matched",route="items"} 3.0' in text
    assert 'strangler_shadow_duration_seconds_count{route="items"} 4.0' in text


async def test_divergences_are_counted_by_whether_their_signature_is_accepted(make_upstream, start_proxy, http,
                                                                               database, monkeypatch):
    monkeypatch.setattr("proxy.app.ACCEPTED_EVERY", 0.1)
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", new_items)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              items_route(compare={"ignore_paths": ["$.updated_at"]}), reports={"database": database})
    registry = proxy.proxy.metrics.registry

    def divergences(accepted: str) -> float:
        return registry.get_sample_value("strangler_divergences_total", {"route": "items", "accepted": accepted})
    assert (divergences("true"), divergences("false")) == (0, 0)  # there from the start
    await get_all(http, proxy.url, [f"/items/{n}" for n in range(20)])
    await settle(proxy, 20)
    assert (divergences("true"), divergences("false")) == (0, 5)
    [signature] = query.summary([database])[0].signatures
    db = open_database(database)
    accepted.accept(db, signature.signature, "items", "prices now include tax", None, "test", time.time())
    db.close()
    await eventually(lambda: signature.signature in proxy.proxy.comparer.accepted, timeout=5)
    await get_all(http, proxy.url, [f"/items/{n}" for n in range(20, 40)])
    await settle(proxy, 40)
    assert (divergences("true"), divergences("false")) == (5, 5)


@pytest.mark.parametrize("where", ["comparison", "shadow's answer"])
async def test_a_failure_in_the_parallel_run_is_counted_and_never_reaches_the_client(
        make_upstream, start_proxy, http, database, where, caplog):
    """A bug in a shadow's work is caught, counted (internal_error) and logged; the client and the next
    shadow carry on."""
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", legacy_items)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, items_route(), reports={"database": database})
    runs, failing = proxy.proxy.parallel_run, [True]
    part, name = (runs.comparer, "compare") if where == "comparison" else (runs.evidence, "answered")
    working = getattr(part, name)

    def once_broken(*args):
        if failing and (where == "comparison" or args[1] == "new"):
            failing.clear()
            raise RuntimeError("a bug")
        return working(*args)
    setattr(part, name, once_broken)
    first = await get_all(http, proxy.url, ["/items/1"])
    await skips(proxy, "internal_error")
    second = await get_all(http, proxy.url, ["/items/2"])
    await settle(proxy, 1)
    assert [(status, side) for status, _, side in first + second] == [(200, "legacy")] * 2
    assert (runs.in_flight["items"], len(new.seen)) == (0, 2)
    assert "the parallel run of a request failed" in caplog.text
