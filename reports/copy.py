"""Copying one store into another: a host's SQLite file into the fleet's PostgreSQL, plans and all.

Table by table, in chunks of CHUNK rows, each chunk one transaction sent in one go. A row
the target already holds (same key) is left as it is, so running the copy again adds
nothing; the two tables without a natural key (replays, rollout_events) are matched on
what identifies a row. The source is brought to the current schema first, as a proxy
opening it would. Batches and the schema version are the target's own and are not copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from reports.db import Db

CHUNK = 1000
# Copied in this order; each with the columns that identify a row in a table that has no key of its own.
TABLES: dict[str, tuple[str, ...] | None] = {
    "meta": None, "counts": None, "signatures": None, "divergences": None, "noise": None, "accepted": None,
    "replays": ("divergence_id", "at"), "rollouts": None, "rollout_events": ("route", "at", "action", "to_percent"),
    "gate_comparisons": None, "gate_answers": None, "gate_bins": None, "signature_minutes": None,
    "endpoint_comparisons": None,
    "actions": ("at", "by", "action", "route"), "side_statuses": None,
}
SKIPPED_META = ("schema_version", "pruned_at")  # the target's own
OWN_IDS = {"rollout_events": "id", "actions": "id"}  # made by the target


@dataclass
class Copied:
    table: str
    rows: int  # in the source
    added: int = 0  # new in the target


def copy_store(source: Db, target: Db, progress: Callable[[Copied, int], None] = lambda copied, done: None
               ) -> list[Copied]:
    """Copy every table of `source` into `target`; `progress(table, rows done)` after each chunk."""
    done = []
    for table, key in TABLES.items():
        if not source.exists(table):
            continue
        columns = sorted((source.columns(table) & target.columns(table)) - {OWN_IDS.get(table)})
        copied = Copied(table, source.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        present = _keys(target, table, key) if key else None
        seen = 0
        for chunk in _chunks(source, table, columns):
            fresh = [row for row in chunk if present is None or _key(row, columns, key) not in present]
            if table == "meta":
                fresh = [row for row in fresh if row[columns.index("key")] not in SKIPPED_META]
            copied.added += _insert(target, table, columns, fresh, keyed=key is None)
            seen += len(chunk)
            progress(copied, seen)
        done.append(copied)
    return done


def _chunks(db: Db, table: str, columns: list[str]) -> Iterator[list[tuple[Any, ...]]]:
    cursor = db.execute(f"SELECT {', '.join(columns)} FROM {table}")
    while True:
        rows = cursor.fetchmany(CHUNK)
        if not rows:
            return
        yield [tuple(row) for row in rows]


def _insert(db: Db, table: str, columns: list[str], rows: list[tuple[Any, ...]], keyed: bool) -> int:
    """Insert `rows`, leaving alone those whose key is there already; how many were new."""
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    sql += " ON CONFLICT DO NOTHING" if keyed else ""
    with db.batch():
        cursors = [db.execute(sql, row) for row in rows]
    return sum(cursor.rowcount for cursor in cursors)  # read once the batch is through


def _keys(db: Db, table: str, key: tuple[str, ...]) -> set[tuple[Any, ...]]:
    return {tuple(row) for row in db.execute(f"SELECT {', '.join(key)} FROM {table}")}


def _key(row: tuple[Any, ...], columns: list[str], key: tuple[str, ...] | None) -> tuple[Any, ...]:
    assert key is not None
    return tuple(row[columns.index(name)] for name in key)
