"""The texts a record carries beside a COM_QUERY's, in a session whose character set is
not UTF-8 (real MariaDB, PyMySQL and mysql-connector in latin1): the prepared text on an
execute's record, a text over ``max_statement_bytes``, the schema of COM_INIT_DB and the
table of COM_FIELD_LIST, a text never decided, the database a login names, the text
masking ran instead. Each is read as the server reads it, in the session's
``character_set_client``, with ``sql_hex`` and ``sql_charset`` where a record's ``sql``
is not its bytes in UTF-8."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from lab.clients import ledger_records, run_sqlgate
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB
from pymysql.constants import COMMAND

from appliance.audit import Audit
from appliance.config import load_config
from appliance.mysql.constants import Command
from appliance.mysql.relay import ClientCommand
from appliance.mysql.wire import frame

PREPARED = "SELECT ? AS n, 'th\u00e9' AS word"  # 'thé'
BIG = "SELECT '" + "\u00e9" * 1500 + "' AS big"  # 1,500 bytes in latin1, 3,000 in UTF-8
SCHEMA = "caf\u00e9"
TABLE = "pr\u00e9s"


@pytest.fixture(scope="module")
def carried(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, dict[str, str]]]:
    """A session of each case, then the gateway stopped (its ledger checkpointed)."""
    work = tmp_path_factory.mktemp("gw-carried")
    gw = GatewayProcess(
        work, mariadb, mariadb.pki, extra_toml="[policy]\nmax_statement_bytes = 1024\n"
    ).start()
    names = []
    conn = gw.connector(charset="latin1", collation="latin1_swedish_ci")
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(PREPARED, (1,))
        assert cur.fetchall() == [(1, "th\u00e9")]
        conn.set_charset_collation("utf8mb4")  # SET NAMES: the prepared text stays latin1
        with pytest.raises(mysql.connector.Error, match="rule 'charset'"):
            cur.execute(PREPARED, (2,))  # (a text not ASCII: refused in another one)
        cur.close()
    finally:
        conn.close()
    names.append("prepared")
    with gw.connect(charset="latin1") as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError):
            cur.execute(BIG)
        with pytest.raises(pymysql.err.MySQLError):
            conn.select_db(SCHEMA)
        conn._execute_command(COMMAND.COM_FIELD_LIST, TABLE.encode("latin1") + b"\0")
        with pytest.raises(pymysql.err.MySQLError):
            conn._read_packet()
    names.append("names")
    gw.stop()
    starts = [r for r in ledger_records(gw.ledger) if r["kind"] == "session_start"]
    yield gw, dict(zip(names, [r["session"] for r in starts], strict=True))


def statements(gw: GatewayProcess, session: str) -> list[dict[str, Any]]:
    return [r for r in ledger_records(gw.ledger, "--session", session) if r["kind"] == "statement"]


def test_an_execute_carries_the_prepared_text_read_as_at_its_prepare(
    carried: tuple[GatewayProcess, dict[str, str]],
) -> None:
    """An execute's record carried its prepared text read as UTF-8: a latin1 client's
    ``'thé'`` was ``'th\\ufffd'`` (its prepare's record read it right), with nothing to
    say which bytes. It is read in the character set of the session at the prepare (a
    SET NAMES since does not change what the server prepared), with its bytes."""
    gw, sessions = carried
    executes = [
        r for r in statements(gw, sessions["prepared"]) if r["command"] == "COM_STMT_EXECUTE"
    ]
    assert [r["rule"] for r in executes] == ["prepared", "charset"]
    for record in executes:
        assert record["sql"] == PREPARED, record
        assert record["sql_hex"] == PREPARED.encode("latin1").hex()
        assert record["sql_charset"] == "latin1"


def test_an_oversized_text_is_read_in_the_sessions_character_set(
    carried: tuple[GatewayProcess, dict[str, str]],
) -> None:
    """A text over ``max_statement_bytes`` was recorded read as UTF-8 (1,500 U+FFFD)."""
    gw, sessions = carried
    (big,) = [r for r in statements(gw, sessions["names"]) if r["rule"] == "oversized"]
    assert big["sql"] == BIG
    assert big["sql_hex"] == BIG.encode("latin1").hex() and big["sql_charset"] == "latin1"
    command = bytes([3]) + bytes.fromhex(big["sql_hex"])
    assert hashlib.sha256(command).hexdigest() == big["sql_sha256"]


def test_names_of_init_db_and_field_list_are_read_in_the_sessions_character_set(
    carried: tuple[GatewayProcess, dict[str, str]],
) -> None:
    """COM_INIT_DB's schema and COM_FIELD_LIST's table were read as UTF-8: a latin1
    client's ``café`` was recorded as ``USE `caf\\ufffd```. They are read as the server
    reads them, and the record keeps the command's bytes."""
    gw, sessions = carried
    records = statements(gw, sessions["names"])
    (use,) = [r for r in records if r["command"] == "COM_INIT_DB"]
    assert use["sql"] == f"USE `{SCHEMA}`", use
    assert bytes.fromhex(use["sql_hex"]) == SCHEMA.encode("latin1")
    assert use["sql_charset"] == "latin1"
    assert f"schema name `{SCHEMA}` holds" in use["reason"]  # as the server reads it
    (fields,) = [r for r in records if r["command"] == "COM_FIELD_LIST"]
    assert fields["sql"] == f"SHOW COLUMNS FROM `{TABLE}`", fields
    assert bytes.fromhex(fields["sql_hex"]) == TABLE.encode("latin1") + b"\0"
    assert f"table name `{TABLE}` holds" in fields["reason"]
    for record in (use, fields):
        command = bytes([2 if record is use else 4]) + bytes.fromhex(record["sql_hex"])
        assert hashlib.sha256(command).hexdigest() == record["sql_sha256"]


def test_the_ledger_verifies(carried: tuple[GatewayProcess, dict[str, str]]) -> None:
    gw, _ = carried
    verify = run_sqlgate(
        "ledger", "verify", "--ledger", str(gw.ledger), "--pubkey", str(gw.public_key())
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_replay_shows_an_executes_bytes(carried: tuple[GatewayProcess, dict[str, str]]) -> None:
    """Replay shows the execute's prepared text as read at its prepare, then its bytes."""
    gw, sessions = carried
    out = run_sqlgate("replay", sessions["prepared"], "--ledger", str(gw.ledger), "--speed", "1000")
    assert out.returncode == 0, out.stderr
    hexed = PREPARED.encode("latin1").hex().upper()
    shown = out.stdout.count(f"> {PREPARED}\n")
    assert shown >= 3  # the prepare, its executes (and what else names the statement)
    assert out.stdout.count(f"(as sent, read in latin1: 0x{hexed})") == shown, out.stdout


def test_a_text_never_decided_is_read_in_the_sessions_character_set(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """A text the session took and never decided (it ended while a text before it was
    being read) was recorded read as UTF-8; it is read in the session's character set
    then, with its bytes."""
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki)
    gw.write_config()
    audit = Audit(load_config(gw.config_path))
    text = "SELECT 'th\u00e9'".encode("latin1")
    cmd = ClientCommand(1, Command.QUERY, b"\x03" + text, frame(0, b"\x03" + text))
    context = {
        "identity": "agent",
        "groups": ["agents"],
        "client": "127.0.0.1:1",
        "target": "orders",
        "db": "shop",
        "charset": "latin1",
    }

    async def run() -> None:
        await audit.open()
        audit.not_decided("s-1", 1, cmd, context, "the session ended: it did not run")
        await audit.close()

    asyncio.run(run())
    (record,) = [r for r in ledger_records(gw.ledger) if r["kind"] == "statement"]
    assert record["rule"] == "not-decided"
    assert record["sql"] == "SELECT 'th\u00e9'"
    assert record["sql_hex"] == text.hex() and record["sql_charset"] == "latin1"


@pytest.mark.parametrize("mode", ["enforce", "shadow"])
def test_the_database_a_login_names_is_read_in_its_character_set(
    mariadb: MariaDB, tmp_path: Path, mode: str
) -> None:
    """The schema a latin1 login named, ``café``, was recorded as ``caf\\ufffd`` (refused:
    on the ``auth_failed`` record and in the error; in shadow mode on the session's start
    and every statement's ``db``). It is read in the login's character set."""
    mariadb.admin_sql(f"CREATE DATABASE IF NOT EXISTS `{SCHEMA}`")
    gw = GatewayProcess(
        tmp_path / "gw", mariadb, mariadb.pki, extra_toml=f'[policy]\nmode = "{mode}"\n'
    ).start()
    try:
        if mode == "enforce":
            with pytest.raises(pymysql.err.OperationalError) as refused:
                gw.connect(charset="latin1", database=SCHEMA)
            # the message comes in the login's character set, as MariaDB's own (latin1's
            # é is the one byte E9), which PyMySQL reads as UTF-8 whatever the session's
            shown = SCHEMA.encode("latin1").decode("utf-8", "replace")
            assert refused.value.args[0] == 1044 and f"`{shown}`" in refused.value.args[1]
        else:
            with gw.connect(charset="latin1", database=SCHEMA) as conn, conn.cursor() as cur:
                cur.execute("SELECT DATABASE()")
                assert cur.fetchone() == (SCHEMA,)
                conn.select_db("shop")
                conn.select_db(SCHEMA)  # COM_INIT_DB, run in shadow mode
                cur.execute("SELECT DATABASE()")
                assert cur.fetchone() == (SCHEMA,)
    finally:
        gw.stop()
    records = ledger_records(gw.ledger)
    if mode == "enforce":
        (failed,) = [r for r in records if r["kind"] == "auth_failed"]
        assert failed["db"] == SCHEMA and f"`{SCHEMA}`" in failed["reason"], failed
    else:
        (start,) = [r for r in records if r["kind"] == "session_start"]
        assert start["db"] == SCHEMA and f"`{SCHEMA}`" in start["reason"], start
        mine = [r for r in records if r["kind"] == "statement"]
        assert [r["db"] for r in mine][-2:] == ["shop", SCHEMA]  # before, after the USE


def test_a_rewritten_text_is_recorded_as_the_server_reads_it(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """A latin1 client's text that masking rewrote (``on_use = "rewrite"``): its
    ``rewritten`` field read the text as UTF-8, so the ``'thÃ©'`` the server ran (the
    bytes of ``é`` in UTF-8, which latin1 reads as two letters) was recorded as
    ``'thé'``, while ``sql`` read it right. It is read in the session's character set."""
    mariadb.admin_sql(
        "CREATE TABLE IF NOT EXISTS shop.carried_mask (id INT PRIMARY KEY, phone VARCHAR(20))",
        "INSERT IGNORE INTO shop.carried_mask VALUES (1, '+49 30 1234567')",
    )
    extra = (
        '[[masking]]\ncolumn = "shop.carried_mask.phone"\nstrategy = "last4"\non_use = "rewrite"\n'
    )
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, extra_toml=extra).start()
    text = "SELECT CONCAT(phone, ' th\u00c3\u00a9') AS t FROM carried_mask WHERE id = 1"
    try:
        with gw.connect(charset="latin1") as conn, conn.cursor() as cur:
            cur.execute(text)
            assert cur.fetchone() == ("**********4567 th\u00c3\u00a9",)
    finally:
        gw.stop()
    records = [r for r in ledger_records(gw.ledger) if r["kind"] == "statement"]
    (mine,) = [r for r in records if "carried_mask" in r["sql"]]
    assert mine["sql"] == text and mine["sql_charset"] == "latin1"
    assert "rewritten" in mine and "th\u00c3\u00a9'" in mine["rewritten"], mine
