"""The sample orders service: the orders API, extracted from the monolith and rewritten."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from proxy.demo.shop import OrderBook, healthz, served_by, total


def create_orders_service() -> web.Application:
    app = web.Application(middlewares=[served_by("orders-service")])
    app.router.add_get("/healthz", healthz)
    OrderBook(new_view).add_routes(app)
    return app


def new_view(order: dict[str, Any]) -> dict[str, Any]:
    return {**order, "total": total(order), "updated_at": datetime.now(timezone.utc).isoformat()}
