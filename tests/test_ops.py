"""The operations kit (ops/): the alert rules as promtool checks and unit-tests them; the rules and the
Grafana dashboard's queries against a real Prometheus scraping `strangler serve`; the systemd unit."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.certs import Authority
from tests.helpers import REPO, ProxyProcess, eventually, free_port, route, routes_yaml
from tests.servers import Prometheus, install_prometheus, install_systemd_analyze
from tests.test_docs import slugs

OPS = REPO / "ops"
ALERTS = OPS / "prometheus" / "alerts.yml"
ALERTS_TEST = OPS / "prometheus" / "alerts_test.yml"
DASHBOARD = OPS / "grafana" / "strangler.json"
UNIT = OPS / "systemd" / "strangler.service"
COMPARISON = re.compile(r"\s(==|>=|<=|>|<)\s")  # PromQL's comparisons between values (label matchers have none)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def panels() -> list[dict[str, Any]]:
    return [panel for panel in json.loads(DASHBOARD.read_text())["panels"] if panel["type"] != "row"]


def as_values(expr: str) -> str:
    """An alert's expression with each comparison made `bool`: a sample for every series the alert
    watches, whatever its value, where the alert itself has one only while it fires."""
    return COMPARISON.sub(r" \1 bool ", expr)


def in_grafana(expr: str, route_name: str) -> str:
    """A panel's query as Grafana sends it for one route (a scrape a second: a minute is plenty)."""
    return expr.replace("$route", route_name).replace("$__rate_interval", "1m")


@pytest.fixture(scope="session")
def promtool() -> str:
    install_prometheus()
    return shutil.which("promtool") or "promtool"


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=60)


@pytest.mark.external
def test_promtool_finds_the_rules_valid(promtool):
    checked = run(promtool, "check", "rules", ALERTS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


@pytest.mark.external
async def test_every_metric_name_and_unit_follows_prometheus_conventions(promtool, make_upstream, start_proxy, http):
    """promtool's linter on the proxy's whole /metrics, every series primed from start-up included."""
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              [route("orders", "/orders", new="new", parallel_run={"enabled": True},
                                     rollout_plan={"steps": [0, 50, 100]}), route("all")])
    async with http.get(proxy.admin_url + "/metrics") as response:
        text = await response.text()
    linted = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert (linted.returncode, linted.stdout + linted.stderr) == (0, "")
    assert "process_cpu_seconds_total" in text and "strangler_divergences_total" in text


