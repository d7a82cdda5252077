"""What one batch writes. Every statement is result-free, so a batch goes to the store in one round trip,
and everything that can be added up first is: one row per route and minute, one per signature,
one per route, endpoint, hour and signature.

A signature keeps at most `examples_per_signature` whole examples, decided in the store (every
instance's count); each attempt to keep one either takes a slot or finds them full, so once
this process has tried that many times the signature is full for good, and its further
divergences are counted without being turned into rows at all.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from proxy.model import Divergence, ReportsSpec
from proxy.model.jsonpath import generalize
from reports.db import Db
from reports.plans import write_evidence
from reports.redact import Redactor
from reports.rows import divergence_row
from reports.schema import DIVERGENCE_COLUMNS


class Writes:
    """One writer's statements, and the signatures it has tried to keep examples of."""

    def __init__(self, spec: ReportsSpec) -> None:
        self.spec = spec
        self.tried: Counter[str] = Counter()  # signature -> examples this process has tried to keep

    def batch(self, db: Db, batch: list[tuple[Any, ...]], redactor: Redactor) -> Counter[str]:
        """Write `batch` (inside the caller's transaction); the attempts to keep examples it made, for
        `kept` once the transaction is through."""
        self._counts(db, [item for item in batch if item[0] == "count"])
        attempts = self._divergences(db, [item[1] for item in batch if item[0] == "divergence"], redactor)
        for item in batch:
            if item[0] == "noise":
                self._noise(db, *item[1:])
            elif item[0] == "evidence":
                write_evidence(db, item[1])
        return attempts

    def kept(self, attempts: Counter[str]) -> None:
        self.tried.update(attempts)

    def _counts(self, db: Db, items: list[tuple[Any, ...]]) -> None:
        compared, diverged, endpoints = Counter(), Counter(), Counter()
        for _, route, did, at, endpoint, signature in items:
            compared[(route, int(at // 60))] += 1
            diverged[(route, int(at // 60))] += int(did)
            if endpoint is not None:
                endpoints[(route, endpoint, int(at // 3600), signature)] += 1
        for (route, minute), n in compared.items():
            db.execute("INSERT INTO counts (route, minute, compared, diverged) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (route, minute) DO UPDATE SET compared = counts.compared + excluded.compared, "
                       "diverged = counts.diverged + excluded.diverged", [route, minute, n, diverged[(route, minute)]])
        for key, n in endpoints.items():
            db.execute("INSERT INTO endpoint_comparisons (route, endpoint, hour, signature, count) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (route, endpoint, hour, signature) DO UPDATE SET "
                       "count = endpoint_comparisons.count + excluded.count", [*key, n])

    def _divergences(self, db: Db, divergences: list[Divergence], redactor: Redactor) -> Counter[str]:
        """Each signature counted once for all its divergences in the batch; examples tried while it
        may still have room."""
        by_signature: dict[str, list[Divergence]] = {}
        for divergence in divergences:
            by_signature.setdefault(divergence.signature, []).append(divergence)
        most, attempts = self.spec.examples_per_signature, Counter()
        for signature, found in by_signature.items():
            _count(db, signature, found)
            _by_minute(db, signature, found)
            for divergence in found[:max(0, most - self.tried[signature])]:
                row = divergence_row(divergence, redactor, self.spec.max_body)
                db.execute(KEEP, [*(row[name] for name in DIVERGENCE_COLUMNS), signature, most])
                db.execute("UPDATE signatures SET kept = kept + 1 WHERE signature = ? AND kept < ?",
                           [signature, most])
                attempts[signature] += 1
        return attempts

    def _noise(self, db: Db, route: str, paths: tuple[str, ...], at: float) -> None:
        for path in paths:
            db.execute("INSERT INTO noise (route, path, count, first_seen, last_seen) VALUES (?, ?, 1, ?, ?) "
                       "ON CONFLICT (route, path) DO UPDATE SET count = noise.count + 1, "
                       "last_seen = excluded.last_seen", [route, path, at, at])


def _count(db: Db, signature: str, found: list[Divergence]) -> None:
    first = found[0]
    paths = json.dumps(sorted({generalize(d.path) for d in first.differences}))
    times = [d.request.at for d in found]
    db.execute("INSERT INTO signatures (signature, route, paths, first_seen, last_seen, count, kept) "
               "VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT (signature) DO UPDATE SET "
               "count = signatures.count + excluded.count, last_seen = CASE WHEN excluded.last_seen > "
               "signatures.last_seen THEN excluded.last_seen ELSE signatures.last_seen END",
               [signature, first.route, paths, min(times), max(times), len(found)])


def _by_minute(db: Db, signature: str, found: list[Divergence]) -> None:
    minutes = Counter(int(d.request.at // 60) for d in found)
    for minute, n in minutes.items():
        db.execute("INSERT INTO signature_minutes (signature, minute, route, count) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (signature, minute) DO UPDATE SET count = signature_minutes.count + excluded.count",
                   [signature, minute, found[0].route, n])


def _keep() -> str:
    """Insert a kept example only while its signature's `kept` is under the bound (same SQL for both
    engines: typed casts, since PostgreSQL cannot infer a NULL's type in a SELECT list)."""
    values = ", ".join(f"CAST(? AS {kind})" for kind in DIVERGENCE_COLUMNS.values())
    return (f"INSERT INTO divergences ({', '.join(DIVERGENCE_COLUMNS)}) SELECT {values} "
            "WHERE (SELECT kept FROM signatures WHERE signature = ?) < ?")


KEEP = _keep()
