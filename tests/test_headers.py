"""Which headers cross the proxy, which it adds, and the request id rule."""

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.headers import client_headers, connection_tokens, request_id, upstream_headers


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_hop_by_hop_and_connection_listed_headers_do_not_go_upstream():
    sent = upstream_headers(headers(
        ("Host", "shop.example"), ("Connection", "keep-alive, X-Secret"), ("X-Secret", "s"),
        ("Keep-Alive", "timeout=5"), ("Proxy-Authorization", "Basic eA=="), ("TE", "trailers"),
        ("Transfer-Encoding", "chunked"), ("Content-Length", "3"), ("Expect", "100-continue"),
        ("Upgrade", "h2c"), ("Proxy-Connection", "keep-alive"), ("X_Forwarded_For", "6.6.6.6"),
        ("Accept", "application/json"), ("Cookie", "a=1")), peer="127.0.0.1", proto="http", rid="r1")
    assert {k.lower() for k in sent} == {
        "host", "accept", "cookie", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via",
        "x-request-id"}


def test_forwarding_headers_extend_what_earlier_hops_said():
    sent = upstream_headers(headers(
        ("Host", "shop.example"), ("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.2"),
        ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.example"), ("Via", "1.1 cdn")),
        peer="192.0.2.7", proto="http", rid="r1")
    assert sent["X-Forwarded-For"] == "10.0.0.1, 10.0.0.2, 192.0.2.7"
    assert sent["X-Forwarded-Proto"] == "http"  # set by the edge, never taken from the client
    assert sent["X-Forwarded-Host"] == "shop.example"
    assert sent["Via"] == "1.1 cdn, 1.1 strangler"
    assert sent.getall("X-Forwarded-For") == ["10.0.0.1, 10.0.0.2, 192.0.2.7"]


def test_client_cannot_choose_internal_headers():
    sent = upstream_headers(headers(("Host", "h"), ("X-Strangler-Shadow", "1"), ("X-Request-Id", "r0")),
                            peer="127.0.0.1", proto="http", rid="r1")
    assert "X-Strangler-Shadow" not in sent
    assert sent.getall("X-Request-Id") == ["r1"]


def test_response_keeps_duplicates_and_drops_hop_by_hop():
    got = client_headers(headers(
        ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Connection", "foo"), ("Foo", "bar"),
        ("Transfer-Encoding", "chunked"), ("Content-Length", "9"), ("Content-Type", "text/plain"),
        ("X-Request-Id", "from-upstream")), rid="r1")
    assert got.getall("Set-Cookie") == ["a=1", "b=2"]
    assert {k.lower() for k in got} == {"set-cookie", "content-type", "via", "x-request-id"}
    assert got["X-Request-Id"] == "r1"


def test_connection_tokens_are_case_insensitive_and_split():
    assert connection_tokens(headers(("Connection", "Keep-Alive, X-A"), ("connection", " x-b ,"))) == {
        "keep-alive", "x-a", "x-b"}


def test_request_id_is_kept_when_sane_and_replaced_when_not():
    assert request_id(headers(("X-Request-Id", "abc-123"))) == "abc-123"
    fresh = request_id(headers(("X-Request-Id", "bad id with spaces")))
    assert fresh != "bad id with spaces" and len(fresh) == 32
    assert len(request_id(headers(("X-Request-Id", "x" * 500)))) == 32
    assert request_id(headers()) != request_id(headers())
