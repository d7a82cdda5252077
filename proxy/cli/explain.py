"""`strangler explain`: what the proxy would do with one request, and why, without sending it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from multidict import CIMultiDict

from proxy.model import Config, Decision, RequestFacts, Side
from proxy.model.hosts import request_host
from proxy.routing.decide import decide, match_route
from proxy.routing.rewrite import side_target
from proxy.wire.target import Refusal, parse_target
from toggles.base import Toggles


@dataclass(frozen=True, slots=True)
class Explanation:
    method: str
    target: str
    decision: Decision | None
    why_not: str  # when no decision: why nothing matches
    provider: str = ""
    host: str | None = None  # the request's Host as host rules compare it

    def as_json(self) -> dict[str, Any]:
        d = self.decision
        if d is None:
            return {"route": None, "serve": None, "upstream": None, "shadow": None, "reason": self.why_not}
        return {"route": d.route.name, "serve": d.side.value, "upstream": d.upstream.name,
                "shadow": d.shadow.name if d.shadow else None, "reason": d.reason,
                "line": d.route.line, "url": d.upstream.url,
                "shadow_sample": d.route.parallel_run.sample if d.shadow else None,
                "toggle": self._toggle_json(), "target": self.target, "host": self.host,
                "host_rule": d.route.match.host, "upstream_target": self.sent(d.side),
                "shadow_target": self.sent(_other(d.side)) if d.shadow else None}

    def sent(self, side: Side) -> str:
        """The target `side` would be sent: the client's, or the route's rewrite of it."""
        assert self.decision is not None
        return side_target(self.decision.route, side, self.target)

    def as_text(self) -> str:
        d = self.decision
        if d is None:
            return f"{self.method} {self.target}: no route ({self.why_not})"
        shadow = "no"
        if d.shadow:
            shadow = f"yes, to {d.shadow.name} ({d.shadow.url}) for {d.route.parallel_run.sample:.0%} of such requests"
        lines = [f"route:    {d.route.name} (line {d.route.line})", f"serve:    {d.side.value}",
                 f"upstream: {d.upstream.name} ({d.upstream.url})", f"shadow:   {shadow}"]
        if d.route.match.host is not None:
            lines.insert(1, f"host:     {self.host} matches the route's host rule {d.route.match.host}")
        for side in (d.side, _other(d.side)) if d.shadow else (d.side,):
            if d.route.rewrite(side) is not None:
                lines.append(f"target:   {side} gets {self.sent(side)} (rewritten from {self.target})")
        if d.toggle is not None and d.route.toggle is not None:
            value = "(none)" if d.toggle.sticky is None else repr(d.toggle.sticky)
            verdict = str(d.toggle.verdict) if d.toggle.plan is None else f"on, held back by the rollout plan " \
                                                                            f"(at {d.toggle.plan}%)"
            lines.append(f"toggle:   {d.toggle.name} ({self.provider} provider), "
                         f"{d.route.toggle.stickiness} = {value} -> {verdict}")
        return "\n".join(lines + [f"why:      {d.reason}"])

    def _toggle_json(self) -> dict[str, Any] | None:
        d = self.decision
        if d is None or d.toggle is None or d.route.toggle is None:
            return None
        return {"name": d.toggle.name, "provider": self.provider, "stickiness": str(d.route.toggle.stickiness),
                "sticky_value": d.toggle.sticky, "verdict": d.toggle.verdict.value, "plan_percent": d.toggle.plan}


def explain(config: Config, toggles: Toggles, method: str, target: str,
            headers: CIMultiDict[str], client_ip: str, caps: Mapping[str, int] | None = None) -> Explanation:
    """`caps`: the percent each route's rollout plan stands at (local provider), as the proxy applies it."""
    parsed = parse_target(target)
    host = request_host(headers.get("Host"))
    if isinstance(parsed, Refusal):
        return Explanation(method, target, None, f"the proxy answers 400: {parsed.detail}", host=host)
    route = match_route(config.routes, method, parsed, headers)
    if route is None:
        hint = " (routes with a host rule take only a request that names its host: -H 'Host: NAME')" \
            if host is None and any(r.match.host for r in config.routes) else ""
        return Explanation(method, target, None, f"the proxy answers 404: no route's match takes it{hint}", host=host)
    cap = (caps or {}).get(route.name)
    decision = decide(route, RequestFacts(method, parsed, headers, client_ip), toggles, cap)
    return Explanation(method, target, decision, "", config.toggles.provider, host)


def _other(side: Side) -> Side:
    return Side.NEW if side is Side.LEGACY else Side.LEGACY
