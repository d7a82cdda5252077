"""One upstream's connection pool: its own limit and timeouts (a bulkhead), and what failed.

The session is set up the way a proxy needs aiohttp: no redirects followed, no cookie jar,
no decompression, no headers of its own, the URL sent byte for byte. `failure_from` is the
one place where aiohttp's exceptions become data.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from proxy.model import Upstream

log = logging.getLogger(__name__)
SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an upstream gave no (complete) answer, and what the client is told."""

    kind: str  # refused | timeout | busy | broken | status | breaker_open | overloaded | client_body_timeout
    status: int
    detail: str
    sent: bool = True  # whether the request may have reached the upstream (False: safe to send again)
    retry_after: int | None = None


class UpstreamPool:
    """A client session bound to one upstream, counting the requests it has in flight."""

    def __init__(self, spec: Upstream) -> None:
        self.spec = spec
        self.in_flight = 0
        self._base = spec.url
        self._retired = False
        self._closing: asyncio.Task[None] | None = None
        connector = aiohttp.TCPConnector(limit=spec.max_connections, limit_per_host=0)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=spec.timeout, connect=spec.connect_timeout),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=SKIP_AUTO_HEADERS,
            trust_env=False,
        )
        # aiohttp quietly sends an idempotent request again when a reused connection drops;
        # retries here are the proxy's, counted and bounded (reliability.md RES-14). Its
        # own test client turns this off the same way.
        self._session._retry_connection = False

    @property
    def closed(self) -> bool:
        return self._session.closed

    @property
    def saturated(self) -> bool:
        return self.in_flight >= self.spec.max_connections

    @property
    def overloaded(self) -> bool:
        """Too many waiting already: a new request is turned away at once, not queued."""
        return self.in_flight >= self.spec.max_connections + self.spec.max_pending

    @asynccontextmanager
    async def request(self, method: str, target: str, headers: CIMultiDict[str],
                      body: Any = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request (target is path and query, already encoded); yields the response."""
        url = URL(self._base + target, encoded=True)
        self.in_flight += 1
        try:
            async with self._session.request(method, url, headers=headers, data=body,
                                             allow_redirects=False) as response:
                yield response
        finally:
            self.in_flight -= 1
            if self._retired and self.in_flight == 0:
                self._close_soon()

    def retire(self) -> None:
        """Close once the requests still using this pool are done (after a reload dropped it)."""
        self._retired = True
        if self.in_flight == 0:
            self._close_soon()

    async def close(self) -> None:
        await self._session.close()

    def _close_soon(self) -> None:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.close())

    def failure_from(self, exc: BaseException) -> Failure:
        """Map what aiohttp raised to what happened: refused, timed out, busy or broken."""
        name = self.spec.name
        if isinstance(exc, aiohttp.ConnectionTimeoutError) and self.saturated:
            return Failure("busy", 503, f"upstream {name} has all {self.spec.max_connections} connections busy",
                           sent=False, retry_after=1)
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return Failure("timeout", 504, f"upstream {name} did not accept a connection in time", sent=False)
        if isinstance(exc, asyncio.TimeoutError):
            return Failure("timeout", 504, f"upstream {name} did not answer within {self.spec.timeout:g}s")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return Failure("refused", 502, f"upstream {name} refused the connection", sent=False)
        if isinstance(exc, aiohttp.ClientResponseError):
            return Failure("broken", 502, f"upstream {name} sent an invalid HTTP response")
        return Failure("broken", 502, f"upstream {name} broke the connection ({type(exc).__name__})")
