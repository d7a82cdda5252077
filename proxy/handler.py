"""The edge: each client request is checked, routed, forwarded, measured and logged here."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from aiohttp import StreamReader, web
from aiohttp.http import HttpVersion10, HttpVersion11
from multidict import CIMultiDict

from proxy.experiment import Experiments
from proxy.forward import FROM_CLIENT, continue_if_expected, forward
from proxy.headers import request_id, upstream_headers
from proxy.live import Generation, LiveConfig
from proxy.logs import REQUEST_ID
from proxy.metrics import Metrics
from proxy.model import Decision, RequestFacts, RequestRecord
from proxy.responses import error_response
from proxy.routing import decide, match_route
from proxy.target import Refusal, parse_target
from proxy.toggling import VerdictLog
from proxy.upstream import Failure

log = logging.getLogger("strangler.access")


@dataclass(frozen=True, slots=True)
class Served:
    """What became of one request, for the access log and the metrics."""

    response: web.StreamResponse
    route: str = ""
    upstream: str = ""
    failure: Failure | None = None


class EdgeHandler:
    """The request handler of the edge listener (an aiohttp low-level server handler)."""

    def __init__(self, live: LiveConfig, metrics: Metrics, experiments: Experiments) -> None:
        self.live = live
        self.metrics = metrics
        self.experiments = experiments
        self.verdicts = VerdictLog()

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        rid = request_id(request.headers)
        REQUEST_ID.set(rid)  # this handler runs in a task of its own: no reset needed
        started = time.monotonic()
        try:
            served = await self._serve(request, rid)
        except asyncio.CancelledError:
            log.info("client went away", extra=_fields(request, 499, started))
            raise
        self._record(request, served, started)
        return served.response

    async def _serve(self, request: web.BaseRequest, rid: str) -> Served:
        refusal = _refusal(request)
        target = parse_target(request.raw_path) if refusal is None else refusal
        if isinstance(target, Refusal):
            self.metrics.rejected.labels("bad_request").inc()
            refused = error_response(400, "bad_request", target.detail, rid)
            refused.force_close()  # what follows on this connection cannot be trusted either
            return Served(refused)
        generation = self.live.current
        route = match_route(generation.config.routes, request.method, target.path, request.headers)
        if route is None:
            return Served(error_response(404, "no_route", f"no route matches {request.method} {target.path}", rid))
        facts = RequestFacts(request.method, target.path, request.headers, request.remote)
        decision = decide(route, facts, generation.toggles)
        if decision.toggle is not None:
            self._count_verdict(decision)
        pool = generation.pools[decision.upstream.name]
        headers = upstream_headers(request.headers, peer=request.remote, proto=request.scheme, rid=rid)
        shadow, body = None, FROM_CLIENT
        if decision.shadow is not None and self.experiments.sampled(decision, facts, generation.toggles):
            shadow, body = await self._start_shadow(request, decision, target.raw, headers, rid, generation)
        try:
            outcome = await forward(request, pool, target.raw, headers, rid, body, shadow and shadow.capture)
        except BaseException:
            if shadow is not None:
                shadow.deliver(None)  # no answer to compare: the client left, or worse
            raise
        if shadow is not None:
            shadow.deliver(shadow.capture.observation(decision.side))
        return Served(outcome.response, route.name, decision.upstream.name, outcome.failure)

    async def _start_shadow(self, request: web.BaseRequest, decision: Decision, target: str,
                            headers: CIMultiDict[str], rid: str, generation: Generation) -> tuple[Any, Any]:
        """Read the request body once (both sides get the same bytes), then start the shadow."""
        route, limit, body = decision.route, decision.route.parallel_run.max_body, None
        if request.body_exists:
            if (request.content_length or 0) > limit:
                return self.experiments.skip(route, "request_too_large"), FROM_CLIENT
            await continue_if_expected(request)
            body, rest = await _read_up_to(request.content, limit)
            if rest is not None:  # a chunked body over the cap: serve it, do not compare it
                return self.experiments.skip(route, "request_too_large"), rest
        record = RequestRecord(rid, request.method, target, tuple(request.headers.items()), body, time.time())
        return self.experiments.begin(decision, record, headers, body, generation.shadow_pools), body

    def _count_verdict(self, decision: Decision) -> None:
        check = decision.toggle
        assert check is not None
        self.metrics.toggle_verdicts.labels(decision.route.name, check.name, check.verdict).inc()
        self.verdicts.note(decision.route.name, check.name, check.verdict)

    def _record(self, request: web.BaseRequest, served: Served, started: float) -> None:
        status = served.response.status
        elapsed = time.monotonic() - started
        self.metrics.observe(served.route, served.upstream, request.method, status, elapsed)
        fields = _fields(request, status, started, route=served.route, upstream=served.upstream)
        if served.failure is None:
            log.info("request", extra=fields)
            return
        self.metrics.upstream_errors.labels(served.upstream, served.failure.kind).inc()
        fields.update(failure=served.failure.kind, detail=served.failure.detail)
        log.warning("upstream failed", extra=fields)


async def _read_up_to(content: StreamReader, limit: int) -> tuple[bytes, AsyncIterator[bytes] | None]:
    """The whole body if it is at most `limit` bytes; else what was read and the rest, as one stream."""
    chunks, size = [], 0
    while chunk := await content.readany():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"", _chain(chunks, content)
    return b"".join(chunks), None


async def _chain(first: list[bytes], rest: StreamReader) -> AsyncIterator[bytes]:
    for chunk in first:
        yield chunk
    async for chunk in rest.iter_any():
        yield chunk


def _refusal(request: web.BaseRequest) -> Refusal | None:
    """Request-level checks aiohttp's parser leaves to us (reliability.md HTTP-18)."""
    if request.version not in (HttpVersion10, HttpVersion11):
        return Refusal(f"HTTP/{request.version.major}.{request.version.minor} is not supported")
    if request.version == HttpVersion10 and "Transfer-Encoding" in request.headers:
        return Refusal("Transfer-Encoding is not allowed in an HTTP/1.0 request")
    if request.version == HttpVersion11 and "Host" not in request.headers:
        return Refusal("an HTTP/1.1 request needs a Host header")
    return None


def _fields(request: web.BaseRequest, status: int, started: float, **more: str) -> dict:
    return {"method": request.method, "path": request.raw_path.partition("?")[0], "status": status,
            "ms": round((time.monotonic() - started) * 1000, 2), "client": request.remote, **more}
