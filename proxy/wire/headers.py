"""Header rules at the edge: what crosses the proxy in each direction and what it adds.

Hop-by-hop fields (RFC 9110 7.6.1, plus every name listed in Connection) never cross, nor
do names with '_' (as nginx: CGI-style upstreams read X_Forwarded_For as X-Forwarded-For).
Framing (Content-Length, Transfer-Encoding) is never copied: each side is framed anew.
The upstream gets the client's headers plus X-Forwarded-*, Via and X-Request-Id.

Both directions start from the header lines as aiohttp's parser kept them (bytes, as they
arrived) and end as the block to send: values cross byte for byte, never decoded and
encoded again, and the parser has already refused CR, LF and NUL in them. This is on
every request's path both ways, so it is one plain loop over the lines, and the names to
take aside are found by one set lookup each; and lines that repeat what the same peer sent
last (a keep-alive client's headers, an upstream's answer headers) reuse the block made
then (`Repeated`), the request id added.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any, Callable, NamedTuple

from multidict import CIMultiDictProxy

RawHeaders = tuple[tuple[bytes, bytes], ...]

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade",
    "proxy-authorization", "proxy-authenticate", "trailer",
})
# Also never forwarded upstream: framing is redone, 100-continue is answered here, and
# these are set by this proxy, so a client may not choose them.
REQUEST_DROP = HOP_BY_HOP | {"content-length", "expect", "x-forwarded-proto", "x-forwarded-host",
                             "x-request-id", "x-strangler-shadow"}
RESPONSE_DROP = HOP_BY_HOP | {"content-length", "x-request-id"}
VIA = b"1.1 strangler"
# A WebSocket handshake's hop-by-hop pair, which does cross: towards the upstream on the request, back on its 101.
UPGRADE_LINES = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")

_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
_UNDERSCORE = ord("_")


def request_id(headers: CIMultiDictProxy[str]) -> str:
    """The client's X-Request-Id when it is a sane token, else a fresh one."""
    given = headers.get("X-Request-Id")
    if given is not None and REQUEST_ID.match(given):
        return given
    return fresh_request_id()


def fresh_request_id() -> str:
    """A new request id: 32 hex digits."""
    return _PROCESS + hex(next(_SERIAL))[2:]


def content_length(headers: CIMultiDictProxy[str]) -> int | None:
    """Content-Length as a number (the parser that read the headers has checked it is one), or None."""
    value = headers.get("Content-Length")
    return int(value) if value is not None else None


# Fresh ids: 64 random bits per process, then a counter (from 2**60: always 16 hex digits).
# Unique across a fleet like a uuid4, without a system call per request.
_PROCESS = os.urandom(8).hex()
_SERIAL = itertools.count(1 << 60)


class Repeated:
    """The header block last made from one peer's lines, and those lines. A keep-alive client sends the
    same headers request after request, an upstream the same answer headers (Date aside, which moves
    once a second): the block is made again only when the lines change. One entry: nothing to bound."""

    __slots__ = ("raw", "block")

    def __init__(self) -> None:
        self.raw: RawHeaders | None = None
        self.block = b""

    def made(self, raw: RawHeaders, make: Callable[..., bytes], *more: Any) -> bytes:
        """The block `make(raw, *more)` makes (`more` the same for every call on this peer)."""
        if raw != self.raw:
            self.block, self.raw = make(raw, *more), raw
        return self.block


def upstream_head(raw: RawHeaders, *, peer: str | None, proto: str, rid: str,
                  last: Repeated | None = None) -> bytes:
    """The header lines an upstream is sent for this client request, each ending in CRLF: Host first
    (when the client sent none, an HTTP/1.0 client, the exchange names the upstream), the client's
    other headers, then the proxy's. The request line and the framing are the exchange's. `last`: the
    block made for the connection's previous request (peer and proto are the connection's)."""
    block = _request_block(raw, peer, proto) if last is None else last.made(raw, _request_block, peer, proto)
    return block + b"X-Request-Id: " + rid.encode() + b"\r\n"


