"""Result-set masking with real clients through the gateway (SPEC §7): masked columns
come back masked in the text protocol (PyMySQL, the mariadb CLI, SQLAlchemy) and the
binary one (mysql-connector prepared statements), whatever the alias, through views;
exempt groups see real values; the database keeps the real data; the ledger's result
record names what was masked; error texts do not leak masked values."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import mysql.connector
import pymysql
import pytest
import sqlalchemy
from lab import cursors
from lab.clients import ClientError, ledger_records, node_spec, run_mariadb, run_node, run_sqlgate
from lab.gateway import GatewayAccount, GatewayProcess
from lab.mariadb import MariaDB
from pymysql.constants import CLIENT

from appliance.mysql.wire import frame

pytestmark = pytest.mark.integration

CARD = "4111111111111111"
ROWS = [
    (1, "Ann", CARD, "ann@example.com", 123456789, "tok-a"),
    (2, "Bob", "5555555555554444", "bob@example.com", 987654321, "tok-b"),
    (3, "Cy", None, None, None, "tok-a"),
]
MASKING = """
[[masking]]
column = "shop.mask_customers.card_number"
strategy = "last4"
exempt_groups = ["pii-readers"]

[[masking]]
column = "shop.mask_customers.email"
strategy = "redact"

[[masking]]
column = "shop.*.ssn"
strategy = "null"

[[masking]]
column = "shop.mask_customers.token"
strategy = "hash"

[[masking]]
column = "shop.mask_customers.phone"
strategy = "last4"
on_use = "rewrite"

[[masking]]
column = "shop.mask_kunden.straße"
strategy = "last4"

[[rules]]
name = "mask-calls"
statements = ["CALL"]
tables = ["mask_other.*"]
action = "allow"
"""


@pytest.fixture(scope="module")
def gw(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    values = ", ".join(
        "(" + ", ".join("NULL" if v is None else repr(v) for v in row) + ")" for row in ROWS
    )
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.mask_customers",
        "CREATE TABLE shop.mask_customers (id INT PRIMARY KEY, name VARCHAR(20), "
        "card_number VARCHAR(19) UNIQUE, email VARCHAR(60), ssn INT NOT NULL DEFAULT 0, "
        "token VARCHAR(20), phone VARCHAR(20) DEFAULT '+49 30 1234567')",
        "INSERT INTO shop.mask_customers (id, name, card_number, email, ssn, token) "
        f"VALUES {values}".replace("NULL, NULL, NULL", "NULL, NULL, 0"),
        "CREATE OR REPLACE ALGORITHM=TEMPTABLE VIEW shop.mask_temp AS "
        "SELECT id, card_number FROM shop.mask_customers",
        "CREATE OR REPLACE VIEW shop.mask_v AS "
        "SELECT id, card_number AS c, UPPER(email) AS e, name FROM shop.mask_customers",
        "CREATE OR REPLACE VIEW shop.mask_vv AS SELECT id, c FROM shop.mask_v",
        "DROP VIEW IF EXISTS shop.mask_late",
        "CREATE OR REPLACE TABLE shop.mask_kunden (id INT PRIMARY KEY, `straße` VARCHAR(40))",
        "INSERT INTO shop.mask_kunden VALUES (1, 'Geheimweg 42')",
        "DROP TABLE IF EXISTS shop.mask_copy",
        "CREATE DATABASE IF NOT EXISTS mask_other",
        "CREATE OR REPLACE PROCEDURE mask_other.cards(IN n INT) "
        "SELECT id, card_number, ssn FROM shop.mask_customers WHERE id <= n ORDER BY id",
    )
    work = tmp_path_factory.mktemp("gw")
    accounts = [
        GatewayAccount("agent", "agent-secret-1"),
        GatewayAccount("auditor", "auditor-secret-4", ("agents", "pii-readers")),
    ]
    gw = GatewayProcess(work, mariadb, mariadb.pki, accounts=accounts, extra_toml=MASKING)
    gw.start()
    yield gw
    assert gw.stop() == 0
    log = gw.log()
    assert "Traceback" not in log and CARD not in log


def key(gw: GatewayProcess) -> bytes:
    return (gw.workdir / "masking.key").read_bytes()


def digest(gw: GatewayProcess, value: str) -> str:
    return hmac.new(key(gw), value.encode(), hashlib.sha256).hexdigest()


def expected(gw: GatewayProcess) -> list[tuple[object, ...]]:
    phone = "**********4567"
    return [
        (1, "Ann", "************1111", "****", None, digest(gw, "tok-a"), phone),
        (2, "Bob", "************4444", "****", None, digest(gw, "tok-b"), phone),
        (3, "Cy", None, None, None, digest(gw, "tok-a"), phone),
    ]


def query(gw: GatewayProcess, sql: str, user: str = "agent") -> list[tuple[object, ...]]:
    conn = gw.connect(user=user, database="shop")
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def test_pymysql_text_protocol_gets_masked_values(gw: GatewayProcess, mariadb: MariaDB) -> None:
    assert query(gw, "SELECT * FROM mask_customers ORDER BY id") == expected(gw)
    real = mariadb.admin_sql("SELECT card_number FROM shop.mask_customers WHERE id = 1")
    assert real == [(CARD,)]  # the data in the database is unchanged


def test_an_alias_does_not_escape_the_origin(gw: GatewayProcess) -> None:
    rows = query(
        gw, "SELECT c.card_number AS cc, c.email AS `e` FROM mask_customers c WHERE id = 1"
    )
    assert rows == [("************1111", "****")]


def test_hash_is_stable_so_joins_and_groups_still_work(gw: GatewayProcess) -> None:
    tokens = [r[5] for r in query(gw, "SELECT * FROM mask_customers ORDER BY id")]
    assert tokens[0] == tokens[2] != tokens[1]
    assert tokens == [r[5] for r in query(gw, "SELECT * FROM mask_customers ORDER BY id")]


def test_exempt_groups_see_the_real_values(gw: GatewayProcess) -> None:
    rows = query(gw, "SELECT card_number, email FROM mask_customers WHERE id = 1", user="auditor")
    assert rows == [(CARD, "****")]  # exempt from the card rule only


def test_mysql_connector_prepared_statements_binary_protocol(gw: GatewayProcess) -> None:
    conn = gw.connector()
    try:
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT * FROM mask_customers WHERE id >= ? ORDER BY id", (1,))
        rows = [tuple(r) for r in cur.fetchall()]
        cur.close()
    finally:
        conn.close()
    assert rows == expected(gw)


def test_mariadb_connector_node_execute_is_masked_and_recorded(gw: GatewayProcess) -> None:
    """The npm package mariadb pipelines COM_STMT_PREPARE and COM_STMT_EXECUTE with
    statement id 0xFFFFFFFF ("the statement prepared last") for each new text: the first
    execute of each was refused. Now it runs, masked, recorded with the prepared text."""
    marker = "SELECT id, card_number FROM mask_customers WHERE id >= ? ORDER BY id /* mdb */"
    out = run_node(
        node_spec(
            host=gw.host,
            port=gw.port,
            user="agent",
            password="agent-secret-1",
            database="shop",
            queries=[marker, "SELECT ? + 1 AS two"],
            prepared=True,
            driver="mariadb",
        )
        | {"params": [[1], [1]]}
    )
    masked, two = out["results"]
    assert masked["fields"] == ["id", "card_number"]
    assert masked["rows"] == [[1, "************1111"], [2, "************4444"], [3, None]]
    assert two["rows"] == [["2"]]  # a BIGINT, as the connector gives it
    records = [
        json.loads(line)
        for line in run_sqlgate("ledger", "export", "--ledger", str(gw.ledger)).stdout.splitlines()
    ]
    statement = next(
        r
        for r in records
        if r["kind"] == "statement" and r["command"] == "COM_STMT_EXECUTE" and r["sql"] == marker
    )
    assert statement["decision"] == "allowed"
    result = next(
        r
        for r in records
        if r["kind"] == "result"
        and (r["session"], r["statement_seq"]) == (statement["session"], statement["statement_seq"])
    )
    assert result["rows"] == 3 and result["masked"] == ["shop.mask_customers.card_number"]


def _cursor_rows(conn: pymysql.connections.Connection[Any], sql: str) -> list[bytes | None]:
    """Prepare ``sql`` (one BIGINT parameter, bound to 0), execute it with a read-only
    cursor and fetch every row: the first column's text of each binary row."""
    statement = cursors.open_cursor(conn, sql)
    values = cursors.first_column(cursors.fetch(conn, statement))
    cursors.close(conn, statement)
    return values


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT card_number FROM mask_customers WHERE id > ? ORDER BY id",
        "SELECT card_number AS c FROM mask_customers WHERE id > ? ORDER BY id",
        "SELECT m.card_number `Card` FROM mask_customers m WHERE id > ? ORDER BY id",
        "SELECT DISTINCT card_number AS id FROM mask_customers WHERE id > ?",
    ],
    ids=["plain", "alias", "quoted-alias", "alias-of-another-column"],
)
def test_a_cursor_fetch_is_masked_whatever_the_alias(gw: GatewayProcess, sql: str) -> None:
    """MariaDB names a cursor's aliased column by its alias where it names the origin:
    with the alias, the fetched rows came back in the clear."""
    conn = gw.connect(database="shop")
    try:
        values = _cursor_rows(conn, sql)
    finally:
        conn.close()
    assert sorted(values, key=lambda v: v or b"") == [
        None,
        b"************1111",
        b"************4444",
    ]


