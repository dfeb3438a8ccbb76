"""``sqlgate keygen`` and ``sqlgate ledger verify|head|export`` run as real processes on
ledgers written by LedgerWriter; each kind of tampering is done the way an attacker with
the file would (sqlite3, triggers dropped) and must be reported with its first bad seq."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lab.clients import run_sqlgate as sqlgate

from appliance.ledger import LedgerFileError, LedgerWriter, load_private_key
from appliance.ledger.chain import GENESIS_HASH, canonical_json, seal, utc_now

# The layout of the ledger the ``ledger`` fixture writes:
#   1..10 statements (sessions s0/s1 alternating), 11 checkpoint,
#   12..21 statements, 22 checkpoint, 23..27 statements, 28 checkpoint (at close).
RECORDS = 28


def one_line_failure(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def bad_record(result: subprocess.CompletedProcess[str], seq: int) -> str:
    """Verification failed at ``seq``: the reason it gave."""
    line = one_line_failure(result, 1)
    prefix = f"sqlgate: ledger verify: record {seq}: "
    assert line.startswith(prefix), line
    return line[len(prefix) :]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    out = tmp_path / "keys"
    result = sqlgate("keygen", "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def write(db: Path, keys: Path, script: list[dict[str, Any] | None]) -> None:
    """Append each fields dict; None forces a checkpoint; close adds the last one."""

    async def main() -> None:
        key = load_private_key(keys / "ledger.key")
        async with LedgerWriter(db, key, checkpoint_interval=3600) as w:
            for fields in script:
                await (w.checkpoint() if fields is None else w.append(fields))

    asyncio.run(main())


def statements(start: int, count: int) -> list[dict[str, Any] | None]:
    return [
        {
            "kind": "statement",
            "session": f"s{i % 2}",
            "statement_seq": i,
            "identity": "agent@example.com",
            "sql": f"SELECT {i}",
            "decision": "allowed",
        }
        for i in range(start, start + count)
    ]


@pytest.fixture
def ledger(tmp_path: Path, keys: Path) -> Path:
    db = tmp_path / "ledger.db"
    write(db, keys, [*statements(0, 10), None, *statements(10, 10), None, *statements(20, 5)])
    return db


def verify(db: Path, keys: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return sqlgate("ledger", "verify", "--ledger", db, "--pubkey", keys / "ledger.pub", *extra)


def head(db: Path) -> dict[str, Any]:
    result = sqlgate("ledger", "head", "--ledger", db)
    assert result.returncode == 0, result.stderr
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


def bodies(db: Path) -> dict[int, dict[str, Any]]:
    conn = sqlite3.connect(db)
    found = {seq: json.loads(body) for seq, body in conn.execute("SELECT seq, body FROM records")}
    conn.close()
    return found


def attack(db: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Drop the append-only triggers and run SQL, as someone holding the file could."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS records_no_update")
    conn.execute("DROP TRIGGER IF EXISTS records_no_delete")
    for sql, params in statements:
        conn.execute(sql, params)
    conn.close()


def store_body(db: Path, record: dict[str, Any]) -> None:
    text = canonical_json(record).decode()
    attack(db, ("UPDATE records SET body = ? WHERE seq = ?", (text, record["seq"])))


def rewrite_from(db: Path, seq: int) -> None:
    """Recompute every hash from ``seq`` on, as an attacker without the key can: the
    checkpoints get the new hash but keep their old signatures."""
    records = bodies(db)
    prev = records[seq - 1]["hash"] if seq > 1 else GENESIS_HASH
    for n in range(seq, max(records) + 1):
        record = {k: v for k, v in records[n].items() if k not in ("prev_hash", "hash")}
        if record["kind"] == "checkpoint":
            record["checkpoint_hash"] = prev
        sealed = seal(record, prev)
        store_body(db, sealed)
        prev = sealed["hash"]


# -- keygen --------------------------------------------------------------------------------


def test_keygen_writes_a_private_and_a_public_key(keys: Path) -> None:
    key, pub = keys / "ledger.key", keys / "ledger.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    load_private_key(key)


def test_keygen_prints_the_key_id(tmp_path: Path) -> None:
    result = sqlgate("keygen", "--out", tmp_path / "k")
    assert result.returncode == 0
    assert result.stdout.startswith(f"wrote {tmp_path / 'k' / 'ledger.key'} ")
    assert "key_id " in result.stdout


def test_keygen_escapes_the_names_it_echoes(tmp_path: Path) -> None:
    """A directory name with a line break split the one line of output, as errors do not."""
    out = tmp_path / "a\nb"
    result = sqlgate("keygen", "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1, result.stdout
    assert result.stdout.startswith(f"wrote {tmp_path}/a\\nb/ledger.key "), result.stdout
    assert (out / "ledger.key").exists()


def test_keygen_refuses_to_overwrite(keys: Path) -> None:
    before = (keys / "ledger.key").read_bytes()
    line = one_line_failure(sqlgate("keygen", "--out", keys), 1)
    assert (
        line
        == f"sqlgate: {keys / 'ledger.key'}: already exists; refusing to overwrite a ledger key"
    )
    assert (keys / "ledger.key").read_bytes() == before
    (keys / "ledger.key").unlink()  # a lone public key is not overwritten either
    line = one_line_failure(sqlgate("keygen", "--out", keys), 1)
    assert "ledger.pub: already exists" in line
    assert not (keys / "ledger.key").exists()


def test_keygen_into_an_unusable_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    line = one_line_failure(sqlgate("keygen", "--out", tmp_path / "file" / "keys"), 1)
    assert line == (
        f"sqlgate: {tmp_path / 'file' / 'keys'}: cannot create the directory: Not a directory"
    )


def test_keygen_into_a_name_too_long_says_so_in_its_words(tmp_path: Path) -> None:
    """It printed Python's ``[Errno 36] File name too long: '...'``."""
    out = tmp_path / ("a" * 300)
    line = one_line_failure(sqlgate("keygen", "--out", out), 2)
    assert line == f"sqlgate: --out: {out}: File name too long"


