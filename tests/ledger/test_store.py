"""LedgerWriter on real SQLite files: group commit, restarts, checkpoints, crashes, and a
ledger that cannot be written (full disk, removed directory, a directory in the file's
place, a lock) from which the writer recovers by itself."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.ledger import LedgerFileError, LedgerUnavailable, LedgerWriter, store
from appliance.ledger.chain import (
    canonical_json,
    generate_key,
    key_id,
    private_key_pem,
    seal_with_body,
    utc_now,
)
from appliance.ledger.store import export, open_ledger, read_head, verify_file

KEY = generate_key()
PUBLIC = KEY.public_key()
QUICK = 3.0  # seconds: an unavailable ledger answers well within this


def stmt(i: int, session: str = "s1", sql: str | None = None) -> dict[str, Any]:
    return {
        "kind": "statement",
        "session": session,
        "statement_seq": i,
        "identity": "agent@example.com",
        "groups": ["agents"],
        "sql": f"SELECT {i}" if sql is None else sql,
        "decision": "allowed",
    }


def rows(db: Path) -> list[dict[str, Any]]:
    return [json.loads(body) for body in export(db)]


def writer(db: Path, **options: Any) -> LedgerWriter:
    options.setdefault("checkpoint_interval", 3600.0)
    return LedgerWriter(db, KEY, **options)


async def timed_failure(w: LedgerWriter, fields: dict[str, Any]) -> str:
    """The append raises LedgerUnavailable, quickly; its message."""
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable) as failure:
        await asyncio.wait_for(w.append(fields), 10)
    assert time.monotonic() - started < QUICK
    return str(failure.value)


async def reopened(w: LedgerWriter) -> None:
    """Wait for the writer's back-off to end: after a failure it refuses every append at
    once for a moment (store.REOPEN_FIRST_S, and more after each failure), then tries the
    file again with the next one."""
    await asyncio.sleep(max(0.0, w._reopen_at - time.monotonic()))


def test_concurrent_appends_form_one_chain_in_commit_order(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> tuple[list[dict[str, Any]], int]:
        async with writer(db) as w:
            sealed = await asyncio.gather(*(w.append(stmt(i)) for i in range(200)))
            return sealed, w.stats.commits

    sealed, commits = asyncio.run(main())
    assert [r["seq"] for r in sealed] == list(range(1, 201))
    assert [r["sql"] for r in sealed] == [f"SELECT {i}" for i in range(200)]
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(sealed, sealed[1:], strict=False))
    assert commits < 200
    stored = rows(db)
    assert stored[:200] == sealed
    assert stored[200]["kind"] == "checkpoint" and stored[200]["checkpoint_seq"] == 200
    result = verify_file(db, PUBLIC)
    assert result.ok and result.records == 201 and result.unsigned == 0


def test_stored_body_is_canonical_and_columns_copy_it(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> list[dict[str, Any]]:
        async with writer(db) as w:
            return [
                await w.append(stmt(1, sql='SELECT \'é\', "x" -- ,"kind":')),
                await w.append({"kind": "alert", "alert": "bypass", "reason": "r"}),
            ]

    sealed = asyncio.run(main())
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT seq, ts, kind, session, body FROM records").fetchall()
    conn.close()
    for record, (seq, ts, kind, session, body) in zip(sealed, stored, strict=False):
        assert body.encode() == canonical_json(record)
        assert (seq, ts, kind, session) == (
            record["seq"],
            record["ts"],
            record["kind"],
            record.get("session"),
        )
    assert stored[1][3] is None


def test_the_chain_continues_across_restarts(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db) as w:
            for i in range(10):
                await w.append(stmt(i))
        head = w.head
        assert head[0] == 11  # the checkpoint written at close
        async with writer(db) as w:
            assert w.head == head
            record = await w.append(stmt(10))
            assert record["seq"] == 12 and record["prev_hash"] == head[1]

    asyncio.run(main())
    result = verify_file(db, PUBLIC)
    assert result.ok and result.records == 13 and result.last_checkpoint_seq == 13


def test_a_checkpoint_every_second_while_records_flow(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> int:
        async with LedgerWriter(db, KEY) as w:
            until = time.monotonic() + 2.5
            while time.monotonic() < until:
                await w.append(stmt(0))
                await asyncio.sleep(0.01)
            return w.stats.checkpoints

    assert asyncio.run(main()) >= 2
    kinds = [r["kind"] for r in rows(db)]
    assert kinds.count("checkpoint") >= 3  # and one more at close
    assert kinds[-1] == "checkpoint"
    assert verify_file(db, PUBLIC).ok


def test_checkpoint_on_demand(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db) as w:
            assert await w.checkpoint() is None  # nothing to sign yet
            await w.append(stmt(0))
            cp = await w.checkpoint()
            assert cp is not None
            assert (cp["seq"], cp["checkpoint_seq"], cp["key_id"]) == (2, 1, key_id(PUBLIC))
            assert await w.checkpoint() is None  # already signed
        assert w.stats.checkpoints == 1  # and close() had nothing to add

    asyncio.run(main())
    head = read_head(db)
    assert head is not None and head.seq == 1


def test_group_commit_20000_records(tmp_path: Path) -> None:
    """64 sessions, each waiting for its record before the next (like write-before-
    forward): far fewer commits than records. Timings belong to scripts/bench."""
    db = tmp_path / "ledger.db"
    sessions, each = 64, 20_000 // 64 + 1

    async def main() -> tuple[int, int]:
        async with writer(db) as w:

            async def session(n: int) -> None:
                for i in range(each):
                    await w.append(stmt(i, session=f"s{n}"))

            await asyncio.gather(*(session(n) for n in range(sessions)))
            return w.stats.records, w.stats.commits

    records, commits = asyncio.run(main())
    assert records == sessions * each >= 20_000
    assert commits <= records // 20
    result = verify_file(db, PUBLIC)
    assert result.ok and result.records == records + 1


def test_records_nobody_waits_for_share_the_next_commit(tmp_path: Path) -> None:
    """A result (append_nowait) lingers and rides along with the next statement's commit."""
    db = tmp_path / "ledger.db"

    async def main() -> tuple[int, int]:
        async with writer(db, linger=1.0) as w:
            for i in range(50):
                await w.append(stmt(i))  # the statement: committed before it "runs"
                w.append_nowait({"kind": "result", "session": "s1", "statement_seq": i})
        return w.stats.records, w.stats.commits  # close() wrote the last one, and signed

    records, commits = asyncio.run(main())
    assert records == 101 and commits <= 52  # not one commit per record (about 100)
    kinds = [r["kind"] for r in rows(db)]
    assert kinds[:4] == ["statement", "result", "statement", "result"]
    assert verify_file(db, PUBLIC).ok


