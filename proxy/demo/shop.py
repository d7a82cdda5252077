"""The sample shop's records and its orders API, shared by the sample monolith and orders service.

The two differ only in how they render an order (`view`), which is what a parallel run
of the demo will find.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

from aiohttp import web

CUSTOMERS = {
    1: {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com", "tier": "gold"},
    2: {"id": 2, "name": "Grace Hopper", "email": "grace@example.com", "tier": "silver"},
    3: {"id": 3, "name": "Alan Turing", "email": "alan@example.com", "tier": "bronze"},
}

ORDERS = {
    1: {"id": 1, "customer_id": 1, "status": "shipped", "currency": "EUR",
        "items": [{"sku": "BOOK-42", "name": "Notes on the Analytical Engine", "qty": 1, "price": 24.5, "etag": "a1"},
                  {"sku": "PEN-7", "name": "Fountain pen", "qty": 2, "price": 12.0, "etag": "b7"}]},
    2: {"id": 2, "customer_id": 2, "status": "processing", "currency": "EUR",
        "items": [{"sku": "BUG-1", "name": "Moth (framed)", "qty": 1, "price": 99.9, "etag": "c3"}]},
    3: {"id": 3, "customer_id": 3, "status": "delivered", "currency": "EUR",
        "items": [{"sku": "ENIGMA-3", "name": "Rotor set", "qty": 3, "price": 19.99, "etag": "d9"}]},
}

View = Callable[[dict[str, Any]], dict[str, Any]]


def total(order: dict[str, Any]) -> float:
    return round(sum(item["qty"] * item["price"] for item in order["items"]), 2)


class OrderBook:
    """GET /api/orders, GET /api/orders/{id}, POST /api/orders over in-memory records."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.orders = {k: dict(v) for k, v in ORDERS.items()}
        self.next_id = itertools.count(len(ORDERS) + 1)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/orders", self.list)
        app.router.add_get("/api/orders/{id:\\d+}", self.get)
        app.router.add_post("/api/orders", self.create)

    async def list(self, _: web.Request) -> web.Response:
        return web.json_response({"orders": [self.view(o) for o in self.orders.values()],
                                  "count": len(self.orders)})

    async def get(self, request: web.Request) -> web.Response:
        order = self.orders.get(int(request.match_info["id"]))
        if order is None:
            return web.json_response({"error": "order not found"}, status=404)
        return web.json_response(self.view(order))

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            items = [dict(item) for item in body["items"]]
            customer_id = int(body["customer_id"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "send {\"customer_id\": N, \"items\": [...]}"}, status=400)
        order = {"id": next(self.next_id), "customer_id": customer_id, "status": "new", "currency": "EUR",
                 "items": items}
        self.orders[order["id"]] = order
        return web.json_response(self.view(order), status=201)


def served_by(name: str) -> Any:
    """Middleware marking every answer with the app that gave it."""
    @web.middleware
    async def mark(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        response.headers["X-Served-By"] = name
        return response
    return mark


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
