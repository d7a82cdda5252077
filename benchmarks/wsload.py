"""A WebSocket echo upstream and a load generator for tunnels, both as plain as a tunnel's test allows.

    python -m benchmarks.wsload echo PORT                      # the upstream
    python -m benchmarks.wsload load PORT TUNNELS SECONDS      # prints one JSON line: messages, seconds

The upstream completes the handshake, then sends back every byte it gets; the client
sends a small masked frame on each tunnel and waits for those bytes to come back before
sending the next (one message in flight per tunnel). A proxy between them sees a real
handshake and then real frames both ways; since a tunnel relays bytes without reading
them, echoing the client's frames as they are measures the proxy, not a frame codec.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MESSAGE = b"x" * 64


def frame(payload: bytes) -> bytes:
    """One masked text frame, as a client sends it."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, StopIteration):
        pass
    finally:
        writer.close()


async def tunnel(port: int, until: float) -> int:
    """One tunnel, ping-ponging until `until`: the messages that came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    writer.write(b"GET /ws HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    message, done = frame(MESSAGE), 0
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        writer.write(message)
        await reader.readexactly(len(message))
        done += 1
    writer.close()
    return done


async def load(port: int, tunnels: int, seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    counts = await asyncio.gather(*(tunnel(port, started + seconds) for _ in range(tunnels)))
    return {"messages": sum(counts), "seconds": loop.time() - started}


async def serve_echo(port: int) -> None:
    server = await asyncio.start_server(echo, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        if argv[0] == "echo":
            runner.run(serve_echo(int(argv[1])))
        else:
            print(json.dumps(runner.run(load(int(argv[1]), int(argv[2]), float(argv[3])))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
