"""Session recording and replay through a real gateway: a session with reads, a masked
read, a refusal and an approval replays with all of them in order as the agent saw
them, at its own pace scaled by ``--speed``; a changed recording fails ``ledger verify``;
``ledger export --with-results`` carries the answers."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from cryptography.hazmat.primitives import serialization
from lab import cursors
from lab.approvals import Held, approvals_toml
from lab.broker import Broker
from lab.clients import ledger_records, run_mariadb, run_sqlgate
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB
from lab.tokens import Provider

from appliance import operator

pytestmark = pytest.mark.integration

CARD = "4111111111111111"
PAUSE_S = 1.5  # a pause in the session, which a replay at --speed 1 takes as long


@pytest.fixture(scope="module")
def recorded(
    mariadb: MariaDB, broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, str]]:
    """A gateway with recording, masking and approvals, and one session played on it."""
    work = tmp_path_factory.mktemp("gw")
    provider = Provider(work / "idp")
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.rec_cards",
        "CREATE TABLE shop.rec_cards (id INT PRIMARY KEY, owner VARCHAR(20), card VARCHAR(19))",
        f"INSERT INTO shop.rec_cards VALUES (1, 'Ann', '{CARD}'), (2, 'Bob', NULL)",
    )
    extra = (
        approvals_toml(work, broker, provider, timeout_s=30)
        + """
[recording]
max_bytes = 65536
max_rows = 100

[[masking]]
column = "shop.rec_cards.card"
strategy = "last4"

[[rules]]
name = "review-rec-deletes"
statements = ["DELETE"]
tables = ["shop.rec_cards"]
action = "review"
"""
    )
    gw = GatewayProcess(work, mariadb, mariadb.pki, extra_toml=extra, name="rec-gw").start()
    conn = gw.connect(database="shop")
    with conn.cursor() as cur:
        cur.execute("SELECT 1 + 1 AS two")
        cur.execute("SELECT id, owner FROM rec_cards ORDER BY id")
        time.sleep(PAUSE_S)
        cur.execute("SELECT card FROM rec_cards WHERE id = 1")
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute("UPDATE rec_cards SET owner = 'x'")
    conn.close()
    held = Held(gw, "DELETE FROM rec_cards WHERE id = 2")
    bus = broker.bus_config(user=broker.operator_user)
    deadline = time.monotonic() + 15
    request = None
    while request is None and time.monotonic() < deadline:
        pending = asyncio.run(operator.list_pending(bus, "rec-gw"))
        request = next((r for r in pending if r.sql.startswith("DELETE FROM rec_cards")), None)
    assert request is not None
    token = provider.token(email="dba@example.com", groups=["dba"])
    asyncio.run(operator.decide(bus, request.id, "approve", token, "dba@example.com"))
    assert held.result() is None
    held.close()
    sessions = [r["session"] for r in ledger_records(gw.ledger) if r["kind"] == "session_start"]
    gw.stop()
    yield gw, sessions[0]


def assert_in_order(text: str, pieces: list[str]) -> None:
    """Every piece is in ``text``, in this order."""
    positions = [text.find(piece) for piece in pieces]
    assert all(p >= 0 for p in positions), (pieces, text)
    assert positions == sorted(positions), (pieces, text)


def replay(gw: GatewayProcess, session: str, *args: str) -> tuple[str, float]:
    started = time.monotonic()
    out = run_sqlgate("replay", session, "--ledger", str(gw.ledger), *args)
    assert out.returncode == 0, out.stderr
    return out.stdout, time.monotonic() - started


def test_the_session_replays_in_order_as_the_agent_saw_it(
    recorded: tuple[GatewayProcess, str],
) -> None:
    gw, session = recorded
    text, _ = replay(gw, session, "--speed", "100")
    order = [
        "> SELECT 1 + 1 AS two",
        "| 2   |",
        "(1 row, ",
        "> SELECT id, owner FROM rec_cards ORDER BY id",
        "| 2  | Bob   |",
        "> SELECT card FROM rec_cards WHERE id = 1",
        "| ************1111 |",
        "masked: shop.rec_cards.card",
        "> UPDATE rec_cards SET owner = 'x'",
        "REFUSED: sqlgate: blocked by rule 'update-without-where'",
        "session ended",
    ]
    assert_in_order(text, order)
    assert CARD not in text


def test_the_approval_is_in_place(recorded: tuple[GatewayProcess, str]) -> None:
    gw, _ = recorded
    sessions = [r["session"] for r in ledger_records(gw.ledger) if r["kind"] == "session_start"]
    text, _ = replay(gw, sessions[1], "--speed", "100")
    order = [
        "> DELETE FROM rec_cards WHERE id = 2",
        "HELD for approval",
        "APPROVED by dba@example.com",
        "1 affected",
    ]
    assert_in_order(text, order)


def test_timings_are_scaled_by_speed(recorded: tuple[GatewayProcess, str]) -> None:
    gw, session = recorded
    _, own_pace = replay(gw, session, "--speed", "1")
    _, faster = replay(gw, session, "--speed", "10")
    assert own_pace >= PAUSE_S
    assert faster < own_pace - PAUSE_S * 0.8


def test_json_format_carries_the_answers(recorded: tuple[GatewayProcess, str]) -> None:
    gw, session = recorded
    text, _ = replay(gw, session, "--speed", "1000", "--format", "json")
    steps = [json.loads(line) for line in text.splitlines()]
    answers = [s["answer"] for s in steps if "answer" in s]
    rows = [r["rows"] for a in answers for r in a["results"] if "rows" in r]
    assert [["************1111"]] in rows and [["2"]] in rows
    assert [s["at"] for s in steps] == sorted(s["at"] for s in steps)


def test_export_with_results_for_evidence(recorded: tuple[GatewayProcess, str]) -> None:
    gw, session = recorded
    records = ledger_records(gw.ledger, "--session", session, "--with-results")
    results = [r for r in records if r["kind"] == "result" and "answer" in r]
    assert results and all(len(r["recording"]) == 64 for r in results)
    assert any(
        res.get("rows") == [["************1111"]] for r in results for res in r["answer"]["results"]
    )


def test_a_changed_recording_fails_verification_and_is_not_replayed(
    recorded: tuple[GatewayProcess, str], tmp_path: Path
) -> None:
    gw, session = recorded
    copy = tmp_path / "ledger.db"
    with sqlite3.connect(gw.ledger) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as db:
        digest, body = db.execute(
            "SELECT hash, body FROM recordings WHERE instr(body, ?) > 0", (b"************1111",)
        ).fetchone()
        db.execute(
            "UPDATE recordings SET body = ? WHERE hash = ?",
            (body.replace(b"************1111", CARD.encode()), digest),
        )
    key = serialization.load_pem_private_key((gw.workdir / "ledger.key").read_bytes(), None)
    pub = tmp_path / "ledger.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert (
        run_sqlgate("ledger", "verify", "--ledger", str(gw.ledger), "--pubkey", str(pub)).returncode
        == 0
    )
    bad = run_sqlgate("ledger", "verify", "--ledger", str(copy), "--pubkey", str(pub))
    assert bad.returncode == 1
    assert "recording of this result was changed" in bad.stderr
    out = run_sqlgate("replay", session, "--ledger", str(copy), "--speed", "1000")
    assert "ALTERED" in out.stdout and CARD not in out.stdout


def test_the_console_replays_a_session_with_play_pause_step_and_speed(
    recorded: tuple[GatewayProcess, str],
) -> None:
    from console.drive import Run, drive
    from textual.widgets import RichLog

    from tui.app import ConsoleApp
    from tui.ledger import LedgerFile
    from tui.screens.replay import ReplayScreen
    from tui.sources import RecordedSource

    gw, session = recorded
    app = ConsoleApp(RecordedSource([]), ledger=LedgerFile(gw.ledger, None))

    def lines(run: Run) -> str:
        log = run.app.screen.query_one("#replay-log", RichLog)
        return "\n".join(strip.text for strip in log.lines)

    async def scenario(run: Run) -> None:
        run.app.replay_session(session)
        await run.until("the replay", lambda: isinstance(run.app.screen, ReplayScreen))
        screen = run.app.screen
        assert isinstance(screen, ReplayScreen)
        await run.press("n", "n")
        assert screen.shown == 2 and not screen.playing
        assert "session " in lines(run) and "> SET NAMES" in lines(run)
        assert "SELECT 1 + 1 AS two" not in lines(run)
        await run.press("plus", "plus", "plus", "plus", "plus", "plus")
        assert screen.speed == 200.0
        await run.press("minus", "minus", "minus", "minus", "minus", "minus")
        assert screen.speed == 0.5
        await run.press("space")  # the session's 1.5 s pause takes 3 s at x0.5
        assert screen.playing
        await run.press("plus", "plus", "plus", "plus")
        assert screen.speed == 10.0
        await run.until("the end", lambda: screen.done)
        text = lines(run)
        assert "SELECT 1 + 1 AS two" in text
        assert "************1111" in text and CARD not in text
        assert "REFUSED" in text and text.index("REFUSED") > text.index("************1111")

    drive(app, scenario)


# A prepared statement read through a cursor: its rows come in the fetches' answers.

CURSOR_ROWS = 5
CURSOR_MAX_ROWS = 3  # [recording] max_rows: the second fetch (4 rows) is cut


@pytest.fixture(scope="module")
def cursor_session(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, str]]:
    """mysql-connector's prepared cursor asking for a server cursor (READ_ONLY): one
    fetch of one row, then one of the rest."""
    import functools

    from appliance.mysql.constants import CursorType

    work = tmp_path_factory.mktemp("gw-cursor")
    rows = ", ".join(f"({i}, 'owner{i}', '{CARD[:-1]}{i}')" for i in range(1, CURSOR_ROWS + 1))
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.rec_cursor",
        "CREATE TABLE shop.rec_cursor (id INT PRIMARY KEY, owner VARCHAR(20), card VARCHAR(19))",
        f"INSERT INTO shop.rec_cursor VALUES {rows}",
    )
    extra = f"""
