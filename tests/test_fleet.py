"""A fleet on one PostgreSQL store: two `strangler serve` processes on their own ports stand for two hosts.

Real upstreams, real processes, a real PostgreSQL (tests/servers.py) with a role that is not
superuser and whose password only the environment holds."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from reports import accepted, query
from reports.timeline import plan_timeline
from reports.db import Where, connect
from reports.plans import StorePlans
from reports.schema import SCHEMA_VERSION, open_database
from tests.conftest import STORE_PASSWORD, STORE_PASSWORD_ENV, STORE_ROLE
from tests.helpers import REPO, ProxyProcess, admin_json, eventually, free_port, route, routes_yaml
from tests.servers import Postgres
from tests.test_divergence_store import divergence
from tests.test_rollout import SMALL_GATES, Planted
from tests.test_store import evidence, sink_on

pytestmark = [pytest.mark.external, pytest.mark.timeout(240)]

CHECK_INTERVAL = 1.0  # seconds between a plan's judgements, in these tests
USERS = [f"user-{n}" for n in range(100)]


class Host:
    """One instance of the fleet: its own folder, routes.yaml, ports and log."""

    def __init__(self, base: Path, name: str) -> None:
        self.folder = base / name
        self.folder.mkdir()
        self.config = self.folder / "routes.yaml"
        self.port, self.admin_port = free_port(), free_port()
        self.process: ProxyProcess | None = None

    def write(self, upstreams: dict[str, str], routes: list[dict[str, Any]], store: Where, **top: Any) -> None:
        self.config.write_text(routes_yaml(upstreams, routes, listen=f"127.0.0.1:{self.port}",
                                           admin={"listen": f"127.0.0.1:{self.admin_port}"},
                                           reports={"database": store.target, "password_env": store.password_env},
                                           **top))

    def start(self) -> Host:
        self.process = ProxyProcess(self.config, "--drain-timeout", "5")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        return admin_json(self.admin_port, "/status")

    def log(self) -> str:
        return (self.folder / "proxy.log").read_text()


@pytest.fixture
async def fleet(tmp_path):
    made: list[Host] = []

    def make(count: int = 2) -> list[Host]:
        made.extend(Host(tmp_path, f"host{n + 1}") for n in range(count))
        return made[-count:]
    yield make
    await asyncio.gather(*(asyncio.to_thread(host.stop) for host in made))


async def start_all(hosts: list[Host]) -> None:
    """Both at once, as a deploy would start them."""
    await asyncio.gather(*(asyncio.to_thread(host.start) for host in hosts))


def plan_route(**plan: Any) -> dict[str, Any]:
    return route("items", "/api/items", new="new", serve="toggle",
                 toggle={"name": "items-to-new", "stickiness": "header:X-User-Id"}, parallel_run={"enabled": True},
                 rollout_plan={"steps": [0, 25, 50, 100], "check_interval": CHECK_INTERVAL, **SMALL_GATES, **plan})


def priced(price: Callable[[int], int]) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        item = int(request.path.rsplit("/", 1)[1])
        return web.json_response({"id": item, "price": price(item)})
    return handler


async def send(urls: list[str], count: int, failures: list[str]) -> dict[str, int]:
    """`count` requests, alternately to each instance; answers by the side that gave them."""
    served: dict[str, int] = {}
    async with aiohttp.ClientSession() as http:
        for n in range(count):
            async with http.get(f"{urls[n % len(urls)]}/api/items/{n}",
                                headers={"X-User-Id": USERS[n % len(USERS)]}) as response:
                if response.status != 200:
                    failures.append(f"{response.status} {await response.text()}")
                side = response.headers.get("X-Upstream", "?")
                served[side] = served.get(side, 0) + 1
    return served


async def compared(store: Where, route_name: str = "items") -> int:
    found = await asyncio.to_thread(query.summary, [store], route_name)
    return found[0].compared if found else 0


async def test_every_instances_comparisons_add_up_exactly_in_one_summary(make_upstream, fleet, pg_store, postgres):
    legacy, new = await make_upstream("legacy", priced(lambda n: 10)), await make_upstream("new", priced(
        lambda n: 11 if n % 4 == 0 else 10))  # every fourth item diverges
    hosts = fleet(2)
    items = route("items", "/api/items", new="new", parallel_run={"enabled": True})
    for host in hosts:
        host.write({"legacy": legacy.url, "new": new.url}, [items], pg_store)
    await start_all(hosts)
    failures: list[str] = []
    await send([h.url for h in hosts], 200, failures)
    assert failures == []
    await eventually(lambda: compared(pg_store), timeout=15, what="all 200 comparisons in the store")
    await eventually(lambda: _is(compared(pg_store), 200), timeout=15, what="exactly 200 comparisons")
    await asyncio.sleep(1.0)  # anything counted twice would show by now
    [summary] = await asyncio.to_thread(query.summary, [pg_store], "items")
    assert (summary.compared, summary.diverged) == (200, 50)
    assert [(s.paths, s.count) for s in summary.signatures] == [(["$.price"], 50)]
    for host in hosts:
        store = host.status()["store"]
        assert store == {"database": pg_store.target, "engine": "postgresql", "state": "connected",
                         "down_since": None, "problem": None, "waiting": 0}
    # the password is only ever in the environment
    seen = [host.log() for host in hosts] + [json.dumps(host.status()) for host in hosts]
    seen += [host.config.read_text() for host in hosts]
    seen += [_get_text(hosts[0].admin_port, "/reports"), await asyncio.to_thread(postgres.dump, _name(pg_store))]
    assert [text[:80] for text in seen if STORE_PASSWORD in text] == []
    assert "COPY public.divergences" in seen[-1] and "$.price" in seen[-1]  # the dump does hold the store


async def test_a_plan_moves_once_per_step_and_every_instance_follows_within_a_check(make_upstream, fleet,
                                                                                     pg_store):
    planted = Planted()
    legacy, new = await make_upstream("legacy", planted.legacy), await make_upstream("new", planted.new)
    hosts = fleet(2)
    for host in hosts:
        host.write({"legacy": legacy.url, "new": new.url}, [plan_route()], pg_store)
    await start_all(hosts)
    seen: list[tuple[float, int, int]] = []  # when, and the percent each instance's /status shows
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            a, b = await asyncio.gather(*(asyncio.to_thread(_percent, host) for host in hosts))
            seen.append((time.time(), a, b))
            await asyncio.sleep(0.1)

    async def users() -> None:
        while not stop.is_set():
            await send([h.url for h in hosts], 20, failures)
    failures: list[str] = []
    tasks = [asyncio.create_task(watch()), asyncio.create_task(users())]
    try:
        await eventually(lambda: seen and seen[-1][1:] == (100, 100), timeout=60, interval=0.2,
                         what=lambda: f"both instances at 100%, as sampled: {seen[-1:]}")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert failures == []
    events = (await asyncio.to_thread(plan_timeline, [pg_store], "items")).events
    assert [(e["action"], e["from_percent"], e["to_percent"]) for e in events] == [
        ("start", 0, 0), ("advance", 0, 25), ("advance", 25, 50), ("advance", 50, 100)]  # each move once
    assert {e["by"] for e in events} == {"plan", "gates"}
    for move in events[1:]:  # each instance showed the new step within check_interval plus a second
        due = move["at"] + CHECK_INTERVAL + 1.0 + 0.2  # 0.2: this test's own sampling
        for index in (1, 2):
            shown = next((at for at, *percents in seen if at >= move["at"] and percents[index - 1] >= move["to_percent"]),
                         None)
            assert shown is not None and shown <= due, f"instance {index} showed {move['to_percent']}% late"


async def test_postgresql_stopped_and_started_mid_run_fails_no_request_and_loses_no_evidence(make_upstream, fleet,
                                                                                            monkeypatch):
    monkeypatch.setenv(STORE_PASSWORD_ENV, STORE_PASSWORD)
    own = Postgres()  # a cluster of this test's own: it is stopped mid-run
    await asyncio.to_thread(own.start)
    try:
        await asyncio.to_thread(own.psql, f"CREATE ROLE {STORE_ROLE} LOGIN PASSWORD '{STORE_PASSWORD}'",
                                f"CREATE DATABASE fleet OWNER {STORE_ROLE}")
        store = Where(own.url(STORE_ROLE, "fleet"), STORE_PASSWORD_ENV)
        await _outage(make_upstream, fleet, own, store)
    finally:
        await asyncio.to_thread(own.stop)


async def _outage(make_upstream, fleet, own: Postgres, store: Where) -> None:
    planted = Planted()
    legacy, new = await make_upstream("legacy", planted.legacy), await make_upstream("new", planted.new)
    hosts = fleet(2)
    for host in hosts:
        host.write({"legacy": legacy.url, "new": new.url}, [plan_route(steps=[10, 100])], store)
    await start_all(hosts)
    failures: list[str] = []
    urls = [h.url for h in hosts]
    await send(urls, 100, failures)
    await eventually(lambda: _is(compared(store), 100), timeout=15, what="the first 100 comparisons")
    await asyncio.to_thread(own.halt)
    await send(urls, 100, failures)  # during the outage
    down = await eventually(lambda: _all_down(hosts), timeout=20, what="both instances to see the store down")
    assert all(s["down_since"] and s["waiting"] > 0 for s in down)
    await eventually(lambda: _holding(hosts), timeout=10, what="the plans to hold, their evidence missing")
    await send(urls, 100, failures)
    await asyncio.to_thread(own.resume)
    await send(urls, 100, failures)
    assert failures == []  # not one request failed, during the outage or after it
    await eventually(lambda: _is(compared(store), 400), timeout=60, what="all 400 comparisons, those held included")
    await asyncio.sleep(1.5)
    assert await compared(store) == 400  # and none twice
    for host in hosts:
        lines = [json.loads(line) for line in host.log().splitlines() if line.startswith("{")]
        errors = [line["msg"] for line in lines if line["level"] == "ERROR" and line["logger"] == "strangler.reports"]
        assert errors == ["cannot write the divergence store; requests go on, and evidence waits (up to 10000 items)"]
        assert any(line["msg"] == "the divergence store is writable again" for line in lines)
        assert host.status()["store"]["state"] == "connected"


async def test_two_instances_set_up_an_empty_database_at_once(make_upstream, fleet, pg_store):
    legacy = await make_upstream("legacy")
    hosts = fleet(2)
    for host in hosts:
        host.write({"legacy": legacy.url}, [route("all")], pg_store)
    await start_all(hosts)
    await eventually(lambda: all(h.status()["store"]["state"] == "connected" for h in hosts), timeout=15,
                     what="both connected")
    db = connect(pg_store)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert db.exists("gate_bins") and db.exists("divergences")
    db.close()
    for host in hosts:
        assert "Traceback" not in host.log()


def test_store_copy_moves_a_hosts_sqlite_file_into_postgresql_and_again_adds_nothing(tmp_path, pg_store):
    source, now = Where(str(tmp_path / "host1.db")), time.time()
    sink = sink_on(source)
    for n in range(2500):
        sink.count("orders", n % 5 == 0, now - n)
    for n in range(20):
        sink.record(divergence(signature=f"sig-{n % 3}"))
    sink.learn_noise("orders", ["$.updated_at"], now)
    sink.evidence(evidence(now, {"": 7, "sig-1": 1}))
    sink.close()
    plans = StorePlans(source)
    plans.move(plans.begin("items", 0, now), "advance", 25, "gates said so", "gates", now + 1)
    plans.close()
    db = open_database(source)
    accepted.accept(db, "sig-1", "orders", "rounding, as agreed", None, "ada", now)
    db.close()
    config = tmp_path / "routes.yaml"
    config.write_text(routes_yaml({"legacy": "http://127.0.0.1:9", "new": "http://127.0.0.1:9"}, [plan_route()],
                                  reports={"database": pg_store.target, "password_env": pg_store.password_env}))
    first = strangler("store", "copy", "--from", source.target, "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert "copying divergences 15/15 (15 new)" in first.stderr  # progress, a line a table when not a terminal
    assert tally(first.stdout)["divergences"] == (15, 15) and tally(first.stdout)["accepted"] == (1, 1)
    again = strangler("store", "copy", "--from", source.target, "--config", str(config))
    assert again.returncode == 0
    assert tally(again.stdout) == {table: (0, rows) for table, (_, rows) in tally(first.stdout).items()}
    here, there = summary_json("--config", str(config)), summary_json("--db", source.target)
    assert here == there and here[0]["compared"] == 2500 and here[0]["accepted"] == 7
    assert timeline(source) == timeline(pg_store) == [("start", 0, 0, "plan"), ("advance", 0, 25, "gates")]


def strangler(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


def tally(printed: str) -> dict[str, tuple[int, int]]:
    """`store copy`'s table lines: table -> (rows new, rows in the source)."""
    found = {}
    for line in printed.splitlines()[1:]:
        table, added, _, _, rows = line.split()
        found[table] = (int(added), int(rows))
    return found


