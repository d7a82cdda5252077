"""W3C trace context at the edge, and the seam that records spans.

Without `tracing:` in routes.yaml a client's `traceparent` and `tracestate` pass as sent and
the edge does nothing else (`Untraced`): tracing off costs nothing. With it, spans are
recorded and exported (proxy/observe/otel.py, wired by proxy/app.py): the edge request (a
child of the client's trace, or the root of one the edge starts, with the request id as an
attribute), each upstream attempt, the shadow and the comparison; upstreams get the edge
span's `traceparent`, so the trail continues in the services behind.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from multidict import CIMultiDictProxy

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
ZERO_TRACE, ZERO_SPAN = "0" * 32, "0" * 16


class SpanKind(StrEnum):
    SERVER = "server"  # the edge request
    CLIENT = "client"  # a request the proxy sends: an upstream attempt, a shadow
    INTERNAL = "internal"  # the proxy's own work: a comparison


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A position in a trace: the trace, the span a next hop is a child of, and whether it is sampled."""

    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16
    sampled: bool

    @property
    def traceparent(self) -> bytes:
        return b"00-%s-%s-%s" % (self.trace_id.encode(), self.span_id.encode(), b"01" if self.sampled else b"00")


def incoming(headers: CIMultiDictProxy[str]) -> TraceContext | None:
    """The client's trace context; None when it sent none or an invalid one (which the spec says to
    ignore: the edge then starts a new trace)."""
    value = headers.get("traceparent")
    if value is None:
        return None
    found = TRACEPARENT.fullmatch(value.strip())
    if found is None or found[1] == ZERO_TRACE or found[2] == ZERO_SPAN:
        return None
    return TraceContext(found[1], found[2], int(found[3], 16) & 1 == 1)


class Span(Protocol):
    """One span being recorded; `context` is what a request sent under it carries."""

    context: TraceContext

    def child(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Span: ...

    def set(self, attributes: dict[str, Any]) -> None: ...

    def fail(self, reason: str) -> None: ...

    def end(self) -> None: ...


class Tracer(Protocol):
    recording: bool  # whether spans are recorded (and the edge's own traceparent replaces the client's)

    def edge(self, parent: TraceContext | None, name: str, attributes: dict[str, Any]) -> Span: ...

    def close(self) -> None: ...


class Quiet:
    """A span that records nothing: tracing is off."""

    __slots__ = ("context",)

    def __init__(self, context: TraceContext) -> None:
        self.context = context

    def child(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Span:
        return self

    def set(self, attributes: dict[str, Any]) -> None:
        pass

    def fail(self, reason: str) -> None:
        pass

    def end(self) -> None:
        pass


class Untraced:
    """The tracer when routes.yaml has no `tracing:`."""

    recording = False

    def edge(self, parent: TraceContext | None, name: str, attributes: dict[str, Any]) -> Span:
        return NOTHING if parent is None else Quiet(parent)

    def close(self) -> None:
        pass


NOTHING = Quiet(TraceContext(ZERO_TRACE, ZERO_SPAN, False))
CURRENT: ContextVar[Span] = ContextVar("span", default=NOTHING)  # the request being served's edge span