[recording]
max_bytes = 65536
max_rows = {CURSOR_MAX_ROWS}

[[masking]]
column = "shop.rec_cursor.card"
strategy = "last4"
"""
    gw = GatewayProcess(work, mariadb, mariadb.pki, extra_toml=extra, name="rec-cur").start()
    conn = gw.connector()
    conn.cmd_stmt_execute = functools.partial(
        conn.cmd_stmt_execute, flags=int(CursorType.READ_ONLY)
    )
    cur = conn.cursor(prepared=True)
    cur.execute("SELECT id, owner, card FROM rec_cursor WHERE id > ? ORDER BY id", (0,))
    statement_id = cur._prepared["statement_id"]
    fetched = []
    for count in (1, 100):  # COM_STMT_FETCH of one row, then of the others
        conn.cmd_stmt_fetch(statement_id, count)
        rows, _ = conn.get_rows(binary=True, columns=cur.description)
        fetched += [tuple(r) for r in rows]
    cur.close()
    conn.close()
    assert fetched == [(i, f"owner{i}", f"************111{i}") for i in range(1, CURSOR_ROWS + 1)]
    gw.stop()
    statements = [r for r in ledger_records(gw.ledger) if r["kind"] == "statement"]
    assert [r["command"] for r in statements].count("COM_STMT_FETCH") == 2, statements
    yield gw, statements[0]["session"]


def test_a_cursors_rows_replay_with_its_fetches(
    cursor_session: tuple[GatewayProcess, str],
) -> None:
    """The fetches' answers were read without the execute's columns: the execute
    replayed as an empty table and the fetched rows were not shown at all."""
    gw, session = cursor_session
    text, _ = replay(gw, session, "--speed", "1000")
    order = [
        "> SELECT id, owner, card FROM rec_cursor WHERE id > ? ORDER BY id",
        "(cursor opened; its rows come with the fetches)",
        "| 1  | owner1 | ************1111 |",
        "| 2  | owner2 | ************1112 |",
        "| 4  | owner4 | ************1114 |",
        "(more rows came back than were recorded)",
    ]
    assert_in_order(text, order)
    assert "owner5" not in text  # beyond max_rows
    assert "columns=" not in text and CARD[:-1] not in text


def test_a_cursors_rows_are_exported_with_its_fetches(
    cursor_session: tuple[GatewayProcess, str],
) -> None:
    gw, session = cursor_session
    records = ledger_records(gw.ledger, "--session", session, "--with-results")
    commands = {r["statement_seq"]: r["command"] for r in records if r["kind"] == "statement"}
    results = [r for r in records if r["kind"] == "result"]
    execute = next(r for r in results if commands[r["statement_seq"]] == "COM_STMT_EXECUTE")
    assert execute["answer"]["results"][0]["cursor"] is True
    assert execute["answer"]["results"][0]["rows"] == []
    fetches = [r for r in results if commands[r["statement_seq"]] == "COM_STMT_FETCH"]
    answers = [f["answer"] for f in fetches]
    assert "problem" not in answers[0] and "columns=" not in json.dumps(answers), answers
    assert [a["results"][0]["rows"] for a in answers] == [
        [["1", "owner1", "************1111"]],
        [[str(i), f"owner{i}", f"************111{i}"] for i in range(2, CURSOR_MAX_ROWS + 2)],
    ]
    # the second fetch had 4 rows: [recording] max_rows kept 3
    assert [f["rows"] for f in fetches] == [1, CURSOR_ROWS - 1]
    assert [f["recording_truncated"] for f in fetches] == [False, True]


def test_a_cursor_left_open_by_a_failed_execute_replays_with_its_columns(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """An execute the server cannot read (no parameters: 1210) fails before it closes
    the statement's open cursor, whose fetches go on. The ledger forgot the cursor's
    columns at that ERR: the fetch after it was exported undecoded, shown without its
    rows, and kept whole past [recording] max_rows."""
    mariadb.admin_sql(
        "CREATE TABLE IF NOT EXISTS shop.rec_failed (id INT PRIMARY KEY, owner VARCHAR(20))",
        "DELETE FROM shop.rec_failed",
        "INSERT INTO shop.rec_failed VALUES "
        + ", ".join(f"({i}, 'owner{i}')" for i in range(1, 7)),
    )
    extra = f"""
