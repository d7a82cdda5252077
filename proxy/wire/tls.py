"""A listener's TLS across reloads: the socket keeps the context it started with, and each new
connection's handshake moves to the pair in force.

A reload builds a whole new context from the renewed files (proxy.config.tls) rather than
loading them into the one in use: a pair that failed half-way would leave that one broken.
OpenSSL's servername callback runs for every ClientHello, with or without SNI, before the
certificate is chosen, so new connections get the new certificate and open ones keep
theirs (an OpenSSL connection holds its own copy).
"""

from __future__ import annotations

import ssl
from typing import Callable

from proxy.model import ListenerTls


class ListenerContext:
    """The context a TLS listener is started with, and the pair its next handshake gets."""

    def __init__(self, first: ListenerTls, current: Callable[[], ListenerTls | None]) -> None:
        assert first.context is not None, "proxy.config.tls loads every pair into a context"
        self.context: ssl.SSLContext = first.context
        self._current, self._last = current, first
        self.context.sni_callback = self._pick

    @property
    def pair(self) -> ListenerTls:
        """The configuration's pair; when a reload took `tls` out, the last one: a listener does not turn to
        plain HTTP before a restart."""
        found = self._current()
        if found is not None:
            self._last = found
        return self._last

    def _pick(self, connection: ssl.SSLObject, server_name: str | None, listening: ssl.SSLContext) -> None:
        context = self.pair.context
        if context is not None and context is not listening:
            connection.context = context
