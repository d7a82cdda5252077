"""The sample legacy monolith: a shop with pages, customers and orders, all in one app."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from proxy.demo.shop import CUSTOMERS, OrderBook, healthz, served_by, total

PAGES = {
    "/": ("Acme Shop", "Everything you need, since 1998."),
    "/about": ("About us", "A family business, one big codebase."),
}
PAGE = """<!doctype html><html><head><title>{title}</title></head>
<body><h1>{title}</h1><p>{text}</p><p>Served by the legacy monolith.</p>
<ul><li><a href="/api/orders">/api/orders</a></li><li><a href="/api/customers">/api/customers</a></li>
<li><a href="/about">/about</a></li></ul></body></html>"""


def create_monolith() -> web.Application:
    app = web.Application(middlewares=[served_by("monolith")])
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/customers", customers)
    app.router.add_get("/api/customers/{id:\\d+}", customer)
    OrderBook(legacy_view).add_routes(app)
    return app


def legacy_view(order: dict[str, Any]) -> dict[str, Any]:
    # The monolith shouts its statuses and stamps every read: the new service does
    # neither, and that is what a parallel run will show.
    return {**order, "status": order["status"].upper(), "total": total(order),
            "updated_at": datetime.now(timezone.utc).isoformat()}


async def page(request: web.Request) -> web.Response:
    title, text = PAGES[request.path]
    return web.Response(text=PAGE.format(title=title, text=text), content_type="text/html")


async def customers(_: web.Request) -> web.Response:
    return web.json_response({"customers": list(CUSTOMERS.values())})


async def customer(request: web.Request) -> web.Response:
    record = CUSTOMERS.get(int(request.match_info["id"]))
    if record is None:
        return web.json_response({"error": "customer not found"}, status=404)
    return web.json_response(record)
