"""The store's tables, one schema for both engines, created on first use and migrated by version.

counts       comparisons and divergences per route and minute (every comparison counts)
signatures   one row per route and set of diverging paths: how often, since when, examples kept
divergences  the kept examples, redacted: request, both answers, the differences
noise        paths learned as noise by probing legacy twice
accepted     signatures people marked as intended differences (reports/accepted.py)
replays      each stored request sent again by `strangler replay`: one row per request and run
batches      the writers' batches already applied: a batch retried after an outage counts once
meta         the redaction key, the schema version, when retention last ran
signature_minutes  each signature's divergences per minute: accepted ones left out of a trend, sparklines
actions      what people did from the review console: who, when, what, why
endpoint_comparisons  comparisons per route, endpoint template, hour and signature ('' for a match)
side_statuses  each side's answers per route, second and status class (reports/sides.py)
rollouts, rollout_events, gate_comparisons, gate_answers, gate_bins: rollout plans (reports/plans.py)

Setting up runs in one transaction holding the store's schema lock, so instances that
start together against an empty database take turns: the first creates and migrates, the
others find it done.
"""

from __future__ import annotations

import json
import random
import secrets
import sqlite3
import time
from typing import Callable, TypeVar

from reports.db import Db, Where, connect

SCHEMA_VERSION = 4
T = TypeVar("T")
# A kept divergence's columns and their types (reports/rows.py makes the rows).
# legacy_target, new_target: what each side was sent, when a route's rewrite made it other than `target`;
# slot: which of its signature's examples it is (reports/reservoir.py).
DIVERGENCE_COLUMNS = {
    "id": "TEXT", "signature": "TEXT", "route": "TEXT", "at": "DOUBLE PRECISION", "request_id": "TEXT",
    "method": "TEXT", "target": "TEXT", "served": "TEXT", "legacy_status": "BIGINT", "new_status": "BIGINT",
    "legacy_error": "TEXT", "new_error": "TEXT", "legacy_ms": "DOUBLE PRECISION", "new_ms": "DOUBLE PRECISION",
    "differences": "TEXT", "noise": "TEXT", "request_headers": "TEXT", "legacy_headers": "TEXT",
    "new_headers": "TEXT", "request_body": "TEXT", "legacy_body": "TEXT", "new_body": "TEXT",
    "legacy_target": "TEXT", "new_target": "TEXT", "slot": "BIGINT"}
TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS counts (route TEXT NOT NULL, minute BIGINT NOT NULL, compared BIGINT NOT NULL, "
    "diverged BIGINT NOT NULL, PRIMARY KEY (route, minute))",
    "CREATE TABLE IF NOT EXISTS signatures (signature TEXT PRIMARY KEY, route TEXT, paths TEXT, "
    "first_seen DOUBLE PRECISION, last_seen DOUBLE PRECISION, count BIGINT, kept BIGINT)",
    "CREATE TABLE IF NOT EXISTS divergences (id TEXT PRIMARY KEY, "
    + ", ".join(f"{name} {kind}" for name, kind in DIVERGENCE_COLUMNS.items() if name != "id") + ")",
    "CREATE INDEX IF NOT EXISTS idx_divergences_route_at ON divergences (route, at)",
    "CREATE INDEX IF NOT EXISTS idx_divergences_signature ON divergences (signature)",
    "CREATE TABLE IF NOT EXISTS noise (route TEXT NOT NULL, path TEXT NOT NULL, count BIGINT, "
    "first_seen DOUBLE PRECISION, last_seen DOUBLE PRECISION, PRIMARY KEY (route, path))",
    "CREATE TABLE IF NOT EXISTS accepted (signature TEXT PRIMARY KEY, route TEXT NOT NULL, reason TEXT NOT NULL, "
    "accepted_at DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION, by TEXT)",
    # `at` is when the run started, the same for every request of one run: a run is read back whole.
    "CREATE TABLE IF NOT EXISTS replays (divergence_id TEXT, signature TEXT, route TEXT, at DOUBLE PRECISION, "
    "matched BIGINT, differences TEXT)",
    "CREATE INDEX IF NOT EXISTS idx_replays_signature_at ON replays (signature, at)",
    "CREATE TABLE IF NOT EXISTS rollouts (route TEXT PRIMARY KEY, percent BIGINT, since DOUBLE PRECISION, "
    "held BIGINT, reason TEXT, version BIGINT)",
    "CREATE TABLE IF NOT EXISTS rollout_events (id {serial}, route TEXT, at DOUBLE PRECISION, action TEXT, "
    "from_percent BIGINT, to_percent BIGINT, reason TEXT, by TEXT, evidence TEXT)",
    "CREATE INDEX IF NOT EXISTS idx_rollout_events_route_at ON rollout_events (route, at)",
    "CREATE TABLE IF NOT EXISTS gate_comparisons (route TEXT NOT NULL, second BIGINT NOT NULL, "
    "signature TEXT NOT NULL, count BIGINT, PRIMARY KEY (route, second, signature))",
    "CREATE TABLE IF NOT EXISTS gate_answers (route TEXT NOT NULL, second BIGINT NOT NULL, side TEXT NOT NULL, "
    "answers BIGINT, errors BIGINT, PRIMARY KEY (route, second, side))",
    "CREATE TABLE IF NOT EXISTS gate_bins (route TEXT NOT NULL, second BIGINT NOT NULL, side TEXT NOT NULL, "
    "bin BIGINT NOT NULL, count BIGINT, PRIMARY KEY (route, second, side, bin))",
    "CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, at DOUBLE PRECISION)",
    *(VERSION_3 := (
        "CREATE TABLE IF NOT EXISTS signature_minutes (signature TEXT NOT NULL, minute BIGINT NOT NULL, "
        "route TEXT NOT NULL, count BIGINT, PRIMARY KEY (signature, minute))",
        "CREATE INDEX IF NOT EXISTS idx_signature_minutes_route ON signature_minutes (route, minute)",
        "CREATE TABLE IF NOT EXISTS actions (id {serial}, at DOUBLE PRECISION NOT NULL, by TEXT NOT NULL, "
        "action TEXT NOT NULL, route TEXT NOT NULL, subject TEXT, reason TEXT NOT NULL, origin TEXT)",
        "CREATE INDEX IF NOT EXISTS idx_actions_route_at ON actions (route, at)",
    )),
    *(VERSION_4 := (
        "CREATE TABLE IF NOT EXISTS side_statuses (route TEXT NOT NULL, second BIGINT NOT NULL, side TEXT NOT NULL, "
        "status_class TEXT NOT NULL, count BIGINT, PRIMARY KEY (route, second, side, status_class))",
    )),
    # Created on every start that finds them missing: a new table needs no new version.
    *(ADDED := (
        "CREATE TABLE IF NOT EXISTS endpoint_comparisons (route TEXT NOT NULL, endpoint TEXT NOT NULL, "
        "hour BIGINT NOT NULL, signature TEXT NOT NULL, count BIGINT, PRIMARY KEY (route, endpoint, hour, signature))",
    )),
)


def open_database(place: Where | str) -> Db:
    """A store for reading and writing, set up (tables created, migrated) when it is not yet."""
    db = connect(place)
    try:
        retrying_locks(lambda: set_up(db))
    except BaseException:
        db.close()
        raise
    return db


def open_for_reading(place: Where | str) -> Db:
    """A store to read (a SQLite file is never created here)."""
    return connect(place, readonly=True)


def set_up(db: Db) -> None:
    """Create what is missing and migrate to SCHEMA_VERSION, holding the schema lock."""
    if db.dialect == "sqlite":
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
    with db.transaction():
        db.lock()
        version = _version(db)
        if version is None:  # a new store: the whole schema at once
            for statement in TABLES:
                db.execute(statement.format(serial=type(db).SERIAL))
        elif version < SCHEMA_VERSION:
            for migrate in MIGRATIONS[version:SCHEMA_VERSION]:
                migrate(db)
        for statement in ADDED:
            db.execute(statement.format(serial=type(db).SERIAL))
        db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE "
                   "SET value = excluded.value", [str(SCHEMA_VERSION)])


