"""Endpoint templates: how requests group into endpoints, the `endpoints:` key, and the numbers per endpoint
through a real proxy, real upstreams and `strangler report summary --by endpoint`."""

import asyncio
import json
import time

import pytest
from aiohttp import web

from proxy.config.file import load
from tests.test_config import errors as problems
from proxy.model import ReportsSpec
from proxy.model.endpoints import EndpointTemplate, endpoint
from proxy.shadow.compare import Comparer
from reports import accepted
from reports.endpoints import by_endpoint
from reports.schema import open_database
from reports.store import StoreSink
from tests.helpers import route, routes_yaml
from tests.test_accept import strangler
from tests.test_parallel_run import get_all, settle

UUID = "3f2a9c0d-1e2b-4c5d-8e9f-0a1b2c3d4e5f"


@pytest.mark.parametrize("target, expected", [
    ("/api/orders", "/api/orders"),  # the bare route path
    ("/api/orders/", "/api/orders/"),  # a trailing slash is part of the path
    ("/api/orders/7", "/api/orders/{id}"),
    ("/api/orders/7/", "/api/orders/{id}/"),
    ("/api/orders/007?expand=items", "/api/orders/{id}"),  # the query is left out
    (f"/api/orders/{UUID}/items", "/api/orders/{id}/items"),
    (f"/api/orders/{UUID.upper()}", "/api/orders/{id}"),
    ("/api/orders/0123456789abcdef", "/api/orders/{id}"),  # 16 hex digits
    ("/api/orders/5f1d7c2e9b3a4e6f8d0c1b2a", "/api/orders/{id}"),  # an ObjectId
    ("/api/orders/0123456789abcde", "/api/orders/0123456789abcde"),  # 15: as often a word as an id
    ("/api/orders/deadbeef", "/api/orders/deadbeef"),
    ("/api/orders/7a", "/api/orders/7a"),
    ("/api/orders/%37%38", "/api/orders/{id}"),  # judged decoded
    ("/api/orders/caf%C3%A9", "/api/orders/caf%C3%A9"),  # kept as the client wrote it
    ("/api/orders/a%2F7", "/api/orders/a%2F7"),
    ("/", "/"),
    ("", "/"),
])
def test_id_segments_become_a_placeholder(target, expected):
    assert endpoint(target) == expected


ITEMS = EndpointTemplate.parse("/api/orders/{order}/items")
BY_CODE = EndpointTemplate.parse("/api/orders/by-code/{code}")


@pytest.mark.parametrize("target, expected", [
    ("/api/orders/7/items", "/api/orders/{order}/items"),
    ("/api/orders/latest/items", "/api/orders/{order}/items"),  # a named template takes any segment
    ("/api/orders/by-code/A-17", "/api/orders/by-code/{code}"),
    ("/api/orders/by-code/%41-17", "/api/orders/by-code/{code}"),
    ("/api/orders/by-code/12", "/api/orders/by-code/{code}"),  # the named template wins over the rule
    ("/api/orders/7/items/", "/api/orders/{id}/items/"),  # not the template's shape: the rule
    ("/api/orders//items", "/api/orders//items"),  # a placeholder is never an empty segment
    ("/api/orders/7", "/api/orders/{id}"),
])
def test_a_route_names_its_own_templates(target, expected):
    assert endpoint(target, (ITEMS, BY_CODE)) == expected


def config_text(endpoints) -> str:
    return routes_yaml({"a": "http://127.0.0.1:9001"}, [route("orders", "/api/orders", legacy="a",
                                                              endpoints=endpoints)])


