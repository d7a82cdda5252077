"""routes.yaml's `upstreams:`: each server the proxy talks to, its URL checked (an http(s) origin, no
credentials, no link-local address) and its pool's limits read."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from proxy.config.fields import NAME, Reader, Section
from proxy.config.tls import UPSTREAM_KEYS, upstream_tls
from proxy.model import BreakerSpec, Upstream


def read_upstreams(top: Section) -> dict[str, Upstream]:
    data = top.get("upstreams", "a mapping of names to upstreams", lambda v: isinstance(v, dict))
    if not isinstance(data, dict):
        return {}
    found = {}
    for name, item in data.items():
        upstream = _upstream(top.reader, str(name), item)
        if upstream is not None:
            found[str(name)] = upstream
    return found



def _upstream(reader: Reader, name: str, data: Any) -> Upstream | None:
    sec = reader.section(("upstreams", name), data, f"upstream '{name}'",
                         {"url", "connect_timeout", "timeout", "max_connections", "max_pending", "retry_budget",
                          "breaker", *UPSTREAM_KEYS})
    if sec is None:
        return None
    if not NAME.match(name):
        reader.error(sec.path, f"upstream name {name!r} may hold only letters, digits, '.', '_' and '-'")
    url, d = _upstream_url(sec), Upstream("", "")
    upstream = Upstream(name, url or "", sec.number("connect_timeout", d.connect_timeout, positive=True),
                        sec.number("timeout", d.timeout, positive=True),
                        sec.integer("max_connections", d.max_connections, 1, 100_000),
                        sec.integer("max_pending", d.max_pending, 0, 1_000_000),
                        sec.number("retry_budget", d.retry_budget, low=0, high=1), _breaker(sec),
                        upstream_tls(sec, url.startswith("https://")) if url is not None else None)
    return upstream if url is not None else None



def _breaker(upstream: Section) -> BreakerSpec:
    sec, d = upstream.section("breaker", {"failures", "open_seconds", "probes"}), BreakerSpec()
    if sec is None:
        return d
    return BreakerSpec(sec.integer("failures", d.failures, 1, 10_000),
                       sec.number("open_seconds", d.open_seconds, positive=True),
                       sec.integer("probes", d.probes, 1, 1000))



def _upstream_url(sec: Section) -> str | None:
    text = sec.text("url")
    if not isinstance(text, str):
        return None
    problem, url = check_http_url(text)
    if problem:
        sec.error("url", problem)
        return None
    return url



def check_http_url(text: str) -> tuple[str | None, str]:
    """(problem, normalised URL): an http(s) origin with no path, credentials or link-local host."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        return f"url {text!r} is not a valid URL ({exc})", text
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"url must look like http://HOST:PORT, got {text!r}", text
    if parts.username or parts.password:
        return "url must not carry credentials; secrets never live in routes.yaml", text
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"url must be an origin with no path or query, got {text!r}", text
    if _is_link_local(parts.hostname):
        return f"url points at a link-local address ({parts.hostname}), the home of cloud metadata", text
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = port or (443 if parts.scheme == "https" else 80)
    return None, f"{parts.scheme}://{host}:{port}"



def _is_link_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_link_local
    except ValueError:
        return False