def test_keygen_into_a_file_says_it_is_not_a_directory(tmp_path: Path) -> None:
    """It said "cannot create the directory: File exists", which reads as a key clash."""
    (tmp_path / "file").write_text("")
    line = one_line_failure(sqlgate("keygen", "--out", tmp_path / "file"), 2)
    assert line == (
        f"sqlgate: --out: {tmp_path / 'file'} is not a directory (the key pair goes in a directory)"
    )
    assert (tmp_path / "file").read_text() == ""


# -- verify: intact ------------------------------------------------------------------------


def test_verify_intact_ledger(ledger: Path, keys: Path) -> None:
    result = verify(ledger, keys)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"ok: {RECORDS} records, last checkpoint at seq {RECORDS}, which signs seq "
        f"{RECORDS - 1} (0 records after it are not yet signed)\n"
    )


def test_verify_with_the_held_head_inline_and_as_a_file(
    ledger: Path, keys: Path, tmp_path: Path
) -> None:
    held = head(ledger)
    assert set(held) == {"seq", "hash", "ts", "signature", "key_id"}
    assert held["seq"] == RECORDS - 1
    assert held["hash"] == bodies(ledger)[RECORDS - 1]["hash"]
    (tmp_path / "head.json").write_text(json.dumps(held))
    for given in (json.dumps(held), str(tmp_path / "head.json")):
        result = verify(ledger, keys, "--checkpoint", given)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[1] == (
            f"held checkpoint at seq {RECORDS - 1}: present, hash and signature match"
        )


def test_verify_reports_unsigned_records_after_a_crash(tmp_path: Path, keys: Path) -> None:
    db = tmp_path / "ledger.db"
    write(db, keys, [*statements(0, 3), None, *statements(3, 2)])
    # drop the final checkpoint, as if the gateway had died before writing it
    attack(db, ("DELETE FROM records WHERE seq = 7", ()))
    result = verify(db, keys)
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout == "ok: 6 records, last checkpoint at seq 4, which signs seq 3 "
        "(2 records after it are not yet signed)\n"
    )


def test_all_signed_fails_on_records_no_checkpoint_signs(
    ledger: Path, tmp_path: Path, keys: Path
) -> None:
    """An auditor handed the copy of a stopped gateway's ledger wants every record
    signed: a tail appended after the last checkpoint (or a whole ledger without one)
    verified "ok", saying only how many records were not yet signed."""
    assert verify(ledger, keys, "--all-signed").returncode == 0  # the shutdown checkpoint
    db = tmp_path / "crashed.db"
    write(db, keys, [*statements(0, 3), None, *statements(3, 2)])
    attack(db, ("DELETE FROM records WHERE seq = 7", ()))  # died before its last one
    assert verify(db, keys).returncode == 0
    assert bad_record(verify(db, keys, "--all-signed"), 5) == (
        "not signed: 2 records follow the last checkpoint (seq 4); a gateway that stops "
        "cleanly signs its last records, a running one within a second"
    )
    attack(db, ("DELETE FROM records WHERE seq >= 4", ()))  # no checkpoint at all
    assert bad_record(verify(db, keys, "--all-signed"), 1) == (
        "not signed: the ledger holds no checkpoint"
    )


