"""One store, two engines: every read and write of the divergence store behaves the same on a SQLite file
and on a real PostgreSQL database (the `store` fixture runs each test on both)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import pytest

from proxy.model import Gates, ReportsSpec, Side
from proxy.model.evidence import Answers, EvidenceBatch, latency_bin
from reports import accepted, html, query, timeline
from proxy.rollout.gates import advance_checks
from reports.connections import Connections
from reports.db import StoreUnavailable, Where, connect
from reports.endpoints import by_endpoint
from reports.plans import StorePlans
from reports.reservoir import Reservoir
from reports.schema import SCHEMA_VERSION, open_database
from reports.store import StoreSink
from reports import writes
from reports.writes import LATEST_EVERY
from tests.certs import Authority
from tests.helpers import REPO, free_port, route, routes_yaml
from tests.servers import Postgres, install_postgres
from tests.test_divergence_store import divergence
from tests.test_reservoir import sample


def sink_on(store: Where, **spec) -> StoreSink:
    sink = StoreSink(ReportsSpec(store.target, password_env=store.password_env, **spec))
    sink.start()
    return sink


def evidence(at: float, compared: dict[str, int], new_seconds: float = 0.01, errors: int = 0) -> EvidenceBatch:
    """One process's second of evidence for route `items`: comparisons by signature, each side's answers."""
    total = sum(compared.values())
    legacy = Answers(total, 0, Counter({latency_bin(0.01): total}))
    new = Answers(total, errors, Counter({latency_bin(new_seconds): total}))
    return EvidenceBatch(at, tuple(("items", sig, n) for sig, n in compared.items()),
                         (("items", Side.LEGACY, legacy), ("items", Side.NEW, new)))


def test_counts_signatures_examples_and_noise_read_back_the_same(store):
    sink = sink_on(store, examples_per_signature=2)
    now = time.time()
    for n in range(10):
        sink.count("orders", n < 4, now)
    for _ in range(4):
        sink.record(divergence())
    sink.learn_noise("orders", ["$.updated_at"], now)
    sink.learn_noise("orders", ["$.updated_at"], now)
    sink.close()
    [summary] = query.summary([store])
    assert (summary.compared, summary.diverged, summary.divergence_rate) == (10, 4, 0.4)
    assert [(s.signature, s.count, s.paths) for s in summary.signatures] == [("sig-price", 4, ["$.price"])]
    assert summary.noise == [("$.updated_at", 2)]
    kept = query.examples([store], "sig-price", limit=10)
    assert len(kept) == 2 and kept[0]["differences"][0]["path"] == "$.price"
    shown = query.show([store], kept[0]["id"])
    assert shown["legacy_status"] == 200 and shown["request_headers"] == [["Host", "shop"]]
    trend = query.trend([store], "orders", buckets=2, width=3600, now=now + 1)
    assert (trend[-1][1], trend[-1][2]) == (10, 4)


def test_two_writers_keep_no_more_examples_than_the_bound_and_count_every_one(store):
    """A fleet samples one stream: the first and the latest of all writers' divergences are kept."""
    writers = [sink_on(store, examples_per_signature=3) for _ in range(2)]
    writers[0].record(dataclasses.replace(divergence(), request=divergence().request._replace(request_id="first")))
    writers[0].flush()
    for _ in range(10):
        for sink in writers:
            sink.record(divergence())
    for sink in writers:
        sink.flush()
    writers[1].record(dataclasses.replace(divergence(), request=divergence().request._replace(request_id="latest")))
    for sink in writers:
        sink.close()
    [summary] = query.summary([store])
    assert summary.signatures[0].count == 22
    kept = query.examples([store], "sig-price", limit=100)
    assert len(kept) == 3 and {"first", "latest"} <= {k["request_id"] for k in kept}


@pytest.mark.parametrize("seed", range(8))
def test_while_the_newest_is_held_back_the_others_are_placed_by_their_own_place(store, seed):
    """Between refreshes of the latest example the newest divergence is held back, yet counted: the
    others come before it. So the second and third divergences fill the reservoir's two slots, whatever
    the draws."""
    sink = sink_on(store, examples_per_signature=4)
    sink.close()
    sink.writes.rng = random.Random(seed)
    sink.writes.clock = lambda: 0.0  # written once, the latest is not due again in this test
    start = time.time() - 1000
    rows = [("divergence", dataclasses.replace(divergence(at=start + n), request=divergence(
        at=start + n).request._replace(request_id=f"n{n}"))) for n in range(1, 5)]
    with sink.connections.use() as db:
        sink._apply(db, "batch-0", rows[:1])
        sink._apply(db, "batch-1", rows[1:4])  # the fourth is held back
        slots = dict(db.execute("SELECT slot, request_id FROM divergences WHERE signature = 'sig-price'").fetchall())
    sink.connections.close()
    assert slots == {1: "n1", 2: "n2", 3: "n3"}


