"""One exchange with an upstream: the client's request goes up, the answer streams back.

Both bodies stream with back-pressure; neither is held whole. A failure before the
answer's headers becomes a JSON 502/503/504; after them, the client connection is cut
so the client sees a truncated response, never a complete-looking wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http import HttpVersion11
from multidict import CIMultiDict

from proxy.experiment import Capture
from proxy.headers import client_headers
from proxy.responses import RelayedResponse, error_response
from proxy.upstream import UPSTREAM_ERRORS, Failure, UpstreamPool

FROM_CLIENT = object()  # forward's default body: stream the client's own, as it arrives


@dataclass(frozen=True, slots=True)
class Outcome:
    response: web.StreamResponse
    failure: Failure | None = None


async def forward(request: web.BaseRequest, pool: UpstreamPool, target: str, headers: CIMultiDict[str],
                  rid: str, body: Any = FROM_CLIENT, capture: Capture | None = None) -> Outcome:
    """Send `request` to `pool`'s upstream at `target` and relay the answer to the client.

    `body` is the client's, streamed (the default), or bytes already read for a parallel
    run; `capture` keeps a copy of the answer for comparison as it streams past."""
    body = await _body(request, headers, body)
    response = None
    try:
        async with pool.request(request.method, target, headers, body) as upstream:
            response = _response_for(upstream, rid, capture)
            await response.prepare(request)
            failure = await _relay_body(upstream, response, pool, capture)
    except UPSTREAM_ERRORS as exc:
        if response is not None and response.prepared:
            raise  # writing to the client failed: it went away, nothing to answer
        failure = pool.failure_from(exc)
        if capture is not None:
            capture.error = failure.kind
        return Outcome(error_response(failure.status, f"upstream_{failure.kind}", failure.detail, rid,
                                      retry_after=1 if failure.status == 503 else None), failure)
    if failure is not None:
        request.protocol.force_close()
        return Outcome(response, failure)
    await response.write_eof()
    return Outcome(response)


async def _body(request: web.BaseRequest, headers: CIMultiDict[str], body: Any) -> Any:
    if body is FROM_CLIENT:
        if not request.body_exists:
            return None
        await continue_if_expected(request)
        body = request.content
    elif isinstance(body, bytes):
        headers["Content-Length"] = str(len(body))
        return body
    if body is not None and request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    return body


async def continue_if_expected(request: web.BaseRequest) -> None:
    """Answer `Expect: 100-continue` here, as nginx and Envoy do; the header is not forwarded."""
    if request.version == HttpVersion11 and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the real response has not started yet


def _response_for(upstream: aiohttp.ClientResponse, rid: str, capture: Capture | None) -> RelayedResponse:
    response = RelayedResponse(status=upstream.status, reason=upstream.reason or None,
                               headers=client_headers(upstream.headers, rid=rid))
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    if capture is not None:
        capture.status, capture.headers = upstream.status, tuple(upstream.headers.items())
    return response


async def _relay_body(upstream: aiohttp.ClientResponse, response: web.StreamResponse,
                      pool: UpstreamPool, capture: Capture | None) -> Failure | None:
    content = upstream.content
    while True:
        try:
            chunk = await content.readany()
        except UPSTREAM_ERRORS as exc:
            failure = pool.failure_from(exc)
            if capture is not None:
                capture.error = failure.kind
            return failure
        if not chunk:
            return None
        if capture is not None:
            capture.add(chunk)
        await response.write(chunk)  # the client's errors are the client's: they propagate
