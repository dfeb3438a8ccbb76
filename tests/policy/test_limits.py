"""Limits on what one text may hold: each statement of a text is decided and recorded
on the event loop, so a text of tens of thousands of them is refused whole."""

from __future__ import annotations

from appliance.config import PolicyConfig
from appliance.mysql.constants import Command, ServerStatus
from appliance.mysql.relay import ClientCommand
from appliance.policy.gate import MAX_STATEMENTS, Policy, SessionPolicy, Verdict
from appliance.policy.rules import Subject

AUTOCOMMIT = int(ServerStatus.AUTOCOMMIT)


def decide(sql: str) -> Verdict:
    sp = SessionPolicy(
        Policy(PolicyConfig(), ()), Subject("agent", frozenset({"agents"}), "orders"), "shop", 45
    )
    payload = bytes([Command.QUERY]) + sql.encode()
    return sp.decide(ClientCommand(1, Command.QUERY, payload, b""), AUTOCOMMIT, {})


def test_a_text_of_more_statements_than_the_limit_is_refused_whole() -> None:
    verdict = decide("SELECT 1;" * (MAX_STATEMENTS + 1))
    (part,) = verdict.parts
    assert part.decision.rule == "too-many-statements" and part.decision.refused
    assert f"holds {MAX_STATEMENTS + 1} statements" in part.decision.reason
    assert "Send them in several texts" in part.decision.reason


def test_a_text_at_the_limit_is_decided_statement_by_statement() -> None:
    verdict = decide("SELECT 1;" * MAX_STATEMENTS)
    assert len(verdict.parts) == MAX_STATEMENTS
    assert verdict.refusal is None
