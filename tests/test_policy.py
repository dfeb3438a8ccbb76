"""The policy in the real gateway: refusals the client can act on, nothing forwarded that
was refused, each statement of a text decided and recorded, shadow mode, the guard."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from lab.clients import ClientError, ledger_records, run_mariadb
from lab.gateway import GatewayAccount, GatewayProcess
from lab.mariadb import MariaDB
from pymysql.constants import CLIENT

from appliance.mysql import packets
from appliance.mysql.constants import Command
from appliance.mysql.wire import frame

pytestmark = pytest.mark.integration

RULES = """
[[rules]]
name = "orders-are-read-only"
statements = ["UPDATE", "DELETE", "INSERT"]
tables = ["shop.orders"]
action = "block"

[[rules]]
name = "dba-may-alter"
statements = ["ALTER TABLE"]
groups = ["dba"]
action = "allow"
"""


def statements(gw: GatewayProcess) -> list[dict[str, Any]]:
    return [r for r in ledger_records(gw.ledger) if r["kind"] == "statement"]


def result_of(recs: list[dict[str, Any]], st: dict[str, Any]) -> dict[str, Any]:
    (res,) = [
        r
        for r in recs
        if r["kind"] == "result"
        and (r["session"], r["statement_seq"]) == (st["session"], st["statement_seq"])
    ]
    return res


def direct(mariadb: MariaDB, sql: str) -> list[tuple[Any, ...]]:
    conn = mariadb.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            rows = list(cur.fetchall())
        conn.commit()
        return rows
    finally:
        conn.close()


@pytest.fixture(scope="module")
def gw(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    direct(mariadb, "CREATE TABLE IF NOT EXISTS shop.pol_items (id INT PRIMARY KEY, v INT)")
    direct(mariadb, "DELETE FROM shop.pol_items")
    direct(mariadb, "INSERT INTO shop.pol_items VALUES (1, 10), (2, 20), (3, 30)")
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gw"), mariadb, mariadb.pki, extra_toml=RULES
    ).start()
    yield gw
    assert gw.stop() == 0
    assert "Traceback" not in gw.log()


def items(mariadb: MariaDB) -> list[tuple[Any, ...]]:
    return direct(mariadb, "SELECT id, v FROM shop.pol_items ORDER BY id")


def refused(conn: Any, sql: str) -> str:
    """The message of the 1227 a statement gets; fails if it ran."""
    with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
        cur.execute(sql)
    code, message = info.value.args
    assert code == 1227, message
    return str(message)


REPLACE_RULES = """
[[rules]]
name = "orders-keep"
statements = ["DROP", "TRUNCATE", "DELETE", "UPDATE", "ALTER TABLE", "RENAME TABLE"]
tables = ["shop.replaced_orders"]
action = "block"

[[rules]]
name = "agents-may-create"
statements = ["CREATE TABLE", "CREATE VIEW", "CREATE INDEX"]
action = "allow"
"""


def test_create_or_replace_table_is_a_drop_for_the_rules(mariadb: MariaDB, tmp_path: Path) -> None:
    """MariaDB's CREATE OR REPLACE drops the existing object first. A rule blocking DROP
    on shop.replaced_orders did not see CREATE OR REPLACE TABLE shop.replaced_orders, and
    the allow for CREATE TABLE ran it: MariaDB dropped the table and its rows, and made
    an empty one."""
    mariadb.admin_sql(
        "CREATE OR REPLACE TABLE shop.replaced_orders (id INT PRIMARY KEY, v INT)",
        "INSERT INTO shop.replaced_orders VALUES (1, 1), (2, 2), (3, 3)",
    )
    gw = GatewayProcess(tmp_path, mariadb, mariadb.pki, extra_toml=REPLACE_RULES).start()
    try:
        with gw.connect(database="shop") as conn:
            refused(conn, "DROP TABLE replaced_orders")
            for sql in (
                "CREATE OR REPLACE TABLE replaced_orders (id INT)",
                "CREATE OR REPLACE TABLE shop.replaced_orders AS SELECT 1 AS id, 1 AS v",
                "CREATE OR REPLACE SEQUENCE replaced_orders",
            ):
                assert "blocked by rule 'orders-keep'" in refused(conn, sql), sql
            with conn.cursor() as cur:  # the allow still creates what is new
                cur.execute("CREATE TABLE replace_new (id INT)")
        rows = direct(mariadb, "SELECT id, v FROM shop.replaced_orders ORDER BY id")
        assert rows == [(1, 1), (2, 2), (3, 3)]
    finally:
        assert gw.stop() == 0
        mariadb.admin_sql(
            "DROP TABLE IF EXISTS shop.replace_new", "DROP TABLE shop.replaced_orders"
        )
    assert "Traceback" not in gw.log()


THROUGH_RULES = """
[[rules]]
name = "through-orders-keep"
statements = ["DELETE", "UPDATE"]
tables = ["shop.thr_orders", "shop.thr_stamps"]
action = "block"
"""


def test_a_view_or_a_cascading_foreign_key_does_not_hide_a_protected_table(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """Objects made outside the gateway change a table under another name: a DELETE
    through an updatable view of shop.thr_orders, and a DELETE or UPDATE of the parent
    of its foreign key ON DELETE / ON UPDATE CASCADE, changed its rows while the rule
    blocking DELETE and UPDATE on it saw only the names written."""
    mariadb.admin_sql(
        "DROP VIEW IF EXISTS shop.v_thr_orders",
        "DROP TABLE IF EXISTS shop.thr_orders, shop.thr_customers",
        "CREATE TABLE shop.thr_customers (id INT PRIMARY KEY, name TEXT) ENGINE=InnoDB",
        "CREATE TABLE shop.thr_orders (id INT PRIMARY KEY, v INT, FOREIGN KEY (v) "
        "REFERENCES shop.thr_customers (id) ON DELETE CASCADE ON UPDATE CASCADE) ENGINE=InnoDB",
        "INSERT INTO shop.thr_customers VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        "INSERT INTO shop.thr_orders VALUES (1, 1), (2, 2), (3, 3)",
        "CREATE VIEW shop.v_thr_orders AS SELECT id, v FROM shop.thr_orders",
        # a key on a column the server sets itself on every update of its row
        "DROP TABLE IF EXISTS shop.thr_stamps, shop.thr_stamped",
        "CREATE TABLE shop.thr_stamped (id INT PRIMARY KEY, name TEXT, ts TIMESTAMP(6) NOT "
        "NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), UNIQUE (ts))",
        "INSERT INTO shop.thr_stamped (id, name) VALUES (1, 'a')",
        "CREATE TABLE shop.thr_stamps (id INT PRIMARY KEY, ts TIMESTAMP(6) NULL, FOREIGN KEY "
        "(ts) REFERENCES shop.thr_stamped (ts) ON UPDATE CASCADE)",
        "INSERT INTO shop.thr_stamps SELECT 1, ts FROM shop.thr_stamped",
    )
    gw = GatewayProcess(tmp_path, mariadb, mariadb.pki, extra_toml=THROUGH_RULES).start()
    try:
        with gw.connect(database="shop") as conn:
            message = refused(conn, "DELETE FROM v_thr_orders WHERE id = 1")
            assert "blocked by rule 'through-orders-keep'" in message
            assert "rows of shop.thr_orders (through view shop.v_thr_orders)" in message
            message = refused(conn, "DELETE FROM thr_customers WHERE id = 1")
            assert "deletes rows of shop.thr_orders (through foreign key shop." in message
            refused(conn, "UPDATE thr_customers SET id = 20 WHERE id = 2")
            refused(conn, "UPDATE shop.v_thr_orders SET v = 3 WHERE id = 1")
            refused(
                conn, "INSERT INTO thr_customers VALUES (2, 'b') ON DUPLICATE KEY UPDATE id = 9"
            )
            # it sets no column of the key, but the server changes ts, and the key with it
            refused(conn, "UPDATE thr_stamped SET name = 'z' WHERE id = 1")
            with conn.cursor() as cur:  # what reaches nothing protected still runs
                cur.execute("INSERT INTO thr_customers VALUES (4, 'd')")
                # an UPDATE that leaves the referenced key as it is changes no order
                cur.execute("UPDATE thr_customers SET name = 'z' WHERE id = 3")
            conn.commit()
        rows = direct(mariadb, "SELECT id, v FROM shop.thr_orders ORDER BY id")
        assert rows == [(1, 1), (2, 2), (3, 3)]
        names = direct(mariadb, "SELECT id, name FROM shop.thr_customers ORDER BY id")
        assert names == [(1, "a"), (2, "b"), (3, "z"), (4, "d")]
    finally:
        assert gw.stop() == 0
        mariadb.admin_sql(
            "DROP VIEW IF EXISTS shop.v_thr_orders",
            "DROP TABLE IF EXISTS shop.thr_orders, shop.thr_customers",
            "DROP TABLE IF EXISTS shop.thr_stamps, shop.thr_stamped",
        )
    assert "Traceback" not in gw.log()


def test_a_statement_prepared_before_a_foreign_key_is_decided_again(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """A DELETE prepared before an operator added a foreign key ON DELETE CASCADE into
    a protected table kept the decision of its prepare: its executes deleted the
    protected rows, while a new DELETE was refused."""
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.thr_orders, shop.thr_customers",
        "CREATE TABLE shop.thr_customers (id INT PRIMARY KEY) ENGINE=InnoDB",
        "CREATE TABLE shop.thr_orders (id INT PRIMARY KEY, v INT) ENGINE=InnoDB",
        "INSERT INTO shop.thr_customers VALUES (1), (2), (3), (4)",
        "INSERT INTO shop.thr_orders VALUES (1, 1), (2, 2), (3, 3)",
    )
    toml = THROUGH_RULES + "\n[policy]\nviews_refresh_s = 1\n"
    gw = GatewayProcess(tmp_path, mariadb, mariadb.pki, extra_toml=toml).start()
    try:
        conn = gw.connector(database="shop")
        cur = conn.cursor(prepared=True)
        delete = "DELETE FROM thr_customers WHERE id = ?"
        cur.execute(delete, (4,))  # nothing protected is reached yet: it runs
        conn.commit()
        mariadb.admin_sql(
            "ALTER TABLE shop.thr_orders ADD CONSTRAINT thr_fk FOREIGN KEY (v) "
            "REFERENCES shop.thr_customers (id) ON DELETE CASCADE"
        )
        deadline = time.monotonic() + 15
        with gw.connect(database="shop") as plain:  # until the gateway has read the key
            while True:
                try:
                    with plain.cursor() as check:
                        check.execute("DELETE FROM thr_customers WHERE id = 99")
                except pymysql.err.OperationalError as exc:
                    assert exc.args[0] == 1227
                    break
                assert time.monotonic() < deadline, "the gateway did not read the key"
                time.sleep(0.2)
        with pytest.raises(mysql.connector.Error) as caught:
            cur.execute(delete, (1,))  # the statement prepared before the key
        assert caught.value.errno == 1227
        assert "prepare it again to have it decided" in str(caught.value.msg)
        cur.close()
        conn.close()
        rows = direct(mariadb, "SELECT id, v FROM shop.thr_orders ORDER BY id")
        assert rows == [(1, 1), (2, 2), (3, 3)]
    finally:
        assert gw.stop() == 0
        mariadb.admin_sql("DROP TABLE IF EXISTS shop.thr_orders, shop.thr_customers")
    assert "Traceback" not in gw.log()


TRIGGER_RULES = """
[[rules]]
name = "trigger-orders-keep"
statements = ["DELETE", "UPDATE"]
tables = ["shop.trg_orders"]
action = "block"

