"""What the definitions of tables show, through the real gateway: the password of a
FEDERATED table's CONNECTION string is not shown, in any session, masked or not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from lab.gateway import GatewayAccount, GatewayProcess
from lab.mariadb import MariaDB
from pymysql.constants import CLIENT

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
