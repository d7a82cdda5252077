"""Reservoir sampling of a signature's examples (reports/reservoir.py), as pure logic: the first and the
latest always kept, the bound never exceeded, the rest sampled uniformly (a fixed seed: deterministic)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from reports.reservoir import FIRST, LATEST, Reservoir


def sample(reservoir: Reservoir, batches: list[int], rng: random.Random) -> dict[int, int]:
    """Slot -> divergence number, after writing `batches` of so many divergences each: the steps and the
    draws of reports/writes.py, in its order, without the store."""
    slots: dict[int, int] = {}
    n = 0
    for size in batches:
        follow = reservoir.draw(rng)
        if LATEST in slots:  # the latest so far, now followed: into the reservoir, or gone
            latest = slots.pop(LATEST)
            place(slots, reservoir.slot(latest, follow, latest=False), latest)
        for index in range(size):
            n += 1
            place(slots, reservoir.slot(n, reservoir.draw(rng), latest=index == size - 1), n)
    assert all(0 <= slot < reservoir.size for slot in slots)
    return slots


def place(slots: dict[int, int], slot: int | None, n: int) -> None:
    if slot is not None:
        slots[slot] = n


@pytest.mark.parametrize("size", [1, 2, 3, 5, 10])
@pytest.mark.parametrize("batches", [[1] * 40, [7, 1, 13, 2, 30], [100], [1, 1]])
def test_first_and_latest_always_kept_and_the_bound_never_exceeded(size, batches):
    rng = random.Random(size * 1000 + len(batches))
    slots = sample(Reservoir(size), batches, rng)
    total = sum(batches)
    assert len(slots) == min(size, total)
    kept = set(slots.values())
    assert total in kept  # the latest
    if size >= 2:
        assert 1 in kept and slots[FIRST] == 1
    assert len(kept) == len(slots)  # no divergence in two slots


def test_the_first_examples_fill_the_reservoir_in_order():
    slots = sample(Reservoir(5), [1, 1, 1, 1, 1], random.Random(1))
    assert sorted(slots.values()) == [1, 2, 3, 4, 5]


def test_the_rest_are_sampled_uniformly():
    """Over many streams of 60 divergences, each of the 58 neither first nor latest is kept about as
    often as every other: a chi-square test against r / 58 each, at a fixed seed."""
    reservoir, streams, length = Reservoir(5), 4000, 60
    rng, seen = random.Random(20260101), Counter()
    for stream in range(streams):
        batches = [1] * length if stream % 2 else [length // 3] * 3  # batched or not, the same sampling
        slots = sample(reservoir, batches, rng)
        seen.update(n for slot, n in slots.items() if slot not in (FIRST, LATEST))
    expected = streams * reservoir.rest / (length - 2)
    chi2 = sum((seen[n] - expected) ** 2 / expected for n in range(2, length))
    assert set(seen) == set(range(2, length))
    assert chi2 < 90.0  # 57 degrees of freedom: the 0.999 quantile is about 95


def test_no_count_could_keep_what_may_keep_leaves_out():
    """The writer skips a divergence when `may_keep` says no for the least count it can have: then no
    larger count keeps it either."""
    reservoir, rng = Reservoir(5), random.Random(3)
    for _ in range(2000):
        draw, least = reservoir.draw(rng), rng.randrange(1, 500)
        if not reservoir.may_keep(least, draw):
            assert all(reservoir.slot(n, draw, latest=False) is None for n in range(least, least + 300))


def test_a_bound_of_one_keeps_the_latest_and_none_keeps_nothing():
    assert sample(Reservoir(1), [3, 4], random.Random(0)) == {LATEST: 7}
    assert Reservoir(0).rest == 0
