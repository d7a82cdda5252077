"""proxy.wire.server without a socket: an EdgeConnection fed bytes through a fake transport, its answers read back.

What the socket tests in test_edge.py show end to end, here one rule at a time and in
milliseconds: how requests are cut from the bytes, which are refused and how, keep-alive,
pipelining and its bound, bodies left unread, clients that leave, the timers, shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import AsyncIterator, Callable

import pytest

from proxy.wire import server as wire_server
from proxy.wire.answers import WholeAnswer
from proxy.wire.request import EdgeRequest
from proxy.wire.intake import MAX_QUEUED, head_size
from proxy.wire.server import EdgeConnection, EdgeServer
from tests.fakes import FakeTransport, connect, on_fake_transports, steps
from tests.helpers import answers, eventually, json_body, status_of

Edge = Callable[..., tuple[EdgeConnection, FakeTransport]]


def get(path: str, *more: str, version: str = "1.1") -> bytes:
    return "\r\n".join([f"GET {path} HTTP/{version}", "Host: h", *more, "", ""]).encode()


def text(body: bytes, status: int = 200) -> WholeAnswer:
    return WholeAnswer(status, "", b"Content-Type: text/plain\r\n", True, body, len(body))  # dated: no Date added


class Recorder:
    """A handler that reads each request's body and answers `METHOD PATH BYTES`; what it saw is kept."""

    def __init__(self) -> None:
        self.seen: list[EdgeRequest] = []
        self.bodies: list[bytes] = []

    async def __call__(self, request: EdgeRequest) -> WholeAnswer:
        self.seen.append(request)
        body = await request.content.read()
        self.bodies.append(body)
        return text(f"{request.method} {request.raw_path} {len(body)}".encode())

    @property
    def paths(self) -> list[str]:
        return [r.raw_path for r in self.seen]


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    """Connections of a fresh EdgeServer (the handler and the server's settings as given), each on a
    fake transport; the client leaves at the end of the test, so that nothing is left running."""
    async for make in on_fake_transports(lambda handler, **settings: EdgeServer(handler, **settings)()):
        yield make


def sent(transport: FakeTransport) -> list[tuple[int, bytes]]:
    return answers(bytes(transport.written))


def bodies(transport: FakeTransport) -> list[str]:
    return [body.decode() for _, body in sent(transport)]


# -- requests cut from the bytes, however they arrive

REQUEST = b"POST /orders?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"


def pieces_at(data: bytes, *cuts: int) -> list[bytes]:
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@pytest.mark.parametrize("pieces", [
    [REQUEST],
    pieces_at(REQUEST, 3),  # inside the method
    pieces_at(REQUEST, REQUEST.index(b"\r\n\r\n") + 1),  # inside the head's end
    pieces_at(REQUEST, REQUEST.index(b"\r\n\r\n") + 2),
    pieces_at(REQUEST, REQUEST.index(b"\r\n\r\n") + 3),
    pieces_at(REQUEST, REQUEST.index(b"\r\n\r\n") + 4),  # head, then body
    pieces_at(REQUEST, len(REQUEST) - 2),  # inside the body
    [bytes([b]) for b in REQUEST],  # a byte at a time
], ids=["whole", "in-method", "head-end+1", "head-end+2", "head-end+3", "head|body", "in-body", "bytewise"])
async def test_a_request_is_the_same_however_its_bytes_are_cut(edge, pieces):
    handler = Recorder()
    connection, transport = edge(handler)
    for piece in pieces:
        connection.data_received(piece)
        await steps(2)
    await eventually(lambda: transport.written, timeout=1, interval=0)
    assert (handler.paths, handler.bodies) == (["/orders?x=1"], [b"hello"])
    assert sent(transport) == [(200, b"POST /orders?x=1 5")]
    assert not transport.closed  # HTTP/1.1: kept alive


