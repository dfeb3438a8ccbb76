"""Stopping the gateway's own tasks within a bound, so that a stop always ends.

A single ``Task.cancel()`` can be lost: on Python 3.11, ``asyncio.wait_for`` returns the
result of what it waits for when that finished in the same turn of the loop as the
cancel, and a loop around it (a background refresh) goes on as if nothing had been
asked. The gateway's own waits use ``asyncio.timeout`` instead, which does not lose one;
a task still running is cancelled again all the same, until a bound, and one that
outlives the bound is left to the loop's own end rather than holding up the stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["STOP_S", "cancel_and_wait"]

STOP_S = 5.0
"""How long a stop waits for the tasks it cancels."""
_AGAIN_S = 0.1
"""How often a task that is still running is cancelled again."""


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any] | None], timeout_s: float = STOP_S
) -> bool:
    """Cancel ``tasks`` (None: none) and wait until they end, at most ``timeout_s``,
    cancelling again those still running; True when all ended."""
    pending = {task for task in tasks if task is not None and not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            return False
        done, pending = await asyncio.wait(pending, timeout=min(left, _AGAIN_S))
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: a fault of a task that stops is not news
    return True
