"""Calls of stored functions (SPEC §6): a stored function runs statements the gateway
never sees, from inside any statement, so a call of one is held for review like a CALL
(rule ``stored-function``), unless allow rules for CALL name it. Which names are the
server's own functions, and how each may be written, is server_functions.py's."""

from __future__ import annotations

import re

import pytest

from appliance.config import PolicyConfig, RuleAction, RuleConfig
from appliance.mysql.constants import Command
from appliance.mysql.relay import ClientCommand
from appliance.policy import classify as classifier
from appliance.policy.classify import Classification, classify_uncertain
from appliance.policy.gate import Policy, SessionPolicy, Verdict
from appliance.policy.lexer import LexMode
from appliance.policy.rules import Decision, Subject, decide
from appliance.policy.server_functions import (
    ARGUMENT_COUNTS,
    BUILTIN_FUNCTIONS,
    KEYWORD_FUNCTIONS,
    NATIVE_FUNCTIONS,
    SERVER,
    TIGHT_FUNCTIONS,
)

AGENT = Subject("agent", frozenset({"agents"}), "orders")


def one(sql: str) -> Classification:
    (found,) = classify_uncertain(sql.encode(), LexMode(), True, False)
    return found


def decision(sql: str, *rules: RuleConfig, db: str | None = "shop") -> Decision:
    """What a session with ``db`` as its schema and these rules decides for a text of one
    statement, as the gateway decides it."""
    policy = SessionPolicy(Policy(PolicyConfig(), rules), AGENT, db, 45)
    payload = bytes([Command.QUERY]) + sql.encode()
    verdict: Verdict = policy.decide(ClientCommand(1, Command.QUERY, payload, payload), 0, {})
    (part,) = verdict.parts
    return part.decision


def rule(sql: str, *rules: RuleConfig, db: str | None = "shop") -> str:
    return decision(sql, *rules, db=db).rule


# -- statements that call stored functions ---------------------------------------------------


@pytest.mark.parametrize(
    "sql, calls",
    [
        ("SELECT archive(id) FROM orders", {"archive"}),
        ("SELECT shop.purge_orders()", {"shop.purge_orders"}),
        ("SELECT `shop`.`purge_orders`()", {"shop.purge_orders"}),
        ("SELECT shop . purge_orders ( )", {"shop.purge_orders"}),
        ("SET @a = f()", {"f"}),
        ("SET @a = shop.f(1), @b = 2", {"shop.f"}),
        ("INSERT INTO orders (id, total) VALUES (f(), 1)", {"f"}),
        ("INSERT INTO orders (id) SELECT f() FROM customers", {"f"}),
        ("UPDATE orders SET total = 0 WHERE id = f()", {"f"}),
        ("UPDATE orders SET total = f() WHERE id = 1", {"f"}),
        ("DELETE FROM orders WHERE id = f(1)", {"f"}),
        ("SELECT a FROM t JOIN u ON f(t.a) = u.b", {"f"}),  # a call after ON
        ("SELECT (SELECT MAX(f(x)) FROM t)", {"f"}),
        ("DO f()", {"f"}),
        ("SHOW TABLES WHERE f(1)", {"f"}),
        ("CREATE VIEW v AS SELECT f() AS x", {"f"}),  # runs whenever the view is read
        ("CREATE TABLE t2 AS SELECT f() AS x", {"f"}),
        ("EXECUTE s USING f()", {"f"}),
        ("KILL f()", {"f"}),
        ("SELECT 'ééé€', split(a, ',') FROM t", {"split"}),  # positions are characters
        ("SELECT é(1), f$x(2), `my func`(3)", {"é", "f$x", "my func"}),
        ("SELECT a.b.c(1)", {"a.b.c"}),
        ("SELECT f\n(1), g -- a comment\n(2), h/*+ hint */(3)", {"f", "g", "h"}),
    ],
)
def test_calls_of_stored_functions_are_read(sql: str, calls: set[str]) -> None:
    found = one(sql)
    assert found.problem is None
    assert found.stored_functions == calls


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT archive(id) FROM orders",
        "SELECT shop.purge_orders()",
        "SET @a = f()",
        "INSERT INTO orders (id, total) VALUES (f(), 1)",
        "UPDATE orders SET total = 0 WHERE id = f()",
        "SELECT * FROM customers WHERE id IN (SELECT f())",
        "CREATE VIEW v AS SELECT f() AS x",
        "PREPARE s FROM 'SELECT f()'",
        "EXECUTE IMMEDIATE 'SELECT ?' USING f()",
        "SET STATEMENT max_statement_time = 10 FOR SELECT f()",
        "SET STATEMENT max_statement_time = f() FOR SELECT 1",
        "ANALYZE SELECT f()",
        "SELECT NOW ()",  # a function keyword with a space: the server's is NOW(
        "SELECT now/**/()",
        "SELECT `now`()",
        "SELECT `left`(name, 1) FROM customers",  # a keyword in backquotes
        "SELECT SUM (total) FROM orders",
        "SELECT POINT(1)",  # POINT(x, y) is the server's; POINT(x) a stored function's
        "SELECT POLYGON()",
        "SELECT ANY_VALUE(name) FROM customers",  # MySQL's, not MariaDB's
        "SELECT BIN_TO_UUID(id), REGEXP_LIKE(name, 'a') FROM customers",
        "SELECT json_table(1, 2)",  # a stored function's name outside FROM
        'SELECT "shop"."f"()',  # double quotes may be names (ANSI_QUOTES)
    ],
)
def test_a_call_of_a_stored_function_is_held_for_review(sql: str) -> None:
    found = decision(sql)
    assert (found.action, found.rule) == (RuleAction.REVIEW, "stored-function"), found


