"""A deadline for the running task: what asyncio.timeout does, at a fraction of its cost.

Every proxied exchange needs one, so it sits on the hot path. A loop timer of its own
for each (what asyncio.timeout sets up) cost more than the rest of the request's
bookkeeping; here the deadlines that fall due in the same TICK share one timer, and a
deadline costs a set insertion. It fires up to TICK late, never early. When it fires
the task is cancelled; leaving the block turns that cancellation into TimeoutError,
unless someone else also cancelled the task (the client went away), whose cancellation
then stands.

A deadline bounds an upstream's time, not the client's: while the exchange waits on the
client (for more of its body, or for room in its socket) the deadline is held, and moves
on by the time the client took (`hold`, `release`).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

TICK = 0.01  # seconds: how late a deadline may fire
TICKS_KEPT = 4096  # beyond this many pending ticks, those of loops that closed before they fired go

_due: dict[int, _Tick] = {}  # pending ticks by number (time / TICK)


class Deadline:
    __slots__ = ("_task", "_tick", "_cancelling", "_due", "_holds", "_held_at", "_done", "expired", "client_seconds")

    def __init__(self, seconds: float, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """`loop`: the running loop, when the caller has it at hand (on Python 3.11 asyncio finds it with
        a system call, getpid, every time)."""
        task = asyncio.current_task(loop)
        assert task is not None, "a Deadline bounds the running task"
        self._task = task
        self._cancelling = task.cancelling()
        self.expired = self._done = False
        self._holds, self._held_at, self.client_seconds = 0, 0.0, 0.0  # client_seconds: time held, in all
        self._due = task.get_loop().time() + seconds
        self._arm()

    def _arm(self) -> None:
        loop = self._task.get_loop()
        number = int(self._due / TICK) + 1  # the next tick boundary: never early
        tick = _due.get(number)
        if tick is None or tick.loop is not loop:
            tick = _Tick.due(loop, number)
        tick.add(self)
        self._tick = tick

    def hold(self) -> None:
        """The exchange waits on the client from now: the deadline stops (holds nest)."""
        self._holds += 1
        if self._holds == 1:
            self._tick.discard(self)
            self._held_at = self._task.get_loop().time()

    def release(self) -> None:
        """The wait on the client is over: the deadline moves on by the time it took."""
        self._holds -= 1
        if self._holds == 0:
            waited = self._task.get_loop().time() - self._held_at
            self.client_seconds += waited
            self._due += waited
            if not (self.expired or self._done):
                self._arm()

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done = True
        self._tick.discard(self)
        if self.expired and kind is asyncio.CancelledError and self._task.uncancel() <= self._cancelling:
            raise TimeoutError from exc


class _Tick(set[Deadline]):
    """The deadlines due at one tick, and the one timer that expires those still running then."""

    def __init__(self, loop: asyncio.AbstractEventLoop, number: int) -> None:
        super().__init__()
        self.loop, self.number = loop, number
        loop.call_at(number * TICK, self._fire)

    @classmethod
    def due(cls, loop: asyncio.AbstractEventLoop, number: int) -> _Tick:
        if len(_due) >= TICKS_KEPT:
            _forget_stale(int(loop.time() / TICK))
        tick = _due[number] = cls(loop, number)
        return tick

    def _fire(self) -> None:
        if _due.get(self.number) is self:
            del _due[self.number]
        for deadline in self:
            deadline._expire()
        self.clear()


def _forget_stale(now: int) -> None:
    """Ticks whose time has passed have fired, unless their loop closed first: those never will."""
    for number in [number for number in _due if number < now]:
        del _due[number]
