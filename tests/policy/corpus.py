"""The statement corpus: real MySQL/MariaDB texts and the rule that decides each (SPEC §6).

Every entry is one COM_QUERY text and the rule that decides it for the agent
(``Subject("agent", {"agents"}, "orders")``) with default schema ``shop``, no configured
rules, a utf8mb4 connection and the server's default ``sql_mode``: for a text of several
statements, the rule of the first refused statement, or ``default-allow`` when every
statement passes. Expectations follow SPEC §6 and docs/policy.md, not what the code
happens to return.

Dangerous statements use the scratch schema ``corpus`` (tables ``items``, ``stock``,
``notes``, view ``in_stock``, account ``corpus_victim``@'%', see ``SCRATCH_SQL``), so they
would really destroy or change something if the gateway forwarded them; the integration
test checks that nothing changed after every refusal.

``live=False`` marks an entry that must not be sent to the shared lab server (it would
stop the server or change the gateway's own account), or an allowed one that cannot run
on its own there (it needs state from an earlier statement, or is MySQL-only syntax).
"""

from __future__ import annotations

from typing import NamedTuple

from appliance.config import MaskingRuleConfig, MaskStrategy
from appliance.policy.masking import MaskingPolicy


class Case(NamedTuple):
    sql: str
    expected: str  # the deciding rule
    live: bool = True  # may be sent through the gateway to the lab MariaDB


def _cases(expected: str, *sqls: str, live: bool = True) -> list[Case]:
    return [Case(sql, expected, live) for sql in sqls]


ALLOW = "default-allow"
NOT_UNDERSTOOD = "not-understood"
UNKNOWN = "unknown-statement"

#: The scratch schema the dangerous statements aim at, created directly on the server.
SCRATCH_SQL: tuple[str, ...] = (
    "DROP DATABASE IF EXISTS corpus",
    "DROP DATABASE IF EXISTS corpus_archive",
    "DROP DATABASE IF EXISTS corpus_archive2",
    "DROP USER IF EXISTS 'corpus_victim'@'%', 'corpus_new'@'%', 'corpus_renamed'@'%'",
    "DROP ROLE IF EXISTS corpus_role",
    "DROP SERVER IF EXISTS corpus_srv",
    "CREATE DATABASE corpus",
    """CREATE TABLE corpus.items (
        id INT PRIMARY KEY,
        name VARCHAR(64) NOT NULL,
        qty INT NOT NULL DEFAULT 0,
        price DECIMAL(10, 2) NOT NULL DEFAULT 0,
        tags JSON NULL,
        updated DATETIME NULL,
        KEY idx_name (name)
    ) ENGINE=InnoDB""",
    """CREATE TABLE corpus.stock (
        item_id INT PRIMARY KEY,
        warehouse VARCHAR(16) NOT NULL,
        qty INT NOT NULL
    ) ENGINE=InnoDB""",
    """CREATE TABLE corpus.notes (
        id INT AUTO_INCREMENT PRIMARY KEY,
        item_id INT NULL,
        body TEXT NULL
    ) ENGINE=InnoDB""",
    """INSERT INTO corpus.items VALUES
        (1, 'apple', 10, 0.50, '{"color": "red"}', '2024-01-01 00:00:00'),
        (2, 'pear', 0, 0.75, '{"color": "green"}', NULL),
        (3, 'plum', 4, 1.20, NULL, NULL),
        (4, 'name', 7, 2.00, '["red", "blue"]', NULL)""",
    "INSERT INTO corpus.stock VALUES (1, 'north', 10), (2, 'south', 0), (3, 'north', 4)",
    "INSERT INTO corpus.notes (item_id, body) VALUES (1, 'fresh'), (3, 'bruised')",
    "CREATE VIEW corpus.in_stock AS SELECT id, name FROM corpus.items WHERE qty > 0",
    "CREATE PROCEDURE corpus.in_stock_count() SELECT COUNT(*) FROM corpus.in_stock",
    # a stored function a call of which deletes every item, unseen by the gateway
    "CREATE FUNCTION corpus.purge_items() RETURNS INT MODIFIES SQL DATA "
    "BEGIN DELETE FROM corpus.items; RETURN ROW_COUNT(); END",
    "CREATE USER 'corpus_victim'@'%' IDENTIFIED BY 'victim-secret'",
    "GRANT SELECT ON corpus.* TO 'corpus_victim'@'%'",
    # a server for FEDERATED and SPIDER tables: mysql.servers keeps its password in the clear
    "CREATE SERVER corpus_srv FOREIGN DATA WRAPPER mysql OPTIONS (HOST '127.0.0.1', "
    "DATABASE 'corpus', USER 'corpus_remote', PASSWORD 'remote-secret')",
)

#: Files a forwarded INTO OUTFILE/DUMPFILE would create on the server's host.
OUTFILES: tuple[str, ...] = tuple(f"/tmp/sqlgate-corpus-{n}.out" for n in range(1, 11))


# --------------------------------------------------------------------- agent reads

READS = _cases(
    ALLOW,
    "SELECT 1",
    "VALUES (1), (2)",
    "SELECT c.select FROM (SELECT 1 AS `select`) c",
    "SELECT VERSION()",
    "SELECT NOW(), CURRENT_USER(), DATABASE()",
    "SELECT * FROM customers",
    "SELECT id, name, email FROM shop.customers WHERE id = 2",
    "SELECT COUNT(*) FROM shop.orders",
    "select lower(name) as n from shop.customers where id > 0 order by n",
    "SELECT `id`, `name` FROM `shop`.`customers` WHERE `id` = 3",
    "SELECT c.name, SUM(o.total) AS spent FROM shop.customers c JOIN shop.orders o "
    "ON o.customer_id = c.id GROUP BY c.name ORDER BY spent DESC",
    "SELECT c.id, c.name, COUNT(o.id) AS n FROM shop.customers AS c LEFT JOIN shop.orders "
    "AS o ON o.customer_id = c.id GROUP BY c.id, c.name HAVING COUNT(o.id) > 0",
    "SELECT\n  c.name,\n  o.total\nFROM shop.customers c\nINNER JOIN shop.orders o\n"
    "  ON o.customer_id = c.id\nWHERE o.total > 10\nORDER BY o.total DESC\n",
    "SELECT * FROM shop.orders WHERE created >= '2024-02-01' AND created < '2024-04-01' "
    "ORDER BY created DESC LIMIT 10",
    "SELECT * FROM shop.orders ORDER BY total DESC LIMIT 2 OFFSET 1",
    "SELECT id, total FROM shop.orders ORDER BY total DESC LIMIT 1, 2",
    "WITH spend AS (SELECT customer_id, SUM(total) AS total FROM shop.orders GROUP BY "
    "customer_id) SELECT c.name, s.total FROM spend s JOIN shop.customers c ON c.id = "
    "s.customer_id",
    "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 10) "
    "SELECT n FROM seq",
    "SELECT id, total, SUM(total) OVER (PARTITION BY customer_id ORDER BY created) AS "
    "running FROM shop.orders",
    "SELECT id, RANK() OVER (ORDER BY total DESC) AS r, ROW_NUMBER() OVER w AS rn FROM "
    "shop.orders WINDOW w AS (ORDER BY id)",
    "SELECT customer_id, LAG(total) OVER (PARTITION BY customer_id ORDER BY created) AS "
    "previous FROM shop.orders",
    "SELECT name FROM shop.customers WHERE id IN (SELECT customer_id FROM shop.orders "
    "WHERE total > 10)",
    "SELECT name FROM shop.customers c WHERE EXISTS (SELECT 1 FROM shop.orders o WHERE "
    "o.customer_id = c.id)",
    "SELECT name FROM shop.customers WHERE id NOT IN (SELECT customer_id FROM shop.orders)",
    "SELECT (SELECT MAX(total) FROM shop.orders) AS biggest",
    "SELECT t.customer_id, t.n FROM (SELECT customer_id, COUNT(*) AS n FROM shop.orders "
    "GROUP BY customer_id) AS t WHERE t.n > 1",
    "SELECT DATE_FORMAT(created, '%Y-%m') AS month, SUM(total) FROM shop.orders GROUP BY "
    "month ORDER BY month",
    "SELECT YEAR(created), COUNT(*) FROM shop.orders GROUP BY YEAR(created) WITH ROLLUP",
    "SELECT * FROM shop.customers WHERE name LIKE 'A%' AND email NOT LIKE '%@test%'",
    r"SELECT name FROM shop.customers WHERE email REGEXP '^[a-z]+@example\\.com$'",
    "SELECT * FROM shop.orders WHERE total BETWEEN 5 AND 50",
    "SELECT CASE WHEN total > 50 THEN 'big' WHEN total > 10 THEN 'medium' ELSE 'small' "
    "END AS size, id FROM shop.orders",
    "SELECT COALESCE(NULL, name), IFNULL(email, '-'), NULLIF(id, 0) FROM shop.customers",
    "SELECT GROUP_CONCAT(name ORDER BY name SEPARATOR ', ') FROM shop.customers",
    "SELECT DISTINCT customer_id FROM shop.orders",
    "SELECT JSON_OBJECT('id', id, 'name', name) FROM shop.customers",
    """SELECT JSON_EXTRACT('{"a": {"b": 1}}', '$.a.b')""",
    "SELECT JSON_ARRAYAGG(id) FROM shop.orders",
    """SELECT id FROM corpus.items WHERE JSON_CONTAINS(tags, '"red"')""",
    "SELECT JSON_UNQUOTE(JSON_EXTRACT(tags, '$.color')) FROM corpus.items WHERE id = 1",
    """SELECT * FROM JSON_TABLE('[{"x": 1}, {"x": 2}]', '$[*]' COLUMNS (x INT PATH """
    """'$.x')) AS jt""",
    "SELECT id FROM shop.orders UNION SELECT id FROM shop.customers",
    "SELECT id FROM shop.orders UNION ALL SELECT id FROM shop.customers ORDER BY id",
    "SELECT id FROM shop.orders INTERSECT SELECT id FROM shop.customers",
    "SELECT id FROM shop.orders EXCEPT SELECT customer_id FROM shop.orders",
    "(SELECT id FROM shop.orders WHERE id = 1) UNION (SELECT id FROM shop.orders WHERE "
    "id = 2) ORDER BY 1",
    "SELECT CAST(o.total AS CHAR), CONVERT(c.name USING utf8mb4) FROM shop.orders o "
    "JOIN shop.customers c ON c.id = o.customer_id",
    "SELECT name COLLATE utf8mb4_bin FROM shop.customers",
    "SELECT @@session.sql_mode, @@version, @@autocommit",
    "SELECT SQL_CALC_FOUND_ROWS * FROM shop.orders LIMIT 1",
    "SELECT FOUND_ROWS()",
    "SELECT * FROM shop.orders WHERE id = 1 FOR UPDATE",
    "SELECT * FROM shop.orders USE INDEX (PRIMARY) WHERE id > 1",
    "SELECT o.id FROM shop.orders o STRAIGHT_JOIN shop.customers c ON c.id = o.customer_id",
    "SELECT * FROM shop.customers CROSS JOIN shop.orders LIMIT 3",
    "SELECT a.id, b.id FROM shop.orders a, shop.orders b WHERE a.total < b.total",
    "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop'",
    "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
    "'shop' AND TABLE_NAME = 'orders' ORDER BY ORDINAL_POSITION",
    "SELECT Db, User FROM mysql.db",  # reading the mysql schema is not writing it
    "SELECT DATE_SUB(NOW(), INTERVAL 7 DAY), CURDATE() + INTERVAL 1 MONTH",
    "SELECT ROUND(AVG(total), 2), MIN(total), MAX(total), STDDEV(total) FROM shop.orders",
    "SELECT LEFT(card_number, 4), RIGHT(card_number, 4) FROM shop.customers",
    "SELECT UUID(), RAND(), CONNECTION_ID()",
    "SELECT SLEEP(0)",
    "SELECT * FROM shop.orders WHERE (customer_id, total) IN ((1, 12.50), (2, 5.00))",
    "SELECT id FROM shop.orders WHERE total > ALL (SELECT total FROM shop.orders WHERE "
    "customer_id = 2)",
    "SELECT /*+ MAX_EXECUTION_TIME(1000) */ id FROM shop.orders",
    "SELECT HEX(name), UNHEX('41'), TO_BASE64(email) FROM shop.customers",
    "SELECT 1 FROM DUAL",
    "( SELECT 1 )",
    "SELECT 1 a",  # sqlglot reads an alias; it is one here
    # valid syntax sqlglot alone does not read; the classifier reads it
    "SELECT * FROM shop.orders LOCK IN SHARE MODE",
    "SELECT * FROM shop.orders WHERE id = 1 FOR UPDATE SKIP LOCKED",
    "SELECT COUNT(*) FROM shop.orders INTO @n",
    "SELECT 1 INTO @a",
    "SELECT id INTO @a FROM corpus.items WHERE id = 1",
    "SELECT name FROM corpus.items ORDER BY qty DESC, name ASC LIMIT 3",
    "SELECT a.name, b.name FROM corpus.items a JOIN corpus.items b ON a.qty = b.qty AND "
    "a.id < b.id",
    "SELECT 'a\"b'",  # a double quote inside a string changes nothing
    # the server's own functions, however they may be written (server_functions.py)
    "SELECT CONCAT ('a', 'b'), LEFT ('abc', 1), `concat`('a', 'b')",
    "SELECT ST_AsText(POINT(1, 2)), ST_AsText(LINESTRING(POINT(0, 0), POINT(1, 1)))",
    "SELECT INET6_NTOA(INET6_ATON('::1')), IS_IPV4('10.0.0.1'), SYS_GUID()",
    "SELECT NVL(NULL, 1), DECODE_ORACLE(1, 1, 'one', 'other')",
    "SELECT DATE(created), HOUR(created), REPEAT('x', 2), TIMESTAMPADD(DAY, 1, created) "
    "FROM shop.orders",
    """SELECT JSON_VALUE('{"a": 1}', '$.a'), REGEXP_SUBSTR(name, '[A-Z]') FROM """
    "shop.customers",
    "SELECT id, NTILE(2) OVER (ORDER BY id), MEDIAN(total) OVER () FROM shop.orders",
    # MariaDB's ANALYZE runs the statement: it is decided as that statement
    "ANALYZE SELECT * FROM shop.orders",
)

