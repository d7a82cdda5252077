"""routes.yaml -> Config: one validated, frozen value, or every problem as FILE:LINE: message.

The file's top level, upstreams, admin, toggles and reports live here; route entries are
read by `proxy.config.routes`. Warnings (an unreachable route, say) ride on the Config.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import stat
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import urlsplit

from proxy.config.routes import read_routes
from proxy.model.errors import ConfigError
from proxy.config.fields import Reader, Section
from proxy.model import (AdminSpec, Address, BreakerSpec, Config, Problem, ReportsSpec, Route, ServerSpec,
                         TogglesSpec, UnleashSpec, Upstream)
from proxy.config.yamlsource import read_yaml

MAX_BYTES = 1 << 20
UNLEASH_CACHE = "var/unleash-cache"  # the SDK's last known state, kept across restarts
DEFAULT_LISTEN = Address("127.0.0.1", 8080)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ADDRESS = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>\d{1,5})$")


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate the file at `path`."""
    return parse(read_file(path), str(path))


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file, at most MAX_BYTES + 1 of them. Opened without blocking and refused
    unless it is a regular file: a FIFO or a device put in its place would hold the reader forever."""
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError([Problem(source, 0, f"cannot read the file: {exc.strerror}")]) from exc
    with open(fd, "rb", closefd=True) as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError([Problem(source, 0, f"not a regular file ({_file_kind(mode)})")])
        try:
            return f.read(MAX_BYTES + 1)
        except OSError as exc:
            raise ConfigError([Problem(source, 0, f"cannot read the file: {exc.strerror}")]) from exc


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a file"


def parse(raw: bytes, source: str) -> Config:
    """Validate routes.yaml bytes; `source` names the file in messages and anchors relative paths."""
    if len(raw) > MAX_BYTES:
        raise ConfigError([Problem(source, 1, f"file is larger than {MAX_BYTES} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(source, line, "file is not valid UTF-8")]) from exc
    doc = read_yaml(text, source)
    reader = Reader(doc)
    config = _config(reader, doc.data, source, hashlib.sha256(raw).hexdigest())
    problems = sorted(reader.problems, key=lambda p: (p.line, p.warning))
    if config is None or any(not p.warning for p in problems):
        raise ConfigError(problems or [Problem(source, 1, "routes.yaml is empty")])
    return config


def _config(reader: Reader, data: Any, source: str, digest: str) -> Config | None:
    if data is None:
        return None
    top = reader.section((), data, "", {"version", "listen", "admin", "upstreams", "toggles",
                                        "reports", "routes", "server"})
    if top is None:
        return None
    top.get("version", "1 (the only format version so far)", lambda v: v == 1)
    listen = _address(top, "listen", DEFAULT_LISTEN)
    admin = _admin(top)
    upstreams = _upstreams(top)
    declared = set(map(str, data.get("upstreams") or {})) if isinstance(data.get("upstreams"), dict) else set()
    routes = read_routes(top, upstreams, declared)
    toggles = _toggles(top)
    _check_loops(reader, upstreams, (listen, admin.listen))
    _check_admin(reader, listen, admin)
    _warn_unused(reader, upstreams, data.get("routes"))
    _check_toggles(reader, routes, toggles.provider)
    return Config(source=source, digest=digest, listen=listen, admin=admin,
                  upstreams=MappingProxyType(upstreams), routes=routes,
                  toggles=toggles, reports=_reports(top, source), server=_server(top),
                  warnings=tuple(p for p in reader.problems if p.warning))


def parse_address(text: str) -> Address | None:
    """`127.0.0.1:8080` or `[::1]:8080` -> Address; None when it is neither."""
    m = ADDRESS.match(text)
    if m is None or int(m["port"]) > 65535:
        return None
    return Address(m["v6"] or m["host"], int(m["port"]))


def _address(sec: Section, key: str, default: Address) -> Address:
    text = sec.text(key, None)
    if text is None:
        return default
    address = parse_address(text)
    if address is None:
        sec.error(key, f"'{key}' must be \"HOST:PORT\" (like \"127.0.0.1:8080\"), got {text!r}")
        return default
    return address


def _admin(top: Section) -> AdminSpec:
    sec = top.section("admin", {"listen", "token_env"}, "admin")
    if sec is None:
        return AdminSpec()
    token_env, admin_token_env = sec.text("token_env", None), sec.text("admin_token_env", None)
    for key, name in (("token_env", token_env), ("admin_token_env", admin_token_env)):
        if name is not None and not ENV_NAME.match(name):
            sec.error(key, f"'{key}' names an environment variable, got {name!r}")
    return AdminSpec(_address(sec, "listen", AdminSpec().listen), token_env, top.reader.doc.line(sec.at("token_env")))


def _upstreams(top: Section) -> dict[str, Upstream]:
    data = top.get("upstreams", "a mapping of names to upstreams", lambda v: isinstance(v, dict))
    if not isinstance(data, dict):
        return {}
    found = {}
    for name, item in data.items():
        upstream = _upstream(top.reader, str(name), item)
        if upstream is not None:
            found[str(name)] = upstream
    return found


def _upstream(reader: Reader, name: str, data: Any) -> Upstream | None:
    sec = reader.section(("upstreams", name), data, f"upstream '{name}'",
                         {"url", "connect_timeout", "timeout", "max_connections", "max_pending", "retry_budget",
                          "breaker"})
    if sec is None:
        return None
    if not NAME.match(name):
        reader.error(sec.path, f"upstream name {name!r} may hold only letters, digits, '.', '_' and '-'")
    url, d = _upstream_url(sec), Upstream("", "")
    upstream = Upstream(name, url or "", sec.number("connect_timeout", d.connect_timeout, positive=True),
                        sec.number("timeout", d.timeout, positive=True),
                        sec.integer("max_connections", d.max_connections, 1, 100_000),
                        sec.integer("max_pending", d.max_pending, 0, 1_000_000),
                        sec.number("retry_budget", d.retry_budget, low=0, high=1), _breaker(sec))
    return upstream if url is not None else None


def _breaker(upstream: Section) -> BreakerSpec:
    sec, d = upstream.section("breaker", {"failures", "open_seconds", "probes"}), BreakerSpec()
    if sec is None:
        return d
    return BreakerSpec(sec.integer("failures", d.failures, 1, 10_000),
                       sec.number("open_seconds", d.open_seconds, positive=True),
                       sec.integer("probes", d.probes, 1, 1000))


def _server(top: Section) -> ServerSpec:
    sec, d = top.section("server", {"max_in_flight", "header_timeout", "body_timeout", "keepalive_timeout",
                                    "max_header_bytes", "request_buffer", "send_timeout"}, "server"), ServerSpec()
    if sec is None:
        return d
    return ServerSpec(sec.integer("max_in_flight", d.max_in_flight, 1, 10_000_000),
                      sec.number("header_timeout", d.header_timeout, positive=True),
                      sec.number("body_timeout", d.body_timeout, positive=True),
                      sec.number("keepalive_timeout", d.keepalive_timeout, positive=True),
                      sec.integer("max_header_bytes", d.max_header_bytes, 1024, 1 << 20),
                      sec.integer("request_buffer", d.request_buffer, 0, 64 << 20),
                      sec.number("send_timeout", d.send_timeout, positive=True))


def _upstream_url(sec: Section) -> str | None:
    text = sec.text("url")
    if not isinstance(text, str):
        return None
    problem, url = check_http_url(text)
    if problem:
        sec.error("url", problem)
        return None
    return url


def check_http_url(text: str) -> tuple[str | None, str]:
    """(problem, normalised URL): an http(s) origin with no path, credentials or link-local host."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        return f"url {text!r} is not a valid URL ({exc})", text
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"url must look like http://HOST:PORT, got {text!r}", text
    if parts.username or parts.password:
        return "url must not carry credentials; secrets never live in routes.yaml", text
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"url must be an origin with no path or query, got {text!r}", text
    if _is_link_local(parts.hostname):
        return f"url points at a link-local address ({parts.hostname}), the home of cloud metadata", text
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = port or (443 if parts.scheme == "https" else 80)
    return None, f"{parts.scheme}://{host}:{port}"


