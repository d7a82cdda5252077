"""A route's rollout plan as the stores tell it: where it stands, and every move (the plan's own, and what
reviewers did to its signatures), oldest first."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from reports.db import Db
from reports.query import Place, opened


@dataclass
class PlanTimeline:
    """A route's rollout plan as the database tells it: where it stands, and every move (oldest first)."""

    percent: int
    since: float
    held: bool
    reason: str
    events: list[dict[str, Any]]


def actions(db: Db, route: str) -> list[dict[str, Any]]:
    """What reviewers did to a route's signatures (accept, unaccept), as timeline events."""
    if not db.exists("actions"):
        return []
    return [{"at": a["at"], "action": a["action"], "from_percent": None, "to_percent": None, "reason": a["reason"],
             "by": a["by"], "evidence": None, "subject": a["subject"]}
            for a in db.query("SELECT * FROM actions WHERE route = ? ORDER BY at", [route])]


def recent_actions(databases: Iterable[Place], route: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for db in opened(databases):
        found += actions(db, route)
    return sorted(found, key=lambda e: e["at"])


def plan_timeline(databases: Iterable[Place], route: str) -> PlanTimeline | None:
    """None when the route has no plan in any of the files (or the files predate plans)."""
    state, events = None, []
    for db in opened(databases):
        if not db.exists("rollouts"):
            continue
        row = db.execute("SELECT percent, since, held, reason FROM rollouts WHERE route = ?", [route]).fetchone()
        state = state or row
        events += [{**e, "evidence": json.loads(e["evidence"]) if e["evidence"] else None}
                   for e in db.query("SELECT * FROM rollout_events WHERE route = ? ORDER BY at, id", [route])]
        events += actions(db, route)
    if state is None:
        return None
    return PlanTimeline(state[0], state[1], bool(state[2]), state[3] or "", sorted(events, key=lambda e: e["at"]))
