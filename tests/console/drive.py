"""Driving a console with Pilot from plain (synchronous) tests: ``drive`` runs a
scenario against the app in its own event loop; ``Run`` presses keys and waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot

from tui.app import ConsoleApp

__all__ = ["Run", "drive"]


class Run:
    """A console being driven: its app, its pilot, and how often it rang the bell."""

    def __init__(self, app: ConsoleApp, pilot: Pilot[Any], bells: list[None]) -> None:
        self.app = app
        self.pilot = pilot
        self._bells = bells

    @property
    def bells(self) -> int:
        return len(self._bells)

    async def press(self, *keys: str) -> None:
        """Press ``keys``, then let the console handle them and redraw."""
        await self.pilot.press(*keys)
        await self.settle()

    async def settle(self) -> None:
        await self.pilot.pause()
        self.app.redraw()
        await self.pilot.pause()

    async def until(self, what: str, check: Callable[[], object], timeout_s: float = 15) -> None:
        """Wait (redrawing) until ``check()`` is true; AssertionError naming ``what``."""
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await self.pilot.pause(0.05)
        await self.settle()

    def notes(self) -> list[str]:
        return [n.message for n in self.app._notifications]


def drive(
    app: ConsoleApp,
    scenario: Callable[[Run], Awaitable[None]],
    size: tuple[int, int] = (100, 30),
    notifications: bool = False,
) -> None:
    """Run ``scenario`` against ``app`` (headless, ``size``) in a new event loop; with
    ``notifications``, its notices are shown as on a terminal (Pilot hides them)."""

    async def main() -> None:
        bells: list[None] = []
        app.bell = lambda: bells.append(None)  # type: ignore[method-assign]
        async with app.run_test(size=size, notifications=notifications) as pilot:
            run = Run(app, pilot, bells)
            await run.settle()
            await scenario(run)

    asyncio.run(main())