def summary_json(*where: str) -> list[dict[str, Any]]:
    done = strangler("report", "summary", "--format", "json", *where)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["routes"]


def timeline(store: Where) -> list[tuple[str, int, int, str]]:
    found = plan_timeline([store], "items")
    assert found is not None
    return [(e["action"], e["from_percent"], e["to_percent"], e["by"]) for e in found.events]


def _percent(host: Host) -> int:
    plans = host.status()["rollouts"]
    return plans[0]["percent"] if plans else -1


async def _is(value: Any, expected: Any) -> bool:
    return await value == expected


def _all_down(hosts: list[Host]) -> list[dict[str, Any]] | None:
    found = [host.status()["store"] for host in hosts]
    return found if all(s["state"] == "down" for s in found) else None


def _state(host: Host, state: str) -> dict[str, Any] | None:
    found = host.status()["store"]
    return found if found["state"] == state else None


def _holding(hosts: list[Host]) -> list[dict[str, Any]] | None:
    found = [host.status()["rollouts"][0] for host in hosts]
    return found if all(p["next"] == "stay" and p["why"].startswith("evidence missing") for p in found) else None


def _name(store: Where) -> str:
    return store.target.rsplit("/", 1)[1]


def _get_text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read().decode()



async def test_a_store_that_stalls_is_lagging_holds_the_plans_and_fails_no_request(make_upstream, fleet, pg_store):
    legacy, new = await make_upstream("legacy", priced(lambda n: 10)), await make_upstream("new", priced(lambda n: 10))
    [host] = fleet(1)
    host.write({"legacy": legacy.url, "new": new.url}, [plan_route(steps=[10, 100])], pg_store)
    await start_all([host])
    failures: list[str] = []
    await send([host.url], 50, failures)
    await eventually(lambda: _is(compared(pg_store), 50), timeout=15, what="the first 50 comparisons")
    stall = connect(pg_store)  # another session holds the table the writer needs: its batches wait
    stall.execute("BEGIN")
    stall.execute("LOCK TABLE counts IN ACCESS EXCLUSIVE MODE")
    try:
        await send([host.url], 50, failures)
        store = await eventually(lambda: _state(host, "lagging"), timeout=12, what="the store to be lagging")
        assert store["waiting"] > 0 and store["down_since"] is None
        plan = await eventually(lambda: _holding([host]), timeout=5, what="the plan to hold")
        assert "lagging" in plan[0]["why"]
        await send([host.url], 50, failures)
    finally:
        stall.execute("ROLLBACK")
        stall.close()
    assert failures == []
    await eventually(lambda: _is(compared(pg_store), 150), timeout=30, what="all 150 comparisons")
    await eventually(lambda: _state(host, "connected"), timeout=10, what="the store to catch up")
