"""Statements the parser could not read as they are, read as the server reads them
(a keyword after a name and '.', a bare VALUES, a cast to INET6, a partitioned CREATE
TABLE, INET6/COMPRESSED columns, SHOW ... WHERE Charset): what they read and write is
still found, and what stays unreadable is still refused. The corpus
(tests/policy/ordinary_sql.py) checks that the ordinary forms are allowed and run."""

from __future__ import annotations

import pytest

from appliance.policy.classify import Classification, classify, masked_uses
from appliance.policy.lexer import LexMode

DEFAULT = LexMode()


def one(sql: str) -> Classification:
    found = classify(sql.encode(), DEFAULT)
    assert len(found) == 1, found
    return found[0]


def test_a_keyword_after_a_dot_is_a_name_in_every_clause() -> None:
    c = one("UPDATE shop.kw SET kw.from = 1 WHERE kw.select = 2")
    assert c.problem is None
    assert c.writes == {"shop.kw"} and c.has_where and not c.where_always_true


def test_a_keyword_after_a_dot_does_not_hide_an_always_true_where() -> None:
    c = one("DELETE FROM kw WHERE kw.select = kw.select")
    assert c.problem is None and c.where_always_true


def test_a_keyword_after_a_dot_keeps_the_subquery_tables() -> None:
    c = one("SELECT t.select FROM kw t WHERE t.from IN (SELECT s.key FROM secret s)")
    assert c.problem is None and c.reads == {"kw", "secret"}


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT t.select() FROM kw t",  # a stored function's call
        "SELECT t. select FROM kw t",  # a keyword to the server too
    ],
)
def test_what_the_server_does_not_read_as_a_name_stays_refused(sql: str) -> None:
    assert one(sql).problem is not None


def test_a_keyword_after_a_dot_on_a_masked_table_is_not_understood() -> None:
    """The masking analysis does not read again: a masked table's use stays refused."""

    def masked(schema: str, table: str, column: str) -> bool:
        return table == "kw" and column in ("select", "*")

    found = masked_uses("SELECT UPPER(t.select) FROM kw t", "shop", masked, DEFAULT)
    assert found


def test_a_bare_values_reads_its_subqueries() -> None:
    c = one("VALUES ((SELECT COUNT(*) FROM secret)), (2) ORDER BY 1 LIMIT 1 -- last")
    assert c.problem is None and c.kind == "SELECT" and c.reads == {"secret"}


def test_a_bare_values_into_a_variable_keeps_its_flag() -> None:
    assert "into_variable" in one("VALUES (1) INTO @a").flags


def test_a_cast_to_inet6_is_read() -> None:
    c = one("SELECT CAST(addr AS INET6) FROM hosts WHERE id = 1")
    assert c.problem is None and c.reads == {"hosts"}


def test_a_partitioned_create_table_as_select_reads_its_select() -> None:
    c = one("CREATE TABLE p PARTITION BY HASH (id) PARTITIONS 2 AS SELECT id FROM secret")
    assert c.problem is None and c.writes == {"p"} and c.reads == {"secret"}


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE p (id INT) PARTITION BY HASH ((SELECT id FROM secret))",
        "CREATE TABLE p (id INT) PARTITION BY HASH (id) PARTITIONS 2 (SELECT id FROM secret)",
        (
            "CREATE TABLE p (id INT) PARTITION BY RANGE (id) (PARTITION a VALUES LESS THAN "
            "((SELECT MAX(id) FROM secret)))"
        ),
    ],
)
def test_a_partitioning_with_a_select_is_not_blanked(sql: str) -> None:
    """The server refuses a subquery there; the gateway refuses it or reads its table."""
    c = one(sql)
    assert c.problem is not None or "secret" in c.reads


def test_a_column_named_like_a_new_type_is_kept() -> None:
    c = one("CREATE TABLE h (inet6 INET6, compressed INT, v TEXT COMPRESSED) ROW_FORMAT=COMPRESSED")
    assert c.problem is None and c.writes == {"h"}


@pytest.mark.parametrize(
    "sql",
    [
        "SHOW COLLATION WHERE Charset = 'utf8mb4'",
        "SHOW CHARACTER SET WHERE Charset LIKE 'utf8%'",
        "SHOW COLLATION WHERE Collation = CAST('x' AS CHAR CHARSET utf8mb4)",
        "SHOW COLLATION WHERE CHARSET(Collation) = 'utf8mb4'",
    ],
)
def test_show_where_charset_is_read(sql: str) -> None:
    assert one(sql).problem is None


def test_show_where_charset_reads_its_subquery() -> None:
    c = one("SHOW CHARSET WHERE Charset = (SELECT name FROM secret LIMIT 1)")
    assert c.problem is None and c.reads == {"secret"}
