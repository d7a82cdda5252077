"""routes.yaml's `tracing:`: where spans go, and how many of the traces the edge starts are recorded."""

from __future__ import annotations

from urllib.parse import urlsplit

from proxy.config.fields import Section
from proxy.model import TracingSpec

KEYS = {"endpoint", "sample", "service_name"}


def read_tracing(top: Section) -> TracingSpec | None:
    if not top.has("tracing"):
        return None
    sec = top.section("tracing", KEYS, "tracing")
    if sec is None:
        return None
    endpoint = sec.text("endpoint")
    sample = sec.number("sample", 1.0, 0.0, 1.0)
    service_name = sec.text("service_name", "strangler")
    if not isinstance(endpoint, str):
        return None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        sec.error("endpoint", f"'endpoint' is the collector's OTLP/HTTP traces URL, like "
                              f"\"http://127.0.0.1:4318/v1/traces\"; got {endpoint!r}")
        return None
    return TracingSpec(endpoint, sample, service_name)
