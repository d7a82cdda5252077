"""Routes indexed by their path's segments, so a request tries only the routes whose path is a prefix of its
own, however many routes the file has.

First-match semantics stay exactly those of the scan in file order (proxy.routing.decide's
match_route, which tests/test_route_index.py checks this against): a route's `match.path` is a
segment prefix of the request's path exactly when the route sits at a node of the segment trie
that the request's path walks through, so the routes at the nodes walked, tried in file order,
are the scan's candidates, and the first of them that takes the request is the scan's answer.
"""

from __future__ import annotations

from heapq import merge
from typing import Mapping

from proxy.model import Route
from proxy.model.hosts import host_matches, request_host


class _Node:
    __slots__ = ("children", "routes")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.routes: list[tuple[int, Route]] = []  # (place in the file, route): in file order


class RouteIndex:
    """A configuration's routes, for matching requests."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.root = _Node()
        for place, route in enumerate(routes):
            node = self.root
            for segment in _segments(route.match.path):
                node = node.children.setdefault(segment, _Node())
            node.routes.append((place, route))

    def match(self, method: str, path: str, headers: Mapping[str, str]) -> Route | None:
        """The first route in file order whose match takes this request, or None."""
        node = self.root
        found = [node.routes] if node.routes else []
        start = 1
        while node.children:  # a segment at a time, and no further than the routes go
            end = path.find("/", start)
            node = node.children.get(path[start:] if end < 0 else path[start:end])  # type: ignore[assignment]
            if node is None:
                break
            if node.routes:
                found.append(node.routes)
            if end < 0:
                break
            start = end + 1
        candidates = found[0] if len(found) == 1 else merge(*found) if found else ()
        host, read = None, False
        for _, route in candidates:
            match = route.match
            if match.matches_but_host(method, path, headers):
                if match.host is None:
                    return route
                if not read:  # the Host header is read (and normalised) only for a host route
                    host, read = request_host(headers.get("Host")), True
                if host_matches(match.host, host):
                    return route
        return None


def _segments(path: str) -> list[str]:
    """`/api/orders/7` -> ['api', 'orders', '7']; `/` -> []."""
    return path.split("/")[1:] if path != "/" else []
