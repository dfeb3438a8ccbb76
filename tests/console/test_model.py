"""The console's state, folded from bus events and ledger records without any I/O."""

from __future__ import annotations

from typing import Any

from console.story import NOW, messages

from tui.model import (
    EXPIRED_GRACE_S,
    GONE,
    MAX_SESSIONS,
    Change,
    Console,
    Piece,
    SessionState,
    epoch,
    pieces,
    printable,
)
from tui.sources import MAX_PAYLOAD_BYTES, TooLarge, parse_payload, split_topic, to_item


def fold(model: Console | None = None) -> Console:
    model = model or Console(lambda: NOW)
    for m in messages():
        where = split_topic("sqlgate", m.topic)
        assert where is not None
        model.event(where[0], where[1], m.payload)
    return model


def record(kind: str, seq: int, **fields: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "seq": seq,
        "ts": "2026-11-26T10:00:00.000000Z",
        "kind": kind,
        "appliance": "gw",
        "session": "gw-1",
        **fields,
    }


def test_story_sessions_statements_and_requests() -> None:
    model = fold()
    agent = model.sessions[("edge-1", "edge-1-7a01-1")]
    assert (agent.identity, agent.client, agent.target, agent.db) == (
        "agent@example.com",
        "10.77.1.10:53122",
        "orders",
        "shop",
    )
    assert (agent.statements, agent.blocked, agent.state) == (5, 1, SessionState.WAITING)
    assert [s.outcome for s in agent.history] == ["1 row", "1 row", "ERR 1227", "1 affected", "-"]
    ended = model.sessions[("edge-2", "edge-2-c3f0-9")]
    assert ended.state is SessionState.ENDED and ended.duration_s(NOW) == 400
    assert [s.state for s in model.session_list()] == ["waiting", "waiting", "ended"]
    assert [r.id for r in model.request_list()] == ["b81e44c0aa93", "4f0c2e9b1d7a"]
    assert model.request_list()[0].seconds_left(NOW) == 8
    assert model.online == 2 and model.gateways["edge-1"].head is not None
    assert [a.alert for a in model.alerts] == ["bypass", "runaway_statements"]


def test_duplicates_are_recognised_by_appliance_and_seq() -> None:
    model = fold()
    before = model.sessions[("edge-1", "edge-1-7a01-1")].statements
    assert fold(model) is model
    assert model.sessions[("edge-1", "edge-1-7a01-1")].statements == before
    assert len(model.alerts) == 2


def test_a_gateway_with_a_fresh_ledger_is_not_taken_for_duplicates() -> None:
    """Deployed again under the same name with a new ledger, a gateway counts from seq 1
    again: its records have other hashes, and are new."""
    model = Console()
    model.record(record("session_start", 1, session="old", hash="a" * 64))
    model.record(record("session_start", 1, session="old", hash="a" * 64))  # again: a duplicate
    assert model.record(record("session_start", 1, session="new", hash="b" * 64))
    assert set(model.sessions) == {("gw", "old"), ("gw", "new")}


def test_a_held_statement_is_settled_by_its_approval_and_result() -> None:
    model = Console()
    model.record(record("statement", 1, statement_seq=1, sql="ALTER TABLE t", decision="pending"))
    session = model.sessions[("gw", "gw-1")]
    assert session.state is SessionState.WAITING
    change = model.record(
        record("approval", 2, statement_seq=1, decision="approved", approver="dba")
    )
    assert change & Change.STATEMENTS
    model.record(record("result", 3, statement_seq=1, affected=0, approver="dba"))
    view = session.history[0]
    assert (view.decision, view.approver, view.outcome) == ("approved", "dba", "0 affected")
    assert session.state is SessionState.ACTIVE and session.blocked == 0
    model.record(record("statement", 4, statement_seq=2, sql="DROP TABLE t", decision="pending"))
    model.record(record("approval", 5, statement_seq=2, decision="denied", reason="no"))
    assert session.blocked == 1 and session.history[1].reason == "no"


