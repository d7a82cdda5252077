"""Which headers cross the proxy, which it adds, and the request id rule."""

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.wire.headers import Repeated, client_lines, connection_tokens, content_length, request_id, upstream_head


def raw(*pairs: tuple[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    """Header lines as aiohttp's parser keeps them."""
    return tuple((name.encode(), value.encode()) for name, value in pairs)


def parsed(lines: bytes) -> CIMultiDict[str]:
    """A header block as its receiver reads it."""
    assert lines.endswith(b"\r\n") or not lines
    return CIMultiDict(line.decode().split(": ", 1) for line in lines.split(b"\r\n") if line)


def sent(*pairs: tuple[str, str], peer: str = "127.0.0.1") -> CIMultiDict[str]:
    """What an upstream receives for a request with these headers: Host first, then the rest."""
    return parsed(upstream_head(raw(*pairs), peer=peer, proto="http", rid="r1"))


def test_hop_by_hop_and_connection_listed_headers_do_not_go_upstream():
    got = sent(
        ("Host", "shop.example"), ("Connection", "keep-alive, X-Secret"), ("X-Secret", "s"),
        ("Keep-Alive", "timeout=5"), ("Proxy-Authorization", "Basic eA=="), ("TE", "trailers"),
        ("Transfer-Encoding", "chunked"), ("Content-Length", "3"), ("Expect", "100-continue"),
        ("Upgrade", "h2c"), ("Proxy-Connection", "keep-alive"), ("X_Forwarded_For", "6.6.6.6"),
        ("Accept", "application/json"), ("Cookie", "a=1"))
    assert {k.lower() for k in got} == {
        "host", "accept", "cookie", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via",
        "x-request-id"}


def test_a_name_listed_in_connection_is_dropped_whatever_its_case_and_wherever_it_comes():
    got = sent(("X-Secret", "s"), ("Host", "h"), ("connection", "X-SECRET ,x-other"), ("X-Other", "o"),
               ("Connection", "close"), ("Accept", "*/*"))
    assert "X-Secret" not in got and "X-Other" not in got and got["Accept"] == "*/*"


def test_forwarding_headers_extend_what_earlier_hops_said():
    got = sent(
        ("Host", "shop.example"), ("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.2"),
        ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.example"), ("Via", "1.1 cdn"),
        peer="192.0.2.7")
    assert got["X-Forwarded-For"] == "10.0.0.1, 10.0.0.2, 192.0.2.7"
    assert got["X-Forwarded-Proto"] == "http"  # set by the edge, never taken from the client
    assert got["X-Forwarded-Host"] == "shop.example"
    assert got["Via"] == "1.1 cdn, 1.1 strangler"
    assert got.getall("X-Forwarded-For") == ["10.0.0.1, 10.0.0.2, 192.0.2.7"]


def test_client_cannot_choose_internal_headers():
    got = sent(("Host", "h"), ("X-Strangler-Shadow", "1"), ("X-Request-Id", "r0"))
    assert "X-Strangler-Shadow" not in got
    assert got.getall("X-Request-Id") == ["r1"]


def test_host_goes_first_and_without_one_the_exchange_names_the_upstream():
    assert upstream_head(raw(("Accept", "*/*"), ("host", "h")), peer=None, proto="http", rid="r1").startswith(
        b"Host: h\r\nAccept: */*\r\n")
    head = upstream_head(raw(("Accept", "*/*")), peer="127.0.0.1", proto="http", rid="r1")
    assert b"Host" not in head


def test_values_cross_byte_for_byte():
    latin1 = ((b"Content-Disposition", b'attachment; filename="caf\xe9.txt"'),)
    assert b'filename="caf\xe9.txt"\r\n' in client_lines(latin1, rid="r1")


def test_response_keeps_duplicates_and_drops_hop_by_hop():
    got = parsed(client_lines(raw(
        ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Connection", "foo"), ("Foo", "bar"),
        ("Transfer-Encoding", "chunked"), ("Content-Length", "9"), ("Content-Type", "text/plain"),
        ("X-Request-Id", "from-upstream")), rid="r1"))
    assert got.getall("Set-Cookie") == ["a=1", "b=2"]
    assert {k.lower() for k in got} == {"set-cookie", "content-type", "via", "x-request-id"}
    assert got["X-Request-Id"] == "r1"


def test_connection_tokens_are_case_insensitive_and_split():
    assert connection_tokens([b"Keep-Alive, X-A", b" x-b ,"]) == {b"keep-alive", b"x-a", b"x-b"}


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_request_id_is_kept_when_sane_and_replaced_when_not():
    assert request_id(headers(("X-Request-Id", "abc-123"))) == "abc-123"
    fresh = request_id(headers(("X-Request-Id", "bad id with spaces")))
    assert fresh != "bad id with spaces" and len(fresh) == 32
    assert len(request_id(headers(("X-Request-Id", "x" * 500)))) == 32
    assert request_id(headers()) != request_id(headers())


@pytest.mark.parametrize(("pairs", "expected"), [((), None), ((("Content-Length", "0"),), 0),
                                                 ((("content-length", "12345"),), 12345)])
def test_content_length_is_a_number_or_none(pairs, expected):
    assert content_length(headers(*pairs)) == expected


def test_a_repeated_block_is_made_again_only_when_the_lines_change():
    made = []

    def make(lines: tuple, suffix: bytes) -> bytes:
        made.append(lines)
        return b"".join(name + b": " + value + b"\r\n" for name, value in lines) + suffix
    last = Repeated()
    first, changed = raw(("Host", "h"), ("Cookie", "a=1")), raw(("Host", "h"), ("Cookie", "a=2"))
    blocks = [last.made(lines, make, b"!") for lines in (first, first, tuple(first), changed, changed, first)]
    assert made == [first, changed, first]
    assert blocks == [make(lines, b"!") for lines in (first, first, first, changed, changed, first)]


def test_the_head_made_from_the_last_block_is_the_head_made_afresh():
    """Keep-alive clients send the same lines request after request: the cached block must not leak
    one request's lines into the next, nor the request id."""
    last, answers_last = Repeated(), Repeated()
    requests = [raw(("Host", "h"), ("Accept", "*/*")), raw(("Host", "h"), ("Accept", "*/*")),
                raw(("Host", "other"), ("X-Forwarded-For", "1.2.3.4")), raw(("Host", "h"), ("Accept", "*/*"))]
    for n, lines in enumerate(requests):
        rid = f"r{n}"
        assert upstream_head(lines, peer="10.0.0.1", proto="http", rid=rid, last=last) == \
            upstream_head(lines, peer="10.0.0.1", proto="http", rid=rid)
        assert client_lines(lines, rid=rid, last=answers_last) == client_lines(lines, rid=rid)
