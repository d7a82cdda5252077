"""The review console's safety: who may act, and that a form was made here, for this act, once.

A browser cannot send the admin token as a bearer header from a plain form, so signing in
trades it for a session cookie (HttpOnly, SameSite=Strict) that holds an expiring HMAC made
with the token, never the token itself. Every act is a POST that must come from this
listener's own origin (the Origin header, or Sec-Fetch-Site where a browser sends no
Origin) and carry a form token: an HMAC over the session, the act and its subject, with an
expiry, spent on first use so a replayed form changes nothing. A client that authenticates
with the bearer header (a script, not a browser) needs neither: no cookie rides along with
its requests for a forged page to borrow.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import datetime, timezone
from dataclasses import dataclass
from enum import StrEnum
from typing import Callable, Mapping

SESSION_COOKIE = "strangler_session"
SESSION_SECONDS = 12 * 3600
FORM_SECONDS = 3600  # a page's forms stay good for an hour
LONGEST = {"by": 100, "reason": 1000, "signature": 100, "route": 200, "expires": 40}  # characters a field may hold


class ActKind(StrEnum):
    ACCEPT = "accept"
    UNACCEPT = "unaccept"
    HOLD = "hold"
    RESUME = "resume"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Act:
    """One act a reviewer asks for from the console."""

    kind: ActKind
    route: str
    signature: str  # accept and unaccept; "" for a plan's acts
    reason: str
    expires: str  # accept: YYYY-MM-DD or an ISO datetime, required from the console; "" for the others
    by: str  # who, as the reviewer names themself

    @property
    def subject(self) -> str:
        return self.signature or self.route


@dataclass(frozen=True, slots=True)
class Forms:
    """What a console page's forms need: whether acts are on, a token per form, what the last act did."""

    acting: bool
    token: Callable[[str, str], str]  # (act, subject) -> the form's token
    notice: str = ""


@dataclass(frozen=True, slots=True)
class Filters:
    """What the console shows: a route, an endpoint, a signature (or its prefix), a time range (seconds, UTC).
    Each is a query parameter of the page's GET form (no script); a new filter is one more field here, in
    filters_from, in reports.view.Console and in the form (reports/templates/console.html)."""

    route: str = ""
    signature: str = ""
    since: float | None = None
    until: float | None = None
    endpoint: str = ""  # as the endpoint table writes it: /api/orders/{id}


