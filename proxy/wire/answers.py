"""An upstream's answer on its way to the client: its status line and headers written here, its body framed anew.

aiohttp's Response would copy, check and complete the headers once more, which cost as
much as the rest of the exchange; what it adds that matters for a relayed answer is
done here: the framing (Content-Length, or chunks for a body of unknown length), Date
when the upstream sent none, and Connection as the client's keep-alive needs it. Nothing
else is invented (no Server, no Content-Type). An answer that arrived whole leaves in
one write; one still arriving sends its head, then its body as it comes, waiting for the
client's socket to take each piece (back-pressure) for at most `server.send_timeout`.

The proxy's own answers (its JSON errors) are WholeAnswers too: the edge sends what a
handler returns when the handler has not sent it itself (`prepared`).
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import TYPE_CHECKING

from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import HttpVersion, HttpVersion10, HttpVersion11

from proxy.wire.headers import UPGRADE_LINES

if TYPE_CHECKING:
    from proxy.wire.deadline import Deadline
    from proxy.wire.request import EdgeRequest

PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}
# Status lines made so far, by status and the upstream's reason phrase: upstreams answer with a few of
# them, over and over. Up to STATUS_LINES_KEPT; past that, the others are made every time.
STATUS_LINES_KEPT = 256
_STATUS_LINES: dict[tuple[int, str], bytes] = {}


def _status_line(status: int, reason: str) -> bytes:
    """HTTP/1.1 whatever the client spoke (as nginx): an HTTP/1.0 client reads it as 1.0 (RFC 9110 6.2),
    and a version the edge refused is never echoed back. The upstream's reason phrase as it sent it, or
    the standard one when it sent none."""
    phrase = reason.encode("utf-8", "surrogateescape") if reason else PHRASES.get(status, b"")
    line = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
    if len(_STATUS_LINES) < STATUS_LINES_KEPT:
        _STATUS_LINES[(status, reason)] = line
    return line


class Relayed:
    """What both kinds of relayed answer share: the head, and how it is written."""

    __slots__ = ("status", "status_line", "lines", "dated", "keep_alive", "prepared", "closes", "written")

    def __init__(self, status: int, reason: str, lines: bytes, dated: bool) -> None:
        self.status, self.lines, self.dated = status, lines, dated  # lines: from proxy.wire.headers.client_lines
        self.status_line = _STATUS_LINES.get((status, reason)) or _status_line(status, reason)
        self.keep_alive = self.prepared = self.closes = False
        self.written = 0  # bytes sent to the client, head included (nginx's $bytes_sent)

    def force_close(self) -> None:
        """Say `Connection: close`: the connection ends with this answer."""
        self.closes = True

    def _head(self, request: EdgeRequest, framing: bytes, delimited: bool = True, body: bytes = b"") -> bytes:
        """The status line and headers (and `body` after them); `delimited`: whether the client can tell
        where the body ends without the connection closing."""
        self.keep_alive = keep_alive = delimited and not self.closes and request.keep_alive
        return self._status_and_headers(request.version, keep_alive, framing, body)

    def _status_and_headers(self, version: HttpVersion, keep_alive: bool, framing: bytes, body: bytes = b"") -> bytes:
        """The head, and `body` after it: joined once (bytes' % formatting costs more than the join)."""
        if keep_alive:
            connection = b"Connection: keep-alive\r\n" if version == HttpVersion10 else b""
        else:
            connection = b"Connection: close\r\n" if version == HttpVersion11 else b""
        date = b"" if self.dated else b"Date: " + rfc822_formatted_time().encode() + b"\r\n"
        return b"".join((self.status_line, self.lines, framing, date, connection, b"\r\n", body))

    def _write(self, request: EdgeRequest, data: bytes) -> bool:
        """Straight to the client's socket; True when that socket is full and the writer must wait."""
        self.prepared = True  # from here on a failure is the client's, not the upstream's
        protocol = request.protocol
        transport = protocol.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        transport.write(data)
        self.written += len(data)
        request.started = True
        return protocol.writing_paused


class WholeAnswer(Relayed):
    """An answer whose body had arrived whole (most small answers), or that has no body of its own
    (to a HEAD; 204, 304): head and body leave in one write. `length` is what Content-Length says:
    the body's length, the upstream's for a HEAD or 304, None for a 204."""

    __slots__ = ("body", "framing")

    def __init__(self, status: int, reason: str, lines: bytes, dated: bool, body: bytes,
                 length: int | None) -> None:
        Relayed.__init__(self, status, reason, lines, dated)  # named: super() makes an object per answer
        self.body = body
        self.framing = b"" if length is None else b"Content-Length: %d\r\n" % length

    def send(self, request: EdgeRequest) -> bool:
        """Write it all, in one write; True when the client's socket is now full (the caller awaits
        `request.writer.drain()` before it writes more). A client gone raises. To a HEAD, the body
        is left out (only the proxy's own answers have one to leave out)."""
        body = self.body if request.method != "HEAD" else b""
        return self._write(request, self._head(request, self.framing, body=body))

    def closing(self) -> bytes:
        """The whole answer as HTTP/1.1 bytes saying `Connection: close`, for the edge to send where it
        has no request to answer (one its parser refused) or will not use it (a bug of ours)."""
        return self._status_and_headers(HttpVersion11, False, self.framing, self.body)


class SwitchingAnswer(Relayed):
    """An upstream's 101 to a WebSocket handshake: its head, with the upgrade pair it needs, and nothing
    after it that is HTTP (proxy.wire.tunnel joins the two connections next)."""

    __slots__ = ()

    def send(self, request: EdgeRequest) -> bool:
        date = b"" if self.dated else b"Date: " + rfc822_formatted_time().encode() + b"\r\n"
        return self._write(request, b"%s%s%s%s\r\n" % (self.status_line, self.lines, UPGRADE_LINES, date))


class StreamedAnswer(Relayed):
    """An answer whose body is still arriving: the head now, then the body as it comes, framed by the
    upstream's length when it gave one, else in chunks (or, to an HTTP/1.0 client, until close). While
    the client's socket is full, `clock` (the upstream exchange's deadline) is held."""

    __slots__ = ("_request", "_left", "_chunked", "clock")

    def __init__(self, status: int, reason: str, lines: bytes, dated: bool) -> None:
        Relayed.__init__(self, status, reason, lines, dated)
        self._left: int | None = None  # bytes the declared length still allows
        self._chunked = False
        self.clock: Deadline | None = None

    async def start(self, request: EdgeRequest, length: int | None) -> None:
        self._request = request
        if length is not None:
            head = self._head(request, b"Content-Length: %d\r\n" % length)
            self._left = length
        elif request.version == HttpVersion11:
            head = self._head(request, b"Transfer-Encoding: chunked\r\n")
            self._chunked = True
        else:
            head = self._head(request, b"", delimited=False)
        await self._send(head)

    async def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._chunked:
            chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        elif self._left is not None:  # never past the length declared
            chunk = chunk[:self._left]
            self._left -= len(chunk)
        await self._send(chunk)

    async def finish(self) -> None:
        if self._chunked:
            await self._send(b"0\r\n\r\n")

    async def _send(self, data: bytes) -> None:
        if self._write(self._request, data):
            await drained(self._request, self.clock)


async def drained(request: EdgeRequest, clock: Deadline | None = None) -> None:
    """Wait until the client's socket takes what was written, for up to its send timeout (then
    ClientTooSlow); `clock`, an upstream's deadline, is held meanwhile: the wait is the client's."""
    protocol = request.protocol
    if not protocol.writing_paused:
        return
    if clock is not None:
        clock.hold()
    try:
        async with asyncio.timeout(request.send_timeout):
            await protocol.drained()
    except TimeoutError:
        raise ClientTooSlow(f"the client took none of its answer for {request.send_timeout:g}s") from None
    finally:
        if clock is not None:
            clock.release()


class ClientTooSlow(ConnectionError):
    """The client stopped reading its answer: the connection is given up on, the client's doing."""

def error_response(status: int, code: str, detail: str, rid: str,
                   retry_after: int | None = None) -> WholeAnswer:
    """`{"error": CODE, "detail": TEXT, "request_id": ID}`, as the contract has it."""
    body = json.dumps({"error": code, "detail": detail, "request_id": rid}).encode()
    lines = b"Content-Type: application/json\r\nX-Request-Id: %s\r\nCache-Control: no-store\r\n" % rid.encode()
    if retry_after is not None:
        lines += b"Retry-After: %d\r\n" % retry_after
    return WholeAnswer(status, "", lines, False, body, len(body))
