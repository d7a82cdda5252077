"""A divergence as the database keeps it: redacted, bodies decoded and capped, values as JSON."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any, Iterable

from proxy.model import Difference, Divergence, Observation
from proxy.model.codings import unpack
from reports.redact import Redactor

MAX_VALUE = 2000  # characters of one difference's value kept


def divergence_row(divergence: Divergence, redactor: Redactor, max_body: int) -> dict[str, Any]:
    request, legacy, new = divergence.request, divergence.legacy, divergence.new
    return {
        "id": uuid.uuid4().hex[:12], "signature": divergence.signature, "route": divergence.route,
        "at": request.at, "request_id": request.request_id, "method": request.method,
        "target": redactor.target(request.target), "served": divergence.served.value,
        "legacy_target": _sent(request.legacy_target, redactor), "new_target": _sent(request.new_target, redactor),
        "legacy_status": legacy.status, "new_status": new.status,
        "legacy_error": legacy.error, "new_error": new.error,
        "legacy_ms": round(legacy.seconds * 1000, 2), "new_ms": round(new.seconds * 1000, 2),
        "differences": _differences(divergence.differences, redactor),
        "noise": _differences(divergence.noise, redactor),
        "request_headers": json.dumps(redactor.headers(request.headers)),
        "legacy_headers": json.dumps(redactor.headers(legacy.headers)),
        "new_headers": json.dumps(redactor.headers(new.headers)),
        "request_body": body_text(request.body, _type(request.headers), None, redactor, max_body),
        "legacy_body": _answer_body(legacy, redactor, max_body),
        "new_body": _answer_body(new, redactor, max_body),
    }


def _sent(target: str | None, redactor: Redactor) -> str | None:
    """What a side was sent, when a rewrite made it other than the client's target."""
    return None if target is None else redactor.target(target)


def _differences(differences: Iterable[Difference], redactor: Redactor) -> str:
    return json.dumps([{"path": d.path, "kind": d.kind, "legacy": _capped(redactor.at_path(d.path, d.legacy)),
                        "new": _capped(redactor.at_path(d.path, d.new))} for d in differences], ensure_ascii=False)


def _capped(value: Any) -> Any:
    text = json.dumps(value, ensure_ascii=False)
    return value if len(text) <= MAX_VALUE else text[:MAX_VALUE] + "…"


def _answer_body(observation: Observation, redactor: Redactor, max_body: int) -> str | None:
    return body_text(observation.body, observation.header("content-type"), observation.header("content-encoding"),
                     redactor, max_body)


def body_text(body: bytes | None, content_type: str | None, encoding: str | None, redactor: Redactor,
              max_body: int) -> str | None:
    """The body to show: decompressed, redacted, as text (binary: described), at most `max_body` bytes."""
    if body is None:
        return None
    plain = redactor.body(unpack(body, encoding), content_type)
    text = _text(plain)
    if text is None:
        return f"[{len(plain)} bytes of binary content, sha256 {hashlib.sha256(plain).hexdigest()[:16]}]"
    if len(plain) <= max_body:
        return text
    return plain[:max_body].decode("utf-8", "ignore") + f"\n[… truncated: {len(plain)} bytes in all]"


def _text(plain: bytes) -> str | None:
    """`plain` as text; None when it is not UTF-8 or holds a NUL (no text does: PostgreSQL's TEXT refuses it)."""
    try:
        text = plain.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\0" in text else text


def _type(headers: Iterable[tuple[str, str]]) -> str | None:
    return next((v for k, v in headers if k.lower() == "content-type"), None)
