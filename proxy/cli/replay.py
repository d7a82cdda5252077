"""`strangler replay --route NAME`: a route's stored divergences sent again to both sides, after a fix.

Prints whether each now matches, a summary per signature, and records every outcome in the
database the divergence came from (shown by `strangler report summary` and the HTML report).
Exit status: 0 all match now (or nothing to replay), 1 some still differ, 2 cannot run, 3 unknown route.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, TextIO

from comparators.deep import DeepDiffComparator
from proxy import config as config_file
from proxy.cli.report import stores
from proxy.model import Route
from proxy.model.errors import ConfigError
from proxy.shadow.replay import Outcome, Replay, Skipped, plan, replay
from reports import query
from reports.redact import REDACTED, Redactor
from reports.rows import MAX_VALUE
from reports.db import Where
from reports.schema import open_database, redaction_key, retrying_locks

EXIT_OK, EXIT_DIFFER, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3
AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def run(args: argparse.Namespace) -> int:
    now = time.time()
    try:
        since = parse_since(args.since, now) if args.since else None
    except ValueError as exc:
        return _fail(str(exc))
    if (args.limit is not None and args.limit < 1) or args.concurrency < 1:
        return _fail("--limit and --concurrency must be at least 1")
    try:
        config = config_file.load(args.config)
    except ConfigError as exc:
        return _fail("\n".join(str(p) for p in exc.problems))
    route = next((r for r in config.routes if r.name == args.route), None)
    if route is None:
        names = ", ".join(r.name for r in config.routes)
        print(f"strangler replay: no route {args.route!r} in {args.config}; its routes: {names}", file=sys.stderr)
        return EXIT_UNKNOWN
    if route.new is None:
        return _fail(f"route {route.name!r} has no new side to compare with legacy")
    dbs = stores(args.db, config.reports)
    missing = [db for db in dbs if not db.present]
    if missing:
        return _fail("\n".join(f"no divergence database at {db}" for db in missing))
    return _replay_route(route, dbs, since, args, now)


def _replay_route(route: Route, dbs: list[Where], since: float | None, args: argparse.Namespace, now: float) -> int:
    replays, skipped = plan(query.stored_requests(dbs, route.name, since), REDACTED.search, args.limit)
    outcomes: list[Outcome] = []
    if replays:
        noise = [path for r in query.summary(dbs, route.name) for path, _ in r.noise]
        outcomes = asyncio.run(replay(route, replays, DeepDiffComparator(), noise, args.concurrency,
                                      Progress(len(replays), sys.stderr)))
    redactors = {db: Redactor(_on(db, redaction_key)) for db in {o.replay.database for o in outcomes}}
    for db, redactor in redactors.items():
        mine = [o for o in outcomes if o.replay.database == db]
        _on(db, lambda d: _record(d, route.name, now, redactor, mine))  # noqa: B023 - run at once
    found = [_as_json(o, redactors[o.replay.database]) for o in outcomes]
    if args.format == "json":
        print(json.dumps({"route": route.name, "replayed": len(found), "matched": sum(f["matched"] for f in found),
                          "requests": found, "signatures": _per_signature(found),
                          "skipped": [vars(s) for s in skipped]}, ensure_ascii=False))
    else:
        print(_text(found, skipped) if found else _nothing(route.name, since, skipped))
    return EXIT_OK if all(f["matched"] for f in found) else EXIT_DIFFER


def parse_since(text: str, now: float) -> float:
    """--since: an age (30m, 2h, 1d, 1w) before `now`, or an ISO date or datetime (UTC unless it says)."""
    age = AGE.fullmatch(text.strip())
    if age:
        return now - float(age[1]) * SECONDS[age[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since wants an ISO date or datetime (2025-06-30, 2025-06-30T18:00:00Z) or an age "
                         f"(30m, 2h, 1d), got {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


class Progress:
    """`replayed 3/12 ...` on `stream`: one line rewritten in place on a terminal, else a line per 10%."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream, self.done, self.differ = total, stream, 0, 0
        self.tty = stream.isatty()

    def __call__(self, outcome: Outcome) -> None:
        self.done += 1
        self.differ += not outcome.matched
        line = (f"replayed {self.done}/{self.total} ({self.done - self.differ} match now, "
                f"{self.differ} still differ)")
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K" + ("\n" if self.done == self.total else ""))
        elif self.done * 10 // self.total > (self.done - 1) * 10 // self.total:
            self.stream.write(line + "\n")
        self.stream.flush()


