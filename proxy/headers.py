"""Header rules at the edge: what crosses the proxy in each direction and what it adds.

Hop-by-hop fields (RFC 9110 7.6.1, plus every name listed in Connection) never cross, nor
do names with '_' (as nginx: CGI-style upstreams read X_Forwarded_For as X-Forwarded-For).
Framing (Content-Length, Transfer-Encoding) is never copied: each side is framed anew.
The upstream gets the client's headers plus X-Forwarded-*, Via and X-Request-Id.

Both directions start from the header lines as aiohttp's parser kept them (bytes, as they
arrived) and end as the block to send: values cross byte for byte, never decoded and
encoded again, and the parser has already refused CR, LF and NUL in them. This runs twice
for every request, so it is one plain loop over the lines, and the names to take aside
are found by one set lookup each.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import NamedTuple

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
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")

# Taken aside rather than copied: the proxy extends what earlier hops said (Via, X-Forwarded-For),
# sends Host first, and repeats it as X-Forwarded-Host.
_REQUEST_ASIDE = frozenset({b"host", b"via", b"x-forwarded-for"})
_RESPONSE_ASIDE = frozenset({b"via"})
_REQUEST_SKIP = frozenset(name.encode() for name in REQUEST_DROP) | _REQUEST_ASIDE
_RESPONSE_SKIP = frozenset(name.encode() for name in RESPONSE_DROP) | _RESPONSE_ASIDE
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
_UNDERSCORE = ord("_")


class UpstreamHead(NamedTuple):
    """The head an upstream is sent for one client request, made once for every attempt and the shadow."""

    host: bytes | None  # the client's Host, sent first; None (an HTTP/1.0 client sent none): the upstream's
    lines: bytes  # every other header line, each ending in CRLF; the request line and framing are the exchange's


def request_id(headers: CIMultiDictProxy[str]) -> str:
    """The client's X-Request-Id when it is a sane token, else a fresh one."""
    given = headers.get("X-Request-Id")
    if given is not None and REQUEST_ID.match(given):
        return given
    return f"{_PROCESS}{next(_SERIAL):016x}"


# Fresh ids: 64 random bits per process, then a counter. Unique across a fleet like a
# uuid4, without a system call per request.
_PROCESS = os.urandom(8).hex()
_SERIAL = itertools.count()


def upstream_head(raw: RawHeaders, *, peer: str | None, proto: str, rid: str) -> UpstreamHead:
    """What an upstream is sent for this client request, besides its request line and framing."""
    lines, aside = _crossing(raw, _REQUEST_SKIP, _REQUEST_ASIDE)
    forwarded = aside.get(b"x-forwarded-for", [])
    if peer:
        forwarded.append(peer.encode())
    if forwarded:
        lines.append(b"X-Forwarded-For: " + b", ".join(forwarded))
    lines.append(b"X-Forwarded-Proto: " + proto.encode())
    host = aside.get(b"host")
    if host:
        lines.append(b"X-Forwarded-Host: " + host[0])
    lines += (_via(aside), b"X-Request-Id: " + rid.encode(), b"")
    return UpstreamHead(host[0] if host else None, b"\r\n".join(lines))


def client_lines(raw: RawHeaders, *, rid: str) -> bytes:
    """The header lines the client is sent with an upstream's answer (duplicates kept), each ending
    in CRLF; the status line and framing are the answer's."""
    lines, aside = _crossing(raw, _RESPONSE_SKIP, _RESPONSE_ASIDE)
    lines += (_via(aside), b"X-Request-Id: " + rid.encode(), b"")
    return b"\r\n".join(lines)


def connection_tokens(values: list[bytes]) -> frozenset[bytes]:
    """Header names (lower case) a sender declared hop-by-hop by listing them in Connection."""
    return frozenset(token.strip() for value in values for token in value.lower().split(b",") if token.strip())


def _crossing(raw: RawHeaders, skip: frozenset[bytes], aside: frozenset[bytes],
              listed: bool = False) -> tuple[list[bytes], dict[bytes, list[bytes]]]:
    """The lines that cross ("Name: value"), and the values of the `aside` names, by name. `listed`:
    `skip` already holds the names Connection lists."""
    lines: list[bytes] = []
    taken: dict[bytes, list[bytes]] = {}
    listing = None
    for name, value in raw:
        lowered = name.lower()
        if lowered in skip or _UNDERSCORE in name:
            if lowered in aside:
                taken.setdefault(lowered, []).append(value)
            elif lowered == b"connection" and not listed and value.lower() not in _PLAIN_CONNECTION:
                listing = [*(listing or ()), value]
            continue
        lines.append(name + b": " + value)
    if listing is not None:  # names the sender declared hop-by-hop: they do not cross either
        return _crossing(raw, skip | connection_tokens(listing), aside, listed=True)
    return lines, taken


def _via(aside: dict[bytes, list[bytes]]) -> bytes:
    earlier = aside.get(b"via")
    return b"Via: " + b", ".join([*earlier, VIA]) if earlier else b"Via: " + VIA
