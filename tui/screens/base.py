"""What every top-level screen shares: the status bar on top, the footer with the key
bindings below, and a ``show`` that redraws from the app's model."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from tui.model import Change
from tui.widgets import StatusBar

if TYPE_CHECKING:
    from tui.app import ConsoleApp

__all__ = ["ConsoleScreen"]


class ConsoleScreen(Screen[None]):
    """A screen of the console; ``MODE`` names its tab (see ``tui.widgets.TABS``)."""

    MODE = ""

    @property
    def console(self) -> ConsoleApp:
        return cast("ConsoleApp", self.app)

    def compose(self) -> ComposeResult:
        yield StatusBar(self.MODE)
        yield from self.body()
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def on_screen_resume(self) -> None:
        self.redraw(~Change.NONE)

    def redraw(self, change: Change) -> None:
        """Show the model; ``change`` says what changed since the last call."""
        app = self.console
        self.query_one(StatusBar).show(app.model, app.link)
        self.show(change, app.clock())

    def show(self, change: Change, now: float) -> None:
        """The screen's own part (``now``: the app's clock)."""
