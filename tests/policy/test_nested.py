"""Statements that run other statements (``SET STATEMENT ... FOR``, ``EXECUTE IMMEDIATE``,
``PREPARE ... FROM``) nested in one another: what the innermost one does to the session
(a USE, a SET of the client or results character set or of sql_mode) is refused at any
depth exactly as at depth one, so the session never changes unseen. Through the real
gateway: tests/test_policy.py."""

from __future__ import annotations

import pytest

from appliance.config import MaskingRuleConfig, MaskStrategy, PolicyConfig, RuleAction, RuleConfig
from appliance.mysql.constants import Command
from appliance.mysql.relay import ClientCommand
from appliance.policy.gate import Policy, SessionPolicy, Verdict
from appliance.policy.masking import MaskingPolicy
from appliance.policy.rules import Subject

AGENT = Subject("agent", frozenset({"agents"}), "orders")
UTF8MB4_GENERAL_CI = 45
NO_SECRET = RuleConfig("no-secret", ("*",), RuleAction.BLOCK, ("shop.secret",))
# 'a\' ends the string only without backslash escapes: then the UNION reads shop.secret
TRICK = r"SELECT 'a\' UNION SELECT card FROM shop.secret -- '"


class Session:
    """One agent session in schema ``other``, fed commands the way the gateway feeds them."""

    def __init__(self) -> None:
        self.policy = SessionPolicy(
            Policy(PolicyConfig(), (NO_SECRET,)), AGENT, "other", UTF8MB4_GENERAL_CI
        )
        self._next = 0

    def send(
        self, sql: str, command: Command = Command.QUERY, prepared: dict[int, bytes] | None = None
    ) -> tuple[ClientCommand, Verdict]:
        self._next += 1
        body = sql.encode() if command != Command.STMT_EXECUTE else b"\x01\x00\x00\x00\x00"
        payload = bytes([command]) + body
        cmd = ClientCommand(self._next, command, payload, payload)
        return cmd, self.policy.decide(cmd, 0, prepared or {})

    def run(self, sql: str) -> Verdict:
        """Decide a text and, unless refused, let its answer (OK) come back."""
        cmd, verdict = self.send(sql)
        self.policy.completed(cmd, 1227 if verdict.refused else None, 0)
        return verdict


def refusal(verdict: Verdict) -> tuple[str, str]:
    assert verdict.refused and verdict.refusal is not None, verdict
    return verdict.refusal.rule, verdict.refusal.message


USE_AT_DEPTH = [
    # depth 2
    "SET STATEMENT max_statement_time=0 FOR EXECUTE IMMEDIATE 'USE shop'",
    "EXECUTE IMMEDIATE 'SET STATEMENT max_statement_time=0 FOR USE shop'",
    "PREPARE s FROM 'SET STATEMENT max_statement_time=0 FOR USE shop'",
    "SET STATEMENT max_statement_time=0 FOR PREPARE s FROM 'USE shop'",
    # depth 3
    "SET STATEMENT max_statement_time=0 FOR EXECUTE IMMEDIATE "
    "'SET STATEMENT lock_wait_timeout=5 FOR USE shop'",
    "SET STATEMENT max_statement_time=0 FOR PREPARE s FROM "
    "'SET STATEMENT lock_wait_timeout=5 FOR USE `shop`'",
    "PREPARE s FROM 'SET STATEMENT max_statement_time=0 FOR EXECUTE IMMEDIATE ''USE shop'''",
]


@pytest.mark.parametrize("sql", USE_AT_DEPTH)
def test_a_use_nested_at_any_depth_is_refused_as_at_depth_one(sql: str) -> None:
    """The server would be in ``shop`` while the gateway reads bare names in ``other``:
    ``SELECT * FROM secret`` would read shop.secret past the rule on it."""
    session = Session()
    depth_one = refusal(session.run("EXECUTE IMMEDIATE 'USE shop'"))
    assert depth_one[0] == "prepared-use"
    assert refusal(session.run(sql)) == depth_one
    assert session.policy.schema == "other"
    # one statement of a text: the whole text is refused
    assert refusal(session.run(f"SELECT 1; {sql}")) == depth_one


