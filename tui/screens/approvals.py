"""Approvals: the statements held for a person, the one that expires first on top, with
everything needed to decide it. ``a`` approves, ``d`` denies with a reason, ``g``
approves with a time-boxed grant for the same shape of statement."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from tui.model import Change, Request, printable
from tui.screens.base import ConsoleScreen
from tui.widgets import cell, fill, highlighted

__all__ = ["ApprovalsScreen"]

COLUMNS = (
    ("Left", 4),
    ("Identity", 16),
    ("Target", 14),
    ("Rows", 4),
    ("Statement", 120),
    ("Rule", 24),
)


def request_row_key(request: Request) -> str:
    return f"{request.appliance}\x00{request.id}"


class ApprovalsScreen(ConsoleScreen):
    MODE = "approvals"
    BINDINGS = [
        Binding("a", "approve", "Approve"),
        Binding("d", "deny", "Deny"),
        Binding("g", "grant", "Approve+grant"),
    ]

    def body(self) -> ComposeResult:
        table: DataTable[Text] = DataTable(id="requests", cursor_type="row", zebra_stripes=True)
        for label, width in COLUMNS:
            table.add_column(label, width=width, key=label)
        yield table
        yield Static(id="request-detail")

    def show(self, change: Change, now: float) -> None:
        if not change & Change.APPROVALS and not self.console.ticked:
            return
        model = self.console.model
        colors = self.console.theme_colors
        rows = []
        for r in model.request_list():
            left = r.seconds_left(now)
            sent = r.key in model.decided
            urgent = f"bold {colors['error']}" if left <= 15 else f"bold {colors['warning']}"
            rows.append(
                (
                    request_row_key(r),
                    [
                        cell("sent" if sent else f"{left}s", "dim" if sent else urgent),
                        cell(r.identity),
                        cell(f"{r.appliance}/{r.target}"),
                        cell(r.rows_estimate if r.rows_estimate is not None else "?"),
                        cell(r.sql, "bold", limit=120),
                        cell(r.rule),
                    ],
                )
            )
        table = self.query_one(DataTable)
        fill(table, rows)
        self._detail(self.selected(), now)

    def _detail(self, request: Request | None, now: float) -> None:
        detail = self.query_one("#request-detail", Static)
        if request is None:
            detail.update(Text("No statement is waiting for approval.", style="dim"))
            return
        text = Text()
        text.append(printable(request.identity), style="bold")
        text.append(f" from {printable(request.client)} on ")
        text.append(f"{printable(request.appliance)}/{printable(request.target)}", style="bold")
        if request.db:
            text.append(f" ({printable(request.db)})")
        text.append(f", {request.seconds_left(now)}s left\n")
        text.append(printable(request.sql, 600), style="bold")
        text.append("\n")
        text.append(f"rule {printable(request.rule)}: {printable(request.reason, 300)}\n")
        rows = "unknown" if request.rows_estimate is None else str(request.rows_estimate)
        text.append(
            f"rows it would touch: {rows}   sha256 {request.sql_sha256[:16]}\u2026", style="dim"
        )
        detail.update(text)

    def selected(self) -> Request | None:
        key = highlighted(self.query_one(DataTable))
        if key is None:
            return None
        appliance, _, request_id = key.partition("\x00")
        return self.console.model.requests.get((appliance, request_id))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail(self.selected(), self.console.clock())

    def action_approve(self) -> None:
        request = self.selected()
        if request is not None:
            self.console.approve(request)

    def action_deny(self) -> None:
        request = self.selected()
        if request is not None:
            self.console.deny(request)

    def action_grant(self) -> None:
        request = self.selected()
        if request is not None:
            self.console.approve_with_grant(request)
