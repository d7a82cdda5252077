"""What the HTML report shows, built from the query API: plain values (percentages, bars, aligned bodies).

No markup here: the template escapes everything it is given.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from reports import charts, endpoints, figures, query, series, timeline
from reports.accepted import until_text
from reports.db import Where, where
from reports.query import Place
from reports.linepaths import excused, lines
from reports.sidebyside import Row, pretty, side_by_side
from reports.sides import TABLE_HEAD, RouteSides, sides

TOP_PATHS, TOP_SIGNATURES = 10, 10


@dataclass(frozen=True)
class PathCount:
    path: str
    count: int
    width: float  # percent of the widest bar


@dataclass(frozen=True)
class SignatureRow:
    signature: str
    paths: list[str]
    count: int
    first_seen: str
    last_seen: str
    example: str | None  # the anchor of its example on this page
    accepted: str | None = None  # the reason it was accepted as intended; None: not accepted
    accepted_until: str | None = None  # when the acceptance ends; None: until withdrawn
    replayed: str | None = None  # the latest replay's outcome, in words
    spark: charts.Spark | None = None  # its divergences per hour over 14 days (None: none there)


@dataclass(frozen=True)
class DifferenceRow:
    path: str
    kind: str
    legacy: str
    new: str
    noise: bool


@dataclass(frozen=True)
class Example:
    anchor: str
    signature: str
    paths: list[str]
    row: dict[str, Any]  # the stored divergence, as query.show() gives it
    at: str
    legacy_answer: str
    new_answer: str
    differences: list[DifferenceRow]
    body_rows: list[Row] | None  # None: a body was not kept
    legacy_body: str | None
    new_body: str | None


@dataclass(frozen=True)
class Move:
    """One move of a rollout plan, with the evidence it was made on."""

    at: str
    action: str
    before: int | None  # None: a reviewer's act on a signature, not a move
    after: int | None
    reason: str
    by: str
    evidence: str  # the step's evidence in words; "" when the move was not the gates'
    subject: str = ""  # the signature a reviewer's act was on


@dataclass(frozen=True)
class PlanView:
    percent: int
    since: str
    held: str | None  # why it is held, or None
    moves: list[Move]


@dataclass(frozen=True)
class RouteView:
    name: str
    anchor: str
    compared: int
    diverged: int
    rate: str  # the open divergence rate: the headline, as the gates count
    trends: list[charts.Trend]  # the last hour per minute, 14 days per hour, with the plan's moves
    top_paths: list[PathCount]
    noise: list[tuple[str, int]]
    signatures: list[SignatureRow]
    examples: list[Example]
    plan: PlanView | None = None
    actions: list[Move] = field(default_factory=list)  # reviewers' acts, shown apart when there is no plan
    accepted: int = 0  # divergences whose signature is accepted, shown beside the rate
    open: int = 0  # diverged less accepted
    noise_seen: int = 0  # differences learned as noise (never counted as divergences)
    endpoints: list[figures.EndpointRow] = field(default_factory=list)
    sides: RouteSides | None = None  # each side's answers, when recorded (routes with a new side)

    @property
    def latency(self) -> charts.Histogram | None:
        """Both sides' latency histograms on one logarithmic axis (as shares of each side's answers)."""
        return figures.latency(self.sides)

    @property
    def mix(self) -> charts.Mix | None:
        """Each side's answers by status class."""
        return figures.status_mix(self.sides)


@dataclass(frozen=True)
class Console:
    """What the admin listener's console adds to the report: filters, and (with an admin token) forms."""

    acting: bool  # whether acts are on (an admin token is configured)
    form_token: Callable[[str, str], str]  # a token for the form of an act on a subject
    routes: list[str]  # every route, for the filter
    route: str = ""
    signature: str = ""
    since: str = ""  # YYYY-MM-DD, as the filter form took it
    until: str = ""
    notice: str = ""  # what the last act did
    endpoint: str = ""  # only this endpoint's signatures and row


@dataclass(frozen=True)
class Page:
    generated: str
    databases: list[tuple[str, bool]]  # each store as shown (never a password), and whether it exists
    routes: list[RouteView]
    console: Console | None = None  # None: a read-only snapshot (`strangler report html`)
    sides_head: tuple[str, ...] = TABLE_HEAD  # the columns of each route's table of sides


