"""The gateway as a MySQL server: commands, big packets, many sessions, failures, shutdown."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pymysql
import pytest
from lab.clients import ClientError, ledger_records, run_mariadb
from lab.gateway import GatewayAccount, GatewayProcess
from lab.mariadb import MariaDB, free_port
from pymysql.constants import CLIENT

from appliance.mysql import packets
from appliance.mysql.constants import Command, CursorType
from appliance.mysql.wire import PacketReader, frame

pytestmark = pytest.mark.integration


def scalar(conn: Any, sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
        return row[0] if row else None


def send_raw(conn: Any, payload: bytes) -> None:
    conn._next_seq_id = 0
    conn._write_bytes(frame(0, payload))


def read_raw(conn: Any) -> bytes:
    """The next packet's payload, without PyMySQL raising on ERR."""
    header = conn._read_bytes(4)
    length = header[0] | header[1] << 8 | header[2] << 16
    return bytes(conn._read_bytes(length))


# ------------------------------------------------------------------- commands


def test_ping_init_db_statistics_and_field_list(gateway: GatewayProcess) -> None:
    with gateway.connect(database=None) as conn:
        conn.ping(reconnect=False)
        conn.select_db("shop")
        assert scalar(conn, "SELECT DATABASE()") == "shop"
        send_raw(conn, bytes([Command.STATISTICS]))
        assert read_raw(conn).startswith(b"Uptime: ")
        send_raw(conn, bytes([Command.FIELD_LIST]) + b"customers\0")
        names = []
        while True:
            payload = read_raw(conn)
            if payload[0] == 0xFE and len(payload) < 9:
                break
            names.append(packets.parse_column_definition(payload).name)
        assert names == [b"id", b"name", b"email", b"card_number"]
        assert scalar(conn, "SELECT 42") == 42  # still in step


def test_set_option_and_reset_connection(gateway: GatewayProcess) -> None:
    with gateway.connect() as conn:
        send_raw(conn, bytes([Command.SET_OPTION, 0, 0]))  # multi-statements on
        assert read_raw(conn)[0] in (0x00, 0xFE)
        with conn.cursor() as cur:
            cur.execute("SET @x = 5; SELECT @x")
            assert cur.nextset() and cur.fetchall() == ((5,),)
        send_raw(conn, bytes([Command.RESET_CONNECTION]))
        assert read_raw(conn)[0] == 0x00
        assert scalar(conn, "SELECT @x") is None  # the reset reached the server


def test_process_kill_ends_another_session(gateway: GatewayProcess) -> None:
    with gateway.connect() as victim, gateway.connect() as killer:
        victim_id = scalar(victim, "SELECT CONNECTION_ID()")
        # the id the client saw in the greeting is the backend's own
        assert victim.server_thread_id[0] == victim_id
        send_raw(killer, bytes([Command.PROCESS_KILL]) + struct.pack("<I", victim_id))
        assert read_raw(killer)[0] == 0x00
        with pytest.raises(pymysql.err.OperationalError):
            scalar(victim, "SELECT 1")
        assert scalar(killer, "SELECT 2") == 2


def test_a_commented_kill_ends_the_identitys_own_session(gateway: GatewayProcess) -> None:
    """Agents tag statements with comments: the gateway reads KILL's thread id as the
    server does, comments and all, and lets it end the identity's own session."""
    with gateway.connect() as victim, gateway.connect() as killer:
        victim_id = scalar(victim, "SELECT CONNECTION_ID()")
        with killer.cursor() as cur:
            cur.execute(f"/* agent: cleanup */ KILL /* stuck */ CONNECTION {victim_id} -- done")
        with pytest.raises(pymysql.err.OperationalError):
            scalar(victim, "SELECT 1")
        assert scalar(killer, "SELECT 2") == 2


def test_kill_of_another_identitys_session_is_refused(
    gateway: GatewayProcess, mariadb: MariaDB
) -> None:
    """Every session shares the backend account, which may end any of its threads: the
    gateway lets agent end only agent's sessions, by KILL or COM_PROCESS_KILL."""
    with (
        gateway.connect(user="dba", password="dba-secret-2") as victim,
        gateway.connect() as killer,
    ):
        victim_id = scalar(victim, "SELECT CONNECTION_ID()")
        with pytest.raises(pymysql.err.OperationalError) as refused:
            scalar(killer, f"KILL {victim_id}")
        assert refused.value.args[0] == 1227 and "'kill-other'" in refused.value.args[1]
        send_raw(killer, bytes([Command.PROCESS_KILL]) + struct.pack("<I", victim_id))
        error = read_raw(killer)
        assert error[:3] == b"\xff\xcb\x04" and b"'kill-other'" in error
        with pytest.raises(pymysql.err.OperationalError):
            scalar(killer, "KILL USER agent")
        assert scalar(victim, "SELECT 3") == 3  # still there
    root = mariadb.admin_sql("SELECT CONNECTION_ID()")[0][0]  # a thread outside the gateway
    with gateway.connect() as killer, pytest.raises(pymysql.err.OperationalError):
        scalar(killer, f"KILL {root}")


def assert_recorded_as_malformed(gateway: GatewayProcess, marker: str, command: str) -> None:
    """The session that later ran ``SELECT '<marker>'`` has one ``statement`` record of
    ``command``, blocked by ``malformed-packet``."""
    statements = ledger_records(gateway.ledger, "--kind", "statement")
    sid = next(r["session"] for r in statements if marker in r["sql"])
    (refused,) = [r for r in statements if r["session"] == sid and r["command"] == command]
    assert refused["decision"] == "blocked" and refused["rule"] == "malformed-packet"


def test_a_kill_shorter_than_its_thread_id_is_refused(gateway: GatewayProcess) -> None:
    """BUG: COM_PROCESS_KILL with 2 bytes of thread id was decided and recorded as KILL of
    this identity's own session, while MariaDB read the id's other bytes past the packet
    (a NUL, then what earlier packets left in its buffer) and went for another thread
    (16777268 for 52). It is refused (1835) and sent nowhere; both sessions go on."""
    marker = f"short-kill-{time.time_ns()}"
    with gateway.connect() as victim, gateway.connect() as killer:
        victim_id = scalar(victim, "SELECT CONNECTION_ID()")
        assert victim_id < 1 << 16
        assert scalar(killer, "SELECT 1") == 1
        send_raw(killer, bytes([Command.PROCESS_KILL]) + struct.pack("<I", victim_id)[:2])
        err = packets.parse_err(read_raw(killer))
        assert err.code == 1835 and "malformed COM_PROCESS_KILL" in err.message, err
        assert scalar(victim, "SELECT 2") == 2  # still there
        assert scalar(killer, f"SELECT '{marker}'") == marker
    assert_recorded_as_malformed(gateway, marker, "COM_PROCESS_KILL")


def test_a_set_option_without_its_option_is_refused(gateway: GatewayProcess) -> None:
    """BUG: a 1-byte COM_SET_OPTION was forwarded, and MariaDB answered it with EOF,
    having read the option from past the packet (what earlier packets left in its
    buffer). It is refused (1835) and sent nowhere; the session goes on."""
    marker = f"short-set-option-{time.time_ns()}"
    with gateway.connect() as conn:
        assert scalar(conn, "SELECT 'xx'") == "xx"
        send_raw(conn, bytes([Command.SET_OPTION]))
        err = packets.parse_err(read_raw(conn))
        assert err.code == 1835 and "malformed COM_SET_OPTION" in err.message, err
        assert scalar(conn, f"SELECT '{marker}'") == marker
    assert_recorded_as_malformed(gateway, marker, "COM_SET_OPTION")


def test_a_field_list_without_its_nul_is_refused(gateway: GatewayProcess) -> None:
    """BUG: COM_FIELD_LIST without the NUL after its table name was recorded as SHOW
    COLUMNS FROM the table with no wildcard, while MariaDB read the wildcard from past
    the packet (what earlier packets left in its buffer). It is refused (1835) and sent
    nowhere; the session goes on."""
    marker = f"unended-field-list-{time.time_ns()}"
    with gateway.connect() as conn:
        assert scalar(conn, "SELECT 'customers%'") == "customers%"  # left in its buffer
        send_raw(conn, bytes([Command.FIELD_LIST]) + b"customers")
        err = packets.parse_err(read_raw(conn))
        assert err.code == 1835 and "malformed COM_FIELD_LIST" in err.message, err
        assert scalar(conn, f"SELECT '{marker}'") == marker
    assert_recorded_as_malformed(gateway, marker, "COM_FIELD_LIST")


def test_unknown_command_gets_1047_and_the_session_goes_on(gateway: GatewayProcess) -> None:
    with gateway.connect() as conn:
        send_raw(conn, b"\x99whatever")
        err = packets.parse_err(read_raw(conn))
        assert err.code == 1047 and err.message.startswith("sqlgate: unknown or unsupported")
        send_raw(conn, bytes([Command.SHUTDOWN]))
        assert packets.parse_err(read_raw(conn)).code == 1047
        assert scalar(conn, "SELECT 3") == 3


