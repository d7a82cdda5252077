"""10,000 idle keep-alive connections to strangler and to nginx as proxy: what they cost in RSS.

    python -m benchmarks.connections [--connections N]

One nginx upstream answers a small JSON document; nginx as proxy (one worker) and one
strangler process stand in front of it, each with a keep-alive timeout of 300 s so no
connection is closed while it is measured. This process (its open-file limit raised as far
as the hard limit allows) opens the connections to one proxy, sends one request on each,
reads the answer and leaves the connection open; then the server's RSS is taken (nginx:
its worker's), the connections are checked to be still open, and closed; then the other
proxy. Each server's RSS growth is over its RSS before, after a warm-up request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import Check, install_missing, rss, run_alone, wait_for
from tests.helpers import free_port
from tests.servers import stop_process

CONNECTIONS = 10_000
AT_ONCE = 200  # connections being opened at a time (the listen backlogs are 128 and more)
KEEPALIVE = 300  # seconds: both servers keep an idle connection this long, far past the measurement
HOLD = 2.0  # seconds the connections stay idle before RSS is taken again, and they are checked
TARGET = 100 << 20
REQUEST = b"GET /api/items/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
NGINX = """
worker_processes 1;
worker_rlimit_nofile {files};
daemon off;
pid {scratch}/{name}.nginx.pid;
error_log {scratch}/{name}.nginx.err warn;
events {{ worker_connections {files}; }}
http {{
  access_log off;
  keepalive_timeout {keepalive}s;
  keepalive_requests 1000;
{servers}
}}
"""
UPSTREAM = """
  server {{ listen 127.0.0.1:{upstream} backlog=4096;
           location / {{ default_type application/json; return 200 '{{"id":1,"name":"item"}}'; }} }}
"""
PROXY = """
  upstream origin {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{ listen 127.0.0.1:{nginx} backlog=4096;
           location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
"""


@dataclass(frozen=True)
class Held:
    """One server with `opened` idle connections: RSS before and with them (bytes), and how many stayed open."""

    name: str
    opened: int
    before: int
    after: int
    still_open: int

    @property
    def growth(self) -> int:
        return self.after - self.before


@dataclass(frozen=True)
class Result:
    asked: int
    limit: int  # the open-file limit this process reached
    held: dict[str, Held]

    def checks(self) -> list[Check]:
        strangler, nginx = self.held["strangler"], self.held["nginx"]
        whole = strangler.opened == strangler.still_open == self.asked
        return [(f"{strangler.opened:,} idle keep-alive connections: RSS growth (MiB)", strangler.growth / 2**20,
                 "< 100, all kept open", strangler.growth < TARGET and whole),
                ("  nginx's worker, the same connections (MiB)", nginx.growth / 2**20, "measured beside it", True)]


def raise_open_files(wanted: int) -> int:
    """This process's open-file limit raised toward `wanted` (up to the hard limit); what it now is.
    The servers started after it inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class ConnectionsBench:
    def __init__(self, scratch: Path, running: ExitStack, connections: int = CONNECTIONS) -> None:
        self.scratch, self.running = scratch, running
        self.limit = raise_open_files(connections + 1024)
        self.connections = min(connections, self.limit - 256)  # room for the process's own files
        self.asked = connections
        self.ports = {name: free_port() for name in ("upstream", "nginx", "strangler", "admin")}
        self.pids: dict[str, int] = {}

    def run(self) -> Result:
        self.start()
        held = {name: asyncio.run(self.hold(name)) for name in ("strangler", "nginx")}
        return Result(self.asked, self.limit, held)

    def start(self) -> None:
        self.scratch.chmod(0o755)
        files = self.connections + 1024
        for name, servers in (("upstream", UPSTREAM), ("nginx", PROXY)):
            conf = self.scratch / f"conns-{name}.nginx.conf"
            conf.write_text(NGINX.format(name=f"conns-{name}", scratch=self.scratch, files=files,
                                         keepalive=KEEPALIVE, servers=servers.format(**self.ports)))
            self.spawn(name, [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf)])
        routes = {"version": 1, "listen": f"127.0.0.1:{self.ports['strangler']}",
                  "admin": {"listen": f"127.0.0.1:{self.ports['admin']}"},
                  "server": {"keepalive_timeout": KEEPALIVE},
                  "upstreams": {"origin": {"url": f"http://127.0.0.1:{self.ports['upstream']}",
                                           "max_connections": AT_ONCE}},
                  "reports": {"database": str(self.scratch / "conns.db")},
                  "routes": [{"name": "items", "match": {"path": "/"}, "legacy": "origin"}]}
        (self.scratch / "conns.yaml").write_text(json.dumps(routes))  # JSON is YAML
        self.spawn("strangler", [sys.executable, "-m", "proxy", "serve", "--config",
                                 str(self.scratch / "conns.yaml"), "--log-level", "WARNING"])
        for name in ("upstream", "nginx", "strangler"):
            wait_for(f"http://127.0.0.1:{self.ports[name]}/api/items/1")

    def spawn(self, name: str, command: list[str]) -> None:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.running.callback(stop_process, process)
        self.pids[name] = process.pid

    def rss(self, name: str) -> int:
        """Bytes resident in strangler's process, or in nginx's worker (the master's one child)."""
        pid = self.pids[name]
        if name == "nginx":
            pid = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
        return rss(pid) * 1024

    async def hold(self, name: str) -> Held:
        """Open the connections to one server, a request answered on each; RSS with them held idle."""
        before = self.rss(name)
        gate = asyncio.Semaphore(AT_ONCE)
        opened = await asyncio.gather(*(self.open(name, gate) for _ in range(self.connections)))
        streams = [pair for pair in opened if pair is not None]
        await asyncio.sleep(HOLD)
        after = self.rss(name)
        still_open = sum(not reader.at_eof() for reader, _ in streams)
        for _, writer in streams:
            writer.close()
        await asyncio.sleep(1.0)  # the server sees them go before the next is measured
        return Held(name, len(streams), before, after, still_open)

    async def open(self, name: str, gate: asyncio.Semaphore) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with gate:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.ports[name], limit=4096)
                writer.write(REQUEST)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, IndexError):
                return None
            return reader, writer


def report(result: Result) -> None:
    reached = "" if result.limit >= result.asked + 256 else \
        f" (the open-file limit stops at {result.limit:,}: {result.asked:,} asked)"
    print(f"\nidle keep-alive connections, one request answered on each, held {HOLD:g} s{reached}")
    print(f"{'':<36} {'open':>7} {'kept':>7} {'RSS before':>11} {'with them':>10} {'growth':>9} {'a conn.':>8}")
    for held in result.held.values():
        label = "strangler, 1 process" if held.name == "strangler" else "nginx as proxy, 1 worker"
        each = held.growth / held.opened if held.opened else 0
        print(f"{label:<36} {held.opened:>7,} {held.still_open:>7,} {held.before / 2**20:>8.1f} MiB "
              f"{held.after / 2**20:>6.1f} MiB {held.growth / 2**20:>5.1f} MiB {each / 1024:>5.1f} KiB")


def measure(scratch: Path, running: ExitStack, connections: int = CONNECTIONS) -> list[Check]:
    """Run it with `scratch` and `running` shared (benchmarks.run), print its table: its checks."""
    install_missing("nginx")
    result = ConnectionsBench(scratch, running, connections).run()
    report(result)
    return result.checks()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help=f"default {CONNECTIONS:,}")
    args = parser.parse_args()
    return run_alone("connections benchmark", lambda scratch, running: measure(scratch, running, args.connections))


if __name__ == "__main__":
    raise SystemExit(main())