[[rules]]
name = "agents-may-make-triggers"
statements = ["CREATE TRIGGER"]
tables = ["shop.*"]
action = "allow"
"""


def test_a_trigger_does_not_hide_a_protected_table(mariadb: MariaDB, tmp_path: Path) -> None:
    """A trigger made on the server outside the gateway changes a table under another
    name: DELETE FROM trg_customers ran its AFTER DELETE trigger, which deleted the
    rows of shop.trg_orders that a rule blocking DELETE on it protects."""
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.trg_orders, shop.trg_customers, shop.trg_plain, shop.trg_log",
        "CREATE TABLE shop.trg_customers (id INT PRIMARY KEY, name TEXT)",
        "CREATE TABLE shop.trg_orders (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE shop.trg_plain (id INT PRIMARY KEY)",
        "CREATE TABLE shop.trg_log (id INT AUTO_INCREMENT PRIMARY KEY, what INT)",
        "INSERT INTO shop.trg_customers VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        "INSERT INTO shop.trg_orders VALUES (1, 1), (2, 2), (3, 3)",
        "INSERT INTO shop.trg_plain VALUES (1), (2)",
        # bare names in a body are the trigger's schema's, whatever the session's
        "CREATE TRIGGER shop.trg_customers_gone AFTER DELETE ON shop.trg_customers "
        "FOR EACH ROW BEGIN\n  DECLARE n INT DEFAULT 0;\n"
        "  SELECT COUNT(*) INTO n FROM trg_orders WHERE v = OLD.id;\n"
        "  IF n > 0 THEN\n    DELETE FROM trg_orders WHERE v = OLD.id;\n  END IF;\nEND",
        # a body the gateway cannot read: it calls a procedure
        "CREATE TRIGGER shop.trg_customers_renamed BEFORE UPDATE ON shop.trg_customers "
        "FOR EACH ROW BEGIN IF NEW.name = 'x' THEN CALL shop.trg_nothing(); END IF; END",
        # a harmless one: it writes a table no rule protects
        "CREATE TRIGGER shop.trg_plain_log AFTER DELETE ON shop.trg_plain "
        "FOR EACH ROW INSERT INTO trg_log (what) VALUES (OLD.id)",
    )
    gw = GatewayProcess(tmp_path, mariadb, mariadb.pki, extra_toml=TRIGGER_RULES).start()
    try:
        with gw.connect(database="mysql") as conn:
            message = refused(conn, "DELETE FROM shop.trg_customers WHERE id = 1")
            assert "blocked by rule 'trigger-orders-keep'" in message
            assert (
                "DELETE FROM shop.trg_customers also deletes rows of shop.trg_orders (through "
                "trigger shop.trg_customers_gone AFTER DELETE)" in message
            )
        with gw.connect(database="shop") as conn:
            # a REPLACE deletes the row it collides with: its DELETE triggers run
            message = refused(conn, "REPLACE INTO trg_customers VALUES (2, 'b')")
            assert "(through trigger shop.trg_customers_gone AFTER DELETE)" in message
            message = refused(conn, "UPDATE trg_customers SET name = 'z' WHERE id = 3")
            assert "trigger shop.trg_customers_renamed BEFORE UPDATE, whose body the gateway" in (
                message
            )
            with conn.cursor() as cur:  # what reaches nothing protected still runs
                cur.execute("DELETE FROM trg_plain WHERE id = 1")
                cur.execute("INSERT INTO trg_customers VALUES (4, 'd')")
            conn.commit()
            # a trigger made through the gateway is read again at once
            with conn.cursor() as cur:
                cur.execute(
                    "CREATE TRIGGER trg_plain_wipe AFTER INSERT ON trg_plain FOR EACH ROW "
                    "DELETE FROM trg_orders WHERE v = NEW.id"
                )
            deadline = time.monotonic() + 10
            while True:  # (no order has v = 9: one that runs early deletes none)
                try:
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO trg_plain VALUES (9)")
                except pymysql.err.OperationalError as exc:
                    assert exc.args[0] == 1227
                    assert "(through trigger shop.trg_plain_wipe AFTER INSERT)" in exc.args[1]
                    break
                direct(mariadb, "DELETE FROM shop.trg_plain WHERE id = 9")
                assert time.monotonic() < deadline, "the gateway did not read the trigger"
                time.sleep(0.1)
        rows = direct(mariadb, "SELECT id, v FROM shop.trg_orders ORDER BY id")
        assert rows == [(1, 1), (2, 2), (3, 3)]
        names = direct(mariadb, "SELECT id, name FROM shop.trg_customers ORDER BY id")
        assert names == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]
        assert (1,) in direct(mariadb, "SELECT what FROM shop.trg_log")
    finally:
        assert gw.stop() == 0
        mariadb.admin_sql(
            "DROP TABLE IF EXISTS shop.trg_orders, shop.trg_customers, shop.trg_plain, shop.trg_log"
        )


def test_a_statement_prepared_with_sql_prepare_before_a_foreign_key_is_decided_again(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """The SQL-level form: `EXECUTE s` of a `PREPARE s FROM 'DELETE ...'` made before an
    operator added a foreign key ON DELETE CASCADE into a protected table kept the
    decision of its PREPARE, and deleted the protected rows."""
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.thr_orders, shop.thr_customers",
        "CREATE TABLE shop.thr_customers (id INT PRIMARY KEY) ENGINE=InnoDB",
        "CREATE TABLE shop.thr_orders (id INT PRIMARY KEY, v INT) ENGINE=InnoDB",
        "INSERT INTO shop.thr_customers VALUES (1), (2), (3), (4)",
        "INSERT INTO shop.thr_orders VALUES (1, 1), (2, 2), (3, 3)",
    )
    toml = THROUGH_RULES + "\n[policy]\nviews_refresh_s = 1\n"
    gw = GatewayProcess(tmp_path, mariadb, mariadb.pki, extra_toml=toml).start()
    try:
        with gw.connect(database="shop", client_flag=CLIENT.MULTI_STATEMENTS) as conn:
            with conn.cursor() as cur:  # nothing protected is reached yet: it runs
                cur.execute("PREPARE s FROM 'DELETE FROM thr_customers WHERE id = ?'")
                cur.execute("SET @id = 4")
                cur.execute("EXECUTE s USING @id")
                cur.execute("PREPARE s1 FROM 'DELETE FROM thr_customers WHERE id = 1'")
            conn.commit()
            mariadb.admin_sql(
                "ALTER TABLE shop.thr_orders ADD CONSTRAINT thr_fk FOREIGN KEY (v) "
                "REFERENCES shop.thr_customers (id) ON DELETE CASCADE"
            )
            deadline = time.monotonic() + 15
            while True:  # until the gateway has read the key
                try:
                    with conn.cursor() as check:
                        check.execute("DELETE FROM thr_customers WHERE id = 99")
                except pymysql.err.OperationalError as exc:
                    assert exc.args[0] == 1227
                    break
                assert time.monotonic() < deadline, "the gateway did not read the key"
                time.sleep(0.2)
            message = refused(conn, "EXECUTE s1")  # prepared before the key
            assert "blocked by rule 'through-orders-keep'" in message
            assert "also deletes rows of shop.thr_orders" in message
            assert message.endswith("PREPARE s1 again to have it decided")
            with conn.cursor() as cur:
                cur.execute("SET @id = 2")
            message = refused(conn, "SELECT 1; EXECUTE s USING @id; SELECT 2")
            assert "blocked by rule 'through-orders-keep'" in message
            # prepared again now, it is decided as it stands: refused
            refused(conn, "PREPARE s1 FROM 'DELETE FROM thr_customers WHERE id = 1'")
        rows = direct(mariadb, "SELECT id, v FROM shop.thr_orders ORDER BY id")
        assert rows == [(1, 1), (2, 2), (3, 3)]
        recs = statements(gw)
        (st,) = [r for r in recs if r["sql"] == "EXECUTE s1"]
        assert st["decision"] == "blocked" and st["rule"] == "through-orders-keep"
    finally:
        assert gw.stop() == 0
        mariadb.admin_sql("DROP TABLE IF EXISTS shop.thr_orders, shop.thr_customers")
    assert "Traceback" not in gw.log()


def test_delete_without_where_is_refused_and_the_session_goes_on(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    before = items(mariadb)
    with gw.connect(database="shop") as conn:
        message = refused(conn, "DELETE FROM pol_items")
        assert message.startswith("sqlgate: blocked by rule 'delete-without-where': ")
        assert "Add a WHERE clause that selects the rows to delete" in message
        refused(conn, "UPDATE pol_items SET v = 0 WHERE 1 = 1")
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM pol_items")
            assert cur.fetchone() == (3,)
            cur.execute("UPDATE pol_items SET v = 11 WHERE id = 1")
        conn.commit()
    assert items(mariadb) == [(1, 11), (2, 20), (3, 30)] != before
    recs = ledger_records(gw.ledger)
    blocked = [r for r in recs if r["kind"] == "statement" and r["sql"] == "DELETE FROM pol_items"]
    assert len(blocked) == 1
    st = blocked[0]
    assert st["decision"] == "blocked" and st["rule"] == "delete-without-where"
    assert st["reason"].startswith("sqlgate: blocked by rule 'delete-without-where'")
    assert result_of(recs, st)["error"] == 1227
    direct(mariadb, "UPDATE shop.pol_items SET v = 10 WHERE id = 1")


def test_a_where_true_for_every_row_is_refused(gw: GatewayProcess, mariadb: MariaDB) -> None:
    """WHEREs MariaDB 10.11 found true for every row (each deleted all of them) that the
    gateway read as selective: different literals taken for one, a server constant read as
    a column, a comparison of a comparison read with sqlglot's precedence."""
    before = items(mariadb)
    with gw.connect(database="shop") as conn:
        for sql in (
            "DELETE FROM pol_items WHERE id <> 1 OR id <> 2",
            "DELETE FROM pol_items WHERE id > 5 OR id < 6",
            "UPDATE pol_items SET v = 0 WHERE (id) = id",
            "DELETE FROM pol_items WHERE utc_date",
            "DELETE FROM pol_items WHERE 1 IN (1, id)",
            "UPDATE pol_items SET v = 0 WHERE id BETWEEN id AND id",
        ):
            message = refused(conn, sql)
            verb = sql.split()[0].lower()
            assert message.startswith(f"sqlgate: blocked by rule '{verb}-without-where': ")
        for sql in (
            "DELETE FROM pol_items WHERE id = 1 <= 1",
            "DELETE FROM pol_items WHERE id = 1 IS TRUE",
        ):
            message = refused(conn, sql)
            assert message.startswith("sqlgate: blocked by rule 'not-understood': ")
            assert "result of another test" in message
        with conn.cursor() as cur:  # tests that tell rows apart still run
            cur.execute("UPDATE pol_items SET v = v WHERE id = 1 OR id = 2")
            cur.execute("UPDATE pol_items SET v = v WHERE id = 5 OR id <> 6 AND id < 0")
        conn.commit()
    assert items(mariadb) == before


def test_a_unicode_space_is_no_blank_to_the_server(gw: GatewayProcess, mariadb: MariaDB) -> None:
    """MariaDB reads U+00A0 as a letter of a name, so `--` followed by it starts no
    comment: `WHERE id = 1 --\u00a0x OR 1` is `id = 1 - -x OR 1`, true for every row.
    The parser read a comment there and the policy a WHERE that picks one row."""
    table = "shop.pol_nbsp"
    direct(mariadb, f"CREATE OR REPLACE TABLE {table} (id INT PRIMARY KEY, `\u00a0x` INT)")
    direct(mariadb, f"INSERT INTO {table} VALUES (1, 0), (2, 0), (3, 0)")
    sql = f"DELETE FROM {table} WHERE id = 1 --\u00a0x OR 1"
    with gw.connect(database="shop") as conn:
        message = refused(conn, sql)
        assert message.startswith("sqlgate: blocked by rule 'not-understood': ")
        assert "U+00A0 (NO-BREAK SPACE) outside a string" in message
        with conn.cursor() as cur:  # inside a string or a quoted name it is no blank anywhere
            cur.execute(f"SELECT COUNT(*) FROM {table} WHERE `\u00a0x` = 0 AND '\u00a0' <> ' '")
            assert cur.fetchone() == (3,)
    assert direct(mariadb, f"SELECT COUNT(*) FROM {table}") == [(3,)]
    direct(mariadb, sql)  # what the server makes of it: every row goes
    assert direct(mariadb, f"SELECT COUNT(*) FROM {table}") == [(0,)]
    direct(mariadb, f"DROP TABLE {table}")


