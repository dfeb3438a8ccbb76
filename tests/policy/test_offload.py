"""A large text classified away from the event loop (``classify_text``, in a worker
process) is decided exactly as it would have been on the loop, and only when the
session still reads it the same way."""

from __future__ import annotations

import pickle

import pytest
from corpus import card_masking

from appliance.config import PolicyConfig
from appliance.mysql.constants import Command, ServerStatus
from appliance.mysql.relay import ClientCommand
from appliance.policy.gate import (
    OFFLOAD_BYTES,
    Classified,
    Policy,
    SessionPolicy,
    Verdict,
    classify_text,
)
from appliance.policy.masking import MaskingPolicy
from appliance.policy.rules import Subject

AUTOCOMMIT = int(ServerStatus.AUTOCOMMIT)
NBE = int(ServerStatus.NO_BACKSLASH_ESCAPES)
LIMIT = 256 * 1024  # [policy] max_statement_bytes of these tests

ORS = " OR ".join(f"id = {i}" for i in range(4_000))
VALUES = ",".join(f"({i}, 'name {i}')" for i in range(30_000))
TEXTS = {
    "a long OR chain": f"SELECT id, name FROM customers WHERE {ORS}",
    "an IN list": "SELECT id FROM orders WHERE id IN ("
    + ",".join(str(i) for i in range(10_000))
    + ")",
    "a DELETE with an always-true WHERE": f"DELETE FROM orders WHERE 1 = 1 OR {ORS}",
    "two statements, one refused": f"SELECT 1 FROM t WHERE {ORS}; DROP TABLE orders",
    "double quotes, read both ways": f'SELECT "x" FROM t WHERE {ORS}',
    "a backslash in a string": f"SELECT 'a\\'b' FROM t WHERE {ORS}",
    "an INSERT over the limit": f"INSERT INTO customers (id, name) VALUES {VALUES}",
    "a SELECT over the limit": f"SELECT 1 FROM t WHERE {ORS} OR {ORS} OR {ORS} OR {ORS} "
    f"OR {ORS} OR {ORS} OR {ORS} OR {ORS} OR {ORS} OR {ORS}",
    "a statement the gateway cannot read": f"SELECT 1 FROM t WHERE {ORS} AND (((",
}


def session(masking: MaskingPolicy | None = None) -> SessionPolicy:
    policy = Policy(PolicyConfig(max_statement_bytes=LIMIT), ())
    sp = SessionPolicy(policy, Subject("agent", frozenset({"agents"}), "orders"), "shop", 45)
    if masking is not None:
        sp.masker = masking.for_groups(["agents"])
    return sp


def query(sql: str, command: int = Command.QUERY) -> ClientCommand:
    payload = bytes([command]) + sql.encode()
    return ClientCommand(1, command, payload, b"")


def shown(verdict: Verdict) -> object:
    """What a verdict says (its decisions, kinds, texts, refusal, rewrite)."""
    return (
        [(p.sql, p.kind, p.decision, p.functions) for p in verdict.parts],
        verdict.refusal,
        verdict.rewritten,
        verdict.shadow,
    )


@pytest.mark.parametrize("name", sorted(TEXTS))
@pytest.mark.parametrize("status", [AUTOCOMMIT, AUTOCOMMIT | NBE])
def test_a_text_classified_in_the_worker_is_decided_as_on_the_loop(name: str, status: int) -> None:
    cmd = query(TEXTS[name])
    assert len(cmd.payload) > OFFLOAD_BYTES
    away = session()
    job = away.text_job(cmd, status)
    assert job is not None
    job = pickle.loads(pickle.dumps(job))  # it goes to another process and back
    classified = pickle.loads(pickle.dumps(classify_text(job)))
    assert shown(away.decide(cmd, status, {}, classified)) == shown(
        session().decide(cmd, status, {})
    )


