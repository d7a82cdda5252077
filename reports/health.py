"""How the store writer is faring: reached or not, since when, and how long to wait before trying again.

The writer thread changes it; /status and the rollout plans read it (plain attribute reads).
An outage is one span from the first failed write to the first good one: it is logged once
at each end, and reconnecting backs off exponentially within it, with jitter so that a
fleet does not come back in step.
"""

from __future__ import annotations

import random
import time
from typing import Any

from proxy.model import StoreState

LAG_SECONDS = 5.0  # evidence waiting longer than this, with the store reachable, is lagging


class Health:
    def __init__(self, reached: bool = False) -> None:
        self.reached = reached  # a write (or the set-up) succeeded at least once
        self.down_since: float | None = None
        self.problem: str | None = None
        self.failures = 0  # in a row, within the current outage
        self.oldest_waiting: float | None = None  # when the oldest batch not yet written was made

    def failed(self, problem: str) -> bool:
        """Note a failed attempt; True when it starts an outage."""
        first = self.down_since is None
        if first:
            self.down_since = time.time()
        self.problem, self.failures = problem, self.failures + 1
        return first

    def succeeded(self) -> float | None:
        """Note a good attempt; when it ends an outage, when that outage began."""
        down, self.reached = self.down_since, True
        self.down_since, self.problem, self.failures = None, None, 0
        return down

    def backoff(self, first: float, most: float) -> float:
        """Seconds to wait before the next attempt: doubling from `first` up to `most`, jittered."""
        wait = min(most, first * 2 ** max(0, self.failures - 1))
        return wait * (0.5 + random.random() / 2)

    @property
    def state(self) -> StoreState:
        if self.down_since is not None:
            return StoreState.DOWN
        if not self.reached:
            return StoreState.CONNECTING
        if self.oldest_waiting is not None and time.time() - self.oldest_waiting > LAG_SECONDS:
            return StoreState.LAGGING
        return StoreState.CONNECTED

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state.value, "down_since": self.down_since, "problem": self.problem}
