"""The configuration requests see now, replaced whole by a valid reload and kept on an invalid one.

A reload builds a complete new generation (config, a pool per upstream, the toggles)
before one assignment swaps it in; requests already running finish on the generation
they started with. Pools of unchanged upstreams carry over, and so do toggles whose
definition did not change; dropped ones close when their last request ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

from proxy import config as config_file
from proxy.config.environment import checked
from proxy.config.tls import tls_files
from proxy.model import Config, Problem, Upstream
from proxy.model.errors import ConfigError
from proxy.observe.metrics import Metrics
from proxy.routing.decide import FixedDecisions
from proxy.routing.index import RouteIndex
from proxy.wire.pool import UpstreamPool
from toggles.base import Toggles

log = logging.getLogger("strangler.config")
WATCH_INTERVAL = 0.5
LOAD_TIMEOUT = 5.0  # seconds a reload may take to read and check the file


ToggleFactory = Callable[[Config, "Toggles | None"], Toggles]  # reuses the previous one when it can


@dataclass(frozen=True, slots=True)
class Generation:
    config: Config
    pools: Mapping[str, UpstreamPool]
    shadow_pools: Mapping[str, UpstreamPool]  # separate: shadows never take a served request's connection
    toggles: Toggles
    loaded_at: float
    fixed: FixedDecisions = field(init=False)
    index: RouteIndex = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fixed", FixedDecisions(self.config.routes))
        object.__setattr__(self, "index", RouteIndex(self.config.routes))

    def all_pools(self) -> list[UpstreamPool]:
        return [*self.pools.values(), *self.shadow_pools.values()]


@dataclass(frozen=True, slots=True)
class ReloadFailure:
    at: float
    problems: tuple[Problem, ...]


class LiveConfig:
    """Holds the current generation; reloads from the file on request or when it changes."""

    def __init__(self, path: str, first: Config, metrics: Metrics, toggles_for: ToggleFactory) -> None:
        self.path = path
        self.metrics = metrics
        self.toggles_for = toggles_for
        self.current = Generation(first, _pools(first.upstreams, {}), _pools(_shadowed(first), {}),
                                  toggles_for(first, None), time.time())
        self.last_failure: ReloadFailure | None = None
        self._signature = _signature(path, first)
        _warn_unverified(first)
        self._chores: set[asyncio.Task[None]] = set()
        metrics.prime(first)
        metrics.reloads.labels("ok").inc()
        metrics.config_loaded_at.set(self.current.loaded_at)

    async def reload(self, why: str) -> bool:
        """Load the file again; swap it in if valid. Returns whether the running config is the file's.
        Whatever goes wrong loading it or building its generation is a reload error, shown in /status and
        counted: never raised."""
        self._signature = _signature(self.path, self.current.config)
        try:
            config = await _in_daemon_thread(lambda: checked(config_file.load(self.path)), LOAD_TIMEOUT)
            generation = None if _fingerprint(config) == _fingerprint(self.current.config) else self._next(config)
        except ConfigError as exc:
            return self._refuse(exc.problems, why)
        except TimeoutError:
            return self._refuse((Problem(self.path, 0, f"reading the file took over {LOAD_TIMEOUT:g}s"),), why)
        except Exception as exc:  # a bug, or a part that cannot be built (a cache directory): still only refused
            log.warning("loading routes.yaml failed unexpectedly", exc_info=exc)
            return self._refuse((Problem(self.path, 0, f"could not be loaded ({type(exc).__name__}: {exc})"),), why)
        self.last_failure = None
        _warn_unverified(config)
        if generation is None:
            self.metrics.reloads.labels("unchanged").inc()
            log.info("routes.yaml unchanged", extra={"trigger": why})
            return True
        self._swap(generation, why)
        self._signature = _signature(self.path, config)  # the files the new configuration names, as loaded
        return True

    def _refuse(self, problems: tuple[Problem, ...], why: str) -> bool:
        self.last_failure = ReloadFailure(time.time(), problems)
        self.metrics.reloads.labels("invalid").inc()
        log.error("routes.yaml is invalid; still serving the last good configuration",
                  extra={"trigger": why, "problems": [str(p) for p in problems]})
        return False

    def start(self) -> None:
        """Let the toggles begin syncing, in a thread: a slow Unleash server never holds up start-up."""
        self._in_thread(self.current.toggles.start)

    def _next(self, config: Config) -> Generation:
        """The generation `config` makes, sharing what it can with the current one. Built whole before
        anything changes, so that a part that cannot be built leaves the current generation as it was."""
        old = self.current
        return Generation(config, _pools(config.upstreams, old.pools), _pools(_shadowed(config), old.shadow_pools),
                          self.toggles_for(config, old.toggles), time.time())

    def _swap(self, new: Generation, why: str) -> None:
        old, self.current = self.current, new
        kept = {id(pool) for pool in new.all_pools()}
        for pool in old.all_pools():
            if id(pool) not in kept:
                pool.retire()
        if new.toggles is not old.toggles:
            self._in_thread(new.toggles.start)
            self._in_thread(old.toggles.close)
        self.metrics.prime(new.config)
        self.metrics.reloads.labels("ok").inc()
        self.metrics.config_loaded_at.set(new.loaded_at)
        config = new.config
        log.info("routes.yaml reloaded", extra={
            "trigger": why, "sha256": config.digest, "routes": len(config.routes),
            "warnings": [str(w) for w in config.warnings]})
        for what in _restart_needed(old.config, config):
            log.warning(f"a change of '{what}' takes effect at the next restart")

    async def watch(self, interval: float = WATCH_INTERVAL) -> None:
        """Reload whenever the identity (inode, size, mtime) of routes.yaml, or of a certificate, key or CA
        file it names, changes: a renewed certificate is served without an edit. Runs until cancelled."""
        while True:
            await asyncio.sleep(interval)
            if _signature(self.path, self.current.config) != self._signature:
                try:
                    await self.reload("file changed")
                except Exception:  # the watcher outlives anything a reload does
                    log.exception("a reload failed; the watcher goes on")

    def _in_thread(self, chore: Callable[[], None]) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(_logged, chore))
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def close(self) -> None:
        await asyncio.gather(*self._chores)
        await asyncio.to_thread(_logged, self.current.toggles.close)
        await asyncio.gather(*(pool.close() for pool in self.current.all_pools()))


def _pools(specs: Mapping[str, Upstream], old: Mapping[str, UpstreamPool]) -> dict[str, UpstreamPool]:
    """A pool per upstream: the old one when its settings did not change (warm connections stay)."""
    return {name: old[name] if name in old and old[name].spec == spec else UpstreamPool(spec)
            for name, spec in specs.items()}


def _shadowed(config: Config) -> dict[str, Upstream]:
    """The upstreams a parallel run may call: both sides of every route that has one."""
    return {u.name: u for route in config.routes if route.parallel_run.enabled
            for u in (route.legacy, route.new) if u is not None}


def _logged(chore: Callable[[], None]) -> None:
    try:
        chore()
    except Exception:
        log.warning("starting or stopping the toggle provider failed", exc_info=True)


async def _in_daemon_thread(load: Callable[[], Config], timeout: float) -> Config:
    """`load()` in a thread of its own, awaited for at most `timeout` seconds. A daemon thread, not the
    loop's executor: one stuck on a file that never answers must not hold the process at exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Config] = loop.create_future()

    def run() -> None:
        try:
            result = load()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, result, None)

    threading.Thread(target=run, name="routes.yaml", daemon=True).start()
    async with asyncio.timeout(timeout):
        return await done