def _is_link_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_link_local
    except ValueError:
        return False


def _toggles(top: Section) -> TogglesSpec:
    sec = top.section("toggles", {"provider", "unleash"}, "toggles")
    if sec is None:
        return TogglesSpec()
    provider = sec.text("provider", "local")
    if provider not in ("local", "unleash"):
        sec.error("provider", f"'provider' must be local or unleash, got {provider!r}")
    unleash = _unleash(sec)
    if provider == "unleash" and unleash is None and not sec.has("unleash"):
        sec.error("provider", "provider unleash needs an 'unleash:' block with at least 'url'")
    return TogglesSpec(provider, unleash)


def _unleash(parent: Section) -> UnleashSpec | None:
    sec = parent.section("unleash", {"url", "app_name", "environment", "token_env", "refresh_interval",
                                     "cache_directory", "admin_token_env", "project"}, "toggles.unleash")
    if sec is None:
        return None
    url = sec.text("url")
    if isinstance(url, str) and urlsplit(url).scheme not in ("http", "https"):
        sec.error("url", f"'url' must be an http(s) URL, got {url!r}")
    token_env, admin_token_env = sec.text("token_env", None), sec.text("admin_token_env", None)
    for key, name in (("token_env", token_env), ("admin_token_env", admin_token_env)):
        if name is not None and not ENV_NAME.match(name):
            sec.error(key, f"'{key}' names an environment variable, got {name!r}")
    cache_directory = sec.text("cache_directory", UNLEASH_CACHE)
    return UnleashSpec(url=url if isinstance(url, str) else "",
                       app_name=sec.text("app_name", "strangler"),
                       environment=sec.text("environment", "development"),
                       token_env=token_env,
                       admin_token_env=admin_token_env,
                       project=sec.text("project", "default"),
                       refresh_interval=sec.integer("refresh_interval", 15, 1, 3600),
                       cache_directory=str(Path(parent.reader.doc.source).parent / cache_directory))


