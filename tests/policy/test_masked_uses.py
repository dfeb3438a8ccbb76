"""Uses of masked columns that result-set masking cannot see (SPEC §7, layer one):
classify.masked_uses() finds every use of a masked column other than a plain projection
of the outermost SELECT, and classify.mask_rewrite() turns those uses into expressions
that yield the masked value, checked against a real MariaDB at the end.

The rules mask ``shop.customers.card_number`` (last4) and ``shop.customers.email``
(redact); ``name`` and ``id``, table ``orders`` and ``other.customers`` are not masked.
Each case lists every use it must report, as (column, where): an allowed statement
reports none, and is paired with its nearest refused variant."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest
from lab.mariadb import MariaDB

from appliance.policy.classify import MaskedUse, mask_rewrite, masked_uses
from appliance.policy.lexer import LexMode

DEFAULT = LexMode()

CARD = "shop.customers.card_number"
EMAIL = "shop.customers.email"
ALL = "shop.customers.*"

MASKED: dict[tuple[str, str, str], str] = {
    ("shop", "customers", "card_number"): "last4",
    ("shop", "customers", "email"): "redact",
}


def strategy_of(
    rules: dict[tuple[str, str, str], str],
) -> Callable[[str, str, str], str | None]:
    def strategy(schema: str, table: str, column: str) -> str | None:
        assert schema == schema.lower() and table == table.lower() and column == column.lower()
        if column == "*":  # any column of the table
            return next((s for (a, b, _), s in rules.items() if (a, b) == (schema, table)), None)
        return rules.get((schema, table, column))

    return strategy


STRATEGY = strategy_of(MASKED)


def is_masked(schema: str, table: str, column: str) -> bool:
    return STRATEGY(schema, table, column) is not None


def uses(sql: str, db: str | None = "shop", mode: LexMode = DEFAULT, **kw: Any) -> set[Any]:
    found = masked_uses(sql, db, is_masked, mode, **kw)
    assert all(isinstance(u, MaskedUse) for u in found)
    return {(u.column, u.where) for u in found}


def _id(sql: str) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= 80 else text[:77] + "..."


# -- uses -----------------------------------------------------------------------------------

U = list[tuple[str, set[tuple[str, str]]]]

FUNCTIONS: U = [
    ("SELECT UPPER(email) FROM customers", {(EMAIL, "inside UPPER()")}),
    ("SELECT CONCAT(name, card_number) FROM customers", {(CARD, "inside CONCAT()")}),
    (
        "SELECT CASE WHEN email LIKE '%@x' THEN 1 ELSE 0 END FROM customers",
        {(EMAIL, "inside CASE")},
    ),
    ("SELECT CAST(card_number AS UNSIGNED) FROM customers", {(CARD, "inside CAST()")}),
    ("SELECT email COLLATE utf8mb4_bin FROM customers", {(EMAIL, "inside COLLATE")}),
    ("SELECT card_number + 0 FROM customers", {(CARD, "inside the + operator")}),
    ("SELECT email = 'ada@example.com' FROM customers", {(EMAIL, "inside the = operator")}),
    ("SELECT (email) FROM customers", {(EMAIL, "inside parentheses")}),
    ("SELECT COUNT(email) FROM customers", {(EMAIL, "inside COUNT()")}),
    ("SELECT COUNT(DISTINCT card_number) FROM customers", {(CARD, "inside COUNT()")}),
    ("SELECT MAX(card_number) FROM customers", {(CARD, "inside MAX()")}),
    ("SELECT GROUP_CONCAT(email SEPARATOR ';') FROM customers", {(EMAIL, "inside GROUP_CONCAT()")}),
    (
        "SELECT GROUP_CONCAT(name ORDER BY card_number) FROM customers",
        {(CARD, "inside GROUP_CONCAT()")},
    ),
    ("SELECT JSON_OBJECT('e', email) FROM customers", {(EMAIL, "inside JSON_OBJECT()")}),
    ("SELECT LEFT(card_number, 6) FROM customers", {(CARD, "inside LEFT()")}),
    ("SELECT LOCATE('@', email) FROM customers", {(EMAIL, "inside LOCATE()")}),
    ("SELECT MD5(card_number) FROM customers", {(CARD, "inside MD5()")}),
    ("SELECT MY_UDF(TRIM(email)) FROM customers", {(EMAIL, "inside TRIM()")}),
    (
        "SELECT FIRST_VALUE(email) OVER (ORDER BY id) FROM customers",
        {(EMAIL, "inside FIRST_VALUE()")},
    ),
    (
        "SELECT ROW_NUMBER() OVER (ORDER BY card_number) FROM customers",
        {(CARD, "in a window ORDER BY")},
    ),
    (
        "SELECT SUM(id) OVER (PARTITION BY email) FROM customers",
        {(EMAIL, "in a window PARTITION BY")},
    ),
    (
        "SELECT RANK() OVER w FROM customers WINDOW w AS (ORDER BY email)",
        {(EMAIL, "in a window ORDER BY in WINDOW")},
    ),
    ("SELECT @v := email FROM customers", {(EMAIL, "assigned to @v")}),
]

CONDITIONS: U = [
    ("SELECT id FROM customers WHERE email = 'x'", {(EMAIL, "in WHERE")}),
    ("SELECT id FROM customers WHERE card_number LIKE '4%' AND id > 1", {(CARD, "in WHERE")}),
    ("SELECT id FROM customers WHERE UPPER(email) = 'X'", {(EMAIL, "inside UPPER() in WHERE")}),
    ("SELECT id FROM customers WHERE email IS NULL", {(EMAIL, "in WHERE")}),
    (
        "SELECT c.id FROM customers c JOIN orders o ON o.customer_id = c.card_number",
        {(CARD, "in ON")},
    ),
    ("SELECT o.id FROM orders o JOIN customers c USING (email)", {(EMAIL, "in USING")}),
    ("SELECT 1 FROM customers NATURAL JOIN orders", {(ALL, "in a NATURAL JOIN")}),
    ("SELECT name FROM customers GROUP BY email", {(EMAIL, "in GROUP BY")}),
    (
        "SELECT name FROM customers GROUP BY name HAVING MAX(card_number) > '5'",
        {(CARD, "inside MAX() in HAVING")},
    ),
    ("SELECT name FROM customers ORDER BY card_number", {(CARD, "in ORDER BY")}),
    ("SELECT email FROM customers ORDER BY 1", {(EMAIL, "in ORDER BY, by select-list position 1")}),
    (
        "SELECT card_number AS n FROM customers ORDER BY n DESC LIMIT 1",
        {(CARD, "in ORDER BY, by its select-list alias n")},
    ),
    (
        "SELECT email, COUNT(*) FROM customers GROUP BY 1",
        {(EMAIL, "in GROUP BY, by select-list position 1")},
    ),
    ("SELECT * FROM customers ORDER BY 4", {(ALL, "in ORDER BY, by select-list position 4")}),
    (
        "SELECT id FROM customers WHERE email IN (SELECT email FROM customers WHERE id = 2)",
        {(EMAIL, "in WHERE"), (EMAIL, "in a subquery in WHERE")},
    ),
    (  # correlated: c is the outer query's
        "SELECT o.id FROM orders o WHERE EXISTS "
        "(SELECT 1 FROM customers c WHERE c.id = o.customer_id AND c.email LIKE 'a%')",
        {(EMAIL, "in WHERE in a subquery in WHERE")},
    ),
    (  # unqualified in a subquery over orders: the outer customers' column
        "SELECT id FROM customers WHERE id IN "
        "(SELECT customer_id FROM orders WHERE card_number = '4')",
        {(CARD, "in WHERE in a subquery in WHERE")},
    ),
    (
        "SELECT (SELECT MAX(total) FROM orders o WHERE o.customer_id = c.id "
        "AND c.card_number <> '') FROM customers c",
        {(CARD, "in WHERE in a subquery")},
    ),
    (
        "SELECT (SELECT email FROM customers c WHERE c.id = o.customer_id) FROM orders o",
        {(EMAIL, "in a subquery")},
    ),
    (  # the inner c has no email column: the server reads the outer c's
        "SELECT (SELECT UPPER(c.email) FROM orders c LIMIT 1) FROM customers c",
        {(EMAIL, "inside UPPER() in a subquery")},
    ),
    (
        "SELECT id FROM customers c WHERE EXISTS "
        "(SELECT 1 FROM orders c WHERE c.card_number LIKE '4%')",
        {(CARD, "in WHERE in a subquery in WHERE")},
    ),
    (  # a subquery in the select list reads an item before it by its alias
        "SELECT email AS x, (SELECT UPPER(x)) FROM customers",
        {(EMAIL, "in a subquery, by its select-list alias x")},
    ),
    (
        "SELECT id, card_number AS x, (SELECT MAX(total) FROM orders WHERE total < x) "
        "FROM customers",
        {(CARD, "in a subquery, by its select-list alias x")},
    ),
    (
        "SELECT email AS x, (SELECT (SELECT CONCAT(x, ''))) FROM customers",
        {(EMAIL, "in a subquery, by its select-list alias x")},
    ),
    (  # a derived table or CTE of that name has no such column either
        "SELECT (SELECT UPPER(c.email) FROM (SELECT 1 AS x) c) FROM customers c",
        {(EMAIL, "inside UPPER() in a subquery")},
    ),
    (
        "WITH c AS (SELECT 1 AS x) SELECT (SELECT UPPER(c.email) FROM c) FROM customers c",
        {(EMAIL, "inside UPPER() in a subquery")},
    ),
    (
        "SELECT (SELECT UPPER(shop.c.email) FROM orders c LIMIT 1) FROM customers c",
        {(EMAIL, "inside UPPER() in a subquery")},
    ),
    (
        "SELECT 1 FROM orders WHERE customer_id = ANY (SELECT email FROM customers)",
        {(EMAIL, "in a subquery in WHERE")},
    ),
    (
        "SELECT 1 FROM orders WHERE EXISTS (SELECT email FROM customers)",
        {(EMAIL, "in a subquery in WHERE")},
    ),
    (
        "SELECT 1 FROM orders WHERE customer_id IN (SELECT * FROM customers)",
        {(ALL, "in a subquery in WHERE")},
    ),
]

QUERIES: U = [
    ("SELECT email FROM customers UNION SELECT name FROM customers", {(EMAIL, "in a UNION")}),
    (
        "SELECT name FROM customers UNION ALL SELECT card_number FROM customers",
        {(CARD, "in a UNION")},
    ),
    (
        "(SELECT id FROM customers) UNION (SELECT id FROM customers WHERE email = 'x')",
        {(EMAIL, "in WHERE in a UNION")},
    ),
    (
        "SELECT id FROM customers INTERSECT SELECT id FROM customers WHERE card_number = 'x'",
        {(CARD, "in WHERE in an INTERSECT")},
    ),
    ("SELECT email FROM customers EXCEPT SELECT 'x'", {(EMAIL, "in an EXCEPT")}),
    ("SELECT * FROM customers UNION SELECT * FROM customers", {(ALL, "in a UNION")}),
    ("SELECT d.email FROM (SELECT email FROM customers) d", {(EMAIL, "in a derived table")}),
    (
        "SELECT d.id FROM (SELECT id FROM customers WHERE card_number LIKE '5%') d",
        {(CARD, "in WHERE in a derived table")},
    ),
    (
        "SELECT * FROM (SELECT * FROM customers) AS d",
        {
            (ALL, "in a derived table"),
            (ALL, "through * over the derived table d in a SELECT that reads a derived table"),
        },
    ),
    (
        "SELECT * FROM (SELECT id, email FROM customers) d",
        {
            (EMAIL, "in a derived table"),
            (EMAIL, "through * over the derived table d in a SELECT that reads a derived table"),
        },
    ),
    (
        "SELECT o.* FROM customers c JOIN (SELECT id, card_number FROM customers) o ON o.id = c.id",
        {
            (CARD, "in a derived table"),
            (CARD, "through o.* over the derived table o in a SELECT that reads a derived table"),
        },
    ),
    (
        "WITH x AS (SELECT card_number FROM customers) SELECT * FROM x",
        {(CARD, "in a CTE"), (CARD, "through * over the CTE x in a SELECT that reads a CTE")},
    ),
    (
        "WITH x AS (SELECT id FROM customers WHERE email LIKE 'a%') SELECT id FROM x",
        {(EMAIL, "in WHERE in a CTE")},
    ),
    (
        "WITH RECURSIVE r (n, e) AS (SELECT 1, email FROM customers "
        "UNION ALL SELECT n + 1, e FROM r WHERE n < 3) SELECT n FROM r",
        {(EMAIL, "in a UNION in a CTE")},
    ),
    (  # a plain projection next to a derived table
        "SELECT c.email FROM customers c JOIN (SELECT customer_id FROM orders) o "
        "ON o.customer_id = c.id",
        {(EMAIL, "in a SELECT that reads a derived table")},
    ),
    (
        "SELECT c.* FROM customers c JOIN (SELECT customer_id FROM orders) o "
        "ON o.customer_id = c.id",
        {(ALL, "in a SELECT that reads a derived table")},
    ),
    (
        "SELECT * FROM customers c, JSON_TABLE(c.email, '$' COLUMNS (x INT PATH '$')) AS j",
        {
            (EMAIL, "inside JSON_TABLE() in FROM"),
            (ALL, "in a SELECT that reads a table function"),
            (EMAIL, "through * over the table function j in a SELECT that reads a table function"),
        },
    ),
]

COPIES: U = [
    ("SELECT email INTO @e FROM customers WHERE id = 1", {(EMAIL, "copied by SELECT ... INTO")}),
    (
        "SELECT card_number FROM customers INTO OUTFILE '/tmp/cards'",
        {(CARD, "copied by SELECT ... INTO OUTFILE")},
    ),
    (
        "INSERT INTO archive SELECT id, email FROM customers",
        {(EMAIL, "copied by INSERT ... SELECT")},
    ),
    ("INSERT INTO archive SELECT * FROM customers", {(ALL, "copied by INSERT ... SELECT")}),
    (
        "INSERT INTO archive SELECT id, name FROM customers WHERE email LIKE 'a%'",
        {(EMAIL, "in WHERE of INSERT ... SELECT")},
    ),
    (
        "REPLACE INTO archive (id, note) SELECT id, card_number FROM customers",
        {(CARD, "copied by REPLACE ... SELECT")},
    ),
    (
        "INSERT INTO archive (note) VALUES ((SELECT email FROM customers WHERE id = 1))",
        {(EMAIL, "in a subquery copied by INSERT")},
    ),
    (
        "INSERT INTO customers (id, name, email, card_number) VALUES (1, 'a', 'b', 'c') "
        "ON DUPLICATE KEY UPDATE name = email",
        {(EMAIL, "in ON DUPLICATE KEY UPDATE")},
    ),
    (
        "CREATE TABLE leak AS SELECT email FROM customers",
        {(EMAIL, "copied by CREATE TABLE ... SELECT")},
    ),
    (
        "CREATE TABLE leak SELECT * FROM shop.customers",
        {(ALL, "copied by CREATE TABLE ... SELECT")},
    ),
    ("CREATE VIEW v AS SELECT id, card_number FROM customers", {(CARD, "exposed by CREATE VIEW")}),
    ("SET @v = (SELECT email FROM customers LIMIT 1)", {(EMAIL, "in a subquery assigned to @v")}),
    ("UPDATE customers SET name = email WHERE id = 1", {(EMAIL, "in SET of an UPDATE")}),
    (
        "UPDATE customers SET name = 'x' WHERE card_number = '4111111111111111'",
        {(CARD, "in WHERE of an UPDATE")},
    ),
    (
        "UPDATE orders o JOIN customers c ON c.id = o.customer_id SET o.total = 0 "
        "WHERE c.email LIKE 'a%'",
        {(EMAIL, "in WHERE of an UPDATE")},
    ),
    ("DELETE FROM customers WHERE email = 'ada@example.com'", {(EMAIL, "in WHERE of a DELETE")}),
    ("DELETE FROM customers WHERE id = 3 RETURNING email", {(EMAIL, "in RETURNING of a DELETE")}),
    (
        "INSERT INTO customers (id, name, email, card_number) VALUES (4, 'a', 'b', 'c') "
        "RETURNING *",
        {(ALL, "in RETURNING of INSERT")},
    ),
    (
        "DELETE o FROM orders o JOIN customers c ON c.id = o.customer_id "
        "AND c.card_number LIKE '4%'",
        {(CARD, "in ON of a DELETE")},
    ),
]

NAMES: U = [
    # schema.alias.column: MariaDB reads the alias when shop is its table's schema
    ("SELECT UPPER(shop.c.card_number) FROM customers c", {(CARD, "inside UPPER()")}),
    ("SELECT id FROM customers c WHERE shop.c.card_number LIKE '4%'", {(CARD, "in WHERE")}),
    ("SELECT LENGTH(shop.other.card_number) FROM customers other", {(CARD, "inside LENGTH()")}),
    ("SELECT x.c FROM (SELECT shop.c.* FROM customers c) x", {(ALL, "in a derived table")}),
    ("SELECT shop.c.card_number FROM customers c", set()),  # a plain projection
    (  # unqualified, two tables joined: the masked one may hold it
        "SELECT UPPER(name) FROM customers c JOIN orders o ON o.customer_id = c.id "
        "WHERE email <> ''",
        {(EMAIL, "in WHERE")},
    ),
    ("SELECT LOWER(`c`.`email`) FROM `shop`.`customers` AS `c`", {(EMAIL, "inside LOWER()")}),
    ("SELECT LOWER(shop.customers.email) FROM shop.customers", {(EMAIL, "inside LOWER()")}),
    ("SELECT LOWER(EMAIL) FROM SHOP.Customers", {(EMAIL, "inside LOWER()")}),
    ("SELECT LOWER(customers.email) FROM customers", {(EMAIL, "inside LOWER()")}),
    ("SELECT /* note */ LOWER(email) -- why\nFROM customers", {(EMAIL, "inside LOWER()")}),
    ('SELECT UPPER("email") FROM customers', {(EMAIL, "inside UPPER()")}),  # ANSI_QUOTES?
    (
        "SELECT email FROM customers; SELECT MD5(card_number) FROM customers",
        {(CARD, "inside MD5()")},
    ),
    ("EXPLAIN SELECT id FROM customers WHERE card_number = '4'", {(CARD, "in WHERE")}),
    (
        "SET STATEMENT max_statement_time = 1 FOR SELECT UPPER(email) FROM customers",
        {(EMAIL, "inside UPPER()")},
    ),
    ("PREPARE s FROM 'SELECT UPPER(email) FROM customers'", {(EMAIL, "inside UPPER()")}),
]

OTHER_SESSIONS = (
    "in the process list, InnoDB's status, performance_schema, the sys schema, the query "
    "cache, the general or slow query log or the binary log, which show the texts of other "
    "sessions' statements"
)
OTHER_PLANS = (
    "in EXPLAIN ... FOR CONNECTION or SHOW EXPLAIN/ANALYZE ... FOR, whose plan of another "
    "session's statement shows its conditions with their literals"
)
LOCKED_VALUES = (
    "in InnoDB's lock tables (information_schema.INNODB_LOCKS, INNODB_LOCK_WAITS), which "
    "show the key values of the records other sessions lock"
)
REPLICATION_ERRORS = (
    "in the replication status (SHOW SLAVE STATUS, SHOW REPLICA STATUS), whose last error "
    "quotes the replicated statement or row that failed, with its values"
)
INDEXED_WORDS = (
    "in InnoDB's full-text index tables (information_schema.INNODB_FT_INDEX_TABLE, "
    "INNODB_FT_INDEX_CACHE), which show the words of an indexed column"
)

#: Oracles: a foreign key to a masked column accepts exactly the values it holds, and
#: mysql.column_stats holds the lowest and highest value of each analysed column.
ORACLES: U = [
    (
        "CREATE TABLE other.probe (c VARCHAR(19), "
        "FOREIGN KEY (c) REFERENCES customers (card_number))",
        {(CARD, "referenced by a FOREIGN KEY")},
    ),
    (
        "CREATE TABLE other.probe (c VARCHAR(19) REFERENCES shop.customers (card_number))",
        {(CARD, "referenced by a FOREIGN KEY")},
    ),
    *[
        (sql, {("*.*.*", OTHER_SESSIONS)})
        for sql in (
            "SHOW FULL PROCESSLIST",
            "SELECT info FROM information_schema.PROCESSLIST",
            "SELECT trx_query FROM information_schema.INNODB_TRX",
            "SELECT sql_text FROM performance_schema.events_statements_history",
            "SHOW ENGINE INNODB STATUS",
            # sys's views of INNODB_TRX and performance_schema: waiting_query, blocking_query
            "SELECT waiting_query, blocking_query FROM sys.innodb_lock_waits",
            "SELECT current_statement FROM sys.session",
            "SELECT * FROM sys.`x$processlist`",
            # the logs the server writes to tables (log_output = TABLE), the binary and
            # relay logs (statements, and the statements of row events: annotations)
            "SELECT argument FROM mysql.general_log",
            "SELECT sql_text FROM mysql.SLOW_LOG",
            "SELECT 1 FROM orders WHERE EXISTS (SELECT 1 FROM `mysql`.`general_log`)",
            "SHOW BINLOG EVENTS",
            "show binlog events in 'mariadb-bin.000001' from 4 limit 10",
            "SHOW RELAYLOG EVENTS",
            "EXECUTE IMMEDIATE 'SHOW BINLOG EVENTS'",
            "SELECT statement_text FROM information_schema.QUERY_CACHE_INFO",
        )
    ],
    # lock_data: the key values of locked index records, '4111111111111111' of a card
    # another session locks (or waits for) through its index
    *[
        (sql, {("*.*.*", LOCKED_VALUES)})
        for sql in (
            "SELECT lock_data FROM information_schema.INNODB_LOCKS",
            "SELECT * FROM information_schema.innodb_locks",
            "SELECT l.lock_data FROM information_schema.INNODB_LOCK_WAITS w "
            "JOIN information_schema.INNODB_LOCKS l ON l.lock_id = w.blocking_lock_id",
            "SELECT 1 FROM orders WHERE EXISTS "
            "(SELECT 1 FROM information_schema.INNODB_LOCKS WHERE lock_data LIKE '%4111%')",
            "EXECUTE IMMEDIATE 'SELECT lock_data FROM information_schema.INNODB_LOCKS'",
        )
    ],
    *[
        (sql, {("*.*.*", INDEXED_WORDS)})
        for sql in (
            "SELECT word FROM information_schema.INNODB_FT_INDEX_TABLE",
            "SELECT word FROM information_schema.INNODB_FT_INDEX_CACHE",
        )
    ],
    # the plan of another session's running statement: "attached_condition":
    # "o.card like '5500005555555559%'" (and its text in the tabular form's note)
    *[
        (sql, {("*.*.*", OTHER_PLANS)})
        for sql in (
            "EXPLAIN FOR CONNECTION 12",
            "EXPLAIN FORMAT=JSON FOR CONNECTION 12",
            "explain format = json for connection 12",
            "EXPLAIN EXTENDED FOR CONNECTION 12",
            "EXPLAIN /* plan */ FOR -- of\n CONNECTION 12",
            "DESCRIBE FOR CONNECTION 12",
            "DESC FORMAT=JSON FOR CONNECTION 12",
            "EXPLAIN ANALYZE FOR CONNECTION 12",
            "ANALYZE FORMAT=JSON FOR CONNECTION 12",
            "SHOW EXPLAIN FOR 12",
            "SHOW EXPLAIN FORMAT=JSON FOR 12",
            "SHOW ANALYZE FORMAT=JSON FOR 12",
            "EXECUTE IMMEDIATE 'EXPLAIN FORMAT=JSON FOR CONNECTION 12'",
            "PREPARE s FROM 'EXPLAIN FORMAT=JSON FOR CONNECTION 12'",
            "SET STATEMENT max_statement_time = 5 FOR EXPLAIN FORMAT=JSON FOR CONNECTION 12",
            "SET STATEMENT max_statement_time = 5 FOR SHOW EXPLAIN FOR 12",
            "EXECUTE IMMEDIATE 'SET STATEMENT max_statement_time = 5 FOR "
            "DESC FORMAT=JSON FOR CONNECTION 12'",
        )
    ],
    # a replica's Last_Error / Last_SQL_Error: "Error 'Duplicate entry ...' on query.
    # ... Query: 'INSERT INTO customers VALUES (1, '4111111111111111', ...)'"
    *[
        (sql, {("*.*.*", REPLICATION_ERRORS)})
        for sql in (
            "SHOW SLAVE STATUS",
            "show replica status",
            "SHOW ALL SLAVES STATUS",
            "SHOW ALL REPLICAS STATUS",
            "SHOW SLAVE 'to_primary' STATUS",
            "SHOW REPLICA /* of */ 'to_primary' STATUS",
            "EXECUTE IMMEDIATE 'SHOW SLAVE STATUS'",
            "SET STATEMENT max_statement_time = 5 FOR SHOW REPLICA STATUS",
        )
    ],
    (
        "SELECT min_value, max_value FROM mysql.column_stats",
        {("*.*.*", "in mysql.column_stats, which holds column values")},
    ),
]

#: Aliases that differ only in case are two sources (the server compares their case):
#: ``D`` is the customers table, not the derived table ``d``.
CASED_ALIASES: U = [
    (
        "SELECT UPPER(D.card_number) FROM (SELECT 1 AS card_number) d, customers D",
        {(CARD, "inside UPPER() in a SELECT that reads a derived table")},
    ),
    (
        "SELECT D.id FROM (SELECT 1 AS x) d JOIN customers D WHERE D.card_number LIKE '41%'",
        {(CARD, "in WHERE")},
    ),
    (
        "SELECT UPPER(customers.card_number) FROM (SELECT 1 AS x) CUSTOMERS, customers",
        {(CARD, "inside UPPER() in a SELECT that reads a derived table")},
    ),
    (
        "WITH d AS (SELECT 1 AS card_number) SELECT UPPER(D.card_number) FROM d, customers D",
        {(CARD, "inside UPPER() in a SELECT that reads a CTE")},
    ),
]

#: A WITH's names are not seen in the body of a CTE of a WITH nested inside its query:
#: MariaDB reads the table there (its real card numbers, through UPPER()).
CTE_SCOPES: U = [
    (
        "WITH customers AS (SELECT 1 AS card_number) "
        "SELECT (WITH t AS (SELECT card_number FROM customers) SELECT UPPER(card_number) FROM t)",
        {(CARD, "in a CTE in a subquery")},
    ),
    (  # the nested WITH's own query sees the outer CTE
        "WITH customers AS (SELECT 1 AS card_number) "
        "SELECT (WITH t AS (SELECT 5) SELECT UPPER(card_number) FROM customers)",
        set(),
    ),
]

#: A reserved word directly before '.' and a name is a name to MariaDB, as to the parser
RESERVED_NAMES: U = [
    (
        "SELECT UPPER(order.card_number) FROM customers AS `order`",
        {(CARD, "inside UPPER()")},
    ),
    ("SELECT COLUMN_GET(card_number, 'k' AS CHAR) FROM customers", {(CARD, "inside COLUMN_GET()")}),
    # ... and so is a word the tokenizer keeps as a keyword there: the parser read
    # (SELECT * FROM card_number), the server the card number
    ("SELECT CONCAT(from.card_number) FROM customers AS `from`", {(ALL, "not understood")}),
    ("SELECT UPPER(null.card_number) FROM customers AS `null`", {(ALL, "not understood")}),
    ("SELECT CONCAT(`from`.card_number) FROM customers AS `from`", {(CARD, "inside CONCAT()")}),
]

NOT_UNDERSTOOD: U = [
    ("SELECT email FROM customers WHERE", {(ALL, "not understood")}),
    ("ALTER TABLE customers ADD COLUMN leak VARCHAR(64) AS (email)", {(ALL, "not understood")}),
    ("SELECT DEFAULT(email) FROM customers", {(ALL, "not understood")}),  # misread by sqlglot
    ("HANDLER customers OPEN", {(ALL, "not understood")}),
    (  # a column where the analysis does not look
        "SELECT id FROM customers FOR SYSTEM_TIME AS OF email",
        {(ALL, "not understood")},
    ),
    ("CHECKSUM TABLE shop.customers", {(ALL, "not understood")}),
    ("RENAME TABLE customers TO customers_old", {(ALL, "not understood")}),
    (  # SHOW ... WHERE runs its subqueries: whether a row comes back tells a value
        "SHOW DATABASES WHERE (SELECT card_number FROM customers WHERE id = 1) LIKE '41%'",
        {(ALL, "not understood")},
    ),
    ("SELECT 1; SELECT 'unterminated", {("*.*.*", "not understood")}),
    # readings the server cannot have: BINARY BINARY card_number was CAST(`BINARY` AS
    # BINARY) AS card_number to the parser (no use of the column), the card to MariaDB
    ("SELECT BINARY BINARY card_number FROM customers", {(ALL, "not understood")}),
    ("SELECT (BINARY DATE'2024-01-01'), card_number FROM customers", {(ALL, "not understood")}),
    ("SELECT email COLLATE utf8mb4_bin ^ 0 FROM customers", {(ALL, "not understood")}),
    # ORDER before " ." is the keyword to MariaDB, the table's name to the parser
    ("SELECT UPPER(order .card_number) FROM customers AS `order`", {(ALL, "not understood")}),
    # aliases that differ only in case: two sources to a server that compares case
    (
        "SELECT (SELECT UPPER(D.card_number) FROM (SELECT 1 AS card_number) d) FROM customers D",
        {(ALL, "not understood")},  # D may be the outer customers: the server looks out
    ),
]

USES = (
    FUNCTIONS
    + CONDITIONS
    + QUERIES
    + COPIES
    + NAMES
    + CASED_ALIASES
    + CTE_SCOPES
    + ORACLES
    + RESERVED_NAMES
    + NOT_UNDERSTOOD
)


@pytest.mark.parametrize(("sql", "expected"), USES, ids=[_id(s) for s, _ in USES])
def test_use(sql: str, expected: set[tuple[str, str]]) -> None:
    assert uses(sql) == expected


# -- allowed, each with its nearest refused variant -----------------------------------------

A = list[tuple[str, str, set[tuple[str, str]]]]

ALLOWED: A = [
    (
        "SELECT card_number FROM customers",
        "SELECT TRIM(card_number) FROM customers",
        {(CARD, "inside TRIM()")},
    ),
    (
        "SELECT email AS contact, card_number card FROM customers",
        "SELECT email AS contact FROM customers ORDER BY contact",
        {(EMAIL, "in ORDER BY, by its select-list alias contact")},
    ),
    (
        "SELECT * FROM customers",
        "SELECT * FROM customers ORDER BY 3",
        {(ALL, "in ORDER BY, by select-list position 3")},
    ),
    (
        "SELECT c.* FROM customers c",
        "SELECT c.* FROM customers c UNION SELECT * FROM customers",
        {(ALL, "in a UNION")},
    ),
    (
        "SELECT c.*, o.total FROM customers c JOIN orders o ON o.customer_id = c.id",
        "SELECT c.*, o.total FROM customers c JOIN orders o ON o.customer_id = c.id "
        "AND c.email <> ''",
        {(EMAIL, "in ON")},
    ),
    (
        "SELECT DISTINCT email FROM customers",
        "SELECT DISTINCT LOWER(email) FROM customers",
        {(EMAIL, "inside LOWER()")},
    ),
    (
        "SELECT COUNT(*) FROM customers",
        "SELECT COUNT(card_number) FROM customers",
        {(CARD, "inside COUNT()")},
    ),
    (
        "SELECT email FROM customers WHERE id = 2",
        "SELECT email FROM customers WHERE email = 'x'",
        {(EMAIL, "in WHERE")},
    ),
    (
        "SELECT email, card_number, name FROM shop.customers WHERE name LIKE 'A%' "
        "ORDER BY id LIMIT 2",
        "SELECT email, card_number, name FROM shop.customers WHERE name LIKE 'A%' "
        "ORDER BY card_number LIMIT 2",
        {(CARD, "in ORDER BY")},
    ),
    (
        "SELECT `email` FROM `shop`.`customers`",
        "SELECT `email` FROM `shop`.`customers` GROUP BY `email`",
        {(EMAIL, "in GROUP BY")},
    ),
    (
        "SELECT c.name, c.id FROM customers c JOIN orders o ON o.customer_id = c.id "
        "WHERE o.total > 5",
        "SELECT c.name, c.id FROM customers c JOIN orders o ON o.customer_id = c.id "
        "WHERE email > ''",
        {(EMAIL, "in WHERE")},
    ),
    (  # another schema's customers is not masked
        "SELECT UPPER(email) FROM other.customers",
        "SELECT UPPER(email) FROM shop.customers",
        {(EMAIL, "inside UPPER()")},
    ),
    (
        "SELECT UPPER(o.email) FROM other.customers o JOIN shop.customers s ON s.id = o.id",
        "SELECT UPPER(s.email) FROM other.customers o JOIN shop.customers s ON s.id = o.id",
        {(EMAIL, "inside UPPER()")},
    ),
    (
        "SELECT id FROM orders WHERE EXISTS "
        "(SELECT * FROM customers c WHERE c.id = orders.customer_id)",
        "SELECT id FROM orders WHERE EXISTS (SELECT * FROM customers c "
        "WHERE c.id = orders.customer_id AND c.card_number > '5')",
        {(CARD, "in WHERE in a subquery in WHERE")},
    ),
    (
        "SELECT email FROM customers c WHERE c.id IN "
        "(SELECT customer_id FROM orders WHERE total > 10)",
        "SELECT email FROM customers c WHERE c.id IN "
        "(SELECT customer_id FROM orders WHERE total > 10 AND c.email LIKE 'a%')",
        {(EMAIL, "in WHERE in a subquery in WHERE")},
    ),
    (
        "SELECT name FROM customers WHERE id IN (1, 2) GROUP BY name HAVING COUNT(*) > 0",
        "SELECT name FROM customers WHERE id IN (1, 2) GROUP BY name HAVING MIN(email) > ''",
        {(EMAIL, "inside MIN() in HAVING")},
    ),
    (
        "WITH x AS (SELECT 1 AS a) SELECT email FROM customers",
        "WITH x AS (SELECT email AS a FROM customers) SELECT email FROM customers",
        {(EMAIL, "in a CTE")},
    ),
    (
        "SELECT id, email FROM customers WHERE id = ?",
        "SELECT id FROM customers WHERE email = ?",
        {(EMAIL, "in WHERE")},
    ),
    (
        "SELECT email FROM customers WHERE id = 1 FOR UPDATE",
        "SELECT email FROM customers WHERE card_number = '1' FOR UPDATE",
        {(CARD, "in WHERE")},
    ),
    (
        "UPDATE customers SET email = 'x', card_number = '0' WHERE id = 1",
        "UPDATE customers SET email = LOWER(email) WHERE id = 1",
        {(EMAIL, "inside LOWER() in SET of an UPDATE")},
    ),
    (
        "INSERT INTO customers (id, name, email, card_number) VALUES (4, 'x', 'y', 'z')",
        "INSERT INTO customers (id, name, email, card_number) "
        "SELECT 5, name, email, card_number FROM customers WHERE id = 1",
        {(EMAIL, "copied by INSERT ... SELECT"), (CARD, "copied by INSERT ... SELECT")},
    ),
    (
        "DELETE FROM customers WHERE id = 3",
        "DELETE FROM customers WHERE card_number LIKE '34%'",
        {(CARD, "in WHERE of a DELETE")},
    ),
    (
        "INSERT INTO archive SELECT id, total FROM orders",
        "INSERT INTO archive SELECT o.id, c.card_number FROM orders o JOIN customers c "
        "ON c.id = o.customer_id",
        {(CARD, "copied by INSERT ... SELECT")},
    ),
    ("SHOW CREATE TABLE customers", "CHECKSUM TABLE customers", {(ALL, "not understood")}),
    (  # pages, sizes and record counts, no values
        "SELECT table_name, index_name, number_records FROM information_schema.INNODB_BUFFER_PAGE",
        "SELECT lock_table, lock_index, lock_data FROM information_schema.INNODB_LOCKS",
        {("*.*.*", LOCKED_VALUES)},
    ),
    (  # the session's own statement
        "EXPLAIN FORMAT=JSON SELECT id FROM customers WHERE id = 12",
        "EXPLAIN FORMAT=JSON FOR CONNECTION 12",
        {("*.*.*", OTHER_PLANS)},
    ),
    (
        "SHOW TABLES FROM information_schema LIKE 'INNODB_LOCK%'",
        "SHOW EXPLAIN FOR 12",
        {("*.*.*", OTHER_PLANS)},
    ),
    ("DESCRIBE customers", "HANDLER customers READ FIRST", {(ALL, "not understood")}),
    ("SHOW EVENTS", "SHOW BINLOG EVENTS", {("*.*.*", OTHER_SESSIONS)}),
    (
        "SELECT * FROM mysql.innodb_index_stats",
        "SELECT * FROM mysql.general_log",
        {("*.*.*", OTHER_SESSIONS)},
    ),
    (
        "SELECT name AS x, (SELECT UPPER(x)) FROM customers",
        "SELECT email AS x, (SELECT UPPER(x)) FROM customers",
        {(EMAIL, "in a subquery, by its select-list alias x")},
    ),
    (  # an inner alias that shadows the outer one: its own columns are not masked
        "SELECT (SELECT UPPER(c.total) FROM orders c LIMIT 1) FROM customers c",
        "SELECT (SELECT UPPER(c.email) FROM orders c LIMIT 1) FROM customers c",
        {(EMAIL, "inside UPPER() in a subquery")},
    ),
    (  # the replicas a primary knows, the status counters: no statement texts
        "SHOW SLAVE HOSTS",
        "SHOW REPLICA STATUS",
        {("*.*.*", REPLICATION_ERRORS)},
    ),
    (
        "SHOW GLOBAL STATUS LIKE 'Slave%'",
        "SHOW SLAVE STATUS",
        {("*.*.*", REPLICATION_ERRORS)},
    ),
    (
        "SHOW TABLE STATUS FROM replica",
        "SHOW ALL SLAVES STATUS",
        {("*.*.*", REPLICATION_ERRORS)},
    ),
    (
        "CREATE TABLE copy (id INT)",
        "CREATE TABLE copy AS SELECT * FROM customers",
        {(ALL, "copied by CREATE TABLE ... SELECT")},
    ),
    (
        "CREATE TABLE copy (id INT)",
        "CREATE TABLE copy LIKE customers",  # the defaults of its masked columns
        {(ALL, "copied by CREATE TABLE ... LIKE, defaults included")},
    ),
]


@pytest.mark.parametrize(
    ("sql", "variant", "expected"), ALLOWED, ids=[_id(s) for s, _, _ in ALLOWED]
)
def test_allowed(sql: str, variant: str, expected: set[tuple[str, str]]) -> None:
    assert uses(sql) == set()
    assert uses(variant) == expected


def test_default_schema() -> None:
    """With no default schema an unqualified table is not the masked one (the server
    refuses it: no database selected); a qualified one is, and a USE earlier in the same
    text makes its schema the default of the statements after it."""
    assert uses("SELECT UPPER(email) FROM customers", db=None) == set()
    assert uses("SELECT UPPER(email) FROM shop.customers", db=None) == {(EMAIL, "inside UPPER()")}
    assert uses("SELECT UPPER(email) FROM customers", db="SHOP") == {(EMAIL, "inside UPPER()")}
    assert uses("SELECT UPPER(email) FROM customers", db="other") == set()
    assert uses("USE shop; SELECT UPPER(email) FROM customers", db=None) == {
        (EMAIL, "inside UPPER()")
    }
    assert uses("USE other; SELECT UPPER(email) FROM customers", db="shop") == set()


def test_a_system_table_named_without_its_schema_is_the_default_schemas() -> None:
    """``slow_log`` alone is mysql.slow_log only while mysql is the default schema (or
    the default is not known): an application's own ``shop.slow_log`` or
    ``shop.processlist`` was refused as the server's log of other sessions' statements."""
    for sql, home, where in (
        ("SELECT * FROM slow_log", "mysql", OTHER_SESSIONS),
        ("SELECT argument FROM general_log", "mysql", OTHER_SESSIONS),
        ("SELECT * FROM processlist", "information_schema", OTHER_SESSIONS),
        ("SELECT * FROM QUERY_CACHE_INFO", "information_schema", OTHER_SESSIONS),
        ("SELECT * FROM INNODB_LOCK_WAITS", "information_schema", LOCKED_VALUES),
        ("SELECT * FROM column_stats", "mysql", "in mysql.column_stats, which holds column values"),
    ):
        assert uses(sql, db="shop") == set(), sql
        assert mask_rewrite(sql, "shop", STRATEGY, DEFAULT) == sql
        for db in (home, home.upper(), None, ""):
            assert uses(sql, db=db) == {("*.*.*", where)}, (sql, db)
            assert mask_rewrite(sql, db, STRATEGY, DEFAULT) is None
        qualified = sql.replace(" FROM ", f" FROM {home}.")
        assert uses(qualified, db="shop") == {("*.*.*", where)}, qualified
    assert uses("USE mysql; SELECT * FROM slow_log", db="shop") == {("*.*.*", OTHER_SESSIONS)}
    assert uses("USE shop; SELECT * FROM slow_log", db=None) == set()


def test_sql_mode_readings() -> None:
    """A double quote is a string or a name depending on ANSI_QUOTES, which the gateway
    never knows: by default both readings count; with it known, only the session's."""
    sql = 'SELECT UPPER("email") FROM customers'
    assert uses(sql, ansi_unknown=False) == set()
    assert uses(sql, mode=LexMode(ansi_quotes=True), ansi_unknown=False) == {
        (EMAIL, "inside UPPER()")
    }
    # A backslash-escaped quote ends the string only under NO_BACKSLASH_ESCAPES.
    tricky = "SELECT id FROM customers WHERE name = 'a\\' OR email = ' -- '"
    assert uses(tricky) == set()
    assert uses(tricky, backslash_unknown=True) == {(EMAIL, "in WHERE")}


