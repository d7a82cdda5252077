"""The one writer of a divergence database: a bounded queue in front, a thread behind, batches between.

Request code only ever appends to the queue (no lock, no wake-up: the writer collects
what is there every BATCH_SECONDS); when it is full the item is dropped and counted.
Writes happen in a thread, many to one transaction; a failing or full database is
logged once and counted, and never reaches a request. Several proxy processes may
write to one file (WAL, a busy timeout, one short transaction per batch).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter as Tally
from collections import deque
from functools import partial
from typing import Any, Callable, Sequence

import sqlite_utils

from proxy.model import Divergence, ReportsSpec
from proxy.model.evidence import EvidenceBatch
from proxy.model.jsonpath import generalize
from reports.plans import prune_evidence, write_evidence
from reports.redact import Redactor
from reports.rows import divergence_row
from reports.schema import open_database, redaction_key, retrying_locks, transaction

log = logging.getLogger("strangler.reports")
STOP = object()
BATCH, BATCH_SECONDS, PRUNE_EVERY = 500, 0.2, 60.0


class SqliteSink:
    """A DivergenceSink writing to SQLite with sqlite-utils."""

    def __init__(self, spec: ReportsSpec, on_problem: Callable[[str], None] = lambda kind: None,
                 queue_size: int = 10_000) -> None:
        self.spec, self.on_problem = spec, on_problem
        self.queue_size = queue_size
        self._queue: deque[Any] = deque()  # appended by request code, emptied by the writer
        self._wake = threading.Event()  # for flush and close, which should not wait a batch out
        self._thread = threading.Thread(target=self._run, name="divergence-writer", daemon=True)
        self._failing = False
        self._pruned = 0.0

    def count(self, route: str, diverged: bool, at: float) -> None:
        self._put(("count", route, diverged, at))

    def record(self, divergence: Divergence) -> None:
        self._put(("divergence", divergence))

    def learn_noise(self, route: str, paths: Sequence[str], at: float) -> None:
        self._put(("noise", route, tuple(paths), at))

    def evidence(self, batch: EvidenceBatch) -> None:
        self._put(("evidence", batch))

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.append(STOP)
            self._wake.set()
            self._thread.join(timeout=30)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is written (for tests and the CLI)."""
        done = threading.Event()
        self._queue.append(("flush", done))
        self._wake.set()
        done.wait(timeout)

    def _put(self, item: tuple[Any, ...]) -> None:
        if len(self._queue) >= self.queue_size:
            self.on_problem("queue_full")
        else:
            self._queue.append(item)

    def _run(self) -> None:
        db, redactor = None, None
        while True:
            batch = self._next_batch()
            try:
                if db is None:
                    db = open_database(self.spec.database)
                    redactor = Redactor(retrying_locks(partial(redaction_key, db)))
                retrying_locks(partial(self._write, db, redactor, [b for b in batch if b is not STOP]))
                self._recovered()
            except Exception as exc:  # noqa: BLE001 - whatever the database says, requests go on
                db = self._failed(db, exc, batch)
            for item in batch:
                if item is not STOP and item[0] == "flush":
                    item[1].set()
            if STOP in batch:
                return

    def _next_batch(self) -> list[Any]:
        """What was queued, up to BATCH items, collected every BATCH_SECONDS (at once when woken)."""
        batch: list[Any] = []
        while not batch:
            if not self._queue:
                self._wake.wait(BATCH_SECONDS)
                self._wake.clear()
            while self._queue and len(batch) < BATCH:
                batch.append(self._queue.popleft())
                if batch[-1] is STOP:
                    break
        return batch

    def _write(self, db: sqlite_utils.Database, redactor: Redactor, batch: list[Any]) -> None:
        with transaction(db):
            self._counts(db, [item for item in batch if item[0] == "count"])
            for item in batch:
                if item[0] == "divergence":
                    self._divergence(db, redactor, item[1])
                elif item[0] == "noise":
                    self._noise(db, *item[1:])
                elif item[0] == "evidence":
                    write_evidence(db, item[1])
            self._prune(db)

    def _counts(self, db: sqlite_utils.Database, items: list[Any]) -> None:
        compared, diverged = Tally(), Tally()
        for _, route, did, at in items:
            compared[(route, int(at // 60))] += 1
            diverged[(route, int(at // 60))] += int(did)
        for (route, minute), n in compared.items():
            db.execute("INSERT INTO counts (route, minute, compared, diverged) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (route, minute) DO UPDATE SET compared = compared + excluded.compared, "
                       "diverged = diverged + excluded.diverged", [route, minute, n, diverged[(route, minute)]])

    def _divergence(self, db: sqlite_utils.Database, redactor: Redactor, divergence: Divergence) -> None:
        paths = json.dumps(sorted({generalize(d.path) for d in divergence.differences}))
        at = divergence.request.at
        db.execute("INSERT INTO signatures (signature, route, paths, first_seen, last_seen, count, kept) "
                   "VALUES (?, ?, ?, ?, ?, 1, 0) ON CONFLICT (signature) DO UPDATE SET count = count + 1, "
                   "last_seen = max(last_seen, excluded.last_seen)", [divergence.signature, divergence.route, paths,
                                                                        at, at])
        kept = db.execute("SELECT kept FROM signatures WHERE signature = ?", [divergence.signature]).fetchone()[0]
        if kept < self.spec.examples_per_signature:
            db["divergences"].insert(divergence_row(divergence, redactor, self.spec.max_body))
            db.execute("UPDATE signatures SET kept = kept + 1 WHERE signature = ?", [divergence.signature])

    def _noise(self, db: sqlite_utils.Database, route: str, paths: tuple[str, ...], at: float) -> None:
        for path in paths:
            db.execute("INSERT INTO noise (route, path, count, first_seen, last_seen) VALUES (?, ?, 1, ?, ?) "
                       "ON CONFLICT (route, path) DO UPDATE SET count = count + 1, last_seen = excluded.last_seen",
                       [route, path, at, at])

    def _prune(self, db: sqlite_utils.Database) -> None:
        """Retention: what is older than `retention_days` goes, examples and counts alike."""
        now = time.time()
        if now - self._pruned < PRUNE_EVERY:
            return
        self._pruned, cutoff = now, now - self.spec.retention_days * 86400
        db.execute("DELETE FROM divergences WHERE at < ?", [cutoff])
        db.execute("DELETE FROM signatures WHERE last_seen < ?", [cutoff])
        db.execute("DELETE FROM counts WHERE minute < ?", [int(cutoff // 60)])
        db.execute("DELETE FROM noise WHERE last_seen < ?", [cutoff])
        db.execute("DELETE FROM replays WHERE at < ?", [cutoff])
        prune_evidence(db, cutoff)

    def _failed(self, db: sqlite_utils.Database | None, exc: Exception, batch: list[Any]) -> None:
        self.on_problem("write_failed")
        if not self._failing:
            self._failing = True
            log.error("cannot write the divergence database; comparisons go on but are not kept",
                      extra={"database": self.spec.database, "problem": str(exc), "dropped": len(batch)})
        if db is not None:
            try:
                db.close()
            except Exception:  # noqa: BLE001
                pass
        return None  # reopen on the next batch

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("the divergence database is writable again", extra={"database": self.spec.database})
