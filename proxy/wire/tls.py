"""A listener's TLS: the pair each new connection gets across reloads, and a deadline on the handshake.

The socket keeps the context it started with, and each new connection's handshake moves
to the pair in force.

A reload builds a whole new context from the renewed files (proxy.config.tls) rather than
loading them into the one in use: a pair that failed half-way would leave that one broken.
OpenSSL's servername callback runs for every ClientHello, with or without SNI, before the
certificate is chosen, so new connections get the new certificate and open ones keep
theirs (an OpenSSL connection holds its own copy).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Callable

from aiohttp import web

from proxy.model import ListenerTls

HANDSHAKE_TIMEOUT = 10.0  # seconds, where no header_timeout applies (the admin listener)


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


class TlsSite(web.BaseSite):
    """aiohttp's TCPSite with a deadline on the TLS handshake. asyncio gives a client 60 s to finish one
    by default, and the edge's header_timeout starts only after it: a client could hold a connection
    by handshaking slowly, as it could by sending its headers slowly (nginx bounds both by
    client_header_timeout). The attributes used are BaseSite's, kept for its subclasses."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, tls: ListenerContext,
                 handshake_timeout: float, backlog: int, reuse_port: bool | None) -> None:
        super().__init__(runner, ssl_context=tls.context, backlog=backlog)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        self._handshake_timeout = handshake_timeout

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self._runner.server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_port=self._reuse_port, ssl_handshake_timeout=self._handshake_timeout)
