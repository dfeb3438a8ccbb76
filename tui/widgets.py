"""Widgets every screen shares: the status bar with the approvals badge, the pane that
shows a highlighted record whole, and the cell helpers that keep statement text plain
(no markup, no control characters)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Static

from tui.model import Console, Piece, folded_pieces, pieces, printable
from tui.sources import LinkState

__all__ = [
    "TABS",
    "StatementPane",
    "StatusBar",
    "cell",
    "clock",
    "duration",
    "fill",
    "highlighted",
    "statement",
]

TABS = (
    ("1", "sessions", "Sessions"),
    ("2", "approvals", "Approvals"),
    ("3", "ledger", "Ledger"),
    ("4", "alerts", "Alerts"),
)


def cell(value: object, style: str = "", limit: int | None = None) -> Text:
    """A table cell that shows ``value`` as it is: never read as markup."""
    if value is None:
        return Text("-", style="dim")
    return Text(printable(value, limit), style=style)


PIECE_STYLES = {
    Piece.PLAIN: "",
    Piece.BREAK: "",
    Piece.ESCAPED: "reverse",
    Piece.FOREIGN: "underline",
    Piece.FOLD: "italic",
}


def statement(sql: str, style: str = "", fold: bool = False) -> tuple[Text, set[Piece]]:
    """A statement whole, as ``printable`` shows it (with ``fold``: its blanks as written,
    long runs of them as one marker saying how many, as ``folded_pieces``), with what
    would not show as itself (escaped) reversed and the characters outside ASCII (which
    may look like others) underlined; and which of those kinds it holds, for a note
    saying what they mean."""
    text = Text(style=style)
    kinds: set[Piece] = set()
    for run, kind in (folded_pieces if fold else pieces)(sql):
        kinds.add(kind)
        text.append(run, style=PIECE_STYLES[kind])
    return text, kinds


def clock(ts: str) -> str:
    """``HH:MM:SS`` of a ledger ``ts`` (UTC), or ``?``."""
    return ts[11:19] if len(ts) >= 19 and ts[10] == "T" else "?"


def duration(seconds: float | None) -> str:
    """``42s``, ``3m07s``, ``2h05m``: short enough for a narrow column."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class StatusBar(Horizontal):
    """Tabs, the link to the broker and gateways, and the pending-approvals badge."""

    DEFAULT_CSS = """
    StatusBar { height: 2; }
    """

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        yield Static(id="tabs")
        yield Static(id="badge")

    def show(self, model: Console, link: LinkState) -> None:
        tabs = Text()
        counts = {"approvals": len(model.requests), "alerts": model.unseen_alerts}
        for key, mode, label in TABS:
            count = counts.get(mode)
            text = f" {key} {label}" + (f" ({count})" if count else "") + " "
            tabs.append(text, style="reverse bold" if mode == self.current else "")
        tabs.append("\n")
        gateways = len(model.gateways)
        if link.connected:
            tabs.append(f" {link.detail}", style="")
            tabs.append(f" \u00b7 {model.online}/{gateways} gateways online", style="dim")
        else:
            tabs.append(f" {link.detail}", style="bold")
        self.query_one("#tabs", Static).update(tabs)
        badge = self.query_one("#badge", Static)
        pending = len(model.requests)
        badge.set_class(pending > 0, "attention")
        badge.set_class(not link.connected, "offline")
        if pending:
            badge.update(Text(f" \u2691 {pending} PENDING ", style="bold"))
        elif not link.connected:
            badge.update(Text(" BROKER DOWN ", style="bold"))
        else:
            badge.update("")


class StatementPane(VerticalScroll):
    """The highlighted row's record whole, wrapped, below a list: a column shows only a
    statement's start, and a DELETE's ``OR 1=1`` after 200 characters of a string was
    out of sight. It scrolls on its own, from its top for each new record."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._key: Hashable = None  # what it shows now

    def compose(self) -> ComposeResult:
        yield Static(classes="detail")

    def show(self, key: Hashable, text: Text) -> None:
        """Show ``text``, the record ``key``: another record than before shows from its
        top, the same one (updated) where the operator scrolled to."""
        if key != self._key:
            self._key = key
            self.scroll_home(animate=False)
        self.query_one(Static).update(text)

    def clear(self) -> None:
        """Nothing highlighted: nothing shown."""
        self.query_one(Static).update("")


def _same(old: object, new: Text) -> bool:
    """Whether a cell already shows ``new``: its text and its styles (``Text.__eq__``
    ignores the style of the whole text, which says a session's state)."""
    return (
        isinstance(old, Text)
        and old.plain == new.plain
        and old.style == new.style
        and old.spans == new.spans
    )


def fill(table: DataTable[Text], rows: Sequence[tuple[str, Sequence[Text]]]) -> None:
    """Make the rows of ``table`` these, keeping the cursor on the row it was on.

    Only what changed is touched: cells are updated in place, rows come and go one by
    one, and a new order is a sort. Clearing and adding every row again at each redraw
    (once a second, for the clocks) made the table measure every cell of every row
    again: with a few thousand sessions that took longer than the second, and the
    console stopped answering keys."""
    current = highlighted(table)
    wanted = {key for key, _ in rows}
    gone = [row_key for row_key in table.rows if row_key.value not in wanted]
    if len(gone) > 64:  # each removal renumbers every row: many go, cheaper from scratch
        table.clear()
        gone = []
    for row_key in gone:
        table.remove_row(row_key)
    columns = [column.key for column in table.ordered_columns]
    for key, cells in rows:
        if key not in table.rows:
            table.add_row(*cells, key=key)
            continue
        for column, old, new in zip(columns, table.get_row(key), cells, strict=True):
            if not _same(old, new):
                table.update_cell(key, column, new)
    order = [key for key, _ in rows]
    if [row.key.value for row in table.ordered_rows] != order:
        # sort() hands the key function a row's cells, not its key: each row's first
        # cell is its own object, which says where the row goes
        place = {id(table.get_row(key)[0]): n for n, key in enumerate(order)}
        table.sort(key=lambda cells: place[id(cells[0])])
    if current is not None and current in table.rows:
        index = table.get_row_index(current)
        if index != table.cursor_row:
            table.move_cursor(row=index, animate=False)


def highlighted(table: DataTable[Text]) -> str | None:
    """The key of the row under the cursor, if any."""
    if not table.row_count or table.cursor_row >= table.row_count:
        return None
    return table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