def test_requests_appear_once_and_go_when_cleared() -> None:
    model = Console()
    body = {"v": 1, "sql_sha256": "ab", "sql": "DELETE FROM t WHERE id = 1", "expires_at": 10}
    assert model.event("gw", ("approvals", "r1"), body) & Change.NEW_APPROVAL
    assert not model.event("gw", ("approvals", "r1"), body) & Change.NEW_APPROVAL
    assert model.event("gw", ("approvals", "r1"), None) == Change.APPROVALS
    assert model.requests == {}
    assert model.event("gw", ("approvals", "r2"), {"v": 2, "sql_sha256": "ab"}) == Change.NONE


def request(expires_at: float) -> dict[str, Any]:
    return {
        "v": 1,
        "sql_sha256": "ab",
        "sql": "DELETE FROM t WHERE id = 1",
        "expires_at": expires_at,
    }


def test_a_request_past_its_expiry_goes_even_when_its_clearing_was_missed() -> None:
    now = [1000.0]
    model = Console(lambda: now[0])
    model.event("gw", ("approvals", "r1"), request(1010.0))
    model.decided.add(("gw", "r1"))
    now[0] = 1010.0 + EXPIRED_GRACE_S - 0.5  # the gateway may still be answering it
    assert model.expire() == Change.NONE and ("gw", "r1") in model.requests
    now[0] = 1010.0 + EXPIRED_GRACE_S + 0.5
    assert model.expire() == Change.APPROVALS
    assert model.requests == {} and model.decided == set()


def test_after_a_reconnect_a_request_the_broker_does_not_send_again_goes() -> None:
    model = Console(lambda: 1000.0)
    model.event("gw", ("approvals", "answered"), request(1100.0))
    model.event("gw", ("approvals", "pending"), request(1100.0))
    model.reconnected()
    # retained messages follow the subscriptions: only the pending one is sent again
    assert not model.event("gw", ("approvals", "pending"), request(1100.0)) & Change.NEW_APPROVAL
    assert model.synced() == Change.APPROVALS
    assert list(model.requests) == [("gw", "pending")]
    assert model.synced() == Change.NONE  # until the next reconnect


def test_a_gateway_that_goes_offline_raises_an_alert() -> None:
    model = Console(lambda: NOW)
    model.event("gw", ("status",), {"v": 1, "state": "online"})
    assert model.online == 1
    change = model.event("gw", ("status",), {"v": 1, "state": "offline"})
    assert change & Change.ALERTS and model.online == 0
    assert model.alerts[0].alert == "gateway_offline"
    assert model.alerts[0].ts.startswith("2026-11-26T10:15:30")


def test_ended_sessions_are_forgotten_beyond_the_bound_live_ones_never() -> None:
    model = Console()
    model.record(record("session_start", 1, session="live"))
    for n in range(MAX_SESSIONS + 10):
        sid = f"s{n}"
        model.record(record("session_start", 10 + 2 * n, session=sid))
        model.record(record("session_end", 11 + 2 * n, session=sid))
    assert len(model.sessions) == MAX_SESSIONS
    assert ("gw", "live") in model.sessions
    assert ("gw", "s0") not in model.sessions


def test_text_from_the_wire_cannot_drive_the_terminal() -> None:
    assert printable("SELECT 1;\x1b[2J\nDROP") == "SELECT 1;\\x1b[2J \u23ce DROP"
    # a line break ends a -- comment: what follows it must not read as comment
    hidden = "ALTER TABLE t COMMENT = 'x' -- table comment only\n, DROP COLUMN total"
    assert printable(hidden) == (
        "ALTER TABLE t COMMENT = 'x' -- table comment only \u23ce , DROP COLUMN total"
    )
    assert printable("x" * 50, 10) == "x" * 9 + "\u2026"


