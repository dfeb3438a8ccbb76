"""The gateway writes its ledger: every command's statement before it runs, and its result."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from lab.clients import ledger_records, node_spec, run_node
from lab.clients import run_sqlgate as sqlgate
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB
from pymysql.constants import CLIENT

from appliance import audit
from appliance.ledger import records, store
from appliance.mysql.wire import frame

pytestmark = pytest.mark.integration


def test_every_command_has_one_statement_and_one_result(mariadb: MariaDB, tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki).start()
    try:
        with gw.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM customers")
            cur.execute("CREATE TABLE IF NOT EXISTS audit_t (id INT PRIMARY KEY)")
            cur.execute("INSERT IGNORE INTO audit_t VALUES (1)")
            with pytest.raises(pymysql.err.OperationalError):  # refused by the policy
                cur.execute("REPLACE INTO audit_t VALUES (1)")
            cur.execute("/* nothing */")  # no statement: the server answers OK
            with pytest.raises(pymysql.err.MySQLError) as empty:
                cur.execute(";")  # nor here: "Query was empty"
            assert empty.value.args[0] == 1065
            conn._write_bytes(frame(0, b"\x99"))  # refused by the core itself
            conn._next_seq_id = 1
            with pytest.raises(pymysql.err.OperationalError):
                conn._read_packet()
        mc = gw.connector()
        cur2 = mc.cursor(prepared=True)
        cur2.execute("SELECT name FROM customers WHERE id = ?", (2,))
        assert cur2.fetchall() == [("Grace Hopper",)]
        cur2.close()  # COM_STMT_CLOSE
        mc.close()
    finally:
        assert gw.stop() == 0
    recs = ledger_records(gw.ledger)
    kinds = Counter(r["kind"] for r in recs)
    assert kinds["appliance_start"] == 1
    assert kinds["session_start"] == 2 and kinds["session_end"] == 2
    assert kinds["checkpoint"] >= 1
    statements = [r for r in recs if r["kind"] == "statement"]
    results = [r for r in recs if r["kind"] == "result"]
    by_key = Counter((r["session"], r["statement_seq"]) for r in statements)
    assert all(n == 1 for n in by_key.values())
    assert Counter((r["session"], r["statement_seq"]) for r in results) == by_key
    for st in statements:
        (res,) = [
            r
            for r in results
            if (r["session"], r["statement_seq"]) == (st["session"], st["statement_seq"])
        ]
        assert st["seq"] < res["seq"]  # the statement was committed first
        assert st["identity"] == "agent" and st["groups"] == ["agents"]
        assert st["target"] == "orders" and st["client"].startswith("127.0.0.1:")
    sqls = [(s["command"], s["sql"], s["decision"]) for s in statements]
    assert ("COM_QUERY", "SELECT COUNT(*) FROM customers", "allowed") in sqls
    assert ("COM_QUERY", "INSERT IGNORE INTO audit_t VALUES (1)", "allowed") in sqls
    assert ("COM_QUERY", "REPLACE INTO audit_t VALUES (1)", "blocked") in sqls
    assert ("COM_STMT_PREPARE", "SELECT name FROM customers WHERE id = ?", "allowed") in sqls
    prepared = "SELECT name FROM customers WHERE id = ?"
    assert ("COM_STMT_EXECUTE", prepared, "allowed") in sqls  # the prepared text
    assert ("COM_STMT_CLOSE", prepared, "allowed") in sqls
    blocked = {s["command"]: s["rule"] for s in statements if s["decision"] == "blocked"}
    assert blocked == {"COM_0x99": "unknown-command", "COM_QUERY": "replace"}
    select = next(s for s in statements if s["sql"] == "SELECT COUNT(*) FROM customers")
    assert select["sql_sha256"] == records.sql_sha256(b"\x03SELECT COUNT(*) FROM customers")
    select_result = next(
        r
        for r in results
        if r["statement_seq"] == select["statement_seq"] and r["session"] == select["session"]
    )
    assert select_result["rows"] == 1 and select_result["error"] is None
    for text, error in (("/* nothing */", None), (";", 1065)):
        empty = next(s for s in statements if s["sql"] == text)
        assert empty["decision"] == "allowed" and empty["rule"] == "empty"
        (empty_result,) = [
            r
            for r in results
            if (r["session"], r["statement_seq"]) == (empty["session"], empty["statement_seq"])
        ]
        assert empty_result["error"] == error
    verify = sqlgate(
        "ledger", "verify", "--ledger", str(gw.ledger), "--pubkey", str(gw.public_key())
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert mariadb.native_password not in gw.ledger.read_bytes().decode("utf-8", "replace")


def test_what_a_client_sent_before_it_left_runs_and_is_recorded(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """INSERTs pipelined with COM_QUIT, and one still running when the client closes its
    socket: a server would run all of them, and so does the gateway, recording each
    result before the session ends."""
    mariadb.admin_sql(
        "CREATE TABLE IF NOT EXISTS shop.left_t (id INT PRIMARY KEY)", "DELETE FROM shop.left_t"
    )
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki).start()
    try:
        quitting = gw.connect(database="shop")
        quitting._sock.sendall(  # no answer awaited: INSERT, INSERT, COM_QUIT, close
            frame(0, b"\x03INSERT INTO left_t VALUES (1)")
            + frame(0, b"\x03INSERT INTO left_t VALUES (2)")
            + frame(0, b"\x01")
        )
        quitting._force_close()
        leaving = gw.connect(database="shop")
        leaving._sock.sendall(
            frame(0, b"\x03INSERT INTO left_t SELECT 3 FROM (SELECT SLEEP(0.5)) AS s")
        )
        time.sleep(0.1)  # the INSERT is on its way
        leaving._force_close()
        deadline = time.monotonic() + 10
        while mariadb.admin_sql("SELECT COUNT(*) FROM shop.left_t")[0][0] < 3:
            assert time.monotonic() < deadline, "the INSERTs did not all run"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        assert gw.stop() == 0
    recs = ledger_records(gw.ledger)
    inserts = {
        (r["session"], r["statement_seq"]): r["sql"]
        for r in recs
        if r["kind"] == "statement" and r["sql"].startswith("INSERT INTO left_t")
    }
    results = {(r["session"], r["statement_seq"]): r for r in recs if r["kind"] == "result"}
    assert len(inserts) == 3
    for key, sql in inserts.items():
        assert results[key]["affected"] == 1 and results[key]["error"] is None, sql
    assert sum(r["kind"] == "session_end" for r in recs) == 2


def test_a_call_in_a_text_keeps_its_own_result_sets(mariadb: MariaDB, tmp_path: Path) -> None:
    """CALL's procedure sends two result sets and an OK of its own; the SELECT after it
    in the same text gets only its own result (rows are counted per statement)."""
    mariadb.admin_sql(
        "DROP PROCEDURE IF EXISTS shop.two_sets",
        "CREATE PROCEDURE shop.two_sets() BEGIN SELECT 1 UNION SELECT 2; SELECT 3; END",
    )
    allow_calls = '[[rules]]\nname = "calls"\nstatements = ["CALL"]\naction = "allow"\n'
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=allow_calls).start()
    text = "CALL two_sets(); SELECT 7 UNION SELECT 8 UNION SELECT 9 UNION SELECT 10"
    try:
        with (
            gw.connect(database="shop", client_flag=CLIENT.MULTI_STATEMENTS) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(text)
            sets = [cur.fetchall()]
            while cur.nextset():
                sets.append(cur.fetchall())
            assert sets[0] == ((1,), (2,)) and sets[-1] == ((7,), (8,), (9,), (10,))
    finally:
        assert gw.stop() == 0
    recs = ledger_records(gw.ledger)
    parts = {
        r["statement_seq"]: r["statement_kind"]
        for r in recs
        if r["kind"] == "statement" and r.get("part")
    }
    rows = {
        parts[r["statement_seq"]]: r["rows"]
        for r in recs
        if r["kind"] == "result" and r["statement_seq"] in parts
    }
    assert rows == {"CALL": 3, "SELECT": 4}


@pytest.mark.parametrize(
    "runs",
    ["EXECUTE IMMEDIATE 'CALL shop.one_set()'", "EXECUTE one_set_s"],
    ids=["execute-immediate", "execute-prepared"],
)
def test_a_call_run_by_execute_in_a_text_keeps_its_own_results(
    mariadb: MariaDB, tmp_path: Path, runs: str
) -> None:
    """A CALL run by EXECUTE IMMEDIATE or EXECUTE answers like a CALL (a result set, then
    its OK). Read as one result, its OK went to the UPDATE after it (affected 0), the
    UPDATE's to the failing SELECT (affected 1, no error), and the error the client got
    was in no record."""
    mariadb.admin_sql(
        "DROP PROCEDURE IF EXISTS shop.one_set",
        "CREATE PROCEDURE shop.one_set() SELECT 1 UNION SELECT 2 UNION SELECT 3",
        "DROP TABLE IF EXISTS shop.call_split",
        "CREATE TABLE shop.call_split (id INT PRIMARY KEY, v INT)",
        "INSERT INTO shop.call_split VALUES (1, 10)",
    )
    allow_calls = '[[rules]]\nname = "calls"\nstatements = ["CALL"]\naction = "allow"\n'
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=allow_calls).start()
    update = "UPDATE shop.call_split SET v = v + 1 WHERE id = 1"
    failing = "SELECT nosuchcol FROM shop.call_split"
    try:
        with (
            gw.connect(database="shop", client_flag=CLIENT.MULTI_STATEMENTS) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("PREPARE one_set_s FROM 'CALL shop.one_set()'")
            cur.execute(f"{runs}; {update}; {failing}")
            assert cur.fetchall() == ((1,), (2,), (3,))
            with pytest.raises(pymysql.err.OperationalError) as err:
                while cur.nextset():
                    pass
            assert err.value.args[0] == 1054
    finally:
        assert gw.stop() == 0
    recs = ledger_records(gw.ledger)
    parts = [r for r in recs if r["kind"] == "statement" and r.get("part")]
    assert [p["sql"] for p in parts] == [runs, update, failing]
    results = {r["statement_seq"]: r for r in recs if r["kind"] == "result"}
    figures = [
        (results[p["statement_seq"]]["rows"], results[p["statement_seq"]]["affected"])
        for p in parts
    ]
    errors = [results[p["statement_seq"]]["error"] for p in parts]
    assert figures == [(3, 0), (0, 1), (0, 0)]
    assert errors == [None, None, 1054]


def test_a_statement_that_fails_mid_result_in_a_text_keeps_the_rows_it_sent(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """The second statement sends three rows, then fails (a subquery returns two rows at
    the fourth): its result record said 0 rows, though the client had three."""
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki).start()
    failing = "SELECT seq, IF(seq = 4, (SELECT 1 UNION SELECT 2), 1) FROM seq_1_to_6"
    try:
        with (
            gw.connect(database="shop", client_flag=CLIENT.MULTI_STATEMENTS) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(f"SELECT 1; {failing}")
            with pytest.raises(pymysql.err.OperationalError):
                cur.nextset()
    finally:
        assert gw.stop() == 0
    recs = ledger_records(gw.ledger)
    parts = [r for r in recs if r["kind"] == "statement" and r.get("part")]
    assert [p["sql"] for p in parts] == ["SELECT 1", failing]
    results = {r["statement_seq"]: r for r in recs if r["kind"] == "result"}
    first, second = (results[p["statement_seq"]] for p in parts)
    assert (first["rows"], first["error"]) == (1, None)
    assert (second["rows"], second["error"]) == (3, 1242)


def test_each_statement_of_a_text_names_only_the_columns_it_masked(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """Every result of a text said the text's masked columns and count: ``SELECT 1`` was
    recorded (and replayed) as having masked a card, and a statement that never ran too.
    Each names those of its own results now (a CALL's, those of its procedure's sets)."""
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.split_cards",
        "CREATE TABLE shop.split_cards (id INT PRIMARY KEY, card VARCHAR(19))",
        "INSERT INTO shop.split_cards VALUES (1, '4111111111111111'), (2, '5500000000000004')",
        "DROP PROCEDURE IF EXISTS shop.split_cards_call",
        "CREATE PROCEDURE shop.split_cards_call() SELECT card FROM shop.split_cards",
    )
    extra = (
        '[[masking]]\ncolumn = "shop.split_cards.card"\nstrategy = "last4"\n'
        '[[rules]]\nname = "calls"\nstatements = ["CALL"]\naction = "allow"\n'
    )
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=extra).start()
    texts = [
        "SELECT 1; SELECT card FROM split_cards ORDER BY id; SELECT 2",
        "SELECT card FROM split_cards WHERE id = 1; CALL split_cards_call(); SELECT 3",
        "SELECT card FROM split_cards; SELECT nosuch FROM split_cards; SELECT 4",
    ]
    try:
        with (
            gw.connect(database="shop", client_flag=CLIENT.MULTI_STATEMENTS) as conn,
            conn.cursor() as cur,
        ):
            for text in texts:
                try:
                    cur.execute(text)
                    while cur.nextset():
                        pass
                except pymysql.err.OperationalError:
                    pass
    finally:
        assert gw.stop() == 0
    recs = ledger_records(gw.ledger)
    sql = {r["statement_seq"]: r["sql"] for r in recs if r["kind"] == "statement"}
    masked = {
        sql[r["statement_seq"]]: (r.get("masked") or [], r.get("masked_values"))
        for r in recs
        if r["kind"] == "result" and r.get("statement_seq") in sql
    }
    card = ["shop.split_cards.card"]
    assert masked["SELECT 1"] == ([], None)
    assert masked["SELECT card FROM split_cards ORDER BY id"] == (card, 2)
    assert masked["SELECT 2"] == ([], None)
    assert masked["SELECT card FROM split_cards WHERE id = 1"] == (card, 1)
    assert masked["CALL split_cards_call()"] == (card, 2)
    assert masked["SELECT 3"] == ([], None)
    assert masked["SELECT card FROM split_cards"] == (card, 2)
    assert masked["SELECT nosuch FROM split_cards"] == ([], None)
    assert masked["SELECT 4"] == ([], None)  # not run


def test_every_record_names_its_appliance(mariadb: MariaDB, tmp_path: Path) -> None:
    """SPEC §9 names ``appliance`` among the fields of every kind: a record exported or
    published alone still says which gateway wrote it."""
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, name="edge-7").start()
    try:
        with pytest.raises(pymysql.err.OperationalError):
            gw.connect(password="wrong")
        with gw.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT id FROM orders WHERE id = 1")
            with pytest.raises(pymysql.err.OperationalError):
                cur.execute("DELETE FROM orders")
    finally:
        assert gw.stop() == 0
    recs = ledger_records(gw.ledger)
    kinds = {r["kind"] for r in recs}
    assert {"session_start", "auth_failed", "statement", "result", "session_end"} <= kinds
    for rec in recs:
        if rec["kind"] != "checkpoint":  # the signature's own record, about the chain
            assert rec["appliance"] == "edge-7", rec
    verify = sqlgate(
        "ledger", "verify", "--ledger", str(gw.ledger), "--pubkey", str(gw.public_key())
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


class _DualStackGateway(GatewayProcess):
    """A gateway listening on ``[::]`` (IPv4 and IPv6), reached at 127.0.0.1."""

    def write_config(self) -> Path:
        path = super().write_config()
        text = path.read_text()
        listen = f'listen = "{self.host}:{self.port}"'
        assert listen in text
        path.write_text(text.replace(listen, f'listen = "[::]:{self.port}"'))
        return path


def test_an_ipv4_client_of_a_dual_stack_listener_is_recorded_by_its_ipv4_address(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """``client`` is ``ip:port`` (SPEC §9): an agent at 10.77.1.10 that reached a gateway
    listening on ``[::]:3307`` was recorded as ``[::ffff:10.77.1.10]:port``."""
    gw = _DualStackGateway(tmp_path / "gw", mariadb, mariadb.pki).start()
    try:
        with pytest.raises(pymysql.err.OperationalError):
            gw.connect(password="wrong")
        with gw.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        assert gw.stop() == 0
    recs = [r for r in ledger_records(gw.ledger) if "client" in r]
    assert {r["kind"] for r in recs} >= {"auth_failed", "session_start", "statement"}
    for rec in recs:
        host, _, port = rec["client"].rpartition(":")
        assert host == "127.0.0.1" and port.isdigit(), rec


def test_failed_login_is_recorded(mariadb: MariaDB, tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki).start()
    try:
        with pytest.raises(pymysql.err.OperationalError):
            gw.connect(password="wrong")
    finally:
        assert gw.stop() == 0
    failed = [r for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed"]
    assert len(failed) == 1
    assert failed[0]["identity"] == "agent" and "wrong password" in failed[0]["reason"]


def test_repeated_failed_logins_make_the_user_wait_not_the_address(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    gw = GatewayProcess(
        tmp_path / "gw",
        mariadb,
        mariadb.pki,
        appliance_extra="failed_logins_free = 2\nfailed_login_max_wait_s = 60",
    ).start()
    try:
        for _ in range(3):
            with pytest.raises(pymysql.err.OperationalError):
                gw.connect(password="wrong")
        # now even the right password waits: the name is slowed down from this address
        with pytest.raises(pymysql.err.OperationalError) as info:
            gw.connect()
        code, message = info.value.args
        assert code == 1045 and "too many failed logins as 'agent' from 127.0.0.1" in message
        for _ in range(20):  # a blocked client that keeps connecting: refused each time ...
            with pytest.raises(pymysql.err.OperationalError):
                gw.connect()
        # ... while another agent behind the same address is not held up by it
        with gw.connect("dba") as conn, conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
    finally:
        assert gw.stop() == 0
    failed = [r for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed"]
    assert len(failed) == 4  # ... and recorded once: it does not fill the ledger
    assert failed[-1]["identity"] == "agent"
    assert "too many failed logins" in failed[-1]["reason"]
    assert "refused unrecorded" in failed[-1]["reason"]


def _send_a_broken_login(gw: GatewayProcess) -> bytes:
    """Connect, read the greeting, send a login packet too short to read: the answer."""
    with socket.create_connection((gw.host, gw.port), timeout=5) as sock:
        stream = sock.makefile("rb")
        header = stream.read(4)
        stream.read(int.from_bytes(header[:3], "little"))  # the greeting
        sock.sendall(frame(1, b"\x00garbage"))
        header = stream.read(4)
        return stream.read(int.from_bytes(header[:3], "little"))


def test_a_login_packet_that_cannot_be_read_is_recorded_and_counted(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """Every refused login writes ``auth_failed`` (SPEC §5), a broken one too; and it counts
    toward its address's waits (they name nobody: as a scan's failures do), so a flood of
    them is recorded only until the address waits."""
    gw = GatewayProcess(
        tmp_path / "gw", mariadb, mariadb.pki, appliance_extra="failed_logins_free = 2"
    ).start()
    try:
        with gw.connect() as conn:  # a name known from the address: not held up below
            pass
        for _ in range(16):  # the address waits after max(10, 2 * 2) + 1 of them
            answer = _send_a_broken_login(gw)
            assert answer[0] == 0xFF and b"sqlgate: bad packet" in answer
        with pytest.raises(pymysql.err.OperationalError) as info:
            gw.connect("dba")
        assert "too many failed logins from 127.0.0.1" in info.value.args[1]
        with gw.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        assert gw.stop() == 0
    failed = [r for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed"]
    assert len(failed) == 12, [r["reason"] for r in failed]
    assert all(r["identity"] is None and r["client"].startswith("127.0.0.1:") for r in failed)
    assert failed[0]["reason"].startswith("the login broke the protocol: ")
    assert "too many failed logins" in failed[-1]["reason"]


def test_failures_for_many_user_names_make_the_address_wait(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    gw = GatewayProcess(
        tmp_path / "gw", mariadb, mariadb.pki, appliance_extra="failed_logins_free = 2"
    ).start()  # a scan: failures for more than max(10, 2 * 2) names
    try:
        for i in range(11):
            with pytest.raises(pymysql.err.OperationalError) as info:
                pymysql.connect(
                    host=gw.host, port=gw.port, user=f"guess{i}", password="x", connect_timeout=5
                )
            assert "is not a gateway account" in info.value.args[1]
        with pytest.raises(pymysql.err.OperationalError) as info:  # every name now waits
            gw.connect("dba")
        code, message = info.value.args
        assert code == 1045 and "too many failed logins from 127.0.0.1" in message
    finally:
        assert gw.stop() == 0
    failed = [r for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed"]
    assert len(failed) == 12 and "many user names" in failed[-1]["reason"]


def test_unwritable_ledger_refuses_with_1105_and_forwards_nothing(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)], check=True)
    try:
        gw = GatewayProcess(
            tmp_path / "gw", mariadb, mariadb.pki, ledger_path=small / "ledger.db"
        ).start()
        try:
            mariadb.admin_sql(
                "CREATE TABLE IF NOT EXISTS shop.audit_full (id INT PRIMARY KEY)",
                "DELETE FROM shop.audit_full",
            )
            with gw.connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                filler = small / "filler"
                with filler.open("wb") as f:  # the disk fills up
                    try:
                        while True:
                            f.write(b"\0" * 65536)
                            f.flush()
                    except OSError:
                        pass
                with pytest.raises(pymysql.err.OperationalError) as err:
                    for i in range(50):  # until the WAL can grow no more
                        cur.execute(f"INSERT INTO audit_full VALUES ({100 + i})")
                assert err.value.args[0] == 1105
                assert err.value.args[1] == "sqlgate: audit ledger unavailable"
                refused_id = 100 + i
                rows = mariadb.admin_sql(
                    f"SELECT COUNT(*) FROM shop.audit_full WHERE id = {refused_id}"
                )
                assert rows[0][0] == 0  # nothing was forwarded
                filler.unlink()  # space again: the gateway recovers by itself
                gw.wait_ledger()
                cur.execute("INSERT INTO audit_full VALUES (1)")
                cur.execute("SELECT COUNT(*) FROM audit_full WHERE id = 1")
                assert cur.fetchone() == (1,)
        finally:
            assert gw.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_a_client_that_keeps_sending_to_a_full_ledger_does_not_flood_the_log(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """Every refused statement's result record is lost too: the log says the outage once
    and, when there is room again, how many records the records_lost alert names."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)], check=True)
    try:
        gw = GatewayProcess(
            tmp_path / "gw", mariadb, mariadb.pki, ledger_path=small / "ledger.db"
        ).start()
        try:
            with gw.connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                filler = small / "filler"
                with filler.open("wb") as f:  # the disk fills up
                    try:
                        while True:
                            f.write(b"\0" * 65536)
                            f.flush()
                    except OSError:
                        pass
                refused = 0
                for i in range(400):  # until the WAL can grow no more, then 200 more
                    try:
                        cur.execute(f"SELECT {i}")
                    except pymysql.err.OperationalError as exc:
                        assert exc.args == (1105, "sqlgate: audit ledger unavailable")
                        refused += 1
                        if refused == 200:
                            break
                assert refused == 200
                filler.unlink()
                gw.wait_ledger()
                cur.execute("SELECT 'recovered'")
                assert cur.fetchone() == ("recovered",)
        finally:
            assert gw.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
    said = [line for line in gw.log().splitlines() if "ledger" in line]
    assert len(said) == 3, "\n".join(said[:10])
    assert "audit ledger unavailable" in said[0] and "full" in said[0]
    assert said[1].endswith("the audit ledger is available again")
    assert said[2].endswith("lost record(s) are named by a records_lost alert")