def test_bytes_and_the_predicate_contract() -> None:
    asked: list[tuple[str, str, str]] = []

    def record(schema: str, table: str, column: str) -> bool:
        asked.append((schema, table, column))
        return is_masked(schema, table, column)

    found = masked_uses(b"SELECT LOWER(Email) FROM Customers", "Shop", record, DEFAULT)
    assert found == [MaskedUse(EMAIL, "inside LOWER()", ("shop", "customers", "email"))]
    assert asked == [("shop", "customers", "email")]  # lower case, and asked once


# -- mask_rewrite ---------------------------------------------------------------------------

LAST4 = (
    "IF(CHAR_LENGTH({c}) <= 4, REPEAT('*', CHAR_LENGTH({c})), "
    "CONCAT(REPEAT('*', CHAR_LENGTH({c}) - 4), RIGHT({c}, 4)))"
)


def last4(column: str) -> str:
    return LAST4.format(c=column)


REWRITES: list[tuple[str, str | None]] = [
    ("SELECT UPPER(email) FROM customers", "SELECT UPPER('****') FROM customers"),
    (
        "SELECT id FROM customers WHERE card_number LIKE '%1111'",
        f"SELECT id FROM customers WHERE {last4('card_number')} LIKE '%1111'",
    ),
    (  # plain projections stay: result-set masking masks them
        "SELECT email, LOWER(email), c.card_number FROM customers c",
        "SELECT email, LOWER('****'), c.card_number FROM customers c",
    ),
    ("SELECT email, card_number FROM customers", "SELECT email, card_number FROM customers"),
    (
        "SELECT email FROM customers UNION SELECT name FROM customers",
        "SELECT '****' AS `email` FROM customers UNION SELECT name FROM customers",
    ),
    (
        "SELECT d.email FROM (SELECT email FROM customers) d",
        "SELECT d.email FROM (SELECT '****' AS `email` FROM customers) d",
    ),
    (
        "SELECT * FROM (SELECT c.email AS e FROM customers c) d",
        "SELECT * FROM (SELECT '****' AS e FROM customers c) d",
    ),
    (
        "WITH x AS (SELECT `card_number` FROM customers) SELECT RIGHT(card_number, 6) FROM x",
        f"WITH x AS (SELECT {last4('`card_number`')} AS `card_number` FROM customers) "
        "SELECT RIGHT(card_number, 6) FROM x",
    ),
    (
        "INSERT INTO archive SELECT id, shop.customers.card_number FROM shop.customers",
        f"INSERT INTO archive SELECT id, {last4('shop.customers.card_number')} "
        "AS `card_number` FROM shop.customers",
    ),
    (
        "SET @v = (SELECT email FROM customers LIMIT 1)",
        "SET @v = (SELECT '****' AS `email` FROM customers LIMIT 1)",
    ),
    (
        "UPDATE customers SET name = email WHERE id = 1",
        "UPDATE customers SET name = '****' WHERE id = 1",
    ),
    (
        "SELECT COUNT(*) FROM customers GROUP BY email",
        "SELECT COUNT(*) FROM customers GROUP BY '****'",
    ),
    (  # comments, a non-ASCII literal before the column and a second statement
        "SELECT /* é */ 'Zoë', LOWER(email) FROM customers; SELECT MD5(email) FROM customers",
        "SELECT /* é */ 'Zoë', LOWER('****') FROM customers; SELECT MD5('****') FROM customers",
    ),
    (  # the INTO clause the parser cannot read is blanked in place
        "SELECT name INTO @a FROM customers WHERE email = 'x'",
        "SELECT name INTO @a FROM customers WHERE '****' = 'x'",
    ),
    (
        "SELECT email INTO @a FROM customers LIMIT 1",
        "SELECT '****' AS `email` INTO @a FROM customers LIMIT 1",
    ),
    (
        "EXPLAIN SELECT id FROM customers WHERE email = 'x'",
        "EXPLAIN SELECT id FROM customers WHERE '****' = 'x'",
    ),
    (
        "REPLACE LOW_PRIORITY INTO archive SELECT id, email FROM customers",
        "REPLACE LOW_PRIORITY INTO archive SELECT id, '****' AS `email` FROM customers",
    ),
    # Not certain: refused by the caller.
    ("SELECT * FROM (SELECT * FROM customers) d", None),  # a * over masked columns
    ("INSERT INTO archive SELECT * FROM customers", None),
    ("SELECT email FROM customers ORDER BY 1", None),  # by position
    ("SELECT email AS e FROM customers ORDER BY e", None),  # by alias
    ("SELECT 1 FROM customers JOIN orders USING (email)", None),  # must stay a name
    ("SELECT 1 FROM customers NATURAL JOIN orders", None),
    ("SELECT id FROM customers WHERE MATCH (email) AGAINST ('x')", None),
    ("PREPARE s FROM 'SELECT UPPER(email) FROM customers'", None),  # inside a literal
    ('SELECT UPPER("email") FROM customers', None),  # a string or a name: sql_mode
    ("SELECT email FROM customers WHERE", None),  # not understood
]


