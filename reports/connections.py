"""One process's connections to the store, shared by its writer thread and its rollout plans.

PostgreSQL: a psycopg_pool pool, which checks a connection before lending it, replaces
broken ones and reconnects with backoff in the background. SQLite: connections to the
file kept for reuse (a connection is one thread's at a time; a transaction is the
connection's, so two threads never share one). Either way the schema is set up once,
by the first connection that works (reports/schema.py).
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from proxy.model.errors import one_line
from reports.db import CONNECT_TIMEOUT, Db, PostgresDb, SqliteDb, StoreUnavailable, Where, connection_options
from reports.schema import retrying_locks, set_up

POOL_SIZE = 2  # the writer's connection and the plans'


class Connections:
    def __init__(self, place: Where) -> None:
        self.where = place
        self._ready = False
        self._lock = threading.Lock()
        self._idle: list[SqliteDb] = []
        self._pool: Any = None

    @contextmanager
    def use(self) -> Iterator[Db]:
        """A connection for the span of the block; one that failed inside it is not reused.
        Raises whatever the store says (down, timed out); the caller decides what that means."""
        if self.where.postgres:
            with self._pooled() as conn:
                yield self._ready_db(PostgresDb(conn))
            return
        db = self._sqlite()
        try:
            yield self._ready_db(db)
        except BaseException:
            db.close()
            raise
        with self._lock:
            self._idle.append(db)

    def close(self) -> None:
        with self._lock:
            for db in self._idle:
                db.close()
            self._idle.clear()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=5.0)

    def _ready_db(self, db: Db) -> Db:
        if not self._ready:
            retrying_locks(lambda: set_up(db))
            self._ready = True
        return db

    def _sqlite(self) -> SqliteDb:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return SqliteDb(self.where.target)

    @contextmanager
    def _pooled(self) -> Iterator[Any]:
        with self._lock:
            if self._pool is None:
                self._pool = _pool(self.where)
        try:
            conn = self._pool.getconn()
        except PoolTimeout:
            raise StoreUnavailable(f"cannot reach the store at {self.where}: {why_not(self.where)}") from None
        try:
            with conn:
                yield conn
        finally:
            self._pool.putconn(conn)


def why_not(place: Where) -> str:
    """Why the pool has no connection to lend: what connecting says now (the pool keeps it to itself)."""
    try:
        psycopg.connect(place.target, **connection_options(place)).close()
    except psycopg.Error as exc:
        return one_line(exc)
    return f"no connection free within {CONNECT_TIMEOUT} s"


def _pool(place: Where) -> Any:
    # The pool's own log says each failed reconnect, every few seconds of an outage; the
    # store's users log an outage once, at each end.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    pool = ConnectionPool(place.target, kwargs=connection_options(place), min_size=1, max_size=POOL_SIZE,
                          open=False, check=ConnectionPool.check_connection, timeout=CONNECT_TIMEOUT,
                          reconnect_timeout=float("inf"), num_workers=1, name="strangler-store")
    pool.open(wait=False)  # a store that is down now must not hold up start-up
    return pool