[recording]
max_bytes = 65536
max_rows = {CURSOR_MAX_ROWS}
"""
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=extra).start()
    try:
        conn = gw.connect(database="shop")
        sql = "SELECT id, owner FROM rec_failed WHERE id > ? ORDER BY id"
        statement = cursors.open_cursor(conn, sql)
        cursors.fail_execute(conn, statement)
        fetched = len(cursors.fetch(conn, statement))
        assert fetched == 6
        conn.close()
    finally:
        assert gw.stop() == 0
    session = next(r["session"] for r in ledger_records(gw.ledger) if r["kind"] == "session_start")
    records = ledger_records(gw.ledger, "--session", session, "--with-results")
    commands = {r["statement_seq"]: r["command"] for r in records if r["kind"] == "statement"}
    (fetch,) = [
        r
        for r in records
        if r["kind"] == "result" and commands[r["statement_seq"]] == "COM_STMT_FETCH"
    ]
    assert fetch["rows"] == 6 and fetch["recording_truncated"] is True  # max_rows kept 3
    assert "columns=" not in json.dumps(fetch["answer"]), fetch["answer"]
    assert fetch["answer"]["results"][0]["rows"] == [[str(i), f"owner{i}"] for i in (1, 2, 3)]
    text, _ = replay(gw, session, "--speed", "1000")
    assert_in_order(text, ["| 1  | owner1 |", "| 3  | owner3 |"])


def test_a_fetch_replays_with_the_columns_of_its_own_statements_cursor(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """Two statements of the same text (``SELECT ? AS v``) opened cursors whose columns
    differ (a BIGINT, then a string parameter). The fetches were matched with the last
    execute of that text: the first cursor's row, the number 2387264341940850695 to the
    agent, replayed and exported as the text ``PWNED!!`` its bytes make as a string. The
    result records of executes and fetches carry the statement id now, which replay
    matches them by."""
    extra = "\n[recording]\nmax_bytes = 65536\nmax_rows = 100\n"
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=extra).start()
    forged = b"\x07PWNED!!"  # as a string: a length of 7, then 7 letters
    number = str(int.from_bytes(forged, "little"))
    try:
        conn = gw.connect(database="shop")
        first = cursors.open_cursor(conn, "SELECT ? AS v", (8, forged))  # LONGLONG
        second = cursors.open_cursor(conn, "SELECT ? AS v", (253, b"\x01x"))  # VAR_STRING
        assert cursors.fetch(conn, first) == [b"\x00\x00" + forged]
        assert cursors.first_column(cursors.fetch(conn, second)) == [b"x"]
        conn.close()
    finally:
        assert gw.stop() == 0
    session = next(r["session"] for r in ledger_records(gw.ledger) if r["kind"] == "session_start")
    records = ledger_records(gw.ledger, "--session", session, "--with-results")
    commands = {r["statement_seq"]: r["command"] for r in records if r["kind"] == "statement"}
    fetches = [
        r
        for r in records
        if r["kind"] == "result" and commands[r["statement_seq"]] == "COM_STMT_FETCH"
    ]
    assert [f["answer"]["results"][0]["rows"] for f in fetches] == [[[number]], [["x"]]]
    text, _ = replay(gw, session, "--speed", "1000")
    assert_in_order(text, [f"| {number} |", "| x |"])
    assert "PWNED" not in text
    assert [f["statement_id"] for f in fetches] == [first, second]


def test_answers_exported_with_a_filter_are_read_with_their_sessions_records(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """``ledger export --with-results`` reads each answer with what its session's records
    say (how results end, each statement's command): with ``--kind result`` or a
    ``--since`` that left those records out, a PyMySQL client's ``SELECT`` was exported
    with no rows and a "truncated OK packet", and an execute's binary row was read as
    text. The filters now choose the records written, not those read."""
    import struct

    extra = "\n[recording]\nmax_bytes = 65536\nmax_rows = 100\n"
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=extra).start()
    try:
        conn = gw.connect(database="shop")  # PyMySQL: results end with EOF packets
        with conn.cursor() as cur:
            cur.execute("SELECT 'text' AS t")
        statement = cursors.prepare(conn, "SELECT ? AS v")
        execute = struct.pack("<IBI", statement, 0, 1) + b"\x00\x01\x08\x00"
        conn._execute_command(cursors.COM_STMT_EXECUTE, execute + struct.pack("<q", 42))
        packets = [conn._read_packet() for _ in range(5)]  # count, column, EOF, row, EOF
        assert packets[3].get_all_data() == b"\x00\x00" + struct.pack("<q", 42)
        conn.close()
    finally:
        assert gw.stop() == 0

    def answers(*args: str) -> dict[int, object]:
        records = ledger_records(gw.ledger, "--with-results", *args)
        return {r["seq"]: r["answer"] for r in records if "answer" in r}

    whole = answers()
    rows = [result["rows"] for a in whole.values() for result in a["results"] if "rows" in result]
    assert [["text"]] in rows and [["42"]] in rows
    assert answers("--kind", "result") == whole
    times = {r["seq"]: r["ts"] for r in ledger_records(gw.ledger) if r["kind"] == "result"}
    since = sorted(times.values())[1]  # after the login's SET NAMES: its records left out
    assert answers("--since", since) == {s: a for s, a in whole.items() if times[s] >= since}


# What came back, value for value, and how each result set ended.

ANSWERS_MAX_ROWS = 4


@pytest.fixture(scope="module")
def answers_session(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, list[str]]]:
    """A session: a SELECT the server stops with an error on its third row (after
    sending two), then one cut at ``max_rows``; then one in latin1 that reads bytes and
    text through both protocols (PyMySQL, then mysql-connector's prepared statement)."""
    work = tmp_path_factory.mktemp("gw-answers")
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.rec_answers",
        "CREATE TABLE shop.rec_answers (id INT PRIMARY KEY)",
        "INSERT INTO shop.rec_answers VALUES (1), (2), (3), (4), (5), (6)",
        "DROP TABLE IF EXISTS shop.rec_values",
        "CREATE TABLE shop.rec_values (id INT PRIMARY KEY, bl BLOB, bits BIT(12), "
        "txt VARCHAR(20) CHARACTER SET utf8mb4, word VARCHAR(20) CHARACTER SET latin1)",
        "INSERT INTO shop.rec_values VALUES "
        "(1, x'ff5c78', b'101010101010', 'x\\\\xff', 'caf\u00e9'), (2, '', NULL, '', NULL)",
    )
    extra = f"\n[recording]\nmax_bytes = 65536\nmax_rows = {ANSWERS_MAX_ROWS}\n"
    gw = GatewayProcess(work, mariadb, mariadb.pki, extra_toml=extra, name="rec-ans").start()
    conn = gw.connect(database="shop")
    with conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError, match="more than 1 row"):
            cur.execute(HALFWAY)
        cur.execute("SELECT id FROM rec_answers ORDER BY id")
        assert len(cur.fetchall()) == 6
        cur.execute("SELECT 1 / 0 AS z")  # NULL and a warning (division by 0)
        assert cur.fetchall() == ((None,),) and cur.warning_count == 1
    conn._execute_command(COM_STATISTICS, b"")  # mysqladmin status
    assert conn._read_packet().get_all_data().startswith(b"Uptime: ")
    conn.close()
    conn = gw.connect(database="shop", charset="latin1", binary_prefix=False)
    with conn.cursor() as cur:
        cur.execute(VALUES)
        assert cur.fetchall() == VALUES_SEEN
    conn.close()
    cn = gw.connector(database="shop", charset="latin1")
    prepared = cn.cursor(prepared=True)
    prepared.execute(VALUES + " LIMIT ?", (10,))
    bl, bits, txt, word = prepared.fetchall()[0][1:]
    assert (bytes(bl), bits, txt, word) == (*VALUES_SEEN[0][1:3], "x\\xff", "caf\u00e9")
    cn.close()
    gw.stop()
    sessions = [r["session"] for r in ledger_records(gw.ledger) if r["kind"] == "session_start"]
    yield gw, sessions


