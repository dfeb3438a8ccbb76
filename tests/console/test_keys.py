"""The console's keys, driven with Pilot over a recorded source: what each sends, and
what the operator is told."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from console.drive import Run, drive
from console.story import NOW, messages, source
from textual.containers import VerticalScroll
from textual.content import Content
from textual.coordinate import Coordinate
from textual.widgets import DataTable

from appliance.ledger import LedgerWriter
from appliance.ledger.chain import generate_key
from tui.app import ConsoleApp, Operator
from tui.ledger import LedgerFile
from tui.model import EXPIRED_GRACE_S
from tui.screens.session import SessionScreen
from tui.sources import BusEvent, LinkState, RecordedSource, Synced, TooLarge


def sent(run: Run) -> list[tuple[str, dict[str, Any]]]:
    source = run.app.source
    assert isinstance(source, RecordedSource)
    return source.sent


OPERATOR = Operator("dba@example.com", "header.payload.signature")


Scenario = Callable[[Run], Awaitable[None]]


def console(
    operator: Operator | None = OPERATOR,
    notifications: bool = False,
    size: tuple[int, int] = (100, 30),
) -> Callable[[Scenario], Callable[[], None]]:
    """A test that runs its scenario in a console (``size``) once the recording played."""

    def wrap(scenario: Scenario) -> Callable[[], None]:
        def test() -> None:
            src = source()
            app = ConsoleApp(src, clock=lambda: NOW, operator=operator)

            async def played(run: Run) -> None:
                await src.played.wait()
                await run.settle()
                await scenario(run)

            drive(app, played, size=size, notifications=notifications)

        test.__name__ = scenario.__name__
        test.__doc__ = scenario.__doc__
        return test

    return wrap


@console()
async def test_a_approves_the_highlighted_request(run: Run) -> None:
    await run.press("2", "a")
    assert sent(run) == [
        (
            "sqlgate/edge-1/approvals/b81e44c0aa93/decision",
            {
                "v": 1,
                "decision": "approve",
                "operator": "dba@example.com",
                "token": OPERATOR.token,
                "sql_sha256": "6" * 64,
            },
        )
    ]
    assert ("edge-1", "b81e44c0aa93") in run.app.model.decided
    await run.press("down", "a")
    assert sent(run)[-1][0] == "sqlgate/edge-1/approvals/4f0c2e9b1d7a/decision"


@console()
async def test_d_asks_a_reason_and_enter_sends_the_denial(run: Run) -> None:
    await run.press("2", "d", *"use a smaller batch", "enter")
    topic, body = sent(run)[-1]
    assert topic == "sqlgate/edge-1/approvals/b81e44c0aa93/decision"
    assert (body["decision"], body["reason"]) == ("deny", "use a smaller batch")


@console()
async def test_escape_cancels_a_denial(run: Run) -> None:
    await run.press("2", "d", *"oops", "escape")
    assert sent(run) == []
    await run.press("a")  # the approvals screen has the keys again
    assert sent(run)[-1][1]["decision"] == "approve"


@console()
async def test_g_grants_minutes_and_refuses_a_bad_number(run: Run) -> None:
    await run.press("2", "g", "0", "enter")
    assert sent(run) == []
    assert "1 to 1440" in str(run.app.screen.query_one("#prompt-help").render())
    await run.press("backspace", *"30", "enter")
    body = sent(run)[-1][1]
    assert (body["decision"], body["grant_minutes"]) == ("approve", 30)


@console()
async def test_k_ends_the_highlighted_session_with_a_reason(run: Run) -> None:
    await run.press("1", "k", *"runaway", "enter")
    assert sent(run) == [
        (
            "sqlgate/edge-1/kill/edge-1-7a01-2",
            {"operator": "dba@example.com", "token": OPERATOR.token, "reason": "runaway"},
        )
    ]


@console()
async def test_enter_opens_a_session_and_k_there_ends_it(run: Run) -> None:
    await run.press("1", "down", "enter")
    screen = run.app.screen
    assert isinstance(screen, SessionScreen) and screen.key == ("edge-1", "edge-1-7a01-1")
    rows = screen.query_one("#statements")
    assert rows.row_count == 5  # type: ignore[attr-defined]
    await run.press("k", "enter")
    assert sent(run)[-1][0] == "sqlgate/edge-1/kill/edge-1-7a01-1"
    await run.press("escape")
    assert not isinstance(run.app.screen, SessionScreen)


@console()
async def test_an_ended_session_cannot_be_ended(run: Run) -> None:
    await run.press("1", "down", "down", "k")
    assert sent(run) == []
    assert "that session has already ended" in run.notes()


@console()
async def test_a_refused_decision_is_reported_at_once(run: Run) -> None:
    await run.press("2", "a")
    run.app._deliver(
        BusEvent(
            "edge-1",
            ("alerts",),
            {
                "v": 1,
                "seq": 999,
                "kind": "alert",
                "alert": "approval_decision_rejected",
                "request": "b81e44c0aa93",
                "reason": "dba@example.com is not an approver (approver groups: dba)",
            },
        )
    )
    await run.press()
    assert "dba@example.com is not an approver (approver groups: dba)" in run.notes()
    assert ("edge-1", "b81e44c0aa93") not in run.app.model.decided


@console()
async def test_a_new_request_rings_the_bell_and_raises_the_badge(run: Run) -> None:
    assert run.bells == 2  # the two requests of the recording
    badge = run.app.screen.query_one("#badge")
    assert badge.has_class("attention") and "2 PENDING" in str(badge.render())
    run.app._deliver(BusEvent("edge-1", ("approvals", "b81e44c0aa93"), None))
    run.app._deliver(BusEvent("edge-1", ("approvals", "4f0c2e9b1d7a"), None))
    await run.press()
    assert run.bells == 2 and not badge.has_class("attention")


@console(operator=None)
async def test_without_a_token_the_console_is_read_only(run: Run) -> None:
    await run.press("2", "a", "d", "1", "k")
    assert sent(run) == []
    assert any("--token-file" in note for note in run.notes())


@console(notifications=True)
async def test_markup_in_a_request_is_shown_as_text_and_never_acts(run: Run) -> None:
    """An agent's statement is data: '[/]' in it must not crash the console, and an
    action link in it must not approve anything when the operator clicks the notice."""
    from textual.widgets._toast import Toast

    sql = "DELETE FROM t WHERE id <> 0 AND 'x' <> '[@click=screen.approve]see details[/]'"
    request = {
        "v": 1,
        "appliance": "edge-1",
        "session": "edge-1-7a01-9",
        "statement_seq": 1,
        "identity": "agent[/]",
        "client": "10.77.1.12:40001",
        "target": "orders",
        "db": "shop",
        "command": "COM_QUERY",
        "sql": sql,
        "rule": "review",
        "reason": "why",
        "rows_estimate": None,
        "id": "c0ffee000001",
        "sql_sha256": "7" * 64,
        "approver_groups": ["dba"],
        "fingerprint": None,
        "requested_at": NOW,
        "expires_at": NOW + 120,
    }
    await run.press("2")
    run.app._deliver(BusEvent("edge-1", ("approvals", "c0ffee000001"), request))
    await run.until("the notice", lambda: any("[@click=" in n for n in run.notes()))
    toasts = list(run.app.screen.query(Toast))
    # shown as written: read as markup, the notice would say "... 'see details'" and
    # those words would be a link that approves when the operator clicks the notice
    assert any("[@click=screen.approve]see details[/]" in t.render().plain for t in toasts)
    assert sent(run) == []  # and nothing was sent


def test_a_live_source_that_fails_is_started_again(monkeypatch: Any) -> None:
    """The console never stops: a source that raised (a bug, a message it could not
    take) is reported on the status bar and started again."""
    import tui.app

    monkeypatch.setattr(tui.app, "SOURCE_RESTART_S", 0.05)

    class Flaky(RecordedSource):
        runs = 0

        async def run(self, deliver: Any) -> None:
            Flaky.runs += 1
            if Flaky.runs == 1:
                raise RecursionError("maximum recursion depth exceeded")
            await super().run(deliver)

    recorded = source()
    src = Flaky(recorded.messages, prefix=recorded.prefix)
    app = ConsoleApp(src, clock=lambda: NOW, operator=OPERATOR)

    async def scenario(run: Run) -> None:
        await src.played.wait()
        await run.until("the recording's requests", lambda: len(run.app.model.requests) == 2)

    drive(app, scenario)
    assert Flaky.runs == 2


def test_requests_answered_while_away_or_expired_leave_the_screen() -> None:
    """A request answered while the console was disconnected is not sent again by the
    broker when it reconnects: it goes once the retained ones are in (``Synced``). One
    whose clearing never arrives goes shortly after its expiry."""
    src = source()
    now = [NOW]
    app = ConsoleApp(src, clock=lambda: now[0], operator=OPERATOR)
    pending = next(m for m in messages() if m.topic.endswith("/approvals/4f0c2e9b1d7a"))

    def shown(run: Run) -> int:
        return int(run.app.screen.query_one("#requests").row_count)  # type: ignore[attr-defined]

    async def scenario(run: Run) -> None:
        await src.played.wait()
        await run.press("2")
        assert shown(run) == 2
        run.app._deliver(LinkState(False, "broker unreachable"))
        run.app._deliver(LinkState(True, "connected"))
        run.app._deliver(BusEvent("edge-1", ("approvals", "4f0c2e9b1d7a"), pending.payload))
        run.app._deliver(Synced())
        await run.until("the answered request to go", lambda: shown(run) == 1)
        assert ("edge-1", "4f0c2e9b1d7a") in run.app.model.requests
        badge = run.app.screen.query_one("#badge")
        assert "1 PENDING" in str(badge.render())
        now[0] = NOW + 90 + EXPIRED_GRACE_S + 1  # past its expiry; no clearing came
        await run.until("the expired request to go", lambda: shown(run) == 0)
        assert not badge.has_class("attention")

    drive(app, scenario)


def detail(run: Run) -> str:
    return str(run.app.screen.query_one("#request-detail").render())


@console()
async def test_a_never_falls_on_a_request_that_took_the_read_ones_row(run: Run) -> None:
    """The operator reads the top request; another operator answers it. The cursor must
    not slide to the next request: nothing is selected, ``a`` asks to select one, and
    only a request shown in full is approved."""
    await run.press("2")
    assert "UPDATE orders SET status = 'shipped'" in detail(run)
    run.app._deliver(BusEvent("edge-1", ("approvals", "b81e44c0aa93"), None))  # answered
    await run.until(
        "the row to go", lambda: ("edge-1", "b81e44c0aa93") not in run.app.model.requests
    )
    await run.press("a", "d", "g")
    assert sent(run) == []
    assert any("is no longer pending" in note for note in run.notes())
    assert any("select a request first" in note for note in run.notes())
    assert "No request is selected" in detail(run)
    await run.press("down")  # the first move selects the row the cursor is on
    assert "ALTER TABLE orders ADD COLUMN note TEXT" in detail(run)
    await run.press("a")
    assert [topic for topic, _ in sent(run)] == ["sqlgate/edge-1/approvals/4f0c2e9b1d7a/decision"]


@console()
async def test_a_request_arriving_on_top_does_not_take_the_selection(run: Run) -> None:
    await run.press("2", "down")
    assert "ALTER TABLE orders" in detail(run)
    newer = dict(next(m for m in messages() if m.topic.endswith("/b81e44c0aa93")).payload or {})
    newer.update(id="0a0a0a0a0a0a", sql="DROP TABLE orders", expires_at=NOW + 1)
    run.app._deliver(BusEvent("edge-1", ("approvals", "0a0a0a0a0a0a"), newer))
    await run.until("the new request", lambda: len(run.app.model.requests) == 3)
    await run.press("a")
    assert [topic for topic, _ in sent(run)] == ["sqlgate/edge-1/approvals/4f0c2e9b1d7a/decision"]


@console()
async def test_ones_own_answered_request_goes_without_a_warning(run: Run) -> None:
    await run.press("2", "a")
    run.app._deliver(BusEvent("edge-1", ("approvals", "b81e44c0aa93"), None))
    await run.until("the row to go", lambda: len(run.app.model.requests) == 1)
    assert not any("no longer pending" in note for note in run.notes())
    assert "No request is selected" in detail(run)


@console()
async def test_a_request_too_large_to_read_is_listed_and_cannot_be_decided_here(
    run: Run,
) -> None:
    await run.press("2")
    run.app._deliver(TooLarge("edge-1", ("approvals", "0b0b0b0b0b0b"), 3_000_000))
    await run.until("the placeholder", lambda: len(run.app.model.requests) == 3)
    assert run.bells == 3  # rings like any new request
    await run.press("up")  # nothing expires sooner: it is on top
    assert "3,000,000 bytes" in detail(run)
    await run.press("a", "d", "g")
    assert sent(run) == []
    assert any("decide it with `sqlgate approvals`" in note for note in run.notes())


async def on_top(run: Run, request_id: str, sql: str, **fields: Any) -> None:
    """Deliver a request for ``sql`` that expires first, and select it (the top row)."""
    body = dict(next(m for m in messages() if m.topic.endswith("/b81e44c0aa93")).payload or {})
    body.update(id=request_id, sql=sql, sql_sha256="c" * 64, expires_at=NOW + 1)
    body.update(fields)
    await run.press("2")
    run.app._deliver(BusEvent("edge-1", ("approvals", request_id), body))
    await run.until("the request", lambda: len(run.app.model.requests) == 3)
    await run.press("up")


COMMENTED_DROP = "ALTER TABLE appr_t COMMENT '" + "harmless words " * 40 + "', DROP COLUMN id"


@console()
async def test_the_detail_shows_a_long_statement_whole_before_a_approves_it(run: Run) -> None:
    """645 characters: a comment, then DROP COLUMN. Cut to 600, the detail hid the
    DROP that ``a`` approved."""
    assert len(COMMENTED_DROP) == 645
    await run.press("2")
    await on_top(run, "0d0d0d0d0d0d", COMMENTED_DROP)
    shown = " ".join(detail(run).split())  # wrapped to the pane's width
    assert " ".join(COMMENTED_DROP.split()) + " rule review-bulk-updates" in shown
    table = run.app.screen.query_one("#requests", DataTable)
    row = table.get_row_at(table.cursor_row)
    assert len(row[4].plain) == 120 and row[4].plain.endswith("\u2026")  # the row stays short
    await run.press("a")
    assert [(topic, body["sql_sha256"]) for topic, body in sent(run)] == [
        ("sqlgate/edge-1/approvals/0d0d0d0d0d0d/decision", "c" * 64)
    ]


@console()
async def test_the_detail_marks_what_would_not_show_as_itself(run: Run) -> None:
    """A bidi override drew ``/* 1 RO */`` for ``/*\u202e*/ OR 1``; a Cyrillic ``о``
    reads as ``o``. The override is escaped and reversed, the Cyrillic letter
    underlined, and a note under the statement says what both mean."""
    sql = "DELETE FROM \u043erders WHERE id = 2 /*\u202e*/ OR 1 -- \u200b"
    await on_top(run, "0e0e0e0e0e0e", sql)
    content = run.app.screen.query_one("#request-detail").render()
    assert isinstance(content, Content)
    shown = "DELETE FROM \u043erders WHERE id = 2 /*\\u202e*/ OR 1 -- \\u200b"
    assert shown in content.plain and "\u202e" not in content.plain
    assert "would not show as itself" in content.plain and "outside ASCII" in content.plain
    start = content.plain.index(shown)

    def styled(text: str) -> set[str]:
        at = start + shown.index(text)
        return {
            attribute
            for span in content.spans
            if span.start <= at and at + len(text) <= span.end
            for attribute in ("reverse", "underline", "bold")
            if getattr(span.style, attribute, False)
        }

    assert styled("\u043e") == {"underline", "bold"}
    assert styled("\\u202e") == styled("\\u200b") == {"reverse", "bold"}
    assert styled("rders WHERE id = 2 /*") == {"bold"}
    table = run.app.screen.query_one("#requests", DataTable)
    assert "/*\\u202e*/ OR 1" in table.get_row_at(table.cursor_row)[4].plain


@console()
async def test_every_field_of_a_request_is_shown_printable(run: Run) -> None:
    """The detail's sha256 went to the terminal as it came: an escape in a forged
    request's ``sql_sha256`` drove the terminal."""
    await on_top(run, "0f0f0f0f0f0f", "DELETE FROM t", sql_sha256="\x1b[8m" + "a" * 60)
    content = run.app.screen.query_one("#request-detail").render()
    assert "\x1b" not in str(content)
    assert "sha256 \\x1b[8m" + "a" * 12 + "\u2026" in str(content)  # its first 16