@pytest.mark.parametrize(("sql", "expected"), REWRITES, ids=[_id(s) for s, _ in REWRITES])
def test_rewrite(sql: str, expected: str | None) -> None:
    assert mask_rewrite(sql, "shop", STRATEGY, DEFAULT) == expected


def test_rewrite_strategies() -> None:
    sql = "SELECT LOWER(email), LOWER(card_number) FROM customers"
    null = strategy_of({**MASKED, ("shop", "customers", "email"): "null"})
    assert mask_rewrite(sql, "shop", null, DEFAULT) == (
        f"SELECT LOWER(NULL), LOWER({last4('card_number')}) FROM customers"
    )
    hashed = strategy_of({**MASKED, ("shop", "customers", "email"): "hash"})
    assert mask_rewrite(sql, "shop", hashed, DEFAULT) is None  # no keyed digest in SQL
    assert mask_rewrite("SELECT LOWER(card_number) FROM customers", "shop", hashed, DEFAULT) == (
        f"SELECT LOWER({last4('card_number')}) FROM customers"
    )
    assert mask_rewrite("SELECT LOWER(email) FROM customers", None, STRATEGY, DEFAULT) == (
        "SELECT LOWER(email) FROM customers"  # no default schema: not the masked table
    )
    assert (
        mask_rewrite(b"SELECT LOWER(email) FROM customers \xff", "shop", STRATEGY, DEFAULT) is None
    )


