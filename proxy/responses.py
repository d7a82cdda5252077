"""Responses the proxy writes itself: its JSON errors. (Upstreams' answers are relayed by proxy.relayed.)"""

from __future__ import annotations

import json

from aiohttp import web


def error_response(status: int, code: str, detail: str, rid: str,
                   retry_after: int | None = None) -> web.Response:
    """`{"error": CODE, "detail": TEXT, "request_id": ID}`, as the contract has it."""
    body = json.dumps({"error": code, "detail": detail, "request_id": rid})
    response = web.Response(status=status, text=body, content_type="application/json")
    response.headers["X-Request-Id"] = rid
    response.headers["Cache-Control"] = "no-store"
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response