@pytest.mark.parametrize("batches", [[1, 5, 1, 1, 20, 3, 1, 40], [1] * 30])
def test_the_store_keeps_the_examples_reservoir_sampling_picks(store, batches):
    """The SQL that places examples from the signature's stored count keeps exactly what the sampling
    keeps (tests/test_reservoir.py), batch by batch, with the same draws."""
    sink = sink_on(store, examples_per_signature=4)
    sink.close()
    sink.writes.rng = random.Random(11)
    sink.writes.clock = itertools.count(step=LATEST_EVERY).__next__  # every batch refreshes the latest, as the model
    start, n = time.time() - 1000, 0
    with sink.connections.use() as db:
        for index, size in enumerate(batches):
            items = []
            for _ in range(size):
                n += 1
                items.append(("divergence", divergence(at=start + n)))
            sink._apply(db, f"batch-{index}", items)
        slots = {slot: round(at - start) for slot, at in db.execute(
            "SELECT slot, at FROM divergences WHERE signature = 'sig-price'").fetchall()}
    sink.connections.close()
    assert slots == sample(Reservoir(4), batches, random.Random(11))
    assert {1, n} <= set(slots.values())


def test_a_signature_diverging_on_every_batch_refreshes_its_latest_example_once_a_second(store):
    """A refresh redacts whole bodies: within LATEST_EVERY the newest divergence is held back, not made a row,
    and it becomes the latest once due, with nothing after it."""
    sink = sink_on(store, examples_per_signature=2)
    sink.close()
    now, start = [0.0], time.time() - 1000
    sink.writes.clock = lambda: now[0]

    def kept(db) -> dict[int, int]:
        rows = db.execute("SELECT slot, at FROM divergences WHERE signature = 'sig-price'").fetchall()
        return {slot: round(at - start) for slot, at in rows}

    with sink.connections.use() as db:
        for n, at in enumerate((0.0, 0.4, 0.8), start=1):
            now[0] = at * LATEST_EVERY
            sink._apply(db, f"batch-{n}", [("divergence", divergence(at=start + n))])
        assert kept(db) == {1: 1} and not sink.writes.due()  # the first; the newest held back
        now[0] = LATEST_EVERY
        assert sink.writes.due()
        sink._apply(db, "tick", [("latest", False)])
        assert kept(db) == {1: 1, 0: 3}
    sink.connections.close()


def test_comparisons_that_end_out_of_order_keep_the_first_and_the_latest_request(store):
    """A shadow waits for its served side, so divergences reach the writer in any order: the first and the
    latest example go by when the requests came."""
    sink = sink_on(store, examples_per_signature=2)
    sink.close()
    start = time.time() - 100
    with sink.connections.use() as db:
        sink._apply(db, "batch", [("divergence", divergence(at=start + n)) for n in (2, 1, 3)])
        kept = dict(db.execute("SELECT slot, at FROM divergences WHERE signature = 'sig-price'").fetchall())
    sink.connections.close()
    assert {slot: round(at - start) for slot, at in kept.items()} == {1: 1, 0: 3}