def test_rewrite_same_name_masked_differently() -> None:
    """An unqualified column two masked tables may hold, with different strategies: the
    rewrite cannot tell which; qualified, it can."""
    rules = {**MASKED, ("crm", "contacts", "email"): "null"}
    strategy = strategy_of(rules)
    joined = "FROM customers c JOIN crm.contacts k ON k.id = c.id"
    assert mask_rewrite(f"SELECT LOWER(email) {joined}", "shop", strategy, DEFAULT) is None
    assert mask_rewrite(
        f"SELECT LOWER(k.email), LOWER(c.email) {joined}", "shop", strategy, DEFAULT
    ) == (f"SELECT LOWER(NULL), LOWER('****') {joined}")


# -- against MariaDB --------------------------------------------------------------------------

LIVE: list[tuple[str, list[tuple[Any, ...]], list[tuple[Any, ...]]]] = [
    # (statement, what it returns as written, what its rewrite returns)
    (
        "SELECT UPPER(email) FROM customers ORDER BY id",
        [("ADA@EXAMPLE.COM",), ("GRACE@EXAMPLE.COM",), ("ALAN@EXAMPLE.COM",)],
        [("****",), ("****",), ("****",)],
    ),
    (
        "SELECT CONCAT(name, ' ', card_number) FROM customers ORDER BY id",
        [
            ("Ada Lovelace 4111111111111111",),
            ("Grace Hopper 5500000000000004",),
            ("Alan Turing 340000000000009",),
        ],
        [
            ("Ada Lovelace ************1111",),
            ("Grace Hopper ************0004",),
            ("Alan Turing ***********0009",),
        ],
    ),
    ("SELECT id FROM customers WHERE email = 'ada@example.com'", [(1,)], []),
    (
        "SELECT d.email FROM (SELECT id, email FROM customers) d ORDER BY d.id",
        [("ada@example.com",), ("grace@example.com",), ("alan@example.com",)],
        [("****",), ("****",), ("****",)],
    ),
    (
        "SELECT card_number FROM customers WHERE id = 3 UNION ALL SELECT 'x'",
        [("340000000000009",), ("x",)],
        [("***********0009",), ("x",)],
    ),
    (
        "WITH x AS (SELECT id, card_number FROM customers) SELECT RIGHT(card_number, 6) "
        "FROM x ORDER BY id",
        [("111111",), ("000004",), ("000009",)],
        [("**1111",), ("**0004",), ("**0009",)],
    ),
    (
        "SELECT GROUP_CONCAT(email ORDER BY id SEPARATOR ',') FROM customers",
        [("ada@example.com,grace@example.com,alan@example.com",)],
        [("****,****,****",)],
    ),
    ("SELECT COUNT(*) FROM customers GROUP BY email ORDER BY 1", [(1,), (1,), (1,)], [(3,)]),
]


