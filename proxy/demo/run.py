"""`strangler demo`: the sample monolith and orders service on their upstream addresses, the proxy in front."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from proxy.app import Options, Proxy, serve
from proxy.demo.monolith import create_monolith
from proxy.demo.orders import create_orders_service
from proxy.model import Config


async def run_demo(options: Options, config: Config) -> int:
    samples = _samples(config)
    runners: list[web.AppRunner] = []
    try:
        for url, (app, _) in samples.items():
            runners.append(await _start(app, url))
        return await serve(options, config, on_ready=lambda proxy: print(_banner(config, samples, proxy),
                                                                          flush=True))
    finally:
        for runner in runners:
            await runner.cleanup()


def _samples(config: Config) -> dict[str, tuple[web.Application, str]]:
    """Each upstream named as some route's `legacy` gets the monolith; as `new`, the orders service."""
    samples: dict[str, tuple[web.Application, str]] = {}
    for route in config.routes:
        if route.legacy.url not in samples:
            samples[route.legacy.url] = (create_monolith(), f"sample monolith (upstream '{route.legacy.name}')")
        if route.new is not None and route.new.url not in samples:
            samples[route.new.url] = (create_orders_service(),
                                      f"sample orders service (upstream '{route.new.name}')")
    return samples


async def _start(app: web.Application, url: str) -> web.AppRunner:
    parts = urlsplit(url)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, parts.hostname, parts.port).start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(exc.errno, f"cannot start the sample app on {url}: {exc.strerror}") from exc
    return runner


def _banner(config: Config, samples: dict[str, tuple[web.Application, str]], proxy: Proxy) -> str:
    edge, admin = f"http://{proxy.edge_address}", f"http://{proxy.admin_address}"
    lines = ["", "strangler demo is running", ""]
    lines += [f"  {what:<44} {url}" for url, (_, what) in samples.items()]
    lines += [f"  {'proxy (send your requests here)':<44} {edge}", f"  {'admin':<44} {admin}", "", "Try:"]
    lines += [f"  curl -i {edge}/", f"  curl -i {edge}/api/orders/1",
              f"  curl -i -H 'X-User-Id: alice' {edge}/api/orders/1",
              f"  curl -s {admin}/status", f"  curl -s {admin}/metrics | grep strangler_requests",
              "  strangler explain GET /api/orders/1 -H 'X-User-Id: alice'", "",
              f"Then edit {config.source}: set `serve: new` on route 'orders' and send the same request;",
              "the proxy applies the edit within 2 seconds. Ctrl-C stops everything.", ""]
    return "\n".join(lines)