def _settle(done: asyncio.Future[Config], result: Config | None, exc: BaseException | None) -> None:
    if done.done():
        return  # timed out already
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(result)


def _signature(path: str, config: Config) -> tuple[tuple[int, ...] | None, ...]:
    """The identity of routes.yaml and of each TLS file `config` names."""
    return tuple(map(_identity, (path, *tls_files(config))))


def _identity(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


def _fingerprint(config: Config) -> tuple[str, ...]:
    """What a reload compares: the file's bytes, and those of the TLS files it names (renewed in place,
    they change what serves while routes.yaml stays byte for byte the same)."""
    specs = (config.tls, config.admin.tls, *(u.tls for u in config.upstreams.values()))
    return (config.digest, *(spec.digest for spec in specs if spec is not None))


def _restart_needed(old: Config, new: Config) -> list[str]:
    """What a reload changed that only a restart applies: the listeners' addresses, the admin token, and
    whether a listener speaks TLS at all (renewed files apply at once)."""
    changed = [what for what, (a, b) in {"listen": (old.listen, new.listen),
                                         "admin": (replace(old.admin, tls=None), replace(new.admin, tls=None))}.items()
               if a != b]
    return changed + [what for what, (a, b) in {"tls": (old.tls, new.tls),
                                                 "admin.tls": (old.admin.tls, new.admin.tls)}.items()
                      if (a is None) != (b is None)]


def _warn_unverified(config: Config) -> None:
    """At every load: an upstream whose certificate is not checked is never a silent choice."""
    for name, upstream in config.upstreams.items():
        if upstream.tls is not None and not upstream.tls.verify:
            log.warning("TLS verification of an upstream is off (verify: false)", extra={"upstream": name})
