"""Header rules at the edge: what crosses the proxy in each direction and what it adds.

Hop-by-hop fields (RFC 9110 7.6.1, plus every name listed in Connection) never cross.
Framing (Content-Length, Transfer-Encoding) is never copied: aiohttp re-frames each
side. The upstream gets the client's headers plus X-Forwarded-*, Via and X-Request-Id.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade",
    "proxy-authorization", "proxy-authenticate", "trailer",
})
# Also never forwarded upstream: framing is redone, 100-continue is answered here, and
# these are set by this proxy, so a client may not choose them.
REQUEST_DROP = HOP_BY_HOP | {"content-length", "expect", "x-forwarded-proto", "x-forwarded-host",
                             "x-request-id", "x-strangler-shadow"}
RESPONSE_DROP = HOP_BY_HOP | {"content-length", "x-request-id"}
VIA = "1.1 strangler"
PLAIN_CONNECTION = frozenset({"keep-alive", "close"})
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")


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


def upstream_headers(incoming: CIMultiDictProxy[str], *, peer: str | None, proto: str,
                     rid: str) -> CIMultiDict[str]:
    """The headers an upstream receives for this client request."""
    out = _without(incoming, REQUEST_DROP)
    forwarded_for = ", ".join(incoming.getall("X-Forwarded-For", ()))
    if peer:
        forwarded_for = f"{forwarded_for}, {peer}" if forwarded_for else peer
    if forwarded_for:
        out["X-Forwarded-For"] = forwarded_for
    out["X-Forwarded-Proto"] = proto
    if "Host" in incoming:
        out["X-Forwarded-Host"] = incoming["Host"]
    out["Via"] = _via(incoming)
    out["X-Request-Id"] = rid
    return out


def client_headers(incoming: CIMultiDictProxy[str], *, rid: str) -> CIMultiDict[str]:
    """The headers the client receives from an upstream's response (duplicates kept)."""
    out = _without(incoming, RESPONSE_DROP)
    out["Via"] = _via(incoming)
    out["X-Request-Id"] = rid
    return out


def connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """Header names a sender declared hop-by-hop by listing them in Connection."""
    values = headers.getall("Connection", ())
    if len(values) == 1 and values[0].lower() in PLAIN_CONNECTION:
        return PLAIN_CONNECTION  # the usual `keep-alive` or `close`: nothing more to parse
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def _without(headers: CIMultiDictProxy[str], drop: Iterable[str]) -> CIMultiDict[str]:
    """A copy without the `drop` names, those listed in Connection, and names with '_' (dropped
    as nginx does: CGI-style upstreams read X_Forwarded_For as X-Forwarded-For). Copying and
    then removing runs in multidict's C code: this is on every request's path."""
    out = CIMultiDict(headers)
    for name in drop:
        if name in out:
            out.popall(name)
    if "Connection" in headers:
        for name in connection_tokens(headers):
            out.popall(name, None)
    for name in [k for k in out.keys() if "_" in k]:
        out.popall(name, None)
    return out


def _via(headers: CIMultiDictProxy[str]) -> str:
    earlier = ", ".join(headers.getall("Via", ()))
    return f"{earlier}, {VIA}" if earlier else VIA
