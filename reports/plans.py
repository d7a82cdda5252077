"""Rollout plans in the divergence database: each plan's state, its moves, and the evidence behind them.

(tables: reports/schema.py)
rollouts          one row per route: percent on the new side, since when, held, a version
rollout_events    every move (start, advance, rollback, hold, resume) with its reason and evidence
gate_comparisons  comparisons per route, second and signature ('' for a match), from every process
gate_answers      each side's answers and failures per route and second
gate_bins         each side's latency histogram per route and second, a row per bin

The state is shared by every process that writes the store (the workers of an instance,
the instances of a fleet); a move is a compare-and-set on the version, so two processes
judging the same evidence move a plan once. Evidence is only ever added to, never read
and rewritten, so writers never wait on one another's rows for long.
"""

from __future__ import annotations

import getpass
import json
from collections import Counter
from typing import Any, Callable, TypeVar

from proxy.model.evidence import EvidenceBatch, PlanState, SideEvidence, StepEvidence, quantile, tally
from reports.accepted import active
from reports.connections import Connections
from reports.db import Db, Where
from reports.schema import retrying_locks

T = TypeVar("T")
STATE = "route, percent, since, held, reason, version"  # a PlanState's columns, in order


def write_evidence(db: Db, batch: EvidenceBatch) -> None:
    """Add one process's period to the shared tallies (inside the writer's batch: no reads)."""
    second = int(batch.at)
    for route, signature, count in batch.comparisons:
        db.execute("INSERT INTO gate_comparisons (route, second, signature, count) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (route, second, signature) DO UPDATE SET count = gate_comparisons.count + "
                   "excluded.count", [route, second, signature, count])
    for route, side, answers in batch.answers:
        db.execute("INSERT INTO gate_answers (route, second, side, answers, errors) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT (route, second, side) DO UPDATE SET answers = gate_answers.answers + "
                   "excluded.answers, errors = gate_answers.errors + excluded.errors",
                   [route, second, str(side), answers.count, answers.errors])
        for index, count in sorted(answers.bins.items()):
            db.execute("INSERT INTO gate_bins (route, second, side, bin, count) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (route, second, side, bin) DO UPDATE SET count = gate_bins.count + "
                       "excluded.count", [route, second, str(side), index, count])


def prune_evidence(db: Db, cutoff: float) -> None:
    for table in ("gate_comparisons", "gate_answers", "gate_bins", "side_statuses"):
        db.execute(f"DELETE FROM {table} WHERE second < ?", [int(cutoff)])


class StorePlans:
    """Plan state and evidence, read and moved, on either engine. Blocking: call it from a thread."""

    def __init__(self, place: Where | Connections) -> None:
        self._owns = isinstance(place, Where)  # else the wiring shares its connections and closes them
        self.connections = Connections(place) if isinstance(place, Where) else place

    def state(self, route: str) -> PlanState | None:
        row = self._run(lambda db: db.execute(f"SELECT {STATE} FROM rollouts WHERE route = ?", [route]).fetchone())
        return None if row is None else _state(row)

    def begin(self, route: str, percent: int, now: float) -> PlanState:
        """The plan's state, created at `percent` when it has none yet (only then a write)."""
        def step(db: Db) -> None:
            with db.transaction():
                created = db.execute("INSERT INTO rollouts (route, percent, since, held, reason, version) "
                                     "VALUES (?, ?, ?, 0, '', 0) ON CONFLICT (route) DO NOTHING",
                                     [route, percent, now]).rowcount
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

        def step(db: Db) -> bool:
            with db.transaction():
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
        def read(db: Db) -> StepEvidence:
            found = tally(db.execute(
                "SELECT signature, CAST(SUM(count) AS BIGINT) FROM gate_comparisons WHERE route = ? AND second > ? "
                "AND second <= ? GROUP BY signature", [route, int(since), int(until)]), accepted)
            sides = {side: _side(db, route, side, since, until) for side in ("legacy", "new")}
            return StepEvidence(since, until, found.compared, found.open, found.accepted, sides["legacy"], sides["new"])
        return self._run(read)

    def accepted(self, now: float) -> frozenset[str]:
        return self._run(lambda db: active(db, now))

    def states(self) -> list[PlanState]:
        return [_state(row) for row in self._run(
            lambda db: db.execute(f"SELECT {STATE} FROM rollouts ORDER BY route").fetchall())]

    def close(self) -> None:
        if self._owns:
            self.connections.close()

    def _run(self, step: Callable[[Db], T]) -> T:
        with self.connections.use() as db:
            return retrying_locks(lambda: step(db))


def _state(row: tuple[Any, ...]) -> PlanState:
    route, percent, since, held, reason, version = row
    return PlanState(route, percent, since, bool(held), reason or "", version)


def _side(db: Db, route: str, side: str, since: float, until: float) -> SideEvidence:
    window = [route, side, int(since), int(until)]
    answers, errors = db.execute(
        "SELECT CAST(COALESCE(SUM(answers), 0) AS BIGINT), CAST(COALESCE(SUM(errors), 0) AS BIGINT) "
        "FROM gate_answers WHERE route = ? AND side = ? AND second > ? AND second <= ?", window).fetchone()
    bins = Counter({index: count for index, count in db.execute(
        "SELECT bin, CAST(SUM(count) AS BIGINT) FROM gate_bins WHERE route = ? AND side = ? AND second > ? "
        "AND second <= ? GROUP BY bin", window)})
    return SideEvidence(answers, errors, quantile(bins, 0.99))


def _event(db: Db, route: str, at: float, action: str, before: int, after: int, reason: str,
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
