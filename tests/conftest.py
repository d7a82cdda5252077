"""Fixtures: recording upstreams and a real proxy, all on real sockets on 127.0.0.1."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import pytest

from proxy import config as config_file
from proxy.app import Options, Proxy
from reports.db import Where
from tests.helpers import Blackhole, Handler, RawUpstream, Upstream, answer_json, routes_yaml
from tests.servers import Postgres, install_postgres


@pytest.fixture
def make_upstream(aiohttp_raw_server: Any) -> Callable[..., Awaitable[Upstream]]:
    async def make(name: str = "legacy", handler: Handler = answer_json) -> Upstream:
        upstream = Upstream(name, handler)
        server = await aiohttp_raw_server(upstream.handle)
        upstream.url = f"http://127.0.0.1:{server.port}"
        return upstream
    return make


@dataclass
class RunningProxy:
    proxy: Proxy
    path: Path

    @property
    def url(self) -> str:
        return f"http://{self.proxy.edge_address}"

    @property
    def port(self) -> int:
        assert self.proxy.edge_address is not None
        return self.proxy.edge_address.port

    @property
    def admin_url(self) -> str:
        return f"http://{self.proxy.admin_address}"

    def rewrite(self, upstreams: dict[str, str], routes: list[dict[str, Any]], **top: Any) -> None:
        """Replace routes.yaml, keeping the listeners the proxy already has."""
        self.path.write_text(routes_yaml(upstreams, routes, **top))


@pytest.fixture
async def start_proxy(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RunningProxy]]]:
    started: list[Proxy] = []

    async def start(upstreams: dict[str, str], routes: list[dict[str, Any]],
                    drain_timeout: float = 5.0, **top: Any) -> RunningProxy:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_yaml(upstreams, routes, **top))
        proxy = Proxy(Options(str(path), drain_timeout=drain_timeout), config_file.load(path))
        await proxy.start()
        started.append(proxy)
        return RunningProxy(proxy, path)

    yield start
    for proxy in started:
        if proxy.lifecycle.state != "draining":
            await proxy.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client, as a user's would be (but not decompressing, to see the bytes)."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[..., Awaitable[RawUpstream]]]:
    made: list[RawUpstream] = []

    async def make(reply: bytes | Any) -> RawUpstream:
        upstream = RawUpstream.answering(reply) if isinstance(reply, bytes) else RawUpstream(reply)
        made.append(await upstream.start())
        return upstream

    yield make
    for upstream in made:
        await upstream.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


# The proxy's PostgreSQL role, as docs/fleet.md has an operator make it: it logs in with a
# password, and is neither superuser nor allowed to create roles or databases.
STORE_ROLE, STORE_PASSWORD, STORE_PASSWORD_ENV = "strangler", "Pw-not-in-any-file-7c1e", "TEST_STORE_PASSWORD"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL cluster for the session (installed on first use, as tests.servers does)."""
    install_postgres()
    server = Postgres()
    server.start()
    try:
        server.psql(f"CREATE ROLE {STORE_ROLE} LOGIN PASSWORD '{STORE_PASSWORD}' NOSUPERUSER NOCREATEDB NOCREATEROLE")
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_store(postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> Where:
    """A new, empty database owned by the proxy's role, and its password in the environment only."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.psql(f"CREATE DATABASE {name} OWNER {STORE_ROLE}")
    monkeypatch.setenv(STORE_PASSWORD_ENV, STORE_PASSWORD)
    return Where(postgres.url(STORE_ROLE, name), STORE_PASSWORD_ENV)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.external)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    """The same test on each engine: a SQLite file, and a PostgreSQL database."""
    if request.param == "sqlite":
        return Where(str(tmp_path / "divergence.db"))
    return request.getfixturevalue("pg_store")