def test_do_stays_unknown() -> None:
    assert rule("DO f()") == "unknown-statement"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*), NOW(), COALESCE(total, 0), DATE_FORMAT(created, '%Y-%m'), "
        "JSON_EXTRACT('{\"a\": 1}', '$.a'), GROUP_CONCAT(id), ROW_NUMBER() OVER (ORDER BY id) "
        "FROM orders GROUP BY id",
        "SELECT id, SUM(total) OVER (PARTITION BY customer_id ORDER BY created), "
        "LAG(total) OVER w FROM orders WINDOW w AS (ORDER BY id)",
        "SELECT CONCAT ('a', 'b'), LEFT ('abc', 1), `concat`('a'), DATE ('2024-01-01')",
        "SELECT CAST(total AS DECIMAL(10, 2)), CONVERT(name USING utf8mb4), TRIM(' x ') "
        "FROM orders JOIN customers ON customers.id = orders.customer_id",
        "SELECT ST_AsText(POINT(1, 2)), POLYGON(LINESTRING(POINT(0, 0), POINT(1, 1)))",
        "SELECT INET6_ATON('::1'), UUID(), SYS_GUID(), NVL(NULL, 1), DECODE_ORACLE(1, 1, 2)",
        "SELECT CURRENT_USER, CURRENT_DATE, CURRENT_TIMESTAMP(), DATE_SUB(NOW(), INTERVAL 1 DAY)",
        "SELECT * FROM JSON_TABLE('[1]', '$[*]' COLUMNS (a INT PATH '$', NESTED PATH '$.b' "
        "COLUMNS (b INT PATH '$'))) AS jt",
        "SELECT id FROM orders WHERE MATCH (note) AGAINST ('x' IN BOOLEAN MODE)",
        "WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 5) "
        "SELECT n FROM seq",  # a CTE's column list is no call
        "WITH split (a) AS (SELECT 1) SELECT a FROM split",  # nor one named like a function
        "INSERT orders (id, total) VALUES (1, 2)",  # nor a table's
        "INSERT INTO shop.orders (id, total) VALUES (1, 2) ON DUPLICATE KEY UPDATE "
        "total = VALUES(total)",
        "SELECT * FROM orders USE INDEX (PRIMARY) WHERE id IN (1, 2)",
        "SELECT t.n FROM (SELECT COUNT(*) AS n FROM orders) AS t",
        "SET @a = CONCAT(@b, NOW()), @c = (SELECT COUNT(*) FROM orders)",
        "SET sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')",
        "CREATE TABLE t (id INT, name VARCHAR(10), KEY idx_name (name(4))) "
        "PARTITION BY LIST (id) (PARTITION p0 VALUES IN (1))",
    ],
)
def test_the_servers_own_functions_are_allowed(sql: str) -> None:
    assert one(sql).stored_functions == frozenset()
    assert rule(sql) == "default-allow"


def test_stored_code_keeps_its_own_review() -> None:
    """A routine's or trigger's body runs later, under its own review: its calls are
    not read as the statement's (nor the name a CREATE FUNCTION defines)."""
    for sql in (
        "CREATE FUNCTION f() RETURNS INT RETURN g()",
        "CREATE PROCEDURE p() BEGIN SELECT shop.g(); END",
        "CREATE TRIGGER tr BEFORE INSERT ON orders FOR EACH ROW SET NEW.total = g()",
        "CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO SELECT g()",
    ):
        assert one(sql).stored_functions == frozenset(), sql
        assert rule(sql) == "stored-code", sql
    # a CALL's arguments run now: f is called, the procedure is among the tables
    found = one("CALL p(f())")
    assert (found.stored_functions, found.reads) == ({"f"}, {"p"})
    assert rule("CALL p(f())") == "call"
    # nor are a schema change's definitions calls
    assert rule("ALTER TABLE orders ADD INDEX idx (total)") == "schema-change"


