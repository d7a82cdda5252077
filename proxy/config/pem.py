"""The PEM files routes.yaml's TLS keys name: each read safely (a regular file, bounded), its certificate
decoded for /status, its key checked, a pair loaded into a context; a problem on the naming key's line."""

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
from proxy.model import Certificate

MAX_PEM = 1 << 20  # a chain or a CA bundle is kilobytes: more is not a PEM file meant for us
# OpenSSL's refusals of the certificate (not the key) while loading a pair: a key or digest too weak
# for its security level.
CERT_REASONS = frozenset({"EE_KEY_TOO_SMALL", "CA_KEY_TOO_SMALL", "CA_MD_TOO_WEAK"})
SHORT_NAMES = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
               "localityName": "L", "stateOrProvinceName": "ST", "domainComponent": "DC"}


class Pem(NamedTuple):
    """A file routes.yaml names, as read at this load."""

    path: str
    data: bytes


def read_pem(sec: Section, name: str) -> Pem | None:
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


def decoded_certificate(sec: Section, name: str, pem: Pem) -> Certificate | None:
    """The file's first certificate (a chain starts with the server's own), with a warning when it is
    outside its validity: clients refuse it, but the proxy serves it rather than nothing."""
    if b"-----BEGIN CERTIFICATE-----" not in pem.data:
        sec.error(name, f"{pem.path} holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' line)")
        return None
    try:
        decoded = _decoded(pem.path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        sec.error(name, f"{pem.path} holds no certificate OpenSSL can read ({ssl_reason(exc)})")
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


def check_key(sec: Section, name: str, pem: Pem) -> bool:
    if b"ENCRYPTED" in pem.data:  # "ENCRYPTED PRIVATE KEY", or "Proc-Type: 4,ENCRYPTED"
        sec.error(name, f"{pem.path} is encrypted with a passphrase, which the proxy cannot ask for: give it "
                        "the key unencrypted, readable only by the proxy's user")
        return False
    if b"PRIVATE KEY-----" not in pem.data:
        sec.error(name, f"{pem.path} holds no PEM private key (no '-----BEGIN ... PRIVATE KEY-----' line)")
        return False
    return True


def load_pair(sec: Section, context: ssl.SSLContext, cert: tuple[str, Pem], key: tuple[str, Pem]) -> bool:
    """Loads the pair into `context`; a problem on the key's line unless OpenSSL refused the certificate."""
    try:
        # a password, even empty, keeps OpenSSL from prompting on a terminal for one
        context.load_cert_chain(cert[1].path, key[1].path, password=b"")
    except OSError as exc:  # ssl.SSLError included
        reason = ssl_reason(exc)
        if reason == "KEY_VALUES_MISMATCH":
            sec.error(key[0], f"the key in {key[1].path} does not belong to the certificate in {cert[1].path}")
        elif reason in CERT_REASONS:
            sec.error(cert[0], f"OpenSSL refuses the certificate in {cert[1].path} ({reason})")
        else:
            sec.error(key[0], f"cannot load the key in {key[1].path} with its certificate ({reason})")
        return False
    return True


def ssl_reason(exc: BaseException) -> str:
    said = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", said)  # where in CPython it was raised tells an operator nothing


def digest_of(*files: Pem) -> str:
    digest = hashlib.sha256()
    for pem in files:
        digest.update(pem.path.encode() + b"\0" + pem.data)
    return digest.hexdigest()
