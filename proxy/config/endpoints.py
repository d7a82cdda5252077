"""A route's `endpoints:` list -> EndpointTemplate values: the templates its report groups requests by,
each checked to be a plain path under the route's own, with `{name}` for a segment that varies."""

from __future__ import annotations

from proxy.config.fields import Section
from proxy.config.match import PATH_SEGMENT
from proxy.model import Match
from proxy.model.endpoints import PLACEHOLDER, EndpointTemplate, is_template_under

HINT = 'like "/api/orders/{id}/items": plain segments, and {name} for one that varies'


def read_endpoints(route: Section, match: Match | None) -> tuple[EndpointTemplate, ...]:
    """The templates, in the order written (the first that fits a request wins); a bad one is an error."""
    if not route.has("endpoints"):
        return ()
    found: list[EndpointTemplate] = []
    for index, text in enumerate(route.texts("endpoints")):
        problem = _problem(text)
        if problem is None and match is not None and not is_template_under(text, match.path):
            problem = f"is not under the route's path {match.path!r}, so no request of the route would reach it"
        if problem is None and text in (t.text for t in found):
            problem = "is written twice"
        if problem is not None:
            route.item_error("endpoints", index, f"endpoint {text!r} {problem} ({HINT})")
        else:
            found.append(EndpointTemplate.parse(text))
    return tuple(found)


def _problem(text: str) -> str | None:
    if not text.startswith("/"):
        return "must start with '/'"
    if "?" in text or "#" in text:
        return "is a path: it takes no query ('?') or fragment ('#')"
    segments = text[1:].split("/")
    inner = segments[:-1] if text.endswith("/") and text != "/" else segments
    if text != "/" and any(s in ("", ".", "..") for s in inner):
        return "may not hold '//', '.' or '..' segments"
    if not all(PLACEHOLDER.match(s) or PATH_SEGMENT.match(s) for s in segments):
        return "must be plain segments, written decoded (no '%', ';', spaces or '{' '}' but in a whole {name})"
    return None
