"""One session: who, where, and its statements as they stream in with their decision,
outcome and timing. The list follows new statements while the cursor is on the last;
the highlighted statement shows whole below it, wrapped (its column shows only its
start: a DELETE's ``OR 1=1`` after 200 characters of a string was out of sight)."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from tui.model import Change, SessionView, StatementView, printable
from tui.screens.base import ConsoleScreen
from tui.widgets import StatementPane, cell, clock, duration, highlighted, statement

__all__ = ["SessionScreen", "decision_style"]

COLUMNS = (
    ("Time", 8),
    ("Decision", 8),
    ("Result", 10),
    ("ms", 6),
    ("Statement", 120),
    ("Rule", 24),
)


def decision_style(decision: str, colors: dict[str, str]) -> str:
    if decision in ("blocked", "denied", "expired", "unavailable"):
        return f"bold {colors['error']}"
    if decision == "pending":
        return f"bold {colors['warning']}"
    if decision == "approved":
        return f"bold {colors['success']}"
    return ""


class SessionScreen(ConsoleScreen):
    """Pushed over the sessions screen for ``key`` (appliance, session id)."""

    MODE = "sessions"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("k", "kill", "End session"),
        Binding("r", "replay", "Replay"),
    ]

    def __init__(self, key: tuple[str, str]) -> None:
        super().__init__()
        self.key = key
        self._shown: dict[str, tuple[str, ...]] = {}

    def body(self) -> ComposeResult:
        yield Static(id="session-info")
        table: DataTable[Text] = DataTable(id="statements", cursor_type="row", zebra_stripes=True)
        for label, width in COLUMNS:
            table.add_column(label, width=width, key=label)
        yield table
        yield StatementPane(id="statement-pane")

    def _info(self, s: SessionView, now: float) -> Text:
        colors = self.console.theme_colors
        text = Text()
        text.append(printable(s.identity), style="bold")
        text.append(
            f"  {printable(s.client)} \u2192 {printable(s.appliance)}/{printable(s.target)}"
        )
        if s.db:
            text.append(f" ({printable(s.db)})")
        state = s.state.value
        style = {"waiting": f"bold {colors['warning']}", "ended": "dim"}.get(state, "bold")
        text.append("\n")
        text.append(f"{state}", style=style)
        text.append(
            f"  {s.statements} statements, {s.blocked} blocked, {duration(s.duration_s(now))}"
        )
        if s.end_reason:
            text.append(f"  ({printable(s.end_reason, 60)})", style="dim")
        text.append(f"  {printable(s.session)}", style="dim")
        return text

    def show(self, change: Change, now: float) -> None:
        session = self.console.model.sessions.get(self.key)
        info = self.query_one("#session-info", Static)
        if session is None:
            info.update(Text(f"session {printable(self.key[1])} is no longer known"))
            return
        info.update(self._info(session, now))
        if change & Change.STATEMENTS:
            self._rows(session.history)
            self._detail(session)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        session = self.console.model.sessions.get(self.key)
        if session is not None:
            self._detail(session)

    def _detail(self, session: SessionView) -> None:
        """The highlighted statement whole, wrapped, as the approvals show a request's:
        the server's blanks as one space, line breaks as ⏎, what would not show as
        itself escaped (reversed)."""
        pane = self.query_one(StatementPane)
        key = highlighted(self.query_one(DataTable))
        view = next((v for v in session.history if str(v.number) == key), None)
        if view is None:
            pane.clear()
            return
        text = Text()
        if view.part:
            text.append(f"[{printable(view.part)}] ", style="dim")
        sql, _ = statement(view.sql or view.command, "bold")
        text.append_text(sql)
        if view.sql_truncated:
            text.append(
                f"\nonly its first {len(view.sql):,} characters came: the ledger has it whole",
                style=f"bold {self.console.theme_colors['warning']}",
            )
        if view.reason:
            text.append(f"\n{printable(view.rule or '-')}: {printable(view.reason, 300)}")
        pane.show((view.number, view.sql), text)

    def _rows(self, history: Iterable[StatementView]) -> None:
        table = self.query_one(DataTable)
        colors = self.console.theme_colors
        follow = table.row_count == 0 or table.cursor_row >= table.row_count - 1
        present: set[str] = set()
        for view in history:
            key = str(view.number)  # never reused (an id() is, once old statements go)
            present.add(key)
            values = (
                clock(view.ts),
                view.decision,
                view.outcome,
                f"{view.duration_ms:.1f}" if view.duration_ms is not None else "-",
                (f"[{view.part}] " if view.part else "") + view.sql,
                view.rule or "-",
            )
            if self._shown.get(key) == values:
                continue
            style = decision_style(view.decision, colors)
            cells = [
                cell(values[0], "dim"),
                cell(values[1], style),
                cell(values[2], f"bold {colors['error']}" if view.error else ""),
                cell(values[3]),
                cell(values[4], style, limit=120),
                cell(values[5], style),
            ]
            if key in self._shown:
                for column, value in zip(COLUMNS, cells, strict=True):
                    table.update_cell(key, column[0], value)
            else:
                table.add_row(*cells, key=key)
            self._shown[key] = values
        for gone in set(self._shown) - present:
            table.remove_row(gone)
            del self._shown[gone]
        if follow and table.row_count:
            table.move_cursor(row=table.row_count - 1, animate=False)

    def action_kill(self) -> None:
        self.console.end_session(self.key)

    def action_replay(self) -> None:
        self.console.replay_session(self.key[1])
