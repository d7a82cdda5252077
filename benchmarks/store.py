"""The divergence store on PostgreSQL beside SQLite, in one run: the client's latency, and what the store takes.

    python -m benchmarks.store [--seconds S]

Two strangler processes in front of the same nginx upstream, a parallel run on every
request, every answer diverging from its shadow's (the store busiest): one writes a SQLite
file, the other a PostgreSQL database on this machine (a throwaway cluster, as the tests
make). The client's p50 is taken at light load, the two in turn round by round, and under
load; the ratio is PostgreSQL over SQLite, round by round, and its median. Then each
store's writer alone is fed as fast as it takes: divergences (three statements each,
over 50 signatures) and rollout evidence (rows of per-second tallies), in rows a second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from benchmarks.measure import get, install_missing
from benchmarks.run import HEADER, Bench, Run
from proxy.model import ReportsSpec, Side
from proxy.model.evidence import Answers, EvidenceBatch
from reports.db import Where
from reports.store import StoreSink
from tests.servers import Postgres, install_postgres
from tests.test_divergence_store import divergence

ROUNDS, ROUND_SECONDS = 15, 2
PASSWORD_ENV, PASSWORD = "BENCH_STORE_PASSWORD", "bench-only"
DIVERGENCES, EVIDENCE_BATCHES = 20_000, 400
ROWS_PER_BATCH = 10 + 20 + 200  # 10 routes: a comparison row each; 2 sides: an answers row and 10 latency bins


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of the run under load (default 5)")
    args = parser.parse_args()
    install_missing("nginx", "wrk")
    install_postgres()
    os.environ[PASSWORD_ENV] = PASSWORD
    with tempfile.TemporaryDirectory(prefix="strangler-store-bench-") as scratch, ExitStack() as running:
        postgres = Postgres()
        postgres.start()
        running.callback(postgres.stop)
        postgres.psql(f"CREATE ROLE bench LOGIN PASSWORD '{PASSWORD}'", "CREATE DATABASE bench OWNER bench")
        store = Where(postgres.url("bench", "bench"), PASSWORD_ENV)
        bench = StoreBench(Path(scratch), running, args.seconds, store)
        return bench.run()


class StoreBench(Bench):
    def __init__(self, scratch: Path, running: ExitStack, seconds: int, store: Where) -> None:
        super().__init__(scratch, running, seconds)
        self.store = store

    def run(self) -> int:
        self.start_nginx()
        self.start_strangler("sqlite", 1.0)
        self.start_strangler("postgresql", 1.0, reports={"database": self.store.target,
                                                         "password_env": PASSWORD_ENV})
        print(f"the divergence store, {time.strftime('%Y-%m-%d %H:%M %Z')}\n")
        print(f"light load, every request diverging: {ROUNDS} rounds of {ROUND_SECONDS} s, median\n{HEADER}")
        self.interleaved([(f"strangler, parallel run on all, {name}", name, "/diff")
                          for name in ("sqlite", "postgresql")], ROUNDS, ROUND_SECONDS)
        print(f"\nunder load: wrk -t1 -c50, every request diverging\n{HEADER}")
        loaded = [self.wrk(f"strangler, parallel run on all, {name}, -c50", name, 50, "/diff")
                  for name in ("sqlite", "postgresql")]
        for name in ("sqlite", "postgresql"):
            counters = self.counters(name)
            print(f"  {name}: {counters['requests']:,.0f} requests in all, {counters.get('compared', 0):,.0f} compared, "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in counters.items() if k.startswith("skipped")))
        dropped = {name: self.dropped(name) for name in ("sqlite", "postgresql")}
        print("\nthe writer alone, fed as fast as it takes:")
        takes = {name: writer_rates(where) for name, where in (
            ("sqlite", Where(str(self.scratch / "writer.db"))), ("postgresql", self.store))}
        self.report(loaded, dropped, takes)
        return 0

    def dropped(self, name: str) -> float:
        """Evidence the instance dropped, its queue full (by either reason)."""
        text = get(f"http://127.0.0.1:{self.admins[name]}/metrics").decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("strangler_report_problems_total{") and "write_failed" not in line)

    def report(self, loaded: list[Run], dropped: dict[str, float], takes: dict[str, tuple[float, float, float]]) -> None:
        rounds = [pg.p50 / lite.p50 for lite, pg in zip(*self.rounds.values(), strict=True)]
        ratio = statistics.median(rounds)
        print("\np50 PostgreSQL / SQLite, light load, round by round: " + " ".join(f"{r:.2f}" for r in rounds))
        print(f"  median {ratio:.2f}   target <= 1.10   {'ok' if ratio <= 1.10 else 'MISSED'}")
        print(f"p50 PostgreSQL / SQLite, under load: {loaded[1].p50 / loaded[0].p50:.2f}")
        print(f"evidence dropped under load (buffer full): SQLite {dropped['sqlite']:.0f}, "
              f"PostgreSQL {dropped['postgresql']:.0f}")
        sqlite, postgres = takes["sqlite"], takes["postgresql"]
        print("what the writer takes, PostgreSQL / SQLite: " + ", ".join(
            f"{what} {p / s:.2f}" for what, p, s in zip(("divergences", "each kept", "evidence rows"), postgres,
                                                        sqlite, strict=True)))


def writer_rates(where: Where) -> tuple[float, float, float]:
    """What `where`'s writer takes a second: divergences over 50 signatures (most only counted, as real
    traffic's are), divergences each of its own signature (each kept whole: the worst case), and
    evidence rows."""
    spec = ReportsSpec(where.target, password_env=where.password_env)
    sink = StoreSink(spec, queue_size=DIVERGENCES + EVIDENCE_BATCHES + 10)
    sink.start()
    sink.flush(timeout=30)  # connected and set up before the clock starts
    rates = []
    for signatures in (50, DIVERGENCES):
        began = time.perf_counter()
        for n in range(DIVERGENCES):
            sink.record(divergence(signature=f"sig-{signatures}-{n % signatures}"))
        sink.flush(timeout=600)
        rates.append(DIVERGENCES / (time.perf_counter() - began))
    began, now = time.perf_counter(), time.time()
    for n in range(EVIDENCE_BATCHES):
        sink.evidence(_evidence(now + n))
    sink.flush(timeout=600)
    rates.append(EVIDENCE_BATCHES * ROWS_PER_BATCH / (time.perf_counter() - began))
    sink.close()
    print(f"  {where.engine:<11} {rates[0]:>9,.0f} divergences/s over 50 signatures, {rates[1]:>7,.0f}/s each "
          f"kept whole, {rates[2]:>9,.0f} evidence rows/s", flush=True)
    return rates[0], rates[1], rates[2]


def _evidence(at: float) -> EvidenceBatch:
    answers = Answers(100, 1, Counter({index: 10 for index in range(10)}))
    return EvidenceBatch(at, tuple((f"route-{r}", "", 100) for r in range(10)),
                         tuple((f"route-{r}", side, answers) for r in range(10) for side in Side))


if __name__ == "__main__":
    raise SystemExit(main())