HALFWAY = "SELECT IF(id = 3, (SELECT 1 UNION SELECT 2), id) AS x FROM rec_answers ORDER BY id"
COM_STATISTICS = 0x09
VALUES = "SELECT id, bl, bits, txt, word FROM rec_values ORDER BY id"
# as PyMySQL gave them: a BLOB and a BIT are bytes, the text is four characters x\xff
VALUES_SEEN = ((1, b"\xff\\x", b"\x0a\xaa", "x\\xff", "caf\u00e9"), (2, b"", None, "", None))


def test_a_result_set_an_error_ended_is_not_said_to_be_cut(
    answers_session: tuple[GatewayProcess, list[str]],
) -> None:
    """The server sent two rows, then an error for the third: the recording holds all
    of it, yet the replay said more rows came back than were recorded."""
    gw, sessions = answers_session
    text, _ = replay(gw, sessions[0], "--speed", "1000")
    halfway = text[text.index(HALFWAY) : text.index("> SELECT id FROM rec_answers")]
    assert_in_order(
        halfway,
        [
            "| 2 |",
            "(the server ended this result set with the error below: no more rows came)",
            "ERROR 1242 (21000): Subquery returns more than 1 row",
        ],
    )
    assert "more rows came back than were recorded" not in halfway
    cut = text[text.index("> SELECT id FROM rec_answers") :]
    assert_in_order(cut, ["| 4  |", "(more rows came back than were recorded)"])
    assert "| 5  |" not in cut


def test_values_replay_as_the_client_read_them_in_both_protocols(
    answers_session: tuple[GatewayProcess, list[str]],
) -> None:
    """Every value was read as UTF-8, bytes that were not written as ``\\xNN``: a BLOB
    holding the byte 0xFF and a text holding the four characters ``\\xff`` replayed the
    same, and a latin1 session's ``café`` replayed as ``caf\\xe9``. A value is now read in
    its column's character set, and bytes that are not text come as hex."""
    gw, sessions = answers_session
    expected = [
        ["1", {"hex": "ff5c78"}, {"hex": "0aaa"}, "x\\xff", "caf\u00e9"],
        ["2", "", None, "", None],
    ]
    for session in sessions[1:]:  # text rows (PyMySQL), then binary rows (connector)
        out = run_sqlgate("replay", session, "--ledger", str(gw.ledger), "--format", "json")
        assert out.returncode == 0, out.stderr
        tables = [
            result["rows"]
            for step in map(json.loads, out.stdout.splitlines())
            for result in step.get("answer", {}).get("results", [])
            if result.get("rows")
        ]
        assert tables == [expected]
        records = ledger_records(gw.ledger, "--session", session, "--with-results")
        exported = [
            result["rows"]
            for r in records
            if r["kind"] == "result"
            for result in r["answer"]["results"]
            if result.get("rows")
        ]
        assert exported == [expected]
        text, _ = replay(gw, session, "--speed", "1000")
        assert "| 1  | 0xFF5C78 | 0x0AAA | x\\xff | caf\u00e9 |" in text, text


def test_a_prepare_and_statistics_replay_with_what_came_back(
    answers_session: tuple[GatewayProcess, list[str]],
) -> None:
    """The answer to COM_STMT_PREPARE (the statement's parameters and columns) and the
    string of COM_STATISTICS were decoded, then left out of the transcript, of
    ``--format json`` and of the export: those steps showed nothing that came back."""
    gw, sessions = answers_session
    text, _ = replay(gw, sessions[0], "--speed", "1000")
    assert_in_order(text, ["> COM_STATISTICS", "Uptime: "])
    text, _ = replay(gw, sessions[2], "--speed", "1000")
    shown = r"prepared as statement \d+: 1 parameters, columns: id, bl, bits, txt, word"
    assert re.search(shown, text), text
    answers = [
        r["answer"]
        for session in (sessions[0], sessions[2])
        for r in ledger_records(gw.ledger, "--session", session, "--with-results")
        if r["kind"] == "result" and ("text" in r["answer"] or "prepared" in r["answer"])
    ]
    assert answers[0]["text"].startswith("Uptime: ")
    prepared = answers[1]["prepared"]
    assert [c["name"] for c in prepared["columns"]] == ["id", "bl", "bits", "txt", "word"]
    assert len(prepared["params"]) == 1 and prepared["statement_id"] > 0
    out = run_sqlgate("replay", sessions[2], "--ledger", str(gw.ledger), "--format", "json")
    steps = [json.loads(line) for line in out.stdout.splitlines()]
    assert any("prepared" in step.get("answer", {}) for step in steps)


def test_a_result_sets_warnings_replay(
    answers_session: tuple[GatewayProcess, list[str]],
) -> None:
    """The terminator of a result set carries its warning count, which the client got
    (``SELECT 1 / 0`` warns): replay and its JSON left it out."""
    gw, sessions = answers_session
    text, _ = replay(gw, sessions[0], "--speed", "1000")
    assert_in_order(text, ["> SELECT 1 / 0 AS z", "| NULL |", "(1 warnings)"])
    results = [
        result
        for r in ledger_records(gw.ledger, "--session", sessions[0], "--with-results")
        if r["kind"] == "result"
        for result in r["answer"]["results"]
        if "columns" in result
    ]
    assert [r["warnings"] for r in results if r["columns"][0]["name"] == "z"] == [1]
    assert {r["warnings"] for r in results if r["columns"][0]["name"] != "z"} == {0}


CAFE = "caf\u00e9"
PRICE = "\u0446\u0435\u043d\u0430"  # Cyrillic: not in latin1, in cp1251
DUPLICATE = "INSERT INTO rec_names VALUES (2, 'th\u00e9', 1)"


@pytest.fixture(scope="module")
def names_session(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, dict[str, str]]]:
    """Sessions whose results character set is not UTF-8: PyMySQL in latin1 (a result
    with non-ASCII column names, an error naming a value, then SET character_set_results
    = NULL), in cp1251, in utf8mb4 then SET NAMES latin1, and the mariadb CLI in latin1."""
    work = tmp_path_factory.mktemp("gw-names")
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.rec_names",
        f"CREATE TABLE shop.rec_names (id INT PRIMARY KEY, `{CAFE}` VARCHAR(20) CHARACTER SET "
        f"utf8mb4, `{PRICE}` INT, UNIQUE KEY (`{CAFE}`))",
        "INSERT INTO shop.rec_names VALUES (1, 'th\u00e9', 5)",
    )
    extra = "\n[recording]\nmax_bytes = 65536\nmax_rows = 100\n"
    gw = GatewayProcess(work, mariadb, mariadb.pki, extra_toml=extra, name="rec-names").start()
    conn = gw.connect(database="shop", charset="latin1")
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM rec_names")
        assert [d[0] for d in cur.description] == ["id", CAFE, "????"]
        with pytest.raises(pymysql.err.IntegrityError, match="Duplicate entry"):
            cur.execute(DUPLICATE)
        cur.execute("SET character_set_results = NULL")
        cur.execute("SELECT * FROM rec_names")
    conn.close()
    conn = gw.connect(database="shop", charset="cp1251")
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM rec_names")
        assert [d[0] for d in cur.description] == ["id", "caf?", PRICE]
    conn.close()
    conn = gw.connect(database="shop", charset="utf8mb4")
    conn.set_character_set("latin1")  # SET NAMES latin1, mid-session
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM rec_names")
        assert cur.description[1][0] == CAFE
    conn.close()
    acct = gw.account()
    run_mariadb(
        "SELECT * FROM rec_names WHERE id = 0",
        host=gw.host,
        port=gw.port,
        user=acct.user,
        password=acct.password,
        database="shop",
        column_names=False,
        extra_args=["--default-character-set=latin1"],
    )
    gw.stop()
    starts = [r for r in ledger_records(gw.ledger) if r["kind"] == "session_start"]
    names = ["latin1", "cp1251", "set-names", "cli"]
    yield gw, dict(zip(names, [r["session"] for r in starts], strict=True))


