"""`strangler serve --workers N`: N proxy processes on one port, one admin listener speaking for all.

Each worker is a whole proxy without an admin listener: it binds the edge port with
SO_REUSEPORT (the kernel spreads connections), reloads routes.yaml itself, and writes
divergences to the shared SQLite file (WAL) and metrics to a shared folder. The
supervisor serves admin: /metrics merges the workers' files (prometheus-client's
multiprocess mode), /status adds each worker. It forwards SIGHUP, drains the workers on
SIGTERM/SIGINT, and starts a worker again when one dies: at once the first time, then after
a delay that doubles while it keeps dying (up to 30 s), saying so once per crash loop.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import tempfile
import time
from dataclasses import replace
from typing import Any, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from proxy import __version__
from proxy import config as config_file
from proxy import steer
from proxy.admin.app import create_admin_app
from proxy.admin.console import Act, Filters, Forms
from proxy.admin.status import Lifecycle, status, tls_status
from proxy.children import die_with_parent
from proxy.app import Options, admin_tls, admin_token, listen, run_loop, serve, served, toggles_for
from proxy.config.environment import checked
from proxy.model import Certificate, Config, Phase
from proxy.observe import logs
from proxy.observe.buildinfo import BuildInfo
from proxy.observe.metrics import STORE_STATES, Metrics
from proxy.observe.tally import TallyFiles
from proxy.rollout.evidence import Evidence
from proxy.rollout.plans import Rollouts
from proxy.serve.live import LiveConfig
from proxy.wire.tls import ListenerContext
from reports.db import Where
from reports.plans import StorePlans

log = logging.getLogger("strangler.supervisor")
START_TIMEOUT = 60.0
FIRST_DELAY, MAX_DELAY = 0.5, 30.0  # seconds before starting again a worker that keeps dying
STABLE_AFTER = 60.0  # seconds up after which a worker's next death starts a new crash loop


class Supervisor:
    """The parent of `serve --workers N`."""

    def __init__(self, options: Options, config: Config, count: int, log_level: str) -> None:
        self.options, self.config, self.count, self.log_level = options, config, count, log_level
        self.lifecycle = Lifecycle()
        self.metrics_dir = tempfile.mkdtemp(prefix="strangler-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir  # before any worker starts
        self._spawn = multiprocessing.get_context("spawn")
        self._reports: Any = self._spawn.Queue()
        self.workers: dict[int, Any] = {}
        self.live: LiveConfig | None = None
        self.metrics: Metrics | None = None
        self.tls: dict[str, ListenerContext | None] = {}  # the admin listener's, when it has TLS
        self.build = BuildInfo.collect()
        self._admin: web.AppRunner | None = None
        self.plans = StorePlans(Where.of(config.reports))
        self.rollouts: Rollouts | None = None
        self._following: asyncio.Task[None] | None = None
        self._started: dict[int, float] = {}  # monotonic time each worker was last started
        self._crashes: dict[int, int] = {}  # deaths in a row, each soon after its start

    async def start(self) -> None:
        checked(self.config)  # the supervisor serves admin: its token variable must be set
        self.metrics = metrics = Metrics(__version__)
        self.live = live = LiveConfig(self.options.config_path, self.config, metrics, toggles_for)
        # The workers move the rollout plans; the supervisor follows them, for /status.
        self.rollouts = Rollouts(self.plans, None, metrics, lambda: live.current.config,
                                 lambda: live.current.toggles, Evidence(), act=False)
        self._following = asyncio.create_task(self.rollouts.run())
        for index in range(self.count):
            self._start_worker(index)
        for _ in range(self.count):
            await self._wait_ready()
        self._admin = web.AppRunner(create_admin_app(self, admin_token(self.config)), access_log=None)
        self.tls["admin"] = admin_tls(live)
        await listen(self._admin, self.config.admin.listen, tls=self.tls["admin"])
        self.lifecycle.state = Phase.READY
        log.info("strangler is ready", extra={"workers": self.count, "edge": str(self.config.listen)})

    def _start_worker(self, index: int) -> None:
        worker = self._spawn.Process(target=worker_main, name=f"strangler-worker-{index}",
                                     args=(replace(self.options, worker=index), self.log_level, self._reports))
        worker.start()
        self.workers[index] = worker
        self._started[index] = time.monotonic()

    async def _wait_ready(self) -> None:
        """A worker's report that it serves. Waits in short polls, so a SIGTERM meanwhile is not held up by
        a thread blocked on the queue (the loop's shutdown waits for its threads)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                kind, index, detail = await asyncio.to_thread(self._reports.get, True, 0.5)
                break
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no worker said it was ready within {START_TIMEOUT:.0f} s") from None
        if kind != "ready":
            raise RuntimeError(f"worker {index} could not start: {detail}")

    async def watch(self, stop: asyncio.Event) -> None:
        """Start again any worker that dies while the supervisor is not stopping."""
        while not stop.is_set():
            for index, worker in list(self.workers.items()):
                if worker.exitcode is not None and not stop.is_set():
                    mark_process_dead(worker.pid, self.metrics_dir)
                    delay = self._after_death(index, worker)
                    if delay:
                        try:  # a SIGTERM meanwhile ends the wait
                            await asyncio.wait_for(stop.wait(), delay)
                            return
                        except TimeoutError:
                            pass
                    self._start_worker(index)
                    await self._wait_ready()
            await asyncio.sleep(0.5)

    def _after_death(self, index: int, worker: Any) -> float:
        """How long to wait before starting `worker` again; the first death of a crash loop is logged, the
        rest wait longer each time (a worker that cannot start must not spin the machine)."""
        stable = time.monotonic() - self._started.get(index, 0.0) >= STABLE_AFTER
        crashes = 0 if stable else self._crashes.get(index, 0) + 1
        self._crashes[index] = crashes
        if crashes <= 1:
            log.error("a worker died; starting it again", extra={"worker": index, "pid": worker.pid,
                                                                   "exitcode": worker.exitcode})
        elif crashes == 2:
            log.error("a worker keeps dying; starting it again with a growing delay",
                      extra={"worker": index, "pid": worker.pid, "exitcode": worker.exitcode,
                             "max_delay": MAX_DELAY})
        return 0.0 if crashes <= 1 else min(MAX_DELAY, FIRST_DELAY * 2 ** (crashes - 2))

    async def reload(self, why: str) -> None:
        for worker in self.workers.values():
            os.kill(worker.pid, signal.SIGHUP)  # each worker reloads itself
        assert self.live is not None
        await self.live.reload(why)  # the supervisor's own view, for /status

    async def stop(self) -> None:
        self.lifecycle.state = Phase.DRAINING
        log.info("draining", extra={"drain_timeout": self.options.drain_timeout})
        for worker in self.workers.values():
            worker.terminate()  # SIGTERM: each drains its own in-flight requests
        await asyncio.to_thread(self._join, self.options.drain_timeout + 10)
        if self._admin is not None:
            await self._admin.cleanup()
        if self._following is not None:
            self._following.cancel()
            await asyncio.gather(self._following, return_exceptions=True)
        await asyncio.to_thread(self.plans.close)
        if self.live is not None:
            await self.live.close()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        log.info("stopped")

    def _join(self, timeout: float) -> None:
        for worker in self.workers.values():
            worker.join(timeout)
            if worker.exitcode is None:
                worker.kill()
                worker.join(5)

    def status(self) -> dict[str, Any]:
        assert self.live is not None
        samples = _samples(self.metrics_text())
        document = status(self.live, self.lifecycle, self.build, {})
        for name, upstream in document["upstreams"].items():
            upstream["in_flight"] = int(samples.get(("strangler_upstream_in_flight", name), 0))
            upstream["breaker"] = ("closed", "half_open", "open")[int(samples.get(("strangler_breaker_state", name), 0))]
        document["workers"] = [{"worker": index, "pid": worker.pid, "alive": worker.is_alive(),
                                "requests": int(samples.get(("strangler_worker_requests_total", str(index)), 0))}
                               for index, worker in sorted(self.workers.items())]
        document["rollouts"] = self.rollouts.status() if self.rollouts is not None else []
        document["store"] = self._store(samples)
        document["tls"] = tls_status(self._certificates())
        return document

    def _store(self, samples: dict[tuple[str, str], float]) -> dict[str, Any]:
        """The store as the workers find it: the worst state of any, and what waits in all of them."""
        place = Where.of(self.config.reports)
        level = samples.get(("strangler_store_state", place.engine))
        state = None if level is None else next(s for s, n in STORE_STATES.items() if n == int(level))
        return {"database": str(place), "engine": place.engine, "state": state,
                "waiting": int(samples.get(("strangler_store_waiting", place.engine), 0))}

    def metrics_text(self) -> bytes:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.metrics_dir)
        registry.register(TallyFiles(self.metrics_dir))
        registry.register(Processes(self.workers))
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        if self.metrics is not None:  # the expiry gauge is the supervisor's alone: one series per listener
            self.metrics.certificates(self._certificates())
            registry.register(self.metrics.tls_expiry)
        return generate_latest(registry)

    def _certificates(self) -> dict[str, Certificate]:
        """The edge's certificate as the supervisor loaded it (the workers load the same files, on the same
        signals and file changes), and its own admin listener's."""
        assert self.live is not None
        config = self.live.current.config
        return {**({"edge": config.tls.certificate} if config.tls is not None else {}), **served(self.tls)}

    def report(self, filters: Filters, forms: Forms) -> str:
        assert self.live is not None
        return steer.console_page(Where.of(self.config.reports), self.live.current.config, filters, forms)

    def act(self, act: Act) -> tuple[int, str]:
        assert self.live is not None
        return steer.console_act(Where.of(self.config.reports), self.live.current.config, act)


