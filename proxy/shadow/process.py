"""Comparisons in a process of their own, so a large diff never holds the event loop (or the GIL) of the proxy.

The process runs at the lowest CPU priority: on a busy machine the proxy's requests come
first and comparisons get what is left; those that cannot wait are skipped and counted
(`compare_busy`), never queued.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from comparators.base import Comparator
from proxy.children import die_with_parent
from proxy.model import CompareSpec, Comparison, Observation


class ComparisonProcess:
    """Calls `comparator.compare` in one child process, started on first use and replaced if it dies."""

    def __init__(self, comparator: Comparator) -> None:
        self.comparator = comparator
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the process now rather than at the first comparison: it takes about a second,
        and comparisons arriving meanwhile would pile up."""
        self._executor().submit(int)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the proxy has threads (the SDK's, the store's) a fork would copy mid-step
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_yield_cpu)
        return self._pool

    async def __call__(self, legacy: Observation, new: Observation, spec: CompareSpec) -> Comparison:
        self._executor()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self.comparator.compare,
                                                                    legacy, new, spec)
        except BrokenProcessPool:
            self._pool = None  # the next comparison starts a fresh process
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _yield_cpu() -> None:
    """In the child: the lowest priority there is (nice 19), below the proxy and its neighbours; and an
    end with the proxy process, even one killed outright (it would otherwise wait on its queue forever)."""
    die_with_parent()
    os.nice(19 - os.nice(0))