@console()
async def test_the_detail_says_when_the_schema_is_not_known(run: Run) -> None:
    """BUG: ``USE shop`` pipelined before a held ``DROP TABLE orders`` makes its request's
    ``db`` null (the server may run it in either schema); the detail then showed no
    schema at all, and the operator who knew the session in its scratch schema approved
    dropping shop's table. It says the schema is not known, as ``approvals show`` does."""
    await on_top(run, "0a0a0a0a0a0a", "DROP TABLE orders", db=None)
    shown = detail(run)
    assert "edge-1/orders, 1s left" in shown
    assert "schema NOT KNOWN: sent before a USE was answered, it may run in either" in shown


LONGER_DROP = COMMENTED_DROP.replace("harmless words " * 40, "harmless words " * 120)


@console(size=(80, 24))
async def test_a_and_g_wait_until_the_end_of_a_long_statement_was_on_screen(run: Run) -> None:
    """On 80x24 a longer statement is longer than the pane: its DROP is below, to be
    scrolled to before ``a`` or ``g`` approve."""
    await on_top(run, "0d0d0d0d0d0d", LONGER_DROP)
    await run.press("a", "g")
    assert sent(run) == []
    assert sum("scroll it to its end" in note for note in run.notes()) == 2
    pane = run.app.screen.query_one("#request-pane", VerticalScroll)
    assert pane.max_scroll_y > 0 and pane.scroll_y == 0
    await run.press("tab", "pagedown")  # the pane: part of the way down
    assert 0 < pane.scroll_y < pane.max_scroll_y
    await run.press("a")
    assert sent(run) == []
    await run.press("end", "home")  # the end was on screen: read whole
    await run.press("a")
    assert [topic for topic, _ in sent(run)] == ["sqlgate/edge-1/approvals/0d0d0d0d0d0d/decision"]
    run.app._deliver(BusEvent("edge-1", ("approvals", "0d0d0d0d0d0d"), None))  # it ran
    await run.until("the row to go", lambda: len(run.app.model.requests) == 2)
    assert run.app.focused is run.app.screen.query_one("#requests")  # not the pane
    await run.press("down")  # another request: read from its top
    assert pane.scroll_y == 0 and "UPDATE orders SET status = 'shipped'" in detail(run)
    await run.press("a")  # it fits: nothing to scroll
    assert sent(run)[-1][0] == "sqlgate/edge-1/approvals/b81e44c0aa93/decision"


