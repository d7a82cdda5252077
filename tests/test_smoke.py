from tests.helpers import route


async def test_a_request_reaches_the_legacy_upstream(make_upstream, start_proxy, http):
    legacy = await make_upstream("legacy")
    proxy = await start_proxy({"legacy": legacy.url}, [route("all")])
    async with http.get(proxy.url + "/hello?x=1") as response:
        assert response.status == 200
        assert await response.json() == {"path": "/hello?x=1"}
    assert [s.target for s in legacy.seen] == ["/hello?x=1"]
