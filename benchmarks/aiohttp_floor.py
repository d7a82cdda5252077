"""What aiohttp costs before a proxy does anything: the floor under strangler's numbers.

    python -m benchmarks.aiohttp_floor server PORT           # aiohttp's server answering the small JSON
    python -m benchmarks.aiohttp_floor proxy PORT UPSTREAM   # the same server relaying through strangler's
                                                              # upstream client, and nothing else

The first is the issue's "aiohttp hello world" row; the second is a proxy with no routing,
no header rewriting, no metrics, no timeouts: what strangler would cost if all of its own
work were free.
"""

import asyncio
import gc
import sys

from aiohttp import web

from proxy.model import Upstream
from proxy.upstream import UpstreamPool

SMALL = b'{"id":1,"name":"item","price":10,"currency":"EUR","tags":["a","b"]}'


async def serve(handle, port: int) -> None:
    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    gc.freeze()
    await asyncio.Event().wait()


async def server(port: int) -> None:
    async def handle(request: web.BaseRequest) -> web.Response:
        return web.Response(body=SMALL, content_type="application/json")
    await serve(handle, port)


async def proxy(port: int, upstream: int) -> None:
    pool = UpstreamPool(Upstream("upstream", f"http://127.0.0.1:{upstream}", max_connections=200))

    async def handle(request: web.BaseRequest) -> web.Response:
        head = b"".join(b"%s: %s\r\n" % pair for pair in request.raw_headers if pair[0] != b"Host")
        async with pool.request(request.method, request.raw_path, head) as answer:
            body = answer.content.read_nowait() if answer.content.is_eof() else await answer.content.read()
            return web.Response(body=body, status=answer.status,
                                headers={"Content-Type": answer.headers.get("Content-Type", "")})
    await serve(handle, port)


if __name__ == "__main__":
    import uvloop

    mode, ports = sys.argv[1], [int(port) for port in sys.argv[2:]]
    uvloop.run(server(*ports) if mode == "server" else proxy(*ports))