@console(size=(80, 24))
async def test_a_denial_needs_no_scrolling(run: Run) -> None:
    await on_top(run, "0d0d0d0d0d0d", LONGER_DROP)
    await run.press("d", *"no", "enter")
    assert [(topic, body["decision"]) for topic, body in sent(run)] == [
        ("sqlgate/edge-1/approvals/0d0d0d0d0d0d/decision", "deny")
    ]


@console()
async def test_a_request_cut_short_says_so_and_cannot_be_approved(run: Run) -> None:
    """The gateway sent only the start of the statement: what follows was never shown,
    so ``a`` and ``g`` refuse (however far it is scrolled); ``d`` denies it."""
    sql = "DELETE FROM t /* " + "x" * 65_000
    await on_top(run, "0c0c0c0c0c0c", sql, sql_truncated=True)
    assert "only its first 65,017 characters came" in detail(run)
    await run.press("tab", "end")
    await run.press("a", "g")
    assert sent(run) == []
    notes = [note for note in run.notes() if "the gateway cut it" in note]
    assert len(notes) == 2 and "cannot be approved here" in notes[0]
    await run.press("d", *"too long to read", "enter")
    assert [(topic, body["decision"]) for topic, body in sent(run)] == [
        ("sqlgate/edge-1/approvals/0c0c0c0c0c0c/decision", "deny")
    ]


