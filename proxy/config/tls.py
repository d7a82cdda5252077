"""routes.yaml's TLS: a listener's `cert` and `key` (`tls:`, `admin.tls:`), and an https:// upstream's
`ca`, `verify`, `client_cert` and `client_key`.

Each file is read, checked and loaded here, once per load, into the ssl.SSLContext that
will use it: what `strangler check` accepts is exactly what serves, and a reload whose
files do not load is refused whole (the last good pair keeps serving). Paths start at
routes.yaml's folder; a problem is reported on the line of the key that names the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import stat
import time
from pathlib import Path
from typing import NamedTuple

from proxy.config.fields import Section
from proxy.model import Certificate, Config, ListenerTls, UpstreamTls

PAIR = {"cert", "key"}
UPSTREAM_KEYS = ("ca", "verify", "client_cert", "client_key")
MAX_PEM = 1 << 20  # a chain or a CA bundle is kilobytes: more is not a PEM file meant for us
MIN_VERSION = ssl.TLSVersion.TLSv1_2
ALPN = ["http/1.1"]  # all the edge speaks, and all it asks of an upstream
# OpenSSL's refusals of the certificate (not the key) while loading a pair: a key or digest too weak
# for its security level.
CERT_REASONS = frozenset({"EE_KEY_TOO_SMALL", "CA_KEY_TOO_SMALL", "CA_MD_TOO_WEAK"})
SHORT_NAMES = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
               "localityName": "L", "stateOrProvinceName": "ST", "domainComponent": "DC"}


class Pem(NamedTuple):
    """A file routes.yaml names, as read at this load."""

    path: str
    data: bytes


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
    cert, key = _file(sec, "cert"), _file(sec, "key")
    if cert is None or key is None:
        return None
    certificate = _certificate(sec, "cert", cert)
    if certificate is None or not _is_key(sec, "key", key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MIN_VERSION
    context.options |= ssl.OP_NO_RENEGOTIATION  # a client's renegotiations cost the server a handshake each
    context.set_alpn_protocols(ALPN)
    if not _load_pair(sec, context, ("cert", cert), ("key", key)):
        return None
    return ListenerTls(cert.path, key.path, _digest(cert, key), certificate, context)


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
                       _digest(*files.values()), context)


def _upstream_context(sec: Section, verify: bool, files: dict[str, Pem]) -> ssl.SSLContext | None:
    """Checks the upstream against `ca` only when given (a private CA is not mixed with the public ones)."""
    cadata = None
    if sec.has("ca"):
        ca = _file(sec, "ca")
        if ca is None:
            return None
        files["ca"] = ca
        cadata = ca.data.decode("ascii", "replace")
    try:
        context = ssl.create_default_context(cadata=cadata)
    except ssl.SSLError as exc:
        sec.error("ca", f"{files['ca'].path} holds no PEM certificate OpenSSL can read ({_reason(exc)})")
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
    cert, key = _file(sec, "client_cert"), _file(sec, "client_key")
    if cert is None or key is None or _certificate(sec, "client_cert", cert) is None or \
            not _is_key(sec, "client_key", key):
        return False
    files.update(client_cert=cert, client_key=key)
    return _load_pair(sec, context, ("client_cert", cert), ("client_key", key))


def _file(sec: Section, name: str) -> Pem | None:
    """The file `name` names, read; None (and a problem) when it cannot be."""
    value = sec.text(name)
    if not isinstance(value, str) or not value.strip():
        return None
    if "-----BEGIN" in value or "\n" in value:
        sec.error(name, f"'{name}' is the path of a PEM file, not its contents: keys never live in routes.yaml")
        return None
    source = sec.reader.doc.source
    path = Path(source).parent / value
    if _same_file(path, source):
        sec.error(name, f"'{name}' names routes.yaml itself: keys and certificates live in files of their own")
        return None
    try:
        data = _read(path)
    except OSError as exc:
        sec.error(name, f"cannot read '{name}' file {path}: {exc.strerror}")
        return None
    return Pem(str(path), data)


def _read(path: Path) -> bytes:
    """A regular file's bytes, opened without blocking: a FIFO in its place must not hold a reload."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb", closefd=True) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        data = f.read(MAX_PEM + 1)
    if len(data) > MAX_PEM:
        raise OSError(0, f"larger than {MAX_PEM} bytes, which no PEM file of ours is")
    return data


