"""Approvals: the statements held for a person, the one that expires first on top, with
everything needed to decide it. ``a`` approves, ``d`` denies with a reason, ``g``
approves with a time-boxed grant for the same shape of statement.

The keys act on the request shown in full below the table (``reading``), never on
whatever row happens to be under the cursor: when that request goes (another operator
answered it, it expired), nothing is selected until the operator picks a request
again, so a key meant for it cannot fall on the one that took its row.

The pane below the table holds the whole statement, wrapped, and scrolls when it is
longer than the pane (the mouse wheel, or Tab to it and the arrows, PgDn, End): ``a``
and ``g`` act only once its end has been on screen (``_seen_whole``), and never on a
statement the gateway cut (``sql_truncated``: the console refuses to approve it, ``d``
may deny it)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from tui.model import Change, Piece, Request, printable
from tui.screens.base import ConsoleScreen
from tui.widgets import cell, fill, highlighted, statement

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


def _shown(request: Request) -> tuple[str, str, str, bool]:
    """What the operator reads of a request: a new text under the same id is a new
    reading (it must be read to its end again)."""
    return (request.appliance, request.id, request.sql, request.sql_truncated)


class RequestTable(DataTable[Text]):
    """The requests. With nothing selected its cursor is hidden; the first move (a key,
    a click) shows it, on the row it is on, and selects that request."""

    def _reveal(self) -> bool:
        if self.show_cursor or not self.row_count:
            return False
        self.show_cursor = True  # highlights the row under it: RowHighlighted
        return True

    def action_cursor_up(self) -> None:
        if not self._reveal():
            super().action_cursor_up()

    def action_cursor_down(self) -> None:
        if not self._reveal():
            super().action_cursor_down()

    def action_page_up(self) -> None:
        if not self._reveal():
            super().action_page_up()

    def action_page_down(self) -> None:
        if not self._reveal():
            super().action_page_down()

    def action_scroll_home(self) -> None:
        if not self._reveal():
            super().action_scroll_home()

    def action_scroll_end(self) -> None:
        if not self._reveal():
            super().action_scroll_end()

    def action_select_cursor(self) -> None:
        if not self._reveal():
            super().action_select_cursor()

    def on_click(self, event: events.Click) -> None:
        self._reveal()  # then DataTable moves the cursor to the clicked row


class ApprovalsScreen(ConsoleScreen):
    MODE = "approvals"
    BINDINGS = [
        Binding("a", "approve", "Approve"),
        Binding("d", "deny", "Deny"),
        Binding("g", "grant", "Approve+grant"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading: Request | None = None
        """The request shown in full below the table: the one ``a``, ``d`` and ``g``
        act on. None: nothing is selected."""
        self._in_pane: tuple[str, str, str, bool] | None = None
        """``_shown`` of the request in the pane (a new one starts at its top)."""
        self._laid_out: tuple[str, str, str, bool] | None = None
        """``_in_pane`` when the screen was last laid out: until the pane's sizes are
        those of the request in it, where it ends is not known."""
        self._seen_whole: tuple[str, str, str, bool] | None = None
        """``_shown`` of the request whose end has been on screen: ``a`` and ``g`` act
        on it (and on no other)."""

    def body(self) -> ComposeResult:
        table = RequestTable(id="requests", cursor_type="row", zebra_stripes=True)
        for label, width in COLUMNS:
            table.add_column(label, width=width, key=label)
        yield table
        with VerticalScroll(id="request-pane"):
            yield Static(id="request-detail")

    def on_mount(self) -> None:
        self.watch(self.query_one("#request-pane"), "scroll_y", self._scrolled, init=False)
        # the pane's sizes are those of its text only once the screen is laid out again
        # (a check before that would see the previous request's): at once, not queued
        self.screen_layout_refresh_signal.subscribe(self, self._relaid, immediate=True)

    def _relaid(self, _screen: object) -> None:
        self._laid_out = self._in_pane
        self._scrolled()

    def _scrolled(self) -> None:
        """Whether the end of the statement in the pane is on screen now (all of it
        fits, or it is scrolled to its end): once it has been, it counts as read whole."""
        shown = self._in_pane
        if shown is None or shown != self._laid_out:
            return
        pane = self.query_one("#request-pane", VerticalScroll)
        if pane.scroll_y >= pane.max_scroll_y:
            self._seen_whole = shown

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
            if r.too_large is not None:
                shown, style = "?", urgent
            else:
                shown, style = ("sent", "dim") if sent else (f"{left}s", urgent)
            rows.append(
                (
                    request_row_key(r),
                    [
                        cell(shown, style),
                        cell(r.identity),
                        cell(f"{r.appliance}/{r.target}"),
                        cell(r.rows_estimate if r.rows_estimate is not None else "?"),
                        cell(r.sql, "bold", limit=120),
                        cell(r.rule),
                    ],
                )
            )
        table = self.query_one(RequestTable)
        fill(table, rows)
        reading = self.reading
        if reading is not None:
            self.reading = model.requests.get(reading.key)
            if self.reading is None:
                self._gone(reading, table)
        elif table.show_cursor:  # nothing was ever selected: the top one, shown below
            self.reading = self._under_cursor()
        self._detail(now)

    def _gone(self, request: Request, table: RequestTable) -> None:
        """The request being read is no longer pending: select nothing (the cursor
        would otherwise rest on whichever request took its row) and say so."""
        table.show_cursor = False
        table.focus()  # where the arrows select again (not the pane, which they scroll)
        if not self.console.model.was_decided(request.key):
            self.console.notify(
                f"{printable(request.identity, 40)}'s statement "
                f"{printable(request.sql, 60)} is no longer pending (answered elsewhere, "
                "or expired). Nothing is selected: \u2191/\u2193 selects a request.",
                title="Request gone",
                severity="warning",
            )

    def _detail(self, now: float) -> None:
        detail = self.query_one("#request-detail", Static)
        request = self.reading
        shown = None if request is None else _shown(request)
        if shown != self._in_pane:  # another request: read from its top
            self._in_pane = shown
            self.query_one("#request-pane", VerticalScroll).scroll_home(animate=False)
        if request is None:
            if self.query_one(RequestTable).row_count:
                detail.update(
                    Text(
                        "No request is selected: \u2191/\u2193 selects one, shown here in full "
                        "before a, d or g act on it.",
                        style="dim",
                    )
                )
            else:
                detail.update(Text("No statement is waiting for approval.", style="dim"))
            return
        if request.too_large is not None:
            detail.update(Text(printable(request.sql) + f"\nid {printable(request.id)}"))
            return
        text = Text()
        text.append(printable(request.identity), style="bold")
        text.append(f" from {printable(request.client)} on ")
        text.append(f"{printable(request.appliance)}/{printable(request.target)}", style="bold")
        if request.db is not None:
            text.append(f" ({printable(request.db)})")
        text.append(f", {request.seconds_left(now)}s left\n")
        if request.db is None:  # the session's schema may not be where it runs
            text.append(
                "schema NOT KNOWN: sent before a USE was answered, it may run in either\n",
                style=f"bold {self.console.theme_colors['warning']}",
            )
        if request.sql_truncated:  # said before the text, which may fill the pane
            text.append(
                f"only its first {len(request.sql):,} characters came: the ledger has it whole\n",
                style=f"bold {self.console.theme_colors['warning']}",
            )
        sql, kinds = statement(request.sql, "bold")
        text.append_text(sql)  # whole: the keys act on it
        text.append("\n")
        if request.sent is not None:  # the bytes the text cannot show (U+FFFD) or in UTF-8
            text.append(request.sent + "\n")
        if Piece.ESCAPED in kinds:
            text.append("\\x.. \\u..", style="reverse")
            text.append(
                ": a character that would not show as itself (a control, a format or "
                "zero-width character, a space the server reads as part of a name)\n"
            )
        if Piece.FOREIGN in kinds:
            text.append("underlined", style="underline")
            text.append(": outside ASCII, and may look like another character\n")
        text.append(f"rule {printable(request.rule)}: {printable(request.reason, 300)}\n")
        rows = "unknown" if request.rows_estimate is None else str(request.rows_estimate)
        text.append(
            f"rows it would touch: {rows}   sha256 {printable(request.sql_sha256[:16])}\u2026",
            style="dim",
        )
        detail.update(text)

    def _under_cursor(self) -> Request | None:
        key = highlighted(self.query_one(RequestTable))
        if key is None:
            return None
        appliance, _, request_id = key.partition("\x00")
        return self.console.model.requests.get((appliance, request_id))

    def selected(self) -> Request | None:
        """The request the keys act on: the one shown in full (None: nothing selected)."""
        return self.reading

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if not event.data_table.show_cursor:
            return  # nothing selected: rows moving under the hidden cursor select nothing
        self.reading = self._under_cursor()
        self._detail(self.console.clock())

    def _chosen(self) -> Request | None:
        request = self.reading
        if request is None:
            self.console.notify(
                "select a request first (\u2191/\u2193): the keys act on the one shown in full",
                severity="warning",
            )
        return request

    def _approvable(self) -> Request | None:
        """The request ``a`` and ``g`` act on, once its whole text has been on screen
        (the console refuses a cut or unread one itself, saying why)."""
        request = self._chosen()
        if request is None or request.sql_truncated or request.too_large is not None:
            return request
        if self._seen_whole != _shown(request):
            self.console.notify(
                "the statement goes on below: scroll it to its end before approving it "
                "(the mouse wheel, or Tab to it, then End)",
                title="Not read to its end",
                severity="warning",
            )
            return None
        return request

    def action_approve(self) -> None:
        request = self._approvable()
        if request is not None:
            self.console.approve(request)

    def action_deny(self) -> None:
        request = self._chosen()
        if request is not None:
            self.console.deny(request)

    def action_grant(self) -> None:
        request = self._approvable()
        if request is not None:
            self.console.approve_with_grant(request)
