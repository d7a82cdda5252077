"""The divergence database: its tables, created when missing, in WAL mode so several proxies can write.

counts       comparisons and divergences per route and minute (every comparison counts)
signatures   one row per route and set of diverging paths: how often, since when, examples kept
divergences  the kept examples, redacted: request, both answers, the differences
noise        paths learned as noise by probing legacy twice
accepted     signatures people marked as intended differences (reports/accepted.py)
replays      each stored request sent again by `strangler replay`: one row per request and run
meta         the redaction key and the schema version
rollouts, rollout_events, gate_comparisons, gate_answers: rollout plans (see reports/plans.py)
"""

from __future__ import annotations

import os
import random
import secrets
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import sqlite_utils

SCHEMA_VERSION = "1"
# Columns added since version 1 first shipped: NULL in older rows, added to older files when opened.
# legacy_target, new_target: what each side was sent, when a route's rewrite made it other than `target`.
ADDED_COLUMNS = {"divergences": ("legacy_target", "new_target")}
T = TypeVar("T")


def open_database(path: str) -> sqlite_utils.Database:
    """Open (creating if needed) a divergence database for reading and writing."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fresh = not Path(path).exists()
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
    if fresh:
        os.chmod(path, 0o600)  # bodies are redacted, but still nobody else's business
    db = sqlite_utils.Database(conn)
    try:
        retrying_locks(lambda: _set_up(db))
    except BaseException:
        conn.close()
        raise
    return db


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One write transaction, taken at once (BEGIN IMMEDIATE: no lock upgrade to deadlock on),
    committed when the block ends, rolled back when it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def retrying_locks(step: Callable[[], T], attempts: int = 20) -> T:
    """Run `step`, again after a short pause when another process holds a lock it did not wait out.

    SQLite's busy timeout covers most waits, but not all: two processes setting up one
    new file (switching it to WAL) can see `database is locked` at once."""
    for attempt in range(attempts):
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1) + random.random() * 0.02)
    raise AssertionError("unreachable")


def _set_up(db: sqlite_utils.Database) -> None:
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    _create(db)
    _create_plans(db)


def _create_plans(db: sqlite_utils.Database) -> None:
    db["rollouts"].create({"route": str, "percent": int, "since": float, "held": int, "reason": str,
                           "version": int}, pk="route", if_not_exists=True)
    db["rollout_events"].create({"id": int, "route": str, "at": float, "action": str, "from_percent": int,
                                 "to_percent": int, "reason": str, "by": str, "evidence": str},
                                pk="id", if_not_exists=True)
    db["rollout_events"].create_index(["route", "at"], if_not_exists=True)
    db["gate_comparisons"].create({"route": str, "second": int, "signature": str, "count": int},
                                  pk=("route", "second", "signature"), if_not_exists=True)
    db["gate_answers"].create({"route": str, "second": int, "side": str, "answers": int, "errors": int,
                               "bins": str}, pk=("route", "second", "side"), if_not_exists=True)


def open_for_reading(path: str) -> sqlite_utils.Database:
    if not Path(path).exists():
        raise FileNotFoundError(f"no divergence database at {path}")
    return sqlite_utils.Database(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0))


def redaction_key(db: sqlite_utils.Database) -> bytes:
    """The database's own HMAC key, made once; hashes stay comparable across processes."""
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('redaction_key', ?)", [secrets.token_hex(32)])
    return bytes.fromhex(db.execute("SELECT value FROM meta WHERE key = 'redaction_key'").fetchone()[0])


def _create(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", [SCHEMA_VERSION])
    db["counts"].create({"route": str, "minute": int, "compared": int, "diverged": int},
                        pk=("route", "minute"), if_not_exists=True)
    db["signatures"].create({"signature": str, "route": str, "paths": str, "first_seen": float,
                             "last_seen": float, "count": int, "kept": int}, pk="signature", if_not_exists=True)
    db["divergences"].create({
        "id": str, "signature": str, "route": str, "at": float, "request_id": str, "method": str, "target": str,
        "served": str, "legacy_status": int, "new_status": int, "legacy_error": str, "new_error": str,
        "legacy_ms": float, "new_ms": float, "differences": str, "noise": str, "request_headers": str,
        "legacy_headers": str, "new_headers": str, "request_body": str, "legacy_body": str, "new_body": str,
        **dict.fromkeys(ADDED_COLUMNS["divergences"], str),
    }, pk="id", if_not_exists=True)
    _add_columns(db, "divergences")
    db["divergences"].create_index(["route", "at"], if_not_exists=True)
    db["divergences"].create_index(["signature"], if_not_exists=True)
    db["noise"].create({"route": str, "path": str, "count": int, "first_seen": float, "last_seen": float},
                       pk=("route", "path"), if_not_exists=True)
    db["accepted"].create({"signature": str, "route": str, "reason": str, "accepted_at": float, "expires": float,
                           "by": str}, pk="signature", not_null={"route", "reason", "accepted_at"},
                          if_not_exists=True)
    # `at` is when the run started, the same for every request of one run: a run is read back whole.
    db["replays"].create({"divergence_id": str, "signature": str, "route": str, "at": float, "matched": int,
                          "differences": str}, if_not_exists=True)
    db["replays"].create_index(["signature", "at"], if_not_exists=True)


def _add_columns(db: sqlite_utils.Database, table: str) -> None:
    """The columns added since a file was made; another process adding them at the same moment is fine."""
    for column in ADDED_COLUMNS[table]:
        if column in db[table].columns_dict:
            continue
        try:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise
