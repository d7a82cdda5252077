"""Which divergences a signature keeps whole: its first, its latest, and a uniform sample of the rest
(reservoir sampling, Vitter's algorithm R), never more than `examples_per_signature` rows.

Each kept example sits in a slot: LATEST, FIRST, then the reservoir's. A divergence's place
n in its signature is the signature's count in the store, so every process of a fleet
samples one stream: batches that touch a signature take turns on its row. The store
decides (only it knows n, and a batch reads nothing back); this process only leaves out
the divergences that no n could keep, so that most are never turned into rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

LATEST, FIRST, RESERVOIR = 0, 1, 2  # slots; the reservoir's are RESERVOIR .. size - 1
DISCARD = -1  # a latest example the reservoir did not take, about to go


@dataclass(frozen=True, slots=True)
class Draw:
    """One divergence's chance: `u` says whether a full reservoir takes it, `j` which of its slots.
    (Algorithm R's index uniform over 0..m-1 that takes slot j when under the reservoir's size is,
    once it has taken one, uniform over the slots: drawn apart, no floor of u * m is needed in SQL.)"""

    u: float
    j: int


@dataclass(frozen=True, slots=True)
class Reservoir:
    """The sampling for a bound of `size` examples per signature. With one, it keeps the latest."""

    size: int

    @property
    def rest(self) -> int:
        """Slots for the uniform sample of the divergences that are neither first nor latest."""
        return max(0, self.size - 2)

    def draw(self, rng: random.Random) -> Draw:
        return Draw(rng.random(), rng.randrange(self.rest) if self.rest else 0)

    def slot(self, n: int, draw: Draw, latest: bool) -> int | None:
        """The slot of the signature's n-th divergence (1-based), which is the latest one or else has
        just been followed by another; None: not kept. The SQL in `target` says the same."""
        if n == 1 and self.size >= 2:
            return FIRST
        if latest:
            return LATEST
        m = n - 1  # its place among the rest: the second divergence is the first of them
        if n == 1 or self.rest == 0:
            return None
        if m <= self.rest:
            return RESERVOIR + m - 1
        return RESERVOIR + draw.j if draw.u * m < self.rest else None

    def may_keep(self, least: int, draw: Draw) -> bool:
        """Whether a divergence that is at least the `least`-th of its signature, and followed by
        another, could be kept whatever its place: the first, or one the reservoir could take."""
        if least <= 1:
            return self.size >= 2
        m = least - 1  # its place among the rest is at least this: the chance r / m only falls
        return m <= self.rest or draw.u * m < self.rest

    def target(self, latest: bool) -> str:
        """A derived table `chosen` with one column, `slot`: what `slot` says, computed in the store from
        the signature's count (the parameters: `arguments`)."""
        if latest:
            when = f"WHEN n = 1 THEN {FIRST if self.size >= 2 else LATEST} ELSE {LATEST}"
        else:
            when = f"WHEN n = 1 THEN {FIRST if self.size >= 2 else 'NULL'} "
            if self.rest:
                when += f"WHEN n - 1 <= {self.rest} THEN n WHEN ? * (n - 1) < {self.rest} THEN {RESERVOIR} + ? "
            when += "ELSE NULL"
        return (f"(SELECT CASE {when} END AS slot FROM "
                "(SELECT count - ? AS n FROM signatures WHERE signature = ?) AS place) AS chosen")

    def arguments(self, latest: bool, draw: Draw, after: int, signature: str) -> list[object]:
        """`target`'s parameters; `after`: how many of the signature's divergences in this batch come
        after this one (the count already holds them)."""
        chance = [draw.u, draw.j] if not latest and self.rest else []
        return [*chance, after, signature]