def test_a_flood_of_commands_is_read_no_faster_than_it_is_answered(
    gateway: GatewayProcess,
) -> None:
    """A client that pipelines 100,000 commands the gateway refuses itself and does not
    read its answers: the gateway stops reading it (memory stays flat; unthrottled, it
    grew by about 1.5 kB a command), other sessions go on, and once the client reads,
    every command is answered and recorded."""
    n = 100_000
    with gateway.connect() as conn, gateway.connect() as other:
        marker = f"flood-{time.time_ns()}"
        scalar(conn, f"SELECT '{marker}'")
        before = gateway.rss_kib()
        sock = conn._sock
        sock.settimeout(10)
        sock.sendall(frame(0, b"\x99") * n)  # fits in the sockets' buffers
        peak = before
        for _ in range(30):
            time.sleep(0.1)
            peak = max(peak, gateway.rss_kib())
        assert scalar(other, "SELECT 7") == 7  # meanwhile, others are served
        assert (peak - before) < 48 * 1024, f"grew by {(peak - before) // 1024} MiB"
        # then it reads: n ERR packets, in order, none lost
        answered = 0
        reader = PacketReader(1 << 24)
        while answered < n:
            reader.feed(sock.recv(1 << 20))
            while (pkt := reader.next_packet()) is not None:
                parsed = packets.parse_err(pkt.payload)
                assert parsed.code == 1047
                answered += 1
        assert answered == n
        assert scalar(conn, "SELECT 8") == 8
    statements = ledger_records(gateway.ledger, "--kind", "statement")
    sid = next(r["session"] for r in statements if marker in r["sql"])
    refused = [r for r in statements if r["session"] == sid and r["rule"] == "unknown-command"]
    assert len(refused) == n


def test_a_megabyte_statement_is_classified_while_other_sessions_go_on(
    gateway: GatewayProcess,
) -> None:
    """A 1 MB text takes seconds to parse; it is classified in the worker process, so a
    statement another session sends meanwhile is decided (and recorded) first, and the
    large one is then decided like any other: it runs, and its records are complete."""
    marker = f"meanwhile-{time.time_ns()}"
    ors = " OR ".join(f"id = {i}" for i in range(75_000))
    big = f"SELECT id FROM customers WHERE {ors} /* {marker} */"
    assert 1_000_000 < len(big) <= 1024 * 1024  # under max_statement_bytes
    with gateway.connect() as conn, gateway.connect() as other:
        send_raw(conn, b"\x03" + big.encode())
        time.sleep(0.5)  # the gateway has the whole text and is classifying it
        assert scalar(other, f"SELECT '{marker}'") == marker
        conn._next_seq_id = 1
        conn._read_query_result()
        assert {row[0] for row in conn._result.rows} == {1, 2, 3}
        assert scalar(conn, "SELECT 9") == 9
    records = ledger_records(gateway.ledger)
    statements = [r for r in records if r["kind"] == "statement" and marker in r["sql"]]
    assert [r["sql"] for r in statements] == [f"SELECT '{marker}'", big]  # in that order
    (mine,) = [r for r in statements if r["sql"] == big]
    assert mine["decision"] == "allowed" and mine["kind"] == "statement"
    (result,) = [
        r
        for r in records
        if r["kind"] == "result"
        and (r["session"], r["statement_seq"]) == (mine["session"], mine["statement_seq"])
    ]
    assert result["rows"] == 3 and result["error"] is None


def test_a_large_text_of_a_session_that_ends_while_it_is_classified_is_recorded(
    gateway: GatewayProcess, mariadb: MariaDB
) -> None:
    """The target connection is lost while the worker reads the text, and the client
    leaves: the text still gets its statement record (not decided, not run) and its
    result, and both come before the session's end, which counts it."""
    marker = f"ended-{time.time_ns()}"
    ors = " OR ".join(f"id = {i}" for i in range(75_000))
    big = f"SELECT id FROM customers WHERE {ors} /* {marker} */"
    with gateway.connect() as conn:
        backend_id = scalar(conn, "SELECT CONNECTION_ID()")
        send_raw(conn, b"\x03" + big.encode())
        time.sleep(0.3)  # the gateway is classifying it
        mariadb.admin_sql(f"KILL CONNECTION {backend_id}")
        with pytest.raises(pymysql.err.OperationalError) as lost:
            read_raw(conn)  # the connection closes with nothing sent, as MariaDB's would
        assert lost.value.args[0] == 2013
    deadline = time.monotonic() + 30
    while True:
        records = ledger_records(gateway.ledger)
        statements = [r for r in records if r["kind"] == "statement" and marker in r["sql"]]
        if statements or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (statement,) = statements
    assert statement["decision"] == "blocked" and statement["rule"] == "not-decided"
    mine = [r for r in records if r.get("session") == statement["session"]]
    (result,) = [
        r
        for r in mine
        if r["kind"] == "result" and r["statement_seq"] == statement["statement_seq"]
    ]
    assert result["error"] == 1105 and "did not run" in result["reason"]
    (end,) = [r for r in mine if r["kind"] == "session_end"]
    assert statement["seq"] < result["seq"] < end["seq"]
    assert end["statements"] == statement["statement_seq"]


def test_commands_pipelined_with_large_texts_are_recorded_in_the_order_sent(
    gateway: GatewayProcess,
) -> None:
    """Two large texts (classified in the worker, one after the other), a command the
    gateway refuses itself and a short statement, in one burst: the answers and the
    ledger's statement records follow the order they were sent in."""
    marker = f"burst-{time.time_ns()}"
    ors = " OR ".join(f"id = {i}" for i in range(20_000))
    first = f"SELECT id FROM customers WHERE id = 1 OR {ors} /* {marker} 1 */"
    second = f"SELECT id FROM customers WHERE id = 2 OR {ors} /* {marker} 2 */"
    with gateway.connect() as conn:
        conn._sock.sendall(
            frame(0, b"\x03" + first.encode())
            + frame(0, b"\x99")
            + frame(0, b"\x03" + second.encode())
            + frame(0, f"\x03SELECT '{marker} 3'".encode())
        )
        conn._next_seq_id = 1
        conn._read_query_result()
        assert {row[0] for row in conn._result.rows} == {1, 2, 3}
        assert packets.parse_err(read_raw(conn)).code == 1047
        conn._next_seq_id = 1
        conn._read_query_result()
        assert {row[0] for row in conn._result.rows} == {1, 2, 3}
        conn._next_seq_id = 1
        conn._read_query_result()
        assert conn._result.rows == ((f"{marker} 3",),)
    statements = ledger_records(gateway.ledger, "--kind", "statement")
    (sid,) = {r["session"] for r in statements if marker in r["sql"]}
    mine = [r for r in statements if r["session"] == sid]
    assert [r["statement_seq"] for r in mine] == sorted(r["statement_seq"] for r in mine)
    start = next(i for i, r in enumerate(mine) if r["sql"] == first)
    assert [(r["command"], r["sql"]) for r in mine][start : start + 4] == [
        ("COM_QUERY", first),
        ("COM_0x99", ""),
        ("COM_QUERY", second),
        ("COM_QUERY", f"SELECT '{marker} 3'"),
    ]


def test_change_user_is_refused_and_the_session_goes_on(gateway: GatewayProcess) -> None:
    with gateway.connect() as conn:
        send_raw(conn, bytes([Command.CHANGE_USER]) + b"root\0\0shop\0")
        err = packets.parse_err(read_raw(conn))
        assert err.code == 1227
        assert "COM_CHANGE_USER is refused" in err.message
        assert "Open a new connection" in err.message
        assert scalar(conn, "SELECT CURRENT_USER()").startswith("sqlgate_native@")


def test_pipelined_commands_keep_their_order(gateway: GatewayProcess) -> None:
    with gateway.connect() as conn:
        burst = b"".join(
            frame(0, p)
            for p in (
                b"\x03SELECT 1",
                b"\x99",  # refused locally, answered between the two others
                b"\x03SELECT 2",
                bytes([Command.PING]),
                b"\x03SELECT 3",
            )
        )
        conn._sock.sendall(burst)
        results = []
        for expected_kind in ("rs", "err", "rs", "ok", "rs"):
            if expected_kind == "rs":
                conn._next_seq_id = 1
                conn._read_query_result()
                results.append(conn._result.rows[0][0])
            else:
                payload = read_raw(conn)
                results.append(payload[0])
        assert results == [1, 0xFF, 2, 0x00, 3]
        assert scalar(conn, "SELECT 4") == 4


