"""The performance benchmark: strangler against nginx and a naive aiohttp proxy, in one run.

    python -m benchmarks.run

An nginx upstream answers a small JSON document (and a 200 KiB one); another nginx, with
one worker, proxies to it as the reference, and so do a naive aiohttp proxy and strangler
(one process with and without a parallel run, then two workers). Three more rows place
the servers under it (benchmarks/floors.py): aiohttp's server answering alone, strangler's
edge server answering alone, and the edge relaying through strangler's upstream client
with nothing else (the floor under strangler). wrk drives each in turn
on this machine; only the ratios printed at the end mean anything, since the absolute
figures move with the machine and whatever else it is doing. CPU per request (the
process's CPU time over the requests it served, nginx's too) moves less than requests per
second. Then the bytes (benchmarks/bytes.py), idle connections (benchmarks/connections.py)
and routes at scale (benchmarks/routes.py) take their turn, and every target of the
performance issue is printed with its ratio and verdict.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from benchmarks import connections, diffs, websocket
from benchmarks.bytes import measure as measure_bytes
from benchmarks.measure import Check, cpu_seconds, get, install_missing, machine, ms, print_checks, rss, wait_for
from benchmarks.websocket import WebSocketBench
from tests.certs import Authority
from tests.helpers import free_port
from tests.servers import stop_process

SMALL = '{"id":1,"name":"item","price":10,"currency":"EUR","tags":["a","b"]}'
DIFFER = SMALL.replace('"price":10', '"price":11')  # the shadow's answer at /diff: every comparison diverges
NAIVE = Path(__file__).with_name("naive_proxy.py")
HEADER = f"{'':<52} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'non-2xx':>8} {'CPU µs/req':>11}"
# Light load: 4 connections, each pausing a random while between requests (exponential, 10 ms on
# average: about 400 requests/s, arriving like independent users rather than in step), so the
# proxy is far from saturated and latency is latency, not the inverse of throughput.
PACE = "function delay()\n  return math.floor(-10 * math.log(1 - math.random()))\nend\n"
TARGETS = (("direct to the nginx upstream", "upstream"), ("nginx as proxy, 1 worker", "nginx"),
           ("naive aiohttp proxy (uvloop)", "naive"), ("strangler, 1 process", "strangler"),
           ("strangler, 1 process, parallel run on all", "parallel"))
# One round's ratio of a parallel run on to off moves by a quarter here, and a round now and then by
# three times: many short rounds (2 s, some 800 requests each) rather than a few long ones.
LIGHT_ROUNDS, LIGHT_SECONDS = 21, 2
# Under load, a proxy's requests per second move by a third within seconds here (its CPU time a request
# too): the throughput ratios are the median of many short rounds, each taking the three proxies in turn.
THROUGHPUT_ROUNDS, THROUGHPUT_SECONDS = 9, 2
LIGHT = (TARGETS[0], *TARGETS[3:])  # the ratios need direct, and strangler with and without a parallel run
HTTPS = (("nginx as proxy, 1 worker, HTTPS", "nginx-https"), ("strangler, 1 process, HTTPS", "https"))
BIG = [("strangler, 1 process, 200 KiB", "strangler", "/big"),
       ("  parallel run on all, identical (nothing compared)", "parallel", "/same"),
       ("  parallel run on all, differing (queue kept full)", "parallel", "/big")]
# The latency ratios of the targets: a parallel run on against off at light load; 200 KiB answers
# compared (the worker busy) against identical ones (nothing to compare); and against no parallel run.
PAIRED = ((LIGHT[2][0], LIGHT[1][0]), (BIG[2][0], BIG[1][0]), (BIG[2][0], BIG[0][0]))
# What each round of the throughput rounds yields, from the four runs taken in turn.
ROUND_RATIOS: dict[str, Callable[[dict[str, Run]], float]] = {
    "strangler / nginx": lambda runs: runs["strangler"].rps / runs["nginx"].rps,
    "strangler / naive": lambda runs: runs["strangler"].rps / runs["naive"].rps,
    "CPU/request strangler / nginx": lambda runs: (runs["strangler"].cpu_us or 0) / (runs["nginx"].cpu_us or 1),
    "CPU/request parallel run / none": lambda runs: (runs["parallel"].cpu_us or 0) / (runs["strangler"].cpu_us or 1),
}
FLOORS = (("aiohttp server alone, answering itself", "hello"),
          ("strangler's edge alone, answering itself", "edge"),
          ("strangler's edge + upstream client only", "floor"))


@dataclass
class Run:
    """One wrk run: requests per second, latency percentiles (ms), answers that were not 2xx."""

    name: str
    rps: float
    p50: float
    p99: float
    non_2xx: int
    cpu_us: float | None = None  # the proxy's CPU time per request, when it is one of ours

    def row(self) -> str:
        cpu = "-" if self.cpu_us is None else f"{self.cpu_us:.0f}"
        return f"{self.name:<52} {self.rps:>10,.0f} {self.p50:>9.2f} {self.p99:>9.2f} {self.non_2xx:>8} {cpu:>11}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run (default 5)")
    args = parser.parse_args()
    install_missing("nginx", "wrk")
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as scratch, ExitStack() as running:
        return Bench(Path(scratch), running, args.seconds).run()


class Bench:
    def __init__(self, scratch: Path, running: ExitStack, seconds: int) -> None:
        self.scratch, self.running, self.seconds = scratch, running, seconds
        self.ports: dict[str, int] = {}
        self.admins: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.rounds: dict[str, list[Run]] = {}  # every round of the interleaved runs, by name

    def run(self) -> int:
        self.start_nginx()
        self.start_python("naive", str(NAIVE), upstream=True)
        self.start_python("hello", "-m", "benchmarks.floors", "aiohttp")
        self.start_python("edge", "-m", "benchmarks.floors", "edge")
        self.start_python("floor", "-m", "benchmarks.floors", "floor", upstream=True)
        for name, parallel in (("strangler", None), ("parallel", 1.0), ("memory", 0.2)):
            self.start_strangler(name, parallel)
        print(f"strangler benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}, {machine()}\n")
        print("under load: wrk -t1 -c50\n" + HEADER, flush=True)
        loaded = [self.wrk(name, target, 50) for name, target in (*TARGETS, *FLOORS)]
        self.start_strangler("workers", None, workers=2)
        loaded.append(self.wrk("strangler, 2 workers", "workers", 50))
        print("\n4 connections, no pause: wrk -t1 -c4 (the proxies are busy, latency is mostly their own "
              "work)\n" + HEADER, flush=True)
        loaded += [self.wrk(f"{name}, -c4", target, 4) for name, target in TARGETS]
        throughput = self.throughput()
        edge = self.https()
        light = self.light()
        burst = self.burst()
        memory = self.memory()
        rates, tunnels = WebSocketBench(self.scratch, self.running, THROUGHPUT_SECONDS).run()
        websocket.report(rates, tunnels)
        from benchmarks.routes import RoutesBench  # here: it builds on Bench

        scale = [*measure_bytes(self.scratch, self.running), *connections.measure(self.scratch, self.running),
                 *RoutesBench(self.scratch / "routes", self.running).run()]
        Report(loaded, throughput, light, burst, memory, diffs.measure(), self.rounds, edge | tunnels, scale).print()
        return 0

    def throughput(self) -> dict[str, float]:
        """Under load (-c50), the median over rounds taking nginx, the naive proxy, strangler and strangler with
        a parallel run on all in turn: strangler's throughput over nginx's and the naive proxy's, its CPU per
        request over nginx's, and the CPU per request of a parallel run on all over none."""
        print(f"\nthroughput and CPU ratios: nginx, naive proxy, strangler, strangler with a parallel run in turn "
              f"under load, {THROUGHPUT_ROUNDS} rounds of {THROUGHPUT_SECONDS} s")
        ratios: dict[str, list[float]] = {key: [] for key in ROUND_RATIOS}
        for _ in range(THROUGHPUT_ROUNDS):
            runs = {target: self.wrk(target, target, 50, quiet=True, seconds=THROUGHPUT_SECONDS)
                    for target in ("nginx", "naive", "strangler", "parallel")}
            for key, each in ratios.items():
                each.append(ROUND_RATIOS[key](runs))
            print("  " + ", ".join(f"{key} {each[-1]:.2f}" for key, each in ratios.items()), flush=True)
        return {key: statistics.median(each) for key, each in ratios.items()}

    def https(self) -> dict[str, float]:
        """HTTPS with keep-alive: nginx and strangler each terminating TLS (the same certificate) in front of
        the same plain-HTTP upstream, in turn under load; strangler's throughput over nginx's, the median
        of the rounds."""
        print(f"\nHTTPS with keep-alive: wrk -t1 -c50, nginx and strangler terminating TLS in turn, "
              f"{THROUGHPUT_ROUNDS} rounds of {THROUGHPUT_SECONDS} s, median\n" + HEADER, flush=True)
        self.start_strangler("https", None, tls=self.certificate)
        rounds = [[self.wrk(name, target, 50, quiet=True, seconds=THROUGHPUT_SECONDS) for name, target in HTTPS]
                  for _ in range(THROUGHPUT_ROUNDS)]
        for column in zip(*rounds, strict=True):
            print(sorted(column, key=lambda run: run.rps)[len(column) // 2].row(), flush=True)
        ratio = statistics.median(strangler.rps / nginx.rps for nginx, strangler in rounds)
        return {"HTTPS keep-alive throughput: strangler / nginx": ratio}

    def light(self) -> list[Run]:
        print("\nlight load: wrk -t1 -c4, a random pause (10 ms on average) between a connection's "
              f"requests; {LIGHT_ROUNDS} rounds of {LIGHT_SECONDS} s, median\n" + HEADER, flush=True)
        return self.interleaved([(name, target, "/api/items/1") for name, target in LIGHT], LIGHT_ROUNDS,
                                LIGHT_SECONDS)

    def burst(self) -> list[Run | dict[str, float]]:
        """200 KiB JSON answers: a comparison takes milliseconds, and far more come in than the worker
        can compare. The queue must stay bounded (the rest skipped and counted), and the client's
        latency must not move: the same traffic with identical answers (nothing to compare) and with
        answers that differ (the worker busy, its queue full) must show the same latency."""
        print("\n200 KiB answers, paced as above (3 rounds, median), then a burst of answers that differ\n"
              + HEADER)
        quiet = self.interleaved(BIG, rounds=3)
        before = self.counters("parallel")
        self.wrk("strangler, 200 KiB, parallel run on all, burst: -c50", "parallel", 50, "/big")
        after = self.counters("parallel")
        return [*quiet, {key: after.get(key, 0) - before.get(key, 0) for key in after}]

    def interleaved(self, runs: list[tuple[str, str, str]], rounds: int, seconds: int | None = None) -> list[Run]:
        """Each (name, target, path) at light load in turn, `rounds` times: latency on a shared machine
        drifts, and interleaving keeps the drift out of the ratios (each taken within a round, see
        Report.paired). A row is its median round."""
        taken = {name: self.rounds.setdefault(name, []) for name, _, _ in runs}
        for _ in range(rounds):
            for name, target, path in runs:
                taken[name].append(self.wrk(name, target, 4, path, paced=True, quiet=True, seconds=seconds))
        medians = [replace(sorted(each, key=lambda run: run.p50)[len(each) // 2],
                           non_2xx=sum(run.non_2xx for run in each)) for each in taken.values()]
        for run in medians:
            print(run.row(), flush=True)
        return medians

    def memory(self) -> tuple[int, int, int]:
        """RSS (KiB) of one strangler process after 10,000 and after 200,000 requests (a parallel run
        on a fifth of them), and how many requests that was."""
        self.drive("memory", 10_000)
        early = rss(self.pids["memory"])
        served = self.drive("memory", 200_000)
        return early, rss(self.pids["memory"]), served

    def drive(self, name: str, until: int) -> int:
        url = f"http://127.0.0.1:{self.ports[name]}/api/items/1"
        while (served := int(self.counters(name).get("requests", 0))) < until:
            subprocess.run(["wrk", "-t1", "-c50", "-d2s", url], capture_output=True, check=True)
            print(f"  driving the memory instance: {served:,} requests", end="\r", flush=True)
        print(" " * 79, end="\r")
        return served

    def counters(self, name: str) -> dict[str, float]:
        text = get(f"http://127.0.0.1:{self.admins[name]}/metrics").decode()
        found = {"requests": 0.0}
        for metric, labels, value in re.findall(r"^(strangler_\w+)\{(.*)\} (\S+)$", text, re.M):
            if metric == "strangler_requests_total":
                found["requests"] += float(value)
            elif metric == "strangler_comparisons_total":
                found["compared"] = found.get("compared", 0) + float(value)
            elif metric == "strangler_shadows_skipped_total":
                reason = re.search(r'reason="(\w+)"', labels)[1]
                found[f"skipped: {reason}"] = found.get(f"skipped: {reason}", 0) + float(value)
        return found

    def wrk(self, name: str, target: str, connections: int, path: str = "/api/items/1", paced: bool = False,
            quiet: bool = False, seconds: int | None = None) -> Run:
        scheme = "https" if target in dict(HTTPS).values() else "http"
        url = f"{scheme}://127.0.0.1:{self.ports[target]}{path}"
        pace = ["-s", str(self.scratch / "pace.lua")] if paced else []
        pid = self.pids.get(target)
        cpu = cpu_seconds(pid) if pid else 0.0
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds or self.seconds}s", "--latency", *pace,
                              url], capture_output=True, text=True, check=True).stdout
        requests = int(re.search(r"(\d+) requests in", out)[1])
        cpu_us = (cpu_seconds(pid) - cpu) / requests * 1e6 if pid and requests else None
        non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        run = Run(name, float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]), ms(out, "50%"), ms(out, "99%"),
                  int(non_2xx[1]) if non_2xx else 0, cpu_us)
        if not quiet:
            print(run.row(), flush=True)
        return run

    def start(self, *command: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.running.callback(stop_process, process)
        return process

    def start_python(self, name: str, *command: str, upstream: bool = False) -> None:
        """One of the Python baselines, on a port of its own (relaying to the nginx upstream)."""
        self.ports[name] = free_port()
        ports = [str(self.ports[name]), *([str(self.ports["upstream"])] if upstream else [])]
        self.pids[name] = self.start(*command, *ports).pid
        wait_for(f"http://127.0.0.1:{self.ports[name]}/api/items/1")

    def start_nginx(self) -> None:
        """The nginx upstream (its own process, one worker) and nginx as the reference proxy (another
        process with one worker of its own): the proxy's worker must not also be the upstream, as no
        proxy under test is."""
        for name in ("upstream", "shadow", "nginx", "nginx-https"):
            self.ports[name] = free_port()
        edge = Authority(self.scratch / "certificates").issue("edge")
        self.certificate = {"cert": str(edge.cert), "key": str(edge.key)}
        self.scratch.chmod(0o755)  # nginx's workers (user nobody) read the documents it serves
        (self.scratch / "pace.lua").write_text(PACE)
        (self.scratch / "big-legacy.json").write_bytes(diffs.document(diffs.BIG, 10))
        (self.scratch / "big-new.json").write_bytes(diffs.document(diffs.BIG, 11))
        for name, template in (("upstream", UPSTREAM_SERVERS), ("nginx", PROXY_SERVER)):
            conf = self.scratch / f"{name}.nginx.conf"
            servers = template.format(scratch=self.scratch, small=SMALL, differ=DIFFER, **self.ports,
                                      **self.certificate)
            conf.write_text(NGINX.format(name=name, scratch=self.scratch, servers=servers))
            nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.running.callback(stop_process, nginx)
            wait_for(f"http://127.0.0.1:{self.ports[name]}/api/items/1")
            if name == "nginx":  # its master: cpu_seconds counts the worker under it, for both listeners
                self.pids["nginx"] = self.pids["nginx-https"] = nginx.pid

    def start_strangler(self, name: str, parallel: float | None, workers: int = 1,
                        reports: dict[str, str] | None = None, tls: dict[str, str] | None = None) -> None:
        self.ports[name], self.admins[name] = free_port(), free_port()
        path = self.strangler_config(name, parallel, reports, tls)
        process = self.start("-m", "proxy", "serve", "--config", str(path), "--log-level", "WARNING",
                             "--workers", str(workers))
        self.pids[name] = process.pid
        wait_for(f"http://127.0.0.1:{self.admins[name]}/readyz")

    def strangler_config(self, name: str, parallel: float | None, reports: dict[str, str] | None = None,
                         tls: dict[str, str] | None = None) -> Path:
        """routes.yaml for strangler `name` (on its ports) in front of the nginx upstream; `parallel`:
        the share of requests run in parallel against the shadow upstream (None: no parallel run);
        `reports`: its store (default: a SQLite file of its own); `tls`: the edge's certificate and key."""
        route = {"name": "items", "match": {"path": "/"}, "legacy": "upstream"}
        if parallel is not None:
            route |= {"new": "shadow", "parallel_run": {"enabled": True, "sample": parallel}}
        upstream = {"max_connections": 200}
        config = {"version": 1, "listen": f"127.0.0.1:{self.ports[name]}",
                  "admin": {"listen": f"127.0.0.1:{self.admins[name]}"},
                  "upstreams": {"upstream": {"url": f"http://127.0.0.1:{self.ports['upstream']}", **upstream},
                                "shadow": {"url": f"http://127.0.0.1:{self.ports['shadow']}", **upstream}},
                  "reports": reports or {"database": str(self.scratch / f"{name}.db")}, "routes": [route],
                  **({"tls": tls} if tls else {})}
        path = self.scratch / f"{name}.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        return path


def _p50_ratio(run: Run, base: Run) -> float:
    return run.p50 / base.p50


@dataclass
class Report:
    loaded: list[Run]
    throughput: dict[str, float]  # strangler's over each peer's, median of interleaved rounds
    light: list[Run]
    burst: list
    memory: tuple[int, int, int]
    compare: dict[str, float]
    rounds: dict[str, list[Run]]
    edge: dict[str, float]  # HTTPS and WebSocket throughput, strangler's over nginx's
    scale: list[Check]  # bytes, idle connections, routes (their own modules)

    def paired(self, name: str, baseline: str, measure: Callable[[Run, Run], float] = _p50_ratio) -> float:
        """`measure` of two interleaved rows, taken round by round (the two runs of a round are
        seconds apart, so the machine's drift cancels out), and its median over the rounds."""
        return statistics.median(self.by_round(name, baseline, measure))

    def by_round(self, name: str, baseline: str, measure: Callable[[Run, Run], float] = _p50_ratio) -> list[float]:
        return [measure(run, base) for run, base in zip(self.rounds[name], self.rounds[baseline], strict=True)]

    def print(self) -> None:
        print("\ncomparisons per second, one core (the comparison worker's code, in this process):")
        for name, per_second in self.compare.items():
            print(f"  {name:<50} {per_second:>10,.0f}")
        print("\nlatency ratios round by round (their median is the ratio below):")
        for name, baseline in PAIRED:
            rounds = " ".join(f"{ratio:.2f}" for ratio in self.by_round(name, baseline))
            print(f"  {name.strip()} / {baseline.strip()}: {rounds}")
        print("\nratios, and the targets of the performance issue:")
        print_checks(self.checks())
        print("\nwhere strangler's CPU goes, per request (under load):")
        for name, value in self.costs():
            print(f"  {name:<60} {value:>7.0f} µs")

    def costs(self) -> list[tuple[str, float]]:
        """Strangler's CPU per request against its floor and the naive proxy: 2x the naive
        proxy's throughput means half its CPU per request."""
        load = {r.name: r.cpu_us or 0.0 for r in self.loaded}
        one, floor = load["strangler, 1 process"], load[FLOORS[2][0]]
        return [("nginx as proxy, 1 worker (the peer)", load["nginx as proxy, 1 worker"]),
                ("aiohttp's server alone", load[FLOORS[0][0]]),
                ("strangler's edge alone", load[FLOORS[1][0]]),
                ("strangler's edge + upstream client (the floor)", floor),
                ("strangler, 1 process", one),
                ("  of which strangler's own work (over the floor)", one - floor),
                ("naive aiohttp proxy", load["naive aiohttp proxy (uvloop)"]),
                ("  half of it: what 2x the naive proxy's throughput needs", load["naive aiohttp proxy (uvloop)"] / 2)]

    def checks(self) -> list[Check]:
        load = {r.name: r for r in self.loaded}
        one, two = load["strangler, 1 process"], load["strangler, 2 workers"]
        over_nginx, over_naive = self.throughput["strangler / nginx"], self.throughput["strangler / naive"]
        cpu_nginx, cpu_shadow = (self.throughput["CPU/request strangler / nginx"],
                                 self.throughput["CPU/request parallel run / none"])
        added = self.paired("strangler, 1 process", "direct to the nginx upstream",
                            lambda run, base: run.p50 - base.p50)
        shadow, comparing, big_shadow = (self.paired(name, baseline) for name, baseline in PAIRED)
        big_off, big_same, big_on, counts = self.burst
        early, late, served = self.memory
        non_2xx = sum(r.non_2xx for r in [*self.loaded, *self.light, big_off, big_same, big_on])
        return [
            ("strangler / nginx throughput (median of rounds)", over_nginx, ">= 0.25 (at minimum 0.15)",
             over_nginx >= 0.25 or ("the minimum only" if over_nginx >= 0.15 else "MISSED")),
            ("strangler / naive proxy throughput (median of rounds)", over_naive, ">= 2", over_naive >= 2),
            ("CPU per request, strangler / nginx (median of rounds)", cpu_nginx, "<= 6", cpu_nginx <= 6),
            ("CPU per request, parallel run on all / none (rounds)", cpu_shadow, "<= 1.6", cpu_shadow <= 1.6),
            ("strangler 2 workers / 1 process", two.rps / one.rps, "> 1: scales", two.rps > one.rps),
            ("p50 added over direct, light load (ms)", added, "< 1", added < 1),
            ("p50 parallel run on / off, light load", shadow, "<= 1.2", shadow <= 1.2),
            ("200 KiB p50: comparing / nothing to compare", comparing, "<= 1.2: latency unmoved", comparing <= 1.2),
            ("200 KiB p50: parallel run on / off", big_shadow, "measured", True),
            ("200 KiB burst: compared", counts.get("compared", 0), "bounded queue:", True),
            ("200 KiB burst: skipped, comparisons queue full", counts.get("skipped: compare_busy", 0),
             "the rest skipped, counted", True),
            ("non-2xx answers, every run", non_2xx, "0", non_2xx == 0),
            (f"RSS growth, 10k -> {served // 1000}k requests (MiB)", (late - early) / 1024, "< 20",
             late - early < 20 * 1024),
            *self.new_paths(over_nginx),
            *self.scale,
        ]


    def new_paths(self, plain: float) -> list[Check]:
        """WebSocket messages at least half nginx's; HTTPS's ratio to nginx within a fifth of plain HTTP's."""
        rows: list[Check] = []
        for name, value in self.edge.items():
            if name.startswith("HTTPS"):
                rows += [(name, value, "measured", True),
                         ("  over plain HTTP's ratio to nginx", value / plain, "0.8 to 1.2", 0.8 <= value / plain <= 1.2)]
            else:
                rows.append((name, value, ">= 0.5", value >= 0.5))
        return rows


NGINX = """
worker_processes 1;
daemon off;
pid {scratch}/{name}.nginx.pid;
error_log {scratch}/{name}.nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{servers}
}}
"""
UPSTREAM_SERVERS = """
  server {{ listen 127.0.0.1:{upstream};
           location /big {{ default_type application/json; alias {scratch}/big-legacy.json; }}
           location /same {{ default_type application/json; alias {scratch}/big-legacy.json; }}
           location / {{ default_type application/json; return 200 '{small}'; }} }}
  server {{ listen 127.0.0.1:{shadow};
           location /big {{ default_type application/json; alias {scratch}/big-new.json; }}
           location /same {{ default_type application/json; alias {scratch}/big-legacy.json; }}
           location /diff {{ default_type application/json; return 200 '{differ}'; }}
           location / {{ default_type application/json; return 200 '{small}'; }} }}
"""
PROXY_SERVER = """
  upstream origin {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{ listen 127.0.0.1:{nginx};
           location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
  server {{ listen 127.0.0.1:{nginx-https} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
           ssl_protocols TLSv1.2 TLSv1.3;
           location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
"""


if __name__ == "__main__":
    raise SystemExit(main())
