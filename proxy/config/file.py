"""routes.yaml -> Config: one validated, frozen value, or every problem as FILE:LINE: message.

The file's top level, admin, server and reports are read here; upstreams, toggles and
routes by their own modules. Warnings (an unreachable route, say) ride on the Config.
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

from proxy.config.fields import ENV_NAME, Reader, Section
from proxy.config.routes import read_routes
from proxy.config.tls import admin_tls, edge_tls
from proxy.config.toggles import check_toggles, read_toggles
from proxy.config.tracing import read_tracing
from proxy.config.upstreams import read_upstreams
from proxy.config.yamlsource import read_yaml
from proxy.model import Address, AdminSpec, Config, Problem, ReportsSpec, ServerSpec, Upstream
from proxy.model.config import POSTGRES_SCHEMES
from proxy.model.errors import ConfigError

MAX_BYTES = 1 << 20
DEFAULT_LISTEN = Address("127.0.0.1", 8080)
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
                                        "reports", "routes", "server", "tls", "tracing"})
    if top is None:
        return None
    top.get("version", "1 (the only format version so far)", lambda v: v == 1)
    listen = _address(top, "listen", DEFAULT_LISTEN)
    admin = _admin(top)
    upstreams = read_upstreams(top)
    declared = set(map(str, data.get("upstreams") or {})) if isinstance(data.get("upstreams"), dict) else set()
    routes = read_routes(top, upstreams, declared)
    toggles = read_toggles(top)
    _check_loops(reader, upstreams, (listen, admin.listen))
    _check_admin(reader, listen, admin)
    _warn_unused(reader, upstreams, data.get("routes"))
    check_toggles(reader, routes, toggles.provider)
    return Config(source=source, digest=digest, listen=listen, admin=admin,
                  upstreams=MappingProxyType(upstreams), routes=routes,
                  toggles=toggles, reports=_reports(top, source), server=_server(top),
                  tls=edge_tls(top), tracing=read_tracing(top), warnings=tuple(p for p in reader.problems if p.warning))


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
    sec = top.section("admin", {"listen", "token_env", "tls"}, "admin")
    if sec is None:
        return AdminSpec()
    token_env = _env_name(sec, "token_env")
    return AdminSpec(_address(sec, "listen", AdminSpec().listen), token_env, admin_tls(sec),
                     line=top.reader.doc.line(sec.at("token_env")))


def _server(top: Section) -> ServerSpec:
    sec, d = top.section("server", {"max_in_flight", "header_timeout", "body_timeout", "keepalive_timeout",
                                    "max_header_bytes", "request_buffer", "send_timeout", "tunnel_idle_timeout"},
                         "server"), ServerSpec()
    if sec is None:
        return d
    return ServerSpec(sec.integer("max_in_flight", d.max_in_flight, 1, 10_000_000),
                      sec.number("header_timeout", d.header_timeout, positive=True),
                      sec.number("body_timeout", d.body_timeout, positive=True),
                      sec.number("keepalive_timeout", d.keepalive_timeout, positive=True),
                      sec.integer("max_header_bytes", d.max_header_bytes, 1024, 1 << 20),
                      sec.integer("request_buffer", d.request_buffer, 0, 64 << 20),
                      sec.number("send_timeout", d.send_timeout, positive=True),
                      sec.number("tunnel_idle_timeout", d.tunnel_idle_timeout, positive=True))


def _reports(top: Section, source: str) -> ReportsSpec:
    default = ReportsSpec()
    sec = top.section("reports", {"database", "password_env", "examples_per_signature", "retention_days",
                                  "max_body"}, "reports")
    if sec is None:
        return ReportsSpec(str(Path(source).parent / default.database))
    return ReportsSpec(_database(sec, source, default.database),
                       examples_per_signature=sec.integer("examples_per_signature", default.examples_per_signature,
                                                          0, 10_000),
                       retention_days=sec.number("retention_days", default.retention_days, positive=True),
                       max_body=sec.integer("max_body", default.max_body, 0, 16 << 20),
                       password_env=_env_name(sec, "password_env"),
                       line=top.reader.doc.line(sec.at("password_env")))


def _database(sec: Section, source: str, default: str) -> str:
    """A SQLite path (relative to this file's folder), or a PostgreSQL URL that holds no password."""
    database = sec.text("database", default)
    if not isinstance(database, str):
        return default
    if not database.lower().startswith(POSTGRES_SCHEMES):
        if "://" in database:
            sec.error("database", f"'database' is a SQLite path or a postgresql:// URL, got {database!r}")
        return str(Path(source).parent / database)
    parts = urlsplit(database)
    if parts.password is not None or "password=" in parts.query.lower():
        sec.error("database", "'database' holds a password; take it out of the URL and name the variable that "
                              "holds it in 'password_env'")
        return default
    if not parts.hostname and "host=" not in parts.query.lower():
        sec.error("database", f"'database' names no host: {database!r} (postgresql://USER@HOST:PORT/DATABASE)")
    return database


def _env_name(sec: Section, key: str) -> str | None:
    name = sec.text(key, None)
    if name is not None and not ENV_NAME.match(name):
        sec.error(key, f"'{key}' names an environment variable, got {name!r}")
        return None
    return name


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


def _warn_unused(reader: Reader, upstreams: Mapping[str, Upstream], items: Any) -> None:
    """An upstream no route names (as written, so a route with other errors still counts)."""
    routes = [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
    sides = (item.get(side) for item in routes for side in ("legacy", "new"))
    used = {name for name in sides if isinstance(name, str)}  # a list in the place of a name names nothing
    for name in upstreams:
        if name not in used:
            reader.warn(("upstreams", name), f"upstream '{name}' is not used by any route")
