"""Endpoint templates: what groups a route's requests into endpoints, as a reviewer reads them.

A path segment that is an id (all digits, a UUID, or HEX_ID_LENGTH or more hex digits, judged
percent-decoded) becomes `{id}`; the rest stay as the client wrote them, and the query is left
out. A route may name its own templates (`/api/orders/{id}/items`), tried in order before
that rule: a `{name}` stands for any one non-empty segment. A trailing slash is part of the
path (`/api/orders/` is not `/api/orders`: many servers answer the two differently).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

ID = "{id}"
OTHER = "{other}"  # where a route's endpoints beyond the bound of one process are counted
HEX_ID_LENGTH = 16  # 64-bit ids, ObjectIds (24), SHA-1s (40); shorter hex is as often a word ("cafe", "beef")
PLACEHOLDER = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$")
_ID = re.compile(r"^(?:[0-9]+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|"
                 rf"[0-9a-fA-F]{{{HEX_ID_LENGTH},}})$")


@dataclass(frozen=True, slots=True)
class EndpointTemplate:
    """One template a route names: its text as written, and its segments (None: a placeholder)."""

    text: str
    segments: tuple[str | None, ...]

    @classmethod
    def parse(cls, text: str) -> EndpointTemplate:
        return cls(text, tuple(None if PLACEHOLDER.match(s) else s for s in text[1:].split("/")))

    def matches(self, segments: list[str]) -> bool:
        """`segments`: a path's, percent-decoded."""
        if len(segments) != len(self.segments):
            return False
        return all(s == want if want is not None else s != "" for s, want in zip(segments, self.segments, strict=True))


def is_template_under(text: str, prefix: str) -> bool:
    """Whether every path a template fits starts with the route's prefix, segment by segment."""
    if prefix == "/":
        return True
    wanted, written = prefix[1:].split("/"), text[1:].split("/")
    return len(written) >= len(wanted) and all(w == p for w, p in zip(written[:len(wanted)], wanted, strict=True))


def endpoint(target: str, templates: tuple[EndpointTemplate, ...] = ()) -> str:
    """The endpoint a request target (path and query, as sent) belongs to."""
    path = target.split("?", 1)[0].split("#", 1)[0] or "/"
    raw = path[1:].split("/") if path.startswith("/") else path.split("/")
    decoded = [unquote(s) for s in raw]
    for template in templates:
        if template.matches(decoded):
            return template.text
    return "/" + "/".join(ID if _ID.match(plain) else written for written, plain in zip(raw, decoded, strict=True))
