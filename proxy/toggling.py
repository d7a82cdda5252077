"""Asking a route's toggle about one request: the Unleash context, and problems logged once.

The sticky value (a header, a cookie, or the client's address) travels as userId and
sessionId, so a flexibleRollout in Unleash with stickiness default, userId or sessionId
hashes the same key; remoteAddress and the request's path and method ride along for
constraints and segments.
"""

from __future__ import annotations

import logging
from http.cookies import CookieError, SimpleCookie
from typing import Any, Mapping

from proxy.model import RequestFacts, Stickiness, Verdict

log = logging.getLogger("strangler.toggles")
PROBLEMS = frozenset({Verdict.UNKNOWN, Verdict.NOT_SYNCED, Verdict.ERROR})


def toggle_context(stickiness: Stickiness, facts: RequestFacts) -> tuple[dict[str, Any], str | None]:
    """The Unleash context for this request, and the sticky value in it (None: nothing to stick to)."""
    sticky = sticky_value(stickiness, facts)
    context: dict[str, Any] = {"remoteAddress": facts.remote or "",
                               "properties": {"path": facts.path, "method": facts.method}}
    if sticky is not None:
        context["userId"] = context["sessionId"] = sticky
    return context, sticky


def sticky_value(stickiness: Stickiness, facts: RequestFacts) -> str | None:
    if stickiness.kind == "header":
        return facts.headers.get(stickiness.name) or None
    if stickiness.kind == "cookie":
        return _cookie(facts.headers, stickiness.name)
    if stickiness.kind == "ip":
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


class VerdictLog:
    """Logs a toggle going wrong (unknown, not synced, raising) once, and its recovery once."""

    def __init__(self) -> None:
        self._troubled: dict[str, Verdict] = {}

    def note(self, route: str, toggle: str, verdict: Verdict) -> None:
        before = self._troubled.get(toggle)
        if verdict in PROBLEMS and verdict is not before:
            self._troubled[toggle] = verdict
            log.warning("toggle cannot be evaluated; its routes answer from legacy",
                        extra={"toggle": toggle, "route": route, "verdict": str(verdict)})
        elif verdict not in PROBLEMS and before is not None:
            del self._troubled[toggle]
            log.info("toggle evaluates again", extra={"toggle": toggle, "route": route, "verdict": str(verdict)})
