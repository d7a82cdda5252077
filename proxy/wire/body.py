"""The request body as attempts and the parallel run need it: streamed once, or read once and sent again.

A body up to `server.request_buffer` is read whole before any upstream is called (as nginx's
proxy_request_buffering): a slow client then holds no upstream connection, and its
slowness cannot look like the upstream's. A larger body streams; while the stream waits
for the client, the exchange's deadline is held (proxy.wire.deadline). A client that lets its
body go quiet for longer than the idle timeout is given up on (408).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from aiohttp import StreamReader
from aiohttp.http import HttpVersion11

from proxy.wire.deadline import Deadline
from proxy.wire.request import EdgeRequest


class RequestBody:
    """Bytes that can be sent again, or the client's stream, sent once."""

    def __init__(self, data: bytes | None = None, stream: StreamReader | AsyncIterator[bytes] | None = None,
                 length: int | None = None, idle: float = 30.0) -> None:
        self.data, self.stream, self.length, self.idle = data, stream, length, idle
        self.consumed = False
        self.too_slow = False
        self.clock: Deadline | None = None  # the deadline of the exchange the stream is sent in

    @property
    def replayable(self) -> bool:
        return self.stream is None or not self.consumed

    def payload(self) -> Any:
        return self.data if self.stream is None else self._pump()

    async def _pump(self) -> AsyncIterator[bytes]:
        chunks = self.stream.iter_any() if isinstance(self.stream, StreamReader) else self.stream
        while True:
            clock = self.clock
            if clock is not None:
                clock.hold()  # waiting on the client: not the upstream's time
            try:
                async with asyncio.timeout(self.idle):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                self.too_slow = True
                raise
            finally:
                if clock is not None:
                    clock.release()
            self.consumed = True
            yield chunk


def streamed(request: EdgeRequest, idle: float) -> RequestBody:
    """The client's body, to be streamed (after a 100 Continue if it asked for one)."""
    if not request.body_exists:
        return NO_BODY
    continue_if_expected(request)
    return RequestBody(stream=request.content, length=request.content_length, idle=idle)


NO_BODY = RequestBody()  # shared: nothing to stream, nothing to consume, nothing to time out


async def read_up_to(request: EdgeRequest, limit: int, idle: float) -> tuple[RequestBody, bool]:
    """The body read whole when it is at most `limit` bytes (True), else what was read and the
    rest as one stream (False). TimeoutError when it goes quiet for `idle` seconds."""
    if not request.body_exists:
        return NO_BODY, True
    if (request.content_length or 0) > limit:
        return streamed(request, idle), False
    continue_if_expected(request)
    chunks, size = [], 0
    while chunk := await asyncio.wait_for(request.content.readany(), idle):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return RequestBody(stream=_chain(chunks, request.content), length=request.content_length,
                               idle=idle), False
    return RequestBody(data=b"".join(chunks)), True


def continue_if_expected(request: EdgeRequest) -> None:
    """Answer `Expect: 100-continue` here, as nginx and Envoy do; the header is not forwarded."""
    if request.version == HttpVersion11 and request.headers.get("Expect", "").lower() == "100-continue":
        transport = request.protocol.transport
        if transport is not None:  # not `started`: the answer is still to come
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")


async def _chain(first: list[bytes], rest: StreamReader) -> AsyncIterator[bytes]:
    for chunk in first:
        yield chunk
    async for chunk in rest.iter_any():
        yield chunk