def test_the_message_says_what_was_read() -> None:
    found = decision("SELECT archive(id) FROM orders")
    assert found.message == (
        "sqlgate: review required by rule 'stored-function': SELECT orders: it calls "
        f"archive(), a stored function ({SERVER} has no built-in function ARCHIVE), which "
        "runs statements the gateway cannot see one by one. Use built-in functions or "
        "plain statements instead, or ask an operator to allow the function"
    )
    qualified = decision("SELECT shop.purge_orders()").reason
    assert qualified.startswith("SELECT: it calls shop.purge_orders(), a stored function, ")
    spaced = decision("SELECT NOW ()").reason
    assert "NOW is built in only when written unquoted, with '(' straight after" in spaced
    several = decision("SELECT ANY_VALUE(name), shop.f() FROM customers").reason
    assert "any_value(), shop.f(), stored functions" in several
    assert f"{SERVER} has no built-in function ANY_VALUE)" in several


# -- what allows a call -----------------------------------------------------------------------

ALLOW_ARCHIVE = RuleConfig("archive-is-safe", ("CALL",), RuleAction.ALLOW, ("shop.archive",))
ALLOW_READS = RuleConfig("reads", ("SELECT",), RuleAction.ALLOW, ("shop.orders",))


def test_an_allow_for_call_names_the_functions_it_allows() -> None:
    """An operator allows a known-safe function the way a CALL is allowed: a rule for
    CALL whose tables name the function (schema.name). The statement is then decided as
    if it called only built-in functions."""
    assert rule("SELECT archive(id) FROM orders", ALLOW_ARCHIVE) == "default-allow"
    assert rule("SELECT shop.archive(id) FROM orders", ALLOW_ARCHIVE) == "default-allow"
    assert rule("SELECT `shop`.`archive`(id) FROM orders", ALLOW_ARCHIVE) == "default-allow"
    assert rule("UPDATE orders SET total = archive(id) WHERE id = 1", ALLOW_ARCHIVE) == (
        "default-allow"
    )
    # only the functions it names, in the schema it names
    assert rule("SELECT archive(id), cleanup() FROM orders", ALLOW_ARCHIVE) == "stored-function"
    assert rule("SELECT archive(id) FROM orders", ALLOW_ARCHIVE, db="other") == ("stored-function")
    assert rule("SELECT archive(id) FROM orders", ALLOW_ARCHIVE, db=None) == "stored-function"
    # the rest of the statement is decided as ever
    assert rule("DELETE FROM orders WHERE archive(id) OR 1 = 1", ALLOW_ARCHIVE) == (
        "delete-without-where"
    )
    # several rules may name the functions between them
    allow_cleanup = RuleConfig("cleanup", ("CALL",), RuleAction.ALLOW, ("shop.cleanup",))
    assert rule("SELECT archive(id), cleanup() FROM orders", ALLOW_ARCHIVE, allow_cleanup) == (
        "default-allow"
    )
    # an allow for CALL with no tables trusts every stored routine
    every_call = RuleConfig("calls", ("CALL",), RuleAction.ALLOW)
    assert rule("SELECT archive(id), x.cleanup() FROM orders", every_call) == "default-allow"


ALLOW_SNIPPETS = RuleConfig("snippets", ("CALL",), RuleAction.ALLOW, ("shop.snippets",))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT snippets(name AS doc, 'idx' AS `index`, 'ada' AS 'words') FROM customers",
        "SELECT snippets(name as doc) AS s FROM customers WHERE id = 1",
        "SELECT snippets(CAST(id AS CHAR) AS doc, 1) FROM customers",
        "SELECT snippets(name /* attribute */ AS doc) FROM customers",
        "UPDATE customers SET name = snippets(name AS doc) WHERE id = 1",
    ],
)
def test_a_udf_argument_named_with_as_is_read(sql: str) -> None:
    """The server names a user-defined function's argument `value AS name` (its
    attribute name); such a call was refused as not understood (an alias inside an
    expression), so no allow rule could let it through. It is a call like any other."""
    assert rule(sql) == "stored-function"
    assert rule(sql, ALLOW_SNIPPETS) == "default-allow"


