"""The statement corpus (tests/policy/corpus.py): every text decided as SPEC §6 says,
first without a server, then through the real gateway in front of MariaDB, where every
refusal must leave the data, the schemas and the accounts exactly as they were.

Without a server, each text goes through a SessionPolicy (gate.py) as a COM_QUERY, as the
gateway sends it: Policy.classify (classify_uncertain with ANSI_QUOTES unknown) and
rules.decide for each statement, plus what only a session decides (``lexing-state``, the
schema a USE makes current). The rules alone are checked too, and the caches shared.
Through the gateway, every refused entry must get ERR 1227 (SQLSTATE 42000) naming its
rule, change nothing on the server and leave the session usable; every allowed entry must
run without an error (the corpus is real MariaDB syntax)."""

from __future__ import annotations

import ast
import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from corpus import (
    CORPUS,
    GBK_TRICK,
    LATIN1_TRICK,
    MODE_CASES,
    OUTFILES,
    SCRATCH_SQL,
    Case,
    ModeCase,
    card_masking,
)
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB
from pymysql.constants import CLIENT

from appliance.config import PolicyConfig, PolicyMode, RuleAction, RuleConfig
from appliance.mysql.charsets import collation_charset, read_text
from appliance.mysql.constants import Command, ServerStatus
from appliance.mysql.relay import ClientCommand
from appliance.mysql.wire import frame
from appliance.policy import gate, rules
from appliance.policy.gate import Policy, SessionPolicy, Verdict
from appliance.policy.lexer import LexMode

AGENT = rules.Subject("agent", frozenset({"agents"}), "orders")
UTF8MB4_GENERAL_CI = 45
GBK_CHINESE_CI = 28
LATIN1_SWEDISH_CI = 8
ALLOW = "default-allow"


def _id(sql: str | bytes) -> str:
    text = sql.decode("latin-1") if isinstance(sql, bytes) else sql
    text = " ".join(text.split())
    return text if len(text) <= 90 else text[:87] + "..."


# ------------------------------------------------------------------ without a server


class Session:
    """One agent session's policy, fed commands the way the gateway feeds them."""

    def __init__(self, charset: int = UTF8MB4_GENERAL_CI, policy: Policy | None = None) -> None:
        policy = policy if policy is not None else Policy(PolicyConfig(), ())
        self.policy = SessionPolicy(policy, AGENT, "shop", charset)
        self._next = 0

    def query(self, sql: bytes, status: int = 0) -> tuple[ClientCommand, Verdict]:
        self._next += 1
        payload = bytes([Command.QUERY]) + sql
        cmd = ClientCommand(self._next, Command.QUERY, payload, payload)
        return cmd, self.policy.decide(cmd, status, {})

    def outcome(self, sql: bytes, status: int = 0) -> str:
        return rule_of(self.query(sql, status)[1])


def rule_of(verdict: Verdict) -> str:
    """The rule that decides a text: its first refused statement's, else default-allow."""
    if verdict.refusal is not None:
        return verdict.refusal.rule
    rules_seen = {part.decision.rule for part in verdict.parts}
    assert rules_seen <= {ALLOW}, rules_seen
    return ALLOW


@pytest.mark.parametrize("case", CORPUS, ids=[_id(c.sql) for c in CORPUS])
def test_corpus_decision(case: Case) -> None:
    assert Session().outcome(case.sql.encode()) == case.expected


SESSION_ONLY = ("lexing-state", "kill-other")  # rules the session adds to the built-ins (gate.py)


RULES_ONLY = [c for c in CORPUS if c.expected not in SESSION_ONLY and "USE " not in c.sql]


@pytest.mark.parametrize("case", RULES_ONLY, ids=[_id(c.sql) for c in RULES_ONLY])
def test_corpus_decision_by_the_rules_alone(case: Case) -> None:
    """The same decisions from Policy.classify and rules.decide, without the session."""
    found = Policy(PolicyConfig(), ()).classify(case.sql.encode(), LexMode(), False)
    decisions = [rules.decide(c, AGENT, "shop", ()) for c in found]
    refused = [d.rule for d in decisions if d.refused]
    assert (refused[0] if refused else ALLOW) == case.expected


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_corpus_decisions_with_shared_caches(order: str) -> None:
    """One gateway-wide Policy for the whole corpus, as in the gateway: what one text
    leaves in the caches (exact text, statement shape) must not decide another."""
    policy = Policy(PolicyConfig(), ())
    cases = CORPUS if order == "forward" else CORPUS[::-1]
    wrong = [
        f"{case.sql!r}: expected {case.expected}, got {got}"
        for case in cases
        if (got := Session(policy=policy).outcome(case.sql.encode())) != case.expected
    ]
    assert not wrong, "\n".join(wrong)


def test_a_cached_shape_does_not_hide_ansi_quotes() -> None:
    """`SELECT ?` is the shape of both texts; with ANSI_QUOTES the second one is a
    SELECT of an identifier and a DELETE."""
    session = Session()
    assert session.outcome(b"SELECT 'warm'") == ALLOW
    assert session.outcome(rb'SELECT "a\"; DELETE FROM corpus.items; -- "') == "not-understood"