BACKLOG_MARK = 256 * 1024
BACKLOG_HOOKS = """
import appliance.audit as audit
import appliance.ledger.store as store
import appliance.server as server

# a small byte mark, and commits that wait for a locked ledger instead of failing
audit.CONGESTED_BYTES = MARK
store.LedgerWriter.__init__.__kwdefaults__["busy_timeout"] = 600.0
_events = open(EVENTS, "a", buffering=1)


def _length(record):
    sql = record.get("sql") if record else None
    return len(sql) if isinstance(sql, str) else 0


_queue = store.LedgerWriter._queue


def queue(self, fields, waited, attachment=None):
    future = _queue(self, fields, waited, attachment)
    _events.write("q %d\\n" % (_length(fields) + len(attachment or b"")))
    if fields.get("kind") == "result":
        _events.write("r %d\\n" % self.backlog_bytes)
    return future


_committed = store.LedgerWriter._committed


def committed(self, sealed):
    done = sum(_length(r) for _, r in sealed.answers) + sum(len(b[2]) for b in sealed.blobs)
    _events.write("c %d\\n" % done)
    _committed(self, sealed)


_failed = store.LedgerWriter._failed


def failed(self, batch, *args, **kwargs):
    _events.write("f %d\\n" % len(batch))
    _failed(self, batch, *args, **kwargs)


_hold = server.ClientLeg.hold_reading


def hold(self, why):
    if why == server._HELD_LEDGER and not self._paused_by & why:
        _events.write("h 0\\n")
    _hold(self, why)


store.LedgerWriter._queue = queue
store.LedgerWriter._committed = committed
store.LedgerWriter._failed = failed
server.ClientLeg.hold_reading = hold
"""


