"""The edge listener's HTTP/1.1 server: aiohttp's C parser (llhttp), and a connection loop of its own.

aiohttp's server costs, per request, a task, a future to wake its connection loop and a
request object of forty fields (docs/architecture.md says what that came to). Here a
connection parses with the same llhttp parser (proxy.wire.intake: its smuggling checks,
size limits and pipelining bound are kept), and answers its requests in order, in one
task for the connection's life. What aiohttp's server did that a proxy needs is done here:

- keep-alive, with an idle timeout; a deadline for a request's headers (`header_timeout`);
- pipelining, at most MAX_QUEUED requests parsed ahead of the one being answered;
- a request body the answer did not need is read and dropped (up to LINGER seconds)
  before the next request is read; the connection closes when it does not arrive;
- a request the parser refuses, or whose body breaks its framing, gets the proxy's JSON 400
  (echoing nothing) and the connection closes; a request asking to switch protocols is
  answered and then the connection closes, unless it became a WebSocket tunnel
  (proxy.wire.tunnel);
- a client that goes away cancels the handler of its request;
- request bodies pass as sent (no decompression: `Content-Encoding` is the upstream's business);
- on shutdown, idle connections close, and a request in flight has `drain_timeout` to finish
  (an answer that starts then says `Connection: close`).

An unexpected exception in our own handler is a JSON 500, logged at ERROR.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.tcp_helpers import tcp_keepalive

from proxy.observe.logs import REQUEST_ID
from proxy.wire.answers import Relayed, WholeAnswer, drained, error_response
from proxy.wire.headers import Repeated, fresh_request_id
from proxy.wire.request import EdgeRequest
from proxy.wire.intake import MAX_QUEUED, MAX_QUEUED_BYTES, HeadersTooLarge, Intake

log = logging.getLogger("strangler.edge")

LINGER = 10.0  # seconds to wait for the rest of a body the answer did not need (aiohttp's lingering_time)


Handler = Callable[[EdgeRequest], Awaitable[Relayed]]


class EdgeConnection(Intake):
    """One client connection: its requests parsed (proxy.wire.intake), queued and answered in order."""

    def __init__(self, server: EdgeServer, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, server.max_header_bytes)
        self.loop, self.server = loop, server
        self.serving: asyncio.Task[None] | None = None  # from the first request to the close
        self.waiting: asyncio.Future[None] | None = None  # set while `serving` waits for a request
        self.current: EdgeRequest | None = None
        self.remote: str | None = None
        self.scheme = "http"  # "https" over TLS: X-Forwarded-Proto for every request of this connection
        self.last_head = Repeated()  # the upstream head made for this connection's last request
        self.closing = False  # no request after the one being answered
        self.idle_since = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None
        self.header_timer: asyncio.TimerHandle | None = None

    # -- asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        tcp_keepalive(self.transport)
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, (list, tuple)) else peer and str(peer)
        if transport.get_extra_info("sslcontext") is not None:  # asked once: the handshake is done by now
            self.scheme = "https"
        self.server.connection_made(self, transport)
        self._idle()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.tunnel is not None:  # a tunnel's end: the handler awaiting it records it, not a cancel
            self.tunnel.lost(self)
            self.serving = None
        self.server.connection_lost(self, exc)
        self.closing, self.parsing = True, False
        self._stop_header_timer()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        super().connection_lost(exc)
        self._parser = None  # the parser holds this connection: let both go without waiting for the cycle collector
        current = self.current
        if current is not None and not current.content.is_eof():
            current.content.set_exception(ConnectionResetError("the client went away"))
        if self.serving is not None:
            self.serving.cancel()  # the handler of a request nobody waits for any more

    # -- the server's side (web.Server's manager calls these)

    def force_close(self) -> None:
        """Close now, whatever is in flight."""
        self.closing, self.parsing = True, False
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        """Shutting down: close when idle, else after the answer in flight."""
        self.closing = True
        if self.idle:
            self.force_close()

    async def shutdown(self, timeout: float | None) -> None:
        """Let the request in flight finish for up to `timeout` seconds, then cancel it; close."""
        self.closing = True
        serving = self.serving
        if serving is not None:
            _, pending = await asyncio.wait({serving}, timeout=timeout)
            if pending:
                serving.cancel()
                await asyncio.wait({serving}, timeout=1.0)
        self.force_close()

    # -- answering

    async def drained(self) -> None:
        """Until the client's socket takes what was written (ConnectionResetError if it closed)."""
        await self._drain_helper()

    @property
    def idle(self) -> bool:
        """No request is being answered."""
        return self.serving is None or self.waiting is not None

    def _wake(self) -> None:
        """A request to answer: start the connection's task, or wake it."""
        if self.waiting is not None:
            if not self.waiting.done():
                self.waiting.set_result(None)
        elif self.serving is None:
            self.serving = self.loop.create_task(self._serve())

    async def _serve(self) -> None:
        """Answer the queued requests in order, waiting between them, until the connection closes.
        (One task for the connection's life: a task per request would cost more than a wait.)"""
        try:
            while not self.closing:
                if not self.queue:
                    if not self.parsing:
                        return  # nothing more will be read: the connection closes
                    self._idle()  # the next request has up to the keep-alive timeout to start
                    self.waiting = self.loop.create_future()  # awaited here: a coroutine for it costs more
                    try:
                        await self.waiting
                    finally:
                        self.waiting = None
                    continue
                message, payload, size = self.queue.popleft()
                self.queued_bytes -= size
                REQUEST_ID.set(None)  # the handler sets this request's own
                self._parser.message_consumed()  # not closing: the parser is still there
                if self._buffer_paused and len(self.queue) <= MAX_QUEUED // 2 and \
                        self.queued_bytes <= MAX_QUEUED_BYTES // 2:
                    self._read_again()
                if isinstance(message, HttpProcessingError):
                    return self._refuse(message)
                request = self.current = EdgeRequest(message, payload, self)
                try:
                    answer = await self.server.handler(request)
                    if not answer.prepared and answer.send(request):
                        await drained(request)
                except ConnectionError:  # the client went away while it was answered
                    return self.force_close()
                except web.RequestPayloadError as exc:  # the body broke HTTP's framing (see _unparsable)
                    return self.force_close() if request.started else self._refuse(exc)
                except Exception as exc:
                    return self._internal_error(request, exc)
                self.current = None
                if not answer.keep_alive or (request.body_exists and not (payload.is_eof() or await _linger(payload))):
                    return self.force_close()
        finally:
            self.serving = self.current = None
            self.force_close()

    def _internal_error(self, request: EdgeRequest, exc: Exception) -> None:
        """A bug of ours: a JSON 500 when the answer has not started, else the answer is cut short."""
        if request.started:
            return self.force_close()
        rid = _own_request_id()
        log.error("unexpected error while serving a request", exc_info=exc,
                  extra={"path": request.raw_path.partition("?")[0], "status": 500})
        self._send_closing(error_response(500, "internal_error", "the proxy failed to handle this request", rid))

    def _refuse(self, exc: Exception) -> None:
        """A request that is not valid HTTP/1.1: a JSON 400 (431 for a head too large) that echoes nothing
        of it, and the connection closes."""
        rid = _own_request_id()
        kind = _kind(exc)
        log.info("refused a malformed request", extra={"client": self.remote, "reason": kind})
        if isinstance(exc, HeadersTooLarge):
            detail = f"the request's head is over {self.server.max_header_bytes} bytes"
            return self._send_closing(error_response(431, "headers_too_large", detail, rid))
        self._send_closing(error_response(400, "bad_request", f"the request is not valid HTTP/1.1 ({kind})", rid))

    def _send_closing(self, answer: WholeAnswer) -> None:
        if self.transport is not None:
            self.transport.write(answer.closing())
        self.force_close()

    # -- flow control and timers

    def _idle(self) -> None:
        """Nothing to answer: the connection closes if no request starts within the keep-alive timeout.
        One timer per connection, moved on only when it fires (not re-armed per request)."""
        self.idle_since = self.loop.time()
        if self.idle_timer is None and self.transport is not None:
            self.idle_timer = self.loop.call_at(self.idle_since + self.server.keepalive_timeout, self._idle_check)

    def _idle_check(self) -> None:
        self.idle_timer = None
        if not self.idle:
            return  # busy: the wait for its next request starts the count again
        deadline = self.idle_since + self.server.keepalive_timeout
        if self.loop.time() < deadline:
            self.idle_timer = self.loop.call_at(deadline, self._idle_check)
        else:
            self.force_close()

    def _head_started(self) -> None:
        if self.idle and self.header_timer is None:  # the start of a request's head
            self.header_timer = self.loop.call_later(self.server.header_timeout, self._headers_too_slow)

    def _head_complete(self) -> None:
        self._stop_header_timer()

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if self.idle:
            log.info("closed a connection whose request headers did not arrive in time",
                     extra={"header_timeout": self.server.header_timeout})
            self.force_close()

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None


