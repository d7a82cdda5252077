"""Deadlines: a task past its time gets TimeoutError, at most a tick late; anyone else's cancellation stands."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.wire.deadline import TICK, Deadline


async def test_a_task_past_its_deadline_gets_timeout_error_no_earlier_and_at_most_a_tick_late() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        with Deadline(0.05):
            await asyncio.sleep(1)
    assert 0.05 <= time.monotonic() - started < 0.05 + TICK + 0.05


async def test_given_the_running_loop_it_bounds_the_running_task_the_same() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        with Deadline(0.05, asyncio.get_running_loop()):
            await asyncio.sleep(1)
    assert 0.05 <= time.monotonic() - started < 0.05 + TICK + 0.05


async def test_a_block_that_ends_in_time_is_left_alone() -> None:
    async def ends_in_time() -> Deadline:
        with Deadline(0.02) as deadline:
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)  # past the deadline: its timer fires and must find nothing to cancel
        return deadline

    task = asyncio.create_task(ends_in_time())
    await asyncio.wait({task})
    assert not task.cancelled(), "the deadline's timer cancelled its task after the block had ended"
    assert task.result().expired is False


async def test_deadlines_due_in_the_same_tick_all_fire() -> None:
    async def bounded() -> str:
        try:
            with Deadline(0.03):
                await asyncio.sleep(1)
        except TimeoutError:
            return "timed out"
        return "finished"

    assert await asyncio.gather(*(bounded() for _ in range(20))) == ["timed out"] * 20


async def test_one_that_finishes_does_not_spare_or_doom_its_neighbours() -> None:
    async def bounded(seconds: float) -> str:
        try:
            with Deadline(0.05):
                await asyncio.sleep(seconds)
        except TimeoutError:
            return "timed out"
        return "finished"

    assert await asyncio.gather(bounded(0), bounded(1), bounded(0.01)) == ["finished", "timed out", "finished"]


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    async def bounded() -> None:
        with Deadline(0.02):
            await asyncio.sleep(1)

    task = asyncio.create_task(bounded())
    await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_client_leaving_as_the_deadline_fires_is_still_a_cancellation() -> None:
    """Both in the same step of the loop: the deadline's cancel and the client's. The client's wins:
    nobody is left to answer."""
    running: list[Deadline] = []

    async def bounded() -> None:
        with Deadline(10) as deadline:
            running.append(deadline)
            await asyncio.sleep(1)

    task = asyncio.create_task(bounded())
    await asyncio.sleep(0)
    running[0]._expire()  # what its tick does when it fires
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
