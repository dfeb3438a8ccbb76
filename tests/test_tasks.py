"""Stopping the gateway's own tasks within a bound (appliance/tasks.py)."""

from __future__ import annotations

import asyncio
import contextlib

from appliance.tasks import cancel_and_wait


def test_a_task_that_lost_a_cancel_is_cancelled_again() -> None:
    """A loop that goes on after one cancel (as a refresh behind Python 3.11's
    ``asyncio.wait_for`` did) ends with the next."""

    async def story() -> None:
        lost = 0

        async def refresh() -> None:
            nonlocal lost
            while True:
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    if lost:
                        raise
                    lost += 1  # this one is lost

        task = asyncio.get_running_loop().create_task(refresh())
        await asyncio.sleep(0)
        assert await cancel_and_wait([task, None], timeout_s=2) is True
        assert task.cancelled() and lost == 1

    asyncio.run(story())


def test_a_task_that_outlives_the_bound_is_left_and_said() -> None:
    async def story() -> None:
        stop = False

        async def stubborn() -> None:
            while not stop:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(60)

        task = asyncio.get_running_loop().create_task(stubborn())
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await cancel_and_wait([task], timeout_s=0.3) is False
        assert loop.time() - started < 1 and not task.done()
        stop = True
        task.cancel()
        await task

    asyncio.run(story())


def test_a_task_that_failed_or_ended_is_not_waited_for() -> None:
    async def story() -> None:
        async def fails() -> None:
            raise RuntimeError("a fault")

        task = asyncio.get_running_loop().create_task(fails())
        await asyncio.sleep(0)
        assert await cancel_and_wait([task]) is True
        assert await cancel_and_wait([]) is True

    asyncio.run(story())