def test_a_cached_shape_does_not_hide_no_backslash_escapes() -> None:
    """While a SET sql_mode is on its way (pipelined), a backslash is read both ways,
    whatever a text of the same shape read before."""
    session = Session()
    _, verdict = session.query(b"SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
    assert not verdict.refused  # sent; its answer has not come back yet
    assert session.outcome(b"SELECT 'warm'") == ALLOW
    trick = rb"SELECT 'a\'; DELETE FROM corpus.items; -- '"
    assert session.outcome(trick) == "not-understood"


@pytest.mark.parametrize("case", MODE_CASES, ids=[_id(c.sql) for c in MODE_CASES])
def test_session_state_decision(case: ModeCase) -> None:
    login = GBK_CHINESE_CI if case.multibyte_unsafe else UTF8MB4_GENERAL_CI
    session = Session(LATIN1_SWEDISH_CI if case.eight_bit else login)
    status = int(ServerStatus.NO_BACKSLASH_ESCAPES) if case.no_backslash_escapes else 0
    if case.backslash_unknown:
        # sent, allowed and not yet answered: NO_BACKSLASH_ESCAPES is unknown meanwhile
        _, verdict = session.query(b"SET sql_mode = 'NO_BACKSLASH_ESCAPES'", status)
        assert not verdict.refused
    assert session.outcome(case.sql, status) == case.expected


def _set(session: Session, sql: bytes) -> None:
    """Send a SET and let its answer come back: the session now reads with it."""
    cmd, verdict = session.query(sql)
    assert not verdict.refused, verdict.refusal
    session.policy.completed(cmd, None, 0)


def test_a_set_character_set_changes_how_high_bytes_are_read() -> None:
    """After SET NAMES latin1 a byte >= 0x80 outside quotes is refused; after SET NAMES
    utf8mb4 it is part of a word again; after RESET CONNECTION the login's set is back."""
    session = Session()
    assert session.outcome(LATIN1_TRICK) == ALLOW  # one identifier in utf8mb4: no OR
    _set(session, b"SET NAMES latin1")
    assert session.outcome(LATIN1_TRICK) == "not-understood"
    assert session.outcome(b"SELECT 'caf\xe9'") == ALLOW
    _set(session, b"SET character_set_client = utf8mb4")
    assert session.outcome(LATIN1_TRICK) == ALLOW
    _set(session, b"SET NAMES cp1251")
    assert session.outcome(LATIN1_TRICK) == "not-understood"
    reset = ClientCommand(99, Command.RESET_CONNECTION, b"\x1f", b"\x1f")
    session.policy.decide(reset, 0, {})
    session.policy.completed(reset, None, 0)
    assert session.outcome(LATIN1_TRICK) == ALLOW


def test_a_grant_fingerprint_holds_the_current_schema() -> None:
    """A grant to drop ``orders`` in a scratch schema covered ``DROP TABLE orders`` after
    ``USE shop``; while a USE is on its way there is none."""
    scratch, shop = Session(), Session()
    scratch.policy.db = "scratch"
    cmd, verdict = scratch.query(b"DROP TABLE orders")
    assert verdict.refusal is not None and verdict.refusal.action is RuleAction.REVIEW
    granted = scratch.policy.fingerprint(cmd, 0, verdict)
    assert granted is not None
    assert shop.policy.fingerprint(cmd, 0, verdict) not in (None, granted)
    use, _ = shop.query(b"USE scratch")
    assert shop.policy.fingerprint(cmd, 0, verdict) is None  # not known yet
    shop.policy.completed(use, None, 0)
    assert shop.policy.fingerprint(cmd, 0, verdict) == granted
    shop.policy.db = "Scratch"  # another schema, to a server that tells case
    assert shop.policy.fingerprint(cmd, 0, verdict) not in (None, granted)


def test_a_grant_fingerprint_is_the_shape_as_the_session_reads_it() -> None:
    """Literals do not change it; NO_BACKSLASH_ESCAPES and the character set do; while
    a sql_mode change is on its way there is none (nothing to bind a grant to)."""
    nbe = int(ServerStatus.NO_BACKSLASH_ESCAPES)
    session = Session()
    one, first = session.query(b"ALTER TABLE t COMMENT 'a'")
    two, second = session.query(b"ALTER TABLE t COMMENT '\\', ADD COLUMN c INT -- '")

    def fingerprint(
        cmd: ClientCommand, status: int, policy: SessionPolicy | None = None
    ) -> str | None:
        policy = policy if policy is not None else session.policy
        return policy.fingerprint(cmd, status, first if cmd is one else second)

    assert fingerprint(one, 0) == fingerprint(two, 0) is not None
    assert fingerprint(one, nbe) not in (None, fingerprint(one, 0))
    assert fingerprint(two, nbe) != fingerprint(one, nbe)
    assert fingerprint(one, 0, Session(8).policy) != fingerprint(one, 0)  # latin1
    pending, _ = session.query(b"SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
    assert fingerprint(one, 0) is None
    session.policy.completed(pending, None, 0)
    assert fingerprint(one, 0) == fingerprint(two, 0) is not None


@pytest.mark.parametrize(
    "sql",
    [
        b"EXECUTE IMMEDIATE 'DROP TABLE t'",  # the literal is the statement
        b"PREPARE s FROM 'ALTER TABLE t COMMENT ''x'''",
        b'DROP TABLE "t"',  # under ANSI_QUOTES a name, which a shape would make '?'
        # stored code: a grant on its shape covered any SQL in its body's string
        b"CREATE OR REPLACE PROCEDURE shop.report() EXECUTE IMMEDIATE 'SELECT 1'",
        b"CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t WHERE id = 1",
    ],
)
def test_no_grant_fingerprint_where_a_literal_may_be_the_statement(sql: bytes) -> None:
    session = Session()
    cmd, verdict = session.query(sql)
    assert session.policy.fingerprint(cmd, 0, verdict) is None


@pytest.mark.parametrize(
    "sql",
    [
        # a procedure may run its argument: CALL run('DROP TABLE t') had the shape
        # CALL run(?) of the CALL run('SELECT 1') an operator granted
        b"CALL run('SELECT 1')",
        b"CALL shop.run(1)",
        b"CALL run",
        # so may a stored function called anywhere in a statement
        b"SELECT f('SELECT 1')",
        b"SELECT shop.f('x') FROM t WHERE id = 1",
        b"UPDATE t SET note = f('x') WHERE id = 1",
        b"DELETE FROM t WHERE id = f(1)",
    ],
)
def test_no_grant_fingerprint_for_a_call_of_stored_routines(sql: bytes) -> None:
    session = Session()
    cmd, verdict = session.query(sql)
    assert verdict.refusal is not None and verdict.refusal.rule in ("call", "stored-function")
    assert session.policy.fingerprint(cmd, 0, verdict) is None


def test_no_grant_fingerprint_for_a_large_insert_calling_a_stored_function() -> None:
    """A text over max_statement_bytes is read from its shape (an INSERT); its calls
    count too."""
    session = Session(policy=Policy(PolicyConfig(max_statement_bytes=1024), ()))
    rows = b", ".join(b"(%d, 'row %d')" % (i, i) for i in range(100))
    cmd, verdict = session.query(b"INSERT INTO t VALUES " + rows)
    assert len(cmd.payload) > 1024 and not verdict.refused
    assert session.policy.fingerprint(cmd, 0, verdict) is not None
    cmd, verdict = session.query(b"INSERT INTO t VALUES (0, f('x')), " + rows)
    assert verdict.refusal is not None and verdict.refusal.rule == "stored-function"
    assert session.policy.fingerprint(cmd, 0, verdict) is None


def _fingerprint(sql: bytes) -> str | None:
    session = Session()
    cmd, verdict = session.query(sql)
    return session.policy.fingerprint(cmd, 0, verdict)


@pytest.mark.parametrize(
    ("granted", "other", "same"),
    [
        (
            b"UPDATE t SET note = 'x' WHERE code = 'A-1'",
            b"UPDATE t SET note = 'y' WHERE code = 'B-2'",
            True,
        ),
        # a string column compared to 0 matches every row (sql_mode ''): not covered
        (
            b"UPDATE t SET note = 'x' WHERE code = 'A-1'",
            b"UPDATE t SET note = 'x' WHERE code = 0",
            False,
        ),
        (b"DELETE FROM t WHERE id = 1", b"DELETE FROM t WHERE id = 2", True),
        (b"DELETE FROM t WHERE id = 1", b"DELETE FROM t WHERE id = '1'", False),
        (b"DELETE FROM t WHERE id = 1", b"DELETE FROM t WHERE id = 1.5", False),
        (b"DELETE FROM t WHERE id = 1", b"DELETE FROM t WHERE id = 1e0", False),
        (b"DELETE FROM t WHERE id = 1", b"DELETE FROM t WHERE id = 0x1", False),
        (b"DELETE FROM t WHERE id = X'01'", b"DELETE FROM t WHERE id = 0x02", True),
        (b"DELETE FROM t WHERE id = X'01'", b"DELETE FROM t WHERE id = b'1'", False),
        (b"DELETE FROM t WHERE id = 1", b"DELETE FROM t WHERE id = NULL", False),  # a word
        (b"DELETE FROM t WHERE id = 1", b"DELETE FROM t WHERE id = TRUE", False),
    ],
)
def test_a_grant_fingerprint_keeps_each_literals_type(
    granted: bytes, other: bytes, same: bool
) -> None:
    fingerprint = _fingerprint(granted)
    assert fingerprint is not None
    assert (_fingerprint(other) == fingerprint) is same


@pytest.mark.parametrize(
    "sql",
    [
        # options and names of statements other than SELECT, INSERT, UPDATE, DELETE,
        # REPLACE and DO: a grant of ENGINE = 'InnoDB' covered ENGINE = 'MEMORY'
        b"ALTER TABLE t ENGINE = 'InnoDB'",
        b"ALTER TABLE t ENGINE 'BLACKHOLE'",
        b"ALTER TABLE t COMMENT 'x', ENGINE = 'MEMORY'",
        b"ALTER TABLE t CHARSET 'latin1'",
        b"ALTER TABLE t DEFAULT CHARACTER SET = 'latin1'",
        b"ALTER TABLE t COLLATE = 'latin1_bin'",
        b"ALTER TABLE t CONNECTION = 'mysql://u@other/db/t'",
        b"ALTER TABLE t DATA DIRECTORY = '/tmp'",
        b"ALTER TABLE t MODIFY c VARCHAR(10)",  # VARCHAR(1) truncates
        b"ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)",
        b"INSTALL SONAME 'ha_connect'",
        b"SET PASSWORD = PASSWORD('secret')",
        b"DROP USER 'bob'@'%'",
        b"KILL 5",
        b"SET sql_mode = ''",
        # names in a statement whose other literals are values
        b"SELECT CONVERT(a USING 'latin1') FROM t",
        b"SELECT CAST(a AS CHAR CHARACTER SET 'latin1') FROM t",
        b"UPDATE t SET a = 'x' WHERE b = 'y' COLLATE 'latin1_bin'",
        b"SELECT a INTO OUTFILE '/tmp/a' FROM t",
        b"SELECT a AS 'b' FROM t",
        b"SELECT a, b FROM t ORDER BY 1",  # a column's position
        b"INSERT INTO s SELECT a, b FROM t GROUP BY a, 2 LIMIT 1",
        b"DELETE FROM t WHERE a IN (SELECT b FROM s ORDER BY (b), 2)",
    ],
)
def test_no_grant_fingerprint_where_a_literal_is_a_name_or_an_option(sql: bytes) -> None:
    assert _fingerprint(sql) is None


@pytest.mark.parametrize(
    "sql",
    [
        b"ALTER TABLE t COMMENT 'x'",
        b"ALTER TABLE t COMMENT = 'x'",
        b"ALTER TABLE t ALTER c SET DEFAULT 'x'",
        b"DROP TABLE t",
        b"UPDATE t SET a = 'x' WHERE id IN (1, 2) ORDER BY id LIMIT 10",
        b"SELECT a FROM t ORDER BY a DESC LIMIT 5, 10",
        b"REPLACE INTO t VALUES (1, 'x'), (2, 'y')",
        b"DO GET_LOCK('x', 1)",
    ],
)
def test_a_grant_fingerprint_where_every_literal_is_a_value(sql: bytes) -> None:
    assert _fingerprint(sql) is not None


def test_a_statement_for_review_is_checked_for_masked_uses_too() -> None:
    """REPLACE ... SELECT of a masked column is held for review; an approval would copy
    the clear values out, so masking refuses it first (never a rewrite, never held)."""
    masking = card_masking(on_use="rewrite")
    session = Session()
    session.policy.masker = masking.for_groups(["agents"])
    copy = b"REPLACE INTO loot SELECT id, card_number FROM customers"
    assert session.outcome(copy) == "masking"
    assert session.outcome(b"REPLACE INTO loot SELECT id, name FROM customers") == "replace"


ORDERS_READ_ONLY = RuleConfig(
    "orders-read-only", ("INSERT", "UPDATE", "DELETE"), RuleAction.BLOCK, ("shop.orders",)
)
SCRATCH_DELETES = RuleConfig("scratch-deletes", ("DELETE",), RuleAction.ALLOW, ("scratch.*",))


def _ruled(*rules_: RuleConfig, db: str = "other") -> Session:
    session = Session(policy=Policy(PolicyConfig(), rules_))
    session.policy.db = db
    return session


SECRET_OFF_LIMITS = RuleConfig("secret-off-limits", ("*",), RuleAction.BLOCK, ("shop.secret",))
ALLOW_ALL = RuleConfig("allow-all", ("*",), RuleAction.ALLOW)


@pytest.mark.parametrize(
    "sql",
    [
        b"SET @a = (SELECT c FROM secret)",
        b"SET @a := 1 + (SELECT c FROM shop.secret)",
        b"SET SESSION sql_select_limit = (SELECT c FROM secret)",
        b"DO (SELECT c FROM secret)",
        b"CALL p((SELECT c FROM secret))",
        b"SHOW TABLES WHERE (SELECT c FROM secret) = 42",
    ],
)
def test_a_rule_sees_the_tables_of_a_subquery_anywhere(sql: bytes) -> None:
    """SET @a = (SELECT c FROM secret) read no table: a block rule on shop.secret let it
    through (and SELECT @a then gave the value); so did an allow for every statement."""
    session = _ruled(SECRET_OFF_LIMITS, ALLOW_ALL, db="shop")
    assert session.outcome(sql) == "secret-off-limits"
    assert session.query(b"SET @a = 1")[1].parts[0].decision.rule == "allow-all"


@pytest.mark.parametrize(
    "sql",
    [
        b"SELECT * FROM secret WHERE 1 IN (WITH secret AS (SELECT 1) SELECT * FROM secret)",
        b"SELECT (SELECT c FROM secret), (WITH secret AS (SELECT 1) SELECT 1 FROM secret)",
        b"WITH secret AS (SELECT * FROM secret) SELECT * FROM secret",
        b"WITH secret AS (SELECT 1) SELECT * FROM (WITH t AS (SELECT * FROM secret) SELECT 1) d",
    ],
)
def test_a_cte_hides_a_table_only_in_its_scope(sql: bytes) -> None:
    """Any table named like a CTE anywhere in the statement was skipped: a block rule on
    shop.secret missed the outer query's secret."""
    assert _ruled(SECRET_OFF_LIMITS, db="shop").outcome(sql) == "secret-off-limits"


SCRATCH_ANYTHING = RuleConfig("scratch-anything", ("*",), RuleAction.ALLOW, ("scratch.*",))


def test_an_allow_covers_a_name_only_in_its_own_case() -> None:
    """Names were lower-cased, so an allow for scratch.* covered the distinct schemas
    Scratch and SCRATCH (MariaDB, lower_case_table_names=0): a DELETE with no WHERE and
    a DROP TABLE there skipped the built-in rules."""
    session = _ruled(SCRATCH_ANYTHING, db="shop")

    def rule(sql: bytes) -> str:
        return session.query(sql)[1].parts[0].decision.rule

    assert rule(b"DELETE FROM scratch.t") == "scratch-anything"
    assert rule(b"DROP TABLE scratch.x") == "scratch-anything"
    assert rule(b"DELETE FROM Scratch.t") == "delete-without-where"
    assert rule(b"DROP TABLE SCRATCH.x") == "schema-change"
    assert rule(b"DELETE FROM `sCRATCH`.t") == "delete-without-where"
    # the session's schema as it was set
    for schema, expected in (("scratch", "scratch-anything"), ("Scratch", "delete-without-where")):
        session.policy.db = schema
        assert rule(b"DELETE FROM t") == expected, schema
    # a bare pattern: the table's name, in its case
    tables = _ruled(RuleConfig("t-only", ("*",), RuleAction.ALLOW, ("t",)), db="scratch")
    assert tables.query(b"DELETE FROM t")[1].parts[0].decision.rule == "t-only"
    assert tables.outcome(b"DELETE FROM T") == "delete-without-where"
    # a stored function's schema too (a routine's own name has no case on the server)
    archive = RuleConfig("archive", ("CALL",), RuleAction.ALLOW, ("scratch.archive",))
    calls = _ruled(archive, db="scratch")
    assert calls.outcome(b"SELECT scratch.ARCHIVE(1)") == ALLOW
    assert calls.outcome(b"SELECT Archive(1)") == ALLOW  # scratch.archive
    assert calls.outcome(b"SELECT Scratch.archive(1)") == "stored-function"
    assert calls.outcome(b"SELECT `SCRATCH`.archive(1)") == "stored-function"


def test_a_refusal_matches_a_name_in_any_case() -> None:
    session = _ruled(SECRET_OFF_LIMITS, ORDERS_READ_ONLY, db="Shop")
    for sql in (
        b"SELECT * FROM SHOP.Secret",
        b"SELECT * FROM secret",  # Shop.secret
        b"SET @a = (SELECT c FROM `shop`.`SECRET`)",
    ):
        assert session.outcome(sql) == "secret-off-limits", sql
    assert session.outcome(b"DELETE FROM Orders WHERE id = 1") == "orders-read-only"
    assert session.outcome(b"CREATE VIEW v AS SELECT * FROM SHOP.ORDERS") == "orders-read-only"
    no_calls = _ruled(RuleConfig("no-shop-calls", ("CALL",), RuleAction.BLOCK, ("shop.*",)))
    assert no_calls.outcome(b"SELECT SHOP.f(1)") == "no-shop-calls"
    # and so does the built-in rule for the mysql schema
    assert session.outcome(b"INSERT INTO MySQL.user SELECT * FROM x") == "mysql-schema"


def test_no_allow_opens_a_compound_statement() -> None:
    session = _ruled(SECRET_OFF_LIMITS, ALLOW_ALL, db="shop")
    assert session.outcome(b"BEGIN NOT ATOMIC SELECT * FROM secret; END") == "not-understood"


def test_kill_reaches_only_the_identitys_own_sessions() -> None:
    """The server lets the shared backend account end any of its threads; the gateway
    lets an identity end only its own sessions' threads."""
    session = Session()
    session.policy.owns_thread = lambda thread: thread == 41
    for sql in (b"KILL 41", b"KILL QUERY 41", b"kill connection 41", b"KILL HARD QUERY 41"):
        assert session.outcome(sql) == ALLOW, sql
    # comments are read as the server reads them: an agent's marker does not hide the id
    for sql in (b"KILL /* x */ 41", b"/* app */ KILL QUERY 41", b"KILL 41 -- why\n", b"KILL 41#"):
        assert session.outcome(sql) == ALLOW, sql
    for sql in (
        b"KILL 42",
        b"KILL /* 41 */ 42",
        b"KILL 41; KILL 42",
        b"KILL 42 -- 41",
        b"KILL USER agent",
        b"KILL QUERY ID 41",
        b"KILL 0x29",
        b"KILL 41.0",
        b"KILL '41'",
        b"KILL 40 + 1",
    ):
        assert session.outcome(sql) == "kill-other", sql
    refusal = session.query(b"KILL /* 41 */ 42")[1].refusal
    assert refusal is not None and "thread 42 is not one of them" in refusal.reason
    refusal = session.query(b"KILL USER agent")[1].refusal
    assert refusal is not None and "reads only KILL" in refusal.reason
    payload = bytes([Command.PROCESS_KILL]) + (42).to_bytes(4, "little")
    cmd = ClientCommand(99, Command.PROCESS_KILL, payload, payload)
    assert rule_of(session.policy.decide(cmd, 0, {})) == "kill-other"
    # a configured rule that allows KILL (for DBAs, say) is the operator's choice
    dbas = RuleConfig("dbas-kill", ("KILL",), RuleAction.ALLOW)
    ruled = _ruled(dbas)
    assert ruled.query(b"KILL 42")[1].parts[0].decision.rule == "dbas-kill"
    assert ruled.policy.decide(cmd, 0, {}).parts[0].decision.rule == "dbas-kill"


NO_USE = RuleConfig("no-use", ("USE",), RuleAction.BLOCK, identities=("agent",))
USE_REVIEWED = RuleConfig("use-reviewed", ("USE",), RuleAction.REVIEW)


@pytest.mark.parametrize("rule", [NO_USE, USE_REVIEWED], ids=["block", "review"])
def test_com_init_db_and_a_logins_database_are_decided_as_the_text_use(rule: RuleConfig) -> None:
    """COM_INIT_DB (PyMySQL's select_db) and the database of a login are the text USE:
    the same rule, the same reason; a refused COM_INIT_DB leaves the schema as it was."""
    session = _ruled(rule, db="shop")
    use, text = session.query(b"USE `se``cret`")
    session.policy.completed(use, 1227, 0)  # refused (a held one: denied)
    init_db = ClientCommand(50, Command.INIT_DB, b"\x02se`cret", b"")
    verdict = session.policy.decide(init_db, 0, {})
    assert verdict.refused and verdict.command == "COM_INIT_DB"
    assert verdict.refusal == text.refusal
    assert verdict.refusal is not None and verdict.refusal.rule == rule.name
    (part,) = verdict.parts
    assert (part.sql, part.kind) == ("USE `se``cret`", "USE")
    session.policy.completed(init_db, 1227, 0)  # never sent
    assert session.policy.schema == "shop"
    login = session.policy.policy.login_schema(AGENT, "se`cret")
    assert login == text.refusal
    # another identity, or no rule: allowed, and the schema follows the answer
    other = rules.Subject("dba", frozenset({"dba"}), "orders")
    if rule is NO_USE:
        assert not session.policy.policy.login_schema(other, "secret").refused
    plain = Session()
    init_db = ClientCommand(51, Command.INIT_DB, b"\x02secret", b"")
    verdict = plain.policy.decide(init_db, 0, {})
    assert not verdict.refused and verdict.parts[0].decision.rule == ALLOW
    assert plain.policy.schema is None  # on its way
    plain.policy.completed(init_db, None, 0)
    assert plain.policy.schema == "secret"
    assert plain.policy.policy.login_schema(AGENT, "secret").rule == ALLOW


def _field_list(session: Session, payload: bytes) -> Verdict:
    body = bytes([Command.FIELD_LIST]) + payload
    return session.policy.decide(ClientCommand(60, Command.FIELD_LIST, body, body), 0, {})


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        (b"secret\0", "SHOW COLUMNS FROM `secret`"),
        (b"secret", "SHOW COLUMNS FROM `secret`"),  # no NUL: the whole payload is the name
        (b"secret\0c%", "SHOW COLUMNS FROM `secret` LIKE 'c%'"),
        (b"secret\0it's\\\0x", "SHOW COLUMNS FROM `secret` LIKE 'it''s\\\\'"),
    ],
)
def test_com_field_list_is_decided_as_show_columns(payload: bytes, text: str) -> None:
    """COM_FIELD_LIST gives a table's column definitions, as SHOW COLUMNS does: it was
    allowed (rule ``protocol``, no text) where a rule refused SHOW COLUMNS FROM secret.
    It is decided and recorded as that text now: the same rule, the same reason."""
    session = _ruled(SECRET_OFF_LIMITS, db="shop")
    show = session.query(b"SHOW COLUMNS FROM secret")[1]
    assert show.refusal is not None and show.refusal.rule == "secret-off-limits"
    verdict = _field_list(session, payload)
    assert verdict.command == "COM_FIELD_LIST" and verdict.refusal == show.refusal
    (part,) = verdict.parts
    assert (part.sql, part.kind) == (text, "SHOW")
    assert verdict.ledger_fields(0)[:2] == ("blocked", "secret-off-limits")
    # another table, or the same name in another schema: allowed, as the text is
    allowed = _field_list(session, b"orders\0")
    assert not allowed.refused and allowed.parts[0].decision.rule == ALLOW
    assert allowed.parts[0].sql == "SHOW COLUMNS FROM `orders`"
    assert not _field_list(_ruled(SECRET_OFF_LIMITS, db="other"), payload).refused


