"""Trace context through the edge, and spans exported as OTLP over HTTP to a receiver inside the test that
decodes what it gets (OpenTelemetry's own protobuf messages)."""

import asyncio

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as WireSpan

from proxy import config
from proxy.model.errors import ConfigError
from tests.helpers import ProxyProcess, eventually, free_port, route, routes_yaml

CLIENT_TRACE, CLIENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
CLIENT_PARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


class Receiver:
    """An OTLP/HTTP traces endpoint: every span it was sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[WireSpan] = []

    async def handle(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.spans += [span for resource in message.resource_spans for scope in resource.scope_spans
                       for span in scope.spans]
        return web.Response(body=b"", content_type="application/x-protobuf")


@pytest.fixture
async def receiver(aiohttp_server):
    found = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", found.handle)
    server = await aiohttp_server(app)
    return found, f"http://127.0.0.1:{server.port}/v1/traces"


def proxy_file(tmp_path, upstreams, **top):
    path = tmp_path / "routes.yaml"
    path.write_text(routes_yaml(upstreams, [route("items", "/items", new="new", parallel_run={"enabled": True}),
                                            route("all")],
                                listen=f"127.0.0.1:{free_port()}", admin={"listen": f"127.0.0.1:{free_port()}"},
                                reports={"database": str(tmp_path / "d.db")}, **top))
    return path


async def served(proxy: ProxyProcess, path: str, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{proxy.port}{path}", headers=headers) as response:
            assert response.status == 200


async def test_spans_cover_the_edge_its_attempt_the_shadow_and_the_comparison(make_upstream, receiver, tmp_path):
    spans, endpoint = receiver
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    path = proxy_file(tmp_path, {"legacy": legacy.url, "new": new.url}, tracing={"endpoint": endpoint})
    proxy = await asyncio.to_thread(ProxyProcess, path)
    try:
        await served(proxy, "/items/1", {"traceparent": CLIENT_PARENT, "tracestate": "vendor=1"})
        await eventually(lambda: len(new.seen) == 1, timeout=10)  # the shadow left
    finally:
        await asyncio.to_thread(proxy.stop)  # the last batch leaves at shutdown
    await eventually(lambda: len(spans.spans) >= 4, timeout=10, what=lambda: [s.name for s in spans.spans])
    by_name = {span.name: span for span in spans.spans}
    edge, attempt = by_name["GET"], by_name["upstream legacy"]
    shadow, compare = by_name["shadow new"], by_name["compare"]
    assert {span.trace_id.hex() for span in spans.spans} == {CLIENT_TRACE}  # the client's trace, continued
    assert edge.parent_span_id.hex() == CLIENT_SPAN and edge.kind == WireSpan.SPAN_KIND_SERVER
    assert attempt.parent_span_id == edge.span_id and attempt.kind == WireSpan.SPAN_KIND_CLIENT
    assert shadow.parent_span_id == edge.span_id and compare.parent_span_id == shadow.span_id
    attributes = {a.key: a.value for a in edge.attributes}
    assert attributes["http.route"].string_value == "items"
    assert attributes["http.response.status_code"].int_value == 200
    # the upstream continues the trace under the edge's span; tracestate passes as sent
    seen = legacy.seen[0]
    assert seen.header("traceparent") == f"00-{CLIENT_TRACE}-{edge.span_id.hex()}-01"
    assert seen.header("tracestate") == "vendor=1"
    assert [line for line in proxy.log_lines() if line.get("request_id")][0]["trace_id"] == CLIENT_TRACE


async def test_a_trace_the_edge_starts_is_recorded_at_the_sample_ratio(make_upstream, receiver, tmp_path):
    spans, endpoint = receiver
    legacy = await make_upstream("legacy")
    path = proxy_file(tmp_path, {"legacy": legacy.url, "new": legacy.url}, tracing={"endpoint": endpoint,
                                                                                    "sample": 0.0})
    proxy = await asyncio.to_thread(ProxyProcess, path)
    try:
        await served(proxy, "/x", {"X-Request-Id": "started"})
        await served(proxy, "/x", {"traceparent": CLIENT_PARENT})  # sampled by its client: followed
        await served(proxy, "/x", {"traceparent": "00-zz-bad-01", "X-Request-Id": "invalid"})
    finally:
        await asyncio.to_thread(proxy.stop)
    await eventually(lambda: spans.spans, timeout=10)
    assert {span.trace_id.hex() for span in spans.spans} == {CLIENT_TRACE}
    started, _, invalid = (seen.header("traceparent") for seen in legacy.seen)
    lines = {line["request_id"]: line for line in proxy.log_lines() if line["logger"] == "strangler.access"}
    # a trace all the same, not sampled, its id on the access line beside the request id
    assert started == f"00-{lines['started']['trace_id']}-{started[36:52]}-00"
    # an invalid traceparent is ignored (W3C): the edge starts a trace, and its own replaces the client's
    assert invalid.endswith("-00") and invalid[3:35] == lines["invalid"]["trace_id"]
    assert [k for k, _ in legacy.seen[2].headers if k.lower() == "traceparent"] == ["traceparent"]


async def test_without_tracing_trace_context_passes_as_sent_and_nothing_is_added(make_upstream, tmp_path):
    legacy = await make_upstream("legacy")
    path = proxy_file(tmp_path, {"legacy": legacy.url, "new": legacy.url})
    proxy = await asyncio.to_thread(ProxyProcess, path)
    try:
        await served(proxy, "/x", {"traceparent": CLIENT_PARENT, "tracestate": "vendor=1"})
        await served(proxy, "/x", {"traceparent": "00-zz-bad-01"})
        await served(proxy, "/x", {})
    finally:
        await asyncio.to_thread(proxy.stop)
    given, invalid, none = legacy.seen
    assert (given.header("traceparent"), given.header("tracestate")) == (CLIENT_PARENT, "vendor=1")
    assert invalid.header("traceparent") == "00-zz-bad-01"  # not ours to judge when we do not trace
    assert none.header("traceparent") is None  # tracing off costs nothing, as Envoy without a tracer


def test_a_wrong_tracing_block_is_a_line_and_a_hint(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text("version: 1\nupstreams: {legacy: {url: 'http://127.0.0.1:9001'}}\n"
                    "tracing: {endpoint: 'collector:4318', sample: 2}\n"
                    "routes: [{name: all, match: {path: /}, legacy: legacy}]\n")
    with pytest.raises(ConfigError) as raised:
        config.load(path)
    text = str(raised.value)
    assert f"{path}:3: tracing: 'endpoint' is the collector's OTLP/HTTP traces URL" in text
    assert "sample" in text