@pytest.fixture
def slow_ledger_gateway(mariadb: MariaDB, tmp_path: Path) -> Iterator[GatewayProcess]:
    """A gateway whose ledger commits wait for a lock as long as it is held, with a byte
    mark of 256 KiB; its ``events`` file says what its writer queued (``q``, the bytes of
    the SQL and recording; ``r``, a result, with the ``backlog_bytes`` after it),
    committed (``c``) or failed (``f``), and when a session stopped reading its client
    for the ledger (``h``)."""
    site = tmp_path / "site"
    site.mkdir()
    events = tmp_path / "events"
    hooks = BACKLOG_HOOKS.replace("MARK", str(BACKLOG_MARK)).replace("EVENTS", repr(str(events)))
    (site / "sitecustomize.py").write_text(textwrap.dedent(hooks))
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    gw = GatewayProcess(
        tmp_path / "gw",
        mariadb,
        mariadb.pki,
        env={"PYTHONPATH": path},
        extra_toml="[recording]\nmax_bytes = 1048576\n",
    )
    gw.start()
    try:
        yield gw
    finally:
        assert gw.stop() == 0


def _events(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    return [(line[0], int(line[2:])) for line in path.read_text().splitlines() if line[2:]]


def test_a_stalled_ledger_holds_a_bounded_backlog_of_bytes(
    slow_ledger_gateway: GatewayProcess, tmp_path: Path
) -> None:
    """While the ledger cannot commit (another program holds its write lock), a client
    that pipelines long statements had each of them read and queued for the ledger
    (in memory: 20,000 records of up to megabytes each before any session stopped
    reading). Sessions now stop reading their clients once the waiting records hold
    the byte mark; nothing is dropped: once the lock goes every statement runs, in
    order, and has its statement and its result record with the recording of its large
    answer (each over the mark alone: the ledger is congested by one, then relieved)."""
    gw = slow_ledger_gateway
    events = tmp_path / "events"
    n, size, answer = 64, 7000, 300_000  # texts under 8 KiB are decided on the loop
    sqls = [f"SELECT {i}, '{'ab'[i % 2] * size}', REPEAT('x', {answer})" for i in range(n)]
    conn = gw.connect(database="shop", read_timeout=60)
    lock = sqlite3.connect(gw.ledger, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # the ledger's commits wait
        sending = threading.Thread(
            target=conn._sock.sendall,
            args=(b"".join(frame(0, b"\x03" + sql.encode()) for sql in sqls),),
        )
        sending.start()
        deadline = time.monotonic() + 60
        while True:  # until a session stops reading, or every statement is queued
            seen = _events(events)
            if any(kind == "h" for kind, _ in seen):
                break
            if sum(b for kind, b in seen if kind == "q") >= sum(len(s) for s in sqls):
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.01)
        lock.execute("ROLLBACK")
        for i in range(n):
            conn._next_seq_id = 1
            conn._read_query_result()
            assert conn._result.rows == ((i, "ab"[i % 2] * size, "x" * answer),)
        sending.join()
    finally:
        lock.close()
        conn.close()
    seen = _events(events)
    assert all(kind != "f" for kind, _ in seen)  # nothing failed, nothing was dropped
    held = next((at for at, (kind, _) in enumerate(seen) if kind == "h"), None)
    assert held is not None, "the gateway read every statement while the ledger was stalled"
    # from the start until the ledger commits again: what waited for it
    first = next(at for at in range(held, len(seen)) if seen[at][0] == "c")
    waiting = peak = 0
    for kind, length in seen[:first]:
        waiting += length if kind == "q" else -length if kind == "c" else 0
        peak = max(peak, waiting)
    # a turn of the loop takes about 8 KiB of a client's commands before it looks again
    assert BACKLOG_MARK // 2 < peak < BACKLOG_MARK + 2 * len(sqls[0])
    session = ledger_records(gw.ledger, "--kind", "session_start")[-1]["session"]
    records = ledger_records(gw.ledger, "--session", session)
    statements = [r for r in records if r["kind"] == "statement" and r["sql"] in sqls]
    assert [r["sql"] for r in statements] == sqls
    results = {r["statement_seq"]: r for r in records if r["kind"] == "result"}
    for st in statements:
        assert results[st["statement_seq"]]["rows"] == 1
        assert results[st["statement_seq"]]["recording"]
    verify = sqlgate(
        "ledger", "verify", "--ledger", str(gw.ledger), "--pubkey", str(gw.public_key())
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_answers_that_arrive_while_the_ledger_is_congested_keep_a_cut_recording(
    slow_ledger_gateway: GatewayProcess, mariadb: MariaDB, tmp_path: Path
) -> None:
    """Congestion stops reading clients, not targets: the answers of commands already
    sent still come, and their result records queued past the byte mark with whole
    recordings ([recording] max_bytes each: 64 answers of 1 MB held 64 MB over a mark of
    256 KiB). A result queued while the waiting records hold the mark keeps the first
    CONGESTED_RECORDING_BYTES of its recording and says why (``recording_cut``); no
    statement or result record is dropped, and replay says the recording was cut."""
    gw = slow_ledger_gateway
    events = tmp_path / "events"
    n, answer = 64, 1_000_000
    sqls = [f"SELECT {i}, REPEAT('x', {answer}) FROM congest_t" for i in range(n)]
    mariadb.admin_sql(
        "CREATE TABLE IF NOT EXISTS shop.congest_t (id INT)",
        "DELETE FROM shop.congest_t",
        "INSERT INTO shop.congest_t VALUES (1)",
    )
    holder = mariadb.connect(database="shop")
    conn = gw.connect(database="shop", read_timeout=60)
    lock = sqlite3.connect(gw.ledger, isolation_level=None)
    try:
        with holder.cursor() as cur:  # the statements wait for the table at the server
            cur.execute("LOCK TABLES congest_t WRITE")
        conn._sock.sendall(b"".join(frame(0, b"\x03" + sql.encode()) for sql in sqls))
        deadline = time.monotonic() + 60
        while sum(b for kind, b in _events(events) if kind == "c") < sum(map(len, sqls)):
            assert time.monotonic() < deadline, _events(events)  # every statement committed
            time.sleep(0.01)
        lock.execute("BEGIN EXCLUSIVE")  # the ledger's commits wait
        with holder.cursor() as cur:  # the answers come, the ledger still stalled
            cur.execute("UNLOCK TABLES")
        for i in range(n):
            conn._next_seq_id = 1
            conn._read_query_result()
            assert conn._result.rows == ((i, "x" * answer),)  # the client got it whole
        while len([b for kind, b in _events(events) if kind == "r"]) < n:
            assert time.monotonic() < deadline, _events(events)
            time.sleep(0.01)
        queued = [b for kind, b in _events(events) if kind == "r"]
        lock.execute("ROLLBACK")
    finally:
        lock.close()
        conn.close()
        holder.close()
    assert gw.stop() == 0  # its last records committed
    mariadb.admin_sql("DROP TABLE shop.congest_t")
    assert all(kind != "f" for kind, _ in _events(events))
    # one whole recording may pass the mark (it was under it), then only cut ones
    cut = audit.CONGESTED_RECORDING_BYTES
    small = cut + store.RECORD_BYTES + len(sqls[-1])
    assert max(queued) < BACKLOG_MARK + answer + n * small, queued
    session = ledger_records(gw.ledger, "--kind", "session_start")[-1]["session"]
    records = ledger_records(gw.ledger, "--session", session)
    statements = [r for r in records if r["kind"] == "statement" and r["sql"] in sqls]
    assert [r["sql"] for r in statements] == sqls
    results = {r["statement_seq"]: r for r in records if r["kind"] == "result"}
    answered = [results[st["statement_seq"]] for st in statements]
    assert all(r["rows"] == 1 and r["recording"] for r in answered)
    whole, *congested = answered  # the first was queued under the mark
    assert "recording_cut" not in whole and whole["recording_bytes"] > answer
    for r in congested:
        assert r["recording_cut"] == audit.CUT_CONGESTED
        assert r["recording_truncated"] is True and r["recording_bytes"] == cut
    verify = sqlgate(
        "ledger", "verify", "--ledger", str(gw.ledger), "--pubkey", str(gw.public_key())
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    replay = sqlgate("replay", session, "--ledger", str(gw.ledger), "--speed", "1000000")
    assert replay.returncode == 0, replay.stderr
    said = [line.strip() for line in replay.stdout.splitlines()]
    assert said.count(f"(recording cut at {cut} bytes: ledger congested)") == n - 1
    assert said.count("(more rows came back than were recorded)") == n - 1


def test_a_refused_stmt_close_leaves_the_next_query_its_own_answer(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """COM_STMT_CLOSE has no answer. Refused while the ledger is unavailable, it got an
    ERR all the same, which the client took for the answer to its next query, and each
    answer after was one late: the first query after the ledger was back failed with the
    1105 meant for the one before it."""
    import mysql.connector

    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki).start()
    lock = sqlite3.connect(gw.ledger, isolation_level=None)
    try:
        mc = gw.connector()
        prepared = mc.cursor(prepared=True)
        prepared.execute("SELECT name FROM customers WHERE id = ?", (2,))
        assert prepared.fetchall() == [("Grace Hopper",)]
        cur = mc.cursor()
        lock.execute("BEGIN EXCLUSIVE")  # another program holds the ledger's write lock
        prepared.close()  # COM_STMT_CLOSE, refused: no answer comes
        with pytest.raises(mysql.connector.Error) as err:
            cur.execute("SELECT name FROM customers WHERE id = 1")
        assert (err.value.errno, err.value.msg) == (1105, "sqlgate: audit ledger unavailable")
        lock.execute("ROLLBACK")
        gw.wait_ledger()
        cur.execute("SELECT name FROM customers WHERE id = 2")
        assert cur.fetchall() == [("Grace Hopper",)]
        cur.execute("SELECT 7")
        assert cur.fetchall() == [(7,)]
        mc.close()
    finally:
        lock.close()
        assert gw.stop() == 0


def test_a_statement_whose_close_was_refused_runs_no_more(mariadb: MariaDB, tmp_path: Path) -> None:
    """A COM_STMT_CLOSE refused while the ledger was unavailable did not reach the
    server: the statement stayed prepared there and, executed again by its id once the
    ledger was back, ran and gave its rows, though the client had closed it. It is now
    answered as the server answers a closed statement, and runs no more; a later close
    of it goes to the server."""
    import mysql.connector

    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki).start()
    lock = sqlite3.connect(gw.ledger, isolation_level=None)
    try:
        mc = gw.connector()
        prepared = mc.cursor(prepared=True)
        prepared.execute("SELECT name FROM customers WHERE id = ?", (2,))
        assert prepared.fetchall() == [("Grace Hopper",)]
        statement_id = prepared._prepared["statement_id"]
        parameters = prepared._prepared["parameters"]
        lock.execute("BEGIN EXCLUSIVE")  # another program holds the ledger's write lock
        prepared.close()  # COM_STMT_CLOSE, refused: no answer comes
        with pytest.raises(mysql.connector.Error) as err:
            mc.cmd_ping()
        assert err.value.errno == 1105
        lock.execute("ROLLBACK")
        gw.wait_ledger()
        with pytest.raises(mysql.connector.Error) as err:
            mc.cmd_stmt_execute(statement_id, (2,), parameters, 0)
        assert err.value.errno == 1243
        assert f"Unknown prepared statement handler ({statement_id})" in err.value.msg
        mc.cmd_stmt_close(statement_id)  # goes to the server this time
        with pytest.raises(mysql.connector.Error) as err:
            mc.cmd_stmt_execute(statement_id, (2,), parameters, 0)
        assert err.value.errno == 1243  # the server's own answer now
        cur = mc.cursor()
        cur.execute("SELECT 7")
        assert cur.fetchall() == [(7,)]
        mc.close()
    finally:
        lock.close()
        assert gw.stop() == 0
    records = ledger_records(gw.ledger)
    executes = [
        r for r in records if r["kind"] == "statement" and r["command"] == "COM_STMT_EXECUTE"
    ]
    refused = next(
        r
        for r in records
        if r["kind"] == "result"
        and (r["session"], r["statement_seq"])
        == (executes[1]["session"], executes[1]["statement_seq"])
    )
    assert refused["error"] == 1243
    assert "its COM_STMT_CLOSE was refused" in refused["reason"]


def test_kill_9_during_16_writers_loses_no_record_of_a_committed_row(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    import threading
    import time

    mariadb.admin_sql(
        "CREATE TABLE IF NOT EXISTS shop.crash_t (id INT PRIMARY KEY)", "DELETE FROM shop.crash_t"
    )
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki).start()
    stop = threading.Event()

    def writer(n: int) -> None:
        try:
            with gw.connect() as conn, conn.cursor() as cur:
                i = 0
                while not stop.is_set():
                    cur.execute(f"INSERT INTO crash_t VALUES ({n * 1_000_000 + i})")
                    i += 1
        except pymysql.err.MySQLError:
            pass  # the gateway died under us

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    assert gw.proc is not None
    gw.proc.kill()  # kill -9: no drain, no final checkpoint
    gw.proc.wait()
    stop.set()
    for t in threads:
        t.join(10)
    committed = {row[0] for row in mariadb.admin_sql("SELECT id FROM shop.crash_t")}
    assert len(committed) > 100  # the writers did get going

    gw.proc = None
    gw.start()  # the same ledger: the chain continues
    try:
        with gw.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM crash_t")
            assert cur.fetchone() == (len(committed),)
    finally:
        assert gw.stop() == 0
    recorded = {
        int(r["sql"].rsplit("(", 1)[1].rstrip(")"))
        for r in ledger_records(gw.ledger)
        if r["kind"] == "statement" and r["sql"].startswith("INSERT INTO crash_t")
    }
    assert committed <= recorded  # every committed row had its statement record first
    verify = sqlgate(
        "ledger", "verify", "--ledger", str(gw.ledger), "--pubkey", str(gw.public_key())
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_executes_of_a_large_prepared_text_carry_it_cut_and_name_its_prepare(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """Each execute's record carried the whole prepared text: a 7-byte COM_STMT_EXECUTE
    of a 1 MB text wrote 1 MB to the ledger. Past 4 KiB the text is cut and names the
    prepare's record, which has it whole."""
    ids = ", ".join(str(i) for i in range(20_000))
    prepared = f"SELECT name FROM customers WHERE id = ? AND id IN ({ids})"
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki).start()
    try:
        mc = gw.connector()
        cur = mc.cursor(prepared=True)
        for _ in range(5):
            cur.execute(prepared, (2,))
            assert cur.fetchall() == [("Grace Hopper",)]
        cur.close()
        mc.close()
    finally:
        assert gw.stop() == 0
    statements = ledger_records(gw.ledger, "--kind", "statement")
    (prepare,) = [s for s in statements if s["command"] == "COM_STMT_PREPARE"]
    assert prepare["sql"] == prepared
    executes = [s for s in statements if s["command"] == "COM_STMT_EXECUTE"]
    assert len(executes) == 5
    for execute in executes:
        assert execute["sql"].startswith(prepared[:4000])
        assert len(execute["sql"]) < 4096 + 200
        assert f"sql_sha256 {prepare['sql_sha256']}" in execute["sql"]
        assert f"{len(prepared)} bytes in all" in execute["sql"]


def test_an_execute_records_the_values_it_binds(mariadb: MariaDB, tmp_path: Path) -> None:
    """The record of an execute carried only the prepared text: `DELETE FROM t WHERE id =
    ?` said nothing of which row it deleted. Its values are now in the record, as SQL
    literals, for the binary protocol of mysql-connector, Node's mysql2 and MariaDB's
    Connector/Node.js (which pipelines the prepare and an execute of id 0xFFFFFFFF)."""
    mariadb.admin_sql(
        "CREATE OR REPLACE TABLE shop.audit_params (id INT PRIMARY KEY, note VARCHAR(40), "
        "at DATETIME, f DOUBLE)",
        "INSERT INTO shop.audit_params VALUES (1, 'a', NULL, 0), (2, 'b', NULL, 0), "
        "(3, 'c', NULL, 0), (4, 'd', NULL, 0)",
    )
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki).start()
    update = "UPDATE audit_params SET note = ?, at = ?, f = ? WHERE id = ?"
    try:
        mc = gw.connector(database="shop")
        cur = mc.cursor(prepared=True)
        cur.execute(update, ("O'Hara\n", "2026-11-29 10:00:05", 1.5, 1))
        cur.execute(update, (None, None, -2.25, 2))  # the same statement again
        cur.close()
        mc.close()
        for driver, row in (("mysql2", 3), ("mariadb", 4)):
            acct = gw.account("agent")
            spec = node_spec(
                host=gw.host,
                port=gw.port,
                user=acct.user,
                password=acct.password,
                database="shop",
                queries=["DELETE FROM audit_params WHERE id = ? AND note = ?"],
                prepared=True,
                driver=driver,
            )
            spec["params"] = [[row, "cd"[row - 3]]]
            run_node(spec)
    finally:
        assert gw.stop() == 0
        mariadb.admin_sql("DROP TABLE shop.audit_params")
    executes = [
        s
        for s in ledger_records(gw.ledger, "--kind", "statement")
        if s["command"] == "COM_STMT_EXECUTE"
    ]
    assert [s.get("params") for s in executes] == [
        ["'O''Hara\\n'", "'2026-11-29 10:00:05'", "1.5", "1"],
        ["NULL", "NULL", "-2.25", "2"],
        ["3", "'c'"],
        ["4", "'d'"],
    ]
    session = executes[0]["session"]
    shown = sqlgate("replay", session, "--ledger", str(gw.ledger)).stdout.splitlines()
    params = [i for i, line in enumerate(shown) if "  params: " in line]
    assert [shown[i].split("  params: ")[1] for i in params] == [
        "'O''Hara\\n', '2026-11-29 10:00:05', 1.5, 1",
        "NULL, NULL, -2.25, 2",
    ]
    assert all(shown[i - 1].endswith(f"> {update}") for i in params)  # under its execute


def test_an_execute_refused_by_the_gateway_does_not_change_how_the_next_is_read(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """An execute the gateway refused (here by statements_per_second) never reached the
    server, yet the types it sent stayed with the gateway: the next execute, which sent
    no types, was recorded as binding the string '4000000' while the server read the
    LONGLONG of the execute before it and ran with that number."""
    gw = GatewayProcess(
        tmp_path / "gw",
        mariadb,
        mariadb.pki,
        extra_toml="[policy]\nstatements_per_second = 2\n",
    ).start()
    number = int.from_bytes(b"\x074000000", "little", signed=True)
    try:
        with gw.connect(database="shop") as conn:
            time.sleep(1.1)  # the login's own statements are out of the rate's second
            conn._execute_command(0x16, "SELECT CONCAT(?)")  # COM_STMT_PREPARE
            ok = conn._read_packet().get_all_data()
            statement = int.from_bytes(ok[1:5], "little")
            for _ in range(4):  # the parameter's definition, an EOF, the column's, an EOF
                conn._read_packet()
            head = statement.to_bytes(4, "little") + b"\x00\x01\x00\x00\x00"

            def execute(block: bytes) -> list[bytes]:
                conn._execute_command(0x17, head + block)  # COM_STMT_EXECUTE
                conn._read_packet()  # the column count (an ERR raises)
                conn._read_packet()  # its definition
                conn._read_packet()  # EOF
                out = []
                while not (row := conn._read_packet()).is_eof_packet():
                    out.append(row.get_all_data())
                return out

            assert len(execute(b"\x00\x01\x08\x00" + (5).to_bytes(8, "little"))) == 1
            with pytest.raises(pymysql.err.OperationalError) as refused:
                execute(b"\x00\x01\xfd\x00\x07abcdefg")  # VAR_STRING, over the rate
            assert refused.value.args[0] == 1227
            time.sleep(1.1)
            rows = execute(b"\x00\x00\x074000000")  # no types: LONGLONG, as before
            assert len(rows) == 1 and str(number).encode() in rows[0]
    finally:
        assert gw.stop() == 0
    executes = [
        s
        for s in ledger_records(gw.ledger, "--kind", "statement")
        if s["command"] == "COM_STMT_EXECUTE"
    ]
    assert [(s["decision"], s.get("params")) for s in executes] == [
        ("allowed", ["5"]),
        ("blocked", ["'abcdefg'"]),
        ("allowed", [str(number)]),
    ]
