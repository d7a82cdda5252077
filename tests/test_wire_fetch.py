"""proxy.wire.fetch: a shadow's exchange driven by callbacks, against real sockets. What `call` is told (once),
and what becomes of the pooled connection."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Callable

import pytest

from proxy.model import FailureKind, Upstream
from proxy.wire.fetch import Fetch, Fetched
from proxy.wire.pool import UpstreamPool
from tests.helpers import free_port

Answering = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Side: new\r\n\r\nhello"


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[[Answering], Awaitable[UpstreamPool]]]:
    """An upstream answering each request as told, on a real socket, and a pool to it."""
    servers, pools = [], []

    async def start(answering: Answering) -> UpstreamPool:
        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while await reader.readuntil(b"\r\n\r\n"):
                    await answering(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
        server = await asyncio.start_server(connection, "127.0.0.1", 0)
        servers.append(server)
        pool = UpstreamPool(Upstream("new", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"))
        pools.append(pool)
        return pool
    yield start
    for pool in pools:
        await pool.close()
    for server in servers:
        server.close()


async def fetch(pool: UpstreamPool, cap: int = 1000, seconds: float = 5.0) -> list[Fetched]:
    """One fetch, and everything `call` was told, once the first came (and a moment after)."""
    told: list[Fetched] = []
    came = asyncio.Event()

    def call(fetched: Fetched) -> None:
        told.append(fetched)
        came.set()
    Fetch(pool, "GET", "/items/1", b"Host: h\r\n", None, cap, call).start(seconds, asyncio.get_running_loop())
    await asyncio.wait_for(came.wait(), 10)
    await asyncio.sleep(0.05)
    return told


def answers(*data: bytes) -> Answering:
    async def answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in data:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
    return answering


async def test_a_whole_answer_is_handed_over_once_and_its_connection_carries_the_next(upstream):
    pool = await upstream(answers(OK))
    for _ in range(3):
        [told] = await fetch(pool)
        assert (told.status, told.headers["X-Side"], told.body, told.error) == (200, "new", b"hello", None)
    assert (pool.open, pool.idle, pool.in_flight) == (1, 1, 0)


async def test_a_body_arriving_in_pieces_is_read_whole(upstream):
    pool = await upstream(answers(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"3\r\nhel\r\n",
                                  b"2\r\nlo\r\n", b"0\r\n\r\n"))
    [told] = await fetch(pool)
    assert (told.status, told.body, told.error, pool.idle) == (200, b"hello", None, 1)


@pytest.mark.parametrize("pieces", [1, 2])
async def test_a_body_over_the_cap_is_not_kept(upstream, pieces):
    body = b"x" * 2000
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n"
    pool = await upstream(answers(head + body) if pieces == 1 else answers(head, body[:1000], body[1000:]))
    [told] = await fetch(pool, cap=1500)
    assert (told.status, told.body, told.error) == (200, None, None)
    assert pool.in_flight == 0


async def test_an_upstream_that_never_answers_times_out_and_its_connection_is_not_kept(upstream):
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)
    pool = await upstream(silent)
    [told] = await fetch(pool, seconds=0.1)
    assert (told.status, pool.failure_from(told.error).kind) == (None, FailureKind.TIMEOUT)
    assert (pool.open, pool.in_flight) == (0, 0)


async def test_a_refused_connection_is_said_so():
    pool = UpstreamPool(Upstream("new", f"http://127.0.0.1:{free_port()}"))
    [told] = await fetch(pool)
    assert (told.status, pool.failure_from(told.error).kind, pool.open) == (None, FailureKind.REFUSED, 0)


@pytest.mark.parametrize("data", [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                                  b"NOT HTTP AT ALL\r\n\r\n",
                                  b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\ncut"])
async def test_a_broken_answer_is_said_so_and_spends_the_connection(upstream, data):
    async def breaks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()
    pool = await upstream(breaks)
    [told] = await fetch(pool)
    assert (told.status, pool.failure_from(told.error).kind, pool.open) == (None, FailureKind.BROKEN, 0)


async def test_a_cancelled_fetch_is_told_once_and_gives_its_connection_up(upstream):
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)
    pool = await upstream(silent)
    told: list[Fetched] = []
    fetch = Fetch(pool, "GET", "/", b"", None, 100, told.append)
    fetch.start(0.2, asyncio.get_running_loop())
    await asyncio.sleep(0.05)
    fetch.cancel()
    await asyncio.sleep(0.4)  # past its time: the alarm was cancelled with it
    assert [type(t.error) for t in told] == [asyncio.CancelledError]
    assert (pool.open, pool.in_flight) == (0, 0)