@console()
async def test_a_gateway_that_started_again_shows_its_old_sessions_ended(run: Run) -> None:
    def states() -> list[str]:
        table = run.app.screen.query_one("#sessions")
        return [str(table.get_cell(key, "State")) for key in table.rows]  # type: ignore[attr-defined]

    await run.press("1")
    assert states() == ["waiting", "waiting", "ended"]
    back = {"v": 1, "appliance": "edge-1", "state": "online", "run": "9f9f9f9f", "since": NOW - 5}
    run.app._deliver(BusEvent("edge-1", ("status",), back))
    await run.until("the sessions to end", lambda: states() == ["ended", "ended", "ended"])
    assert run.app.model.sessions[("edge-1", "edge-1-7a01-1")].end_reason == "gateway restarted"


@console()
async def test_a_long_session_keeps_its_statements_in_order(run: Run) -> None:
    """Past the 1,000 statements kept, the oldest go and new ones come: rows must stay
    in order, newest at the bottom (rows keyed by id() took a new statement for a gone
    one whose memory it reused)."""

    def statement(n: int) -> BusEvent:
        body = {
            "v": 1,
            "seq": 10_000 + n,
            "ts": "2026-11-26T10:15:00.000000Z",
            "kind": "statement",
            "session": "edge-1-7a01-1",
            "statement_seq": 100 + n,
            "sql": f"SELECT {n}",
            "decision": "allowed",
        }
        return BusEvent("edge-1", ("sessions", "edge-1-7a01-1", "statements"), body)

    def numbers() -> list[int]:
        table = run.app.screen.query_one("#statements")
        cells = [str(table.get_cell(key, "Statement")) for key in table.rows]  # type: ignore[attr-defined]
        return [int(c.split()[1]) for c in cells if c.startswith("SELECT ") and c[7:].isdigit()]

    await run.press("1", "down", "enter")
    for first, last in ((0, 1000), (1000, 1300), (1300, 1600)):
        for n in range(first, last):
            run.app._deliver(statement(n))
        await run.until(f"statement {last - 1}", lambda last=last: numbers()[-1:] == [last - 1])
    assert numbers() == list(range(600, 1600))


