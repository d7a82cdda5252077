"""Reading divergence stores: one, or several read as one (a PostgreSQL fleet's store, or SQLite files
copied from several hosts, or both).

Counts add up across stores; signatures with the same id (same route and paths) merge;
examples are found in whichever file holds them; an acceptance or a replay in any file
counts for the signature.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Iterator

from proxy.model.evidence import Tally
from reports.accepted import Acceptance, current
from reports.db import Db, Where
from reports.schema import open_for_reading

Place = Where | str  # a store: a SQLite file's path, or a Where (a PostgreSQL URL and its password's variable)


@dataclass
class Signature:
    signature: str
    route: str
    paths: list[str]
    count: int
    first_seen: float
    last_seen: float
    example: str | None = None  # id of one kept divergence
    accepted_reason: str | None = None  # accepted as an intended difference, and not expired
    accepted_expires: float | None = None  # None: accepted until withdrawn (or not accepted)
    replayed: tuple[float, int, int] | None = None  # the latest replay: (at, matched, total)

    @property
    def accepted(self) -> bool:
        return self.accepted_reason is not None

    def as_json(self) -> dict[str, Any]:
        replayed = None if self.replayed is None else dict(zip(("at", "matched", "total"), self.replayed, strict=True))
        accepted = None if not self.accepted else {"reason": self.accepted_reason, "expires": self.accepted_expires}
        return {"signature": self.signature, "paths": self.paths, "count": self.count,
                "first_seen": self.first_seen, "last_seen": self.last_seen, "accepted": accepted,
                "replayed": replayed}


@dataclass
class RouteSummary:
    route: str
    compared: int = 0
    diverged: int = 0
    top_paths: list[tuple[str, int]] = field(default_factory=list)
    signatures: list[Signature] = field(default_factory=list)
    noise: list[tuple[str, int]] = field(default_factory=list)

    @property
    def divergence_rate(self) -> float:
        return round(self.diverged / self.compared, 4) if self.compared else 0.0

    @property
    def accepted(self) -> int:
        """Divergences whose signature is accepted (at most all of them: signature counts outlive
        the per-minute counts by up to a day of retention)."""
        return min(self.diverged, sum(s.count for s in self.signatures if s.accepted))

    @property
    def tally(self) -> Tally:
        """The route's numbers as the gates count them (proxy.model.evidence)."""
        return Tally(self.compared, self.diverged, self.accepted)

    @property
    def divergence_rate_unaccepted(self) -> float:
        return round(self.tally.open_rate, 4)

    @property
    def open(self) -> int:
        """Divergences no one has explained: what a rollout's gates count (accepted signatures left out,
        and differences learned as noise never counted as divergences in the first place)."""
        return self.tally.open

    @property
    def open_rate(self) -> float:
        """The headline: open divergences over comparisons, as the gates' `max_divergence_rate` reads it."""
        return round(self.tally.open_rate, 4)

    def as_json(self) -> dict[str, Any]:
        return {"route": self.route, "compared": self.compared, "diverged": self.diverged,
                "divergence_rate": self.divergence_rate,
                "top_paths": [{"path": p, "count": n} for p, n in self.top_paths],
                "accepted": self.accepted, "divergence_rate_unaccepted": self.divergence_rate_unaccepted,
                "open": self.open, "open_rate": self.open_rate,
                "noise": [{"path": p, "count": n} for p, n in self.noise],
                "signatures": [s.as_json() for s in self.signatures]}