def test_names_and_messages_replay_in_the_sessions_character_set(
    names_session: tuple[GatewayProcess, dict[str, str]],
) -> None:
    """Column names and error messages, which the server sends in the session's
    character_set_results, were read as UTF-8: a latin1 session's column ``café``
    replayed as ``caf\\xe9``, a cp1251 one's ``цена`` as ``\\xf6\\xe5\\xed\\xe0``, and the
    error the agent read as ``Duplicate entry 'thé'`` as ``'th\\xe9'``. The recording now
    keeps the results character set, and replay and export read them in it."""
    gw, sessions = names_session
    header = f"| id | {CAFE} | "
    text, _ = replay(gw, sessions["latin1"], "--speed", "1000")
    assert_in_order(
        text,
        [
            f"{header}???? |",
            f"ERROR 1062 (23000): Duplicate entry 'th\u00e9' for key '{CAFE}'",
            "> SET character_set_results = NULL",
            f"{header}{PRICE} |",  # NULL: the names as stored, in UTF-8
        ],
    )
    assert "\\x" not in text, text
    text, _ = replay(gw, sessions["cp1251"], "--speed", "1000")
    assert f"| id | caf? | {PRICE} |" in text, text
    for session in ("set-names", "cli"):
        text, _ = replay(gw, sessions[session], "--speed", "1000")
        assert header in text and "\\x" not in text, text
    names = [
        [c["name"] for c in result["columns"]]
        for r in ledger_records(gw.ledger, "--session", sessions["cp1251"], "--with-results")
        if r["kind"] == "result"
        for result in r["answer"]["results"]
        if "columns" in result
    ]
    assert names == [["id", "caf?", PRICE]]


def test_the_rows_a_client_got_before_it_left_are_replayed(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """A client read 50 rows of a long answer and closed its connection: the statement
    replayed with no rows at all (its result had no recording), as if the agent had
    seen nothing. The rows it got are recorded (up to max_bytes), said to be cut, and
    the replay says why the answer ended."""
    import socket

    import pymysql.cursors

    extra = "\n[recording]\nmax_bytes = 1024\nmax_rows = 100000\n"
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=extra).start()
    conn = gw.connect(database="shop", cursorclass=pymysql.cursors.SSCursor)
    try:
        cur = conn.cursor()
        cur.execute("SELECT seq, REPEAT('y', 100) AS pad FROM seq_1_to_2000000")
        assert [cur.fetchone()[0] for _ in range(50)] == list(range(1, 51))
        conn._sock.shutdown(socket.SHUT_RDWR)  # gone mid-answer, as a killed client
        cur._result.unbuffered_active = False  # PyMySQL must not read the rest on close
        cur._result = None
    finally:
        conn._sock.close()
        assert gw.stop() == 0
    recs = ledger_records(gw.ledger)
    result = next(r for r in recs if r["kind"] == "result" and r.get("error") == 2013)
    assert result["recording_bytes"] == 1024 and result["recording_truncated"] is True
    text, _ = replay(gw, result["session"], "--speed", "1000")
    assert_in_order(
        text,
        [
            "| seq | pad ",
            "| 1   | yyyy",
            "| 2   | yyyy",
            "(more rows came back than were recorded)",
            "before its whole answer came: it may have run",
        ],
    )


UNENDED = "(no end of this session is recorded: it is still going, or the gateway stopped"


def test_a_session_the_gateway_never_ended_says_so(mariadb: MariaDB, tmp_path: Path) -> None:
    """The gateway was killed during a session: its replay stopped after the last
    record, a statement with no result, like the transcript of a whole session. It says
    now that no end is recorded and the rest is not known; a session that ended, or
    whose login failed, does not."""
    extra = "\n[recording]\nmax_bytes = 65536\nmax_rows = 100\n"
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=extra).start()
    conn = gw.connect(database="shop")
    with conn.cursor() as cur:
        cur.execute("SELECT 41 + 1 AS answer")
    conn.close()  # a session that ended
    with pytest.raises(pymysql.err.OperationalError):
        gw.connect(database="shop", password="wrong")  # a login that failed: no start, no end
    conn = gw.connect(database="shop")
    with conn.cursor() as cur:
        cur.execute("SELECT 6 * 7 AS answer")
    assert gw.proc is not None
    gw.proc.kill()  # no session_end for the second session
    gw.proc.wait()
    gw.proc = None
    conn.close()
    starts = [r["session"] for r in ledger_records(gw.ledger) if r["kind"] == "session_start"]
    assert len(starts) == 2
    ended, _ = replay(gw, starts[0], "--speed", "1000")
    assert "session ended" in ended and UNENDED not in ended
    failed = next(r["session"] for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed")
    refused, _ = replay(gw, failed, "--speed", "1000")
    assert "login refused for agent" in refused and UNENDED not in refused
    cut, _ = replay(gw, starts[1], "--speed", "1000")
    assert_in_order(cut, ["> SELECT 6 * 7 AS answer", UNENDED])
    assert cut.rstrip("\n").splitlines()[-1].strip().startswith(UNENDED)


def test_a_refused_login_replays_with_who_and_why(mariadb: MariaDB, tmp_path: Path) -> None:
    """The replay of a session whose login was refused was the one word ``auth_failed``:
    not the name it gave, where from, nor why. It is one line with them now, what the
    client chose (a name with an escape sequence and a line break) unable to draw."""
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki).start()
    try:
        for user in ("agent", "x\x1b[2J\n08:00:00.000  > SELECT 1"):
            with pytest.raises(pymysql.err.OperationalError):
                pymysql.connect(
                    host=gw.host, port=gw.port, user=user, password="wrong", ssl_disabled=True
                )
    finally:
        assert gw.stop() == 0
    failed = [r for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed"]
    assert len(failed) == 2
    texts = [replay(gw, r["session"], "--speed", "1000")[0] for r in failed]
    assert "login refused for agent from 127.0.0.1:" in texts[0]
    assert "wrong password for gateway account 'agent'" in texts[0]
    assert "login refused for x\ufffd[2J 08:00:00.000 > SELECT 1 from 127.0.0.1:" in texts[1]
    for text in texts:
        assert text.count("\n") == 1 and text.rstrip("\n").isprintable(), text


def test_an_answer_after_other_statements_names_its_own(mariadb: MariaDB, tmp_path: Path) -> None:
    """Pipelined statements are recorded as they are read, their results as they come
    back: the first one's rows replayed under the third statement's text, as if they
    were its answer. Such an answer now names the statement it answers."""
    import struct

    def query(sql: str) -> bytes:
        payload = b"\x03" + sql.encode()
        return struct.pack("<I", len(payload))[:3] + b"\x00" + payload

    extra = "\n[recording]\nmax_bytes = 65536\nmax_rows = 100\n"
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=extra).start()
    holder = mariadb.connect()
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT GET_LOCK('rec_pipelined', 30)")
        conn = gw.connect(database="shop")
        texts = [
            "SELECT GET_LOCK('rec_pipelined', 30) AS got, 'first' AS a",
            "SELECT 'second' AS a",
            "SELECT 'third' AS a",
        ]
        conn._sock.sendall(b"".join(map(query, texts)))  # one write: no answer awaited
        deadline = time.monotonic() + 15
        while sum(r.get("sql") in texts for r in ledger_records(gw.ledger)) < 3:
            assert time.monotonic() < deadline, "the pipelined statements were not recorded"
            time.sleep(0.05)
        with holder.cursor() as cur:
            cur.execute("SELECT RELEASE_LOCK('rec_pipelined')")
        answers = []
        for _ in texts:  # each answer read as PyMySQL reads the one it waits for
            conn._next_seq_id = 1
            conn._read_query_result()
            answers.append(conn._result.rows[0][-1])
        assert answers == ["first", "second", "third"]
        conn.close()
    finally:
        holder.close()
        assert gw.stop() == 0
    session = next(r["session"] for r in ledger_records(gw.ledger) if r["kind"] == "session_start")
    text, _ = replay(gw, session, "--speed", "1000")
    assert_in_order(
        text,
        [
            f"> {texts[0]}",
            f"> {texts[2]}",
            f"(the answer to: {texts[0]})",
            "| first |",
            f"(the answer to: {texts[1]})",
            "| second |",
            "| third |",
        ],
    )
    assert f"(the answer to: {texts[2]})" not in text  # it follows its own statement


