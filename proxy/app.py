"""Wires one running proxy: live config, toggles, the edge and admin listeners, reload and drain.

The one place where concrete parts (aiohttp servers, the toggle provider, metrics) are
chosen and connected; everything below receives them as arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Coroutine

from aiohttp import web

from comparators.deep import DeepDiffComparator
from proxy import __version__
from proxy import steer
from proxy.admin.app import create_admin_app
from proxy.admin.console import Act, Filters, Forms
from proxy.admin.status import Lifecycle, status, tls_status
from proxy.config.environment import checked
from proxy.model import Address, Certificate, Config, Phase, Provider
from proxy.observe.buildinfo import BuildInfo
from proxy.observe.metrics import Metrics, process_collectors
from proxy.observe.tracing import Tracer, Untraced
from proxy.rollout.evidence import Evidence
from proxy.rollout.plans import Rollouts
from proxy.serve.forward import Forwarder
from proxy.serve.handler import EdgeHandler
from proxy.serve.live import WATCH_INTERVAL, LiveConfig
from proxy.serve.resilience import Resilience
from proxy.shadow.compare import Comparer
from proxy.shadow.process import ComparisonProcess
from proxy.shadow.run import ParallelRun
from proxy.wire import internals
from proxy.wire.server import EdgeServer
from proxy.wire.tls import HANDSHAKE_TIMEOUT, ListenerContext, TlsSite
from reports.connections import Connections
from reports.db import STORE_ERRORS, Where
from reports.plans import StorePlans
from reports.store import StoreSink
from toggles.base import Toggles
from toggles.unleash import UnleashToggles

log = logging.getLogger("strangler")
ACCEPTED_EVERY = 5.0  # seconds between reads of the accepted signatures
YOUNG_OBJECTS = 10_000  # new objects between two young-generation collections (see serve)
SWITCH_SECONDS = 0.001  # how long a thread holds the GIL while another waits for it (see serve)


@dataclass(frozen=True, slots=True)
class Options:
    config_path: str
    listen: Address | None = None  # overrides routes.yaml's `listen`
    drain_timeout: float = 30.0
    watch_interval: float = WATCH_INTERVAL
    worker: int | None = None  # a worker of `serve --workers N`: no admin listener, a shared edge port


class Proxy:
    """One proxy process's listeners and state, from start() to stop()."""

    def __init__(self, options: Options, config: Config) -> None:
        self.options = options
        self.config = config
        self.lifecycle = Lifecycle()
        self.metrics = Metrics(__version__)
        self._published = 0  # requests answered that the worker_requests counter has counted
        self.tracer = tracer_for(config)
        if options.worker is None:  # under --workers the supervisor reports every process's
            process_collectors(self.metrics.registry)
        self.live: LiveConfig | None = None
        self.edge_address: Address | None = None
        self.tls: dict[str, ListenerContext | None] = {}  # by listener (edge, admin): None for plain HTTP
        self.admin_address: Address | None = None
        self.store = Connections(Where.of(config.reports))  # the writer's and the plans' (a pool with PostgreSQL)
        self.sink = StoreSink(config.reports, self.store,
                              on_problem=lambda kind: self.metrics.report_problems.labels(kind).inc())
        comparator = DeepDiffComparator()
        self.comparisons = ComparisonProcess(comparator)
        self.resilience = Resilience(on_change=self.metrics.breaker_changed)
        self.plans = StorePlans(self.store)
        self.rollouts: Rollouts | None = None
        self.evidence = Evidence()
        self.comparer = comparer = Comparer(comparator, self.comparisons, self.sink, self.metrics, self.evidence)
        self.parallel_run = ParallelRun(comparer, self.metrics, self.resilience, self.evidence)
        self.handler: EdgeHandler | None = None
        self._edge: web.BaseRunner | None = None
        self._admin: web.BaseRunner | None = None
        self._chores: list[asyncio.Task[None]] = []
        self.build: BuildInfo | None = None

    async def start(self) -> None:
        await internals.require()  # aiohttp's C parser, and the shapes the wire layer needs
        checked(self.config)  # an admin token variable named but unset must not leave admin open
        try:
            await self._start()
        except BaseException:
            await self._close()
            raise
        self.lifecycle.state = Phase.READY
        listening = {"edge": str(self.edge_address)}
        if self.admin_address is not None:  # a worker has none: the supervisor serves admin
            listening["admin"] = str(self.admin_address)
        log.info("strangler is ready", extra={**listening, "routes": len(self.config.routes)})

    async def _start(self) -> None:
        self.sink.start()
        if any(route.parallel_run.enabled for route in self.config.routes):
            self.comparisons.start()
        self.live = live = LiveConfig(self.options.config_path, self.config, self.metrics, toggles_for)
        live.start()
        server = self.config.server
        self.rollouts = rollouts = Rollouts(self.plans, self.sink, self.metrics, lambda: live.current.config,
                                            lambda: live.current.toggles, self.evidence)
        self.handler = handler = EdgeHandler(live, self.metrics, self.parallel_run,
                                             Forwarder(self.resilience, self.metrics), self.evidence, rollouts.cap,
                                             self.tracer)
        await rollouts.checked()  # where the plans stand, before the first request
        edge = EdgeServer(handler, keepalive_timeout=server.keepalive_timeout, header_timeout=server.header_timeout,
                          max_header_bytes=server.max_header_bytes)
        self._edge = web.ServerRunner(edge, shutdown_timeout=self.options.drain_timeout)
        worker = self.options.worker is not None
        self.tls["edge"] = edge_tls(live)
        self.edge_address = await listen(self._edge, self.options.listen or self.config.listen, reuse_port=worker,
                                         tls=self.tls["edge"], handshake_timeout=server.header_timeout)
        self._chores.append(asyncio.create_task(live.watch(self.options.watch_interval)))
        self._chores.append(asyncio.create_task(rollouts.run()))
        self._chores.append(asyncio.create_task(self._follow_acceptances()))
        if worker:  # the supervisor shows this process's gauges, read from other processes
            self._chores.append(asyncio.create_task(self._refresh_gauges()))
            return
        self.build = BuildInfo.collect()
        self._admin = web.AppRunner(create_admin_app(self, admin_token(self.config)), access_log=None)
        self.tls["admin"] = admin_tls(live)
        self.admin_address = await listen(self._admin, self.config.admin.listen, tls=self.tls["admin"])

    async def _follow_acceptances(self) -> None:
        """The signatures accepted in the store, for the divergences metric (an accept elsewhere shows within
        ACCEPTED_EVERY seconds). A store that cannot be read leaves the last set in place."""
        while True:
            try:
                if self.store.where.present:  # a SQLite file is not made for this
                    self.comparer.accepted = await asyncio.to_thread(self.plans.accepted, time.time())
            except STORE_ERRORS:
                pass
            await asyncio.sleep(ACCEPTED_EVERY)

    async def _refresh_gauges(self) -> None:
        while True:
            self._publish()
            await asyncio.sleep(1.0)

    def _publish(self) -> None:
        """A worker's gauges and request tally, for the supervisor to read."""
        self._refresh()
        answered = self.handler.answered
        self.metrics.worker_requests.labels(str(self.options.worker)).inc(answered - self._published)
        self._published = answered
        self.metrics.tally.save(os.environ["PROMETHEUS_MULTIPROC_DIR"], str(os.getpid()))  # a new file per process

    def status(self) -> dict[str, Any]:
        """/status: this process, its configuration, toggles and upstreams."""
        assert self.live is not None
        found = status(self.live, self.lifecycle, self.build, self.resilience.states())
        found["rollouts"] = self.rollouts.status() if self.rollouts is not None else []
        found["store"] = self.sink.status()
        found["tls"] = tls_status(served(self.tls))
        return found

    def metrics_text(self) -> bytes:
        assert self.live is not None
        self._refresh()
        self.metrics.certificates(served(self.tls))
        return self.metrics.render()

    def _refresh(self) -> None:
        """The gauges read off the pools and the store's writer."""
        self.metrics.refresh(self.live.current.pools, self.live.current.shadow_pools)
        store = self.sink.status()
        self.metrics.store(store["engine"], self.sink.health.state, store["waiting"])

    def report(self, filters: Filters, forms: Forms) -> str:
        """The console on this proxy's store, what is queued for it written first (blocks: a thread's)."""
        place = self.store.where
        if place.present:  # a report never creates the file
            self.sink.flush(timeout=2.0)
        assert self.live is not None
        return steer.console_page(place, self.live.current.config, filters, forms)

    def act(self, act: Act) -> tuple[int, str]:
        assert self.live is not None
        self.sink.flush(timeout=2.0)  # the signature acted on is in the store
        return steer.console_act(self.store.where, self.live.current.config, act)

    async def reload(self, why: str) -> bool:
        assert self.live is not None
        return await self.live.reload(why)

    async def stop(self) -> None:
        """Drain: /readyz turns 503, the edge stops accepting, in-flight requests finish (up to
        the drain timeout), then everything closes."""
        self.lifecycle.state = Phase.DRAINING
        log.info("draining", extra={"drain_timeout": self.options.drain_timeout})
        await self._close()
        log.info("stopped")

    async def _close(self) -> None:
        """In order: the edge (in-flight requests finish), their shadows, the store, admin, the pools."""
        for chore in self._chores:
            chore.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chore
        if self._edge is not None:
            await self._edge.cleanup()  # admin keeps answering /readyz (503) while the edge drains
        if self.handler is not None:
            self.handler.access.flush()  # the access lines of the requests that just finished
            if self.options.worker is not None:
                self._publish()  # the tally of the requests that just finished
        await self.parallel_run.drain(timeout=5.0)
        if self.rollouts is not None:
            self.rollouts.hand_over()  # the last evidence gathered
        await asyncio.to_thread(self.sink.close)
        await asyncio.to_thread(self.store.close)
        await asyncio.to_thread(self.comparisons.close)
        await asyncio.to_thread(self.tracer.close)  # the spans of the requests that just finished
        if self._admin is not None:
            await self._admin.cleanup()
        if self.live is not None:
            await self.live.close()


