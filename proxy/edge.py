"""The edge listener's HTTP server: aiohttp's low-level server, answering its own errors in JSON.

aiohttp answers a request its parser refuses (smuggling attempts, oversized headers) with
a text page that echoes part of the input, and logs a traceback at ERROR. Here such a
request gets the proxy's JSON error, echoes nothing, and is logged at INFO; an
unexpected exception in our own handler is the one case logged at ERROR. A client that
takes longer than `header_timeout` to send a request's headers is disconnected (aiohttp
alone would wait for its keep-alive timeout).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from proxy.logs import REQUEST_ID

log = logging.getLogger("strangler.edge")


class EdgeProtocol(web.RequestHandler):
    """aiohttp's connection handler, with JSON errors and a deadline for receiving a request's headers."""

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.header_timeout = header_timeout
        self.header_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages or self._request_in_progress:  # a whole head arrived, or this is body
            self._stop_header_timer()
        elif self.header_timer is None and self.transport is not None:
            self.header_timer = self._loop.call_later(self.header_timeout, self._headers_too_slow)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if not self._messages and not self._request_in_progress:
            log.info("closed a connection whose request headers did not arrive in time",
                     extra={"header_timeout": self.header_timeout})
            self.force_close()

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; the connection is closed instead")
        rid = REQUEST_ID.get() or uuid.uuid4().hex  # the handler's id, if it got that far
        REQUEST_ID.set(rid)
        if status >= 500:
            log.error("unexpected error while serving a request", exc_info=exc,
                      extra={"path": request.raw_path.partition("?")[0], "status": status})
            code, detail = "internal_error", "the proxy failed to handle this request"
        else:
            kind = type(exc).__name__ if isinstance(exc, HttpProcessingError) else "malformed request"
            log.info("refused a malformed request", extra={"client": request.remote, "reason": kind})
            code, detail = "bad_request", f"the request is not valid HTTP/1.1 ({kind})"
        response = web.Response(status=status, content_type="application/json",
                                text=json.dumps({"error": code, "detail": detail, "request_id": rid}),
                                headers={"X-Request-Id": rid})
        response.force_close()
        return response


class EdgeServer(web.Server):
    """aiohttp's low-level Server, building EdgeProtocol connections."""

    def __init__(self, handler: Any, header_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._protocol_kwargs = {k: v for k, v in kwargs.items()
                                 if k not in ("request_factory", "handler_cancellation", "loop")}
        self._protocol_kwargs["header_timeout"] = header_timeout

    def __call__(self) -> EdgeProtocol:
        return EdgeProtocol(self, loop=asyncio.get_running_loop(), **self._protocol_kwargs)