@pytest.fixture(scope="module")
def shop(mariadb: MariaDB) -> Iterator[pymysql.connections.Connection[Any]]:
    conn = mariadb.connect(database="shop")
    try:
        yield conn
    finally:
        conn.close()


def _rows(conn: pymysql.connections.Connection[Any], sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]


@pytest.mark.integration
@pytest.mark.parametrize(("sql", "real", "masked"), LIVE, ids=[_id(s) for s, _, _ in LIVE])
def test_rewrite_runs_on_mariadb(
    shop: pymysql.connections.Connection[Any],
    sql: str,
    real: list[tuple[Any, ...]],
    masked: list[tuple[Any, ...]],
) -> None:
    assert uses(sql) != set()
    rewritten = mask_rewrite(sql, "shop", STRATEGY, DEFAULT)
    assert rewritten is not None and rewritten != sql
    assert _rows(shop, sql) == real  # the statement as written sees the values
    assert _rows(shop, rewritten) == masked


@pytest.mark.integration
def test_rewritten_copies_hold_masked_values(shop: pymysql.connections.Connection[Any]) -> None:
    """Values copied into a variable or a table by a rewritten statement are masked."""
    copy = mask_rewrite(
        "SET @card = (SELECT card_number FROM customers WHERE id = 2)", "shop", STRATEGY, DEFAULT
    )
    assert copy is not None
    _rows(shop, copy)
    assert _rows(shop, "SELECT @card") == [("************0004",)]
    table = mask_rewrite(
        "CREATE TEMPORARY TABLE leak AS SELECT id, email, card_number FROM customers",
        "shop",
        STRATEGY,
        DEFAULT,
    )
    assert table is not None
    try:
        _rows(shop, table)
        assert _rows(shop, "SELECT id, email, card_number FROM leak ORDER BY id") == [
            (1, "****", "************1111"),
            (2, "****", "************0004"),
            (3, "****", "***********0009"),
        ]
    finally:
        _rows(shop, "DROP TEMPORARY TABLE IF EXISTS leak")


