"""TLS as configured: a listener's certificate and key, an upstream's trust and client certificate.

Frozen values like the rest of the configuration. Each holds the ssl.SSLContext built from
its files when routes.yaml was loaded (proxy.config.tls), left out of comparisons: two specs
are equal when their files' paths, settings and bytes (`digest`) are, so a renewed file
makes a different spec and a new context, and an unchanged one keeps its pool.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Certificate:
    """What /status and /metrics say of a certificate."""

    subject: str  # "CN=shop.example.com,O=Example"
    issuer: str
    not_after: float  # seconds since the epoch
    serial: str  # hex, as OpenSSL prints it


@dataclass(frozen=True, slots=True)
class ListenerTls:
    """A listener's certificate chain and key (`tls:`, `admin.tls:`)."""

    cert: str  # the chain's path, resolved against routes.yaml's folder
    key: str
    digest: str  # sha256 of both files' bytes
    certificate: Certificate  # the chain's first (the server's own) certificate
    context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How the proxy checks an https:// upstream, and the certificate it shows one that asks."""

    ca: str | None = None  # a PEM bundle trusted instead of the system's; None: the system's
    verify: bool = True  # False only when written so; warned about at every load
    client_cert: str | None = None
    client_key: str | None = None
    digest: str = ""  # sha256 of the files' bytes
    context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