def test_short_texts_and_texts_decided_before_are_decided_at_once() -> None:
    sp = session()
    assert sp.text_job(query("SELECT 1"), AUTOCOMMIT) is None
    assert sp.text_job(query("x" * OFFLOAD_BYTES, Command.PING), AUTOCOMMIT) is None
    cmd = query(TEXTS["a long OR chain"])
    assert sp.text_job(cmd, AUTOCOMMIT) is not None
    sp.decide(cmd, AUTOCOMMIT, {})
    assert sp.text_job(cmd, AUTOCOMMIT) is None  # cached now
    assert sp.text_job(cmd, AUTOCOMMIT | NBE) is not None  # read another way: not cached
    prepare = query(TEXTS["an IN list"], Command.STMT_PREPARE)
    assert sp.text_job(prepare, AUTOCOMMIT) is not None
    oversized = query(TEXTS["a SELECT over the limit"])
    sp.decide(oversized, AUTOCOMMIT, {})
    assert sp.text_job(oversized, AUTOCOMMIT) is not None  # never cached, always away


def test_a_classification_made_for_another_reading_is_not_used() -> None:
    """Between the job and the decision an answer switched NO_BACKSLASH_ESCAPES on: the
    text reads differently now (here, the quote ends at the backslash and DROP runs)."""
    sql = "SELECT 'a\\' ; DROP TABLE orders; -- ' FROM t WHERE " + ORS
    cmd = query(sql)
    sp = session()
    job = sp.text_job(cmd, AUTOCOMMIT)
    assert job is not None
    stale = classify_text(job)
    assert stale.found is not None and [c.kind for c in stale.found] == ["SELECT"]
    verdict = sp.decide(cmd, AUTOCOMMIT | NBE, {}, stale)
    assert verdict.refusal is not None
    assert [p.kind for p in verdict.parts][:2] == ["SELECT", "DROP TABLE"]


def test_a_masked_column_used_in_a_large_text_is_found_by_the_worker() -> None:
    masking = card_masking()
    ids = ",".join(str(i) for i in range(10_000))
    sql = f"SELECT id FROM customers WHERE card_number LIKE '4111%' AND id IN ({ids})"
    cmd = query(sql)
    sp = session(masking)
    job = sp.text_job(cmd, AUTOCOMMIT)
    assert job is not None and job.references
    classified = classify_text(job)
    assert classified.readings  # the references came from the worker ...
    verdict = sp.decide(cmd, AUTOCOMMIT, {}, classified)
    assert verdict.refusal is not None and verdict.refusal.rule == "masking"
    assert "card_number" in verdict.refusal.reason
    assert shown(verdict) == shown(session(masking).decide(cmd, AUTOCOMMIT, {}))
    # ... and are what decides: without them the use would not be seen
    blind = Classified(classified.reading, classified.found, [()])
    assert session(masking).decide(cmd, AUTOCOMMIT, {}, blind).refusal is None


def test_a_large_text_is_rewritten_for_masking_from_the_worker_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """on_use = "rewrite": the worker's references make the rewrite too; the loop does
    not read the text a second time (a megabyte text would hold every session)."""
    masking = card_masking(on_use="rewrite")
    ids = ",".join(str(i) for i in range(10_000))
    cmd = query(f"SELECT id FROM customers WHERE card_number LIKE '4111%' AND id IN ({ids})")
    expected = session(masking).decide(cmd, AUTOCOMMIT, {})  # reads the text itself
    assert expected.rewritten is not None and "card_number LIKE" not in expected.rewritten
    sp = session(masking)
    job = sp.text_job(cmd, AUTOCOMMIT)
    assert job is not None
    classified = classify_text(job)

    def read_again(*args: object) -> object:
        raise AssertionError("the text was read again on the event loop")

    from appliance.policy import classify

    monkeypatch.setattr(classify, "_text_refs", read_again)
    assert shown(sp.decide(cmd, AUTOCOMMIT, {}, classified)) == shown(expected)


def test_a_text_slow_to_read_and_longer_than_8_kib_goes_to_the_worker() -> None:
    """The loop reads a text only while that is short for everyone: a 32 KB text such as
    ``SELECT ----...1`` took 0.2 s to classify, and 20 of them pipelined (each new) held
    another session's ``SELECT 1`` for 4 s. Above 8 KiB a text goes to the worker."""
    sql = "SELECT " + "-" * 8_200 + "1"
    assert OFFLOAD_BYTES <= 8 * 1024
    assert session().text_job(query(sql), AUTOCOMMIT) is not None