# --------------------------------------------------------------- agent writes, good

WRITES = _cases(
    ALLOW,
    "INSERT INTO corpus.items (id, name, qty, price) VALUES (100, 'widget', 5, 9.99)",
    "INSERT INTO corpus.items (id, name, qty, price) VALUES (101, 'gadget', 1, 19.99), "
    "(102, 'doohickey', 0, 4.50)",
    "INSERT INTO corpus.items SET id = 103, name = 'sprocket', qty = 2",
    "INSERT IGNORE INTO corpus.items (id, name) VALUES (1, 'duplicate')",
    "INSERT INTO corpus.items (id, name, qty) VALUES (1, 'apple', 7) ON DUPLICATE KEY "
    "UPDATE qty = VALUES(qty)",
    "INSERT INTO corpus.items (id, name, qty) VALUES (2, 'pear', 3) ON DUPLICATE KEY "
    "UPDATE qty = qty + 1, updated = NOW()",
    "INSERT INTO corpus.stock (item_id, warehouse, qty) SELECT id, 'north', qty FROM "
    "corpus.items WHERE id >= 100",
    "INSERT INTO corpus.notes (item_id, body) VALUES (1, 'restocked on Monday')",
    "INSERT INTO corpus.notes (item_id, body) VALUES (2, 'it''s fragile; handle with care')",
    "INSERT INTO corpus.notes (item_id, body) VALUES (3, 'DROP TABLE corpus.items; -- text')",
    "INSERT INTO corpus.notes (item_id, body) VALUES (1, '/*! not a comment */ in a string')",
    "INSERT INTO corpus.items (id, name, tags) VALUES (104, 'json', JSON_ARRAY('red', 'blue'))",
    """INSERT INTO corpus.items (id, name, tags) VALUES (105, 'obj', '{"color": "red"}')""",
    "INSERT INTO corpus.notes VALUES (DEFAULT, 1, 'x')",
    "INSERT INTO corpus.notes (item_id, body) VALUES (4, 'x') RETURNING id",
    "INSERT INTO corpus.notes (body) SELECT name FROM shop.customers WHERE id = 1",
    "UPDATE corpus.items SET qty = qty - 1 WHERE id = 1",
    "UPDATE corpus.items SET price = price * 1.1 WHERE qty > 0 AND price < 100",
    "UPDATE corpus.items SET updated = NOW() WHERE id IN (1, 2, 3)",
    "UPDATE corpus.items SET qty = 0 WHERE id IN (SELECT item_id FROM corpus.stock WHERE qty = 0)",
    "UPDATE corpus.items SET name = 'renamed' WHERE id = 3 LIMIT 1",
    "UPDATE corpus.items SET qty = qty + 1 WHERE name LIKE 'a%' ORDER BY id LIMIT 5",
    "UPDATE corpus.items SET tags = JSON_SET(COALESCE(tags, '{}'), '$.sale', true) WHERE id = 2",
    "UPDATE corpus.items SET qty = 5 WHERE id = 1 AND 1 = 1",  # the AND keeps it narrow
    "UPDATE corpus.items SET qty = 1 WHERE TRUE AND id = 4",
    "UPDATE corpus.items SET qty = 3 WHERE NOT (id <> 4)",
    "update corpus.items set qty = 8 where id = 2",
    "DELETE FROM corpus.notes WHERE id = 999",
    "DELETE FROM corpus.notes WHERE item_id = 3 AND body LIKE 'DROP%'",
    "DELETE FROM corpus.stock WHERE qty = 0 LIMIT 10",
    "DELETE FROM corpus.notes WHERE item_id IN (SELECT id FROM corpus.items WHERE qty = 0)",
    "DELETE FROM corpus.notes WHERE item_id NOT IN (SELECT id FROM corpus.items) ORDER BY "
    "id LIMIT 100",
    "DELETE FROM corpus.items WHERE id = 102",
    "DELETE FROM corpus.notes WHERE id > 1000 RETURNING id",
    "DELETE FROM corpus.notes WHERE id = 1 OR id = 2",
    "DELETE FROM corpus.notes WHERE body IS NULL",
    "DELETE FROM corpus.items WHERE id = 1000 --1",  # `--1` is minus minus one: id = 1001
    "delete from corpus.notes where id = 1001",
    "DELETE FROM corpus.items WHERE id = 1 XOR 1",  # every row but one, not every row
    "DELETE FROM corpus.notes WHERE id = @id",
    "INSERT INTO corpus.items (id, name) VALUES (106, 'x') ON DUPLICATE KEY UPDATE name = 'y'",
    # priority and IGNORE modifiers change nothing the policy decides on
    "UPDATE LOW_PRIORITY corpus.items SET qty = 0 WHERE id = 1",
    "DELETE LOW_PRIORITY QUICK IGNORE FROM corpus.notes WHERE id = 1000",
    "INSERT HIGH_PRIORITY INTO corpus.notes (item_id, body) VALUES (1, 'x')",
    "SET STATEMENT max_statement_time = 1 FOR SELECT 1",
)

# ------------------------------------------ DELETE/UPDATE with no or an always-true WHERE

WITHOUT_WHERE = [
    *_cases(
        "delete-without-where",
        "DELETE FROM corpus.items",
        "DELETE FROM corpus.items WHERE 1=1",
        "DELETE FROM corpus.items WHERE 1 = 1",
        "DELETE FROM corpus.items WHERE TRUE",
        "DELETE FROM corpus.items WHERE 1",
        "DELETE FROM corpus.items WHERE 'a' = 'a'",
        "DELETE FROM corpus.items WHERE id = id",
        "DELETE FROM corpus.items WHERE name = name",
        "DELETE FROM corpus.items WHERE id = 5 OR 1 = 1",
        "DELETE FROM corpus.items WHERE 1 = 1 OR id = 5",
        "DELETE FROM corpus.items WHERE id = 5 OR TRUE",
        "DELETE FROM corpus.items WHERE NOT 0",
        "DELETE FROM corpus.items WHERE NOT FALSE",
        "DELETE FROM corpus.items WHERE (1 = 1)",
        "DELETE FROM corpus.items WHERE 1 = 1 AND 2 = 2",
        "DELETE FROM corpus.items WHERE 2 > 1",
        "DELETE FROM corpus.items WHERE 1 <> 0",
        "DELETE FROM corpus.items ORDER BY id LIMIT 100",
        "DELETE FROM corpus.items LIMIT 1",
        "DELETE FROM orders",  # shop.orders, the session's schema
        "delete from corpus.items where 1=1",
        "DELETE FROM `corpus`.`items` WHERE 1=1",
        "DELETE FROM corpus . items WHERE 1 = 1",
        "DELETE FROM corpus.items /* all */ WHERE /* really */ 1=1",
        "DELETE/**/FROM/**/corpus.items",
        "DELETE FROM corpus.items -- WHERE id = 1",
        "DELETE FROM corpus.items # WHERE id = 1",
        "DELETE FROM corpus.items /* WHERE id = 1 */",
        "DELETE FROM corpus.items\nWHERE 1 = 1\n",
        "DELETE FROM corpus.items WHERE items.id = id",
        "DELETE FROM corpus.items WHERE corpus.items.id = corpus.items.id",
        "DELETE FROM corpus.items WHERE id IS NOT NULL OR id IS NULL",
        "DELETE FROM corpus.items WHERE id = 5 OR id <> 5",
        "DELETE FROM corpus.items WHERE EXISTS (SELECT 1)",  # not tied to the row
        "DELETE FROM corpus.items WHERE @all",
        "DELETE QUICK FROM corpus.items",
        "DELETE IGNORE FROM corpus.items WHERE 1",
        "WITH x AS (SELECT 1 AS n) DELETE FROM corpus.items",
        "SET STATEMENT max_statement_time = 1 FOR DELETE FROM corpus.items",
        "ANALYZE DELETE FROM corpus.items",
        # EXPLAIN is decided as the statement it explains (though the server runs none)
        "EXPLAIN DELETE FROM corpus.items",
        # a pattern of only '%' matches every name but NULL, as name = name does
        "DELETE FROM corpus.items WHERE name LIKE '%'",
        "DELETE FROM corpus.items WHERE name LIKE '%%'",
        "DELETE FROM corpus.items WHERE id = 2 OR name LIKE _utf8mb4'%'",
        "DELETE FROM corpus.items WHERE name LIKE '%' ESCAPE '!'",
        "DELETE FROM corpus.items WHERE name LIKE CONCAT('%', '')",
        "DELETE FROM corpus.items WHERE name LIKE @corpus_pattern",
        # so does a REGEXP pattern that matches the empty string (the server searches)
        "DELETE FROM corpus.items WHERE name REGEXP ''",
        "DELETE FROM corpus.items WHERE name REGEXP '.*'",
        "DELETE FROM corpus.items WHERE name RLIKE '^'",
        "DELETE FROM corpus.items WHERE name REGEXP 'x*'",
        "DELETE FROM corpus.items WHERE name REGEXP 'a|'",
        "DELETE FROM corpus.items WHERE name REGEXP '[[:alpha:]]*'",
        "DELETE FROM corpus.items WHERE name REGEXP ' '",  # empty with EXTENDED flags
        "DELETE FROM corpus.items WHERE id = 3 OR name REGEXP BINARY '$'",
        "DELETE FROM corpus.items WHERE name REGEXP @corpus_pattern",
        r"DELETE FROM corpus.items WHERE name REGEXP '\\Q\\E'",  # not read: may be empty
    ),
    *_cases(
        "update-without-where",
        "UPDATE corpus.items SET qty = 0",
        "UPDATE corpus.items SET qty = 0 WHERE 1=1",
        "UPDATE corpus.items SET qty = 0 WHERE TRUE",
        "UPDATE corpus.items SET qty = 0 WHERE 1",
        "UPDATE corpus.items SET price = 0 WHERE 'a' = 'a'",
        "UPDATE corpus.items SET qty = 0 WHERE id = id",
        "UPDATE corpus.items SET name = 'x' WHERE name = name",
        "UPDATE corpus.items SET qty = 0 WHERE qty > 5 OR 1 = 1",
        "UPDATE corpus.items SET qty = 0 WHERE NOT 0",
        "UPDATE corpus.items SET qty = 0 WHERE TRUE OR FALSE",
        "UPDATE corpus.items SET qty = 0 ORDER BY id LIMIT 10",
        "UPDATE corpus.items SET qty = 0 LIMIT 1",
        "UPDATE corpus.items AS i SET i.qty = 0",
        "UPDATE corpus.items SET qty = 0 -- WHERE id = 1",
        "update corpus.items set qty = 0 where 1 = 1",
        "UPDATE orders SET total = 0",
        "UPDATE corpus.items SET qty = 0 WHERE qty > 5 OR qty <= 5",
        "UPDATE corpus.items SET qty = 0 WHERE name LIKE '%'",
        "UPDATE corpus.items SET qty = 0 WHERE name REGEXP '(abc)?'",
        "UPDATE IGNORE corpus.items SET qty = 0",
        # literals are not evaluated (one decision per statement shape): a literal may be
        # true, so `x OR FALSE` counts as always true
        "UPDATE corpus.items SET qty = 2 WHERE id = 4 OR FALSE",
        # joined, but no WHERE: the missing WHERE is found first
        "UPDATE corpus.items i JOIN corpus.stock s ON s.item_id = i.id SET i.qty = s.qty",
    ),
    Case(
        "DELETE i FROM corpus.items i JOIN corpus.stock s ON s.item_id = i.id",
        "delete-without-where",
    ),
    Case(
        "DELETE i FROM corpus.items i JOIN corpus.stock s ON s.item_id = i.id WHERE 1 = 1",
        "delete-without-where",
    ),
]