async def test_the_handler_sees_the_request_as_sent(edge):
    handler = Recorder()
    connection, transport = edge(handler)
    connection.data_received(b"PUT /a%2Fb/../c?q=%20 HTTP/1.1\r\nHost: shop\r\nX-Tag: one\r\nx-tag: two\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    await eventually(lambda: transport.written, timeout=1, interval=0)
    [request] = handler.seen
    assert (request.method, request.raw_path, tuple(request.version)) == ("PUT", "/a%2Fb/../c?q=%20", (1, 1))
    assert request.headers.getall("X-Tag") == ["one", "two"]  # duplicates kept, in order
    assert (request.body_exists, request.chunked, request.content_length, handler.bodies) == (True, True, None,
                                                                                              [b"abcde"])
    assert (request.remote, request.keep_alive, request.protocol) == ("192.0.2.7", True, connection)


async def test_a_request_without_a_body_has_none(edge):
    handler = Recorder()
    connection, transport = edge(handler)
    connection.data_received(get("/"))
    await eventually(lambda: transport.written, timeout=1, interval=0)
    assert (handler.seen[0].body_exists, handler.seen[0].chunked, handler.bodies) == (False, False, [b""])


async def test_pipelined_requests_are_answered_in_order_on_the_one_connection(edge):
    handler = Recorder()
    connection, transport = edge(handler)
    connection.data_received(get("/a") + b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi" + get("/c"))
    await eventually(lambda: len(sent(transport)) == 3, timeout=1, interval=0)
    assert bodies(transport) == ["GET /a 0", "POST /b 2", "GET /c 0"]
    assert not transport.closed


@pytest.mark.parametrize(("request_bytes", "says", "closes"), [
    (get("/"), None, False),
    (get("/", "Connection: close"), b"close", True),
    (get("/", version="1.0"), None, True),  # an HTTP/1.0 client closes unless it asks otherwise
    (get("/", "Connection: keep-alive", version="1.0"), b"keep-alive", False),
    (get("/", "Connection: Upgrade", "Upgrade: websocket"), b"close", True),  # nothing here switches
], ids=["1.1", "1.1-close", "1.0", "1.0-keep-alive", "upgrade"])
async def test_keep_alive_is_the_clients_choice_and_the_answer_says_so(edge, request_bytes, says, closes):
    connection, transport = edge(Recorder())
    connection.data_received(request_bytes)
    await eventually(lambda: transport.written, timeout=1, interval=0)
    await steps()
    head = bytes(transport.written).partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")  # 1.1 whatever the client spoke
    connection_header = [line[12:] for line in head.split(b"\r\n") if line.lower().startswith(b"connection: ")]
    assert (connection_header, transport.closed) == ([says] if says else [], closes)


async def test_what_follows_a_request_to_switch_protocols_is_not_read_as_http(edge):
    handler = Recorder()
    connection, transport = edge(handler)
    connection.data_received(get("/ws", "Connection: Upgrade", "Upgrade: websocket") + get("/hidden"))
    await eventually(lambda: transport.closed, timeout=1, interval=0)
    assert (handler.paths, bodies(transport)) == (["/ws"], ["GET /ws 0"])


# -- what is refused, and how

BAD = {
    "request-line": b"GET /x HTTP/1.1 SECRET\r\nHost: h\r\n\r\n",
    "version": b"GET /x HTTP/9.9\r\nHost: h\r\nX-SECRET: v\r\n\r\n",
    "control-in-target": b"GET /x\x01SECRET HTTP/1.1\r\nHost: h\r\n\r\n",
    "header-without-colon": b"GET /x HTTP/1.1\r\nHost: h\r\nSECRET-no-colon\r\n\r\n",
    "space-before-colon": b"GET /x HTTP/1.1\r\nHost: h\r\nX-SECRET : v\r\n\r\n",
    "two-lengths": b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nSECRET",
    "length-and-chunked": b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"0\r\n\r\nSECRET",
    "bad-length": b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\nSECRET",
    "bad-chunk-size": b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nSECRET\r\n0\r\n\r\n",
    "nul-in-header": b"GET /x HTTP/1.1\r\nHost: h\r\nX-SECRET: a\x00b\r\n\r\n",
    "bare-lf": b"GET /x HTTP/1.1\nHost: h\nX-SECRET: v\n\n",
    "http-2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@pytest.mark.parametrize("bad", list(BAD))
async def test_a_malformed_request_is_a_json_400_echoing_nothing_and_the_connection_closes(edge, bad, caplog):
    caplog.set_level(logging.INFO, "strangler.edge")
    handler = Recorder()
    connection, transport = edge(handler)
    connection.data_received(get("/before") + BAD[bad] + get("/after"))
    await eventually(lambda: transport.closed, timeout=1, interval=0)
    before, refused = sent(transport)
    raw = bytes(transport.written)
    assert (before, refused[0]) == ((200, b"GET /before 0"), 400)  # those before it are answered first
    assert json.loads(refused[1])["error"] == "bad_request" and b"Connection: close\r\n" in raw
    assert b"SECRET" not in raw.upper() and handler.paths[0] == "/before" and "/after" not in handler.paths
    assert [r.getMessage() for r in caplog.records if r.name == "strangler.edge"] == ["refused a malformed request"]
    assert not transport.late


async def test_a_head_that_grows_past_the_limit_is_refused_before_it_ends(edge):
    handler = Recorder()
    connection, transport = edge(handler, max_header_bytes=1024)
    connection.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n")
    for _ in range(20):
        connection.data_received(b"X-Filler: " + b"f" * 90 + b"\r\n")  # never ends
    await eventually(lambda: transport.closed, timeout=1, interval=0)
    assert status_of(bytes(transport.written)) == 431 and json_body(bytes(transport.written))["error"] == \
        "headers_too_large"
    assert handler.seen == []


@pytest.mark.parametrize(("size", "status"), [(1000, 200), (1024, 200), (1025, 431), (4000, 431)])
async def test_a_whole_head_is_measured_against_the_limit_to_the_byte(edge, size, status):
    head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: \r\n\r\n"
    head = head.replace(b"X-Pad: ", b"X-Pad: " + b"p" * (size - len(head)))
    assert len(head) == size
    connection, transport = edge(Recorder(), max_header_bytes=1024)
    connection.data_received(head)
    await eventually(lambda: transport.written, timeout=1, interval=0)
    assert status_of(bytes(transport.written)) == status


async def test_a_bug_in_the_handler_is_a_json_500_an_error_log_and_a_closed_connection(edge, caplog):
    async def broken(request: EdgeRequest) -> WholeAnswer:
        raise RuntimeError("SECRET internals")
    connection, transport = edge(broken)
    connection.data_received(get("/x") + get("/y"))
    await eventually(lambda: transport.closed, timeout=1, interval=0)
    raw = bytes(transport.written)
    assert [status for status, _ in sent(transport)] == [500] and b"SECRET" not in raw
    assert json_body(raw)["error"] == "internal_error"
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert (error.getMessage(), error.exc_info[0]) == ("unexpected error while serving a request", RuntimeError)


# -- bodies: read, left unread, broken

async def ignoring_the_body(request: EdgeRequest) -> WholeAnswer:
    return text(b"not needed", 404)


async def test_a_body_the_answer_did_not_need_is_read_past_and_the_next_request_answered(edge):
    connection, transport = edge(ignoring_the_body)
    connection.data_received(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhalf")
    await eventually(lambda: transport.written, timeout=1, interval=0)  # answered before the body is all in
    connection.data_received(b"-rest!" + get("/next"))
    await eventually(lambda: len(sent(transport)) == 2, timeout=1, interval=0)
    assert not transport.closed


async def test_a_body_that_never_arrives_closes_the_connection_after_the_linger(edge, monkeypatch):
    monkeypatch.setattr(wire_server, "LINGER", 0.05)
    connection, transport = edge(ignoring_the_body)
    connection.data_received(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhalf")
    await eventually(lambda: transport.closed, timeout=1, interval=0.01)
    assert [status for status, _ in sent(transport)] == [404]


async def test_a_body_that_breaks_its_framing_while_the_handler_reads_it_is_a_400(edge):
    handler = Recorder()
    connection, transport = edge(handler)
    connection.data_received(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await eventually(lambda: handler.seen, timeout=1, interval=0)
    connection.data_received(b"zz\r\nsmuggled\r\n0\r\n\r\n")
    await eventually(lambda: transport.closed, timeout=1, interval=0)
    assert [status for status, _ in sent(transport)] == [400] and b"smuggled" not in bytes(transport.written)


async def test_a_client_that_leaves_cancels_its_handler_and_fails_its_body(edge):
    requests, outcome = [], []

    async def waits_for_the_body(request: EdgeRequest) -> WholeAnswer:
        requests.append(request)
        try:
            await request.content.read()
        except BaseException as exc:
            outcome.append(type(exc))
            raise
        return text(b"never")
    connection, transport = edge(waits_for_the_body)
    connection.data_received(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhalf")
    await eventually(lambda: requests, timeout=1, interval=0)
    transport.peer_gone(ConnectionResetError())
    await eventually(lambda: outcome, timeout=1, interval=0)
    assert (outcome, connection.serving, transport.written) == ([asyncio.CancelledError], None, b"")
    assert isinstance(requests[0].content.exception(), ConnectionResetError)  # for anyone still reading it


# -- pipelining's bound, and the timers

async def test_past_max_queued_pipelined_requests_reading_pauses_until_they_are_answered(edge):
    release = asyncio.Event()

    async def held(request: EdgeRequest) -> WholeAnswer:
        await release.wait()
        return text(request.raw_path.encode())
    connection, transport = edge(held)
    connection.data_received(b"".join(get(f"/{n}") for n in range(MAX_QUEUED * 2 + 5)))
    await steps()
    assert not transport.reading and len(connection.queue) <= MAX_QUEUED  # parsed a bounded batch ahead
    release.set()
    await eventually(lambda: len(sent(transport)) == MAX_QUEUED * 2 + 5, timeout=2, interval=0)
    assert bodies(transport) == [f"/{n}" for n in range(MAX_QUEUED * 2 + 5)] and transport.reading


async def test_an_idle_connection_closes_after_the_keep_alive_timeout_and_a_busy_one_does_not(edge):
    release = asyncio.Event()

    async def slow(request: EdgeRequest) -> WholeAnswer:
        await release.wait()
        return text(b"done")
    idle, idle_transport = edge(slow, keepalive_timeout=0.05)
    busy, busy_transport = edge(slow, keepalive_timeout=0.05)
    busy.data_received(get("/slow"))
    await eventually(lambda: idle_transport.closed, timeout=1, interval=0.01)
    await asyncio.sleep(0.15)
    assert not busy_transport.closed
    release.set()
    await eventually(lambda: busy_transport.written, timeout=1, interval=0)
    await eventually(lambda: busy_transport.closed, timeout=1, interval=0.01)  # idle again: the timeout counts
    assert bodies(busy_transport) == ["done"]


async def test_a_head_that_does_not_arrive_in_time_closes_the_connection_saying_nothing(edge, caplog):
    caplog.set_level(logging.INFO, "strangler.edge")
    connection, transport = edge(Recorder(), header_timeout=0.05)
    connection.data_received(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ")
    await eventually(lambda: transport.closed, timeout=1, interval=0.01)
    assert transport.written == b""
    assert "did not arrive in time" in caplog.text


async def test_a_head_that_arrives_in_time_is_answered_and_the_header_timer_stops(edge):
    connection, transport = edge(Recorder(), header_timeout=0.05)
    connection.data_received(b"GET / HTTP/1.1\r\n")
    connection.data_received(b"Host: h\r\n\r\n")
    await eventually(lambda: transport.written, timeout=1, interval=0)
    await asyncio.sleep(0.1)
    assert not transport.closed and connection.header_timer is None


# -- shutting down

async def test_close_shuts_an_idle_connection_now_and_a_busy_one_after_its_answer(edge):
    release = asyncio.Event()

    async def slow(request: EdgeRequest) -> WholeAnswer:
        await release.wait()
        return text(b"done")
    idle, idle_transport = edge(slow)
    busy, busy_transport = edge(slow)
    busy.data_received(get("/slow"))
    await steps()
    idle.close()
    busy.close()
    await steps()
    assert (idle_transport.closed, busy_transport.closed) == (True, False)
    release.set()
    await eventually(lambda: busy_transport.closed, timeout=1, interval=0)
    assert b"Connection: close\r\n" in busy_transport.written and bodies(busy_transport) == ["done"]


async def test_shutdown_gives_the_request_in_flight_its_time_then_cancels_it(edge):
    cancelled = []

    async def endless(request: EdgeRequest) -> WholeAnswer:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(request.raw_path)
            raise
        return text(b"never")
    connection, transport = edge(endless)
    connection.data_received(get("/forever"))
    await steps()
    await asyncio.wait_for(connection.shutdown(0.05), 2)
    assert (cancelled, transport.closed, transport.written) == (["/forever"], True, b"")


async def test_the_server_knows_its_connections_until_they_are_lost():
    server = EdgeServer(Recorder())
    connection = server()
    transport = connect(connection)
    assert list(server._connections) == [connection] and connection.remote == "192.0.2.7"
    transport.peer_gone()
    assert server._connections == {}


@pytest.mark.parametrize(("method", "path", "headers"), [
    ("GET", "/", []),
    ("POST", "/orders?x=1", [("Host", "h"), ("Content-Length", "5")]),
    ("GET", "/" + "a" * 500, [("X-Pad", "p" * 300)] * 3),
])
def test_head_size_counts_the_request_line_and_header_lines_as_sent(method, path, headers):
    class Message:  # the two fields head_size reads from aiohttp's RawRequestMessage
        pass
    message = Message()
    message.method, message.path = method, path
    message.raw_headers = tuple((k.encode(), v.encode()) for k, v in headers)
    sent_bytes = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    assert head_size(message) == len(sent_bytes)


# -- found while writing these, and fixed: kept so they stay fixed

async def test_a_long_pipelined_batch_of_ordinary_requests_is_all_answered(edge):
    count = 100
    connection, transport = edge(Recorder())
    cookie = "Cookie: " + "c" * 1000  # 1 KiB heads, as a browser's often are: 100 KiB in one read
    connection.data_received(b"".join(get(f"/{n}", cookie) for n in range(count)))
    await eventually(lambda: len(sent(transport)) >= MAX_QUEUED + 1 or transport.closed, timeout=2, interval=0)
    await steps(50)
    assert [status for status, _ in sent(transport)] == [200] * count


async def test_a_head_after_a_body_in_the_same_read_is_held_to_the_limit_too(edge):
    handler = Recorder()
    connection, transport = edge(handler, max_header_bytes=4096)
    big = b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 200) for n in range(60))  # 12 KiB of headers
    connection.data_received(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n")
    await steps()
    connection.data_received(b"abc" + b"GET /big HTTP/1.1\r\nHost: h\r\n" + big)
    await steps()
    connection.data_received(b"\r\n")
    await eventually(lambda: len(sent(transport)) == 2 or transport.closed, timeout=1, interval=0)
    assert status_of(bytes(transport.written).partition(b"POST /a 3")[2]) == 431 and handler.paths == ["/a"]


@pytest.mark.parametrize("cut", [1, 2, 3], ids=["\\r|\\n\\r\\n", "\\r\\n|\\r\\n", "\\r\\n\\r|\\n"])
async def test_a_good_request_whose_head_ends_across_two_reads_is_answered_before_a_bad_one(edge, cut):
    handler = Recorder()
    connection, transport = edge(handler)
    good = get("/good")
    connection.data_received(good[:len(good) - 4 + cut])
    connection.data_received(good[len(good) - 4 + cut:] + BAD["header-without-colon"])
    await eventually(lambda: transport.closed, timeout=1, interval=0)
    assert [status for status, _ in sent(transport)] == [200, 400] and handler.paths == ["/good"]


async def test_a_body_that_breaks_its_framing_after_its_answer_closes_the_connection_at_once(edge):
    connection, transport = edge(ignoring_the_body)
    connection.data_received(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await eventually(lambda: transport.written, timeout=1, interval=0)
    connection.data_received(b"zz\r\nsmuggled\r\n0\r\n\r\n")
    await eventually(lambda: transport.closed, timeout=1, interval=0.01)
    assert [status for status, _ in sent(transport)] == [404] and b"smuggled" not in bytes(transport.written)