def test_a_statement_not_in_utf8_keeps_its_bytes(
    names_session: tuple[GatewayProcess, dict[str, str]],
) -> None:
    """A latin1 client's ``INSERT ... 'thé'`` was recorded as ``'th\ufffd'`` only: the
    ledger could not tell it from ``'thë'`` but by ``sql_sha256``. Its record reads the
    text in latin1 and keeps the bytes as sent in ``sql_hex``, which verify covers, and
    replay shows both."""
    gw, sessions = names_session
    sent = DUPLICATE.encode("latin1")
    (record,) = [
        r
        for r in ledger_records(gw.ledger, "--session", sessions["latin1"])
        if r["kind"] == "statement" and r["sql"].startswith("INSERT")
    ]
    assert record["sql"] == DUPLICATE and record["sql_charset"] == "latin1"
    assert bytes.fromhex(record["sql_hex"]) == sent
    assert record["sql_sha256"] == hashlib.sha256(b"\x03" + sent).hexdigest()
    plain = [
        r
        for r in ledger_records(gw.ledger, "--session", sessions["cp1251"])
        if r["kind"] == "statement"
    ]
    assert plain and not any("sql_hex" in r for r in plain)  # ASCII: UTF-8 already
    text, _ = replay(gw, sessions["latin1"], "--speed", "1000")
    assert_in_order(text, [f"> {DUPLICATE}", f"(as sent, read in latin1: 0x{sent.hex().upper()})"])


def test_a_rewritten_statement_keeps_its_lines(mariadb: MariaDB, tmp_path: Path) -> None:
    """What ran instead of a statement (masking's rewrite) was written on one line: the
    rewrite of ``... AS x -- note`` and ``FROM t`` on the next read as if ``FROM t`` were
    part of the comment. Its lines are kept now, as the statement's are."""
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.rec_rewrite",
        "CREATE TABLE shop.rec_rewrite (id INT PRIMARY KEY, card VARCHAR(19))",
        f"INSERT INTO shop.rec_rewrite VALUES (1, '{CARD}')",
    )
    extra = (
        '\n[recording]\nmax_bytes = 65536\n\n[[masking]]\ncolumn = "shop.rec_rewrite.card"\n'
        'strategy = "last4"\non_use = "rewrite"\n'
    )
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=extra).start()
    conn = gw.connect(database="shop")
    with conn.cursor() as cur:
        cur.execute("SELECT LEFT(card, 4) AS x -- note\nFROM rec_rewrite WHERE id = 1")
        assert cur.fetchall() == (("****",),)
    conn.close()
    assert gw.stop() == 0
    session = next(r["session"] for r in ledger_records(gw.ledger) if r["kind"] == "result")
    text, _ = replay(gw, session, "--speed", "1000")
    assert re.search(
        r"\n +rewritten to mask by construction: SELECT LEFT\(IF\(.*\) AS x -- note\n"
        r" +\| FROM rec_rewrite WHERE id = 1\n",
        text,
    ), text


PADDED = "DELETE FROM rec_blanks WHERE id = 1" + " " * 300 + "OR id = 2"
PUSHED = "DELETE FROM rec_blanks WHERE id = 3 -- one row" + "\n" * 300 + "OR id = 4"
LONG = "DELETE FROM rec_blanks WHERE id = 5 AND note <> '" + "x" * 200 + "' OR id = 6"


@pytest.fixture(scope="module")
def blanks_session(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> tuple[GatewayProcess, str]:
    """A session whose statements end where a screen would not show them: after 300
    spaces, after 300 line breaks, after 200 characters of a string."""
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.rec_blanks",
        "CREATE TABLE shop.rec_blanks (id INT PRIMARY KEY, note VARCHAR(10))",
        "INSERT INTO shop.rec_blanks VALUES (1, ''), (2, ''), (3, ''), (4, ''), (5, ''), (6, '')",
    )
    extra = "\n[recording]\nmax_bytes = 65536\nmax_rows = 100\n"
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), mariadb, mariadb.pki, extra_toml=extra)
    gw.start()
    conn = gw.connect(database="shop")
    with conn.cursor() as cur:
        assert [cur.execute(sql) for sql in (PADDED, PUSHED, LONG)] == [2, 2, 2]
    conn.commit()
    conn.close()
    assert gw.stop() == 0
    session = next(r["session"] for r in ledger_records(gw.ledger) if r["kind"] == "session_start")
    return gw, session


def test_a_statements_tail_after_blanks_shows_beside_its_start(
    blanks_session: tuple[GatewayProcess, str],
) -> None:
    """300 spaces after ``WHERE id = 1`` pushed its ``OR id = 2`` past the screen's edge
    (or a pager's), and 300 line breaks after a comment printed 300 lines of ``|``
    before the ``OR id = 4`` that ran: the harmless start was all in view. A run of more
    than 16 blanks shows now as one marker saying how many, and two blank lines or more
    in a row as one line saying how many; the ledger keeps the text exact."""
    gw, session = blanks_session
    text, _ = replay(gw, session, "--speed", "1000")
    assert "> DELETE FROM rec_blanks WHERE id = 1\u27e8300 spaces\u27e9OR id = 2\n" in text
    assert re.search(
        r"> DELETE FROM rec_blanks WHERE id = 3 -- one row\n"
        r" +\| \u27e8299 blank lines\u27e9\n +\| OR id = 4\n",
        text,
    ), text
    assert len(text.splitlines()) < 20
    assert all(" " * 17 not in line[14:] for line in text.splitlines()), text  # after the time
    exported = [r.get("sql") for r in ledger_records(gw.ledger, "--kind", "statement")]
    assert PADDED in exported and PUSHED in exported  # ledger export: the exact text


