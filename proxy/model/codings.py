"""Content codings undone: gzip and deflate, capped, so a small body cannot unpack into gigabytes.

Standard library only (layer 0): the comparator and the report store both read bodies
as their content, not as the bytes on the wire.
"""

from __future__ import annotations

import zlib

MAX_UNPACKED = 32 << 20


def unpack(body: bytes, encoding: str | None) -> bytes:
    """Undo gzip and deflate codings (in reverse order of application); others stay as they are."""
    for coding in reversed([c.strip().lower() for c in (encoding or "").split(",") if c.strip()]):
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, zlib.MAX_WBITS | 16)
        elif coding == "deflate":
            body = _inflate(body, zlib.MAX_WBITS)
        elif coding != "identity":
            return body  # br, zstd...: left as bytes
    return body


def _inflate(body: bytes, wbits: int) -> bytes:
    try:
        return zlib.decompressobj(wbits).decompress(body, MAX_UNPACKED)
    except zlib.error:
        if wbits == zlib.MAX_WBITS:  # some servers send raw deflate
            return _inflate(body, -zlib.MAX_WBITS)
        return body