class Processes(Collector):
    """process_* for the supervisor and each worker alive, a worker's labelled with its index: summed, they
    are the whole proxy's (prometheus-client's multiprocess mode has no process_* of its own)."""

    def __init__(self, workers: dict[int, Any]) -> None:
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        processes = [(None, os.getpid())] + [(index, w.pid) for index, w in sorted(self.workers.items())
                                               if w.pid is not None and w.is_alive()]
        for index, pid in processes:
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                labels = {} if index is None else {"worker": str(index)}
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, **labels}, sample.value)
        return iter(merged.values())


def _samples(text: bytes) -> dict[tuple[str, str], float]:
    """(metric name, its one label's value) -> value, for the gauges /status shows."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            labels = [v for k, v in sample.labels.items() if k != "pid"]
            if len(labels) == 1:
                found[(sample.name, labels[0])] = sample.value
    return found


def worker_main(options: Options, log_level: str, reports: Any) -> None:
    """A worker process: a whole proxy without admin, on the shared edge port. It drains and ends when the
    supervisor goes, however the supervisor ends."""
    die_with_parent(signal.SIGTERM)
    logs.setup(log_level, worker=options.worker)
    try:
        config = config_file.load(options.config_path)  # the file as it is now, not as it was
        run_loop(lambda: serve(options, config, on_ready=lambda _: reports.put(("ready", options.worker, ""))))
    except BaseException as exc:
        reports.put(("failed", options.worker, str(exc)))
        raise


async def supervise(options: Options, config: Config, count: int, log_level: str) -> int:
    supervisor = Supervisor(options, config, count, log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        await supervisor.start()
    except BaseException:
        await supervisor.stop()
        raise
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(supervisor.reload("SIGHUP")))
    watching = loop.create_task(supervisor.watch(stop))
    await stop.wait()
    watching.cancel()
    await supervisor.stop()
    # A worker SIGTERMed while it was still starting dies of the signal itself: that is a clean stop too.
    return 0 if all(w.exitcode in (0, -signal.SIGTERM) for w in supervisor.workers.values()) else 1