def _reports(top: Section, source: str) -> ReportsSpec:
    default = ReportsSpec()
    sec = top.section("reports", {"database", "examples_per_signature", "retention_days", "max_body"}, "reports")
    if sec is None:
        return ReportsSpec(str(Path(source).parent / default.database))
    return ReportsSpec(str(Path(source).parent / sec.text("database", default.database)),
                       examples_per_signature=sec.integer("examples_per_signature", default.examples_per_signature,
                                                          0, 10_000),
                       retention_days=sec.number("retention_days", default.retention_days, positive=True),
                       max_body=sec.integer("max_body", default.max_body, 0, 16 << 20))


def _check_loops(reader: Reader, upstreams: Mapping[str, Upstream], own: tuple[Address, ...]) -> None:
    for name, upstream in upstreams.items():
        parts = urlsplit(upstream.url)
        if any(parts.port == mine.port and _same_host(parts.hostname or "", mine.host) for mine in own):
            reader.error(("upstreams", name), f"upstream '{name}' points at this proxy's own listener")


def _check_admin(reader: Reader, edge: Address, admin: AdminSpec) -> None:
    """The admin listener is never the edge's, and off loopback it wants a token."""
    wildcard = ("0.0.0.0", "::")
    if admin.listen.port == edge.port and (admin.listen.host == edge.host or admin.listen.host in wildcard
                                           or edge.host in wildcard) and edge.port != 0:
        reader.error(("admin", "listen"), f"admin.listen {admin.listen} is the edge's own address ({edge}); "
                                          "the admin listener needs an address of its own")
    elif admin.token_env is None and not _is_loopback(admin.listen.host):
        reader.warn(("admin", "listen"), f"admin.listen {admin.listen} is reachable from other hosts and no "
                                         "admin.token_env is set: anyone who reaches it can read /status and "
                                         "the reports")


def _same_host(upstream: str, listener: str) -> bool:
    """Whether connecting to `upstream` would reach a socket bound to `listener` on this machine."""
    if upstream == listener:
        return True
    local = _is_loopback(upstream)
    return local and (listener in ("0.0.0.0", "::") or _is_loopback(listener))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_toggles(reader: Reader, routes: tuple[Route, ...], provider: str) -> None:
    """Local toggles are defined by their routes, so two routes must not define one differently."""
    first: dict[str, Route] = {}
    for route in routes:
        toggle = route.toggle
        if toggle is None:
            continue
        if provider == "unleash" and toggle.rollout is not None:
            reader.at_line(route.line, f"route '{route.name}': 'rollout' is ignored with provider unleash; "
                                       "the rollout is set in Unleash", warning=True)
        earlier = first.setdefault(toggle.name, route)
        if provider == "local" and (earlier.toggle.local_rollout, earlier.toggle.stickiness) != (
                toggle.local_rollout, toggle.stickiness):
            reader.at_line(route.line, f"route '{route.name}' defines toggle '{toggle.name}' differently from "
                                       f"route '{earlier.name}' (line {earlier.line}); one toggle, one definition")


def _warn_unused(reader: Reader, upstreams: Mapping[str, Upstream], items: Any) -> None:
    """An upstream no route names (as written, so a route with other errors still counts)."""
    routes = [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
    used = {item.get(side) for item in routes for side in ("legacy", "new")}
    for name in upstreams:
        if name not in used:
            reader.warn(("upstreams", name), f"upstream '{name}' is not used by any route")