def _own_request_id() -> str:
    """The id of the request the edge answers itself: the handler's, if it got that far; set for the log."""
    rid = REQUEST_ID.get() or fresh_request_id()
    REQUEST_ID.set(rid)
    return rid


def _kind(exc: Exception) -> str:
    """The parser's name for what is wrong (for a body, set by _unparsable); nothing the client sent."""
    said = str(exc) if isinstance(exc, web.RequestPayloadError) else ""
    return said if said.isidentifier() else type(exc).__name__




async def _linger(payload: StreamReader) -> bool:
    """Read and drop the rest of a body the answer did not need; True when it ended within LINGER seconds."""
    try:
        async with asyncio.timeout(LINGER):
            while not payload.is_eof():
                await payload.readany()
    except (TimeoutError, web.RequestPayloadError, ConnectionError):
        return False
    return True


class EdgeServer(web.Server):
    """The connections' manager, as aiohttp's runners expect one: they stop it with pre_shutdown and shutdown."""

    def __init__(self, handler: Handler | Any, *, keepalive_timeout: float = 75.0,
                 header_timeout: float = 10.0, max_header_bytes: int = 32 << 10) -> None:
        super().__init__(handler)
        self.handler = handler
        self.keepalive_timeout, self.header_timeout = keepalive_timeout, header_timeout
        self.max_header_bytes = max_header_bytes

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        self._connections.pop(handler, None)

    def __call__(self) -> EdgeConnection:
        return EdgeConnection(self, asyncio.get_running_loop())