def _record(db: Any, route: str, at: float, redactor: Redactor, outcomes: list[Outcome]) -> None:
    """Each outcome as a row of `replays`, in one transaction; its differences redacted as the store's."""
    with db.transaction():
        for o in outcomes:
            db.execute("INSERT INTO replays (divergence_id, signature, route, at, matched, differences) "
                       "VALUES (?, ?, ?, ?, ?, ?)", [o.replay.divergence_id, o.replay.signature, route, at,
                                                     int(o.matched), json.dumps(_differences(o, redactor))])


def _on(place: Where, step: Any) -> Any:
    db = open_database(place)
    try:
        return retrying_locks(lambda: step(db))
    finally:
        db.close()


def _differences(outcome: Outcome, redactor: Redactor) -> list[dict[str, Any]]:
    return [{"path": d.path, "kind": d.kind, "legacy": _capped(redactor.at_path(d.path, d.legacy)),
             "new": _capped(redactor.at_path(d.path, d.new))} for d in outcome.differences]


def _capped(value: Any) -> Any:
    text = json.dumps(value, ensure_ascii=False)
    return value if len(text) <= MAX_VALUE else text[:MAX_VALUE] + "…"


def _as_json(outcome: Outcome, redactor: Redactor) -> dict[str, Any]:
    r: Replay = outcome.replay
    return {"divergence_id": r.divergence_id, "signature": r.signature, "method": r.method, "target": r.target,
            "matched": outcome.matched, "legacy_status": _status(outcome.legacy),
            "new_status": _status(outcome.new), "differences": _differences(outcome, redactor),
            "noise": [d.path for d in outcome.noise], "left_out_headers": list(r.left_out),
            "legacy_target": outcome.legacy_target, "new_target": outcome.new_target}


def _status(observation: Any) -> int | str:
    return observation.status if observation.error is None else f"no answer ({observation.error})"


def _per_signature(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    replayed, matched = Counter(f["signature"] for f in found), Counter(f["signature"] for f in found if f["matched"])
    return [{"signature": s, "replayed": n, "matched": matched[s], "differing": n - matched[s]}
            for s, n in replayed.items()]


def _text(found: list[dict[str, Any]], skipped: list[Skipped]) -> str:
    lines = []
    for f in found:
        lines.append(f"{'now matches' if f['matched'] else 'still differs':<14} {f['method']} {f['target']}  "
                     f"(divergence {f['divergence_id']}, signature {f['signature']})")
        lines += [f"    {d['path']}  {d['kind']}: {_value(d['legacy'])} -> {_value(d['new'])}" for d in f["differences"]]
        lines += [f"    sent to {side} as {f[f'{side}_target']} (rewritten)" for side in ("legacy", "new")
                  if f[f"{side}_target"] != f["target"]]
        if f["left_out_headers"]:
            lines.append(f"    sent without {', '.join(f['left_out_headers'])} (stored redacted)")
    lines += ["", f"{'signature':<14} {'replayed':>8} {'now match':>9} {'still differ':>12}"]
    lines += [f"{s['signature']:<14} {s['replayed']:>8} {s['matched']:>9} {s['differing']:>12}"
              for s in _per_signature(found)]
    differ = sum(not f["matched"] for f in found)
    lines += ["", f"{differ} of {len(found)} replayed requests still differ" if differ
              else f"all {len(found)} replayed requests match now"]
    return "\n".join(lines + _skipped_lines(skipped))


def _skipped_lines(skipped: list[Skipped]) -> list[str]:
    return [f"not replayed: {n} stored request{'s' if n > 1 else ''}: {why}"
            for why, n in Counter(s.why for s in skipped).items()]


def _nothing(route: str, since: float | None, skipped: list[Skipped]) -> str:
    when = f" since {_iso(since)}" if since else ""
    return "\n".join([f"nothing to replay: no stored divergence of route {route} with a safe method{when}",
                      *_skipped_lines(skipped)])


def _value(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value, ensure_ascii=False)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fail(message: str) -> int:
    print(f"strangler replay: {message}", file=sys.stderr)
    return EXIT_USAGE