def _request_block(raw: RawHeaders, peer: str | None, proto: str) -> bytes:
    lines, aside = _crossing(raw, _REQUESTS)
    host = aside.get(b"host") if aside else None
    forwarded = aside.get(b"x-forwarded-for", []) if aside else []
    if peer:
        forwarded.append(peer.encode())
    if forwarded:
        lines.append(b"X-Forwarded-For: " + b", ".join(forwarded))
    if host:
        lines.insert(0, b"Host: " + host[0])
        lines.append(b"X-Forwarded-Host: " + host[0])
    lines += (b"X-Forwarded-Proto: " + proto.encode(), _via(aside), b"")
    return b"\r\n".join(lines)


def client_lines(raw: RawHeaders, *, rid: str, last: Repeated | None = None) -> bytes:
    """The header lines the client is sent with an upstream's answer (duplicates kept), each ending
    in CRLF; the status line and framing are the answer's. `last`: the block made for the upstream's
    previous answer."""
    block = _answer_block(raw) if last is None else last.made(raw, _answer_block)
    return block + b"X-Request-Id: " + rid.encode() + b"\r\n"


def _answer_block(raw: RawHeaders) -> bytes:
    lines, aside = _crossing(raw, _ANSWERS)
    lines += (_via(aside), b"")
    return b"\r\n".join(lines)


def connection_tokens(values: list[bytes]) -> frozenset[bytes]:
    """Header names (lower case) a sender declared hop-by-hop by listing them in Connection."""
    return frozenset(token.strip() for value in values for token in value.lower().split(b",") if token.strip())


# What becomes of a header line, by its name as sent. Names repeat from one request to the next,
# so each is looked at (lower-cased, checked for '_') once and remembered, up to KINDS_KEPT names
# a direction; past that, names are looked at every time.
CROSSES, SKIPPED, ASIDE, CONNECTION = range(4)
KINDS_KEPT = 1024


class Rules(NamedTuple):
    """One direction's rules: the names dropped, the names taken aside, and the kinds seen so far."""

    skip: frozenset[bytes]
    aside: frozenset[bytes]
    kinds: dict[bytes, int]

    def kind(self, name: bytes) -> int:
        lowered = name.lower()
        if lowered == b"connection":
            kind = CONNECTION
        elif lowered in self.aside:
            kind = ASIDE
        elif lowered in self.skip or _UNDERSCORE in name:
            kind = SKIPPED
        else:
            kind = CROSSES
        if len(self.kinds) < KINDS_KEPT:
            self.kinds[name] = kind
        return kind


def _crossing(raw: RawHeaders, rules: Rules,
              listed: frozenset[bytes] = frozenset()) -> tuple[list[bytes], dict[bytes, list[bytes]] | None]:
    """The lines that cross ("Name: value"), and the values of the names taken aside, by name (None:
    there were none). `listed`: the names a Connection header listed, found by a first pass."""
    lines: list[bytes] = []
    taken: dict[bytes, list[bytes]] | None = None
    listing = None
    kinds = rules.kinds
    for name, value in raw:
        kind = kinds.get(name)
        if kind is None:
            kind = rules.kind(name)
        if kind == CROSSES:
            if not listed or name.lower() not in listed:
                lines.append(name + b": " + value)
        elif kind == ASIDE:
            if taken is None:
                taken = {}
            taken.setdefault(name.lower(), []).append(value)
        elif kind == CONNECTION and not listed and value.lower() not in _PLAIN_CONNECTION:
            listing = [*(listing or ()), value]
    if listing is not None:  # names the sender declared hop-by-hop: they do not cross either
        return _crossing(raw, rules, connection_tokens(listing))
    return lines, taken


# Taken aside rather than copied: the proxy extends what earlier hops said (Via, X-Forwarded-For),
# sends Host first, and repeats it as X-Forwarded-Host.
_REQUESTS = Rules(frozenset(name.encode() for name in REQUEST_DROP),
                  frozenset({b"host", b"via", b"x-forwarded-for"}), {})
_ANSWERS = Rules(frozenset(name.encode() for name in RESPONSE_DROP), frozenset({b"via"}), {})


def _via(aside: dict[bytes, list[bytes]] | None) -> bytes:
    earlier = aside.get(b"via") if aside else None
    return b"Via: " + b", ".join([*earlier, VIA]) if earlier else _OUR_VIA


_OUR_VIA = b"Via: " + VIA
