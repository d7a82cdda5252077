"""512 MiB through strangler and through nginx as proxy, in one run: MB/s both ways, RSS, a slow client.

    python -m benchmarks.bytes [--rounds N]

An nginx upstream (one worker, sendfile) serves a sparse 512 MiB file, and
benchmarks/sink.py takes uploads and drops them. In front of both: nginx as proxy (one
worker, keep-alive to both upstreams, otherwise its defaults: it buffers a request body
whole in a temporary file before passing it on, and spills an answer to one when the
client lags; `client_max_body_size 0` is the one default changed, since 1 MiB would refuse
the upload) and one strangler process. curl downloads the file and uploads one as large
through each in turn, round after round; a rate is the median of its rounds, a ratio the
median of the rounds' ratios. RSS is taken before the first round and after the last.
Then SLOW_CLIENTS clients read the file at 1 MB/s each for SLOW_SECONDS, through each
proxy in turn: the growth of RSS a connection, against what one streamed answer may hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import Check, install_missing, rss, run_alone, wait_for
from tests.helpers import free_port
from tests.servers import stop_process

SIZE = 512 << 20
ROUNDS = 5
SLOW_CLIENTS, SLOW_RATE, SLOW_SECONDS = 10, 1_000_000, 10.0
# What one streamed answer may hold in strangler while its client reads slowly. The answer's body
# buffer (aiohttp's StreamReader over proxy.wire.connection.READ_BUFSIZE, 64 KiB) pauses the
# upstream's socket once past twice that, so it holds at most 128 KiB and the read that crossed the
# mark (uvloop reads up to 256 KiB); the chunk taken from it waits in the client's transport, which
# is written to until past its high-water mark (64 KiB) and then drained. The kernel's socket
# buffers are not in the process's RSS.
BUFFER_BOUND = 2 * (2 * 64 + 256) * 1024 + 64 * 1024
RATIO_TARGET, GROWTH_TARGET = 0.9, 50 << 20
WAYS = ("download", "upload")
# strangler's ratio is taken against each: nginx as configured by default, and nginx streaming both ways
# (no request body buffered, no answer spilled to a file) as strangler does
PEERS = {"nginx": "nginx (defaults)", "streaming": "nginx streaming"}
PROXIES = {"nginx": "nginx as proxy, 1 worker, its defaults", "streaming": "nginx as proxy, streaming",
           "strangler": "strangler, 1 process"}
NGINX = """
worker_processes 1;
daemon off;
pid {scratch}/{name}.nginx.pid;
error_log {scratch}/{name}.nginx.err warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  client_body_temp_path {scratch}/{name}-body;
  proxy_temp_path {scratch}/{name}-proxy;
{servers}
}}
"""
UPSTREAM = """
  server {{ listen 127.0.0.1:{files};
           location /big {{ default_type application/octet-stream; alias {scratch}/big.bin; }}
           location / {{ return 200 'ok'; }} }}
