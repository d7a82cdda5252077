"""How an edge connection's bytes become a queue of parsed requests: llhttp fed a head at a time, bounded.

A head is fed to aiohttp's C parser alone whenever the parser is between requests, so a
bad request costs only itself (those before it are answered first: a feed that raises
returns nothing) and a head's size is known before it is parsed: one over
`max_header_bytes` is refused (431) as soon as it grows past the bound, unparsed. The
queue of parsed requests is bounded in count (MAX_QUEUED, aiohttp's pipelining bound) and
in bytes; past either, the socket is not read until the queue drains. After a request to
switch protocols nothing more is parsed: its bytes are held for a tunnel
(proxy.wire.tunnel), up to a bound.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aiohttp import web
from aiohttp.http import RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

from proxy.wire.tunnel import EARLY_BYTES, TunnelSide

READ_BUFSIZE = 1 << 16  # a request body is buffered up to this much before the socket is not read
MAX_QUEUED = 32  # pipelined requests parsed ahead of the one being answered (aiohttp's bound)
MAX_QUEUED_BYTES = 1 << 16  # and the most their heads may hold


class Intake(TunnelSide):
    """The parsing half of an edge connection (proxy.wire.server.EdgeConnection is the answering half)."""

    max_header_bytes: int

    def __init__(self, loop: asyncio.AbstractEventLoop, max_header_bytes: int) -> None:
        parser = HttpRequestParser(self, loop, READ_BUFSIZE, max_line_size=8190, max_field_size=8190,
                                   max_headers=128, payload_exception=web.RequestPayloadError,
                                   auto_decompress=False, max_msg_queue_size=MAX_QUEUED)
        super().__init__(loop, parser)
        self.max_header_bytes = max_header_bytes
        self.queue: deque[tuple[RawRequestMessage | HttpProcessingError, StreamReader, int]] = deque()
        self.queued_bytes = 0  # the heads waiting in `queue`
        self.head_bytes = 0  # of a head still arriving
        self.head_tail = b""  # its last three bytes: the end of a head (CRLFCRLF) may straddle two reads
        self.body: StreamReader | None = None  # the last parsed request's body (None: it has none), while fed
        self.parsing = True  # False after a parse error or a request to switch protocols
        self.early: list[bytes] | None = None  # after a request to switch protocols: its bytes, for a tunnel

    # what the answering half does when a request arrives, a head starts and a head is complete

    def _wake(self) -> None:
        raise NotImplementedError

    def _head_started(self) -> None:
        raise NotImplementedError

    def _head_complete(self) -> None:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        """Feed the parser a request head at a time while it is between requests, so that a bad request
        costs only itself: those before it are answered first (a feed that raises returns nothing)."""
        if self.tunnel is not None:
            return self.tunnel.from_client(data)
        if not self.parsing:
            return self._held(data)
        while self.parsing:
            piece, data = self._next_piece(data)
            if piece is None:
                return self._head_too_large()
            self._feed(piece)
            if not data:
                return

    def _next_piece(self, data: bytes) -> tuple[bytes | None, bytes]:
        """What to feed now, and the rest: up to the end of the next head when between requests, else all
        of it. None when the head being received is already over `max_header_bytes`."""
        body = self.body
        if (body is not None and not body.is_eof()) or len(self.queue) >= MAX_QUEUED:
            return data, b""  # a body, or a parser held back by the queue: it takes what comes
        tail = self.head_tail
        end = ((tail + data).find(b"\r\n\r\n") + 4 - len(tail)) if tail else data.find(b"\r\n\r\n") + 4
        head = end if end > 0 else len(data)
        if self.head_bytes + head > self.max_header_bytes:
            return None, b""
        if end <= 0 or end == len(data):
            return data, b""
        return data[:end], data[end:]

    def _feed(self, data: bytes) -> None:
        body = self.body
        in_head = body is None or body.is_eof()  # before the feed: the piece may end a body
        held = len(self.queue) >= MAX_QUEUED  # the parser keeps what it is fed, unparsed, until the queue drains
        received = body.total_bytes if not in_head else 0
        head = self.head_bytes + len(data)  # the head's size, when this piece ends one (see _next_piece)
        try:
            messages, upgraded, tail = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            self._unparsable(exc)
            return
        if messages:
            self._parsed(messages, head if in_head and not held and data and len(messages) == 1 else None)
        elif held:
            pass  # bytes the parser holds back are measured as each of their heads is parsed
        elif in_head:  # part of a head
            self._arriving(head, data)
        elif body.is_eof():  # the piece ended a body: what followed it is the start of a head
            self._arriving(len(data) - (body.total_bytes - received), data)
        if upgraded:
            self.parsing = False  # what follows a request to switch protocols is not HTTP/1.1
            self._held(tail)

    def _parsed(self, messages: list[tuple[RawRequestMessage, StreamReader]], size: int | None) -> None:
        """Requests parsed: queued in turn (`size`: of the one head the piece held, when it held one)."""
        self.head_bytes, self.head_tail = 0, b""
        self._head_complete()
        for message, payload in messages:
            if not self.parsing:
                break  # after a refusal or a request to switch protocols: nothing more is answered
            self._queued(message, payload, size if size is not None else head_size(message))
        self._wake()
        if (len(self.queue) >= MAX_QUEUED or self.queued_bytes >= MAX_QUEUED_BYTES) and not self._buffer_paused:
            self._pause_reading_for_buffer()  # the parser stops too; _serve resumes both

    def _arriving(self, size: int, data: bytes) -> None:
        """Part of a head, `size` bytes of it so far, the piece `data` its end."""
        self.head_bytes, self.head_tail = size, (self.head_tail + data)[-3:]
        if self.head_bytes > self.max_header_bytes:
            return self._head_too_large()
        if data:
            self._head_started()

    def _queued(self, message: RawRequestMessage, payload: StreamReader, size: int) -> None:
        """A parsed request joins the queue, with its head's size; a head over the limit is refused in turn."""
        if size > self.max_header_bytes:
            self.parsing = False
            self.queue.append((HeadersTooLarge(), EMPTY_PAYLOAD, 0))
            return
        if message.upgrade:  # answered, then tunnelled or closed (see _serve and proxy.wire.tunnel)
            self.parsing, self.early = False, []
        self.body = payload if payload is not EMPTY_PAYLOAD else None  # None: no body for the parser to feed
        self.queued_bytes += size
        self.queue.append((message, payload, size))

    def _held(self, data: bytes) -> None:
        """Bytes after a request to switch protocols: kept for a tunnel (up to EARLY_BYTES, then the socket
        waits), else dropped: nothing reads them."""
        if self.early is None or not data:
            return
        self.early.append(data)
        if sum(map(len, self.early)) > EARLY_BYTES and self.transport is not None:
            self.transport.pause_reading()

    def take_early(self) -> bytes:
        early, self.early = b"".join(self.early or ()), None
        return early

    def _head_too_large(self) -> None:
        """A head that grew past `max_header_bytes` before it ended: refused without parsing the rest."""
        self.parsing = False
        self.queue.append((HeadersTooLarge(), EMPTY_PAYLOAD, 0))
        self._wake()

    def _unparsable(self, exc: HttpProcessingError) -> None:
        """The parser gave up: on a new request's head, it is refused with a 400; in the middle of a body,
        that body fails (its request is refused with a 400, or, when its answer had started, cut
        short), and the connection closes once the requests before it are answered."""
        self.parsing = False
        unfinished = self.body  # the body the parser was feeding: its request's, queued, answered or lingered over
        if unfinished is not None and not unfinished.is_eof():
            unfinished.set_exception(web.RequestPayloadError(type(exc).__name__))
            return
        self.queue.append((exc, EMPTY_PAYLOAD, 0))
        self._wake()

    def _read_again(self) -> None:
        """The queue drained: parse what the parser held back, and read the socket again if that fits."""
        self.data_received(b"")
        if len(self.queue) < MAX_QUEUED:
            self._resume_reading_for_buffer()


class HeadersTooLarge(HttpProcessingError):
    """A request head over `server.max_header_bytes`."""

    code = 431


def head_size(message: RawRequestMessage) -> int:
    """The bytes of a parsed request head, near enough: its request line and header lines."""
    size = len(message.method) + len(message.path) + 14
    for name, value in message.raw_headers:
        size += len(name) + len(value) + 4
    return size
