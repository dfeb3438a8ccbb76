"""The runaway-agent guard (``Policy.guard``, ``SessionPolicy._guarded``) without a server:
what counts toward ``statements_per_second``, what counts as a write once
``rows_changed_per_minute`` is reached, and when it alerts. Through the real gateway:
tests/test_policy.py."""

from __future__ import annotations

import struct

import pytest

from appliance.config import (
    OversizedAction,
    PolicyConfig,
    PolicyMode,
    RuleAction,
    RuleConfig,
)
from appliance.mysql.constants import Command
from appliance.mysql.relay import ClientCommand
from appliance.policy import gate
from appliance.policy.gate import Policy, SessionPolicy, Verdict
from appliance.policy.rules import Subject

AGENT = Subject("agent", frozenset({"agents"}), "orders")
UTF8MB4_GENERAL_CI = 45
ALLOW_CALL = RuleConfig("calls", ("CALL",), RuleAction.ALLOW)


class Session:
    """One agent session's policy, fed commands the way the gateway feeds them."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.session = SessionPolicy(policy, AGENT, "shop", UTF8MB4_GENERAL_CI)
        self.prepared: dict[int, bytes] = {}
        self._next = 0

    def send(self, command: Command, body: bytes) -> tuple[ClientCommand, Verdict]:
        self._next += 1
        payload = bytes([command]) + body
        cmd = ClientCommand(self._next, command, payload, payload)
        return cmd, self.session.decide(cmd, 0, self.prepared)

    def query(self, sql: str, affected: int = 0, error: int | None = None) -> str | None:
        """The rule that refused the text, or None when it ran (changing ``affected``)."""
        cmd, verdict = self.send(Command.QUERY, sql.encode())
        if verdict.refused:
            assert verdict.refusal is not None
            return verdict.refusal.rule
        self.session.completed(cmd, error, affected)
        return None

    def prepare(self, sql: str, statement_id: int) -> str | None:
        cmd, verdict = self.send(Command.STMT_PREPARE, sql.encode())
        if verdict.refused:
            assert verdict.refusal is not None
            return verdict.refusal.rule
        self.session.completed(cmd, None, 0)  # its answer gave the id
        self.prepared[statement_id] = sql.encode()
        return None

    def execute(self, statement_id: int) -> str | None:
        body = statement_id.to_bytes(4, "little") + b"\x00\x01\x00\x00\x00"
        cmd, verdict = self.send(Command.STMT_EXECUTE, body)
        if verdict.refused:
            assert verdict.refusal is not None
            return verdict.refusal.rule
        self.session.completed(cmd, None, 0)
        return None


def guarded(
    rules: tuple[RuleConfig, ...] = (),
    statements_per_second: int = 0,
    rows_changed_per_minute: int = 0,
) -> Session:
    config = PolicyConfig(
        statements_per_second=statements_per_second,
        rows_changed_per_minute=rows_changed_per_minute,
    )
    return Session(Policy(config, rules))


def tripped_rows(rules: tuple[RuleConfig, ...] = ()) -> Session:
    """A session whose identity has changed more rows than its limit this minute."""
    s = guarded(rules, rows_changed_per_minute=3)
    assert s.query("UPDATE items SET v = 1 WHERE id <= 4", affected=4) is None
    assert s.query("UPDATE items SET v = 2 WHERE id = 5") == "runaway-rows"
    return s


# ------------------------------------------------------------------------ the rows limit

STATEMENTS_THAT_WRITE = [
    "PREPARE s FROM 'UPDATE items SET v = 3 WHERE id > 0'",
    "EXECUTE s",  # SQL-level: the gateway does not follow what s was prepared from
    "EXECUTE s USING @a",
    "EXECUTE IMMEDIATE 'UPDATE items SET v = 3 WHERE id > 0'",
    "EXECUTE IMMEDIATE 'EXECUTE s'",
    "SET STATEMENT max_statement_time = 100 FOR UPDATE items SET v = 3 WHERE id > 0",
    "SET STATEMENT max_statement_time = 100 FOR EXECUTE s",
    "SET STATEMENT max_statement_time = 100 FOR INSERT INTO items VALUES (9, 9)",
    "DELETE FROM items WHERE id = 1",
    "INSERT INTO items VALUES (9, 9)",
    "CREATE TABLE copy AS SELECT * FROM items",
    "SELECT 1; UPDATE items SET v = 3 WHERE id = 1",
    "CALL refill()",
    "PREPARE s FROM 'CALL refill()'",
]


@pytest.mark.parametrize("sql", STATEMENTS_THAT_WRITE)
def test_after_the_rows_limit_a_statement_that_may_write_is_refused(sql: str) -> None:
    """Only the top-level kind was looked at: PREPARE/EXECUTE, EXECUTE IMMEDIATE and SET
    STATEMENT ... FOR ran their UPDATE after the limit."""
    assert tripped_rows((ALLOW_CALL,)).query(sql) == "runaway-rows"


STATEMENTS_THAT_READ = [
    "SELECT v FROM items WHERE id = 1",
    "PREPARE r FROM 'SELECT v FROM items WHERE id = 1'",
    "EXECUTE IMMEDIATE 'SELECT v FROM items WHERE id = 1'",
    "SET STATEMENT max_statement_time = 100 FOR SELECT v FROM items",
    "EXPLAIN UPDATE items SET v = 3 WHERE id > 0",
    "DEALLOCATE PREPARE r",
    "SET @a = 1",
    "SELECT 1; SELECT 2",
]


@pytest.mark.parametrize("sql", STATEMENTS_THAT_READ)
def test_after_the_rows_limit_a_statement_that_changes_no_rows_runs(sql: str) -> None:
    assert tripped_rows().query(sql) is None


def test_a_call_is_held_for_review_not_counted_as_run() -> None:
    """Without a rule that allows CALL, the built-in review decides it, as before."""
    assert tripped_rows().query("CALL refill()") == "call"


def oversized_allowed(statements_per_second: int = 0, rows_changed_per_minute: int = 0) -> Session:
    config = PolicyConfig(
        max_statement_bytes=64,
        oversized=OversizedAction.ALLOW,
        statements_per_second=statements_per_second,
        rows_changed_per_minute=rows_changed_per_minute,
    )
    return Session(Policy(config, ()))


BIG = "SELECT * FROM items WHERE id IN (" + ",".join(["1"] * 40) + ")"


def test_an_oversized_text_forwarded_unread_counts_as_a_write() -> None:
    """``oversized = "allow"`` forwards a text the gateway did not read: it passed the
    guard unseen."""
    s = oversized_allowed(rows_changed_per_minute=3)
    assert s.query("UPDATE items SET v = 1 WHERE id <= 4", affected=4) is None
    assert s.query(BIG) == "runaway-rows"


def test_an_oversized_text_forwarded_unread_counts_toward_the_rate() -> None:
    s = oversized_allowed(statements_per_second=1)
    assert s.query(BIG) is None
    assert s.query("SELECT 1") == "runaway-statements"


# ----------------------------------------------------- texts of several statements


def test_each_statement_of_a_text_counts_toward_the_rate() -> None:
    """A text of many statements counted as one: 50 UPDATEs passed a limit of 5."""
    s = guarded(statements_per_second=5)
    assert s.query("SELECT 1; SELECT 2; SELECT 3") is None
    assert s.query("SELECT 1; SELECT 2; SELECT 3") == "runaway-statements"
    assert s.query("SELECT 1; SELECT 2") is None  # 5 in all: at the limit
    assert s.query("SELECT 1") == "runaway-statements"


def test_a_text_of_more_statements_than_the_rate_is_refused_whole() -> None:
    s = guarded(statements_per_second=5)
    cmd, verdict = s.send(Command.QUERY, b"SELECT 1;" * 6)
    assert verdict.refused and len(verdict.parts) == 6
    assert all(p.decision.rule == "runaway-statements" for p in verdict.parts)
    assert verdict.refusal is not None
    assert "a text of 6 statements counts as 6" in verdict.refusal.reason
    assert "Send them in several texts" in verdict.refusal.reason
    assert s.query("SELECT 1; SELECT 2; SELECT 3; SELECT 4; SELECT 5") is None


def test_rows_changed_by_a_text_that_failed_later_count() -> None:
    """The rows a text changed before its last statement failed were not counted: an
    agent could change any number of rows by ending each text with an error."""
    s = guarded(rows_changed_per_minute=3)
    sql = "UPDATE items SET v = 1 WHERE id <= 4; SELECT no_such_column FROM items"
    assert s.query(sql, affected=4, error=1054) is None
    assert s.query("UPDATE items SET v = 2 WHERE id = 5") == "runaway-rows"


# ------------------------------------------------------------------ writes in flight


def update(s: Session, sql: str = "UPDATE items SET v = 1 WHERE id = 1") -> ClientCommand:
    """A write let through and not completed yet (pipelined, or still running)."""
    cmd, verdict = s.send(Command.QUERY, sql.encode())
    assert not verdict.refused, verdict
    return cmd


def test_writes_count_as_one_row_each_while_they_run() -> None:
    """Each write was checked against the rows of the writes finished so far: 7 pipelined
    one-row UPDATEs under a limit of 3 all ran, none being finished when the next was
    decided. Each counts as one row until its answer says how many it changed."""
    s = guarded(rows_changed_per_minute=3)
    running = [update(s, f"UPDATE items SET v = 1 WHERE id = {i}") for i in (1, 2, 3)]
    cmd, verdict = s.send(Command.QUERY, b"UPDATE items SET v = 1 WHERE id = 4")
    assert verdict.refusal is not None and verdict.refusal.rule == "runaway-rows"
    assert "changed 0 rows in the last minute and has 3 statements" in verdict.refusal.reason
    assert s.query("SELECT v FROM items") is None  # reads go on
    for done in running[:2]:  # they changed no row: the rows they took are given back
        s.session.completed(done, None, 0)
    assert s.policy.rows_counted("agent") == (0, 1)
    assert s.query("UPDATE items SET v = 1 WHERE id = 4", affected=1) is None
    s.session.completed(running[2], None, 1)
    assert s.policy.rows_counted("agent") == (2, 0)


def test_a_prepare_pipelined_with_its_execute_is_not_counted_as_running() -> None:
    """A COM_STMT_PREPARE changes no rows: the execute a client sends before its answer
    (Connector/Node.js does) runs under a limit of 1."""
    s = guarded(rows_changed_per_minute=1)
    sql = b"UPDATE items SET v = ? WHERE id = ?"
    prepare, verdict = s.send(Command.STMT_PREPARE, sql)
    assert not verdict.refused
    s.prepared[1] = sql
    execute, verdict = s.send(Command.STMT_EXECUTE, b"\x01\x00\x00\x00\x00\x01\x00\x00\x00")
    assert not verdict.refused
    s.session.completed(prepare, None, 0)
    assert s.policy.rows_counted("agent") == (0, 1)
    s.session.completed(execute, None, 1)
    assert s.policy.rows_counted("agent") == (1, 0)


def test_writes_in_flight_are_given_back_on_every_way_they_end() -> None:
    """Whatever ends a write (an error, a kill, never sent, the session's end, a text of
    several writes, an execute, a late answer), the identity's figure comes back to the
    rows the server reported: no write left counted as running (which would refuse the
    identity's writes for good), none given back twice."""
    policy = Policy(PolicyConfig(rows_changed_per_minute=100), ())
    s, other = Session(policy), Session(policy)
    assert s.prepare("UPDATE items SET v = ? WHERE id = ?", 1) is None
    failed = update(s)
    killed = update(s)
    unsent = update(s)
    text = update(
        s, "UPDATE items SET v = 1 WHERE id = 1; SELECT 1; DELETE FROM items WHERE id = 2"
    )
    execute, verdict = s.send(Command.STMT_EXECUTE, b"\x01\x00\x00\x00\x00\x01\x00\x00\x00")
    assert not verdict.refused
    returning = update(s, "DELETE FROM items WHERE id > 7 RETURNING id")
    abandoned = [update(s), update(s)]
    elsewhere = update(other)
    assert s.query("DELETE FROM items") == "delete-without-where"  # never counted
    assert policy.rows_counted("agent") == (0, 10)
    s.session.completed(failed, 1062, 0)
    s.session.completed(killed, 1317, 1)  # interrupted after one row
    s.session.completed(unsent, 1105, 0, sent=False)
    s.session.completed(text, None, 2)
    s.session.completed(execute, None, 1)
    s.session.completed(returning, None, 0, rows=3)
    assert policy.rows_counted("agent") == (7, 3)
    s.session.ended()  # with two writes no answer came for
    assert policy.rows_counted("agent") == (7, 1)
    s.session.completed(abandoned[0], None, 1)  # an answer after all: its rows count
    s.session.ended()
    other.session.completed(elsewhere, None, 1)
    assert policy.rows_counted("agent") == (9, 0)


def test_in_shadow_mode_writes_in_flight_are_counted_and_given_back() -> None:
    policy = Policy(PolicyConfig(mode=PolicyMode.SHADOW, rows_changed_per_minute=1), ())
    s = Session(policy)
    first = update(s)
    second, verdict = s.send(Command.QUERY, b"UPDATE items SET v = 1 WHERE id = 2")
    assert verdict.shadow and verdict.refusal is not None
    assert verdict.refusal.rule == "runaway-rows"  # recorded, and it runs
    assert policy.rows_counted("agent") == (0, 1)
    s.session.completed(first, None, 1)
    s.session.completed(second, None, 1)
    assert policy.rows_counted("agent") == (2, 0)


# ---------------------------------------------------------------------------- alerts


def test_each_limit_alerts_once_a_minute() -> None:
    """One alert time served both limits: the rows limit, tripped within a minute of a
    statements alert, wrote no alert."""
    policy = Policy(PolicyConfig(statements_per_second=2, rows_changed_per_minute=3), ())
    assert policy.guard("agent", False, 100.0) is None
    assert policy.guard("agent", False, 100.1) is None
    tripped = policy.guard("agent", False, 100.2)
    assert tripped is not None and tripped.rule == "runaway-statements"
    assert policy.guard("agent", False, 100.3) is not None  # the same limit: no new alert
    policy.rows_changed("agent", 4, 101.5)
    tripped = policy.guard("agent", True, 102.0)
    assert tripped is not None and tripped.rule == "runaway-rows"
    assert policy.guard("agent", True, 103.0) is not None
    assert [m.split(" ")[1] for _, m in policy.alerts] == ["sent", "changed"]
    assert policy.guard("agent", False, 160.3) is None
    assert policy.guard("agent", False, 160.31) is None
    assert policy.guard("agent", False, 160.32) is not None  # a minute on: alerts again
    assert len(policy.alerts) == 3


# ----------------------------------------------------------------- prepared statements


def test_after_the_rows_limit_a_prepared_select_runs_and_a_prepared_update_does_not() -> None:
    """Every COM_STMT_EXECUTE counted as a write: a prepared SELECT was refused where the
    same SELECT as text ran. It is decided by what its statement was prepared from."""
    s = guarded(rows_changed_per_minute=3)
    assert s.prepare("SELECT v FROM items WHERE id = ?", 1) is None
    assert s.prepare("UPDATE items SET v = ? WHERE id = ?", 2) is None
    assert s.query("UPDATE items SET v = 1 WHERE id <= 4", affected=4) is None
    assert s.execute(1) is None
    assert s.execute(2) == "runaway-rows"
    assert s.prepare("SELECT v FROM items WHERE id > ?", 3) is None
    assert s.execute(3) is None
    assert s.prepare("DELETE FROM items WHERE id = ?", 4) == "runaway-rows"


def test_an_execute_of_a_text_the_session_did_not_read_counts_as_a_write() -> None:
    s = guarded(rows_changed_per_minute=3)
    assert s.query("UPDATE items SET v = 1 WHERE id <= 4", affected=4) is None
    s.prepared[7] = b"SELECT v FROM items"  # prepared where this policy did not see it
    assert s.execute(7) == "runaway-rows"


def test_an_execute_the_guard_refused_leaves_the_types_the_server_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refused execute never reached the server, but its VAR_STRING type stayed in
    the session's reader: the next execute, which sent no types, was recorded as binding
    '4000000' where the server read the LONGLONG of the execute before."""
    now = [100.0]
    monkeypatch.setattr(gate.time, "monotonic", lambda: now[0])
    s = guarded(statements_per_second=2)
    assert s.prepare("SELECT v FROM items WHERE id = ?", 1) is None

    def execute(block: bytes) -> Verdict:
        payload = bytes([Command.STMT_EXECUTE]) + struct.pack("<IBI", 1, 0, 1) + block
        s._next += 1
        cmd = ClientCommand(s._next, Command.STMT_EXECUTE, payload, payload)
        verdict = s.session.decide(cmd, 0, s.prepared, None, None, {1: 1})
        if not verdict.refused:
            s.session.completed(cmd, None, 0)
        return verdict

    longlong = b"\x00\x01\x08\x00" + struct.pack("<q", 5)
    first = execute(longlong)
    assert not first.refused and dict(first.parts[0].carried)["params"] == ["5"]
    refused = execute(b"\x00\x01\xfd\x00\x07abcdefg")  # VAR_STRING 'abcdefg'
    assert refused.refused and refused.parts[0].decision.rule == "runaway-statements"
    now[0] = 101.5
    again = execute(b"\x00\x00\x074000000")  # no types: the server reads a LONGLONG
    number = str(int.from_bytes(b"\x074000000", "little", signed=True))
    assert not again.refused and dict(again.parts[0].carried)["params"] == [number]
