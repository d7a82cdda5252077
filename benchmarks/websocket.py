"""WebSocket tunnels through strangler and through nginx, in one run: messages per second and CPU per message.

    python -m benchmarks.websocket [--seconds S]

One echo upstream (benchmarks/wsload.py), nginx with one worker proxying upgrades to it,
and one strangler process; the load generator ping-pongs 64-byte messages on 1 tunnel,
then on 100 at once, through each in turn (and straight to the upstream, for the
ceiling). Rounds interleave the two proxies, and each ratio is the median of its rounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import cpu_seconds
from tests.helpers import free_port
from tests.servers import stop_process

ROUNDS = 5
SHAPES = ((1, "1 tunnel"), (100, "100 tunnels"))
NGINX = """
worker_processes 1;
daemon off;
pid {scratch}/ws.nginx.pid;
error_log {scratch}/ws.nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream echo {{ server 127.0.0.1:{upstream}; }}
  server {{ listen 127.0.0.1:{nginx};
           location / {{ proxy_pass http://echo; proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade;
                        proxy_set_header Connection "upgrade"; proxy_read_timeout 3600s; }} }}
}}
"""


@dataclass
class Rate:
    name: str
    per_second: float  # messages, each a round trip
    cpu_us: float | None  # the proxy's CPU time per message


class WebSocketBench:
    def __init__(self, scratch: Path, running: ExitStack, seconds: float) -> None:
        self.scratch, self.running, self.seconds = scratch, running, seconds
        self.ports = {name: free_port() for name in ("upstream", "nginx", "strangler", "admin")}
        self.pids: dict[str, int] = {}

    def run(self) -> tuple[list[Rate], dict[str, float]]:
        """Every target's rate for each shape, and strangler's over nginx's (median of the rounds)."""
        self.start()
        rates, ratios = [], {}
        for tunnels, shape in SHAPES:
            rates.append(self.rate(f"direct to the echo upstream, {shape}", "upstream", tunnels))
            rounds = [(self.rate("", "nginx", tunnels), self.rate("", "strangler", tunnels)) for _ in range(ROUNDS)]
            for index, name in ((0, "nginx"), (1, "strangler")):
                median = statistics.median(r[index].per_second for r in rounds)
                cpu = statistics.median(r[index].cpu_us or 0 for r in rounds)
                rates.append(Rate(f"{name}, {shape}", median, cpu))
            ratios[f"WebSocket messages/s, {shape}: strangler / nginx"] = statistics.median(
                s.per_second / n.per_second for n, s in rounds)
        return rates, ratios

    def start(self) -> None:
        self.spawn("upstream", [sys.executable, "-m", "benchmarks.wsload", "echo", str(self.ports["upstream"])])
        conf = self.scratch / "ws.nginx.conf"
        conf.write_text(NGINX.format(scratch=self.scratch, **self.ports))
        self.spawn("nginx", [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf)])
        routes = {"version": 1, "listen": f"127.0.0.1:{self.ports['strangler']}",
                  "admin": {"listen": f"127.0.0.1:{self.ports['admin']}"},
                  "upstreams": {"echo": {"url": f"http://127.0.0.1:{self.ports['upstream']}",
                                         "max_connections": 500}},
                  "reports": {"database": str(self.scratch / "ws.db")},
                  "routes": [{"name": "ws", "match": {"path": "/"}, "legacy": "echo"}]}
        (self.scratch / "ws.yaml").write_text(json.dumps(routes))
        self.spawn("strangler", [sys.executable, "-m", "proxy", "serve", "--config", str(self.scratch / "ws.yaml"),
                                 "--log-level", "WARNING"])
        time.sleep(2.0)  # the three listening (a failed one shows as an error in the first rate)

    def spawn(self, name: str, command: list[str]) -> None:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.running.callback(stop_process, process)
        self.pids[name] = process.pid

    def rate(self, name: str, target: str, tunnels: int) -> Rate:
        pid = self.pids.get(target) if target != "upstream" else None
        cpu = cpu_seconds(pid) if pid else 0.0
        done = subprocess.run([sys.executable, "-m", "benchmarks.wsload", "load", str(self.ports[target]),
                               str(tunnels), str(self.seconds)], capture_output=True, text=True, check=True)
        result = json.loads(done.stdout)
        messages = result["messages"]
        cpu_us = (cpu_seconds(pid) - cpu) / messages * 1e6 if pid and messages else None
        return Rate(name, messages / result["seconds"], cpu_us)


def report(rates: list[Rate], ratios: dict[str, float]) -> None:
    print(f"\nWebSocket: 64-byte messages ping-ponged, one in flight per tunnel; {ROUNDS} rounds, median")
    print(f"{'':<52} {'msg/s':>10} {'CPU µs/msg':>11}")
    for rate in rates:
        cpu = "-" if rate.cpu_us is None else f"{rate.cpu_us:.0f}"
        print(f"{rate.name:<52} {rate.per_second:>10,.0f} {cpu:>11}")
    for name, value in ratios.items():
        print(f"  {name:<60} {value:>6.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each load run (default 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="strangler-ws-bench-") as scratch, ExitStack() as running:
        Path(scratch).chmod(0o755)
        report(*WebSocketBench(Path(scratch), running, args.seconds).run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
