"""Bodies lifted for comparison: decompressed, then parsed as JSON, decoded as text, or kept as bytes.

Compressed answers are compared by their content, never by their bytes (one side may
gzip and the other not).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from proxy.model import Observation
from proxy.model.codings import unpack

TEXT_TYPES = ("text/", "application/xml", "application/javascript", "application/x-www-form-urlencoded")


@dataclass(frozen=True, slots=True)
class Lifted:
    kind: str  # json | text | bytes
    value: Any
    booleans: bool = True  # JSON that may hold true/false (then True == 1 must not pass for equal)


def lift(observation: Observation) -> Lifted:
    body = unpack(observation.body or b"", observation.header("content-encoding"))
    media = (observation.header("content-type") or "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            return Lifted("json", json.loads(body), b"true" in body or b"false" in body)
        except ValueError:
            pass
    if not media or media.startswith(TEXT_TYPES) or media.endswith(("+xml", "/json")):
        try:
            return Lifted("text", body.decode(_charset(observation) or "utf-8"))
        except (UnicodeDecodeError, LookupError):
            pass
    return Lifted("bytes", body)


def _charset(observation: Observation) -> str | None:
    for param in (observation.header("content-type") or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"')
    return None