def test_the_console_replay_wraps_each_line_under_its_own_text(
    blanks_session: tuple[GatewayProcess, str],
) -> None:
    """The console's replay log did not wrap: a statement showed up to the log's edge,
    the ``' OR id = 6`` after 200 characters of a string out of sight unless the operator
    scrolled sideways. Each line wraps now within the log's width, its continuation
    under its own text (right of the time and of its ``>``), where it passes for no step
    or line of its own; blank lines and blanks show folded, as in ``sqlgate replay``."""
    from console.drive import Run, drive
    from textual.widgets import RichLog

    from tui.app import ConsoleApp
    from tui.ledger import LedgerFile
    from tui.screens.replay import ReplayScreen
    from tui.sources import RecordedSource

    gw, session = blanks_session
    app = ConsoleApp(RecordedSource([]), ledger=LedgerFile(gw.ledger, None))

    async def scenario(run: Run) -> None:
        run.app.replay_session(session)
        await run.until("the replay", lambda: isinstance(run.app.screen, ReplayScreen))
        screen = run.app.screen
        assert isinstance(screen, ReplayScreen)
        await run.press(*["n"] * len(screen.steps))
        assert screen.done
        log = screen.query_one("#replay-log", RichLog)
        width = log.scrollable_content_region.width
        assert log.virtual_size.width <= width  # nothing to scroll to sideways
        lines = [strip.text.rstrip() for strip in log.lines]
        assert all(len(line) <= width for line in lines)
        text = "\n".join(lines)
        assert "> DELETE FROM rec_blanks WHERE id = 1\u27e8300 spaces\u27e9OR id = 2" in text
        assert "| \u27e8299 blank lines\u27e9\n" in text and len(lines) < 40
        start = next(n for n, line in enumerate(lines) if "WHERE id = 5" in line)
        end = next(n for n, line in enumerate(lines) if line.endswith("' OR id = 6"))
        assert end > start and all(line.startswith(" " * 16) for line in lines[start + 1 : end + 1])

    drive(app, scenario, size=(100, 30))


UNSEEN = "a\u0085b\u009b2Jc\u2028d\u202ee\x7f"  # NEL, CSI, line separator, bidi, DEL


def test_json_output_writes_no_character_a_terminal_or_a_line_reader_acts_on(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """``ledger export`` and ``replay --format json`` wrote what a session sent as it
    was: JSON escapes the C0 controls, not U+009B (CSI to a terminal that reads C1
    controls), nor U+0085, U+2028 (line ends to ``splitlines``: a record read in two
    halves) or bidi overrides. They are escaped now, the JSON values unchanged."""
    extra = "\n[recording]\nmax_bytes = 65536\nmax_rows = 100\n"
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=extra).start()
    conn = gw.connect(database="shop")
    with conn.cursor() as cur:
        cur.execute(f"SELECT '{UNSEEN}' AS v")
        assert cur.fetchall() == ((UNSEEN,),)
    conn.close()
    assert gw.stop() == 0
    session = next(r["session"] for r in ledger_records(gw.ledger) if r["kind"] == "result")
    outputs = [
        run_sqlgate("ledger", "export", "--ledger", str(gw.ledger)),
        run_sqlgate("ledger", "export", "--ledger", str(gw.ledger), "--with-results"),
        run_sqlgate("replay", session, "--ledger", str(gw.ledger), "--format", "json"),
    ]
    for out in outputs:
        assert out.returncode == 0, out.stderr
        assert not set(out.stdout) & set(UNSEEN) - set("abcdeJ2"), out.stdout
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert len(lines) == out.stdout.count("\n")
        assert f"SELECT '{UNSEEN}' AS v" in [
            (line.get("record") or line).get("sql") for line in lines
        ]
    rows = [
        result["rows"]
        for line in map(json.loads, outputs[2].stdout.splitlines())
        for result in line.get("answer", {}).get("results", [])
        if "rows" in result
    ]
    assert rows == [[[UNSEEN]]]


# A ledger someone edited: what cannot be read is one line naming the record, exit 1.


@pytest.fixture
def small_ledger(tmp_path: Path) -> Path:
    """Session S1: its start, one statement (seq 2) and its result (seq 3)."""
    from appliance.ledger import LedgerWriter
    from appliance.ledger.chain import generate_key

    db = tmp_path / "ledger.db"
    session = {"session": "S1", "identity": "agent@example.com"}

    async def write() -> None:
        async with LedgerWriter(db, generate_key(), checkpoint_interval=3600) as writer:
            await writer.append({"kind": "session_start", **session})
            statement = {"statement_seq": 1, "sql": "SELECT 1", "decision": "allowed"}
            await writer.append({"kind": "statement", **session, **statement})
            await writer.append({"kind": "result", **session, "statement_seq": 1, "rows": 1})

    asyncio.run(write())
    return db


def edit(db: Path, seq: int, body: object) -> None:
    """Replace a stored body as someone holding the file could (triggers dropped)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS records_no_update")
    conn.execute("UPDATE records SET body = ? WHERE seq = ?", (body, seq))
    conn.close()


def damaged(db: Path, *args: str) -> str:
    """The one line of ``sqlgate ARGS --ledger DB``, which must exit 1 saying the ledger
    is damaged and how to find out more."""
    done = run_sqlgate(*args, "--ledger", str(db))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"sqlgate: {db}: record 2: ")
    assert "damaged or edited; 'sqlgate ledger verify' names the first bad record" in done.stderr
    return done.stderr


@pytest.mark.parametrize(
    "body", [b'{"kind":"statement"}', "{oops", "[1,2]", 12345], ids=["blob", "text", "array", "int"]
)
def test_a_stored_body_that_is_not_a_record_is_named(small_ledger: Path, body: object) -> None:
    edit(small_ledger, 2, body)
    for args in (("replay", "S1"), ("ledger", "export", "--with-results"), ("ledger", "export")):
        damaged(small_ledger, *args)


def test_a_schema_name_that_is_not_text_is_said_to_be_damaged(small_ledger: Path) -> None:
    """A damaged page gave a trigger a name that is not UTF-8: replay, export and head
    (and verify, which opens a ledger the same way) failed with a traceback, a
    UnicodeDecodeError reading the schema's names."""
    conn = sqlite3.connect(small_ledger, isolation_level=None)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET name = CAST(X'72ff' AS TEXT) WHERE type = 'trigger'")
    conn.close()
    for args in (("replay", "S1"), ("ledger", "export", "--with-results"), ("ledger", "head")):
        done = run_sqlgate(*args, "--ledger", str(small_ledger))
        assert done.returncode == 1, done.stderr
        assert done.stderr == (
            f"sqlgate: {small_ledger}: the file is damaged (its schema names a table, index "
            "or trigger in bytes that are not UTF-8 text)\n"
        )


def test_a_record_with_a_statement_seq_that_is_not_a_number_is_named(small_ledger: Path) -> None:
    conn = sqlite3.connect(small_ledger)
    record = json.loads(conn.execute("SELECT body FROM records WHERE seq = 2").fetchone()[0])
    conn.close()
    edit(small_ledger, 2, json.dumps({**record, "statement_seq": "abc"}))
    for args in (("replay", "S1"), ("ledger", "export", "--with-results")):
        assert "its statement_seq 'abc' is not an integer" in damaged(small_ledger, *args)


