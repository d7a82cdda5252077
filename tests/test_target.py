"""The request target: the path routing sees, and the targets refused as ambiguous."""

import pytest

from proxy.wire.target import Refusal, parse_target


@pytest.mark.parametrize("raw, path", [
    ("/", "/"),
    ("/api/orders/7?x=%2F&y=a+b", "/api/orders/7"),
    ("/api/%6Frders", "/api/orders"),          # encoded unreserved: the same path to any upstream
    ("/api/orders;jsessionid=1/7", "/api/orders/7"),  # servlet path parameters
    ("/api/orders/", "/api/orders/"),
    ("/static/app.min.js", "/static/app.min.js"),
    ("/a/.well-known/x", "/a/.well-known/x"),
    ("/files/caf%C3%A9", "/files/caf%C3%A9"),     # reserved and non-ASCII escapes stay encoded
    ("/q?next=/a/../b", "/q"),                    # the query is never routed on
])
def test_routed_path_is_the_forwarded_path_made_plain(raw, path):
    assert parse_target(raw) == path


@pytest.mark.parametrize("raw", [
    "http://evil.example/x", "evil.example:443", "*",
    "/a#frag",
    "/api/../admin", "/api/./x", "/api/%2e%2e/admin", "/api/%2E%2e/admin", "/api/.%2e/admin",
    "/api/..;/admin", "/..",
    "/api%2Fadmin", "/api/%2fadmin", "/api/%5cadmin", "/api/..\\admin",
    "/api/x%00", "/api/x%0a", "/api/x%7F",
    "//admin", "/api//admin",
    "/api/%zz", "/api/%",
])
def test_ambiguous_targets_are_refused(raw):
    assert isinstance(parse_target(raw), Refusal)