"""
PROXY = """
  upstream files {{ server 127.0.0.1:{files}; keepalive 16; }}
  upstream sink {{ server 127.0.0.1:{sink}; keepalive 16; }}
  server {{ listen 127.0.0.1:{nginx}; client_max_body_size 0;
           location /upload {{ proxy_pass http://sink; proxy_http_version 1.1; proxy_set_header Connection ""; }}
           location / {{ proxy_pass http://files; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
  server {{ listen 127.0.0.1:{streaming}; client_max_body_size 0; proxy_request_buffering off;
           proxy_max_temp_file_size 0;
           location /upload {{ proxy_pass http://sink; proxy_http_version 1.1; proxy_set_header Connection ""; }}
           location / {{ proxy_pass http://files; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
"""


@dataclass(frozen=True)
class Row:
    """One proxy in one direction: MB/s (median of rounds), its ratio to nginx's, RSS growth in bytes."""

    name: str
    mb_s: float | None
    ratio: float | None
    growth: int
    target: str = ""
    ok: bool | None = None  # None: nginx's row, the peer
    streaming: float | None = None  # the ratio to nginx streaming

    def line(self) -> str:
        rate = "-" if self.mb_s is None else f"{self.mb_s:,.0f}"
        ratios = [f"{r:.2f}" if r is not None else "-" for r in (self.ratio, self.streaming)]
        verdict = "" if self.ok is None else "ok" if self.ok else "MISSED"
        return (f"{self.name:<52} {rate:>8} {ratios[0]:>8} {ratios[1]:>10} {self.growth / 1024:>9,.0f}   "
                f"{self.target:<40} {verdict}")


@dataclass(frozen=True)
class Result:
    rows: list[Row]
    rounds: dict[tuple[str, str], list[float]]  # strangler / peer, round by round, by direction and peer
    growth: int  # strangler's RSS over all the fast rounds, both directions
    slow_each: int  # strangler's RSS growth a slow connection

    def checks(self) -> list[Check]:
        """The ratios and bounds of the performance issue, as benchmarks.run's list prints them. The
        issue's peer is nginx as configured by default; against nginx streaming, a ratio is only told."""
        ratios = [(way, peer, statistics.median(each)) for (way, peer), each in self.rounds.items()]
        return [*((f"512 MiB {way} MB/s: strangler / {PEERS[peer]}", value, f">= {RATIO_TARGET}",
                   value >= RATIO_TARGET if peer == "nginx" else "above" if value >= RATIO_TARGET else "below")
                  for way, peer, value in ratios),
                ("RSS growth, 512 MiB each way, all rounds (MiB)", self.growth / 2**20, "< 50",
                 self.growth < GROWTH_TARGET),
                ("slow client (1 MB/s): RSS growth a connection (KiB)", self.slow_each / 1024,
                 f"<= {BUFFER_BOUND // 1024} (buffer bound)", self.slow_each <= BUFFER_BOUND)]


class BytesBench:
    def __init__(self, scratch: Path, running: ExitStack, rounds: int = ROUNDS) -> None:
        self.scratch, self.running, self.rounds = scratch, running, rounds
        self.ports = {name: free_port() for name in ("files", "sink", *PROXIES, "admin")}
        self.pids: dict[str, int] = {}

    def run(self) -> Result:
        self.start()
        for name in PROXIES:  # the file into the page cache, each proxy's paths warm
            self.transfer("download", name)
        before = {name: self.rss(name) for name in ("nginx", "strangler")}
        taken: dict[tuple[str, str], list[float]] = {}
        for _ in range(self.rounds):
            for way in WAYS:
                for name in PROXIES:
                    taken.setdefault((way, name), []).append(self.transfer(way, name))
        grown = {name: self.rss(name) - before[name] for name in before}
        rounds = {(way, peer): [s / n for n, s in zip(taken[way, peer], taken[way, "strangler"], strict=True)]
                  for way in WAYS for peer in PEERS}
        rows = []
        for way in WAYS:
            rows += [Row(f"{PROXIES[peer]}, {way}", statistics.median(taken[way, peer]), None, grown["nginx"])
                     for peer in PEERS]
            ratios = [statistics.median(rounds[way, peer]) for peer in PEERS]
            rows.append(Row(f"strangler, 1 process, {way}", statistics.median(taken[way, "strangler"]),
                            ratios[0], grown["strangler"], f">= {RATIO_TARGET} / nginx, RSS growth < 50 MiB",
                            ratios[0] >= RATIO_TARGET and grown["strangler"] < GROWTH_TARGET, ratios[1]))
        slow = {name: self.slow(name) for name in ("nginx", "strangler")}
        rows.append(Row(f"nginx, {SLOW_CLIENTS} clients at 1 MB/s, a connection", None, None, slow["nginx"]))
        rows.append(Row(f"strangler, {SLOW_CLIENTS} clients at 1 MB/s, a connection", None, None,
                        slow["strangler"], f"<= {BUFFER_BOUND // 1024} KiB (buffer bound)",
                        slow["strangler"] <= BUFFER_BOUND))
        return Result(rows, rounds, grown["strangler"], slow["strangler"])

    def start(self) -> None:
        self.scratch.chmod(0o755)  # nginx's workers (user nobody) read the file it serves
        with open(self.scratch / "big.bin", "wb") as big:
            big.truncate(SIZE)  # sparse: the disk is not what is measured
        (self.scratch / "big.bin").chmod(0o644)
        self.spawn("sink", [sys.executable, "-m", "benchmarks.sink", str(self.ports["sink"])])
        for name, servers in (("files", UPSTREAM), ("nginx", PROXY)):
            conf = self.scratch / f"bytes-{name}.nginx.conf"
            conf.write_text(NGINX.format(name=f"bytes-{name}", scratch=self.scratch,
                                         servers=servers.format(scratch=self.scratch, **self.ports)))
            self.spawn(name, [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf)])
        routes = {"version": 1, "listen": f"127.0.0.1:{self.ports['strangler']}",
                  "admin": {"listen": f"127.0.0.1:{self.ports['admin']}"},
                  "upstreams": {"files": {"url": f"http://127.0.0.1:{self.ports['files']}"},
                                "sink": {"url": f"http://127.0.0.1:{self.ports['sink']}"}},
                  "reports": {"database": str(self.scratch / "bytes.db")},
                  "routes": [{"name": "upload", "match": {"path": "/upload"}, "legacy": "sink"},
                             {"name": "files", "match": {"path": "/"}, "legacy": "files"}]}
        (self.scratch / "bytes.yaml").write_text(json.dumps(routes))  # JSON is YAML
        self.spawn("strangler", [sys.executable, "-m", "proxy", "serve", "--config",
                                 str(self.scratch / "bytes.yaml"), "--log-level", "WARNING"])
        for name in ("files", *PROXIES):
            wait_for(f"http://127.0.0.1:{self.ports[name]}/")
        wait_for(f"http://127.0.0.1:{self.ports['strangler']}/upload")

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

    def transfer(self, way: str, name: str) -> float:
        """512 MiB one way through one proxy with curl: MB/s, from the request's start to the answer's end."""
        url = f"http://127.0.0.1:{self.ports[name]}"
        if way == "download":
            command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{time_total} %{http_code}",
                       f"{url}/big"]
        else:
            command = ["curl", "-sS", "-X", "POST", "-T", str(self.scratch / "big.bin"), "-H", "Expect:",
                       "-H", "Content-Type: application/octet-stream", "-w",
                       "\n%{size_upload} %{time_total} %{http_code}", f"{url}/upload"]
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
        size, seconds, status = out.splitlines()[-1].split()
        if status != "200" or int(size) != SIZE or (way == "upload" and f'"received":{SIZE}' not in out):
            raise RuntimeError(f"{name}, {way}: {out[-200:]!r}")
        return SIZE / float(seconds) / 1e6

    def slow(self, name: str) -> int:
        """RSS growth a connection (bytes, at its peak) while SLOW_CLIENTS read the file at SLOW_RATE."""
        before = self.rss(name)
        peak = asyncio.run(self._slow_clients(name))
        return max(0, peak - before) // SLOW_CLIENTS

    async def _slow_clients(self, name: str) -> int:
        readers = [asyncio.create_task(slow_read(self.ports[name], SLOW_RATE, SLOW_SECONDS))
                   for _ in range(SLOW_CLIENTS)]
        peak = 0
        while not all(reader.done() for reader in readers):
            peak = max(peak, self.rss(name))
            await asyncio.sleep(0.25)
        got = [await reader for reader in readers]
        if min(got) < SLOW_RATE * SLOW_SECONDS * 0.9:
            raise RuntimeError(f"{name}: a slow client read only {min(got):,} bytes in {SLOW_SECONDS:g} s")
        return peak


async def slow_read(port: int, rate: float, seconds: float) -> int:
    """GET the file and read it at `rate` bytes a second for `seconds`, then hang up: the bytes read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
    writer.write(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    started, got = time.monotonic(), 0
    while (elapsed := time.monotonic() - started) < seconds:
        ahead = got / rate - elapsed
        if ahead > 0:
            await asyncio.sleep(min(ahead, seconds - elapsed))
            continue
        chunk = await reader.read(1 << 14)
        if not chunk:
            break
        got += len(chunk)
    writer.close()
    return got


def report(result: Result) -> None:
    print(f"\nbytes: 512 MiB through each proxy with curl, both in turn, median of rounds; then "
          f"{SLOW_CLIENTS} clients reading at 1 MB/s for {SLOW_SECONDS:g} s")
    print(f"{'':<52} {'MB/s':>8} {'/ nginx':>8} {'/ streaming':>10} {'RSS +KiB':>9}   {'target':<40}")
    for row in result.rows:
        print(row.line())
    for (way, peer), ratios in result.rounds.items():
        print(f"  {way}, strangler / {PEERS[peer]}, round by round: {' '.join(f'{r:.2f}' for r in ratios)}")


def measure(scratch: Path, running: ExitStack, rounds: int = ROUNDS) -> list[Check]:
    """Run it with `scratch` and `running` shared (benchmarks.run), print its table: its checks."""
    install_missing("nginx", "curl")
    result = BytesBench(scratch, running, rounds).run()
    report(result)
    return result.checks()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds each way (default {ROUNDS})")
    args = parser.parse_args()
    return run_alone("bytes benchmark", lambda scratch, running: measure(scratch, running, args.rounds))


if __name__ == "__main__":
    raise SystemExit(main())
