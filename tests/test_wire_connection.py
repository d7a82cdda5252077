"""proxy.wire.connection without a socket: an upstream's bytes fed to a Connection, what `expect()` resolves
to, what the body reads as, and whether the connection may carry another request."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

import pytest
from aiohttp import ClientPayloadError, ServerDisconnectedError
from aiohttp.client_exceptions import ClientOSError
from aiohttp.http_exceptions import HttpProcessingError

from proxy.wire.connection import READ_BUFSIZE, Connection
from tests.fakes import FakeTransport, on_fake_transports

Upstream = Callable[[], tuple[Connection, FakeTransport]]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A Connection on a fake transport, as the pool holds one; closed at the end of the test."""
    async for make in on_fake_transports(lambda: Connection(asyncio.get_running_loop())):
        yield make


async def exchange(connection: Connection, *chunks: bytes, head: bool = False) -> tuple[Any, bytes]:
    """Expect an answer, feed it in `chunks`, and return its head and whole body."""
    answer = connection.expect(head)
    for chunk in chunks:
        connection.data_received(chunk)
    message, payload = await asyncio.wait_for(answer, 1)
    return message, await asyncio.wait_for(payload.read(), 1)


ANSWERS = {  # name: (the upstream's bytes, to a HEAD?, status, body as read, may the connection carry another)
    "content-length": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", False, 200, b"hello", True),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
                False, 200, b"hello", True),
    "connection-close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi", False, 200, b"hi",
                         False),
    "http-1.0": (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", False, 200, b"hi", False),
    "http-1.0-keep-alive": (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi", False, 200,
                            b"hi", True),
    "204": (b"HTTP/1.1 204 No Content\r\n\r\n", False, 204, b"", True),
    "304-with-a-length": (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", False, 304, b"", True),
    "304-chunked": (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", False, 304, b"", True),
    "head-with-a-length": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", True, 200, b"", True),
    "head-chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True, 200, b"", True),
    "100-continue-first": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", False,
                           200, b"hi", True),
    "103-early-hints-first": (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                              b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nhi", False, 201, b"hi", True),
    "101-switching": (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00",
                      False, 101, b"", False),  # no longer HTTP: never reused
    "no-reason-phrase": (b"HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n", False, 299, b"", True),
}


@pytest.mark.parametrize("name", list(ANSWERS))
@pytest.mark.parametrize("cut", ["whole", "bytewise"])
async def test_what_an_answer_resolves_to_and_whether_the_connection_is_reusable(upstream, name, cut):
    data, head, status, body, reusable = ANSWERS[name]
    connection, transport = upstream()
    chunks = [data] if cut == "whole" else [data[i:i + 1] for i in range(len(data))]
    message, read = await exchange(connection, *chunks, head=head)
    assert (message.code, read, connection.reusable, connection.should_close) == (status, body, reusable,
                                                                                 not reusable)
    assert not (reusable and transport.closed)


async def test_a_kept_connection_carries_one_answer_after_another_to_heads_and_not(upstream):
    connection, _ = upstream()
    for head, data, body in [
        (False, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none", b"one"),
        (True, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", b""),  # the parser is set up for a HEAD...
        (True, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", b""),
        (False, b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n", b"two"),  # ...and back
    ]:
        message, read = await exchange(connection, data, head=head)
        assert (read, connection.reusable) == (body, True)


async def test_the_connection_is_in_step_only_once_the_body_is_read_to_its_end(upstream):
    connection, _ = upstream()
    answer = connection.expect(False)
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhal")
    _, payload = await asyncio.wait_for(answer, 1)
    assert not connection.reusable  # the rest of the body is still to come
    connection.data_received(b"f!")
    assert not connection.reusable
    connection.data_received(b"!")
    assert (await payload.read(), connection.reusable) == (b"half!!", True)


async def test_a_closing_transport_is_not_reused(upstream):
    connection, transport = upstream()
    await exchange(connection, ANSWERS["content-length"][0])
    transport.closed = True  # closing, not yet lost
    assert not connection.reusable


async def test_an_answer_nobody_asked_for_spends_the_connection(upstream):
    connection, _ = upstream()
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert (connection.should_close, connection.reusable) == (True, False)


async def test_a_second_answer_in_the_read_of_the_first_spends_the_connection_but_not_the_first(upstream):
    connection, _ = upstream()
    message, body = await exchange(connection, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
                                               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nho")
    assert (message.code, body, connection.reusable) == (200, b"hi", False)


@pytest.mark.parametrize("lost", [None, ConnectionResetError(104, "Connection reset by peer")], ids=["fin", "reset"])
async def test_a_body_with_neither_length_nor_chunks_ends_when_the_upstream_closes(upstream, lost):
    connection, transport = upstream()
    answer = connection.expect(False)
    connection.data_received(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<p>some")
    message, payload = await asyncio.wait_for(answer, 1)
    connection.data_received(b" more</p>")
    assert not payload.is_eof() and not connection.reusable
    transport.peer_gone(lost)
    assert (await asyncio.wait_for(payload.read(), 1), connection.reusable) == (b"<p>some more</p>", False)


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",  # no last chunk
], ids=["length", "in-a-chunk", "before-the-last-chunk"])
async def test_a_body_cut_short_by_the_close_is_an_error_not_an_end(upstream, data):
    connection, transport = upstream()
    answer = connection.expect(False)
    connection.data_received(data)
    _, payload = await asyncio.wait_for(answer, 1)
    transport.peer_gone()
    with pytest.raises(ClientPayloadError, match="the answer was cut short"):
        await asyncio.wait_for(payload.read(), 1)
    assert connection.should_close


@pytest.mark.parametrize(("before", "lost", "error"), [
    (b"", None, ServerDisconnectedError),
    (b"", ConnectionResetError(104, "Connection reset by peer"), ClientOSError),
    (b"HTTP/1.1 200 OK\r\nContent-", None, ServerDisconnectedError),  # half a head
    (b"HTTP/1.1 100 Continue\r\n\r\n", None, ServerDisconnectedError),  # only the interim answer
], ids=["closed", "reset", "in-the-head", "after-100"])
async def test_an_upstream_gone_before_its_answer_fails_the_expected_answer(upstream, before, lost, error):
    connection, transport = upstream()
    answer = connection.expect(False)
    connection.data_received(before)
    transport.peer_gone(lost)
    with pytest.raises(error) as failed:
        await asyncio.wait_for(answer, 1)
    if lost is not None:
        assert failed.value.errno == 104  # what the socket said is kept
    assert (connection.should_close, connection.reusable) == (True, False)


BROKEN = {  # answers aiohttp's parser refuses: the exchange fails, the connection is closed at once
    "not-http": b"NOT HTTP\r\n\r\n",
    "http-2": b"HTTP/2 200\r\nContent-Length: 0\r\n\r\n",
    "four-digit-status": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\nabc\r\n0\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "negative-length": b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabc",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nX-A : b\r\nContent-Length: 0\r\n\r\n",
    "nul-in-a-value": b"HTTP/1.1 200 OK\r\nX-A: b\x00c\r\nContent-Length: 0\r\n\r\n",
    "cr-without-lf": b"HTTP/1.1 200 OK\r\nX-A: b\rX-Injected: c\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BROKEN))
async def test_an_answer_the_parser_refuses_fails_the_exchange_and_closes_the_connection(upstream, name):
    connection, transport = upstream()
    answer = connection.expect(False)
    connection.data_received(BROKEN[name])
    with pytest.raises(HttpProcessingError):
        await asyncio.wait_for(answer, 1)
    assert (transport.closed, connection.should_close, connection.reusable) == (True, True, False)


async def test_a_chunk_that_breaks_the_framing_fails_the_body_already_handed_over(upstream):
    connection, transport = upstream()
    answer = connection.expect(False)
    connection.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    _, payload = await asyncio.wait_for(answer, 1)
    connection.data_received(b"zz\r\nsmuggled\r\n0\r\n\r\n")
    with pytest.raises(HttpProcessingError):
        await asyncio.wait_for(payload.read(), 1)
    assert (transport.closed, connection.reusable) == (True, False)


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n",  # obs-fold
    b"HTTP/1.1 200 OK\nX-A: b\nContent-Length: 0\n\n",  # bare LF
], ids=["folded", "bare-lf"])
async def test_what_the_lenient_response_parser_lets_through_reaches_nobody_with_a_line_break(upstream, data):
    """aiohttp parses answers leniently; what it keeps must still be one line per header (the edge
    writes these lines to the client as they are)."""
    connection, _ = upstream()
    message, _ = await exchange(connection, data)
    assert all(b"\r" not in name + value and b"\n" not in name + value for name, value in message.raw_headers)
    assert dict(message.raw_headers)[b"X-A"] in (b"b", b"b c")


async def test_fail_spends_the_connection_and_fails_the_expected_answer(upstream):
    connection, _ = upstream()
    answer = connection.expect(False)
    connection.fail(BrokenPipeError("the request body could not be sent"))
    with pytest.raises(BrokenPipeError):
        await asyncio.wait_for(answer, 1)
    assert (connection.should_close, connection.reusable) == (True, False)


async def test_close_closes_the_transport_once(upstream):
    connection, transport = upstream()
    connection.close()
    connection.close()
    assert (transport.closed, connection.transport, connection.reusable) == (True, None, False)


async def test_a_body_arriving_faster_than_it_is_read_pauses_the_socket_until_it_is(upstream):
    connection, transport = upstream()
    answer = connection.expect(False)
    size = 8 * READ_BUFSIZE
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
    for _ in range(8):
        connection.data_received(b"x" * READ_BUFSIZE)
    _, payload = await asyncio.wait_for(answer, 1)
    assert not transport.reading
    read = 0
    while chunk := await asyncio.wait_for(payload.readany(), 1):
        read += len(chunk)
    assert (read, transport.reading, connection.reusable) == (size, True, True)


@pytest.mark.parametrize(("data", "head"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", True),  # a body sent to a HEAD, against the rules
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", False),
], ids=["head", "204"])
async def test_a_bodiless_answer_with_stray_bytes_behind_it_is_delivered_however_the_reads_fall(upstream, data, head):
    connection, _ = upstream()
    message, body = await exchange(connection, data, head=head)
    assert (body, connection.reusable) == (b"", False)