def page(databases: list[Place], now: float | None = None, missing_ok: bool = False,
         ignored: Mapping[str, tuple[str, ...]] | None = None, console: Console | None = None,
         since: float | None = None, until: float | None = None) -> Page:
    """The whole report; with `missing_ok`, files not created yet are listed and skipped. `ignored`: each
    route's `compare.ignore_paths`, when routes.yaml is at hand (their lines are then marked as such).
    `console`: the admin listener's filters and forms; `since`/`until`: its time range."""
    now = time.time() if now is None else now
    places = [where(db) for db in databases]
    present = [db for db in places if not missing_ok or db.present]
    summaries = sorted(query.summary(present, top=TOP_PATHS, since=since, until=until),
                       key=lambda r: (-r.open_rate, r.route))
    only = console.signature.lower() if console is not None else ""
    endpoint = console.endpoint if console is not None else ""
    if console is not None and console.route:
        summaries = [s for s in summaries if s.route == console.route]
    both = {found.route: found for found in sides(present, since=since, until=until)}
    return Page(iso(now), [(str(db), db.present) for db in places],
                [route_view(present, s, now, (ignored or {}).get(s.route, ()), only, endpoint, both.get(s.route))
                 for s in summaries], console)


def route_view(databases: list[Where], summary: query.RouteSummary, now: float,
               ignored: tuple[str, ...] = (), only: str = "", endpoint: str = "",
               both: RouteSides | None = None) -> RouteView:
    """`only`: show the signatures that start with it; `endpoint`: those seen at that endpoint, and its row
    alone (the route's figures stay the whole route's)."""
    rows = endpoints.by_endpoint(databases, summary.route, now)
    if endpoint:
        rows = [e for e in rows if e.endpoint == endpoint]
        at = {s for e in rows for s, _ in e.signatures}
    shown = [s for s in summary.signatures if s.signature.startswith(only) and (not endpoint or s.signature in at)]
    chosen = shown[:TOP_SIGNATURES]
    noise = tuple(path for path, _ in summary.noise)
    examples = {s.signature: example_view(found[0], s, ignored, noise)
                for s in chosen if (found := query.examples(databases, s.signature, limit=1))}
    accepted = {s.signature for s in summary.signatures if s.accepted}
    sparks = series.signature_trends(databases, summary.route, series.FORTNIGHT, now)
    return RouteView(
        summary.route, "route-" + anchor(summary.route), summary.compared, summary.diverged,
        percent(summary.open, summary.compared),
        trends(databases, summary.route, now, accepted),
        path_counts(summary.top_paths),
        summary.noise,
        [signature_row(s, examples.get(s.signature), now, figures.sparkline(sparks.get(s.signature))) for s in shown],
        list(examples.values()), plan_view(timeline.plan_timeline(databases, summary.route)),
        [move_view(e) for e in timeline.recent_actions(databases, summary.route)],
        summary.accepted, summary.open, sum(count for _, count in summary.noise),
        figures.endpoint_rows(rows), both)


def trends(databases: list[Where], route: str, now: float, accepted: set[str]) -> list[charts.Trend]:
    """The route's trend per minute over the last hour and per hour over 14 days, from the `counts` table, with
    the plan's moves from `rollout_events` marked."""
    return [figures.trend(title, span, series.route_trend(databases, route, span, now, accepted),
                          series.rollout_steps(databases, route, span, now), every, (seconds, unit))
            for title, span, every, seconds, unit in figures.SHAPES]


def plan_view(plan: timeline.PlanTimeline | None) -> PlanView | None:
    if plan is None:
        return None
    moves = [move_view(e) for e in plan.events]
    return PlanView(plan.percent, iso(plan.since), plan.reason or "held" if plan.held else None, moves)


def move_view(event: dict[str, Any]) -> Move:
    return Move(iso(event["at"]), event["action"], event["from_percent"], event["to_percent"], event["reason"],
                event["by"], evidence_text(event["evidence"], event["action"]), event.get("subject", ""))


