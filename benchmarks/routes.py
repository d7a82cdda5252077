"""Routes at scale: what a request costs with 1,000 routes against 10, and `strangler check` on 1,000.

    python -m benchmarks.routes [--rounds N]

Two strangler processes (one each) in front of the same nginx upstream, one with 10 routes and
one with 1,000 (benchmarks/routefile.py: prefixes, methods, hosts and headers mixed), and
nginx with one worker proxying to the same upstream. wrk -t1 -c50 asks each in turn, round by
round, for a path that only the last route of either file takes; a round's ratios are taken
within it (the machine drifts between rounds) and the verdicts go by their medians: CPU per
request (from /proc), the cost a route table adds, and requests per second. Then
`strangler check` on the 1,000 routes, as a person runs it: wall time, best of 5.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks.measure import Check, cpu_seconds, install_missing, machine, ms, print_checks
from benchmarks.routefile import LAST_HEADERS, LAST_REQUEST, routes_file
from benchmarks.run import HEADER, Bench, Run

COUNTS = (10, 1000)
ROUNDS, ROUND_SECONDS = 9, 2
CHECK_RUNS = 5
MOST_COST, MOST_CHECK = 1.1, 1.0  # the targets: 1,000 routes / 10 routes, CPU per request; check, seconds

LABELS = {"nginx": "nginx as proxy, 1 worker", "routes-10": "strangler, 10 routes",
          "routes-1000": "strangler, 1,000 routes"}


class RoutesBench(Bench):
    def __init__(self, scratch: Path, running: ExitStack, rounds: int = ROUNDS) -> None:
        scratch.mkdir(exist_ok=True)  # run.py's benchmark gives it a folder of its own
        super().__init__(scratch, running, ROUND_SECONDS)
        self.rounds_taken = rounds

    def run(self) -> list[Check]:
        """Both rows under load and the check's time, printed; the rows for the final list of targets."""
        self.start_nginx()
        for count in COUNTS:
            self.start_strangler(f"routes-{count}", None)
        print(f"\nroutes at scale: wrk -t1 -c50 for {LAST_REQUEST} (the last route of each file), nginx and "
              f"the two in turn, {self.rounds_taken} rounds of {ROUND_SECONDS} s, median\n{HEADER} {'/ nginx':>8}", flush=True)
        rounds = [self.round(n) for n in range(self.rounds_taken)]
        for name in ("nginx", *(f"routes-{count}" for count in COUNTS)):
            median = _median_run([r[name] for r in rounds])
            over = statistics.median(r[name].rps / r["nginx"].rps for r in rounds)
            print(f"{median.row()} {over:>8.2f}", flush=True)
        few, many = (f"routes-{count}" for count in COUNTS)
        cost = statistics.median(r[many].cpu_us / r[few].cpu_us for r in rounds)
        speed = statistics.median(r[many].rps / r[few].rps for r in rounds)
        print("  CPU per request, 1,000 routes / 10, round by round: "
              + " ".join(f"{r[many].cpu_us / r[few].cpu_us:.2f}" for r in rounds))
        taken = check_seconds(self.strangler_config(many, None))
        return [("1,000 routes / 10: CPU per request (median)", cost, f"<= {MOST_COST}", cost <= MOST_COST),
                ("1,000 routes / 10: requests per second (median)", speed, "measured", True),
                ("strangler check, 1,000 routes (s, best of 5)", taken, f"< {MOST_CHECK:.0f}", taken < MOST_CHECK)]

    def round(self, n: int) -> dict[str, Run]:
        """nginx, then the two route tables, in an order that alternates from round to round."""
        order = [f"routes-{count}" for count in COUNTS]
        if n % 2:
            order.reverse()
        return {name: self.last_route(name) for name in ("nginx", *order)}

    def last_route(self, name: str) -> Run:
        """wrk -t1 -c50 for one round on the last route's path, with the headers it asks for."""
        pid = self.pids[name]
        before = cpu_seconds(pid)
        headers = [arg for name_value in LAST_HEADERS.items() for arg in ("-H", "%s: %s" % name_value)]
        out = subprocess.run(["wrk", "-t1", "-c50", f"-d{ROUND_SECONDS}s", "--latency", *headers,
                              f"http://127.0.0.1:{self.ports[name]}{LAST_REQUEST}"],
                             capture_output=True, text=True, check=True).stdout
        requests = int(re.search(r"(\d+) requests in", out)[1])
        non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        return Run(LABELS[name], float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]), ms(out, "50%"), ms(out, "99%"),
                   int(non_2xx[1]) if non_2xx else 0, (cpu_seconds(pid) - before) / max(requests, 1) * 1e6)

    def strangler_config(self, name: str, parallel: float | None, reports: dict[str, str] | None = None,
                         tls: dict[str, str] | None = None) -> Path:
        """routes.yaml for `routes-COUNT`: the generated file of COUNT routes, on its ports."""
        path = self.scratch / f"{name}.yaml"
        path.write_text(routes_file(int(name.rpartition("-")[2]), f"127.0.0.1:{self.ports[name]}",
                                    f"127.0.0.1:{self.admins[name]}", f"http://127.0.0.1:{self.ports['upstream']}",
                                    str(self.scratch / f"{name}.db")))
        return path


def check_seconds(path: Path) -> float:
    """`strangler check` on `path`, as a person runs it (a new interpreter each time): the best of 5."""
    taken = []
    for _ in range(CHECK_RUNS):
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "proxy", "check", "--config", str(path)], capture_output=True,
                              text=True, check=True)
        taken.append(time.perf_counter() - began)
    print(f"  strangler check, 1,000 routes: {done.stdout.strip()!r} in " + ", ".join(f"{t:.2f}" for t in taken)
          + " s", flush=True)
    return min(taken)


def _median_run(runs: list[Run]) -> Run:
    """The round whose requests per second are the median; its CPU per request the median of all rounds."""
    middle = sorted(runs, key=lambda run: run.rps)[len(runs) // 2]
    return Run(middle.name, middle.rps, middle.p50, middle.p99, sum(run.non_2xx for run in runs),
               statistics.median(run.cpu_us or 0.0 for run in runs))


def report(checks: list[Check]) -> None:
    print("\nroutes at scale, against the targets:")
    print_checks(checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds under load (default {ROUNDS})")
    args = parser.parse_args()
    install_missing("nginx", "wrk")
    with tempfile.TemporaryDirectory(prefix="strangler-routes-bench-") as scratch, ExitStack() as running:
        print(f"routes at scale, {time.strftime('%Y-%m-%d %H:%M %Z')}, {machine()}")
        report(RoutesBench(Path(scratch), running, args.rounds).run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