def test_verify_names_the_records_signed_after_the_fact(ledger: Path, keys: Path) -> None:
    """Records added to a stopped gateway's file are signed at its next start, after an
    unsigned_tail_signed alert naming them: verify said "ok", every record signed, and an
    auditor who did not read the alerts took them for the gateway's word."""
    prev = bodies(ledger)[RECORDS]["hash"]
    for seq in (RECORDS + 1, RECORDS + 2):
        fields = statements(seq, 1)[0]
        assert fields is not None
        sealed = seal({"seq": seq, "ts": utc_now(), **fields}, prev)
        text = canonical_json(sealed).decode()
        row = (seq, sealed["ts"], "statement", sealed["session"], text)
        attack(ledger, ("INSERT INTO records VALUES (?, ?, ?, ?, ?)", row))
        prev = sealed["hash"]
    write(ledger, keys, statements(40, 1))
    result = verify(ledger, keys)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        f"records {RECORDS + 1} to {RECORDS + 2}: signed after the fact, not the gateway's "
        "word (an unsigned_tail_signed alert names them: it found them unsigned, left by a "
        "run that stopped before signing them or added to the file)"
    ]


def test_verify_a_ledger_being_written(tmp_path: Path, keys: Path) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> subprocess.CompletedProcess[str]:
        key = load_private_key(keys / "ledger.key")
        async with LedgerWriter(db, key, checkpoint_interval=3600) as w:
            for fields in statements(0, 50):
                assert fields is not None
                await w.append(fields)
            await w.checkpoint()
            await w.append({"kind": "alert", "alert": "x", "reason": "y"})
            return await asyncio.to_thread(verify, db, keys)

    result = asyncio.run(main())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "ok: 52 records, last checkpoint at seq 51, which signs seq 50 (1 record after it is "
        "not yet signed)"
    )


# -- verify: one test per kind of tampering ------------------------------------------------


def test_edited_record(ledger: Path, keys: Path) -> None:
    record = bodies(ledger)[5]
    store_body(ledger, {**record, "sql": "SELECT nothing_to_see"})
    assert bad_record(verify(ledger, keys), 5) == (
        "hash does not match the record's contents (the record was edited)"
    )


def test_edited_record_with_the_chain_rewritten(ledger: Path, keys: Path) -> None:
    record = bodies(ledger)[5]
    store_body(ledger, {**record, "decision": "blocked"})
    rewrite_from(ledger, 5)
    reason = bad_record(verify(ledger, keys), 11)
    assert reason.startswith("checkpoint signature does not verify with this public key")


def test_deleted_record(ledger: Path, keys: Path) -> None:
    attack(ledger, ("DELETE FROM records WHERE seq = 7", ()))
    reason = bad_record(verify(ledger, keys), 7)
    assert reason.startswith("missing: the next record is seq 8")


def test_inserted_record(ledger: Path, keys: Path) -> None:
    records = bodies(ledger)
    forged = seal(
        {**records[5], "seq": 5, "ts": utc_now(), "sql": "GRANT ALL ON *.* TO mallory"},
        records[4]["hash"],
    )
    attack(
        ledger,
        ("UPDATE records SET seq = -seq WHERE seq >= 5", ()),
        ("UPDATE records SET seq = 1 - seq WHERE seq < 0", ()),
        (
            "INSERT INTO records VALUES (5, ?, ?, ?, ?)",
            (forged["ts"], forged["kind"], forged.get("session"), canonical_json(forged).decode()),
        ),
    )
    reason = bad_record(verify(ledger, keys), 6)
    assert reason.startswith("found seq 5 where seq 6 was expected (a record was inserted")


def test_reordered_records(ledger: Path, keys: Path) -> None:
    attack(
        ledger,
        ("UPDATE records SET seq = -1 WHERE seq = 5", ()),
        ("UPDATE records SET seq = 5 WHERE seq = 6", ()),
        ("UPDATE records SET seq = 6 WHERE seq = -1", ()),
    )
    reason = bad_record(verify(ledger, keys), 5)
    assert reason.startswith("missing: the next record is seq 6")
    assert "reordered" in reason


def test_broken_checkpoint_signature(ledger: Path, keys: Path) -> None:
    records = bodies(ledger)
    store_body(ledger, {**records[22], "signature": records[11]["signature"]})
    rewrite_from(ledger, 22)  # so that only the signature is wrong
    reason = bad_record(verify(ledger, keys), 22)
    assert reason.startswith("checkpoint signature does not verify with this public key")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"note": "all statements approved"},
            "checkpoint holds fields the gateway does not write (note)",
        ),
        (
            {"key_id": "0123456789abcdef"},
            "checkpoint says key_id '0123456789abcdef', but this public key ({kid}) signed it",
        ),
    ],
)
def test_the_newest_checkpoint_s_own_fields_are_the_writer_s(
    ledger: Path, keys: Path, change: dict[str, str], reason: str
) -> None:
    """A checkpoint's signature covers the record before it, not its own fields: the newest
    one, no other signature over it, took a field of anyone's or another key_id (which
    ``ledger head`` hands out), its hash computed again, and verify passed."""
    record = {k: v for k, v in bodies(ledger)[RECORDS].items() if k != "hash"}
    kid = record["key_id"]
    store_body(ledger, seal({**record, **change}, record["prev_hash"]))
    assert bad_record(verify(ledger, keys), RECORDS) == reason.format(kid=kid)


