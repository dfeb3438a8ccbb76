"""Sessions: every live session (held ones on top) and the recently ended ones."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from tui.model import Change, SessionState, SessionView
from tui.screens.base import ConsoleScreen
from tui.widgets import cell, duration, fill, highlighted

__all__ = ["SessionsScreen", "session_key", "session_row_key"]

COLUMNS = (
    ("Identity", 16),
    ("Client", 21),
    ("Target", 7),
    ("Stmts", 5),
    ("Blkd", 4),
    ("State", 7),
    ("Time", 5),
    ("Gateway", 8),
    ("Session", 24),
)


def session_row_key(session: SessionView) -> str:
    return f"{session.appliance}\x00{session.session}"


def session_key(row_key: str) -> tuple[str, str]:
    appliance, _, session = row_key.partition("\x00")
    return appliance, session


class SessionsScreen(ConsoleScreen):
    MODE = "sessions"
    BINDINGS = [
        Binding("enter", "open", "Statements"),
        Binding("k", "kill", "End session"),
    ]

    def body(self) -> ComposeResult:
        table: DataTable[Text] = DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        for label, width in COLUMNS:
            table.add_column(label, width=width, key=label)
        yield table

    def show(self, change: Change, now: float) -> None:
        if not change & (Change.SESSIONS | Change.STATEMENTS) and not self.console.ticked:
            return
        theme = self.console.theme_colors
        rows = []
        for s in self.console.model.session_list():
            state = s.state
            style = {
                SessionState.WAITING: f"bold {theme['warning']}",
                SessionState.ENDED: "dim",
            }.get(state, "")
            rows.append(
                (
                    session_row_key(s),
                    [
                        cell(s.identity, style),
                        cell(s.client, style),
                        cell(s.target, style),
                        cell(s.statements, style),
                        cell(s.blocked, f"bold {theme['error']}" if s.blocked else style),
                        cell(state.value, style),
                        cell(duration(s.duration_s(now)), style),
                        cell(s.appliance, style),
                        cell(s.session, "dim"),
                    ],
                )
            )
        fill(self.query_one(DataTable), rows)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.console.open_session(session_key(event.row_key.value))

    def action_open(self) -> None:
        key = highlighted(self.query_one(DataTable))
        if key is not None:
            self.console.open_session(session_key(key))

    def action_kill(self) -> None:
        key = highlighted(self.query_one(DataTable))
        if key is not None:
            self.console.end_session(session_key(key))
