"""The store's two engines behind one connection: SQLite (sqlite-utils) for one host, PostgreSQL (psycopg 3)
for a fleet.

Everything above this module writes one SQL: `?` placeholders, `ON CONFLICT ... DO
UPDATE/NOTHING` upserts, `excluded.` columns, `RETURNING`, and types both engines read
(TEXT, BIGINT, DOUBLE PRECISION). What differs (placeholders, autoincrement ids, locks,
how a table's existence is asked, how rows come back) differs only here.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import psycopg
import sqlite_utils
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from proxy.model import ReportsSpec
from proxy.model.config import POSTGRES_SCHEMES
from proxy.model.errors import one_line

CONNECT_TIMEOUT = 5  # seconds
STATEMENT_TIMEOUT = 15.0  # seconds: a batch that takes longer has met a store in trouble
PASSWORD_IN_URL = re.compile(r"^(postgres(?:ql)?://[^/@:]*):[^/@]*@", re.I)  # a --db URL may hold one


@dataclass(frozen=True, slots=True)
class Where:
    """A store's address: a SQLite file, or a PostgreSQL URL and the variable that holds its password
    (never the password itself; libpq's own PGPASSWORD and ~/.pgpass work too)."""

    target: str
    password_env: str | None = None

    @classmethod
    def of(cls, spec: ReportsSpec) -> Where:
        """routes.yaml's store."""
        return cls(spec.database, spec.password_env)

    @property
    def postgres(self) -> bool:
        return self.target.lower().startswith(POSTGRES_SCHEMES)

    @property
    def engine(self) -> str:
        return "postgresql" if self.postgres else "sqlite"

    @property
    def present(self) -> bool:
        """Whether there is a store to read (a SQLite file is not made by reading; a server is assumed)."""
        return self.postgres or Path(self.target).exists()

    def __str__(self) -> str:
        return PASSWORD_IN_URL.sub(r"\1:***@", self.target)


def where(place: Where | str) -> Where:
    return place if isinstance(place, Where) else Where(place)


class StoreUnavailable(ConnectionError):
    """The store cannot be reached (a PostgreSQL server down, refusing us, or not answering)."""


# What a store can raise at a command that reads or writes it: said in a line, not a traceback.
STORE_ERRORS = (StoreUnavailable, psycopg.Error, sqlite3.Error)


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """One connection to a store, either engine."""

    dialect: str  # sqlite | postgres

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def exists(self, table: str) -> bool: ...

    def columns(self, table: str) -> set[str]: ...

    def insert(self, table: str, row: dict[str, Any]) -> None: ...

    def transaction(self) -> Any:
        """A context: one write transaction, committed at its end, rolled back when it raises."""

    def batch(self) -> Any:
        """A transaction whose statements go to the store together (one round trip with PostgreSQL):
        inside it, read no results."""

    def lock(self) -> None:
        """Inside a transaction: hold the store's schema lock until it ends (one instance migrates)."""

    def duplicate(self, exc: BaseException, table: str) -> bool:
        """Whether `exc` says a row with that key is already in `table`."""

    def close(self) -> None: ...


class SqliteDb:
    """SQLite through sqlite-utils; WAL, so several processes of one host write one file."""

    dialect = "sqlite"
    SERIAL = "INTEGER PRIMARY KEY"

    def __init__(self, path: str, readonly: bool = False) -> None:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0, check_same_thread=False)
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fresh = not Path(path).exists()
            conn = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
            if fresh:
                os.chmod(path, 0o600)  # bodies are redacted, but still nobody else's business
        self.db = sqlite_utils.Database(conn)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.db.execute(sql, list(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, list(params)))

    def exists(self, table: str) -> bool:
        return self.db[table].exists()

    def columns(self, table: str) -> set[str]:
        return set(self.db[table].columns_dict)

    def insert(self, table: str, row: dict[str, Any]) -> None:
        self.db[table].insert(row)

    @contextmanager
    def transaction(self) -> Iterator[SqliteDb]:
        # BEGIN IMMEDIATE: the write lock at once, no upgrade from a read lock to deadlock on
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def batch(self) -> Any:
        return self.transaction()  # in-process: a round trip costs nothing

    def lock(self) -> None:
        pass  # BEGIN IMMEDIATE holds the file's write lock already

    def duplicate(self, exc: BaseException, table: str) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and f"UNIQUE constraint failed: {table}." in str(exc)

    def close(self) -> None:
        self.db.close()


class PostgresDb:
    """PostgreSQL through psycopg 3: autocommit, with explicit transactions; `?` becomes `%s`."""

    dialect = "postgres"
    SERIAL = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    LOCK = 0x5374_7261  # the advisory lock a schema migration holds

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    def connect(cls, place: Where) -> PostgresDb:
        return cls(psycopg.connect(place.target, **connection_options(place)))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.conn.execute(_pg(sql), list(params) or None)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cursor:
            cursor.execute(_pg(sql), list(params) or None)
            return cursor.fetchall()

    def exists(self, table: str) -> bool:
        return self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()[0]

    def columns(self, table: str) -> set[str]:
        return {row[0] for row in self.conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "AND table_schema = current_schema()", [table])}

    def insert(self, table: str, row: dict[str, Any]) -> None:
        columns = ", ".join(row)
        self.conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(row))})",
                          list(row.values()))

    @contextmanager
    def transaction(self) -> Iterator[PostgresDb]:
        with self.conn.transaction():
            yield self

    @contextmanager
    def batch(self) -> Iterator[PostgresDb]:
        # Pipeline mode: the statements are sent without waiting for each answer, and the
        # answers read once, at the end (an error among them rolls the whole batch back).
        with self.conn.pipeline(), self.conn.transaction():
            yield self

    def lock(self) -> None:
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", [self.LOCK])

    def duplicate(self, exc: BaseException, table: str) -> bool:
        return isinstance(exc, errors.UniqueViolation) and exc.diag.table_name == table

    def close(self) -> None:
        self.conn.close()


def connect(place: Where | str, readonly: bool = False) -> Db:
    """A connection to the store at `place` (a SQLite file is created unless `readonly`)."""
    place = where(place)
    if place.postgres:
        try:
            return PostgresDb.connect(place)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach the store at {place}: {one_line(exc)}") from None
    if readonly and not Path(place.target).exists():
        raise FileNotFoundError(f"no divergence database at {place.target}")
    return SqliteDb(place.target, readonly)


def connection_options(place: Where) -> dict[str, Any]:
    """psycopg's connect() arguments beside the URL: autocommit (transactions are explicit), the
    password from its variable, and bounds on a store that stops answering: connecting, a statement,
    and TCP itself (a host that vanished is noticed in seconds, not in the kernel's minutes). Whatever
    the URL says (sslmode above all) stands."""
    given = conninfo_to_dict(place.target)
    bounds = {"connect_timeout": CONNECT_TIMEOUT, "options": f"-c statement_timeout={int(STATEMENT_TIMEOUT * 1000)}",
              "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
              "tcp_user_timeout": int(STATEMENT_TIMEOUT * 1000), "application_name": "strangler"}
    options: dict[str, Any] = {"autocommit": True, **{k: v for k, v in bounds.items() if k not in given}}
    if place.password_env and os.environ.get(place.password_env):
        options["password"] = os.environ[place.password_env]
    return options


@functools.lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (the store's SQL has no `?` or `%` anywhere else)."""
    return sql.replace("%", "%%").replace("?", "%s")