def test_records_queued_over_a_few_turns_of_the_loop_share_one_commit(tmp_path: Path) -> None:
    """Sessions whose packets come a turn or two apart (each turn of the loop reads the
    sockets that became ready) still share a commit: it waits while turns bring more."""
    db = tmp_path / "ledger.db"

    async def main() -> tuple[int, list[int]]:
        async with writer(db) as w:
            await w.append(stmt(0))  # the file is open, the head known
            before = w.stats.commits

            async def session(i: int) -> int:
                for _ in range(i % 3):  # arrives 0, 1 or 2 turns after the first
                    await asyncio.sleep(0)
                return int((await w.append(stmt(i, session=f"s{i}")))["seq"])

            seqs = await asyncio.gather(*(session(i) for i in range(1, 10)))
            return w.stats.commits - before, sorted(seqs)

    commits, seqs = asyncio.run(main())
    assert seqs == list(range(2, 11))
    assert commits == 1  # one per turn (3) if the commit did not wait for the later ones
    assert verify_file(db, PUBLIC).ok


def test_a_record_whose_caller_gave_up_before_the_commit_is_not_written(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db) as w:
            await w.append(stmt(0))
            gave_up = asyncio.create_task(w.append(stmt(1)))
            kept = asyncio.create_task(w.append(stmt(2)))
            await asyncio.sleep(0)  # both queued, their commit scheduled
            gave_up.cancel()
            assert (await kept)["seq"] == 2

    asyncio.run(main())
    assert [r.get("statement_seq") for r in rows(db) if r["kind"] == "statement"] == [0, 2]
    assert verify_file(db, PUBLIC).ok