# ---------------------------------------------------------- multi-table writes, REPLACE

MULTI_TABLE = _cases(
    "multi-table-write",
    "UPDATE corpus.items i JOIN corpus.stock s ON s.item_id = i.id SET i.qty = s.qty WHERE "
    "s.warehouse = 'north'",
    "UPDATE corpus.items, corpus.stock SET corpus.items.qty = corpus.stock.qty WHERE "
    "corpus.items.id = corpus.stock.item_id",
    "UPDATE corpus.items i LEFT JOIN corpus.stock s ON s.item_id = i.id SET i.qty = 0 WHERE "
    "s.item_id IS NULL",
    "DELETE i FROM corpus.items i JOIN corpus.stock s ON s.item_id = i.id WHERE s.qty = 0",
    "DELETE i, s FROM corpus.items i JOIN corpus.stock s ON s.item_id = i.id WHERE i.id = 3",
    "DELETE FROM corpus.items USING corpus.items JOIN corpus.stock ON corpus.stock.item_id = "
    "corpus.items.id WHERE corpus.stock.qty = 0",
)

REPLACE = _cases(
    "replace",
    "REPLACE INTO corpus.items (id, name) VALUES (1, 'apple')",
    "REPLACE INTO corpus.items SET id = 2, name = 'pear'",
    "REPLACE INTO corpus.stock (item_id, warehouse, qty) SELECT id, 'south', 0 FROM "
    "corpus.items WHERE id = 1",
    "replace into corpus.items values (3, 'x', 0, 0, NULL, NULL)",
)

# ------------------------------------------------------- SHOW, DESCRIBE, EXPLAIN, USE

SHOW = [
    *_cases(
        ALLOW,
        "SHOW COLLATION WHERE Charset = 'utf8mb4'",
        "SHOW DATABASES",
        "SHOW SCHEMAS",
        "SHOW TABLES",
        "SHOW FULL TABLES FROM shop",
        "SHOW TABLES FROM corpus LIKE 'i%'",
        "SHOW COLUMNS FROM shop.orders",
        "SHOW FULL COLUMNS FROM orders FROM shop",
        "SHOW INDEX FROM shop.orders",
        "SHOW CREATE TABLE shop.orders",
        "SHOW CREATE DATABASE shop",
        "SHOW CREATE VIEW corpus.in_stock",
        "SHOW TABLE STATUS FROM shop",
        "SHOW TABLE STATUS LIKE 'orders'",
        "SHOW VARIABLES LIKE 'sql_mode'",
        "SHOW SESSION VARIABLES LIKE 'character_set%'",
        "SHOW GLOBAL VARIABLES LIKE 'max_connections'",
        "SHOW STATUS LIKE 'Threads%'",
        "SHOW GLOBAL STATUS LIKE 'Uptime'",
        "SHOW PROCESSLIST",
        "SHOW FULL PROCESSLIST",
        "SHOW WARNINGS",
        "SHOW WARNINGS LIMIT 5",
        "SHOW ERRORS",
        "SHOW ENGINES",
        "SHOW ENGINE INNODB STATUS",
        "SHOW CHARACTER SET LIKE 'utf8%'",
        "SHOW TRIGGERS FROM corpus",
        "SHOW PROCEDURE STATUS WHERE Db = 'corpus'",
        "SHOW EVENTS FROM corpus",
        "SHOW PLUGINS",
        "SHOW OPEN TABLES FROM shop",
        "SHOW PRIVILEGES",
        "SHOW MASTER STATUS",
        "show tables",
        "DESCRIBE shop.orders",
        "DESC shop.customers",
        "EXPLAIN shop.orders",
        "EXPLAIN SELECT * FROM shop.orders WHERE customer_id = 1",
        "EXPLAIN FORMAT=JSON SELECT * FROM shop.orders WHERE id = 1",
        "EXPLAIN EXTENDED SELECT 1",
        "DESCRIBE SELECT id FROM shop.orders",
        "EXPLAIN UPDATE corpus.items SET qty = 1 WHERE id = 1",
        "DESCRIBE shop.orders total",
        "SHOW TABLES IN corpus",
        "SHOW CREATE PROCEDURE corpus.in_stock_count",
        "SHOW FUNCTION STATUS",
        "SHOW SLAVE STATUS",
        # words the server reads as others the parser knows
        "SHOW COUNT(*) WARNINGS",
        "SHOW KEYS FROM corpus.items",
        "SHOW INDEXES FROM corpus.items",
        "SHOW FULL FIELDS FROM items IN corpus",
        "SHOW CREATE SCHEMA corpus",
        # the profile of one of the session's own statements, by its SHOW PROFILES number
        "SHOW PROFILES",
        "SHOW PROFILE",
        "SHOW PROFILE FOR QUERY 1",
        "SHOW PROFILE CPU, BLOCK IO FOR QUERY 1 LIMIT 5 OFFSET 1",
        "show profile all for query 2 limit 1, 2",
        "SHOW PROFILE LIMIT 3",
        "USE corpus",
        "USE `shop`",
    ),
    # MariaDB's EXPLAIN ... FOR CONNECTION: the plan of a statement another session runs (no
    # such session in the corpus: the server answers an error)
    *_cases(
        ALLOW,
        "SHOW EXPLAIN FOR 12",
        "SHOW EXPLAIN FORMAT=JSON FOR 12",
        "show analyze format = json for 12",
        "EXPLAIN FOR CONNECTION 12",
        live=False,
    ),
]

# --------------------------------------------------------------------- transactions

TRANSACTIONS = _cases(
    ALLOW,
    "BEGIN",
    "START TRANSACTION",
    "START TRANSACTION READ ONLY",
    "START TRANSACTION WITH CONSISTENT SNAPSHOT",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT sp1",
    "BEGIN; UPDATE corpus.items SET qty = qty - 1 WHERE id = 1; COMMIT",
    "START TRANSACTION; SAVEPOINT sp1; UPDATE corpus.items SET qty = qty + 1 WHERE id = 1; "
    "ROLLBACK TO SAVEPOINT sp1; RELEASE SAVEPOINT sp1; COMMIT",
    "SET autocommit = 0; UPDATE corpus.items SET qty = 1 WHERE id = 3; COMMIT",
    "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SET SESSION TRANSACTION READ ONLY",
    "BEGIN WORK",
    "COMMIT WORK",
    "COMMIT AND CHAIN",
    "ROLLBACK AND NO CHAIN",
)

# ----------------------------------------------------------------------------- SET

SET_ALLOWED = _cases(
    ALLOW,
    "SET autocommit = 0",
    "SET autocommit=1",
    "SET SESSION profiling = 1, profiling_history_size = 50",
    "SET lc_messages = 'de_DE'",
    "SET SESSION lc_messages = en_US",
    "SET @@autocommit = 1",
    "SET SESSION sql_mode = 'STRICT_TRANS_TABLES'",
    "SET sql_mode = 'ANSI_QUOTES'",
    "SET @@session.sql_mode = ''",
    "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'",
    "SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')",
    "SET @@SESSION.sql_mode = CONCAT(CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), "
    "',NO_AUTO_VALUE_ON_ZERO')",
    "SET NAMES utf8mb4",
    "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'",
    "SET NAMES latin1",
    "SET NAMES ascii",
    "SET character_set_client = utf8mb4",
    "SET character_set_results = gbk",  # results only: statements are still read as utf8mb4
    "SET character_set_results = NULL",
    "SET time_zone = '+00:00'",
    "SET tx_isolation = 'READ-COMMITTED'",
    "SET @x = 1",
    "SET @name := 'Ada'",
    "SET @a = 1, @b = 2",
    "SET @cnt = (SELECT COUNT(*) FROM shop.orders)",
    "SET max_statement_time = 5",
    "SET sql_select_limit = 100",
    "SET group_concat_max_len = 65536",
    "SET SESSION wait_timeout = 600",
    "SET foreign_key_checks = 0",
    "SET unique_checks = 1",
    "SET sql_safe_updates = 1",
    "SET lc_time_names = 'en_US'",
    "SET div_precision_increment = 6",
    "SET optimizer_switch = 'index_merge=off'",
    "SET LOCAL sql_notes = 0",
    "SET SESSION sql_safe_updates = 0, @b = 3",
    "set names utf8mb4",
    "SET sql_mode = DEFAULT",
    "SET sql_mode = 'NO_BACKSLASH_ESCAPES', NAMES utf8mb4",  # one statement: nothing after
    "SET collation_connection = gbk_chinese_ci",  # the client's bytes are still utf8mb4
    "SET character_set_server = latin1",  # the default of new databases (DBD::MariaDB)
    "SET SESSION auto_increment_increment = 1, auto_increment_offset = 1",  # Magento
    "SET SESSION innodb_strict_mode = 1",  # Drupal
)