@console()
async def test_k_on_a_session_id_with_a_wildcard_is_refused_not_a_crash(run: Run) -> None:
    """A forged event named a session ``s+1``: a kill topic cannot hold it. ``k`` says
    so; before, MQTT's ValueError ended the console."""
    forged = {
        "v": 1,
        "seq": 7,
        "ts": "2026-11-26T10:15:29.000000Z",
        "kind": "session_start",
        "session": "s+1",
        "identity": "agent",
    }
    run.app._deliver(BusEvent("edge-3", ("sessions", "s1", "start"), forged))
    await run.until("the session", lambda: ("edge-3", "s+1") in run.app.model.sessions)
    await run.press("1", "down", "down")  # below the two waiting sessions
    assert "s+1" in str(run.app.screen.query_one("#sessions").get_row_at(2))  # type: ignore[attr-defined]
    await run.press("k", *"why", "enter")
    assert sent(run) == []
    assert any("no kill can name it" in note for note in run.notes())
    assert run.app.is_running


def test_a_topic_mqtt_cannot_publish_on_is_a_send_error() -> None:
    """MqttSource.send turns paho's ValueError (a wildcard in the topic) into SendError,
    which the console reports, instead of a worker failure that ends it."""
    import asyncio

    import pytest

    from appliance.config import BusConfig
    from tui.sources import MqttSource, SendError

    async def main() -> None:
        source = MqttSource(BusConfig(url="mqtt://127.0.0.1:1", host="127.0.0.1", port=1))
        source._client = source._new_client()  # not connected: paho checks the topic first
        with pytest.raises(SendError, match="wildcards"):
            await source.send("gw", "kill/s+1", {"operator": "dba", "token": "t"})

    asyncio.run(main())


