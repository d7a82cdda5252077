"""The least an HTTP/1.1 server in Python can do per request: what aiohttp's own machinery adds is measured against it.

    python benchmarks/bare_server.py PORT

A bare asyncio protocol on aiohttp's C request parser (llhttp), answering every request
with the same small JSON in one write: no request object, no task, no response object.
Not a server to use (no timeouts, no errors answered, no flow control): a yardstick.
"""

import asyncio
import sys

import uvloop
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpRequestParser

SMALL = b'{"id":1,"name":"item","price":10,"currency":"EUR","tags":["a","b"]}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(SMALL), SMALL)


class Bare(BaseProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.parser = HttpRequestParser(self, self._loop, 1 << 16, max_line_size=8190, max_field_size=8190)

    def data_received(self, data: bytes) -> None:
        messages, _, _ = self.parser.feed_data(data)
        for _ in messages:
            self.transport.write(ANSWER)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: Bare(loop), "127.0.0.1", port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
