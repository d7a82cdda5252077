"""A deadline for the running task: what asyncio.timeout does, at a fraction of its cost.

Every proxied exchange needs one, so it sits on the hot path: one loop timer and a plain
`with` block, no state machine and no coroutine frames. When the timer fires the task is
cancelled; leaving the block turns that cancellation into TimeoutError, unless someone
else also cancelled the task (the client went away), whose cancellation then stands.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    __slots__ = ("_task", "_handle", "_cancelling", "expired")

    def __init__(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "a Deadline bounds the running task"
        self._task = task
        self._cancelling = task.cancelling()
        self.expired = False
        self._handle = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._handle.cancel()
        if self.expired and kind is asyncio.CancelledError and self._task.uncancel() <= self._cancelling:
            raise TimeoutError from exc
