"""Spans recorded with the OpenTelemetry SDK and exported as OTLP over HTTP (routes.yaml's `tracing:`).

Imported only when tracing is configured (proxy/app.py), so a proxy without it never loads the
SDK. The sampler is the SDK's parent-based ratio: a client's sampled flag is followed, and a
trace the edge starts is sampled at `tracing.sample`. Spans leave in batches from the SDK's
own thread; an unreachable collector costs dropped spans, never a request.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from proxy.model import TracingSpec
from proxy.observe.tracing import Span, SpanKind, TraceContext

KINDS = {SpanKind.SERVER: trace.SpanKind.SERVER, SpanKind.CLIENT: trace.SpanKind.CLIENT,
         SpanKind.INTERNAL: trace.SpanKind.INTERNAL}
EXPORT_TIMEOUT = 5.0  # seconds a batch may take to reach the collector


class OtelTracer:
    recording = True

    def __init__(self, spec: TracingSpec, version: str) -> None:
        resource = Resource.create({"service.name": spec.service_name, "service.version": version})
        self.provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(spec.sample)))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(spec.endpoint, timeout=EXPORT_TIMEOUT),
                                                            schedule_delay_millis=1000))
        self.tracer = self.provider.get_tracer("strangler", version)
        # the exporter's own failures (a collector down) are its to count, not a line per batch
        logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter").setLevel(logging.CRITICAL)

    def edge(self, parent: TraceContext | None, name: str, attributes: dict[str, Any]) -> Span:
        context = None
        if parent is not None:
            remote = SpanContext(int(parent.trace_id, 16), int(parent.span_id, 16), is_remote=True,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED if parent.sampled else TraceFlags.DEFAULT))
            context = trace.set_span_in_context(NonRecordingSpan(remote))
        return Recorded(self.tracer, self.tracer.start_span(name, context, KINDS[SpanKind.SERVER], attributes))

    def close(self) -> None:
        """Send what is left, then stop (bounded by the export timeout)."""
        self.provider.shutdown()


class Recorded:
    __slots__ = ("tracer", "span", "context")

    def __init__(self, tracer: trace.Tracer, span: trace.Span) -> None:
        self.tracer, self.span = tracer, span
        found = span.get_span_context()
        self.context = TraceContext(f"{found.trace_id:032x}", f"{found.span_id:016x}", found.trace_flags.sampled)

    def child(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Span:
        context = trace.set_span_in_context(self.span)
        return Recorded(self.tracer, self.tracer.start_span(name, context, KINDS[kind], attributes))

    def set(self, attributes: dict[str, Any]) -> None:
        self.span.set_attributes(attributes)

    def fail(self, reason: str) -> None:
        self.span.set_status(Status(StatusCode.ERROR, reason))

    def end(self) -> None:
        self.span.end()