def test_another_public_key(ledger: Path, keys: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert sqlgate("keygen", "--out", other).returncode == 0
    key_id = bodies(ledger)[11]["key_id"]
    reason = bad_record(verify(ledger, other), 11)
    assert reason.startswith(f"checkpoint signature is by key_id {key_id}, not this public key")


def test_tail_cut_off_after_the_held_head(ledger: Path, keys: Path) -> None:
    held = json.dumps(head(ledger))  # seq 27
    attack(ledger, ("DELETE FROM records WHERE seq > 20", ()))
    assert verify(ledger, keys).returncode == 0  # without the head, a shorter ledger is fine
    reason = bad_record(verify(ledger, keys, "--checkpoint", held), 21)
    assert reason.startswith("ledger ends at seq 20, before the held checkpoint at seq 27")


def test_rolled_back_to_an_older_copy(ledger: Path, keys: Path, tmp_path: Path) -> None:
    backup = tmp_path / "backup.db"
    shutil.copyfile(ledger, backup)
    write(ledger, keys, statements(100, 5))  # 29..33, checkpoint 34
    held = json.dumps(head(ledger))  # seq 33
    shutil.copyfile(backup, ledger)
    reason = bad_record(verify(ledger, keys, "--checkpoint", held), 29)
    assert reason.startswith("ledger ends at seq 28, before the held checkpoint at seq 33")


def test_rolled_back_and_written_again(ledger: Path, keys: Path, tmp_path: Path) -> None:
    backup = tmp_path / "backup.db"
    shutil.copyfile(ledger, backup)
    write(ledger, keys, statements(100, 5))
    held = head(ledger)
    shutil.copyfile(backup, ledger)
    write(ledger, keys, statements(200, 5))  # the gateway carries on from the old copy
    actual = bodies(ledger)[33]["hash"]
    reason = bad_record(verify(ledger, keys, "--checkpoint", json.dumps(held)), 33)
    assert reason.startswith(f"has hash {actual}, the held checkpoint says {held['hash']}")


def test_held_head_with_a_forged_signature(ledger: Path, keys: Path) -> None:
    held = head(ledger)
    held["signature"] = bodies(ledger)[11]["signature"]
    reason = bad_record(verify(ledger, keys, "--checkpoint", json.dumps(held)), 27)
    assert reason == "the held checkpoint's signature does not verify with this public key"


def test_row_seq_changed_without_the_body(ledger: Path, keys: Path) -> None:
    attack(ledger, ("UPDATE records SET seq = 1000 WHERE seq = 28", ()))
    reason = bad_record(verify(ledger, keys), 28)
    assert reason == "stored in row 1000 but the record says seq 28"


def test_a_seq_column_retyped_as_text_is_a_bad_record_not_a_crash(ledger: Path, keys: Path) -> None:
    """A table made again with seq as TEXT holds '1', '10', '11', ...: verify names the
    first record that is not in place; it failed with a TypeError."""
    attack(
        ledger,
        ("ALTER TABLE records RENAME TO old_records", ()),
        ("CREATE TABLE records (seq TEXT, ts, kind, session, body)", ()),
        ("INSERT INTO records SELECT * FROM old_records", ()),
        ("DROP TABLE old_records", ()),
    )
    reason = bad_record(verify(ledger, keys), 1)
    assert reason == "stored in row '1' (not an integer) but the record says seq 1"


def test_a_row_with_no_seq_is_named_for_what_it_is(ledger: Path, keys: Path) -> None:
    """A table made again without its primary key, the newest checkpoint's seq set to NULL:
    verify blamed record 1 (where the row sorts) as "missing", and head handed out the
    checkpoint before it."""
    attack(
        ledger,
        ("ALTER TABLE records RENAME TO old_records", ()),
        ("CREATE TABLE records (seq, ts, kind, session, body)", ()),
        ("INSERT INTO records SELECT * FROM old_records", ()),
        ("DROP TABLE old_records", ()),
        ("UPDATE records SET seq = NULL WHERE seq = ?", (RECORDS,)),
    )
    where = (
        f"a row with no seq (NULL) follows record {RECORDS - 1} in the table (its text says "
        f"seq {RECORDS}): it has no place in the chain (the table was made again and edited)"
    )
    assert bad_record(verify(ledger, keys), RECORDS) == where
    line = one_line_failure(sqlgate("ledger", "head", "--ledger", ledger), 1)
    assert line == (
        f"sqlgate: {ledger}: {where}; the newest checkpoint cannot be told ('sqlgate ledger "
        "verify' names the first bad record)"
    )
    # export gives the records that have a seq, then says what it left out (it used to
    # leave the row out in silence, exit 0)
    exported = sqlgate("ledger", "export", "--ledger", ledger)
    assert exported.returncode == 1
    assert [json.loads(x)["seq"] for x in exported.stdout.splitlines()] == list(range(1, RECORDS))
    assert exported.stderr.strip() == (
        f"sqlgate: {ledger}: {where}; it was not exported ('sqlgate ledger verify' names the "
        "first bad record)"
    )


_REMADE = [
    # a column named rowid shadows the row id that export --session reads each body by:
    # NULL for seq 6 (SELECT 5, session s1) left it out of export --session s1 and of
    # replay s1, while verify, reading every row, passed
    (
        ("ALTER TABLE records ADD COLUMN rowid INTEGER", ()),
        ("UPDATE records SET rowid = seq WHERE seq <> 6", ()),
    ),
    (
        ("ALTER TABLE records RENAME TO old_records", ()),
        ("CREATE VIEW records AS SELECT seq, ts, kind, session, body FROM old_records", ()),
    ),
    (
        ("ALTER TABLE records RENAME TO old_records", ()),
        (
            "CREATE TABLE records (seq INTEGER PRIMARY KEY, ts TEXT, kind TEXT, "
            "session TEXT, body TEXT) WITHOUT ROWID",
            (),
        ),
        ("INSERT INTO records SELECT * FROM old_records", ()),
    ),
]


@pytest.mark.parametrize("remade", _REMADE, ids=["rowid-column", "view", "without-rowid"])
def test_a_records_table_of_another_shape_is_refused(
    ledger: Path, keys: Path, remade: tuple[tuple[str, tuple[object, ...]], ...]
) -> None:
    """Every reader relies on the table's shape; one of another shape could show export
    and replay other records than verify read (verify passed, export --session s1 and
    replay s1 left out a statement): all of them refuse it, exit 1."""
    attack(ledger, *remade)
    checks = [
        verify(ledger, keys),
        sqlgate("ledger", "export", "--ledger", ledger, "--session", "s1"),
        sqlgate("ledger", "head", "--ledger", ledger),
        sqlgate("replay", "s1", "--ledger", ledger, "--speed", "1000000"),
    ]
    for result in checks:
        line = one_line_failure(result, 1)
        assert line.startswith(f"sqlgate: {ledger}: "), line
        assert line.endswith(
            "the file was edited (a reader could be shown other records than those verified)"
        ), line
        assert result.stdout == ""


@pytest.mark.parametrize("remade", _REMADE, ids=["rowid-column", "view", "without-rowid"])
def test_the_gateway_does_not_extend_a_records_table_of_another_shape(
    ledger: Path, keys: Path, remade: tuple[tuple[str, tuple[object, ...]], ...]
) -> None:
    """Its readers refuse such a file; the gateway went on appending to it."""
    attack(ledger, *remade)
    before = ledger.read_bytes()

    async def main() -> None:
        writer = LedgerWriter(ledger, load_private_key(keys / "ledger.key"))
        with pytest.raises(LedgerFileError, match="the file was edited; refusing to extend it"):
            await writer.open()
        await writer.close()

    asyncio.run(main())
    assert ledger.read_bytes() == before


@pytest.mark.parametrize("column", ["kind", "session", "ts"])
def test_a_relabelled_column_is_detected(ledger: Path, keys: Path, column: str) -> None:
    """The columns copy the record's fields for export's filters: one changed would hide
    the record from an export (or a replay) the auditor trusts because verify passed."""
    attack(ledger, (f"UPDATE records SET {column} = 'x' WHERE seq = 3", ()))
    reason = bad_record(verify(ledger, keys), 3)
    assert reason.startswith("the row's ts, kind or session column differs from the record")


def test_head_refuses_a_checkpoint_copied_to_the_end(ledger: Path, keys: Path) -> None:
    """A record chained at the end that carries checkpoint 11's signed seq, hash and
    signature: head handed out that old head, and a rollback to it passed verify
    --checkpoint."""
    found = bodies(ledger)
    old = found[11]
    copied = {k: v for k, v in old.items() if k not in ("prev_hash", "hash")}
    copied["seq"] = RECORDS + 1
    record = seal(copied, found[RECORDS]["hash"])
    attack(
        ledger,
        (
            "INSERT INTO records (seq, ts, kind, session, body) VALUES (?, ?, ?, ?, ?)",
            (RECORDS + 1, old["ts"], "checkpoint", None, canonical_json(record).decode()),
        ),
    )
    result = sqlgate("ledger", "head", "--ledger", ledger)
    line = one_line_failure(result, 1)
    assert line.endswith(
        f"record {RECORDS + 1}: a checkpoint that signs seq 10, not the record before it"
    ), line
    bad_record(verify(ledger, keys), RECORDS + 1)


def test_head_is_found_by_what_the_records_say(ledger: Path, keys: Path) -> None:
    """Relabelling the newest checkpoint's kind column must not hand out an older head
    (a rollback to that head would then pass verify --checkpoint)."""
    newest = sqlgate("ledger", "head", "--ledger", ledger)
    assert newest.returncode == 0, newest.stderr
    attack(
        ledger,
        (
            "UPDATE records SET kind = 'result' WHERE seq = "
            "(SELECT max(seq) FROM records WHERE kind = 'checkpoint')",
            (),
        ),
    )
    again = sqlgate("ledger", "head", "--ledger", ledger)
    assert again.returncode == 0 and json.loads(again.stdout) == json.loads(newest.stdout)


def rewrite_index(db: Path, name: str, made: str, shown: str) -> None:
    """Make index ``name`` by ``made``, then put back ``shown`` as its SQL text (PRAGMA
    writable_schema), as someone holding the file could: SQLite then reads the index's
    entries as what ``shown`` says they hold."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"DROP INDEX IF EXISTS {name}")
    conn.execute(made)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = ? WHERE name = ?", (shown, name))
    conn.execute("PRAGMA writable_schema = OFF")
    conn.close()


FORGED = 'replace(body, \'"sql":"SELECT 4"\', \'"sql":"DROP TABLE customers"\')'


def test_a_rewritten_index_shows_no_reader_its_text(ledger: Path) -> None:
    """Indexes whose entries carry another text of record 5 (a covering index over
    ``body``, its SQL text put back): export by session or kind and replay showed the
    forged statement, read from the index, while verify read the table."""
    rewrite_index(
        ledger,
        "records_session",
        f"CREATE INDEX records_session ON records(session, seq, {FORGED})",
        "CREATE INDEX records_session ON records(session, seq, body)",
    )
    rewrite_index(
        ledger,
        "records_kind",
        f"CREATE INDEX records_kind ON records(kind, seq, {FORGED})",
        "CREATE INDEX records_kind ON records(kind, seq, body)",
    )
    for filters in (["--session", "s0"], ["--kind", "statement"], []):
        result = sqlgate("ledger", "export", "--ledger", ledger, *filters)
        assert result.returncode == 0, result.stderr
        shown = {json.loads(line)["seq"]: json.loads(line) for line in result.stdout.splitlines()}
        assert shown[5]["sql"] == "SELECT 4", filters
        assert "DROP TABLE" not in result.stdout, filters
    result = sqlgate("replay", "s0", "--ledger", ledger, "--speed", "1000")
    assert result.returncode == 0, result.stderr
    assert "> SELECT 4\n" in result.stdout and "DROP TABLE" not in result.stdout


def test_head_is_not_read_through_a_rewritten_index(ledger: Path) -> None:
    """An index on the records' kind that leaves the newest checkpoint out, its SQL text
    put back: head handed out the checkpoint before it (an older head)."""
    newest = head(ledger)
    kind = "json_extract(body, '$.kind')"
    rewrite_index(
        ledger,
        "records_body_kind",
        f"CREATE INDEX records_body_kind ON records(CASE WHEN seq = {RECORDS} THEN 'x' "
        f"ELSE {kind} END, seq, body)",
        f"CREATE INDEX records_body_kind ON records({kind}, seq, body)",
    )
    assert head(ledger) == newest


def test_verify_reports_a_rewritten_index(ledger: Path, keys: Path, tmp_path: Path) -> None:
    """Verify read the table and passed a file whose index shows other text of a record,
    or leaves it out; it names the record and the index."""
    copy = tmp_path / "copy.db"
    shutil.copyfile(ledger, copy)
    rewrite_index(
        ledger,
        "records_session",
        f"CREATE INDEX records_session ON records(session, seq, {FORGED})",
        "CREATE INDEX records_session ON records(session, seq, body)",
    )
    assert bad_record(verify(ledger, keys), 5) == (
        "the file's index records_session does not hold this record as the table does (the "
        "index was rewritten or damaged: a reader using it would be shown other text, or "
        "nothing)"
    )
    rewrite_index(
        copy,
        "records_session",
        "CREATE INDEX records_session ON records(session) WHERE seq <> 7",
        "CREATE INDEX records_session ON records(session)",
    )
    assert bad_record(verify(copy, keys), 7).startswith(
        "the file's index records_session does not hold this record"
    )


def test_body_that_is_not_json(ledger: Path, keys: Path) -> None:
    attack(ledger, ("UPDATE records SET body = '{oops' WHERE seq = 9", ()))
    assert bad_record(verify(ledger, keys), 9) == "the stored record is not valid JSON"


# -- head and export -----------------------------------------------------------------------


def test_head_without_a_checkpoint(tmp_path: Path, keys: Path) -> None:
    db = tmp_path / "ledger.db"
    write(db, keys, [])  # an empty ledger: nothing to sign, no checkpoint
    line = one_line_failure(sqlgate("ledger", "head", "--ledger", db), 1)
    assert line == f"sqlgate: {db}: no signed checkpoint yet"


def test_export_prints_the_stored_bodies_oldest_first(ledger: Path) -> None:
    result = sqlgate("ledger", "export", "--ledger", ledger)
    assert result.returncode == 0, result.stderr
    conn = sqlite3.connect(ledger)
    stored = [body for (body,) in conn.execute("SELECT body FROM records ORDER BY seq")]
    conn.close()
    assert result.stdout.splitlines() == stored
    assert [json.loads(line)["seq"] for line in stored] == list(range(1, RECORDS + 1))


def export_seqs(ledger: Path, *filters: str) -> list[int]:
    result = sqlgate("ledger", "export", "--ledger", ledger, *filters)
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["seq"] for line in result.stdout.splitlines()]


def test_export_filters(ledger: Path) -> None:
    records = bodies(ledger)
    s1 = [seq for seq, r in records.items() if r.get("session") == "s1"]
    assert export_seqs(ledger, "--session", "s1") == s1 and len(s1) == 12
    assert export_seqs(ledger, "--kind", "checkpoint") == [11, 22, 28]
    assert export_seqs(ledger, "--kind", "checkpoint", "--session", "s1") == []
    assert export_seqs(ledger, "--since", "2000-01-01") == list(range(1, RECORDS + 1))
    assert export_seqs(ledger, "--since", "2999") == []
    since = records[20]["ts"]
    assert export_seqs(ledger, "--since", since) == list(range(20, RECORDS + 1))
    as_offset = since[:-1] + "+00:00"
    assert export_seqs(ledger, "--since", as_offset) == list(range(20, RECORDS + 1))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "statments"], "sqlgate: --kind: 'statments' is not one of appliance_start"),
        (["--since", "last week"], "sqlgate: --since: 'last week' is not an ISO 8601 date"),
    ],
)
def test_export_bad_filters_exit_2(ledger: Path, args: list[str], message: str) -> None:
    line = one_line_failure(sqlgate("ledger", "export", "--ledger", ledger, *args), 2)
    assert line.startswith(message)


def test_export_stops_at_a_damaged_record_naming_it(ledger: Path) -> None:
    attack(ledger, ("UPDATE records SET body = ? WHERE seq = 5", ("{oops",)))
    result = sqlgate("ledger", "export", "--ledger", ledger)
    line = one_line_failure(result, 1)
    assert line.startswith(f"sqlgate: {ledger}: record 5: the stored record is not a JSON object")
    assert [json.loads(out)["seq"] for out in result.stdout.splitlines()] == [1, 2, 3, 4]


def break_utf8(db: Path, seq: int) -> None:
    """Store record ``seq`` with one byte of its text changed to one that is not UTF-8."""
    conn = sqlite3.connect(db)
    (raw,) = conn.execute("SELECT CAST(body AS BLOB) FROM records WHERE seq = ?", (seq,)).fetchone()
    conn.close()
    broken = raw[:40] + b"\xff" + raw[41:]
    attack(db, ("UPDATE records SET body = CAST(? AS TEXT) WHERE seq = ?", (broken, seq)))


def test_a_body_that_is_not_utf8_is_named_at_its_own_record(ledger: Path, keys: Path) -> None:
    """One byte that is not UTF-8 in record 20: verify named record 1 (the first row of
    its read), export printed nothing and exited 2, head failed in SQLite's words."""
    break_utf8(ledger, 20)
    assert bad_record(verify(ledger, keys), 20) == (
        "the stored record is not UTF-8 text (the file was edited or damaged)"
    )
    result = sqlgate("ledger", "export", "--ledger", ledger)
    line = one_line_failure(result, 1)
    assert line == (
        f"sqlgate: {ledger}: record 20: the stored record is not UTF-8 text (the file was "
        "damaged or edited; 'sqlgate ledger verify' names the first bad record)"
    )
    assert [json.loads(out)["seq"] for out in result.stdout.splitlines()] == list(range(1, 20))
    break_utf8(ledger, RECORDS)  # the newest checkpoint
    line = one_line_failure(sqlgate("ledger", "head", "--ledger", ledger), 1)
    assert line == f"sqlgate: {ledger}: record {RECORDS}: the stored record is not UTF-8 text"


def test_export_gives_each_record_one_line(ledger: Path, keys: Path) -> None:
    """A body spread over lines (rewritten: verify says so) still exports as JSON lines."""
    record = bodies(ledger)[5]
    attack(ledger, ("UPDATE records SET body = ? WHERE seq = 5", (json.dumps(record, indent=1),)))
    result = sqlgate("ledger", "export", "--ledger", ledger)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, RECORDS + 1))
    assert json.loads(lines[4]) == record
    assert bad_record(verify(ledger, keys), 5).startswith(
        "the stored text is not the record's canonical JSON"
    )


