"""`strangler report summary | show NAME | examples SIGNATURE | html`: the divergence databases, read for
people and scripts.
(`report accept | unaccept` are proxy.cli.accept's.)"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from typing import Any

from proxy.model import ReportsSpec
from proxy.model.evidence import STATUS_CLASSES
from reports import accepted, endpoints, html, lookup, query, sides
from reports.db import StoreUnavailable, Where
from reports.view import replayed_text

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3
SIGNATURES_SHOWN = 10  # per route in the text summary


def databases(args: argparse.Namespace, given: list[str] | None = None) -> list[Where] | None:
    """The stores to read: those `given` (default --db's), or routes.yaml's. A URL given takes its
    password from the variable routes.yaml names, when routes.yaml can be read, or from libpq's own
    PGPASSWORD or ~/.pgpass."""
    from proxy import config as config_file
    from proxy.model.errors import ConfigError

    given = args.db if given is None else given
    try:
        spec = config_file.load(args.config).reports
    except ConfigError as exc:
        if not given:
            print("\n".join(str(p) for p in exc.problems), file=sys.stderr)
            return None
        spec = None
    return stores(given, spec)


def stores(given: list[str], spec: ReportsSpec | None) -> list[Where]:
    """--db's stores (a URL with routes.yaml's password variable), or else routes.yaml's own."""
    if not given:
        assert spec is not None
        return [Where.of(spec)]
    return [Where(db, spec.password_env if spec is not None and Where(db).postgres else None) for db in given]


def names(dbs: list[Where]) -> str:
    return ", ".join(map(str, dbs))


