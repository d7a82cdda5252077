"""What the servers under strangler cost before it does anything: the floors under its numbers.

    python -m benchmarks.floors aiohttp PORT          # aiohttp's server answering the small JSON
    python -m benchmarks.floors edge PORT             # strangler's edge server answering it
    python -m benchmarks.floors floor PORT UPSTREAM   # strangler's edge relaying through strangler's
                                                      # upstream client, and nothing else

The first is the issue's "aiohttp hello world" row; the second is what strangler's own
connection handling costs (proxy/wire/server.py); the third is a proxy with no routing, no
header rewriting, no metrics, no timeouts: what strangler would cost if all of its own
work were free.
"""

import asyncio
import gc
import sys

from aiohttp import web

from proxy.model import Upstream
from proxy.wire.answers import WholeAnswer
from proxy.wire.pool import UpstreamPool
from proxy.wire.request import EdgeRequest
from proxy.wire.server import EdgeServer

SMALL = b'{"id":1,"name":"item","price":10,"currency":"EUR","tags":["a","b"]}'


async def serve(server: web.Server, port: int) -> None:
    runner = web.ServerRunner(server, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    gc.freeze()
    await asyncio.Event().wait()


async def aiohttp_alone(port: int) -> None:
    async def handle(request: web.BaseRequest) -> web.Response:
        return web.Response(body=SMALL, content_type="application/json")
    await serve(web.Server(handle), port)


async def edge_alone(port: int) -> None:
    async def handle(request: EdgeRequest) -> WholeAnswer:
        return WholeAnswer(200, "", b"Content-Type: application/json\r\n", False, SMALL, len(SMALL))
    await serve(EdgeServer(handle), port)


async def floor(port: int, upstream: int) -> None:
    pool = UpstreamPool(Upstream("upstream", f"http://127.0.0.1:{upstream}", max_connections=200))

    async def handle(request: EdgeRequest) -> WholeAnswer:
        head = b"".join(b"%s: %s\r\n" % pair for pair in request.raw_headers if pair[0] != b"Host")
        async with pool.request(request.method, request.raw_path, head) as answer:
            body = answer.content.read_nowait() if answer.content.is_eof() else await answer.content.read()
            kind = answer.headers.get("Content-Type", "").encode()
            return WholeAnswer(answer.status, answer.reason, b"Content-Type: %s\r\n" % kind, False, body, len(body))
    await serve(EdgeServer(handle), port)


if __name__ == "__main__":
    import uvloop

    mode, ports = sys.argv[1], [int(port) for port in sys.argv[2:]]
    uvloop.run({"aiohttp": aiohttp_alone, "edge": edge_alone, "floor": floor}[mode](*ports))
