"""The review console over a large store: how long /reports takes to render, beside a small store, in one run.

    python -m benchmarks.report [--divergences N]

Fills two SQLite stores through the proxy's own writer (reports/store.py): a large one
(100,000 divergences by default, over 10 routes and 300 signatures, spread over the last
14 days, with five times as many comparisons) and a small one (1,000), then starts one
`strangler serve` on each and fetches its admin /reports page, the two in turn, round by
round. The issue's target: the large store's page in under a second.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks.measure import get, machine, wait_for
from proxy.model import ReportsSpec
from reports.store import StoreSink
from tests.helpers import free_port
from tests.servers import stop_process
from tests.test_divergence_store import divergence

ROUNDS = 7
ROUTES, SIGNATURES, DAYS = 10, 300, 14
TARGET_SECONDS = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--divergences", type=int, default=100_000, help="the large store's (default 100,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="strangler-report-bench-") as scratch, ExitStack() as running:
        folder = Path(scratch)
        sizes = {"large": args.divergences, "small": 1_000}
        admins = {name: serve(folder, name, fill(folder / f"{name}.db", count), running)
                  for name, count in sizes.items()}
        print(f"the review console, {time.strftime('%Y-%m-%d %H:%M %Z')}, {machine()}\n")
        taken: dict[str, list[float]] = {name: [] for name in sizes}
        for _ in range(ROUNDS):
            for name, port in admins.items():
                taken[name].append(fetch(f"http://127.0.0.1:{port}/reports"))
        for name, count in sizes.items():
            print(f"  /reports over {count:>9,} divergences: median {statistics.median(taken[name]) * 1000:7.0f} ms"
                  f"   (rounds: {', '.join(f'{s * 1000:.0f}' for s in taken[name])})")
        large = statistics.median(taken["large"])
        ratio = statistics.median(big / small for big, small in zip(taken["large"], taken["small"], strict=True))
        print(f"\n  large / small store, round by round, median: {ratio:.2f}")
        print(f"  large store's page: {large:.2f} s   target < {TARGET_SECONDS:.0f} s   "
              f"{'ok' if large < TARGET_SECONDS else 'MISSED'}")
    return 0


def fill(path: Path, count: int) -> Path:
    """A store holding `count` divergences and five times as many comparisons, written by the proxy's writer."""
    rng, now = random.Random(7), time.time()
    sink = StoreSink(ReportsSpec(str(path)), queue_size=count * 6 + 10)
    sink.start()
    began = time.perf_counter()
    for n in range(count):
        at = now - rng.random() ** 3 * DAYS * 86400  # most of them recent, as a rollout's are
        route = f"route-{n % ROUTES}"
        sink.record(divergence(route, f"$.field{n % 7}", at, signature=f"sig-{n % SIGNATURES:03d}"))
        for compared in range(5):
            sink.count(route, compared == 0, at)
        if n % 10_000 == 0:
            print(f"  filling {path.name}: {n:,} of {count:,} divergences", end="\r", file=sys.stderr, flush=True)
    sink.flush(timeout=600)
    sink.close()
    print(f"  filled {path.name}: {count:,} divergences in {time.perf_counter() - began:.0f} s" + " " * 20,
          file=sys.stderr, flush=True)
    return path


def serve(folder: Path, name: str, database: Path, running: ExitStack) -> int:
    """`strangler serve` with `database` as its store; its admin port."""
    port, admin = free_port(), free_port()
    config = {"version": 1, "listen": f"127.0.0.1:{port}", "admin": {"listen": f"127.0.0.1:{admin}"},
              "upstreams": {"legacy": {"url": "http://127.0.0.1:9"}, "new": {"url": "http://127.0.0.1:9"}},
              "reports": {"database": str(database)},
              "routes": [{"name": f"route-{r}", "match": {"path": f"/r{r}"}, "legacy": "legacy", "new": "new",
                          "parallel_run": {"enabled": True}} for r in range(ROUTES)]}
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    process = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(path), "--log-level",
                                "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    running.callback(stop_process, process)
    wait_for(f"http://127.0.0.1:{admin}/readyz")
    return admin


def fetch(url: str) -> float:
    began = time.perf_counter()
    get(url, timeout=120)
    return time.perf_counter() - began


if __name__ == "__main__":
    raise SystemExit(main())