CHARSET_AT_DEPTH = [
    # depth 2: the same SET at depth one, then nested
    (
        "EXECUTE IMMEDIATE 'SET NAMES latin1'",
        "SET STATEMENT max_statement_time=0 FOR EXECUTE IMMEDIATE 'SET NAMES latin1'",
    ),
    (
        "PREPARE s FROM 'SET character_set_client = latin1'",
        "SET STATEMENT max_statement_time=0 FOR PREPARE s FROM 'SET character_set_client = latin1'",
    ),
    (
        "EXECUTE IMMEDIATE 'SET @@character_set_client = latin1'",
        "SET STATEMENT max_statement_time=0 FOR EXECUTE IMMEDIATE "
        "'SET @@character_set_client = latin1'",
    ),
    (
        "EXECUTE IMMEDIATE 'SET character_set_results = latin1'",
        "SET STATEMENT max_statement_time=0 FOR EXECUTE IMMEDIATE "
        "'SET character_set_results = latin1'",
    ),
    (
        "EXECUTE IMMEDIATE 'SET sql_mode = ''NO_BACKSLASH_ESCAPES'''",
        "SET STATEMENT max_statement_time=0 FOR EXECUTE IMMEDIATE "
        "'SET sql_mode = ''NO_BACKSLASH_ESCAPES'''",
    ),
    # depth 3
    (
        "EXECUTE IMMEDIATE 'SET NAMES latin1'",
        "SET STATEMENT max_statement_time=0 FOR PREPARE s FROM "
        "'EXECUTE IMMEDIATE ''SET NAMES latin1'''",
    ),
    (
        "PREPARE s FROM 'SET character_set_results = latin1'",
        "EXECUTE IMMEDIATE 'SET STATEMENT max_statement_time=0 FOR PREPARE s FROM "
        "''SET character_set_results = latin1'''",
    ),
    (
        "EXECUTE IMMEDIATE 'SET sql_mode = ''NO_BACKSLASH_ESCAPES'''",
        "SET STATEMENT max_statement_time=0 FOR PREPARE s FROM "
        "'EXECUTE IMMEDIATE ''SET sql_mode = ''''NO_BACKSLASH_ESCAPES'''''''",
    ),
]


@pytest.mark.parametrize(("depth_one", "sql"), CHARSET_AT_DEPTH)
def test_a_set_of_the_charset_or_sql_mode_nested_at_any_depth_is_refused(
    depth_one: str, sql: str
) -> None:
    """Run, it would change how the server reads the next statements (latin1 reads 0xa0
    as a space) or the names masking matches, unseen by the gateway."""
    session = Session()
    expected = refusal(session.run(depth_one))
    assert expected[0] == "lexing-state"
    assert refusal(session.run(sql)) == expected
    assert refusal(session.run(f"SELECT 1; {sql}")) == expected


@pytest.mark.parametrize(
    "nested",
    [
        "SET STATEMENT max_statement_time=0 FOR EXECUTE IMMEDIATE "
        "'SET sql_mode = ''NO_BACKSLASH_ESCAPES'''",
        "EXECUTE IMMEDIATE 'SET STATEMENT max_statement_time=0 FOR PREPARE s FROM "
        "''SET sql_mode = ''''NO_BACKSLASH_ESCAPES'''''''",
    ],
    ids=["depth 2", "depth 3"],
)
def test_a_nested_sql_mode_change_is_not_followed_by_text_read_the_old_way(nested: str) -> None:
    """In one text, or pipelined: the SELECT after it would be read with backslash
    escapes while the server reads it without, and its UNION reads shop.secret."""
    session = Session()
    _, verdict = session.send(f"{nested}; {TRICK}")
    assert verdict.refused and refusal(verdict)[0] == "lexing-state"
    first, verdict = session.send(nested)  # pipelined: not answered yet
    assert refusal(verdict)[0] == "lexing-state"  # so never sent: nothing to follow
    _, after = session.send(TRICK)
    session.policy.completed(first, 1227, 0)
    assert not after.refused  # read with backslash escapes, as the server reads it


@pytest.mark.parametrize("form", ["PREPARE s FROM '{}'", "EXECUTE IMMEDIATE '{}'"])
def test_a_set_statement_of_sql_mode_run_by_another_is_decided_as_a_prepared_one(
    form: str,
) -> None:
    """SET STATEMENT sql_mode = ... FOR ends its mode with its statement, and the answer
    of the EXECUTE that runs it carries the session's flags: it was refused as a
    prepared SET of sql_mode at SQL level, and allowed by COM_STMT_PREPARE."""
    session = Session()
    inner = "SET STATEMENT sql_mode=''NO_BACKSLASH_ESCAPES'' FOR SELECT 1"
    assert not session.run(form.format(inner)).refused
    prepared, verdict = session.send(inner.replace("''", "'"), Command.STMT_PREPARE)
    assert not verdict.refused
    session.policy.completed(prepared, None, 0)
    # until its answer, a backslash in a string is read both ways
    first, verdict = session.send(form.format(inner))
    assert not verdict.refused
    _, after = session.send(TRICK)
    assert refusal(after)[0] in ("no-secret", "not-understood")
    session.policy.completed(first, None, 0)
    # a SET of the session's sql_mode run the same way is still refused
    assert refusal(session.run(form.format("SET sql_mode=''NO_BACKSLASH_ESCAPES''")))[0] == (
        "lexing-state"
    )


def test_an_execute_of_a_nested_sql_mode_change_leaves_backslashes_unknown() -> None:
    """A COM_STMT_EXECUTE of a text that sets sql_mode at any depth: until its answer,
    a backslash in a string is read both ways."""
    session = Session()
    prepared = {
        1: b"SET STATEMENT max_statement_time=0 FOR EXECUTE IMMEDIATE "
        b"'SET sql_mode = ''NO_BACKSLASH_ESCAPES'''"
    }
    execute, verdict = session.send("", Command.STMT_EXECUTE, prepared)
    assert not verdict.refused
    _, after = session.send(TRICK)
    assert refusal(after)[0] in ("no-secret", "not-understood")
    session.policy.completed(execute, None, 0)