@pytest.mark.parametrize(
    ("login", "name", "rule"),
    [
        (UTF8MB4_GENERAL_CI, b"shop.secret", "not-understood"),  # one name, dot and all
        (UTF8MB4_GENERAL_CI, b"x.y", "not-understood"),
        (UTF8MB4_GENERAL_CI, "kün".encode("latin1"), "not-understood"),  # not UTF-8
        (UTF8MB4_GENERAL_CI, "kün".encode(), ALLOW),
        (LATIN1_SWEDISH_CI, "kün".encode("latin1"), "not-understood"),
        (LATIN1_SWEDISH_CI, "kün".encode(), "not-understood"),
        (LATIN1_SWEDISH_CI, b"kuen", ALLOW),
    ],
)
def test_com_field_list_of_a_name_the_gateway_cannot_read_is_refused(
    login: int, name: bytes, rule: str
) -> None:
    """The server reads COM_FIELD_LIST's name whole (a dot is part of it) in the client
    character set: a name the rules would misread is not understood."""
    session = Session(login)
    verdict = _field_list(session, name + b"\0")
    assert rule_of(verdict) == rule, verdict


def test_a_use_on_its_way_leaves_the_schema_unknown() -> None:
    """USE and, before its answer, a statement with bare table names: the server may
    already be in the new schema, so a bare name may be a table of any schema."""
    session = _ruled(ORDERS_READ_ONLY)
    assert session.outcome(b"INSERT INTO orders VALUES (1)") == ALLOW  # other.orders
    use, _ = session.query(b"USE shop")
    assert session.outcome(b"INSERT INTO orders VALUES (1)") == "orders-read-only"
    assert session.outcome(b"INSERT INTO func VALUES (1)") == "mysql-schema"  # mysql.func?
    session.policy.completed(use, None, 0)
    assert session.policy.schema == "shop"
    assert session.outcome(b"INSERT INTO orders VALUES (1)") == "orders-read-only"
    assert session.outcome(b"INSERT INTO func VALUES (1)") == ALLOW  # shop.func
    init_db = ClientCommand(50, Command.INIT_DB, b"\x02mysql", b"")
    session.policy.decide(init_db, 0, {})
    assert session.outcome(b"INSERT INTO func VALUES (1)") == "mysql-schema"


