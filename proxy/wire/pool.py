"""One upstream's connection pool: its own limit and timeouts (a bulkhead), and what failed.

With proxy.wire.exchange and proxy.wire.connection, a lean HTTP/1.1 client, in place of
aiohttp's ClientSession and its per-request machinery (docs/architecture.md says why). It
sends exactly the request given: the target byte for byte, only the headers given; it
follows no redirect, keeps no cookie, never decompresses. `failure_from` is the one
place where what went wrong becomes data.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from proxy.model import Failure, FailureKind, Upstream
from proxy.wire.connection import Connection
from proxy.wire.exchange import Exchange, UnaskedSwitch
from proxy.wire.headers import Repeated

IDLE_SECONDS = 15.0  # a pooled connection unused this long is closed rather than reused


class NoConnection(Exception):
    """No connection to the upstream, so nothing was sent: it refused, or none came in time."""

    def __init__(self, kind: FailureKind) -> None:
        super().__init__(kind)
        self.kind = kind  # REFUSED or TIMEOUT


class HandshakeFailed(Exception):
    """The upstream's TLS handshake failed (its certificate did not verify, most often): nothing was sent."""

    def __init__(self, exc: ssl.SSLError) -> None:
        super().__init__(str(exc))
        self.reason = getattr(exc, "verify_message", None) or exc.reason or type(exc).__name__


UPSTREAM_ERRORS = (NoConnection, HandshakeFailed, TimeoutError, aiohttp.ClientError, HttpProcessingError, OSError)


class UpstreamPool:
    """Connections to one upstream, at most `max_connections`, reused while they are good."""

    def __init__(self, spec: Upstream) -> None:
        self.spec = spec
        parts = urlsplit(spec.url)
        self.host, self.port = parts.hostname or "", parts.port or 80
        self.tls = _client_context(spec) if parts.scheme == "https" else None
        self.host_line = b"Host: %s\r\n" % parts.netloc.encode()  # when the client sent none
        self.last_answer = Repeated()  # the client's header lines made from this upstream's last answer
        self.capacity = spec.max_connections + spec.max_pending  # in flight, waiting included
        self.in_flight = 0
        self.open = 0  # connections open or opening (the limit counts these)
        self._idle: deque[tuple[Connection, float]] = deque()
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._retired = self._closed = False
        self._closing: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def idle(self) -> int:
        """Connections kept for reuse, not in use."""
        return len(self._idle)

    @property
    def saturated(self) -> bool:
        return self.in_flight >= self.spec.max_connections

    @property
    def overloaded(self) -> bool:
        """Too many waiting already: a new request is turned away at once, not queued."""
        return self.in_flight >= self.capacity

    def request(self, method: str, target: str, head: bytes, body: Any = None,
                length: int | None = None, upgrade: bool = False) -> Exchange:
        """`async with pool.request(...) as answer`: one exchange. `target` is the path and query as the
        client sent them; `head` the header lines (proxy.wire.headers.upstream_head); `body` is bytes, or an
        async iterator of bytes sent as it comes (with `length` when it is known, else in chunks);
        `upgrade`: the request asks to switch to WebSocket, so a 101 is an answer, not a broken one."""
        return Exchange(self, method, target, head, body, length, upgrade)

    def retire(self) -> None:
        """Close once the requests still using this pool are done (after a reload dropped it)."""
        self._retired = True
        if self.in_flight == 0:
            self._close_soon()

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.popleft()[0].close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()

    def failure_from(self, exc: BaseException) -> Failure:
        """Map what went wrong to what happened: refused, timed out, busy or broken."""
        name = self.spec.name
        if isinstance(exc, HandshakeFailed):  # a wrong CA, an expired or misnamed certificate: never passed over
            return Failure(FailureKind.BROKEN, 502, f"upstream {name} failed the TLS handshake ({exc.reason})",
                           sent=False)
        if isinstance(exc, NoConnection) and exc.kind is FailureKind.REFUSED:
            return Failure(FailureKind.REFUSED, 502, f"upstream {name} refused the connection", sent=False)
        if isinstance(exc, NoConnection) and self.saturated:
            return Failure(FailureKind.BUSY, 503, f"upstream {name} has all {self.spec.max_connections} connections "
                           "busy", sent=False, retry_after=1)
        if isinstance(exc, NoConnection):
            return Failure(FailureKind.TIMEOUT, 504, f"upstream {name} did not accept a connection in time",
                           sent=False)
        if isinstance(exc, TimeoutError):
            return Failure(FailureKind.TIMEOUT, 504, f"upstream {name} did not answer within {self.spec.timeout:g}s")
        if isinstance(exc, UnaskedSwitch):
            return Failure(FailureKind.BROKEN, 502, f"upstream {name} switched protocols, which the request did not "
                           "ask for")
        if isinstance(exc, HttpProcessingError):
            return Failure(FailureKind.BROKEN, 502, f"upstream {name} sent an invalid HTTP response")
        return Failure(FailureKind.BROKEN, 502, f"upstream {name} broke the connection ({type(exc).__name__})")

    def take(self) -> Connection | None:
        """A kept connection that is still good, if there is one (the usual case: no waiting)."""
        if not self._idle:
            return None
        now = time.monotonic()
        while self._idle:
            conn, since = self._idle.pop()
            if conn.reusable and now - since < IDLE_SECONDS:
                return conn
            self._drop(conn)
        return None

    async def acquire(self) -> tuple[Connection, bool]:
        """A connection (and whether it was reused), waiting up to connect_timeout for the pool."""
        conn = self.take()
        if conn is not None:
            return conn, True
        try:
            async with asyncio.timeout(self.spec.connect_timeout):
                if self.open >= self.spec.max_connections:
                    handed = await self._wait_turn()
                    if handed is not None:
                        return handed, True
                return await self._connect(), False
        except TimeoutError:
            raise NoConnection(FailureKind.TIMEOUT) from None

    async def _wait_turn(self) -> Connection | None:
        """Wait for a released connection (or for room to open one: None)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def _connect(self) -> Connection:
        self.open += 1
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Connection(loop), self.host, self.port, ssl=self.tls,
                                                   server_hostname=self.host if self.tls else None)
        except ssl.SSLError as exc:
            self._forget()
            raise HandshakeFailed(exc) from exc
        except OSError as exc:
            self._forget()
            raise NoConnection(FailureKind.REFUSED) from exc
        except BaseException:
            self._forget()
            raise
        return conn

    def release(self, conn: Connection, reusable: bool) -> None:
        """Back to the pool (handed to whoever waits first) or closed."""
        if not (reusable and conn.reusable) or self._closed:
            self._drop(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append((conn, time.monotonic()))

    def _drop(self, conn: Connection) -> None:
        conn.close()
        self._forget()

    def _forget(self) -> None:
        """One connection fewer: someone waiting may open one."""
        self.open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def finished(self) -> None:
        self.in_flight -= 1
        if self._retired and self.in_flight == 0:
            self._close_soon()

    def _close_soon(self) -> None:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.close())


def _client_context(spec: Upstream) -> ssl.SSLContext:
    """The context routes.yaml's load built for this upstream (its CA, client certificate), else the system's
    trust: either way made once per pool, never per connection."""
    if spec.tls is not None and spec.tls.context is not None:
        return spec.tls.context
    return ssl.create_default_context()
