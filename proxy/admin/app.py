"""The admin listener: /healthz, /readyz, /status, /metrics and the /reports console on an address of its own.

When the variable named by `admin.token_env` is set, every admin request needs
`Authorization: Bearer <token>`, or, from a browser, the session cookie that signing in with
the token at /login gives (proxy/admin/console.py); and only then can the console act.
"""

from __future__ import annotations

import asyncio
import hmac
import sqlite3
from typing import Any, Awaitable, Callable, Protocol
from urllib.parse import quote, urlsplit

from aiohttp import web

from proxy.admin.console import (SESSION_COOKIE, SESSION_SECONDS, Act, Filters, Forms, Guard, act_from, filters_from,
                                  same_origin)
from proxy.admin.pages import index_page, message_page, signin_page
from proxy.admin.status import Lifecycle
from proxy.observe.metrics import CONTENT_TYPE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The report holds upstreams' bodies: no script, no fetch, nothing but its own inline styles and data: images;
# its forms post to this listener only, and no other site may frame it (clickjacking).
REPORT_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                             "form-action 'self'; frame-ancestors 'none'",
                  "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
OPEN_PATHS = {"/login"}  # reachable without being signed in
NO_TOKEN = "No admin token is configured: the console reads without signing in, and acting from it is off " \
           "(set admin.token_env in routes.yaml to the name of a variable holding a token)."
ENDPOINTS = {"/healthz": "liveness", "/readyz": "readiness (503 while starting or draining)",
             "/status": "configuration, upstreams, rollouts, store, TLS (JSON)", "/metrics": "Prometheus metrics",
             "/reports": "the review console: the divergence report, filters, and acts",
             "/reports/actions": "POST: one act from the console (with admin.token_env set)",
             "/login": "signing a browser in with the admin token", "/logout": "POST: signing it out"}


class AdminView(Protocol):
    """What the admin listener shows: one proxy process's, or a supervisor's over its workers."""

    lifecycle: Lifecycle

    def status(self) -> dict[str, Any]: ...

    def metrics_text(self) -> bytes: ...

    def report(self, filters: Filters, forms: Forms) -> str:
        """The console page; it reads the store, so it is called in a thread."""
        ...

    def act(self, act: Act) -> tuple[int, str]:
        """Do what a form asks (in a thread): the HTTP status, and what happened or why not."""
        ...


def create_admin_app(view: AdminView, token: str | None) -> web.Application:
    guard = Guard(token)

    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        return _json({"status": view.lifecycle.state}, 200 if view.lifecycle.ready else 503)

    async def status_page(_: web.Request) -> web.Response:
        return _json(view.status())

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=view.metrics_text(), headers={"Content-Type": CONTENT_TYPE})

    async def index(request: web.Request) -> web.Response:
        if _wants_html(request):
            return _html(index_page(ENDPOINTS))
        return _json({"endpoints": [{"path": path, "what": what} for path, what in ENDPOINTS.items()]})

    app = web.Application(middlewares=[_json_errors, _signed_in(guard)])
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status_page)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/reports", _reports_page(view, guard))
    app.router.add_post("/reports/actions", _act(view, guard))
    app.router.add_get("/login", _signin(guard))
    app.router.add_post("/login", _login(guard))
    app.router.add_post("/logout", _logout(guard))
    return app


def _reports_page(view: AdminView, guard: Guard) -> Handler:
    async def reports_page(request: web.Request) -> web.Response:
        filters = filters_from(request.query)
        if isinstance(filters, str):
            return _refused(request, 400, "bad_filter", filters)
        session = request.cookies.get(SESSION_COOKIE, "")
        forms = Forms(guard.acting, lambda kind, subject: guard.form(session, kind, subject),
                      guard.unseal(request.query.get("done", ""), request.query.get("seal", "")))
        try:
            page = await asyncio.to_thread(view.report, filters, forms)  # the store's reads stay off the loop
        except (OSError, sqlite3.Error) as exc:
            return _json({"error": "report_unavailable", "detail": f"cannot read the divergence database: {exc}"},
                         503)
        return web.Response(text=page, content_type="text/html", charset="utf-8", headers=REPORT_HEADERS)

    return reports_page


