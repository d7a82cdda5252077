"""Responses the proxy writes itself: JSON errors, and the relayed response that adds nothing."""

from __future__ import annotations

import json

from aiohttp import hdrs, web


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


class _InventsNothing(web.StreamResponse):
    """aiohttp fills in Content-Type (application/octet-stream) and Server (its own version) when
    a response lacks them; a proxy must not invent either, so they are removed again unless the
    upstream sent them."""

    async def _prepare_headers(self) -> None:
        invented = [name for name in (hdrs.CONTENT_TYPE, hdrs.SERVER) if name not in self.headers]
        await super()._prepare_headers()
        for name in invented:
            self.headers.popall(name, None)


class RelayedResponse(_InventsNothing):
    """An upstream's answer whose body streams through as it arrives. The headers leave with the
    first piece of the body (or the end of it), one write instead of two for most answers."""

    _send_headers_immediately = False


class RelayedWhole(_InventsNothing, web.Response):
    """An upstream's answer whose body had arrived whole: headers and body leave in one write."""
