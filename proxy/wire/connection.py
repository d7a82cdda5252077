"""One keep-alive connection to an upstream: requests leave as bytes, answers arrive through aiohttp's C parser.

The parser is aiohttp's (llhttp, with its checks and its flow control: a body the proxy
is not reading fast enough pauses the socket). Around it sits only what a proxy needs:
one answer awaited at a time, and whether the connection can carry another request.
aiohttp's own client protocol does more per answer (read timers, a message queue, its
websocket hooks), which the edge pays for on every request.
"""

from __future__ import annotations

import asyncio

from aiohttp import ClientPayloadError, ServerDisconnectedError
from aiohttp.client_exceptions import ClientOSError
from aiohttp.http import HttpResponseParser, RawResponseMessage
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

from proxy.wire.tunnel import EARLY_BYTES, TunnelSide

READ_BUFSIZE = 1 << 16
NO_BODY_STATUSES = frozenset({204, 304})
BODILESS = frozenset({b"204", b"304"})  # the same, as a status line holds them (HTTP/1.1 204 ...)


class Connection(TunnelSide):
    """A connection's protocol: `expect()` before writing a request, then await what it returns."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.head = False  # whether the parser is set up for the answer to a HEAD (no body follows)
        self.should_close = False  # the upstream said so, broke the framing, or sent what nobody asked for
        self._parser = self._new_parser()
        self._payload: StreamReader | None = None  # the body being received
        self._answer: asyncio.Future[tuple[RawResponseMessage, StreamReader]] | None = None
        self.switched = False  # it answered 101: what follows is not HTTP
        self.early: list[bytes] = []  # bytes after a 101, until a tunnel takes them

    def _new_parser(self) -> HttpResponseParser:
        # read_until_eof: an answer with neither length nor chunks ends when the upstream closes (HTTP/1.0
        # servers, Python's http.server); it is relayed framed anew, and the connection is not reused
        return HttpResponseParser(self, self._loop, READ_BUFSIZE, payload_exception=ClientPayloadError,
                                  response_with_body=not self.head, read_until_eof=True, auto_decompress=False)

    @property
    def reusable(self) -> bool:
        """Open, in step (the last body read to its end), and not told to close."""
        transport = self.transport
        return (transport is not None and not transport.is_closing() and not self.should_close
                and (self._payload is None or self._payload.is_eof()))

    def expect(self, head: bool) -> asyncio.Future[tuple[RawResponseMessage, StreamReader]]:
        """The future the next answer's status line and headers arrive in (with its body as a stream)."""
        if head != self.head:
            self.head = head
            self._parser = self._new_parser()
        self._payload = None
        self._answer = answer = self._loop.create_future()
        return answer

    def resume_reading(self, resume_parser: bool = True) -> None:
        """A body reader calls this after every read and at the body's end; only a reader that
        was paused (a body arriving faster than it is relayed) has anything to resume."""
        if self._reading_paused:
            super().resume_reading(resume_parser)

    def fail(self, exc: BaseException) -> None:
        """Give up on this exchange (a request body that could not be sent): the connection is spent."""
        self.should_close = True
        self._wake(exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def data_received(self, data: bytes) -> None:
        """The head of an answer that may have no body (to a HEAD; a 204 or 304, or a head that came in
        pieces) is fed alone when the read holds more, so that bytes an upstream wrongly sends after a
        bodiless answer break the connection, not the answer before them. Any other answer is fed whole."""
        if self.switched:
            return self._after_switch(data)
        if self._answer is not None and self._payload is None and \
                (self.head or data[9:12] in BODILESS or not data.startswith(b"HTTP/")):
            end = data.find(b"\r\n\r\n") + 4
            if 4 <= end < len(data):
                self._feed(data[:end])
                data = data[end:]
                if self.switched:
                    return self._after_switch(data)
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            messages, upgraded, tail = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            self._broken(HttpProcessingError(code=exc.code, message=exc.message, headers=exc.headers))
            return
        except Exception:
            self._broken(HttpProcessingError())
            return
        for message, payload in messages:
            self._answered(message, payload)
        if upgraded:  # this connection is no longer HTTP: a tunnel may take it (proxy.wire.tunnel)
            self.should_close = self.switched = True
            if tail:
                self._after_switch(tail)

    def _after_switch(self, data: bytes) -> None:
        """Bytes after a 101: the tunnel's, or kept for it (up to EARLY_BYTES, then the socket waits)."""
        if self.tunnel is not None:
            return self.tunnel.from_upstream(data)
        self.early.append(data)
        if sum(map(len, self.early)) > EARLY_BYTES and self.transport is not None:
            self.transport.pause_reading()

    def take_early(self) -> bytes:
        early, self.early = b"".join(self.early), []
        return early

    def _answered(self, message: RawResponseMessage, payload: StreamReader) -> None:
        if 100 <= message.code < 200 and message.code != 101:
            return  # interim (100 Continue, 103 Early Hints): the edge answered Expect itself; the final answer follows
        answer = self._answer
        if answer is None or answer.done():  # an answer nobody asked for: the stream is out of step
            self.should_close = True
            return
        self._answer = None
        if message.should_close:
            self.should_close = True
        if self.head or message.code in NO_BODY_STATUSES or message.code == 101:
            payload = EMPTY_PAYLOAD
        self._payload = payload
        answer.set_result((message, payload))

    def _broken(self, exc: HttpProcessingError) -> None:
        self.should_close = True
        if self.transport is not None:
            self.transport.close()
        if self._payload is not None and not self._payload.is_eof():
            self._payload.set_exception(exc)
        self._wake(exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        """The end of a body sent until close is its end; anything else cut short is an error."""
        if self.tunnel is not None:
            self.tunnel.lost(self)
        self.should_close = True
        try:
            self._parser.feed_eof()
        except Exception as incomplete:
            if self._payload is not None:
                self._payload.set_exception(ClientPayloadError(f"the answer was cut short: {incomplete!r}"))
        if isinstance(exc, OSError):
            exc = ClientOSError(*exc.args)
        self._wake(exc or ServerDisconnectedError())
        super().connection_lost(exc)

    def _wake(self, exc: BaseException) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(exc)
