"""Host names as routes match them: a route's `match.host` (exact, or a leading `*.` wildcard) and a
request's `Host` header brought to the form both are compared in.

That form is lower case, without a port or a trailing dot (`Shop.Example.com.:8080` is
`shop.example.com`); an IPv6 literal keeps its brackets (`[::1]:8080` is `[::1]`), so a
rule names it as a URL's authority does.
"""

from __future__ import annotations


def request_host(value: str | None) -> str | None:
    """A Host header's value in the form rules compare (None: the request has no Host, and no host
    rule takes it). The edge has already checked it is a host with an optional port."""
    if value is None:
        return None
    host = value.lower()
    if host.startswith("["):
        return host[:host.find("]") + 1]
    host = host.partition(":")[0]  # a reg-name or IPv4 address holds no ':' but the port's
    return host[:-1] if host.endswith(".") else host


def host_matches(rule: str, host: str | None) -> bool:
    """Whether a normalised request host is one `rule` takes: the same name, or for `*.example.com`
    any name below example.com (at any depth), never example.com itself."""
    if host is None:
        return False
    if rule.startswith("*"):
        return len(host) >= len(rule) and host.endswith(rule[1:])
    return host == rule


def host_covers(rule: str | None, other: str | None) -> bool:
    """True when every host `other` takes is also taken by `rule` (None: any host, or none)."""
    if rule is None:
        return True
    return other is not None and (rule == other or host_matches(rule, other))
