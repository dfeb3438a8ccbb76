"""Limits on what one text may hold: each statement of a text is decided and recorded
on the event loop, so a text of tens of thousands of them is refused whole."""

from __future__ import annotations

import pytest

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


def test_a_text_of_more_statements_than_the_limit_is_not_read_statement_by_statement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each statement was read before their number was counted: 2,700 statements of
    two bytes (a '1;' each) held the event loop for 43 ms, four times as long read under
    each sql_mode the gateway is unsure of (a '"' and a '\\' in the text). Counted in
    the statements read, none."""
    from appliance.policy import classify as module

    read = 0
    classify_view = module._classify_view

    def counted(view: module._View) -> module.Classification:
        nonlocal read
        read += 1
        return classify_view(view)

    monkeypatch.setattr(module, "_classify_view", counted)
    for text in ("1;" * 2700, "1;" * 2700 + "SELECT '\"\\\\'"):
        verdict = decide(text)
        (part,) = verdict.parts
        assert part.decision.rule == "too-many-statements", text[-20:]
        assert read == 0


def test_a_text_at_the_limit_is_decided_statement_by_statement() -> None:
    verdict = decide("SELECT 1;" * MAX_STATEMENTS)
    assert len(verdict.parts) == MAX_STATEMENTS
    assert verdict.refusal is None


def test_the_classifier_caches_keep_only_short_texts() -> None:
    """An entry of the classifier's own caches holds about twice its text: 20,000
    distinct 8 KB texts held 470 MB. Texts over ``_CACHE_TEXT_LIMIT`` are read, not kept
    (the gate's cache, bounded in bytes, keeps decisions)."""
    from appliance.policy import classify as c
    from appliance.policy.gate import _MODES

    mode = next(iter(_MODES.values()))
    assert c._CACHE_TEXT_LIMIT <= 2 * 1024
    long = b'SELECT "a\\\\" FROM t /* ' + b"y" * 8_000 + b" */"
    before = (
        c._classify_cached.cache_info().currsize,
        c._classify_uncertain_cached.cache_info().currsize,
    )
    assert c.classify(long, mode) == c.classify(long, mode)
    assert c.classify_uncertain(long, mode, True, True) == c.classify_uncertain(
        long, mode, True, True, cached=False
    )
    after = (
        c._classify_cached.cache_info().currsize,
        c._classify_uncertain_cached.cache_info().currsize,
    )
    assert after == before


def test_the_shape_cache_counts_the_texts_its_entries_keep() -> None:
    """Distinct 8 KB texts of one short shape each (a long comment apart) were counted
    by the shape's length, so the cache was emptied by its count (50,000), not by its
    bytes: 424 MB. Each entry counts the text its classifications keep."""
    from appliance.policy.gate import _CACHE_BYTES

    policy = Policy(PolicyConfig(), ())
    sp = SessionPolicy(policy, Subject("agent", frozenset({"agents"}), "orders"), "shop", 45)
    for i in range(100):
        sql = f"SELECT id AS c{i} FROM customers /* ".encode() + b"y" * 8_000 + b" */"
        payload = bytes([Command.QUERY]) + sql
        sp.decide(ClientCommand(i, Command.QUERY, payload, b""), AUTOCOMMIT, {})
    assert 100 * 8_000 <= policy._by_shape.bytes <= _CACHE_BYTES