def test_the_sessions_table_is_updated_in_place_not_filled_again() -> None:
    """Every second the durations change: the table used to be cleared and every row
    added again, which measures each cell anew; with a few thousand sessions that took
    longer than the second and the console stopped answering keys. A redraw now adds
    only new rows and updates the cells that changed, in the order of the sessions,
    with the cursor kept on its session."""
    src = source()
    now = [NOW]
    app = ConsoleApp(src, clock=lambda: now[0], operator=OPERATOR)

    def start(n: int) -> BusEvent:
        body = {
            "v": 1,
            "seq": 20_000 + n,
            "ts": "2026-11-26T10:15:29.000000Z",
            "kind": "session_start",
            "session": f"edge-1-7a01-{100 + n}",
            "identity": f"agent-{n}",
        }
        return BusEvent("edge-1", ("sessions", f"edge-1-7a01-{100 + n}", "start"), body)

    async def scenario(run: Run) -> None:
        await src.played.wait()
        await run.press("1")
        for n in range(300):
            run.app._deliver(start(n))
        await run.until("the sessions", lambda: len(run.app.model.sessions) == 303)
        table = run.app.screen.query_one("#sessions", DataTable)
        calls: list[str] = []
        add_row, clear = table.add_row, table.clear
        table.add_row = lambda *a, **k: calls.append("add_row") or add_row(*a, **k)  # type: ignore[method-assign]
        table.clear = lambda *a, **k: calls.append("clear") or clear(*a, **k)  # type: ignore[method-assign]
        await run.press("down", "down")
        chosen = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
        for second in range(1, 4):
            now[0] = NOW + second
            await run.settle()
        assert calls == []
        assert str(table.get_cell("edge-1\x00edge-1-7a01-100", "Time")) == "4s"
        run.app._deliver(start(300))  # a new session on top of the live ones
        appliance, _, session = chosen.partition("\x00")
        end = {"v": 1, "seq": 30_000, "kind": "session_end", "session": session}
        run.app._deliver(BusEvent(appliance, ("sessions", session, "end"), end))  # to the bottom
        await run.until("the new session", lambda: len(run.app.model.sessions) == 304)
        assert run.app.model.sessions[(appliance, session)].ended_at is not None
        assert calls == ["add_row"]
        shown = [
            table.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value
            for row in range(table.row_count)
        ]
        assert shown == [f"{s.appliance}\x00{s.session}" for s in run.app.model.session_list()]
        assert table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value == chosen

    drive(app, scenario)


