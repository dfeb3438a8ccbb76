"""Alerts: what the gateways raised (bypass attempts, runaway agents, ledger trouble,
rejected decisions) and what the console found itself, newest first."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable

from tui.model import Change
from tui.screens.base import ConsoleScreen
from tui.widgets import cell, clock, fill

__all__ = ["AlertsScreen"]

COLUMNS = (("Time", 8), ("Gateway", 10), ("Alert", 26), ("Reason", 200))


class AlertsScreen(ConsoleScreen):
    MODE = "alerts"

    def body(self) -> ComposeResult:
        table: DataTable[Text] = DataTable(id="alerts", cursor_type="row", zebra_stripes=True)
        for label, width in COLUMNS:
            table.add_column(label, width=width, key=label)
        yield table

    def redraw(self, change: Change) -> None:
        self.console.model.unseen_alerts = 0  # the operator is looking at them
        super().redraw(change)

    def show(self, change: Change, now: float) -> None:
        if not change & Change.ALERTS:
            return
        colors = self.console.theme_colors
        rows = []
        for number, a in enumerate(self.console.model.alerts):
            reason = a.reason
            if a.session:
                reason += f" (session {a.session})"
            if a.request:
                reason += f" (request {a.request})"
            rows.append(
                (
                    str(len(self.console.model.alerts) - number),
                    [
                        cell(clock(a.ts) if a.ts else "now", "dim"),
                        cell(a.appliance),
                        cell(a.alert, f"bold {colors['error']}"),
                        cell(reason, limit=400),
                    ],
                )
            )
        fill(self.query_one(DataTable), rows)