def test_a_failed_text_with_a_use_leaves_the_schema_unknown() -> None:
    """USE mysql; SELECT * FROM nosuchtable: the error may come after the USE ran. A lone
    USE that fails leaves the schema as it was."""
    session = _ruled(ORDERS_READ_ONLY)
    alone, _ = session.query(b"USE nosuchdb")
    session.policy.completed(alone, 1049, 0)
    assert session.policy.schema == "other"
    text, _ = session.query(b"USE mysql; SELECT * FROM nosuchtable")
    session.policy.completed(text, 1146, 0)
    assert session.policy.schema is None
    assert session.outcome(b"INSERT INTO func VALUES (1)") == "mysql-schema"
    refused, verdict = session.query(b"USE shop; DELETE FROM orders")
    assert verdict.refused
    session.policy.completed(refused, 1227, 0)  # never sent: nothing changed
    assert session.policy.schema is None


@pytest.mark.parametrize(
    "sql",
    [
        b"PREPARE s FROM 'USE shop'",
        b"EXECUTE IMMEDIATE 'USE shop'",
        b"prepare s from 'use `shop`'",
        b"SET STATEMENT max_statement_time = 1 FOR USE mysql",
    ],
)
def test_a_prepared_use_is_refused(sql: bytes) -> None:
    assert Session().outcome(sql) == "prepared-use"


def test_a_binary_prepared_use_is_refused() -> None:
    session = Session()
    payload = bytes([Command.STMT_PREPARE]) + b"USE mysql"
    cmd = ClientCommand(7, Command.STMT_PREPARE, payload, payload)
    assert rule_of(session.policy.decide(cmd, 0, {})) == "prepared-use"


def test_an_allow_rule_with_tables_covers_only_statements_on_them() -> None:
    """Every table the statement names must be covered, each in a schema known for
    certain: an allow must not reach a table of another schema."""
    session = _ruled(SCRATCH_DELETES, db="scratch")

    def deciding(sql: bytes) -> str:
        verdict = session.query(sql)[1]
        return (verdict.refusal or verdict.parts[0].decision).rule

    assert deciding(b"DELETE FROM tmp") == "scratch-deletes"
    joined = b"DELETE t FROM tmp t JOIN shop.orders o ON o.id = t.id WHERE t.id = 1"
    assert deciding(joined) == "multi-table-write"
    session.query(b"USE scratch")  # on its way: tmp may be a table of any schema
    assert deciding(b"DELETE FROM tmp WHERE id = 1") == "mysql-schema"


@pytest.mark.parametrize(
    "sql",
    [
        b"SET character_set_client = 28",  # gbk_chinese_ci
        b"SET @@session.character_set_client = 1",  # big5_chinese_ci
        b"SET NAMES 95",  # cp932_japanese_ci
        b"SET CHARACTER SET 13",  # sjis_japanese_ci
        b"SET character_set_client = 1e0",
        b"SET NAMES '28'",
    ],
)
def test_a_character_set_given_by_number_is_refused(sql: bytes) -> None:
    """The server takes a number as a collation id, so SET character_set_client = 28 is
    gbk: only a name says which set the session reads with."""
    assert Session().outcome(sql) == "charset"


@pytest.mark.parametrize(
    ("login", "trick", "accented"),
    [
        (45, ALLOW, ALLOW),  # utf8mb4_general_ci: 0xa0 is inside one identifier
        (33, ALLOW, ALLOW),  # utf8mb3_general_ci
        (8, "not-understood", ALLOW),  # latin1_swedish_ci: high bytes only in quotes
        (63, "not-understood", ALLOW),  # binary
        (255, "not-understood", "not-understood"),  # unknown here: ASCII only
    ],
)
def test_the_login_collation_decides_how_high_bytes_are_read(
    login: int, trick: str, accented: str
) -> None:
    """utf8mb3/utf8mb4 ids read UTF-8, single-byte ids read high bytes only in quotes,
    and an id the gateway does not know (255 is MySQL 8's utf8mb4_0900_ai_ci, which
    MariaDB 10.11 replaces with its own default) reads ASCII only."""
    session = Session(login)
    assert session.outcome(LATIN1_TRICK) == trick
    assert session.outcome("SELECT 'caf\u00e9'".encode()) == accented


KUENDIGUNG_OFF_LIMITS = RuleConfig(
    "kuendigung-off-limits", ("*",), RuleAction.BLOCK, ("shop.kündigung", "kündigung.*")
)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM `kündigung`",
        "SELECT * FROM shop.`kündigung` WHERE id = 1",
        'SELECT * FROM "kündigung"',  # a name under ANSI_QUOTES, which is never known
        "SHOW COLUMNS FROM `kündigung`",
        "USE `kündigung`",
    ],
)
def test_a_non_ascii_name_in_a_single_byte_session_is_refused(sql: str) -> None:
    """In latin1 the name `kündigung` is sent as k<0xfc>ndigung, which the gateway read as
    UTF-8 (k\ufffdndigung): no rule named it and the text ran. There it is not understood
    now, with advice to use utf8mb4; in utf8mb4 the rule refuses it."""
    latin1 = Session(LATIN1_SWEDISH_CI, Policy(PolicyConfig(), (KUENDIGUNG_OFF_LIMITS,)))
    _, verdict = latin1.query(sql.encode("latin1"))
    assert verdict.refusal is not None and verdict.refusal.rule == "not-understood"
    assert "quoted name" in verdict.refusal.reason
    assert "SET NAMES utf8mb4" in verdict.refusal.reason
    utf8 = Session(UTF8MB4_GENERAL_CI, Policy(PolicyConfig(), (KUENDIGUNG_OFF_LIMITS,)))
    if not sql.startswith("USE"):  # a USE names no table: no rule with tables matches it
        assert utf8.outcome(sql.encode()) == "kuendigung-off-limits"


@pytest.mark.parametrize(
    ("login", "name", "refused"),
    [
        (LATIN1_SWEDISH_CI, "kündigung".encode("latin1"), True),
        (LATIN1_SWEDISH_CI, b"kuendigung", False),
        (UTF8MB4_GENERAL_CI, "kündigung".encode("latin1"), True),  # not UTF-8
        (UTF8MB4_GENERAL_CI, "kündigung".encode(), False),
        (GBK_CHINESE_CI, "kündigung".encode("gbk"), True),  # ASCII only
    ],
)
def test_a_schema_name_the_gateway_cannot_read_is_refused(
    login: int, name: bytes, refused: bool
) -> None:
    """COM_INIT_DB and a login's database carry a name in the client character set; read
    as UTF-8, latin1's k<0xfc>ndigung was a schema no rule names, and the unqualified
    tables of later statements were read in it."""
    session = Session(login)
    init_db = ClientCommand(50, Command.INIT_DB, bytes([Command.INIT_DB]) + name, b"")
    verdict = session.policy.decide(init_db, 0, {})
    database = read_text(name, collation_charset(login))[0]  # as the core reads a login's
    login_db = session.policy.policy.login_schema(AGENT, database, login)
    if refused:
        assert verdict.refusal is not None and verdict.refusal.rule == "not-understood"
        assert "SET NAMES utf8mb4" in verdict.refusal.reason
        assert login_db == verdict.refusal  # naming it as the server reads it
        session.policy.completed(init_db, 1227, 0)  # never sent
        assert session.policy.schema == "shop"
    else:
        assert not verdict.refused and not login_db.refused


def _builtin_rule_names() -> set[str]:
    """Every rule name a built-in can return, read from rules.py's _block/_review calls."""
    tree = ast.parse(inspect.getsource(rules))
    builtins = {fn.__name__ for fn in rules.BUILTINS}
    names: set[str] = set()
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name not in builtins:
            continue
        found = set()
        for call in ast.walk(node):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id in ("_block", "_review")
                and call.args
            ):
                first = call.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.add(first.value)
                elif isinstance(first, ast.Name) and node.name == "_without_where":
                    found |= {"delete-without-where", "update-without-where"}
        assert found, f"no rule name found in {node.name}: teach this test to read it"
        names |= found
    return names