def tracer_for(config: Config) -> Tracer:
    """OpenTelemetry's SDK when routes.yaml asks for spans; loaded only then."""
    if config.tracing is None:
        return Untraced()
    from proxy.observe.otel import OtelTracer
    return OtelTracer(config.tracing, __version__)


def admin_token(config: Config) -> str | None:
    """The admin bearer token, from the environment variable routes.yaml names (proxy.config.environment has checked
    that it is set when named)."""
    return os.environ[config.admin.token_env] if config.admin.token_env else None


def edge_tls(live: LiveConfig) -> ListenerContext | None:
    """The edge's TLS, following reloads: a renewed certificate reaches new connections (proxy.wire.tls)."""
    first = live.current.config.tls
    return ListenerContext(first, lambda: live.current.config.tls) if first is not None else None


def admin_tls(live: LiveConfig) -> ListenerContext | None:
    """The admin listener's TLS, as the edge's."""
    first = live.current.config.admin.tls
    return ListenerContext(first, lambda: live.current.config.admin.tls) if first is not None else None


def served(listeners: dict[str, ListenerContext | None]) -> dict[str, Certificate]:
    """The certificate each TLS listener serves new connections, by listener."""
    return {name: listener.pair.certificate for name, listener in listeners.items() if listener is not None}


