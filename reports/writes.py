"""What one batch writes. Every statement is result-free, so a batch goes to the store in one round trip,
and everything that can be added up first is: one row per route and minute, one per signature,
one per route, endpoint, hour and signature.

A signature keeps at most `examples_per_signature` whole examples: its first, its latest, and a
uniform sample of the rest (reports/reservoir.py), placed by the store from the signature's
count there (every instance's). Only the divergences that some count could keep are turned
into rows: the latest, and the few the reservoir might take. A writer refreshes a signature's
latest example at most once every LATEST_EVERY: each refresh redacts whole bodies, and a
signature that diverges on every request would otherwise keep the writer (and, through the
GIL, the proxy's loop) busy redacting examples that are replaced a fifth of a second later.
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from proxy.model import Divergence, ReportsSpec
from proxy.model.jsonpath import generalize
from reports.db import Db
from reports.plans import write_evidence
from reports.redact import Redactor
from reports.reservoir import DISCARD, LATEST, Draw, Reservoir
from reports.sides import write_statuses
from reports.rows import divergence_row
from reports.schema import DIVERGENCE_COLUMNS


# Seconds between refreshes of one signature's latest example by one writer. Each costs the redaction of
# whole bodies (12 ms for two answers of 200 KiB), on the proxy's GIL: once a second put that in the
# p99 of light traffic beside it; once in ten seconds leaves it out, and the latest is still recent.
LATEST_EVERY = 10.0


@dataclass(frozen=True, slots=True)
class Latest:
    """A signature's latest example as this writer knows it: when it last wrote one, how many divergences
    it counted after that one, and the newest of those, held back until the next refresh (not a row yet)."""

    written_at: float = -math.inf
    after: int = 0
    held: Divergence | None = None


class Writes:
    """One writer's statements, and how many divergences of each signature it has written."""

    def __init__(self, spec: ReportsSpec, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.reservoir = Reservoir(spec.examples_per_signature)
        self.rng, self.clock = rng or random.Random(), clock
        # signature -> divergences this process has written: the least its count in the store can be
        self.seen: Counter[str] = Counter()
        self.latest: dict[str, Latest] = {}
        self._changed: dict[str, Latest] = {}  # this batch's, kept once its transaction is through

    def batch(self, db: Db, batch: list[tuple[Any, ...]], redactor: Redactor) -> Counter[str]:
        """Write `batch` (inside the caller's transaction); the divergences it wrote per signature, for
        `kept` once the transaction is through. A ("latest", every) item writes the latest examples held
        back: those due, or every one (before a flush or the end)."""
        self._changed = {}
        counts, divergences, others = [], [], []  # sorted in one pass: most items are counts
        for item in batch:
            kind = item[0]
            if kind == "count":
                counts.append(item)
            elif kind == "divergence":
                divergences.append(item[1])
            else:
                others.append(item)
        self._counts(db, counts)
        attempts = self._divergences(db, divergences, redactor)
        for item in others:
            if item[0] == "noise":
                self._noise(db, *item[1:])
            elif item[0] == "evidence":
                write_evidence(db, item[1])
                write_statuses(db, item[1])
        every = any(item[0] == "latest" and item[1] for item in others)
        for signature in {*self.latest, *self._changed}:
            latest = self._latest(signature)
            if latest.held is not None and (every or self._due(latest)):
                self._examples(db, signature, [], redactor, refresh=True)
        return attempts

    def kept(self, written: Counter[str]) -> None:
        self.seen.update(written)
        self.latest.update(self._changed)
        # a signature with nothing held back and its refresh due is as if never written: forgotten, so that
        # the map (walked every batch) holds only the signatures of the last LATEST_EVERY
        self.latest = {signature: latest for signature, latest in self.latest.items()
                       if latest.held is not None or not self._due(latest)}

    def due(self) -> bool:
        """Whether a latest example held back is due to be written."""
        return any(latest.held is not None and self._due(latest) for latest in self.latest.values())

    def _latest(self, signature: str) -> Latest:
        """As this batch has left it so far."""
        return self._changed.get(signature) or self.latest.get(signature) or Latest()

    def _due(self, latest: Latest) -> bool:
        return self.clock() - latest.written_at >= LATEST_EVERY

    def _counts(self, db: Db, items: list[tuple[Any, ...]]) -> None:
        compared, diverged, endpoints = Counter(), Counter(), Counter()
        for _, route, did, at, endpoint, signature in items:
            per_minute = (route, int(at // 60))
            compared[per_minute] += 1
            if did:
                diverged[per_minute] += 1
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
        """Each signature counted once for all its divergences in the batch, then its examples."""
        by_signature: dict[str, list[Divergence]] = {}
        # in the order the requests came: comparisons end in any order (a shadow waits for its served
        # side), and the first and the latest example are the first and the latest request
        for divergence in sorted(divergences, key=lambda d: d.request.at):
            by_signature.setdefault(divergence.signature, []).append(divergence)
        written: Counter[str] = Counter()
        for signature, found in by_signature.items():
            _count(db, signature, found)
            _by_minute(db, signature, found)
            if self.reservoir.size:
                self._examples(db, signature, found, redactor)
            written[signature] = len(found)
        return written

    def _examples(self, db: Db, signature: str, found: list[Divergence], redactor: Redactor,
                  refresh: bool = False) -> None:
        """The divergence held back (now followed by `found`) and this batch's, in order, each placed (or
        not) by its count. When the latest example is due a refresh, the one kept so far is followed now
        (the reservoir may take it) and the newest becomes the latest; else the newest is held back."""
        reservoir, latest = self.reservoir, self._latest(signature)
        candidates = [*([latest.held] if latest.held is not None else []), *found]
        if refresh or self._due(latest):
            _follow(db, reservoir, reservoir.draw(self.rng), latest.after + len(found), signature)
            self._changed[signature], last, behind = Latest(self.clock()), len(candidates) - 1, 0
        else:
            self._changed[signature] = Latest(latest.written_at, latest.after + len(found), candidates.pop())
            last, behind = -1, 1  # the newest, held back, is counted already: it still comes after the others
        first = self.seen[signature] + (0 if latest.held is not None else 1)  # the least place of candidates[0]
        for index, divergence in enumerate(candidates):
            draw = reservoir.draw(self.rng)
            if index != last and not reservoir.may_keep(first + index, draw):
                continue  # no count could keep it: not worth a row
            row = divergence_row(divergence, redactor, self.spec.max_body)
            chosen = reservoir.target(index == last)
            where = reservoir.arguments(index == last, draw, len(candidates) - 1 - index + behind, signature)
            db.execute(f"DELETE FROM divergences WHERE signature = ? AND slot IN (SELECT chosen.slot FROM {chosen})",
                       [signature, *where])
            db.execute(_keep(chosen), [*(row[name] for name in DIVERGENCE_COLUMNS if name != "slot"), *where])
        # a bound lowered since these examples were kept
        db.execute("DELETE FROM divergences WHERE signature = ? AND slot >= ?", [signature, reservoir.size])

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


def _follow(db: Db, reservoir: Reservoir, draw: Draw, batch: int, signature: str) -> None:
    """The signature's latest example, now followed by `batch` more: into the reservoir's slot the
    store picks for it, or gone."""
    chosen = reservoir.target(False)
    where = reservoir.arguments(False, draw, batch, signature)
    db.execute(f"DELETE FROM divergences WHERE signature = ? AND slot IN (SELECT chosen.slot FROM {chosen}) "
               f"AND EXISTS (SELECT 1 FROM divergences AS kept WHERE kept.signature = ? AND kept.slot = {LATEST})",
               [signature, *where, signature])
    db.execute(f"UPDATE divergences SET slot = COALESCE((SELECT chosen.slot FROM {chosen}), {DISCARD}) "
               f"WHERE signature = ? AND slot = {LATEST}", [*where, signature])
    db.execute(f"DELETE FROM divergences WHERE signature = ? AND slot = {DISCARD}", [signature])


@functools.lru_cache(maxsize=8)
def _keep(chosen: str) -> str:
    """Insert an example into the slot `chosen` picks, when it picks one (same SQL for both engines:
    typed casts, since PostgreSQL cannot infer a NULL's type in a SELECT list)."""
    columns = [name for name in DIVERGENCE_COLUMNS if name != "slot"]
    values = ", ".join(f"CAST(? AS {DIVERGENCE_COLUMNS[name]})" for name in columns)
    return (f"INSERT INTO divergences ({', '.join(columns)}, slot) SELECT {values}, chosen.slot FROM {chosen} "
            "WHERE chosen.slot IS NOT NULL")
