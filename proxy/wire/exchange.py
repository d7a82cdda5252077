"""One request and its answer on one pooled upstream connection.

The request leaves in one write (its header lines as proxy.wire.headers.upstream_head
built them), a streamed body after it in a task of its own; the answer's status line and
headers come back through aiohttp's C parser (proxy.wire.connection), its body as a
stream. The connection goes back to the pool only if both were whole.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiohttp import ServerDisconnectedError, StreamReader
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.wire.connection import Connection
from proxy.wire.headers import RawHeaders, Repeated, content_length

EMPTY_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


class Pool(Protocol):
    """What an exchange takes from its pool (proxy.wire.pool.Pool)."""

    in_flight: int
    host_line: bytes  # a Host header naming the upstream, for a client that sent none
    last_answer: Repeated  # the client's header lines made from this upstream's last answer

    def take(self) -> Connection | None: ...

    async def acquire(self) -> tuple[Connection, bool]: ...

    def release(self, conn: Connection, reusable: bool) -> None: ...

    def finished(self) -> None: ...


class UnaskedSwitch(HttpProcessingError):
    """A 101 to a request that did not ask to switch protocols: the answer is not HTTP any more."""


class Exchange:
    """One request and its answer on one pooled connection: once entered, the answer's status line and
    headers, and its body as a stream. The connection goes back only if both were whole and the
    upstream keeps it alive."""

    __slots__ = ("pool", "method", "target", "head", "body", "length", "upgrade", "conn", "sending",
                 "status", "reason", "headers", "raw_headers", "content")

    def __init__(self, pool: Pool, method: str, target: str, head: bytes, body: Any,
                 length: int | None, upgrade: bool = False) -> None:
        self.pool, self.method, self.target = pool, method, target
        self.head, self.body, self.length, self.upgrade = head, body, length, upgrade
        self.conn: Connection | None = None
        self.sending: asyncio.Task[None] | None = None
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDictProxy[str] = EMPTY_HEADERS
        self.raw_headers: RawHeaders = ()  # the headers as they arrived: bytes, names in the upstream's case
        self.content: StreamReader = EMPTY_PAYLOAD

    @property
    def content_length(self) -> int | None:
        return content_length(self.headers)

    async def __aenter__(self) -> Exchange:
        pool = self.pool
        pool.in_flight += 1
        try:
            conn = pool.take()
            if conn is None:
                conn, _ = await pool.acquire()
            self.conn = conn
            answered = conn.expect(self.method == "HEAD")
            self._send(conn)
            message, payload = await answered
            if message.code == 101 and not self.upgrade:
                raise UnaskedSwitch()
        except BaseException:
            await self._finish(reusable=False)
            raise
        self.status, self.reason, self.headers, self.raw_headers = (message.code, message.reason, message.headers,
                                                                    message.raw_headers)
        self.content = payload
        return self

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> None:
        reusable = kind is None and self.status != 0 and self.content.is_eof()
        if self.sending is None:  # the usual: no body was streamed, so nothing to wait for
            self._release(reusable)
        else:
            await self._finish(reusable)

    def _send(self, conn: Connection) -> None:
        """The request's head, and its body when it is bytes, in one write; a streamed body follows
        in a task of its own, while the answer is awaited (an upstream may answer, 413 say, early).
        Framing is the sender's: the length of what is sent, whatever the client said."""
        transport = conn.transport
        if transport is None:
            raise ServerDisconnectedError()
        body = self.body
        head = b"%s %s HTTP/1.1\r\n%s%s" % (self.method.encode(), self.target.encode("utf-8", "surrogateescape"),
                                          b"" if self.head.startswith(b"Host: ") else self.pool.host_line, self.head)
        if body is None:
            transport.write(head + b"\r\n")
        elif isinstance(body, bytes):
            transport.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        else:
            loop = asyncio.get_running_loop()
            writer = StreamWriter(conn, loop)
            if self.length is None:
                writer.enable_chunking()
                transport.write(head + b"Transfer-Encoding: chunked\r\n\r\n")
            else:
                transport.write(head + b"Content-Length: %d\r\n\r\n" % self.length)
            self.sending = loop.create_task(_stream(writer, body))
            self.sending.add_done_callback(self._sent)

    def _sent(self, sending: asyncio.Task[None]) -> None:
        """A body that could not be sent (client too slow, upstream gone) fails the wait for the answer."""
        if not sending.cancelled() and sending.exception() is not None and self.conn is not None:
            self.conn.fail(sending.exception())

    async def _finish(self, reusable: bool) -> None:
        sending = self.sending
        try:
            if sending is not None and not sending.done():
                # ended before the body was sent: the sending task stops reading the client's body before
                # the edge reads the rest of it (two readers of one stream raise)
                reusable = False
                sending.cancel()
                await asyncio.wait({sending})
            elif sending is not None and (sending.cancelled() or sending.exception() is not None):
                reusable = False
        finally:
            self._release(reusable)

    def _release(self, reusable: bool) -> None:
        """The connection back to the pool (or closed), and the request no longer in flight."""
        if self.conn is not None:
            self.pool.release(self.conn, reusable)
            self.conn = None
        self.pool.finished()


async def _stream(writer: StreamWriter, body: Any) -> None:
    async for chunk in body:
        await writer.write(chunk)
    await writer.write_eof()
