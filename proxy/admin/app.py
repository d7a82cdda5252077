"""The admin listener: /healthz, /readyz, /status, /metrics and /reports on an address of its own.

When the variable named by `admin.token_env` is set, every admin request needs
`Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import hmac
import sqlite3
from typing import Any, Awaitable, Callable, Protocol

from aiohttp import web

from proxy.admin.status import Lifecycle
from proxy.observe.metrics import CONTENT_TYPE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The report holds upstreams' bodies: no script, no fetch, nothing but its own inline styles and data: images.
REPORT_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
                  "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


class AdminView(Protocol):
    """What the admin listener shows: one proxy process's, or a supervisor's over its workers."""

    lifecycle: Lifecycle

    def status(self) -> dict[str, Any]: ...

    def metrics_text(self) -> bytes: ...

    def report(self) -> str:
        """The HTML divergence report; it reads SQLite, so it is called in a thread."""
        ...


def create_admin_app(view: AdminView, token: str | None) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        return _json({"status": view.lifecycle.state}, 200 if view.lifecycle.ready else 503)

    async def status_page(_: web.Request) -> web.Response:
        return _json(view.status())

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=view.metrics_text(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application(middlewares=[_json_errors, _bearer(token)])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status_page)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/reports", _reports_page(view.report))
    return app


def _reports_page(report: Callable[[], str]) -> Handler:
    async def reports_page(_: web.Request) -> web.Response:
        try:
            page = await asyncio.to_thread(report)  # SQLite reads stay off the event loop
        except (OSError, sqlite3.Error) as exc:
            return _json({"error": "report_unavailable", "detail": f"cannot read the divergence database: {exc}"},
                         503)
        return web.Response(text=page, content_type="text/html", charset="utf-8", headers=REPORT_HEADERS)

    return reports_page


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def _bearer(token: str | None) -> Any:
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if expected is not None and not hmac.compare_digest(given, expected):
            return web.json_response({"error": "unauthorized", "detail": "admin needs a bearer token"},
                                     status=401, headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return bearer


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason.lower().replace(" ", "_"), "detail": exc.text},
                                 status=exc.status)