SET_REFUSED = [
    *_cases(
        "set-variable",
        "SET sql_log_bin = 0",
        "SET SESSION sql_log_bin = 0",
        "SET @@sql_log_bin = 0",
        "SET @@session.sql_log_off = 1",
        "SET sql_log_off = ON",
        "SET SESSION pseudo_thread_id = 5",
        "SET skip_replication = 1",
        "SET SESSION binlog_format = 'STATEMENT'",
        "SET character_set_database = latin1",
        "SET sql_mode = 'TRADITIONAL', sql_log_bin = 0",
        "SET SESSION gtid_domain_id = 7",
        "set sql_log_bin=0",
        "SET sql_log_bin := 0",
        "SET @@local.sql_log_bin = 0",
        # SET STATEMENT sets its variables for one statement: they are decided too
        "SET STATEMENT pseudo_thread_id = 5 FOR SELECT 1",
        "SET STATEMENT sql_log_bin = 0 FOR DELETE FROM corpus.items WHERE id = 1",
        # a comment after the dot: the server still reads @@global.max_connections
        "SET @@global./**/max_connections = 1999",
        "SET @@session./**/character_set_client = gbk",
        "SET @@session./**/sql_log_bin = 0",
    ),
    *_cases(
        "set-global",
        "SET GLOBAL general_log = 'ON'",
        "SET GLOBAL max_connections = 1999",
        "SET @@global.slow_query_log = 1",
        "SET @@GLOBAL.sql_mode = 'ANSI'",
        "SET GLOBAL local_infile = 1",
        "SET GLOBAL event_scheduler = ON",
        "SET @@global.init_connect = 'DELETE FROM corpus.items'",
        "SET PERSIST max_connections = 1999",
        "SET PERSIST_ONLY max_connections = 1999",
        "SET @@persist.max_connections = 1999",
        "SET autocommit = 1, GLOBAL max_connections = 1999",
        "SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "set global general_log=1",
        "SET GLOBAL sql_mode = DEFAULT",
        "SET @@session.time_zone = '+00:00', @@global.time_zone = '+00:00'",
        "SET @@global . max_connections = 1999",
    ),
]

CHARSET = [
    *_cases(
        "charset",
        "SET NAMES gbk",
        "SET NAMES 'sjis'",
        "SET NAMES big5 COLLATE big5_chinese_ci",
        "SET CHARACTER SET cp932",
        "SET character_set_client = gb18030",
        "SET SESSION character_set_client = 'GBK'",
        "SET @@character_set_client = sjis",
        "SET character_set_client = @cs",  # not a value the gateway can know
        "set names gbk",
        "SELECT 1; SET NAMES gbk",
        "SET CHARSET sjis",
        "SET SESSION CHARACTER SET gbk",
        "SET NAMES gbk COLLATE gbk_bin",
        "SET @@session.character_set_client = gbk",
        "SET NAMES utf8mb4, character_set_client = gbk",
        "SET NAMES 'gb' 'k'",
        # the server's default character set: one the gateway does not know
        "SET NAMES DEFAULT",
        "SET CHARACTER SET DEFAULT",
        "SET character_set_client = DEFAULT",
        # result names in a form masking cannot match (UTF-16, UTF-32, filename's @002d)
        "SET character_set_results = utf16",
        "SET SESSION character_set_results = 'utf32'",
        "SET @@character_set_results = ucs2",
        "SET character_set_results = utf16le",
        "SET @@session.character_set_results = filename",
        "SET character_set_results = DEFAULT",
        "SET character_set_results = @cs",
        "SET character_set_results = 63",
        "SET NAMES utf16",
        # a character set for one statement: the gateway reads it in the session's
        "SET STATEMENT character_set_results = utf16 FOR SELECT 1",
        "SET STATEMENT character_set_results = utf8mb4 FOR SELECT 1",
        "SET STATEMENT character_set_connection = latin1 FOR SELECT 1",
        "SET STATEMENT character_set_client = latin1 FOR SELECT 1",
        # the connection's becomes the current database's, which the gateway cannot see
        "SET CHARACTER SET utf8mb4",
        "SET CHARSET latin1",
        "SET CHARACTER SET latin1; SELECT 1",
    ),
    *_cases(
        ALLOW,
        "SET character_set_results = binary",
        "SET character_set_results = latin1",
        "SET character_set_results = utf8mb4; SELECT 1",
        live=False,
    ),
    # a statement that changes how the server reads bytes must end its text
    *_cases(
        "lexing-state",
        "SET NAMES utf8mb4; SELECT 1",
        "SET sql_mode = 'ANSI_QUOTES'; SELECT 1",
        r"SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT 'a\\'",
        "PREPARE s FROM 'SET NAMES utf8mb4'",
        "PREPARE s FROM 'SET sql_mode = ''ANSI_QUOTES'''",
        "PREPARE s FROM 'SET character_set_results = latin1'",  # masking reads result names
        r"SET @@session . sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT 'a\\'",
    ),
    *_cases(
        ALLOW,
        "SELECT 1; SET NAMES utf8mb4",
        "SELECT 1; SET sql_mode = 'ANSI_QUOTES'",
    ),
]

# ------------------------------------------------------------------------ PREPARE

SQL_MODE = [
    # modes under which the server reads the same bytes differently
    *_cases(
        "sql-mode",
        "SET sql_mode = 'MSSQL'",
        "SET sql_mode = 'ORACLE'",
        "SET SESSION sql_mode = 'ANSI'",
        "SET @@sql_mode = 'PIPES_AS_CONCAT'",
        "SET sql_mode = 'STRICT_TRANS_TABLES,HIGH_NOT_PRECEDENCE'",
        "SET sql_mode = IGNORE_SPACE",
        "SET sql_mode = 'EMPTY_STRING_IS_NULL'",
        "SET @@session.sql_mode := 'POSTGRESQL'",
        "SET sql_mode = 4",
        "SET sql_mode = CONCAT(@@sql_mode, ',PIPES_AS_CONCAT')",
        "SET sql_mode = CONCAT(@@sql_mode, ',', 'ORACLE')",
        "SET sql_mode = CONCAT_WS(',', @@sql_mode, 'ORACLE')",
        "SET sql_mode = (SELECT REPLACE(@@sql_mode, 'ONLY_FULL_GROUP_BY', '') FROM dual)",
        "SET SQL_MODE = @OLD_SQL_MODE",  # a variable's value is not known
        'SET sql_mode = "ORACLE"',
        "SET sql_mode = REPLACE(@@sql_mode, 'STRICT_TRANS_TABLES', 'ORACLE')",
        "SET sql_mode = REPLACE(@@sql_mode, '_QUOTES', '')",  # ANSI_QUOTES would be ANSI
        "SET sql_mode = CONCAT(REPLACE(@@sql_mode, 'ONLY_FULL_GROUP_BY', ''), ',ANSI')",
        "SET STATEMENT sql_mode = 'PIPES_AS_CONCAT' FOR SELECT 'a' || 'b'",
        # the server reads the text it runs under the statement's sql_mode
        "SET STATEMENT sql_mode = 'NO_BACKSLASH_ESCAPES' FOR EXECUTE IMMEDIATE 'SELECT 1'",
        "SET STATEMENT sql_mode = '' FOR PREPARE corpus_s FROM 'SELECT 1'",
    ),
    # MSSQL's [names]: not MariaDB syntax in any other mode, refused in every mode
    *_cases(
        NOT_UNDERSTOOD,
        "SAVEPOINT [a'];DELETE FROM corpus.items;SELECT 1 AS [']",
        "SELECT v[a/*] FROM corpus.items [*/]",
        "DELETE FROM corpus.items WHERE id IN (SELECT 5 [x/*] FROM dual) OR 1=1 OR id IN "
        "(SELECT 5 [*/] )",
    ),
    *_cases(
        ALLOW,
        "SET sql_mode = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'",
        "SET SESSION sql_mode = 'traditional,ansi_quotes'",
        "SET sql_mode = ''",
        "SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'ONLY_FULL_GROUP_BY', '')",
        "SET sql_mode = @@sql_mode",
        "SET sql_mode = CONCAT(@@global.sql_mode, ',STRICT_ALL_TABLES')",
        "SET sql_mode = @@GLOBAL.sql_mode",
        "SET sql_mode = 0",
        # double quotes: a string, or under ANSI_QUOTES a name, the same mode either way
        'SET sql_mode = "NO_ENGINE_SUBSTITUTION"',
        'SET SESSION sql_mode = ""',
        "SET sql_mode = (SELECT REPLACE(@@sql_mode, 'ONLY_FULL_GROUP_BY', ''))",
        "SET sql_mode = REPLACE(@@sql_mode, 'ONLY_FULL_GROUP_BY,', '')",
        "SET sql_mode = REPLACE(REPLACE(@@sql_mode, 'ONLY_FULL_GROUP_BY', ''), ',,', ',')",
        "SET sql_mode = CONCAT_WS(',', @@sql_mode, 'STRICT_TRANS_TABLES')",
        "SET STATEMENT sql_mode = 'NO_BACKSLASH_ESCAPES' FOR SELECT 1",
        "SELECT JSON_VALUE('[1, 2]', '$[1]')",
    ),
]

CREDENTIALS = _cases(
    # password hashes of the server's accounts, the gateway's backend credential's too
    "credentials",
    "SHOW GRANTS",
    "show grants",
    # the parser reads none of these; each shows an account's password hash
    "SHOW GRANTS FOR CURRENT_USER()",
    "SHOW GRANTS FOR 'corpus_victim'@'%'",
    "SHOW GRANTS FOR corpus_victim@localhost",
    "SHOW CREATE USER corpus_victim",
    "SHOW CREATE USER 'corpus_victim'@'%'",
    "SHOW CREATE USER CURRENT_USER",
    "SELECT User, Host FROM mysql.user",
    "SELECT User, authentication_string FROM mysql.user",
    "SELECT * FROM mysql.global_priv",
    "TABLE `mysql`.`user`",
    "SELECT 1 FROM corpus.items WHERE EXISTS (SELECT * FROM mysql.user WHERE User = 'root')",
    "INSERT INTO corpus.notes (body) SELECT User FROM mysql.user",
    "USE mysql; SELECT Priv FROM global_priv",
    # past passwords' hashes (the password_reuse_check plugin)
    "SELECT * FROM mysql.password_reuse_check_history",
    # the user names and passwords, in the clear, of the servers CREATE SERVER defined
    "SELECT Server_name, Host, Username, Password FROM mysql.servers",
    "SELECT * FROM `mysql`.`servers`",
    "INSERT INTO corpus.notes (body) SELECT Password FROM mysql.servers",
    "CREATE TABLE corpus.servers_copy AS SELECT * FROM mysql.servers",
    "USE mysql; SELECT Password FROM servers",
)

