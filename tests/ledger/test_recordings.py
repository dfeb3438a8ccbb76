"""Session recordings stored beside the ledger: committed with their result record,
bound to it by SHA-256, so ``verify`` proves them untouched; retention deletes old ones
only after a ``recordings_purged`` alert says so."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.ledger import LedgerUnavailable, LedgerWriter
from appliance.ledger.chain import generate_key, private_key_pem, seal_with_body, utc_now
from appliance.ledger.store import RecordingReader, export, verify_file

KEY = generate_key()
PUBLIC = KEY.public_key()


def result(i: int, blob: bytes) -> dict[str, Any]:
    return {
        "kind": "result",
        "session": "s1",
        "statement_seq": i,
        "rows": 1,
        "recording": hashlib.sha256(blob).hexdigest(),
    }


def ledger(db: Path, blobs: list[bytes], purge_before: str | None = None) -> list[str]:
    """A ledger with one result per blob; the ``ts`` of each result."""

    async def main() -> list[str]:
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            futures = [w.append_nowait(result(i, b), b) for i, b in enumerate(blobs, 1)]
            sealed = [await f for f in futures]
            if purge_before is not None:
                await w.purge_recordings(purge_before)
            return [str(r["ts"]) for r in sealed if r is not None]

    return asyncio.run(main())


def stored(db: Path) -> dict[str, bytes]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT hash, body FROM recordings"))


def test_recordings_are_stored_with_their_results_and_verify(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    blobs = [b"\x01\x00\x00\x01\x05", b"rows as the agent saw them", b"\x01\x00\x00\x01\x05"]
    ledger(db, blobs)
    assert stored(db) == {hashlib.sha256(b).hexdigest(): b for b in blobs}
    result = verify_file(db, PUBLIC)
    assert result.ok, result.reason


def test_an_edited_recording_fails_verification_naming_its_result(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger(db, [b"first", b"second answer"])
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE recordings SET body = ? WHERE body = ?", (b"second ANSWER", b"second answer")
        )
    result = verify_file(db, PUBLIC)
    assert not result.ok and result.first_bad_seq == 2
    assert "recording of this result was changed" in str(result.reason)


def test_a_recording_stored_as_text_fails_verification_and_replay_says_so(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.db"
    ledger(db, [b"first", b"second answer"])
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE recordings SET body = CAST(body AS TEXT)")
    result = verify_file(db, PUBLIC)  # was a TypeError (a traceback from the CLI)
    assert not result.ok and result.first_bad_seq == 1
    assert "recording of this result was changed" in str(result.reason)
    reader = RecordingReader(db)
    digest = hashlib.sha256(b"first").hexdigest()
    blob = reader.get(digest)
    assert blob is not None and hashlib.sha256(blob).hexdigest() != digest  # "altered"


def test_a_deleted_recording_fails_verification(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger(db, [b"first", b"second"])
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM recordings WHERE body = ?", (b"first",))
    result = verify_file(db, PUBLIC)
    assert not result.ok and result.first_bad_seq == 1
    assert "missing (and was not purged)" in str(result.reason)


def test_a_recorded_purge_removes_old_recordings_and_still_verifies(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    times = ledger(db, [b"old one", b"old two"], purge_before="9999-01-01T00:00:00.000000Z")
    assert stored(db) == {}
    result = verify_file(db, PUBLIC)
    assert result.ok, result.reason
    assert times[0] < "9999"


def test_a_purge_does_not_excuse_what_came_after_it(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger(db, [b"old"], purge_before="2000-01-01T00:00:00.000000Z")
    assert not any('"recordings_purged"' in body for body in export(db))  # nothing to purge
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM recordings")
    result = verify_file(db, PUBLIC)
    assert not result.ok and "missing" in str(result.reason)


def test_verify_names_the_first_bad_record_whichever_check_finds_it(tmp_path: Path) -> None:
    """A changed recording was reported before an earlier missing one, and the recordings
    were not checked at all when the chain broke later: verify named a later record than
    the first bad one."""
    blobs = [b"one", b"two", b"three", b"four"]
    changed = tmp_path / "changed.db"
    ledger(changed, blobs)
    with sqlite3.connect(changed) as conn:
        conn.execute("DELETE FROM recordings WHERE body = ?", (b"one",))
        conn.execute("UPDATE recordings SET body = ? WHERE body = ?", (b"THREE", b"three"))
    conn.close()
    result_ = verify_file(changed, PUBLIC)
    assert (result_.first_bad_seq, result_.reason) == (
        1,
        "the recording of this result is missing (and was not purged)",
    )
    broken = tmp_path / "broken.db"
    ledger(broken, blobs)
    with sqlite3.connect(broken) as conn:
        conn.execute("UPDATE recordings SET body = ? WHERE body = ?", (b"ONE", b"one"))
        conn.execute("DROP TRIGGER records_no_update")
        conn.execute(
            "UPDATE records SET body = replace(body, '\"rows\":1', '\"rows\":2') WHERE seq = 4"
        )
    conn.close()
    result_ = verify_file(broken, PUBLIC)
    assert result_.first_bad_seq == 1
    assert "recording of this result was changed" in str(result_.reason)
    with sqlite3.connect(broken) as conn:  # the recording as it was: the record is first
        conn.execute("UPDATE recordings SET body = ? WHERE body = ?", (b"one", b"ONE"))
    conn.close()
    result_ = verify_file(broken, PUBLIC)
    assert result_.first_bad_seq == 4
    assert "hash does not match" in str(result_.reason)


def test_a_purge_keeps_an_answer_a_later_result_repeated(tmp_path: Path) -> None:
    """The same answer is stored once, under its first result's time; when a result after
    the purge's bound repeated it, it stays, and the ledger still verifies."""
    db = tmp_path / "ledger.db"

    told: list[dict[str, Any]] = []

    async def main() -> tuple[str, str]:
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            w.on_alert = told.append  # the gateway publishes the purge's alerts
            first = await w.append_nowait(result(1, b"SELECT 1 answer"), b"SELECT 1 answer")
            await asyncio.sleep(0.01)
            await w.append_nowait(result(2, b"gone"), b"gone")
            await asyncio.sleep(0.01)
            late = await w.append_nowait(result(3, b"SELECT 1 answer"), b"SELECT 1 answer")
            assert first is not None and late is not None
            assert await w.purge_recordings(str(late["ts"])) == 1  # "gone" only
            return str(first["ts"]), str(late["ts"])

    first, late = asyncio.run(main())
    assert first < late
    assert [a["alert"] for a in told] == ["recordings_purged", "recordings_deleted"]
    assert told == [r for r in map(json.loads, export(db)) if r["kind"] == "alert"]
    assert stored(db) == {hashlib.sha256(b"SELECT 1 answer").hexdigest(): b"SELECT 1 answer"}
    result_ = verify_file(db, PUBLIC)
    assert result_.ok, result_.reason