def _act(view: AdminView, guard: Guard) -> Handler:
    async def act(request: web.Request) -> web.Response:
        if not guard.acting:
            return _refused(request, 403, "actions_off", "acting from the console is off: set admin.token_env "
                                                         "in routes.yaml (and the variable it names)")
        session = request.cookies.get(SESSION_COOKIE, "")
        by_cookie = not _bearer_ok(request, guard)
        if by_cookie and not same_origin(request.headers, request.scheme, request.host):
            return _refused(request, 403, "cross_site", "the form was posted from another site")
        form = dict(await request.post())
        asked = act_from({k: v for k, v in form.items() if isinstance(v, str)})
        if isinstance(asked, str):
            return _refused(request, 400, "bad_form", asked)
        if by_cookie:
            problem = guard.spend(str(form.get("form", "")), session, asked.kind, asked.subject)
            if problem is not None:
                return _refused(request, 403, "bad_form_token", problem)
        status, message = await asyncio.to_thread(view.act, asked)
        if status != 200:
            return _refused(request, status, "refused", message)
        if not _wants_html(request):
            return _json({"done": message})
        raise web.HTTPSeeOther(f"/reports?route={quote(asked.route)}&done={quote(message)}"
                               f"&seal={guard.seal(message)}#route-{quote(asked.route)}")

    return act


def _signin(guard: Guard) -> Handler:
    async def signin(request: web.Request) -> web.Response:
        return _html(signin_page(_next(request.query.get("next", "/reports")), "" if guard.acting else NO_TOKEN))

    return signin


def _login(guard: Guard) -> Handler:
    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        target = _next(str(form.get("next", "/reports")))
        if not same_origin(request.headers, request.scheme, request.host):
            return _refused(request, 403, "cross_site", "the sign-in was posted from another site")
        if not guard.acting:
            return _html(signin_page(target, NO_TOKEN), 403)
        if not guard.signs_in(str(form.get("token", ""))):
            return _html(signin_page(target, "That is not the admin token."), 401)
        response = _see_other(target)
        response.set_cookie(SESSION_COOKIE, guard.session(), max_age=SESSION_SECONDS, path="/", httponly=True,
                            samesite="Strict", secure=request.scheme == "https")
        return response

    return login


def _logout(guard: Guard) -> Handler:
    async def logout(request: web.Request) -> web.Response:
        if not same_origin(request.headers, request.scheme, request.host):
            return _refused(request, 403, "cross_site", "the sign-out was posted from another site")
        guard.end(request.cookies.get(SESSION_COOKIE))
        response = _see_other("/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    return logout


def _signed_in(guard: Guard) -> Any:
    @web.middleware
    async def signed_in(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not guard.acting or request.path in OPEN_PATHS or _bearer_ok(request, guard) or \
                guard.valid_session(request.cookies.get(SESSION_COOKIE)):
            return await handler(request)
        if request.method == "GET" and _wants_html(request):
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs)}")
        if _wants_html(request):  # a browser's form with no session (or an ended one): nothing done
            return _html(signin_page("/reports", "Not signed in: nothing was done. Sign in and send it again."), 401)
        return web.json_response({"error": "unauthorized", "detail": "admin needs a bearer token"},
                                 status=401, headers={"WWW-Authenticate": "Bearer"})

    return signed_in


def _bearer_ok(request: web.Request, guard: Guard) -> bool:
    given = request.headers.get("Authorization", "")
    return guard.key is not None and given.startswith("Bearer ") and \
        hmac.compare_digest(given[7:].encode("utf-8", "replace"), guard.key)


def _next(target: str) -> str:
    """Where to go after signing in: a path on this listener only (never another site)."""
    parts = urlsplit(target)
    return target if target.startswith("/") and not target.startswith("//") and not parts.netloc else "/reports"


def _see_other(target: str) -> web.Response:
    """A 303 that can carry a cookie (aiohttp's HTTPSeeOther is raised, not returned)."""
    return web.Response(status=303, headers={"Location": target, "Cache-Control": "no-store"})


def _wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def _refused(request: web.Request, status: int, code: str, detail: str) -> web.Response:
    """A refusal a browser can read (a page, with the way back) or a client can parse (JSON)."""
    if _wants_html(request):
        return _html(message_page(f"Not done: {detail}", "/reports"), status)
    return web.json_response({"error": code, "detail": detail}, status=status, headers={"Cache-Control": "no-store"})


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8", headers=REPORT_HEADERS)


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason.lower().replace(" ", "_"), "detail": exc.text},
                                 status=exc.status)