def _same_file(path: Path, source: str) -> bool:
    try:
        return os.path.samefile(path, source)
    except OSError:
        return False


def _certificate(sec: Section, name: str, pem: Pem) -> Certificate | None:
    """The file's first certificate (a chain starts with the server's own), with a warning when it is
    outside its validity: clients refuse it, but the proxy serves it rather than nothing."""
    if b"-----BEGIN CERTIFICATE-----" not in pem.data:
        sec.error(name, f"{pem.path} holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' line)")
        return None
    try:
        decoded = _decoded(pem.path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        sec.error(name, f"{pem.path} holds no certificate OpenSSL can read ({_reason(exc)})")
        return None
    certificate = Certificate(_name(decoded["subject"]), _name(decoded["issuer"]),
                              ssl.cert_time_to_seconds(decoded["notAfter"]), decoded["serialNumber"])
    now, not_before = time.time(), ssl.cert_time_to_seconds(decoded["notBefore"])
    if certificate.not_after < now:
        sec.warn(name, f"the certificate in {pem.path} expired at {_utc(certificate.not_after)}; clients will "
                       "refuse it")
    elif not_before > now:
        sec.warn(name, f"the certificate in {pem.path} is not valid before {_utc(not_before)}")
    return certificate


def _decoded(path: str) -> dict:
    """A PEM certificate's fields as getpeercert() gives them. The standard library decodes a certificate
    only through this private function (what ssl's own tests use); the `cryptography` package would, but
    is not a dependency of the proxy."""
    return ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _name(rdns: tuple) -> str:
    return ", ".join(f"{SHORT_NAMES.get(kind, kind)}={value}" for rdn in rdns for kind, value in rdn)


def _is_key(sec: Section, name: str, pem: Pem) -> bool:
    if b"ENCRYPTED" in pem.data:  # "ENCRYPTED PRIVATE KEY", or "Proc-Type: 4,ENCRYPTED"
        sec.error(name, f"{pem.path} is encrypted with a passphrase, which the proxy cannot ask for: give it "
                        "the key unencrypted, readable only by the proxy's user")
        return False
    if b"PRIVATE KEY-----" not in pem.data:
        sec.error(name, f"{pem.path} holds no PEM private key (no '-----BEGIN ... PRIVATE KEY-----' line)")
        return False
    return True


def _load_pair(sec: Section, context: ssl.SSLContext, cert: tuple[str, Pem], key: tuple[str, Pem]) -> bool:
    """Loads the pair into `context`; a problem on the key's line unless OpenSSL refused the certificate."""
    try:
        # a password, even empty, keeps OpenSSL from prompting on a terminal for one
        context.load_cert_chain(cert[1].path, key[1].path, password=b"")
    except OSError as exc:  # ssl.SSLError included
        reason = _reason(exc)
        if reason == "KEY_VALUES_MISMATCH":
            sec.error(key[0], f"the key in {key[1].path} does not belong to the certificate in {cert[1].path}")
        elif reason in CERT_REASONS:
            sec.error(cert[0], f"OpenSSL refuses the certificate in {cert[1].path} ({reason})")
        else:
            sec.error(key[0], f"cannot load the key in {key[1].path} with its certificate ({reason})")
        return False
    return True


def _reason(exc: BaseException) -> str:
    said = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", said)  # where in CPython it was raised tells an operator nothing


def _digest(*files: Pem) -> str:
    digest = hashlib.sha256()
    for pem in files:
        digest.update(pem.path.encode() + b"\0" + pem.data)
    return digest.hexdigest()


def tls_files(config: Config) -> list[str]:
    """Every file the TLS keys of `config` name: what is watched for a renewal."""
    found = [path for spec in (config.tls, config.admin.tls) if spec is not None for path in (spec.cert, spec.key)]
    for upstream in config.upstreams.values():
        if upstream.tls is not None:
            found += [p for p in (upstream.tls.ca, upstream.tls.client_cert, upstream.tls.client_key) if p]
    return found