@pytest.mark.parametrize(
    "sql",
    [
        # the server reads no alias here: DATE'2024-01-01' is a date literal
        "SELECT snippets((BINARY DATE'2024-01-01') AS doc)",
        # a qualified call takes no names (a syntax error); nor do the server's functions
        "SELECT shop.snippets(name AS doc) FROM customers",
        "SELECT COLUMN_GET(dyn, 'k' AS card) FROM t",
        # an alias nested deeper than an argument
        "SELECT snippets((name AS doc)) FROM customers",
        "SELECT snippets(UPPER(name AS doc)) FROM customers",
    ],
)
def test_other_aliases_in_a_call_stay_refused(sql: str) -> None:
    assert rule(sql, ALLOW_SNIPPETS) == "not-understood"


def test_rules_name_the_procedure_a_call_runs() -> None:
    """CALL's procedure was no name of the statement: a block rule for CALL on shop.*
    only held CALL shop.purge() for review (which an operator could approve), and no
    allow rule could name one procedure."""
    no_shop_routines = RuleConfig("no-shop-routines", ("CALL",), RuleAction.BLOCK, ("shop.*",))
    found = decision("CALL shop.purge()", no_shop_routines)
    assert (found.action, found.rule) == (RuleAction.BLOCK, "no-shop-routines")
    assert rule("CALL purge()", no_shop_routines) == "no-shop-routines"  # in schema shop
    assert rule("CALL other.purge()", no_shop_routines) == "call"
    # an allow names the procedure in any case of its name (the server ignores it)
    assert rule("CALL archive(1)", ALLOW_ARCHIVE) == "archive-is-safe"
    assert rule("CALL shop.ARCHIVE(1)", ALLOW_ARCHIVE) == "archive-is-safe"
    assert rule("CALL archive", ALLOW_ARCHIVE) == "archive-is-safe"
    # only that procedure, in that schema, with nothing else unseen in its arguments
    assert rule("CALL purge()", ALLOW_ARCHIVE) == "call"
    assert rule("CALL archive(1)", ALLOW_ARCHIVE, db="other") == "call"
    assert rule("CALL archive(1)", ALLOW_ARCHIVE, db=None) == "call"
    assert rule("CALL archive(cleanup())", ALLOW_ARCHIVE) == "call"
    assert rule("CALL archive((SELECT total FROM orders))", ALLOW_ARCHIVE) == "call"
    # an allow of every kind on a schema is not one for its procedures, which may
    # change any table; one of every kind without tables still allows every CALL
    everything = RuleConfig("sandbox", ("*",), RuleAction.ALLOW, ("shop.*",))
    assert rule("CALL shop.archive()", everything) == "call"
    assert rule("CALL shop.archive()", RuleConfig("all", ("*",), RuleAction.ALLOW)) == "all"
    assert decision("CALL shop.purge()").message.startswith(
        "sqlgate: review required by rule 'call': CALL shop.purge: "
    )


def test_no_rule_allows_a_text_the_gateway_cannot_see() -> None:
    """EXECUTE IMMEDIATE or PREPARE of an expression runs a text the gateway never reads:
    an allow of every kind let EXECUTE IMMEDIATE CONCAT('SELECT f', '()') call a stored
    function (and run any write) unseen; it is refused whatever the rules say."""
    everything = RuleConfig("all", ("*",), RuleAction.ALLOW)
    for sql in (
        "EXECUTE IMMEDIATE CONCAT('SELECT f', '()')",
        "PREPARE s FROM CONCAT('DROP ', 'TABLE t')",
        "PREPARE s FROM @v",
        "SET STATEMENT max_statement_time = 1 FOR EXECUTE IMMEDIATE @v",
    ):
        assert rule(sql, everything) == "prepare-from-variable", sql
    assert rule("EXECUTE IMMEDIATE 'SELECT 1'", everything) == "all"


def test_an_allow_for_the_statement_does_not_allow_its_stored_functions() -> None:
    """An allow for SELECT on shop.orders (or for everything on a sandbox) is not one to
    run unseen statements from a function: the call stays held."""
    assert rule("SELECT total FROM orders", ALLOW_READS) == "reads"
    assert rule("SELECT archive(id) FROM orders", ALLOW_READS) == "stored-function"
    everything = RuleConfig("sandbox", ("*",), RuleAction.ALLOW, ("shop.*",))
    assert rule("SELECT archive(id) FROM orders", everything) == "stored-function"
    # with the function allowed too, the configured allow decides
    assert rule("SELECT archive(id) FROM orders", ALLOW_ARCHIVE, ALLOW_READS) == "reads"
    # an allow for DO does not open DO f()
    allow_do = RuleConfig("do", ("DO",), RuleAction.ALLOW)
    assert rule("DO SLEEP(0)", allow_do) == "do"
    assert rule("DO f()", allow_do) == "unknown-statement"


