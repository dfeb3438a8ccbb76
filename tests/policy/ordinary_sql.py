"""Ordinary SQL as agents and ORMs send it to MariaDB 10.11: every text here must be
allowed by the built-in rules (``default-allow``) and run on the server.

The policy fails closed and refuses what its parser may misread; each such refusal must
leave what MariaDB and the gateway read alike alone. This corpus holds what clients
really send: the texts SQLAlchemy 2.1 sends through PyMySQL (``mysql+pymysql`` and
``mariadb+pymysql`` dialects: DDL, ORM loads and flushes, bulk inserts, upserts,
window functions, CTEs, reflection of information_schema), Django's query shapes, and
the families an agent writes by hand (JSON_TABLE and JSON functions, GROUP_CONCAT,
CAST/CONVERT with character sets, INTERVAL arithmetic, ON DUPLICATE KEY UPDATE,
RETURNING, ORDER BY ... LIMIT writes, SHOW/DESCRIBE/EXPLAIN, session settings,
transactions and savepoints, locking reads, full-text and spatial searches, sequences,
system-versioned tables).

Each family runs in order in one session whose schema is ``SCHEMA`` (created by
``SETUP``, directly on the server); a statement may rely on what an earlier one of its
family did (SQLAlchemy's family creates its own tables first). Statements the built-in
rules refuse by design (multi-table writes, stored functions, LOCK TABLES, DROP) are
not here; tests/policy/test_ordinary_sql.py checks their messages say what to do.
"""

from __future__ import annotations

SCHEMA = "agentsql"
#: Made with the statements, dropped after them.
SCRATCH_SCHEMAS = ("agentsql", "agentsql_scratch")

SETUP: tuple[str, ...] = (
    "DROP DATABASE IF EXISTS agentsql",
    "CREATE DATABASE agentsql",
    (
        "CREATE TABLE agentsql.users (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(64) NOT "
        "NULL, email VARCHAR(128) NOT NULL UNIQUE,\n active TINYINT(1) NOT NULL DEFAULT 1, "
        "created DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, prefs JSON NULL, login_count INT "
        "NOT NULL DEFAULT 0, KEY ix_name (name))"
    ),
    (
        "CREATE TABLE agentsql.orders (id INT AUTO_INCREMENT PRIMARY KEY, user_id INT NOT NULL, "
        "total DECIMAL(10,2) NOT NULL, status VARCHAR(16) NOT NULL DEFAULT 'new',\n created_at "
        "DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, note TEXT NULL, KEY ix_user (user_id))"
    ),
    (
        "CREATE TABLE agentsql.items (id INT AUTO_INCREMENT PRIMARY KEY, order_id INT NOT NULL, "
        "sku VARCHAR(32) NOT NULL, qty INT NOT NULL, price DECIMAL(10,2) NOT NULL)"
    ),
    (
        "CREATE TABLE agentsql.categories (id INT PRIMARY KEY, parent_id INT NULL, name "
        "VARCHAR(64) NOT NULL)"
    ),
    (
        "CREATE TABLE agentsql.articles (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(200) "
        "NOT NULL, body TEXT NOT NULL, FULLTEXT KEY ft (title, body)) ENGINE=InnoDB"
    ),
    (
        "CREATE TABLE agentsql.places (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(64) NOT "
        "NULL, pos POINT NOT NULL, SPATIAL KEY sp (pos)) ENGINE=InnoDB"
    ),
    (
        "CREATE TABLE agentsql.counters (name VARCHAR(32) PRIMARY KEY, hits INT NOT NULL DEFAULT "
        "0, updated DATETIME NULL)"
    ),
    (
        "CREATE TABLE agentsql.prices (id INT PRIMARY KEY, amount DECIMAL(10,2) NOT NULL) WITH "
        "SYSTEM VERSIONING"
    ),
    "CREATE TABLE agentsql.docs (id INT PRIMARY KEY, data JSON NOT NULL)",
    "CREATE SEQUENCE agentsql.ticket_seq START WITH 1 INCREMENT BY 1",
    (
        "CREATE FUNCTION agentsql.slugify(s VARCHAR(200)) RETURNS VARCHAR(200) DETERMINISTIC "
        "RETURN LOWER(REPLACE(s, ' ', '-'))"
    ),
    (
        "CREATE FUNCTION agentsql.add_tax(v DECIMAL(10,2), r DECIMAL(5,2)) RETURNS DECIMAL(10,2) "
        "DETERMINISTIC RETURN v * (1 + r)"
    ),
    "CREATE PROCEDURE agentsql.noop() BEGIN END",
    (
        "INSERT INTO agentsql.users (id, name, email, prefs) VALUES (1, 'ada', 'ada@example.com', "
        '\'{"theme": "dark", "tags": ["a", "b"]}\'), (2, \'bob\', \'bob@example.com\', NULL), '
        "(3, 'cy', 'cy@example.com', '{\"theme\": \"light\"}')"
    ),
    (
        "INSERT INTO agentsql.orders (id, user_id, total, status) VALUES (1, 1, 10.50, 'paid'), "
        "(2, 1, 3.25, 'new'), (3, 2, 7.00, 'shipped'), (4, 3, 99.99, 'paid')"
    ),
    (
        "INSERT INTO agentsql.items (order_id, sku, qty, price) VALUES (1, 'A-1', 2, 5.25), (2, "
        "'B-2', 1, 3.25), (3, 'A-1', 1, 7.00)"
    ),
    (
        "INSERT INTO agentsql.categories VALUES (1, NULL, 'root'), (2, 1, 'books'), (3, 2, "
        "'novels'), (4, 1, 'music')"
    ),
    (
        "INSERT INTO agentsql.articles (title, body) VALUES ('MariaDB tuning', 'How to tune the "
        "buffer pool'), ('Python tips', 'Use asyncio for network code'), ('Databases', 'MariaDB "
        "and PostgreSQL compared')"
    ),
    (
        "INSERT INTO agentsql.places (name, pos) VALUES ('a', POINT(1, 1)), ('b', POINT(5, 5)), "
        "('c', ST_GeomFromText('POINT(10 10)'))"
    ),
    "INSERT INTO agentsql.counters VALUES ('home', 1, NULL)",
    "INSERT INTO agentsql.prices VALUES (1, 9.99), (2, 19.99)",
    (
        'INSERT INTO agentsql.docs VALUES (1, \'{"items": [{"sku": "A-1", "qty": 2}, '
        '{"sku": "B-2", "qty": 1}], "customer": {"name": "ada"}}\')'
    ),
    "CREATE VIEW agentsql.v_paid AS SELECT id, total FROM agentsql.orders WHERE status = 'paid'",
)

