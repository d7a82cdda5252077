"""Replay: a route's stored divergences sent again to both sides and compared, the check after a fix.

Only safe methods go out again (GET, HEAD, OPTIONS), never a request whose target held a
credential (stored redacted: it would ask for something else), and without the headers
whose stored value was redacted. Each side is sent its own form of the stored (client's)
target, as the route rewrites it now. Each is marked `X-Strangler-Replay: 1` and gets a fresh
X-Request-Id; at most `concurrency` run at once, each side under its upstream's timeouts
(the route's `timeout` over the upstream's, as when serving).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from comparators.base import Comparator
from proxy.model import Difference, FailureKind, Observation, Route, Side
from proxy.model.jsonpath import covers
from proxy.routing.rewrite import relocated_pairs, side_target
from proxy.wire.headers import HOP_BY_HOP

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
NOT_SENT = HOP_BY_HOP | {"host", "content-length", "expect", "x-request-id", "x-strangler-shadow",
                         "x-strangler-replay"}
MARK = "X-Strangler-Replay"


@dataclass(frozen=True)
class Replay:
    """One stored request, as it goes out again."""

    divergence_id: str
    signature: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    left_out: tuple[str, ...] = ()  # headers not sent: their stored value was redacted
    database: str = ""  # the file it was stored in (its outcome is recorded there)


@dataclass(frozen=True)
class Skipped:
    """A stored request not sent again, and why."""

    divergence_id: str
    signature: str
    method: str
    target: str
    why: str


@dataclass(frozen=True)
class Outcome:
    """What both sides answer now, and how those answers still differ (learned noise apart)."""

    replay: Replay
    legacy: Observation
    new: Observation
    differences: tuple[Difference, ...]
    noise: tuple[Difference, ...] = ()
    legacy_target: str = ""  # what each side was sent: the stored target, or the route's rewrite of it
    new_target: str = ""

    @property
    def matched(self) -> bool:
        return not self.differences


def plan(rows: Iterable[dict[str, Any]], redacted: Callable[[str], Any],
         limit: int | None = None) -> tuple[list[Replay], list[Skipped]]:
    """Stored divergences (newest first, as reports.query.stored_requests gives them) split into
    what goes out again, up to `limit`, and what may not. `redacted(text)`: whether text holds a
    redacted value."""
    replays: list[Replay] = []
    skipped: list[Skipped] = []
    for row in rows:
        why = None
        if row["method"].upper() not in SAFE:
            why = f"{row['method']} is not a safe method: sending it again would repeat a write"
        elif redacted(row["target"]):
            why = "its target held a credential, stored redacted"
        if why is not None:
            skipped.append(Skipped(row["id"], row["signature"], row["method"], row["target"], why))
        elif limit is None or len(replays) < limit:
            replays.append(_replay(row, redacted))
    return replays, skipped


def _replay(row: dict[str, Any], redacted: Callable[[str], Any]) -> Replay:
    kept, left_out = [], []
    for name, value in row["request_headers"]:
        if name.lower() in NOT_SENT:
            continue
        if redacted(value):
            left_out.append(name.lower())
        else:
            kept.append((name, value))
    return Replay(row["id"], row["signature"], row["method"].upper(), row["target"], tuple(kept),
                  tuple(dict.fromkeys(left_out)), row.get("database", ""))


async def replay(route: Route, replays: Sequence[Replay], comparator: Comparator, noise: Iterable[str] = (),
                 concurrency: int = 8, progress: Callable[[Outcome], None] = lambda outcome: None) -> list[Outcome]:
    """Each replay sent to both of the route's sides and compared with its compare spec; outcomes
    in the order of `replays`, `progress` told of each as it is done."""
    assert route.new is not None, "a route without a new side has nothing to compare"
    bound, known = asyncio.Semaphore(concurrency), tuple(noise)

    async def one(session: aiohttp.ClientSession, request: Replay) -> Outcome:
        async with bound:
            rid = uuid.uuid4().hex
            targets = {side: side_target(route, side, request.target) for side in Side}
            legacy, new = await asyncio.gather(_send(session, route, Side.LEGACY, targets[Side.LEGACY], request, rid),
                                               _send(session, route, Side.NEW, targets[Side.NEW], request, rid))
        differences = comparator.compare(legacy, new, route.compare).differences
        noisy = tuple(d for d in differences if any(covers(n, d.path) for n in known))
        outcome = Outcome(request, legacy, new, tuple(d for d in differences if d not in noisy), noisy,
                          targets[Side.LEGACY], targets[Side.NEW])
        progress(outcome)
        return outcome

    connector = aiohttp.TCPConnector(limit=2 * concurrency)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                                     skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding")) as session:
        return list(await asyncio.gather(*(one(session, r) for r in replays)))


async def _send(session: aiohttp.ClientSession, route: Route, side: Side, target: str, request: Replay,
                rid: str) -> Observation:
    """One side's whole answer (its Location as the client would see it), or why there is none."""
    upstream = route.upstream(side)
    assert upstream is not None
    headers = CIMultiDict(request.headers)
    headers[MARK], headers["X-Request-Id"] = "1", rid
    loop = asyncio.get_running_loop()
    started = loop.time()
    timeout = aiohttp.ClientTimeout(total=route.timeout or upstream.timeout, connect=upstream.connect_timeout)
    try:
        async with session.request(request.method, URL(upstream.url + target, encoded=True),
                                   headers=headers, allow_redirects=False, timeout=timeout) as response:
            body = await response.read()
            answered = relocated_pairs(tuple(response.headers.items()), route.rewrite(side))
            return Observation(side, response.status, answered, body, loop.time() - started)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Observation(side, None, seconds=loop.time() - started, error=failure(exc))


def failure(exc: BaseException) -> FailureKind:
    """An upstream failure as the parallel run names it."""
    if isinstance(exc, TimeoutError):
        return FailureKind.TIMEOUT
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
        return FailureKind.REFUSED
    return FailureKind.BROKEN
