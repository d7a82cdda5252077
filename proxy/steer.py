"""What a reviewer does to the evidence: accept a signature (or withdraw it), and hold, resume or roll back a
route's rollout plan. The command line (proxy/cli) and the review console (proxy/admin/console.py) both
act through here, so the two do exactly the same thing, and every act is recorded with who, when and
why (the `actions` table; a plan's own moves are also the plan's events), for the plan's timeline.

Wiring-level: it reaches the store (reports/) and Unleash, which the admin package below it may not.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from proxy.admin.console import Act, ActKind, Filters, Forms
from proxy.model import Config, Provider, Route
from proxy.model.evidence import PlanState
from proxy.model.exchange import MIN_PREFIX  # one bound for the CLI, the console and lookups
from reports import accepted, html, query
from reports.db import Where
from reports.plans import StorePlans
from reports.schema import open_database, retrying_locks
from reports.view import Console
from toggles.unleash_admin import UnleashAdmin

PLAN_ACTIONS = ("hold", "resume", "rollback")


class Refused(Exception):
    """An act that cannot be done, and why: `status` is the HTTP answer the console gives (400 the request
    is wrong, 404 what it names does not exist, 409 the state moved meanwhile)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True, slots=True)
class Done:
    message: str  # what happened, in a line
    route: str
    warning: str = ""  # it happened, but something beside it did not (Unleash not told)


def accept(dbs: list[Where], given: str, reason: str, expires: str | None, by: str, origin: str,
           now: float | None = None, route: str | None = None) -> Done:
    """Accept the signature `given` (whole, or a unique prefix) in every store, until `expires` (a day or an
    ISO datetime, ahead of now) or until withdrawn; with `route`, only a signature of that route."""
    now = time.time() if now is None else now
    if not reason.strip():
        raise Refused(400, "the reason must say why the difference is intended")
    try:
        until = accepted.parse_expiry(expires, now) if expires else None
    except ValueError as exc:
        raise Refused(400, str(exc).replace("--expires", "the expiry")) from None
    known = {s.signature: s for r in query.summary(_present(dbs)) for s in r.signatures}
    found = resolve(given, {k: f"{s.route}: {', '.join(s.paths)}" for k, s in known.items()}, dbs)
    sig = known[found]
    _on_route(found, sig.route, route)
    _each(dbs, lambda db: accepted.accept(db, found, sig.route, reason, until, by, now))
    _record(dbs, now, by, "accept", sig.route, found, reason, origin)
    return Done(f"accepted {found} (route {sig.route}: {', '.join(sig.paths)}) "
                f"{'until ' + accepted.until_text(until) if until else 'until withdrawn'}: {reason.strip()}",
                sig.route)


def unaccept(dbs: list[Where], given: str, by: str, origin: str, reason: str = "", route: str | None = None) -> Done:
    known = {k: a for found in _each(_present(dbs), accepted.recorded) for k, a in found.items()}
    found = resolve(given, {k: f"{a.route}: {a.reason}" for k, a in known.items()}, dbs, "accepted ")
    _on_route(found, known[found].route, route)
    _each(dbs, lambda db: accepted.withdraw(db, found))
    _record(dbs, time.time(), by, "unaccept", known[found].route, found, reason or "acceptance withdrawn", origin)
    return Done(f"withdrew the acceptance of {found} ({known[found].route}: {known[found].reason})",
                known[found].route)


def move(config: Config, name: str, action: str, reason: str, by: str, to_legacy: bool = False) -> Done:
    """Advance, hold, resume or roll back the plan of route `name`, as `strangler rollout ACTION` does."""
    route = next((r for r in config.routes if r.name == name and r.rollout_plan is not None), None)
    if route is None:
        planned = ", ".join(r.name for r in config.routes if r.rollout_plan is not None) or "none"
        raise Refused(404, f"no route {name!r} with a rollout_plan (routes with one: {planned})")
    store = StorePlans(Where.of(config.reports))
    try:
        state = store.begin(route.name, route.rollout_plan.steps[0], time.time())
        to, held = _target(route, state, action, to_legacy)
        moved = store.move(state, action, to, reason or f"{action} by hand", by, time.time(), held=held)
    finally:
        store.close()
    if moved is None:
        raise Refused(409, "the plan moved meanwhile; look again")
    done = f"{route.name}: {state.percent}% -> {moved.percent}%" + (" (held)" if moved.held else "")
    return Done(done, route.name, _publish(config, route, moved.percent))