def test_commands_before_a_pipelined_quit_are_answered_and_what_follows_it_ignored(
    gateway: GatewayProcess, mariadb: MariaDB
) -> None:
    """A client pipelines an INSERT, COM_QUIT and one more command. MariaDB runs and
    answers the INSERT, then closes, never reading what followed the COM_QUIT; so does
    the gateway (it answered ERR 1158 in place of the INSERT's OK and ran nothing)."""
    marker = time.time_ns() % 1_000_000_000
    mariadb.admin_sql("CREATE TABLE IF NOT EXISTS shop.after_quit (id INT)")
    with gateway.connect() as conn:
        burst = b"".join(
            frame(0, p)
            for p in (
                f"\x03INSERT INTO after_quit VALUES ({marker})".encode(),
                bytes([Command.QUIT]),
                b"\x03SELECT 1",
            )
        )
        conn._sock.sendall(burst)
        answer = read_raw(conn)
        assert answer[0] == 0x00, answer  # the INSERT's OK
        assert packets.read_lenenc_int(answer, 1)[0] == 1  # one row affected
        assert conn._sock.recv(100) == b""  # then the connection closes, nothing more
    rows = mariadb.admin_sql(f"SELECT COUNT(*) FROM shop.after_quit WHERE id = {marker}")
    assert rows == [(1,)]
    deadline = time.monotonic() + 30
    while True:
        records = ledger_records(gateway.ledger)
        (insert,) = [
            r for r in records if r.get("sql") == f"INSERT INTO after_quit VALUES ({marker})"
        ]
        mine = [r for r in records if r.get("session") == insert["session"]]
        if any(r["kind"] == "session_end" for r in mine) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    statements = [(r["command"], r["sql"]) for r in mine if r["kind"] == "statement"]
    assert statements[-1] == ("COM_QUERY", insert["sql"])  # SELECT 1 was never read
    (result,) = [
        r for r in mine if r["kind"] == "result" and r["statement_seq"] == insert["statement_seq"]
    ]
    assert result["affected"] == 1 and result["error"] is None
    (end,) = [r for r in mine if r["kind"] == "session_end"]
    assert end["reason"] == "client quit"


def test_cursor_fetch_through_the_gateway(gateway: GatewayProcess) -> None:
    with gateway.connect() as conn:
        send_raw(conn, bytes([Command.STMT_PREPARE]) + b"SELECT id FROM customers ORDER BY id")
        ok = packets.parse_stmt_prepare_ok(read_raw(conn))
        deprecate = bool(conn.server_capabilities & CLIENT.DEPRECATE_EOF) and bool(
            conn.client_flag & CLIENT.DEPRECATE_EOF
        )
        for _ in range(ok.column_count + (0 if deprecate else 1)):
            read_raw(conn)
        execute = bytes([Command.STMT_EXECUTE]) + struct.pack(
            "<IBI", ok.statement_id, CursorType.READ_ONLY, 1
        )
        send_raw(conn, execute)
        assert read_raw(conn) == b"\x01"  # one column
        column = packets.parse_column_definition(read_raw(conn))
        eof = read_raw(conn)
        assert packets.parse_eof(eof).status & 0x0040  # CURSOR_EXISTS: no rows yet
        seen = []
        while True:
            send_raw(conn, bytes([Command.STMT_FETCH]) + struct.pack("<II", ok.statement_id, 2))
            while True:
                payload = read_raw(conn)
                if payload[0] == 0xFE and len(payload) < 9:
                    status = packets.parse_eof(payload).status
                    break
                seen.append(packets.parse_binary_row(payload, [column])[0])
            if status & 0x0080:  # LAST_ROW_SENT
                break
        assert [struct.unpack("<i", v)[0] for v in seen if v is not None] == [1, 2, 3]
        send_raw(conn, bytes([Command.STMT_CLOSE]) + struct.pack("<I", ok.statement_id))
        assert scalar(conn, "SELECT 5") == 5


def _prepare(conn: Any, sql: bytes) -> int:
    """COM_STMT_PREPARE over a PyMySQL connection's socket: the statement id."""
    send_raw(conn, bytes([Command.STMT_PREPARE]) + sql)
    ok = packets.parse_stmt_prepare_ok(read_raw(conn))
    deprecate = bool(conn.server_capabilities & CLIENT.DEPRECATE_EOF) and bool(
        conn.client_flag & CLIENT.DEPRECATE_EOF
    )
    for _ in range(ok.column_count + (0 if deprecate or not ok.column_count else 1)):
        read_raw(conn)
    return ok.statement_id


FAILS = b"SET @a = (SELECT 1 FROM no_such_table)"
"""A text the policy allows and the server fails to prepare (1146)."""


def _try_prepare(conn: Any, sql: bytes) -> int | bytes:
    """COM_STMT_PREPARE of a text with neither parameters nor columns: the statement id,
    or the ERR payload it was answered with."""
    send_raw(conn, bytes([Command.STMT_PREPARE]) + sql)
    answer = read_raw(conn)
    if answer[0] == 0xFF:
        return answer
    ok = packets.parse_stmt_prepare_ok(answer)
    assert ok.column_count == ok.param_count == 0
    return ok.statement_id