def test_a_statement_shows_as_the_server_reads_it() -> None:
    """What would not show as itself is escaped: a space the server reads as a letter
    of a name (``--`` and U+00A0 or U+3164 start no comment), bidi overrides and
    zero-width characters, a mark drawn over an ASCII character. Only the server's own
    blanks collapse."""
    assert printable("id = 2 --\u00a0x OR 1") == "id = 2 --\\xa0x OR 1"
    assert printable("id = 2 --\u3164x OR 1") == "id = 2 --\\u3164x OR 1"
    assert printable("id = 2 --\u2003x\u3000OR 1") == "id = 2 --\\u2003x\\u3000OR 1"
    assert printable("WHERE id = 2 /*\u202e*/ OR 1") == "WHERE id = 2 /*\\u202e*/ OR 1"
    assert printable("DROP TABLE or\u200bders") == "DROP TABLE or\\u200bders"
    assert printable("a =\u0338 1, e\u0301") == "a =\\u0338 1, e\\u0301"
    assert printable("x\U000e0041\ufe0f\u2028y\x85") == "x\\U000e0041\\ufe0f\\u2028y\\x85"
    assert printable("SELECT \t 1\r\x0b\x0c FROM\n\n t") == "SELECT 1 FROM \u23ce t"
    # a name in another script shows (underlined in the detail), as do accents on it
    assert printable("UPDATE s\u00e9jours SET \u0441ost = 0, \u00e9\u0301") == (
        "UPDATE s\u00e9jours SET \u0441ost = 0, \u00e9\u0301"
    )
    assert [kind for _, kind in pieces("a \u23ce\n\u0441\u00a0")] == [
        Piece.PLAIN,
        Piece.FOREIGN,  # the character the line break is shown as, written: not a break
        Piece.BREAK,
        Piece.FOREIGN,
        Piece.ESCAPED,
    ]


def test_a_huge_statement_is_cut_before_it_is_cleaned() -> None:
    assert printable("SELECT " + " " * 5_000_000 + "1", 20) == "SELECT\u2026"
    assert printable("x" * 5_000_000, 10) == "x" * 9 + "\u2026"


def test_a_payload_too_deep_or_with_a_huge_number_is_dropped() -> None:
    assert parse_payload(b"[" * 100_000) is False  # RecursionError in the parser
    assert parse_payload(b'{"v": 1, "n": ' + b"9" * 5_000 + b"}") is False  # int() limit
    assert parse_payload(b'{"v": 1, "n": 5}') == {"v": 1, "n": 5}


def test_a_message_too_large_to_read_is_a_placeholder_not_nothing() -> None:
    big = b'{"v": 1, "sql": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}'
    size = len(big)
    assert to_item("sqlgate", "sqlgate/gw/sessions/s1/statements", big) == TooLarge(
        "gw", ("sessions", "s1", "statements"), size
    )
    assert to_item("sqlgate", "sqlgate/gw/approvals/r1", big) == TooLarge(
        "gw", ("approvals", "r1"), size
    )
    assert to_item("sqlgate", "sqlgate/gw/status", big) is None
    model = Console(lambda: NOW)
    change = model.too_large("gw", ("sessions", "s1", "statements"), size)
    assert change & Change.STATEMENTS
    session = model.sessions[("gw", "s1")]
    assert session.statements == 1 and "more than the console reads" in session.history[0].sql
    assert model.too_large("gw", ("approvals", "r1"), size) & Change.NEW_APPROVAL
    request = model.requests[("gw", "r1")]
    assert request.too_large == size and "sqlgate approvals" in request.sql
    assert model.expire() == Change.NONE  # its expiry is unknown: it goes when cleared
    assert model.event("gw", ("approvals", "r1"), None) == Change.APPROVALS


START = epoch("2026-11-26T10:00:00.000000Z") or 0.0  # the ts of ``record``


