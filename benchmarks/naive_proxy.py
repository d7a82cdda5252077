"""The do-it-yourself baseline: an aiohttp proxy as most people first write one (ClientSession, whole bodies).

    python benchmarks/naive_proxy.py PORT UPSTREAM_PORT
"""

import asyncio
import sys

from aiohttp import ClientSession, web


async def main(port: int, upstream: int) -> None:
    session = ClientSession()

    async def handle(request: web.BaseRequest) -> web.Response:
        async with session.request(request.method, f"http://127.0.0.1:{upstream}{request.raw_path}",
                                   headers=request.headers, data=await request.read()) as answer:
            return web.Response(body=await answer.read(), status=answer.status,
                                headers={"Content-Type": answer.headers.get("Content-Type", "")})

    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
