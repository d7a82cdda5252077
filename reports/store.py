"""The one writer of a store: a bounded queue in front, a thread behind, batches between.

Request code only ever appends to the queue (no lock, no wake-up: the writer collects
what is there every BATCH_SECONDS); when it is full the item is dropped and counted. The
writer applies a batch in one transaction, marked with the batch's id, so a batch retried
after an outage is applied once. While the store is down (PostgreSQL stopped, a disk
full), batches wait, bounded together with the queue; the writer reconnects with backoff,
logs one ERROR when the outage starts and one line when it ends, and never reaches a
request. Several proxy processes, on one host or many, write one store.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Sequence

from proxy.model import Divergence, ReportsSpec
from proxy.model.errors import one_line
from proxy.model.evidence import EvidenceBatch
from reports.connections import Connections
from reports.db import Db, Where
from reports.health import Health
from reports.plans import prune_evidence
from reports.redact import Redactor
from reports.schema import redaction_key, retrying_locks
from reports.writes import Writes

log = logging.getLogger("strangler.reports")
STOP = object()
BATCH, BATCH_SECONDS, PRUNE_EVERY = 500, 0.2, 60.0
BACKOFF_FIRST, BACKOFF_MOST = 0.5, 30.0  # seconds between reconnects while the store is down


class StoreSink:
    """A DivergenceSink writing to either engine (reports/db.py)."""

    def __init__(self, spec: ReportsSpec, connections: Connections | None = None,
                 on_problem: Callable[[str], None] = lambda kind: None, queue_size: int = 10_000) -> None:
        self.spec, self.on_problem = spec, on_problem
        self.connections = connections or Connections(Where(spec.database, spec.password_env))
        self._owns = connections is None
        self.queue_size = queue_size
        self.health = Health(reached=not self.connections.where.postgres)  # a file is there to be made
        self._queue: deque[Any] = deque()  # appended by request code, emptied by the writer
        self._waiting: deque[tuple[str, float, list[Any]]] = deque()  # batches the store has not taken yet
        self._waiting_items = 0
        self._wake = threading.Event()  # for flush and close, which should not wait a batch out
        self._thread = threading.Thread(target=self._run, name="divergence-writer", daemon=True)
        self._redactor: Redactor | None = None
        self.writes = Writes(spec)
        self._pruned = 0.0

    def count(self, route: str, diverged: bool, at: float, endpoint: str | None = None, signature: str = "") -> None:
        self._put(("count", route, diverged, at, endpoint, signature))

    def record(self, divergence: Divergence) -> None:
        self._put(("divergence", divergence))

    def learn_noise(self, route: str, paths: Sequence[str], at: float) -> None:
        self._put(("noise", route, tuple(paths), at))

    def evidence(self, batch: EvidenceBatch) -> None:
        self._put(("evidence", batch))

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Write what is queued (unless the store is down), then stop."""
        if self._thread.is_alive():
            self._queue.append(STOP)
            self._wake.set()
            self._thread.join(timeout=30)
        if self._owns:
            self.connections.close()

    def status(self) -> dict[str, Any]:
        """For /status: where the store is (never its password) and how the writer is faring."""
        return {"database": str(self.connections.where), "engine": self.connections.where.engine,
                **self.health.as_json(), "waiting": self.held}

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is written (for tests and the CLI)."""
        done = threading.Event()
        self._queue.append(("flush", done))
        self._wake.set()
        done.wait(timeout)

    @property
    def held(self) -> int:
        """Items queued or waiting for the store."""
        return len(self._queue) + self._waiting_items

    def _put(self, item: tuple[Any, ...]) -> None:
        if self.held >= self.queue_size:
            self.on_problem("store_down" if self.health.down_since else "queue_full")
        else:
            self._queue.append(item)

    def _run(self) -> None:
        if self.connections.where.postgres:
            self._drain()  # reach the server (and set its schema up) at start, not at the first divergence
        stopping = False
        while True:
            batch = self._next_batch()
            stopping = stopping or STOP in batch
            data = [item for item in batch if item is not STOP and item[0] != "flush"]
            if len(data) < len(batch):  # a flush or the end: every latest example held back too
                data.append(("latest", True))
            if data:
                self._waiting.append((uuid.uuid4().hex, time.time(), data))
                self._waiting_items += len(data)
                self.health.oldest_waiting = self._waiting[0][1]
            self._drain()
            for item in batch:
                if item is not STOP and item[0] == "flush":
                    item[1].set()
            if stopping and (not self._waiting or self.health.down_since):
                return

    def _drain(self) -> None:
        """Apply the waiting batches, oldest first; on failure keep them, and back off."""
        try:
            with self.connections.use() as db:
                if self._redactor is None:
                    self._redactor = Redactor(retrying_locks(lambda: redaction_key(db)))
                wrote = bool(self._waiting)
                while self._waiting:
                    batch_id, _, batch = self._waiting[0]
                    retrying_locks(lambda: self._apply(db, batch_id, batch))  # noqa: B023 - called at once
                    self._waiting.popleft()
                    self._waiting_items -= len(batch)
                    self.health.oldest_waiting = self._waiting[0][1] if self._waiting else None
                if wrote:
                    self._prune(db)
            self._recovered()
        except Exception as exc:  # noqa: BLE001 - whatever the store says, requests go on
            self._failed(exc)
            self._wake.wait(self.health.backoff(BACKOFF_FIRST, BACKOFF_MOST))
            self._wake.clear()

    def _next_batch(self) -> list[Any]:
        """What was queued, up to BATCH items, collected every BATCH_SECONDS (at once when woken, or when a
        whole batch is there): under steady traffic a transaction then carries a fifth of a second's items,
        and its fixed cost is paid five times a second, not every few comparisons."""
        batch: list[Any] = []
        while not batch:
            if len(self._queue) < BATCH:
                if not self._queue and self._waiting:
                    return batch  # the store is behind: try it again rather than wait for more
                self._wake.wait(BATCH_SECONDS)
                self._wake.clear()
                if not self._queue and self.writes.due():
                    return [("latest", False)]  # a latest example held back, and nothing came after it
            while self._queue and len(batch) < BATCH:
                batch.append(self._queue.popleft())
                if batch[-1] is STOP:
                    break
        return batch

    def _apply(self, db: Db, batch_id: str, batch: list[Any]) -> None:
        """One batch in one transaction, sent in one go; its id first, so that a batch the store took
        before the connection broke fails as a duplicate here rather than counting twice."""
        assert self._redactor is not None
        try:
            with db.batch():
                db.execute("INSERT INTO batches (id, at) VALUES (?, ?)", [batch_id, time.time()])
                attempts = self.writes.batch(db, batch, self._redactor)
        except Exception as exc:
            if not db.duplicate(exc, "batches"):
                raise
            return
        self.writes.kept(attempts)

    def _prune(self, db: Db) -> None:
        """Retention: what is older than `retention_days` goes, examples and counts alike; once a
        PRUNE_EVERY for the whole fleet (the instance that moves `pruned_at` first does it)."""
        now = time.time()
        if now - self._pruned < PRUNE_EVERY:
            return
        self._pruned, cutoff = now, now - self.spec.retention_days * 86400
        with db.transaction():
            db.execute("INSERT INTO meta (key, value) VALUES ('pruned_at', '0') ON CONFLICT (key) DO NOTHING")
            if not db.execute("UPDATE meta SET value = ? WHERE key = 'pruned_at' AND CAST(value AS DOUBLE PRECISION) "
                              "< ?", [repr(now), now - PRUNE_EVERY]).rowcount:
                return  # another instance pruned a moment ago
            for table, column, when in (("divergences", "at", cutoff), ("signatures", "last_seen", cutoff),
                                        ("counts", "minute", int(cutoff // 60)), ("noise", "last_seen", cutoff),
                                        ("signature_minutes", "minute", int(cutoff // 60)),
                                        ("endpoint_comparisons", "hour", int(cutoff // 3600)),
                                        ("replays", "at", cutoff), ("batches", "at", now - 86400)):
                db.execute(f"DELETE FROM {table} WHERE {column} < ?", [when])
            prune_evidence(db, cutoff)

    def _failed(self, exc: Exception) -> None:
        self.on_problem("write_failed")
        if self.health.failed(one_line(exc)):
            log.error("cannot write the divergence store; requests go on, and evidence waits "
                      f"(up to {self.queue_size} items)", extra={"store": str(self.connections.where),
                                                                 "problem": one_line(exc)})

    def _recovered(self) -> None:
        down = self.health.succeeded()
        if down is not None:
            log.info("the divergence store is writable again", extra={
                "store": str(self.connections.where), "down_seconds": round(time.time() - down, 1),
                "waiting": self.held})