def test_a_cursor_left_open_by_a_failed_execute_is_still_masked(gw: GatewayProcess) -> None:
    """MariaDB reads an execute's parameters before it closes the statement's open
    cursor: an execute it cannot read fails (1210) and leaves the cursor open. The
    gateway had ended the cursor's masking as that execute went out, and the next
    COM_STMT_FETCH gave the card numbers in the clear."""
    conn = gw.connect(database="shop")
    try:
        sql = "SELECT card_number FROM mask_customers WHERE id > ? ORDER BY id"
        statement = cursors.open_cursor(conn, sql)
        cursors.fail_execute(conn, statement)
        values = cursors.first_column(cursors.fetch(conn, statement))
    finally:
        conn.close()
    assert values == [b"************1111", b"************4444", None]


def test_a_call_outside_the_masked_schema_runs_and_its_rows_are_masked(
    gw: GatewayProcess,
) -> None:
    """BUG: every CALL was read in no schema, where the rule for `shop.*.ssn` named any
    table, the procedure's too: `CALL mask_other.cards(2)` in schema mask_other was
    refused (".call.* is masked ... used not understood"). It runs; what it returns is
    masked by origin, in the text and in the binary protocol."""
    conn = gw.connect(database="mask_other")
    try:
        with conn.cursor() as cur:
            cur.execute("CALL mask_other.cards(2)")
            assert [tuple(r) for r in cur.fetchall()] == [
                (1, "************1111", None),
                (2, "************4444", None),
            ]
    finally:
        conn.close()
    connector = gw.connector(database="mask_other")
    try:
        cur = connector.cursor(prepared=True)
        cur.execute("CALL cards(?)", (1,))
        assert [tuple(r) for r in cur.fetchall()] == [(1, "************1111", None)]
        cur.nextset()
    finally:
        connector.close()


def test_the_mariadb_cli(gw: GatewayProcess) -> None:
    out = run_mariadb(
        "SELECT id, card_number, email, ssn FROM mask_customers WHERE id = 2",
        host=gw.host,
        port=gw.port,
        user="agent",
        password="agent-secret-1",
        database="shop",
    )
    assert out.splitlines() == ["id\tcard_number\temail\tssn", "2\t************4444\t****\tNULL"]
    assert "5555555555554444" not in out


def test_sqlalchemy(gw: GatewayProcess) -> None:
    url = f"mysql+pymysql://agent:agent-secret-1@{gw.host}:{gw.port}/shop"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.text("SELECT card_number, ssn FROM mask_customers WHERE id < :n"),
                {"n": 3},
            ).all()
    finally:
        engine.dispose()
    assert sorted(tuple(r) for r in rows) == [
        ("************1111", None),
        ("************4444", None),
    ]


def test_a_temptable_view_keeps_the_origin_and_is_masked(gw: GatewayProcess) -> None:
    assert query(gw, "SELECT card_number FROM mask_temp WHERE id = 1") == [("************1111",)]


