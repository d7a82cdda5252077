"""https:// upstreams behind a private CA, through real sockets: checked against `ca`, never passed over
silently, `verify: false` only with its warning, a client certificate for mutual TLS, the shadow's pool alike."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from tests.certs import Authority, Issued
from tests.helpers import Upstream, eventually, route

PRIVATE_CA = "certs/strangler-test-ca.pem"


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "certs")


@pytest.fixture
def https_upstream(aiohttp_raw_server: Any) -> Callable[..., Awaitable[Upstream]]:
    """A recording upstream over TLS with `issued`'s pair; `clients`: the CA whose client certificates it demands.
    What it is sent as SNI lands in `upstream.sni`, the client certificate it saw in `upstream.client`."""
    async def make(issued: Issued, name: str = "legacy", clients: Authority | None = None) -> Upstream:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(issued.cert, issued.key)
        if clients is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(clients.pem)
        upstream = Upstream(name)
        upstream.sni, upstream.client = [], []  # type: ignore[attr-defined]
        context.sni_callback = lambda connection, server_name, _: upstream.sni.append(server_name)

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            upstream.client.append(dict(x[0] for x in peer["subject"])["commonName"] if peer else None)
            return await upstream.handle(request)

        server = await aiohttp_raw_server(handle, ssl=context)
        upstream.url = f"https://localhost:{server.port}"  # the certificate names localhost
        return upstream
    return make


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def test_an_upstream_behind_a_private_ca_is_verified_with_its_host_as_sni(https_upstream, start_proxy,
                                                                                 http, ca):
    upstream = await https_upstream(ca.issue("orders"))
    proxy = await start_proxy({"legacy": {"url": upstream.url, "ca": PRIVATE_CA}}, [route("all")])
    for n in range(3):
        assert await get(http, proxy.url + f"/api/{n}") == (200, {"path": f"/api/{n}"})
    assert len(upstream.seen) == 3 and upstream.sni == ["localhost"]  # one handshake: the connection is kept
    pool = proxy.proxy.live.current.pools["legacy"]
    assert pool.tls is proxy.proxy.config.upstreams["legacy"].tls.context  # built at load, once


@pytest.mark.parametrize(("ca_file", "names", "reason"), [
    ("certs/elsewhere-ca.pem", ("localhost",), "unable to get local issuer certificate"),
    (PRIVATE_CA, ("orders.internal",), "Hostname mismatch, certificate is not valid for 'localhost'."),
    (None, ("localhost",), "unable to get local issuer certificate"),  # the system's CAs do not know ours
])
async def test_an_upstream_that_fails_verification_is_a_502_and_gets_nothing(https_upstream, start_proxy, http, ca,
                                                                            ca_file, names, reason):
    Authority(ca.folder, name="Elsewhere CA")
    upstream = await https_upstream(ca.issue("orders", names=names))
    spec = {"url": upstream.url, **({"ca": ca_file} if ca_file else {})}
    proxy = await start_proxy({"legacy": spec}, [route("all")])
    status, body = await get(http, proxy.url + "/api/orders")
    assert (status, body["error"]) == (502, "upstream_broken")
    assert body["detail"] == f"upstream legacy failed the TLS handshake ({reason})"
    assert upstream.seen == []


async def test_verify_false_passes_with_a_warning_at_every_load(https_upstream, start_proxy, http, ca, caplog):
    stranger = Authority(ca.folder, name="Elsewhere CA")
    upstream = await https_upstream(stranger.issue("orders"))
    caplog.set_level(logging.WARNING, logger="strangler.config")
    proxy = await start_proxy({"legacy": {"url": upstream.url, "verify": False}}, [route("all")])
    assert await get(http, proxy.url + "/x") == (200, {"path": "/x"})
    assert await proxy.proxy.reload("SIGHUP") is True
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "verify: false" in r.getMessage()]
    assert [(r.getMessage(), r.upstream) for r in warned] == [
        ("TLS verification of an upstream is off (verify: false)", "legacy")] * 2
    assert proxy.proxy.config.warnings[0].message.startswith("upstream 'legacy': 'verify: false': ")


async def test_mutual_tls_shows_the_client_certificate_an_upstream_demands(https_upstream, start_proxy, http, ca):
    ca.issue("proxy-client", names=("strangler-proxy",), client=True)
    demanding = await https_upstream(ca.issue("orders"), clients=ca)
    proxy = await start_proxy({"legacy": {"url": demanding.url, "ca": PRIVATE_CA,
                                          "client_cert": "certs/proxy-client.pem",
                                          "client_key": "certs/proxy-client-key.pem"}}, [route("all")])
    assert await get(http, proxy.url + "/mtls") == (200, {"path": "/mtls"})
    assert demanding.client == ["strangler-proxy"]


async def test_without_its_client_certificate_a_demanding_upstream_answers_nothing(https_upstream, start_proxy,
                                                                                  http, ca):
    demanding = await https_upstream(ca.issue("orders"), clients=ca)
    proxy = await start_proxy({"legacy": {"url": demanding.url, "ca": PRIVATE_CA}}, [route("all")])
    status, body = await get(http, proxy.url + "/mtls")
    assert (status, body["error"]) == (502, "upstream_broken")
    assert demanding.seen == []


async def test_a_renewed_ca_file_builds_a_new_pool_on_reload(https_upstream, start_proxy, http, ca, tmp_path):
    upstream = await https_upstream(ca.issue("orders"))
    trusted = tmp_path / "certs" / "trusted.pem"
    trusted.write_bytes(Authority(ca.folder, name="Elsewhere CA").pem.read_bytes())
    proxy = await start_proxy({"legacy": {"url": upstream.url, "ca": "certs/trusted.pem"}}, [route("all")])
    before = proxy.proxy.live.current.pools["legacy"]
    assert (await get(http, proxy.url + "/x"))[0] == 502
    trusted.write_bytes(ca.pem.read_bytes())  # the right CA now, in the same file; routes.yaml unchanged
    assert await proxy.proxy.reload("SIGHUP") is True
    assert proxy.proxy.live.current.pools["legacy"] is not before
    assert await get(http, proxy.url + "/x") == (200, {"path": "/x"})


async def test_the_shadow_pool_follows_the_same_rules(make_upstream, https_upstream, start_proxy, http, ca):
    legacy = await make_upstream("legacy")
    new = await https_upstream(ca.issue("orders"), name="new")
    proxy = await start_proxy({"legacy": legacy.url, "new": {"url": new.url, "ca": PRIVATE_CA}},
                              [route("all", new="new", serve="legacy", parallel_run={"enabled": True})])
    assert await get(http, proxy.url + "/compare") == (200, {"path": "/compare"})
    await eventually(lambda: new.seen)
    assert new.seen[0].header("X-Strangler-Shadow") == "1" and new.sni == ["localhost"]
    generation = proxy.proxy.live.current
    assert generation.shadow_pools["new"].tls is generation.pools["new"].tls  # one context per load