@pytest.mark.external
def test_every_rule_passes_its_promtool_unit_tests(promtool):
    tested = run(promtool, "test", "rules", ALERTS_TEST)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_rule_is_tested_firing_and_silent():
    firing, silent = set(), set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names == firing == silent


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_rule_waits_says_how_bad_names_what_and_links_its_runbook(rule):
    assert "for" in rule and rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"] and "{{ $labels." in rule["annotations"]["description"]
    assert COMPARISON.search(rule["expr"]), "the threshold is a comparison (as_values relies on it)"
    page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
    assert anchor in slugs((REPO / page).read_text())


def test_the_dashboard_repeats_a_row_per_route_with_each_panel_the_issue_asks_for():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 38  # Grafana 10.0 and later
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["route"]["query"]["query"] == "label_values(strangler_requests_total, route)"
    rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
    assert [row["repeat"] for row in rows] == ["route"]
    assert {panel["title"] for panel in panels()} == {
        "Traffic by side", "Divergence rate", "Latency per side", "Rollout percent"}
    for panel in panels():
        assert panel["targets"] and all('route="$route"' in t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_is_sandboxed_and_outwaits_the_drain():
    unit = unit_settings()
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "NoNewPrivileges": "yes", "DynamicUser": "yes", "CapabilityBoundingSet": "",
                       "StateDirectory": "strangler", "KillSignal": "SIGTERM",
                       "ExecReload": "/bin/kill -HUP $MAINPID"}.items():
        assert unit[key] == [value], key
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    drain = float(re.search(r"--drain-timeout (\S+)", unit["ExecStart"][0])[1])
    assert float(unit["TimeoutStopSec"][0]) > drain + 10  # the supervisor waits for its workers that long


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    return install_systemd_analyze()  # on first use, as the other outside programs: these tests never skip


@pytest.fixture
def runnable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart naming this environment's `strangler` (verify checks that it exists)."""
    strangler = Path(sys.executable).parent / "strangler"
    assert strangler.exists(), strangler
    unit = tmp_path / "strangler.service"
    unit.write_text(UNIT.read_text().replace("/opt/strangler/bin/strangler", str(strangler)))
    return unit


@pytest.mark.external
def test_systemd_analyze_verifies_the_unit(runnable_unit, systemd_analyze):
    verified = run(systemd_analyze, "verify", runnable_unit)
    assert (verified.returncode, verified.stderr) == (0, "")


@pytest.mark.external
def test_systemd_rates_the_units_exposure_low(runnable_unit, systemd_analyze):
    rated = run(systemd_analyze, "security", "--offline=yes", "--no-pager", runnable_unit)
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", rated.stdout)
    assert exposure and float(exposure[1]) <= 2.0, rated.stdout + rated.stderr  # systemd calls up to 2.9 "OK"


# A real Prometheus scraping a real `strangler serve --workers 2`

EDGE_TLS = {"cert": "certs/edge.pem", "key": "certs/edge-key.pem"}


async def monolith(request: web.BaseRequest) -> web.StreamResponse:
    return web.json_response({"id": request.path.rsplit("/", 1)[1], "price": 10})


async def new_service(request: web.BaseRequest) -> web.StreamResponse:
    """Agrees with the monolith on two orders in three; never on customers."""
    n = request.path.rsplit("/", 1)[1]
    agrees = request.path.startswith("/api/orders") and int(n) % 3 != 0
    return web.json_response({"id": n, "price": 10 if agrees else 11})


def shop_routes() -> list[dict[str, Any]]:
    """orders: half the users on the new side, a third of the comparisons diverging, the plan holding;
    customers: every comparison diverging, so its plan rolls back."""
    def moving(name: str, rollback: dict[str, Any]) -> dict[str, Any]:
        return route(name, f"/api/{name}", legacy="monolith", new="orders", serve="toggle",
                     toggle={"name": f"{name}-to-new", "stickiness": "header:X-User-Id"},
                     parallel_run={"enabled": True, "sample": 1.0},
                     rollout_plan={"steps": [50, 100], "check_interval": 0.5,
                                   "rollback": {"max_latency_ratio": None, "max_error_rate": None, **rollback}})
    return [moving("orders", {"max_divergence_rate": None}),
            moving("customers", {"min_comparisons": 10, "window": 5, "max_divergence_rate": 0.2, "to": "legacy"}),
            route("everything-else", "/", legacy="monolith")]


async def shop_traffic(port: int, ca: Authority, stop: asyncio.Event) -> None:
    """Orders, customers and pages from many users, over HTTPS, until told to stop."""
    connector = aiohttp.TCPConnector(ssl=ca.client_context())
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as client:
        n = 0
        while not stop.is_set():
            n += 1
            for path in (f"/api/orders/{n}", f"/api/customers/{n}", f"/pages/{n}"):
                async with client.get(f"https://127.0.0.1:{port}{path}",
                                      headers={"X-User-Id": f"user-{n}"}) as response:
                    assert response.status == 200, await response.text()
            await asyncio.sleep(0.02)


def panel_queries() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in panels() for target in panel["targets"]]


def upstreams_in(samples: list[dict[str, Any]]) -> set[str]:
    return {sample["metric"].get("upstream") for sample in samples}


@pytest.mark.external
@pytest.mark.timeout(300)
async def test_a_real_prometheus_finds_every_panel_and_alert_series(tmp_path, make_upstream, promtool):
    legacy, new = await make_upstream("monolith", monolith), await make_upstream("orders", new_service)
    ca = Authority(tmp_path / "certs")
    ca.issue("edge")  # valid for 10 days: inside StranglerTLSCertificateExpiresSoon's 14
    config = tmp_path / "routes.yaml"
    config.write_text(routes_yaml({"monolith": legacy.url, "orders": new.url}, shop_routes(), tls=EDGE_TLS,
                                  listen=f"127.0.0.1:{free_port()}", admin={"listen": f"127.0.0.1:{free_port()}"}))
    proxy = ProxyProcess(config, "--workers", "2")
    prometheus = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{proxy.admin_port}"], [ALERTS])
    stop = asyncio.Event()
    try:
        prometheus.start()
        # every counter scraped at zero before it moves: increase() sees no rise in a series' first sample
        await found(prometheus, 'up{job="strangler"} == 1', "the proxy scraped")
        sending = asyncio.create_task(shop_traffic(proxy.port, ca, stop))
        try:
            for rule in alert_rules():
                await found(prometheus, as_values(rule["expr"]), rule["alert"])
            for title, expr in panel_queries():
                samples = await found(prometheus, in_grafana(expr, "orders"), title)
                if title in ("Traffic by side", "Latency per side"):
                    assert upstreams_in(samples) == {"monolith", "orders"}, (title, samples)
            await alerts_raised(prometheus, {"StranglerDivergenceRateRising": {"route": "orders"},
                                             "StranglerRolloutRolledBack": {"route": "customers"},
                                             "StranglerTLSCertificateExpiresSoon": {"listener": "edge"}})
        finally:
            stop.set()
            await sending
    finally:
        prometheus.stop()
        proxy.stop()


async def found(prometheus: Prometheus, expr: str, what: str) -> list[dict[str, Any]]:
    """The samples of `expr` once it has any (within a minute)."""
    return await eventually(lambda: asyncio.to_thread(prometheus.query, expr), timeout=60, interval=0.5,
                            what=f"{what}: {expr}")


async def alerts_raised(prometheus: Prometheus, expected: dict[str, dict[str, str]]) -> None:
    """Each alert pending or firing in Prometheus itself, with those labels: the traffic made it true."""
    def raised() -> bool:
        alerts = prometheus.alerts()
        return all(any(alert["labels"]["alertname"] == name and labels.items() <= alert["labels"].items()
                       for alert in alerts) for name, labels in expected.items())
    await eventually(lambda: asyncio.to_thread(raised), timeout=60, interval=0.5,
                     what=lambda: json.dumps(prometheus.alerts()))
