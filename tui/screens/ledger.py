"""Ledger: each gateway's latest signed head (from the bus), the local ledger file's
verification, its recent records, and a search over them."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static

from tui.model import Change, printable
from tui.screens.base import ConsoleScreen
from tui.widgets import cell, clock, fill

__all__ = ["LedgerScreen"]

COLUMNS = (("Seq", 8), ("Time", 8), ("Kind", 13), ("Identity", 18), ("Decision", 9), ("What", 200))


def summary(record: dict[str, Any]) -> str:
    """What a record is about, in one line."""
    for key in ("sql", "reason", "alert"):
        value = record.get(key)
        if isinstance(value, str) and value:
            return value
    if record.get("kind") == "checkpoint":
        return f"signed head {str(record.get('hash', ''))[:16]}\u2026"
    if record.get("kind") == "result":
        rows, affected = record.get("rows"), record.get("affected")
        return f"rows {rows}, affected {affected}, error {record.get('error')}"
    return str(record.get("session") or "")


class LedgerScreen(ConsoleScreen):
    MODE = "ledger"
    BINDINGS = [
        Binding("v", "verify", "Verify"),
        Binding("slash", "search", "Search"),
        Binding("r", "reload", "Recent"),
    ]

    def body(self) -> ComposeResult:
        yield Static(id="heads")
        yield Static(id="verification")
        yield Input(placeholder="search the ledger: text, identity, session (Enter)", id="search")
        table: DataTable[Text] = DataTable(id="records", cursor_type="row", zebra_stripes=True)
        for label, width in COLUMNS:
            table.add_column(label, width=width, key=label)
        yield table

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()

    def show(self, change: Change, now: float) -> None:
        app = self.console
        if change & Change.GATEWAYS or app.ticked:
            heads = Text()
            for name, gateway in sorted(app.model.gateways.items()):
                head = gateway.head
                heads.append(f"{printable(name, 12):<12}", style="bold")
                if head is None:
                    heads.append(" no signed head seen yet\n", style="dim")
                    continue
                heads.append(
                    f" head seq {printable(head.get('seq'))} at {clock(str(head.get('ts', '')))}"
                    f"  hash {printable(head.get('hash', ''), 13)}"
                    f"  key {printable(head.get('key_id', '?'), 10)}\n"
                )
            if not app.model.gateways:
                heads.append("no gateway seen on the bus yet", style="dim")
            self.query_one("#heads", Static).update(heads)
        self._verification()
        if change & Change.LEDGER:
            self._records()

    def _verification(self) -> None:
        app = self.console
        text = Text()
        if app.ledger is None:
            text.append(f"ledger file: {printable(app.ledger_note)}", style="dim")
        else:
            text.append(f"ledger file {printable(app.ledger.path)}: ")
            verification = app.verification
            if verification is None:
                text.append("verifying\u2026", style="dim")
            else:
                colors = app.theme_colors
                style = (
                    f"bold {colors['success']}" if verification.ok else f"bold {colors['error']}"
                )
                text.append(printable(verification.summary), style=style)
        self.query_one("#verification", Static).update(text)

    def _records(self) -> None:
        app = self.console
        colors = app.theme_colors
        rows = []
        for record in reversed(app.ledger_records):
            decision = record.get("decision")
            style = ""
            if decision in ("blocked", "denied", "expired"):
                style = f"bold {colors['error']}"
            elif record.get("kind") == "alert":
                style = f"bold {colors['warning']}"
            rows.append(
                (
                    str(record.get("seq")),
                    [
                        cell(record.get("seq"), "dim"),
                        cell(clock(str(record.get("ts", ""))), "dim"),
                        cell(record.get("kind", "?")),
                        cell(record.get("identity")),
                        cell(decision, style),
                        cell(summary(record), style, limit=400),
                    ],
                )
            )
        fill(self.query_one(DataTable), rows)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.console.read_ledger(event.value.strip() or None)
        self.query_one(DataTable).focus()

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_reload(self) -> None:
        self.query_one("#search", Input).value = ""
        self.console.read_ledger(None)

    def action_verify(self) -> None:
        self.console.verify_ledger()