def test_corpus_covers_every_rule() -> None:
    assert len(CORPUS) >= 300
    assert len({c.sql for c in CORPUS}) == len(CORPUS), "duplicate texts"
    expected = {c.expected for c in CORPUS}
    missing = (_builtin_rule_names() | {"not-understood", ALLOW}) - expected
    assert not missing, f"no corpus entry is decided by {sorted(missing)}"


# ------------------------------------------------------------- through the gateway

#: What a forwarded refusal could have changed, read directly from the server.
STATE_SQL: tuple[str, ...] = (
    "SELECT schema_name FROM information_schema.schemata ORDER BY 1",
    "SELECT table_schema, table_name, table_type, engine FROM information_schema.tables "
    "WHERE table_schema NOT IN ('information_schema', 'performance_schema', 'sys') "
    "ORDER BY 1, 2",
    "SELECT table_schema, table_name, column_name, column_type FROM "
    "information_schema.columns WHERE table_schema IN ('corpus', 'shop') ORDER BY 1, 2, 3",
    "SELECT table_schema, table_name, index_name, seq_in_index, column_name FROM "
    "information_schema.statistics WHERE table_schema IN ('corpus', 'shop') "
    "ORDER BY 1, 2, 3, 4",
    "SELECT routine_schema, routine_name, routine_type FROM information_schema.routines "
    "ORDER BY 1, 2",
    "SELECT trigger_schema, trigger_name FROM information_schema.triggers ORDER BY 1, 2",
    "SELECT event_schema, event_name, status FROM information_schema.events ORDER BY 1, 2",
    "SELECT User, Host, Priv FROM mysql.global_priv ORDER BY 1, 2",
    "SELECT * FROM mysql.db ORDER BY Host, Db, User",
    "SELECT * FROM mysql.tables_priv ORDER BY Host, Db, User, Table_name",
    "SELECT * FROM mysql.roles_mapping ORDER BY 1, 2, 3",
    "SELECT * FROM mysql.proxies_priv ORDER BY 1, 2, 3, 4",
    "SELECT * FROM mysql.servers ORDER BY 1",
    "SELECT * FROM mysql.plugin ORDER BY 1",
    "SELECT * FROM mysql.func ORDER BY 1",
    "SELECT @@global.general_log, @@global.slow_query_log, @@global.max_connections, "
    "@@global.sql_mode, @@global.event_scheduler, @@global.local_infile, "
    "@@global.init_connect, @@global.tx_isolation, @@global.read_only",
    "SELECT * FROM corpus.items ORDER BY id",
    "SELECT * FROM corpus.stock ORDER BY item_id",
    "SELECT * FROM corpus.notes ORDER BY id",
    "SELECT * FROM shop.customers ORDER BY id",
    "SELECT * FROM shop.orders ORDER BY id",
)


class Direct:
    """A root connection to MariaDB, past the gateway: the scratch data and its checks."""

    def __init__(self, db: MariaDB) -> None:
        self.db = db
        self.conn = db.connect()
        with self.conn.cursor() as cur:
            cur.execute("SET SESSION lock_wait_timeout = 5, innodb_lock_wait_timeout = 5")

    def run(self, *statements: str) -> None:
        with self.conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)

    def rebuild(self) -> None:
        self.run(*SCRATCH_SQL)
        for path in OUTFILES:
            Path(path).unlink(missing_ok=True)

    def state(self) -> list[Any]:
        out: list[Any] = []
        with self.conn.cursor() as cur:
            for sql in STATE_SQL:
                try:
                    cur.execute(sql)
                    out.append((sql, cur.fetchall()))
                except pymysql.err.MySQLError as exc:  # e.g. a table that is gone
                    out.append((sql, f"error {exc.args[0]}"))
        out.append(("outfiles", [p for p in OUTFILES if os.path.exists(p)]))
        return out

    def close(self) -> None:
        self.conn.close()


def state_diff(before: list[Any], after: list[Any]) -> str:
    return "; ".join(
        f"{what}: {b!r} -> {a!r}" for (what, b), (_, a) in zip(before, after, strict=True) if a != b
    )