def _sql_error(conn: Any, sql: str) -> int | None:
    """Run ``sql`` as a text: None, or the error code it failed with."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    except pymysql.err.MySQLError as exc:
        return int(exc.args[0])
    return None


def test_a_session_holds_at_most_max_prepared_per_session_statements(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """Every session is the gateway's one backend user, and the server's
    max_prepared_stmt_count (16,382) is shared by all: one session that prepared
    statements and never closed them made prepares fail in every other. Beyond
    ``max_prepared_per_session`` (COM_STMT_PREPARE and SQL-level PREPARE together) a
    prepare is refused and not sent; closes, deallocations, failed prepares and a reset
    of the connection give room again, a name prepared again takes none."""

    def held_at_server() -> int:
        rows = mariadb.admin_sql("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")
        return int(rows[0][1])

    gw = GatewayProcess(
        tmp_path / "gw", mariadb, mariadb.pki, appliance_extra="max_prepared_per_session = 3"
    ).start()
    try:
        with gw.connect() as conn, gw.connect() as other:
            before = held_at_server()
            # failed prepares hold nothing: the protocol's, and a name's
            missing = _try_prepare(conn, FAILS)
            assert isinstance(missing, bytes) and missing[1:3] == (1146).to_bytes(2, "little")
            assert _sql_error(conn, f"PREPARE s1 FROM '{FAILS.decode()}'") == 1146
            first, second = _try_prepare(conn, b"SET @a = 1"), _try_prepare(conn, b"SET @a = 2")
            assert isinstance(first, int) and isinstance(second, int)
            assert _sql_error(conn, "PREPARE s1 FROM 'SET @a = 3'") is None
            assert _sql_error(conn, "PREPARE S1 FROM 'SET @a = 4'") is None  # the same name
            assert held_at_server() - before == 3
            refused = _try_prepare(conn, b"SET @a = 5")
            assert isinstance(refused, bytes) and refused[1:3] == (1227).to_bytes(2, "little")
            assert b"max_prepared_per_session" in refused and b"COM_STMT_CLOSE" in refused
            with pytest.raises(pymysql.err.OperationalError) as named:
                with conn.cursor() as cur:
                    cur.execute("PREPARE s2 FROM 'SET @a = 6'")
            assert named.value.args[0] == 1227 and "DEALLOCATE PREPARE" in named.value.args[1]
            assert held_at_server() - before == 3  # neither was sent
            assert isinstance(_try_prepare(other, b"SET @a = 7"), int)  # another session's own
            send_raw(conn, bytes([Command.STMT_CLOSE]) + struct.pack("<I", first))
            assert isinstance(_try_prepare(conn, b"SET @a = 5"), int)  # in its place
            assert _sql_error(conn, "DEALLOCATE PREPARE s1") is None
            assert _sql_error(conn, "PREPARE s2 FROM 'SET @a = 6'") is None
            # a PREPARE that fails drops what its name held
            assert _sql_error(conn, f"PREPARE s2 FROM '{FAILS.decode()}'") == 1146
            assert _sql_error(conn, "PREPARE s3 FROM 'SET @a = 8'") is None
            assert _sql_error(conn, "PREPARE s4 FROM 'SET @a = 9'") == 1227
            send_raw(conn, bytes([Command.RESET_CONNECTION]))  # drops every one
            assert read_raw(conn)[0] == 0x00
            for i in range(3):
                assert isinstance(_try_prepare(conn, f"SET @a = {i}".encode()), int)
            assert _sql_error(conn, "PREPARE s5 FROM 'SET @a = 10'") == 1227
            assert scalar(conn, "SELECT 11") == 11
    finally:
        assert gw.stop() == 0
    blocked = [
        r
        for r in ledger_records(gw.ledger, "--kind", "statement")
        if r.get("rule") == "max-prepared-per-session"
    ]
    assert [(r["command"], r["decision"]) for r in blocked] == [
        ("COM_STMT_PREPARE", "blocked"),
        ("COM_QUERY", "blocked"),
        ("COM_QUERY", "blocked"),
        ("COM_QUERY", "blocked"),
    ]
    assert "Traceback" not in gw.log()


def test_the_last_prepared_statement_id_runs_only_right_after_its_prepare(
    gateway: GatewayProcess, mariadb: MariaDB
) -> None:
    """MariaDB runs the statement prepared last for id 0xFFFFFFFF. Through the gateway an
    execute of it runs right after its prepare (as the prepare's statement); after any
    other command it is refused, so every execution names the statement it runs."""
    last = bytes([Command.STMT_EXECUTE]) + struct.pack("<IBI", 0xFFFFFFFF, 0, 1)
    with mariadb.connect() as conn:  # the control: the server runs SELECT 7
        _prepare(conn, b"SELECT 7")
        send_raw(conn, last)
        assert read_raw(conn) == b"\x01"  # a result set of one column
    with gateway.connect() as conn:
        _prepare(conn, b"SELECT 7")
        send_raw(conn, last)
        assert read_raw(conn) == b"\x01"
        read_raw(conn)  # the column
        assert read_raw(conn)[0] == 0xFE  # its EOF
        assert read_raw(conn) == b"\x00\x00\x07\x00\x00\x00"  # 7 as a binary INT
        assert read_raw(conn)[0] == 0xFE
        assert scalar(conn, "SELECT 5") == 5
        send_raw(conn, last)  # after another command
        error = read_raw(conn)
        assert error[:3] == b"\xff\xcb\x04"  # ERR 1227
        assert b"sqlgate: statement id 0xFFFFFFFF" in error
        assert scalar(conn, "SELECT 5") == 5
    time.sleep(0.1)
    (refused,) = [r for r in ledger_records(gateway.ledger) if r.get("rule") == "last-prepared"]
    assert refused["decision"] == "blocked" and refused["command"] == "COM_STMT_EXECUTE"


TWO_STRINGS = b"\x00\x01\xfd\x00\xfd\x00\x01a\x03zzz"
"""An execute's parameter block: no NULLs, new types (two VAR_STRINGs), 'a' and 'zzz'."""


def _an_update_of_two_rows(mariadb: MariaDB, conn: Any, table: str) -> int:
    """shop.<table> with the rows (1, 'a') and (2, 'zzz'), and ``UPDATE <table> SET name
    = ? WHERE name = ?`` prepared on ``conn`` through the gateway: its statement id."""
    with mariadb.connect() as admin, admin.cursor() as cur:
        cur.execute(f"CREATE OR REPLACE TABLE shop.{table} (id INT PRIMARY KEY, name TEXT)")
        cur.execute(f"INSERT INTO shop.{table} VALUES (1, 'a'), (2, 'zzz')")
        admin.commit()
    sql = f"UPDATE {table} SET name = ? WHERE name = ?".encode()
    send_raw(conn, bytes([Command.STMT_PREPARE]) + sql)
    statement = packets.parse_stmt_prepare_ok(read_raw(conn)).statement_id
    while read_raw(conn)[0] != 0xFE:  # its two parameters, then their EOF
        pass
    return statement


def test_long_data_for_the_last_prepared_statement_id_is_refused(
    gateway: GatewayProcess, mariadb: MariaDB
) -> None:
    """MariaDB binds a COM_STMT_SEND_LONG_DATA of id 0xFFFFFFFF to its last statement.
    Relayed, its chunk became the first value of the next execute of that statement by
    its own id, while the gateway read that execute's values without it: it recorded
    UPDATE ... SET name = 'a' WHERE name = 'zzz', and the server set the row 'a' to
    'PWNED'. The chunk is refused now (no answer, as the client expects none): the
    execute binds what its record says."""
    chunk = bytes([Command.STMT_SEND_LONG_DATA]) + struct.pack("<IH", 0xFFFFFFFF, 0)
    with gateway.connect() as conn:
        statement = _an_update_of_two_rows(mariadb, conn, "ld_last")
        send_raw(conn, chunk + b"PWNED")  # no answer either way
        execute = bytes([Command.STMT_EXECUTE]) + struct.pack("<IBI", statement, 0, 1)
        send_raw(conn, execute + TWO_STRINGS)
        assert read_raw(conn)[0] == 0x00  # OK
        assert scalar(conn, "SELECT 5") == 5
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT id, name FROM shop.ld_last ORDER BY id")
        rows = cur.fetchall()
        cur.execute("DROP TABLE shop.ld_last")
    assert rows == ((1, "a"), (2, "a"))  # SET name = 'a' WHERE name = 'zzz', as recorded
    time.sleep(0.1)
    records = ledger_records(gateway.ledger)
    (refused,) = [r for r in records if r.get("command") == "COM_STMT_SEND_LONG_DATA"]
    assert refused["decision"] == "blocked" and refused["rule"] == "last-prepared"
    (execute,) = [
        r
        for r in records
        if r.get("kind") == "statement"
        and "ld_last" in (r.get("sql") or "")
        and r.get("command") == "COM_STMT_EXECUTE"
    ]
    assert execute["params"] == ["'a'", "'zzz'"]


def test_long_data_an_execute_that_did_not_run_left_bound_is_not_read_past(
    gateway: GatewayProcess, mariadb: MariaDB
) -> None:
    """An execute the server refuses before it binds its values (types cut short: 1835)
    leaves the statement's long data bound there; the gateway had dropped it with that
    execute, and read the next one's values without it: recorded with 'a' and 'zzz',
    run with the chunk and 'a'. Its values are not read now, the block is kept."""
    block = TWO_STRINGS
    with gateway.connect() as conn:
        statement = _an_update_of_two_rows(mariadb, conn, "ld_kept")
        head = bytes([Command.STMT_EXECUTE]) + struct.pack("<IBI", statement, 0, 1)
        long_data = bytes([Command.STMT_SEND_LONG_DATA]) + struct.pack("<IH", statement, 0)
        send_raw(conn, long_data + b"PWNED")  # no answer
        send_raw(conn, head + block[:4])  # the types cut short
        assert read_raw(conn)[:3] == b"\xff\x2b\x07"  # ERR 1835: it did not run
        send_raw(conn, head + block)
        assert read_raw(conn)[0] == 0x00  # OK: it ran with the chunk, as MariaDB does
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT id, name FROM shop.ld_kept ORDER BY id")
        rows = cur.fetchall()
        cur.execute("DROP TABLE shop.ld_kept")
    assert rows == ((1, "PWNED"), (2, "zzz"))
    time.sleep(0.1)
    executes = [
        r
        for r in ledger_records(gateway.ledger)
        if r.get("kind") == "statement"
        and r.get("command") == "COM_STMT_EXECUTE"
        and "ld_kept" in (r.get("sql") or "")
    ]
    last = executes[-1]
    assert "params" not in last, last  # not 'a' and 'zzz': not what ran
    assert "long data of parameter 0 may still be bound" in last["params_error"]
    assert last["params_hex"] == block.hex()


# ---------------------------------------------------------------- big traffic


def test_20mb_value_round_trip_and_16mib_parameter(gateway: GatewayProcess) -> None:
    big = bytes(range(256)) * (20_000_000 // 256)
    with gateway.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS blobs (id INT PRIMARY KEY, v LONGBLOB)")
        cur.execute("DELETE FROM blobs WHERE id > 0")
        cur.execute("INSERT INTO blobs VALUES (1, %s)", (big,))  # COM_QUERY over 16 MiB
        cur.execute("SELECT v FROM blobs WHERE id = 1")  # a row over 16 MiB
        got = cur.fetchone()[0]
        assert len(got) == len(big) and got == big

    mc = gateway.connector()
    try:
        cur2 = mc.cursor(prepared=True)
        param = b"\x07" * (17 * 1024 * 1024)
        cur2.execute("INSERT INTO blobs VALUES (2, ?)", (param,))
        cur2.execute("SELECT LENGTH(v), MD5(v) = MD5(?) FROM blobs WHERE id = 2", (param,))
        assert cur2.fetchall() == [(len(param), 1)]
    finally:
        mc.close()


def test_60k_row_result(gateway: GatewayProcess) -> None:
    with gateway.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT seq, CONCAT('row-', seq) FROM seq_1_to_60000")
        rows = cur.fetchall()
        assert len(rows) == 60000
        assert rows[0] == (1, "row-1") and rows[-1] == (60000, "row-60000")


def test_400_concurrent_sessions(gateway: GatewayProcess) -> None:
    def one(i: int) -> tuple[int, int]:
        conn = gateway.connect()
        return i, conn

    with ThreadPoolExecutor(max_workers=40) as pool:
        conns = [c for _, c in pool.map(one, range(400))]
    try:
        ids = set()
        for conn in conns:
            ids.add(scalar(conn, "SELECT CONNECTION_ID()"))
        assert len(ids) == 400  # 400 live backend sessions at once

        def work(conn: Any) -> int:
            return int(scalar(conn, "SELECT COUNT(*) FROM customers"))

        with ThreadPoolExecutor(max_workers=40) as pool:
            assert list(pool.map(work, conns)) == [3] * 400
    finally:
        for conn in conns:
            conn.close()


# ------------------------------------------------------------------- failures


def test_backend_gone_mid_session(gateway: GatewayProcess, mariadb: MariaDB) -> None:
    """The client learns it as from MariaDB itself: a lost connection (2006 or 2013, as
    its command meets the closed connection), never an ERR of the gateway's."""
    with gateway.connect() as doomed, gateway.connect() as bystander:
        backend_id = scalar(doomed, "SELECT CONNECTION_ID()")
        mariadb.admin_sql(f"KILL CONNECTION {backend_id}")
        with pytest.raises(pymysql.err.OperationalError) as err:
            scalar(doomed, "SELECT 1")
        assert err.value.args[0] in (2006, 2013)
        assert scalar(bystander, "SELECT 6") == 6
    with gateway.connect() as fresh:
        assert scalar(fresh, "SELECT 7") == 7


def _session_end(gateway: GatewayProcess, marker: str) -> dict[str, Any]:
    """The session_end of the session that ran the statement with ``marker``."""
    deadline = time.monotonic() + 30
    while True:
        records = ledger_records(gateway.ledger)
        (sid,) = {r["session"] for r in records if marker in (r.get("sql") or "")}
        ends = [r for r in records if r["kind"] == "session_end" and r["session"] == sid]
        if ends or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (end,) = ends
    return end


def test_a_session_end_says_why_the_session_ended(
    gateway: GatewayProcess, mariadb: MariaDB
) -> None:
    """BUG: a session_end nobody ended had ``reason`` null, also when the target ended
    the session."""
    killed, quit = f"killed-{time.time_ns()}", f"quit-{time.time_ns()}"
    with gateway.connect() as conn:
        backend_id = scalar(conn, f"SELECT CONNECTION_ID() /* {killed} */")
        mariadb.admin_sql(f"KILL CONNECTION {backend_id}")  # while the client is idle
        end = _session_end(gateway, killed)
    assert end["reason"] == "target orders closed the connection"
    assert "ended_by" not in end  # nobody ended it: the target went away
    with gateway.connect() as conn:
        scalar(conn, f"SELECT 1 /* {quit} */")
    assert _session_end(gateway, quit)["reason"] == "client quit"  # PyMySQL's COM_QUIT


def test_client_gone_mid_result_closes_the_backend_session(
    gateway: GatewayProcess, mariadb: MariaDB
) -> None:
    conn = gateway.connect()
    backend_id = scalar(conn, "SELECT CONNECTION_ID()")
    send_raw(conn, b"\x03SELECT REPEAT('x', 1000) FROM seq_1_to_5000000")
    conn._sock.recv(65536)  # the result has started
    conn._sock.shutdown(socket.SHUT_RDWR)
    conn._force_close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = mariadb.admin_sql(
            f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {backend_id}"
        )
        if rows[0][0] == 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the backend session outlived its client")


def test_a_half_closed_client_still_gets_its_answer(gateway: GatewayProcess) -> None:
    """A client that shuts down its sending side after a query (as `nc -N` does) is
    still reading: the answer comes, then the gateway closes."""
    conn = gateway.connect()
    try:
        send_raw(conn, b"\x03SELECT 41 + 1")
        conn._sock.shutdown(socket.SHUT_WR)
        conn._sock.settimeout(10)
        data = b""
        while chunk := conn._sock.recv(65536):
            data += chunk
    finally:
        conn._force_close()
    reader = PacketReader(1 << 24)
    reader.feed(data)
    payloads = []
    while (pkt := reader.next_packet()) is not None:
        payloads.append(pkt.payload)
    assert payloads[0] == b"\x01"  # one column, then its definition and the row
    assert b"\x0242" in payloads  # the row: the text "42"


def test_malformed_client_packet_gets_err_then_close(gateway: GatewayProcess) -> None:
    with gateway.connect() as bystander:
        conn = gateway.connect()
        conn._sock.sendall(b"\x01\x00\x00\x05\x0e")  # a command with sequence id 5
        err = packets.parse_err(read_raw(conn))
        assert err.code == 1158 and err.message.startswith("sqlgate: bad packet")
        assert conn._sock.recv(10) == b""  # closed by the gateway
        assert scalar(bystander, "SELECT 8") == 8
    assert "Traceback" not in gateway.log()


def test_garbage_instead_of_a_handshake(gateway: GatewayProcess) -> None:
    with socket.create_connection((gateway.host, gateway.port), timeout=10) as sock:
        greeting = b""
        reader = PacketReader(1 << 16)
        while (pkt := reader.next_packet()) is None:
            chunk = sock.recv(4096)
            assert chunk
            reader.feed(chunk)
        greeting = pkt.payload
        assert packets.parse_greeting(greeting).server_version.startswith(b"5.5.5-10.")
        sock.sendall(b"\x05\x00\x00\x01hello")
        reply = sock.recv(4096)
        assert reply[4] == 0xFF
        assert sock.recv(10) == b""
    assert "Traceback" not in gateway.log()


def _greeted(gateway: GatewayProcess) -> socket.socket:
    """A raw connection to the gateway that has read its greeting."""
    sock = socket.create_connection((gateway.host, gateway.port), timeout=20)
    reader = PacketReader(1 << 16)
    while reader.next_packet() is None:
        chunk = sock.recv(4096)
        assert chunk
        reader.feed(chunk)
    return sock


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the gateway sends until it closes the connection (a reset, when it
    closed with bytes it did not read, may cut its error message off)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _refused_packet(reply: bytes) -> None:
    """The gateway's refusal of an oversized login packet (a failed login, answered
    after the packet's sequence id), unless a reset overtook it."""
    if reply:
        assert reply[3] == 2  # the greeting was 0, the client's packet 1
        err = packets.parse_err(reply[4:])
        assert err.code == 1045 and "login packet is longer" in err.message, err


def test_a_client_that_does_not_log_in_in_time_is_told_and_let_go(
    gateway: GatewayProcess,
) -> None:
    """Connections that never log in held a connection to the target each (and filled
    its max_connections) for as long as they liked."""
    started = time.monotonic()
    with _greeted(gateway) as sock, gateway.connect() as bystander:
        reply = _until_closed(sock)
        waited = time.monotonic() - started
        err = packets.parse_err(reply[4:])
        assert err.code == 1043
        assert err.message == "sqlgate: the login did not complete within 8 s"
        assert 7.5 < waited < 17
        assert scalar(bystander, "SELECT 5") == 5
    failed = ledger_records(gateway.ledger, "--kind", "auth_failed")
    assert any("did not complete within 8 s" in r["reason"] for r in failed)


def _wait_until(check: Any, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _greeting(sock: socket.socket) -> bytes:
    """The greeting the gateway sends on ``sock`` (the target's, marked)."""
    reader = PacketReader(1 << 16)
    while (pkt := reader.next_packet()) is None:
        chunk = sock.recv(4096)
        assert chunk, "closed before a greeting"
        reader.feed(chunk)
    return pkt.payload


def test_one_address_holds_at_most_max_pending_logins_connections_of_the_target(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """Each connection held one of the target's from its first byte: one address that
    opened connections and never logged in filled the target's max_connections, and the
    target turned every other client away. Now the connections beyond the bound wait
    their turn, holding nothing at the target; other addresses do not wait."""

    def at_target() -> int:
        rows = mariadb.admin_sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE USER = 'unauthenticated user'"
        )
        return int(rows[0][0])

    before = at_target()
    gw = GatewayProcess(
        tmp_path / "gw", mariadb, mariadb.pki, appliance_extra="max_pending_logins = 2"
    ).start()
    socks: list[socket.socket] = []
    try:
        socks = [socket.create_connection((gw.host, gw.port), timeout=10) for _ in range(6)]
        _wait_until(
            lambda: at_target() - before >= 6 or "max_pending_logins" in gw.log(),
            "the connections to reach the target or wait",
        )
        held = [_greeting(sock) for sock in socks[:2]]  # the first two dialled the target
        assert all(g[:1] == b"\x0a" for g in held)
        _wait_until(lambda: at_target() - before >= 2, "two logins at the target")
        assert at_target() - before <= 2  # not six
        with gw.connect(bind_address="127.0.0.2") as other:  # another address: at once
            assert scalar(other, "SELECT 7") == 7
        socks[0].close()  # a login ends: the first waiting connection takes its turn
        assert _greeting(socks[2])[:1] == b"\x0a"
        for sock in socks:
            sock.close()
        with gw.connect() as conn:  # the address's slots are free again
            assert scalar(conn, "SELECT 8") == 8
    finally:
        for sock in socks:
            sock.close()
        assert gw.stop() == 0
    assert "Traceback" not in gw.log()


def test_one_address_has_at_most_16_connections_per_slot_waiting_for_a_login(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """Waiting connections held their sockets for up to 8 s each, without a bound: one
    client opening 20,000 connections in 7 s took every file descriptor the gateway had,
    and other addresses' logins failed. Beyond 16 waiting per slot, a connection is
    refused at once (1040) and its socket freed; other addresses go on."""
    gw = GatewayProcess(
        tmp_path / "gw", mariadb, mariadb.pki, appliance_extra="max_pending_logins = 1"
    ).start()
    socks: list[socket.socket] = []
    try:
        socks = [socket.create_connection((gw.host, gw.port), timeout=10) for _ in range(17)]
        assert _greeting(socks[0])[:1] == b"\x0a"  # the one slot; 16 wait
        _wait_until(lambda: "wait for one to end" in gw.log(), "the others to wait")
        extra = [socket.create_connection((gw.host, gw.port), timeout=10) for _ in range(3)]
        socks += extra
        for sock in extra:
            reply = _until_closed(sock)
            assert reply[4:5] == b"\xff" and reply[5:7] == (1040).to_bytes(2, "little")
            assert b"max_pending_logins" in reply
        assert gw.log().count("further ones are refused until fewer wait") == 1
        with gw.connect(bind_address="127.0.0.2") as other:
            assert scalar(other, "SELECT 9") == 9
        for sock in socks:
            sock.close()
        with gw.connect() as conn:  # none wait now: the address is served again
            assert scalar(conn, "SELECT 10") == 10
    finally:
        for sock in socks:
            sock.close()
        assert gw.stop() == 0
    assert "Traceback" not in gw.log()


def test_the_gateway_serves_at_most_max_sessions_connections_from_all_addresses(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """Every connection opened one of the target's, whatever its address: agents from
    many addresses could take all of the target's max_connections, the operators' too.
    Beyond ``max_sessions`` a connection is refused at once (1040) and nothing is opened
    at the target; the sessions it serves go on, and one that ends makes room."""

    def dialled(admin: Any) -> int:
        """Connections the target has taken since it started."""
        with admin.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Connections'")
            return int(cur.fetchone()[1])

    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, appliance_extra="max_sessions = 3")
    gw.start()
    conns: list[Any] = []
    admin = mariadb.connect()
    try:
        conns = [gw.connect(bind_address=f"127.0.0.{i}") for i in (2, 3, 4)]
        before = dialled(admin)
        refused = []
        for host in ("127.0.0.5", "127.0.0.6"):  # other addresses: refused all the same
            sock = socket.create_connection((gw.host, gw.port), 10, source_address=(host, 0))
            with sock:
                refused.append(_until_closed(sock))
        for reply in refused:
            assert reply[4:5] == b"\xff" and reply[5:7] == (1040).to_bytes(2, "little")
            assert b"sqlgate: too many connections" in reply and b"max_sessions" in reply
        assert dialled(admin) == before  # nothing opened toward the target
        assert [scalar(c, f"SELECT {i}") for i, c in enumerate(conns)] == [0, 1, 2]
        conns.pop().close()
        _wait_until(lambda: "connections are accepted again" in gw.log(), "room again")
        with gw.connect(bind_address="127.0.0.5") as late:
            assert scalar(late, "SELECT 9") == 9
    finally:
        admin.close()
        for conn in conns:
            conn.close()
        assert gw.stop() == 0
    alerts = ledger_records(gw.ledger, "--kind", "alert")
    full = [r for r in alerts if r["alert"] == "max_sessions"]
    assert len(full) == 1  # once while full, not once per connection
    assert full[0]["max_sessions"] == 3 and full[0]["client"].startswith("127.0.0.5:")
    assert "2 were refused meanwhile" in gw.log()
    assert "Traceback" not in gw.log()


def test_a_handshake_larger_than_a_login_needs_is_refused_at_once(
    gateway: GatewayProcess,
) -> None:
    """Before the login, a packet may be 64 KiB (a token is at most 16 KiB): announcing a
    64 MiB handshake no longer makes the gateway hold 64 MiB per connection."""
    before = gateway.rss_kib()
    socks = [_greeted(gateway) for _ in range(8)]
    try:
        for sock in socks:
            sock.sendall(b"\xf0\xff\xff\x01" + b"\0" * (1 << 20))  # an unfinished packet
        replies = [_until_closed(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    for reply in replies:
        _refused_packet(reply)
    assert any(b"65536 bytes" in reply for reply in replies)
    assert gateway.rss_kib() - before < 32 * 1024
    with gateway.connect() as conn:
        assert scalar(conn, "SELECT 6") == 6


class _SilentTarget:
    """A target that accepts connections and never greets (a hung server, or a TCP load
    balancer in front of one): the lab MariaDB's stand-in for GatewayProcess."""

    def __init__(self, pki: Any) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", self.server.getsockname()[1]
        self.native_user, self.native_password = "nobody", "nothing"
        self.pki = pki
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.server.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.server.close()
        for conn in self.accepted:
            conn.close()


def test_more_than_a_login_needs_sent_before_it_completes_is_refused(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """While the gateway waits for the target's greeting, a client's bytes are kept, up
    to 256 KiB: not the gigabytes a client sent to a target that did not answer."""
    target = _SilentTarget(mariadb.pki)
    gw = GatewayProcess(tmp_path / "gw", target, mariadb.pki).start()  # type: ignore[arg-type]
    try:
        before = gw.rss_kib()
        with socket.create_connection((gw.host, gw.port), timeout=20) as sock:
            try:
                sock.sendall(b"\xff\xff\xff\x01" + bytes(8 << 20))
            except (ConnectionResetError, BrokenPipeError):
                pass
            assert _until_closed(sock) == b""  # not greeted: no error packet either
        assert gw.rss_kib() - before < 16 * 1024
        assert "more than 262144 bytes sent before the login completed" in gw.log()
    finally:
        assert gw.stop() == 0
        target.close()
    assert "Traceback" not in gw.log()


def test_a_login_that_times_out_waiting_for_the_target_is_not_held_against_the_client(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """The 8 s login limit, reached while the target does not greet: recorded, but not
    a failure of the client's (with failed_logins_free = 0 it would block the address)."""
    target = _SilentTarget(mariadb.pki)
    gw = GatewayProcess(
        tmp_path / "gw",
        target,  # type: ignore[arg-type]
        mariadb.pki,
        appliance_extra="failed_logins_free = 0",
    ).start()
    try:
        with socket.create_connection((gw.host, gw.port), timeout=20) as sock:
            assert b"did not complete within 8 s" in _until_closed(sock)  # let go
        with socket.create_connection((gw.host, gw.port), timeout=1.5) as sock:
            with pytest.raises(TimeoutError):  # waits for the target again: not refused
                sock.recv(1024)
    finally:
        assert gw.stop() == 0
        target.close()
    failed = [r for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed"]
    assert [r["reason"] for r in failed] == ["the login did not complete within 8 s"]


def test_a_user_name_longer_than_any_server_reads_is_refused(gateway: GatewayProcess) -> None:
    with pytest.raises(pymysql.err.MySQLError) as err:
        pymysql.connect(
            host=gateway.host, port=gateway.port, user="u" * 300, password="x", connect_timeout=10
        )
    assert "longer than 256 bytes" in str(err.value) and err.value.args[0] == 1045
    time.sleep(0.05)  # a failed login like any other: recorded (and counted)
    failed = [r for r in ledger_records(gateway.ledger, "--kind", "auth_failed")]
    assert any("user name longer than 256 bytes" in r["reason"] for r in failed)


# ------------------------------------------------------------ backend logins


def test_backend_login_with_client_ed25519(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gw-ed"),
        mariadb,
        mariadb.pki,
        backend_user=mariadb.ed25519_user,
        backend_password=mariadb.ed25519_password,
        backend_tls="disabled",
    ).start()
    try:
        with gw.connect() as conn:
            assert scalar(conn, "SELECT CURRENT_USER()").startswith("sqlgate_ed25519@")
            assert scalar(conn, "SHOW STATUS LIKE 'Ssl_version'") is not None
    finally:
        assert gw.stop() == 0


def test_backend_tls_required_and_verified(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gw-tls"),
        mariadb,
        mariadb.pki,
        backend_tls="required",
    )
    gw.write_config()
    text = gw.config_path.read_text().replace(
        'tls = "required"',
        f'tls = "required"\ntls_verify = true\ntls_ca_file = "{mariadb.pki.ca_cert}"',
    )
    gw.config_path.write_text(text)
    gw.write_config = lambda: gw.config_path  # type: ignore[method-assign]
    gw.start()
    try:
        with gw.connect() as conn, conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
            assert cur.fetchone()[1].startswith("TLSv1")
    finally:
        assert gw.stop() == 0


def test_unreachable_target_gets_a_clear_error(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from lab.mariadb import free_port

    class Nowhere:
        host = "127.0.0.1"
        port = free_port()
        native_user = "x"
        native_password = "y"

    gw = GatewayProcess(tmp_path_factory.mktemp("gw-nowhere"), Nowhere(), mariadb.pki)  # type: ignore[arg-type]
    gw.start()
    try:
        with pytest.raises(pymysql.err.OperationalError) as err:
            gw.connect()
        assert "sqlgate: cannot reach target 'orders'" in str(err.value)
        # A server's code: libmariadb takes one of the client's own (2000-2999) in an
        # error packet for a malformed packet, and the mariadb CLI then shows only that.
        assert err.value.args[0] == 1105, err.value
        agent = gw.account()
        with pytest.raises(ClientError) as cli:
            run_mariadb(
                "SELECT 1", host=gw.host, port=gw.port, user=agent.user, password=agent.password
            )
        assert "ERROR 1105 (HY000)" in cli.value.stderr, cli.value.stderr
        assert "sqlgate: cannot reach target 'orders'" in cli.value.stderr, cli.value.stderr
    finally:
        assert gw.stop() == 0


# ------------------------------------------------------------------- shutdown


def test_sigterm_drains_a_running_statement_and_exits_0(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gw = GatewayProcess(tmp_path_factory.mktemp("gw-drain"), mariadb, mariadb.pki).start()
    idle = gw.connect()
    busy = gw.connect()
    result: list[Any] = []

    def slow() -> None:
        result.append(scalar(busy, "SELECT SLEEP(1.5), 'done'"))

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.3)
    started = time.monotonic()
    code = gw.stop()
    worker.join(5)
    assert code == 0
    assert result == [0]  # the running statement finished and its result arrived
    assert time.monotonic() - started < 10
    with pytest.raises(pymysql.err.OperationalError):
        scalar(idle, "SELECT 1")  # idle sessions were closed
    with pytest.raises(OSError):
        socket.create_connection((gw.host, gw.port), timeout=1).close()
    # both ended for the shutdown, not as if their clients had left
    ends = [r for r in ledger_records(gw.ledger) if r["kind"] == "session_end"]
    assert [r["reason"] for r in ends] == ["gateway shutdown"] * 2, ends


def test_a_statement_past_the_drain_timeout_is_recorded_as_cut_by_the_shutdown(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A session still busy when the drain timeout passed was aborted as if its client
    had left: its result said "client closed the connection" and its session_end named
    nobody. The client gets 1053 and both records name the gateway's shutdown."""
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gw-drain-timeout"),
        mariadb,
        mariadb.pki,
        appliance_extra="drain_timeout_s = 1",
    ).start()
    busy = gw.connect()
    errors: list[tuple[Any, ...]] = []

    def slow() -> None:
        try:
            scalar(busy, "SELECT SLEEP(20), 'cut'")
        except pymysql.err.MySQLError as exc:
            errors.append(exc.args)

    worker = threading.Thread(target=slow)
    worker.start()
    deadline = time.monotonic() + 30
    while not any(
        r["kind"] == "statement" and r["sql"] == "SELECT SLEEP(20), 'cut'"
        for r in ledger_records(gw.ledger)
    ):
        assert time.monotonic() < deadline, "the statement never reached the ledger"
        time.sleep(0.1)
    assert gw.stop() == 0
    worker.join(30)
    assert errors and errors[0][0] == 1053
    assert "shutdown" in errors[0][1]
    recs = ledger_records(gw.ledger)
    (statement,) = [
        r for r in recs if r["kind"] == "statement" and r["sql"] == "SELECT SLEEP(20), 'cut'"
    ]
    (result,) = [
        r
        for r in recs
        if r["kind"] == "result"
        and r["session"] == statement["session"]
        and r["statement_seq"] == statement["statement_seq"]
    ]
    assert "drain timeout" in result["reason"] and "client closed" not in result["reason"]
    (end,) = [
        r for r in recs if r["kind"] == "session_end" and r["session"] == statement["session"]
    ]
    assert end["ended_by"] == "sqlgate" and "drain timeout" in end["reason"]
    assert recs[-1]["kind"] == "checkpoint"


READ_AT_STOP = """
import asyncio
import os
import threading
import time

import appliance.catalog as catalog
import appliance.server as server
import appliance.through_catalog as through_catalog

stopping = threading.Event()  # the gateway's stop has begun
answered = threading.Event()  # the read held until then has returned
reads = 0


def held(read):
    def reading(*args):
        global reads
        reads += 1
        if reads == 1:  # the one at the start
            return read(*args)
        open(os.environ["READ_HELD"], "w").close()
        stopping.wait(30)
        try:
            return read(*args)
        finally:
            answered.set()

    return reading


def at_stop(close):
    async def closing(self):
        if reads > 1:
            stopping.set()
            answered.wait(10)  # the loop waits: the read's answer comes to it meanwhile
            time.sleep(0.05)
            await asyncio.sleep(0)
            await asyncio.sleep(0)  # its answer is taken, the task that waits not woken
        await close(self)

    return closing


catalog._load = held(catalog._load)
through = server.ThroughCatalog
server.ThroughCatalog = lambda *a, **kw: through(*a, read=held(through_catalog.read_through), **kw)
catalog.ViewCatalog.close = at_stop(catalog.ViewCatalog.close)
through_catalog.ThroughCatalog.close = at_stop(through_catalog.ThroughCatalog.close)
"""

READ_AGAIN = {
    "views": """
[[masking]]
column = "shop.customers.email"
strategy = "redact"
""",
    "through": """
[[rules]]
name = "orders-are-read-only"
statements = ["UPDATE", "DELETE", "INSERT"]
tables = ["shop.orders"]
action = "block"
""",
}


@pytest.mark.parametrize("catalog", sorted(READ_AGAIN))
def test_a_stop_as_a_read_of_the_catalog_ends_is_not_lost(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory, catalog: str
) -> None:
    """An EXECUTE has the views (masking) or what writes reach (block rules on tables)
    read again once answered, even one refused as ``prepare-refused``. A SIGTERM handled
    in the turn of the loop that such a read ended in was lost (Python 3.11's
    ``asyncio.wait_for`` returned the read instead): the refresh went on and the gateway
    never exited. The real gateway process gets a sitecustomize module that ends the
    read, which the refused EXECUTE started, at that moment; it exits 0, with the
    session's records and a final checkpoint."""
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(READ_AT_STOP)
    held = site / "read-held"
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    mariadb.admin_sql("CREATE TABLE IF NOT EXISTS shop.stop_items (id INT PRIMARY KEY, v INT)")
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gw-read-at-stop"),
        mariadb,
        mariadb.pki,
        extra_toml=READ_AGAIN[catalog],
        env={"PYTHONPATH": path, "READ_HELD": str(held)},
    ).start()
    try:
        with gw.connect() as conn:
            with conn.cursor() as cur:
                cur.execute("PREPARE s FROM 'UPDATE stop_items SET v = v + 1 WHERE id = 1'")
            for sql, rule in (
                ("PREPARE s FROM 'DELETE FROM stop_items'", "delete-without-where"),
                ("EXECUTE s", "prepare-refused"),
            ):
                with pytest.raises(pymysql.err.OperationalError) as refused, conn.cursor() as cur:
                    cur.execute(sql)
                assert f"rule '{rule}'" in refused.value.args[1]
        deadline = time.monotonic() + 10
        while not held.exists():  # the read again the refused EXECUTE asked for
            assert time.monotonic() < deadline, gw.log()
            time.sleep(0.02)
        started = time.monotonic()
        code = gw.stop(10)  # (not the harness's 45 s: a stop that hangs fails fast)
    finally:
        gw.stop()
    assert code == 0, gw.log()
    assert time.monotonic() - started < 8
    recs = ledger_records(gw.ledger)
    (execute,) = [r for r in recs if r["kind"] == "statement" and r["sql"] == "EXECUTE s"]
    assert execute["rule"] == "prepare-refused"
    assert any(
        r["kind"] == "result" and r["statement_seq"] == execute["statement_seq"] for r in recs
    )
    assert [r["kind"] for r in recs if r.get("session") == execute["session"]][-1] == "session_end"
    assert recs[-1]["kind"] == "checkpoint"
    assert "Traceback" not in gw.log()


def test_sighup_and_sigusr_are_ignored_and_sigquit_stops_cleanly(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The gateway had no handler for SIGHUP (which a container's entry point forwards):
    it died at once, without a drain, a session_end or its final checkpoint. It reloads
    nothing, so SIGHUP, SIGUSR1 and SIGUSR2 are logged and ignored; SIGQUIT stops it
    like SIGTERM."""
    gw = GatewayProcess(tmp_path_factory.mktemp("gw-signals"), mariadb, mariadb.pki).start()
    assert gw.proc is not None
    proc = gw.proc
    try:
        conn = gw.connect()
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            proc.send_signal(sig)
            deadline = time.monotonic() + 30
            while f"{sig.name} ignored" not in gw.log():
                assert proc.poll() is None, gw.log()
                assert time.monotonic() < deadline, gw.log()
                time.sleep(0.05)
            assert scalar(conn, "SELECT 7") == 7  # the session goes on
        proc.send_signal(signal.SIGQUIT)
        assert proc.wait(45) == 0, gw.log()
    finally:
        gw.stop()
    log = gw.log()
    assert "restart it" in log and "stopped" in log and "Traceback" not in log
    recs = ledger_records(gw.ledger)
    assert [r["kind"] for r in recs].count("session_end") == 1
    assert recs[-1]["kind"] == "checkpoint"


def test_send_long_data_then_execute(gateway: GatewayProcess) -> None:
    """COM_STMT_SEND_LONG_DATA has no answer; the EXECUTE that follows gets its result."""
    with gateway.connect() as conn:
        send_raw(conn, bytes([Command.STMT_PREPARE]) + b"SELECT LENGTH(?), MD5(?)")
        ok = packets.parse_stmt_prepare_ok(read_raw(conn))
        assert ok.param_count == 2
        deprecate = bool(conn.server_capabilities & CLIENT.DEPRECATE_EOF) and bool(
            conn.client_flag & CLIENT.DEPRECATE_EOF
        )
        blocks = [ok.param_count, ok.column_count]
        for _ in range(sum(blocks) + (0 if deprecate else sum(1 for b in blocks if b))):
            read_raw(conn)
        chunk = b"ab" * 300_000
        for param in (0, 1):
            for _ in range(3):  # three pieces per parameter, none answered
                send_raw(
                    conn,
                    bytes([Command.STMT_SEND_LONG_DATA])
                    + struct.pack("<IH", ok.statement_id, param)
                    + chunk,
                )
        execute = (
            bytes([Command.STMT_EXECUTE])
            + struct.pack("<IBI", ok.statement_id, 0, 1)
            + b"\x00"  # NULL bitmap
            + b"\x01"  # new parameters bound
            + b"\xfc\x00\xfc\x00"  # both BLOB, values sent as long data
        )
        send_raw(conn, execute)
        assert read_raw(conn) == b"\x02"
        columns = [packets.parse_column_definition(read_raw(conn)) for _ in range(2)]
        if not deprecate:
            read_raw(conn)
        row = packets.parse_binary_row(read_raw(conn), columns)
        assert row[0] is not None and int.from_bytes(row[0], "little") == 3 * len(chunk)

        expected_md5 = hashlib.md5(chunk * 3).hexdigest().encode()
        assert row[1] is not None and row[1].endswith(expected_md5)
        assert read_raw(conn)[0] == 0xFE  # end of the result
        assert scalar(conn, "SELECT 9") == 9


class _Itself:
    """A target at the gateway's own listen address and port (an operator's slip: the
    gateway's address where the database's belongs): the stand-in for GatewayProcess."""

    def __init__(self, pki: Any) -> None:
        self.host, self.port = "127.0.0.1", free_port()
        self.native_user, self.native_password = "nobody", "nothing"
        self.pki = pki


def test_a_target_that_is_the_gateway_itself_is_refused_not_looped(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    # Each client connection made the gateway connect to itself, which made it connect
    # to itself again: thousands of sessions a second from one client, until it ran
    # out of file descriptors, and the client got no answer.
    itself = _Itself(mariadb.pki)
    gw = GatewayProcess(
        tmp_path / "gw",
        itself,  # type: ignore[arg-type]
        mariadb.pki,
        port=itself.port,
        appliance_extra="drain_timeout_s = 1",
    ).start()
    try:
        with pytest.raises(pymysql.err.OperationalError) as refused:
            gw.connect().close()
        code, message = refused.value.args
        assert code == 1105, refused.value  # as for any unreachable target
        assert f"127.0.0.1:{gw.port} is this gateway's own listener" in message
        # two connections (start()'s readiness check and the client), two sessions: no
        # session of the gateway's own connections to itself
        sessions = {int(n) for n in re.findall(r"session (\d+):", gw.log())}
        assert sessions == {1, 2}, gw.log()[-2000:]
    finally:
        gw.stop()


def test_a_user_name_outside_ascii_logs_in_from_a_latin1_client(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """A latin1 client sends ``ü`` as the one byte FC; MariaDB reads the name in the
    login's character set, the gateway read it as UTF-8 and refused the account."""
    account = GatewayAccount("jürgen", "jurgen-secret-9")
    gw = GatewayProcess(tmp_path, mariadb, mariadb.pki, accounts=[account]).start()
    try:
        for charset in ("latin1", "utf8mb4"):
            with gw.connect(user="jürgen", charset=charset) as conn:
                assert scalar(conn, "SELECT 7") == 7
        with gw.connector(user="jürgen", charset="latin1") as conn:
            cur = conn.cursor()
            cur.execute("SELECT 8")
            assert cur.fetchall() == [(8,)]
    finally:
        assert gw.stop() == 0
    starts = ledger_records(gw.ledger, "--kind", "session_start")
    assert [r["identity"] for r in starts] == ["jürgen"] * 3


def test_the_gateways_own_errors_come_in_the_sessions_results_character_set(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """MariaDB sends its error messages in ``character_set_results`` (a latin1 client's
    ``ö`` as the one byte F6); the gateway sent its own in UTF-8 whatever the client's,
    which such a client shows garbled."""
    with mariadb.connect(charset="latin1", database="shop") as conn:  # the server's way
        send_raw(conn, b"\x03" + "SELECT * FROM größen".encode("latin1"))
        err = read_raw(conn)
        assert err[:3] == b"\xff\x7a\x04", err  # 1146: no such table
        assert "größen".encode("latin1") in err and "größen".encode() not in err, err
    rule = '[[rules]]\nname = "keine-Löschung"\nstatements = ["DELETE"]\naction = "block"\n'
    gw = GatewayProcess(tmp_path, mariadb, mariadb.pki, extra_toml=rule).start()
    try:
        with gw.connect(charset="latin1") as conn:

            def refusal() -> bytes:
                send_raw(conn, b"\x03DELETE FROM orders WHERE id = 0")
                err = read_raw(conn)
                assert err[:3] == b"\xff\xcb\x04", err  # 1227
                return err

            err = refusal()
            assert "'keine-Löschung'".encode("latin1") in err, err
            assert "Löschung".encode() not in err, err
            with conn.cursor() as cur:
                cur.execute("SET NAMES utf8mb4")  # followed: from its answer on, UTF-8
            assert "'keine-Löschung'".encode() in refusal()
            assert scalar(conn, "SELECT 1") == 1  # the session goes on
        for charset, shown in (("latin1", "j\ufffdrgen"), ("utf8mb4", "jürgen")):
            # a refused login's message, in the login's character set: PyMySQL reads
            # every message as UTF-8, so latin1's FC shows as a replacement character
            with pytest.raises(pymysql.err.OperationalError) as denied:
                pymysql.connect(
                    host=gw.host, port=gw.port, user="jürgen", password="x", charset=charset
                )
            assert denied.value.args[0] == 1045, denied.value
            assert shown in denied.value.args[1], denied.value
    finally:
        assert gw.stop() == 0


def test_sessions_together_hold_at_most_max_buffered_of_unfinished_commands(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """Each session may hold an unfinished packet of up to ``max_packet``: before
    ``max_buffered``, 11 sessions each sending 60 MB of a 64 MB packet took the gateway
    from 87 to 793 MB. A session that takes all sessions' holdings past it is ended (1041,
    and its session_end says why); the others, and new sessions, go on."""
    mib = 1024 * 1024
    gw = GatewayProcess(
        tmp_path / "gw",
        mariadb,
        mariadb.pki,
        appliance_extra=f"max_packet = {4 * mib}\nmax_buffered = {4 * mib}",
    ).start()
    try:
        first, second = gw.connect(), gw.connect()
        sql = b"SELECT '" + b"x" * (4 * mib - 100) + b"'"
        packet = frame(0, bytes([Command.QUERY]) + sql)
        first._sock.sendall(packet[: 3 * mib])  # 3 MiB held: within the bound
        time.sleep(0.5)
        with contextlib.suppress(OSError):
            second._sock.sendall(packet[: 3 * mib])  # 6 MiB together: too much
        reply = _until_closed(second._sock)
        assert not reply or b"max_buffered" in reply and reply[5:7] == (1041).to_bytes(2, "little")
        first._sock.sendall(packet[3 * mib :])  # the first finishes its command: answered
        first._next_seq_id = 1
        with pytest.raises(pymysql.err.OperationalError) as refused:  # over 1 MiB: policy
            first._read_query_result()
        assert refused.value.args[0] == 1227
        assert scalar(first, "SELECT 1") == 1
        with gw.connect() as other:
            assert scalar(other, "SELECT 2") == 2
        first.close()
        ends = [
            r
            for r in ledger_records(gw.ledger, "--kind", "session_end")
            if "max_buffered" in r.get("reason", "")
        ]
        assert len(ends) == 1 and ends[0]["ended_by"] == "sqlgate"
    finally:
        assert gw.stop() == 0
    assert "Traceback" not in gw.log()
