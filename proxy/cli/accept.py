"""`strangler report accept SIG | unaccept SIG`: differences marked as intended (or no longer), in
every divergence database given, where the gates of rollout plans read them."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from proxy import steer
from proxy.cli.report import EXIT_INVALID, EXIT_OK, EXIT_UNKNOWN, databases, usage
from reports.db import Where
from reports.plans import operator


def accept(args: argparse.Namespace) -> int:
    dbs = _existing(databases(args))
    if dbs is None:
        return EXIT_INVALID
    return _done(lambda: steer.accept(dbs, args.signature, args.reason, args.expires, _by(args), "cli"))


def unaccept(args: argparse.Namespace) -> int:
    dbs = _existing(databases(args))
    if dbs is None:
        return EXIT_INVALID
    return _done(lambda: steer.unaccept(dbs, args.signature, _by(args), "cli", args.reason))


def _by(args: argparse.Namespace) -> str:
    return (args.by or "").strip() or operator()


def _done(act: Callable[[], steer.Done]) -> int:
    """Do it, and say what happened (or why not, with the exit status docs/cli.md gives)."""
    try:
        done = act()
    except steer.Refused as exc:
        if exc.status == 404:
            print(f"strangler report: {exc.message}", file=sys.stderr)
            return EXIT_UNKNOWN
        return usage(exc.message)
    print(done.message)
    return EXIT_OK


def _existing(dbs: list[Where] | None) -> list[Where] | None:
    """The stores, when each exists (an acceptance never creates a file)."""
    missing = [db for db in dbs or () if not db.present]
    for db in missing:
        print(f"strangler report: no divergence database at {db}", file=sys.stderr)
    return None if dbs is None or missing else dbs
