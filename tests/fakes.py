"""A socket-less transport for the wire layer's protocols: bytes go in by data_received, what they write is kept."""

from __future__ import annotations

import asyncio
from typing import Any


class FakeTransport(asyncio.Transport):
    """What a protocol writes, whether it reads, and when it closes. Closing tells the protocol on the
    loop's next step (connection_lost), as asyncio's own transports do."""

    def __init__(self, protocol: asyncio.Protocol, peer: tuple[str, int] = ("192.0.2.7", 50123)) -> None:
        super().__init__()
        self.protocol, self.peer = protocol, peer
        self.written = bytearray()
        self.late = bytearray()  # written after close: a real transport drops it
        self.closed = False
        self.reading = True
        self.pauses = 0  # how often reading was paused

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default  # no "socket": aiohttp's TCP tuning is skipped

    def write(self, data: bytes | bytearray | memoryview) -> None:
        (self.late if self.closed else self.written).extend(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading and not self.closed

    def peer_gone(self, exc: BaseException | None = None) -> None:
        """The other side closed (exc None) or reset (an OSError): the protocol hears it at once."""
        if not self.closed:
            self.closed = True
            self.protocol.connection_lost(exc)


def connect(protocol: asyncio.Protocol, **kw: Any) -> FakeTransport:
    transport = FakeTransport(protocol, **kw)
    protocol.connection_made(transport)
    return transport


async def steps(n: int = 20) -> None:
    """Let the loop run `n` steps: what was scheduled, and what that scheduled, happens."""
    for _ in range(n):
        await asyncio.sleep(0)


async def on_fake_transports(make: Any) -> Any:
    """A fixture's body: `make(...)` builds a protocol, which is connected to a FakeTransport; at the end
    every peer leaves, so that nothing is left running."""
    made: list[FakeTransport] = []

    def connected(*args: Any, **kw: Any) -> tuple[Any, FakeTransport]:
        protocol = make(*args, **kw)
        made.append(transport := connect(protocol))
        return protocol, transport

    yield connected
    for transport in made:
        transport.peer_gone()
    await steps()