PREPARE = [
    *_cases(
        ALLOW,
        "PREPARE s FROM 'SELECT * FROM shop.orders WHERE id = ?'",
        "PREPARE s FROM 'DELETE FROM corpus.items WHERE id = ?'",
        "PREPARE s FROM 'SELECT ''a'''",
        "PREPARE s FROM 'SELECT 1'; EXECUTE s; DEALLOCATE PREPARE s",
        "SET @a = 1; PREPARE s FROM 'SELECT ? + 1'; EXECUTE s USING @a; DEALLOCATE PREPARE s",
    ),
    *_cases(ALLOW, "EXECUTE s", "EXECUTE s USING @a, @b", "DEALLOCATE PREPARE s", live=False),
    Case("PREPARE s FROM 'DELETE FROM corpus.items'", "delete-without-where"),
    Case("PREPARE s FROM 'UPDATE corpus.items SET qty = 0 WHERE 1 = 1'", "update-without-where"),
    Case("PREPARE s FROM 'DROP TABLE corpus.items'", "schema-change"),
    Case("PREPARE s FROM 'TRUNCATE corpus.items'", "truncate"),
    Case("PREPARE s FROM 'GRANT ALL ON *.* TO corpus_victim'", "privileges"),
    Case("PREPARE s FROM 'SELECT 1 /*! , 2 */'", NOT_UNDERSTOOD),
    Case("PREPARE s FROM 'SET NAMES gbk'", "charset"),
    Case("PREPARE s FROM _utf8mb4'DELETE FROM corpus.items'", "delete-without-where"),
    Case("PREPARE s FROM 'CALL corpus.restock(1)'", "call"),
    Case("PREPARE s FROM 'SELECT 1; DELETE FROM corpus.items'", NOT_UNDERSTOOD),
    Case("PREPARE s FROM 'DELETE FROM corpus.items WHERE id = 1e0OR(1)'", NOT_UNDERSTOOD),
    Case("DROP PREPARE s", ALLOW, live=False),
    *_cases(
        "prepare-from-variable",
        "PREPARE s FROM @sql",
        "PREPARE s FROM @`sql`",
        "prepare s from @q",
        "PREPARE s FROM CONCAT('DELETE FROM corpus.', 'items')",  # MariaDB: any expression
        "SET @q = 'DELETE FROM corpus.items'; PREPARE s FROM @q; EXECUTE s",
    ),
    # MariaDB's EXECUTE IMMEDIATE runs a text at once: decided like PREPARE ... FROM
    Case("EXECUTE IMMEDIATE 'SELECT 1'", ALLOW),
    Case("EXECUTE IMMEDIATE 'DELETE FROM corpus.items'", "delete-without-where"),
    Case("EXECUTE IMMEDIATE @q", "prepare-from-variable"),
    Case("EXECUTE IMMEDIATE CONCAT('TRUNCATE ', 'corpus.items')", "prepare-from-variable"),
    # ... with the values of its USING: a LIKE pattern of only '%' matches every row, and
    # so may a value the gateway does not read (a variable, an expression)
    *_cases(
        "delete-without-where",
        "EXECUTE IMMEDIATE 'DELETE FROM corpus.items WHERE name LIKE ?' USING '%'",
        "EXECUTE IMMEDIATE 'DELETE FROM corpus.items WHERE name LIKE ? OR id = ?' USING '%%', 1",
        "EXECUTE IMMEDIATE 'DELETE FROM corpus.items WHERE name LIKE ?' USING @corpus_pattern",
        "EXECUTE IMMEDIATE 'DELETE FROM corpus.items WHERE name LIKE ?' USING CONCAT('%', '')",
    ),
    Case(
        "EXECUTE IMMEDIATE 'UPDATE corpus.items SET qty = ? WHERE name LIKE ?' USING 0, '%'",
        "update-without-where",
    ),
    *_cases(
        ALLOW,
        "EXECUTE IMMEDIATE 'DELETE FROM corpus.items WHERE name LIKE ?' USING 'zzz%'",
        "EXECUTE IMMEDIATE 'DELETE FROM corpus.items WHERE name LIKE ? AND id = ?' USING '%', 0",
        "PREPARE s FROM 'DELETE FROM corpus.items WHERE name LIKE ?'",
        "PREPARE s FROM 'DELETE FROM corpus.items WHERE name REGEXP ?'",
        "EXECUTE IMMEDIATE 'DELETE FROM corpus.items WHERE name REGEXP ?' USING '^zzz'",
        # a REGEXP pattern that needs a character matches no empty value
        "DELETE FROM corpus.items WHERE name REGEXP '^zzz[0-9]+$'",
        "DELETE FROM corpus.items WHERE name REGEXP '^zzz[[:digit:]]+'",
        "DELETE FROM corpus.items WHERE id < 0 AND name NOT REGEXP '^[a-z]'",
        "DELETE FROM corpus.items WHERE name REGEXP NULL",
    ),
    Case(
        "EXECUTE IMMEDIATE 'DELETE FROM corpus.items WHERE name REGEXP ?' USING '.*'",
        "delete-without-where",
    ),
]

# ------------------------------------------------------------------------------ DDL

DDL = [
    *_cases(
        ALLOW,
        "CREATE TABLE corpus.t_new (id INT PRIMARY KEY, label VARCHAR(32))",
        "CREATE TABLE IF NOT EXISTS corpus.items_copy LIKE corpus.items",
        "CREATE TABLE corpus.big_orders AS SELECT * FROM shop.orders WHERE total > 50",
        "CREATE TEMPORARY TABLE tmp_totals AS SELECT customer_id, SUM(total) AS total FROM "
        "shop.orders GROUP BY customer_id",
        # a temporary table is the session's own: MariaDB drops no base table of its name
        "DROP TEMPORARY TABLE IF EXISTS tmp_totals",
        "drop temporary tables if exists tmp_totals, corpus.items",
        "CREATE OR REPLACE TEMPORARY TABLE corpus.stock (item_id INT)",
        "CREATE OR REPLACE TEMPORARY TABLE tmp_qty AS SELECT id, qty FROM corpus.items",
        "CREATE INDEX idx_items_qty ON corpus.items (qty)",
        "CREATE UNIQUE INDEX idx_label ON corpus.t_new (label)",
        "CREATE VIEW corpus.v_orders AS SELECT id, total FROM shop.orders",
        "CREATE DATABASE IF NOT EXISTS corpus_archive",
        "CREATE SCHEMA corpus_archive2",
    ),
    *_cases(
        "schema-change",
        # MariaDB drops the existing view or index first: another definition takes its place
        "CREATE OR REPLACE VIEW corpus.in_stock AS SELECT 'hijacked' AS name",
        "CREATE OR REPLACE INDEX idx_name ON corpus.items (qty)",
        "DROP TABLE corpus.stock",
        "DROP TABLE IF EXISTS corpus.stock",
        "drop table corpus.items, corpus.stock",
        "DROP TEMPORARY TEMPORARY TABLE corpus.stock",  # not the server's syntax: as DROP
        "ALTER TABLE corpus.items ADD COLUMN color VARCHAR(16)",
        "ALTER TABLE corpus.items DROP COLUMN price",
        "ALTER TABLE corpus.items RENAME TO corpus.items_old",
        "ALTER TABLE corpus.items ENGINE = InnoDB",
        "RENAME TABLE corpus.items TO corpus.items_old",
        "DROP INDEX idx_name ON corpus.items",
        "DROP VIEW corpus.in_stock",
        "DROP VIEW IF EXISTS corpus.in_stock",
        # MariaDB: drops the table and its rows first, like DROP TABLE
        "CREATE OR REPLACE TABLE corpus.items (id INT PRIMARY KEY)",
    ),
    # MariaDB: DROP DATABASE IF EXISTS, then CREATE DATABASE
    Case("CREATE OR REPLACE DATABASE corpus", "drop-database"),
    *_cases(
        "truncate",
        "TRUNCATE TABLE corpus.items",
        "TRUNCATE corpus.items",
        "truncate table corpus.stock",
        "TRUNCATE TABLE mysql.general_log",
    ),
    *_cases(
        "mysql-schema",
        # a view over the mysql schema can be written through
        "CREATE VIEW corpus.funcs AS SELECT * FROM mysql.func",
        "CREATE OR REPLACE VIEW corpus.users AS SELECT * FROM mysql.user WHERE 1 = 1",
    ),
    *_cases(
        "upsert-from-select",
        # updates every row the SELECT returns: here all of them
        "INSERT INTO corpus.items SELECT * FROM corpus.items ON DUPLICATE KEY UPDATE qty = -1",
        "insert into corpus.items select * from corpus.items on  duplicate  key update qty=0",
    ),
    *_cases(
        "drop-database",
        "DROP DATABASE corpus",
        "DROP SCHEMA corpus",
        "DROP DATABASE IF EXISTS corpus",
        "drop database `corpus`",
    ),
    *_cases(
        ALLOW,
        # engines that keep the rows in the server's own files; a column named engine
        "CREATE TABLE corpus.t_engine (id INT, engine VARCHAR(16)) ENGINE=Aria",
        "CREATE TABLE corpus.t_parts (id INT, connection INT) ENGINE=InnoDB PARTITION BY "
        "HASH (id) (PARTITION p0 ENGINE=InnoDB, PARTITION p1)",
        "CREATE TABLE corpus.t_memory (id INT) ENGINE 'MEMORY'",
        "SET default_storage_engine = InnoDB",
        "SET SESSION default_tmp_storage_engine = 'Aria'",
    ),
    *_cases(
        "storage-engine",
        # rows on another server, in the server's files or in other tables, all unseen
        "CREATE TABLE corpus.remote (id INT PRIMARY KEY, name VARCHAR(64)) ENGINE=FEDERATED "
        "CONNECTION='mysql://corpus_remote:remote-secret@127.0.0.1:3306/corpus/items'",
        "CREATE TABLE corpus.remote (id INT) ENGINE=FEDERATED CONNECTION='corpus_srv'",
        "CREATE TABLE corpus.passwd (line TEXT) ENGINE=CONNECT TABLE_TYPE=DOS "
        "FILE_NAME='/etc/passwd'",
        'CREATE TABLE corpus.remote (id INT) ENGINE=SPIDER COMMENT=\'srv "corpus_srv", '
        'table "items"\'',
        "CREATE TABLE corpus.merged (id INT) ENGINE=MRG_MyISAM",
        "create table corpus.remote (id int) engine 'federated'",
        "CREATE TABLE corpus.remote (id INT) ENGINE=InnoDB, ENGINE=`FEDERATED`",
        "CREATE TABLE corpus.remote (id INT) CONNECTION='corpus_srv'",
        "CREATE TABLE corpus.remote (id INT) PARTITION BY HASH (id) (PARTITION p0 "
        "ENGINE=FEDERATED CONNECTION='corpus_srv')",
        "CREATE TEMPORARY TABLE corpus.remote (id INT) ENGINE=FEDERATED CONNECTION='corpus_srv'",
        "CREATE OR REPLACE TABLE corpus.items (id INT) ENGINE=FEDERATED CONNECTION='corpus_srv'",
        # tables created without ENGINE take the session's default engine
        "SET default_storage_engine = FEDERATED",
        "SET SESSION default_tmp_storage_engine = 'CONNECT'",
        "SET @@session.default_storage_engine = `SPIDER`",
        "SET STATEMENT default_storage_engine = SPIDER FOR CREATE TABLE corpus.remote (id INT)",
    ),
    *_cases(
        "data-directory",
        # the table's files in a directory of the server's choosing, outside its datadir
        "CREATE TABLE corpus.elsewhere (id INT) PARTITION BY HASH (id) (PARTITION p0 "
        "DATA DIRECTORY = '/tmp')",
        "CREATE TABLE corpus.elsewhere (id INT) ENGINE=MyISAM PARTITION BY KEY (id) "
        "(PARTITION p0 DATA DIRECTORY '/tmp' INDEX DIRECTORY '/tmp')",
        "CREATE TABLE corpus.elsewhere (id INT) PARTITION BY RANGE (id) SUBPARTITION BY HASH "
        "(id) (PARTITION p0 VALUES LESS THAN MAXVALUE (SUBPARTITION s0 DATA DIRECTORY = "
        "'/tmp'))",
    ),
    *_cases(
        UNKNOWN,
        "ALTER VIEW corpus.in_stock AS SELECT 1 AS id",
        "ALTER DATABASE corpus CHARACTER SET latin1",
        "CREATE SEQUENCE corpus.seq1",
    ),
]