class Agent:
    """The agent's connection through the gateway (mysql.connector, pure Python: it
    reports the SQLSTATE), reopened only when a test lost it."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.conn: Any = None

    def get(self) -> Any:
        if self.conn is None or not self.conn.is_connected():
            self.conn = self.gw.connector(autocommit=True, connection_timeout=10)
        return self.conn

    def run(self, sql: str | bytes) -> list[Any]:
        """Every result of a text, read to the end."""
        conn = self.get()
        rows: list[Any] = []
        for result in conn.cmd_query_iter(sql.encode() if isinstance(sql, str) else sql):
            if "columns" in result:
                rows.append(conn.get_rows()[0])
        return rows

    def error(self, sql: str | bytes) -> Any:
        """The error a text gets, or None when it ran."""
        try:
            self.run(sql)
        except mysql.connector.Error as exc:
            return exc
        return None

    def refused(self, sql: str | bytes) -> Any:
        """The error a text gets; fails when it runs."""
        error = self.error(sql)
        assert error is not None, f"not refused: {sql!r}"
        return error

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@pytest.fixture(scope="module")
def direct(mariadb: MariaDB) -> Iterator[Direct]:
    d = Direct(mariadb)
    d.rebuild()
    try:
        yield d
    finally:
        d.run(*(sql for sql in SCRATCH_SQL if sql.startswith("DROP ")))
        d.close()
        for path in OUTFILES:
            Path(path).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def gateway(
    mariadb: MariaDB, direct: Direct, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), mariadb, mariadb.pki).start()
    try:
        yield gw
    finally:
        code = gw.stop()
    assert code == 0, gw.log()[-3000:]
    assert "Traceback" not in gw.log()


@pytest.fixture(scope="module")
def agent(gateway: GatewayProcess) -> Iterator[Agent]:
    a = Agent(gateway)
    try:
        yield a
    finally:
        a.close()


def assert_refused(error: Any, rule: str) -> None:
    assert error is not None, "the statement ran"
    assert (error.errno, error.sqlstate) == (1227, "42000"), f"{error.errno}: {error.msg}"
    assert error.msg.startswith("sqlgate: "), error.msg
    assert f" by rule '{rule}': " in error.msg, error.msg


def assert_unchanged(direct: Direct, before: list[Any]) -> None:
    after = direct.state()
    if after != before:
        diff = state_diff(before, after)
        direct.rebuild()
        pytest.fail(f"a refused statement changed the server: {diff}")


REFUSED_LIVE = [c for c in CORPUS if c.expected != ALLOW and c.live]
ALLOWED_LIVE = [c for c in CORPUS if c.expected == ALLOW and c.live]


@pytest.mark.integration
@pytest.mark.parametrize("case", REFUSED_LIVE, ids=[_id(c.sql) for c in REFUSED_LIVE])
def test_refused_through_the_gateway(case: Case, agent: Agent, direct: Direct) -> None:
    before = direct.state()
    error = agent.error(case.sql)
    assert_unchanged(direct, before)
    assert_refused(error, case.expected)
    assert agent.run("SELECT 1") == [[(1,)]]  # the same session goes on


@pytest.mark.integration
@pytest.mark.parametrize("case", ALLOWED_LIVE, ids=[_id(c.sql) for c in ALLOWED_LIVE])
def test_allowed_through_the_gateway(case: Case, agent: Agent) -> None:
    """Allowed texts run, without any error: the corpus is real MariaDB syntax."""
    try:
        agent.run(case.sql)
    finally:
        conn = agent.get()
        assert conn.cmd_reset_connection()
        conn.cmd_init_db("shop")
    assert agent.run("SELECT 1") == [[(1,)]]


# ------------------------------------------------ session state that changes lexing


def _pymysql(gw: GatewayProcess, **kw: Any) -> Any:
    return gw.connect(**kw)


def _refused_pymysql(conn: Any, sql: bytes, rule: str) -> None:
    with pytest.raises(pymysql.err.MySQLError) as info, conn.cursor() as cur:
        cur.execute(sql)
    code, message = info.value.args
    assert code == 1227, message
    assert message.startswith("sqlgate: ") and f" by rule '{rule}': " in message, message


@pytest.mark.integration
def test_no_backslash_escapes_is_followed(
    gateway: GatewayProcess, agent: Agent, direct: Direct
) -> None:
    """Under NO_BACKSLASH_ESCAPES, 'a\\' ends the string and a DELETE follows."""
    trick = rb"SELECT 'a\'; DELETE FROM corpus.items; -- '"
    before = direct.state()
    conn = agent.get()
    try:
        assert agent.run(trick) == [[("a'; DELETE FROM corpus.items; -- ",)]]
        agent.run("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
        assert agent.run(rb"SELECT 'a\'") == [[("a\\",)]]
        assert_refused(agent.refused(trick), "delete-without-where")
        assert_unchanged(direct, before)
        assert agent.run("SELECT 1") == [[(1,)]]
    finally:
        assert conn.cmd_reset_connection()
        conn.cmd_init_db("shop")
    # COM_RESET_CONNECTION restored the default sql_mode, and the gateway followed
    assert agent.run(trick) == [[("a'; DELETE FROM corpus.items; -- ",)]]


@pytest.mark.integration
def test_ansi_quotes_is_never_assumed(agent: Agent, direct: Direct) -> None:
    """With ANSI_QUOTES, "a\\" is an identifier (here an alias) and the DELETE after it
    runs: the gateway refuses the text whatever sql_mode the session has (the server never
    reports it), even after an allowed text of the same shape."""
    trick = rb'SELECT 2 AS "b\"; DELETE FROM corpus.items; -- "'  # sent nowhere else
    before = direct.state()
    conn = agent.get()
    try:
        assert agent.run("SELECT 1 AS 'same shape'") == [[(1,)]]
        agent.run("SET sql_mode = 'ANSI_QUOTES'")
        error = agent.error(trick)
        assert_unchanged(direct, before)
        assert_refused(error, "not-understood")
        assert_refused(agent.refused(trick), "not-understood")
        assert agent.run("SELECT 1") == [[(1,)]]
    finally:
        assert conn.cmd_reset_connection()
        conn.cmd_init_db("shop")
    assert_refused(agent.refused(trick), "not-understood")  # and in the default sql_mode


def _login_only(gw: GatewayProcess, charset: str, **kw: Any) -> Any:
    """A PyMySQL connection that logs in with `charset` (the handshake's collation) and
    sends no SET NAMES afterwards, as the C client and most drivers do."""

    class LoginCharsetOnly(pymysql.connections.Connection):  # type: ignore[misc]
        def set_character_set(self, charset: str, collation: str | None = None) -> None:
            self.charset = charset
            self.encoding = pymysql.charset.charset_by_name(charset).encoding
            self.collation = collation

    acct = gw.account()
    return LoginCharsetOnly(
        host=gw.host,
        port=gw.port,
        user=acct.user,
        password=acct.password,
        database="shop",
        charset=charset,
        autocommit=True,
        ssl_disabled=True,
        connect_timeout=10,
        read_timeout=30,
        **kw,
    )


@pytest.mark.integration
def test_pipelined_sql_mode_change(gateway: GatewayProcess, direct: Direct) -> None:
    """SET sql_mode and, before its answer, a text whose reading depends on it: the
    gateway cannot know NO_BACKSLASH_ESCAPES yet and must read the backslash both ways."""
    trick = rb"SELECT 'a\'; DELETE FROM corpus.items; -- '"
    before = direct.state()
    with _pymysql(gateway, client_flag=CLIENT.MULTI_STATEMENTS) as conn:
        for sql in (b"SET sql_mode = 'NO_BACKSLASH_ESCAPES'", b"SELECT 'warm'", trick):
            conn._execute_command(Command.QUERY, sql)  # all three before any answer
        answers: list[Any] = []
        for _ in range(3):
            conn._next_seq_id = 1
            try:
                result = pymysql.connections.MySQLResult(conn)
                result.read()
                answers.append(result.rows)
                while result.has_next:  # sequence ids run on across the results
                    result = pymysql.connections.MySQLResult(conn)
                    result.read()
            except pymysql.err.MySQLError as exc:
                answers.append(exc.args)
        assert_unchanged(direct, before)
        assert answers[2][0] == 1227 and "by rule 'not-understood'" in answers[2][1], answers


@pytest.mark.integration
@pytest.mark.parametrize("switch", [b"\x02mysql", b"\x03USE mysql"], ids=["init-db", "use"])
def test_pipelined_schema_change(mariadb: MariaDB, gateway: GatewayProcess, switch: bytes) -> None:
    """COM_INIT_DB mysql (or USE mysql) and, before its answer, an INSERT into the bare
    name func: the server runs it in mysql, so the gateway must not read it in shop."""
    evil = b"\x03INSERT INTO func (name, ret, dl, type) VALUES ('evil_udf', 0, 'x.so', 'function')"
    with _pymysql(gateway, database="shop") as conn:
        conn._write_bytes(frame(0, switch) + frame(0, evil))  # both before any answer
        conn._next_seq_id = 1
        assert conn._read_packet().is_ok_packet()
        conn._next_seq_id = 1
        with pytest.raises(pymysql.err.MySQLError) as refused:
            conn._read_packet().raise_for_error()
        code, message = refused.value.args
        assert code == 1227 and "by rule 'mysql-schema'" in message, message
    assert mariadb.admin_sql("SELECT COUNT(*) FROM mysql.func WHERE name = 'evil_udf'") == [(0,)]


@pytest.mark.integration
def test_multibyte_client_charset(
    mariadb: MariaDB, gateway: GatewayProcess, direct: Direct
) -> None:
    """A gbk session: 0xbf 0x5c is one character, so the quote after it ends the string
    and what follows is another statement. The gateway reads only ASCII in such a session."""
    # the control: the server itself splits the harmless twin of the trick in two
    harmless = GBK_TRICK.replace(b"DELETE FROM corpus.items", b"SELECT 2")
    with mariadb.connect(charset="gbk", client_flag=CLIENT.MULTI_STATEMENTS) as conn:
        with conn.cursor() as cur:
            cur.execute(harmless)
            assert cur.nextset() and cur.fetchall() == ((2,),)
    before = direct.state()
    with _login_only(gateway, "gbk", client_flag=CLIENT.MULTI_STATEMENTS) as conn:
        _refused_pymysql(conn, GBK_TRICK, "not-understood")
        assert_unchanged(direct, before)
        with conn.cursor() as cur:
            cur.execute(b"SELECT id FROM corpus.items WHERE id = 1")
            assert cur.fetchall() == ((1,),)
            cur.execute(b"SELECT @@character_set_client")
            assert cur.fetchall() == (("gbk",),)
    with _pymysql(gateway) as conn:
        _refused_pymysql(conn, b"SET NAMES gbk", "charset")
        with conn.cursor() as cur:
            cur.execute("SELECT @@character_set_client")
            assert cur.fetchall() == (("utf8mb4",),)


@pytest.mark.integration
def test_single_byte_client_charset(
    mariadb: MariaDB, gateway: GatewayProcess, direct: Direct
) -> None:
    """A latin1 session: the server reads 0xa0 as a space, so id<0xa0>OR<0xa0>1 = 1 is
    true for every row. The gateway reads bytes >= 0x80 there only inside quotes."""
    # the control: the server itself reads the OR in the harmless twin of the trick
    count = LATIN1_TRICK.replace(b"DELETE FROM", b"SELECT COUNT(*) FROM")
    with mariadb.connect(charset="latin1") as conn, conn.cursor() as cur:
        cur.execute(b"SELECT COUNT(*) FROM corpus.items")
        rows = cur.fetchall()
        cur.execute(count)
        assert cur.fetchall() == rows and rows[0][0] > 1
    before = direct.state()
    with _login_only(gateway, "latin1") as conn:
        _refused_pymysql(conn, LATIN1_TRICK, "not-understood")
        assert_unchanged(direct, before)
        with conn.cursor() as cur:
            cur.execute(b"SELECT id, 'caf\xe9' FROM corpus.items WHERE id = 1")
            assert cur.fetchall() == ((1, "caf\u00e9"),)
            cur.execute(b"SELECT @@character_set_client")
            assert cur.fetchall() == (("latin1",),)
    with _pymysql(gateway) as conn:  # utf8mb4, then SET NAMES latin1
        with conn.cursor() as cur:
            cur.execute("SET NAMES latin1")
        _refused_pymysql(conn, LATIN1_TRICK, "not-understood")
        assert_unchanged(direct, before)


@pytest.mark.integration
def test_character_set_by_number(mariadb: MariaDB, gateway: GatewayProcess) -> None:
    """The server takes SET character_set_client = 28 as gbk (a collation id): the gateway
    refuses it, and the session goes on reading utf8mb4."""
    with mariadb.connect() as conn, conn.cursor() as cur:  # the control
        cur.execute("SET character_set_client = 28")
        cur.execute("SELECT @@character_set_client")
        assert cur.fetchall() == (("gbk",),)
    with _pymysql(gateway) as conn:
        for sql in (b"SET character_set_client = 28", b"SET NAMES 95", b"SET CHARACTER SET 1"):
            _refused_pymysql(conn, sql, "charset")
        with conn.cursor() as cur:
            cur.execute("SELECT @@character_set_client")
            assert cur.fetchall() == (("utf8mb4",),)


@pytest.mark.integration
def test_login_collations_match_the_server(mariadb: MariaDB) -> None:
    """The gateway's tables of login collation ids are the server's: every utf8mb3/utf8mb4
    id a handshake can carry, and every single-byte one."""
    utf8 = mariadb.admin_sql(
        "SELECT id FROM information_schema.collations WHERE id < 256 "
        "AND character_set_name IN ('utf8mb3', 'utf8mb4')"
    )
    single = mariadb.admin_sql(
        "SELECT c.id FROM information_schema.collations c JOIN "
        "information_schema.character_sets s USING (character_set_name) "
        "WHERE c.id < 256 AND s.maxlen = 1"
    )
    assert {r[0] for r in utf8} == gate._UTF8_COLLATIONS
    assert {r[0] for r in single} == gate._EIGHT_BIT_COLLATIONS


@pytest.mark.integration
def test_com_set_option_turns_multi_statements_on(gateway: GatewayProcess, direct: Direct) -> None:
    """A client that logged in without MULTI_STATEMENTS turns them on with COM_SET_OPTION:
    each statement is still decided."""
    before = direct.state()
    with _pymysql(gateway) as conn:
        conn._execute_command(Command.SET_OPTION, b"\x00\x00")  # MYSQL_OPTION_MULTI_STATEMENTS_ON
        conn._read_packet()  # EOF or OK
        _refused_pymysql(conn, b"SELECT 1; DELETE FROM corpus.items", "delete-without-where")
        assert_unchanged(direct, before)
        with conn.cursor() as cur:
            cur.execute("SELECT 1; SELECT 2")
            assert cur.fetchall() == ((1,),)
            assert cur.nextset() and cur.fetchall() == ((2,),)


@pytest.mark.integration
def test_prepare_from_a_variable(agent: Agent, direct: Direct) -> None:
    """The variable holds a DELETE the gateway never sees: PREPARE s FROM @v is refused,
    so EXECUTE finds no statement."""
    before = direct.state()
    assert agent.get().cmd_reset_connection()  # no statement s left from earlier tests
    agent.run("SET @v = 'DELETE FROM corpus.items'")
    assert_refused(agent.refused("PREPARE s FROM @v"), "prepare-from-variable")
    error = agent.refused("EXECUTE s")
    assert error.errno == 1243, error.msg  # unknown prepared statement handler
    assert_unchanged(direct, before)


@pytest.mark.integration
def test_binary_protocol_prepare(gateway: GatewayProcess, direct: Direct) -> None:
    """COM_STMT_PREPARE is decided like a query."""
    before = direct.state()
    conn = gateway.connector()
    try:
        cur = conn.cursor(prepared=True)
        with pytest.raises(mysql.connector.Error) as info:
            cur.execute("DELETE FROM corpus.items WHERE 1 = 1 OR id = ?", (1,))
        assert_refused(info.value, "delete-without-where")
        cur.execute("SELECT name FROM corpus.items WHERE id = ?", (1,))
        assert cur.fetchall() == [("apple",)]
    finally:
        conn.close()
    assert_unchanged(direct, before)


def test_rules_for_updates_and_deletes_see_upserts_and_replaces() -> None:
    """INSERT ... ON DUPLICATE KEY UPDATE changed every order past a rule refusing
    UPDATE on them; REPLACE deletes the rows it collides with. An allow for INSERT is
    still not one for either."""
    no_updates = RuleConfig("no-order-updates", ("UPDATE",), RuleAction.BLOCK, ("shop.orders",))
    no_deletes = RuleConfig("no-order-deletes", ("DELETE",), RuleAction.BLOCK, ("shop.orders",))
    session = _ruled(no_updates, no_deletes, db="shop")
    upsert = b"INSERT INTO orders (id, total) VALUES (1, 0) ON DUPLICATE KEY UPDATE total = 0"
    assert session.outcome(upsert) == "no-order-updates"
    assert session.outcome(b"REPLACE INTO orders (id, total) VALUES (1, 0)") == "no-order-deletes"
    assert session.outcome(b"INSERT INTO orders (id, total) VALUES (9, 0)") == ALLOW
    inserts = RuleConfig("inserts", ("INSERT",), RuleAction.ALLOW, ("shop.orders",))
    allowed = _ruled(inserts, db="shop")
    assert allowed.query(upsert)[1].refusal is None  # the INSERT it is
    assert allowed.outcome(b"REPLACE INTO orders (id, total) VALUES (1, 0)") == "replace"


@pytest.mark.parametrize(
    ("sql", "create", "drop"),
    [
        (b"CREATE OR REPLACE TABLE orders (id INT)", "CREATE TABLE", "DROP TABLE"),
        (b"CREATE OR REPLACE TABLE shop.orders AS SELECT 1 AS id", "CREATE TABLE", "DROP TABLE"),
        (b"CREATE OR REPLACE SEQUENCE orders", "CREATE SEQUENCE", "DROP TABLE"),
        (b"CREATE OR REPLACE VIEW orders AS SELECT 1", "CREATE VIEW", "DROP VIEW"),
        (b"CREATE OR REPLACE INDEX i ON orders (id)", "CREATE INDEX", "DROP INDEX"),
        (b"CREATE OR REPLACE DATABASE shop", "CREATE DATABASE", "DROP DATABASE"),
    ],
)
def test_create_or_replace_is_also_the_drop_it_makes(sql: bytes, create: str, drop: str) -> None:
    """MariaDB's CREATE OR REPLACE drops the existing object first (a sequence: the
    table of its name). A rule blocking DROP on shop's tables let CREATE OR REPLACE
    TABLE shop.orders through to the built-in review, and an allow for CREATE TABLE ran
    it: the table and its rows were gone."""
    keep = RuleConfig("keep", ("DROP",), RuleAction.BLOCK, ("shop.*",))
    creates = RuleConfig("creates", (create,), RuleAction.ALLOW)
    assert _ruled(keep, creates, db="shop").outcome(sql) == "keep"
    # an allow to create is not one to drop: the built-ins decide (review, or block)
    assert _ruled(creates, db="shop").outcome(sql) in (
        "schema-change",
        "drop-database",
        "unknown-statement",  # CREATE SEQUENCE, which no built-in allows
    )
    both = RuleConfig("both", (create, drop), RuleAction.ALLOW)
    assert _ruled(both, db="shop").query(sql)[1].parts[0].decision.rule == "both"
    if create != "CREATE VIEW":  # (a view named by a refusing rule's tables is refused)
        plain = sql.replace(b"OR REPLACE ", b"")
        assert _ruled(keep, creates, db="shop").query(plain)[1].parts[0].decision.rule == "creates"


@pytest.mark.parametrize(
    "sql",
    [
        b"RENAME TABLE shop.orders NOWAIT TO shop.orders_old",
        b"RENAME TABLE shop.orders WAIT 5 TO shop.orders_old",
        b"RENAME TABLE IF EXISTS shop.orders TO shop.orders_old",
    ],
)
def test_rename_table_options_keep_its_tables(sql: bytes) -> None:
    """NOWAIT, WAIT n and IF EXISTS made the tables vanish: a block rule on them became
    the built-in review."""
    locked = RuleConfig("orders-locked", ("RENAME TABLE",), RuleAction.BLOCK, ("shop.orders",))
    assert _ruled(locked).outcome(sql) == "orders-locked"
    assert _ruled(locked).outcome(b"RENAME TABLE shop.orders TO x y") == "not-understood"


SHOP_LOCKED = RuleConfig("shop-locked", ("*",), RuleAction.BLOCK, ("shop.*",))


@pytest.mark.parametrize(
    "sql",
    [
        b"DELETE FROM `x.y` WHERE id = 1",
        b"DELETE FROM shop.`x.y` WHERE id = 1",
        b"UPDATE `x.y` SET v = 0 WHERE id = 1",
        b"INSERT INTO `x.y` VALUES (1)",
        b"SELECT * FROM `x.y`",
        b"CREATE TABLE `x.y` (id INT)",
        b"CREATE VIEW `v.w` AS SELECT 1",
        b"DROP TABLE `x.y`",
        b"ALTER TABLE `x.y` ADD COLUMN w INT",
        b"RENAME TABLE `x.y` TO `x.z`",
        b"LOCK TABLES `x.y` WRITE",
        b"TRUNCATE TABLE `x.y`",
        b"SHOW CREATE TABLE `x.y`",
        b"CREATE TRIGGER `t.r` BEFORE INSERT ON `x.y` FOR EACH ROW SET @a = 1",
        b"EXECUTE IMMEDIATE 'DELETE FROM `x.y` WHERE id = 1'",
        b"USE `a.b`",
    ],
)
def test_a_name_with_a_dot_is_refused_where_a_rule_would_miss_it(sql: bytes) -> None:
    """In schema shop, DELETE FROM `x.y` was read as a delete from table y of schema x:
    the rule for shop.* missed it, and the server deleted from shop.`x.y`."""
    verdict = _ruled(SHOP_LOCKED, db="shop").query(sql)[1]
    assert verdict.refusal is not None and verdict.refusal.rule == "not-understood"
    assert "contains a dot, which the gateway's rules cannot tell" in verdict.refusal.message


def test_a_schema_with_a_dot_is_never_the_current_schema() -> None:
    """With `scratch.x` the current schema, DELETE FROM t was read as a delete from
    "scratch.x.t", which an allow for scratch.* covers: every row of `scratch.x`.t went.
    USE and COM_INIT_DB of such a schema are refused; a login into one leaves the schema
    unknown (a bare name may then be of any schema)."""
    session = _ruled(SCRATCH_DELETES, db="scratch")
    assert session.outcome(b"USE `scratch.x`") == "not-understood"
    init_db = ClientCommand(50, Command.INIT_DB, b"\x02scratch.x", b"")
    verdict = session.policy.decide(init_db, 0, {})
    assert verdict.refused and verdict.refusal is not None
    assert verdict.refusal.rule == "not-understood"
    assert "the schema name `scratch.x` contains a dot" in verdict.refusal.message
    session.policy.completed(init_db, 1227, 0)  # never sent
    assert session.policy.schema == "scratch"
    delete = b"DELETE FROM t"
    assert session.query(delete)[1].parts[0].decision.rule == "scratch-deletes"
    login = _ruled(SCRATCH_DELETES, db="scratch.x")
    assert login.policy.schema is None
    assert login.outcome(delete) == "delete-without-where"
    # shadow mode forwards the COM_INIT_DB: the schema is not known after it either
    shadow = Session(policy=Policy(PolicyConfig(mode=PolicyMode.SHADOW), (SCRATCH_DELETES,)))
    verdict = shadow.policy.decide(init_db, 0, {})
    assert verdict.shadow and not verdict.refused
    shadow.policy.completed(init_db, None, 0)
    assert shadow.policy.schema is None


def test_a_rule_on_a_schema_sees_a_table_named_dual() -> None:
    """A quoted `dual` is a table (DUAL is a keyword only unquoted): it was not counted
    as read, so a rule refusing reads of shop.* let SELECT * FROM `Dual` through."""
    reads = RuleConfig("shop-unread", ("SELECT",), RuleAction.BLOCK, ("shop.*",))
    session = _ruled(reads, db="shop")
    assert session.outcome(b"SELECT * FROM `Dual`") == "shop-unread"
    assert session.outcome(b"SELECT 1 FROM DUAL") == ALLOW


def test_a_rule_on_tables_refuses_a_view_over_them() -> None:
    """A view over a table whose changes a rule refuses passed them through: UPDATE and
    DELETE on the view changed the table, which the rule (names as written) never saw."""
    session = _ruled(ORDERS_READ_ONLY, db="shop")
    assert session.outcome(b"CREATE VIEW ov AS SELECT * FROM shop.orders") == "orders-read-only"
    replace = b"CREATE OR REPLACE VIEW ov AS SELECT id FROM orders"
    assert session.outcome(replace) == "orders-read-only"
    assert session.outcome(b"CREATE VIEW cv AS SELECT * FROM customers") == ALLOW


def test_an_allow_rule_covers_stored_code_only_by_name() -> None:
    """A sandbox rule allowing everything on sandbox.* let a trigger on a sandbox table
    delete from shop.orders, unreviewed; stored code keeps its review unless an allow
    names its kind."""
    sandbox = RuleConfig("sandbox", ("*",), RuleAction.ALLOW, ("sandbox.*",))
    session = _ruled(sandbox, db="sandbox")
    trigger = (
        b"CREATE TRIGGER sandbox.tr AFTER INSERT ON sandbox.t FOR EACH ROW DELETE FROM shop.orders"
    )
    assert session.outcome(trigger) == "stored-code"
    assert session.query(b"DELETE FROM sandbox.t WHERE id = 1")[1].refusal is None
    named = RuleConfig("triggers", ("CREATE TRIGGER",), RuleAction.ALLOW, ("sandbox.*",))
    assert _ruled(named, db="sandbox").query(trigger)[1].refusal is None


def test_an_execute_of_the_last_prepared_id_is_decided_as_its_prepare() -> None:
    """COM_STMT_EXECUTE with id 0xFFFFFFFF right after its prepare (MariaDB
    Connector/Node.js): decided and recorded as the prepared text, before the prepare's
    answer gave an id; after a refused prepare, refused."""
    session = Session()
    last = bytes([Command.STMT_EXECUTE]) + b"\xff\xff\xff\xff\x00\x01\x00\x00\x00"

    def prepare(cmd_id: int, sql: bytes) -> Verdict:
        payload = bytes([Command.STMT_PREPARE]) + sql
        return session.policy.decide(
            ClientCommand(cmd_id, Command.STMT_PREPARE, payload, payload), 0, {}
        )

    def execute(cmd_id: int, stands_for: int) -> Verdict:
        cmd = ClientCommand(cmd_id, Command.STMT_EXECUTE, last, last, stands_for)
        return session.policy.decide(cmd, 0, {})

    assert prepare(1, b"SELECT name FROM customers").refusal is None
    verdict = execute(2, 1)
    assert verdict.refusal is None and verdict.parts[0].sql == "SELECT name FROM customers"
    assert rule_of(prepare(3, b"USE mysql")) == "prepared-use"
    assert rule_of(execute(4, 3)) == "last-prepared"
    assert prepare(5, b"SELECT 1").refusal is None
    assert rule_of(execute(6, 3)) == "last-prepared"  # not the prepare decided last


def test_an_execute_of_a_name_whose_prepare_was_refused_is_refused() -> None:
    """A PREPARE that fails on the server drops the statement prepared under its name
    before; one the gateway refused never reached it, and EXECUTE of the name ran the
    earlier statement, though the client had seen its PREPARE fail."""
    session = Session()
    assert session.outcome(b"PREPARE s FROM 'DELETE FROM customers'") == "delete-without-where"
    assert session.outcome(b"EXECUTE s") == ALLOW  # nothing prepared before: the server's 1243
    assert session.outcome(b"PREPARE s FROM 'SELECT name FROM customers WHERE id = 1'") == ALLOW
    assert session.outcome(b"PREPARE `S` FROM 'DELETE FROM customers'") == "delete-without-where"
    for text in (b"EXECUTE s", b"EXECUTE /* c */ `s` USING @a", b"SELECT 1; EXECUTE S"):
        assert session.outcome(text) == "prepare-refused"
    assert session.outcome(b"EXECUTE t") == ALLOW  # another name
    assert session.outcome(b"PREPARE s FROM 'SELECT 2'; EXECUTE s") == ALLOW  # that one runs
    assert session.outcome(b"EXECUTE s") == ALLOW
    # a PREPARE that fails, or is refused after its decision (the ledger), counts too
    cmd, verdict = session.query(b"PREPARE s FROM 'SELECT 3'")
    assert verdict.refusal is None
    session.policy.completed(cmd, 1105, 0)
    assert session.outcome(b"EXECUTE s") == "prepare-refused"
    assert session.outcome(b"DEALLOCATE PREPARE s") == ALLOW
    assert session.outcome(b"EXECUTE s") == ALLOW  # the server's to answer (1243)
    assert session.outcome(b"PREPARE s FROM 'DROP TABLE customers'") != ALLOW
    reset = bytes([Command.RESET_CONNECTION])
    session.policy.completed(ClientCommand(99, Command.RESET_CONNECTION, reset, reset), None, 0)
    assert session.outcome(b"EXECUTE s") == ALLOW  # every statement was dropped


def test_an_execute_sent_before_its_prepare_was_answered_is_refused() -> None:
    """A client that pipelines PREPARE and EXECUTE (guessing the id) had the EXECUTE
    allowed and recorded with no text: its statement is known only from the PREPARE's
    answer."""
    session = Session()
    payload = bytes([Command.STMT_PREPARE]) + b"INSERT INTO t VALUES (7)"
    prepare = ClientCommand(1, Command.STMT_PREPARE, payload, payload)
    assert session.policy.decide(prepare, 0, {}).refusal is None
    run = bytes([Command.STMT_EXECUTE]) + (1).to_bytes(4, "little") + b"\x00\x01\x00\x00\x00"
    execute = ClientCommand(2, Command.STMT_EXECUTE, run, run)
    assert rule_of(session.policy.decide(execute, 0, {})) == "prepared-unknown"
    session.policy.completed(prepare, None, 0)  # its answer gave id 1
    again = ClientCommand(3, Command.STMT_EXECUTE, run, run)
    assert session.policy.decide(again, 0, {1: b"INSERT INTO t VALUES (7)"}).refusal is None
    # with no PREPARE on its way an unknown id is the server's to refuse (1243)
    late = ClientCommand(4, Command.STMT_EXECUTE, run, run)
    assert session.policy.decide(late, 0, {}).refusal is None


@pytest.mark.parametrize("where", ["0", "FALSE", "1 = 0", "1 = 1", "@v", "NOW() > 0"])
def test_a_constant_where_is_refused_saying_the_gateway_does_not_evaluate_it(
    where: str,
) -> None:
    """`DELETE FROM t WHERE 0` deletes nothing on the server; the gateway refuses it all
    the same (it does not evaluate constants), and said its WHERE "is always true"."""
    session = Session(UTF8MB4_GENERAL_CI, Policy(PolicyConfig(), ()))
    _, verdict = session.query(f"DELETE FROM orders WHERE {where}".encode())
    assert verdict.refusal is not None and verdict.refusal.rule == "delete-without-where"
    assert "is always true" not in verdict.refusal.reason
    assert "may be true for every row" in verdict.refusal.reason
    assert "does not evaluate constants" in verdict.refusal.reason


@pytest.mark.parametrize(
    "sql",
    [
        b"DROP TEMPORARY TABLE shop.orders",
        b"DROP TEMPORARY TABLE IF EXISTS orders",
        b"CREATE OR REPLACE TEMPORARY TABLE shop.orders (id INT)",
    ],
)
def test_a_rule_on_drop_still_sees_a_temporary_table(sql: bytes) -> None:
    """The built-ins let temporary tables go without approval; a configured rule on
    DROP TABLE still decides them, as it decides every DROP TABLE."""
    keep = RuleConfig("keep", ("DROP TABLE",), RuleAction.BLOCK, ("shop.*",))
    assert _ruled(keep, db="shop").outcome(sql) == "keep"
    assert _ruled(db="shop").outcome(sql) == ALLOW


@pytest.mark.integration
def test_a_temporary_table_is_dropped_without_approval(agent: Agent, direct: Direct) -> None:
    """DROP TEMPORARY TABLE and CREATE OR REPLACE TEMPORARY TABLE were held for approval
    as schema changes; they drop only a temporary table of the session, never the base
    table of its name, so they run, and DROP TABLE of that name is still held."""
    before = direct.state()
    try:
        agent.run("CREATE TEMPORARY TABLE corpus.stock (item_id INT)")
        agent.run("CREATE OR REPLACE TEMPORARY TABLE corpus.stock (item_id INT, note TEXT)")
        agent.run("DROP TEMPORARY TABLE corpus.stock")
        agent.run("DROP TEMPORARY TABLE IF EXISTS corpus.stock, corpus.items")
        error = agent.refused("DROP TEMPORARY TABLE corpus.stock")  # none left: the server's
        assert error.errno == 1051, f"{error.errno}: {error.msg}"
        assert_unchanged(direct, before)  # the base tables and their rows are all there
        assert_refused(agent.refused("DROP TABLE corpus.stock"), "schema-change")
        assert_unchanged(direct, before)
    finally:
        conn = agent.get()
        assert conn.cmd_reset_connection()
        conn.cmd_init_db("shop")


@pytest.mark.integration
def test_a_statement_is_profiled_through_the_gateway(agent: Agent) -> None:
    """SET profiling was allowed, and SHOW PROFILES listed the session's statements, but
    SHOW PROFILE FOR QUERY n, which shows one of them, was refused as not understood
    (the parser wants a type before FOR QUERY)."""
    try:
        agent.run("SET SESSION profiling = 1, profiling_history_size = 20")
        agent.run("SELECT COUNT(*) FROM shop.orders")
        [profiles] = agent.run("SHOW PROFILES")
        query = next(row[0] for row in profiles if "shop.orders" in row[2])
        [steps] = agent.run(f"SHOW PROFILE FOR QUERY {query}")
        assert steps and all(isinstance(row[0], str) for row in steps), steps
        [cpu] = agent.run(f"SHOW PROFILE CPU FOR QUERY {query} LIMIT 2 OFFSET 1")
        assert len(cpu) == 2 and len(cpu[0]) == 4, cpu  # Status, Duration, CPU_user, CPU_system
    finally:
        conn = agent.get()
        assert conn.cmd_reset_connection()
        conn.cmd_init_db("shop")


@pytest.mark.integration
def test_the_plan_of_a_running_statement_is_asked_for_through_the_gateway(
    gateway: GatewayProcess, agent: Agent
) -> None:
    """SHOW EXPLAIN FOR n, MariaDB's EXPLAIN FOR CONNECTION n, was refused as not
    understood; it reaches the server, which answers that the other session (idle here)
    runs nothing to explain."""
    other = gateway.connector(autocommit=True, connection_timeout=10)
    try:
        cur = other.cursor()
        cur.execute("SELECT CONNECTION_ID()")
        [(thread,)] = cur.fetchall()
        for sql in (f"SHOW EXPLAIN FOR {thread}", f"SHOW ANALYZE FORMAT=JSON FOR {thread}"):
            error = agent.refused(sql)
            assert error.errno == 1933, f"{sql}: {error.errno}: {error.msg}"  # not EXPLAINable
        assert agent.run("SELECT 1") == [[(1,)]]
    finally:
        other.close()