@console()
async def test_a_denial_typed_while_the_request_went_is_not_sent(run: Run) -> None:
    """The operator types a denial's reason; meanwhile another operator answers the
    request (or it expires). Enter sent the denial anyway: "denial sent", then the
    gateway's "Decision refused", and a rejected decision in its ledger. Now nothing is
    sent, and the operator is told why."""
    await run.press("2", "d", *"too wide")
    run.app._deliver(BusEvent("edge-1", ("approvals", "b81e44c0aa93"), None))  # answered
    await run.until(
        "the request to go", lambda: ("edge-1", "b81e44c0aa93") not in run.app.model.requests
    )
    await run.press("enter")
    assert sent(run) == []
    assert any("no longer pending" in n and "nothing was sent" in n for n in run.notes())
    assert not any("denial sent" in note for note in run.notes())


@console()
async def test_a_grant_typed_while_the_request_went_is_not_sent(run: Run) -> None:
    await run.press("2", "g", *"30")
    run.app._deliver(BusEvent("edge-1", ("approvals", "b81e44c0aa93"), None))
    await run.until(
        "the request to go", lambda: ("edge-1", "b81e44c0aa93") not in run.app.model.requests
    )
    await run.press("enter")
    assert sent(run) == []
    assert any("nothing was sent" in note for note in run.notes())


