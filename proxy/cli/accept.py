"""`strangler report accept SIG | unaccept SIG`: differences marked as intended (or no longer), in
every divergence database given, where the gates of rollout plans read them."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable, Mapping, TypeVar

from proxy.cli.report import EXIT_INVALID, EXIT_OK, EXIT_UNKNOWN, databases, names, usage
from reports import accepted, query
from reports.db import Db, Where
from reports.plans import operator
from reports.schema import open_database, retrying_locks

MIN_PREFIX = 6  # characters of a signature that may stand for it, as with git's commits
T = TypeVar("T")


def add_commands(which: Any, dbs: argparse.ArgumentParser) -> None:
    accept = which.add_parser("accept", parents=[dbs], help="mark a signature as an intended difference")
    accept.add_argument("signature", help=f"a signature, or a unique prefix of at least {MIN_PREFIX} characters")
    accept.add_argument("--reason", required=True, help="why the difference is intended (shown in the reports)")
    accept.add_argument("--expires", metavar="DATE", help="YYYY-MM-DD (through that day, UTC) or an ISO datetime "
                                                          "(default: until withdrawn)")
    accept.set_defaults(run=_accept)
    unaccept = which.add_parser("unaccept", parents=[dbs], help="withdraw the acceptance of a signature")
    unaccept.add_argument("signature", help=f"a signature, or a unique prefix of at least {MIN_PREFIX} characters")
    unaccept.set_defaults(run=_unaccept)


def _accept(args: argparse.Namespace) -> int:
    now = time.time()
    if not args.reason.strip():
        return usage("--reason must say why the difference is intended")
    try:
        expires = accepted.parse_expiry(args.expires, now) if args.expires else None
    except ValueError as exc:
        return usage(str(exc))
    dbs = _existing(databases(args))
    if dbs is None:
        return EXIT_INVALID
    known = {s.signature: s for r in query.summary(dbs) for s in r.signatures}
    found = _resolve(args.signature, {k: f"{s.route}: {', '.join(s.paths)}" for k, s in known.items()}, dbs)
    if isinstance(found, int):
        return found
    sig = known[found]
    _each(dbs, lambda db: accepted.accept(db, found, sig.route, args.reason, expires, operator(), now))
    print(f"accepted {found} (route {sig.route}: {', '.join(sig.paths)}) "
          f"{'until ' + accepted.until_text(expires) if expires else 'until withdrawn'}: {args.reason.strip()}")
    return EXIT_OK


def _unaccept(args: argparse.Namespace) -> int:
    dbs = _existing(databases(args))
    if dbs is None:
        return EXIT_INVALID
    known = {k: f"{a.route}: {a.reason}" for found in _each(dbs, accepted.recorded) for k, a in found.items()}
    found = _resolve(args.signature, known, dbs, "accepted ")
    if isinstance(found, int):
        return found
    _each(dbs, lambda db: accepted.withdraw(db, found))
    print(f"withdrew the acceptance of {found} ({known[found]})")
    return EXIT_OK


def _resolve(given: str, known: Mapping[str, str], dbs: list[Where], kind: str = "") -> str | int:
    """The signature `given` names, whole or by a unique prefix; else the exit status, after saying why.
    `known`: each signature and how to describe it."""
    if given in known:
        return given
    if len(given) < MIN_PREFIX:
        return usage(f"{given!r} is too short: give a whole signature or at least {MIN_PREFIX} characters of one")
    matches = sorted(s for s in known if s.startswith(given.lower()))
    if not matches:
        print(f"strangler report: no {kind}signature {given!r} in {names(dbs)}", file=sys.stderr)
        return EXIT_UNKNOWN
    if len(matches) > 1:
        return usage(f"{given!r} is ambiguous: it starts {len(matches)} signatures"
                      + "".join(f"\n  {s}  ({known[s]})" for s in matches))
    return matches[0]


def _existing(dbs: list[Where] | None) -> list[Where] | None:
    """The stores, when each exists (an acceptance never creates a file)."""
    missing = [db for db in dbs or () if not db.present]
    for db in missing:
        print(f"strangler report: no divergence database at {db}", file=sys.stderr)
    return None if dbs is None or missing else dbs


def _each(dbs: list[Where], step: Callable[[Db], T]) -> list[T]:
    """`step` on each store, opened for writing: an acceptance goes into every store given, where
    the proxies writing it (their rollout gates) read it."""
    done = []
    for place in dbs:
        db = open_database(place)
        try:
            done.append(retrying_locks(lambda: step(db)))  # noqa: B023 - called before the next db
        finally:
            db.close()
    return done