# -------------------------------------------------------------- stored code and CALL

STORED_CODE = [
    *_cases(
        "stored-code",
        "CREATE PROCEDURE corpus.restock(IN p_id INT) UPDATE corpus.items SET qty = qty + 10 "
        "WHERE id = p_id",
        # the body's DELETE is not run now; the CREATE PROCEDURE is refused first
        "CREATE PROCEDURE corpus.wipe() BEGIN DELETE FROM corpus.items; END",
        "CREATE DEFINER = `root`@`localhost` PROCEDURE corpus.p2() SELECT 1",
        "CREATE FUNCTION corpus.double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
        "CREATE OR REPLACE FUNCTION corpus.triple(x INT) RETURNS INT RETURN x * 3",
        "CREATE TRIGGER corpus.items_bd BEFORE DELETE ON corpus.items FOR EACH ROW SET "
        "@deleted = OLD.id",
        "CREATE EVENT corpus.nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM corpus.items",
        "ALTER EVENT corpus.nightly DISABLE",
        "DROP EVENT IF EXISTS corpus.nightly",
        "DROP PROCEDURE IF EXISTS corpus.restock",
        "DROP FUNCTION IF EXISTS corpus.double_it",
        "DROP TRIGGER IF EXISTS corpus.items_bd",
        "ALTER PROCEDURE corpus.restock COMMENT 'x'",
    ),
    *_cases(
        "call",
        "CALL corpus.restock(1)",
        "CALL corpus.restock",
        "call corpus.restock(2)",
        "SELECT 1; CALL corpus.restock(1)",
    ),
    # a stored function runs statements unseen too, from inside any statement
    *_cases(
        "stored-function",
        "SELECT corpus.purge_items()",
        "SELECT id, corpus.purge_items() FROM corpus.items",
        "select `corpus`.`purge_items`()",
        "SELECT corpus . purge_items ( )",
        "USE corpus; SELECT purge_items()",
        "SELECT id FROM corpus.items WHERE qty > corpus.purge_items()",
        "SELECT * FROM corpus.items WHERE id IN (SELECT corpus.purge_items())",
        "SET @n = corpus.purge_items()",
        "UPDATE corpus.items SET qty = corpus.purge_items() WHERE id = 1",
        "INSERT INTO corpus.notes (item_id, body) VALUES (corpus.purge_items(), 'x')",
        "DELETE FROM corpus.notes WHERE id = corpus.purge_items()",
        "CREATE TABLE corpus.purged AS SELECT corpus.purge_items() AS n",
        "CREATE VIEW corpus.purging AS SELECT corpus.purge_items() AS n",  # run when read
        "PREPARE s FROM 'SELECT corpus.purge_items()'",
        "EXECUTE IMMEDIATE 'SELECT ?' USING corpus.purge_items()",
        "ANALYZE SELECT corpus.purge_items()",
        "SET STATEMENT max_statement_time = 10 FOR SELECT corpus.purge_items()",
        "SHOW TABLES FROM corpus WHERE corpus.purge_items() > 0",
        "SELECT 1; SELECT corpus.purge_items()",
        # names that are not the server's functions, as written: stored functions' names
        "SELECT archive(id) FROM shop.orders",
        "SELECT ANY_VALUE(name) FROM shop.customers",  # MySQL's, not MariaDB's
        "SELECT NOW ()",  # a function keyword with a space before '('
        "SELECT `left`(name, 1) FROM shop.customers",  # a keyword in backquotes
        "SELECT POINT(1)",  # POINT takes two arguments; with one it is not the server's
    ),
    *_cases(
        "udf",
        "CREATE FUNCTION sys_exec RETURNS INTEGER SONAME 'lib_mysqludf_sys.so'",
        "CREATE AGGREGATE FUNCTION agg_evil RETURNS REAL SONAME 'evil.so'",
        "CREATE OR REPLACE FUNCTION sys_eval RETURNS STRING SONAME 'evil.so'",
    ),
]

# -------------------------------------------------------------- accounts, privileges

PRIVILEGES = [
    *_cases(
        "privileges",
        "GRANT ALL PRIVILEGES ON *.* TO 'corpus_victim'@'%' WITH GRANT OPTION",
        "GRANT SELECT ON corpus.* TO corpus_victim",
        "GRANT SUPER ON *.* TO 'corpus_victim'@'%'",
        "grant all on corpus.* to corpus_victim",
        "GRANT corpus_role TO 'corpus_victim'@'%'",
        "REVOKE SELECT ON corpus.* FROM 'corpus_victim'@'%'",
        "REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'corpus_victim'@'%'",
        "CREATE USER 'corpus_new'@'%' IDENTIFIED BY 'pw'",
        "CREATE USER IF NOT EXISTS corpus_new",
        "ALTER USER 'corpus_victim'@'%' IDENTIFIED BY 'new-pw'",
        "ALTER USER corpus_victim ACCOUNT LOCK",
        "DROP USER 'corpus_victim'@'%'",
        "DROP USER IF EXISTS corpus_victim",
        "RENAME USER 'corpus_victim'@'%' TO 'corpus_renamed'@'%'",
        "SET PASSWORD FOR 'corpus_victim'@'%' = PASSWORD('stolen')",
        "CREATE ROLE corpus_role",
        "DROP ROLE IF EXISTS corpus_role",
        "SET ROLE corpus_role",
        "SET DEFAULT ROLE corpus_role FOR 'corpus_victim'@'%'",
        "SELECT 1; GRANT ALL ON *.* TO 'corpus_victim'@'%'",
    ),
    # would change the gateway's own backend password on the shared server
    Case("SET PASSWORD = PASSWORD('x')", "privileges", live=False),
]

# ------------------------------------------------------------------ server files

FILES = [
    *_cases(
        "load-data",
        "LOAD DATA INFILE '/etc/hostname' INTO TABLE corpus.notes (body)",
        "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE corpus.notes (body)",
        "LOAD DATA INFILE '/etc/hostname' REPLACE INTO TABLE corpus.notes FIELDS TERMINATED "
        "BY ',' (body)",
        "LOAD XML INFILE '/tmp/sqlgate-corpus.xml' INTO TABLE corpus.notes",
        "load data infile '/etc/hostname' into table corpus.notes (body)",
        "SELECT 1; LOAD DATA INFILE '/etc/hostname' INTO TABLE corpus.notes (body)",
    ),
    *_cases(
        "into-outfile",
        f"SELECT * FROM corpus.items INTO OUTFILE '{OUTFILES[0]}'",
        f"SELECT name INTO OUTFILE '{OUTFILES[1]}' FROM corpus.items",
        f"SELECT name FROM corpus.items WHERE id = 1 INTO DUMPFILE '{OUTFILES[2]}'",
        f"SELECT * FROM corpus.items INTO OUTFILE '{OUTFILES[3]}' FIELDS TERMINATED BY ',' "
        """ENCLOSED BY '"' LINES TERMINATED BY '\\n'""",
        f"SELECT 1 UNION SELECT name FROM corpus.items INTO OUTFILE '{OUTFILES[4]}'",
        f"select card_number from shop.customers into outfile '{OUTFILES[5]}'",
        f"SELECT name FROM corpus.items INTO/**/OUTFILE '{OUTFILES[6]}'",
        f"SELECT name FROM corpus.items INTO -- comment\n OUTFILE '{OUTFILES[7]}'",
        f"WITH x AS (SELECT 1 AS n) SELECT n FROM x INTO OUTFILE '{OUTFILES[8]}'",
        f"SELECT 1; SELECT 2 INTO OUTFILE '{OUTFILES[9]}'",
    ),
    *_cases(
        "load-file",
        "SELECT LOAD_FILE('/etc/passwd')",
        "SELECT load_file('/etc/hostname') AS f",
        "SELECT LOAD_FILE ('/etc/passwd')",
        "SELECT HEX(LOAD_FILE(0x2f6574632f706173737764))",
        "SELECT * FROM shop.orders WHERE id = 1 AND LENGTH(LOAD_FILE('/etc/passwd')) > 0",
        "INSERT INTO corpus.notes (item_id, body) VALUES (1, LOAD_FILE('/etc/passwd'))",
        "UPDATE corpus.notes SET body = LOAD_FILE('/etc/hostname') WHERE id = 1",
        "SELECT `load_file`('/etc/passwd')",  # the server finds the function all the same
        "SeLeCt LoAd_FiLe('/etc/passwd')",
        "SELECT LOAD_FILE/**/('/etc/passwd')",
        "SHOW TABLES WHERE LENGTH(LOAD_FILE('/etc/passwd')) > 0",
        "SELECT id FROM corpus.items WHERE id = (SELECT LENGTH(LOAD_FILE('/etc/passwd')))",
        "INSERT INTO corpus.notes (body) SELECT LOAD_FILE('/etc/passwd')",
        "CREATE TABLE corpus.stolen AS SELECT LOAD_FILE('/etc/passwd') AS f",
        "INSERT INTO corpus.notes (id, body) VALUES (1, 'x') ON DUPLICATE KEY UPDATE body = "
        "LOAD_FILE('/etc/passwd')",
        "SELECT id, name, qty, price, tags, updated FROM corpus.items WHERE id = 1 UNION "
        "SELECT LOAD_FILE('/etc/passwd'), 2, 3, 4, 5, 6",
        "EXPLAIN SELECT LOAD_FILE('/etc/passwd')",
    ),
]

# ------------------------------------------------------ server administration, others