# -- files that are not what they should be ------------------------------------------------


def test_missing_and_foreign_files_are_one_line(tmp_path: Path, keys: Path, ledger: Path) -> None:
    missing = tmp_path / "missing.db"
    for action in (["verify", "--pubkey", str(keys / "ledger.pub")], ["head"], ["export"]):
        line = one_line_failure(sqlgate("ledger", action[0], "--ledger", missing, *action[1:]), 2)
        assert line == f"sqlgate: {missing}: no such file"
    loop = tmp_path / "loop.db"  # was "no such file" too
    loop.symlink_to(loop)
    line = one_line_failure(sqlgate("ledger", "export", "--ledger", loop), 2)
    assert line == f"sqlgate: {loop}: Too many levels of symbolic links"
    not_sqlite = keys / "ledger.pub"
    line = one_line_failure(sqlgate("ledger", "head", "--ledger", not_sqlite), 2)
    assert line.startswith(f"sqlgate: {not_sqlite}: not a sqlgate ledger")
    other_db = tmp_path / "other.db"
    sqlite3.connect(other_db).execute("CREATE TABLE t (x)").connection.close()
    line = one_line_failure(sqlgate("ledger", "export", "--ledger", other_db), 2)
    assert line == f"sqlgate: {other_db}: not a sqlgate ledger"
    line = one_line_failure(sqlgate("ledger", "head", "--ledger", tmp_path), 2)
    assert line == f"sqlgate: {tmp_path}: is a directory, not a ledger"


