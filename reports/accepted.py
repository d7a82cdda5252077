"""Accepted signatures: differences people reviewed and meant, with a reason and maybe an expiry.

An accepted signature still counts as a divergence, but is shown apart and left out of the
rollout gates' divergence rate. Expired acceptances are kept in the table and count no more.
(table `accepted`: reports/schema.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from reports.db import Db


@dataclass(frozen=True)
class Acceptance:
    signature: str
    route: str
    reason: str
    accepted_at: float
    expires: float | None  # None: until withdrawn
    by: str


def active(db: Db, now: float) -> frozenset[str]:
    """Signatures accepted and not expired at `now` (none in a database older than the table)."""
    return frozenset(current(db, now))


def current(db: Db, now: float) -> dict[str, Acceptance]:
    """The acceptances in force at `now`, by signature."""
    return {s: a for s, a in recorded(db).items() if a.expires is None or a.expires > now}


def recorded(db: Db) -> dict[str, Acceptance]:
    """Every acceptance in the table, expired ones too, by signature."""
    if not db.exists("accepted"):
        return {}
    return {row["signature"]: Acceptance(**row) for row in db.query("SELECT * FROM accepted")}


def accept(db: Db, signature: str, route: str, reason: str, expires: float | None, by: str,
           now: float) -> None:
    """Accept `signature` (again: the new reason and expiry replace the old)."""
    if not reason.strip():
        raise ValueError("an acceptance needs a reason")
    if expires is not None and expires <= now:
        raise ValueError(f"the expiry {until_text(expires)} is not in the future")
    db.execute("INSERT INTO accepted (signature, route, reason, accepted_at, expires, by) VALUES (?, ?, ?, ?, ?, ?) "
               "ON CONFLICT (signature) DO UPDATE SET route = excluded.route, reason = excluded.reason, "
               "accepted_at = excluded.accepted_at, expires = excluded.expires, by = excluded.by",
               [signature, route, reason.strip(), now, expires, by])


def withdraw(db: Db, signature: str) -> bool:
    """Withdraw an acceptance; False when `signature` was not accepted (expired ones included)."""
    if not db.exists("accepted"):
        return False
    return db.execute("DELETE FROM accepted WHERE signature = ?", [signature]).rowcount > 0


def parse_expiry(text: str, now: float) -> float:
    """`--expires`: YYYY-MM-DD holds through that day (UTC), a full ISO datetime until that instant
    (UTC unless it names its offset). Raises ValueError, saying why, when unreadable or not ahead."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None:
        expires = datetime.combine(day + timedelta(days=1), time(), timezone.utc).timestamp()
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"--expires wants YYYY-MM-DD or an ISO datetime "
                             f"(2025-06-30T18:00:00Z), got {text!r}") from None
        expires = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    if expires <= now:
        raise ValueError(f"--expires {text} is in the past: an acceptance must end later than now")
    return expires


def until_text(expires: float) -> str:
    """An expiry as people read it: the last day when it ends at midnight UTC, else the instant."""
    moment = datetime.fromtimestamp(expires, timezone.utc)
    if moment.time() == time():
        return (moment.date() - timedelta(days=1)).isoformat()
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
