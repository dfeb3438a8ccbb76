"""Ledger: each gateway's latest signed head (from the bus), the local ledger file's
verification, its recent records, and a search over them; the highlighted record shows
whole below the list (its column shows only a statement's start: a DELETE's ``OR 1=1``
after 300 characters of a string was out of sight)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static

from appliance.shown import as_sent
from tui.model import Change, printable
from tui.screens.base import ConsoleScreen
from tui.widgets import StatementPane, cell, clock, fill, highlighted, statement

__all__ = ["LedgerScreen"]

COLUMNS = (("Seq", 8), ("Time", 8), ("Kind", 13), ("Identity", 18), ("Decision", 9), ("What", 200))


SHOWN_APART = frozenset(
    {"v", "seq", "ts", "kind", "prev_hash", "hash", "signature"}
    | {"sql", "sql_hex", "sql_charset", "part", "decision", "rule", "reason", "alert"}
)
"""Fields the detail shows in their own place, or not at all (the chain's own: the
verification speaks for them)."""


def detail(record: dict[str, Any], colors: dict[str, str]) -> Text:
    """A record whole: a statement as written (its long runs of blanks as one marker
    saying how many, as ``sqlgate replay`` shows it), its decision, rule and reason; the
    alert and reason of other kinds; then each other field, by name."""
    text = Text()
    sql = record.get("sql")
    if isinstance(sql, str):
        part = record.get("part")
        if isinstance(part, str):
            text.append(f"[{printable(part)}] ", style="dim")
        shown, _ = statement(sql, "bold", fold=True)
        text.append_text(shown)
        sent = as_sent(record.get("sql_hex"), record.get("sql_charset"))
        if sent is not None:
            text.append(f"\n{sent}")
        text.append("\n")
    decision = record.get("decision")
    if decision is not None:
        style = f"bold {colors['error']}" if decision in ("blocked", "denied", "expired") else ""
        text.append(printable(decision), style=style)
        if "rule" in record:  # a statement's (an approval's decision is a person's)
            text.append(f"  rule {printable(record.get('rule') or '-')}")
        text.append(": " if record.get("reason") else "\n")
    alert = record.get("alert")
    if alert is not None:
        text.append(printable(alert), style=f"bold {colors['warning']}")
        text.append(": " if record.get("reason") else "\n")
    reason = record.get("reason")
    if reason:
        text.append(printable(reason, 2000) + "\n")
    fields = [
        f"{printable(key, 40)} {_value(value)}"
        for key, value in record.items()
        if key not in SHOWN_APART and value is not None
    ]
    text.append(
        f"seq {printable(record.get('seq'))}  {printable(record.get('ts', '?'))}", style="dim"
    )
    if fields:
        text.append("  " + "  ".join(fields), style="dim")
    return text


def _value(value: object) -> str:
    """A field's value on one line: a list (groups, masked columns) by commas."""
    if isinstance(value, list):
        return printable(", ".join(map(str, value)), 300)
    return printable(value, 300)


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
        yield StatementPane(id="record-pane")

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
        self._detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail()

    def _detail(self) -> None:
        """The highlighted record whole, below the list."""
        pane = self.query_one(StatementPane)
        key = highlighted(self.query_one(DataTable))
        record = next((r for r in self.console.ledger_records if str(r.get("seq")) == key), None)
        if record is None:
            pane.clear()
            return
        pane.show((key, record.get("hash")), detail(record, self.console.theme_colors))

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