def test_a_rule_that_refuses_a_call_refuses_the_function_too() -> None:
    """For block and review rules, calling a stored function is also a CALL of it."""
    no_shop_routines = RuleConfig("no-shop-routines", ("CALL",), RuleAction.BLOCK, ("shop.*",))
    assert rule("SELECT shop.archive(id) FROM orders", no_shop_routines) == "no-shop-routines"
    assert rule("SELECT archive(id) FROM orders", no_shop_routines) == "no-shop-routines"
    assert rule("SELECT x.archive(id) FROM orders", no_shop_routines) == "stored-function"
    # first match wins: a block before the allow
    assert rule("SELECT archive(id) FROM orders", no_shop_routines, ALLOW_ARCHIVE) == (
        "no-shop-routines"
    )


def test_decide_alone() -> None:
    """rules.decide on a classification, as the corpus and the offload worker use it."""
    assert decide(one("SELECT f()"), AGENT, "shop", ()).rule == "stored-function"
    assert decide(one("SELECT f()"), AGENT, "shop", (ALLOW_ARCHIVE,)).rule == "stored-function"
    assert decide(one("SELECT archive()"), AGENT, "shop", (ALLOW_ARCHIVE,)).rule == (
        "default-allow"
    )


# -- every name, every spelling ---------------------------------------------------------------

_SPELLINGS = {
    "tight": "SELECT {}(1)",
    "spaced": "SELECT {} (1)",
    "quoted": "SELECT `{}`(1)",
}


def _builtin(name: str, spelling: str) -> bool:
    if name in ARGUMENT_COUNTS:
        least, most = ARGUMENT_COUNTS[name]
        if not least <= 1 <= (most if most is not None else 1):
            return False
    if spelling == "quoted":
        return name in NATIVE_FUNCTIONS
    if spelling == "spaced":
        return name in NATIVE_FUNCTIONS or name in KEYWORD_FUNCTIONS
    return name in BUILTIN_FUNCTIONS


_PARSER = classifier._MYSQL.parser_class
#: Every name the server or the SQL parser knows, and a few it does not.
_NAMES = sorted(
    (
        BUILTIN_FUNCTIONS
        | set(_PARSER.FUNCTIONS)
        | set(_PARSER.FUNCTION_PARSERS)
        | set(_PARSER.NO_PAREN_FUNCTION_PARSERS)
        | set(classifier._MYSQL.tokenizer_class.KEYWORDS)
        | {"ARCHIVE", "ANY_VALUE", "BIN_TO_UUID", "REGEXP_LIKE", "STATUS", "ACTION", "F1"}
    )
    - {"JSON_TABLE"}  # a table function in FROM: its own tests above
)


@pytest.mark.parametrize("spelling", sorted(_SPELLINGS))
def test_every_name_is_read_as_the_server_reads_it(spelling: str) -> None:
    """Whatever the SQL parser makes of ``name(1)`` (a function of its own, a clause, a
    type, an introducer, an unknown call), the call is a stored function's exactly when
    the server says so; a text the parser cannot read is refused anyway."""
    wrong = []
    for name in _NAMES:
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            continue
        found = one(_SPELLINGS[spelling].format(name))
        if found.problem is not None:
            continue
        expected = frozenset() if _builtin(name, spelling) else {name.lower()}
        if found.stored_functions != expected:
            wrong.append((name, sorted(found.stored_functions)))
    assert not wrong


def test_the_lists_are_disjoint_and_upper_case() -> None:
    assert not NATIVE_FUNCTIONS & KEYWORD_FUNCTIONS
    assert not NATIVE_FUNCTIONS & TIGHT_FUNCTIONS
    assert not KEYWORD_FUNCTIONS & TIGHT_FUNCTIONS
    assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*", n) for n in BUILTIN_FUNCTIONS)
    assert set(ARGUMENT_COUNTS) <= BUILTIN_FUNCTIONS
    # what agents write most, and MySQL 8's names this server does not have
    assert {"COUNT", "NOW", "COALESCE", "DATE_FORMAT", "JSON_EXTRACT", "GROUP_CONCAT"} <= (
        BUILTIN_FUNCTIONS
    )
    assert {"ROW_NUMBER", "LAG", "DATE", "HOUR", "REPEAT", "CURRENT_USER", "NEXTVAL"} <= (
        BUILTIN_FUNCTIONS
    )
    assert not {"ANY_VALUE", "BIN_TO_UUID", "REGEXP_LIKE", "JSON_TABLE"} & BUILTIN_FUNCTIONS
