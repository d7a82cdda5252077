"""Finding what a reader names: a kept divergence's id, a signature, or a unique prefix of either; and a
signature's kept examples, listed with their ids.

Ids and signatures are looked up in every store given, as one (a fleet's store and files
copied from hosts alike).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, Iterable

from proxy.model.exchange import MIN_PREFIX
from reports.query import Place, opened
from reports.reservoir import FIRST, LATEST


class Kind(enum.StrEnum):
    DIVERGENCE = "divergence"
    SIGNATURE = "signature"


@dataclass(frozen=True, slots=True)
class Named:
    """A divergence or a signature, and what tells it apart from others: its route and request or paths."""

    kind: Kind
    key: str
    about: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.key}" + (f"  ({self.about})" if self.about else "")


class NotFound(LookupError):
    """Nothing by that name (exit 3)."""


class Unclear(ValueError):
    """A prefix too short, or one that starts several names (exit 2); the message names the candidates."""


@dataclass(frozen=True, slots=True)
class Example:
    """One kept example of a signature, as a listing shows it."""

    id: str
    at: float
    role: str  # first | latest | sample (reports/reservoir.py), or kept: from before sampling
    method: str
    target: str
    legacy_status: int | None
    new_status: int | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "role": self.role, "method": self.method, "target": self.target,
                "legacy_status": self.legacy_status, "new_status": self.new_status}


def find(databases: Iterable[Place], given: str) -> Named:
    """The divergence or signature `given` names: whole, or by a unique prefix of MIN_PREFIX or more."""
    databases, given = list(databases), given.strip()
    whole = _matching(databases, given, exact=True)
    if whole:
        return sorted(whole, key=lambda n: n.kind)[0]  # an id and a signature alike: the divergence
    found = sorted(_matching(databases, given, exact=False), key=lambda n: (n.kind, n.key)) if given else []
    if not found:
        raise NotFound(f"no divergence or signature {given!r}")
    if len(given) < MIN_PREFIX:
        raise Unclear(f"{given!r} is too short: give a whole divergence id or signature, or at least "
                      f"{MIN_PREFIX} characters of one")
    if len(found) > 1:
        raise Unclear(f"{given!r} is ambiguous: it starts {len(found)} names"
                      + "".join(f"\n  {named}" for named in found))
    return found[0]


def examples(databases: Iterable[Place], signature: str) -> list[Example]:
    """The signature's kept examples in every store, newest first."""
    found = []
    for db in opened(databases):
        found += [Example(row["id"], row["at"], _role(row.get("slot")), row["method"], row["target"],
                          row["legacy_status"], row["new_status"]) for row in db.query(
            f"SELECT id, at, {_slot(db)} AS slot, method, target, legacy_status, new_status FROM divergences "
            "WHERE signature = ?", [signature])]
    return sorted(found, key=lambda e: (-e.at, e.id))


def _matching(databases: list[Place], given: str, exact: bool) -> set[Named]:
    """The divergences and signatures whose key is `given` (exact) or starts with it."""
    key = "{} = ?" if exact else "substr({}, 1, ?) = ?"
    args = [given] if exact else [len(given), given]
    found: set[Named] = set()
    for db in opened(databases):
        found |= {Named(Kind.DIVERGENCE, row["id"], f"{row['route']}: {row['method']} {row['target']}")
                  for row in db.query("SELECT id, route, method, target FROM divergences WHERE "
                                      + key.format("id"), args)}
        found |= {Named(Kind.SIGNATURE, row["signature"], f"{row['route']}: {', '.join(json.loads(row['paths']))}")
                  for row in db.query("SELECT signature, route, paths FROM signatures WHERE "
                                      + key.format("signature"), args)}
    return found


def _slot(db: Any) -> str:
    """A store not yet written by a proxy that samples has no slots (read-only: it is not migrated here)."""
    return "slot" if "slot" in db.columns("divergences") else "NULL"


def _role(slot: int | None) -> str:
    if slot is None:
        return "kept"
    return {LATEST: "latest", FIRST: "first"}.get(slot, "sample")
