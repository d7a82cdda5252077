"""What crosses the proxy, byte for byte and header by header, through real sockets both sides."""

import asyncio
import gzip

import aiohttp
from aiohttp import web

from tests.helpers import eventually, json_body, raw_exchange, route, status_of

FORWARDING = {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via", "x-request-id"}


async def test_upstream_gets_only_what_the_client_sent_plus_forwarding_headers(make_upstream, start_proxy):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    await raw_exchange(proxy.port, b"GET /p HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
    seen = legacy.seen[0]
    assert seen.names() == FORWARDING  # no User-Agent, Accept, Accept-Encoding, Content-Length...
    assert seen.header("Host") == "shop.example"
    assert seen.header("X-Forwarded-Host") == "shop.example"
    assert seen.header("X-Forwarded-For") == "127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("Via") == "1.1 strangler"


async def test_hop_by_hop_request_headers_stay_at_the_edge(make_upstream, start_proxy):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret\r\n"
                                   b"X-Secret: s\r\nProxy-Authorization: Basic eA==\r\nKeep-Alive: 5\r\n"
                                   b"TE: trailers\r\nUpgrade: websocket\r\nX-Kept: yes\r\n\r\n")
    assert legacy.seen[0].names() == FORWARDING | {"x-kept"}


async def test_hop_by_hop_response_headers_stay_at_the_edge(raw_upstream, start_proxy, http):
    upstream = await raw_upstream(b"HTTP/1.1 200 OK\r\nConnection: Foo\r\nFoo: bar\r\nKeep-Alive: timeout=9\r\n"
                                  b"Proxy-Authenticate: Basic\r\nTrailer: X-T\r\nContent-Length: 2\r\n\r\nok")
    proxy = await start_proxy({"legacy": upstream.url}, [route("all")])
    async with http.get(proxy.url + "/") as response:
        assert await response.read() == b"ok"
        names = {k.lower() for k in response.headers}
    assert not names & {"foo", "keep-alive", "proxy-authenticate", "trailer"}
    assert response.headers.get("Connection", "keep-alive").lower() != "foo"


async def test_path_and_query_reach_the_upstream_byte_for_byte(make_upstream, start_proxy, http):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    target = "/api/orders/7;v=1?x=%2F&y=a+b&z=%zz&q=caf%C3%A9&e="
    async with http.get(aiohttp.client.URL(proxy.url + target, encoded=True)) as response:
        assert response.status == 200
    assert legacy.seen[0].target == target


async def test_request_id_is_generated_or_kept_and_travels_both_ways(make_upstream, start_proxy, http):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    async with http.get(proxy.url + "/", headers={"X-Request-Id": "req-42"}) as response:
        assert response.headers["X-Request-Id"] == "req-42"
    async with http.get(proxy.url + "/") as response:
        generated = response.headers["X-Request-Id"]
    assert [s.header("X-Request-Id") for s in legacy.seen] == ["req-42", generated]
    assert len(generated) == 32


async def test_each_request_on_a_connection_carries_its_own_headers(make_upstream, start_proxy):
    """The head made for a connection's previous request is reused only for the same lines."""
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    picks = [b"one", b"one", b"two", b"one"]
    await raw_exchange(proxy.port, b"".join(b"GET / HTTP/1.1\r\nHost: h\r\nX-Pick: %s\r\n\r\n" % pick for pick in picks)
                       + b"GET / HTTP/1.1\r\nHost: h\r\nX-Pick: one\r\nConnection: close\r\n\r\n")
    assert [s.header("X-Pick") for s in legacy.seen] == ["one", "one", "two", "one", "one"]
    assert len({s.header("X-Request-Id") for s in legacy.seen}) == 5


async def test_each_answer_carries_its_own_headers(make_upstream, start_proxy, http):
    """The client lines made from an upstream's previous answer are reused only for the same lines."""
    async def numbered(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="ok", headers={"X-Turn": request.query["turn"]})
    legacy = await make_upstream(handler=numbered)
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    turns, ids = [], set()
    for turn in ("1", "1", "2", "1"):
        async with http.get(proxy.url + "/", params={"turn": turn}) as response:
            turns.append(response.headers["X-Turn"])
            ids.add(response.headers["X-Request-Id"])
    assert turns == ["1", "1", "2", "1"]
    assert len(ids) == 4


async def test_forwarded_for_is_appended_to_a_spoofed_value(make_upstream, start_proxy, http):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    async with http.get(proxy.url + "/", headers={"X-Forwarded-For": "10.0.0.1", "Via": "1.0 cdn",
                                                  "X-Forwarded-Proto": "https"}):
        pass
    seen = legacy.seen[0]
    assert seen.header("X-Forwarded-For") == "10.0.0.1, 127.0.0.1"
    assert seen.header("Via") == "1.0 cdn, 1.1 strangler"
    assert seen.header("X-Forwarded-Proto") == "http"


async def test_duplicate_response_headers_are_all_kept(make_upstream, start_proxy, http):
    async def cookies(request: web.BaseRequest) -> web.StreamResponse:
        response = web.Response(text="ok")
        response.headers.add("Set-Cookie", "a=1; Path=/")
        response.headers.add("Set-Cookie", "b=2; Path=/")
        response.headers.add("Link", "</a>; rel=preload")
        response.headers.add("Link", "</b>; rel=preload")
        return response
    legacy = await make_upstream(handler=cookies)
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    async with http.get(proxy.url + "/") as response:
        assert response.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
        assert response.headers.getall("Link") == ["</a>; rel=preload", "</b>; rel=preload"]
        assert response.headers["Via"] == "1.1 strangler"


async def test_redirects_are_passed_back_not_followed(make_upstream, start_proxy, http):
    async def redirect(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "http://127.0.0.1:9/elsewhere"})
    legacy = await make_upstream(handler=redirect)
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    async with http.get(proxy.url + "/go", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "http://127.0.0.1:9/elsewhere"
    assert len(legacy.seen) == 1


async def test_no_cookie_jar_carries_one_users_cookie_to_another(make_upstream, start_proxy):
    async def login(request: web.BaseRequest) -> web.StreamResponse:
        response = web.Response(text="hi")
        response.headers["Set-Cookie"] = "session=alice-secret; Path=/"
        return response
    legacy = await make_upstream(handler=login)
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    for user in ("alice", "bob"):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
            async with client.get(proxy.url + f"/{user}") as response:
                assert response.status == 200
    assert [s.header("Cookie") for s in legacy.seen] == [None, None]


async def test_compressed_bodies_pass_through_untouched(make_upstream, start_proxy, http):
    packed = gzip.compress(b'{"big": "' + b"x" * 5000 + b'"}')

    async def gzipped(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=packed, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    legacy = await make_upstream(handler=gzipped)
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    async with http.get(proxy.url + "/", headers={"Accept-Encoding": "gzip"}) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert int(response.headers["Content-Length"]) == len(packed)
        assert await response.read() == packed
    assert legacy.seen[0].header("Accept-Encoding") == "gzip"


async def test_no_content_type_or_server_header_is_invented(raw_upstream, start_proxy):
    raw, _ = await through_proxy(raw_upstream, start_proxy, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                                 b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    head = raw.partition(b"\r\n\r\n")[0].lower()
    assert b"content-type" not in head and b"server:" not in head
    assert b"content-length: 5" in head and raw.endswith(b"\r\n\r\nhello")


# "abcde" in two chunks: an answer whose framing the proxy must redo, not copy.
CHUNKED_ABCDE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"

async def test_framing_is_redone_not_copied(raw_upstream, start_proxy):
    raw, _ = await through_proxy(raw_upstream, start_proxy, CHUNKED_ABCDE, b"GET / HTTP/1.0\r\nHost: h\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()  # HTTP/1.0 clients get a close-delimited body
    assert body == b"abcde"


async def test_a_small_answer_that_arrived_whole_leaves_with_its_length(raw_upstream, start_proxy):
    raw, _ = await through_proxy(raw_upstream, start_proxy, CHUNKED_ABCDE,
                                 b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and b"content-length: 5" in head.lower()
    assert body == b"abcde"


async def test_header_values_cross_byte_for_byte_both_ways(raw_upstream, start_proxy):
    """Not decoded and encoded again: a latin-1 file name reaches the client as the upstream sent it."""
    raw, upstream = await through_proxy(
        raw_upstream, start_proxy,
        b'HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename="caf\xe9.txt"\r\nContent-Length: 2\r\n\r\nok',
        b"GET /caf%C3%A9 HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9\r\nConnection: close\r\n\r\n")
    assert b'filename="caf\xe9.txt"\r\n' in raw and raw.endswith(b"\r\n\r\nok")
    assert upstream.heads[0].startswith(b"GET /caf%C3%A9 HTTP/1.1\r\nHost: h\r\n")
    assert b"X-Name: caf\xc3\xa9\r\n" in upstream.heads[0]


async def test_an_interim_answer_is_not_taken_for_the_answer(raw_upstream, start_proxy):
    """The edge answers Expect itself; an upstream's own 100 Continue (or 103) is passed over."""
    raw, _ = await through_proxy(
        raw_upstream, start_proxy,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx")
    assert raw.startswith(b"HTTP/1.1 201 Created\r\n") and raw.endswith(b"\r\n\r\ndone")


async def test_a_request_without_host_names_the_upstream(raw_upstream, start_proxy):
    raw, upstream = await through_proxy(raw_upstream, start_proxy, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                                        b"GET / HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and b"keep-alive" not in raw.lower()
    host = upstream.url.removeprefix("http://").encode()
    assert upstream.heads[0].startswith(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n")


async def test_request_bodies_arrive_whole_with_their_framing(make_upstream, start_proxy, http):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    async with http.post(proxy.url + "/orders", data=b"x" * 100_000) as response:
        assert response.status == 200

    async def pieces():
        for piece in (b"abc", b"def"):
            yield piece
    async with http.put(proxy.url + "/orders/1", data=pieces()) as response:
        assert response.status == 200
    sized, chunked = legacy.seen
    assert (sized.body, sized.header("Content-Length")) == (b"x" * 100_000, "100000")
    # a small chunked body is read whole first (server.request_buffer), as nginx does: it leaves with its length
    assert (chunked.body, chunked.header("Content-Length")) == (b"abcdef", "6")


async def test_head_204_and_304_carry_no_body(make_upstream, start_proxy):
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        status = {"/none": 204, "/same": 304}.get(request.path, 200)
        if status != 200:
            return web.Response(status=status)
        return web.Response(text="twelve bytes")
    legacy = await make_upstream(handler=answer)
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    requests = b"".join(f"{m} {p} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
                        for m, p in (("HEAD", "/"), ("GET", "/none"), ("GET", "/same")))
    raw = await raw_exchange(proxy.port, requests + b"GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    responses = raw.split(b"HTTP/1.1 ")[1:]
    assert [int(r[:3]) for r in responses] == [200, 204, 304, 200]
    head_response = responses[0]
    assert b"Content-Length: 12" in head_response and head_response.endswith(b"\r\n\r\n")
    assert responses[1].endswith(b"\r\n\r\n") and responses[2].endswith(b"\r\n\r\n")
    assert responses[3].endswith(b"twelve bytes")


async def test_no_route_is_a_json_404_with_the_request_id(make_upstream, start_proxy, http):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("api", "/api")])
    async with http.get(proxy.url + "/elsewhere") as response:
        assert response.status == 404
        assert response.content_type == "application/json"
        body = await response.json()
    assert body == {"error": "no_route", "detail": "no route matches GET /elsewhere",
                    "request_id": response.headers["X-Request-Id"]}
    assert legacy.seen == []


async def test_the_client_going_away_cancels_the_upstream_call(raw_upstream, start_proxy):
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # returns only when the proxy hangs up
    upstream = await raw_upstream(never_answer)
    proxy = await start_proxy({"legacy": upstream.url}, [route("all")])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
    await writer.drain()
    await eventually(lambda: upstream.heads, interval=0.01)
    writer.close()
    await asyncio.wait_for(upstream.hung_up.wait(), 5)  # the proxy closed its upstream connection
    assert proxy.proxy.live.current.pools["legacy"].in_flight == 0


async def test_routes_pick_the_upstream_by_path_method_and_header(make_upstream, start_proxy, http):
    legacy, new = await make_upstream("legacy"), await make_upstream("new")
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, [
        route("beta", "/api/orders", new="new", serve="new", match={"headers": {"X-Beta": "1"}}),
        route("reads", "/api/orders", new="new", serve="new", match={"methods": ["GET"]}),
        route("all")])
    cases = [("GET", "/api/orders/1", {}, "new"), ("POST", "/api/orders", {}, "legacy"),
             ("POST", "/api/orders", {"X-Beta": "1"}, "new"), ("GET", "/api/ordersX", {}, "legacy")]
    for method, path, headers, expected in cases:
        async with http.request(method, proxy.url + path, headers=headers) as response:
            assert response.headers["X-Upstream"] == expected, (method, path, headers)


async def test_bad_requests_get_json_400_and_never_reach_an_upstream(make_upstream, start_proxy):
    legacy = await make_upstream()
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    raw = await raw_exchange(proxy.port, b"GET /a/../b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 400
    assert json_body(raw)["error"] == "bad_request"
    assert legacy.seen == []


async def through_proxy(raw_upstream, start_proxy, answer: bytes, request: bytes):
    """What a client gets, byte for byte, for `request` through a proxy in front of an upstream that
    always sends `answer`; and that upstream (its `heads`: what it was sent)."""
    upstream = await raw_upstream(answer)
    proxy = await start_proxy({"legacy": upstream.url}, [route("all")])
    return await raw_exchange(proxy.port, request), upstream
