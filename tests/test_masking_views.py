"""Views made by an administrator, read through a real gateway (docs/masking.md): views
whose columns come without a usable origin (UNION, window functions, aggregates,
subqueries, JSON_TABLE, a TEMPTABLE view with a column list), views in another schema
than their tables, layered rules, view columns computed from several masked columns, and
views read under an alias."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from lab.gateway import GatewayAccount, GatewayProcess
from lab.mariadb import MariaDB

pytestmark = pytest.mark.integration

CARDS = ("4111111111111111", "5500005555555559")
LAST4 = ("************1111", "************5559")
MASKING = """
[[masking]]
column = "shop.mview_cust.card"
strategy = "redact"
exempt_groups = ["pii-readers"]

[[masking]]
column = "shop.mview_cust.card"
strategy = "last4"

[[masking]]
column = "shop.mview_cust.secret"
strategy = "redact"

[[masking]]
column = "shop.mview_alias.card"
strategy = "redact"
exempt_groups = ["pii-readers"]
"""
VIEWS = {
    "shop.mview_union": "SELECT card AS u FROM shop.mview_cust UNION ALL "
    "SELECT name FROM shop.mview_cust",
    "shop.mview_win": "SELECT id, LAG(card) OVER (ORDER BY id) AS l FROM shop.mview_cust",
    "shop.mview_gc": "SELECT GROUP_CONCAT(secret ORDER BY id) AS g FROM shop.mview_cust",
    "shop.mview_sub": "SELECT (SELECT MAX(secret) FROM shop.mview_cust) AS m",
    "shop.mview_jt": "SELECT j.c FROM shop.mview_cust, JSON_TABLE(JSON_ARRAY(card), "
    "'$[*]' COLUMNS (c VARCHAR(40) PATH '$')) j",
    "mview_other.vx": "SELECT id, card FROM shop.mview_cust",
    "shop.mview_cl (a, b)": "SELECT id, card FROM shop.mview_cust",
    "shop.mview_rev": "SELECT id, REVERSE(card) AS r FROM shop.mview_cust",
    "shop.mview_cat": "SELECT id, CONCAT(card, '|', secret) AS cs FROM shop.mview_cust",
}


@pytest.fixture(scope="module")
def gw(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    mariadb.admin_sql(
        "CREATE DATABASE IF NOT EXISTS mview_other",
        "CREATE OR REPLACE TABLE shop.mview_cust (id INT PRIMARY KEY, name VARCHAR(20), "
        "card VARCHAR(19), secret TEXT)",
        f"INSERT INTO shop.mview_cust VALUES (1, 'Ann', '{CARDS[0]}', 'XYZZYSECRET'), "
        f"(2, 'Bob', '{CARDS[1]}', 'PLUGHMAGIC')",
        "CREATE OR REPLACE ALGORITHM=TEMPTABLE VIEW shop.mview_tmp (z) AS "
        "SELECT secret FROM shop.mview_cust",
        *(f"CREATE OR REPLACE VIEW {name} AS {select}" for name, select in VIEWS.items()),
        "CREATE OR REPLACE TABLE shop.mview_alias (id INT PRIMARY KEY, card VARCHAR(19))",
        f"INSERT INTO shop.mview_alias VALUES (1, '{CARDS[0]}'), (2, '{CARDS[1]}')",
        "CREATE OR REPLACE VIEW shop.mview_plain AS SELECT id, card AS pc FROM shop.mview_alias",
        # a base table with a column named like the masked view column, not masked
        "CREATE OR REPLACE TABLE shop.mview_pc (id INT PRIMARY KEY, pc VARCHAR(19))",
        "INSERT INTO shop.mview_pc VALUES (1, 'plain-1'), (2, 'plain-2')",
    )
    accounts = [
        GatewayAccount("agent", "agent-secret-1"),
        GatewayAccount("auditor", "auditor-secret-4", ("agents", "pii-readers")),
    ]
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gw"), mariadb, mariadb.pki, accounts=accounts, extra_toml=MASKING
    )
    gw.start()
    yield gw
    assert gw.stop() == 0
    log = gw.log()
    assert "Traceback" not in log and CARDS[0] not in log


def query(gw: GatewayProcess, sql: str, user: str = "agent") -> list[tuple[object, ...]]:
    conn = gw.connect(user=user, database="shop")
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("SELECT * FROM mview_union", [("****",)] * 4),
        ("SELECT u AS q FROM mview_union x", [("****",)] * 4),
        ("SELECT * FROM mview_win ORDER BY id", [(1, None), (2, "****")]),
        ("SELECT * FROM mview_gc", [("****",)]),
        ("SELECT * FROM mview_sub", [("****",)]),
        ("SELECT * FROM mview_tmp", [("****",)] * 2),
        ("SELECT * FROM mview_jt", [("****",)] * 2),
    ],
)
def test_view_columns_without_a_usable_origin_are_masked(
    gw: GatewayProcess, sql: str, rows: list[tuple[object, ...]]
) -> None:
    """MariaDB sends schema '' and org_table '' (or schema '*any*', or the base table and
    the view's column name): no rule matched and the values came in the clear."""
    assert sorted(query(gw, sql), key=repr) == sorted(rows, key=repr)


def test_a_union_view_gives_an_exempt_reader_its_layered_rule(gw: GatewayProcess) -> None:
    rows = query(gw, "SELECT * FROM mview_union", user="auditor")
    assert sorted(rows) == sorted([(LAST4[0],), (LAST4[1],), ("***",), ("***",)])


def test_a_view_in_another_schema_is_masked(gw: GatewayProcess) -> None:
    """MariaDB reports the base table's schema (shop) for mview_other.vx."""
    expected = [(1, "****"), (2, "****")]
    assert query(gw, "SELECT * FROM mview_other.vx ORDER BY id") == expected
    assert query(gw, "SELECT id, card FROM mview_other.vx ORDER BY id", user="auditor") == [
        (1, LAST4[0]),
        (2, LAST4[1]),
    ]


def test_layered_rules_hold_through_views(gw: GatewayProcess) -> None:
    """A pii-reader, exempt from the first (redact) rule, got the clear card through a
    view: the later last4 rule was not copied to the view column."""
    assert query(gw, "SELECT * FROM mview_cl ORDER BY a", user="auditor") == [
        (1, LAST4[0]),
        (2, LAST4[1]),
    ]
    assert query(gw, "SELECT * FROM mview_cl ORDER BY a") == [(1, "****"), (2, "****")]
    reversed_cards = ["*" * 12 + c[::-1][-4:] for c in CARDS]
    assert query(gw, "SELECT * FROM mview_rev ORDER BY id", user="auditor") == [
        (1, reversed_cards[0]),
        (2, reversed_cards[1]),
    ]


def test_a_view_column_of_several_masked_columns_takes_the_strictest(gw: GatewayProcess) -> None:
    for user in ("agent", "auditor"):
        assert query(gw, "SELECT * FROM mview_cat ORDER BY id", user=user) == [
            (1, "****"),
            (2, "****"),
        ]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT pc FROM mview_plain ORDER BY id",
        "SELECT pc FROM shop.mview_plain v ORDER BY id",
        "SELECT v.pc FROM mview_plain AS v ORDER BY v.id",
        "SELECT V.pc FROM mview_plain V ORDER BY V.id",
        "SELECT w.pc FROM mview_plain w JOIN mview_cust c ON c.id = w.id ORDER BY w.id",
        # in a join with a table, the view's base table with the view's column name
        "SELECT v.pc FROM mview_plain v JOIN mview_pc t ON t.id = v.id ORDER BY v.id",
        "SELECT mview_plain.pc FROM mview_plain JOIN mview_pc t ON t.id = mview_plain.id "
        "ORDER BY t.id",
    ],
)
def test_a_view_read_under_an_alias_is_masked(gw: GatewayProcess, sql: str) -> None:
    """MariaDB sends db 'shop', table and org_table the alias, org_name 'pc': like a
    column of a base table named like the alias, and the card came in the clear."""
    assert query(gw, sql) == [("****",), ("****",)]
    assert query(gw, sql, user="auditor") == [(CARDS[0],), (CARDS[1],)]


