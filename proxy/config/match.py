"""A route's `match:` block -> Match: the path prefix, methods, exact header values and the host."""

from __future__ import annotations

import re

from proxy.config.fields import TOKEN, Section
from proxy.model import Match

# A segment may hold RFC 3986 pchar except '%' and ';' (written decoded, no parameters).
PATH_SEGMENT = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,=:@]*$")
# A DNS name's label: letters, digits and inner hyphens ('_' too: some internal names have it).
LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
IPV6_LITERAL = re.compile(r"^\[[0-9a-f:.]+\]$")
WITH_PORT = re.compile(r"^(\[[0-9a-f:.]+\]|[^:\[\]]+):[0-9]*$")


def read_match(route: Section) -> Match | None:
    sec = route.section("match", {"path", "methods", "headers", "host"})
    if sec is None:
        route.get("match", "a mapping", lambda v: isinstance(v, dict))
        return None
    path = plain_path(sec, "path")
    methods = read_methods(sec, "methods", None)
    headers = _header_values(sec)
    host = _host(sec)
    return Match(path, methods, headers, host) if path else None


def plain_path(sec: Section, key: str) -> str | None:
    """An absolute path of plain segments, its trailing slash dropped; None (and an error) for anything
    else: the form a prefix is written in, matched and replaced."""
    path = sec.text(key)
    if not isinstance(path, str):
        return None
    if not path.startswith("/"):
        sec.error(key, f"'{key}' must start with '/', got {path!r}")
        return None
    segments = path[1:].rstrip("/").split("/")
    if path != "/" and not all(s and s not in (".", "..") and PATH_SEGMENT.match(s) for s in segments):
        sec.error(key, f"'{key}' {path!r} must be plain segments: no '//', '.', '..', '%', ';', '?' or '#'")
        return None
    return "/" + "/".join(segments) if path != "/" else "/"


def read_methods(sec: Section, key: str, default: frozenset[str] | None) -> frozenset[str] | None:
    if not sec.has(key):
        return default
    methods = sec.texts(key)
    for method in methods:
        if not TOKEN.match(method) or method != method.upper():
            sec.error(key, f"method {method!r} must be an upper-case HTTP method (methods are case-sensitive)")
    return frozenset(methods) if methods else default


def _header_values(sec: Section) -> tuple[tuple[str, str], ...]:
    data = sec.get("headers", "a mapping of header names to exact values",
                   lambda v: isinstance(v, dict), {})
    found = []
    for name, value in data.items():
        if not isinstance(name, str) or not TOKEN.match(name):
            sec.error("headers", f"{name!r} is not a valid header name")
        elif not isinstance(value, str):
            written = sec.reader.doc.text(sec.at("headers") + (name,)) or value
            sec.error("headers", f"the value of {name} must be a string (quote it: {name}: \"{written}\")")
        else:
            found.append((name.lower(), value))
    return tuple(sorted(found))


def _host(sec: Section) -> str | None:
    """`host`: a name, an IPv6 literal in brackets, or `*.` and a name; lower-cased as requests' are
    (proxy.model.hosts). None when absent or wrong (then with an error)."""
    written = sec.text("host", None)
    if not isinstance(written, str):
        return None
    problem = host_problem(written)
    if problem is not None:
        sec.error("host", problem)
        return None
    host = written.lower()
    return host[:-1] if host.endswith(".") else host


def host_problem(written: str) -> str | None:
    """What is wrong with a host rule as written, with the fix; None when it is one."""
    host = written.strip().lower()
    if "/" in host:
        name = host.split("//")[-1].split("/")[0]
        return f"'host' is a host name, not a URL or a path, got {written!r}: write host: {name} (paths go in 'path')"
    if IPV6_LITERAL.match(host):
        return None
    port = WITH_PORT.match(host)
    if port:
        return f"'host' has no port (any port matches), got {written!r}: write host: {port[1]}"
    if host == "*":
        return "'host: *' would take any host: leave 'host' out for that"
    name = host[2:] if host.startswith("*.") else host
    if "*" in name:
        return (f"'host' {written!r} may hold a wildcard only as its first label, as in '*.example.com' "
                "(which does not take example.com itself)")
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if not all(LABEL.match(label) for label in labels) or written != written.strip():
        return f"'host' {written!r} is not a host name (letters, digits, '-' and '.'), an IPv6 literal like [::1], " \
               "or '*.' and a name"
    return None