@pytest.mark.parametrize("fsync", [False, True])
def test_backlog_bytes_count_the_waiting_records_until_they_are_answered(
    tmp_path: Path, fsync: bool
) -> None:
    """Records wait in memory for their group commit. Counted in records alone, a slow
    ledger let them hold gigabytes (statements of megabytes, recordings up to 64 MiB):
    their bytes are counted too (the SQL text and the recording, by length), while
    queued and while their commit waits (on the loop, or in aiosqlite's thread with
    fsync), until they are committed; ``below`` also waits for a byte mark."""
    db = tmp_path / "ledger.db"
    big = "SELECT '" + "x" * 100_000 + "'"
    blob = b"r" * 300_000
    result = {
        "kind": "result",
        "session": "s1",
        "statement_seq": 1,
        "recording": hashlib.sha256(blob).hexdigest(),
    }
    waiting = 2 * store.RECORD_BYTES + len(big) + len(blob)

    async def main() -> None:
        async with writer(db, fsync=fsync, busy_timeout=600.0) as w:
            await w.append(stmt(0))
            assert w.backlog_bytes == 0
            other = sqlite3.connect(db, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
            statement = w.append_soon(stmt(1, sql=big))
            recorded = w.append_nowait(result, blob)
            assert w.backlog == 2 and w.backlog_bytes == waiting
            under_records = w.below(3)
            under_bytes, over_bytes = w.below(3, waiting), w.below(3, waiting + 1)
            assert under_records.done() and over_bytes.done() and not under_bytes.done()

            async def taken() -> None:
                while w.backlog:  # noqa: ASYNC110 - polling the writer
                    await asyncio.sleep(0)

            await asyncio.wait_for(taken(), QUICK)  # into a commit that waits for the lock
            assert w.backlog_bytes == waiting and not under_bytes.done()
            assert not statement.done() and not recorded.done()
            other.execute("ROLLBACK")
            other.close()
            await asyncio.wait_for(asyncio.gather(statement, recorded), QUICK)
            assert w.backlog_bytes == 0 and under_bytes.done()

    asyncio.run(main())
    kinds = [r["kind"] for r in rows(db)]
    assert kinds[-3:] == ["statement", "result", "checkpoint"]  # the last one: at close
    assert verify_file(db, PUBLIC).ok


def test_below_answers_once_the_queue_is_under_the_mark(tmp_path: Path) -> None:
    """What sessions that outrun the ledger wait for: the future is answered when the
    records queued before it are committed, or when their commit failed."""
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db, linger=1.0, busy_timeout=0.2) as w:
            await w.append(stmt(0))
            assert w.below(1).done()  # nothing queued
            for i in range(1, 101):
                w.append_nowait(stmt(i))  # they linger for company
            assert w.backlog == 100
            under_50, under_101 = w.below(50), w.below(101)
            assert under_101.done() and not under_50.done()
            await asyncio.sleep(0.1)
            assert not under_50.done()  # still lingering
            await w.append(stmt(101))  # the commit that takes them all
            assert under_50.done() and w.backlog == 0
            other = sqlite3.connect(db, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")  # the next commit fails
            failed = w.append_soon(stmt(102))
            assert not w.below(1).done()
            await asyncio.wait_for(w.below(1), QUICK)
            assert isinstance(failed.exception(), LedgerUnavailable)
            other.execute("ROLLBACK")
            other.close()

    asyncio.run(main())


def test_the_wal_starts_over_while_records_flow(tmp_path: Path) -> None:
    """Commits never stop long enough for SQLite to restart the WAL by itself: the writer
    checkpoints it between batches, so it stays small however long records flow."""
    db = tmp_path / "ledger.db"
    wal = Path(f"{db}-wal")

    def wal_size() -> int:
        return wal.stat().st_size

    async def main() -> int:
        largest = 0
        async with writer(db, checkpoint_interval=0.05) as w:
            for i in range(6000):
                await w.append(stmt(i, sql="SELECT " + "x" * 300))
                if i % 100 == 0:
                    largest = max(largest, wal_size())
        return largest

    largest = asyncio.run(main())
    # one commit per record writes about 10 KB of WAL: 60 MB if it never started over
    assert largest < 20 * 1024 * 1024, largest
    assert verify_file(db, PUBLIC).ok


def test_invalid_fields_fail_only_their_caller(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db) as w:
            with pytest.raises(ValueError, match="set by the ledger writer"):
                await w.append({"kind": "alert", "seq": 5})
            with pytest.raises(ValueError, match="kind must be one of"):
                await w.append({"kind": "checkpoint"})
            results = await asyncio.gather(
                w.append(stmt(0)),
                w.append(stmt(1, sql="bad \udcff surrogate")),  # not encodable as UTF-8
                w.append(stmt(2)),
                return_exceptions=True,
            )
            assert isinstance(results[1], ValueError)
            assert [r["seq"] for r in (results[0], results[2])] == [1, 2]  # type: ignore[index]

    asyncio.run(main())
    assert verify_file(db, PUBLIC).ok


def test_append_before_open_and_after_close(tmp_path: Path) -> None:
    async def main() -> None:
        w = writer(tmp_path / "ledger.db")
        with pytest.raises(LedgerUnavailable, match="not open"):
            await w.append(stmt(0))
        await w.open()
        await w.close()
        with pytest.raises(LedgerUnavailable, match="closed"):
            await w.append(stmt(0))

    asyncio.run(main())


def test_triggers_refuse_update_and_delete(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db) as w:
            await w.append(stmt(0))

    asyncio.run(main())
    conn = sqlite3.connect(db)
    for sql in ("UPDATE records SET kind = 'x'", "DELETE FROM records"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(sql)
    conn.close()


# -- crashes and files the writer must not extend ------------------------------------------

CRASH = """
import asyncio, os, sys
from appliance.ledger import LedgerWriter, load_private_key

async def main():
    w = LedgerWriter(sys.argv[1], load_private_key(sys.argv[2]), checkpoint_interval=3600)
    await w.open()
    for i in range(int(sys.argv[3])):
        await w.append({"kind": "statement", "session": "s1", "statement_seq": i})
        if i == 9:
            await w.checkpoint()
    os._exit(0)  # like kill -9: no close, no final checkpoint

asyncio.run(main())
"""


def crashed_ledger(tmp_path: Path, count: int = 30) -> Path:
    """A ledger whose writer died after ``count`` records (checkpoint at seq 11)."""
    key_file = tmp_path / "ledger.key"
    key_file.write_bytes(private_key_pem(KEY))
    db = tmp_path / "ledger.db"
    args = [sys.executable, "-c", CRASH, str(db), str(key_file), str(count)]
    subprocess.run(args, check=True, timeout=60)
    assert (tmp_path / "ledger.db-wal").exists()
    return db


def test_crash_leaves_an_unsigned_tail_that_the_restart_signs(tmp_path: Path) -> None:
    db = crashed_ledger(tmp_path)
    result = verify_file(db, PUBLIC)
    assert result.ok and result.records == 31
    assert result.last_checkpoint_seq == 11 and result.unsigned == 20

    async def main() -> None:
        async with LedgerWriter(db, KEY) as w:  # checkpoint_interval 1 s
            for _ in range(250):  # the tail is signed at once, not after a second
                if w.stats.checkpoints:
                    break
                await asyncio.sleep(0.02)  # noqa: ASYNC110 - polling a counter
            assert w.stats.checkpoints == 1
            assert w.head[0] == 33

    asyncio.run(main())
    result = verify_file(db, PUBLIC)
    assert result.ok and result.last_checkpoint_seq == 33 and result.unsigned == 0
    # the auditor is told that the tail was found unsigned, and signed by this run
    alert, checkpoint = rows(db)[31:33]
    assert alert["alert"] == "unsigned_tail_signed" and checkpoint["kind"] == "checkpoint"
    assert (alert["from_seq"], alert["to_seq"]) == (12, 31)


def tamper(db: Path, seq: int, **changes: Any) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER records_no_update")
    (body,) = conn.execute("SELECT body FROM records WHERE seq = ?", (seq,)).fetchone()
    record = {**json.loads(body), **changes}
    conn.execute("UPDATE records SET body = ? WHERE seq = ?", (json.dumps(record), seq))
    conn.commit()
    conn.close()


def test_refuses_to_extend_a_tampered_tail(tmp_path: Path) -> None:
    db = crashed_ledger(tmp_path)
    tamper(db, 15, statement_seq=99)

    async def main() -> None:
        w = writer(db)
        with pytest.raises(LedgerFileError, match="record 15: hash does not match.*refusing"):
            await w.open()
        message = await timed_failure(w, stmt(0))  # keeps refusing, fail closed
        assert "record 15" in message
        await w.close()

    asyncio.run(main())
    assert len(rows(db)) == 31  # nothing was added


def test_refuses_a_ledger_signed_by_another_key(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db) as w:
            await w.append(stmt(0))
        other = LedgerWriter(db, generate_key())
        with pytest.raises(
            LedgerFileError, match=f"record 2: checkpoint signature is by key_id {key_id(PUBLIC)}"
        ):
            await other.open()
        await other.close()

    asyncio.run(main())


def test_refuses_a_database_that_is_not_a_ledger(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.close()

    async def main() -> None:
        w = writer(db)
        with pytest.raises(LedgerFileError, match="not a sqlgate ledger"):
            await w.open()
        await w.close()

    asyncio.run(main())
    with pytest.raises(LedgerFileError, match="not a sqlgate ledger"):
        open_ledger(db)


# -- an unwritable ledger, and recovery ----------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (we run as root); chmod would not stop root, a full disk does."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (tests run as root): {done.stderr}", pytrace=False)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_ledger_unreadable_on_a_full_disk_is_not_called_foreign(small_tmpfs: Path) -> None:
    """Its -shm index gone (as after a reboot) and no room to make it again: the readers
    say they cannot read it, and why that may be, not that it is no ledger."""
    db = crashed_ledger(small_tmpfs)
    Path(f"{db}-shm").unlink(missing_ok=True)
    fill(small_tmpfs / "filler")
    with pytest.raises(LedgerFileError) as failure:
        open_ledger(db)
    message = str(failure.value)
    assert "not a sqlgate ledger" not in message
    assert message.startswith(f"{db}: cannot read the ledger: ")
    assert "is the file system full?" in message
    (small_tmpfs / "filler").unlink()
    assert verify_file(db, PUBLIC).last_seq == 31  # 30 records and a checkpoint


def test_full_disk_refuses_quickly_and_recovers(small_tmpfs: Path) -> None:
    db = small_tmpfs / "ledger.db"
    filler = small_tmpfs / "filler"

    async def main() -> int:
        async with writer(db) as w:
            await w.append(stmt(0))
            fill(filler)
            failed = None
            for i in range(1, 100):
                try:
                    await asyncio.wait_for(w.append(stmt(i, sql=f"FULL-{i} " + "x" * 4000)), 10)
                except LedgerUnavailable as exc:
                    assert "full" in str(exc)
                    failed = i
                    break
            assert failed is not None, "the disk never filled up"
            await timed_failure(w, stmt(-1, sql="STILL-FULL"))  # still full: refused again
            filler.unlink()
            await reopened(w)
            await w.append(stmt(1000, sql="RECOVERED"))
            return failed

    failed = asyncio.run(main())
    texts = [r["sql"] for r in rows(db) if r["kind"] == "statement"]
    written = ["SELECT 0"] + [f"FULL-{i} " + "x" * 4000 for i in range(1, failed)]
    assert texts == [*written, "RECOVERED"]  # the refused records are not in the chain
    result = verify_file(db, PUBLIC)
    assert result.ok and result.unsigned == 0


def test_refusals_on_a_full_disk_do_not_open_the_file_again_each_time(
    small_tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each append refused on a full disk opened the file again (schema, tail check, a
    thread: milliseconds), so a client that kept sending burned a core on refusals. Now
    the file is tried again with the next append once, then not before a back-off ends
    (here never): the refusals meanwhile touch nothing. A close still tries it."""
    monkeypatch.setattr(store, "REOPEN_FIRST_S", 3600.0, raising=False)
    monkeypatch.setattr(store, "REOPEN_MAX_S", 3600.0, raising=False)
    db = small_tmpfs / "ledger.db"
    filler = small_tmpfs / "filler"

    async def main() -> None:
        w = writer(db)
        await w.open()
        try:
            await w.append(stmt(0))
            await w.checkpoint()
            fill(filler)
            for i in range(1, 100):
                try:
                    await w.append(stmt(i, sql="x" * 4000))
                except LedgerUnavailable:
                    break
            else:
                pytest.fail("the disk never filled up")
            opened = w.stats.reopens
            for i in range(100, 150):  # refused statements, and their lost results
                lost = w.append_nowait(result_of(i))
                with pytest.raises(LedgerUnavailable, match="full"):
                    await w.append(stmt(i, sql="x" * 4000))
                await asyncio.wait([lost])
                assert isinstance(lost.exception(), LedgerUnavailable)
            assert w.stats.reopens - opened <= 1  # the one retry of the outage
            assert not w.available
            filler.unlink()
        finally:
            await w.close()  # tried in spite of the back-off: the losses are named

    asyncio.run(main())
    assert verify_file(db, PUBLIC).ok
    stored = rows(db)
    alert = next(r for r in stored if r["kind"] == "alert")
    assert alert["alert"] == "records_lost" and alert["lost"] == 50
    assert stored[-1]["kind"] == "checkpoint"


def test_a_full_disk_recovers_by_itself_once_there_is_room(small_tmpfs: Path) -> None:
    """Room again after a full disk: the writer, waiting out its back-off, tries the file
    again on its own (the records_lost alert is due) and is available without an append
    to prompt it; the chain goes on intact."""
    db = small_tmpfs / "ledger.db"
    filler = small_tmpfs / "filler"

    async def main() -> None:
        async with writer(db, checkpoint_interval=0.05) as w:
            await w.append(stmt(0))
            await w.checkpoint()
            fill(filler)
            refused = 0
            for i in range(1, 200):
                lost = w.append_nowait(result_of(i))
                try:
                    await w.append(stmt(i, sql="x" * 4000))
                except LedgerUnavailable:
                    refused += 1
                await asyncio.wait([lost])
                if refused == 30:
                    break
            assert refused == 30 and not w.available
            filler.unlink()
            for _ in range(600):  # a condition, not a time: at most 30 s
                if w.available:
                    break
                await asyncio.sleep(0.05)
            assert w.available
            record = await w.append(stmt(1000))
            assert record["seq"] > 2

    asyncio.run(main())
    assert verify_file(db, PUBLIC).ok
    stored = rows(db)
    alert = next(r for r in stored if r["kind"] == "alert")
    assert alert["alert"] == "records_lost" and alert["lost"] >= 30
    assert [r for r in stored if r["kind"] == "statement"][-1]["statement_seq"] == 1000


def test_removed_directory_refuses_then_a_new_ledger_starts_with_an_alert(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "ledger"
    directory.mkdir()
    db = directory / "ledger.db"

    async def main() -> str:
        async with writer(db) as w:
            for i in range(5):
                last = await w.append(stmt(i))
            shutil.rmtree(directory)
            await timed_failure(w, stmt(5))
            await timed_failure(w, stmt(6))
            directory.mkdir()
            await reopened(w)
            record = await w.append(stmt(7))
            assert record["seq"] == 2  # after the alert
            return str(last["hash"])

    previous_hash = asyncio.run(main())
    stored = rows(db)
    assert [r["kind"] for r in stored] == ["alert", "statement", "checkpoint"]
    alert = stored[0]
    assert alert["alert"] == "ledger_replaced"
    assert (alert["previous_seq"], alert["previous_hash"]) == (5, previous_hash)
    assert verify_file(db, PUBLIC).ok


def test_an_alert_ahead_of_queued_records_keeps_ts_in_seq_order(tmp_path: Path) -> None:
    """The ledger_replaced alert is made when the writer reopens the file, after the
    records it goes ahead of were made: its ts is not later than theirs."""
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db) as w:
            await w.append(stmt(0))
            db.unlink()
            queued = w.append_nowait(result_of(0))
            await w.append(stmt(1))
            assert queued.done() and queued.exception() is None

    asyncio.run(main())
    stored = rows(db)
    assert [r["kind"] for r in stored] == ["alert", "result", "statement", "checkpoint"]
    assert [r["ts"] for r in stored] == sorted(r["ts"] for r in stored)
    assert verify_file(db, PUBLIC).ok


class Clock:
    """``utc_now`` for the writer: a microsecond later at each call; ``back`` sets it back."""

    def __init__(self) -> None:
        self.micros = 500_000

    def __call__(self) -> str:
        self.micros += 1
        return f"2030-01-01T00:00:00.{self.micros:06d}Z"

    def back(self, micros: int) -> None:
        self.micros -= micros


def test_a_checkpoint_asked_for_is_stamped_no_later_than_the_records_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """checkpoint() (the retention purge asks for one after its recordings_purged alert)
    shared a batch with a record queued after it and was stamped when the batch was
    sealed, later than that record: ts ran backwards against seq, and export --since the
    checkpoint's ts gave the records before and after that record, not a tail."""
    from appliance.ledger import store

    monkeypatch.setattr(store, "utc_now", Clock())
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db) as w:
            await w.append(stmt(0))
            asked = asyncio.ensure_future(w.checkpoint())
            await asyncio.sleep(0)  # asked for: queued
            queued = w.append_nowait(stmt(1))  # a session's record meanwhile
            signed = await asked
            assert signed is not None and signed["seq"] == 2
            assert (await queued) is not None

    asyncio.run(main())
    stored = rows(db)
    assert [r["kind"] for r in stored] == ["statement", "checkpoint", "statement", "checkpoint"]
    assert [r["ts"] for r in stored] == sorted(r["ts"] for r in stored)
    since = [json.loads(body)["seq"] for body in export(db, since=stored[1]["ts"])]
    assert since == [2, 3, 4]
    assert verify_file(db, PUBLIC).ok


def test_a_clock_set_back_does_not_run_ts_backwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record is stamped no earlier than the one before it, also after a reopen (the
    head's ts is read back from the file), so that export --since stays a tail."""
    from appliance.ledger import store

    clock = Clock()
    monkeypatch.setattr(store, "utc_now", clock)
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db) as w:
            await w.append(stmt(0))
            clock.back(1000)
            await w.append(stmt(1))
        clock.back(1000)
        async with writer(db) as w:
            await w.append(stmt(2))

    asyncio.run(main())
    stored = rows(db)
    assert [r.get("sql") for r in stored if r["kind"] == "statement"] == [
        "SELECT 0",
        "SELECT 1",
        "SELECT 2",
    ]
    assert [r["ts"] for r in stored] == sorted(r["ts"] for r in stored)
    assert verify_file(db, PUBLIC).ok


def append_behind(db: Path, fields: dict[str, Any], ts: str | None = None) -> int:
    """Append a chained, unsigned record as anyone who can write the file could (no
    signing key), behind a writer's back (stamped ``ts``, or now); its seq."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        seq, body = conn.execute("SELECT seq, body FROM records ORDER BY seq DESC").fetchone()
        record = {"seq": seq + 1, "ts": utc_now() if ts is None else ts, **fields}
        sealed, text = seal_with_body(record, json.loads(body)["hash"])
        conn.execute(
            "INSERT INTO records (seq, ts, kind, session, body) VALUES (?, ?, ?, ?, ?)",
            (sealed["seq"], sealed["ts"], sealed["kind"], sealed.get("session"), text),
        )
    return int(sealed["seq"])


FAR = "9999-12-31T23:59:59.999999Z"


def test_a_foreign_record_s_ts_does_not_stamp_the_records_after_it(tmp_path: Path) -> None:
    """A record appended behind the gateway (chained, no key) with a ts far in the future
    was named by an unsigned_tail_signed alert, yet its ts became the floor under which
    the writer stamps nothing: its alert and every record and checkpoint after it carried
    the forged ts, in the running gateway and after a restart alike. Only the gateway's
    own word (its head, the last checkpoint, its records that landed) sets the floor."""
    db = tmp_path / "ledger.db"

    async def running() -> None:
        async with writer(db) as w:
            await w.append(stmt(0))
            await w.checkpoint()
            append_behind(db, stmt(90, session="x"), ts=FAR)
            for i in (1, 2):  # the first collides; the second comes after the alert
                with contextlib.suppress(LedgerUnavailable):
                    await w.append(stmt(i))
            assert w.stats.failures == 1

    async def restarted() -> None:
        async with writer(db) as w:
            await w.append(stmt(3))

    asyncio.run(running())
    append_behind(db, stmt(91, session="x"), ts=FAR)  # with the gateway stopped
    asyncio.run(restarted())
    asyncio.run(restarted())  # and once more: what it signed set no floor either
    stored = rows(db)
    forged = [r["seq"] for r in stored if r.get("session") == "x"]
    named = [
        (r["from_seq"], r["to_seq"]) for r in stored if r.get("alert") == "unsigned_tail_signed"
    ]
    assert len(forged) == 2 and named == [(seq, seq) for seq in forged]
    own = [r for r in stored if r.get("session") != "x"]
    assert len(own) > 8 and all(r["ts"] < "9999" for r in own), [r["ts"] for r in own]
    assert [r["ts"] for r in own] == sorted(r["ts"] for r in own)
    assert verify_file(db, PUBLIC).ok


def test_a_kind_column_relabelled_checkpoint_does_not_shorten_the_alert(tmp_path: Path) -> None:
    """Records appended behind the stopped gateway, the last one's kind column relabelled
    'checkpoint': the writer took its tail check from there, named that record alone in its
    unsigned_tail_signed alert and signed the ones before it as its own; with the column
    put back, verify passed a ledger whose forged records no alert named. The newest
    checkpoint is found by the bodies: the alert names every record added."""
    db = tmp_path / "ledger.db"

    async def run(i: int) -> None:
        async with writer(db) as w:
            await w.append(stmt(i))

    asyncio.run(run(0))  # seq 1, checkpoint 2 at close
    forged = [append_behind(db, stmt(90 + i, session="x")) for i in range(3)]
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("DROP TRIGGER records_no_update")
        conn.execute("UPDATE records SET kind = 'checkpoint' WHERE seq = ?", (forged[-1],))
        asyncio.run(run(1))
        conn.execute("UPDATE records SET kind = 'statement' WHERE seq = ?", (forged[-1],))
    stored = rows(db)
    named = [
        (r["from_seq"], r["to_seq"]) for r in stored if r.get("alert") == "unsigned_tail_signed"
    ]
    assert named == [(forged[0], forged[-1])] == [(3, 5)]
    assert verify_file(db, PUBLIC).ok


def test_the_last_checkpoint_s_ts_set_far_ahead_does_not_stamp_the_records_after_it(
    tmp_path: Path,
) -> None:
    """A checkpoint's signature covers the record before it, not its own ts: set far in
    the future in the file (its hash computed again), it became the floor of every record
    the gateway wrote after a restart (all stamped 9999-12-31), and verify passed. Only a
    ts at most CHECKPOINT_AHEAD_S ahead of the clock holds the records after it."""
    db = tmp_path / "ledger.db"

    async def run(i: int) -> None:
        async with writer(db) as w:
            await w.append(stmt(i))

    asyncio.run(run(0))  # seq 1, checkpoint 2 at close
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("DROP TRIGGER records_no_update")
        (body,) = conn.execute("SELECT body FROM records WHERE seq = 2").fetchone()
        checkpoint = json.loads(body)
        del checkpoint["hash"]
        sealed, text = seal_with_body({**checkpoint, "ts": FAR}, checkpoint.pop("prev_hash"))
        conn.execute("UPDATE records SET ts = ?, body = ? WHERE seq = 2", (FAR, text))
    asyncio.run(run(1))
    stored = rows(db)
    assert [(r["kind"], r["ts"] == FAR) for r in stored] == [
        ("statement", False),
        ("checkpoint", True),
        ("statement", False),
        ("checkpoint", False),
    ]
    assert verify_file(db, PUBLIC).ok


class LandsThenFails:
    """The writer's connection, whose next commit reaches the file and then reports an
    error (as a commit may after its data was written)."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real
        self.armed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def commit(self) -> None:
        self.real.commit()
        if self.armed:
            self.armed = False
            raise sqlite3.OperationalError("disk I/O error")


def test_records_added_behind_the_writer_are_named_before_it_signs_them(tmp_path: Path) -> None:
    """A record appended to the file behind the running gateway (chained, unsigned) made
    its next commit fail; it reopened the file and signed the record with its next
    checkpoint, saying nothing. Now an unsigned_tail_signed alert names exactly the
    records it did not write: not its own commit that failed but reached the file."""
    db = tmp_path / "ledger.db"

    async def main() -> int:
        async with writer(db) as w:
            await w.append(stmt(0))
            await w.checkpoint()  # seq 2
            assert w._direct is not None
            w._direct = LandsThenFails(w._direct)  # type: ignore[assignment]
            with pytest.raises(LedgerUnavailable):
                await w.append(stmt(1))  # seq 3: in the file all the same
            added = append_behind(db, {"kind": "session_end", "session": "s9", "reason": "x"})
            await reopened(w)
            record = await w.append(stmt(2))
            assert record["seq"] == added + 2  # after the alert
            return added

    added = asyncio.run(main())
    stored = rows(db)
    assert [r["kind"] for r in stored] == [
        "statement",
        "checkpoint",
        "statement",
        "session_end",
        "alert",
        "statement",
        "checkpoint",
    ]
    alert = stored[added]
    assert alert["alert"] == "unsigned_tail_signed"
    assert (alert["from_seq"], alert["to_seq"]) == (added, added) == (4, 4)
    assert verify_file(db, PUBLIC).ok


def test_a_file_with_an_unsigned_tail_in_place_of_the_ledger_gets_both_alerts(
    tmp_path: Path,
) -> None:
    """The writer planned one alert at a time: the ledger_replaced alert for a file put in
    place of the ledger left no room to say that the file's unsigned tail, which the
    writer then signed, was not its own."""
    other = tmp_path / "other.db"

    async def make_other() -> None:
        async with writer(other) as w:
            await w.append(stmt(100))

    asyncio.run(make_other())
    added = append_behind(other, stmt(101))
    directory = tmp_path / "ledger"
    directory.mkdir()
    db = directory / "ledger.db"

    async def main() -> None:
        async with writer(db) as w:
            await w.append(stmt(0))
            shutil.rmtree(directory)
            await timed_failure(w, stmt(1))
            directory.mkdir()
            shutil.copy(other, db)
            await reopened(w)
            await w.append(stmt(2))

    asyncio.run(main())
    alerts = [r for r in rows(db) if r["kind"] == "alert"]
    assert [a["alert"] for a in alerts] == ["ledger_replaced", "unsigned_tail_signed"]
    assert alerts[0]["previous_seq"] == 1
    assert (alerts[1]["from_seq"], alerts[1]["to_seq"]) == (added, added)
    assert verify_file(db, PUBLIC).ok


def test_a_tail_alert_planned_for_a_replaced_file_is_not_written_in_its_successor(
    tmp_path: Path,
) -> None:
    """A start found records it did not write and planned an unsigned_tail_signed alert
    naming them; its first commit failed (the file was locked) and the file was replaced:
    the alert went into the new file, naming records of the old one, and a purge of the
    gateway's own that later landed in that range was refused by verify. The new file
    gets the ledger_replaced alert and an alert naming its own unsigned tail only."""
    db = tmp_path / "ledger.db"
    other = tmp_path / "other.db"

    async def make(path: Path, i: int) -> None:
        async with writer(path) as w:
            await w.append(stmt(i))  # seq 1, and a checkpoint at close

    asyncio.run(make(db, 0))
    for i in range(20):  # seq 3 to 22: a run that stopped before signing them, or anyone
        append_behind(db, stmt(50 + i, session="x"))
    asyncio.run(make(other, 100))
    added = append_behind(other, stmt(101, session="y"))

    async def main() -> None:
        w = writer(db)
        hold = sqlite3.connect(db, isolation_level=None, timeout=5)
        try:
            hold.execute("BEGIN IMMEDIATE")  # the file is locked past busy_timeout
            await w.open()
            await timed_failure(w, stmt(1))
        finally:
            hold.rollback()
            hold.close()
        for suffix in ("", "-wal", "-shm"):  # the file is moved aside, another put there
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{db}{suffix}", tmp_path / f"aside.db{suffix}")
        shutil.copy(other, db)
        await reopened(w)
        try:
            for i in range(3):
                blob = f"answer {i}".encode()
                fields = {**result_of(i), "recording": hashlib.sha256(blob).hexdigest()}
                await w.append_nowait(fields, blob)
            await w.checkpoint()
            assert await w.purge_recordings(utc_now()) == 3
        finally:
            await w.close()

    asyncio.run(main())
    stored = rows(db)
    alerts = [r for r in stored if r.get("alert") in ("ledger_replaced", "unsigned_tail_signed")]
    assert [a["alert"] for a in alerts] == ["ledger_replaced", "unsigned_tail_signed"]
    assert alerts[0]["previous_seq"] == 22
    assert (alerts[1]["from_seq"], alerts[1]["to_seq"]) == (added, added) == (3, 3)
    purge = next(r for r in stored if r.get("alert") == "recordings_purged")
    assert purge["seq"] < 22  # where the planned alert named the old file's records
    result = verify_file(db, PUBLIC)
    assert result.ok, result.reason


def test_a_directory_in_place_of_the_file_refuses_then_recovers(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db) as w:
            await w.append(stmt(0))
            await w.checkpoint()
            os.rename(db, tmp_path / "moved.db")
            db.mkdir()
            await timed_failure(w, stmt(1))
            db.rmdir()
            os.rename(tmp_path / "moved.db", db)  # the operator puts it back
            await reopened(w)
            record = await w.append(stmt(2))
            assert record["seq"] == 3  # the same chain continues, no alert needed

    asyncio.run(main())
    assert [r["kind"] for r in rows(db)] == ["statement", "checkpoint", "statement", "checkpoint"]
    assert verify_file(db, PUBLIC).ok


def test_a_locked_ledger_refuses_quickly_then_recovers(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db, busy_timeout=0.2) as w:
            await w.append(stmt(0))
            other = sqlite3.connect(db, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            assert "locked" in await timed_failure(w, stmt(1))
            assert not w.available
            other.execute("ROLLBACK")
            other.close()
            await reopened(w)
            record = await w.append(stmt(2))
            assert record["seq"] == 2
            assert w.available

    asyncio.run(main())
    assert verify_file(db, PUBLIC).ok


def result_of(i: int, session: str = "s1") -> dict[str, Any]:
    return {"kind": "result", "session": session, "statement_seq": i, "rows": 1, "error": None}


def test_records_lost_while_locked_are_named_by_an_alert_once_it_is_writable(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db, busy_timeout=0.2) as w:
            await w.append(stmt(0))
            other = sqlite3.connect(db, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            lost = [
                w.append_nowait(result_of(0)),
                w.append_nowait({"kind": "session_end", "session": "s1", "reason": "quit"}),
                w.append_nowait(result_of(4, session="s2")),
            ]
            await asyncio.wait(lost)
            assert all(isinstance(f.exception(), LedgerUnavailable) for f in lost)
            # a record its caller waits for is refused to the caller: not a lost one
            assert "locked" in await timed_failure(w, stmt(1))
            other.execute("ROLLBACK")
            other.close()
            await reopened(w)
            await w.append(stmt(2))

    asyncio.run(main())
    assert verify_file(db, PUBLIC).ok
    records = rows(db)
    alerts = [r for r in records if r["kind"] == "alert"]
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["alert"] == "records_lost"
    assert alert["lost"] == 3
    assert alert["lost_kinds"] == ["result=2", "session_end=1"]
    assert alert["sessions"] == ["s1", "s2"]
    assert alert["statements"] == ["s1:0", "s2:4"]
    assert alert["first_ts"] <= alert["last_ts"] <= alert["ts"]
    assert [r["kind"] for r in records if r["seq"] > alert["seq"]] == ["statement", "checkpoint"]
    assert [r["statement_seq"] for r in records if r["kind"] == "statement"] == [0, 2]


def test_a_ledger_that_fails_with_every_other_record_is_said_once_not_each_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ledger that fails and recovers again and again (a disk with room for small records
    only, a lock taken and released): one line says the outage, one its end, one the
    losses; the ones that follow within a minute are counted, not logged each time."""
    db = tmp_path / "ledger.db"
    caplog.set_level(logging.INFO, logger="sqlgate.ledger")

    async def main() -> None:
        async with writer(db, busy_timeout=0.05) as w:
            await w.append(stmt(0))
            for i in range(1, 21):
                other = sqlite3.connect(db, isolation_level=None)
                other.execute("BEGIN IMMEDIATE")
                lost = w.append_nowait(result_of(i))
                await asyncio.wait([lost])
                assert isinstance(lost.exception(), LedgerUnavailable)
                other.execute("ROLLBACK")
                other.close()
                await reopened(w)
                await w.append(stmt(i))  # recovered: the records_lost alert goes first

    asyncio.run(main())
    said = [r.getMessage() for r in caplog.records if r.name == "sqlgate.ledger"]
    assert len(said) == 3, said
    assert said[0].startswith("audit ledger unavailable: ")
    assert said[1].endswith("the audit ledger is available again")
    assert said[2].endswith("1 lost record(s) are named by a records_lost alert")
    records = rows(db)
    alerts = [r for r in records if r["kind"] == "alert"]
    assert [a["alert"] for a in alerts] == ["records_lost"] * 20  # the ledger names each
    assert verify_file(db, PUBLIC).ok


def test_records_lost_in_a_long_outage_are_counted_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that keeps sending while the ledger cannot be written loses a record with
    each refusal: past LOST_KEPT they are counted, not kept one by one, and the
    records_lost alert still counts every one."""
    monkeypatch.setattr(store, "LOST_KEPT", 5)
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db) as w:
            await w.append(stmt(0))
            db.rename(tmp_path / "aside.db")
            db.mkdir()  # a directory in the file's place: every write fails at once
            for i in range(1, 31):
                lost = w.append_nowait(result_of(i, session=f"s{i}"))
                await asyncio.wait([lost])
                assert isinstance(lost.exception(), LedgerUnavailable)
            assert len(w._lost) == 5  # the rest are counted
            db.rmdir()
            (tmp_path / "aside.db").rename(db)
            await reopened(w)
            await w.append(stmt(31))

    asyncio.run(main())
    assert verify_file(db, PUBLIC).ok
    alerts = [r for r in rows(db) if r["kind"] == "alert"]
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["lost"] == 30 and alert["lost_kinds"] == ["result=30"]
    # the sessions of the counted ones too, as many as are kept (LOST_KEPT)
    assert alert["sessions"] == [f"s{i}" for i in range(1, 11)]
    assert alert["sessions_uncounted"] is True
    assert alert["statements"] == [f"s{i}:{i}" for i in range(1, 6)]
    assert alert["statements_unlisted"] == 25


def lost_in_an_outage(tmp_path: Path, sessions: list[str]) -> dict[str, Any]:
    """The records_lost alert for results of ``sessions`` (one each, in order) lost while
    a directory stood in the ledger's place."""
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db) as w:
            await w.append(stmt(0))
            db.rename(tmp_path / "aside.db")
            db.mkdir()
            for i, session in enumerate(sessions, 1):
                lost = w.append_nowait(result_of(i, session=session))
                await asyncio.wait([lost])
                assert isinstance(lost.exception(), LedgerUnavailable)
            db.rmdir()
            (tmp_path / "aside.db").rename(db)
            await reopened(w)
            await w.append(stmt(len(sessions) + 1))

    asyncio.run(main())
    assert verify_file(db, PUBLIC).ok
    (alert,) = [r for r in rows(db) if r["kind"] == "alert"]
    return alert


def test_sessions_of_lost_records_that_were_only_counted_are_counted_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past LOST_KEPT lost records are counted, not named, and their sessions were left
    out of the alert: sessions_unlisted said 0 while sessions it did not list had lost
    records. Those sessions are now listed and counted; should there be more of them than
    can be kept, the alert says so (sessions_uncounted) and sessions_unlisted is then
    a lower bound."""
    monkeypatch.setattr(store, "LOST_KEPT", 5)
    monkeypatch.setattr(store, "LOST_LISTED", 3)
    named = ["a"] * 5  # the first LOST_KEPT: named one by one

    (tmp_path / "exact").mkdir()
    (tmp_path / "more").mkdir()
    alert = lost_in_an_outage(tmp_path / "exact", [*named, *[f"b{i % 4}" for i in range(25)]])
    assert alert["lost"] == 30
    assert alert["sessions"] == ["a", "b0", "b1"]
    assert alert["sessions_unlisted"] == 2  # b2, b3
    assert "sessions_uncounted" not in alert

    alert = lost_in_an_outage(tmp_path / "more", [*named, *[f"c{i}" for i in range(8)]])
    assert alert["lost"] == 13
    assert alert["sessions"] == ["a", "c0", "c1"]
    assert alert["sessions_unlisted"] == 3  # c2 to c4 kept; c5 to c7 not
    assert alert["sessions_uncounted"] is True
    assert alert["reason"].endswith(
        "; they belong to more than 6 session(s): the sessions of the rest were not kept"
    )


def test_the_alerts_the_writer_makes_are_handed_to_on_alert_once_committed(
    tmp_path: Path,
) -> None:
    """records_lost and ledger_replaced are the writer's own records: nobody who appended
    gets them back, so the gateway published none of them. ``on_alert`` gets each one,
    as committed, and nothing else."""
    db = tmp_path / "ledger.db"
    told: list[dict[str, Any]] = []

    async def main() -> None:
        async with writer(db, busy_timeout=0.2) as w:
            w.on_alert = told.append
            await w.append(stmt(0))
            other = sqlite3.connect(db, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            lost = w.append_nowait(result_of(0))
            await asyncio.wait([lost])
            assert isinstance(lost.exception(), LedgerUnavailable)
            other.execute("ROLLBACK")
            other.close()
            await reopened(w)
            await w.append(stmt(1))  # after the records_lost alert
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{db}{suffix}")
            await w.append(stmt(2))  # a new file: after the ledger_replaced alert

    asyncio.run(main())
    assert [a["alert"] for a in told] == ["records_lost", "ledger_replaced"]
    stored = [r for r in rows(db) if r["kind"] == "alert"]
    assert told[1] == stored[0]  # the record itself, as committed


def test_a_lost_record_is_named_at_close_when_nothing_else_comes(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> None:
        async with writer(db, busy_timeout=0.2) as w:
            await w.append(stmt(0))
            await w.checkpoint()
            other = sqlite3.connect(db, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            lost = w.append_nowait(result_of(0))
            await asyncio.wait([lost])
            assert isinstance(lost.exception(), LedgerUnavailable)
            other.execute("ROLLBACK")
            other.close()

    asyncio.run(main())
    assert verify_file(db, PUBLIC).ok
    records = rows(db)
    assert [r["kind"] for r in records[-2:]] == ["alert", "checkpoint"]
    assert records[-2]["alert"] == "records_lost"
    assert records[-2]["statements"] == ["s1:0"]


def _checkpointed(db: Path) -> bool:
    """Whether the ledger has a checkpoint yet: a file the writer is still creating (its
    schema not committed) is not a ledger yet."""
    try:
        return db.exists() and any(r["kind"] == "checkpoint" for r in rows(db))
    except LedgerFileError:
        return False


def test_records_lost_before_the_first_open_are_named_in_the_new_ledger(tmp_path: Path) -> None:
    db = tmp_path / "later" / "ledger.db"

    async def main() -> None:
        w = writer(db, checkpoint_interval=0.05)
        with pytest.raises(LedgerUnavailable, match="cannot open"):
            await w.open()
        lost = w.append_nowait({"kind": "appliance_start", "appliance": "gw"})
        await asyncio.wait([lost])
        assert isinstance(lost.exception(), LedgerUnavailable)
        db.parent.mkdir()
        for _ in range(200):  # retried on its own, within the checkpoint interval
            if _checkpointed(db):
                break
            await asyncio.sleep(0.05)
        await w.close()

    asyncio.run(main())
    assert verify_file(db, PUBLIC).ok
    records = rows(db)
    assert records[0]["alert"] == "records_lost"
    assert records[0]["lost_kinds"] == ["appliance_start=1"]
    assert records[0]["sessions"] == [] and records[0]["statements"] == []


def test_a_second_writer_of_one_file_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> None:
        first = writer(db)
        await first.open()
        await first.append(stmt(0))
        second = writer(db)
        with pytest.raises(
            LedgerFileError, match=rf"in use by another gateway \(pid {os.getpid()}\)"
        ):
            await second.open()
        assert "in use by another gateway" in await timed_failure(second, stmt(1))
        assert [r["seq"] for r in rows(db)] == [1]  # readers take no lock
        await first.close()
        await reopened(second)
        record = await second.append(stmt(2))  # the lock is free: the second goes on
        assert record["seq"] == 3  # after the first one's final checkpoint
        await second.close()

    asyncio.run(main())
    assert verify_file(db, PUBLIC).ok


def test_unavailable_at_open_then_recovers(tmp_path: Path) -> None:
    db = tmp_path / "later" / "ledger.db"

    async def main() -> None:
        w = writer(db)
        with pytest.raises(LedgerUnavailable, match="cannot open"):
            await w.open()
        await timed_failure(w, stmt(0))
        db.parent.mkdir()
        await reopened(w)
        record = await w.append(stmt(1))
        assert record["seq"] == 1
        await w.close()

    asyncio.run(main())
    assert verify_file(db, PUBLIC).ok


def test_a_paused_export_holds_no_snapshot_of_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export whose reader stops reading (a pipe nobody drains) must not keep the
    write-ahead log from being copied back and starting over; it still gives every
    record up to the head at its start, in order, and none after."""
    from appliance.ledger import store

    monkeypatch.setattr(store, "_FETCH", 4)
    db = tmp_path / "ledger.db"

    async def fill(first: int, count: int) -> None:
        async with writer(db) as w:
            for i in range(first, first + count):
                await w.append(stmt(i))

    asyncio.run(fill(0, 10))
    lines = export(db)
    got = [json.loads(next(lines))["seq"]]  # the export pauses here
    asyncio.run(fill(10, 5))  # records written meanwhile, and a checkpoint at close
    other = sqlite3.connect(db, isolation_level=None)
    try:
        busy, frames, copied = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        other.close()
    assert (busy, frames, copied) == (0, 0, 0)  # the WAL was copied back and emptied
    got += [json.loads(line)["seq"] for line in lines]
    assert got == list(range(1, 12))  # 10 statements and a checkpoint: the head at start


def test_a_lone_sessions_record_is_committed_without_waiting_for_other_sessions(
    tmp_path: Path,
) -> None:
    """While every record comes from one session, nobody else's can join its commit: it is
    committed on the first turn of the loop instead of waiting a turn more. Once another
    session's records come, commits wait for company again (one commit for all)."""
    db = tmp_path / "ledger.db"

    async def main() -> tuple[list[bool], int]:
        async with writer(db) as w:
            for i in range(3):  # the writer has seen one session only from now on
                await w.append(stmt(i))
            done = []
            for i in range(3, 6):
                future = w.append_soon(stmt(i))
                await asyncio.sleep(0)  # one turn: the commit scheduled for it runs
                done.append(future.done())
                await future
            before = w.stats.commits

            async def session(i: int) -> int:
                for _ in range(i % 3):  # arrives 0, 1 or 2 turns after the first
                    await asyncio.sleep(0)
                return int((await w.append(stmt(i, session=f"s{i}")))["seq"])

            await asyncio.gather(*(session(i) for i in range(10, 19)))
            return done, w.stats.commits - before

    done, commits = asyncio.run(main())
    assert done == [True, True, True]
    assert commits == 1
    assert verify_file(db, PUBLIC).ok


def test_the_writer_keeps_its_loop_and_still_answers_on_it(tmp_path: Path) -> None:
    """The writer takes the loop it was opened on (asking for the running loop costs a
    system call each time); futures it hands out belong to that loop."""
    db = tmp_path / "ledger.db"

    async def main() -> bool:
        async with writer(db) as w:
            future = w.append_soon(stmt(1))
            same = future.get_loop() is asyncio.get_running_loop()
            await future
            return same

    assert asyncio.run(main())
    assert [r["statement_seq"] for r in rows(db) if r["kind"] == "statement"] == [1]