def status(run: str, since: float, state: str = "online") -> dict[str, Any]:
    return {"v": 1, "appliance": "gw", "state": state, "run": run, "since": since}


def test_sessions_of_an_earlier_run_end_when_the_gateway_starts_again() -> None:
    """A gateway killed with its sessions never wrote their ends: when it is back (a
    new run), they are shown ended, and trimmed like any ended session."""
    model = Console(lambda: START + 100)
    model.event("gw", ("status",), status("r1", START - 60))
    model.record(record("session_start", 1, session="crashed"))
    model.record(record("statement", 2, session="crashed", statement_seq=1, decision="pending"))
    model.record(record("session_start", 3, session="quit"))
    model.record(record("session_end", 4, session="quit", reason="client quit"))
    model.event("gw", ("status",), status("r1", START - 60, "offline"))  # the will
    assert model.sessions[("gw", "crashed")].state is SessionState.WAITING
    change = model.event("gw", ("status",), status("r2", START + 90))
    assert change & Change.SESSIONS
    crashed = model.sessions[("gw", "crashed")]
    assert crashed.state is SessionState.ENDED and crashed.end_reason == "gateway restarted"
    assert crashed.ended_at == START + 90
    assert model.sessions[("gw", "quit")].end_reason == "client quit"
    model.record(record("session_start", 5, session="new", ts="2026-11-26T10:01:40.000000Z"))
    # the same run again (its retained status after a reconnect) ends nothing
    assert not model.event("gw", ("status",), status("r2", START + 90)) & Change.SESSIONS
    assert model.sessions[("gw", "new")].state is SessionState.ACTIVE


def test_sessions_read_from_the_ledger_before_the_run_began_are_ended() -> None:
    model = Console(lambda: START + 100)
    model.record(record("session_start", 1, session="old"))  # history, before any status
    model.record(record("session_start", 2, session="live", ts="2026-11-26T10:01:00.000000Z"))
    model.event("gw", ("status",), status("r9", START + 30))
    assert model.sessions[("gw", "old")].state is SessionState.ENDED
    assert model.sessions[("gw", "live")].state is SessionState.ACTIVE


def test_a_kill_that_finds_no_live_session_ends_it_on_the_console() -> None:
    model = Console(lambda: START + 5)
    model.record(record("session_start", 1, session="gone"))
    alert = record(
        "alert",
        2,
        session="gone",
        alert="session_kill_rejected",
        reason="no live session gone on this gateway",
    )
    assert model.record(alert) & Change.SESSIONS
    gone = model.sessions[("gw", "gone")]
    assert gone.state is SessionState.ENDED and gone.end_reason == "no live session on the gateway"


def test_a_write_shows_the_rows_it_changed() -> None:
    model = Console()
    for seq, (rows, affected) in enumerate(((0, 2), (5, 0), (0, 0), (None, 3)), 1):
        model.record(record("statement", 2 * seq, statement_seq=seq, sql="x", decision="allowed"))
        model.record(record("result", 2 * seq + 1, statement_seq=seq, rows=rows, affected=affected))
    outcomes = [view.outcome for view in model.sessions[("gw", "gw-1")].history]
    assert outcomes == ["2 affected", "5 rows", "0 rows", "3 affected"]


def retaining(appliance: str, *, state: str = "online", retains: bool = True) -> dict[str, Any]:
    """A gateway's ``status``; ``retains``: it keeps its live sessions' starts retained."""
    body: dict[str, Any] = {"v": 1, "appliance": appliance, "state": state, "run": "r1"}
    return {**body, "sessions_retained": True} if retains else body


def started(model: Console, session: str, seq: int, appliance: str = "gw") -> Change:
    """The session's start on ``sessions/<session>/start`` (retained while it lives)."""
    body = {**record("session_start", seq, session=session, hash=f"{seq:064x}")}
    body["appliance"] = appliance
    return model.event(appliance, ("sessions", session, "start"), body)