def test_bad_public_key_files(ledger: Path, keys: Path, tmp_path: Path) -> None:
    line = one_line_failure(
        sqlgate("ledger", "verify", "--ledger", ledger, "--pubkey", keys / "ledger.key"), 2
    )
    assert line.endswith("holds a private key; give the public key (ledger.pub)")
    line = one_line_failure(
        sqlgate("ledger", "verify", "--ledger", ledger, "--pubkey", tmp_path / "nope.pub"), 2
    )
    assert (
        line == f"sqlgate: {tmp_path / 'nope.pub'}: cannot read the key: No such file or directory"
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("{not json", "sqlgate: --checkpoint: not a head as 'sqlgate ledger head' prints it"),
        ('{"seq": 3}', "sqlgate: --checkpoint: not a head as 'sqlgate ledger head' prints it"),
        ("no-such-head.json", "sqlgate: --checkpoint: no-such-head.json: cannot read the file"),
    ],
)
def test_bad_held_head(ledger: Path, keys: Path, given: str, message: str) -> None:
    line = one_line_failure(verify(ledger, keys, "--checkpoint", given), 2)
    assert line.startswith(message)


def without_write_access(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``sqlgate ARGS`` as a reader who may not write where the ledger is (root keeps
    that right through CAP_DAC_OVERRIDE, so it is dropped)."""
    command = [sys.executable, "-m", "appliance.cli", *map(str, args)]
    if os.geteuid() == 0:
        drop = ["--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--"]
        command = ["setpriv", *drop, *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_a_read_only_copy_reads_without_write_access(
    tmp_path: Path, keys: Path, ledger: Path
) -> None:
    """An auditor's copy in a directory they cannot write: SQLite cannot create the -shm
    file a WAL ledger is read through, and the file alone is the whole ledger."""
    folder = tmp_path / "audit"
    folder.mkdir()
    copy = folder / "ledger.db"
    shutil.copy(ledger, copy)  # closed by its writer: no -wal left
    copy.chmod(0o444)
    folder.chmod(0o555)
    try:
        result = without_write_access(
            "ledger", "verify", "--ledger", copy, "--pubkey", keys / "ledger.pub"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"ok: {RECORDS} records")
        result = without_write_access("ledger", "export", "--ledger", copy)
        assert len(result.stdout.splitlines()) == RECORDS, result.stderr
        # with a write-ahead log to read, the reader is told what to do
        folder.chmod(0o755)
        Path(f"{copy}-wal").write_bytes(b"x" * 100)
        folder.chmod(0o555)
        line = one_line_failure(without_write_access("ledger", "head", "--ledger", copy), 2)
        assert line == (
            f"sqlgate: {copy}: its write-ahead log (ledger.db-wal) can only be read where "
            "SQLite may create the -shm file beside it: copy the ledger with its -wal file "
            "to a directory you can write to"
        )
    finally:
        folder.chmod(0o755)


def test_a_record_holding_nan_is_not_json(ledger: Path, keys: Path) -> None:
    """A record added to the tail with NaN in it and a hash over its own text: verify
    passed it (and the next run signed it) while export called the file damaged."""
    last = max(bodies(ledger).items())[1]
    seq, prev = last["seq"] + 1, last["hash"]
    text = (
        f'{{"kind":"result","prev_hash":"{prev}","rows":NaN,"seq":{seq},'
        '"session":"s1","ts":"2030-01-01T00:00:00.000000Z"}'
    )
    digest = hashlib.sha256(bytes.fromhex(prev) + text.encode()).hexdigest()
    body = f'{{"hash":"{digest}",' + text[1:]
    attack(
        ledger,
        (
            "INSERT INTO records VALUES (?, ?, 'result', 's1', ?)",
            (seq, "2030-01-01T00:00:00.000000Z", body),
        ),
    )
    assert bad_record(verify(ledger, keys), seq) == "the stored record is not valid JSON"
