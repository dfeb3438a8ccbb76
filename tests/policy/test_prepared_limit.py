"""``[appliance] max_prepared_per_session`` as the session's commands are decided: the
prepares on their way count before their answers, SQL-level names count once, and what
a failed or unsent text changed is followed. Through the real gateway:
tests/test_gateway.py (test_a_session_holds_at_most_max_prepared_per_session_statements)."""

from __future__ import annotations

from appliance.config import PolicyConfig, PolicyMode
from appliance.mysql.constants import Command
from appliance.mysql.relay import ClientCommand
from appliance.policy.gate import Policy, SessionPolicy, Verdict
from appliance.policy.rules import Subject

AGENT = Subject("agent", frozenset({"agents"}), "orders")
RULE = "max-prepared-per-session"


class Session:
    """One session with a limit of ``limit`` prepared statements; ``prepared`` stands for
    the statements the relay knows prepared on the server (id -> parameter count)."""

    def __init__(self, limit: int, mode: PolicyMode = PolicyMode.ENFORCE) -> None:
        policy = Policy(PolicyConfig(mode=mode), (), max_prepared=limit)
        self.policy = SessionPolicy(policy, AGENT, "pub", 45)
        self.prepared: dict[int, int] = {}
        self._next = 0

    def send(self, sql: str, command: Command = Command.QUERY) -> tuple[ClientCommand, Verdict]:
        self._next += 1
        payload = bytes([command]) + sql.encode()
        cmd = ClientCommand(self._next, command, payload, payload)
        sql_of = {i: b"SELECT 1" for i in self.prepared}
        return cmd, self.policy.decide(cmd, 0, sql_of, None, None, self.prepared)

    def refused(self, sql: str, command: Command = Command.QUERY) -> bool:
        """Whether the limit refuses ``sql``; it is answered (OK) when it is not."""
        cmd, verdict = self.send(sql, command)
        self.policy.completed(cmd, 1227 if verdict.refused else None, 0, not verdict.refused)
        return verdict.refusal is not None and verdict.refusal.rule == RULE


def test_prepares_on_their_way_count_before_their_answers() -> None:
    session = Session(2)
    first, v1 = session.send("SELECT 1", Command.STMT_PREPARE)
    second, v2 = session.send("SELECT 2", Command.STMT_PREPARE)
    third, v3 = session.send("SELECT 3", Command.STMT_PREPARE)  # pipelined: not answered
    assert not v1.refused and not v2.refused
    assert v3.refused and v3.refusal is not None and v3.refusal.rule == RULE
    assert "COM_STMT_CLOSE" in v3.refusal.message
    session.prepared[1] = 0  # the first is answered: prepared there
    session.policy.completed(first, None, 0)
    session.policy.completed(second, 1146, 0)  # the second failed there: prepared nothing
    session.policy.completed(third, 1227, 0, False)
    assert not session.refused("SELECT 4", Command.STMT_PREPARE)


def test_a_close_on_its_way_makes_room() -> None:
    session = Session(1)
    session.prepared[7] = 0
    close, verdict = session.send("\x07\0\0\0", Command.STMT_CLOSE)
    assert not verdict.refused
    assert not session.refused("SELECT 2", Command.STMT_PREPARE)  # decided before it goes


def test_the_limit_holds_in_shadow_mode() -> None:
    """Shadow mode lets what the rules refuse run; the server's resources are not rules."""
    session = Session(1, PolicyMode.SHADOW)
    assert not session.refused("PREPARE a FROM 'SELECT 1'")
    cmd, verdict = session.send("PREPARE b FROM 'SELECT 1'")
    assert verdict.refused and not verdict.shadow


def test_names_count_once_and_in_the_order_of_the_text() -> None:
    session = Session(2)
    assert not session.refused("PREPARE a FROM 'SELECT 1'; PREPARE A FROM 'SELECT 2'")
    assert not session.refused("PREPARE b FROM 'SELECT 3'")
    assert session.refused("PREPARE c FROM 'SELECT 4'")
    assert not session.refused("DEALLOCATE PREPARE a; PREPARE c FROM 'SELECT 4'")
    assert session.refused("PREPARE d FROM 'SELECT 5'; DEALLOCATE PREPARE b")


def test_what_a_failed_or_unsent_text_changed_is_followed() -> None:
    session = Session(2)
    cmd, _ = session.send("PREPARE a FROM 'SELECT 1'")
    session.policy.completed(cmd, 1105, 0, False)  # never sent (the ledger): holds nothing
    assert not session.refused("PREPARE b FROM 'SELECT 1'")
    cmd, _ = session.send("DEALLOCATE PREPARE b")
    session.policy.completed(cmd, 1105, 0, False)  # never sent: b still holds one
    assert not session.refused("PREPARE c FROM 'SELECT 1'")
    assert session.refused("PREPARE d FROM 'SELECT 1'")
    # a text of several that failed: its DEALLOCATE may not have run, so b still counts
    cmd, _ = session.send("SELECT 1 FROM nowhere; DEALLOCATE PREPARE b")
    session.policy.completed(cmd, 1146, 0)
    assert session.refused("PREPARE d FROM 'SELECT 1'")
    # one PREPARE that failed there drops what its name held
    cmd, _ = session.send("PREPARE b FROM 'SELECT 1 FROM nowhere'")
    session.policy.completed(cmd, 1146, 0)
    assert not session.refused("PREPARE d FROM 'SELECT 1'")
    reset, _ = session.send("", Command.RESET_CONNECTION)
    session.policy.completed(reset, None, 0)
    assert not session.refused("PREPARE e FROM 'SELECT 1'; PREPARE f FROM 'SELECT 1'")


def test_names_prepared_behind_a_reset_on_its_way_count() -> None:
    """A reset drops what was prepared before it, not what is prepared behind it: names
    pipelined after one stayed uncounted once it was answered, and the session could
    hold more than the limit."""
    session = Session(2)
    assert not session.refused("PREPARE a FROM 'SELECT 1'; PREPARE b FROM 'SELECT 1'")
    reset, _ = session.send("", Command.RESET_CONNECTION)
    behind, verdict = session.send("PREPARE c FROM 'SELECT 1'; PREPARE d FROM 'SELECT 1'")
    assert not verdict.refused  # the reset goes first
    session.policy.completed(reset, None, 0)
    session.policy.completed(behind, None, 0)
    assert session.refused("PREPARE e FROM 'SELECT 1'")
    failed, _ = session.send("", Command.RESET_CONNECTION)
    session.policy.completed(failed, 1105, 0, False)  # never sent: c and d still hold
    assert session.refused("PREPARE e FROM 'SELECT 1'")