def test_the_writer_writes_a_latest_example_held_back_once_due(store, monkeypatch):
    monkeypatch.setattr(writes, "LATEST_EVERY", 0.5)
    sink = sink_on(store, examples_per_signature=2)
    start = time.time() - 100
    sink.record(divergence(at=start))
    sink.record(divergence(at=start + 1))
    sink.flush()
    sink.record(divergence(at=start + 2))  # within a second of the refresh the flush made: held back
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sorted(round(k["at"] - start) for k in query.examples([store], "sig-price", limit=10)) == [0, 2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the latest example held back was not written")
    sink.close()


def test_a_lower_bound_trims_the_examples_kept_before(store):
    sink = sink_on(store, examples_per_signature=5)
    for n in range(8):
        sink.record(divergence(at=time.time() - 100 + n))
        sink.flush()
    sink.close()
    smaller = sink_on(store, examples_per_signature=2)
    smaller.record(divergence())
    smaller.close()
    assert len(query.examples([store], "sig-price", limit=100)) == 2


def test_a_batch_the_store_already_took_is_not_counted_again(store):
    """A batch retried after its connection broke may have been committed already: its id says so."""
    sink = sink_on(store)
    sink.close()
    batch = [("count", "orders", True, time.time(), "/api/orders/{id}", "sig-price"), ("divergence", divergence())]
    with sink.connections.use() as db:
        sink._apply(db, "batch-1", batch)
        sink._apply(db, "batch-1", batch)  # the same batch, retried
        sink._apply(db, "batch-2", batch)
    sink.connections.close()
    [summary] = query.summary([store])
    assert (summary.compared, summary.signatures[0].count) == (2, 2)
    [endpoint] = by_endpoint([store])
    assert (endpoint.tally.compared, endpoint.signatures) == (2, (("sig-price", 2),))


def test_retention_runs_once_for_all_writers(store):
    first, second = sink_on(store, retention_days=1), sink_on(store, retention_days=1)
    first.record(divergence(at=time.time() - 3 * 86400, signature="old"))
    first.flush()
    db = connect(store, readonly=True)
    pruned = db.execute("SELECT value FROM meta WHERE key = 'pruned_at'").fetchone()[0]
    second.record(divergence(signature="fresh"))
    second.flush()
    assert db.execute("SELECT value FROM meta WHERE key = 'pruned_at'").fetchone()[0] == pruned  # not again
    db.close()
    first.close()
    second.close()
    [summary] = query.summary([store])
    assert [s.signature for s in summary.signatures] == ["fresh"]


def test_a_binary_body_with_nul_bytes_is_described_not_stored(store):
    sink = sink_on(store)
    found = divergence()
    legacy = found.legacy._replace(body=b"\x00\x01 not text", headers=(("Content-Type", "text/plain"),))
    sink.record(dataclasses.replace(found, legacy=legacy))
    sink.close()
    [kept] = query.examples([store], "sig-price")
    assert kept["legacy_body"].startswith("[11 bytes of binary content, sha256 ")


def test_acceptances_and_replays_on_either_engine(store):
    sink = sink_on(store)
    sink.record(divergence())
    sink.close()
    db = open_database(store)
    accepted.accept(db, "sig-price", "orders", "prices now include tax", None, "ada", time.time())
    accepted.accept(db, "sig-price", "orders", "tax, as agreed", None, "bob", time.time())  # again: replaces
    db.execute("INSERT INTO replays (divergence_id, signature, route, at, matched, differences) VALUES "
               "('d1', 'sig-price', 'orders', 100.0, 1, '[]'), ('d2', 'sig-price', 'orders', 100.0, 0, '[]')")
    db.close()
    [signature] = query.summary([store])[0].signatures
    assert (signature.accepted_reason, signature.replayed) == ("tax, as agreed", (100.0, 1, 2))
    db = open_database(store)
    assert accepted.withdraw(db, "sig-price") and not accepted.withdraw(db, "sig-price")
    db.close()
    assert "prices now include tax" not in html.render([store])


def test_plan_state_moves_by_compare_and_set(store):
    one, two = StorePlans(store), StorePlans(store)
    state = one.begin("items", 0, now=100.0)
    assert two.begin("items", 50, now=101.0) == state  # made once; the second finds it
    moved = one.move(state, "advance", 10, "gates", "gates", now=102.0)
    assert moved is not None and moved.percent == 10
    assert two.move(state, "advance", 10, "gates", "gates", now=102.5) is None  # judged the old state: lost
    assert two.state("items") == moved
    one.close()
    two.close()
    events = timeline.plan_timeline([store], "items").events
    assert [(e["action"], e["from_percent"], e["to_percent"]) for e in events] == [("start", 0, 0), ("advance", 0, 10)]


def test_evidence_from_several_writers_adds_up(store):
    sinks = [sink_on(store) for _ in range(2)]
    base = float(int(time.time()))
    sinks[0].evidence(evidence(base + 1, {"": 30, "sig-a": 2}))
    sinks[1].evidence(evidence(base + 1, {"": 50, "sig-b": 1}, new_seconds=0.2))
    sinks[1].evidence(evidence(base + 2, {"": 17}, errors=3))
    for sink in sinks:
        sink.close()
    plans = StorePlans(store)
    step = plans.evidence("items", base, base + 2, accepted=frozenset({"sig-b"}))
    plans.close()
    assert (step.compared, step.diverged, step.accepted) == (100, 2, 1)
    assert (step.new.answers, step.new.errors, step.legacy.answers) == (100, 3, 100)
    assert step.new.p99 is not None and step.new.p99 >= 0.2 > step.legacy.p99  # the slow writer's bins count


def test_once_the_only_signature_is_accepted_the_headline_and_the_gates_both_count_nothing_open(store):
    """The walkthrough's case on both engines: the headline said 100.0% while the gates counted 0%."""
    sink = sink_on(store)
    base = float(int(time.time()))
    for _ in range(4):
        sink.count("items", True, base, "/items/{id}", "sig-price")
        sink.record(divergence("items"))
    sink.evidence(evidence(base + 1, {"sig-price": 4}))
    sink.close()

    def numbers() -> tuple:
        [route] = query.summary([store])
        plans = StorePlans(store)
        step = plans.evidence("items", base, base + 1, plans.accepted(time.time()))
        plans.close()
        [gate] = [c for c in advance_checks(Gates(max_divergence_rate=0.01), step) if c.gate == "divergence_rate"]
        [endpoint] = by_endpoint([store])
        return (route.divergence_rate, route.open_rate, route.accepted, route.open, gate.value, gate.ok,
                endpoint.open_rate, endpoint.tally.accepted)

    assert numbers() == (1.0, 1.0, 0, 4, 1.0, False, 1.0, 0)
    db = open_database(store)
    accepted.accept(db, "sig-price", "items", "prices now include tax", None, "tester", time.time())
    db.close()
    assert numbers() == (1.0, 0.0, 4, 0, 0.0, True, 0.0, 4)  # divergence_rate keeps its meaning: all of them


def test_a_store_of_the_current_version_gains_a_new_table_on_the_next_start(store):
    """Tables added without a new schema version (endpoint_comparisons) are made when a start finds them
    missing; what the store held stays."""
    sink = sink_on(store)
    sink.count("orders", False, time.time())
    sink.close()
    db = open_database(store)
    db.execute("DROP TABLE endpoint_comparisons")
    db.close()
    db = open_database(store)
    try:
        assert db.exists("endpoint_comparisons")
    finally:
        db.close()
    assert by_endpoint([store]) == [] and query.summary([store])[0].compared == 1


def test_many_processes_setting_up_an_empty_store_at_once_all_come_up(store):
    failures: list[BaseException] = []

    def open_one() -> None:
        try:
            with Connections(store).use() as db:
                db.execute("SELECT COUNT(*) FROM counts").fetchone()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    db = connect(store, readonly=True)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    db.close()


def test_a_sqlite_file_of_version_1_is_migrated_with_its_latency_bins(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # the tables version 1 made (sqlite-utils), as far as evidence goes
        old.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE gate_answers (route TEXT, second INTEGER, side TEXT, answers INTEGER, errors INTEGER,
                                       bins TEXT, PRIMARY KEY (route, second, side));
            CREATE TABLE gate_comparisons (route TEXT, second INTEGER, signature TEXT, count INTEGER,
                                           PRIMARY KEY (route, second, signature));
        """)
        old.execute("INSERT INTO gate_answers VALUES ('items', 101, 'new', 40, 1, ?)",
                    [json.dumps({str(latency_bin(0.5)): 40})])
    plans = StorePlans(Where(str(path)))
    step = plans.evidence("items", 100, 102, frozenset())
    plans.close()
    assert (step.new.answers, step.new.errors) == (40, 1) and step.new.p99 >= 0.5
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)


@pytest.mark.external
def test_a_store_url_never_shows_its_password(pg_store):
    with_password = pg_store.target.replace("strangler@", "strangler:hunter2@")
    assert "hunter2" not in str(Where(with_password)) and str(Where(with_password)).startswith("postgresql://")


def test_rollout_status_on_an_unreachable_store_says_evidence_is_missing(tmp_path):
    config = tmp_path / "routes.yaml"
    config.write_text(routes_yaml({"legacy": "http://127.0.0.1:9", "new": "http://127.0.0.1:9"}, [route(
        "items", "/api/items", new="new", serve="toggle", toggle={"name": "items-to-new", "stickiness": "header:X-User-Id"},
        parallel_run={"enabled": True}, rollout_plan={"steps": [0, 50, 100]})],
        reports={"database": f"postgresql://strangler@127.0.0.1:{free_port()}/x"}))
    done = subprocess.run([sys.executable, "-m", "proxy", "rollout", "status", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("strangler rollout: evidence missing: the store at postgresql://strangler@127.0.0.1:")
    assert "Connection refused" in done.stderr and "no plan moves until it can" in done.stderr
    summary = subprocess.run([sys.executable, "-m", "proxy", "report", "summary", "--config", str(config)],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
    assert summary.returncode == 1 and "cannot reach the store at postgresql://" in summary.stderr
    assert "Traceback" not in summary.stderr


@pytest.mark.external
def test_the_grants_docs_fleet_md_gives_for_a_shared_database_are_enough(postgres, monkeypatch):
    """A schema of its own in a database the role does not own (docs/fleet.md's second way)."""
    name = f"shared_{uuid.uuid4().hex[:8]}"
    role = f"strangler_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE DATABASE {name}")
    postgres.psql(f"CREATE ROLE {role} LOGIN PASSWORD 'pw' NOSUPERUSER NOCREATEDB NOCREATEROLE",
                  f"ALTER ROLE {role} SET search_path = strangler", f"GRANT CONNECT ON DATABASE {name} TO {role}")
    postgres.psql(f"CREATE SCHEMA strangler AUTHORIZATION {role}", database=name)
    monkeypatch.setenv("TEST_SHARED_PASSWORD", "pw")
    store = Where(postgres.url(role, name), "TEST_SHARED_PASSWORD")
    sink = sink_on(store)
    sink.count("orders", True, time.time())
    sink.record(divergence())
    sink.close()
    assert query.summary([store])[0].compared == 1
    assert postgres.psql("SELECT count(*) FROM strangler.divergences", database=name).strip() == "1"
    assert postgres.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", database=name).strip() == "0"


@pytest.mark.external
def test_tls_to_postgresql_is_the_urls_sslmode(tmp_path, monkeypatch):
    """docs/fleet.md's way: `sslmode=verify-full` and `sslrootcert` in the URL; the store's connections are
    then encrypted and the server's certificate checked, and a server the CA did not sign is not reached."""
    install_postgres()
    server = Postgres()
    server.start()
    try:
        ca = Authority(tmp_path / "ca")
        pair = ca.issue("db", names=("127.0.0.1",))
        server.serve_tls(pair.cert, pair.key)
        server.psql("CREATE ROLE tls_user LOGIN PASSWORD 'pw'", "CREATE DATABASE tls_store OWNER tls_user")
        monkeypatch.setenv("TEST_TLS_PASSWORD", "pw")
        url = server.url("tls_user", "tls_store")
        store = Where(f"{url}?sslmode=verify-full&sslrootcert={ca.pem}", "TEST_TLS_PASSWORD")
        connections = Connections(store)
        with connections.use() as db:
            [row] = db.query("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        connections.close()
        assert row["ssl"] is True and row["version"] in ("TLSv1.2", "TLSv1.3")
        sink = sink_on(store)
        sink.count("orders", True, time.time())
        sink.close()
        assert query.summary([store])[0].compared == 1
        stranger = Authority(tmp_path / "other", "Another CA")
        wrong = Where(f"{url}?sslmode=verify-full&sslrootcert={stranger.pem}", "TEST_TLS_PASSWORD")
        with pytest.raises(StoreUnavailable, match="certificate verify failed"):
            connect(wrong)
    finally:
        server.stop()


def test_a_store_of_version_3_gives_its_examples_slots_first_and_latest_kept(store):
    """Version 3 kept a signature's first examples: the earliest stays its first, the newest becomes its
    latest, and a proxy writing again samples on from there within its bound."""
    sink = sink_on(store, examples_per_signature=5)
    start = time.time() - 100
    for n in range(5):
        sink.record(divergence(at=start + n))
        sink.flush()
    sink.close()
    db = open_database(store)
    db.execute("ALTER TABLE divergences DROP COLUMN slot")
    db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    db.close()
    db = open_database(store)
    slots = dict(db.execute("SELECT slot, at FROM divergences").fetchall())
    db.close()
    assert {slot: round(at - start) for slot, at in slots.items()} == {1: 0, 2: 1, 3: 2, 4: 3, 0: 4}
    again = sink_on(store, examples_per_signature=3)
    again.record(divergence(at=start + 50))
    again.close()
    kept = sorted(round(k["at"] - start) for k in query.examples([store], "sig-price", limit=100))
    assert len(kept) == 3 and kept[0] == 0 and kept[-1] == 50
