"""A route that an earlier one covers is warned about as unreachable, naming the first such route: held only
against the routes at its path's prefixes, the answer is that of holding it against every earlier route."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config import parse

SEGMENTS = st.sampled_from(["api", "orders", "7", "v2"])
MATCHES = st.fixed_dictionaries({"path": st.lists(SEGMENTS, max_size=3).map(lambda s: "/" + "/".join(s))}, optional={
    "methods": st.sampled_from([["GET"], ["GET", "POST"], ["POST"]]),
    "headers": st.sampled_from([{"X-Beta": "1"}, {"X-Beta": "2"}, {"X-Beta": "1", "X-Team": "a"}]),
    "host": st.sampled_from(["shop.example.com", "*.example.com", "a.shop.example.com"]),
})


@settings(max_examples=300, deadline=None)
@given(st.lists(MATCHES, min_size=1, max_size=12))
def test_each_unreachable_route_names_the_first_earlier_route_that_covers_it(matches):
    routes = [{"name": f"r{n}", "match": match, "legacy": "monolith"} for n, match in enumerate(matches)]
    config = parse(json.dumps({"version": 1, "listen": "127.0.0.1:8080",
                               "upstreams": {"monolith": {"url": "http://127.0.0.1:9001"}},
                               "routes": routes}).encode(), "routes.yaml")
    loaded = config.routes
    expected = []
    for n, route in enumerate(loaded):
        earlier = next((e for e in loaded[:n] if e.match.covers(route.match)), None)
        if earlier is not None:
            expected.append(f"route '{route.name}' is unreachable: route '{earlier.name}'")
    warned = [w.message.split(" (line")[0] for w in config.warnings if "unreachable" in w.message]
    assert warned == expected
