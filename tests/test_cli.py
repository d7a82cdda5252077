"""`strangler explain` and `strangler demo`, run as a user runs them."""

import asyncio
import json
import re
import subprocess
import sys

import aiohttp
import pytest
import yaml

from tests.helpers import REPO, eventually, free_port, route, routes_yaml


def strangler(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(routes_yaml(
        {"monolith": "http://127.0.0.1:9001", "orders": "http://127.0.0.1:9002"},
        [route("beta", "/api/orders", legacy="monolith", new="orders", serve="new",
               match={"headers": {"X-Beta": "1"}}),
         route("orders", "/api/orders", legacy="monolith", new="orders", serve="legacy",
               parallel_run={"sample": 0.25}),
         route("pages", "/pages", legacy="monolith")]))
    return path


def test_explain_names_route_side_upstream_shadow_and_why(config):
    done = strangler("explain", "GET", "/api/orders/7?x=1", "--config", str(config))
    line = config.read_text().splitlines().index("- name: orders") + 1
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        f"route:    orders (line {line})",
        "serve:    legacy",
        "upstream: monolith (http://127.0.0.1:9001)",
        "shadow:   yes, to orders (http://127.0.0.1:9002) for 25% of such requests",
        "why:      serve: legacy",
    ]


def test_explain_json_has_the_contract_keys(config):
    done = strangler("explain", "POST", "/api/orders", "-H", "X-Beta: 1", "--format", "json", "--config", str(config))
    assert done.returncode == 0
    result = json.loads(done.stdout)
    assert {k: result[k] for k in ("route", "serve", "upstream", "shadow")} == {
        "route": "beta", "serve": "new", "upstream": "orders", "shadow": None}


@pytest.mark.parametrize("path, reason", [
    ("/nowhere", "the proxy answers 404: no route's match takes it"),
    ("/pages/../api/orders", "the proxy answers 400: dot segments (. or ..) in the path are ambiguous"),
])
def test_explain_exits_3_when_nothing_would_serve(config, path, reason):
    done = strangler("explain", "GET", path, "--config", str(config), "--format", "json")
    assert done.returncode == 3
    assert json.loads(done.stdout) == {"route": None, "serve": None, "upstream": None, "shadow": None,
                                       "reason": reason}


def test_explain_rejects_a_malformed_header_option(config):
    done = strangler("explain", "GET", "/", "-H", "no colon", "--config", str(config))
    assert done.returncode == 2 and "-H wants 'Name: value'" in done.stderr


def test_config_comes_from_the_environment_when_not_given(config):
    done = subprocess.run([sys.executable, "-m", "proxy", "explain", "GET", "/pages"], capture_output=True,
                          text=True, timeout=60, cwd=REPO, env={"STRANGLER_CONFIG": str(config), "PATH": ""})
    assert done.returncode == 0 and "route:    pages" in done.stdout


async def test_demo_serves_the_sample_shop_and_follows_an_edit(tmp_path):
    shipped = yaml.safe_load((REPO / "routes.yaml").read_text())
    ports = {name: free_port() for name in ("edge", "admin", "monolith", "orders")}
    text = (REPO / "routes.yaml").read_text()
    for old, new in (("8080", ports["edge"]), ("9901", ports["admin"]), ("9001", ports["monolith"]),
                     ("9002", ports["orders"])):
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    assert shipped["routes"][0]["serve"] == "toggle"
    demo = subprocess.Popen([sys.executable, "-m", "proxy", "demo", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    edge = f"http://127.0.0.1:{ports['edge']}"
    try:
        banner = await asyncio.to_thread(_read_banner, demo)
        assert "proxy (send your requests here)" in banner and edge in banner
        assert f"http://127.0.0.1:{ports['monolith']}" in banner and f"curl -i {edge}/api/orders/1" in banner
        async with aiohttp.ClientSession() as http:
            async with http.get(edge + "/") as home:
                assert home.status == 200 and "Acme Shop" in await home.text()
                assert home.headers["X-Served-By"] == "monolith"
            async with http.get(edge + "/api/orders/1") as order:
                assert (await order.json())["status"] == "SHIPPED"
            path.write_text(text.replace("serve: toggle", "serve: new"))

            async def served_by_the_service() -> tuple[str, str] | None:
                async with http.get(edge + "/api/orders/1") as order:
                    served = order.headers["X-Served-By"], (await order.json())["status"]
                return served if served[0] == "orders-service" else None
            assert await eventually(served_by_the_service, timeout=2, interval=0.1) == ("orders-service", "shipped")
    finally:
        demo.terminate()
        code = await asyncio.to_thread(demo.wait, 30)
        demo.stdout.close()
    assert code == 0


def _read_banner(process: subprocess.Popen) -> str:
    lines = []
    for line in process.stdout:
        lines.append(line)
        if re.search(r"Ctrl-C stops everything", line):
            return "".join(lines)
    raise AssertionError("the demo ended before printing its URLs:\n" + "".join(lines))


@pytest.fixture
def edge_config(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(routes_yaml(
        {"monolith": "http://127.0.0.1:9001", "orders": "http://127.0.0.1:9002"},
        [route("shop-orders", "/api/orders", legacy="monolith", new="orders", serve="new",
               match={"host": "*.example.com"}, rewrite={"new": "/orders"}, parallel_run={"enabled": True}),
         route("pages", "/pages", legacy="monolith")]))
    return path


def test_explain_says_which_host_rule_took_the_request_and_what_each_side_is_sent(edge_config):
    done = strangler("explain", "GET", "/api/orders/7?x=1", "-H", "Host: EU.Example.com:8443",
                     "--config", str(edge_config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "route:    shop-orders (line 11)",
        "host:     eu.example.com matches the route's host rule *.example.com",
        "serve:    new",
        "upstream: orders (http://127.0.0.1:9002)",
        "shadow:   yes, to monolith (http://127.0.0.1:9001) for 100% of such requests",
        "target:   new gets /orders/7?x=1 (rewritten from /api/orders/7?x=1)",
        "why:      serve: new",
    ]
    done = strangler("explain", "GET", "/api/orders/7?x=1", "-H", "Host: eu.example.com", "--format", "json",
                     "--config", str(edge_config))
    result = json.loads(done.stdout)
    assert {k: result[k] for k in ("route", "serve", "upstream", "shadow", "target", "host", "host_rule",
                                   "upstream_target", "shadow_target")} == {
        "route": "shop-orders", "serve": "new", "upstream": "orders", "shadow": "monolith",
        "target": "/api/orders/7?x=1", "host": "eu.example.com", "host_rule": "*.example.com",
        "upstream_target": "/orders/7?x=1", "shadow_target": "/api/orders/7?x=1"}


def test_explain_without_the_host_a_host_route_needs_says_how_to_give_it(edge_config):
    done = strangler("explain", "GET", "/api/orders/7", "--config", str(edge_config))
    assert (done.returncode, done.stdout.strip()) == (
        3, "GET /api/orders/7: no route (the proxy answers 404: no route's match takes it (routes with a host rule "
           "take only a request that names its host: -H 'Host: NAME'))")
    done = strangler("explain", "GET", "/pages/1", "--format", "json", "--config", str(edge_config))
    result = json.loads(done.stdout)
    assert (result["route"], result["host"], result["host_rule"], result["upstream_target"]) == (
        "pages", None, None, "/pages/1")