ADMIN = [
    *_cases("shutdown", "SHUTDOWN", "shutdown", "SHUTDOWN WAIT FOR ALL REPLICAS", live=False),
    Case("SELECT 1; SHUTDOWN", "shutdown", live=False),
    *_cases(
        "install-plugin",
        "INSTALL PLUGIN blackhole SONAME 'ha_blackhole.so'",
        "UNINSTALL PLUGIN blackhole",
        "INSTALL SONAME 'ha_blackhole'",
        "UNINSTALL SONAME 'ha_blackhole'",
    ),
    *_cases(
        "create-server",
        "CREATE SERVER corpus_srv FOREIGN DATA WRAPPER mysql OPTIONS (HOST '127.0.0.1', "
        "DATABASE 'corpus', USER 'root')",
        "ALTER SERVER corpus_srv OPTIONS (USER 'x')",
        "DROP SERVER IF EXISTS corpus_srv",
    ),
    *_cases(
        "handler",
        "HANDLER corpus.items OPEN",
        "HANDLER corpus.items OPEN AS h",
        "HANDLER items READ FIRST",
        "HANDLER items CLOSE",
        "HANDLER corpus.items READ idx_name FIRST WHERE name = 'a'",
    ),
    # KILL reaches only the identity's own sessions (the corpus session owns none)
    *_cases(
        "kill-other",
        "KILL 999999",
        "KILL QUERY 999999",
        "KILL CONNECTION 999999",
        "KILL USER agent",
        "KILL QUERY ID 5",
        "KILL 5 + 1",
        live=False,
    ),
    *_cases(
        UNKNOWN,
        "FLUSH PRIVILEGES",
        "FLUSH TABLES",
        "FLUSH TABLES WITH READ LOCK",
        "FLUSH LOGS",
        "FLUSH STATUS",
        "RESET MASTER",
        "RESET QUERY CACHE",
        "PURGE BINARY LOGS BEFORE '2020-01-01 00:00:00'",
        "CHANGE MASTER TO MASTER_HOST = '10.0.0.1'",
        "START SLAVE",
        "STOP SLAVE",
        "LOCK TABLES corpus.items WRITE",
        "LOCK TABLE corpus.items READ",
        "UNLOCK TABLES",
        "OPTIMIZE TABLE corpus.items",
        "ANALYZE TABLE corpus.items",
        "CHECK TABLE corpus.items",
        "REPAIR TABLE corpus.items",
        "CHECKSUM TABLE corpus.items",
        "XA START 'corpus'",
        "DO RELEASE_ALL_LOCKS()",
        "DO SLEEP(0)",
        "DO corpus.purge_items()",
        "HELP 'SELECT'",
        "BINLOG 'AAAA'",
        "CACHE INDEX corpus.items IN hot_cache",
        "LOAD INDEX INTO CACHE corpus.items",  # not LOAD DATA
        "GET DIAGNOSTICS CONDITION 1 @p = MESSAGE_TEXT",
        "SIGNAL SQLSTATE '45000'",
        "BACKUP STAGE START",
        "RESTART",
        # bare words: sqlglot reads a column or an alias; no statement starts so
        "orders",
        "corpus.items",
        "x y",
        "SELEC 1",
        "DELET FROM corpus.items",
    ),
    # compound statements outside a stored program (MariaDB) run their bodies, which
    # the gateway does not read statement by statement: no rule may see them as touching
    # nothing, so no configured allow may open them
    *_cases(
        NOT_UNDERSTOOD,
        "BEGIN NOT ATOMIC DELETE FROM corpus.items; END",
        "IF 1 = 1 THEN DELETE FROM corpus.items; END IF",
        "FOR i IN 1..3 DO DELETE FROM corpus.items WHERE id = i; END FOR",
        "WHILE 0 DO SELECT 1; END WHILE",
    ),
]

# ------------------------------------------------------------- the mysql system schema

MYSQL_SCHEMA = [
    *_cases(
        "mysql-schema",
        "INSERT INTO mysql.user (Host, User) VALUES ('%', 'corpus_evil')",
        "INSERT INTO mysql.global_priv (Host, User, Priv) VALUES ('%', 'corpus_evil', '{}')",
        "UPDATE mysql.global_priv SET Priv = '{}' WHERE User = 'corpus_victim'",
        "UPDATE `mysql`.`global_priv` SET Priv = '{}' WHERE User = 'corpus_victim'",
        "DELETE FROM mysql.global_priv WHERE User = 'corpus_victim'",
        "DELETE FROM mysql.db WHERE User = 'corpus_victim'",
        "REPLACE INTO mysql.servers (Server_name, Host) VALUES ('corpus_srv', 'evil')",
        "INSERT INTO mysql.func (name, ret, dl, type) VALUES ('sys_exec', 0, 'x.so', 'function')",
        "INSERT INTO mysql.plugin (name, dl) VALUES ('blackhole', 'ha_blackhole.so')",
        "CREATE TABLE mysql.corpus_evil (id INT)",
        "DROP TABLE IF EXISTS mysql.corpus_nothing",
        "ALTER TABLE mysql.db ADD COLUMN corpus_x INT",
        "USE mysql; DELETE FROM db WHERE User = 'corpus_victim'",
        "USE mysql; UPDATE global_priv SET Priv = '{}' WHERE User = 'corpus_victim'",
        "DELETE FROM mysql . db WHERE User = 'corpus_victim'",
        "DELETE d FROM mysql.db d WHERE d.User = 'corpus_victim'",
        "UPDATE shop.orders o, mysql.db d SET d.Db = 'x' WHERE d.User = 'corpus_victim'",
        "INSERT LOW_PRIORITY INTO mysql.db (Host, Db, User) VALUES ('%', 'corpus', "
        "'corpus_victim')",
        "RENAME TABLE corpus.items TO mysql.items_stolen",
        "ALTER TABLE corpus.items RENAME TO mysql.items_stolen",
        "CREATE VIEW mysql.corpus_v AS SELECT 1",
        "CREATE TABLE mysql.corpus_copy LIKE corpus.items",
    ),
    Case("DELETE FROM mysql.proxies_priv WHERE 1 = 1", "delete-without-where"),
    # reading it to write elsewhere is a read of mysql
    Case("INSERT INTO corpus.notes (body) SELECT User FROM mysql.db", ALLOW),
]

# ---------------------------------------------------------------------- comments

COMMENTS = [
    *_cases(
        ALLOW,
        "/* agent: list orders */ SELECT id FROM shop.orders",
        "SELECT id /* inline */ FROM shop.orders",
        "SELECT 1 -- trailing comment",
        "SELECT 1 # hash comment",
        "-- leading comment\nSELECT 1",
        "# leading hash comment\nSELECT 1",
        "SELECT 1 /* ; DROP TABLE corpus.items */",
        "SELECT 1 -- ; DROP TABLE corpus.items",
        "SELECT 1 # ; DROP TABLE corpus.items",
        "SELECT 1 /* a ; b */ ; SELECT 2",
        "SELECT '/*! not a comment */'",
        "SELECT 1 AS `/*!x*/`",
        "SELECT 1 /*+ not executable */",
        "SELECT 1 /**/",
        "SELECT/**/1",
        "SELECT/**/id/**/FROM/**/shop.orders",
        "SELECT 1 /* a */ /* b */ -- c",
        "SELECT 2--1",  # minus minus one, not a comment
        "SELECT 1 --1",
        "SELECT 1 -- '",
        "SELECT 1 # '",
    ),
    *_cases(
        NOT_UNDERSTOOD,
        "/*! DROP TABLE corpus.items */",
        "/*!DROP TABLE corpus.items*/",
        "SELECT 1 /*!, 2 */",
        "SELECT 1 /*!50001 , (SELECT COUNT(*) FROM shop.customers) */",
        "/*!40101 SET NAMES utf8mb4 */",
        "/*!40014 SET FOREIGN_KEY_CHECKS=0 */",
        "SELECT 1 /*!99999 , 2 */",
        "/*M! DROP TABLE corpus.items */",
        "/*M!100100 SELECT 1 */",
        "SELECT id FROM shop.orders WHERE id = 1 /*! OR 1=1 */",
        "DELETE FROM corpus.items WHERE id = 999 /*! OR 1 = 1 */",
        "UPDATE corpus.items SET qty = 0 WHERE id = 999 /*!50000 OR TRUE */",
        "SELECT 1 /*!*/",
        "SELECT 1; /*! DROP TABLE corpus.items */",
        "SELECT 1 /* unterminated",
        "select 1 /*!32302 , 2*/",
        f"SELECT 1 /*! INTO OUTFILE '{OUTFILES[0]}' */",
    ),
    # `--` starts a comment only before a space or a control character
    Case("SELECT 1 --1; DROP TABLE corpus.items", "schema-change"),
    Case("SELECT 1 --x; DELETE FROM corpus.items", "delete-without-where"),
    Case("SELECT 1 --\tcomment\n; DELETE FROM corpus.items", "delete-without-where"),
    Case("SELECT 1 -- comment\n; DELETE FROM corpus.items", "delete-without-where"),
    Case("SELECT 1 --\n; DELETE FROM corpus.items", "delete-without-where"),
    Case("SELECT 1 # comment\n; TRUNCATE corpus.items", "truncate"),
    Case("SELECT 1 /* multi\nline */; DROP DATABASE corpus", "drop-database"),
    Case("/* header */\nDELETE FROM corpus.items -- cleanup", "delete-without-where"),
]

# ----------------------------------------------------------------------- quoting

QUOTING = [
    *_cases(
        ALLOW,
        "SELECT 'it''s'",
        r"SELECT 'a\'b'",
        r"SELECT 'a\\'",
        r"SELECT '\\'",
        r"SELECT '\''",
        "SELECT ''''",
        "SELECT '--', '#', '/*'",
        "SELECT ';'; SELECT 2",
        # one string: with backslash escapes (the default) the quote is escaped
        r"SELECT 'a\'; DELETE FROM corpus.items; -- '",
        r"INSERT INTO corpus.notes (item_id, body) VALUES (1, 'a\'; DROP TABLE corpus.items; -- ')",
        "SELECT 1 AS `we;ird`",
        "SELECT `a``b` FROM (SELECT 1 AS `a``b`) AS t",
        "SELECT `select`, `from` FROM (SELECT 1 AS `select`, 2 AS `from`) AS t",
        "SELECT * FROM `shop`.`orders` WHERE `total` > 10",
        "SELECT _utf8mb4'abc', N'abc', X'4142', 0x4142, b'0101', _binary'abc'",
        "SELECT 'a' 'b' 'c'",
        "SELECT 'multi\nline'",
        "SELECT 'héllo wörld ✓'",
        "SELECT 'こんにちは', '数据库'",
        "SELECT name FROM shop.customers WHERE name = 'Ada Lovelace' -- \"",
        """SELECT '"' AS q""",
    ),
    *_cases(
        "delete-without-where",
        r"SELECT 'a\\'; DELETE FROM corpus.items",
        "SELECT ';' ; DELETE FROM corpus.items",
        "SELECT 'x''; DELETE FROM corpus.items; --'; DELETE FROM corpus.items",
        """SELECT '"'; DELETE FROM corpus.items""",
        "DELETE FROM `corpus`.`items`",
    ),
    Case(
        r"INSERT INTO corpus.notes (item_id, body) VALUES (2, '\\'); DROP TABLE corpus.items",
        "schema-change",
    ),
    *_cases(
        NOT_UNDERSTOOD,
        "SELECT 'unterminated",
        'SELECT "unterminated',
        "SELECT `unterminated",
    ),
    # ANSI_QUOTES is never known to the gateway (the server does not report it): a
    # double-quoted token is read both as a string and as a name, and the two readings
    # are decided together (the stricter wins) when they split the same way.
    *_cases(
        ALLOW,
        'SELECT "it""s"',
        'SELECT 1 AS "x"',
        'SELECT "/*! in double quotes */"',
        'SELECT id AS "order id" FROM shop.orders',
        'SELECT * FROM shop.customers WHERE name = "Ada Lovelace"',
        'UPDATE corpus.items SET qty = 9 WHERE name = "apple"',
        'DELETE FROM corpus.notes WHERE body = "x"',
        'INSERT INTO corpus.notes (item_id, body) VALUES (1, "double ""quoted"" text")',
    ),
    # with ANSI_QUOTES the double-quoted text is a name, which PREPARE cannot read from
    Case('PREPARE s FROM "DELETE FROM corpus.items"', "prepare-from-variable"),
    *_cases(
        "delete-without-where",
        # with ANSI_QUOTES these compare a column with itself
        'DELETE FROM corpus.items WHERE name = "name"',
        'DELETE FROM corpus.items WHERE "a" = "a"',
    ),
    # the readings split differently: refused, with advice to use single quotes
    *_cases(
        NOT_UNDERSTOOD,
        # with ANSI_QUOTES, "a\" is an identifier and a DELETE follows it
        r'SELECT "a\"; DELETE FROM corpus.items; -- "',
        r'SELECT 1 AS "a\"; DELETE FROM corpus.items; -- "',
        r'SELECT "a\"b"',
    ),
]

