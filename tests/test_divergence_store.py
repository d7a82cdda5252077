"""The divergence store: redacted on disk, bounded, shared by processes, and never a request's problem."""

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from proxy.model import Difference, Divergence, Observation, ReportsSpec, RequestRecord, Side
from reports import query
from reports.store import StoreSink
from tests.helpers import REPO, route
from tests.test_parallel_run import settle

SECRETS = ["S3cr3t-bearer", "S3cr3t-cookie", "S3cr3t-apikey", "S3cr3t-qtoken", "S3cr3t-password",
           "S3cr3t-setcookie", "S3cr3t-legacy-token", "S3cr3t-new-token"]


def divergence(route_name: str = "orders", path: str = "$.price", at: float | None = None,
               signature: str = "sig-price") -> Divergence:
    record = RequestRecord("rid-1", "GET", "/api/orders/1", (("Host", "shop"),), None, at or time.time())
    body = (("Content-Type", "application/json"),)
    return Divergence(route_name, record, Side.LEGACY,
                      Observation(Side.LEGACY, 200, body, b'{"price": 10}', 0.004),
                      Observation(Side.NEW, 200, body, b'{"price": 11}', 0.003),
                      (Difference(path, 10, 11),), (), signature)


def sink_at(path: Path, **spec) -> StoreSink:
    sink = StoreSink(ReportsSpec(str(path), **spec))
    sink.start()
    return sink


def strangler(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=60, cwd=REPO)


async def test_no_secret_reaches_the_database_file(make_upstream, start_proxy, http, tmp_path):
    async def answer(token: str):
        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            response = web.json_response({"token": token, "price": 1 if "legacy" in token else 2})
            response.headers["Set-Cookie"] = f"sid={SECRETS[5]}; Path=/; HttpOnly"
            return response
        return handler
    legacy = await make_upstream("legacy", await answer(SECRETS[6]))
    new = await make_upstream("new", await answer(SECRETS[7]))
    database = tmp_path / "divergence.db"
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, [route(
        "orders", "/api", new="new", parallel_run={"methods": ["POST"]})], reports={"database": str(database)})
    async with http.post(proxy.url + f"/api/login?api_key={SECRETS[2]}&token={SECRETS[3]}&page=2",
                         json={"user": "ada", "password": SECRETS[4]},
                         headers={"Authorization": f"Bearer {SECRETS[0]}", "Cookie": f"session={SECRETS[1]}"}):
        pass
    await settle(proxy, 1, "orders")
    await proxy.proxy.stop()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("divergence.db*"))
    assert [s for s in SECRETS if s.encode() in on_disk] == []
    assert b"page=2" in on_disk and b"ada" in on_disk  # what is not secret stays readable
    assert database.stat().st_mode & 0o077 == 0


async def test_a_broken_database_never_fails_a_request(make_upstream, start_proxy, http, tmp_path, caplog):
    from tests.test_parallel_run import items_route, legacy_items, new_items
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", new_items)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, items_route(),
                              reports={"database": str(tmp_path)})  # a folder: SQLite cannot open it
    for n in range(4):
        async with http.get(proxy.url + f"/items/{n}") as response:
            assert response.status == 200
    await settle(proxy, 4)
    failed = proxy.proxy.metrics.registry.get_sample_value("strangler_report_problems_total", {"kind": "write_failed"})
    assert failed and failed >= 1
    errors = [r for r in caplog.records if r.name == "strangler.reports" and r.levelno == logging.ERROR]
    assert len(errors) == 1  # said once, not per batch


def test_examples_per_signature_are_bounded_and_every_one_is_counted(tmp_path):
    sink = sink_at(tmp_path / "d.db", examples_per_signature=2)
    for _ in range(10):
        sink.record(divergence())
        sink.count("orders", True, time.time())
    sink.close()
    [summary] = query.summary([str(tmp_path / "d.db")])
    assert (summary.compared, summary.diverged, summary.signatures[0].count) == (10, 10, 10)
    assert len(query.examples([str(tmp_path / "d.db")], "sig-price", limit=100)) == 2


