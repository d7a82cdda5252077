"""A route's `rewrite:` block -> a Rewrite per side: the path prefix that side is sent instead of the
matched one, checked to be a plain absolute path (what the upstream reads must not be ambiguous)."""

from __future__ import annotations

from proxy.config.fields import Section
from proxy.config.match import PATH_SEGMENT
from proxy.model import Match, Rewrite, Side, Upstream

DEFAULT_PORTS = {"http": 80, "https": 443}


def read_rewrites(route: Section, match: Match | None,
                  upstreams: dict[Side, Upstream | None]) -> tuple[Rewrite | None, Rewrite | None]:
    """(legacy's, new's): None for a side the route sends the client's path to."""
    sec = route.section("rewrite", {str(Side.LEGACY), str(Side.NEW)})
    if sec is None:
        return None, None
    found: dict[Side, Rewrite | None] = {}
    for side, upstream in upstreams.items():
        prefix = _prefix(sec, str(side)) if sec.has(str(side)) else None
        if prefix is not None and not route.has(str(side)):
            sec.error(str(side), f"the route has no '{side}' side to rewrite: add '{side}: UPSTREAM' to the route, "
                                 f"or remove rewrite.{side}")
        elif prefix is not None and match is not None and prefix != match.path:
            found[side] = Rewrite(match.path, prefix, origins(upstream.url) if upstream is not None else ())
    return found.get(Side.LEGACY), found.get(Side.NEW)


def _prefix(sec: Section, key: str) -> str | None:
    """The prefix as written, trailing slash dropped; None (and an error saying why) when it is not a
    plain absolute path."""
    path = sec.text(key)
    if not isinstance(path, str):
        return None
    problem = _problem(path)
    if problem is not None:
        sec.error(key, f"'{key}' {problem}, got {path!r}")
        return None
    return "/" + path[1:].rstrip("/") if path != "/" else "/"


def _problem(path: str) -> str | None:
    if not path.startswith("/"):
        return "must be an absolute path like /orders"
    if "?" in path or "#" in path:
        return "is a path prefix: it takes no query ('?') or fragment ('#'); the client's query passes as sent"
    segments = path[1:].rstrip("/").split("/") if path != "/" else []
    if any(s in (".", "..") for s in segments):
        return "may not hold '.' or '..' segments: the upstream would read another path"
    if any(not s for s in segments):
        return "may not hold '//' (an empty segment): upstreams read it in different ways"
    if not all(PATH_SEGMENT.match(s) for s in segments):
        return "must be plain segments, written decoded: no '%', ';' or spaces"
    return None


def origins(url: str) -> tuple[str, ...]:
    """How an upstream's own absolute Locations may start: its URL (scheme://host:port, as the config
    normalises it), and without the port when that is the scheme's default."""
    scheme, _, authority = url.partition("://")
    host, _, port = authority.rpartition(":")
    if DEFAULT_PORTS.get(scheme) == int(port or 0):
        return url, f"{scheme}://{host}"
    return (url,)