def _version(db: Db) -> int | None:
    if not db.exists("meta"):
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None


def _to_2(db: Db) -> None:
    """Version 1 (sqlite-utils' tables) to 2: latency bins a row each, so writers add to them without
    reading them first; applied batches remembered; what a rewritten side was sent; every table present."""
    for statement in TABLES:
        if "gate_answers" not in statement:
            db.execute(statement.format(serial=type(db).SERIAL))
    for column in ("legacy_target", "new_target"):
        if column not in db.columns("divergences"):
            db.execute(f"ALTER TABLE divergences ADD COLUMN {column} TEXT")
    if db.exists("gate_answers") and "bins" in db.columns("gate_answers"):
        for route, second, side, bins in db.execute("SELECT route, second, side, bins FROM gate_answers").fetchall():
            for index, count in json.loads(bins or "{}").items():
                db.execute("INSERT INTO gate_bins (route, second, side, bin, count) VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT (route, second, side, bin) DO UPDATE SET count = gate_bins.count + "
                           "excluded.count", [route, second, side, int(index), count])


def _to_3(db: Db) -> None:
    """Version 2 to 3: divergences per signature and minute, and the console's actions."""
    for statement in VERSION_3:
        db.execute(statement.format(serial=type(db).SERIAL))


# A divergence's place in its signature's order of arrival, the latest last (the id breaks ties).
_EARLIER = ("FROM divergences AS other WHERE other.signature = divergences.signature AND (other.at {0} divergences.at "
            "OR (other.at = divergences.at AND other.id {0} divergences.id))")


def _to_4(db: Db) -> None:
    """Version 3 to 4: each side's status classes; each kept example gets its slot (reports/reservoir.py).
    The examples kept so far were a signature's first ones: the earliest becomes its first, the newest
    its latest, the others fill the reservoir in order, as sampling would have put them."""
    for statement in VERSION_4:
        db.execute(statement)
    if "slot" not in db.columns("divergences"):
        db.execute("ALTER TABLE divergences ADD COLUMN slot BIGINT")
    db.execute(f"UPDATE divergences SET slot = (SELECT COUNT(*) {_EARLIER.format('<')})")  # 0 for the first
    db.execute(f"UPDATE divergences SET slot = -1 WHERE slot > 0 AND NOT EXISTS (SELECT 1 {_EARLIER.format('>')})")
    db.execute("UPDATE divergences SET slot = slot + 1 WHERE slot >= 0")  # first: 1, the rest from 2
    db.execute("UPDATE divergences SET slot = 0 WHERE slot = -1")  # latest


MIGRATIONS: tuple[Callable[[Db], None], ...] = (lambda db: None, _to_2, _to_3, _to_4)  # MIGRATIONS[v] moves v to v + 1


def redaction_key(db: Db) -> bytes:
    """The store's own HMAC key, made once; hashes stay comparable across processes and instances."""
    db.execute("INSERT INTO meta (key, value) VALUES ('redaction_key', ?) ON CONFLICT (key) DO NOTHING",
               [secrets.token_hex(32)])
    return bytes.fromhex(db.execute("SELECT value FROM meta WHERE key = 'redaction_key'").fetchone()[0])


def retrying_locks(step: Callable[[], T], attempts: int = 20) -> T:
    """Run `step`, again after a short pause when another process holds a SQLite lock it did not wait
    out. SQLite's busy timeout covers most waits, but not all: two processes setting up one new file
    (switching it to WAL) can see `database is locked` at once."""
    for attempt in range(attempts):
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1) + random.random() * 0.02)
    raise AssertionError("unreachable")