RUN_BY_ANOTHER = [
    "EXECUTE IMMEDIATE '{}'",
    "PREPARE s FROM '{}'",
    "SET STATEMENT max_statement_time=0 FOR {}",
    "SET STATEMENT max_statement_time=0 FOR EXECUTE IMMEDIATE '{}'",
    "EXECUTE IMMEDIATE 'SET STATEMENT max_statement_time=0 FOR {}'",
]


@pytest.mark.parametrize("form", RUN_BY_ANOTHER)
def test_a_kill_run_by_another_statement_reaches_only_the_identitys_sessions(form: str) -> None:
    """EXECUTE IMMEDIATE 'KILL 42' ends thread 42 as KILL 42 does (the server runs it):
    the gateway let it end any session of the shared backend account."""
    session = Session()
    session.policy.owns_thread = lambda thread: thread == 41
    assert refusal(session.run("KILL 42"))[0] == "kill-other"
    assert refusal(session.run(form.format("KILL 42"))) == refusal(session.run("KILL 42"))
    assert refusal(session.run(form.format("KILL QUERY 42")))[0] == "kill-other"
    assert not session.run(form.format("KILL 41")).refused


@pytest.mark.parametrize("form", RUN_BY_ANOTHER)
def test_a_table_created_under_a_masked_name_by_another_statement_is_refused(form: str) -> None:
    """Chosen values written into a table the masking rule names come back masked, an
    oracle for the real ones: created through EXECUTE IMMEDIATE as well as plainly."""
    policy = MaskingPolicy(
        [
            MaskingRuleConfig(
                "*.customers.card_number",
                "*",
                "customers",
                "card_number",
                MaskStrategy.HASH,
                (),
                on_use="refuse",
            )
        ],
        b"k" * 32,
    )
    session = Session()
    session.policy.masker = policy.for_groups(())
    create = "CREATE TEMPORARY TABLE customers (id INT, card_number VARCHAR(19))"
    plain = refusal(session.run(create))
    assert plain[0] == "masking"
    assert refusal(session.run(form.format(create))) == plain
    assert not session.run(form.format("CREATE TEMPORARY TABLE t (id INT)")).refused


def test_the_schema_of_a_command_pipelined_after_a_use_is_not_known() -> None:
    """A USE, then a statement sent before its answer: the statement's records (and an
    approval request for it) named the old schema, where the server may run it in the
    new one. Its schema is not known until the USE is answered."""
    session = Session()
    use, verdict = session.send("USE shop")
    assert not verdict.refused
    after, _ = session.send("SELECT 1")
    assert session.policy.db_of(use) == "other"  # the USE itself runs in the old one
    assert session.policy.db_of(after) is None
    init_db, _ = session.send("other", Command.INIT_DB)
    session.policy.completed(use, None, 0)
    assert session.policy.db_of(after) is None  # COM_INIT_DB still on its way
    session.policy.completed(init_db, None, 0)
    later, _ = session.send("SELECT 2")
    assert session.policy.db_of(later) == "other"


ALLOW_CALLS = RuleConfig("calls", ("CALL",), RuleAction.ALLOW)


@pytest.mark.parametrize(
    "call",
    [
        "CALL tidy()",
        "EXECUTE IMMEDIATE 'CALL tidy()'",
        "SET STATEMENT max_statement_time = 10 FOR CALL tidy()",
    ],
)
def test_after_a_call_the_schema_is_not_known(call: str) -> None:
    """A procedure of the current schema that runs EXECUTE IMMEDIATE 'USE shop' leaves
    the session in shop (MariaDB restores the schema only for a procedure of another):
    the gateway went on reading names in the old schema, so SELECT * FROM secret read
    shop.secret past a rule on it. After an allowed CALL the schema is not known."""
    session = Session()
    session.policy = SessionPolicy(
        Policy(PolicyConfig(), (NO_SECRET, ALLOW_CALLS)), AGENT, "other", UTF8MB4_GENERAL_CI
    )
    assert not session.run(call).refused
    assert session.policy.schema is None
    refusal = session.run("SELECT * FROM secret").refusal
    assert refusal is not None and refusal.rule == "no-secret"
    # in the same text too
    session.run("USE other")
    _, verdict = session.send(f"{call}; SELECT * FROM secret")
    assert verdict.refused and verdict.refusal is not None
    assert verdict.refusal.rule == "no-secret"


def test_after_executing_a_prepared_call_the_schema_is_not_known() -> None:
    session = Session()
    session.policy = SessionPolicy(
        Policy(PolicyConfig(), (NO_SECRET, ALLOW_CALLS)), AGENT, "other", UTF8MB4_GENERAL_CI
    )
    assert not session.run("PREPARE s FROM 'CALL tidy()'").refused
    assert session.policy.schema == "other"  # prepared, not run
    assert not session.run("EXECUTE s").refused
    assert session.policy.schema is None
    session.run("USE other")
    cmd, verdict = session.send("", Command.STMT_EXECUTE, prepared={1: b"CALL tidy()"})
    session.policy.completed(cmd, None, 0)
    assert session.policy.schema is None