def test_a_base_table_with_a_column_named_like_a_masked_view_column_is_not_masked(
    gw: GatewayProcess,
) -> None:
    plain = [("plain-1",), ("plain-2",)]
    assert query(gw, "SELECT pc FROM mview_pc ORDER BY id") == plain
    assert query(gw, "SELECT v.pc FROM mview_pc v ORDER BY v.id") == plain
    # a statement that reads the masked view has the table's column of that name masked
    # too: MariaDB may report the view's column as exactly that table's
    joined = "SELECT v.pc, t.pc FROM mview_plain v JOIN mview_pc t ON t.id = v.id ORDER BY v.id"
    assert query(gw, joined) == [("****", "****"), ("****", "****")]
    assert query(gw, joined, user="auditor") == [(CARDS[0], "plain-1"), (CARDS[1], "plain-2")]


def _known_to_the_catalog(gw: GatewayProcess, table: str) -> None:
    """Wait until the catalog has read ``table``: until then its column named like the
    masked view column is masked whatever the statement."""
    deadline = time.monotonic() + 15
    while query(gw, f"SELECT pc FROM {table} ORDER BY id") != [("plain-1",), ("plain-2",)]:
        assert time.monotonic() < deadline, f"the catalog did not read {table}"
        time.sleep(0.2)


@pytest.mark.parametrize("made_by", ["administrator", "agent"])
def test_a_view_read_under_the_name_of_a_known_table_is_masked(
    gw: GatewayProcess, mariadb: MariaDB, made_by: str
) -> None:
    """SELECT pc FROM mview_plain AS t, with a table t (pc) the catalog knows (one the
    agent made itself through the gateway): MariaDB reports the view's column exactly as
    the table's (shop.t.pc), and the cards came in the clear."""
    table = "mview_pc"
    if made_by == "agent":
        table = "mview_agent_t"
        query(gw, f"CREATE TABLE {table} (id INT PRIMARY KEY, pc VARCHAR(19))")
        query(gw, f"INSERT INTO {table} VALUES (1, 'plain-1'), (2, 'plain-2')")
    try:
        _known_to_the_catalog(gw, table)
        sql = f"SELECT pc FROM mview_plain AS {table} ORDER BY id"
        assert query(gw, sql) == [("****",), ("****",)]
        assert query(gw, sql, user="auditor") == [(CARDS[0],), (CARDS[1],)]
        # prepared: by the SQL-level PREPARE, and by COM_STMT_PREPARE (binary rows)
        conn = gw.connect(user="agent", database="shop")
        try:
            with conn.cursor() as cur:
                cur.execute(f"PREPARE s FROM '{sql}'")
                cur.execute("EXECUTE s")
                assert [tuple(r) for r in cur.fetchall()] == [("****",), ("****",)]
        finally:
            conn.close()
        connector = gw.connector(database="shop")
        try:
            cur = connector.cursor(prepared=True)
            cur.execute(f"SELECT pc FROM mview_plain AS {table} WHERE id >= ? ORDER BY id", (1,))
            assert [tuple(r) for r in cur.fetchall()] == [("****",), ("****",)]
            cur.close()
        finally:
            connector.close()
    finally:
        if made_by == "agent":
            mariadb.admin_sql(f"DROP TABLE shop.{table}")
