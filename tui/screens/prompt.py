"""A one-line question in a modal: a denial's reason, a grant's minutes, why a session
is ended. Enter sends, Escape cancels (the answer is None)."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

__all__ = ["Prompt"]


class Prompt(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        title: str,
        placeholder: str = "",
        check: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.placeholder = placeholder
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt"):
            yield Label(self.title_text, id="prompt-title", markup=False)
            yield Input(placeholder=self.placeholder, id="prompt-input")
            yield Label("Enter sends \u00b7 Escape cancels", id="prompt-help")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if self.check is not None:
            problem = self.check(value)
            if problem is not None:
                self.query_one("#prompt-help", Label).update(problem)
                return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
