"""How fast the comparator compares: JSON documents of about 2 KiB and 200 KiB, one difference each."""

from __future__ import annotations

import json
import time

from comparators.deep import DeepDiffComparator
from proxy.model import CompareSpec, Observation, Side

SMALL, BIG = 33, 3140  # items in a document of 2 KiB, of 200 KiB


def document(items: int, price: int) -> bytes:
    return json.dumps({"order": 7, "items": [{"sku": f"SKU-{n}", "name": f"item number {n}", "qty": n % 5,
                                              "price": price if n == items // 2 else 10.5} for n in range(items)]},
                      separators=(",", ":")).encode()


def rate(items: int, seconds: float = 2.0) -> tuple[int, float]:
    """(document size in bytes, comparisons per second) on this process's core."""
    legacy, new = document(items, 10), document(items, 11)
    pair = [Observation(side, 200, (("Content-Type", "application/json"),), body, 0.0)
            for side, body in ((Side.LEGACY, legacy), (Side.NEW, new))]
    comparator, spec, done = DeepDiffComparator(), CompareSpec(), 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        assert len(comparator.compare(*pair, spec).differences) == 1
        done += 1
    return len(legacy), done / (time.perf_counter() - started)


def measure() -> dict[str, float]:
    found = {}
    for items in (SMALL, BIG):
        size, per_second = rate(items)
        found[f"JSON of {size / 1024:.0f} KiB, one difference"] = per_second
    return found