def summary(databases: Iterable[Place], route: str | None = None, top: int = 5,
            now: float | None = None, since: float | None = None, until: float | None = None) -> list[RouteSummary]:
    """Per route: comparisons, divergences, the most frequent diverging paths, signatures (accepted
    ones last) and noise; with `since`/`until` (seconds), the comparisons of those minutes and the
    signatures seen within them."""
    low, high = int((since or 0) // 60), int((until or 4e10) // 60)
    databases = list(databases)
    routes: dict[str, RouteSummary] = {}
    signatures: dict[str, Signature] = {}
    noise: dict[str, Counter[str]] = defaultdict(Counter)
    for db in opened(databases):
        for name, compared, diverged in db.execute(
                "SELECT route, CAST(SUM(compared) AS BIGINT), CAST(SUM(diverged) AS BIGINT) FROM counts "
                "WHERE minute >= ? AND minute <= ? GROUP BY route", [low, high]):
            entry = routes.setdefault(name, RouteSummary(name))
            entry.compared += compared
            entry.diverged += diverged
        for row in _signatures(db):
            if (since is None or row.last_seen >= since) and (until is None or row.first_seen <= until):
                _merge(signatures, row)
        for name, path, count in db.execute("SELECT route, path, count FROM noise"):
            noise[name][path] += count
    _annotate(signatures, acceptances(databases, now), replays(databases))
    for sig in signatures.values():
        routes.setdefault(sig.route, RouteSummary(sig.route)).signatures.append(sig)
    for entry in routes.values():
        entry.signatures.sort(key=lambda s: (s.accepted, -s.count, s.signature))
        entry.top_paths = _top_paths(entry.signatures, top)
        entry.noise = noise[entry.route].most_common()
    chosen = [routes[name] for name in sorted(routes)]
    return [r for r in chosen if route is None or r.route == route]


def show(databases: Iterable[Place], divergence_id: str, now: float | None = None) -> dict[str, Any] | None:
    """One kept divergence, its JSON columns parsed, with its signature's acceptance under
    "accepted" (None when not accepted); None when no file holds it."""
    databases = list(databases)
    for db in opened(databases):
        rows = list(db.query("SELECT * FROM divergences WHERE id = ?", [divergence_id]))
        if rows:
            found = _parsed(rows[0])
            break
    else:
        return None
    acceptance = acceptances(databases, now).get(found["signature"])
    found["accepted"] = None if acceptance is None else {
        "reason": acceptance.reason, "expires": acceptance.expires, "by": acceptance.by,
        "accepted_at": acceptance.accepted_at}
    return found


def acceptances(databases: Iterable[Place], now: float | None = None) -> dict[str, Acceptance]:
    """The acceptances in force at `now` in any of the files (the latest one where several say so)."""
    now = time.time() if now is None else now
    found: dict[str, Acceptance] = {}
    for db in opened(databases):
        for signature, acceptance in current(db, now).items():
            if signature not in found or acceptance.accepted_at > found[signature].accepted_at:
                found[signature] = acceptance
    return found


def replays(databases: Iterable[Place]) -> dict[str, tuple[float, int, int]]:
    """Per signature, its latest replay run: (at, matched, total), a run's rows from every file."""
    latest: dict[str, tuple[float, int, int]] = {}
    for db in opened(databases):
        if not db.exists("replays"):
            continue
        for signature, at, matched, total in db.execute(
                "SELECT signature, at, CAST(SUM(matched) AS BIGINT), COUNT(*) FROM replays r WHERE at = "
                "(SELECT MAX(at) FROM replays WHERE signature = r.signature) GROUP BY signature, at"):
            have = latest.get(signature)
            if have is None or at > have[0]:
                latest[signature] = (at, matched, total)
            elif at == have[0]:
                latest[signature] = (at, have[1] + matched, have[2] + total)
    return latest


def stored_requests(databases: Iterable[Place], route: str, since: float | None = None) -> list[dict[str, Any]]:
    """The requests of a route's kept divergences, newest first, with the file each is in
    ("database"); headers parsed, bodies left out."""
    databases, found = list(databases), []
    for path, db in zip(databases, opened(databases), strict=True):
        found += [{**row, "request_headers": json.loads(row["request_headers"] or "[]"), "database": path}
                  for row in db.query("SELECT id, signature, route, at, request_id, method, target, request_headers "
                                      "FROM divergences WHERE route = ? AND at >= ?", [route, since or 0.0])]
    return sorted(found, key=lambda r: (-r["at"], r["id"]))


def examples(databases: Iterable[Place], signature: str, limit: int = 5) -> list[dict[str, Any]]:
    found = []
    for db in opened(databases):
        found += [_parsed(r) for r in db.query(
            "SELECT * FROM divergences WHERE signature = ? ORDER BY at DESC LIMIT ?", [signature, limit])]
    return sorted(found, key=lambda r: -r["at"])[:limit]


def trend(databases: Iterable[Place], route: str, buckets: int = 24, width: float = 3600.0,
          now: float | None = None, accepted: Collection[str] = ()) -> list[tuple[float, int, int, int]]:
    """(bucket start, compared, diverged, of which accepted) for the last `buckets` periods of `width`
    seconds, oldest first; `accepted`: the signatures accepted now."""
    end = now if now is not None else time.time()
    start = end - buckets * width
    series = [[start + i * width, 0, 0, 0] for i in range(buckets)]

    def bucket(minute: int) -> list | None:
        index = min(int((minute * 60 - start) // width), buckets - 1)
        return series[index] if index >= 0 else None

    for db in opened(databases):
        for minute, compared, diverged in db.execute(
                "SELECT minute, compared, diverged FROM counts WHERE route = ? AND minute >= ?",
                [route, int(start // 60)]):
            if (found := bucket(minute)) is not None:
                found[1] += compared
                found[2] += diverged
        if accepted:
            for minute, signature, count in db.execute(
                    "SELECT minute, signature, count FROM signature_minutes WHERE route = ? AND minute >= ?",
                    [route, int(start // 60)]):
                if signature in accepted and (found := bucket(minute)) is not None:
                    found[3] += count
    return [(at, compared, diverged, min(excused, diverged)) for at, compared, diverged, excused in series]


def opened(databases: Iterable[Place]) -> Iterator[Db]:
    """Each store open for reading in turn, closed once the caller moves on."""
    for place in databases:
        db = open_for_reading(place)
        try:
            yield db
        finally:
            db.close()


def _signatures(db: Db) -> Iterator[Signature]:
    for row in db.query("SELECT s.*, (SELECT id FROM divergences d WHERE d.signature = s.signature "
                        "ORDER BY at DESC LIMIT 1) AS example FROM signatures s"):
        yield Signature(row["signature"], row["route"], json.loads(row["paths"]), row["count"],
                        row["first_seen"], row["last_seen"], row["example"])


def _annotate(signatures: dict[str, Signature], accepted: dict[str, Acceptance],
              replayed: dict[str, tuple[float, int, int]]) -> None:
    for sig in signatures.values():
        if sig.signature in accepted:
            sig.accepted_reason = accepted[sig.signature].reason
            sig.accepted_expires = accepted[sig.signature].expires
        sig.replayed = replayed.get(sig.signature)


def _merge(into: dict[str, Signature], sig: Signature) -> None:
    have = into.get(sig.signature)
    if have is None:
        into[sig.signature] = sig
        return
    have.count += sig.count
    have.first_seen, have.last_seen = min(have.first_seen, sig.first_seen), max(have.last_seen, sig.last_seen)
    have.example = have.example or sig.example


def _top_paths(signatures: list[Signature], top: int) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for sig in signatures:
        for path in sig.paths:
            counts[path] += sig.count
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]


def _parsed(row: dict[str, Any]) -> dict[str, Any]:
    for column in ("differences", "noise", "request_headers", "legacy_headers", "new_headers"):
        row[column] = json.loads(row[column]) if row[column] else []
    return row
