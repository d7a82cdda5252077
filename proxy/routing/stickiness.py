"""Asking a route's toggle about one request: the sticky value, and the Unleash context it travels in.

The sticky value (a header, a cookie, or the client's address) travels as userId and
sessionId, so a flexibleRollout in Unleash with stickiness default, userId or sessionId
hashes the same key; remoteAddress and the request's path and method ride along for
constraints and segments.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from typing import Any, Mapping

from proxy.model import RequestFacts, Stickiness, StickinessKind


def toggle_context(stickiness: Stickiness, facts: RequestFacts) -> tuple[dict[str, Any], str | None]:
    """The Unleash context for this request, and the sticky value in it (None: nothing to stick to)."""
    sticky = sticky_value(stickiness, facts)
    context: dict[str, Any] = {"remoteAddress": facts.remote or "",
                               "properties": {"path": facts.path, "method": facts.method}}
    if sticky is not None:
        context["userId"] = context["sessionId"] = sticky
    return context, sticky


def sticky_value(stickiness: Stickiness, facts: RequestFacts) -> str | None:
    if stickiness.kind is StickinessKind.HEADER:
        return facts.headers.get(stickiness.name) or None
    if stickiness.kind is StickinessKind.COOKIE:
        return _cookie(facts.headers, stickiness.name)
    if stickiness.kind is StickinessKind.IP:
        return facts.remote or None
    return None  # random


def _cookie(headers: Mapping[str, str], name: str) -> str | None:
    jar = SimpleCookie()
    getall = getattr(headers, "getall", None)
    for header in getall("Cookie", ()) if getall else [headers.get("Cookie", "")]:
        try:
            jar.load(header)
        except CookieError:
            continue
    return (jar[name].value or None) if name in jar else None
