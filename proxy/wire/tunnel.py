"""A WebSocket tunnel: once an upstream answers 101, the client's connection and the upstream's are joined
byte for byte, until either side closes or the tunnel is silent for its idle timeout.

Both protocols (proxy.wire.server.EdgeConnection and proxy.wire.connection.Connection)
hand their bytes, their flow control and their end to the tunnel once it is attached
(`TunnelSide`, below): a side whose socket is full pauses reading from the other, so memory
stays bounded whatever the two ends do. Nothing is parsed; frames pass as they are, so
extensions the two ends agree on (permessage-deflate) pass too. This module also says
what a valid handshake request is (RFC 6455 4.1), so a malformed one reaches no upstream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpVersion11
from multidict import CIMultiDictProxy

from proxy.model import TunnelEnd

EARLY_BYTES = 1 << 16  # bytes a side may send before the tunnel is joined; then its socket is not read


class TunnelSide(BaseProtocol):
    """One end of a tunnel: a protocol whose bytes, flow control and end go to the tunnel once `tunnel` is
    set (its data_received and connection_lost hand them over; its socket's flow control is here)."""

    tunnel: Tunnel | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.tunnel is not None:
            self.tunnel.paused(self)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.tunnel is not None:
            self.tunnel.resumed(self)



class Tunnel:
    """Two connections joined: bytes counted each way, back-pressure both ways, an idle timer."""

    __slots__ = ("client", "upstream", "idle", "loop", "sent", "received", "started", "ended", "_last", "_timer")

    def __init__(self, client: TunnelSide, upstream: TunnelSide, idle: float, loop: asyncio.AbstractEventLoop) -> None:
        self.client, self.upstream, self.idle, self.loop = client, upstream, idle, loop
        self.sent = self.received = 0  # bytes client -> upstream, upstream -> client
        self.started = self._last = loop.time()
        self.ended: asyncio.Future[TunnelEnd] = loop.create_future()
        self._timer: asyncio.TimerHandle | None = None

    def join(self, from_client: bytes, from_upstream: bytes) -> None:
        """Attach both sides, and pass on what each sent before the tunnel was joined."""
        self.client.tunnel = self.upstream.tunnel = self
        self._timer = self.loop.call_at(self._last + self.idle, self._check_idle)
        if from_upstream:
            self.from_upstream(from_upstream)
        if from_client:
            self.from_client(from_client)
        for side in (self.client, self.upstream):  # an early side held back is read again
            if side.transport is not None and not self._paused(self._other(side)):
                side.transport.resume_reading()

    async def run(self) -> TunnelEnd:
        """Until the tunnel ends: why it did. Cancelled (the proxy shutting down), it closes both sides."""
        try:
            return await asyncio.shield(self.ended)
        except asyncio.CancelledError:
            self.end(TunnelEnd.SHUTDOWN)
            raise

    def from_client(self, data: bytes) -> None:
        self.sent += len(data)
        self._pass(self.upstream, data)

    def from_upstream(self, data: bytes) -> None:
        self.received += len(data)
        self._pass(self.client, data)

    def paused(self, side: TunnelSide) -> None:
        """`side`'s socket is full: stop reading from the other until it drains."""
        other = self._other(side).transport
        if other is not None:
            other.pause_reading()

    def resumed(self, side: TunnelSide) -> None:
        other = self._other(side).transport
        if other is not None:
            other.resume_reading()

    def lost(self, side: TunnelSide) -> None:
        """`side` closed: so does the other, once what it was sent has left."""
        self.end(TunnelEnd.CLIENT_CLOSED if side is self.client else TunnelEnd.UPSTREAM_CLOSED)

    def end(self, why: TunnelEnd) -> None:
        if self.ended.done():
            return
        self.ended.set_result(why)
        if self._timer is not None:
            self._timer.cancel()
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.close()  # what was written still leaves, then the socket closes

    def _pass(self, to: TunnelSide, data: bytes) -> None:
        self._last = self.loop.time()
        if to.transport is not None and not to.transport.is_closing():
            to.transport.write(data)

    def _other(self, side: TunnelSide) -> TunnelSide:
        return self.upstream if side is self.client else self.client

    def _paused(self, side: TunnelSide) -> bool:
        return side.writing_paused

    def _check_idle(self) -> None:
        """One timer, moved on only when it fires (not re-armed for every message)."""
        due = self._last + self.idle
        if self.loop.time() >= due:
            self.end(TunnelEnd.IDLE)
        else:
            self._timer = self.loop.call_at(due, self._check_idle)


def handshake_refusal(method: str, version: object, headers: CIMultiDictProxy[str], body: bool) -> str | None:
    """Why a request to switch to WebSocket is not a valid handshake (RFC 6455 4.1), or None."""
    if method != "GET" or version != HttpVersion11:
        return "a WebSocket handshake is a GET in HTTP/1.1"
    if body:
        return "a WebSocket handshake has no body"
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return "a WebSocket handshake needs Sec-WebSocket-Version: 13"
    try:
        key = base64.b64decode(headers.get("Sec-WebSocket-Key", "").strip(), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 16:
        return "a WebSocket handshake needs a Sec-WebSocket-Key of 16 bytes in base64"
    return None


def wants_websocket(headers: CIMultiDictProxy[str]) -> bool:
    """The request asks to switch to WebSocket (any other protocol is not honoured)."""
    return headers.get("Upgrade", "").strip().lower() == "websocket"