def summary(args: argparse.Namespace) -> int:
    if args.by == "endpoint":
        return _by_endpoint(args)
    dbs = databases(args)
    try:
        routes = query.summary(dbs, args.route) if dbs else None
        both = sides.sides(dbs, args.route) if dbs else []
    except (FileNotFoundError, StoreUnavailable) as exc:
        print(f"strangler report: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if routes is None:
        return EXIT_INVALID
    if args.format == "json":
        print(json.dumps({"routes": _with_sides(routes, both)}))
    else:
        print("\n".join([_summary_table(routes), *_sides_lines(both)]))
    return EXIT_OK


def _by_endpoint(args: argparse.Namespace) -> int:
    dbs = databases(args)
    try:
        found = endpoints.by_endpoint(dbs, args.route) if dbs else None
    except (FileNotFoundError, StoreUnavailable) as exc:
        print(f"strangler report: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if found is None:
        return EXIT_INVALID
    if args.format == "json":
        print(json.dumps({"endpoints": [e.as_json() for e in found]}))
    else:
        print(endpoint_table(found))
    return EXIT_OK


def endpoint_table(found: list[endpoints.EndpointSummary]) -> str:
    if not found:
        return "no comparisons by endpoint recorded yet"
    route_width = max(5, *(len(e.route) for e in found))
    width = max(8, *(len(e.endpoint) for e in found))
    lines = [f"{'route':<{route_width}}  {'endpoint':<{width}}  {'compared':>9}  {'diverged':>9}  {'accepted':>9}  "
             f"{'open rate':>9}  signatures"]
    for e in found:
        signatures = ", ".join(f"{s} ({n}{', accepted' if s in e.accepted else ''})" for s, n in e.signatures) or "-"
        lines.append(f"{e.route:<{route_width}}  {e.endpoint:<{width}}  {e.tally.compared:>9}  {e.tally.diverged:>9}  "
                     f"{e.tally.accepted:>9}  {e.open_rate:>9.1%}  {signatures}")
    return "\n".join(lines)


def _with_sides(routes: list[query.RouteSummary], both: list[sides.RouteSides]) -> list[dict[str, Any]]:
    """Each route's JSON with its `sides` (None without answers recorded); a route with answers but no
    comparison yet (a toggle without a parallel run) joins with its counts at 0."""
    by_route = {s.route: s for s in both}
    found = [*routes, *(query.RouteSummary(name) for name in sorted(by_route.keys() - {r.route for r in routes}))]
    return [{**r.as_json(), "sides": by_route[r.route].as_json() if r.route in by_route else None} for r in found]


def _sides_lines(both: list[sides.RouteSides]) -> list[str]:
    """Each side's answers: status classes, error rate, p50/p95/p99; and the p99s compared, floor stated."""
    if not both:
        return []
    width = max(5, *(len(s.route) for s in both))
    classes = "".join(f"{str(c):>6}" for c in STATUS_CLASSES)
    lines = ["", "sides: each side's answers (latencies are bin bounds, within 20%)",
             f"{'route':<{width}}  {'side':<6}  {'answers':>8}  {'errors':>7}{classes}  {'p50':>9}  {'p95':>9}  "
             f"{'p99':>9}"]
    for route in both:
        for side, answers, rate, *cells in route.table():  # the HTML report's rows, aligned
            mix, times = "".join(f"{n:>6}" for n in cells[:-3]), "  ".join(f"{t:>9}" for t in cells[-3:])
            lines.append(f"{route.route:<{width}}  {side:<6}  {answers:>8}  {rate:>7}{mix}  {times}")
    lines += [f"{route.route}: {route.ratio_text()}" for route in both]
    return lines


def _summary_table(routes: list[query.RouteSummary]) -> str:
    if not routes:
        return "no comparisons recorded yet"
    width = max(5, *(len(r.route) for r in routes))
    lines = [f"{'route':<{width}}  {'compared':>9}  {'diverged':>9}  {'accepted':>9}  {'open rate':>9}  "
             "top diverging paths"]
    for r in routes:
        top = ", ".join(f"{path} ({count})" for path, count in r.top_paths) or "-"
        lines.append(f"{r.route:<{width}}  {r.compared:>9}  {r.diverged:>9}  {r.accepted:>9}  {r.open_rate:>9.1%}  "
                     f"{top}")
    for r in routes:
        lines += _signature_lines(r) if r.signatures else []
    return "\n".join(lines)


def _signature_lines(route: query.RouteSummary) -> list[str]:
    """A route's signatures, accepted ones last and marked, with their latest replay."""
    head = f"{route.route}: {len(route.signatures)} signature{'s' if len(route.signatures) > 1 else ''}"
    if route.accepted:
        head += (f", {route.accepted} divergences accepted "
                 f"(rate without them {route.divergence_rate_unaccepted:.1%})")
    lines = ["", head]
    for s in route.signatures[:SIGNATURES_SHOWN]:
        notes = [_accepted_text(s.accepted_reason, s.accepted_expires)] if s.accepted else []
        notes += [replayed_text(s.replayed)] if s.replayed else []
        lines.append(f"  {s.signature}  {s.count:>7}  {', '.join(s.paths)}" + "".join(f"  [{n}]" for n in notes))
    if len(route.signatures) > SIGNATURES_SHOWN:
        lines.append(f"  ... {len(route.signatures) - SIGNATURES_SHOWN} more (strangler report html lists all)")
    return lines


def _accepted_text(reason: str | None, expires: float | None) -> str:
    return f"accepted: {reason}" + ("" if expires is None else f" (until {accepted.until_text(expires)})")


def show(args: argparse.Namespace) -> int:
    """A divergence by its id; a signature by its latest example."""
    named = _named(args)
    if isinstance(named, int):
        return named
    dbs, found = named
    if found.kind is lookup.Kind.SIGNATURE:
        latest = lookup.examples(dbs, found.key)
        if not latest:
            print(f"strangler report: signature {found.key} has no kept example "
                  "(reports.examples_per_signature is 0, or they aged out)", file=sys.stderr)
            return EXIT_UNKNOWN
        shown = query.show(dbs, latest[0].id)
        head = f"latest of {len(latest)} kept examples of signature {found.key}\n\n"
    else:
        shown, head = query.show(dbs, found.key), ""
    assert shown is not None
    print(json.dumps(shown, ensure_ascii=False) if args.format == "json" else head + show_text(shown))
    return EXIT_OK


def examples(args: argparse.Namespace) -> int:
    named = _named(args, args.signature)
    if isinstance(named, int):
        return named
    dbs, found = named
    if found.kind is not lookup.Kind.SIGNATURE:
        return usage(f"{args.signature!r} is divergence {found.key}, not a signature: "
                     f"strangler report show {found.key}")
    listed = lookup.examples(dbs, found.key)
    if args.format == "json":
        print(json.dumps({"signature": found.key, "examples": [e.as_json() for e in listed]}))
    else:
        print("\n".join(examples_text(found, listed)))
    return EXIT_OK


def examples_text(signature: lookup.Named, listed: list[lookup.Example]) -> list[str]:
    lines = [f"signature {signature.key}  ({signature.about}): {len(listed)} kept examples, newest first"]
    for e in listed:
        at = datetime.fromtimestamp(e.at, timezone.utc).isoformat(timespec="seconds")
        lines.append(f"  {e.id}  {at}  {e.role:<6}  {e.legacy_status or '-'} -> {e.new_status or '-'}  "
                     f"{e.method} {e.target}")
    return lines


def _named(args: argparse.Namespace, given: str | None = None) -> tuple[list[Where], lookup.Named] | int:
    """The stores and what `given` (default: the id argument) names in them, or the exit status (said)."""
    dbs = databases(args)
    if dbs is None:
        return EXIT_INVALID
    given = args.id if given is None else given
    try:
        return dbs, lookup.find(dbs, given)
    except (FileNotFoundError, StoreUnavailable) as exc:
        print(f"strangler report: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except lookup.NotFound:
        print(f"strangler report: no divergence or signature {given!r} in {names(dbs)}", file=sys.stderr)
        return EXIT_UNKNOWN
    except lookup.Unclear as exc:
        return usage(str(exc))


def _ignored(path: str) -> dict[str, tuple[str, ...]]:
    """Each route's ignore_paths from routes.yaml, when it can be read (the report is made without)."""
    from proxy import config as config_file
    from proxy.model.errors import ConfigError

    try:
        return config_file.load(path).ignored_paths()
    except (ConfigError, OSError):
        return {}


def html_page(args: argparse.Namespace) -> int:
    dbs = databases(args)
    if dbs is None:
        return EXIT_INVALID
    try:
        page = html.render(dbs, ignored=_ignored(args.config))
        if args.out:
            _write_private(args.out, page)
    except OSError as exc:  # FileNotFoundError: a database; anything else: --out
        print(f"strangler report: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if not args.out:
        sys.stdout.write(page)
    return EXIT_OK


def _write_private(path: str, text: str) -> None:
    """Write `text` to a file only its owner can read, as the database it comes from (a file already
    there is made so too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8", closefd=True) as out:
        os.fchmod(fd, 0o600)
        out.write(text)


def usage(message: str) -> int:
    print(f"strangler report: {message}", file=sys.stderr)
    return EXIT_USAGE


def show_text(d: dict[str, Any]) -> str:
    at = datetime.fromtimestamp(d["at"], timezone.utc).isoformat(timespec="seconds")
    lines = [f"divergence {d['id']}  route {d['route']}  signature {d['signature']}",
             f"request    {d['method']} {d['target']}  (id {d['request_id']}, {at}, served by {d['served']})",
             *[f"sent to {side:<6} {d[f'{side}_target']}  (rewritten)" for side in ("legacy", "new")
               if d.get(f"{side}_target")],
             f"legacy     {_answer(d, 'legacy')}", f"new        {_answer(d, 'new')}"]
    if d.get("accepted"):
        lines.append(_accepted_text(d["accepted"]["reason"], d["accepted"]["expires"]))
    lines += ["", "differences:"]
    lines += [f"  {x['path']}  {x['kind']}: {_value(x['legacy'])} -> {_value(x['new'])}" for x in d["differences"]]
    if d["noise"]:
        lines += ["", "noise (learned from legacy answering twice; not counted):"]
        lines += [f"  {x['path']}: {_value(x['legacy'])} -> {_value(x['new'])}" for x in d["noise"]]
    lines += ["", "request headers:"] + [f"  {k}: {v}" for k, v in d["request_headers"]]
    for side in ("legacy", "new"):
        lines += ["", f"{side} body:", _indented(d[f"{side}_body"])]
    return "\n".join(lines)


def _answer(d: dict[str, Any], side: str) -> str:
    status = d[f"{side}_status"] if d[f"{side}_error"] is None else f"no answer ({d[f'{side}_error']})"
    return f"{status} in {d[f'{side}_ms']} ms"


def _value(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value, ensure_ascii=False)


def _indented(body: str | None) -> str:
    if body is None:
        return "  (not kept)"
    try:
        body = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        pass
    return "\n".join("  " + line for line in body.splitlines()) or "  (empty)"
