"""Replay: a recorded session shown again from the ledger file, as the agent lived it:
statements, refusals, approvals and the rows that came back (masked as they were).
``space`` plays and pauses, ``n`` steps, ``+``/``-`` change the speed."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import RichLog, Static

from appliance.replay import Step, time_of
from tui.model import Change, printable
from tui.screens.base import ConsoleScreen

__all__ = ["ReplayScreen"]

SPEEDS = (0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 200.0)
TICK_S = 0.05


class ReplayScreen(ConsoleScreen):
    """Pushed over the session screen with the session's steps (already loaded)."""

    MODE = "sessions"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("space", "play_pause", "Play/pause"),
        Binding("n", "step", "Step"),
        Binding("plus", "faster", "Faster"),
        Binding("minus", "slower", "Slower"),
    ]

    def __init__(
        self, session: str, steps: list[Step], clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.session = session
        self.steps = steps
        self.shown = 0  # steps on screen
        self.position = 0.0  # seconds into the session
        self.playing = False
        self.speed = 1.0
        self._clock = clock
        self._last = clock()

    def body(self) -> ComposeResult:
        yield Static(id="replay-status")
        yield RichLog(id="replay-log", wrap=True, markup=False, highlight=False)

    def on_mount(self) -> None:
        self.set_interval(TICK_S, self._tick)
        self._status()

    def show(self, change: Change, now: float) -> None:
        self._status()

    def _status(self) -> None:
        total = self.steps[-1].at if self.steps else 0.0
        state = "playing" if self.playing else ("done" if self.done else "paused")
        text = Text()
        text.append(f"replay of {printable(self.session)}  ", style="bold")
        text.append(
            f"{state} at x{self.speed:g}  {self.position:.1f}s of {total:.1f}s  "
            f"step {self.shown}/{len(self.steps)}"
        )
        self.query_one("#replay-status", Static).update(text)

    @property
    def done(self) -> bool:
        return self.shown >= len(self.steps)

    def _reveal(self, step: Step) -> None:
        """The step's lines under its time, each wrapped in the column beside it: a line
        wider than the log was cut at its edge (a statement's ``OR 1=1`` after 200
        characters of a string out of sight). A line goes on under its own text, right
        of the time and of its ``>`` or ``|``: what a statement holds cannot pass for a
        step or a line of its own when wrapped."""
        log = self.query_one("#replay-log", RichLog)
        stamp = time_of(step.record)
        grid = Table.grid()
        grid.add_column(no_wrap=True)  # the time
        grid.add_column(no_wrap=True, width=2)  # "> ", "| ": a line of a statement
        grid.add_column(overflow="fold")
        for n, line in enumerate(step.lines):
            style = ""
            if "REFUSED" in line or "ALTERED" in line:
                style = f"bold {self.console.theme_colors['error']}"
            elif "HELD" in line:
                style = f"bold {self.console.theme_colors['warning']}"
            shown = printable(line)
            grid.add_row(
                Text(f"{stamp if n == 0 else ' ' * len(stamp)}  "),
                Text(shown[:2], style),
                Text(shown[2:], style),
            )
        log.write(grid)
        self.shown += 1

    def _tick(self) -> None:
        now = self._clock()
        elapsed, self._last = now - self._last, now
        if not self.playing:
            return
        self.position += elapsed * self.speed
        while not self.done and self.steps[self.shown].at <= self.position:
            self._reveal(self.steps[self.shown])
        if self.done:
            self.playing = False
        self._status()

    def action_play_pause(self) -> None:
        if self.done:
            return
        self.playing = not self.playing
        self._last = self._clock()
        self._status()

    def action_step(self) -> None:
        if self.done:
            return
        step = self.steps[self.shown]
        self.position = max(self.position, step.at)
        self._reveal(step)
        self._status()

    def action_faster(self) -> None:
        self.speed = next((s for s in SPEEDS if s > self.speed), SPEEDS[-1])
        self._status()

    def action_slower(self) -> None:
        self.speed = next((s for s in reversed(SPEEDS) if s < self.speed), SPEEDS[0])
        self._status()
