"""Ordinary SQL is not refused (tests/policy/ordinary_sql.py): every text agents and
ORMs send there is allowed by the built-in rules, decided as the gateway decides a
COM_QUERY, and runs through the real gateway on MariaDB without an error. A new refusal
of a parser misreading that catches one of them fails here.

The statements the built-in rules refuse by design must say what to do instead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB
from ordinary_sql import FAMILIES, SCHEMA, SCRATCH_SCHEMAS, SETUP
from pymysql.constants import CLIENT

from appliance.config import PolicyConfig
from appliance.mysql.constants import Command
from appliance.mysql.relay import ClientCommand
from appliance.policy.gate import Policy, SessionPolicy, Verdict
from appliance.policy.rules import Subject

AGENT = Subject("agent", frozenset({"agents"}), "orders")
UTF8MB4_GENERAL_CI = 45
CASES = [(family, sql) for family, sqls in FAMILIES.items() for sql in sqls]


def _id(sql: str) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= 90 else text[:87] + "..."


def verdict(sql: str, policy: Policy | None = None) -> Verdict:
    """The decision of one COM_QUERY in a new session of the agent in ``SCHEMA``."""
    session = SessionPolicy(
        policy if policy is not None else Policy(PolicyConfig(), ()),
        AGENT,
        SCHEMA,
        UTF8MB4_GENERAL_CI,
    )
    payload = bytes([Command.QUERY]) + sql.encode()
    return session.decide(ClientCommand(1, Command.QUERY, payload, payload), 0, {})


def test_the_corpus_covers_the_families() -> None:
    assert len(CASES) >= 400
    assert len(FAMILIES["sqlalchemy"]) >= 60


@pytest.mark.parametrize(("family", "sql"), CASES, ids=[f"{f}: {_id(s)}" for f, s in CASES])
def test_ordinary_sql_is_allowed(family: str, sql: str) -> None:
    found = verdict(sql)
    assert found.refusal is None, f"{family}: {found.refusal.rule}: {found.refusal.reason}"
    assert {part.decision.rule for part in found.parts} == {"default-allow"}


def test_ordinary_sql_is_allowed_with_shared_caches() -> None:
    """One gateway-wide Policy for the whole corpus, as in the gateway: what one text
    leaves in the caches (exact text, shape) decides no other wrongly."""
    policy = Policy(PolicyConfig(), ())
    refused = [
        f"{sql!r}: {found.refusal.rule}"
        for _, sql in CASES + CASES[::-1]
        if (found := verdict(sql, policy)).refusal is not None
    ]
    assert not refused, "\n".join(refused)


# -- refused by design, with what to do instead ------------------------------------------------

#: (text, rule, what the message must say the agent can do instead)
REFUSED_WITH_ADVICE = [
    (
        "UPDATE orders o JOIN users u ON u.id = o.user_id SET o.status = 'vip' "
        "WHERE u.name = 'zed'",
        "multi-table-write",
        "a single-table UPDATE with a WHERE clause",
    ),
    (
        "DELETE i FROM items i JOIN orders o ON o.id = i.order_id WHERE o.id = 999",
        "multi-table-write",
        "a single-table DELETE with a WHERE clause",
    ),
    ("SELECT slugify(name) FROM users", "stored-function", "Use built-in functions"),
    ("SELECT NEXT VALUE FOR ticket_seq", "not-understood", "write NEXTVAL(s)"),
    ("DELETE FROM orders", "delete-without-where", "Add a WHERE clause"),
    ("TRUNCATE orders", "truncate", "use DELETE with a WHERE clause"),
    ("DROP TABLE orders", "schema-change", "approval"),
    ("LOCK TABLES orders WRITE", "unknown-statement", "SELECT ... FOR UPDATE"),
    ("UNLOCK TABLES", "unknown-statement", "COMMIT"),
    ("DO SLEEP(0)", "unknown-statement", "SELECT it"),
    ("CREATE SEQUENCE s2", "unknown-statement", "ask an operator"),
    ("XA START 'x1'", "unknown-statement", "START TRANSACTION (or BEGIN), then COMMIT"),
    ("XA RECOVER", "unknown-statement", "START TRANSACTION (or BEGIN), then COMMIT"),
    ("ANALYZE TABLE orders", "unknown-statement", "ANALYZE SELECT ..., which runs it"),
    ("OPTIMIZE TABLE orders", "unknown-statement", "SHOW TABLE STATUS"),
    ("CHECK TABLE orders", "unknown-statement", "SHOW TABLE STATUS"),
    ("CHECKSUM TABLE orders", "unknown-statement", "SELECT COUNT(*)"),
    ("FLUSH TABLES", "unknown-statement", "the whole server"),
    ("HELP 'SELECT'", "unknown-statement", "manual"),
    ("SHOW USER_STATISTICS", "not-understood", "SELECT what it lists from information_schema"),
    ("SET character_set_client = @saved_cs_client", "charset", "Name it: SET NAMES utf8mb4"),
    ("SET NAMES DEFAULT", "charset", "Use SET NAMES utf8mb4"),
    ("SHOW LOCALES", "not-understood", "SELECT what it lists from information_schema"),
    ("SHOW CREATE USER CURRENT_USER()", "credentials", "information_schema.USER_PRIVILEGES"),
    ("SHOW GRANTS FOR CURRENT_USER()", "credentials", "information_schema.USER_PRIVILEGES"),
]


@pytest.mark.parametrize(
    ("sql", "rule", "advice"), REFUSED_WITH_ADVICE, ids=[_id(c[0]) for c in REFUSED_WITH_ADVICE]
)
def test_a_refusal_says_what_to_do_instead(sql: str, rule: str, advice: str) -> None:
    found = verdict(sql)
    assert found.refusal is not None
    assert found.refusal.rule == rule
    assert advice in found.refusal.reason, found.refusal.reason


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT NEXT VALUE FOR ticket_seq",  # the parser's error, with a hint
        "SELECT o. select FROM orders o",  # the parser's error
        "CREATE TABLE p (id INT) PARTITION BY HASH ((SELECT 1))",  # read as another kind
        "SHOW USER_STATISTICS",  # read as another kind, with the SHOW's advice
        "SHOW PROFILE FOR QUERY @q",  # the parser's error, with the SHOW's advice
    ],
)
def test_a_not_understood_refusal_says_once_how_to_rewrite(sql: str) -> None:
    """The advice to rewrite the statement came twice when the parser's error carried
    it already."""
    found = verdict(sql)
    assert found.refusal is not None and found.refusal.rule == "not-understood"
    assert found.refusal.reason.count("rewrite it in plain MySQL syntax") == 1, found.refusal.reason


# -- through the gateway --------------------------------------------------------------------


def _drop(mariadb: MariaDB) -> None:
    mariadb.admin_sql(*(f"DROP DATABASE IF EXISTS {name}" for name in SCRATCH_SCHEMAS))


@pytest.fixture(scope="module")
def schema(mariadb: MariaDB) -> Iterator[str]:
    _drop(mariadb)
    mariadb.admin_sql(*SETUP)
    try:
        yield SCHEMA
    finally:
        _drop(mariadb)


def _run(conn: Any, sql: str) -> None:
    """Every result of a text, read to the end."""
    with conn.cursor() as cur:
        cur.execute(sql)
        while True:
            cur.fetchall()
            if not cur.nextset():
                break


@pytest.mark.integration
@pytest.mark.parametrize("family", FAMILIES)
def test_ordinary_sql_runs_through_the_gateway(
    family: str, schema: str, gateway: GatewayProcess
) -> None:
    """Each family in order in one session, as a client sends it: no statement is
    refused, and MariaDB runs every one (the corpus is its syntax)."""
    conn = gateway.connect(database=schema, client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        for sql in FAMILIES[family]:
            try:
                _run(conn, sql)
            except pymysql.err.MySQLError as exc:
                pytest.fail(f"{family}: {sql!r}: {exc}")
    finally:
        conn.close()
