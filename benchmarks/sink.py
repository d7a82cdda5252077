"""An upstream that takes request bodies and drops them, answering how many bytes it got.

    python -m benchmarks.sink PORT

The upload rows of benchmarks/bytes.py send 512 MiB through each proxy to this one sink.
nginx cannot drop a body by itself (`return` answers before reading it), and an aiohttp
handler would copy every chunk into a StreamReader: a protocol on uvloop that only counts
what arrives takes a few microseconds a read, so the proxy in front, not the sink, sets
the pace. Bodies come with Content-Length (both proxies send one when the client did);
one without is taken as empty. Keep-alive, HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import re
import sys

import uvloop

LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)")


class Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = b""  # a head still arriving
        self.left: int | None = None  # body bytes still to come; None between requests
        self.size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        while data:
            if self.left is None:
                data = self._head(data)
                continue
            taken = min(self.left, len(data))
            self.left -= taken
            data = data[taken:] if taken < len(data) else b""
            if self.left == 0:
                self._answer()

    def _head(self, data: bytes) -> bytes:
        """The rest after a complete head (its body's length now in `left`), or b"" while it arrives."""
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return b""
        head, rest, self.head = self.head[:end], self.head[end + 4:], b""
        found = LENGTH.search(head)
        self.left = self.size = int(found[1]) if found else 0
        if self.left == 0:
            self._answer()
        return rest

    def _answer(self) -> None:
        body = b'{"received":%d}' % self.size
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
        self.left = None


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> int:
    uvloop.run(serve(int(sys.argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
