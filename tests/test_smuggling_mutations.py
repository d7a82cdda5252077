"""Request smuggling, mutated: the header families of defparam's smuggler.py, in both framings, at the edge.

smuggler.py hides a `Transfer-Encoding: chunked` from one parser and shows it to another:
a space or tab or control byte before or after the name or the value, another byte in the
name, a value quoted or cut short, a header folded onto the line before, two of them. Each
family is rebuilt here for every byte smuggler.py tries (0x01-0x1f and 0x7f-0xff), and sent
with a Content-Length in the two classic shapes:

- CL.TE: the body, by its Content-Length, is `0\r\n\r\n` and a hidden request; a parser that
  took the mutated header for chunked framing would end the body at `0` and read the hidden
  request as the next one.
- TE.CL: the body is chunked and holds the hidden request, while Content-Length covers only
  the chunk size line.

What must hold, for every case: the hidden request never reaches the upstream as a request;
a request the proxy refuses sends the upstream nothing; and one the proxy accepts reaches it
once, framed anew by the proxy. The upstream is a real server that records every request.
"""

from __future__ import annotations

import asyncio
import json
from typing import Iterator

from tests.helpers import Seen, route, sent_regardless

TE = b"Transfer-Encoding"
BYTES = [*range(0x01, 0x20), *range(0x7F, 0x100)]  # the bytes smuggler.py's exhaustive run tries
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
    "content-encoding": b"Content-Encoding: chunked",
    "folded": b"Transfer-Encoding:\n chunked",
    "double-quoted": b'Transfer-Encoding: "chunked"',
    "single-quoted": b"Transfer-Encoding: 'chunked'",
    "cut-short": b"Transfer-Encoding: chunk",
    "mixed-case": b"TrAnSFer-EnCODinG: cHuNkeD",
    "upper-case": b"TRANSFER-ENCODING: CHUNKED",
    "cr-suffix": b"Transfer-Encoding: chunked\r",
    "tab-suffix": b"Transfer-Encoding: chunked\t",
    "other-then-chunked-twice": b"Transfer-Encoding: cow\r\nTransfer-Encoding: chunked",
    "chunked-then-identity-twice": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
    "cr-in-name": b"Transfer\r-Encoding: chunked",
    "words-around": b"Transfer-Encoding: cow chunked bar",
    "ff-before-value": b"Transfer-Encoding:\xffchunked",
    "high-byte-in-value": b"Transfer-Encoding: ch\x96nked",
    "high-byte-in-name": b"Transf\x82r-Encoding: chunked",
    "cr-injected": b"X:X\rTransfer-Encoding: chunked",
    "lf-injected": b"X:X\nTransfer-Encoding: chunked",
}
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
}


def gadgets() -> Iterator[tuple[str, bytes]]:
    yield from NAMED.items()
    for family, make in FAMILIES.items():
        for byte in BYTES:
            yield f"{family}-{byte:02x}", make(bytes([byte]))


def hidden(n: int) -> bytes:
    return b"GET /smuggled/%d HTTP/1.1\r\nHost: h\r\n\r\n" % n


def request(n: int, gadget: bytes, shape: str) -> bytes:
    if shape == "cl.te":
        body = b"0\r\n\r\n" + hidden(n)
        length = len(body)
    else:  # te.cl
        size = b"%x\r\n" % len(hidden(n))
        body = size + hidden(n) + b"\r\n0\r\n\r\n"
        length = len(size)
    head = (b"POST /m/%d HTTP/1.1\r\n" % n + gadget + b"\r\nHost: h\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % length)
    return head + body


CASES = [(name, gadget, shape) for name, gadget in gadgets() for shape in ("cl.te", "te.cl")]


def answered_by(raw: bytes) -> str:
    """`upstream` (it carries the upstream's mark), `proxy` (the proxy's own JSON refusal), or what it was."""
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"\r\nX-Upstream: legacy" in head:
        return "upstream"
    try:
        refused = head.startswith(b"HTTP/1.1 4") and set(json.loads(body)) == {"error", "detail", "request_id"}
    except ValueError:
        refused = False
    return "proxy" if refused else f"other: {raw[:80]!r}"


def test_the_families_are_as_large_as_smugglers_exhaustive_run():
    assert len(CASES) >= 1768  # the attack round's count: every family on every byte, in both shapes


async def test_no_mutation_smuggles_a_request_or_leaks_a_refused_one(make_upstream, start_proxy):
    upstream = await make_upstream("legacy")
    proxy = await start_proxy({"legacy": upstream.url}, [route("all")])
    answers: list[bytes] = []
    for batch in range(0, len(CASES), 64):  # concurrent, a bounded batch at a time
        answers += await asyncio.gather(*(sent_regardless(proxy.port, request(n, gadget, shape))
                                          for n, (_, gadget, shape) in enumerate(CASES[batch:batch + 64], batch)))
    seen: dict[int, list[Seen]] = {}
    for one in upstream.seen:
        assert not one.target.startswith("/smuggled/"), f"a hidden request reached the upstream: {one.target}"
        seen.setdefault(int(one.target.rsplit("/", 1)[1]), []).append(one)
    wrong = []
    for n, ((name, _, shape), raw) in enumerate(zip(CASES, answers, strict=True)):
        by, arrived = answered_by(raw), seen.get(n, [])
        if (by, len(arrived)) not in (("proxy", 0), ("upstream", 1)):
            wrong.append(f"{name} {shape}: answered by {by}, {len(arrived)} request(s) upstream")
        elif arrived and b"GET /smuggled" in arrived[0].body and shape == "te.cl":
            wrong.append(f"{name} {shape}: the chunked body was taken whole past its Content-Length")
    assert wrong == []
    refused = sum(answered_by(raw) == "proxy" for raw in answers)
    print(f"\n{len(CASES)} mutations: {refused} refused, {len(CASES) - refused} accepted and framed anew")