CHECKSUM = "information_schema.tables.checksum"
CHECKSUMS: dict[tuple[str, str, str], str] = {
    **MASKED,
    ("information_schema", "tables", "checksum"): "null",
}


@pytest.mark.parametrize(
    ("sql", "found"),
    [
        (
            "SHOW TABLE STATUS WHERE Checksum = 1954644863",
            {(CHECKSUM, "in the WHERE of SHOW TABLE STATUS")},
        ),
        (
            "SHOW TABLE STATUS FROM shop WHERE `checksum` > 5 AND Name = 'x'",
            {(CHECKSUM, "in the WHERE of SHOW TABLE STATUS")},
        ),
        ("SHOW TABLE STATUS LIKE 'checksum'", set()),  # a pattern of names, not a test
        ("SHOW TABLE STATUS WHERE Name = 't'", set()),
        ("SHOW TABLES WHERE Tables_in_shop = 'checksum'", set()),
        (
            "SELECT CHECKSUM + 0 FROM information_schema.TABLES",
            {(CHECKSUM, "inside the + operator")},
        ),
        (
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE CHECKSUM > 5",
            {(CHECKSUM, "in WHERE")},
        ),
        (
            "SELECT TABLE_NAME, CHECKSUM FROM information_schema.TABLES",
            set(),
        ),  # masked on the way back
    ],
    ids=lambda v: _id(v) if isinstance(v, str) else "",
)
def test_a_tables_live_checksum_is_tested_only_where_it_is_masked(
    sql: str, found: set[tuple[str, str]]
) -> None:
    """The live checksum of a CHECKSUM=1 table sums a CRC of every row, masked values
    included: a condition on it is a probe of them, as one on the column would be."""
    strategy = strategy_of(CHECKSUMS)
    result = masked_uses(sql, "shop", lambda *a: strategy(*a) is not None, DEFAULT)
    assert {(u.column, u.where) for u in result} == found
