"""A client's request as the edge's handler sees it: what the parser read, its body, and the connection it came on."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiohttp.http import RawRequestMessage, StreamWriter
from aiohttp.streams import EmptyStreamReader, StreamReader
from multidict import CIMultiDictProxy

from proxy.headers import Repeated, content_length


class Client(Protocol):
    """The connection a request came on, as far as answering it goes (proxy.edge.EdgeConnection)."""

    transport: asyncio.Transport | None
    loop: asyncio.AbstractEventLoop
    remote: str | None
    closing: bool
    last_head: Repeated

    @property
    def writing_paused(self) -> bool: ...

    def force_close(self) -> None: ...


class EdgeRequest:
    """One request as the handler sees it: what the parser read, its body, and the connection it came on.
    (The names are aiohttp's BaseRequest's, for the few fields a proxy reads.)"""

    __slots__ = ("method", "raw_path", "version", "headers", "raw_headers", "content", "body_exists",
                 "should_close", "protocol", "remote", "started", "_writer")
    scheme = "http"

    def __init__(self, message: RawRequestMessage, payload: StreamReader, protocol: Client) -> None:
        self.method, self.raw_path, self.version = message.method, message.path, message.version
        self.headers: CIMultiDictProxy[str] = message.headers
        self.raw_headers = message.raw_headers
        self.content, self.body_exists = payload, type(payload) is not EmptyStreamReader
        self.should_close = message.should_close
        self.protocol, self.remote = protocol, protocol.remote
        self.started = False  # whether an answer's first bytes have left
        self._writer: StreamWriter | None = None

    @property
    def writer(self) -> StreamWriter:
        """aiohttp's writer, for a body sent as it arrives (framing, back-pressure): made when first needed."""
        writer = self._writer
        if writer is None:
            writer = self._writer = StreamWriter(self.protocol, self.protocol.loop)
        return writer

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, the connection's (asyncio.get_running_loop() costs a system call on Python 3.11)."""
        return self.protocol.loop

    @property
    def keep_alive(self) -> bool:
        """Whether the answer may leave the connection open: the client wants it, and the edge is not closing."""
        return not self.should_close and not self.protocol.closing

    @property
    def content_length(self) -> int | None:
        return content_length(self.headers)
