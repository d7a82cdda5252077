"""The admin listener: health, readiness, status, Prometheus metrics, and its bearer token."""

import asyncio
import hashlib

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy.model.errors import ConfigError
from tests.helpers import eventually, route


async def test_health_and_readiness(make_upstream, start_proxy, http):
    proxy = await start_proxy({"legacy": (await make_upstream()).url}, [route("all")])
    for path, body in (("/healthz", {"status": "ok"}), ("/readyz", {"status": "ready"})):
        async with http.get(proxy.admin_url + path) as response:
            assert (response.status, await response.json()) == (200, body)


async def test_status_says_what_runs_and_how_the_pools_are_used(make_upstream, start_proxy, http):
    release = asyncio.Event()

    async def held(request: web.BaseRequest) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="ok")
    legacy = await make_upstream(handler=held)
    proxy = await start_proxy({"legacy": {"url": legacy.url, "max_connections": 7}}, [route("all")])
    pending = asyncio.create_task(http.get(proxy.url + "/held"))
    await eventually(lambda: legacy.seen)
    async with http.get(proxy.admin_url + "/status") as response:
        status = await response.json()
    release.set()
    (await pending).release()
    assert set(status) >= {"version", "git_commit", "python", "host", "pid", "started_at", "state", "config",
                           "upstreams"}
    assert status["version"] == "0.1.0" and status["state"] == "ready"
    assert status["config"]["sha256"] == hashlib.sha256(proxy.path.read_bytes()).hexdigest()
    assert status["config"]["routes"] == ["all"] and status["config"]["last_reload_error"] is None
    assert status["upstreams"]["legacy"] == {"url": legacy.url, "in_flight": 1, "max_connections": 7,
                                             "max_pending": 100, "connect_timeout": 1.0, "timeout": 30.0,
                                             "breaker": "closed"}


async def test_metrics_are_prometheus_text_by_route_and_upstream(make_upstream, start_proxy, http):
    proxy = await start_proxy({"legacy": (await make_upstream()).url}, [route("all")])
    for _ in range(3):
        async with http.get(proxy.url + "/x"):
            pass
    async with http.post(proxy.url + "/x"):
        pass
    async with http.get(proxy.admin_url + "/metrics") as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    requests = {(s.labels["method_class"], s.labels["status_class"]): s.value
                for s in families["strangler_requests"].samples if s.name.endswith("_total")}
    assert requests == {("safe", "2xx"): 3.0, ("unsafe", "2xx"): 1.0, ("safe", "5xx"): 0.0, ("unsafe", "5xx"): 0.0}
    counts = [s for s in families["strangler_request_duration_seconds"].samples if s.name.endswith("_count")]
    assert [(s.labels, s.value) for s in counts] == [({"route": "all", "upstream": "legacy"}, 4.0)]
    assert "strangler_upstream_in_flight" in families and "strangler_config_reloads" in families
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= set(families)


async def test_every_series_an_alert_watches_exists_from_the_start(make_upstream, start_proxy, http):
    """Before any request, failure or comparison: an alert on a series that does not exist sees nothing."""
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    plan = {"steps": [0, 50, 100]}
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              [route("orders", "/orders", new="new", parallel_run={"enabled": True},
                                     serve="toggle", toggle={"name": "t", "rollout": 100,
                                                             "stickiness": "header:X-User"},
                                     rollout_plan=plan), route("all")])
    async with http.get(proxy.admin_url + "/metrics") as response:
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(await response.text()) for s in f.samples}
    assert samples[("strangler_breaker_state", (("upstream", "new"),))] == 0
    assert samples[("strangler_upstream_errors_total", (("kind", "timeout"), ("upstream", "legacy")))] == 0
    assert samples[("strangler_requests_total", (("method_class", "safe"), ("route", "orders"),
                                                 ("status_class", "5xx"), ("upstream", "new")))] == 0
    assert samples[("strangler_comparisons_total", (("result", "diverged"), ("route", "orders")))] == 0
    assert samples[("strangler_shadows_skipped_total", (("reason", "busy"), ("route", "orders")))] == 0
    assert samples[("strangler_rollout_moves_total", (("action", "rollback"), ("route", "orders")))] == 0
    assert samples[("strangler_report_problems_total", (("kind", "queue_full"),))] == 0


async def test_edge_listener_never_serves_admin_paths(make_upstream, start_proxy, http):
    proxy = await start_proxy({"legacy": (await make_upstream()).url}, [route("api", "/api")])
    async with http.get(proxy.url + "/metrics") as response:
        assert response.status == 404 and (await response.json())["error"] == "no_route"


async def test_unknown_admin_path_is_json_404(make_upstream, start_proxy, http):
    proxy = await start_proxy({"legacy": (await make_upstream()).url}, [route("all")])
    async with http.get(proxy.admin_url + "/nope") as response:
        assert response.status == 404 and (await response.json())["error"] == "not_found"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/status", "/metrics"])
async def test_token_guards_every_admin_path(make_upstream, start_proxy, http, monkeypatch, path):
    monkeypatch.setenv("TEST_ADMIN_TOKEN", "s3cret")
    proxy = await start_proxy({"legacy": (await make_upstream()).url}, [route("all")],
                              admin={"listen": "127.0.0.1:0", "token_env": "TEST_ADMIN_TOKEN"})
    for headers, expected in (({}, 401), ({"Authorization": "Bearer nope"}, 401),
                              ({"Authorization": "s3cret"}, 401), ({"Authorization": "Bearer s3cret"}, 200)):
        async with http.get(proxy.admin_url + path, headers=headers) as response:
            assert response.status == expected, headers
            if expected == 401:
                assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_without_the_variable_set_the_proxy_does_not_start(make_upstream, start_proxy, monkeypatch):
    monkeypatch.delenv("TEST_ADMIN_TOKEN", raising=False)  # named but unset: never an open admin listener
    with pytest.raises(ConfigError, match="admin.token_env names TEST_ADMIN_TOKEN, which is not set"):
        await start_proxy({"legacy": (await make_upstream()).url}, [route("all")],
                          admin={"listen": "127.0.0.1:0", "token_env": "TEST_ADMIN_TOKEN"})
