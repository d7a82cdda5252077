"""A client's request as the edge's handler sees it: what the parser read, its body, and the connection it came on."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from aiohttp.http import RawRequestMessage
from aiohttp.streams import EmptyStreamReader, StreamReader
from multidict import CIMultiDictProxy

from proxy.wire.headers import Repeated, content_length

if TYPE_CHECKING:
    from proxy.wire.tunnel import Tunnel


class Client(Protocol):
    """The connection a request came on, as far as answering it goes (proxy.wire.server.EdgeConnection)."""

    transport: asyncio.Transport | None
    loop: asyncio.AbstractEventLoop
    remote: str | None
    scheme: str  # "http", or "https" when the connection is TLS
    closing: bool
    last_head: Repeated
    tunnel: Tunnel | None  # set once the request became a WebSocket tunnel

    @property
    def writing_paused(self) -> bool: ...

    async def drained(self) -> None:
        """Until the socket takes what was written (at once when it is not full)."""

    def force_close(self) -> None: ...


class EdgeRequest:
    """One request as the handler sees it: what the parser read, its body, and the connection it came on.
    (The names are aiohttp's BaseRequest's, for the few fields a proxy reads.)"""

    __slots__ = ("method", "raw_path", "version", "headers", "raw_headers", "content", "body_exists", "chunked",
                 "upgrade", "should_close", "protocol", "loop", "remote", "scheme", "started", "send_timeout")

    def __init__(self, message: RawRequestMessage, payload: StreamReader, protocol: Client) -> None:
        self.method, self.raw_path, self.version = message.method, message.path, message.version
        self.headers: CIMultiDictProxy[str] = message.headers
        self.raw_headers = message.raw_headers
        self.content, self.body_exists = payload, type(payload) is not EmptyStreamReader
        self.chunked, self.upgrade = message.chunked, message.upgrade
        # a request to switch protocols that is not switched to ends its connection: what the client
        # sends after it may not be HTTP/1.1 (and llhttp drops what followed it in the same read)
        self.should_close = message.should_close or message.upgrade
        self.protocol, self.remote, self.scheme = protocol, protocol.remote, protocol.scheme
        # the running loop, the connection's (asyncio.get_running_loop() costs a system call on Python 3.11)
        self.loop: asyncio.AbstractEventLoop = protocol.loop
        self.started = False  # whether an answer's first bytes have left
        self.send_timeout = 60.0  # seconds the client may take none of its answer (the handler sets it)

    def hang_up(self) -> None:
        """Close the client's connection now: an answer cut short must not look whole, and one refused
        mid-body leaves bytes on the connection nobody will read."""
        self.protocol.force_close()

    @property
    def keep_alive(self) -> bool:
        """Whether the answer may leave the connection open: the client wants it, and the edge is not closing."""
        return not self.should_close and not self.protocol.closing

    @property
    def content_length(self) -> int | None:
        return content_length(self.headers)