class Guard:
    """Sessions and form tokens, keyed by the admin token (None: the console is read-only)."""

    def __init__(self, token: str | None) -> None:
        self.key = token.encode() if token else None
        self._spent: dict[str, float] = {}  # form nonce -> when it would have expired
        self._ended: dict[str, float] = {}  # signed-out session id -> when it would have expired

    @property
    def acting(self) -> bool:
        return self.key is not None

    def signs_in(self, given: str) -> bool:
        return self.key is not None and hmac.compare_digest(given.encode("utf-8", "replace"), self.key)

    def session(self, now: float | None = None) -> str:
        """A new session: a random id and its expiry, under an HMAC made with the token."""
        sid, expires = secrets.token_hex(8), str(int((time.time() if now is None else now) + SESSION_SECONDS))
        return f"{sid}.{expires}.{self._mac('session', sid, expires)}"

    def valid_session(self, value: str | None, now: float | None = None) -> bool:
        parts = (value or "").split(".")
        if self.key is None or len(parts) != 3 or not parts[1].isdigit():
            return False
        sid, expires, mac = parts
        now = time.time() if now is None else now
        return int(expires) > now and sid not in self._ended and \
            hmac.compare_digest(mac, self._mac("session", sid, expires))

    def end(self, value: str | None, now: float | None = None) -> None:
        """Sign a session out: its cookie is refused from now on, even where the browser kept a copy."""
        if self.valid_session(value, now):
            sid, expires, _ = (value or "").split(".")
            now = time.time() if now is None else now
            self._ended = {s: at for s, at in self._ended.items() if at >= now} | {sid: float(expires)}

    def form(self, session: str, kind: str, subject: str, now: float | None = None) -> str:
        """A token for one form: this session, this act on this subject, within the hour."""
        nonce, expires = secrets.token_hex(8), str(int((time.time() if now is None else now) + FORM_SECONDS))
        return f"{nonce}.{expires}.{self._mac('form', session, kind, subject, nonce, expires)}"

    def spend(self, token: str, session: str, kind: str, subject: str, now: float | None = None) -> str | None:
        """None when the token is good, and spend it; else why not."""
        now = time.time() if now is None else now
        parts = token.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return "the form carries no token from this console"
        nonce, expires, mac = parts
        if not hmac.compare_digest(mac, self._mac("form", session, kind, subject, nonce, expires)):
            return "the form was not made by this console for this act (a forged or altered form)"
        if int(expires) < now:
            return "the form is over an hour old: load the page again"
        self._spent = {n: at for n, at in self._spent.items() if at >= now}
        if nonce in self._spent:
            return "the form was already sent once (a replayed form)"
        self._spent[nonce] = float(expires)
        return None

    def seal(self, notice: str) -> str:
        """A MAC for what an act did, so the page after it shows only this console's words (a link from
        elsewhere cannot put its own text on the page)."""
        return self._mac("notice", notice)[:32] if self.key is not None else ""

    def unseal(self, notice: str, seal: str) -> str:
        """The notice when its seal is this console's; else nothing."""
        return notice if seal and hmac.compare_digest(seal, self.seal(notice)) else ""

    def _mac(self, *parts: str) -> str:
        assert self.key is not None
        return hmac.new(self.key, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()


def same_origin(headers: Mapping[str, str], scheme: str, host: str) -> bool:
    """Whether a POST comes from this listener's own pages (what OWASP's CSRF advice checks first). The
    pages say `Referrer-Policy: no-referrer`, under which Chromium sends `Origin: null` even to the same
    origin; Sec-Fetch-Site then says where the form was. A client that sends neither is no browser."""
    origin, site = headers.get("Origin"), headers.get("Sec-Fetch-Site")
    if origin is not None and origin != "null":
        return origin == f"{scheme}://{host}"
    if site is not None:
        return site in ("same-origin", "none")
    return origin is None


def filters_from(query: Mapping[str, str]) -> Filters | str:
    """The console's filters from the query string; else what is wrong with one."""
    times = {}
    for name in ("since", "until"):
        text = query.get(name, "")
        if text:
            try:
                day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
            except ValueError:
                return f"'{name}' is a date, YYYY-MM-DD; got {text[:40]!r}"
            times[name] = day + (86400 if name == "until" else 0)
    if "since" in times and "until" in times and times["since"] >= times["until"]:
        return "'since' is after 'until': the range holds no day"
    return Filters(query.get("route", "")[:200], query.get("signature", "").strip()[:100], times.get("since"),
                   times.get("until"), query.get("endpoint", "").strip()[:300])


def act_from(form: Mapping[str, str]) -> Act | str:
    """The act a posted form asks for; else what is wrong with it."""
    try:
        kind = ActKind(form.get("action", ""))
    except ValueError:
        return f"no act {form.get('action', '')!r} (one of {', '.join(ActKind)})"
    too_long = [name for name, most in LONGEST.items() if len(form.get(name, "")) > most]
    if too_long:
        return f"the {too_long[0]!r} field is over {LONGEST[too_long[0]]} characters"
    act = Act(kind, form.get("route", "").strip(), form.get("signature", "").strip(), form.get("reason", ""),
              form.get("expires", "").strip(), form.get("by", "").strip())
    if not act.by:
        return "say who you are (the 'by' field): every act is recorded with its author"
    if not act.route:
        return "the form names no route"
    if kind in (ActKind.ACCEPT, ActKind.UNACCEPT) and not act.signature:
        return "the form names no signature"
    if not act.reason.strip():
        return "the reason must say why (the 'reason' field): every act is recorded with it"
    if kind is ActKind.ACCEPT and not act.expires:
        return "an acceptance from the console needs an expiry (the 'expires' field), so it is looked at again"
    return act
