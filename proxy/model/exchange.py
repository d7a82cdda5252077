"""What is made anew for every request: its facts, the toggle's answer, the decision, and a parallel
run's request, both answers and their differences.

NamedTuples where the hot path builds them (as aiohttp's own parsed messages are: as immutable
as a frozen dataclass, at a fraction of the cost), frozen dataclasses elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

from proxy.model.kinds import FailureKind, Side, StickinessKind, Verdict
from proxy.model.route import Route, Upstream

MIN_PREFIX = 6  # characters that may stand for a divergence's id or a signature, as with git's commits


class RequestFacts(NamedTuple):
    """What routing and toggles may look at in a request."""

    method: str
    path: str  # the routed form (see proxy.wire.target)
    headers: Mapping[str, str]
    remote: str | None  # the client's address as the proxy sees it, never a forwarded header


class ToggleCheck(NamedTuple):
    """A toggle asked for one request: its verdict, and the sticky value it hashed (if any)."""

    name: str
    verdict: Verdict
    sticky: str | None
    plan: int | None = None  # the rollout plan's percent, when it kept an ON verdict's user on legacy


class Decision(NamedTuple):
    """Who answers one request, who else sees it, and why."""

    route: Route
    side: Side
    upstream: Upstream
    shadow: Upstream | None
    toggle: ToggleCheck | None = None

    @property
    def reason(self) -> str:
        if self.toggle is None:
            return f"serve: {self.route.serve}"
        check, spec = self.toggle, self.route.toggle
        assert spec is not None
        if check.sticky is None and spec.stickiness.kind is not StickinessKind.RANDOM:
            return (f"toggle {check.name} is {check.verdict} (the request has no {spec.stickiness}, "
                    f"so it cannot stick to one side)")
        about = f" for {spec.stickiness}={check.sticky!r}" if check.sticky is not None else ""
        if check.plan is not None:
            return f"toggle {check.name} is on{about}, but its rollout plan is at {check.plan}% of users, not this one"
        return f"toggle {check.name} is {check.verdict}{about}"


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an upstream gave no (whole) answer, and what the client is told."""

    kind: FailureKind
    status: int
    detail: str
    sent: bool = True  # whether the request may have reached the upstream (False: safe to send again)
    retry_after: int | None = None


class Answered(NamedTuple):
    """The served side's answer as a parallel run compares it, kept while it was relayed: references
    only, on the client's path (the Observation is made in the shadow's task)."""

    status: int | None  # None: no answer (see error)
    headers: Mapping[str, str]  # as aiohttp's parser made them
    chunks: list[bytes] | None  # the body's pieces; None when it was over the run's cap
    error: FailureKind | None = None

    def observation(self, side: Side, seconds: float) -> Observation:
        body = None if self.chunks is None else b"".join(self.chunks)
        return Observation(side, self.status, tuple(self.headers.items()), body, seconds, self.error)


class Observation(NamedTuple):
    """What one side answered to one request, or why it did not."""

    side: Side
    status: int | None  # None: no answer (see error)
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None  # None: not kept (over the cap) or no answer
    seconds: float = 0.0
    error: FailureKind | None = None

    def header(self, name: str) -> str | None:
        name = name.lower()
        values = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None


@dataclass(frozen=True, slots=True)
class Difference:
    """One place where the two answers differ: `status`, `header:NAME`, `$` or `$.a.b[0].c`."""

    path: str
    legacy: Any
    new: Any
    kind: str = "changed"  # changed | added | removed | type


@dataclass(frozen=True, slots=True)
class Comparison:
    """The differences between the legacy and the new answer (legacy first, whoever served)."""

    differences: tuple[Difference, ...]
    body: str = "none"  # how the bodies were compared: json | text | digest | none

    @property
    def matched(self) -> bool:
        return not self.differences


class RequestRecord(NamedTuple):
    """The request of a parallel run, as the report shows it."""

    request_id: str
    method: str
    target: str  # path and query as the client sent them
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    at: float
    legacy_target: str | None = None  # what legacy was sent, when a rewrite made it other than `target`
    new_target: str | None = None  # the same for new


@dataclass(frozen=True, slots=True)
class Divergence:
    """A compared request whose answers differ: what was asked, both answers, and how they differ."""

    route: str
    request: RequestRecord
    served: Side
    legacy: Observation
    new: Observation
    differences: tuple[Difference, ...]
    noise: tuple[Difference, ...] = ()  # differences at paths learned as noise: reported, not counted
    signature: str = ""