async def listen(runner: web.BaseRunner, address: Address, reuse_port: bool = False,
                 tls: ListenerContext | None = None, handshake_timeout: float = HANDSHAKE_TIMEOUT) -> Address:
    await runner.setup()
    if tls is None:
        site: web.BaseSite = web.TCPSite(runner, address.host, address.port, backlog=1024,
                                         reuse_port=reuse_port or None)
    else:
        site = TlsSite(runner, address.host, address.port, tls=tls, handshake_timeout=handshake_timeout,
                       backlog=1024, reuse_port=reuse_port or None)
    await site.start()
    host, port = runner.addresses[0][:2]
    return Address(host, port)


def run_loop(start: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run `start()` to its end on uvloop when it is installed (a faster event loop), else asyncio's."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(start())


def toggles_for(config: Config, previous: Toggles | None) -> Toggles:
    """The toggle provider routes.yaml asks for; the previous one when nothing about it changed."""
    unleash = config.toggles.unleash if config.toggles.provider is Provider.UNLEASH else None
    if unleash is None:
        local = UnleashToggles.local(replace(route.toggle, rollout=route.ceiling)
                                     for route in config.routes if route.toggle is not None)
        return previous if isinstance(previous, UnleashToggles) and previous.key == local.key else local
    token = os.environ.get(unleash.token_env) if unleash.token_env else None
    if isinstance(previous, UnleashToggles) and previous.key == UnleashToggles.server_key(unleash, token):
        return previous
    admin_token = os.environ.get(unleash.admin_token_env) if unleash.admin_token_env else None
    if unleash.token_env and not token:
        log.warning(f"{unleash.token_env} is not set: the Unleash server will answer for its default "
                    "environment only")
    return UnleashToggles.server(unleash, token, admin_token)


async def serve(options: Options, config: Config,
                on_ready: Callable[[Proxy], None] | None = None) -> int:
    """Run until SIGTERM or SIGINT, reloading on SIGHUP; then drain and return 0."""
    proxy = Proxy(options, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    await proxy.start()
    # What start-up built (modules, configuration, pools) lives as long as the process: out of the
    # collector's sight, a full collection scans only what requests made (docs/performance.md).
    gc.freeze()
    # A request leaves few objects in cycles: young collections at the default threshold scan
    # the living for nothing, often enough to show in a request's instruction count.
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])
    # The loop shares the GIL with the store's writer, which redacts each example it keeps (12 ms for a
    # 200 KiB body): handed back every millisecond rather than every five, a request that arrives then
    # waits less (the p99 of 200 KiB answers that differ: docs/performance.md).
    sys.setswitchinterval(SWITCH_SECONDS)
    if on_ready is not None:
        on_ready(proxy)
    reloads: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        task = loop.create_task(proxy.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.stop()
    return 0
