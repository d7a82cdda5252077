"""A route's rewrite on the wire: the target each side is sent, and the Locations a rewritten side
answers with, mapped back to the client's prefix (as nginx's `proxy_redirect default`).

The prefix cut from the client's target is the whole segments routing matched: usually
`match.path` itself, byte for byte; when the client spelt it otherwise (escapes of
unreserved characters, `;parameters`, which routing sees through: proxy.wire.target),
the same number of segments. What follows them, the query included, passes as sent.
"""

from __future__ import annotations

from proxy.model import Rewrite, Route, Side

Lines = tuple[tuple[bytes, bytes], ...]  # header lines as the parser kept them (proxy.wire.headers.RawHeaders)
Pairs = tuple[tuple[str, str], ...]  # header lines as an Observation keeps them


def side_target(route: Route, side: Side, raw: str) -> str:
    """The target `side` is sent for the client's `raw` target (which routed to `route`)."""
    rewrite = route.legacy_rewrite if side is Side.LEGACY else route.new_rewrite
    return raw if rewrite is None else sent_target(rewrite, raw)


def sent_target(rewrite: Rewrite, raw: str) -> str:
    """`raw` with the matched prefix replaced by the side's; never `//` where the two meet."""
    rest = raw[_matched_end(rewrite.matched, raw):]
    if rewrite.sent == "/":
        return rest if rest.startswith("/") else "/" + rest
    return rewrite.sent + rest


def _matched_end(matched: str, raw: str) -> int:
    """Where, in the client's target, the segments routing matched to `matched` end."""
    if matched == "/":
        return 0
    end = len(matched)
    if raw.startswith(matched) and (len(raw) == end or raw[end] in "/?"):
        return end  # spelt as written: the usual case
    path, end = raw.partition("?")[0], 0
    for _ in range(matched.count("/")):
        slash = path.find("/", end + 1)
        end = len(path) if slash < 0 else slash
    return end


def client_location(value: str, rewrite: Rewrite) -> str | None:
    """A Location the rewritten side sent, in the client's paths; None when it is not one of the side's
    own (another host, a path outside the rewritten prefix): that passes untouched."""
    path = _own_path(value, rewrite.origins)
    sent = "" if rewrite.sent == "/" else rewrite.sent
    if path is None or not path.startswith(sent) or (len(path) > len(sent) and path[len(sent)] not in "/?#"):
        return None
    mapped = ("" if rewrite.matched == "/" else rewrite.matched) + path[len(sent):]
    if mapped.startswith("//"):
        return None  # would read as another host (`//evil.example/`): leave the upstream's own words
    return mapped or "/"


def _own_path(value: str, origins: tuple[str, ...]) -> str | None:
    """The path (and query, fragment) of a Location on the side itself: an absolute path, or an absolute
    URL on the upstream's own origin. None for anything else."""
    lowered = value[:max(map(len, origins), default=0)].lower()  # scheme and host compare without case
    for origin in origins:
        if lowered.startswith(origin) and (len(value) == len(origin) or value[len(origin)] in "/?#"):
            return value[len(origin):]
    return value if value.startswith("/") and not value.startswith("//") else None


def relocated(lines: Lines, rewrite: Rewrite) -> Lines:
    """An answer's header lines with its Location mapped back (the same tuple when there is none to map)."""
    for i, (name, value) in enumerate(lines):
        if len(name) == 8 and name.lower() == b"location":
            mapped = client_location(value.decode("latin-1"), rewrite)
            if mapped is not None:
                return (*lines[:i], (name, mapped.encode("latin-1")), *relocated(lines[i + 1:], rewrite))
    return lines


def relocated_pairs(pairs: Pairs, rewrite: Rewrite | None) -> Pairs:
    """The same for an Observation's headers, so a comparison sees what the client would."""
    if rewrite is None:
        return pairs
    return tuple((name, client_location(value, rewrite) or value) if name.lower() == "location" else (name, value)
                 for name, value in pairs)
