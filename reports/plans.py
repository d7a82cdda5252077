"""Rollout plans in the divergence database: each plan's state, its moves, and the evidence behind them.

(tables: reports/schema.py)
rollouts          one row per route: percent on the new side, since when, held, a version
rollout_events    every move (start, advance, rollback, hold, resume) with its reason and evidence
gate_comparisons  comparisons per route, second and signature ('' for a match), from every process
gate_answers      each side's answers, failures and latency histogram per route and second

The state is shared by every process that writes the file (the workers of an instance);
a move is a compare-and-set on the version, so two processes judging the same evidence
move a plan once.
"""

from __future__ import annotations

import getpass
import json
import threading
from collections import Counter
from typing import Any, Callable, TypeVar

import sqlite_utils

from proxy.model.evidence import EvidenceBatch, PlanState, SideEvidence, StepEvidence, quantile
from reports.accepted import active
from reports.schema import open_database, retrying_locks, transaction

T = TypeVar("T")
STATE = "route, percent, since, held, reason, version"  # a PlanState's columns, in order


def write_evidence(db: sqlite_utils.Database, batch: EvidenceBatch) -> None:
    """Add one process's period to the shared tallies (inside the writer's transaction)."""
    second = int(batch.at)
    for route, signature, count in batch.comparisons:
        db.execute("INSERT INTO gate_comparisons (route, second, signature, count) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (route, second, signature) DO UPDATE SET count = count + excluded.count",
                   [route, second, signature, count])
    for route, side, answers in batch.answers:
        row = db.execute("SELECT answers, errors, bins FROM gate_answers WHERE route = ? AND second = ? AND side = ?",
                         [route, second, str(side)]).fetchone()
        bins = Counter(answers.bins)
        if row is not None:
            bins.update({int(k): v for k, v in json.loads(row[2]).items()})
        db.execute("INSERT OR REPLACE INTO gate_answers (route, second, side, answers, errors, bins) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   [route, second, str(side), answers.count + (row[0] if row else 0),
                    answers.errors + (row[1] if row else 0), json.dumps(bins)])


def prune_evidence(db: sqlite_utils.Database, cutoff: float) -> None:
    db.execute("DELETE FROM gate_comparisons WHERE second < ?", [int(cutoff)])
    db.execute("DELETE FROM gate_answers WHERE second < ?", [int(cutoff)])


class SqlitePlans:
    """Plan state and evidence, read and moved. Blocking: call it from a thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite_utils.Database | None = None
        self._lock = threading.Lock()

    def state(self, route: str) -> PlanState | None:
        row = self._run(lambda db: db.execute(f"SELECT {STATE} FROM rollouts WHERE route = ?", [route]).fetchone())
        return None if row is None else _state(row)

    def begin(self, route: str, percent: int, now: float) -> PlanState:
        """The plan's state, created at `percent` when it has none yet (only then a write)."""
        def step(db: sqlite_utils.Database) -> None:
            with transaction(db):
                created = db.execute("INSERT OR IGNORE INTO rollouts (route, percent, since, held, reason, version) "
                                     "VALUES (?, ?, ?, 0, '', 0)", [route, percent, now]).rowcount
                if created:
                    _event(db, route, now, "start", percent, percent, "the plan begins", "plan", None)
        state = self.state(route)
        if state is None:
            self._run(step)
            state = self.state(route)
        assert state is not None
        return state

    def move(self, state: PlanState, action: str, to: int, reason: str, by: str, now: float,
             evidence: dict[str, Any] | None = None, held: bool | None = None) -> PlanState | None:
        """Move from `state` (None when another process moved it first). A change of percent, or a
        resume, starts a new step: its evidence is gathered afresh."""
        since = now if to != state.percent or action == "resume" else state.since
        keep = state.held if held is None else held

        def step(db: sqlite_utils.Database) -> bool:
            with transaction(db):
                moved = db.execute("UPDATE rollouts SET percent = ?, since = ?, held = ?, reason = ?, "
                                   "version = version + 1 WHERE route = ? AND version = ?",
                                   [to, since, int(keep), reason if keep else "", state.route,
                                    state.version]).rowcount
                if moved:
                    _event(db, state.route, now, action, state.percent, to, reason, by, evidence)
            return bool(moved)
        if not self._run(step):
            return None
        return PlanState(state.route, to, since, keep, reason if keep else "", state.version + 1)

    def evidence(self, route: str, since: float, until: float, accepted: frozenset[str]) -> StepEvidence:
        """What the route showed after `since` until `until`; `accepted` signatures counted apart.
        Evidence is kept by the second it was handed over in: the second `since` falls in is left
        out (it may hold the step before)."""
        def read(db: sqlite_utils.Database) -> StepEvidence:
            compared = diverged = excused = 0
            for signature, count in db.execute(
                    "SELECT signature, SUM(count) FROM gate_comparisons WHERE route = ? AND second > ? "
                    "AND second <= ? GROUP BY signature", [route, int(since), int(until)]):
                compared += count
                if signature in accepted:
                    excused += count
                elif signature:
                    diverged += count
            sides = {side: _side(db, route, side, since, until) for side in ("legacy", "new")}
            return StepEvidence(since, until, compared, diverged, excused, sides["legacy"], sides["new"])
        return self._run(read)

    def accepted(self, now: float) -> frozenset[str]:
        return self._run(lambda db: active(db, now))

    def states(self) -> list[PlanState]:
        return [_state(row) for row in self._run(
            lambda db: db.execute(f"SELECT {STATE} FROM rollouts ORDER BY route").fetchall())]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _run(self, step: Callable[[sqlite_utils.Database], T]) -> T:
        with self._lock:
            if self._db is None:
                self._db = open_database(self.path)
            return retrying_locks(lambda: step(self._db))


def _state(row: tuple[Any, ...]) -> PlanState:
    route, percent, since, held, reason, version = row
    return PlanState(route, percent, since, bool(held), reason or "", version)


def _side(db: sqlite_utils.Database, route: str, side: str, since: float, until: float) -> SideEvidence:
    answers = errors = 0
    bins: Counter[int] = Counter()
    for count, failed, histogram in db.execute(
            "SELECT answers, errors, bins FROM gate_answers WHERE route = ? AND side = ? AND second > ? "
            "AND second <= ?", [route, side, int(since), int(until)]):
        answers, errors = answers + count, errors + failed
        bins.update({int(k): v for k, v in json.loads(histogram).items()})
    return SideEvidence(answers, errors, quantile(bins, 0.99))


def _event(db: sqlite_utils.Database, route: str, at: float, action: str, before: int, after: int, reason: str,
           by: str, evidence: dict[str, Any] | None) -> None:
    db.execute("INSERT INTO rollout_events (route, at, action, from_percent, to_percent, reason, by, evidence) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               [route, at, action, before, after, reason, by, json.dumps(evidence) if evidence else None])


def operator() -> str:
    """Who moved a plan by hand, for its timeline."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
