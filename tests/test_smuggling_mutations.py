"""Request smuggling, mutated: the header families of defparam's smuggler.py, in both framings, at the edge.

smuggler.py hides a `Transfer-Encoding: chunked` from one parser and shows it to another:
a space or tab or control byte before or after the name or the value, another byte in the
name, a value quoted or cut short, a header folded onto the line before, two of them. Each
family is rebuilt here for every byte smuggler.py tries (0x01-0x20 and 0x7f-0xff, once or
twice as its doubles run does), and sent with a Content-Length in the two classic shapes:

- CL.TE: the body, by its Content-Length, is `0\r\n\r\n` and a hidden request; a parser that
  took the mutated header for chunked framing would end the body at `0` and read the hidden
  request as the next one.
- TE.CL: the body is chunked and holds the hidden request, while Content-Length covers only
  the chunk size line.

Each is sent once asking for the connection to close, and once leaving it open with a last
request after it, so that what the proxy does with the bytes after a request shows too.

What must hold, for every case: the hidden request never reaches the upstream as a request
(but where it follows a TE.CL body on an open connection: every reading makes it a request of
its own there, and then its answer comes back); a request the proxy refuses sends the upstream
not one byte, nor anything after it; and one the proxy accepts reaches it once, framed anew,
with the body its Content-Length gave it, and each request that reached the upstream has its
answer come back. The upstream keeps every byte and reads them by a strict reading of its own
(tests/recorder.py), not by llhttp, the parser the edge itself stands on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import AsyncIterator, Iterator, NamedTuple

import pytest

from tests.helpers import route, sent_regardless
from tests.recorder import Malformed, Recorder, Request, read_head

TE = b"Transfer-Encoding"
BYTES = [*range(0x01, 0x21), *range(0x7F, 0x100)]  # the bytes smuggler.py's exhaustive and doubles runs try
NAMED = {
    "space-before-name": b" Transfer-Encoding: chunked",
    "tab-value": b"Transfer-Encoding:\tchunked",
    "tabs-around-colon": b"Transfer-Encoding\t:\tchunked",
    "space-in-name": b"Transfer Encoding: chunked",
    "underscore-name": b"Transfer_Encoding: chunked",
    "space-in-name-no-ows": b"Transfer Encoding:chunked",
    "space-before-colon": b"Transfer-Encoding : chunked",
    "two-spaces": b"Transfer-Encoding:  chunked",
    "vertical-tab": b"Transfer-Encoding:\x0bchunked",
    "chunked-then-other": b"Transfer-Encoding: chunked, cow",
    "other-then-chunked": b"Transfer-Encoding: cow, chunked",
    "identity-then-chunked": b"Transfer-Encoding: identity, chunked",
    "chunked-twice": b"Transfer-Encoding: chunked, chunked",
    "content-encoding": b"Content-Encoding: chunked",
    "folded": b"Transfer-Encoding:\n chunked",
    "folded-crlf": b"Transfer-Encoding:\r\n chunked",
    "folded-tab": b"Transfer-Encoding:\r\n\tchunked",
    "folded-onto-x": b"X: X\r\n Transfer-Encoding: chunked",
    "double-quoted": b'Transfer-Encoding: "chunked"',
    "single-quoted": b"Transfer-Encoding: 'chunked'",
    "cut-short": b"Transfer-Encoding: chunk",
    "mixed-case": b"TrAnSFer-EnCODinG: cHuNkeD",
    "upper-case": b"TRANSFER-ENCODING: CHUNKED",
    "value-case": b"Transfer-Encoding: chUnKeD",
    "nul-suffix": b"Transfer-Encoding: chunked\x00",
    "nul-in-name": b"Transfer-Encoding\x00: chunked",
    "cr-suffix": b"Transfer-Encoding: chunked\r",
    "tab-suffix": b"Transfer-Encoding: chunked\t",
    "other-then-chunked-twice": b"Transfer-Encoding: cow\r\nTransfer-Encoding: chunked",
    "chunked-then-identity-twice": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
    "lf-line-end": b"Transfer-Encoding: chunked\nX: X",
    "cr-line-end": b"Transfer-Encoding: chunked\rX: X",
    "cr-in-name": b"Transfer\r-Encoding: chunked",
    "words-around": b"Transfer-Encoding: cow chunked bar",
    "parameter": b"Transfer-Encoding: chunked;q=1",
    "ff-before-value": b"Transfer-Encoding:\xffchunked",
    "high-byte-in-value": b"Transfer-Encoding: ch\x96nked",
    "high-byte-in-name": b"Transf\x82r-Encoding: chunked",
    "cr-injected": b"X:X\rTransfer-Encoding: chunked",
    "lf-injected": b"X:X\nTransfer-Encoding: chunked",
    "after-x": b"X: X\r\nTransfer-Encoding: chunked",  # an injection that worked, as the next hop reads it
}
# Two Transfer-Encoding fields: chunked beside each of these, in both orders
OTHER_CODINGS = [b"identity", b"cow", b"gzip", b"", b"chunked", b" chunked", b"chunked, identity"]
# Each family places one byte `c` somewhere around the header (smuggler.py's names in brackets).
FAMILIES = {
    "mid": lambda c: TE + b":" + c + b"chunked",  # [midspace]
    "post": lambda c: TE + c + b": chunked",  # [postspace]
    "pre": lambda c: c + TE + b": chunked",  # [prespace]
    "end": lambda c: TE + b": chunked" + c,  # [endspace]
    "x-pre": lambda c: b"X: X" + c + TE + b": chunked",  # [xprespace]
    "end-x": lambda c: TE + b": chunked" + c + b"X: X",  # [endspacex]
    "x-cr-pre": lambda c: b"X: X\r" + c + TE + b": chunked",  # [rxprespace]
    "x-lf-pre": lambda c: b"X: X" + c + b"\n" + TE + b": chunked",  # [xnprespace]
    "end-cr-x": lambda c: TE + b": chunked\r" + c + b"X: X",  # [endspacerx]
    "end-lf-x": lambda c: TE + b": chunked" + c + b"\nX: X",  # [endspacexn]
    # doubles.py: the same byte in two of the four places
    "pre-post": lambda c: c + TE + c + b": chunked",
    "pre-mid": lambda c: c + TE + b":" + c + b"chunked",
    "pre-end": lambda c: c + TE + b": chunked" + c,
    "post-mid": lambda c: TE + c + b":" + c + b"chunked",
    "post-end": lambda c: TE + c + b": chunked" + c,
    "mid-end": lambda c: TE + b":" + c + b"chunked" + c,
}


def gadgets() -> Iterator[tuple[str, bytes]]:
    """Every gadget once, under the first name it has (a family's byte may rebuild a named one)."""
    seen: set[bytes] = set()
    for name, gadget in _all_gadgets():
        if gadget not in seen:
            seen.add(gadget)
            yield name, gadget


def _all_gadgets() -> Iterator[tuple[str, bytes]]:
    yield from NAMED.items()
    for other in OTHER_CODINGS:
        yield f"twice-chunked-then-{other.decode()!r}", TE + b": chunked\r\n" + TE + b": " + other
        yield f"twice-{other.decode()!r}-then-chunked", TE + b": " + other + b"\r\n" + TE + b": chunked"
    for family, make in FAMILIES.items():
        for byte in BYTES:
            yield f"{family}-{byte:02x}", make(bytes([byte]))


def hidden(n: int) -> bytes:
    return b"GET /smuggled/%d HTTP/1.1\r\nHost: h\r\n\r\n" % n


class Case(NamedTuple):
    name: str
    sent: bytes
    body: bytes  # what its Content-Length frames
    shape: str
    close: bool  # asks for the connection to close; if not, a last request that asks for it follows

    @property
    def pipelined(self) -> bool:
        """Whether the hidden request follows the body on a connection left open: a request of its own."""
        return not self.close and self.shape == "te.cl"


def case(n: int, name: str, gadget: bytes, shape: str, close: bool) -> Case:
    if shape == "cl.te":
        body = b"0\r\n\r\n" + hidden(n)
        length = len(body)
    else:  # te.cl
        size = b"%x\r\n" % len(hidden(n))
        body = size + hidden(n) + b"\r\n0\r\n\r\n"
        length = len(size)
    head = (b"POST /m/%d HTTP/1.1\r\n" % n + gadget + b"\r\nHost: h\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n" % length
            + (b"Connection: close\r\n" if close else b"") + b"\r\n")
    last = b"" if close else b"GET /last/%d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" % n
    return Case(f"{name} {shape}" + ("" if close else " kept-alive"), head + body + last, body[:length], shape, close)


def cases() -> list[Case]:
    """Each gadget in both shapes, on a connection the client closes after it and on one it leaves open."""
    shaped = [(name, gadget, shape, close) for close in (True, False) for name, gadget in gadgets()
              for shape in ("cl.te", "te.cl")]
    return [case(n, *one) for n, one in enumerate(shaped)]


CASES = cases()


MARK = b"\r\nX-Upstream: recorder"


def answered_by(raw: bytes) -> str:
    """`upstream` (it carries the recorder's mark), `proxy` (the proxy's own JSON refusal), or what it was."""
    head, _, body = raw.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 200 ") and MARK in head:
        return "upstream"
    try:
        refused = head.startswith(b"HTTP/1.1 4") and set(json.loads(body)) == {"error", "detail", "request_id"}
    except ValueError:
        refused = False
    return "proxy" if refused else f"other: {raw[:80]!r}"


def strictly_chunked(sent: bytes) -> bool:
    """Whether a strict reading of what the client sent finds a Transfer-Encoding field: then the
    Content-Length is not the framing, and a proxy that used it would read the body otherwise."""
    try:
        _, _, headers = read_head(sent.partition(b"\r\n\r\n")[0])
    except Malformed:
        return False  # no strict reading at all: a strict server refuses it, whatever it says
    return any(name.lower() == b"transfer-encoding" for name, _ in headers)


async def send_all(port: int, cases: list[Case]) -> list[bytes]:
    """Each case's answers, sent concurrently a bounded batch at a time; each exchange has its deadline,
    and so has the whole, which a proxy holding connections open after a refusal would miss."""
    answers: list[bytes] = []
    async with asyncio.timeout(30):
        for batch in range(0, len(cases), 64):
            answers += await asyncio.gather(*(sent_regardless(port, c.sent) for c in cases[batch:batch + 64]))
    return answers


def judged(cases: list[Case], answers: list[bytes], recorder: Recorder) -> dict[str, str]:
    """What went wrong, by case, and under "upstream" the bytes no case accounts for."""
    arrived: dict[bytes, list[Request]] = {}
    for one in recorder.requests:
        arrived.setdefault(one.target, []).append(one)
    wrong = {}
    for c, answer in zip(cases, answers, strict=True):
        n = c.sent.split(b" ", 2)[1].removeprefix(b"/m/")
        mine = {kind: arrived.pop(b"/%s/%s" % (kind, n), []) for kind in (b"m", b"smuggled", b"last")}
        if why := _verdict(c, answer, mine):
            wrong[c.name] = why
    unread = [f"{c.problem or 'cut short'}: {c.leftover[:120]!r}" for c in recorder.connections
              if c.problem or c.leftover]
    unread += [f"{len(found)} request(s) to {target!r}" for target, found in arrived.items()]
    return wrong | ({"upstream": "; ".join(unread)} if unread else {})


def _verdict(c: Case, answer: bytes, arrived: dict[bytes, list[Request]]) -> str:
    by, total = answered_by(answer), sum(map(len, arrived.values()))
    if arrived[b"smuggled"] and not c.pipelined:
        return f"the hidden request reached the upstream; answered by {by}"
    if by == "proxy":
        return f"refused, yet {total} request(s) reached the upstream" if total else ""
    if by != "upstream" or len(arrived[b"m"]) != 1:
        return f"answered by {by}, {len(arrived[b'm'])} request(s) upstream"
    if answer.count(MARK) != total:
        return f"{total} request(s) reached the upstream, and {answer.count(MARK)} of its answers came back"
    if arrived[b"m"][0].body != c.body:
        return f"accepted with the body {arrived[b'm'][0].body[:60]!r}, not the {len(c.body)} bytes of its Content-Length"
    if strictly_chunked(c.sent):
        return "framed by its Content-Length, while a strict reading frames it by its Transfer-Encoding"
    return ""


class Relay:
    """A stand-in for a proxy that parses nothing: each client's bytes go to the upstream as they came."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://").rsplit(":", 1)
        self.port = 0
        self._relaying: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._relaying.append(asyncio.create_task(self._relay(reader, writer)))

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()

    async def close(self) -> None:
        """Once every connection has passed on both its ends (within a deadline)."""
        assert self._server is not None
        self._server.close()
        await asyncio.wait_for(asyncio.gather(*self._relaying), timeout=5)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One direction, until its end, which is passed on."""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
        writer.write_eof()


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    started = await Recorder().start()
    yield started
    await started.close()


def test_the_families_are_larger_than_smugglers_exhaustive_run():
    assert len(CASES) >= 1768  # the attack round's count: every family on every byte, in both shapes


async def test_no_mutation_smuggles_a_request_or_leaks_a_refused_one(start_proxy, recorder):
    proxy = await start_proxy({"legacy": recorder.url}, [route("all")])
    answers = await send_all(proxy.port, CASES)
    await proxy.proxy.stop()  # its pooled connections close
    await recorder.settled()
    assert judged(CASES, answers, recorder) == {}
    refused = sum(answered_by(raw) == "proxy" for raw in answers)
    print(f"\n{len(CASES)} mutations: {refused} refused, {len(CASES) - refused} accepted and framed anew")


async def test_the_recorder_sees_the_desync_of_a_relay_that_parses_nothing(recorder):
    # The check above is only as good as its upstream: a plain byte relay in the proxy's place must fail it.
    relay = await Relay(recorder.url).start()
    cases = [c for c in CASES if c.close and c.name.startswith(("content-encoding ", "mixed-case ", "pre-01 "))]
    answers = await send_all(relay.port, cases)
    await relay.close()
    await recorder.settled()
    found = judged(cases, answers, recorder)
    assert set(found) == {"content-encoding te.cl", "mixed-case cl.te", "mixed-case te.cl", "pre-01 cl.te",
                          "pre-01 te.cl", "upstream"}
    assert found["content-encoding te.cl"].startswith("the hidden request reached the upstream")
    assert "framing: Transfer-Encoding [b'cHuNkeD'], Content-Length" in found["upstream"]
