"""The request target: what routing matches on, what the upstream gets, and what is refused.

The upstream receives the path and query byte for byte. Routing matches the same path
with only meaning-preserving changes (percent-encoded unreserved characters decoded,
`;parameters` dropped as servlet containers do). Anything an upstream might read as a
different path (dot segments, encoded slashes, empty segments) is refused, not guessed.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Encoded '/', '\' and control characters would make one path read as another upstream.
AMBIGUOUS_ESCAPE = re.compile(r"%(?:2[Ff]|5[Cc]|[01][0-9A-Fa-f]|7[Ff])")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the edge answers itself, and closes the connection after."""

    detail: str
    status: int = 400
    code: str = "bad_request"


def parse_target(raw: str) -> str | Refusal:
    """Check an origin-form request target (what the upstream is sent, as it is) and derive the path
    that routing sees."""
    if not raw.startswith("/"):
        return Refusal("only origin-form request targets (a path) are accepted")
    if "#" in raw:
        return Refusal("a fragment (#) does not belong in a request target")
    path = raw.partition("?")[0]
    if "%" not in path and ";" not in path and "\\" not in path and "/." not in path and "//" not in path:
        return path  # the common case: nothing to decode or doubt
    return _checked(path)


def _checked(path: str) -> str | Refusal:
    if "\\" in path:
        return Refusal("a backslash in the path is ambiguous")
    if BAD_PERCENT.search(path):
        return Refusal("a '%' in the path must start a %XX escape")
    if AMBIGUOUS_ESCAPE.search(path):
        return Refusal("an encoded slash, backslash or control character in the path is ambiguous")
    segments = [s.partition(";")[0] for s in PERCENT.sub(_decode_unreserved, path).split("/")[1:]]
    if any(s in (".", "..") for s in segments):
        return Refusal("dot segments (. or ..) in the path are ambiguous")
    if any(not s for s in segments[:-1]):
        return Refusal("empty segments (//) in the path are ambiguous")
    return "/" + "/".join(segments)


def _decode_unreserved(m: re.Match[str]) -> str:
    char = chr(int(m[1], 16))
    return char if char in UNRESERVED else m[0]