def test_a_constant_the_parser_read_as_a_column_is_refused(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """MariaDB reads `BINARY BINARY -1`, `(BINARY DATE'2024-01-01')` and `'1' COLLATE
    utf8mb4_bin ^ 2` as constants, true for every row; the parser read a column in each
    (`BINARY`, `DATE`, `utf8mb4_bin`), and the policy a WHERE that tells rows apart."""
    table = "shop.pol_binary"
    direct(mariadb, f"CREATE OR REPLACE TABLE {table} (id INT PRIMARY KEY, v INT)")
    direct(mariadb, f"INSERT INTO {table} VALUES (1, 0), (2, 0), (3, 0)")
    wheres = (
        "BINARY BINARY -1",
        "id = 1 OR (BINARY DATE'2024-01-01')",
        "'1' COLLATE utf8mb4_bin ^ 2",
    )
    with gw.connect(database="shop") as conn:
        for where in wheres:
            for sql in (
                f"DELETE FROM {table} WHERE {where}",
                f"UPDATE {table} SET v = 1 WHERE {where}",
            ):
                message = refused(conn, sql)
                assert message.startswith("sqlgate: blocked by rule 'not-understood': "), sql
        with conn.cursor() as cur:  # a COLLATE on a column still runs
            cur.execute(
                f"UPDATE {table} SET v = 2 WHERE CAST(id AS CHAR) COLLATE utf8mb4_bin = '2'"
            )
        conn.commit()
    assert direct(mariadb, f"SELECT id, v FROM {table} ORDER BY id") == [(1, 0), (2, 2), (3, 0)]
    for where in wheres:  # what the server makes of each: every row goes
        direct(mariadb, f"INSERT IGNORE INTO {table} VALUES (1, 0), (2, 0), (3, 0)")
        direct(mariadb, f"DELETE FROM {table} WHERE {where}")
        assert direct(mariadb, f"SELECT COUNT(*) FROM {table}") == [(0,)], where
    direct(mariadb, f"DROP TABLE {table}")


def test_sqlstate_is_42000(gw: GatewayProcess) -> None:
    conn = gw.connector()
    try:
        cur = conn.cursor()
        with pytest.raises(mysql.connector.Error) as info:
            cur.execute("TRUNCATE TABLE pol_items")
        assert info.value.errno == 1227 and info.value.sqlstate == "42000"
        assert "rule 'truncate'" in info.value.msg
    finally:
        conn.close()


def test_each_statement_of_a_multi_statement_text_is_decided_and_recorded(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    with gw.connect(database="shop", client_flag=CLIENT.MULTI_STATEMENTS) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT id FROM pol_items; SELECT 1, 2; UPDATE pol_items SET v = 12 WHERE id < 3"
            )
            assert cur.fetchall() == ((1,), (2,), (3,))
            assert cur.nextset() and cur.fetchall() == ((1, 2),)
            assert cur.nextset() and cur.rowcount == 2
        conn.commit()
        # one refused statement refuses the whole text: the INSERT before it does not run
        message = refused(
            conn, "INSERT INTO pol_items VALUES (9, 90); DELETE FROM pol_items WHERE 1"
        )
        assert "rule 'delete-without-where'" in message
        # a failing statement: the ones after it do not run
        with pytest.raises(pymysql.err.ProgrammingError), conn.cursor() as cur:
            cur.execute("SELECT 7; SELECT * FROM no_such_table; SELECT 8")
            while cur.nextset():
                pass
    assert items(mariadb) == [(1, 12), (2, 12), (3, 30)]
    direct(mariadb, "UPDATE shop.pol_items SET v = id * 10")
    recs = ledger_records(gw.ledger)
    sts = [r for r in recs if r["kind"] == "statement"]

    def part(sql: str) -> dict[str, Any]:
        (st,) = [s for s in sts if s["sql"] == sql]
        return st

    first = part("SELECT id FROM pol_items")
    second = part("SELECT 1, 2")
    third = part("UPDATE pol_items SET v = 12 WHERE id < 3")
    assert second["statement_seq"] == first["statement_seq"] + 1
    assert third["statement_seq"] == first["statement_seq"] + 2
    assert [first["part"], second["part"], third["part"]] == ["1/3", "2/3", "3/3"]
    assert first["sql_sha256"] == third["sql_sha256"]  # the packet that carried them
    assert (result_of(recs, first)["rows"], result_of(recs, second)["rows"]) == (3, 1)
    assert result_of(recs, third)["affected"] == 2
    insert = part("INSERT INTO pol_items VALUES (9, 90)")
    delete = part("DELETE FROM pol_items WHERE 1")
    assert insert["decision"] == delete["decision"] == "blocked"
    assert delete["rule"] == insert["rule"] == "delete-without-where"
    assert insert["reason"].startswith("not run: statement 2 of the same text was refused")
    assert result_of(recs, insert)["error"] == 1227
    seven, missing, eight = part("SELECT 7"), part("SELECT * FROM no_such_table"), part("SELECT 8")
    assert result_of(recs, seven)["rows"] == 1 and result_of(recs, seven)["error"] is None
    assert result_of(recs, missing)["error"] == 1146
    assert result_of(recs, eight)["note"].startswith("not run")


def test_prepared_statements_are_decided_at_prepare_time(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    conn = gw.connector()
    try:
        cur = conn.cursor(prepared=True)
        with pytest.raises(mysql.connector.Error) as info:
            cur.execute("DELETE FROM pol_items WHERE ? OR 1 = 1", (0,))
        assert info.value.errno == 1227
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT v FROM pol_items WHERE id = ?", (2,))
        assert cur.fetchall() == [(20,)]
        cur.execute("SELECT v FROM pol_items WHERE id = ?", (3,))
        assert cur.fetchall() == [(30,)]
    finally:
        conn.close()
    assert items(mariadb) == [(1, 10), (2, 20), (3, 30)]
    sts = statements(gw)
    prepare = [s for s in sts if s["command"] == "COM_STMT_PREPARE" and "OR 1 = 1" in s["sql"]]
    assert prepare and prepare[0]["rule"] == "delete-without-where"
    executes = [s for s in sts if s["command"] == "COM_STMT_EXECUTE"]
    assert [s["sql"] for s in executes[-2:]] == ["SELECT v FROM pol_items WHERE id = ?"] * 2
    assert all(s["rule"] == "prepared" and s["decision"] == "allowed" for s in executes)


def _like_rows(mariadb: MariaDB) -> list[tuple[Any, ...]]:
    return direct(mariadb, "SELECT id, name FROM shop.pol_like ORDER BY id")


def _reset_pol_like(mariadb: MariaDB) -> None:
    direct(mariadb, "CREATE OR REPLACE TABLE shop.pol_like (id INT PRIMARY KEY, name TEXT NULL)")
    direct(mariadb, "INSERT INTO shop.pol_like VALUES (1, 'abc1'), (2, 'xyz'), (3, NULL)")


def test_a_prepared_like_bound_to_only_percent_runs_nothing(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """`DELETE ... WHERE name LIKE ?` passes at its prepare, and an execute that bound
    '%' deleted every row with a name. Such an execute is refused (1227) before it
    reaches the server, as one whose pattern came as long data (not read); a pattern
    that selects rows runs."""
    _reset_pol_like(mariadb)
    before = _like_rows(mariadb)
    delete = "DELETE FROM pol_like WHERE name LIKE ?"
    conn = gw.connector()
    try:
        cur = conn.cursor(prepared=True)
        for pattern, named in (
            ("%", "parameter 1 = '%' (a pattern of only '%')"),
            ("%%", "parameter 1 = '%%' (a pattern of only '%')"),
            (io.BytesIO(b"%"), "sent apart with COM_STMT_SEND_LONG_DATA"),
        ):
            with pytest.raises(mysql.connector.Error) as info:
                cur.execute(delete, (pattern,))
            assert info.value.errno == 1227, info.value.msg
            assert "blocked by rule 'delete-without-where'" in info.value.msg
            assert named in info.value.msg and "for example 'abc%'" in info.value.msg
            assert _like_rows(mariadb) == before
        cur.execute(delete, ("abc%",))
        assert cur.rowcount == 1
        conn.commit()
    finally:
        conn.close()
    assert _like_rows(mariadb) == [(2, "xyz"), (3, None)]
    recs = ledger_records(gw.ledger)
    executes = [
        r
        for r in recs
        if r["kind"] == "statement" and r["command"] == "COM_STMT_EXECUTE" and r["sql"] == delete
    ]
    assert [(r["decision"], r.get("params")) for r in executes] == [
        ("blocked", ["'%'"]),
        ("blocked", ["'%%'"]),
        ("blocked", ["(long data)"]),
        ("allowed", ["'abc%'"]),
    ]
    assert executes[0]["rule"] == "delete-without-where"
    assert [result_of(recs, r)["error"] for r in executes] == [1227, 1227, 1227, None]


def test_sql_level_execute_of_a_like_bound_to_only_percent_runs_nothing(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """The same through SQL-level PREPARE and EXECUTE ... USING, and EXECUTE IMMEDIATE:
    a user variable's value is not known to the gateway, so one bound where a pattern of
    only '%' would match every row is refused; a literal is read."""
    _reset_pol_like(mariadb)
    before = _like_rows(mariadb)
    with gw.connect(database="shop") as conn:
        with conn.cursor() as cur:
            cur.execute("PREPARE del FROM 'DELETE FROM pol_like WHERE name LIKE ?'")
            cur.execute("SET @p = '%'")
        message = refused(conn, "EXECUTE del USING @p")
        assert message.startswith("sqlgate: blocked by rule 'delete-without-where': ")
        assert "@p (a value the gateway does not read)" in message
        assert "'%' (a pattern of only '%')" in refused(conn, "EXECUTE del USING '%'")
        refused(conn, "EXECUTE IMMEDIATE 'DELETE FROM pol_like WHERE name LIKE ?' USING '%'")
        refused(
            conn, "EXECUTE IMMEDIATE 'UPDATE pol_like SET name = ? WHERE name LIKE ?' USING 'x', @p"
        )
        assert _like_rows(mariadb) == before
        with conn.cursor() as cur:
            assert cur.execute("EXECUTE del USING 'abc%'") == 1
            assert (
                cur.execute("EXECUTE IMMEDIATE 'DELETE FROM pol_like WHERE name LIKE ?' USING 'x%'")
                == 1
            )
    assert _like_rows(mariadb) == [(3, None)]


def _reset_rp_items(mariadb: MariaDB) -> None:
    direct(mariadb, "DROP TABLE IF EXISTS shop.rp_items")
    direct(mariadb, "CREATE TABLE shop.rp_items (id INT PRIMARY KEY, v INT)")
    direct(mariadb, "INSERT INTO shop.rp_items VALUES (1, 10), (2, 20), (3, 30)")


# In UTF-8 `@xàOR - 1` is one variable minus 1; in latin1 its bytes read `@xÃ OR -1`.
_REREAD_UPDATE = "UPDATE rp_items SET v = 0 WHERE id = @x\u00e0OR - 1"


def test_prepared_statement_is_not_run_in_another_character_set(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """The server prepares a statement anew from its text when a table it names changed
    (CREATE INDEX), reading the text in the client character set of that moment: an
    UPDATE decided in utf8mb4 with a selective WHERE ran after SET NAMES latin1 as one
    of every row."""
    _reset_rp_items(mariadb)
    conn = gw.connector(charset="utf8mb4")
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(_REREAD_UPDATE)
        assert cur.rowcount == 0
        plain = conn.cursor()
        plain.execute("SET NAMES latin1")
        plain.execute("CREATE INDEX rp_v ON rp_items (v)")
        with pytest.raises(mysql.connector.Error) as info:
            cur.execute(_REREAD_UPDATE)
        assert info.value.errno == 1227
        assert "rule 'charset'" in info.value.msg and "latin1" in info.value.msg
        plain.execute("SET NAMES utf8mb4")  # back in its own: it runs as decided
        cur.execute(_REREAD_UPDATE)
        assert cur.rowcount == 0
    finally:
        conn.close()
    assert direct(mariadb, "SELECT * FROM shop.rp_items ORDER BY id") == [
        (1, 10),
        (2, 20),
        (3, 30),
    ]


def test_sql_prepared_statement_is_not_run_in_another_character_set(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """The same through SQL-level PREPARE and EXECUTE of its name."""
    _reset_rp_items(mariadb)
    conn = gw.connect(charset="utf8mb4")
    try:
        with conn.cursor() as cur:
            cur.execute(f"PREPARE rp FROM '{_REREAD_UPDATE}'")
            cur.execute("EXECUTE rp")
            cur.execute("SET NAMES latin1")
            cur.execute("CREATE INDEX rp_v ON rp_items (v)")
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute("EXECUTE rp")
            assert info.value.args[0] == 1227 and "rule 'charset'" in info.value.args[1]
            cur.execute("SET NAMES utf8mb4")
            assert cur.execute("EXECUTE rp") == 0
            cur.execute("SET NAMES latin1")
            cur.execute("PREPARE rp FROM 'SELECT 1 FROM rp_items'")  # ASCII: read alike
            cur.execute("EXECUTE rp")
    finally:
        conn.close()
    assert direct(mariadb, "SELECT * FROM shop.rp_items ORDER BY id") == [
        (1, 10),
        (2, 20),
        (3, 30),
    ]


def test_execute_of_a_name_whose_prepare_was_refused_runs_nothing(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """MariaDB drops the statement prepared under a name when a PREPARE of that name
    fails. A PREPARE the gateway refused never reached it: EXECUTE of the name ran the
    UPDATE prepared before, though the client had seen its new PREPARE fail."""
    with gw.connect(database="shop") as conn:
        with conn.cursor() as cur:
            cur.execute("PREPARE s FROM 'UPDATE pol_items SET v = v + 1 WHERE id = 1'")
            cur.execute("EXECUTE s")
        refused(conn, "PREPARE s FROM 'DELETE FROM pol_items'")
        message = refused(conn, "EXECUTE s")
        assert message.startswith("sqlgate: blocked by rule 'prepare-refused': ")
        with conn.cursor() as cur:
            cur.execute("PREPARE s FROM 'UPDATE pol_items SET v = v - 1 WHERE id = 1'")
            cur.execute("EXECUTE s")  # prepared again: runs
            cur.execute("DEALLOCATE PREPARE s")
    assert items(mariadb) == [(1, 10), (2, 20), (3, 30)]


def test_configured_rules_come_first(gw: GatewayProcess, mariadb: MariaDB) -> None:
    before = direct(mariadb, "SELECT * FROM shop.orders ORDER BY id")
    with gw.connect(database="shop") as conn:
        message = refused(conn, "UPDATE orders SET total = 0 WHERE id = 1")
        assert message.startswith("sqlgate: blocked by rule 'orders-are-read-only': ")
        message = refused(conn, "ALTER TABLE pol_items ADD COLUMN w INT")
        assert message.startswith("sqlgate: review required by rule 'schema-change': ")
        assert "approval" in message
    with gw.connect(user="dba", database="shop") as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE pol_items ADD COLUMN w INT")
        cur.execute("ALTER TABLE pol_items DROP COLUMN w")
    assert direct(mariadb, "SELECT * FROM shop.orders ORDER BY id") == before


def test_a_stored_function_call_is_held_and_runs_nothing(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """A function a DBA made deletes rows; an agent's SELECT that calls it would run the
    DELETE unseen, recorded as an allowed SELECT. It is held for review instead (refused
    here: approvals are off), the rows stay, and the ledger says why."""
    direct(
        mariadb,
        "CREATE OR REPLACE FUNCTION shop.pol_archive() RETURNS INT MODIFIES SQL DATA "
        "BEGIN DELETE FROM shop.pol_items; RETURN ROW_COUNT(); END",
    )
    try:
        with gw.connect(database="shop") as conn:
            message = refused(conn, "SELECT pol_archive()")
            assert message.startswith("sqlgate: review required by rule 'stored-function': ")
            assert "it calls pol_archive(), a stored function" in message
            assert "Approvals are not enabled on this gateway" in message
            refused(conn, "SELECT id, shop.pol_archive() FROM pol_items")
            with conn.cursor() as cur:  # the session goes on
                cur.execute("SELECT COUNT(*) FROM pol_items")
                assert cur.fetchone() == (3,)
        assert items(mariadb) == [(1, 10), (2, 20), (3, 30)]
        recs = ledger_records(gw.ledger)
        (st,) = [r for r in recs if r["kind"] == "statement" and r["sql"] == "SELECT pol_archive()"]
        assert (st["decision"], st["rule"]) == ("blocked", "stored-function")
        assert st["reason"].startswith("sqlgate: review required by rule 'stored-function': ")
        assert result_of(recs, st)["error"] == 1227
    finally:
        direct(mariadb, "DROP FUNCTION IF EXISTS shop.pol_archive")


def test_unreadable_text_is_refused(gw: GatewayProcess, mariadb: MariaDB) -> None:
    with gw.connect(database="shop", client_flag=CLIENT.MULTI_STATEMENTS) as conn:
        message = refused(conn, "SELECT 1 /*! ; DELETE FROM pol_items */")
        assert "rule 'not-understood'" in message and "executable comment" in message
        with conn.cursor() as cur:  # the same words inside a string are only a string
            cur.execute("SELECT '/*! DELETE FROM pol_items */'")
            assert cur.fetchone() == ("/*! DELETE FROM pol_items */",)
    assert items(mariadb) == [(1, 10), (2, 20), (3, 30)]


def test_no_backslash_escapes_is_followed(gw: GatewayProcess, mariadb: MariaDB) -> None:
    """Under NO_BACKSLASH_ESCAPES, 'a\\' ends the string: what follows is a DELETE."""
    trick = "SELECT 'a\\'; DELETE FROM pol_items; -- '"
    with gw.connect(database="shop", client_flag=CLIENT.MULTI_STATEMENTS) as conn:
        with conn.cursor() as cur:
            cur.execute(trick)  # backslash escapes on: one string, one statement
            assert cur.fetchall() == (("a'; DELETE FROM pol_items; -- ",),)
            cur.execute("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
        message = refused(conn, trick)
        assert "rule 'delete-without-where'" in message
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = DEFAULT")
            cur.execute(trick)
            assert len(cur.fetchall()) == 1
    assert items(mariadb) == [(1, 10), (2, 20), (3, 30)]


def test_a_prepared_set_statement_of_sql_mode_leaves_the_sessions_mode(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """SET STATEMENT sql_mode = ... FOR run by EXECUTE: its mode ends with it, and the
    answer's status flags are the session's, so the next text is read in the session's
    mode (without backslash escapes here, where 'a\\' ends the string)."""
    trick = "SELECT 'a\\'; DELETE FROM pol_items; -- '"
    with gw.connect(database="shop", client_flag=CLIENT.MULTI_STATEMENTS) as conn:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
        for body in ("SELECT 1", "UPDATE pol_items SET v = v WHERE id = 1"):
            inner = f"'SET STATEMENT sql_mode='''' FOR {body}'"
            with conn.cursor() as cur:
                cur.execute(f"PREPARE s FROM {inner}")
                cur.execute("EXECUTE s")
                cur.fetchall()
            message = refused(conn, trick)
            assert "rule 'delete-without-where'" in message, message
            with conn.cursor() as cur:
                cur.execute(f"EXECUTE IMMEDIATE {inner}")
                cur.fetchall()
                cur.execute("SELECT 1")  # the answer after it tells the mode again
            message = refused(conn, trick)
            assert "rule 'delete-without-where'" in message, message
    assert items(mariadb) == [(1, 10), (2, 20), (3, 30)]


def test_changes_to_how_text_is_read(gw: GatewayProcess) -> None:
    with gw.connect(database="shop", client_flag=CLIENT.MULTI_STATEMENTS) as conn:
        assert "rule 'charset'" in refused(conn, "SET NAMES gbk")
        message = refused(conn, "SET sql_mode = 'ANSI_QUOTES'; SELECT 1")
        assert "rule 'lexing-state'" in message
        with conn.cursor() as cur:
            cur.execute("SET NAMES utf8mb4")
            cur.execute("SELECT 'ü'")
            assert cur.fetchone() == ("ü",)
    # PyMySQL sends SET NAMES for the character set it was given: refused, it says why
    with pytest.raises(pymysql.err.OperationalError) as info:
        gw.connect(database="shop", charset="gbk")
    assert info.value.args[0] == 1227 and "rule 'charset'" in info.value.args[1]


def test_shadow_mode_records_what_would_have_happened(mariadb: MariaDB, tmp_path: Path) -> None:
    direct(mariadb, "CREATE TABLE IF NOT EXISTS shop.shadow_t (id INT PRIMARY KEY)")
    direct(mariadb, "INSERT IGNORE INTO shop.shadow_t VALUES (1), (2)")
    gw = GatewayProcess(
        tmp_path / "gw", mariadb, mariadb.pki, extra_toml='[policy]\nmode = "shadow"\n'
    ).start()
    try:
        with gw.connect(database="shop") as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM shadow_t")
            assert cur.rowcount == 2
            conn.commit()
    finally:
        assert gw.stop() == 0
    assert direct(mariadb, "SELECT COUNT(*) FROM shop.shadow_t") == [(0,)]
    recs = ledger_records(gw.ledger)
    (st,) = [r for r in recs if r["kind"] == "statement" and r["sql"] == "DELETE FROM shadow_t"]
    assert st["decision"] == "allowed" and st["shadow_decision"] == "blocked"
    assert st["rule"] == "delete-without-where"
    assert st["reason"].startswith("shadow mode: sqlgate: blocked by rule 'delete-without-where'")
    assert result_of(recs, st)["affected"] == 2


def test_runaway_guard_refuses_and_alerts(mariadb: MariaDB, tmp_path: Path) -> None:
    gw = GatewayProcess(
        tmp_path / "gw",
        mariadb,
        mariadb.pki,
        extra_toml="[policy]\nstatements_per_second = 5\n",
    ).start()
    try:
        with gw.connect(database="shop") as conn:
            messages = []
            for _ in range(12):
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                except pymysql.err.OperationalError as exc:
                    messages.append(str(exc.args[1]))
            assert messages and all("rule 'runaway-statements'" in m for m in messages)
            assert "Slow down" in messages[0]
    finally:
        assert gw.stop() == 0
    alerts = [r for r in ledger_records(gw.ledger) if r["kind"] == "alert"]
    assert len(alerts) == 1 and alerts[0]["alert"] == "runaway-agent"
    assert alerts[0]["identity"] == "agent"


def _connect_when_admitted(gw: GatewayProcess, deadline_s: float = 30.0) -> Any:
    """An agent connection once the gateway has seen a closed one go (it learns of the
    close asynchronously): refused with 1203 until then."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return gw.connect(database="shop")
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != 1203 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_sessions_per_identity_keeps_one_agent_from_taking_the_target(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """Every agent reaches the target as the same backend user, so the target's own
    per-user limits cannot hold one agent back: the gateway counts each identity's open
    sessions on a target and refuses a login past ``sessions_per_identity`` with 1203;
    other identities still log in, and a closed session frees its place."""
    gw = GatewayProcess(
        tmp_path / "gw", mariadb, mariadb.pki, extra_toml="[policy]\nsessions_per_identity = 2\n"
    ).start()
    try:
        first, second = gw.connect(database="shop"), gw.connect(database="shop")
        with pytest.raises(pymysql.err.OperationalError) as info:
            gw.connect(database="shop")
        code, message = info.value.args
        assert code == 1203
        assert "already has 2 sessions open on target 'orders'" in message
        assert "sessions_per_identity" in message
        with gw.connect("dba", database="shop") as other, other.cursor() as cur:
            cur.execute("SELECT 1")  # another identity is not held back
            assert cur.fetchone() == (1,)
        first.close()
        with _connect_when_admitted(gw) as third, third.cursor() as cur:
            cur.execute("SELECT 2")
            assert cur.fetchone() == (2,)
        second.close()
    finally:
        assert gw.stop() == 0
    refused = [r for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed"]
    assert refused and all(r["rule"] == "sessions-per-identity" for r in refused)
    assert all(r["identity"] == "agent" and r["target"] == "orders" for r in refused)


def test_oversized_text(gw: GatewayProcess, mariadb: MariaDB) -> None:
    """Over ``max_statement_bytes``: an INSERT is decided on its shape, anything else is
    refused; a refused text over 16 MiB gets its answer with the right sequence id."""
    big = "x" * (17 * 1024 * 1024)
    with gw.connect(database="shop", max_allowed_packet=64 * 1024 * 1024) as conn:
        message = refused(conn, f"SELECT COUNT(*) FROM pol_items WHERE '{big}' <> ''")
        assert "rule 'oversized'" in message and "prepared-statement parameters" in message
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO pol_items VALUES (100, LENGTH('{big[:2_000_000]}'))")
            cur.execute("SELECT v FROM pol_items WHERE id = 100")
            assert cur.fetchone() == (2_000_000,)
        conn.commit()
    direct(mariadb, "DELETE FROM shop.pol_items WHERE id = 100")


def test_a_refused_oversized_text_is_recorded_cut(gw: GatewayProcess) -> None:
    """A text refused for its size never reaches the server: its record keeps its first
    4 KiB and the SHA-256 of the whole command, not the whole text (a 3 MB text tried
    again and again must not write 3 MB to the ledger each time)."""
    big = "SELECT '" + "y" * (3 * 1024 * 1024) + "' AS cut_me"
    with gw.connect(database="shop", max_allowed_packet=64 * 1024 * 1024) as conn:
        assert "rule 'oversized'" in refused(conn, big)
    (st,) = [r for r in statements(gw) if r["rule"] == "oversized" and "yyyy" in r["sql"]]
    assert st["decision"] == "blocked"
    assert len(st["sql"]) < 4096 + 200
    assert st["sql"].startswith(big[:4096])
    assert f"{len(big)} bytes in all, refused unread" in st["sql"]
    assert st["sql_sha256"] == hashlib.sha256(b"\x03" + big.encode()).hexdigest()


def _five_rows(mariadb: MariaDB, table: str) -> None:
    """shop.<table> (id, v) with the rows 1 to 5, v = 0, for the runaway-guard tests."""
    direct(mariadb, f"CREATE TABLE IF NOT EXISTS shop.{table} (id INT PRIMARY KEY, v INT)")
    direct(mariadb, f"DELETE FROM shop.{table}")
    direct(mariadb, f"INSERT INTO shop.{table} VALUES (1, 0), (2, 0), (3, 0), (4, 0), (5, 0)")


def _rows_limited(mariadb: MariaDB, tmp_path: Path, rules: str = "") -> GatewayProcess:
    """A gateway whose identities may change 3 rows a minute, with ``rules``."""
    toml = "[policy]\nrows_changed_per_minute = 3\n" + rules
    return GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=toml).start()


def _touch_function(mariadb: MariaDB) -> None:
    """shop.guard_fn_touch(): a stored function whose body changes a row of guard_fn."""
    direct(mariadb, "DROP FUNCTION IF EXISTS shop.guard_fn_touch")
    direct(
        mariadb,
        "CREATE FUNCTION shop.guard_fn_touch() RETURNS INT MODIFIES SQL DATA "
        "BEGIN UPDATE shop.guard_fn SET v = v + 5 WHERE id = 5; RETURN 1; END",
    )


def test_runaway_guard_stops_an_identity_that_changed_too_many_rows(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    _five_rows(mariadb, "guard_t")
    gw = _rows_limited(mariadb, tmp_path)
    try:
        with gw.connect(database="shop") as conn:
            with conn.cursor() as cur:
                cur.execute("UPDATE guard_t SET v = 1 WHERE id <= 4")  # 4 rows: over the limit
                cur.execute("SELECT COUNT(*) FROM guard_t WHERE v = 1")  # reads still run
                assert cur.fetchone() == (4,)
            message = refused(conn, "UPDATE guard_t SET v = 2 WHERE id = 5")
            assert "rule 'runaway-rows'" in message and "changed 4 rows" in message
    finally:
        assert gw.stop() == 0
    assert direct(mariadb, "SELECT v FROM shop.guard_t WHERE id = 5") == [(0,)]
    alerts = [r for r in ledger_records(gw.ledger) if r["kind"] == "alert"]
    assert len(alerts) == 1 and "changed 4 rows" in alerts[0]["reason"]


def _answers(conn: Any, count: int) -> list[Any]:
    """The answers to ``count`` commands sent before any was read: the rows affected by
    each, or its error's (code, message)."""
    answers: list[Any] = []
    for _ in range(count):
        conn._next_seq_id = 1
        result = pymysql.connections.MySQLResult(conn)
        try:
            result.read()
        except pymysql.err.MySQLError as exc:
            answers.append(exc.args)
        else:
            answers.append(result.affected_rows)
    return answers


def _seven_rows(mariadb: MariaDB, table: str) -> None:
    direct(mariadb, f"CREATE TABLE IF NOT EXISTS shop.{table} (id INT PRIMARY KEY, v INT)")
    direct(mariadb, f"DELETE FROM shop.{table}")
    direct(
        mariadb, f"INSERT INTO shop.{table} VALUES " + ", ".join(f"({i}, 0)" for i in range(1, 8))
    )


def test_runaway_rows_limit_counts_pipelined_writes_while_they_run(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """BUG: 7 one-row UPDATEs pipelined on one socket under a limit of 3 all ran: each was
    checked against the rows of the statements finished so far, and none was. Each write
    now counts as one row while it runs: the 4th is refused, and the session goes on."""
    _seven_rows(mariadb, "inflight_t")
    gw = _rows_limited(mariadb, tmp_path)
    try:
        with gw.connect(database="shop") as conn:
            conn._write_bytes(  # all seven before any answer
                b"".join(
                    frame(0, b"\x03UPDATE inflight_t SET v = 1 WHERE id = %d" % i)
                    for i in range(1, 8)
                )
            )
            answers = _answers(conn, 7)
            codes = [a[0] if isinstance(a, tuple) else a for a in answers]
            assert codes == [1, 1, 1, 1227, 1227, 1227, 1227], answers
            for _, message in answers[3:]:
                assert "rule 'runaway-rows'" in message and "the limit is 3" in message
            with conn.cursor() as cur:  # the session stays usable
                cur.execute("SELECT SUM(v) FROM inflight_t")
                assert cur.fetchone() == (3,)
    finally:
        assert gw.stop() == 0
    assert direct(mariadb, "SELECT id FROM shop.inflight_t WHERE v = 1") == [(1,), (2,), (3,)]
    alerts = [r for r in ledger_records(gw.ledger) if r["kind"] == "alert"]
    assert len(alerts) == 1 and "the limit is 3" in alerts[0]["reason"]


def _waiting_updates(mariadb: MariaDB, table: str, count: int) -> None:
    """Until ``count`` UPDATEs of ``table`` wait on the server for a row lock."""
    deadline = time.monotonic() + 10
    while True:
        (waiting,) = direct(
            mariadb,
            "SELECT COUNT(*) FROM information_schema.processlist "
            f"WHERE info LIKE 'UPDATE {table} %' AND state = 'Updating'",
        )[0]
        if waiting >= count:
            return
        assert time.monotonic() < deadline, f"{waiting} UPDATEs of {table} waiting"
        time.sleep(0.02)


def test_runaway_rows_limit_counts_writes_running_in_other_sessions(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """BUG: writes of one identity in parallel sessions each passed the limit while the
    others ran. With three one-row UPDATEs waiting for a row lock under a limit of 3,
    a fourth session's UPDATE of a free row is refused before any of them finished."""
    _seven_rows(mariadb, "inflight_par")
    gw = _rows_limited(mariadb, tmp_path)
    locker = mariadb.connect()
    sessions = [gw.connect(database="shop") for _ in range(4)]
    try:
        with locker.cursor() as cur:
            cur.execute("BEGIN")
            for i in range(1, 4):  # one row each (a scan would lock them all)
                cur.execute(f"SELECT id FROM shop.inflight_par WHERE id = {i} FOR UPDATE")
        for i, conn in enumerate(sessions[:3], start=1):
            conn._write_bytes(frame(0, b"\x03UPDATE inflight_par SET v = 1 WHERE id = %d" % i))
        _waiting_updates(mariadb, "inflight_par", 3)
        message = refused(sessions[3], "UPDATE inflight_par SET v = 1 WHERE id = 4")
        assert "rule 'runaway-rows'" in message and "the limit is 3" in message
        assert "3 statements that may change rows still running" in message
        with sessions[3].cursor() as cur:  # reads go on
            cur.execute("SELECT v FROM inflight_par WHERE id = 4")
            assert cur.fetchone() == (0,)
        locker.commit()
        for conn in sessions[:3]:
            assert _answers(conn, 1) == [1]
        message = refused(sessions[3], "UPDATE inflight_par SET v = 1 WHERE id = 4")
        assert "changed 3 rows in the last minute, the limit is 3" in message
    finally:
        locker.close()
        for conn in sessions:
            conn.close()
        assert gw.stop() == 0
    assert direct(mariadb, "SELECT id FROM shop.inflight_par WHERE v = 1") == [(1,), (2,), (3,)]


def _update_results(gw: GatewayProcess, table: str) -> list[dict[str, Any]]:
    """The result records of the UPDATEs of ``table`` recorded so far, in order."""
    recs = ledger_records(gw.ledger)
    results = {(r["session"], r["statement_seq"]): r for r in recs if r["kind"] == "result"}
    keys = [
        (r["session"], r["statement_seq"])
        for r in recs
        if r["kind"] == "statement" and r["sql"].startswith(f"UPDATE {table} ")
    ]
    return [results[key] for key in keys if key in results]


def test_runaway_rows_limit_gives_back_the_writes_of_a_client_gone(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """Writes counted as running while they run are given back however they end: here an
    UPDATE killed on the server and one queued behind it, of a client that left before
    either was answered. The identity's figure is then the one row the server changed,
    not more (a write left counted would refuse the identity's writes for good)."""
    _seven_rows(mariadb, "inflight_gone")
    gw = _rows_limited(mariadb, tmp_path)
    locker = mariadb.connect()
    try:
        with locker.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT id FROM shop.inflight_gone WHERE id = 1 FOR UPDATE")
        leaving = gw.connect(database="shop")
        leaving._write_bytes(
            frame(0, b"\x03UPDATE inflight_gone SET v = 1 WHERE id = 1")
            + frame(0, b"\x03UPDATE inflight_gone SET v = 1 WHERE id = 2")
        )
        _waiting_updates(mariadb, "inflight_gone", 1)
        leaving._force_close()
        ((thread,),) = direct(
            mariadb,
            "SELECT id FROM information_schema.processlist "
            "WHERE info LIKE 'UPDATE inflight_gone %'",
        )
        direct(mariadb, f"KILL QUERY {thread}")
        deadline = time.monotonic() + 10
        while len(_update_results(gw, "inflight_gone")) < 2:
            assert time.monotonic() < deadline, "the UPDATEs' results were not recorded"
            time.sleep(0.05)
        with gw.connect(database="shop") as conn, conn.cursor() as cur:
            cur.execute("UPDATE inflight_gone SET v = 1 WHERE id = 3")
            cur.execute("UPDATE inflight_gone SET v = 1 WHERE id = 4")
            message = refused(conn, "UPDATE inflight_gone SET v = 1 WHERE id = 5")
            assert "changed 3 rows in the last minute, the limit is 3" in message
    finally:
        locker.rollback()
        locker.close()
        assert gw.stop() == 0
    results = _update_results(gw, "inflight_gone")
    assert [(r["affected"], r["error"]) for r in results[:2]] == [(0, 1317), (1, None)]
    assert direct(mariadb, "SELECT id FROM shop.inflight_gone WHERE v = 1") == [(2,), (3,), (4,)]


SHOP_DELETES = """
[[rules]]
name = "shop-keeps-its-rows"
statements = ["DELETE"]
tables = ["shop.*"]
action = "block"
"""


def test_a_table_named_with_a_dot_is_not_taken_for_schema_dot_table(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """DELETE FROM `x.y` in shop was read as a delete from table y of schema x: the rule
    for shop.* missed it, and the server deleted from shop.`x.y`."""
    direct(mariadb, "CREATE TABLE IF NOT EXISTS shop.`x.y` (id INT PRIMARY KEY)")
    direct(mariadb, "INSERT IGNORE INTO shop.`x.y` VALUES (1), (2)")
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=SHOP_DELETES).start()
    try:
        with gw.connect(database="shop") as conn:
            for sql in ("DELETE FROM `x.y` WHERE id = 1", "DELETE FROM shop.`x.y` WHERE id = 2"):
                message = refused(conn, sql)
                assert message.startswith("sqlgate: blocked by rule 'not-understood': ")
                assert "the name `x.y` contains a dot" in message
            with pytest.raises(pymysql.err.OperationalError) as info:
                conn.select_db("x.y")  # COM_INIT_DB
            code, message = info.value.args
            assert code == 1227 and "the schema name `x.y` contains a dot" in message
            with conn.cursor() as cur:  # the session goes on, in shop
                cur.execute("SELECT DATABASE()")
                assert cur.fetchone() == ("shop",)
        assert direct(mariadb, "SELECT id FROM shop.`x.y` ORDER BY id") == [(1,), (2,)]
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP TABLE shop.`x.y`")
    recs = ledger_records(gw.ledger)
    (st,) = [r for r in statements(gw) if r["sql"] == "DELETE FROM `x.y` WHERE id = 1"]
    assert st["decision"] == "blocked" and st["rule"] == "not-understood"
    assert result_of(recs, st)["error"] == 1227


def test_a_client_asking_for_no_schema_cannot_reach_a_protected_table_by_another_name(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """BUG: the gateway negotiated CLIENT_NO_SCHEMA (PyMySQL's ``client_flag``, the ODBC
    driver's "Don't allow database.table.column"), with which MariaDB drops the schema of
    a qualified name and reads it in the current schema: in shop, ``UPDATE
    nosuch.orders`` (no rule names it) changed shop.orders, which orders-are-read-only
    protects. The flag is no longer negotiated: the server reads the name as written."""
    before = direct(mariadb, "SELECT total FROM shop.orders WHERE id = 3")
    try:
        with gw.connect(database="shop", client_flag=CLIENT.NO_SCHEMA) as conn:
            with pytest.raises(pymysql.err.ProgrammingError) as info, conn.cursor() as cur:
                cur.execute("UPDATE nosuch.orders SET total = 777 WHERE id = 3")
            assert info.value.args[0] == 1146  # Table 'nosuch.orders' doesn't exist
            protected = "UPDATE shop.orders SET total = 777 WHERE id = 3"
            assert "orders-are-read-only" in refused(conn, protected)
        assert direct(mariadb, "SELECT total FROM shop.orders WHERE id = 3") == before
    finally:
        direct(mariadb, f"UPDATE shop.orders SET total = {before[0][0]} WHERE id = 3")


def test_runaway_rows_limit_refuses_updates_run_through_other_statements(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """After the rows limit, an UPDATE inside PREPARE/EXECUTE, EXECUTE IMMEDIATE or SET
    STATEMENT ... FOR is refused like a plain one, and a prepared SELECT still runs."""
    _five_rows(mariadb, "guard_in")
    gw = _rows_limited(mariadb, tmp_path)
    try:
        with gw.connect(database="shop") as conn:
            with conn.cursor() as cur:
                cur.execute("PREPARE s FROM 'UPDATE guard_in SET v = 7 WHERE id > 0'")
                cur.execute("UPDATE guard_in SET v = 1 WHERE id <= 4")  # 4 rows: over
            for sql in (
                "EXECUTE s",
                "EXECUTE IMMEDIATE 'UPDATE guard_in SET v = 8 WHERE id > 0'",
                "SET STATEMENT max_statement_time=100 FOR UPDATE guard_in SET v=9 WHERE id>0",
            ):
                assert "rule 'runaway-rows'" in refused(conn, sql), sql
        mc = gw.connector(database="shop")
        try:
            cur = mc.cursor(prepared=True)
            cur.execute("SELECT v FROM guard_in WHERE id = ?", (1,))  # binary protocol
            assert cur.fetchall() == [(1,)]
            with pytest.raises(mysql.connector.Error) as info:
                cur.execute("UPDATE guard_in SET v = ? WHERE id = ?", (6, 5))
            assert info.value.errno == 1227 and "runaway-rows" in info.value.msg
        finally:
            mc.close()
    finally:
        assert gw.stop() == 0
    assert direct(mariadb, "SELECT id, v FROM shop.guard_in ORDER BY id") == [
        (1, 1),
        (2, 1),
        (3, 1),
        (4, 1),
        (5, 0),
    ]


def test_runaway_rows_limit_counts_the_rows_a_write_returns(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """BUG: DELETE/INSERT ... RETURNING answers with a result set of the rows it changed,
    and the server's count of that answer says 0: an identity deleted rows RETURNING
    them without end under rows_changed_per_minute. Each row returned now counts, in the
    text protocol and in the binary one."""
    _five_rows(mariadb, "guard_ret")
    gw = _rows_limited(mariadb, tmp_path)
    try:
        with gw.connect(database="shop") as conn:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM guard_ret WHERE id <= 4 RETURNING id")
                assert len(cur.fetchall()) == 4  # 4 rows: over the limit
            message = refused(conn, "UPDATE guard_ret SET v = 2 WHERE id = 5")
            assert "rule 'runaway-rows'" in message and "changed 4 rows" in message
        mc = gw.connector(user="dba", database="shop", autocommit=True)  # its own count
        try:
            cur = mc.cursor(prepared=True)
            cur.execute("INSERT INTO guard_ret VALUES (?, 0), (?, 0) RETURNING id", (6, 7))
            assert cur.fetchall() == [(6,), (7,)]
            cur.execute("INSERT INTO guard_ret VALUES (?, 0), (?, 0) RETURNING id", (8, 9))
            assert cur.fetchall() == [(8,), (9,)]  # 4 rows: over the limit
            with pytest.raises(mysql.connector.Error) as info:
                cur.execute("UPDATE guard_ret SET v = ? WHERE id = ?", (2, 5))
            assert info.value.errno == 1227 and "changed 4 rows" in info.value.msg
        finally:
            mc.close()
    finally:
        assert gw.stop() == 0
    assert direct(mariadb, "SELECT id, v FROM shop.guard_ret ORDER BY id") == [
        (5, 0),
        (6, 0),
        (7, 0),
        (8, 0),
        (9, 0),
    ]


def test_runaway_rows_limit_counts_the_rows_an_execute_by_name_returns(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """BUG: the rows of a DELETE ... RETURNING counted when its text held the word, but
    not when it ran as ``EXECUTE s`` of ``PREPARE s FROM 'DELETE ... RETURNING id'``. An
    EXECUTE by name counts the rows of its answer while the session holds a name
    prepared from such a text."""
    _five_rows(mariadb, "guard_exec")
    gw = _rows_limited(mariadb, tmp_path)
    try:
        with gw.connect(database="shop") as conn:
            with conn.cursor() as cur:
                cur.execute("PREPARE s FROM 'DELETE FROM guard_exec WHERE id <= ? RETURNING id'")
                cur.execute("EXECUTE s USING 4")
                assert len(cur.fetchall()) == 4  # 4 rows: over the limit
            message = refused(conn, "UPDATE guard_exec SET v = 2 WHERE id = 5")
            assert "rule 'runaway-rows'" in message and "changed 4 rows" in message
    finally:
        assert gw.stop() == 0
    assert direct(mariadb, "SELECT id, v FROM shop.guard_exec") == [(5, 0)]


TOUCH_ALLOWED = """
[[rules]]
name = "touch-is-safe"
statements = ["CALL"]
tables = ["shop.guard_fn_touch"]
action = "allow"
"""


def test_runaway_rows_limit_refuses_calls_of_stored_functions(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """BUG: once rows_changed_per_minute was reached, UPDATE was refused but SELECT f()
    of a function a rule allows still ran, and a stored function's body changes rows as
    freely as an UPDATE. A statement calling a stored function now counts as one that
    may change rows; reads calling the server's own functions still run."""
    _five_rows(mariadb, "guard_fn")
    _touch_function(mariadb)
    gw = _rows_limited(mariadb, tmp_path, TOUCH_ALLOWED)
    try:
        with gw.connect(database="shop") as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT guard_fn_touch() - 1")  # allowed, under the limit
                assert cur.fetchone() == (0,)
                cur.execute("UPDATE guard_fn SET v = 1 WHERE id <= 4")  # 4 rows: over
                cur.execute("SELECT UPPER('a'), COUNT(*) FROM guard_fn WHERE v = 1")
                assert cur.fetchone() == ("A", 4)
            for sql in (
                "SELECT guard_fn_touch()",
                "SELECT shop.guard_fn_touch() FROM guard_fn WHERE id = 1",
                "SET @x = guard_fn_touch()",
            ):
                assert "rule 'runaway-rows'" in refused(conn, sql), sql
        mc = gw.connector(database="shop", autocommit=True)
        try:
            with pytest.raises(mysql.connector.Error) as info:
                mc.cursor(prepared=True).execute("SELECT guard_fn_touch() + ?", (1,))
            assert info.value.errno == 1227 and "runaway-rows" in info.value.msg
        finally:
            mc.close()
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP FUNCTION shop.guard_fn_touch")
    assert direct(mariadb, "SELECT v FROM shop.guard_fn WHERE id = 5") == [(5,)]  # once


def test_runaway_rows_limit_keeps_a_text_prepared_as_a_write_one_in_another_mode(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """BUG: the rows limit knew prepared statements by their text, and the same bytes
    prepared again under another sql_mode ("SELECT 'a\\', f() -- '" calls f only with
    NO_BACKSLASH_ESCAPES) made the text a read: the statement prepared first, which
    calls the stored function, then ran past the limit. A text once prepared as one that
    may change rows stays one."""
    _five_rows(mariadb, "guard_fn")
    _touch_function(mariadb)
    gw = _rows_limited(mariadb, tmp_path, TOUCH_ALLOWED)
    text = "SELECT 'a\\', guard_fn_touch() -- '"
    try:
        mc = gw.connector(database="shop", autocommit=True)
        try:
            plain = mc.cursor()
            plain.execute("SELECT @@sql_mode")
            (mode,) = plain.fetchone()
            plain.execute("SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
            calls = mc.cursor(prepared=True)
            calls.execute(text)  # 'a\\' and a call
            assert calls.fetchall() == [("a\\", 1)]
            plain.execute(f"SET sql_mode = '{mode}'")
            reads = mc.cursor(prepared=True)
            reads.execute(text)  # one string
            assert reads.fetchall() == [("a', guard_fn_touch() -- ",)]
            plain.execute("UPDATE guard_fn SET v = 1 WHERE id <= 4")  # 4 rows: over
            with pytest.raises(mysql.connector.Error) as info:
                calls.execute(text)
            assert info.value.errno == 1227 and "runaway-rows" in info.value.msg
        finally:
            mc.close()
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP FUNCTION shop.guard_fn_touch")
    assert direct(mariadb, "SELECT v FROM shop.guard_fn WHERE id = 5") == [(5,)]  # once


def test_runaway_guard_counts_each_statement_of_a_text_and_alerts_per_limit(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """A text of several statements counts as that many toward statements_per_second, and
    a rows-limit trip within a minute of a statements-limit alert writes its own alert."""
    _five_rows(mariadb, "guard_text")
    gw = GatewayProcess(
        tmp_path / "gw",
        mariadb,
        mariadb.pki,
        extra_toml="[policy]\nstatements_per_second = 5\nrows_changed_per_minute = 3\n",
    ).start()
    try:
        with gw.connect(database="shop", client_flag=CLIENT.MULTI_STATEMENTS) as conn:
            text = "; ".join(f"UPDATE guard_text SET v = 1 WHERE id = {i}" for i in range(1, 7))
            message = refused(conn, text)  # 6 statements: over 5 a second
            assert "rule 'runaway-statements'" in message and "a text of 6" in message
            assert direct(mariadb, "SELECT SUM(v) FROM shop.guard_text") == [(0,)]
            time.sleep(1.1)
            with conn.cursor() as cur:
                cur.execute("UPDATE guard_text SET v = 1 WHERE id <= 4")  # 4 rows: over 3
            message = refused(conn, "UPDATE guard_text SET v = 2 WHERE id = 5")
            assert "rule 'runaway-rows'" in message
    finally:
        assert gw.stop() == 0
    alerts = [r for r in ledger_records(gw.ledger) if r["kind"] == "alert"]
    assert [a["alert"] for a in alerts] == ["runaway-agent", "runaway-agent"]
    assert "a text of 6 statements" in alerts[0]["reason"]
    assert "changed 4 rows" in alerts[1]["reason"]
    assert direct(mariadb, "SELECT v FROM shop.guard_text WHERE id = 5") == [(0,)]


USE_RULE = """
[[rules]]
name = "agents-stay-out-of-schemas"
statements = ["USE"]
identities = ["agent"]
action = "block"
"""


def _current_db(conn: Any) -> Any:
    with conn.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        return cur.fetchone()[0]


@pytest.mark.parametrize("mode", ["enforce", "shadow"])
def test_a_use_rule_decides_com_init_db_and_the_logins_database(
    mariadb: MariaDB, tmp_path: Path, mode: str
) -> None:
    """A rule on USE refuses the text, COM_INIT_DB (PyMySQL's select_db) alike, with the
    same rule and reason; a login naming a database is refused with 1044 and recorded as
    a failed login naming the rule. In shadow mode all of them run, the rule recorded."""
    gw = GatewayProcess(
        tmp_path / "gw",
        mariadb,
        mariadb.pki,
        extra_toml=f'[policy]\nmode = "{mode}"\n' + USE_RULE,
    ).start()
    enforced = mode == "enforce"
    try:
        with gw.connect(database=None) as conn:
            if enforced:
                text = refused(conn, "USE shop")
                with pytest.raises(pymysql.err.OperationalError) as info:
                    conn.select_db("shop")
                assert info.value.args == (1227, text)
                assert text.startswith("sqlgate: blocked by rule 'agents-stay-out-of-schemas'")
                assert _current_db(conn) is None  # the session goes on, in no schema
            else:
                conn.select_db("shop")
                assert _current_db(conn) == "shop"
        if enforced:
            with pytest.raises(pymysql.err.OperationalError) as info:
                gw.connect(database="shop")
            code, login = info.value.args
            assert code == 1044, login
            assert login.startswith("sqlgate: blocked by rule 'agents-stay-out-of-schemas'")
            assert "'shop'" in login
        else:
            with gw.connect(database="shop") as conn:
                assert _current_db(conn) == "shop"
        with gw.connect(user="dba", database="shop") as conn:  # the rule is not theirs
            conn.select_db("mysql")
            assert _current_db(conn) == "mysql"
    finally:
        assert gw.stop() == 0
    assert "Traceback" not in gw.log()
    recs = ledger_records(gw.ledger)
    sts = [r for r in recs if r["kind"] == "statement" and r["identity"] == "agent"]
    (init_db,) = [s for s in sts if s["command"] == "COM_INIT_DB"]
    assert init_db["sql"] == "USE `shop`"
    assert init_db["rule"] == "agents-stay-out-of-schemas"
    if enforced:
        (use,) = [s for s in sts if s["sql"] == "USE shop"]
        assert init_db["decision"] == use["decision"] == "blocked"
        assert init_db["reason"] == use["reason"] == text
        assert result_of(recs, init_db)["error"] == 1227
        (failed,) = [r for r in recs if r["kind"] == "auth_failed"]
        assert failed["identity"] == "agent" and failed["db"] == "shop"
        assert failed["rule"] == "agents-stay-out-of-schemas" and failed["reason"] == login
        starts = [r for r in recs if r["kind"] == "session_start" and r["identity"] == "agent"]
        assert [s["db"] for s in starts] == [None]  # the refused login never started
    else:
        assert init_db["decision"] == "allowed" and init_db["shadow_decision"] == "blocked"
        (start,) = [
            r
            for r in recs
            if r["kind"] == "session_start" and r["identity"] == "agent" and r["db"] == "shop"
        ]
        assert start["rule"] == "agents-stay-out-of-schemas"
        assert start["shadow_decision"] == "blocked"
        assert start["reason"].startswith("shadow mode: sqlgate: blocked by rule")
        assert not [r for r in recs if r["kind"] == "auth_failed"]
    dba = [r for r in recs if r["kind"] == "statement" and r["identity"] == "dba"]
    assert [(s["sql"], s["decision"], s["rule"]) for s in dba if s["command"] == "COM_INIT_DB"] == [
        ("USE `mysql`", "allowed", "default-allow")
    ]


SECRET_OFF_LIMITS = """
[[rules]]
name = "secret-is-off-limits"
statements = ["*"]
tables = ["shop.pol_secret"]
action = "block"
"""


def test_a_subquery_in_a_set_reads_its_table(mariadb: MariaDB, tmp_path: Path) -> None:
    """SET @a = (SELECT c FROM shop.secret) was read as touching no table: a rule that
    refuses every statement on the table let it through, and SELECT @a gave the value."""
    direct(mariadb, "CREATE TABLE IF NOT EXISTS shop.pol_secret (c INT)")
    direct(mariadb, "DELETE FROM shop.pol_secret")
    direct(mariadb, "INSERT INTO shop.pol_secret VALUES (42)")
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=SECRET_OFF_LIMITS).start()
    try:
        with gw.connect(database="shop") as conn:
            for sql in (
                "SET @a = (SELECT c FROM shop.pol_secret)",
                "SET @a := 1 + (SELECT c FROM pol_secret)",
                "SET SESSION sql_select_limit = (SELECT c FROM pol_secret)",
                "DO @a := (SELECT c FROM pol_secret)",
            ):
                message = refused(conn, sql)
                assert message.startswith("sqlgate: blocked by rule 'secret-is-off-limits': ")
            with conn.cursor() as cur:  # nothing ran: the session goes on
                cur.execute("SELECT @a, @@session.sql_select_limit > 42")
                assert cur.fetchone() == (None, 1)
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP TABLE shop.pol_secret")
    sts = [r for r in statements(gw) if r["sql"] == "SET @a = (SELECT c FROM shop.pol_secret)"]
    assert [(s["decision"], s["rule"]) for s in sts] == [("blocked", "secret-is-off-limits")]


SECRET_UNREAD = """
[[rules]]
name = "secret-unread"
statements = ["SELECT"]
tables = ["shop.pol_unread"]
action = "block"

[[rules]]
name = "dba-may-do-anything"
statements = ["*"]
identities = ["dba"]
action = "allow"
"""


def test_a_rule_on_select_refuses_what_reads_its_table_as_another_kind(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """A rule refusing SELECT of a table let SET @x = (SELECT ...), INSERT ... SELECT,
    CREATE TABLE ... AS SELECT and an UPDATE's subquery read it: its rows were copied
    into a variable or a table a SELECT could read. And an allow for the identity `dba`
    also allowed the account `DBA`, another account."""
    direct(mariadb, "CREATE TABLE IF NOT EXISTS shop.pol_unread (id INT, card VARCHAR(20))")
    direct(mariadb, "CREATE TABLE IF NOT EXISTS shop.pol_pub (id INT, v VARCHAR(20))")
    direct(mariadb, "DELETE FROM shop.pol_unread")
    direct(mariadb, "DELETE FROM shop.pol_pub")
    direct(mariadb, "INSERT INTO shop.pol_unread VALUES (1, '4111-1111')")
    direct(mariadb, "INSERT INTO shop.pol_pub VALUES (1, 'x')")
    accounts = [
        GatewayAccount("agent", "agent-secret-1"),
        GatewayAccount("DBA", "dba-secret-2", ("agents",)),
    ]
    gw = GatewayProcess(
        tmp_path / "gw", mariadb, mariadb.pki, extra_toml=SECRET_UNREAD, accounts=accounts
    ).start()
    try:
        with gw.connect(database="shop") as conn:
            for sql in (
                "SET @a = (SELECT card FROM pol_unread LIMIT 1)",
                "INSERT INTO pol_pub SELECT id + 1, card FROM shop.pol_unread",
                "UPDATE pol_pub SET v = (SELECT card FROM pol_unread WHERE id = 1) WHERE id = 1",
                "CREATE TABLE pol_leak AS SELECT * FROM pol_unread",
            ):
                message = refused(conn, sql)
                assert message.startswith("sqlgate: blocked by rule 'secret-unread': "), message
                assert "reads shop.pol_unread (as a SELECT would)" in message
            with conn.cursor() as cur:
                cur.execute("SELECT @a")
                assert cur.fetchone() == (None,)
        with gw.connect("DBA", database="shop") as conn:
            message = refused(conn, "DELETE FROM pol_pub")
            assert "rule 'delete-without-where'" in message
    finally:
        assert gw.stop() == 0
        leaked = direct(
            mariadb,
            "SELECT COUNT(*) FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = 'pol_leak'",
        )
        pub = direct(mariadb, "SELECT id, v FROM shop.pol_pub")
        direct(mariadb, "DROP TABLE IF EXISTS shop.pol_unread, shop.pol_pub, shop.pol_leak")
    assert leaked == [(0,)]
    assert pub == [(1, "x")]


@contextlib.contextmanager
def _global_sql_mode(mariadb: MariaDB, mode: str) -> Iterator[None]:
    """The server's global sql_mode, which new sessions start in, set for a while."""
    ((before,),) = direct(mariadb, "SELECT @@GLOBAL.sql_mode")
    direct(mariadb, f"SET GLOBAL sql_mode = '{mode}'")
    try:
        yield
    finally:
        direct(mariadb, f"SET GLOBAL sql_mode = '{before}'")


def test_sql_modes_that_read_text_differently(mariadb: MariaDB, tmp_path: Path) -> None:
    """SET sql_mode = 'MSSQL' (names in [brackets]), 'PIPES_AS_CONCAT', 'HIGH_NOT_PRECEDENCE',
    ... were allowed: under them the server reads the same bytes differently from the
    gateway (a quote inside [...] hid a DELETE without WHERE; NOT id BETWEEN 0 AND 1
    deleted every row). Such modes are refused; a session that starts in one (the
    server's global mode) runs nothing; a '[' outside strings is refused too, so a session
    that goes back to a global MSSQL (SET sql_mode = DEFAULT) before the gateway reads it
    again hides nothing either."""
    _five_rows(mariadb, "pol_modes")
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki).start()
    hidden = "SAVEPOINT [a'];DELETE FROM pol_modes;SELECT 1 AS [']"
    pinned = (
        "SET STATEMENT sql_mode = 'NO_BACKSLASH_ESCAPES' FOR EXECUTE IMMEDIATE "
        r"'DELETE FROM pol_modes WHERE id = ''x\\'' OR id = id -- '''"
    )
    try:
        with gw.connect(database="shop", client_flag=CLIENT.MULTI_STATEMENTS) as conn:
            for sql in (
                "SET sql_mode = 'MSSQL'",
                "SET sql_mode = 'STRICT_TRANS_TABLES,HIGH_NOT_PRECEDENCE'",
                "SET SESSION sql_mode = CONCAT(@@sql_mode, ',PIPES_AS_CONCAT')",
                pinned,
            ):
                message = refused(conn, sql)
                assert message.startswith("sqlgate: blocked by rule 'sql-mode': "), message
            with conn.cursor() as cur:  # the idiom of client libraries passes
                cur.execute("SET sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')")
                cur.execute("SELECT @@sql_mode LIKE '%STRICT_ALL_TABLES%'")
                assert cur.fetchone() == (1,)
        with gw.connect(database="shop", client_flag=CLIENT.MULTI_STATEMENTS) as conn:
            with _global_sql_mode(mariadb, "MSSQL"):
                with pytest.raises(pymysql.err.OperationalError) as at_login:
                    gw.connect(database="shop")  # its SET NAMES is refused
                why = at_login.value.args[1]
                assert "started this session in holds" in why and "MSSQL" in why, why
                with conn.cursor() as cur:
                    cur.execute("SET sql_mode = DEFAULT")
                message = refused(conn, hidden)
                assert message.startswith("sqlgate: blocked by rule ")
                assert message.split("'")[1] in ("not-understood", "sql-mode"), message
        assert direct(mariadb, "SELECT COUNT(*) FROM shop.pol_modes") == [(5,)]
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP TABLE IF EXISTS shop.pol_modes")
    sts = [r for r in statements(gw) if r["sql"] == hidden]
    assert [s["decision"] for s in sts] == ["blocked"]
    assert sts[0]["rule"] in ("not-understood", "sql-mode")


def test_a_statement_pipelined_after_a_use_records_no_schema(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """USE shop and a statement sent before its answer: the statement's record said the
    old schema while the server ran it in shop (an approval request for it did too, and
    counted its rows there). Its schema is recorded as not known now."""
    direct(mariadb, "CREATE DATABASE IF NOT EXISTS pol_pipe")
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki).start()
    marker = f"pipe-{time.time_ns()}"
    try:
        with gw.connect(database="pol_pipe") as conn:
            conn._sock.sendall(
                frame(0, b"\x03USE shop") + frame(0, f"\x03SELECT DATABASE(), '{marker}'".encode())
            )
            conn._next_seq_id = 1
            conn._read_query_result()  # the USE's OK
            conn._next_seq_id = 1
            conn._read_query_result()
            assert conn._result.rows == (("shop", marker),)
            with conn.cursor() as cur:
                cur.execute(f"SELECT '{marker} after'")
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP DATABASE IF EXISTS pol_pipe")
    recs = {r["sql"]: r for r in statements(gw) if marker in r["sql"] or r["sql"] == "USE shop"}
    assert recs["USE shop"]["db"] == "pol_pipe"
    assert recs[f"SELECT DATABASE(), '{marker}'"]["db"] is None
    assert recs[f"SELECT '{marker} after'"]["db"] == "shop"


DOT_NAMES = """
[[rules]]
name = "secret-is-off-limits"
statements = ["*"]
tables = ["shop.pol_dot_secret"]
action = "block"

[[rules]]
name = "shop-is-open"
statements = ["*"]
tables = ["shop.*"]
action = "allow"
"""


def test_a_leading_dot_names_a_table_of_the_current_schema(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """MariaDB reads `.t` as table t of the current schema; the gateway skipped such a
    name where it reads names itself (DROP, ALTER, TRUNCATE, LOCK, ...) and read SHOW
    COLUMNS IN .t as schema IN: a rule on shop.pol_dot_secret did not see ALTER TABLE x
    RENAME TO .pol_dot_secret, which an allow for shop.* then let through."""
    _five_rows(mariadb, "pol_dot_secret")
    _five_rows(mariadb, "pol_dot_pub")
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=DOT_NAMES).start()
    try:
        with gw.connect(database="shop") as conn:
            for sql in (
                "ALTER TABLE .pol_dot_secret COMMENT 'x'",
                "TRUNCATE TABLE .pol_dot_secret",
                "LOCK TABLES pol_dot_pub READ, .pol_dot_secret WRITE",
                "ALTER TABLE pol_dot_pub ADD FOREIGN KEY (id) REFERENCES .pol_dot_secret (id)",
            ):
                message = refused(conn, sql)
                assert message.startswith("sqlgate: blocked by rule 'secret-is-off-limits': ")
            message = refused(conn, "SHOW COLUMNS IN .pol_dot_secret")
            assert message.startswith("sqlgate: blocked by rule 'not-understood': ")
            with conn.cursor() as cur:  # the allow still covers the schema's other tables
                cur.execute("ALTER TABLE .pol_dot_pub COMMENT 'open'")
        assert direct(mariadb, "SELECT COUNT(*) FROM shop.pol_dot_secret") == [(5,)]
        comments = direct(
            mariadb,
            "SELECT table_name, table_comment FROM information_schema.tables "
            "WHERE table_schema = 'shop' AND table_name LIKE 'pol_dot_%' ORDER BY 1",
        )
        assert comments == [("pol_dot_pub", "open"), ("pol_dot_secret", "")]
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP TABLE IF EXISTS shop.pol_dot_secret, shop.pol_dot_pub")


CALL_SECRET = """
[[rules]]
name = "no-secret"
statements = ["*"]
tables = ["shop.pol_call_secret"]
action = "block"

[[rules]]
name = "calls"
statements = ["CALL"]
action = "allow"
"""


def secret_in_two_schemas(mariadb: MariaDB, other: str) -> None:
    """pol_call_secret in shop (SHOP-SECRET, which CALL_SECRET refuses) and in ``other``
    (a decoy): where a bare name is read tells which schema the gateway believes in."""
    direct(mariadb, f"CREATE DATABASE IF NOT EXISTS {other}")
    for schema, value in (("shop", "SHOP-SECRET"), (other, "decoy")):
        direct(mariadb, f"CREATE OR REPLACE TABLE {schema}.pol_call_secret (v TEXT)")
        direct(mariadb, f"INSERT INTO {schema}.pol_call_secret VALUES ('{value}')")


def test_after_a_call_the_schema_is_not_known(mariadb: MariaDB, tmp_path: Path) -> None:
    """A procedure of the current schema that runs EXECUTE IMMEDIATE 'USE shop' leaves the
    session in shop: the gateway read the next SELECT * FROM pol_call_secret in the old
    schema and shop's rows came back past a rule refusing every statement on them."""
    secret_in_two_schemas(mariadb, "pol_call_other")
    direct(
        mariadb,
        "CREATE OR REPLACE PROCEDURE pol_call_other.tidy() BEGIN EXECUTE IMMEDIATE 'USE shop'; END",
    )
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=CALL_SECRET).start()
    try:
        with gw.connect(database="pol_call_other") as conn:
            with conn.cursor() as cur:
                cur.execute("CALL tidy()")
                cur.execute("SELECT DATABASE()")
                assert cur.fetchone() == ("shop",)  # where MariaDB left the session
            message = refused(conn, "SELECT * FROM pol_call_secret")
            assert message.startswith("sqlgate: blocked by rule 'no-secret': ")
            with conn.cursor() as cur:  # a USE makes the schema known again
                cur.execute("USE pol_call_other")
                cur.execute("SELECT * FROM pol_call_secret")
                assert cur.fetchall() == (("decoy",),)
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP DATABASE IF EXISTS pol_call_other")
        direct(mariadb, "DROP TABLE IF EXISTS shop.pol_call_secret")


def test_after_a_call_that_fails_the_schema_is_not_known(mariadb: MariaDB, tmp_path: Path) -> None:
    """The procedure moves the session to shop, then signals an error: the schema stays
    moved, while the gateway took the failed CALL for one that changed nothing."""
    secret_in_two_schemas(mariadb, "pol_fail_other")
    direct(
        mariadb,
        "CREATE OR REPLACE PROCEDURE pol_fail_other.tidy() BEGIN EXECUTE IMMEDIATE 'USE shop'; "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom'; END",
    )
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=CALL_SECRET).start()
    try:
        with gw.connect(database="pol_fail_other") as conn:
            with pytest.raises(pymysql.err.OperationalError) as failed, conn.cursor() as cur:
                cur.execute("CALL tidy()")
            assert failed.value.args[0] == 1644
            with conn.cursor() as cur:
                cur.execute("SELECT DATABASE()")
                assert cur.fetchone() == ("shop",)  # where MariaDB left the session
            message = refused(conn, "SELECT * FROM pol_call_secret")
            assert message.startswith("sqlgate: blocked by rule 'no-secret': ")
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP DATABASE IF EXISTS pol_fail_other")
        direct(mariadb, "DROP TABLE IF EXISTS shop.pol_call_secret")


def test_a_set_statement_of_sql_mode_does_not_change_how_later_texts_are_read(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """The SELECT of SET STATEMENT sql_mode='NO_BACKSLASH_ESCAPES' FOR SELECT 1 is
    answered with that mode's status flag; the session's mode is back after it. Taking
    the flag, the gateway read 'a\\' as a whole string and the UNION as part of another,
    while MariaDB ran the UNION: shop's rows past a rule on them."""
    secret_in_two_schemas(mariadb, "pol_nbe_other")
    trick = (
        "SELECT 'a\\' ' UNION SELECT v FROM shop.pol_call_secret -- ' "
        "FROM pol_nbe_other.pol_call_secret"
    )
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=CALL_SECRET).start()
    try:
        with gw.connect(database="pol_nbe_other") as conn:
            with conn.cursor() as cur:
                cur.execute("SET STATEMENT sql_mode='NO_BACKSLASH_ESCAPES' FOR SELECT 1")
            refused(conn, trick)  # read both ways, which differ
            with conn.cursor() as cur:  # the next answer tells the mode again
                cur.execute("SELECT 1")
            message = refused(conn, trick)  # read with backslash escapes, as MariaDB does
            assert message.startswith("sqlgate: blocked by rule 'no-secret': "), message
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP DATABASE IF EXISTS pol_nbe_other")
        direct(mariadb, "DROP TABLE IF EXISTS shop.pol_call_secret")


#: Commands whose answer carries no status flags the gateway reads (none at all for a
#: COM_STMT_CLOSE), each with how many packets its answer has (None: up to its EOF).
FLAGLESS = {
    "COM_STMT_CLOSE": (b"\x19" + (99).to_bytes(4, "little"), 0),
    "COM_STATISTICS": (b"\x09", 1),
    "COM_SET_OPTION": (b"\x1b\x00\x00", 1),
    "COM_FIELD_LIST": (b"\x04pol_call_secret\x00", None),
}


def test_an_answer_without_status_flags_leaves_a_set_statements_mode_unknown(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """After SET STATEMENT sql_mode='NO_BACKSLASH_ESCAPES' FOR SELECT 1, any command that
    succeeded (a COM_STMT_CLOSE, which has no answer) was taken to have brought the
    session's status flags back, while the gateway still held the SET STATEMENT's: it read
    the next text without backslash escapes, MariaDB with them, and shop's rows came back
    past a rule on them (a DELETE hidden the same way ran, recorded as a SELECT)."""
    secret_in_two_schemas(mariadb, "pol_nbe_flagless")
    trick = (
        "SELECT 'a\\' ' UNION SELECT v FROM shop.pol_call_secret -- ' "
        "FROM pol_nbe_flagless.pol_call_secret"
    )
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=CALL_SECRET).start()
    try:
        for name, (payload, packets_back) in FLAGLESS.items():
            with gw.connect(database="pol_nbe_flagless") as conn:
                with conn.cursor() as cur:
                    cur.execute("SET STATEMENT sql_mode='NO_BACKSLASH_ESCAPES' FOR SELECT 1")
                conn._sock.sendall(frame(0, payload))
                conn._next_seq_id = 1
                if packets_back is None:
                    while not conn._read_packet().is_eof_packet():
                        pass
                for _ in range(packets_back or 0):
                    conn._read_packet()
                message = refused(conn, trick)  # read both ways, which differ
                assert "not-understood" in message or "no-secret" in message, (name, message)
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP DATABASE IF EXISTS pol_nbe_flagless")
        direct(mariadb, "DROP TABLE IF EXISTS shop.pol_call_secret")


def test_a_statement_text_the_server_converts_is_not_read_unconverted(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """In swe7 the backtick is the letter é: EXECUTE IMMEDIATE _swe7'UPDATE pub ` , secret
    SET ... -- ` ...' was read as an UPDATE of pub alone and set every row of the table a
    rule refuses; with character_set_connection = swe7 a backslash in the text became
    '?', and shop's rows came back."""
    direct(mariadb, "CREATE OR REPLACE TABLE shop.pol_call_secret (v TEXT)")
    direct(mariadb, "INSERT INTO shop.pol_call_secret VALUES ('SHOP-SECRET')")
    direct(mariadb, "CREATE OR REPLACE TABLE shop.pol_pub (id INT, c INT)")
    direct(mariadb, "INSERT INTO shop.pol_pub VALUES (1, 0), (2, 0)")
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=CALL_SECRET).start()
    try:
        with gw.connect(database="shop") as conn:
            message = refused(
                conn,
                "EXECUTE IMMEDIATE _swe7'UPDATE pol_pub ` , pol_call_secret "
                "SET pol_call_secret.v = 0x70776e6564 -- ` SET c = 1 WHERE id = 1'",
            )
            assert "not-understood" in message, message
            message = refused(conn, "SET character_set_connection = swe7")
            assert message.startswith("sqlgate: blocked by rule 'charset': "), message
        assert direct(mariadb, "SELECT v FROM shop.pol_call_secret") == [("SHOP-SECRET",)]
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP TABLE IF EXISTS shop.pol_call_secret, shop.pol_pub")


SEQUENCE_OFF_LIMITS = """
[[rules]]
name = "sequence-is-off-limits"
statements = ["*"]
tables = ["shop.pol_seq"]
action = "block"
"""


def test_a_rule_on_a_sequence_sees_the_functions_that_change_it(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """SELECT SETVAL(shop.seq, 100) was read as touching no table (the parser takes the
    argument for a column), nor under sql_mode ORACLE SELECT seq.nextval (a column of
    table seq): a rule refusing every statement on the sequence let both change it."""
    direct(mariadb, "DROP SEQUENCE IF EXISTS shop.pol_seq")
    direct(mariadb, "CREATE SEQUENCE shop.pol_seq")
    gw = GatewayProcess(
        tmp_path / "gw", mariadb, mariadb.pki, extra_toml=SEQUENCE_OFF_LIMITS
    ).start()
    try:
        with gw.connect(database="shop") as conn:
            texts = [
                "SELECT SETVAL(shop.pol_seq, 100)",
                "SELECT NEXTVAL(pol_seq)",
                "DO SETVAL(pol_seq, 200)",
                "SET @x = NEXT VALUE FOR pol_seq",
                "SET @x = LASTVAL(pol_seq)",
            ]
            for sql in texts:
                message = refused(conn, sql)
                assert message.startswith("sqlgate: blocked by rule 'sequence-is-off-limits': ")
            with conn.cursor() as cur:  # the session goes on
                cur.execute("SELECT @x")
                assert cur.fetchone() == (None,)
        # a session refuses SET sql_mode = 'ORACLE', but it may go back to a global ORACLE
        # before the gateway reads that again
        with gw.connect(database="shop") as conn, _global_sql_mode(mariadb, "ORACLE"):
            with conn.cursor() as cur:
                cur.execute("SET sql_mode = DEFAULT")
            for sql in ("SELECT pol_seq.nextval", "SELECT `shop`.`pol_seq`.`NEXTVAL`"):
                message = refused(conn, sql)
                assert message.startswith("sqlgate: blocked by rule "), message
                rule = message.split("'")[1]
                assert rule in ("sequence-is-off-limits", "sql-mode"), message
        # not one value was taken: the next is still the first
        assert direct(mariadb, "SELECT NEXTVAL(shop.pol_seq)") == [(1,)]
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP SEQUENCE IF EXISTS shop.pol_seq")
    sts = [r for r in statements(gw) if r["sql"] == "SELECT NEXTVAL(pol_seq)"]
    assert [(s["decision"], s["rule"]) for s in sts] == [("blocked", "sequence-is-off-limits")]


PROCEDURES = """
[[rules]]
name = "purge-never"
statements = ["CALL"]
tables = ["shop.pol_purge"]
action = "block"

[[rules]]
name = "count-is-safe"
statements = ["CALL"]
tables = ["shop.pol_count"]
action = "allow"
"""


def test_rules_name_the_procedure_a_call_runs(mariadb: MariaDB, tmp_path: Path) -> None:
    """CALL's procedure was no name of the statement: a block rule naming it only held
    the CALL for review (which an operator could approve), and an allow rule naming a
    procedure allowed nothing."""
    _five_rows(mariadb, "pol_calls")
    direct(mariadb, "DROP PROCEDURE IF EXISTS shop.pol_purge")
    direct(mariadb, "DROP PROCEDURE IF EXISTS shop.pol_count")
    direct(mariadb, "CREATE PROCEDURE shop.pol_purge() DELETE FROM shop.pol_calls")
    direct(mariadb, "CREATE PROCEDURE shop.pol_count() SELECT COUNT(*) FROM shop.pol_calls")
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=PROCEDURES).start()
    try:
        with gw.connect(database="shop") as conn:
            for sql in ("CALL pol_purge()", "CALL shop.POL_PURGE"):
                message = refused(conn, sql)
                assert message.startswith("sqlgate: blocked by rule 'purge-never': CALL ")
            with conn.cursor() as cur:
                cur.execute("CALL pol_count()")
                assert cur.fetchall() == ((5,),)
            message = refused(
                conn, "CALL pol_count((SELECT id FROM pol_calls LIMIT 1))"
            )  # not the same call
            assert message.startswith("sqlgate: review required by rule 'call': ")
        assert direct(mariadb, "SELECT COUNT(*) FROM shop.pol_calls") == [(5,)]
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP PROCEDURE IF EXISTS shop.pol_purge")
        direct(mariadb, "DROP PROCEDURE IF EXISTS shop.pol_count")
        direct(mariadb, "DROP TABLE IF EXISTS shop.pol_calls")
    sts = [r for r in statements(gw) if r["sql"].startswith("CALL")]
    assert [(s["sql"], s["decision"], s["rule"]) for s in sts] == [
        ("CALL pol_purge()", "blocked", "purge-never"),
        ("CALL shop.POL_PURGE", "blocked", "purge-never"),
        ("CALL pol_count()", "allowed", "count-is-safe"),
        ("CALL pol_count((SELECT id FROM pol_calls LIMIT 1))", "blocked", "call"),
    ]


SCRATCH_ANYTHING = """
[[rules]]
name = "scratch-anything"
statements = ["*"]
tables = ["pol_scratch.*"]
action = "allow"
"""


def test_an_allow_covers_a_schema_only_in_its_own_case(mariadb: MariaDB, tmp_path: Path) -> None:
    """MariaDB (lower_case_table_names=0) tells `Pol_Scratch` from `pol_scratch`, but the
    gateway lower-cased names: an allow for pol_scratch.* let DELETE FROM Pol_Scratch.t
    with no WHERE and DROP TABLE Pol_Scratch.x skip the built-in rules."""
    schemas = ("pol_scratch", "Pol_Scratch")
    for schema in schemas:
        direct(mariadb, f"DROP DATABASE IF EXISTS `{schema}`")
        direct(mariadb, f"CREATE DATABASE `{schema}`")
        direct(mariadb, f"CREATE TABLE `{schema}`.t (id INT PRIMARY KEY)")
        direct(mariadb, f"INSERT INTO `{schema}`.t VALUES (1), (2), (3)")
        direct(mariadb, f"CREATE TABLE `{schema}`.x (id INT)")
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=SCRATCH_ANYTHING).start()
    try:
        with gw.connect(database="shop") as conn:
            message = refused(conn, "DELETE FROM Pol_Scratch.t")
            assert message.startswith("sqlgate: blocked by rule 'delete-without-where': ")
            message = refused(conn, "DROP TABLE Pol_Scratch.x")
            assert message.startswith("sqlgate: review required by rule 'schema-change': ")
            with conn.cursor() as cur:  # the schema the rule names, in its case
                cur.execute("DELETE FROM pol_scratch.t")
                cur.execute("DROP TABLE pol_scratch.x")
            conn.commit()
        with gw.connect(database="Pol_Scratch") as conn:  # the session's schema, as set
            message = refused(conn, "DELETE FROM t")
            assert message.startswith("sqlgate: blocked by rule 'delete-without-where': ")
        assert direct(mariadb, "SELECT COUNT(*) FROM Pol_Scratch.t") == [(3,)]
        assert direct(mariadb, "SELECT COUNT(*) FROM pol_scratch.t") == [(0,)]
        tables = direct(
            mariadb,
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema LIKE 'pol_scratch' ORDER BY BINARY table_schema, table_name",
        )
        assert tables == [("Pol_Scratch", "t"), ("Pol_Scratch", "x"), ("pol_scratch", "t")]
    finally:
        assert gw.stop() == 0
        for schema in schemas:
            direct(mariadb, f"DROP DATABASE IF EXISTS `{schema}`")
    sts = [r for r in statements(gw) if r["sql"] == "DELETE FROM pol_scratch.t"]
    assert [(s["decision"], s["rule"]) for s in sts] == [("allowed", "scratch-anything")]


NESTED_SECRET = """
[[rules]]
name = "no-secret"
statements = ["*"]
tables = ["shop.pol_nested_secret"]
action = "block"
"""


KUENDIGUNG_OFF_LIMITS = """
[[rules]]
name = "kuendigung-off-limits"
statements = ["*"]
tables = ["shop.pol_kündigung", "pol_kündigung.*"]
action = "block"
"""


def test_a_use_nested_in_statements_that_run_statements_is_refused(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """SET STATEMENT ... FOR EXECUTE IMMEDIATE 'USE shop' (a USE at depth two) was allowed:
    the server went to shop while the gateway read bare names in the login's schema, so
    SELECT * FROM a table the rules refuse in shop gave its rows."""
    direct(mariadb, "DROP DATABASE IF EXISTS pol_nested_other")
    direct(mariadb, "CREATE DATABASE pol_nested_other")
    for schema, value in (("shop", "4111111111111111"), ("pol_nested_other", "decoy")):
        direct(mariadb, f"CREATE OR REPLACE TABLE {schema}.pol_nested_secret (card TEXT)")
        direct(mariadb, f"INSERT INTO {schema}.pol_nested_secret VALUES ('{value}')")
    nested = [
        "SET STATEMENT max_statement_time=0 FOR EXECUTE IMMEDIATE 'USE shop'",
        "EXECUTE IMMEDIATE 'SET STATEMENT max_statement_time=0 FOR USE shop'",
        "PREPARE s FROM 'SET STATEMENT max_statement_time=0 FOR USE shop'",
        "SET STATEMENT max_statement_time=0 FOR PREPARE s FROM 'USE shop'",
        "SET STATEMENT max_statement_time=0 FOR EXECUTE IMMEDIATE "
        "'SET STATEMENT lock_wait_timeout=5 FOR USE shop'",
    ]
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=NESTED_SECRET).start()
    try:
        with gw.connect(database="pol_nested_other") as conn:
            for sql in nested:
                message = refused(conn, sql)
                assert message.startswith("sqlgate: blocked by rule 'prepared-use': ")
                if sql.startswith(("PREPARE", "SET STATEMENT max_statement_time=0 FOR PREPARE")):
                    with pytest.raises(pymysql.err.MySQLError) as info, conn.cursor() as cur:
                        cur.execute("EXECUTE s")
                    assert info.value.args[0] == 1243  # nothing was prepared
                assert _current_db(conn) == "pol_nested_other"
                with conn.cursor() as cur:
                    cur.execute("SELECT * FROM pol_nested_secret")
                    assert cur.fetchall() == (("decoy",),)
            refused(conn, "SELECT * FROM shop.pol_nested_secret")
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP DATABASE IF EXISTS pol_nested_other")
        direct(mariadb, "DROP TABLE IF EXISTS shop.pol_nested_secret")
    assert "Traceback" not in gw.log()
    sts = statements(gw)
    assert [(s["sql"], s["decision"], s["rule"]) for s in sts if s["sql"] in nested] == [
        (sql, "blocked", "prepared-use") for sql in nested
    ]
    reads = [s for s in sts if s["sql"] == "SELECT * FROM pol_nested_secret"]
    assert len(reads) == len(nested)
    assert {(s["db"], s["decision"]) for s in reads} == {("pol_nested_other", "allowed")}


def test_a_non_ascii_name_in_a_latin1_session_is_refused(mariadb: MariaDB, tmp_path: Path) -> None:
    """A latin1 client sends `pol_kündigung` as pol_k<0xfc>ndigung, which the gateway read
    as UTF-8 (pol_k\ufffdndigung): no rule named it and the row came back. A quoted name
    with a byte >= 0x80 is not understood in a session that is not UTF-8 now, and so is a
    schema name COM_INIT_DB or a login carries; a string keeps its bytes. In utf8mb4 the
    rule refuses the name."""
    direct(mariadb, "CREATE TABLE IF NOT EXISTS shop.`pol_kündigung` (id INT, note TEXT)")
    direct(mariadb, "DELETE FROM shop.`pol_kündigung`")
    direct(mariadb, "INSERT INTO shop.`pol_kündigung` VALUES (1, 'fristlos')")
    direct(mariadb, "CREATE DATABASE IF NOT EXISTS `pol_kündigung`")
    direct(mariadb, "CREATE TABLE IF NOT EXISTS `pol_kündigung`.t (id INT)")
    gw = GatewayProcess(
        tmp_path / "gw", mariadb, mariadb.pki, extra_toml=KUENDIGUNG_OFF_LIMITS
    ).start()
    texts = (
        "SELECT * FROM `pol_kündigung`",
        'SELECT * FROM "pol_kündigung"',  # a name under ANSI_QUOTES
        "SELECT note FROM shop.`pol_kündigung` WHERE id = 1",
    )
    try:
        with gw.connect(charset="latin1") as conn:
            for sql in texts:
                message = refused(conn, sql)
                assert message.startswith("sqlgate: blocked by rule 'not-understood': "), sql
                assert "quoted name" in message and "SET NAMES utf8mb4" in message
            with pytest.raises(pymysql.err.OperationalError) as info:
                conn.select_db("pol_kündigung")  # COM_INIT_DB, in latin1
            code, message = info.value.args
            assert code == 1227 and "'not-understood'" in message, message
            with conn.cursor() as cur:  # a string is a value: its bytes go as they are
                cur.execute("SELECT 'Kündigung' LIKE 'K_ndigung', DATABASE()")
                assert cur.fetchall() == ((1, "shop"),)
        with pytest.raises(pymysql.err.OperationalError) as info:
            gw.connect(charset="latin1", database="pol_kündigung")
        code, message = info.value.args
        assert code == 1044 and "'not-understood'" in message, message
        with gw.connect() as conn:  # utf8mb4: the rule sees the name
            for sql in texts:
                message = refused(conn, sql)
                assert message.startswith("sqlgate: blocked by rule 'kuendigung-off-limits'")
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP TABLE shop.`pol_kündigung`")
        direct(mariadb, "DROP DATABASE `pol_kündigung`")
    sts = [s for s in statements(gw) if s["sql"].startswith("SELECT * FROM `pol_k")]
    assert [(s["decision"], s["rule"]) for s in sts] == [
        ("blocked", "not-understood"),
        ("blocked", "kuendigung-off-limits"),
    ]


def _field_list(conn: Any, payload: bytes) -> list[bytes] | tuple[int, str]:
    """COM_FIELD_LIST (PyMySQL has no call for it): the column names, or (code, message)
    of its ERR."""
    conn._next_seq_id = 0
    conn._write_bytes(frame(0, bytes([Command.FIELD_LIST]) + payload))
    names = []
    while True:
        header = conn._read_bytes(4)
        packet = bytes(conn._read_bytes(header[0] | header[1] << 8 | header[2] << 16))
        if packet[0] == 0xFF:
            return int.from_bytes(packet[1:3], "little"), packet[9:].decode()
        if packet[0] == 0xFE and len(packet) < 9:
            return names
        names.append(packets.parse_column_definition(packet).name)


def test_com_field_list_is_decided_as_show_columns(mariadb: MariaDB, tmp_path: Path) -> None:
    """COM_FIELD_LIST gave the columns of shop.pol_secret where a rule refused SHOW
    COLUMNS FROM pol_secret (recorded with rule `protocol` and no text). It is decided and
    recorded as that text now; a name the rules would misread is not understood."""
    direct(mariadb, "CREATE TABLE IF NOT EXISTS shop.pol_secret (c INT)")
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=SECRET_OFF_LIMITS).start()
    try:
        with gw.connect(database="shop") as conn:
            show = refused(conn, "SHOW COLUMNS FROM pol_secret")
            assert show.startswith("sqlgate: blocked by rule 'secret-is-off-limits': ")
            assert _field_list(conn, b"pol_secret\0") == (1227, show)
            code, message = _field_list(conn, b"shop.pol_secret\0")  # one name, dot and all
            assert code == 1227 and "'not-understood'" in message, message
            assert _field_list(conn, b"customers\0e%") == [b"email"]
            with conn.cursor() as cur:  # still in step
                cur.execute("SELECT 42")
                assert cur.fetchone() == (42,)
    finally:
        assert gw.stop() == 0
        direct(mariadb, "DROP TABLE shop.pol_secret")
    recs = ledger_records(gw.ledger)
    lists = [s for s in statements(gw) if s["command"] == "COM_FIELD_LIST"]
    assert [(s["sql"], s["statement_kind"], s["decision"], s["rule"]) for s in lists] == [
        ("SHOW COLUMNS FROM `pol_secret`", "SHOW", "blocked", "secret-is-off-limits"),
        ("SHOW COLUMNS FROM `shop.pol_secret`", "SHOW", "blocked", "not-understood"),
        ("SHOW COLUMNS FROM `customers` LIKE 'e%'", "SHOW", "allowed", "default-allow"),
    ]
    assert lists[0]["reason"] == show
    assert [result_of(recs, s).get("error") for s in lists] == [1227, 1227, None]


def test_a_character_set_the_targets_init_connect_sets_is_the_one_texts_are_read_in(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """The target's init_connect ran SET NAMES gbk for the gateway's (non-SUPER) user,
    while the client's login named utf8mb4: the gateway read `SELECT '€\\' ; DELETE ...`
    as one SELECT of a string, and the server, reading gbk, ran the DELETE (every row
    gone). The gateway now asks the session's character sets with its sql_mode."""
    mariadb.admin_sql(
        "CREATE OR REPLACE TABLE shop.gbk_rows (id INT PRIMARY KEY)",
        "INSERT INTO shop.gbk_rows VALUES (1), (2), (3)",
        "CREATE OR REPLACE USER 'gbk_backend'@'%' IDENTIFIED BY 'gbk-backend-pw-1'",
        "GRANT ALL ON shop.* TO 'gbk_backend'@'%'",
        "SET GLOBAL init_connect = 'SET NAMES gbk'",
    )
    gw = GatewayProcess(
        tmp_path,
        mariadb,
        mariadb.pki,
        backend_user="gbk_backend",
        backend_password="gbk-backend-pw-1",
    ).start()
    acct = gw.account("agent")
    login = {"host": gw.host, "port": gw.port, "user": acct.user, "password": acct.password}
    try:
        charset = run_mariadb(
            "SELECT @@character_set_client", **login, column_names=False,
            extra_args=["--default-character-set=utf8mb4"],
        )  # fmt: skip
        assert charset.strip() == "gbk"  # the server's, not the login's
        with pytest.raises(ClientError) as refused:
            run_mariadb(
                "SELECT '€\\' ; DELETE FROM gbk_rows; -- '", **login, database="shop",
                extra_args=["--default-character-set=utf8mb4"],
            )  # fmt: skip
        assert "ERROR 1227" in refused.value.stderr
        assert "cannot read safely" in refused.value.stderr
        assert direct(mariadb, "SELECT COUNT(*) FROM shop.gbk_rows") == [(3,)]
        out = run_mariadb(
            "SET NAMES utf8mb4; SELECT 'é' AS e", **login, column_names=False,
            extra_args=["--default-character-set=utf8mb4"],
        )  # fmt: skip
        assert out.strip() == "é"  # named again by the client, read in it again
    finally:
        assert gw.stop() == 0
        mariadb.admin_sql(
            "SET GLOBAL init_connect = ''",
            "DROP USER IF EXISTS 'gbk_backend'@'%'",
            "DROP TABLE IF EXISTS shop.gbk_rows",
        )
    assert "Traceback" not in gw.log()


SANDBOX_RULES = """
[[rules]]
name = "sandbox"
statements = ["*"]
tables = ["shop.sandbox_*"]
action = "allow"
"""


def test_an_allow_on_tables_does_not_reach_the_servers_files(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """A sandbox allow (`*` on shop.sandbox_*) came before the built-ins on files:
    LOAD_FILE() read /etc/hostname through a SELECT of a sandbox table, and INTO OUTFILE
    wrote a file on the server. Files are no tables of the sandbox."""
    mariadb.admin_sql(
        "CREATE OR REPLACE TABLE shop.sandbox_t (id INT PRIMARY KEY, v TEXT)",
        "INSERT INTO shop.sandbox_t VALUES (1, 'a')",
    )
    out = f"/tmp/sqlgate-sandbox-{os.getpid()}.txt"
    gw = GatewayProcess(tmp_path, mariadb, mariadb.pki, extra_toml=SANDBOX_RULES).start()
    try:
        with gw.connect(database="shop") as conn:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM sandbox_t")  # the sandbox's own: allowed
            for sql, rule in (
                ("SELECT LOAD_FILE('/etc/hostname') FROM sandbox_t", "load-file"),
                (f"SELECT * FROM sandbox_t INTO OUTFILE '{out}'", "into-outfile"),
                ("LOAD DATA INFILE '/etc/hostname' INTO TABLE sandbox_t", "load-data"),
            ):
                assert f"by rule '{rule}'" in refused(conn, sql)
        assert not os.path.exists(out)
    finally:
        assert gw.stop() == 0
        mariadb.admin_sql("DROP TABLE IF EXISTS shop.sandbox_t")
