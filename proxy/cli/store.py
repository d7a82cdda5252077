"""`strangler store copy --from PATH`: a host's SQLite store copied into the configured store (the fleet's
PostgreSQL), divergences, plans and acceptances alike. Safe to run again: rows already there stay as they are.

Progress goes to standard error (one line rewritten in place on a terminal), the tally to
standard output. Exit status: 0 copied, 1 cannot (a store missing or unreachable, or the
same store twice).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from proxy.cli.report import databases
from reports.copy import Copied, copy_store
from reports.db import Where
from reports.schema import open_database

EXIT_OK, EXIT_INVALID = 0, 1


def copy(args: argparse.Namespace) -> int:
    found = databases(args, [args.to] if args.to else [])
    if found is None:
        return EXIT_INVALID
    [target], source = found, Where(args.source)
    problem = _refused(source, target)
    if problem:
        print(f"strangler store: {problem}", file=sys.stderr)
        return EXIT_INVALID
    reading, writing = open_database(source), open_database(target)
    try:
        copied = copy_store(reading, writing, Progress(sys.stderr))
    finally:
        reading.close()
        writing.close()
    print(f"copied {source} into {target}:")
    for table in copied:
        print(f"  {table.table:<17} {table.added:>9} new of {table.rows}")
    return EXIT_OK


def _refused(source: Where, target: Where) -> str | None:
    if source.postgres:
        return f"--from takes a SQLite file; {source} is a server"
    if not source.present:
        return f"no divergence database at {source}"
    if not target.postgres and Path(target.target).resolve() == Path(source.target).resolve():
        return f"{source} is the configured store already: nothing to copy"
    return None


class Progress:
    """`copying divergences 3000/12000` on `stream`: rewritten in place on a terminal, else a line a table."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.tty = stream, stream.isatty()

    def __call__(self, copied: Copied, done: int) -> None:
        line = f"copying {copied.table} {done}/{copied.rows} ({copied.added} new)"
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K" + ("\n" if done == copied.rows else ""))
        elif done == copied.rows:
            self.stream.write(line + "\n")
        self.stream.flush()
