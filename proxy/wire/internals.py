"""The aiohttp internals this package stands on, named in one place, and checked at start-up and by a test.

The edge's server and the upstreams' client are ours (docs/architecture.md says why), built
on aiohttp's C parser (llhttp) and its protocol base class, which are not aiohttp's public
API. aiohttp is pinned to the minor versions tested (pyproject.toml); a release that
changes one of these shapes fails here, saying what changed, instead of somewhere in a
request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpResponseParser
from aiohttp.http_parser import HttpRequestParser
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD, EmptyStreamReader, StreamReader

TESTED = "3.14"  # the aiohttp minor version these shapes were read from
PROTOCOL = ("_buffer_paused", "_reading_paused", "_pause_reading_for_buffer", "_resume_reading_for_buffer",
            "_drain_helper", "_parser", "writing_paused", "pause_reading", "resume_reading")
REQUEST = ("method", "path", "version", "headers", "raw_headers", "should_close", "upgrade", "chunked")
RESPONSE = ("code", "reason", "headers", "raw_headers", "should_close")
STREAM = ("is_eof", "readany", "read_nowait", "iter_any", "set_exception", "feed_eof")
WRITER = ("write", "write_eof", "enable_chunking", "drain")
SERVER = ("_connections", "connection_made", "pre_shutdown", "shutdown")


async def problems() -> list[str]:
    """What no longer has the shape the wire layer expects (nothing, on the versions tested). A coroutine:
    aiohttp's server and parsers are made on a running loop."""
    loop = asyncio.get_running_loop()
    found = []
    if HttpRequestParser.__module__ != "aiohttp._http_parser":
        found.append("aiohttp runs without its C HTTP parser (llhttp): unset AIOHTTP_NO_EXTENSIONS or reinstall "
                     "aiohttp with its binary wheel")
    found += _missing("BaseProtocol", BaseProtocol, PROTOCOL)
    found += _missing("StreamReader", StreamReader, STREAM)
    found += _missing("StreamWriter", StreamWriter, WRITER)
    found += _missing("web.Server", web.Server(_never), SERVER)
    if not isinstance(EMPTY_PAYLOAD, EmptyStreamReader):
        found.append("aiohttp.streams.EMPTY_PAYLOAD is no longer an EmptyStreamReader")
    found += _request_parser(loop) + _response_parser(loop)
    return found


async def require() -> None:
    """Refuse to run on an aiohttp whose internals changed shape."""
    found = await problems()
    if found:
        raise RuntimeError(f"this aiohttp is not one the wire layer was tested on ({TESTED}.x): " + "; ".join(found))


def _missing(what: str, thing: Any, names: tuple[str, ...]) -> list[str]:
    return [f"{what} has no '{name}'" for name in names if not hasattr(thing, name)]


def _request_parser(loop: asyncio.AbstractEventLoop) -> list[str]:
    """The request parser as proxy.wire.server makes and feeds it: its result, a message's fields."""
    protocol = BaseProtocol(loop)
    try:
        parser = HttpRequestParser(protocol, loop, 1 << 16, max_line_size=8190, max_field_size=8190, max_headers=128,
                                   payload_exception=web.RequestPayloadError, auto_decompress=False,
                                   max_msg_queue_size=32)
        result = parser.feed_data(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok")
    except (TypeError, AttributeError) as exc:
        return [f"HttpRequestParser is made and fed differently: {exc}"]
    if not (isinstance(result, tuple) and len(result) == 3 and len(result[0]) == 1):
        return ["HttpRequestParser.feed_data no longer returns (messages, upgraded, tail)"]
    message, payload = result[0][0]
    found = _missing("RawRequestMessage", message, REQUEST) + _missing("HttpRequestParser", parser,
                                                                        ("message_consumed", "feed_eof"))
    if not (isinstance(payload, StreamReader) and payload.is_eof() and payload.read_nowait() == b"ok"):
        found.append("a request body no longer arrives as a StreamReader fed by the parser")
    return found


def _response_parser(loop: asyncio.AbstractEventLoop) -> list[str]:
    """The response parser as proxy.wire.connection makes it: a body ended by the connection's close."""
    protocol = BaseProtocol(loop)
    try:
        parser = HttpResponseParser(protocol, loop, 1 << 16, payload_exception=ValueError, response_with_body=True,
                                    read_until_eof=True, auto_decompress=False)
        (message, payload), = parser.feed_data(b"HTTP/1.0 200 OK\r\n\r\nuntil close")[0]
        parser.feed_eof()
    except (TypeError, AttributeError, ValueError) as exc:
        return [f"HttpResponseParser is made and fed differently: {exc}"]
    found = _missing("RawResponseMessage", message, RESPONSE)
    if not (payload.is_eof() and payload.read_nowait() == b"until close" and message.should_close):
        found.append("an answer delimited by the connection's close is no longer read to its end")
    return found


async def _never(request: Any) -> Any:
    raise AssertionError("only its shape is looked at")