@console()
async def test_a_kill_typed_while_the_session_ended_is_not_sent(run: Run) -> None:
    await run.press("1", "k", *"runaway")
    end = {"v": 1, "seq": 30_000, "kind": "session_end", "session": "edge-1-7a01-2"}
    run.app._deliver(BusEvent("edge-1", ("sessions", "edge-1-7a01-2", "end"), end))
    await run.until(
        "the session to end",
        lambda: run.app.model.sessions[("edge-1", "edge-1-7a01-2")].ended_at is not None,
    )
    await run.press("enter")
    assert sent(run) == []
    assert any("has already ended" in note for note in run.notes())


def _on_screen(run: Run) -> str:
    """The text the terminal shows now, row after row."""
    svg = run.app.export_screenshot()
    rows = re.findall(r"<text [^>]*>(.*?)</text>", svg)
    return html.unescape("".join(rows)).replace("\xa0", " ")


@console(size=(80, 24))
async def test_a_sessions_statement_shows_whole_below_its_list(run: Run) -> None:
    """The session's list cut a statement to its column (120 characters at most, fewer
    on screen): a DELETE's ``OR 1=1`` after 200 characters of a string was never in view
    as it happened. The highlighted statement shows whole below the list, wrapped."""
    sql = "DELETE FROM orders WHERE id = 5 AND note <> '" + "x" * 200 + "'" + " " * 300
    body = {
        "v": 1,
        "seq": 20_000,
        "ts": "2026-11-26T10:15:00.000000Z",
        "kind": "statement",
        "session": "edge-1-7a01-1",
        "statement_seq": 900,
        "sql": sql + "OR 1=1",
        "decision": "allowed",
    }
    await run.press("1", "down", "enter")
    run.app._deliver(BusEvent("edge-1", ("sessions", "edge-1-7a01-1", "statements"), body))
    await run.until("the statement", lambda: "OR 1=1" in _on_screen(run))
    assert "x' OR 1=1" in _on_screen(run)  # its blanks as the server reads them: one
    await run.press("up")
    assert "OR 1=1" not in _on_screen(run)  # the statement before it, whole


def test_a_ledger_records_statement_shows_whole_below_the_list(tmp_path: Path) -> None:
    """The ledger's list cut a statement to its column (400 characters at most, about
    20 on an 80-column screen), with no detail: a DELETE's ``OR 1=1`` after 300
    characters of a string was never in view, its harmless start all an auditor saw.
    The highlighted record shows whole below the list, wrapped, its long runs of blanks
    as one marker saying how many (as ``sqlgate replay``), with its decision and rule."""
    db = tmp_path / "ledger.db"
    session = {"session": "S1", "identity": "agent@example.com"}
    sql = "DELETE FROM t WHERE id = 1 AND note <> '" + "x" * 300 + "'" + " " * 300 + "OR 1=1"

    async def write() -> None:
        async with LedgerWriter(db, generate_key(), checkpoint_interval=3600) as writer:
            await writer.append({"kind": "session_start", **session, "client": "10.0.0.5"})
            await writer.append(
                {
                    "kind": "statement",
                    **session,
                    "statement_seq": 1,
                    "sql": sql,
                    "decision": "allowed",
                    "rule": "writes-with-where",
                    "reason": "a DELETE with a WHERE",
                }
            )
            await writer.append({"kind": "result", **session, "statement_seq": 1, "affected": 6})

    asyncio.run(write())
    app = ConsoleApp(RecordedSource([]), ledger=LedgerFile(db, None), clock=lambda: NOW)

    async def scenario(run: Run) -> None:
        await run.press("3")
        await run.until("the records", lambda: len(run.app.ledger_records) == 4)
        # the newest first: the writer's closing checkpoint, the result, the statement
        await run.press("down", "down")
        await run.until("the statement", lambda: "OR 1=1" in _on_screen(run))
        screen = _on_screen(run)
        assert "x'\u27e8300 spaces\u27e9OR 1=1" in screen
        assert "allowed  rule writes-with-where: a DELETE with a WHERE" in screen
        await run.press("down")  # the session's start: its client, by name
        await run.until("the session start", lambda: "client 10.0.0.5" in _on_screen(run))
        assert "OR 1=1" not in _on_screen(run)

    drive(app, scenario, size=(80, 24))