def agent_error(gw: GatewayProcess, sql: str) -> tuple[int, str, list[tuple[object, ...]]]:
    """The error code and message an agent's statement gets, and SHOW WARNINGS after it."""
    conn = gw.connect(database="shop")
    try:
        with conn.cursor() as cur:
            with pytest.raises(pymysql.err.MySQLError) as caught:
                cur.execute(sql)
            cur.execute("SHOW WARNINGS")
            warnings = [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()
    code, message = caught.value.args
    return code, message, warnings


def test_error_texts_do_not_leak_masked_values(gw: GatewayProcess) -> None:
    sql = f"INSERT INTO mask_customers (id, card_number) VALUES (9, '{CARD}')"
    code, message, warnings = agent_error(gw, sql)
    assert code == 1062 and CARD not in message and "'****'" in message
    assert warnings == [("Error", 1062, message)]


ADDRESSES = (
    "CREATE OR REPLACE TABLE shop.mask_addr (id INT PRIMARY KEY, label VARCHAR(10), "
    "ssn VARCHAR(40), UNIQUE KEY u (label, ssn))"
)


def test_a_quote_in_a_duplicate_value_does_not_end_its_scrubbing(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """A composite unique key with a masked column: an UPDATE of the other column alone
    (which masking allows) gets a duplicate-key error quoting both, and the masked part
    after a quote inside it came in the clear (`'****'Hara-Weg 7, 10115 Berlin'`)."""
    mariadb.admin_sql(
        ADDRESSES,
        "INSERT INTO shop.mask_addr VALUES (1, 'home', 'O''Hara-Weg 7, 10115 Berlin'), "
        "(2, 'work', 'O''Hara-Weg 7, 10115 Berlin')",
    )
    try:
        code, message, _ = agent_error(gw, "UPDATE mask_addr SET label = 'home' WHERE id = 2")
    finally:
        mariadb.admin_sql("DROP TABLE shop.mask_addr")
    assert code == 1062
    assert message == "Duplicate entry '****' for key 'u'", message


def test_a_foreign_key_duplicate_does_not_show_the_parent_record(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """An UPDATE of an unmasked column of a table keyed by a masked one, which a child
    table's ON UPDATE CASCADE would turn into a duplicate of the child's unique key:
    MariaDB's error 1761 names the parent's row by its primary key, and the SSN came in
    the clear (`record '123-45-6789'`)."""
    mariadb.admin_sql(
        "CREATE OR REPLACE TABLE shop.mask_fkp (ssn VARCHAR(40) PRIMARY KEY, code INT, KEY (code))",
        "INSERT INTO shop.mask_fkp VALUES ('123-45-6789', 1), ('987-65-4321', 2)",
        "CREATE OR REPLACE TABLE shop.mask_fkc (code INT UNIQUE, CONSTRAINT mask_fk "
        "FOREIGN KEY (code) REFERENCES shop.mask_fkp (code) ON UPDATE CASCADE)",
        "INSERT INTO shop.mask_fkc VALUES (1), (2)",
    )
    try:
        code, message, warnings = agent_error(gw, "UPDATE mask_fkp SET code = 2 WHERE code = 1")
    finally:
        mariadb.admin_sql("DROP TABLE shop.mask_fkc", "DROP TABLE shop.mask_fkp")
    assert code == 1761
    assert message == (
        "Foreign key constraint for table 'mask_fkp', record '****' would lead to a "
        "duplicate entry in table 'mask_fkc', key 'code'"
    ), message
    assert warnings == [("Error", 1761, message)]


def test_messages_in_another_language_do_not_leak_masked_values(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """A server whose lc_messages is not English writes its messages in that language,
    where the scrubber found none of the English forms: a duplicate entry of a composite
    key came whole (`Doppelter Eintrag 'home-123-45-6789' für Schlüssel 'u'`)."""
    mariadb.admin_sql(
        ADDRESSES,
        "INSERT INTO shop.mask_addr VALUES (1, 'home', '123-45-6789'), (2, 'work', '123-45-6789')",
        "SET GLOBAL lc_messages = 'de_DE'",
    )
    try:
        code, message, warnings = agent_error(
            gw, "UPDATE mask_addr SET label = 'home' WHERE id = 2"
        )
    finally:
        mariadb.admin_sql("SET GLOBAL lc_messages = DEFAULT", "DROP TABLE shop.mask_addr")
    assert code == 1062
    assert "123-45-6789" not in message and message.startswith("sqlgate: "), message
    assert warnings == [("Error", 1062, message)]


def test_a_session_in_another_language_does_not_leak_masked_values(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """SET lc_messages, which phpMyAdmin sends at connect, was refused (`set-variable`);
    it runs now, and the session's messages in that language are scrubbed as a server's
    in another language are."""
    mariadb.admin_sql(
        ADDRESSES,
        "INSERT INTO shop.mask_addr VALUES (1, 'home', '123-45-6789'), (2, 'work', '123-45-6789')",
    )
    conn = gw.connect(database="shop")
    try:
        with conn.cursor() as cur:
            cur.execute("SET lc_messages = 'de_DE'")
            with pytest.raises(pymysql.err.MySQLError) as unknown:
                cur.execute("SELECT nosuchcolumn FROM mask_addr")
            with pytest.raises(pymysql.err.MySQLError) as duplicate:
                cur.execute("UPDATE mask_addr SET label = 'home' WHERE id = 2")
    finally:
        conn.close()
        mariadb.admin_sql("DROP TABLE shop.mask_addr")
    assert unknown.value.args[1].startswith("Unbekanntes Tabellenfeld"), unknown.value.args
    code, message = duplicate.value.args
    assert code == 1062
    assert "123-45-6789" not in message and message.startswith("sqlgate: "), message


def test_the_result_record_names_the_masked_columns(gw: GatewayProcess) -> None:
    marker = "SELECT id, card_number, email FROM mask_customers WHERE id IN (1, 2) /* rec */"
    query(gw, marker)
    ledger = str(gw.ledger)
    records = [
        json.loads(line)
        for line in run_sqlgate("ledger", "export", "--ledger", ledger).stdout.splitlines()
    ]
    statement = next(r for r in records if r["kind"] == "statement" and r.get("sql") == marker)
    result = next(
        r
        for r in records
        if r["kind"] == "result"
        and (r["session"], r["statement_seq"]) == (statement["session"], statement["statement_seq"])
    )
    assert result["masked"] == [
        "shop.mask_customers.card_number",
        "shop.mask_customers.email",
    ]
    assert result["masked_values"] == 4


def test_views_show_masked_columns_masked(gw: GatewayProcess) -> None:
    rows = query(gw, "SELECT * FROM mask_v WHERE id = 1")
    assert rows == [(1, "************1111", "****", "Ann")]
    assert query(gw, "SELECT c FROM mask_vv WHERE id = 2") == [("************4444",)]


def test_a_view_made_later_is_masked_as_soon_as_it_exists(gw: GatewayProcess) -> None:
    late = "CREATE VIEW shop.mask_late AS SELECT id, card_number AS x FROM shop.mask_customers"
    query(gw, late, user="auditor")  # exempt from the card rule: may make such a view
    # at once: the statement waits for the catalog's reading after the CREATE VIEW
    assert query(gw, "SELECT x FROM mask_late WHERE id = 1") == [("************1111",)]


def _create_view_run_by_another(gw: GatewayProcess, name: str, how: str) -> None:
    """As the exempt auditor, CREATE VIEW name over the card column, run the way given."""
    create = f"CREATE VIEW shop.{name} AS SELECT id, card_number AS x FROM shop.mask_customers"
    if how == "execute immediate":
        query(gw, "EXECUTE IMMEDIATE '" + create + "'", user="auditor")
    elif how == "prepare and execute":
        conn = gw.connect(user="auditor", database="shop")
        try:
            with conn.cursor() as cur:
                cur.execute("PREPARE make_view FROM '" + create + "'")
                time.sleep(1.5)  # the catalog's reading after the PREPARE is over by now
                cur.execute("EXECUTE make_view")
        finally:
            conn.close()
    else:  # a prepared statement of the binary protocol, executed a while after
        conn = gw.connector(user="auditor", database="shop")
        try:
            prepared = conn.cmd_stmt_prepare(create.encode())
            time.sleep(1.5)
            conn.cmd_stmt_execute(prepared["statement_id"])
        finally:
            conn.close()


@pytest.mark.parametrize("how", ["execute immediate", "prepare and execute", "binary protocol"])
def test_a_view_made_by_a_statement_run_by_another_is_masked_at_once(
    gw: GatewayProcess, how: str
) -> None:
    """A view created by EXECUTE IMMEDIATE, EXECUTE or COM_STMT_EXECUTE did not make the
    catalog read the views again (the kind recorded is EXECUTE): until the next periodic
    reading (a minute), the view showed the card in the clear. Then, until the reading
    that followed it was over."""
    name = "mask_late_" + how.replace(" ", "_")
    _create_view_run_by_another(gw, name, how)
    assert query(gw, f"SELECT x FROM {name} WHERE id = 1") == [("************1111",)]


# Uses of a masked column that would lose its origin or probe its value: refused.
REFUSED = [
    ("SELECT UPPER(card_number) FROM mask_customers", "inside UPPER()"),
    # schema.alias.column: the alias c, as MariaDB reads it
    ("SELECT UPPER(shop.c.card_number) FROM mask_customers c", "used inside UPPER()"),
    ("SELECT GROUP_CONCAT(card_number) FROM mask_customers", "GROUP_CONCAT"),
    ("SELECT JSON_OBJECT('c', card_number) FROM mask_customers", "JSON_OBJECT"),
    ("SELECT card_number FROM mask_customers UNION SELECT 'x'", "UNION"),
    ("SELECT id FROM mask_customers WHERE card_number LIKE '4111%'", "WHERE"),
    ("SELECT id FROM mask_customers ORDER BY email", "ORDER BY"),
    ("SELECT x.c FROM (SELECT card_number AS c FROM mask_customers) x", "derived table"),
    ("WITH c AS (SELECT email FROM mask_customers) SELECT * FROM c", "CTE"),
    ("SELECT (SELECT card_number FROM mask_customers LIMIT 1) AS s", "subquery"),
    ("SELECT card_number INTO @leak FROM mask_customers LIMIT 1", "SELECT ... INTO"),
    ("SET @leak = (SELECT email FROM mask_customers LIMIT 1)", "@leak"),
    ("CREATE TABLE shop.mask_copy AS SELECT card_number FROM mask_customers", "CREATE TABLE"),
    ("INSERT INTO shop.mask_copy2 SELECT card_number FROM mask_customers", "INSERT"),
    ("SELECT SUBSTRING(token, 1, 3) FROM mask_customers", "SUBSTRING"),
    ("UPDATE mask_customers SET name = email WHERE id = 1", "UPDATE"),
    ("SELECT id FROM mask_customers GROUP BY ssn", "GROUP BY"),
    # other sessions' statement texts hold their literals (every session is one account)
    ("SHOW FULL PROCESSLIST", "process list"),
    ("SELECT info FROM information_schema.PROCESSLIST", "process list"),
    # the key values of the records other sessions lock; other sessions' plans
    ("SELECT lock_data FROM information_schema.INNODB_LOCKS", "lock tables"),
    ("SELECT * FROM sys.innodb_lock_waits", "sys schema"),
    ("EXPLAIN FORMAT=JSON FOR CONNECTION 1", "FOR CONNECTION"),
    ("DESCRIBE FOR CONNECTION 1", "whose plan of another session's statement"),
    # a replica's last error quotes the replicated statement that failed, with its values
    ("SHOW SLAVE STATUS", "replication status"),
    ("SHOW REPLICA STATUS", "replication status"),
]


@pytest.mark.parametrize(("sql", "where"), REFUSED, ids=[w for _, w in REFUSED])
def test_uses_that_lose_the_origin_are_refused(
    gw: GatewayProcess, mariadb: MariaDB, sql: str, where: str
) -> None:
    with pytest.raises(pymysql.err.OperationalError) as caught:
        query(gw, sql)
    code, message = caught.value.args
    assert code == 1227 and "by rule 'masking'" in message, message
    assert where.lower() in message.lower(), message
    assert CARD not in message
    assert mariadb.admin_sql("SELECT name FROM shop.mask_customers WHERE id = 1") == [("Ann",)]
    assert not mariadb.admin_sql(
        "SELECT 1 FROM information_schema.TABLES WHERE TABLE_NAME = 'mask_copy'"
    )


def test_a_reading_the_server_cannot_have_is_refused(gw: GatewayProcess, mariadb: MariaDB) -> None:
    """`BINARY BINARY card_number` was CAST(`BINARY` AS BINARY) AS card_number to the
    parser, a column named BINARY and no use of the masked one: the card came back in
    clear. MariaDB reads BINARY(BINARY(card_number))."""
    sql = "SELECT BINARY BINARY card_number FROM shop.mask_customers WHERE id = 1"
    with pytest.raises(pymysql.err.OperationalError) as caught:
        query(gw, sql)
    code, message = caught.value.args
    assert code == 1227 and "the reserved word BINARY read as a column name" in message, message
    assert CARD not in message
    assert mariadb.admin_sql(sql) == [(CARD.encode(),)]  # the server's reading: the card


def test_a_keyword_before_a_dot_is_refused_not_misread(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """`from.card_number` is the column of the table aliased `from` to MariaDB and the
    subquery (SELECT * FROM card_number) to the parser, no use of the masked column:
    CONCAT() of it came back in clear. (In mask_other no masking rule names a table, so
    none covers the table card_number the parser saw.)"""
    sql = "SELECT CONCAT(from.card_number) FROM shop.mask_customers AS `from` WHERE id = 1"
    conn = gw.connect(database="mask_other")
    try:
        with pytest.raises(pymysql.err.OperationalError) as caught, conn.cursor() as cur:
            cur.execute(sql)
            pytest.fail(f"ran: {cur.fetchall()!r}")
    finally:
        conn.close()
    code, message = caught.value.args
    assert code == 1227 and "the word FROM directly before '.' and a name" in message, message
    assert CARD not in message
    assert mariadb.admin_sql(sql) == [(CARD,)]  # the server's reading: the card


def test_a_statement_not_understood_is_refused_with_advice_not_a_column(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """A statement the gateway cannot read that may name a masked table was refused as
    "shop.create.* is masked for agent: it may only be selected as a plain column, and
    here it is used not understood. Select the column itself": the first word of the
    text (a rule for `shop.*.ssn` matches any table) read as a column, and advice that
    did not apply. It says now that the statement was not read, and what to do."""
    sql = "CREATE UNIQUE INDEX mask_u ON mask_customers (name, email)"
    with pytest.raises(pymysql.err.OperationalError) as caught:
        query(gw, sql)
    code, message = caught.value.args
    assert code == 1227 and "by rule 'masking'" in message, message
    assert "cannot read this statement the way the server will" in message, message
    assert "ask an operator" in message, message
    assert "used not understood" not in message and "Select the column" not in message
    assert not mariadb.admin_sql(
        "SELECT 1 FROM information_schema.STATISTICS WHERE INDEX_NAME = 'mask_u'"
    )


SHADOWED = [
    "SELECT (SELECT UPPER(c.email) FROM shop.orders c LIMIT 1) FROM mask_customers c",
    "SELECT (SELECT UPPER(c.email) FROM (SELECT 1 AS x) c) FROM mask_customers c",
    "WITH c AS (SELECT 1 AS x) SELECT (SELECT UPPER(c.email) FROM c) FROM mask_customers c",
    "SELECT (SELECT UPPER(shop.c.email) FROM shop.orders c LIMIT 1) FROM mask_customers c",
    "SELECT id FROM mask_customers c WHERE EXISTS "
    "(SELECT 1 FROM shop.orders c WHERE c.card_number LIKE '4%')",
]


@pytest.mark.parametrize("sql", SHADOWED, ids=["table", "derived", "cte", "schema", "where"])
def test_an_inner_alias_does_not_hide_the_outer_tables_column(
    gw: GatewayProcess, mariadb: MariaDB, sql: str
) -> None:
    """The server reads c.email of the inner c when it has such a column, else the outer
    c's: an alias of the same name inside a subquery does not make the column unmasked."""
    mariadb.admin_sql("USE shop", sql)  # no "unknown column": the server reads the outer c's
    with pytest.raises(pymysql.err.OperationalError) as caught:
        query(gw, sql)
    code, message = caught.value.args
    assert code == 1227 and "by rule 'masking'" in message, message
    assert "shop.mask_customers." in message, message


ALIASED = [
    "SELECT email AS x, (SELECT UPPER(x)) FROM mask_customers",
    "SELECT token AS x, (SELECT x FROM shop.orders LIMIT 1) FROM mask_customers",
    "SELECT id, email AS x, (SELECT COUNT(*) FROM shop.orders WHERE x LIKE 'a%') "
    "FROM mask_customers",
]


@pytest.mark.parametrize("sql", ALIASED, ids=["function", "plain", "condition"])
def test_a_subquery_may_not_read_a_select_list_alias_of_a_masked_column(
    gw: GatewayProcess, mariadb: MariaDB, sql: str
) -> None:
    """The server lets a subquery in the select list name an item before it by its alias;
    what the subquery returns of it has no origin, so the use is refused."""
    assert mariadb.admin_sql("USE shop", sql)  # the server reads the alias there
    with pytest.raises(pymysql.err.OperationalError) as caught:
        query(gw, sql)
    code, message = caught.value.args
    assert code == 1227 and "by rule 'masking'" in message, message
    assert "by its select-list alias x" in message, message


@pytest.mark.parametrize("pipelined", [False, True], ids=["failed-text", "pipelined"])
def test_a_schema_the_gateway_is_not_sure_of_still_masks(
    gw: GatewayProcess, pipelined: bool
) -> None:
    """Logged in to another schema, the agent moves the server to shop in a way the
    gateway cannot be sure of (a text that fails after its USE; a USE whose answer has
    not come yet): mask_customers may then be shop's, so it is masked."""
    probe = b"SELECT UPPER(card_number) FROM mask_customers"
    conn = gw.connect(database="mysql", client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        if pipelined:
            conn._write_bytes(frame(0, b"\x03USE shop") + frame(0, b"\x03" + probe))
            conn._next_seq_id = 1
            assert conn._read_packet().is_ok_packet()
            conn._next_seq_id = 1
            with pytest.raises(pymysql.err.OperationalError) as caught:
                conn._read_packet().raise_for_error()
        else:
            with pytest.raises(pymysql.err.MySQLError), conn.cursor() as cur:
                cur.execute("USE shop; SELECT * FROM nosuchtable")
            with pytest.raises(pymysql.err.OperationalError) as caught, conn.cursor() as cur:
                cur.execute(probe)
    finally:
        conn.close()
    code, message = caught.value.args
    assert code == 1227 and "by rule 'masking'" in message, message


def refused(gw: GatewayProcess, sql: str) -> str:
    """The message of the gateway's refusal of sql, by the masking rule."""
    with pytest.raises(pymysql.err.OperationalError) as caught:
        query(gw, sql)
    code, message = caught.value.args
    assert code == 1227 and "by rule 'masking'" in message, message
    assert CARD not in message and "5555555555554444" not in message
    return str(message)


def test_the_key_values_other_sessions_lock_are_refused(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """Session A locks the rows through the card index, B waits for them: InnoDB's lock
    tables show the key values of the locked records ('4111111111111111', 1), the card
    numbers in the clear."""
    a = mariadb.connect(database="shop")
    b = mariadb.connect(database="shop")
    lock = (  # from the first card (a NULL card sorts first)
        "SELECT id FROM mask_customers FORCE INDEX (card_number) WHERE card_number > '0' FOR UPDATE"
    )
    waiter = threading.Thread(target=lambda: b.cursor().execute(lock))
    try:
        with a.cursor() as cur, b.cursor() as other:
            other.execute("SET innodb_lock_wait_timeout = 20")
            other.execute("BEGIN")
            cur.execute("BEGIN")
            cur.execute(lock)
            waiter.start()
            probe = "SELECT lock_data FROM information_schema.INNODB_LOCKS"
            deadline = time.monotonic() + 10
            while not any(CARD in str(r) for r in mariadb.admin_sql(probe)):
                assert time.monotonic() < deadline, mariadb.admin_sql(probe)
                time.sleep(0.05)
            assert "lock tables" in refused(gw, probe)
            assert "lock tables" in refused(
                gw,
                "SELECT l.lock_data FROM information_schema.INNODB_LOCK_WAITS w JOIN "
                "information_schema.INNODB_LOCKS l ON l.lock_id = w.blocking_lock_id",
            )
    finally:
        a.rollback()
        waiter.join(timeout=30)
        b.rollback()
        a.close()
        b.close()


def test_the_logs_of_statement_texts_are_refused(gw: GatewayProcess, mariadb: MariaDB) -> None:
    """With log_output = TABLE the server writes every session's statements, literals
    included, to mysql.general_log (and slow ones to mysql.slow_log); the binary log
    holds the statements that changed data (SHOW BINLOG EVENTS)."""
    mariadb.admin_sql("SET GLOBAL log_output = 'TABLE'", "SET GLOBAL general_log = ON")
    try:
        mariadb.admin_sql(f"SELECT id FROM shop.mask_customers WHERE card_number = '{CARD}'")
        logged = "SELECT COUNT(*) FROM mysql.general_log WHERE argument LIKE '%4111111111111111%'"
        assert mariadb.admin_sql(logged)[0][0] >= 1  # the application's literal is there
        for sql in (
            "SELECT argument FROM mysql.general_log",
            "SELECT sql_text FROM mysql.slow_log",
            "SHOW BINLOG EVENTS",
        ):
            with pytest.raises(pymysql.err.OperationalError) as caught:
                query(gw, sql)
            code, message = caught.value.args
            assert code == 1227 and "by rule 'masking'" in message, message
            assert "general or slow query log or the binary log" in message, message
    finally:
        mariadb.admin_sql(
            "SET GLOBAL general_log = OFF",
            "SET GLOBAL log_output = 'FILE'",
            "TRUNCATE TABLE mysql.general_log",
        )


def test_an_applications_own_log_table_is_not_the_servers(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """``slow_log`` named alone in shop is shop.slow_log, the application's own table:
    it was refused as mysql.slow_log, the server's log of other sessions' statements.
    Named with its schema, or after USE mysql, the server's log is still refused."""
    mariadb.admin_sql(
        "CREATE TABLE shop.slow_log (id INT PRIMARY KEY, took_ms INT)",
        "INSERT INTO shop.slow_log VALUES (1, 1200)",
    )
    try:
        assert query(gw, "SELECT took_ms FROM slow_log") == [(1200,)]
        for sql in ("SELECT * FROM mysql.slow_log", "USE mysql; SELECT * FROM slow_log"):
            with pytest.raises(pymysql.err.OperationalError) as caught:
                query(gw, sql)
            code, message = caught.value.args
            assert code == 1227 and "general or slow query log" in message, message
    finally:
        mariadb.admin_sql("DROP TABLE IF EXISTS shop.slow_log")


def test_a_schema_of_statement_texts_is_not_made_current(gw: GatewayProcess) -> None:
    """Bare names after USE performance_schema read other sessions' statements (their
    literals: masked values) past the refusal of performance_schema.events_..."""
    direct = "SELECT sql_text FROM performance_schema.events_statements_history"
    assert "performance_schema" in refused(gw, direct)
    assert "current schema" in refused(gw, "USE performance_schema")
    with pytest.raises(pymysql.err.OperationalError) as login:
        gw.connect(database="performance_schema")
    assert login.value.args[0] == 1044 and "current schema" in login.value.args[1]


def test_the_plan_of_another_sessions_statement_is_refused(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """EXPLAIN FORMAT=JSON FOR CONNECTION shows the running statement's conditions with
    their literals ("attached_condition": "... like '5555555555554444%'")."""
    other = mariadb.connect(database="shop")

    def run() -> None:
        try:
            other.cursor().execute(
                "SELECT id FROM mask_customers WHERE card_number LIKE '5555555555554444%' "
                "AND SLEEP(60) = 0"
            )
        except pymysql.err.MySQLError:
            pass  # ended by the KILL QUERY below

    running = threading.Thread(target=run)
    try:
        running.start()
        plan = f"EXPLAIN FORMAT=JSON FOR CONNECTION {other.thread_id()}"
        deadline = time.monotonic() + 30
        while True:
            try:
                shown = mariadb.admin_sql(plan)
                break
            except pymysql.err.MySQLError:  # not running yet
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert "5555555555554444" in str(shown)
        for sql in (plan, f"EXPLAIN FOR CONNECTION {other.thread_id()}"):
            assert "FOR CONNECTION" in refused(gw, sql)
    finally:
        mariadb.admin_sql(f"KILL QUERY {other.thread_id()}")
        running.join(timeout=30)
        other.close()


def test_exempt_groups_may_use_the_column_freely(gw: GatewayProcess) -> None:
    rows = query(gw, "SELECT UPPER(card_number) FROM mask_customers WHERE id = 1", user="auditor")
    assert rows == [(CARD,)]


def test_a_rewrite_rule_masks_by_construction(gw: GatewayProcess) -> None:
    rows = query(gw, "SELECT CONCAT('tel: ', phone) AS t FROM mask_customers WHERE id = 1")
    assert rows == [("tel: **********4567",)]
    assert query(gw, "SELECT id FROM mask_customers WHERE phone = '+49 30 1234567'") == []


def test_the_executes_of_a_rewritten_prepare_are_recorded_as_the_client_sent_it(
    gw: GatewayProcess,
) -> None:
    """A prepare rewritten to mask by construction was recorded with the client's text
    and `rewritten`; its executes and its close were recorded as if the client had sent
    the rewritten text."""
    sql = "SELECT CONCAT('tel: ', phone) AS t FROM mask_customers WHERE id = ? /* rw */"
    conn = gw.connector()
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(sql, (1,))
        assert [tuple(r) for r in cur.fetchall()] == [("tel: **********4567",)]
        cur.close()
    finally:
        conn.close()
    records = [
        r
        for r in ledger_records(gw.ledger, "--kind", "statement")
        if r["sql"] == sql or "/* rw */" in r.get("rewritten", "")
    ]
    commands = [r["command"] for r in records]  # (mysql-connector resets before executing)
    assert commands == ["COM_STMT_PREPARE", "COM_STMT_RESET", "COM_STMT_EXECUTE", "COM_STMT_CLOSE"]
    assert all(r["sql"] == sql for r in records)
    (rewritten,) = {r["rewritten"] for r in records}
    assert "CHAR_LENGTH(phone)" in rewritten and rewritten != sql
    assert records[2]["params"] == ["1"]


def test_joins_keep_the_origin(gw: GatewayProcess, mariadb: MariaDB) -> None:
    mariadb.admin_sql(
        "CREATE TABLE IF NOT EXISTS shop.mask_orders (id INT PRIMARY KEY, customer INT)",
        "REPLACE INTO shop.mask_orders VALUES (10, 1), (11, 2)",
    )
    rows = query(
        gw,
        "SELECT o.id, c.card_number, c.name FROM mask_orders o "
        "JOIN mask_customers c ON c.id = o.customer ORDER BY o.id",
    )
    assert rows == [(10, "************1111", "Ann"), (11, "************4444", "Bob")]


def test_prepared_statements_are_refused_at_prepare(gw: GatewayProcess) -> None:
    conn = gw.connector()
    try:
        cur = conn.cursor(prepared=True)
        with pytest.raises(mysql.connector.Error) as caught:
            cur.execute("SELECT LOWER(email) FROM mask_customers WHERE id = ?", (1,))
    finally:
        conn.close()
    assert caught.value.errno == 1227 and "by rule 'masking'" in str(caught.value.msg)


def test_the_mariadb_cli_is_refused_with_the_reason(gw: GatewayProcess) -> None:
    with pytest.raises(ClientError) as caught:
        run_mariadb(
            "SELECT GROUP_CONCAT(card_number) FROM mask_customers",
            host=gw.host,
            port=gw.port,
            user="agent",
            password="agent-secret-1",
            database="shop",
        )
    assert "ERROR 1227" in str(caught.value) and "GROUP_CONCAT" in str(caught.value)
    assert CARD not in str(caught.value)


# The server sends the names of a result's columns in character_set_results: in UTF-16
# or UTF-32 no rule would match them.
HIDDEN_NAMES = [
    "SET character_set_results = utf16",
    "SET SESSION character_set_results = 'utf32'",
    "SET @@character_set_results = ucs2",
    "SET character_set_results = utf16le",
    "SET STATEMENT character_set_results = utf16 FOR "
    "SELECT card_number FROM mask_customers WHERE id = 1",
]


@pytest.mark.parametrize("sql", HIDDEN_NAMES)
def test_a_results_character_set_that_hides_names_is_refused(gw: GatewayProcess, sql: str) -> None:
    conn = gw.connect()
    try:
        with conn.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as caught:
                cur.execute(sql)
            code, message = caught.value.args
            assert code == 1227 and "by rule 'charset'" in message, message
            cur.execute("SELECT card_number FROM mask_customers WHERE id = 1")
            assert cur.fetchall() == (("************1111",),)
    finally:
        conn.close()
    conn = gw.connector()
    try:
        with pytest.raises(mysql.connector.Error) as refused:
            conn.cursor().execute(sql)
        assert refused.value.errno == 1227
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT card_number FROM mask_customers WHERE id = ?", (2,))
        assert [tuple(r) for r in cur.fetchall()] == [("************4444",)]
    finally:
        conn.close()


def test_names_in_the_client_character_set_still_match(gw: GatewayProcess) -> None:
    """A latin1 client gets the names in latin1 (Windows-1252): `straße` still matches
    its rule; where the results character set cannot hold the name (cp1251 sends
    `stra?e`) the column is masked whole. The client may not write the name itself in
    latin1 (the gateway reads names as UTF-8): CONCAT(`straße`) gave the clear value."""
    select = "SELECT * FROM mask_kunden"
    conn = gw.connect(charset="latin1")
    try:
        with conn.cursor() as cur:
            cur.execute(select)
            assert cur.fetchall() == ((1, "********g 42"),)
            for sql in (
                "SELECT CONCAT(`straße`) FROM mask_kunden",
                "SELECT `straße` FROM mask_kunden",
            ):
                with pytest.raises(pymysql.err.OperationalError) as caught:
                    cur.execute(sql)
                code, message = caught.value.args
                assert code == 1227 and "by rule 'not-understood'" in message, message
                assert "SET NAMES utf8mb4" in message
            # a string is a value: its latin1 bytes reach the server as they are
            cur.execute(select + " WHERE 'Straße' LIKE 'Stra_e'")
            assert cur.fetchall() == ((1, "********g 42"),)
            cur.execute("SET character_set_results = cp1251")
            cur.execute(select)
            assert cur.fetchall() == ((1, "****"),)
            cur.execute("SET character_set_results = NULL")  # names as stored: UTF-8
            cur.execute(select)
            assert cur.fetchall() == ((1, "********g 42"),)
    finally:
        conn.close()
    conn = gw.connector(charset="latin1")
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(select + " WHERE id = ?", (1,))
        assert [tuple(r) for r in cur.fetchall()] == [(1, "********g 42")]
    finally:
        conn.close()


def test_explain_extended_does_not_show_masked_values_in_its_note(gw: GatewayProcess) -> None:
    """EXPLAIN EXTENDED leaves a note (1003) with the query as the optimizer rewrote it:
    a constant table's row is written in, masked columns too. Its text is not shown; the
    code keeps its type."""
    conn = gw.connect()
    try:
        with conn.cursor() as cur:
            for explain in ("EXPLAIN EXTENDED", "DESCRIBE EXTENDED"):
                cur.execute(
                    f"{explain} SELECT id, card_number, email, ssn, token, phone "
                    "FROM mask_customers WHERE id = 1"
                )
                cur.execute("SHOW WARNINGS")
                rows = cur.fetchall()
                assert [r[:2] for r in rows] == [("Note", 1003)], rows
                message = rows[0][2]
                assert "not shown" in message
                for value in (CARD, "ann@example.com", "123456789", "tok-a", "1234567"):
                    assert value not in message
    finally:
        conn.close()
    conn = gw.connector()
    try:
        explain = conn.cursor()
        explain.execute("EXPLAIN EXTENDED SELECT card_number FROM mask_customers WHERE id = 1")
        explain.fetchall()
        cur = conn.cursor(prepared=True)  # the binary protocol
        cur.execute("SHOW WARNINGS")
        rows = [tuple(r) for r in cur.fetchall()]
        assert [r[:2] for r in rows] == [("Note", 1003)] and CARD not in str(rows), rows
    finally:
        conn.close()


def test_a_json_plan_does_not_show_a_constant_rows_masked_values(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """A view that only joins on a masked column shows none of it, so no rule masks its
    columns; but the plan of a read of one row writes that row's values into its
    conditions (``"const_condition": "'ann@example.com' is not null"``), in EXPLAIN,
    DESCRIBE and ANALYZE FORMAT=JSON alike. Their literals are not shown."""
    mariadb.admin_sql(
        "CREATE OR REPLACE TABLE shop.mask_orders (id INT PRIMARY KEY, email VARCHAR(60), "
        "total INT, KEY (email))",
        "INSERT INTO shop.mask_orders VALUES (10, 'ann@example.com', 5), (11, 'x@y.z', 7)",
        "CREATE OR REPLACE VIEW shop.mask_joined AS SELECT c.id, c.name, o.total "
        "FROM shop.mask_customers c JOIN shop.mask_orders o ON o.email = c.email",
    )
    try:
        conn = gw.connect()
        try:
            with conn.cursor() as cur:
                for explain in ("EXPLAIN", "DESCRIBE", "ANALYZE"):
                    cur.execute(f"{explain} FORMAT=JSON SELECT * FROM mask_joined WHERE id = 1")
                    plan = cur.fetchall()[0][0]
                    assert "ann@example.com" not in plan and "'****' is not null" in plan, plan
                    assert json.loads(plan)["query_block"]["nested_loop"][0]["table"]["key"]
                cur.execute("SELECT * FROM mask_joined ORDER BY id")
                assert cur.fetchall() == ((1, "Ann", 5),)  # the view itself reads as before
        finally:
            conn.close()
    finally:
        mariadb.admin_sql("DROP VIEW shop.mask_joined", "DROP TABLE shop.mask_orders")


def test_the_live_checksum_of_a_table_is_not_shown(gw: GatewayProcess, mariadb: MariaDB) -> None:
    """An Aria (or MyISAM) table made with CHECKSUM=1 keeps a live checksum, the sum of a
    CRC of each row, masked columns included: SHOW TABLE STATUS and
    information_schema.TABLES report it, and a DELETE changes it by the deleted row's
    CRC, from which a value of a few digits is found offline. It comes back NULL, and a
    condition on it is refused."""
    mariadb.admin_sql(
        "CREATE OR REPLACE TABLE shop.mask_aria (id INT PRIMARY KEY, ssn INT) "
        "ENGINE=Aria CHECKSUM=1 TRANSACTIONAL=0",
        "INSERT INTO shop.mask_aria VALUES (1, 123456789)",
    )
    try:
        ((real,),) = mariadb.admin_sql(
            "SELECT CHECKSUM FROM information_schema.TABLES WHERE TABLE_NAME = 'mask_aria'"
        )
        assert real
        rows = query(gw, "SHOW TABLE STATUS LIKE 'mask_aria'")
        assert len(rows) == 1 and real not in rows[0] and str(real) not in rows[0], rows
        sql = "SELECT TABLE_NAME, CHECKSUM FROM information_schema.TABLES WHERE TABLE_NAME = "
        assert query(gw, sql + "'mask_aria'") == [("mask_aria", None)]
        for probe in (
            f"SHOW TABLE STATUS WHERE Checksum = {real}",
            f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE CHECKSUM = {real}",
            "SELECT CHECKSUM + 0 FROM information_schema.TABLES",
        ):
            with pytest.raises(pymysql.err.OperationalError) as caught:
                query(gw, probe)
            code, message = caught.value.args
            assert code == 1227 and "information_schema.tables.checksum is masked" in message
    finally:
        mariadb.admin_sql("DROP TABLE shop.mask_aria")


REPLICATED = "INSERT INTO shop.mask_repl VALUES (1, '4111111111111111', 'tok-replicated')"


def test_a_replicas_last_error_does_not_show_a_replicated_row(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """On a replica whose SQL thread stopped, SHOW SLAVE STATUS quoted the failing
    statement in Last_Error and Last_SQL_Error, the card and token an application wrote
    on the primary included: an agent read them in clear. Refused for masked sessions;
    an exempt one still reads the status."""
    work = tmp_path_factory.mktemp("repl")
    primary = MariaDB(
        work / "primary",
        extra_args=("--log-bin=primary", "--server-id=11", "--binlog-format=STATEMENT"),
    )
    replica = MariaDB(work / "replica", extra_args=("--server-id=12",))
    primary.start()
    try:
        replica.start()
        try:
            _replicate_a_failing_insert(primary, replica)
            masking = """
[[masking]]
column = "shop.mask_repl.token"
strategy = "redact"
exempt_groups = ["pii-readers"]
"""
            accounts = [
                GatewayAccount("agent", "agent-secret-1"),
                GatewayAccount("auditor", "auditor-secret-4", ("agents", "pii-readers")),
            ]
            gw = GatewayProcess(
                work / "gw", replica, replica.pki, accounts=accounts, extra_toml=masking
            )
            gw.start()
            try:
                with pytest.raises(pymysql.err.OperationalError) as caught:
                    query(gw, "SHOW SLAVE STATUS")
                code, message = caught.value.args
                assert code == 1227 and "replication status" in message, message
                assert "tok-replicated" not in message
                conn = gw.connect("auditor")
                try:
                    with conn.cursor(pymysql.cursors.DictCursor) as cur:
                        cur.execute("SHOW SLAVE STATUS")
                        (status,) = cur.fetchall()
                finally:
                    conn.close()
                assert "tok-replicated" in status["Last_SQL_Error"]
            finally:
                assert gw.stop() == 0
        finally:
            replica.stop()
    finally:
        primary.stop()


def _replicate_a_failing_insert(primary: MariaDB, replica: MariaDB) -> None:
    """``replica`` replicates ``primary`` until REPLICATED, whose key the replica already
    holds, stops its SQL thread with the statement in Last_SQL_Error."""
    ddl = (
        "CREATE TABLE shop.mask_repl "
        "(id INT PRIMARY KEY, card_number VARCHAR(19), token VARCHAR(20))"
    )
    primary.admin_sql(ddl)
    replica.admin_sql(ddl, "INSERT INTO shop.mask_repl VALUES (1, NULL, NULL)")
    ((log, position, *_),) = primary.admin_sql("SHOW MASTER STATUS")
    replica.admin_sql(
        f"CHANGE MASTER TO MASTER_HOST = '{primary.host}', MASTER_PORT = {primary.port}, "
        f"MASTER_USER = '{primary.root_user}', MASTER_PASSWORD = '{primary.root_password}', "
        f"MASTER_USE_GTID = no, MASTER_LOG_FILE = '{log}', MASTER_LOG_POS = {position}",
        "START SLAVE",
    )
    primary.admin_sql(REPLICATED)
    deadline = time.monotonic() + 60
    while True:
        with replica.connect() as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SHOW SLAVE STATUS")
            (status,) = cur.fetchall()
        if status["Last_SQL_Errno"]:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert "tok-replicated" in status["Last_SQL_Error"], status