def cleared(model: Console, session: str, appliance: str = "gw") -> Change:
    where = to_item("sqlgate", f"sqlgate/{appliance}/sessions/{session}/start", b"")
    assert where is not None and not isinstance(where, TooLarge) and where.payload is None
    return model.event(where.appliance, where.path, where.payload)


def test_a_retained_start_shows_a_live_session_and_its_clearing_ends_it() -> None:
    """A console that connects after a session began learns of it from its start, which
    the gateway retains while it lives; the gateway clears it (an empty payload) when
    the session is over, before its ``session_end`` arrives."""
    model = Console(lambda: START + 100)
    model.reconnected()
    model.event("gw", ("status",), retaining("gw"))
    assert started(model, "gw-1", 1) & Change.SESSIONS
    assert model.synced() == Change.NONE
    assert model.sessions[("gw", "gw-1")].state is SessionState.ACTIVE
    # the clearing of a session it never saw is no session, and no error
    assert cleared(model, "gw-9") == Change.NONE and ("gw", "gw-9") not in model.sessions
    assert cleared(model, "gw-1") & Change.SESSIONS
    ended = model.sessions[("gw", "gw-1")]
    assert (ended.state, ended.end_reason, ended.ended_at) == (
        SessionState.ENDED,
        GONE,
        START + 100,
    )
    model.record(record("session_end", 2, session="gw-1", reason="client quit"))
    assert ended.end_reason == "client quit"
    assert started(model, "gw-1", 1) == Change.NONE  # sent again: still ended
    assert ended.state is SessionState.ENDED


def test_after_a_sync_a_live_session_whose_start_is_not_retained_has_ended() -> None:
    """After each reconnect, the broker sends the starts it retains: a session shown live
    whose start it no longer holds ended while the console was away. Only gateways that
    say they retain them are judged, and only while online (a gateway cut off from the
    broker still serves its sessions) and once the broker has sent their status again
    (restarted, it lost what it retained until the gateway is back); a start that comes
    later makes it live again."""
    model = Console(lambda: START + 100)
    for name, state, retains in (
        ("gw", "online", True),
        ("old", "online", False),  # a gateway that does not retain them
        ("off", "online", True),
        ("quiet", "online", True),
    ):
        model.event(name, ("status",), retaining(name, state=state, retains=retains))
    for seq, (name, session) in enumerate(
        (("gw", "stays"), ("gw", "went"), ("old", "old-1"), ("off", "off-1"), ("quiet", "q-1")), 1
    ):
        started(model, session, seq, name)
    model.reconnected()
    for name, state, retains in (("gw", "online", True), ("old", "online", False)):
        model.event(name, ("status",), retaining(name, state=state, retains=retains))
    model.event("off", ("status",), retaining("off", state="offline"))  # its will
    # (no status from "quiet": a broker restarted without persistence has none yet)
    started(model, "stays", 1)  # retained: a duplicate, yet it says the session lives
    assert model.synced() & Change.SESSIONS
    states = {key[1]: s.state for key, s in model.sessions.items()}
    assert states == {
        "stays": SessionState.ACTIVE,
        "went": SessionState.ENDED,
        "old-1": SessionState.ACTIVE,
        "off-1": SessionState.ACTIVE,
        "q-1": SessionState.ACTIVE,
    }
    assert model.sessions[("gw", "went")].end_reason == GONE
    assert started(model, "went", 2) & Change.SESSIONS  # its start after all
    assert model.sessions[("gw", "went")].state is SessionState.ACTIVE
    # a session read from the ledger file after the sync, live there, ended unseen
    model.history([record("session_start", 9, session="history-only")])
    assert model.sessions[("gw", "history-only")].end_reason == GONE
    # until the next sync, nothing is judged
    model.disconnected()
    model.history([record("session_start", 10, session="while-away")])
    assert model.sessions[("gw", "while-away")].state is SessionState.ACTIVE