def test_a_time_edited_into_a_record_cannot_draw(small_ledger: Path) -> None:
    """Every line of a step was made safe but its time, cut from ``ts`` as stored: a
    file edited by hand put an escape sequence before the statement (OSC 52 sets the
    operator's clipboard), and replay, which an operator runs before verify, wrote it."""
    conn = sqlite3.connect(small_ledger)
    record = json.loads(conn.execute("SELECT body FROM records WHERE seq = 2").fetchone()[0])
    conn.close()
    edit(small_ledger, 2, json.dumps({**record, "ts": "2026-11-29T\x1b]52;c;QUJD\x07\x1b[2J"}))
    done = run_sqlgate("replay", "S1", "--ledger", str(small_ledger), "--speed", "1000000")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(line.isprintable() for line in lines), lines
    assert lines[1] == "\ufffd]52;c;QUJD\ufffd  > SELECT 1"


def test_a_record_holding_a_lone_surrogate_is_named(small_ledger: Path) -> None:
    """A JSON escape of half a surrogate pair decodes to text that cannot be written as
    UTF-8: replay --format json and export --with-results ended in a traceback part way."""
    conn = sqlite3.connect(small_ledger)
    record = json.loads(conn.execute("SELECT body FROM records WHERE seq = 2").fetchone()[0])
    conn.close()
    edit(small_ledger, 2, json.dumps({**record, "sql": "SELECT '\ud800'"}))  # as \\ud800
    for args in (
        ("replay", "S1", "--format", "json"),
        ("replay", "S1"),
        ("ledger", "export", "--with-results"),
        ("ledger", "export"),
    ):
        assert "holds a lone surrogate" in damaged(small_ledger, *args)


def test_replay_reads_one_recording_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every recording of the session was read and decoded before the first line was
    written: memory grew with the whole session (280 MB for 8 answers of 20 MB)."""
    from appliance import replay as replay_module
    from appliance.ledger import LedgerWriter
    from appliance.ledger.chain import generate_key
    from appliance.ledger.store import RecordingReader

    db = tmp_path / "ledger.db"
    session = {"session": "S1", "identity": "agent@example.com"}
    count = 4

    async def write() -> None:
        async with LedgerWriter(db, generate_key(), checkpoint_interval=3600) as writer:
            await writer.append({"kind": "session_start", **session})
            for seq in range(1, count + 1):
                statement = {"statement_seq": seq, "sql": f"DO {seq}", "decision": "allowed"}
                await writer.append({"kind": "statement", **session, **statement})
                ok = bytes([0x00, seq, 0, 2, 0, 0, 0])  # OK, `seq` rows affected
                blob = len(ok).to_bytes(3, "little") + b"\x01" + ok
                recording = {
                    "recording": hashlib.sha256(blob).hexdigest(),
                    "recording_bytes": len(blob),
                    "recording_truncated": False,
                }
                result = {"statement_seq": seq, "rows": 0, "affected": seq, **recording}
                await writer.append_nowait({"kind": "result", **session, **result}, blob)

    asyncio.run(write())
    read: list[str] = []

    class Spy(RecordingReader):
        def get(self, digest: str) -> bytes | None:
            read.append(digest)
            return super().get(digest)

    monkeypatch.setattr(replay_module, "RecordingReader", Spy)
    steps = replay_module.steps(db, "S1", answers=False)
    first = next(s for s in steps if s.record["kind"] == "result")
    assert len(read) == 1  # the later recordings are not read yet
    assert first.answer is None and first.lines  # rendered, then its answer dropped
    rest = [s for s in steps if s.record["kind"] == "result"]
    assert len(read) == count and len(rest) == count - 1
    out = io.StringIO()
    replay_module.play(replay_module.steps(db, "S1"), out, speed=1e6)
    assert out.getvalue().count("affected") == count


def test_the_console_says_a_damaged_ledger_cannot_be_replayed(small_ledger: Path) -> None:
    """A damaged record ended the console (its replay worker raised) instead of a
    notice."""
    from console.drive import Run, drive

    from tui.app import ConsoleApp
    from tui.ledger import LedgerFile
    from tui.sources import RecordedSource

    edit(small_ledger, 2, "{oops")
    app = ConsoleApp(RecordedSource([]), ledger=LedgerFile(small_ledger, None))

    async def scenario(run: Run) -> None:
        run.app.replay_session("S1")
        await run.until(
            "the notice",
            lambda: any("damaged or edited" in str(n.message) for n in run.app._notifications),
        )
        assert run.app.is_running

    drive(app, scenario, notifications=True)


def test_a_step_far_in_the_future_waits_a_day_at_most() -> None:
    from appliance.replay import MAX_WAIT, Step, play

    waits: list[float] = []
    steps = [Step(0.0, {"ts": "0001-01-01T00:00:00Z"}, lines=["first"])]
    steps.append(Step(6e10, {"ts": "2026-01-01T00:00:00Z"}, lines=["second"]))
    out = io.StringIO()
    play(steps, out, speed=0.001, sleep=waits.append, clock=lambda: 0.0)
    assert waits == [MAX_WAIT]  # time.sleep(6e13) raises OverflowError
    assert out.getvalue().splitlines()[1].endswith("second")


def test_what_a_session_sent_cannot_forge_or_hide_transcript_lines() -> None:
    """Statement texts, reasons and error messages were written raw: a comment with a
    line break and a time in it read as a refusal that never happened, and an escape
    sequence hid the lines after it on the auditor's terminal."""
    from appliance.replay import Step, render

    sql = "DELETE FROM t WHERE id = 1 /*\n08:29:00.000    REFUSED: by rule 'x'\n*/ \x1b[8m"
    lines = render(Step(0.0, {"kind": "statement", "sql": sql, "decision": "allowed"}))
    assert lines == [
        "> DELETE FROM t WHERE id = 1 /*",
        "| 08:29:00.000    REFUSED: by rule 'x'",
        "| */ \\x1b[8m",
    ]
    # a character that draws as a blank after "--" makes no comment of what follows
    lines = render(Step(0.0, {"kind": "statement", "sql": "DELETE FROM t WHERE id = 2 --\u3164x"}))
    assert lines == ["> DELETE FROM t WHERE id = 2 --\\u3164x"]
    # what ran instead is a statement text too: a comment ends at its line's end
    rewritten = "SELECT MASK(card) -- note\nFROM t WHERE id = 3 --\u3164x"
    record = {"kind": "statement", "sql": "SELECT card FROM t", "rewritten": rewritten}
    assert render(Step(0.0, record))[1:] == [
        "  rewritten to mask by construction: SELECT MASK(card) -- note",
        "  | FROM t WHERE id = 3 --\\u3164x",
    ]
    refused = {"kind": "statement", "sql": "SELECT 1", "decision": "blocked"}
    lines = render(Step(0.0, {**refused, "reason": "no\n08:00:00.000  ok \x1b[2J"}))
    assert lines[1] == "  REFUSED: no 08:00:00.000 ok \ufffd[2J"
    for record in (
        {"kind": "approval", "decision": "approved", "approver": "a\x1b[2J", "reason": "x\ny"},
        {"kind": "session_end", "reason": "bye\r\n\x07"},
        {"kind": "alert", "alert": "x", "reason": "\x1b]0;title\x07"},
        {"kind": "result", "rows": 1, "note": "\x1b[8m"},
    ):
        for line in render(Step(0.0, record)):
            assert line.isprintable() and "\n" not in line, (record, line)
