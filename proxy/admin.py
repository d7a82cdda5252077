"""The admin listener: /healthz, /readyz, /status, /metrics and /reports on an address of its own.

When the variable named by `admin.token_env` is set, every admin request needs
`Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import hmac
import sqlite3
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Protocol

from aiohttp import web

from proxy.buildinfo import BuildInfo
from proxy.live import LiveConfig
from proxy.metrics import CONTENT_TYPE
from proxy.model import Config

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The report holds upstreams' bodies: no script, no fetch, nothing but its own inline styles and data: images.
REPORT_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
                  "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


class Lifecycle:
    """Where the process is in its life: starting, ready, or draining before exit."""

    def __init__(self) -> None:
        self.state = "starting"

    @property
    def ready(self) -> bool:
        return self.state == "ready"


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


def status(live: LiveConfig, lifecycle: Lifecycle, build: BuildInfo, breakers: dict[str, str]) -> dict[str, Any]:
    generation = live.current
    config = generation.config
    failure = live.last_failure
    return {
        "version": build.version, "git_commit": build.git_commit, "python": build.python,
        "host": build.host, "pid": build.pid, "started_at": _iso(build.started_at),
        "state": lifecycle.state,
        "config": {
            "path": live.path, "sha256": config.digest, "loaded_at": _iso(generation.loaded_at),
            "routes": [route.name for route in config.routes],
            "warnings": [str(w) for w in config.warnings],
            "last_reload_error": None if failure is None else {
                "at": _iso(failure.at), "problems": [str(p) for p in failure.problems]},
        },
        "toggles": _toggles(generation.toggles.status(), config),
        "upstreams": {name: {"url": pool.spec.url, "in_flight": pool.in_flight,
                             "max_connections": pool.spec.max_connections, "max_pending": pool.spec.max_pending,
                             "connect_timeout": pool.spec.connect_timeout, "timeout": pool.spec.timeout,
                             "breaker": breakers.get(name, "closed")}
                      for name, pool in generation.pools.items()},
    }


def _toggles(state: dict[str, Any], config: Config) -> dict[str, Any]:
    """The provider's state, and for each toggle route the definition it is evaluated by."""
    definitions = state.pop("definitions", {})
    last_sync = state.get("last_sync")
    return {**state, "last_sync": _iso(last_sync) if last_sync else None, "routes": [
        {"route": route.name, "toggle": route.toggle.name, "serve": str(route.serve),
         "stickiness": str(route.toggle.stickiness), "definition": definitions.get(route.toggle.name)}
        for route in config.routes if route.toggle is not None]}


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


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