def test_retention_drops_what_is_older_than_its_days(tmp_path):
    sink = sink_at(tmp_path / "d.db", retention_days=1)
    sink.record(divergence(at=time.time() - 3 * 86400, signature="old"))
    sink.record(divergence(signature="fresh"))
    sink.close()
    [summary] = query.summary([str(tmp_path / "d.db")])
    assert [s.signature for s in summary.signatures] == ["fresh"]


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path):
    problems = []
    sink = StoreSink(ReportsSpec(str(tmp_path / "d.db")), on_problem=problems.append, queue_size=2)
    for _ in range(5):  # the writer is not started: nothing drains the queue
        sink.count("orders", False, time.time())
    assert problems == ["queue_full"] * 3


WRITER = """
import sys, time
sys.path.insert(0, sys.argv[2])
from tests.test_divergence_store import divergence, sink_at
from pathlib import Path
sink = sink_at(Path(sys.argv[1]))
for n in range(300):
    sink.count("orders", n % 6 == 0, time.time())
    if n % 6 == 0:
        sink.record(divergence(signature=f"sig-{sys.argv[3]}"))
sink.close()
"""


def test_several_processes_write_one_database(tmp_path):
    path = tmp_path / "shared.db"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(REPO), name]) for name in "ab"]
    assert [w.wait(60) for w in writers] == [0, 0]
    [summary] = query.summary([str(path)])
    assert (summary.compared, summary.diverged) == (600, 100)
    assert sorted((s.signature, s.count) for s in summary.signatures) == [("sig-a", 50), ("sig-b", 50)]


def test_report_commands_read_a_fleets_files_as_one(tmp_path):
    paths = [tmp_path / "a.db", tmp_path / "b.db"]
    for path, diverged in zip(paths, (3, 1), strict=True):
        sink = sink_at(path)
        for n in range(10):
            sink.count("orders", n < diverged, time.time())
        for _ in range(diverged):
            sink.record(divergence())
        sink.close()
    dbs = [arg for path in paths for arg in ("--db", str(path))]
    done = strangler("report", "summary", "--format", "json", *dbs)
    [found] = json.loads(done.stdout)["routes"]
    contract = {key: found[key] for key in ("route", "compared", "diverged", "divergence_rate", "top_paths")}
    assert contract == {"route": "orders", "compared": 20, "diverged": 4, "divergence_rate": 0.2,
                        "top_paths": [{"path": "$.price", "count": 4}]}
    assert (found["accepted"], found["divergence_rate_unaccepted"]) == (0, 0.2)  # the extension: nothing accepted
    text = strangler("report", "summary", *dbs).stdout.splitlines()
    assert text[1].split() == ["orders", "20", "4", "0", "20.0%", "$.price", "(4)"]
    example = query.summary([str(p) for p in paths])[0].signatures[0].example
    shown = strangler("report", "show", example, *dbs)
    assert shown.returncode == 0 and "$.price  changed: 10 -> 11" in shown.stdout
    assert strangler("report", "show", "nope", *dbs).returncode == 3


def test_report_on_a_missing_database_is_one_clear_line(tmp_path):
    done = strangler("report", "summary", "--db", str(tmp_path / "none.db"))
    assert (done.returncode, done.stderr.strip()) == (1, f"strangler report: no divergence database at "
                                                         f"{tmp_path / 'none.db'}")


def test_summary_without_db_reads_the_configured_database(tmp_path):
    sink = sink_at(tmp_path / "var" / "divergence.db")
    sink.count("orders", False, time.time())
    sink.close()
    config = tmp_path / "routes.yaml"
    config.write_text("version: 1\nupstreams: {m: {url: 'http://127.0.0.1:9'}}\n"
                      "routes: [{name: all, match: {path: /}, legacy: m}]\n")
    done = strangler("report", "summary", "--format", "json", "--config", str(config))
    assert json.loads(done.stdout)["routes"][0]["compared"] == 1