def test_endpoints_are_parsed_once_with_the_route(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(config_text(["/api/orders/{id}/items", "/api/orders/"]))
    [orders] = load(path).routes
    assert [t.text for t in orders.endpoints] == ["/api/orders/{id}/items", "/api/orders/"]
    assert orders.endpoints[0].segments == ("api", "orders", None, "items")


def test_a_path_remembered_is_templated_anew_once_a_reload_changes_the_templates(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(config_text([]))
    [before] = load(path).routes
    comparer = Comparer(None, None, None, None, None)  # only its endpoint memory is used here
    assert comparer._endpoint(before, "/api/orders/7/lines?page=2") == "/api/orders/{id}/lines"
    path.write_text(config_text(["/api/orders/{order}/lines"]))
    [after] = load(path).routes
    assert comparer._endpoint(after, "/api/orders/7/lines") == "/api/orders/{order}/lines"
    assert comparer._endpoint(before, "/api/orders/8/lines") == "/api/orders/{id}/lines"


@pytest.mark.parametrize("written, says", [
    ("api/orders/{id}", "must start with '/'"),
    ("/api/customers/{id}", "is not under the route's path '/api/orders'"),
    ("/api/orders/{id}?x=1", "takes no query"),
    ("/api/orders//items", "may not hold '//'"),
    ("/api/orders/%20", "must be plain segments"),
    ("/api/orders/{id", "must be plain segments"),
    ("/api/orders/x{id}", "must be plain segments"),
])
def test_a_bad_template_is_an_error_at_its_line_with_a_hint(written, says):
    text = config_text(["/api/orders/{id}/items", written])
    [problem] = problems(text)
    assert f":{text.splitlines().index(f'  - {written}') + 1}: " in problem
    assert says in problem and 'like "/api/orders/{id}/items"' in problem


def test_endpoints_must_be_a_list_of_paths():
    [problem] = problems(config_text("/api/orders/{id}"))
    assert "endpoints" in problem


async def legacy_orders(request: web.BaseRequest) -> web.StreamResponse:
    return web.json_response({"path": request.path, "status": "open"})


async def new_orders(request: web.BaseRequest) -> web.StreamResponse:
    """The planted bug: the items of an order say "OPEN"; the rest agree."""
    return web.json_response({"path": request.path, "status": "OPEN" if request.path.endswith("/items") else "open"})


async def test_numbers_per_endpoint_through_a_real_proxy(make_upstream, start_proxy, http, tmp_path):
    database = str(tmp_path / "divergence.db")
    legacy, new = await make_upstream("legacy", legacy_orders), await make_upstream("new", new_orders)
    orders = route("orders", "/api/orders", new="new", parallel_run={"enabled": True},
                   endpoints=["/api/orders/{order}/items"])
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, [orders, route("all")],
                              reports={"database": database})
    paths = ([f"/api/orders/{n}" for n in range(6)] + [f"/api/orders/{n}/items" for n in range(3)]
             + [f"/api/orders/{UUID}", "/api/orders"])
    await get_all(http, proxy.url, paths)
    await settle(proxy, len(paths), "orders")

    done = strangler("report", "summary", "--by", "endpoint", "--format", "json", "--db", database)
    assert done.returncode == 0, done.stderr
    shown = {e["endpoint"]: e for e in json.loads(done.stdout)["endpoints"]}
    assert list(shown) == ["/api/orders/{order}/items", "/api/orders/{id}", "/api/orders"]  # the worst first
    items = shown["/api/orders/{order}/items"]
    assert {k: items[k] for k in ("route", "compared", "diverged", "accepted", "open", "open_rate")} == {
        "route": "orders", "compared": 3, "diverged": 3, "accepted": 0, "open": 3, "open_rate": 1.0}
    [signature] = items["signatures"]
    assert (signature["count"], signature["accepted"]) == (3, False)
    assert {k: shown["/api/orders/{id}"][k] for k in ("compared", "diverged", "open_rate", "signatures")} == {
        "compared": 7, "diverged": 0, "open_rate": 0.0, "signatures": []}
    assert shown["/api/orders"]["compared"] == 1

    db = open_database(database)
    try:
        accepted.accept(db, signature["signature"], "orders", "status is upper case now", None, "tester", time.time())
    finally:
        db.close()
    text = strangler("report", "summary", "--by", "endpoint", "--db", database).stdout.splitlines()
    assert text[0].split() == ["route", "endpoint", "compared", "diverged", "accepted", "open", "rate", "signatures"]
    line = next(t for t in text if "/api/orders/{order}/items" in t)
    assert line.split()[:7] == ["orders", "/api/orders/{order}/items", "3", "3", "3", "0.0%", signature["signature"]]
    assert "accepted" in line


async def test_endpoint_numbers_read_back_on_both_engines(store):
    sink = StoreSink(ReportsSpec(database=store.target, password_env=store.password_env))
    sink.start()
    hour = int(time.time() // 3600) - 1  # recent: retention keeps it
    for n, (path, signature) in enumerate([("/a/{id}", ""), ("/a/{id}", "s1"), ("/a/{id}", "s1"), ("/a", "s2")]):
        sink.count("a", bool(signature), hour * 3600.0 + n, path, signature)
    await asyncio.to_thread(sink.close)
    found = {e.endpoint: e for e in by_endpoint([store])}
    assert (found["/a/{id}"].tally.compared, found["/a/{id}"].tally.diverged, found["/a/{id}"].signatures) == (
        3, 2, (("s1", 2),))
    assert found["/a"].as_json()["open_rate"] == 1.0
    assert by_endpoint([store], until=hour * 3600.0 - 1) == []  # the hours before
    assert len(by_endpoint([store], since=hour * 3600.0 + 3599)) == 2  # a time range reads whole hours