def evidence_text(evidence: dict[str, Any] | None, action: str) -> str:
    """What the gates moved a step on (a rollback: the recent window; an advance: the whole step):
    comparisons, divergences, the new side's health."""
    if not evidence:
        return ""
    step = evidence.get("recent" if action == "rollback" else "step") or {}
    legacy, new = step.get("legacy", {}), step.get("new", {})
    ratio = step.get("latency_ratio")
    return (f"{step.get('compared', 0)} compared, {step.get('diverged', 0)} diverged "
            f"({step.get('accepted', 0)} accepted); new side {new.get('errors', 0)} failed of "
            f"{new.get('answers', 0)}; p99 {new.get('p99_ms')} ms vs legacy {legacy.get('p99_ms')} ms"
            + (f" (x{ratio})" if ratio is not None else ""))


def percent(part: int, whole: int) -> str:
    """A rate as people read it: "12.5%", small ones with more digits, "–" when nothing was compared."""
    if not whole:
        return "–"
    rate = part / whole
    if 0 < rate < 0.0001:
        return "<0.01%"
    return f"{rate:.2%}" if 0 < rate < 0.01 else f"{rate:.1%}"


def path_counts(top_paths: list[tuple[str, int]]) -> list[PathCount]:
    widest = max((count for _, count in top_paths), default=0)
    return [PathCount(path, count, round(100 * count / widest, 1) if widest else 0.0) for path, count in top_paths]


def signature_row(signature: query.Signature, example: Example | None, now: float | None = None,
                  spark: charts.Spark | None = None) -> SignatureRow:
    expires = signature.accepted_expires
    return SignatureRow(signature.signature, signature.paths, signature.count, iso(signature.first_seen),
                        iso(signature.last_seen), example.anchor if example else None, signature.accepted_reason,
                        None if expires is None else until_text(expires),
                        None if signature.replayed is None else replayed_text(signature.replayed, now), spark)


def replayed_text(replayed: tuple[float, int, int], now: float | None = None) -> str:
    """A replay's outcome in words: "replayed 5 min ago: 3/3 match now"."""
    at, matched, total = replayed
    return f"replayed {ago((time.time() if now is None else now) - at)}: {matched}/{total} match now"


def ago(seconds: float) -> str:
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return "just now"


def example_view(row: dict[str, Any], signature: query.Signature, ignored: tuple[str, ...] = (),
                 noise: tuple[str, ...] = ()) -> Example:
    """One stored divergence laid out for reading: answers, differences, and the bodies aligned, with the
    lines of paths the route ignores or learned as noise marked as such."""
    legacy, new = pretty(row["legacy_body"]), pretty(row["new_body"])
    noise = (*noise, *(d["path"] for d in row["noise"]))
    paths = (_line_paths(row["legacy_body"]), _line_paths(row["new_body"]))
    counted = tuple(d["path"] for d in row["differences"])
    rows = None
    if legacy is not None and new is not None:
        rows = side_by_side(legacy, new, paths if None not in paths else None,  # type: ignore[arg-type]
                            lambda path: excused(path, ignored, noise, counted))
    return Example(
        "example-" + anchor(signature.signature), signature.signature, signature.paths, row, iso(row["at"]),
        answer(row, "legacy"), answer(row, "new"),
        [difference_row(d, False) for d in row["differences"]] + [difference_row(d, True) for d in row["noise"]],
        rows, legacy, new)


def _line_paths(body: str | None) -> list[str] | None:
    """The JSON path of each line of the body as pretty() prints it; None when it is not JSON."""
    if body is None:
        return None
    try:
        return [path for _, path in lines(json.loads(body))]
    except ValueError:
        return None


def answer(row: dict[str, Any], side: str) -> str:
    if row[f"{side}_error"] is not None:
        return f"no answer ({row[f'{side}_error']}) after {row[f'{side}_ms']} ms"
    return f"{row[f'{side}_status']} in {row[f'{side}_ms']} ms"


def difference_row(difference: dict[str, Any], noise: bool) -> DifferenceRow:
    kind = difference.get("kind", "changed")
    return DifferenceRow(difference["path"], kind, _value(difference["legacy"], kind == "added"),
                         _value(difference["new"], kind == "removed"), noise)


def _value(value: Any, absent: bool) -> str:
    return "(absent)" if absent else json.dumps(value, ensure_ascii=False)


def anchor(text: str) -> str:
    """A fragment identifier for `text`: letters, digits, `_` and `-` only."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "-"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
