"""Responses the proxy writes itself: its JSON errors. (Upstreams' answers are relayed by proxy.relayed.)"""

from __future__ import annotations

import json

from proxy.relayed import WholeAnswer


def error_response(status: int, code: str, detail: str, rid: str,
                   retry_after: int | None = None) -> WholeAnswer:
    """`{"error": CODE, "detail": TEXT, "request_id": ID}`, as the contract has it."""
    body = json.dumps({"error": code, "detail": detail, "request_id": rid}).encode()
    lines = b"Content-Type: application/json\r\nX-Request-Id: %s\r\nCache-Control: no-store\r\n" % rid.encode()
    if retry_after is not None:
        lines += b"Retry-After: %d\r\n" % retry_after
    return WholeAnswer(status, "", lines, False, body, len(body))
