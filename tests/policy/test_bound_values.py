"""A prepared write whose WHERE the values bound to it make true for every row: `DELETE
FROM t WHERE name LIKE ?` passes at its prepare (a pattern is a value like any other),
and an execute that binds '%' deleted every row whose name is not NULL. Such a statement
is marked at its prepare and each of its executes is decided with its values; any other
prepared statement's executes read nothing more. The same for SQL-level PREPARE and
EXECUTE ... USING. Through the real gateway: tests/test_policy.py."""

from __future__ import annotations

import pytest

from appliance.config import PolicyConfig, PolicyMode, RuleAction, RuleConfig
from appliance.mysql.constants import Command
from appliance.mysql.relay import ClientCommand
from appliance.policy import gate
from appliance.policy.gate import Policy, SessionPolicy, Verdict
from appliance.policy.rules import Subject

AGENT = Subject("agent", frozenset({"agents"}), "orders")
UTF8MB4_GENERAL_CI = 45
VAR_STRING = 0xFD
LONGLONG = 0x08
LIKE = b"DELETE FROM t WHERE name LIKE ?"


class Session:
    """One agent session in schema ``pub``, fed commands the way the gateway feeds them:
    statement ids are given in the order of the prepares."""

    def __init__(self, *rules: RuleConfig, config: PolicyConfig | None = None) -> None:
        policy = Policy(config or PolicyConfig(), rules)
        self.policy = SessionPolicy(policy, AGENT, "pub", UTF8MB4_GENERAL_CI)
        self.prepared: dict[int, bytes] = {}
        self.counts: dict[int, int] = {}
        self._next = 0

    def send(self, command: Command, body: bytes) -> Verdict:
        self._next += 1
        payload = bytes([command]) + body
        cmd = ClientCommand(self._next, command, payload, payload)
        verdict = self.policy.decide(cmd, 0, self.prepared, param_counts=self.counts)
        refused = verdict.refused
        self.policy.completed(cmd, 1227 if refused else None, 0, sent=not refused)
        return verdict

    def prepare(self, sql: bytes) -> int:
        verdict = self.send(Command.STMT_PREPARE, sql)
        assert not verdict.refused, verdict.refusal
        statement_id = len(self.prepared) + 1
        self.prepared[statement_id] = sql
        self.counts[statement_id] = sql.count(b"?")
        return statement_id

    def execute(self, statement_id: int, *values: bytes | int | None) -> Verdict:
        """COM_STMT_EXECUTE with the values' types; ``...`` for one sent as long data."""
        nulls = bytearray((len(values) + 7) // 8)
        types = b""
        data = b""
        for i, value in enumerate(values):
            if value is None:
                nulls[i // 8] |= 1 << i % 8
                types += bytes([VAR_STRING, 0])
            elif isinstance(value, int):
                types += bytes([LONGLONG, 0])
                data += value.to_bytes(8, "little", signed=True)
            else:
                types += bytes([VAR_STRING, 0])
                if value is not ...:
                    data += _lenenc(len(value)) + value
        head = statement_id.to_bytes(4, "little") + b"\x00\x01\x00\x00\x00"
        return self.send(Command.STMT_EXECUTE, head + bytes(nulls) + b"\x01" + types + data)

    def long_data(self, statement_id: int, param: int, data: bytes) -> None:
        body = statement_id.to_bytes(4, "little") + param.to_bytes(2, "little") + data
        self.send(Command.STMT_SEND_LONG_DATA, body)

    def query(self, sql: str) -> Verdict:
        return self.send(Command.QUERY, sql.encode())


def _lenenc(n: int) -> bytes:
    return bytes([n]) if n < 251 else b"\xfc" + n.to_bytes(2, "little")


def reason(verdict: Verdict) -> str:
    assert verdict.refused and verdict.refusal is not None
    assert verdict.refusal.rule == "delete-without-where", verdict.refusal
    return verdict.refusal.reason


def test_an_execute_binding_a_pattern_of_only_percent_is_refused() -> None:
    session = Session()
    like = session.prepare(LIKE)
    for pattern in (b"%", b"%%%"):
        verdict = session.execute(like, pattern)
        why = reason(verdict)
        assert f"parameter 1 = '{pattern.decode()}' (a pattern of only '%')" in why
        assert "for example 'abc%'" in why
        assert dict(verdict.parts[0].carried)["params"] == [f"'{pattern.decode()}'"]
    for harmless in (b"abc%", b"%abc", b"_", b"\\%", None):
        assert not session.execute(like, harmless).refused, harmless
    # equal patterns match every row together, as the same literals do
    either = session.prepare(b"DELETE FROM t WHERE name LIKE ? OR name NOT LIKE ?")
    why = reason(session.execute(either, b"x", b"x"))
    assert "parameter 1 = 'x'; parameter 2 = 'x'" in why
    assert not session.execute(either, b"x", b"y").refused
    both = session.prepare(b"DELETE FROM t WHERE name LIKE ? AND id = ?")
    assert not session.execute(both, b"%", 7).refused  # id = 7 picks the rows
    either = session.prepare(b"UPDATE t SET v = ? WHERE name LIKE ? OR id = ?")
    refusal = session.execute(either, 1, b"%", 7).refusal
    assert refusal is not None and refusal.rule == "update-without-where"
    assert "parameter 2 = '%'" in refusal.reason


def test_an_execute_binding_a_regexp_that_matches_the_empty_string_is_refused() -> None:
    """A REGEXP pattern that matches the empty string matches every value but NULL (the
    server searches, unanchored): `'.*'`, `'^'`, `''` bound to `name REGEXP ?` are refused
    as `'%'` is to a LIKE; a pattern that needs a character runs."""
    session = Session()
    regexp = session.prepare(b"DELETE FROM t WHERE name REGEXP ?")
    for pattern in (b".*", b"^", b"", b"x?", b"[[:alpha:]]*"):
        why = reason(session.execute(regexp, pattern))
        assert f"parameter 1 = '{pattern.decode()}'" in why, why
    for harmless in (b"^abc", b"[[:digit:]]+", b"x", None):
        assert not session.execute(regexp, harmless).refused, harmless
    rlike = session.prepare(b"UPDATE t SET v = 1 WHERE id = ? OR name RLIKE ?")
    refusal = session.execute(rlike, 7, b"$").refusal
    assert refusal is not None and refusal.rule == "update-without-where"
    assert not session.execute(rlike, 7, b"^a").refused


def test_a_pattern_the_gateway_does_not_read_is_refused() -> None:
    """A value sent as long data, or over the 1024 bytes an execute's record gives of a
    value, is not read: where it is the pattern that may match every row, the execute is
    refused; elsewhere it is not looked at."""
    session = Session()
    like = session.prepare(LIKE)
    session.long_data(like, 0, b"%")
    assert "sent apart with COM_STMT_SEND_LONG_DATA" in reason(session.execute(like, ...))
    # (the refused execute left the long data bound on the server: the next one reads
    # its values shifted, and is refused as not read)
    assert "the values, not read by the gateway" in reason(session.execute(like, b"abc%"))
    like = session.prepare(LIKE)
    assert "2000 bytes, over the 1024 bytes" in reason(session.execute(like, b"%" * 2000))
    assert session.execute(like, b"a" * 2000).refused  # not read either: it may be '%'
    body = session.prepare(b"UPDATE t SET body = ? WHERE name LIKE ?")
    session.long_data(body, 0, b"%")
    assert not session.execute(body, ..., b"abc%").refused


def test_an_execute_of_a_statement_no_value_affects_reads_nothing_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hot path (sysbench's point selects are prepared executes): an execute of a
    statement whose WHERE no value makes true for every row is not read again."""
    session = Session()
    statements = [
        session.prepare(b"SELECT c FROM sbtest1 WHERE id = ?"),
        session.prepare(b"DELETE FROM t WHERE id = ?"),
        session.prepare(b"SELECT * FROM t WHERE name LIKE ?"),
        session.prepare(b"DELETE FROM t WHERE name LIKE ? AND id = ?"),
    ]

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("read again")

    monkeypatch.setattr(gate, "bind", never)
    for statement_id in statements:
        values = (b"%",) * session.counts[statement_id]
        assert not session.execute(statement_id, *values).refused


def test_a_configured_allow_allows_the_execute_as_it_allows_the_literal() -> None:
    allow = RuleConfig("agents-may-delete", ("DELETE",), RuleAction.ALLOW)
    session = Session(allow)
    assert not session.query("DELETE FROM t WHERE name LIKE '%'").refused
    assert not session.execute(session.prepare(LIKE), b"%").refused


def test_shadow_mode_records_the_refusal_and_runs_the_execute() -> None:
    session = Session(config=PolicyConfig(mode=PolicyMode.SHADOW))
    verdict = session.execute(session.prepare(LIKE), b"%")
    assert not verdict.refused
    assert verdict.refusal is not None and verdict.refusal.rule == "delete-without-where"


def test_sql_level_execute_is_decided_with_its_using_values() -> None:
    """User variables' values are not known to the gateway: a variable (or an expression)
    where a pattern of only '%' would match every row is refused, a literal is read."""
    session = Session()
    assert not session.query("PREPARE s FROM 'DELETE FROM t WHERE name LIKE ?'").refused
    assert not session.query("SET @p = '%'").refused
    assert "@p (a value the gateway does not read)" in reason(session.query("EXECUTE s USING @p"))
    assert "'%' (a pattern of only '%')" in reason(session.query("EXECUTE s USING '%'"))
    assert "CONCAT" in reason(session.query("EXECUTE s USING CONCAT('%', '')"))
    assert not session.query("EXECUTE s USING 'abc%'").refused
    assert not session.query("EXECUTE s USING NULL").refused
    session.query("PREPARE e FROM 'DELETE FROM t WHERE name LIKE ? OR name NOT LIKE ?'")
    assert "'x', 'x'" in reason(session.query("EXECUTE e USING 'x', 'x'"))
    assert not session.query("EXECUTE e USING 'x', 'y'").refused
    # prepared again in the same text: its EXECUTE is decided with that text
    verdict = session.query("PREPARE t FROM 'DELETE FROM t WHERE name LIKE ?'; EXECUTE t USING '%'")
    assert "'%' (a pattern of only '%')" in reason(verdict)
    # another text under the name: the mark goes with the old one
    assert not session.query("PREPARE s FROM 'DELETE FROM t WHERE id = ?'").refused
    assert not session.query("EXECUTE s USING @p").refused
    assert not session.query("PREPARE s FROM 'DELETE FROM t WHERE name LIKE ?'").refused
    assert session.query("EXECUTE s USING @p").refused
    assert not session.query("DEALLOCATE PREPARE s").refused
    assert not session.query("EXECUTE s USING @p").refused  # nothing runs: the server says so


def test_sql_level_execute_of_a_text_not_kept_is_refused() -> None:
    """A text over 16 KiB is not kept per name: its EXECUTE cannot be decided with its
    values (fail closed)."""
    session = Session()
    ids = ", ".join(str(i) for i in range(4000))
    long = f"PREPARE s FROM 'DELETE FROM t WHERE name LIKE ? OR id IN ({ids})'"
    assert not session.query(long).refused
    refusal = session.query("EXECUTE s USING 'abc%'").refusal
    assert refusal is not None and refusal.rule == "prepared-unknown"
    assert "PREPARE s again from a text under" in refusal.reason


def test_sql_level_execute_inside_set_statement_is_decided_too() -> None:
    session = Session()
    session.query("PREPARE s FROM 'DELETE FROM t WHERE name LIKE ?'")
    verdict = session.query("SET STATEMENT max_statement_time = 10 FOR EXECUTE s USING '%'")
    assert "'%' (a pattern of only '%')" in reason(verdict)


def test_a_reset_connection_forgets_the_sql_level_names() -> None:
    session = Session()
    session.query("PREPARE s FROM 'DELETE FROM t WHERE name LIKE ?'")
    session.send(Command.RESET_CONNECTION, b"")
    assert not session.query("EXECUTE s USING @p").refused  # the server holds no s now


def test_an_execute_of_a_long_text_is_refused_without_reading_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each execute of such a statement is decided with its values on the event loop,
    where every session waits: a 100 kB text (an IN list of 20,000 ids) held it for
    0.4 s at every execute, and 8 kB of placeholders bound values of 1 kB each would
    make megabytes. A text longer than 8 KiB with its values is refused, saying to
    prepare a shorter one, and not read again: counted in the texts ``bind`` reads."""
    read: list[int] = []
    bind = gate.bind

    def counted(sql: bytes, *args: object, **kwargs: object) -> object:
        read.append(len(sql))
        return bind(sql, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gate, "bind", counted)
    session = Session()
    ids = b",".join(str(i).encode() for i in range(20_000))
    long = session.prepare(b"DELETE FROM t WHERE id IN (" + ids + b") OR name LIKE ?")
    short = session.prepare(b"DELETE FROM t WHERE " + b" OR ".join([b"name LIKE ?"] * 10))
    for verdict in (session.execute(long, b"abc%"), session.execute(short, *[b"x" * 1000] * 10)):
        assert verdict.refusal is not None and verdict.refusal.rule == "prepared-unknown"
        assert "up to 8192 bytes" in verdict.refusal.reason
        assert "Prepare a shorter text" in verdict.refusal.reason
    assert read == []
    assert not session.execute(short, *[b"x" * 500] * 10).refused
    assert read and max(read) <= gate.OFFLOAD_BYTES
    # and SQL-level names, whose texts are kept up to 16 KiB
    read.clear()
    text = "DELETE FROM t WHERE id IN (" + ",".join(map(str, range(2_000))) + ") OR name LIKE ?"
    assert not session.query(f"PREPARE s FROM '{text}'").refused
    verdict = session.query("EXECUTE s USING 'abc%'")
    assert verdict.refusal is not None and verdict.refusal.rule == "prepared-unknown"
    assert "the statement `s` was prepared from" in verdict.refusal.reason
    assert read == []
