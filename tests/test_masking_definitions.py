"""What the definitions of tables show, through the real gateway: a masked column's
DEFAULT is masked as its values are (SHOW CREATE TABLE, information_schema.COLUMNS,
SHOW COLUMNS / DESCRIBE, COM_FIELD_LIST), and the password of a FEDERATED table's
CONNECTION string is not shown, in any session, masked or not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from lab.gateway import GatewayAccount, GatewayProcess
from lab.mariadb import MariaDB
from pymysql.constants import CLIENT, COMMAND

pytestmark = pytest.mark.integration

MASKING = """
[[masking]]
column = "shop.def_secret.phone"
strategy = "last4"
exempt_groups = ["pii-readers"]

[[masking]]
column = "shop.def_secret.pin"
strategy = "redact"
exempt_groups = ["pii-readers"]

[[masking]]
column = "shop.def_secret.token"
strategy = "null"
exempt_groups = ["pii-readers"]
"""

SECRET_TABLE = (
    "CREATE OR REPLACE TABLE shop.def_secret (id INT PRIMARY KEY, "
    "phone VARCHAR(20) DEFAULT '+49 30 1234567', pin INT DEFAULT 4711, "
    "token VARCHAR(20) DEFAULT 'tok-default', note VARCHAR(10) DEFAULT 'plain', "
    "stamp VARCHAR(40) DEFAULT (CONCAT('a', 'b')))"
)


@pytest.fixture(scope="module")
def gw(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    engines = mariadb.admin_sql(
        "SELECT ENGINE FROM information_schema.ENGINES WHERE ENGINE = 'FEDERATED'"
    )
    if not engines:
        mariadb.admin_sql("INSTALL SONAME 'ha_federatedx'")
    mariadb.admin_sql(
        SECRET_TABLE,
        "CREATE OR REPLACE TABLE shop.def_origin (id INT)",
        "CREATE OR REPLACE USER def_remote@'%' IDENTIFIED BY 'Rem0te-Pw'",
        "GRANT SELECT ON shop.def_origin TO def_remote@'%'",
        "CREATE OR REPLACE TABLE shop.def_remote (id INT) ENGINE=FEDERATED "
        f"CONNECTION='mysql://def_remote:Rem0te-Pw@{mariadb.host}:{mariadb.port}/shop/def_origin'",
    )
    accounts = [
        GatewayAccount("agent", "agent-secret-1"),
        GatewayAccount("auditor", "auditor-secret-4", ("agents", "pii-readers")),
    ]
    work = tmp_path_factory.mktemp("gw")
    gw = GatewayProcess(work, mariadb, mariadb.pki, accounts=accounts, extra_toml=MASKING)
    gw.start()
    yield gw
    assert gw.stop() == 0
    log = gw.log()
    assert "Traceback" not in log and "Rem0te-Pw" not in log
    mariadb.admin_sql("DROP TABLE shop.def_remote", "DROP USER def_remote@'%'")


def query(gw: GatewayProcess, sql: str, user: str = "agent") -> list[tuple[Any, ...]]:
    conn = gw.connect(user=user, database="shop")
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


MASKED_DEFINITION = (
    "CREATE TABLE `def_secret` (\n"
    "  `id` int(11) NOT NULL,\n"
    "  `phone` varchar(20) DEFAULT '**********4567',\n"
    "  `pin` int(11) DEFAULT '****',\n"
    "  `token` varchar(20) DEFAULT NULL,\n"
    "  `note` varchar(10) DEFAULT 'plain',\n"
    "  `stamp` varchar(40) DEFAULT concat('a','b'),\n"
    "  PRIMARY KEY (`id`)\n"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"
)


def test_show_create_table_masks_the_default_of_a_masked_column(gw: GatewayProcess) -> None:
    assert query(gw, "SHOW CREATE TABLE def_secret") == [("def_secret", MASKED_DEFINITION)]
    ((_, real),) = query(gw, "SHOW CREATE TABLE def_secret", user="auditor")
    assert "DEFAULT '+49 30 1234567'" in real and "DEFAULT 4711" in real  # exempt


def test_information_schema_columns_masks_the_default_of_a_masked_column(
    gw: GatewayProcess,
) -> None:
    where = "FROM information_schema.COLUMNS WHERE TABLE_NAME = 'def_secret' ORDER BY 1"
    masked = [
        ("id", None),
        ("note", "'plain'"),
        ("phone", "'**********4567'"),
        ("pin", "'****'"),
        ("stamp", "concat('a','b')"),
        ("token", "NULL"),
    ]
    assert query(gw, f"SELECT COLUMN_NAME, COLUMN_DEFAULT {where}") == masked
    schema = [
        ("shop", "def_secret", name, default)
        for name, default in masked  # with the schema and table before the default
    ]
    sql = f"SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_DEFAULT {where}"
    assert query(gw, sql.replace("ORDER BY 1", "ORDER BY 3")) == schema
    # the name after the default says nothing of the row whose default it is yet
    sql = f"SELECT COLUMN_DEFAULT, COLUMN_NAME {where.replace('ORDER BY 1', 'ORDER BY 2')}"
    assert query(gw, sql) == [
        (None, "id"),
        ("'****'", "note"),
        ("'****'", "phone"),
        ("'****'", "pin"),
        ("'****'", "stamp"),
        ("'****'", "token"),
    ]
    real = query(gw, f"SELECT COLUMN_NAME, COLUMN_DEFAULT {where}", user="auditor")
    assert ("phone", "'+49 30 1234567'") in real and ("pin", "4711") in real


@pytest.mark.parametrize(
    "sql",
    ["SHOW COLUMNS FROM def_secret", "SHOW FULL COLUMNS FROM def_secret", "DESCRIBE def_secret"],
)
def test_show_columns_masks_the_default_of_a_masked_column(gw: GatewayProcess, sql: str) -> None:
    conn = gw.connect(database="shop", cursorclass=pymysql.cursors.DictCursor)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            defaults = {row["Field"]: row["Default"] for row in cur.fetchall()}
    finally:
        conn.close()
    assert defaults == {
        "id": None,
        "phone": "**********4567",
        "pin": "****",
        "token": None,
        "note": "plain",
        "stamp": "concat('a','b')",
    }


def field_list(gw: GatewayProcess, table: str, user: str = "agent") -> list[bytes]:
    """The column definitions a COM_FIELD_LIST answers with (each ends with the column's
    default value)."""
    conn = gw.connect(user=user, database="shop")
    try:
        conn._execute_command(COMMAND.COM_FIELD_LIST, table.encode() + b"\0")
        out = []
        while True:
            packet = conn._read_packet()
            if packet.is_eof_packet():
                return out
            out.append(packet.get_all_data())
    finally:
        conn.close()


def test_com_field_list_masks_the_default_of_a_masked_column(gw: GatewayProcess) -> None:
    defaults = [d[d.index(b"\x0c") :] for d in field_list(gw, "def_secret")]
    assert [d[13:] for d in defaults] == [
        b"\x010",  # the server sends a value for a column without a default
        b"\x0e**********4567",
        b"\x04****",
        b"\xfb",  # null: the default comes as NULL
        b"\x05plain",
        b"\x02ab",  # an expression's value
    ]
    real = b"".join(field_list(gw, "def_secret", user="auditor"))
    assert b"\x0e+49 30 1234567" in real and b"\x044711" in real


REMOTE = "mysql://def_remote:****@{host}:{port}/shop/def_origin"


@pytest.mark.parametrize("user", ["agent", "auditor"])
def test_show_create_table_shows_no_connection_password(
    gw: GatewayProcess, mariadb: MariaDB, user: str
) -> None:
    """A FEDERATED table's CONNECTION holds the remote server's password in the clear:
    SHOW CREATE TABLE shows it with the password starred, to masked sessions and to
    those no masking rule applies to (whose answers otherwise stream untouched), in the
    text and the binary protocol, and in a text of several statements."""
    connection = REMOTE.format(host=mariadb.host, port=mariadb.port)
    expected = (
        "CREATE TABLE `def_remote` (\n  `id` int(11) DEFAULT NULL\n) ENGINE=FEDERATED "
        f"DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci CONNECTION='{connection}'"
    )
    assert query(gw, "SHOW CREATE TABLE def_remote", user=user) == [("def_remote", expected)]
    conn = gw.connect(user=user, database="shop", client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1, 2; SHOW CREATE TABLE def_remote; SELECT 3")
            assert cur.fetchall() == ((1, 2),)
            assert cur.nextset()
            assert cur.fetchall() == (("def_remote", expected),)
            assert cur.nextset()
            assert cur.fetchall() == ((3,),)
    finally:
        conn.close()
    prepared = gw.connector(user=user)
    try:
        cur = prepared.cursor(prepared=True)
        cur.execute("SHOW CREATE TABLE def_remote")
        rows = [tuple(r) for r in cur.fetchall()]
        cur.close()
    finally:
        prepared.close()
    assert rows == [("def_remote", expected)]
    assert query(gw, "SELECT id FROM def_remote", user=user) == []  # the table still works


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_NAME = 'def_secret' AND COLUMN_DEFAULT LIKE '''+49%'",
        "SELECT LENGTH(COLUMN_DEFAULT) FROM information_schema.COLUMNS",
        "SHOW COLUMNS FROM def_secret WHERE `Default` LIKE '+49%'",
    ],
)
def test_a_condition_on_a_default_is_refused(gw: GatewayProcess, sql: str) -> None:
    """A default is masked where it is shown, so a test of it (one bit per statement)
    is refused like one on a masked column, for masked sessions."""
    with pytest.raises(pymysql.err.OperationalError) as caught:
        query(gw, sql)
    code, message = caught.value.args
    assert code == 1227, message
    assert "information_schema.columns.column_default is masked for agent" in message
    assert query(gw, sql, user="auditor") is not None  # exempt from every rule


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE def_copy LIKE def_secret",
        "CREATE TEMPORARY TABLE def_copy LIKE shop.def_secret",
        "CREATE TABLE def_copy (LIKE def_secret)",
    ],
)
def test_a_copy_of_a_masked_tables_definition_is_refused(gw: GatewayProcess, sql: str) -> None:
    """CREATE TABLE ... LIKE copies a masked column's default into a column no rule
    masks (its SHOW CREATE TABLE, a row inserted with the default): refused like a
    copy of its values; a table without masked columns may be copied."""
    with pytest.raises(pymysql.err.OperationalError) as caught:
        query(gw, sql)
    code, message = caught.value.args
    assert code == 1227, message
    assert message == (
        "sqlgate: blocked by rule 'masking': shop.def_secret.* is masked for agent: it may "
        "only be selected as a plain column, and here it is used copied by CREATE TABLE ... "
        "LIKE, defaults included. Select the column itself (its value comes back masked), "
        "or leave it out"
    )
    query(gw, "CREATE TEMPORARY TABLE def_copy LIKE def_origin")  # nothing masked there