def _append_chained(db: Path, fields: dict[str, Any]) -> None:
    """Append a correctly chained record, as anyone with write access to the file could
    (without the signing key)."""
    with sqlite3.connect(db) as conn:
        seq, body = conn.execute("SELECT seq, body FROM records ORDER BY seq DESC").fetchone()
        prev = json.loads(body)["hash"]
        record = {"seq": seq + 1, "ts": "2099-01-01T00:00:00.000000Z", **fields}
        sealed, text = seal_with_body(record, prev)
        conn.execute(
            "INSERT INTO records (seq, ts, kind, session, body) VALUES (?, ?, ?, ?, ?)",
            (sealed["seq"], sealed["ts"], sealed["kind"], None, text),
        )


def test_an_appended_unsigned_purge_excuses_no_deleted_recording(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger(db, [b"first", b"second"])  # closed: a checkpoint signs both results
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM recordings")
    _append_chained(
        db,
        {
            "kind": "alert",
            "alert": "recordings_purged",
            "reason": "retention",
            "before": "2099-01-01T00:00:00.000000Z",
        },
    )
    result = verify_file(db, PUBLIC)
    assert not result.ok and result.first_bad_seq == 1
    assert result.reason == (
        "the recording of this result is missing (and was not purged by a signed purge record)"
    )


FORGED_PURGE = {
    "kind": "alert",
    "alert": "recordings_purged",
    "reason": "retention",
    "before": "2099-01-01T00:00:00.000000Z",
}
AFTER_THE_FACT = (
    "the recording of this result is missing (and was not purged: the purge record before "
    "its time was signed after the fact, after an unsigned_tail_signed alert, so anyone "
    "could have written it)"
)


def _tail_alerts(db: Path) -> list[tuple[int, int]]:
    return [
        (r["from_seq"], r["to_seq"])
        for r in map(json.loads, export(db))
        if r.get("alert") == "unsigned_tail_signed"
    ]


def test_a_purge_appended_while_the_gateway_runs_excuses_nothing(tmp_path: Path) -> None:
    """Someone who can write the file (no signing key) appended a chained purge alert and
    deleted the recordings while the gateway ran: its next commit collided, it reopened
    the file and signed the alert with its next checkpoint, saying nothing, and verify
    honoured the forged purge. Now an unsigned_tail_signed alert names it before it is
    signed, and a purge it names excuses nothing (verify, replay)."""
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            for i, blob in enumerate([b"first", b"second"], 1):
                await w.append_nowait(result(i, blob), blob)
            await w.checkpoint()
            with sqlite3.connect(db) as conn:
                conn.execute("DELETE FROM recordings")
            conn.close()
            _append_chained(db, FORGED_PURGE)
            for _ in range(2):  # the gateway goes on; its first statement collides
                with contextlib.suppress(LedgerUnavailable):
                    await w.append({"kind": "session_end", "session": "s2", "reason": "quit"})
            assert w.stats.failures == 1

    asyncio.run(main())
    assert _tail_alerts(db) == [(4, 4)]  # the forged purge, signed after this alert
    result_ = verify_file(db, PUBLIC)
    assert not result_.ok and result_.first_bad_seq == 1
    assert result_.reason == AFTER_THE_FACT
    assert all(str(p).startswith("its recording is MISSING") for p in _replayed_problems(db))


def test_a_purge_appended_to_a_stopped_ledger_excuses_nothing_once_signed(
    tmp_path: Path,
) -> None:
    """The same with the gateway stopped: the next start signed the forged purge after an
    unsigned_tail_signed alert, and verify honoured it all the same."""
    db = tmp_path / "ledger.db"
    ledger(db, [b"first", b"second"])  # closed: a checkpoint signs both results
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM recordings")
    conn.close()
    _append_chained(db, FORGED_PURGE)
    ledger(db, [])  # the next start signs it
    assert _tail_alerts(db) == [(4, 4)]
    result_ = verify_file(db, PUBLIC)
    assert not result_.ok and result_.first_bad_seq == 1
    assert result_.reason == AFTER_THE_FACT
    assert all(str(p).startswith("its recording is MISSING") for p in _replayed_problems(db))


def test_a_purge_forged_past_the_last_signature_excuses_nothing_past_a_break(
    tmp_path: Path,
) -> None:
    """A recording deleted, then a purge alert chained after the last checkpoint and a row
    past it that only says it is a checkpoint (its kind column; a body that is none, or
    one whose signature does not verify): the break past the purge made verify honour
    the purge, and it named the row, not the result whose recording was deleted."""
    for body in ("garbage", None):
        db = tmp_path / f"ledger-{body}.db"
        ledger(db, [b"first", b"second"])  # 1, 2 results, 3 checkpoint
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM recordings WHERE body = ?", (b"first",))
        conn.close()
        _append_chained(db, FORGED_PURGE)  # 4
        with sqlite3.connect(db) as conn:
            signed = json.loads(
                conn.execute("SELECT body FROM records WHERE seq = 3").fetchone()[0]
            )
            fake = {**signed, "seq": 5, "checkpoint_seq": 4, "prev_hash": "0" * 64}
            text = json.dumps(fake) if body is None else body
            conn.execute(
                "INSERT INTO records VALUES (5, ?, 'checkpoint', NULL, ?)", (signed["ts"], text)
            )
        conn.close()
        result_ = verify_file(db, PUBLIC)
        assert (result_.first_bad_seq, result_.reason) == (
            1,
            "the recording of this result is missing (and was not purged by a signed purge record)",
        ), body


def _purged_ledger(db: Path) -> dict[str, int]:
    """Results 1-3 whose recordings a signed purge deletes, a statement after them, then
    a fourth result: the seq of the statement, the purge, its checkpoint, the fourth."""

    async def main() -> None:
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            for i, blob in enumerate([b"one", b"two", b"three"], 1):
                await w.append_nowait(result(i, blob), blob)
            await w.append(
                {"kind": "statement", "session": "s2", "statement_seq": 1, "sql": "SELECT 1"}
            )
            await w.checkpoint()
            assert await w.purge_recordings(utc_now()) == 3
            await w.append_nowait(result(4, b"four"), b"four")

    asyncio.run(main())
    records = [json.loads(b) for b in export(db)]
    purge = next(r["seq"] for r in records if r.get("alert") == "recordings_purged")
    assert records[purge]["kind"] == "checkpoint"  # the checkpoint right after it
    return {
        "statement": next(r["seq"] for r in records if r["kind"] == "statement"),
        "purge": purge,
        "signed by": purge + 1,
        "fourth": next(r["seq"] for r in records if r.get("statement_seq") == 4),
        "last": records[-1]["seq"],
    }


def _break_at(db: Path, seq: int) -> None:
    """Rewrite record ``seq`` in other bytes (the chain breaks there; it still reads)."""
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER IF EXISTS records_no_update")
        conn.execute(
            "UPDATE records SET body = replace(body, '\"kind\":', '\"kind\": ') WHERE seq = ?",
            (seq,),
        )
    conn.close()


def test_a_break_in_the_chain_is_named_not_a_recording_a_purge_deleted(
    tmp_path: Path,
) -> None:
    """A record damaged between the results and their signed purge, or the checkpoint
    that signs the purge: verify named the first result "missing, not purged" (the purge
    past the break, or signed past it, was not honoured), not the damaged record. A purge
    read past the break counts now when a record past it says it is a checkpoint; a
    recording missing or changed before the break that no purge explains still comes
    first."""
    canonical = "the stored text is not the record's canonical JSON"
    for damaged in ("statement", "signed by"):
        db = tmp_path / f"{damaged.replace(' ', '_')}.db"
        seqs = _purged_ledger(db)
        _break_at(db, seqs[damaged])
        result_ = verify_file(db, PUBLIC)
        assert result_.first_bad_seq == seqs[damaged], (damaged, result_.reason)
        assert str(result_.reason).startswith(canonical), result_.reason
    for changed in (False, True):  # the fourth result's recording, before the break
        db = tmp_path / f"changed_{changed}.db"
        seqs = _purged_ledger(db)
        _break_at(db, seqs["last"])
        with sqlite3.connect(db) as conn:
            if changed:
                conn.execute("UPDATE recordings SET body = ? WHERE body = ?", (b"FOUR", b"four"))
            else:
                conn.execute("DELETE FROM recordings WHERE body = ?", (b"four",))
        conn.close()
        result_ = verify_file(db, PUBLIC)
        assert result_.first_bad_seq == seqs["fourth"], (changed, result_.reason)
        why = "was changed" if changed else "is missing (and was not purged)"
        assert why in str(result_.reason), result_.reason
        if not changed:  # a purge past the break that nothing past it signs: unsigned
            _append_chained(db, FORGED_PURGE)
            result_ = verify_file(db, PUBLIC)
            assert result_.first_bad_seq == seqs["fourth"], result_.reason
            assert "not purged by a signed purge record" in str(result_.reason)


CRASH_IN_PURGE = """
import asyncio, hashlib, os, sys
from appliance.ledger import LedgerWriter, load_private_key
from appliance.ledger.chain import utc_now

async def main():
    w = LedgerWriter(sys.argv[1], load_private_key(sys.argv[2]), checkpoint_interval=3600)
    await w.open()
    for i, blob in enumerate([b"old one", b"old two"]):
        digest = hashlib.sha256(blob).hexdigest()
        fields = {"kind": "result", "session": "s1", "statement_seq": i, "recording": digest}
        await w.append_nowait(fields, blob)
    await w.checkpoint()

    async def crash():  # like kill -9 once the purge's alert is committed, unsigned
        os._exit(0)

    w.checkpoint = crash
    await w.purge_recordings(utc_now())

asyncio.run(main())
"""


def test_a_purge_cut_by_a_crash_before_its_checkpoint_is_done_again(tmp_path: Path) -> None:
    """A purge alert left unsigned by a crash is signed at the next start after an
    unsigned_tail_signed alert, so it excuses nothing; but nothing went (the recordings go
    only once it is signed), and the next purge deletes them under its own signed alert."""
    key_file = tmp_path / "ledger.key"
    key_file.write_bytes(private_key_pem(KEY))
    db = tmp_path / "ledger.db"
    args = [sys.executable, "-c", CRASH_IN_PURGE, str(db), str(key_file)]
    subprocess.run(args, check=True, timeout=60)
    assert len(stored(db)) == 2
    assert verify_file(db, PUBLIC).ok

    async def main() -> int:
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            return await w.purge_recordings(utc_now())

    assert asyncio.run(main()) == 2
    assert _tail_alerts(db) == [(4, 4)]  # the first purge's alert
    assert stored(db) == {}
    result_ = verify_file(db, PUBLIC)
    assert result_.ok, result_.reason
    problems = _replayed_problems(db)
    assert len(problems) == 2
    assert all(str(p).startswith("its recording was purged") for p in problems)


def test_a_purge_is_signed_before_the_recordings_go(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> list[str]:
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            await w.append_nowait(result(1, b"old"), b"old")
            assert await w.purge_recordings("9999-01-01T00:00:00.000000Z") == 1
            return [json.loads(body)["kind"] for body in export(db)]

    kinds = asyncio.run(main())
    # signed before the deletion; what went is said after it
    assert kinds == ["result", "alert", "checkpoint", "alert"]
    purge = [json.loads(b) for b in export(db) if '"recordings_purged"' in b][0]
    assert purge["before"] <= purge["ts"]  # a time to come counts as now
    assert purge["recordings"] == 1
    done = json.loads(list(export(db))[-2])
    assert (done["alert"], done["deleted"], done["complete"]) == ("recordings_deleted", 1, True)


def test_a_purge_deletes_in_short_transactions_while_statements_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch by batch, each its own transaction: statements commit between them, and a
    result that repeats an old answer meanwhile keeps it."""
    from appliance.ledger import store

    monkeypatch.setattr(store, "PURGE_BATCH", 2)
    db = tmp_path / "ledger.db"
    blobs = [f"answer {i}".encode() for i in range(9)]

    async def main() -> int:
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            for i, blob in enumerate(blobs):
                await w.append_nowait(result(i, blob), blob)
            await asyncio.sleep(0.01)
            purge = asyncio.ensure_future(w.purge_recordings(utc_now()))
            seq = 100
            while not purge.done():  # a session going on with its statements
                seq += 1
                blob = blobs[0] if seq == 103 else b"-"
                await w.append_nowait(result(seq, blob), blob)
                await asyncio.sleep(0)
            assert w.stats.failures == 0 and w.stats.reopens == 1
            return await purge

    gone = asyncio.run(main())
    assert verify_file(db, PUBLIC).ok
    left = stored(db)
    deletions = [json.loads(b) for b in export(db) if '"recordings_deleted"' in b]
    assert len(deletions) == 1 and deletions[0]["deleted"] == gone and deletions[0]["complete"]
    # the repeated answer stays (kept, or stored again by its result), and the later one
    assert set(left) == {hashlib.sha256(b).hexdigest() for b in (blobs[0], b"-")}
    assert gone in (len(blobs) - 1, len(blobs))


def test_a_purge_that_stops_says_what_went_and_leaves_the_writer_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.ledger import LedgerUnavailable, store

    monkeypatch.setattr(store, "PURGE_BATCH", 1)
    db = tmp_path / "ledger.db"
    blobs = [b"one", b"two", b"three"]
    last = max(hashlib.sha256(b).hexdigest() for b in blobs)  # the last the purge reaches

    async def main() -> None:
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            for i, blob in enumerate(blobs):
                await w.append_nowait(result(i, blob), blob)
            with sqlite3.connect(db) as conn:  # a deletion the database refuses
                conn.execute(
                    "CREATE TRIGGER keep BEFORE DELETE ON recordings WHEN old.hash = "
                    f"'{last}' BEGIN SELECT RAISE(ABORT, 'kept for the test'); END"
                )
            with pytest.raises(LedgerUnavailable, match="stopped after 2 of 3"):
                await w.purge_recordings(utc_now())
            assert (await w.append_nowait(result(9, b"-"), b"-"))["kind"] == "result"
            assert w.stats.failures == 0 and w.stats.reopens == 1

    asyncio.run(main())
    assert set(stored(db)) == {last, hashlib.sha256(b"-").hexdigest()}
    done = [json.loads(b) for b in export(db) if '"recordings_deleted"' in b]
    assert len(done) == 1
    assert (done[0]["deleted"], done[0]["complete"]) == (2, False)
    assert "stopped after 2 of 3: kept for the test" in done[0]["reason"]


def test_a_recording_swapped_under_a_respaced_result_fails(tmp_path: Path) -> None:
    """Rewriting the result's text (a space after a colon) must not hide its recording
    from the check: the text itself no longer verifies."""
    db = tmp_path / "ledger.db"
    ledger(db, [b"first", b"second answer"])
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE recordings SET body = ? WHERE body = ?", (b"forged", b"second answer"))
        body = conn.execute("SELECT body FROM records WHERE seq = 2").fetchone()[0]
        conn.execute("DROP TRIGGER IF EXISTS records_no_update")  # as the file's holder could
        conn.execute(
            "UPDATE records SET body = ? WHERE seq = 2",
            (body.replace('"recording":"', '"recording": "'),),
        )
    result = verify_file(db, PUBLIC)
    assert not result.ok and result.first_bad_seq == 2


def _replayed_problems(db: Path) -> list[str | None]:
    from appliance.replay import load

    return [step.problem for step in load(db, "s1") if step.record.get("kind") == "result"]


PURGED = "its recording was purged by the ledger's purge record (retention"


def test_replay_says_purged_only_for_a_signed_purge(tmp_path: Path) -> None:
    """Any missing recording replayed as "purged", so a deleted one read as retention
    while `ledger verify` reported the ledger edited."""
    purged = tmp_path / "purged.db"
    ledger(purged, [b"old one"], purge_before="9999-01-01T00:00:00.000000Z")
    (problem,) = _replayed_problems(purged)
    assert problem is not None and problem.startswith(PURGED)
    deleted = tmp_path / "deleted.db"
    ledger(deleted, [b"first", b"second"])
    with sqlite3.connect(deleted) as conn:
        conn.execute("DELETE FROM recordings WHERE body = ?", (b"second",))
    problems = _replayed_problems(deleted)
    assert problems[0] is None
    assert problems[1] is not None and problems[1].startswith("its recording is MISSING")
    assert "purged" not in problems[1]


def test_replay_and_export_say_purged_on_the_ledgers_word(tmp_path: Path) -> None:
    """Replay and export take no public key: after a forged purge record and a
    checkpoint whose signature does not verify, they said "purged (retention ...)" while
    verify failed, as if a signature had been checked. They say whose word it is now:
    the ledger's purge record's (verify is the proof)."""
    from appliance.replay import with_answers

    db = tmp_path / "ledger.db"
    ledger(db, [b"first", b"second"])
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM recordings")
    conn.close()
    _append_chained(db, FORGED_PURGE)
    purge = json.loads(list(export(db))[-1])
    forged = {"signature": "AAAA", "key_id": "0123456789abcdef"}
    _append_chained(
        db,
        {"kind": "checkpoint", "checkpoint_seq": purge["seq"], "checkpoint_hash": purge["hash"]}
        | forged,
    )
    # verify names the first result: no signature vouches for the purge (the checkpoint's
    # does not verify), so its deleted recording comes before that checkpoint
    result_ = verify_file(db, PUBLIC)
    assert (result_.first_bad_seq, result_.reason) == (
        1,
        "the recording of this result is missing (and was not purged by a signed purge record)",
    )
    said = f"{PURGED}: recordings before {FORGED_PURGE['before']})"
    assert _replayed_problems(db) == [said, said]
    exported = [json.loads(line) for line in with_answers(db, export(db))]
    answers = [r["answer"]["problem"] for r in exported if r["kind"] == "result"]
    assert answers == [said, said]


def test_export_with_results_says_purged_for_a_purge_that_ran_while_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader kept the signed purge bound it read first: recordings that a retention
    purge deleted while a chunked `ledger export --with-results` was paused were called
    MISSING (edited or damaged), though a signed purge removed them and verify passes.
    The bound is read again when a recording is not found, and only then."""
    from appliance.ledger import store
    from appliance.replay import with_answers

    micros = iter(range(100_000, 999_999))  # every stamp later than the one before
    monkeypatch.setattr(store, "utc_now", lambda: f"2030-01-01T00:00:00.{next(micros)}Z")
    reads = 0
    retention = RecordingReader._retention

    def counted(self: RecordingReader) -> Any:
        nonlocal reads
        reads += 1
        return retention(self)

    monkeypatch.setattr(RecordingReader, "_retention", counted)
    db = tmp_path / "ledger.db"
    now = "9999-01-01T00:00:00.000000Z"  # a time to come counts as now

    async def main() -> list[dict[str, Any]]:
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            await w.append_nowait(result(1, b"old"), b"old")
            assert await w.purge_recordings(now) == 1
            for i in (2, 3, 4):
                await w.append_nowait(result(i, f"answer {i}".encode()), f"answer {i}".encode())
            await w.checkpoint()
            lines = with_answers(db, export(db))
            read = [json.loads(next(lines))]  # result 1, purged: the bound is read
            assert await w.purge_recordings(now) == 3  # the hourly purge, meanwhile
            return read + [json.loads(line) for line in lines]

    records = asyncio.run(main())
    answers = [r["answer"]["problem"] for r in records if r["kind"] == "result"]
    assert len(answers) == 4
    assert all(a.startswith(PURGED) for a in answers), answers
    assert reads == 2  # once at the first, once after the purge: not for each recording
    assert verify_file(db, PUBLIC).ok


def test_a_damaged_recording_page_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    from lab.clients import run_sqlgate

    db = tmp_path / "ledger.db"
    big = bytes(range(256)) * 8192  # 2 MiB: its own overflow pages
    ledger(db, [b"small", big])
    data = bytearray(db.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 65536] = b"\xff" * 65536
    db.write_bytes(bytes(data))
    for args in (("replay", "s1"), ("ledger", "export", "--with-results")):
        done = run_sqlgate(*args, "--ledger", str(db))
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith(f"sqlgate: {db}"), done.stderr


def test_a_purge_keeps_an_answer_repeated_while_it_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With fsync the writer commits on the connection the purge holds its lock on: a
    result repeating an old answer, committed between the purge's last look and its
    delete, joined the purge's transaction and lost its recording (verify failed)."""
    from appliance.ledger import store

    db = tmp_path / "ledger.db"
    real = store._recorded_since

    async def main() -> None:
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0, fsync=True) as w:
            await w.append_nowait(result(1, b"an answer"), b"an answer")
            await asyncio.sleep(0.01)
            repeated: list[asyncio.Future[Any]] = []
            calls = 0

            async def racing(conn: Any, where: str, params: tuple[object, ...]) -> set[str]:
                nonlocal calls
                calls += 1
                found = await real(conn, where, params)
                if calls == 2:  # the purge's last look, under its lock: a session repeats it
                    repeated.append(w.append_nowait(result(2, b"an answer"), b"an answer"))
                    await asyncio.sleep(0.2)  # the writer's turn comes meanwhile
                return found

            monkeypatch.setattr(store, "_recorded_since", racing)
            await w.purge_recordings(utc_now())
            assert calls == 2 and repeated
            await repeated[0]

    asyncio.run(main())
    result_ = verify_file(db, PUBLIC)
    assert result_.ok, result_.reason


class StopInBatch:
    """Installed as the purge's batch: cancels the purge it runs (``run``) while its
    ``at``-th batch runs, as the gateway stopping then would; that batch still ends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int = 2) -> None:
        from appliance.ledger import store

        self.real = store._purge_batch
        self.at = at
        self.batches = 0
        self.purge: asyncio.Future[int] | None = None
        monkeypatch.setattr(store, "_purge_batch", self)

    async def __call__(self, *args: Any) -> tuple[int, int]:
        self.batches += 1
        if self.batches == self.at and self.purge is not None:
            self.purge.cancel()
        return await self.real(*args)

    async def run(self, writer: LedgerWriter, before: str | None = None) -> None:
        """A purge (of everything so far, or before ``before``), cancelled in its
        ``at``-th batch."""
        self.batches = 0
        self.purge = asyncio.ensure_future(writer.purge_recordings(before or utc_now()))
        with pytest.raises(asyncio.CancelledError):
            await self.purge


def test_a_purge_cut_short_by_a_stop_says_what_went_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway stops (cancels the purge) while a batch is in hand: the batch ends,
    the alert counts it, and the cancellation goes on (the drain waits for it)."""
    from appliance.ledger import store

    monkeypatch.setattr(store, "PURGE_BATCH", 1)
    db = tmp_path / "ledger.db"
    blobs = [f"answer {i}".encode() for i in range(5)]
    stop = StopInBatch(monkeypatch)  # the stop comes while the second batch runs

    async def main() -> None:
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            for i, blob in enumerate(blobs):
                await w.append_nowait(result(i, blob), blob)
            await stop.run(w)

    asyncio.run(main())
    assert stop.batches == 2
    assert len(stored(db)) == 3
    done = [json.loads(b) for b in export(db) if '"recordings_deleted"' in b]
    assert (done[0]["deleted"], done[0]["complete"]) == (2, False)
    assert done[0]["reason"].endswith("stopped after 2 of 5: the gateway stopped")
    assert verify_file(db, PUBLIC).ok


def test_a_purge_that_stopped_excuses_no_more_than_it_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge that stopped part way says so (complete false, deleted n), yet verify
    excused every missing recording before its bound: those it left could be deleted
    unnoticed. It explains at most n recordings now (an answer several results share
    counts once), verify and replay alike; the next purge, which finishes, all of them."""
    from appliance.ledger import store

    monkeypatch.setattr(store, "PURGE_BATCH", 1)
    db = tmp_path / "ledger.db"
    blobs = [f"answer {i}".encode() for i in range(5)]
    digests = [hashlib.sha256(b).hexdigest() for b in blobs]
    repeated = blobs[digests.index(min(digests))]  # the purge's first batch deletes it
    stop = StopInBatch(monkeypatch)  # the gateway stops while the second batch runs

    async def main() -> None:
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            for i, blob in enumerate([*blobs, repeated], 1):
                await w.append_nowait(result(i, blob), blob)
            await stop.run(w)

    asyncio.run(main())
    done = [json.loads(b) for b in export(db) if '"recordings_deleted"' in b]
    assert (done[0]["deleted"], done[0]["complete"]) == (2, False)
    assert len(stored(db)) == 3
    result_ = verify_file(db, PUBLIC)  # three results lost their recordings: two went
    assert result_.ok, result_.reason
    with sqlite3.connect(db) as conn:  # what the purge left, deleted by someone else
        conn.execute("DELETE FROM recordings")
    conn.close()
    result_ = verify_file(db, PUBLIC)
    # two recordings are explained, those whose last result is latest (fewer purges
    # could have deleted them; which went is not recorded)
    carried = [*digests, min(digests)]  # the recording of each result, seq 1 to 6
    last = {d: seq for seq, d in enumerate(carried, 1)}
    latest = sorted(last, key=last.__getitem__)[-2:]
    explained = {seq for seq, d in enumerate(carried, 1) if d in latest}
    first = min(set(range(1, 7)) - explained)
    assert not result_.ok and result_.first_bad_seq == first
    assert "stopped part way" in str(result_.reason)
    problems = _replayed_problems(db)
    for seq, problem in enumerate(problems, 1):
        expected = "its recording was purged" if seq in explained else "its recording is MISSING"
        assert str(problem).startswith(expected), (seq, problem)

    async def again() -> int:  # the next purge finishes: it explains all of them
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            await w.append_nowait(result(9, b"later"), b"later")
            return await w.purge_recordings(utc_now())

    monkeypatch.setattr(store, "_purge_batch", stop.real)
    assert asyncio.run(again()) == 1
    result_ = verify_file(db, PUBLIC)
    assert result_.ok, result_.reason


class CommitThen:
    """The purge's connection, as its batches see it: the first COMMIT lands, then
    ``then`` runs in the batch still in hand (a stop, the error the commit reports)."""

    def __init__(self, then: Callable[[], Awaitable[None]]) -> None:
        self.then: Callable[[], Awaitable[None]] | None = then
        self.real: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def execute(self, sql: str, *args: Any) -> Any:
        then = self.then
        if sql != "COMMIT" or then is None:
            return self.real.execute(sql, *args)
        self.then = None

        async def commit() -> None:
            await self.real.execute(sql, *args)
            await then()

        return commit()


def at_commit(monkeypatch: pytest.MonkeyPatch, then: Callable[[], Awaitable[None]]) -> None:
    """Run the purge's batches through a ``CommitThen`` connection."""
    from appliance.ledger import store

    real = store._purge_batch
    proxy = CommitThen(then)

    async def batch(conn: Any, *args: Any) -> tuple[int, int]:
        proxy.real = conn
        return await real(proxy, *args)

    monkeypatch.setattr(store, "_purge_batch", batch)


def test_a_purge_stopped_twice_in_a_batch_counts_what_the_batch_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway stopped twice over (a second Ctrl-C, an outer timeout) while a batch
    committed: the second stop fell on the batch, whose deletions had landed, and the
    recordings_deleted alert said none went, so verify called them missing, and the next
    purge, finding nothing left, wrote nothing to clear it. The batch in hand is waited
    for however often the purge is stopped, and counted; the stop goes on after."""
    db = tmp_path / "ledger.db"
    blobs = [f"answer {i}".encode() for i in range(3)]
    purge: asyncio.Future[int] | None = None

    async def stop_twice() -> None:
        assert purge is not None
        for _ in range(2):
            purge.cancel()
            for _ in range(3):
                await asyncio.sleep(0)  # the purge takes the stop, and waits on

    at_commit(monkeypatch, stop_twice)

    async def main() -> None:
        nonlocal purge
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            for i, blob in enumerate(blobs):
                await w.append_nowait(result(i, blob), blob)
            purge = asyncio.ensure_future(w.purge_recordings(utc_now()))
            with pytest.raises(asyncio.CancelledError):
                await purge
            assert await w.purge_recordings(utc_now()) == 0  # nothing left to delete

    asyncio.run(main())
    assert stored(db) == {}
    done = [json.loads(b) for b in export(db) if '"recordings_deleted"' in b]
    assert [(d["deleted"], d["complete"]) for d in done] == [(3, False)]
    assert done[0]["reason"].endswith("stopped after 3 of 3: the gateway stopped")
    result_ = verify_file(db, PUBLIC)
    assert result_.ok, result_.reason


def test_a_purge_batch_whose_commit_landed_but_failed_counts_what_went(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose COMMIT reported an error after it reached the file was not counted:
    recordings_deleted said none went, verify called them missing, and the next purge,
    finding nothing left, wrote nothing to clear it. A batch that fails is counted by
    how many of its recordings are gone all the same."""
    db = tmp_path / "ledger.db"
    blobs = [f"answer {i}".encode() for i in range(3)]

    async def report_an_error() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    at_commit(monkeypatch, report_an_error)

    async def main() -> None:
        async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
            for i, blob in enumerate(blobs):
                await w.append_nowait(result(i, blob), blob)
            with pytest.raises(LedgerUnavailable, match="stopped after 3 of 3: disk I/O error"):
                await w.purge_recordings(utc_now())
            assert await w.purge_recordings(utc_now()) == 0  # nothing left to delete

    asyncio.run(main())
    assert stored(db) == {}
    done = [json.loads(b) for b in export(db) if '"recordings_deleted"' in b]
    assert [(d["deleted"], d["complete"]) for d in done] == [(3, False)]
    result_ = verify_file(db, PUBLIC)
    assert result_.ok, result_.reason


def test_stopped_purges_count_an_answer_by_its_latest_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer D given before a purge's bound and again after it, and X before it: the
    first purge kept D (repeated later), deleted X and stopped; the second deleted D and
    stopped. Two went, two counted, yet verify failed and replay said MISSING: D was
    charged by its first result to the first purge, which could not have deleted it. A
    recording counts by its latest result now, the latest first; with one more missing
    than the purges counted, verify fails and replay says MISSING for that one."""
    from appliance.ledger import store

    monkeypatch.setattr(store, "PURGE_BATCH", 1)
    stop = StopInBatch(monkeypatch, at=1)  # each purge stops in its first batch

    def run(db: Path, before: list[bytes]) -> None:
        async def main() -> None:
            async with LedgerWriter(db, KEY, checkpoint_interval=3600.0) as w:
                for i, blob in enumerate([b"D", *before], 1):
                    await w.append_nowait(result(i, blob), blob)
                await asyncio.sleep(0.01)
                first = utc_now()
                await asyncio.sleep(0.01)
                await w.append_nowait(result(len(before) + 2, b"D"), b"D")  # D again
                await w.checkpoint()
                await stop.run(w, first)  # keeps D, deletes one of ``before``
                await asyncio.sleep(0.01)
                await stop.run(w)  # deletes one of what is left

        asyncio.run(main())
        done = [json.loads(b) for b in export(db) if '"recordings_deleted"' in b]
        assert [(d["deleted"], d["complete"]) for d in done] == [(1, False), (1, False)]

    shared = tmp_path / "shared.db"
    run(shared, [b"X"])
    assert stored(shared) == {}  # two went, two counted
    result_ = verify_file(shared, PUBLIC)
    assert result_.ok, result_.reason
    problems = _replayed_problems(shared)
    assert len(problems) == 3
    assert all(str(p).startswith("its recording was purged") for p in problems), problems
    over = tmp_path / "over.db"
    run(over, [b"X", b"Y"])
    assert len(stored(over)) == 1
    with sqlite3.connect(over) as conn:  # the one the purges left, deleted by someone else
        conn.execute("DELETE FROM recordings")
    conn.close()
    result_ = verify_file(over, PUBLIC)  # three went, two counted: X's is the one over
    assert not result_.ok and result_.first_bad_seq == 2, result_.reason
    assert "stopped part way" in str(result_.reason)
    problems = _replayed_problems(over)
    assert [str(p).startswith("its recording was purged") for p in problems] == [
        True,
        False,
        True,
        True,
    ], problems
    assert str(problems[1]).startswith("its recording is MISSING")
