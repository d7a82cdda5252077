"""A fault-injecting TCP proxy for tests (our Toxiproxy): put it between the proxy and an upstream
and set `mode` to refuse, reset, hang, drip or answer garbage; it counts what it accepted and holds."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

MODES = ("pass", "refuse", "reset", "reset_mid_body", "hang", "drip", "malformed")
RELAYED = ("pass", "drip", "reset_mid_body")
GARBAGE = b"SPLAT \x00\x01 this is not HTTP\r\n\r\n"


class FaultProxy:
    """Listens on 127.0.0.1 (a free port, kept across "refuse"); `mode` applies to new connections."""

    def __init__(self, host: str, port: int, mode: str = "pass", reset_after: int = 200,
                 drip_delay: float = 0.01) -> None:
        self.host, self.port, self._mode = host, port, mode
        self.reset_after, self.drip_delay = reset_after, drip_delay
        self.accepted = 0  # connections accepted in total
        self.open = 0  # connections open now (client side and upstream side)
        self.listen_port = 0
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> FaultProxy:
        self._loop = asyncio.get_running_loop()
        self._listen(0)  # a port of its own, even when it starts refusing
        if self._mode == "refuse":
            self._unlisten()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        assert mode in MODES, mode
        self._mode = mode
        if mode == "refuse" and self._sock is not None:
            self._unlisten()  # connects are refused by the kernel from now on
        elif mode != "refuse" and self._sock is None and self._loop is not None:
            self._listen(self.listen_port)

    def _listen(self, port: int) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        sock.setblocking(False)
        self.listen_port, self._sock = sock.getsockname()[1], sock
        self._loop.add_reader(sock.fileno(), self._accept, sock)  # type: ignore[union-attr]

    def _unlisten(self) -> None:
        assert self._sock is not None and self._loop is not None
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()  # what waits in the backlog is reset too
        self._sock = None

    def _accept(self, sock: socket.socket) -> None:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        self.accepted, self.open = self.accepted + 1, self.open + 1
        task = self._loop.create_task(self._handle(conn, self._mode))  # type: ignore[union-attr]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, conn: socket.socket, mode: str) -> None:
        writers: list[asyncio.StreamWriter] = []
        try:
            client_r, client_w = await asyncio.open_connection(sock=conn)
            writers.append(client_w)
            if mode in RELAYED:
                up_r, up_w = await asyncio.open_connection(self.host, self.port)
                writers.append(up_w)
                return await _first_done(self._relay(client_r, up_w, "pass"), self._relay(up_r, client_w, mode))
            await client_r.readuntil(b"\r\n\r\n")
            if mode == "reset":
                return _reset(client_w)
            if mode == "malformed":
                client_w.write(GARBAGE)
                await client_w.drain()
            while await client_r.read(65536):  # hang (or after the garbage): until the peer closes
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a side went away: the connection ends
        finally:
            if not writers:
                conn.close()  # open_connection failed: nobody else owns it
            for writer in writers:
                writer.close()
            try:
                await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
            finally:
                self.open -= 1

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mode: str) -> None:
        sent = 0
        while data := await reader.read(65536):
            if mode == "reset_mid_body" and sent + len(data) >= self.reset_after:
                writer.write(data[:self.reset_after - sent])
                await writer.drain()
                await asyncio.sleep(0.05)  # let the peer (in this very loop) read them before the RST
                return _reset(writer)
            sent += len(data)
            for piece in ([data[i:i + 1] for i in range(len(data))] if mode == "drip" else [data]):
                writer.write(piece)
                await writer.drain()
                if mode == "drip":
                    await asyncio.sleep(self.drip_delay)

    async def close(self) -> None:
        if self._sock is not None:
            self._unlisten()
        [task.cancel() for task in list(self._tasks)]
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN: SO_LINGER on, zero seconds."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _first_done(*coros: Awaitable[None]) -> None:
    """Both directions at once; when one ends (its side closed, or a fault), the other is stopped."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        [task.result() for task in done]  # a direction's error (a reset) ends the connection
    finally:
        [task.cancel() for task in tasks]
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def faults() -> AsyncIterator[Callable[..., Awaitable[FaultProxy]]]:
    """Started FaultProxies in front of an upstream URL (http://host:port), closed after the test."""
    made: list[FaultProxy] = []

    async def make(upstream_url: str, mode: str = "pass", **settings: Any) -> FaultProxy:
        host, port = upstream_url.removeprefix("http://").rsplit(":", 1)
        made.append(await FaultProxy(host, int(port), mode, **settings).start())
        return made[-1]

    yield make
    for fault in made:
        await fault.close()
