"""One request and its whole answer, driven by callbacks: for a parallel run's shadow, which no client waits on.

An Exchange (proxy.wire.exchange) belongs to the task that relays its answer as it comes.
A shadow's answer is only kept whole, so a task of its own, a future, a deadline and the
wake of a chain of coroutines would cost more than the exchange itself. Here the
connection hands the answer straight to the fetch from data_received (proxy.wire.connection
takes any Waiter), one shared-tick Alarm bounds it, and a task is made only to open a
connection or to read a body that arrives in pieces. `call` gets what came of it, once.
"""

from __future__ import annotations

import asyncio
from typing import Callable, NamedTuple

from aiohttp import ServerDisconnectedError, StreamReader
from aiohttp.http import RawResponseMessage
from multidict import CIMultiDictProxy

from proxy.wire.connection import Answer, Connection
from proxy.wire.deadline import Alarm
from proxy.wire.exchange import EMPTY_HEADERS, UnaskedSwitch, framed, opening
from proxy.wire.pool import UpstreamPool


class Fetched(NamedTuple):
    """What came of a fetch: the answer (its body None when over the cap), or what went wrong."""

    status: int | None
    headers: CIMultiDictProxy[str]
    body: bytes | None
    error: BaseException | None  # the pool's failure_from says what it means; TimeoutError past the time


class Fetch:
    """One request, sent when a connection is at hand; its answer read whole, up to `cap` bytes of body,
    within `seconds`."""

    __slots__ = ("pool", "data", "head", "cap", "call", "loop", "conn", "alarm", "task", "finished")

    def __init__(self, pool: UpstreamPool, method: str, target: str, head: bytes, body: bytes | None, cap: int,
                 call: Callable[[Fetched], None]) -> None:
        self.pool, self.cap, self.call = pool, cap, call
        self.data = framed(opening(method, target, pool.host_line, head), body)
        self.head = method == "HEAD"
        self.conn: Connection | None = None
        self.task: asyncio.Task[None] | None = None  # opening a connection, or reading a body in pieces
        self.finished = False

    def start(self, seconds: float, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pool.in_flight += 1
        self.alarm = Alarm(seconds, loop, self._expired)
        conn = self.pool.take()
        if conn is None:
            self.task = loop.create_task(self._connect())
        else:
            self._send(conn)

    def cancel(self) -> None:
        """Given up on (the proxy is stopping): `call` is told so."""
        self._end(asyncio.CancelledError())

    async def _connect(self) -> None:
        try:
            conn, _ = await self.pool.acquire()
        except Exception as exc:
            self._end(exc)
            return
        self.task = None
        if self.finished:  # the time ran out as the connection came
            self.pool.release(conn, True)
            return
        self._send(conn)

    def _send(self, conn: Connection) -> None:
        self.conn = conn
        transport = conn.transport
        if transport is None:
            self._end(ServerDisconnectedError())
            return
        conn.hand_to(self.head, self)
        transport.write(self.data)

    # the connection's Waiter: told from data_received, or when the connection breaks

    def done(self) -> bool:
        return self.finished

    def set_result(self, answer: Answer) -> None:
        message, payload = answer
        if message.code == 101:
            self._end(UnaskedSwitch())
        elif payload.is_eof():  # most answers: whole in one read
            body = payload.read_nowait()
            self._end(None, message, body if len(body) <= self.cap else None)
        else:
            self.task = self.loop.create_task(self._read(message, payload))

    def set_exception(self, exc: BaseException) -> None:
        self._end(exc)

    async def _read(self, message: RawResponseMessage, payload: StreamReader) -> None:
        """The rest of a body that arrives in pieces; past the cap, no more is read."""
        chunks, size = [], 0
        try:
            async for chunk in payload.iter_any():
                size += len(chunk)
                if size > self.cap:
                    self._end(None, message, None, whole=False)
                    return
                chunks.append(chunk)
        except Exception as exc:
            self._end(exc)
            return
        self.task = None
        self._end(None, message, b"".join(chunks))

    def _expired(self) -> None:
        self._end(TimeoutError())

    def _end(self, error: BaseException | None, message: RawResponseMessage | None = None,
             body: bytes | None = None, whole: bool = True) -> None:
        if self.finished:
            return
        self.finished = True
        self.alarm.cancel()
        if self.task is not None and self.task is not asyncio.current_task(self.loop):
            self.task.cancel()
        if self.conn is not None:
            self.pool.release(self.conn, error is None and whole)
        self.pool.finished()
        if message is None:
            self.call(Fetched(None, EMPTY_HEADERS, None, error))
        else:
            self.call(Fetched(message.code, message.headers, body, None))