def resolve(given: str, known: dict[str, str], dbs: list[Where], kind: str = "") -> str:
    """The signature `given` names, whole or by a unique prefix. `known`: each signature, described."""
    if given in known:
        return given
    if len(given) < MIN_PREFIX:
        raise Refused(400, f"{given!r} is too short: give a whole signature or at least {MIN_PREFIX} characters")
    matches = sorted(s for s in known if s.startswith(given.lower()))
    if not matches:
        raise Refused(404, f"no {kind}signature {given!r} in {', '.join(map(str, dbs))}")
    if len(matches) > 1:
        raise Refused(400, f"{given!r} is ambiguous: it starts {len(matches)} signatures"
                           + "".join(f"\n  {s}  ({known[s]})" for s in matches))
    return matches[0]


def _on_route(signature: str, its_route: str, named: str | None) -> None:
    """A form names the route it was shown under: a signature of another route is not the one meant."""
    if named is not None and named != its_route:
        raise Refused(404, f"no signature {signature} on route {named!r} (it is route {its_route!r}'s)")


def _target(route: Route, state: PlanState, action: str, to_legacy: bool) -> tuple[int, bool]:
    plan = route.rollout_plan
    assert plan is not None
    if action == "hold":
        return state.percent, True
    if action == "resume":
        return state.percent, False
    if action == "rollback":
        if state.percent == 0:
            raise Refused(409, "no users are on the new side: nothing to roll back")
        return (0 if to_legacy else plan.below(state.percent)), True
    if action == "advance":
        to = plan.above(state.percent)
        if to is None:
            raise Refused(409, "already at the last step")
        if to > route.ceiling:
            raise Refused(409, f"the next step ({to}%) is above routes.yaml's rollout ({route.ceiling}%): "
                               "raise it there first")
        return to, state.held
    raise Refused(400, f"no plan action {action!r}")


def _publish(config: Config, route: Route, percent: int) -> str:
    """With the unleash provider, the toggle's rollout follows the plan; what went wrong telling it."""
    spec = config.toggles.unleash
    if config.toggles.provider is not Provider.UNLEASH or spec is None or route.toggle is None:
        return ""
    token = os.environ.get(spec.admin_token_env) if spec.admin_token_env else None
    try:
        UnleashAdmin(spec.admin_url, spec.project, spec.environment, token).set_rollout(route.toggle.name, percent)
    except (OSError, RuntimeError) as exc:
        return f"the plan moved, but Unleash was not told: {exc}"
    return ""


def _record(dbs: list[Where], at: float, by: str, action: str, route: str, subject: str, reason: str,
            origin: str) -> None:
    _each(dbs, lambda db: db.execute(
        "INSERT INTO actions (at, by, action, route, subject, reason, origin) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [at, by, action, route, subject, reason.strip(), origin]))


def _present(dbs: list[Where]) -> list[Where]:
    missing = [str(db) for db in dbs if not db.present]
    if missing:
        raise Refused(404, f"no divergence database at {', '.join(missing)}")
    return dbs


def _each(dbs: list[Where], step: Callable) -> list:
    """`step` on each store, opened for writing: an acceptance goes into every store given, where the
    proxies writing it (their rollout gates) read it."""
    done = []
    for place in dbs:
        db = open_database(place)
        try:
            done.append(retrying_locks(lambda: step(db)))  # noqa: B023 - called before the next db
        finally:
            db.close()
    return done


def console_page(place: Where, config: Config, filters: Filters, forms: Forms) -> str:
    """The admin listener's /reports: the report on this proxy's store, filtered, with the forms that act."""
    console = Console(forms.acting, forms.token, [route.name for route in config.routes], filters.route,
                      filters.signature, _day(filters.since), _day(filters.until, -1), forms.notice,
                      filters.endpoint)
    return html.render([place], missing_ok=True, ignored=config.ignored_paths(), console=console,
                       since=filters.since, until=filters.until)


def console_act(place: Where, config: Config, act: Act) -> tuple[int, str]:
    """Do what a console form asks, as the matching command would: (HTTP status, what happened or why not)."""
    try:
        if act.kind is ActKind.ACCEPT:
            done = accept([place], act.signature, act.reason, act.expires, act.by, "console", route=act.route)
        elif act.kind is ActKind.UNACCEPT:
            done = unaccept([place], act.signature, act.by, "console", act.reason, route=act.route)
        else:
            done = move(config, act.route, act.kind.value, act.reason, f"console:{act.by}")
    except Refused as exc:
        return exc.status, exc.message
    return 200, done.message + (f"; {done.warning}" if done.warning else "")


def _day(moment: float | None, back: float = 0) -> str:
    """A filter's time as its date field shows it (`until` is the end of its day, so one second back)."""
    if moment is None:
        return ""
    return time.strftime("%Y-%m-%d", time.gmtime(moment + back))
