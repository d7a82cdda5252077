"""The edge server's own answers: a bug in a handler is a JSON 500 and one ERROR line, never a traceback."""

import logging

from aiohttp import web

from proxy.edge import EdgeServer
from proxy.logs import RequestIdFilter
from tests.helpers import json_body, raw_exchange, status_of


async def test_an_unexpected_exception_is_a_json_500_and_an_error_log(caplog):
    async def broken(request: web.BaseRequest) -> web.StreamResponse:
        raise RuntimeError("secret internals")

    caplog.handler.addFilter(RequestIdFilter())
    runner = web.ServerRunner(EdgeServer(broken))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        raw = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", timeout=2)
    finally:
        await runner.cleanup()
    assert status_of(raw) == 500
    body = json_body(raw)
    assert body == {"error": "internal_error", "detail": "the proxy failed to handle this request",
                    "request_id": body["request_id"]}
    assert f"X-Request-Id: {body['request_id']}".encode() in raw
    assert b"Traceback" not in raw and b"secret" not in raw
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["unexpected error while serving a request"]
    assert errors[0].exc_info[0] is RuntimeError
    assert errors[0].request_id == body["request_id"]
