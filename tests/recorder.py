"""An upstream that keeps every byte it receives and reads requests out of them by a strict
HTTP/1.1 reading of its own, not llhttp's, so a desync between the proxy and its upstream shows."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from tests.helpers import RawServer, eventually

REQUEST_LINE = re.compile(rb"([A-Z]+) (/[\x21-\x7e]*) HTTP/1\.1")
# RFC 9110 5.5: a token, a colon, and a value of visible bytes (obs-text too), spaces and tabs
FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):([ \t\x21-\x7e\x80-\xff]*)")
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")
ANSWER = b"HTTP/1.1 200 OK\r\nX-Upstream: recorder\r\nContent-Length: 2\r\n\r\nok"


class Malformed(ValueError):
    """Bytes no strict HTTP/1.1 reading accepts."""


@dataclass(frozen=True)
class Request:
    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def parse_one(data: bytes) -> tuple[Request, int] | None:
    """The first request in `data` and its length, None while it is incomplete; Malformed if no
    strict reading gives one."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    method, target, headers = read_head(data[:head_end])
    framed = _body(headers, data, head_end + 4)
    if framed is None:
        return None
    body, end = framed
    return Request(method, target, headers, body), end


def read_head(head: bytes) -> tuple[bytes, bytes, tuple[tuple[bytes, bytes], ...]]:
    """The method, target and fields of a request head (without its blank line); Malformed if not strict."""
    line, *lines = head.split(b"\r\n")
    start = REQUEST_LINE.fullmatch(line)
    if start is None:
        raise Malformed(f"request line {line[:80]!r}")
    return start[1], start[2], tuple(_field(raw) for raw in lines)


def _field(raw: bytes) -> tuple[bytes, bytes]:
    found = FIELD.fullmatch(raw)
    if found is None:
        raise Malformed(f"field line {raw[:80]!r}")
    return found[1], found[2].strip(b" \t")


def _body(headers: tuple[tuple[bytes, bytes], ...], data: bytes, at: int) -> tuple[bytes, int] | None:
    codings = [v for k, v in headers if k.lower() == b"transfer-encoding"]
    lengths = [v for k, v in headers if k.lower() == b"content-length"]
    if codings and lengths or len(codings) > 1 or len(lengths) > 1:
        raise Malformed(f"framing: Transfer-Encoding {codings}, Content-Length {lengths}")
    if codings:
        if codings[0].lower() != b"chunked":
            raise Malformed(f"Transfer-Encoding {codings[0]!r}")
        return _chunks(data, at)
    if lengths and not lengths[0].isdigit():
        raise Malformed(f"Content-Length {lengths[0]!r}")
    end = at + int(lengths[0] if lengths else 0)
    return (data[at:end], end) if len(data) >= end else None


def _chunks(data: bytes, at: int) -> tuple[bytes, int] | None:
    body = bytearray()
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return None
        if not CHUNK_SIZE.fullmatch(data[at:line_end]):
            raise Malformed(f"chunk size {data[at:line_end][:20]!r}")
        size, at = int(data[at:line_end], 16), line_end + 2
        if len(data) < at + size + 2:
            return None
        if data[at + size:at + size + 2] != b"\r\n":
            raise Malformed("chunk data not followed by CRLF")
        body += data[at:at + size]
        at += size + 2
        if size == 0:
            return bytes(body), at  # no trailers: the last chunk's CRLF was the end


@dataclass
class Connection:
    """What one connection brought: every byte, the requests read out of them, and what was left."""

    received: bytearray = field(default_factory=bytearray)
    requests: list[Request] = field(default_factory=list)
    read: int = 0  # bytes that made up those requests
    answered: int = 0
    problem: str | None = None
    closed: bool = False

    @property
    def leftover(self) -> bytes:
        return bytes(self.received[self.read:])

    @property
    def done(self) -> bool:
        """Answered its last request (one asking to close, or malformed): what comes next is only kept."""
        return self.problem is not None or any(r.header(b"connection") == [b"close"] for r in self.requests)


class Recorder(RawServer):
    """A raw upstream on 127.0.0.1: answers each whole request 200 and keeps everything, also what
    comes after the connection's last answer, until the peer closes."""

    def __init__(self) -> None:
        super().__init__()
        self.connections: list[Connection] = []

    @property
    def requests(self) -> list[Request]:
        return [request for c in self.connections for request in c.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection()
        self.connections.append(connection)
        try:
            while chunk := await reader.read(65536):
                connection.received += chunk
                self._answer(connection, writer)
        except ConnectionError:
            pass
        finally:
            connection.closed = True
            writer.close()

    def _answer(self, connection: Connection, writer: asyncio.StreamWriter) -> None:
        if connection.done:
            return
        try:
            while found := parse_one(bytes(connection.received[connection.read:])):
                connection.requests.append(found[0])
                connection.read += found[1]
        except Malformed as exc:
            connection.problem = str(exc)
        for request in connection.requests[connection.answered:]:
            writer.write(ANSWER)
            connection.answered += 1
            if request.header(b"connection") == [b"close"]:
                break
        if connection.done:
            writer.write_eof()  # as a server hangs up; the rest is still read and kept

    async def settled(self, timeout: float = 5.0) -> None:
        """Once every connection is closed by its peer: then every byte sent to it is here."""
        await eventually(lambda: all(c.closed for c in self.connections), timeout=timeout)