# --------------------------------------------------------------- multi-statement texts

MULTI_STATEMENT = [
    *_cases(
        ALLOW,
        "SELECT 1; SELECT 2",
        "SELECT 1;SELECT 2;",
        "SELECT id FROM shop.orders WHERE id = 1; SELECT name FROM shop.customers WHERE id = 1",
        "INSERT INTO corpus.notes (item_id, body) VALUES (1, 'a'); SELECT LAST_INSERT_ID()",
        "SELECT 1;\nSELECT 2;\n",
    ),
    *_cases(
        "delete-without-where",
        "SELECT 1; DELETE FROM corpus.items",
        "SELECT 1;DELETE FROM corpus.items",
        "START TRANSACTION; DELETE FROM corpus.items WHERE 1=1; ROLLBACK",
        "DELETE FROM corpus.items WHERE 1=1; DROP DATABASE corpus",
        "USE corpus; DELETE FROM items",
        "INSERT INTO corpus.notes (item_id, body) VALUES (9, 'x'); DELETE FROM corpus.notes",
        "SELECT 1;\nDELETE\nFROM corpus.items\n",
    ),
    Case("SELECT 1 ; TRUNCATE corpus.items", "truncate"),
    Case(
        "INSERT INTO corpus.notes (item_id, body) VALUES (1, 'a'); DROP TABLE corpus.notes",
        "schema-change",
    ),
    Case("SELECT 1; DROP TABLE corpus.items; SELECT 2", "schema-change"),
    Case("SELECT 1; SELECT 2; DROP DATABASE corpus", "drop-database"),
    Case("DROP DATABASE corpus; DELETE FROM corpus.items", "drop-database"),
    Case(
        "UPDATE corpus.items SET qty = 1 WHERE id = 1; UPDATE corpus.items SET qty = 0",
        "update-without-where",
    ),
    Case("SELECT 1; SET GLOBAL general_log = 'ON'", "set-global"),
    Case("SELECT 1; REPLACE INTO corpus.items (id, name) VALUES (1, 'x')", "replace"),
    Case("REPLACE INTO corpus.items (id, name) VALUES (1, 'x'); TRUNCATE corpus.items", "replace"),
    Case("SELECT 1; SET sql_log_bin = 0; DELETE FROM corpus.items WHERE id = 1", "set-variable"),
    Case("SELECT 1; FLUSH PRIVILEGES", UNKNOWN),
    Case("SET @q = 'x'; PREPARE s FROM @q", "prepare-from-variable"),
]

# ---------------------------------------- what sqlglot cannot read: refused, fail closed

NOT_READ = [
    *_cases(
        NOT_UNDERSTOOD,
        "SELECT FROM",
        "SELECT * FROM",
        "SELECT a b c",
        "DELETE FROM",
        "DELETE FROM corpus.items WHERE",
        "INSERT INTO corpus.notes VALUES (",
        "SELECT 1)",
        "SELECT * FROM shop.orders WHERE",
        # valid MySQL that sqlglot does not parse (a generic command or a parse error)
        "SHOW GRANTS FOR 'corpus_victim'@'%', corpus_new",
        "SHOW CREATE USER",
        "SELECT 1 PROCEDURE ANALYSE()",
        # SHOW PROFILE takes plain numbers only
        "SHOW PROFILE FOR QUERY (SELECT 1)",
        "SHOW PROFILE FOR QUERY 1 LIMIT 1 OFFSET @o",
        "SHOW PROFILE CPU, FOR QUERY 1",
        # SHOWs the parser does not read (information_schema has their rows)
        "SHOW LOCALES",
        "SHOW USER_STATISTICS",
        "SHOW CLIENT_STATISTICS",
        # SHOW EXPLAIN takes a plain thread id
        "SHOW EXPLAIN FOR (SELECT 12)",
        "SHOW EXPLAIN FOR @thread",
        # the whole text is read with the session's current rules, under which 'a\' does
        # not end; the server would switch to NO_BACKSLASH_ESCAPES half-way
        r"SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT 'a\'",
    ),
    # MySQL 8 only; MariaDB refuses it, so it is not sent
    Case("TABLE shop.orders", ALLOW, live=False),
    # InnoDB refuses DELAYED
    Case("INSERT DELAYED INTO corpus.notes (item_id, body) VALUES (1, 'x')", ALLOW, live=False),
]

#: The server ends a number at its point or exponent whatever follows: each of these
#: is ``... OR (1)`` to it, true for every row, not one odd word.
NUMBER_WORDS = _cases(
    NOT_UNDERSTOOD,
    "DELETE FROM corpus.items WHERE id = 1e0OR(1)",
    "DELETE FROM corpus.items WHERE id = 1E+0or(1)",
    "UPDATE corpus.items SET qty = 0 WHERE id = 1.OR(1)",
    "UPDATE corpus.items SET qty = 0 WHERE id = .5e1OR(1)",
    "SELECT 1e0FROM corpus.items",
)

CORPUS: list[Case] = [
    *NUMBER_WORDS,
    *READS,
    *WRITES,
    *WITHOUT_WHERE,
    *MULTI_TABLE,
    *REPLACE,
    *SHOW,
    *TRANSACTIONS,
    *SET_ALLOWED,
    *SET_REFUSED,
    *CHARSET,
    *SQL_MODE,
    *CREDENTIALS,
    *PREPARE,
    *DDL,
    *STORED_CODE,
    *PRIVILEGES,
    *FILES,
    *ADMIN,
    *MYSQL_SCHEMA,
    *COMMENTS,
    *QUOTING,
    *MULTI_STATEMENT,
    *NOT_READ,
]

FAMILIES: dict[str, list[Case]] = {
    "reads": READS,
    "writes": WRITES,
    "without-where": WITHOUT_WHERE,
    "multi-table": MULTI_TABLE,
    "replace": REPLACE,
    "show-describe-use": SHOW,
    "transactions": TRANSACTIONS,
    "set-allowed": SET_ALLOWED,
    "set-refused": SET_REFUSED,
    "charset-lexing": CHARSET,
    "sql-mode": SQL_MODE,
    "credentials": CREDENTIALS,
    "prepare": PREPARE,
    "ddl": DDL,
    "stored-code": STORED_CODE,
    "privileges": PRIVILEGES,
    "files": FILES,
    "admin": ADMIN,
    "mysql-schema": MYSQL_SCHEMA,
    "comments": COMMENTS,
    "quoting": QUOTING,
    "multi-statement": MULTI_STATEMENT,
    "not-read": NOT_READ,
}


class ModeCase(NamedTuple):
    """A text read under session state other than the corpus default."""

    sql: bytes
    expected: str
    no_backslash_escapes: bool = False  # the server's status flag says so
    backslash_unknown: bool = False  # a statement that may change sql_mode is running
    multibyte_unsafe: bool = False  # the session logged in with big5/gbk/sjis/...
    eight_bit: bool = False  # the session logged in with latin1 (0xa0 is a space there)


#: GBK reads 0xbf 0x5c as one character: the quote after it ends the string there.
GBK_TRICK = b"SELECT '\xbf\\'; DELETE FROM corpus.items; -- '"

#: latin1 reads 0xa0 as a space: the server sees id OR 1 = 1, a lexer that takes every
#: byte >= 0x80 for a letter sees one identifier.
LATIN1_TRICK = b"DELETE FROM corpus.items WHERE id\xa0OR\xa01 = 1"

MODE_CASES: list[ModeCase] = [
    # NO_BACKSLASH_ESCAPES: a backslash is an ordinary character
    ModeCase(rb"SELECT 'a\'", ALLOW, no_backslash_escapes=True),
    ModeCase(
        rb"SELECT 'a\'; DELETE FROM corpus.items; -- '",
        "delete-without-where",
        no_backslash_escapes=True,
    ),
    ModeCase(rb"SELECT 'a\\'; SELECT 2", ALLOW, no_backslash_escapes=True),
    ModeCase(b"SELECT 'it''s'", ALLOW, no_backslash_escapes=True),
    # sql_mode may be changing: both readings must agree
    ModeCase(b"SELECT 'plain'", ALLOW, backslash_unknown=True),
    ModeCase(
        rb"SELECT 'a\'; DELETE FROM corpus.items; -- '",
        NOT_UNDERSTOOD,
        backslash_unknown=True,
    ),
    ModeCase(b"DELETE FROM corpus.items", "delete-without-where", backslash_unknown=True),
    # a multi-byte client character set the gateway cannot read: ASCII only
    ModeCase(b"SELECT 1", ALLOW, multibyte_unsafe=True),
    ModeCase(b"SELECT 'abc' FROM shop.orders WHERE id = 1", ALLOW, multibyte_unsafe=True),
    ModeCase(GBK_TRICK, NOT_UNDERSTOOD, multibyte_unsafe=True),
    ModeCase("SELECT '数据'".encode("gbk"), NOT_UNDERSTOOD, multibyte_unsafe=True),
    ModeCase(b"DELETE FROM corpus.items", "delete-without-where", multibyte_unsafe=True),
    # a single-byte client character set: bytes >= 0x80 only inside quotes and comments
    ModeCase(LATIN1_TRICK, NOT_UNDERSTOOD, eight_bit=True),
    ModeCase(b"SELECT 1 --\xa0'\nDELETE FROM corpus.items -- '", NOT_UNDERSTOOD, eight_bit=True),
    ModeCase(b"SELECT @caf\xe9", NOT_UNDERSTOOD, eight_bit=True),
    ModeCase(b"SELECT 'caf\xe9' /* \xa0 */ # \xa0", ALLOW, eight_bit=True),
    # ... and not in a quoted name: the rules read names as UTF-8
    ModeCase(b"SELECT `caf\xe9` FROM corpus.items", NOT_UNDERSTOOD, eight_bit=True),
    ModeCase(b'SELECT "caf\xe9"', NOT_UNDERSTOOD, eight_bit=True),  # a name under ANSI_QUOTES
    ModeCase(b"SELECT id FROM corpus.items WHERE name = 'caf\xe9'", ALLOW, eight_bit=True),
    # the same bytes in utf8mb4: 0xa0 is part of one identifier there, as the server reads it
    ModeCase(b"SELECT 1 --\xa0'\nDELETE FROM corpus.items -- '", ALLOW),
]


def card_masking(on_use: str = "refuse") -> MaskingPolicy:
    """``shop.customers.card_number`` masked (last4) for everyone: the masking rule the
    policy's own tests share."""
    rule = MaskingRuleConfig(
        "shop.customers.card_number",
        "shop",
        "customers",
        "card_number",
        MaskStrategy.LAST4,
        (),
        on_use=on_use,
    )
    return MaskingPolicy([rule], b"k" * 32)