FAMILIES: dict[str, tuple[str, ...]] = {
    "sqlalchemy": (
        (
            "CREATE TABLE sa_users (\n\tid INTEGER NOT NULL AUTO_INCREMENT, \n\tname VARCHAR(64) "
            "NOT NULL, \n\temail VARCHAR(128) NOT NULL, \n\tactive BOOL NOT NULL, \n\tcreated "
            "DATETIME NOT NULL DEFAULT (now()), \n\tprefs JSON, \n\tPRIMARY KEY (id), \n\tUNIQUE "
            "(email)\n)"
        ),
        "CREATE INDEX ix_sa_users_name ON sa_users (name)",
        (
            "CREATE TABLE sa_addresses (\n\tid INTEGER NOT NULL AUTO_INCREMENT, \n\tuser_id "
            "INTEGER NOT NULL, \n\tcity VARCHAR(64) NOT NULL, \n\tPRIMARY KEY (id), \n\tFOREIGN "
            "KEY(user_id) REFERENCES sa_users (id)\n)"
        ),
        (
            "CREATE TABLE sa_orders (\n\tid INTEGER NOT NULL AUTO_INCREMENT, \n\tuser_id INTEGER "
            "NOT NULL, \n\ttotal NUMERIC(10, 2) NOT NULL, \n\tstatus VARCHAR(16) NOT NULL, "
            "\n\tnote TEXT, \n\tPRIMARY KEY (id), \n\tFOREIGN KEY(user_id) REFERENCES sa_users "
            "(id)\n)"
        ),
        "CREATE INDEX ix_sa_orders_user_status ON sa_orders (user_id, status)",
        (
            "INSERT INTO sa_users (name, email, active, prefs) VALUES ('ada', 'ada@x', 1, "
            '\'{\\"theme\\": \\"dark\\", \\"n\\": [1, 2]}\') RETURNING sa_users.id, '
            "sa_users.created"
        ),
        (
            "INSERT INTO sa_users (name, email, active) VALUES ('bob', 'bob@x', 1) RETURNING "
            "sa_users.id, sa_users.created"
        ),
        (
            "INSERT INTO sa_addresses (user_id, city) VALUES (1, 'A'), (2, 'B') RETURNING "
            "sa_addresses.id, sa_addresses.id AS id__1"
        ),
        "INSERT INTO sa_orders (user_id, total, status, note) VALUES (1, 10.50, 'new', NULL)",
        "INSERT INTO sa_orders (user_id, total, status, note) VALUES (1, 3.25, 'paid', NULL)",
        "INSERT INTO sa_orders (user_id, total, status, note) VALUES (2, 7, 'new', NULL)",
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs \nFROM sa_users"
        ),
        (
            "SELECT sa_addresses.user_id, sa_addresses.id, sa_addresses.city \nFROM sa_addresses "
            "\nWHERE sa_addresses.user_id IN (1, 2)"
        ),
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs, sa_orders_1.id AS id_1, sa_orders_1.user_id, "
            "sa_orders_1.total, sa_orders_1.status, sa_orders_1.note \nFROM sa_users LEFT OUTER "
            "JOIN sa_orders AS sa_orders_1 ON sa_users.id = sa_orders_1.user_id"
        ),
        (
            "SELECT sa_addresses.id AS sa_addresses_id, sa_addresses.user_id AS "
            "sa_addresses_user_id, sa_addresses.city AS sa_addresses_city, anon_1.sa_users_id AS "
            "anon_1_sa_users_id \nFROM (SELECT sa_users.id AS sa_users_id \nFROM sa_users) AS "
            "anon_1 INNER JOIN sa_addresses ON anon_1.sa_users_id = sa_addresses.user_id"
        ),
        "UPDATE sa_users SET name='ada2' WHERE sa_users.id = 1",
        (
            "SELECT sa_users.name, count(sa_orders.id) AS count_1, sum(sa_orders.total) AS sum_1 "
            "\nFROM sa_users INNER JOIN sa_orders ON sa_users.id = sa_orders.user_id GROUP BY "
            "sa_users.name \nHAVING count(sa_orders.id) > 0 ORDER BY sum(sa_orders.total) DESC"
        ),
        (
            "SELECT sa_orders.id, row_number() OVER (PARTITION BY sa_orders.user_id ORDER BY "
            "sa_orders.total DESC) AS rn \nFROM sa_orders"
        ),
        (
            "SELECT sa_orders.id, sum(sa_orders.total) OVER (ORDER BY sa_orders.id ROWS BETWEEN "
            "UNBOUNDED PRECEDING AND CURRENT ROW) AS running \nFROM sa_orders"
        ),
        (
            "SELECT sa_orders.id, lag(sa_orders.total) OVER (ORDER BY sa_orders.id) AS prev "
            "\nFROM sa_orders"
        ),
        (
            "WITH totals AS \n(SELECT sa_orders.user_id AS user_id, sum(sa_orders.total) AS t "
            "\nFROM sa_orders GROUP BY sa_orders.user_id)\n SELECT sa_users.name, totals.t \nFROM "
            "sa_users INNER JOIN totals ON totals.user_id = sa_users.id"
        ),
        (
            "WITH RECURSIVE nums(n) AS \n(SELECT 1 AS n UNION ALL SELECT nums.n + 1 AS anon_1 "
            "\nFROM nums \nWHERE nums.n < 5)\n SELECT nums.n \nFROM nums"
        ),
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs \nFROM sa_users \nWHERE sa_users.name LIKE 'a%' AND "
            "sa_users.id IN (1, 2, 3)"
        ),
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs \nFROM sa_users \nWHERE lower(sa_users.name) LIKE "
            "lower('A%')"
        ),
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs \nFROM sa_users \nWHERE sa_users.id IN (SELECT "
            "sa_orders.user_id \nFROM sa_orders \nWHERE sa_orders.total > 5)"
        ),
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs \nFROM sa_users \nWHERE EXISTS (SELECT * \nFROM "
            "sa_orders \nWHERE sa_orders.user_id = sa_users.id)"
        ),
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs \nFROM sa_users \nWHERE NOT (EXISTS (SELECT * "
            "\nFROM sa_orders \nWHERE sa_orders.user_id = sa_users.id))"
        ),
        (
            "SELECT CASE JSON_EXTRACT(sa_users.prefs, '$.\\\"theme\\\"') WHEN 'null' THEN NULL "
            "ELSE JSON_UNQUOTE(JSON_EXTRACT(sa_users.prefs, '$.\\\"theme\\\"')) END AS anon_1 "
            "\nFROM sa_users"
        ),
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs \nFROM sa_users \nWHERE CASE "
            "JSON_EXTRACT(sa_users.prefs, '$.\\\"theme\\\"') WHEN 'null' THEN NULL ELSE "
            "JSON_UNQUOTE(JSON_EXTRACT(sa_users.prefs, '$.\\\"theme\\\"')) END = 'dark'"
        ),
        (
            "SELECT CASE WHEN (sa_orders.total > 5) THEN 'big' ELSE 'small' END AS sz, "
            "sa_orders.id \nFROM sa_orders"
        ),
        "SELECT CAST(sa_orders.total AS CHAR(20)) AS total \nFROM sa_orders",
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs \nFROM sa_users ORDER BY sa_users.id \n LIMIT 5, 10"
        ),
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs \nFROM sa_users \nWHERE sa_users.created > "
            "date_sub(now(), INTERVAL 1 DAY)"
        ),
        "SELECT group_concat(sa_users.name) AS group_concat_1 \nFROM sa_users",
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs \nFROM sa_users FOR UPDATE"
        ),
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs \nFROM sa_users FOR UPDATE NOWAIT"
        ),
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs \nFROM sa_users FOR UPDATE SKIP LOCKED"
        ),
        (
            "SELECT sa_users.id, sa_users.name, sa_users.email, sa_users.active, "
            "sa_users.created, sa_users.prefs \nFROM sa_users LOCK IN SHARE MODE"
        ),
        (
            "SELECT sa_users.id \nFROM sa_users \nWHERE (sa_users.id, sa_users.name) IN ((1, "
            "'ada2'), (2, 'bob'))"
        ),
        "SELECT sa_users.id \nFROM sa_users UNION ALL SELECT sa_orders.id \nFROM sa_orders",
        "SELECT DISTINCT sa_users.name \nFROM sa_users",
        (
            "SELECT sa_users.name, sa_users_1.name AS name_1 \nFROM sa_users INNER JOIN sa_users "
            "AS sa_users_1 ON sa_users_1.id != sa_users.id"
        ),
        (
            "SELECT sa_users.name \nFROM sa_users LEFT OUTER JOIN sa_addresses ON sa_users.id = "
            "sa_addresses.user_id \nWHERE sa_addresses.id IS NULL"
        ),
        "SELECT count(*) AS count_1 \nFROM sa_users",
        "UPDATE sa_orders SET status='shipped' WHERE sa_orders.user_id = 1",
        "UPDATE sa_users SET prefs=json_set(sa_users.prefs, '$.a', 1) WHERE sa_users.id = 2",
        "DELETE FROM sa_addresses WHERE sa_addresses.city = 'Nowhere'",
        (
            "INSERT INTO sa_users (id, name, email, active) VALUES (1, 'ada', 'ada@x', 1) ON "
            "DUPLICATE KEY UPDATE name = VALUES(name), email = 'z'"
        ),
        "INSERT INTO sa_addresses (user_id, city) VALUES (1, 'A')",
        "INSERT INTO sa_addresses (user_id, city) VALUES (2, 'B')",
        "INSERT INTO sa_addresses (user_id, city) VALUES (1, 'C'), (2, 'D')",
        (
            "INSERT INTO sa_addresses (user_id, city) SELECT sa_users.id, sa_users.name \nFROM "
            "sa_users \nWHERE sa_users.id = 1"
        ),
        "INSERT INTO sa_addresses (user_id, city) VALUES (1, 'R') RETURNING sa_addresses.id",
        "DELETE FROM sa_addresses WHERE sa_addresses.city = 'R' RETURNING sa_addresses.id",
        "UPDATE sa_orders SET total=(sa_orders.total + 1) WHERE sa_orders.id > 0",
        (
            "SELECT sa_orders.id, sa_orders.user_id, sa_orders.total, sa_orders.status, "
            "sa_orders.note \nFROM sa_orders \n LIMIT 1"
        ),
        "DELETE FROM sa_orders WHERE sa_orders.id = 1",
        "SELECT * FROM sa_users WHERE id = 1",
        "SHOW schemas",
        "SHOW FULL TABLES FROM `agentsql`",
        "SHOW CREATE TABLE `sa_users`",
        "SHOW CREATE TABLE `sa_addresses`",
        "SHOW CREATE TABLE `sa_orders`",
        (
            "SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_TYPE='SEQUENCE' and "
            "TABLE_SCHEMA='agentsql'"
        ),
        "SELECT 1",
        "SHOW VARIABLES LIKE 'sql_mode'",
        "DESCRIBE `agentsql`.`sa_users`",
        "DESCRIBE `agentsql`.`sa_addresses`",
        "DESCRIBE `agentsql`.`sa_orders`",
    ),
    "django": (
        (
            "SELECT `users`.`id`, `users`.`name`, `users`.`email`, `users`.`active`, "
            "`users`.`created` FROM `users` WHERE `users`.`id` = 1 LIMIT 21"
        ),
        (
            "SELECT `users`.`id`, `users`.`name` FROM `users` WHERE (`users`.`active` AND "
            "`users`.`name` LIKE BINARY '%ad%') ORDER BY `users`.`name` ASC"
        ),
        (
            "SELECT `users`.`id`, `users`.`name` FROM `users` WHERE `users`.`name` LIKE 'ad%' "
            "ORDER BY `users`.`created` DESC LIMIT 10 OFFSET 20"
        ),
        "SELECT (1) AS `a` FROM `users` WHERE `users`.`email` = 'ada@example.com' LIMIT 1",
        (
            "SELECT COUNT(*) AS `__count` FROM `orders` WHERE `orders`.`status` IN ('paid', "
            "'shipped')"
        ),
        (
            "SELECT `orders`.`user_id`, SUM(`orders`.`total`) AS `total_sum` FROM `orders` GROUP "
            "BY `orders`.`user_id` ORDER BY NULL"
        ),
        (
            "SELECT `orders`.`id`, `orders`.`user_id`, `users`.`id`, `users`.`name` FROM `orders` "
            "INNER JOIN `users` ON (`orders`.`user_id` = `users`.`id`) WHERE `users`.`name` = "
            "'ada'"
        ),
        (
            "SELECT `orders`.`id` FROM `orders` LEFT OUTER JOIN `items` ON (`orders`.`id` = "
            "`items`.`order_id`) WHERE `items`.`id` IS NULL"
        ),
        (
            "SELECT `users`.`id`, `users`.`name` FROM `users` WHERE `users`.`id` IN (SELECT "
            "U0.`user_id` FROM `orders` U0 WHERE U0.`total` > 5)"
        ),
        (
            "SELECT `users`.`id`, EXISTS(SELECT 1 AS `a` FROM `orders` U0 WHERE U0.`user_id` = "
            "(`users`.`id`) LIMIT 1) AS `has_orders` FROM `users`"
        ),
        (
            "SELECT `users`.`id`, COUNT(`orders`.`id`) AS `n` FROM `users` LEFT OUTER JOIN "
            "`orders` ON (`users`.`id` = `orders`.`user_id`) GROUP BY `users`.`id` HAVING "
            "COUNT(`orders`.`id`) > 0 ORDER BY NULL"
        ),
        (
            "SELECT `users`.`id` FROM `users` WHERE `users`.`created` >= '2024-01-01 00:00:00' "
            "AND `users`.`created` < '2030-01-01 00:00:00'"
        ),
        "SELECT `users`.`id` FROM `users` WHERE EXTRACT(YEAR FROM `users`.`created`) = 2026",
        "SELECT `users`.`id` FROM `users` WHERE `users`.`name` REGEXP BINARY '^a'",
        "SELECT `users`.`id` FROM `users` WHERE `users`.`email` LIKE '%example.com' ESCAPE '\\\\'",
        "SELECT DISTINCT `orders`.`status` FROM `orders` ORDER BY `orders`.`status` ASC",
        (
            "SELECT `users`.`id` FROM `users` WHERE JSON_EXTRACT(`users`.`prefs`, '$.\"theme\"') "
            "= JSON_EXTRACT('\"dark\"', '$')"
        ),
        (
            "SELECT `users`.`id` FROM `users` WHERE JSON_CONTAINS_PATH(`users`.`prefs`, 'one', "
            "'$.\"theme\"')"
        ),
        (
            "SELECT CAST(DATE_FORMAT(`orders`.`created_at`, '%Y-%m-01 00:00:00') AS DATETIME) AS "
            "`month`, COUNT(`orders`.`id`) AS `c` FROM `orders` GROUP BY 1 ORDER BY NULL"
        ),
        (
            "SELECT `orders`.`id` FROM `orders` ORDER BY `orders`.`total` DESC, `orders`.`id` ASC "
            "LIMIT 5"
        ),
        "SELECT `orders`.`id` FROM `orders` WHERE `orders`.`id` = 1 LIMIT 1 FOR UPDATE",
        (
            "INSERT INTO `users` (`name`, `email`, `active`, `created`, `prefs`, `login_count`) "
            "VALUES ('dj', 'dj@example.com', 1, '2026-01-01 10:00:00', NULL, 0)"
        ),
        "UPDATE `users` SET `login_count` = (`users`.`login_count` + 1) WHERE `users`.`id` = 1",
        "UPDATE `users` SET `name` = 'ada', `email` = 'ada@example.com' WHERE `users`.`id` = 1",
        "DELETE FROM `items` WHERE `items`.`id` IN (999, 1000)",
        "SELECT `django_migrations`.`app` FROM (SELECT 'auth' AS `app`) `django_migrations`",
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SELECT @@SQL_AUTO_IS_NULL",
        "SELECT VERSION()",
        "SELECT engine FROM information_schema.tables WHERE table_name = 'users'",
        (
            "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = "
            "DATABASE()"
        ),
        (
            "SELECT column_name, data_type, character_maximum_length, numeric_precision, "
            "numeric_scale, extra, column_default, collation_name, column_comment, column_type, "
            "is_nullable FROM information_schema.columns WHERE table_name = 'users' AND "
            "table_schema = DATABASE()"
        ),
        (
            "SELECT kc.`constraint_name`, kc.`column_name`, kc.`referenced_table_name`, "
            "kc.`referenced_column_name`, c.`constraint_type` FROM "
            "information_schema.key_column_usage AS kc, information_schema.table_constraints AS c "
            "WHERE kc.table_schema = DATABASE() AND c.table_schema = kc.table_schema AND "
            "c.constraint_name = kc.constraint_name AND c.constraint_type != 'CHECK' AND "
            "kc.table_name = 'users' ORDER BY kc.`ordinal_position`"
        ),
        (
            "SELECT c.constraint_name AS name, cc.check_clause AS clause FROM "
            "information_schema.check_constraints AS cc, information_schema.table_constraints AS "
            "c WHERE cc.constraint_schema = DATABASE() AND c.table_schema = cc.constraint_schema "
            "AND cc.constraint_name = c.constraint_name AND c.constraint_type = 'CHECK' AND "
            "c.table_name = 'users'"
        ),
        "SHOW INDEX FROM `users`",
        "SHOW FULL TABLES",
    ),
    "window": (
        (
            "SELECT id, LAG(total, 1) OVER (ORDER BY id) AS prev, LEAD(total) OVER (ORDER BY id) "
            "AS next FROM orders"
        ),
        (
            "SELECT id, user_id, total, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY total "
            "DESC) AS rn FROM orders"
        ),
        (
            "SELECT id, total, RANK() OVER w AS r, DENSE_RANK() OVER w AS dr FROM orders WINDOW w "
            "AS (ORDER BY total DESC)"
        ),
        (
            "SELECT id, total, SUM(total) OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND "
            "CURRENT ROW) AS running FROM orders"
        ),
        (
            "SELECT id, total, AVG(total) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND 1 "
            "FOLLOWING) AS moving_avg FROM orders"
        ),
        (
            "SELECT id, FIRST_VALUE(total) OVER (PARTITION BY user_id ORDER BY created_at) AS "
            "first_total, LAST_VALUE(total) OVER (PARTITION BY user_id ORDER BY created_at RANGE "
            "BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS last_total FROM orders"
        ),
        (
            "SELECT id, NTILE(4) OVER (ORDER BY total) AS quartile, PERCENT_RANK() OVER (ORDER BY "
            "total) AS pr, CUME_DIST() OVER (ORDER BY total) AS cd FROM orders"
        ),
        "SELECT id, NTH_VALUE(total, 2) OVER (ORDER BY id) AS second FROM orders",
        (
            "SELECT * FROM (SELECT id, user_id, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY "
            "created_at DESC) AS rn FROM orders) ranked WHERE rn = 1"
        ),
        (
            "SELECT user_id, COUNT(*) OVER () AS total_rows, COUNT(*) OVER (PARTITION BY user_id) "
            "AS per_user FROM orders"
        ),
        (
            "SELECT id, PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY total) OVER (PARTITION BY "
            "user_id) AS median FROM orders"
        ),
        "SELECT id, MEDIAN(total) OVER (PARTITION BY user_id) AS median FROM orders",
        (
            "SELECT id, total - AVG(total) OVER (PARTITION BY status) AS diff FROM orders ORDER "
            "BY diff DESC"
        ),
    ),
    "cte": (
        (
            "WITH paid AS (SELECT * FROM orders WHERE status = 'paid') SELECT user_id, SUM(total) "
            "FROM paid GROUP BY user_id"
        ),
        (
            "WITH a AS (SELECT user_id, SUM(total) AS t FROM orders GROUP BY user_id), b AS "
            "(SELECT AVG(t) AS avg_t FROM a) SELECT a.* FROM a, b WHERE a.t > b.avg_t"
        ),
        (
            "WITH RECURSIVE nums (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM nums WHERE n < 10) "
            "SELECT n FROM nums"
        ),
        (
            "WITH RECURSIVE tree AS (SELECT id, parent_id, name, 0 AS depth, CAST(name AS "
            "CHAR(500)) AS path FROM categories WHERE parent_id IS NULL UNION ALL SELECT c.id, "
            "c.parent_id, c.name, t.depth + 1, CONCAT(t.path, ' > ', c.name) FROM categories c "
            "JOIN tree t ON c.parent_id = t.id) SELECT * FROM tree ORDER BY path"
        ),
        (
            "WITH RECURSIVE dates AS (SELECT DATE '2026-01-01' AS d UNION ALL SELECT d + INTERVAL "
            "1 DAY FROM dates WHERE d < '2026-01-31') SELECT d FROM dates"
        ),
        (
            "WITH RECURSIVE ancestors AS (SELECT id, parent_id FROM categories WHERE id = 3 UNION "
            "SELECT c.id, c.parent_id FROM categories c INNER JOIN ancestors a ON a.parent_id = "
            "c.id) SELECT id FROM ancestors"
        ),
        "WITH t AS (SELECT 1 AS x) SELECT * FROM t UNION ALL SELECT 2",
        (
            "WITH cnt AS (SELECT user_id, COUNT(*) c FROM orders GROUP BY user_id) SELECT u.name, "
            "COALESCE(cnt.c, 0) AS orders FROM users u LEFT JOIN cnt ON cnt.user_id = u.id"
        ),
        (
            "SELECT * FROM users WHERE id IN (WITH x AS (SELECT user_id FROM orders) SELECT "
            "user_id FROM x)"
        ),
        (
            "INSERT INTO counters (name, hits) WITH src AS (SELECT 'cte-ins' AS n) SELECT n, 1 "
            "FROM src ON DUPLICATE KEY UPDATE hits = hits + 1"
        ),
        (
            "DELETE FROM items WHERE order_id IN (WITH old AS (SELECT id FROM orders WHERE "
            "created_at < '2000-01-01') SELECT id FROM old)"
        ),
    ),
    "json": (
        (
            "SELECT jt.sku, jt.qty FROM docs, JSON_TABLE(docs.data, '$.items[*]' COLUMNS (sku "
            "VARCHAR(32) PATH '$.sku', qty INT PATH '$.qty')) AS jt"
        ),
        (
            "SELECT jt.* FROM docs d JOIN JSON_TABLE(d.data, '$.items[*]' COLUMNS (rowid FOR "
            "ORDINALITY, sku VARCHAR(32) PATH '$.sku' DEFAULT 'none' ON EMPTY, qty INT PATH "
            "'$.qty' NULL ON ERROR, has_qty INT EXISTS PATH '$.qty')) jt"
        ),
        (
            'SELECT * FROM JSON_TABLE(\'[{"a": 1, "b": [1, 2]}, {"a": 2, "b": [3]}]\', '
            "'$[*]' COLUMNS (a INT PATH '$.a', NESTED PATH '$.b[*]' COLUMNS (b INT PATH '$'))) AS "
            "t"
        ),
        (
            "SELECT JSON_EXTRACT(prefs, '$.theme') AS theme, JSON_UNQUOTE(JSON_EXTRACT(prefs, "
            "'$.tags[0]')) AS tag FROM users"
        ),
        (
            "SELECT JSON_VALUE(prefs, '$.theme') AS theme, JSON_QUERY(prefs, '$.tags') AS tags "
            "FROM users WHERE JSON_VALUE(prefs, '$.theme') = 'dark'"
        ),
        "SELECT JSON_OBJECT('id', id, 'name', name) AS obj FROM users",
        "SELECT JSON_ARRAYAGG(name) AS names, JSON_OBJECTAGG(id, email) AS emails FROM users",
        (
            "SELECT JSON_ARRAY(1, 'two', NULL, TRUE) AS arr, JSON_LENGTH(data, '$.items') AS n "
            "FROM docs"
        ),
        (
            "UPDATE users SET prefs = JSON_SET(COALESCE(prefs, '{}'), '$.theme', 'light', "
            "'$.seen', TRUE) WHERE id = 2"
        ),
        "UPDATE users SET prefs = JSON_REMOVE(prefs, '$.seen') WHERE id = 2",
        "UPDATE users SET prefs = JSON_ARRAY_APPEND(prefs, '$.tags', 'c') WHERE id = 1",
        "SELECT id FROM users WHERE JSON_CONTAINS(prefs, '\"a\"', '$.tags')",
        "SELECT id FROM users WHERE JSON_SEARCH(prefs, 'one', 'dark') IS NOT NULL",
        (
            "SELECT JSON_KEYS(data) AS k, JSON_TYPE(JSON_EXTRACT(data, '$.items')) AS t, "
            "JSON_VALID(data) AS v, JSON_DEPTH(data) AS dp FROM docs"
        ),
        (
            "SELECT JSON_MERGE_PATCH('{\"a\": 1}', '{\"b\": 2}') AS m, JSON_MERGE_PRESERVE('[1]', "
            "'[2]') AS p, JSON_DETAILED(data) AS pretty, JSON_COMPACT(data) AS c FROM docs"
        ),
        (
            'SELECT JSON_OVERLAPS(prefs, \'{"theme": "dark"}\') AS o, JSON_EQUALS(prefs, prefs) '
            "AS e FROM users WHERE prefs IS NOT NULL"
        ),
        "SELECT id, prefs FROM users WHERE JSON_EXISTS(prefs, '$.tags')",
        (
            "SELECT JSON_QUOTE(name), JSON_INSERT('{}', '$.x', name), JSON_REPLACE('{\"x\": 1}', "
            "'$.x', 2) FROM users"
        ),
    ),
    "group_concat": (
        (
            "SELECT user_id, GROUP_CONCAT(status ORDER BY created_at DESC SEPARATOR ', ') AS "
            "statuses FROM orders GROUP BY user_id"
        ),
        "SELECT GROUP_CONCAT(DISTINCT status ORDER BY status ASC SEPARATOR '|') FROM orders",
        "SELECT GROUP_CONCAT(name SEPARATOR ';') AS names FROM users",
        "SELECT GROUP_CONCAT(id ORDER BY id LIMIT 2) AS first_two FROM orders",
        (
            "SELECT user_id, GROUP_CONCAT(CONCAT(id, ':', total) ORDER BY total DESC SEPARATOR "
            "'\\n') FROM orders GROUP BY user_id"
        ),
        "SELECT GROUP_CONCAT(name) FROM users",
    ),
    "cast_convert": (
        (
            "SELECT CAST(total AS CHAR) AS t, CAST(total AS SIGNED) AS s, CAST('2026-01-01' AS "
            "DATE) AS d FROM orders"
        ),
        "SELECT CAST(name AS CHAR CHARACTER SET utf8mb4) FROM users",
        "SELECT CAST(name AS CHAR(10) CHARACTER SET latin1) FROM users",
        "SELECT CONVERT(name USING utf8mb4) COLLATE utf8mb4_unicode_ci AS n FROM users",
        "SELECT CONVERT(name, CHAR(20)) AS n, CONVERT('42', UNSIGNED INTEGER) AS u FROM users",
        "SELECT CONVERT(name USING latin1) FROM users",
        "SELECT name FROM users ORDER BY name COLLATE utf8mb4_bin",
        "SELECT name FROM users WHERE name = 'ADA' COLLATE utf8mb4_general_ci",
        "SELECT _utf8mb4'héllo' COLLATE utf8mb4_unicode_ci AS greeting",
        (
            "SELECT CAST(total AS DECIMAL(12, 4)) AS d, CAST(id AS DOUBLE) AS f, CAST(created_at "
            "AS TIME) AS t FROM orders"
        ),
        "SELECT BINARY name = 'ada' AS exact FROM users",
        "SELECT CAST(name AS BINARY) FROM users",
        "SELECT CHARSET(name), COLLATION(name), CONVERT(0x616263 USING utf8mb4) FROM users",
        "SELECT CAST(email AS CHAR(200)) COLLATE utf8mb4_bin AS e FROM users",
        "SELECT HEX(CAST(name AS BINARY(8))) FROM users",
        (
            "SELECT CAST(1.5 AS INTEGER), CAST(-1 AS UNSIGNED), CAST('12:30' AS TIME(3)), "
            "CAST(NOW() AS DATETIME(6))"
        ),
    ),
    "dates": (
        "SELECT * FROM orders WHERE created_at > NOW() - INTERVAL 7 DAY",
        (
            "SELECT DATE_ADD(created_at, INTERVAL 1 MONTH) AS next_month, DATE_SUB(created_at, "
            "INTERVAL 2 HOUR) AS earlier FROM orders"
        ),
        (
            "SELECT DATE_ADD('2026-01-01', INTERVAL '1:30' HOUR_MINUTE), DATE_ADD('2026-01-01', "
            "INTERVAL '1 2' DAY_HOUR)"
        ),
        (
            "SELECT TIMESTAMPDIFF(DAY, created_at, NOW()) AS age_days, DATEDIFF(NOW(), "
            "created_at) AS dd FROM orders"
        ),
        "SELECT TIMESTAMPADD(MINUTE, 30, created_at) FROM orders",
        (
            "SELECT DATE_FORMAT(created_at, '%Y-%m') AS month, COUNT(*) FROM orders GROUP BY "
            "DATE_FORMAT(created_at, '%Y-%m')"
        ),
        (
            "SELECT id FROM orders WHERE created_at BETWEEN CURDATE() - INTERVAL 30 DAY AND "
            "CURDATE() + INTERVAL 1 DAY"
        ),
        (
            "SELECT EXTRACT(YEAR_MONTH FROM created_at), YEAR(created_at), MONTH(created_at), "
            "DAYOFWEEK(created_at), WEEK(created_at, 3) FROM orders"
        ),
        (
            "SELECT UNIX_TIMESTAMP(created_at), FROM_UNIXTIME(1700000000), "
            "STR_TO_DATE('01/02/2026', '%d/%m/%Y') FROM orders"
        ),
        (
            "SELECT LAST_DAY(NOW()), MAKEDATE(2026, 32), SEC_TO_TIME(3600), "
            "TIME_TO_SEC('01:00:00'), CONVERT_TZ(NOW(), '+00:00', '+02:00')"
        ),
        "SELECT CURRENT_TIMESTAMP, CURRENT_DATE, CURRENT_TIME, UTC_TIMESTAMP(), NOW(6), SYSDATE()",
        (
            "SELECT created_at + INTERVAL 1 DAY AS tomorrow, INTERVAL 1 DAY + created_at AS also "
            "FROM orders"
        ),
        "UPDATE orders SET created_at = created_at - INTERVAL 1 YEAR WHERE id = 4",
        "DELETE FROM orders WHERE created_at < NOW() - INTERVAL 10 YEAR",
        (
            "SELECT DATE(created_at) AS day, SUM(total) FROM orders WHERE created_at >= "
            "DATE_SUB(CURDATE(), INTERVAL 1 WEEK) GROUP BY DATE(created_at)"
        ),
        (
            "SELECT ADDDATE(created_at, 5), SUBDATE(created_at, INTERVAL 5 DAY), "
            "ADDTIME(created_at, '01:00:00') FROM orders"
        ),
        "SELECT TIMESTAMP '2026-01-01 10:00:00', DATE '2026-01-01', TIME '10:00:00'",
    ),
    "upsert": (
        (
            "INSERT INTO counters (name, hits) VALUES ('home', 1) ON DUPLICATE KEY UPDATE hits = "
            "hits + 1"
        ),
        (
            "INSERT INTO counters (name, hits, updated) VALUES ('home', 1, NOW()) ON DUPLICATE "
            "KEY UPDATE hits = hits + VALUES(hits), updated = VALUES(updated)"
        ),
        (
            "INSERT INTO counters (name, hits) VALUES ('a', 1), ('b', 2) ON DUPLICATE KEY UPDATE "
            "hits = VALUE(hits)"
        ),
        "INSERT INTO counters SET name = 'c', hits = 1 ON DUPLICATE KEY UPDATE hits = hits + 1",
        "INSERT IGNORE INTO counters (name, hits) VALUES ('home', 5)",
        (
            "INSERT INTO users (name, email) VALUES ('ada', 'ada@example.com') ON DUPLICATE KEY "
            "UPDATE id = LAST_INSERT_ID(id)"
        ),
        (
            "INSERT INTO counters (name, hits) VALUES ('d', 1) ON DUPLICATE KEY UPDATE hits = "
            "IF(VALUES(hits) > hits, VALUES(hits), hits), updated = NOW()"
        ),
        (
            "INSERT INTO counters (`name`, `hits`) VALUES ('e', 1) ON DUPLICATE KEY UPDATE `hits` "
            "= `counters`.`hits` + 1"
        ),
        "INSERT LOW_PRIORITY INTO counters (name, hits) VALUES ('f', 1)",
        "INSERT INTO orders (user_id, total) VALUES (1, 5.00), (2, 6.00)",
        (
            "INSERT INTO orders (user_id, total, status) SELECT id, 0, 'draft' FROM users WHERE "
            "active = 1"
        ),
        "INSERT INTO orders VALUES (DEFAULT, 3, 1.00, DEFAULT, DEFAULT, NULL)",
    ),
    "returning": (
        "INSERT INTO orders (user_id, total) VALUES (1, 2.50) RETURNING id, created_at",
        (
            "INSERT INTO orders (user_id, total) VALUES (1, 2.50), (2, 3.50) RETURNING id AS "
            "new_id, total * 2 AS doubled"
        ),
        "INSERT INTO orders (user_id, total) SELECT id, 1 FROM users WHERE id = 1 RETURNING *",
        "DELETE FROM orders WHERE status = 'draft' RETURNING id, user_id",
        "DELETE FROM orders WHERE total = 0 RETURNING orders.*",
        (
            "INSERT INTO counters (name, hits) VALUES ('r', 1) ON DUPLICATE KEY UPDATE hits = "
            "hits + 1 RETURNING name, hits"
        ),
        (
            "INSERT INTO orders (user_id, total) VALUES (1, 4.50) RETURNING id, CONCAT('order-', "
            "id) AS label"
        ),
    ),
    "delete_join": (
        "DELETE FROM items WHERE order_id = 999",
        "DELETE FROM items WHERE order_id NOT IN (SELECT id FROM orders) AND id > 1000",
        "DELETE FROM orders WHERE status = 'draft' ORDER BY created_at LIMIT 100",
        "DELETE LOW_PRIORITY QUICK IGNORE FROM items WHERE id = 12345",
        (
            "DELETE FROM items WHERE EXISTS (SELECT 1 FROM orders o WHERE o.id = items.order_id "
            "AND o.status = 'void')"
        ),
    ),
    "update": (
        (
            "UPDATE orders SET status = 'archived' WHERE status = 'shipped' ORDER BY created_at "
            "ASC LIMIT 10"
        ),
        "UPDATE orders SET total = total * 1.1 WHERE user_id = 1 ORDER BY id DESC LIMIT 1",
        "UPDATE users SET active = 0, login_count = 0 WHERE created < '2000-01-01'",
        (
            "UPDATE orders SET status = CASE WHEN total > 50 THEN 'big' WHEN total > 5 THEN 'mid' "
            "ELSE 'small' END WHERE id IN (1, 2, 3)"
        ),
        "UPDATE orders SET note = CONCAT(COALESCE(note, ''), 'checked;') WHERE id = 1",
        "UPDATE LOW_PRIORITY IGNORE orders SET status = 'x' WHERE id = 999",
        (
            "UPDATE orders SET total = (SELECT SUM(price * qty) FROM items WHERE items.order_id = "
            "orders.id) WHERE id = 1"
        ),
        "UPDATE users SET name = TRIM(name) WHERE name LIKE ' %' OR name LIKE '% '",
        "UPDATE orders SET status = DEFAULT WHERE id = 2",
    ),
    "functions": (
        (
            "SELECT UPPER(name) AS u, LOWER(email) AS l, LENGTH(name), CHAR_LENGTH(name), "
            "SUBSTRING(email, 1, 3), SUBSTRING_INDEX(email, '@', -1) AS domain FROM users"
        ),
        (
            "SELECT LPAD(id, 5, '0'), RPAD(name, 10, '.'), REPEAT('-', 3), REVERSE(name), "
            "LOCATE('@', email), INSTR(email, '.'), FIELD(name, 'bob', 'ada'), ELT(1, 'a', 'b') "
            "FROM users"
        ),
        (
            "SELECT COALESCE(note, 'none'), IFNULL(note, ''), NULLIF(status, 'new'), IF(total > "
            "5, 'y', 'n'), GREATEST(total, 5), LEAST(total, 5) FROM orders"
        ),
        (
            "SELECT ROUND(total, 1), TRUNCATE(total, 0), CEIL(total), FLOOR(total), ABS(-total), "
            "MOD(id, 2), POW(2, 3), SQRT(16), RAND() < 2 FROM orders"
        ),
        (
            "SELECT MD5(email), SHA2(email, 256), UUID(), CRC32(name), TO_BASE64(name), HEX(name) "
            "FROM users"
        ),
        (
            "SELECT REGEXP_REPLACE(email, '@.*$', ''), REGEXP_SUBSTR(email, '[a-z]+'), "
            "REGEXP_INSTR(email, '@') FROM users"
        ),
        (
            "SELECT FORMAT(total, 2), FORMAT(total, 2, 'de_DE'), CONCAT_WS('-', orders.id, "
            "status), SPACE(2), QUOTE(name) FROM orders JOIN users ON users.id = orders.user_id"
        ),
        (
            "SELECT LEFT(name, 2), RIGHT(email, 4), MID(email, 2, 3), INSERT(name, 1, 1, 'X'), "
            "REPLACE(email, '@', ' at ') FROM users"
        ),
        "SELECT name, SOUNDEX(name), name SOUNDS LIKE 'adah' FROM users",
        (
            "SELECT DATABASE(), SCHEMA(), USER(), CURRENT_USER(), CONNECTION_ID(), "
            "LAST_INSERT_ID(), ROW_COUNT(), FOUND_ROWS()"
        ),
        "SELECT INET_ATON('10.0.0.1'), INET_NTOA(167772161), INET6_ATON('::1') IS NOT NULL",
        (
            "SELECT COUNT(DISTINCT user_id), MIN(total), MAX(total), AVG(total), STD(total), "
            "VARIANCE(total), BIT_OR(id) FROM orders"
        ),
        "SELECT CASE status WHEN 'paid' THEN 1 ELSE 0 END AS is_paid FROM orders",
        (
            "SELECT name FROM users WHERE name IN ('ada', 'bob') AND email NOT LIKE '%spam%' AND "
            "id BETWEEN 1 AND 100"
        ),
        "SELECT id FROM orders WHERE status IS NOT NULL AND note IS NULL AND NOT (total < 0)",
        "SELECT id, total DIV 1, total % 2, id & 1, id | 2, id ^ 3, id << 1, ~id FROM orders",
        "SELECT SLEEP(0)",
        "SELECT BENCHMARK(1, 1)",
        "SELECT COLUMN_JSON(COLUMN_CREATE('a', 1, 'b', 'x')) AS dyn",
        "SELECT COLUMN_GET(COLUMN_CREATE('a', 1), 'a' AS INT) AS a",
        "SELECT NATURAL_SORT_KEY(name) FROM users ORDER BY NATURAL_SORT_KEY(name)",
        "SELECT SFORMAT('{} has {} orders', 'ada', 2)",
    ),
    "show": (
        "SHOW TABLES",
        "SHOW TABLES LIKE 'user%'",
        "SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'",
        "SHOW COLUMNS FROM users",
        "SHOW FULL COLUMNS FROM users FROM agentsql",
        "SHOW FULL COLUMNS FROM `orders` LIKE 'to%'",
        "SHOW INDEX FROM orders",
        "SHOW KEYS FROM orders IN agentsql",
        "SHOW CREATE TABLE users",
        "SHOW CREATE TABLE `agentsql`.`orders`",
        "SHOW TABLE STATUS LIKE 'orders'",
        "SHOW TABLE STATUS FROM agentsql WHERE Name = 'users'",
        "SHOW DATABASES",
        "SHOW DATABASES LIKE 'agentsql%'",
        "SHOW VARIABLES LIKE 'character_set%'",
        "SHOW SESSION VARIABLES LIKE 'sql_mode'",
        "SHOW GLOBAL VARIABLES LIKE 'max_connections'",
        "SHOW VARIABLES WHERE Variable_name IN ('version', 'version_comment')",
        "SHOW STATUS LIKE 'Threads%'",
        "SHOW SESSION STATUS LIKE 'Handler_read%'",
        "SHOW WARNINGS",
        "SHOW ERRORS",
        "SHOW WARNINGS LIMIT 10",
        "SHOW COUNT(*) WARNINGS",
        "SHOW CHARACTER SET LIKE 'utf8%'",
        "SHOW ENGINES",
        "SHOW CREATE DATABASE agentsql",
        "SHOW CREATE VIEW agentsql.v_paid",
        "SHOW CREATE FUNCTION agentsql.slugify",
        "SHOW CREATE SEQUENCE agentsql.ticket_seq",
        "SHOW FUNCTION STATUS WHERE Db = 'agentsql'",
        "SHOW PROCEDURE STATUS WHERE Db = 'agentsql'",
        "SHOW TRIGGERS FROM agentsql",
        "SHOW PLUGINS",
        "SHOW OPEN TABLES FROM agentsql",
        "SHOW PRIVILEGES",
        "SHOW PROFILES",
        "SHOW TABLE STATUS",
        "SHOW EVENTS FROM agentsql",
        "SHOW MASTER STATUS",
        "SHOW INDEXES FROM users WHERE Key_name = 'PRIMARY'",
        "SHOW COLLATION WHERE Charset = 'utf8mb4' AND `Default` = 'Yes'",
        "SHOW COLLATION LIKE 'utf8mb4%'",
        "SHOW CHARACTER SET WHERE Charset LIKE 'utf8%'",
        "SHOW CHARSET WHERE charset IN ('latin1', 'utf8mb4') OR Maxlen > 3",
        "SHOW COLLATION WHERE Collation = CAST('latin1_bin' AS CHAR CHARSET utf8mb4)",
    ),
    "describe_explain": (
        "DESCRIBE users",
        "DESC orders",
        "DESCRIBE users email",
        "DESCRIBE agentsql.orders 'to%'",
        "EXPLAIN users",
        "EXPLAIN SELECT * FROM orders WHERE user_id = 1",
        "EXPLAIN EXTENDED SELECT * FROM orders WHERE user_id = 1",
        "EXPLAIN FORMAT=JSON SELECT o.id FROM orders o JOIN users u ON u.id = o.user_id",
        "EXPLAIN PARTITIONS SELECT * FROM orders",
        "ANALYZE SELECT * FROM orders WHERE total > 1",
        "ANALYZE FORMAT=JSON SELECT * FROM orders WHERE total > 1",
        "EXPLAIN UPDATE orders SET status = 'x' WHERE id = 1",
        "EXPLAIN DELETE FROM orders WHERE id = 1",
        "EXPLAIN INSERT INTO counters (name) VALUES ('z')",
        "DESCRIBE SELECT * FROM users WHERE id = 1",
        "EXPLAIN SELECT * FROM users WHERE id IN (SELECT user_id FROM orders)",
    ),
    "set_session": (
        "SET NAMES utf8mb4",
        "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
        "SET autocommit = 0",
        "SET autocommit=1",
        "SET SESSION time_zone = '+00:00'",
        "SET @@session.time_zone = '+00:00'",
        (
            "SET SESSION sql_mode = "
            "'STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'"
        ),
        "SET sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SET TRANSACTION READ ONLY",
        "SET SESSION group_concat_max_len = 1000000",
        "SET max_statement_time = 10",
        "SET SESSION wait_timeout = 28800",
        "SET SESSION net_read_timeout = 60, SESSION net_write_timeout = 60",
        "SET @user_id = 1",
        "SET @a := 1, @b := 'x'",
        "SET @total = (SELECT SUM(total) FROM orders)",
        "SET SESSION innodb_lock_wait_timeout = 5",
        "SET SESSION optimizer_switch = 'index_merge=off'",
        "SET SESSION sql_select_limit = DEFAULT",
        "SET SESSION tx_isolation = 'READ-COMMITTED'",
        "SET @@SESSION.autocommit = 1",
        "SET character_set_results = NULL",
        "SET SESSION foreign_key_checks = 0",
        "SET SESSION unique_checks = 1",
        "SET STATEMENT max_statement_time = 5 FOR SELECT * FROM orders",
        "SET lc_time_names = 'en_US'",
        "SET SESSION div_precision_increment = 8",
        "SET SESSION big_tables = 0",
        "SET SESSION collation_connection = utf8mb4_unicode_ci",
        "SET SESSION join_buffer_size = 262144",
        "SET join_buffer_space_limit = 2097152, join_cache_level = 4",
        "SET SESSION read_buffer_size = 262144, read_rnd_buffer_size = 524288",
        "SET bulk_insert_buffer_size = 8388608",
        "SET max_sort_length = 2048, max_length_for_sort_data = 1024",
        "SET optimizer_prune_level = 1, optimizer_use_condition_selectivity = 4",
        "SET eq_range_index_dive_limit = 200, in_predicate_conversion_threshold = 1000",
        "SET SESSION expensive_subquery_limit = 100, max_error_count = 128",
        "SET @@session.join_buffer_size = DEFAULT",
    ),
    "transactions": (
        (
            "START TRANSACTION; SAVEPOINT sp1; ROLLBACK TO SAVEPOINT sp1; RELEASE SAVEPOINT sp1; "
            "COMMIT"
        ),
        "BEGIN; SAVEPOINT `sa_savepoint_1`; ROLLBACK TO sa_savepoint_1; ROLLBACK",
        "START TRANSACTION",
        "START TRANSACTION READ ONLY",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT",
        "BEGIN",
        "BEGIN WORK",
        "COMMIT",
        "COMMIT WORK",
        "ROLLBACK",
        "ROLLBACK WORK",
        "COMMIT AND NO CHAIN",
    ),
    "locks": (
        "SELECT * FROM orders WHERE id = 1 LOCK IN SHARE MODE",
        "SELECT * FROM orders WHERE id = 1 FOR UPDATE NOWAIT",
        "SELECT * FROM orders WHERE id = 1 FOR UPDATE SKIP LOCKED",
        "SELECT * FROM orders WHERE id = 1 FOR UPDATE WAIT 5",
        "SELECT GET_LOCK('job-1', 0), RELEASE_LOCK('job-1'), IS_FREE_LOCK('job-1')",
    ),
    "fulltext": (
        "SELECT id, title FROM articles WHERE MATCH(title, body) AGAINST('mariadb')",
        (
            "SELECT id, MATCH(title, body) AGAINST('mariadb' IN NATURAL LANGUAGE MODE) AS score "
            "FROM articles ORDER BY score DESC"
        ),
        (
            "SELECT id FROM articles WHERE MATCH(title, body) AGAINST('+mariadb -postgresql' IN "
            "BOOLEAN MODE)"
        ),
        (
            "SELECT id FROM articles WHERE MATCH(title, body) AGAINST('database' WITH QUERY "
            "EXPANSION)"
        ),
        (
            "SELECT id FROM articles WHERE MATCH(title, body) AGAINST('tun*' IN BOOLEAN MODE) AND "
            "id > 0"
        ),
        (
            "SELECT id FROM articles WHERE MATCH (title,body) AGAINST ('\"buffer pool\"' IN "
            "BOOLEAN MODE)"
        ),
    ),
    "spatial": (
        "SELECT id, ST_AsText(pos) FROM places",
        "SELECT id, ST_X(pos), ST_Y(pos) FROM places",
        "SELECT id FROM places WHERE ST_Distance(pos, POINT(0, 0)) < 10",
        (
            "SELECT id FROM places WHERE ST_Contains(ST_GeomFromText('POLYGON((0 0, 0 6, 6 6, 6 "
            "0, 0 0))'), pos)"
        ),
        (
            "SELECT id FROM places WHERE MBRContains(ST_GeomFromText('POLYGON((0 0, 0 6, 6 6, 6 "
            "0, 0 0))'), pos)"
        ),
        "SELECT ST_AsGeoJSON(pos), ST_SRID(pos), ST_GeometryType(pos) FROM places",
        "SELECT ST_Distance_Sphere(POINT(2.35, 48.85), POINT(12.49, 41.89)) AS meters",
        "INSERT INTO places (name, pos) VALUES ('d', ST_PointFromText('POINT(3 4)'))",
        "SELECT ST_AsWKT(ST_Buffer(pos, 1)) FROM places WHERE id = 1",
        "SELECT ST_Within(pos, ST_Envelope(LINESTRING(POINT(0,0), POINT(6,6)))) FROM places",
        "UPDATE places SET pos = POINT(2, 2) WHERE id = 1",
        'SELECT ST_AsText(ST_GeomFromGeoJSON(\'{"type": "Point", "coordinates": [1, 2]}\'))',
    ),
    "sequences": (
        "SELECT NEXTVAL(ticket_seq)",
        "SELECT LASTVAL(ticket_seq)",
        "SELECT SETVAL(ticket_seq, 100)",
        "INSERT INTO counters (name, hits) VALUES (CONCAT('t', NEXTVAL(ticket_seq)), 1)",
        "SELECT NEXTVAL(agentsql.ticket_seq) AS ticket",
        "SELECT * FROM ticket_seq",
    ),
    "versioned": (
        "CREATE TABLE IF NOT EXISTS hist (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING",
        (
            "CREATE TABLE IF NOT EXISTS hist2 (id INT PRIMARY KEY, v INT, note TEXT WITHOUT "
            "SYSTEM VERSIONING, s TIMESTAMP(6) GENERATED ALWAYS AS ROW START, e TIMESTAMP(6) "
            "GENERATED ALWAYS AS ROW END, PERIOD FOR SYSTEM_TIME(s, e)) WITH SYSTEM VERSIONING"
        ),
        (
            "CREATE TABLE IF NOT EXISTS bookings (id INT, room INT, d1 DATE, d2 DATE, "
            "PERIOD FOR stay (d1, d2), PRIMARY KEY (id, stay WITHOUT OVERLAPS))"
        ),
        "INSERT INTO hist (id, v) VALUES (1, 1), (2, 2)",
        "UPDATE hist SET v = 3 WHERE id = 1",
        "SELECT * FROM hist FOR SYSTEM_TIME ALL WHERE id = 1",
        "SELECT id, s, e FROM hist2 FOR SYSTEM_TIME AS OF NOW()",
        (
            "CREATE VIEW v_positive AS SELECT id, total FROM orders WHERE total > 0 "
            "WITH CASCADED CHECK OPTION"
        ),
        "SELECT * FROM prices FOR SYSTEM_TIME ALL",
        "SELECT * FROM prices FOR SYSTEM_TIME AS OF TIMESTAMP '2026-01-01 00:00:00'",
        "SELECT * FROM prices FOR SYSTEM_TIME AS OF NOW() - INTERVAL 1 HOUR",
        (
            "SELECT id, amount, ROW_START, ROW_END FROM prices FOR SYSTEM_TIME BETWEEN "
            "'2000-01-01' AND NOW()"
        ),
        "SELECT * FROM prices FOR SYSTEM_TIME FROM '2000-01-01' TO '2100-01-01' WHERE id = 1",
        "SELECT p.* FROM prices FOR SYSTEM_TIME ALL AS p WHERE p.id = 1",
        "UPDATE prices SET amount = 10.99 WHERE id = 1",
        "SELECT * FROM prices FOR SYSTEM_TIME AS OF CURRENT_TIMESTAMP",
    ),
    "misc_select": (
        "SELECT 1",
        "SELECT 1 FROM DUAL",
        "SELECT SQL_CALC_FOUND_ROWS * FROM orders LIMIT 2",
        "SELECT SQL_NO_CACHE id FROM orders",
        "SELECT STRAIGHT_JOIN o.id FROM orders o JOIN users u ON u.id = o.user_id",
        "SELECT o.id FROM orders o FORCE INDEX (ix_user) WHERE o.user_id = 1",
        "SELECT o.id FROM orders o USE INDEX (PRIMARY) WHERE o.id > 1",
        "SELECT o.id FROM orders o IGNORE INDEX (ix_user) WHERE o.user_id = 1",
        "SELECT HIGH_PRIORITY id FROM orders",
        "SELECT id FROM orders LIMIT 2, 5",
        "SELECT id FROM orders ORDER BY id LIMIT 5 OFFSET 0",
        "SELECT * FROM orders ORDER BY id FETCH FIRST 2 ROWS ONLY",
        "SELECT * FROM orders ORDER BY total DESC OFFSET 1 ROWS FETCH NEXT 2 ROWS WITH TIES",
        "SELECT user_id, SUM(total) FROM orders GROUP BY user_id WITH ROLLUP",
        "SELECT id FROM orders UNION SELECT id FROM items ORDER BY id LIMIT 3",
        "SELECT id FROM orders INTERSECT SELECT order_id FROM items",
        "SELECT id FROM orders EXCEPT SELECT order_id FROM items",
        (
            "(SELECT id FROM orders ORDER BY id LIMIT 1) UNION ALL (SELECT id FROM users ORDER BY "
            "id DESC LIMIT 1)"
        ),
        (
            "SELECT u.name, o.total FROM users u NATURAL JOIN (SELECT user_id AS id, total FROM "
            "orders) o"
        ),
        "SELECT u.name FROM users u JOIN orders o USING (id)",
        "SELECT * FROM users u CROSS JOIN (SELECT COUNT(*) AS n FROM orders) c",
        (
            "SELECT u.name, (SELECT MAX(total) FROM orders o WHERE o.user_id = u.id) AS max_total "
            "FROM users u"
        ),
        "SELECT * FROM users WHERE (id, name) IN ((1, 'ada'), (2, 'bob'))",
        "SELECT * FROM users WHERE ROW(id, name) = ROW(1, 'ada')",
        "SELECT * FROM orders WHERE total > ALL (SELECT total FROM orders WHERE user_id = 2)",
        "SELECT * FROM orders WHERE total > ANY (SELECT total FROM orders WHERE user_id = 2)",
        "SELECT * FROM orders WHERE user_id = SOME (SELECT id FROM users)",
        "SELECT id INTO @first_id FROM orders ORDER BY id LIMIT 1",
        "SELECT id, total FROM orders ORDER BY id LIMIT 1 INTO @i, @t",
        (
            "SELECT 'it''s', \"double\", 'back\\\\slash', X'4142', 0x4142, B'0101', N'nat', 1e3, "
            ".5, -0.0"
        ),
        "SELECT `order`.`id` FROM orders AS `order`",
        "SELECT o.`status` AS `select`, o.id AS `from` FROM orders o",
        "SELECT a.id FROM orders a WHERE a.status = 'paid' /* trace-id: 1234 */",
        "SELECT id FROM orders -- trailing comment\nWHERE id = 1",
        "SELECT /*+ MAX_EXECUTION_TIME(1000) */ id FROM orders",
        "SELECT id FROM orders WHERE status <=> NULL",
        "SELECT id FROM orders WHERE status IN (SELECT 'paid' UNION SELECT 'new')",
        "SELECT @rownum := @rownum + 1 AS rn, id FROM orders, (SELECT @rownum := 0) r",
        "SELECT id, total FROM orders HAVING total > 5",
        "SELECT 1 AS one, 2 two, 'x' `three`",
        "SELECT id FROM orders WHERE user_id = 1 AND (status = 'paid' OR status = 'new')",
        "SELECT id FROM orders o WHERE o.total = (SELECT MAX(total) FROM orders)",
        "SELECT u.id, u.name FROM users AS u WHERE u.id = 1 FOR UPDATE",
        "SELECT * FROM users LIMIT 0",
        "SELECT ROWNUM() FROM users",
        "SELECT CURRENT_ROLE(), SESSION_USER(), SYSTEM_USER()",
        (
            "SELECT id FROM orders WHERE total > 10 AND user_id IN (1, 2) ORDER BY FIELD(status, "
            "'paid', 'new'), id"
        ),
    ),
    "ddl_mariadb": (
        (
            "CREATE TABLE p_range (id INT, d DATE) PARTITION BY RANGE (YEAR(d)) (PARTITION p0 "
            "VALUES LESS THAN (2020), PARTITION p1 VALUES LESS THAN MAXVALUE)"
        ),
        "CREATE TABLE p_hash (id INT PRIMARY KEY) PARTITION BY HASH (id) PARTITIONS 4",
        (
            "CREATE TABLE p_key (id INT PRIMARY KEY) PARTITION BY LINEAR KEY ALGORITHM=2 (id) "
            "PARTITIONS 4"
        ),
        (
            "CREATE TABLE p_list (id INT, r INT) PARTITION BY LIST (r) (PARTITION p0 VALUES IN "
            "(1, 2), PARTITION p1 VALUES IN (3))"
        ),
        (
            "CREATE TABLE p_cols (id INT, r INT) PARTITION BY RANGE COLUMNS (r) (PARTITION p0 "
            "VALUES LESS THAN (5), PARTITION p1 VALUES LESS THAN (MAXVALUE))"
        ),
        (
            "CREATE TABLE p_sub (id INT, d DATE) PARTITION BY RANGE (YEAR(d)) SUBPARTITION BY "
            "HASH (TO_DAYS(d)) SUBPARTITIONS 2 (PARTITION p0 VALUES LESS THAN (2020), PARTITION "
            "p1 VALUES LESS THAN MAXVALUE)"
        ),
        (
            "CREATE TABLE p_hist (id INT) WITH SYSTEM VERSIONING PARTITION BY SYSTEM_TIME "
            "INTERVAL 1 MONTH (PARTITION p0 HISTORY, PARTITION pn CURRENT)"
        ),
        "CREATE TABLE p_copy PARTITION BY HASH (id) PARTITIONS 2 AS SELECT id, name FROM users",
        "SELECT * FROM p_range PARTITION (p0, p1) WHERE id = 1",
        "INSERT INTO p_range PARTITION (p1) (id, d) VALUES (1, '2024-01-01')",
        (
            "CREATE TABLE net_hosts (id INT PRIMARY KEY, addr INET6 NOT NULL, addr4 INET4 NULL, "
            "ref UUID DEFAULT UUID())"
        ),
        "INSERT INTO net_hosts (id, addr, addr4) VALUES (1, '::1', '10.0.0.1')",
        (
            "CREATE TABLE notes_c (id INT PRIMARY KEY, body TEXT COMPRESSED, title VARCHAR(100) "
            "COMPRESSED=zlib NOT NULL, raw BLOB COMPRESSED) ROW_FORMAT=DYNAMIC"
        ),
    ),
    "keyword_names_values": (
        "CREATE TABLE kw (id INT PRIMARY KEY, `select` INT, `from` INT, `key` INT)",
        "INSERT INTO kw (id, `select`, `from`, `key`) VALUES (1, 10, 20, 30), (2, 11, 21, 31)",
        "SELECT t.select, t.from, t.key FROM kw AS t WHERE t.from > 0 ORDER BY t.select",
        "SELECT kw.select FROM agentsql.kw WHERE kw.from IN (SELECT k.from FROM kw k)",
        "UPDATE kw SET kw.from = 22 WHERE kw.select = 11",
        "DELETE FROM kw WHERE kw.select = 99",
        "VALUES (1, 2), (3, 4)",
        "VALUES (1, 'a'), (2, 'b') ORDER BY 1 DESC LIMIT 1",
        "VALUES ((SELECT COUNT(*) FROM users)) UNION VALUES (0)",
        "SELECT CAST('::1' AS INET6), CAST('10.0.0.2' AS INET4), INET6_ATON('::1')",
    ),
    "ddl_ok": (
        "CREATE TABLE IF NOT EXISTS tmp_report (id INT PRIMARY KEY, label VARCHAR(32))",
        "CREATE TEMPORARY TABLE tmp_ids (id INT PRIMARY KEY)",
        (
            "CREATE TEMPORARY TABLE tmp_totals AS SELECT user_id, SUM(total) AS t FROM orders "
            "GROUP BY user_id"
        ),
        "CREATE INDEX ix_status ON orders (status)",
        "CREATE VIEW v_paid_new AS SELECT id, total FROM orders WHERE status = 'paid'",
        "CREATE TABLE t_like LIKE orders",
        (
            "CREATE DATABASE IF NOT EXISTS agentsql_scratch CHARACTER SET utf8mb4 COLLATE "
            "utf8mb4_unicode_ci"
        ),
        (
            "CREATE TABLE IF NOT EXISTS audit (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT, at "
            "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), "
            "payload JSON CHECK (JSON_VALID(payload)), total DECIMAL(10,2) AS (1 + 1) VIRTUAL, "
            "PRIMARY KEY (id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci "
            "COMMENT='audit log'"
        ),
        (
            "CREATE TABLE IF NOT EXISTS child (id INT PRIMARY KEY, user_id INT NOT NULL, "
            "CONSTRAINT fk_child_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE "
            "CASCADE)"
        ),
        # the session's own temporary tables, replaced and dropped as reports and ETL do
        "CREATE OR REPLACE TEMPORARY TABLE tmp_ids (id INT PRIMARY KEY, note VARCHAR(20))",
        "DROP TEMPORARY TABLE tmp_ids",
        "DROP TEMPORARY TABLE IF EXISTS tmp_totals, tmp_ids",
    ),
}
