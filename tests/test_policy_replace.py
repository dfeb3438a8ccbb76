"""MariaDB's CREATE OR REPLACE through a real gateway: it drops the existing object first,
so the configured rules on DROP apply to it. Each case sends what the rules refuse, then
looks at the database directly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB

pytestmark = pytest.mark.integration

RULES = """
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


@pytest.fixture(scope="module")
def gw(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gw"), mariadb, mariadb.pki, extra_toml=RULES
    ).start()
    yield gw
    assert gw.stop() == 0
    assert "Traceback" not in gw.log()


@pytest.fixture
def orders(mariadb: MariaDB) -> Iterator[str]:
    mariadb.admin_sql(
        "CREATE OR REPLACE TABLE shop.replaced_orders (id INT PRIMARY KEY, v INT)",
        "INSERT INTO shop.replaced_orders VALUES (1, 1), (2, 2), (3, 3)",
    )
    yield "shop.replaced_orders"
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.replaced_orders",
    )


def rows(mariadb: MariaDB) -> list[tuple[Any, ...]]:
    return mariadb.admin_sql("SELECT id, v FROM shop.replaced_orders ORDER BY id")


def refused(conn: Any, sql: str) -> str:
    with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
        cur.execute(sql)
    code, message = info.value.args
    assert code == 1227, message
    return str(message)


def test_create_or_replace_table_is_a_drop_for_the_rules(
    gw: GatewayProcess, mariadb: MariaDB, orders: str
) -> None:
    """A rule blocking DROP on shop.replaced_orders did not see CREATE OR REPLACE TABLE
    shop.replaced_orders, and the allow for CREATE TABLE ran it: MariaDB dropped the table
    and its rows, and made an empty one."""
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
    mariadb.admin_sql("DROP TABLE shop.replace_new")
    assert rows(mariadb) == [(1, 1), (2, 2), (3, 3)]
