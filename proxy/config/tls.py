"""routes.yaml's TLS: a listener's `cert` and `key` (`tls:`, `admin.tls:`), and an https:// upstream's
`ca`, `verify`, `client_cert` and `client_key`.

Each file is read and checked (proxy.config.pem) and loaded, once per load, into the
ssl.SSLContext that will use it: what `strangler check` accepts is exactly what serves, and
a reload whose files do not load is refused whole (the last good pair keeps serving).
"""

from __future__ import annotations

import ssl

from proxy.config.fields import Section
from proxy.config.pem import Pem, check_key, decoded_certificate, digest_of, load_pair, read_pem, ssl_reason
from proxy.model import Config, ListenerTls, UpstreamTls

PAIR = {"cert", "key"}
UPSTREAM_KEYS = ("ca", "verify", "client_cert", "client_key")
MIN_VERSION = ssl.TLSVersion.TLSv1_2
ALPN = ["http/1.1"]  # all the edge speaks, and all it asks of an upstream


def edge_tls(top: Section) -> ListenerTls | None:
    """`tls:`, the edge listener's certificate and key."""
    if not top.has("tls"):
        return None
    return _listener(top.reader.section(("tls",), top.data["tls"], "tls", PAIR))


def admin_tls(admin: Section) -> ListenerTls | None:
    """`admin.tls:`, the admin listener's own pair, under the same rules."""
    if not admin.has("tls"):
        return None
    return _listener(admin.reader.section(("admin", "tls"), admin.data["tls"], "admin.tls", PAIR))


def _listener(sec: Section | None) -> ListenerTls | None:
    if sec is None:
        return None
    cert, key = read_pem(sec, "cert"), read_pem(sec, "key")
    if cert is None or key is None:
        return None
    certificate = decoded_certificate(sec, "cert", cert)
    if certificate is None or not check_key(sec, "key", key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MIN_VERSION
    context.options |= ssl.OP_NO_RENEGOTIATION  # a client's renegotiations cost the server a handshake each
    context.set_alpn_protocols(ALPN)
    if not load_pair(sec, context, ("cert", cert), ("key", key)):
        return None
    return ListenerTls(cert.path, key.path, digest_of(cert, key), certificate, context)


def upstream_tls(sec: Section, https: bool) -> UpstreamTls | None:
    """An upstream's TLS keys; None when it has none (an https:// upstream then trusts the system's CAs)."""
    written = [key for key in UPSTREAM_KEYS if sec.has(key)]
    if not written:
        return None
    if not https:
        for key in written:
            sec.error(key, f"'{key}' is for https:// upstreams; this one's url is http://")
        return None
    verify = sec.flag("verify", True)
    if not verify:
        sec.warn("verify", "'verify: false': the upstream's certificate is not checked, so anyone on the way can "
                           "read and change this traffic; give it 'ca' instead")
        if sec.has("ca"):
            sec.error("ca", "'ca' and 'verify: false' contradict each other; keep one")
    files: dict[str, Pem] = {}
    context = _upstream_context(sec, verify, files)
    if context is None or not _client_certificate(sec, context, files):
        return None
    paths = {name: pem.path for name, pem in files.items()}
    return UpstreamTls(paths.get("ca"), verify, paths.get("client_cert"), paths.get("client_key"),
                       digest_of(*files.values()), context)


def _upstream_context(sec: Section, verify: bool, files: dict[str, Pem]) -> ssl.SSLContext | None:
    """Checks the upstream against `ca` only when given (a private CA is not mixed with the public ones)."""
    cadata = None
    if sec.has("ca"):
        ca = read_pem(sec, "ca")
        if ca is None:
            return None
        files["ca"] = ca
        cadata = ca.data.decode("ascii", "replace")
    try:
        context = ssl.create_default_context(cadata=cadata)
    except ssl.SSLError as exc:
        sec.error("ca", f"{files['ca'].path} holds no PEM certificate OpenSSL can read ({ssl_reason(exc)})")
        return None
    context.minimum_version = MIN_VERSION
    context.set_alpn_protocols(ALPN)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _client_certificate(sec: Section, context: ssl.SSLContext, files: dict[str, Pem]) -> bool:
    """The certificate shown to an upstream that asks for one (mutual TLS); False on a problem."""
    given = [key for key in ("client_cert", "client_key") if sec.has(key)]
    if len(given) == 1:
        other = "client_key" if given[0] == "client_cert" else "client_cert"
        sec.error(given[0], f"'{given[0]}' needs '{other}' beside it")
        return False
    if not given:
        return True
    cert, key = read_pem(sec, "client_cert"), read_pem(sec, "client_key")
    if cert is None or key is None or decoded_certificate(sec, "client_cert", cert) is None or \
            not check_key(sec, "client_key", key):
        return False
    files.update(client_cert=cert, client_key=key)
    return load_pair(sec, context, ("client_cert", cert), ("client_key", key))


def tls_files(config: Config) -> list[str]:
    """Every file the TLS keys of `config` name: what is watched for a renewal."""
    found = [path for spec in (config.tls, config.admin.tls) if spec is not None for path in (spec.cert, spec.key)]
    for upstream in config.upstreams.values():
        if upstream.tls is not None:
            found += [p for p in (upstream.tls.ca, upstream.tls.client_cert, upstream.tls.client_key) if p]
    return found
