"""The statement texts of clients whose character set is not UTF-8, as the ledger keeps
them: real MariaDB, PyMySQL in latin1, cp1251 and gbk, SET NAMES mid-session, and the
mariadb CLI with --default-character-set. A record's ``sql`` is the text the server read
(in the session's character set), and the bytes whose SHA-256 is ``sql_sha256`` can be
had back from the export: ``sql_hex`` where ``sql`` in UTF-8 is not them."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from lab.approvals import approvals_toml
from lab.broker import Broker
from lab.clients import ledger_records, run_sqlgate
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB
from lab.tokens import Provider
from pymysql.constants import CLIENT

from appliance import operator

THE = "INSERT INTO ledger_text VALUES (1, 'th\u00e9')"  # 'thé'
MOJIBAKE = "INSERT INTO ledger_text VALUES (2, 'th\u00c3\u00a9')"  # 'thÃ©': UTF-8 bytes of é
PRICE = "SELECT '\u0446\u0435\u043d\u0430' AS price"  # Cyrillic: cp1251
CHINESE = "SELECT '\u4e2d\u6587' AS word"  # gbk
BINARY = b"SELECT HEX(_binary'\xff\x00\xfe') AS raw"  # no character set reads these bytes
MULTI = "SELECT 'caf\u00e9' AS a; SELECT 'na\u00efve' AS b"
HELD = "DELETE FROM ledger_text WHERE v = 'th\u00e9'"


def sent_bytes(record: dict[str, Any]) -> bytes:
    """The text an auditor reads back from an exported record: ``sql_hex``, or ``sql``."""
    if "sql_hex" in record:
        return bytes.fromhex(record["sql_hex"])
    return str(record["sql"]).encode("utf-8")


def cli(gw: GatewayProcess, charset: str, sql: bytes, *, check: bool = True) -> bytes:
    """``mariadb --default-character-set=CHARSET -e SQL``, SQL given as the bytes a
    terminal in that character set would pass."""
    acct = gw.account()
    program = shutil.which("mariadb")
    assert program is not None, "install the Debian package mariadb-client"
    args: list[str | bytes] = [
        program,
        "--no-defaults",
        "--protocol=TCP",
        f"--host={gw.host}",
        f"--port={gw.port}",
        f"--user={acct.user}",
        f"--password={acct.password}",
        "--batch",
        "--skip-ssl",
        "--database=shop",
        f"--default-character-set={charset}",
        "-e",
        sql,
    ]
    done = subprocess.run(args, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0 or not check, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def texts(
    mariadb: MariaDB, broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, dict[str, str]]]:
    """One session per way a client sends text that is not UTF-8, then a statement held
    for approval; the gateway stopped (its ledger checkpointed)."""
    work = tmp_path_factory.mktemp("gw-text")
    provider = Provider(work / "idp")
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.ledger_text",
        "CREATE TABLE shop.ledger_text (id INT PRIMARY KEY, v VARCHAR(20) CHARACTER SET utf8mb4)",
    )
    extra = approvals_toml(work, broker, provider, timeout_s=30) + (
        '\n[[rules]]\nname = "review-text-deletes"\nstatements = ["DELETE"]\n'
        'tables = ["shop.ledger_text"]\naction = "review"\n'
    )
    gw = GatewayProcess(work, mariadb, mariadb.pki, extra_toml=extra, name="text-gw").start()
    names = []
    with gw.connect(charset="latin1") as conn, conn.cursor() as cur:
        cur.execute(THE)
        cur.execute(MOJIBAKE)
        cur.execute(BINARY)
        assert cur.fetchone() == ("FF00FE",)
    names.append("latin1")
    with gw.connect(charset="cp1251") as conn, conn.cursor() as cur:
        cur.execute(PRICE)
        assert cur.fetchone() == ("\u0446\u0435\u043d\u0430",)
    names.append("cp1251")
    cli(gw, "gbk", CHINESE.encode("gbk"), check=False)  # refused or not: recorded
    names.append("gbk")
    with gw.connect(charset="utf8mb4") as conn, conn.cursor() as cur:
        cur.execute(BINARY)  # raw bytes inside a binary string, in a UTF-8 session
        assert cur.fetchone() == ("FF00FE",)
        conn.set_character_set("latin1")  # SET NAMES latin1, mid-session
        cur.execute("SELECT v FROM ledger_text WHERE id = 1 AND v = 'th\u00e9'")
        assert cur.fetchone() == ("th\u00e9",)
    names.append("set-names")
    with (
        gw.connect(charset="latin1", client_flag=CLIENT.MULTI_STATEMENTS) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(MULTI)
        assert cur.fetchall() == (("caf\u00e9",),)
        assert cur.nextset() and cur.fetchall() == (("na\u00efve",),)
    names.append("multi")
    out = cli(gw, "cp1251", PRICE.encode("cp1251"))
    assert "\u0446\u0435\u043d\u0430".encode("cp1251") in out
    names.append("cli")
    conn = gw.connect(charset="latin1", read_timeout=60)
    try:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with conn.cursor() as cur:
                    cur.execute(HELD)
            except pymysql.err.MySQLError as exc:  # denied below: expected
                errors.append(exc)

        import threading

        held = threading.Thread(target=run, daemon=True)
        held.start()
        bus = broker.bus_config(user=broker.operator_user)
        deadline = time.monotonic() + 20
        request = None
        while request is None and time.monotonic() < deadline:
            pending = asyncio.run(operator.list_pending(bus, "text-gw"))
            request = next((r for r in pending if r.sql.startswith("DELETE")), None)
        assert request is not None
        token = provider.token(email="dba@example.com", groups=["dba"])
        asyncio.run(operator.decide(bus, request.id, "deny", token, "dba@example.com", "no"))
        held.join(30)
        assert not held.is_alive() and errors
    finally:
        conn.close()
    names.append("held")
    gw.stop()
    gw.approval_request = request  # type: ignore[attr-defined]
    starts = [r for r in ledger_records(gw.ledger) if r["kind"] == "session_start"]
    yield gw, dict(zip(names, [r["session"] for r in starts], strict=True))


def statements(gw: GatewayProcess, session: str) -> list[dict[str, Any]]:
    return [r for r in ledger_records(gw.ledger, "--session", session) if r["kind"] == "statement"]


def test_the_text_is_read_in_the_sessions_character_set(
    texts: tuple[GatewayProcess, dict[str, str]],
) -> None:
    """A latin1 client's ``'thé'`` was recorded as ``'th\\ufffd'`` (as its ``'thë'``
    would be), and its ``'thÃ©'`` as ``'thé'``, which is not what the server stored. The
    text is read as the server reads it, in the session's character set, and the record
    names that character set beside the bytes."""
    gw, sessions = texts
    by_sql = {r["sql"]: r for r in statements(gw, sessions["latin1"])}
    for text in (THE, MOJIBAKE):
        record = by_sql[text]
        assert bytes.fromhex(record["sql_hex"]) == text.encode("latin1")
        assert record["sql_charset"] == "latin1"
    assert by_sql[BINARY.decode("cp1252", "replace")]["sql_hex"] == BINARY.hex()
    (price,) = [r for r in statements(gw, sessions["cp1251"]) if "price" in r["sql"]]
    assert price["sql"] == PRICE and price["sql_charset"] == "cp1251"
    (word,) = [r for r in statements(gw, sessions["gbk"]) if "word" in r["sql"]]
    assert word["sql"] == CHINESE and word["sql_charset"] == "gbk"
    (cli_price,) = [r for r in statements(gw, sessions["cli"]) if "price" in r["sql"]]
    assert cli_price["sql"] == PRICE
    records = statements(gw, sessions["set-names"])
    binary = next(r for r in records if "_binary" in r["sql"])
    assert binary["sql_charset"] == "utf8mb4" and binary["sql_hex"] == BINARY.hex()
    after = next(r for r in records if "ledger_text" in r["sql"])
    assert after["sql"] == "SELECT v FROM ledger_text WHERE id = 1 AND v = 'th\u00e9'"
    assert after["sql_charset"] == "latin1"


def test_each_statement_of_a_text_of_several_is_read_so(
    texts: tuple[GatewayProcess, dict[str, str]],
) -> None:
    """The statements of a latin1 text of several were each recorded with U+FFFD."""
    gw, sessions = texts
    records = [r for r in statements(gw, sessions["multi"]) if "part" in r]
    assert [r["sql"] for r in records] == [s.strip() for s in MULTI.split(";")]
    assert bytes.fromhex(records[0]["sql_hex"]) == MULTI.encode("latin1")
    assert "sql_hex" not in records[1]  # the whole text is on the first


def test_the_export_gives_back_the_bytes_of_sql_sha256(
    texts: tuple[GatewayProcess, dict[str, str]],
) -> None:
    """Every text record of every session: the bytes read back from the export are the
    ones ``sql_sha256`` is of, and the ledger verifies."""
    gw, _ = texts
    checked = 0
    for record in ledger_records(gw.ledger):
        if record["kind"] != "statement" or record["command"] != "COM_QUERY":
            continue
        if "part" in record and not record["part"].startswith("1/"):
            continue
        if "part" in record and "sql_hex" not in record:
            continue  # an ASCII text of several: its parts are its statements
        command = bytes([3]) + sent_bytes(record)
        assert hashlib.sha256(command).hexdigest() == record["sql_sha256"], record
        checked += 1
    assert checked > 10
    verify = run_sqlgate(
        "ledger", "verify", "--ledger", str(gw.ledger), "--pubkey", str(gw.public_key())
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_an_approval_request_and_replay_show_the_text_as_read(
    texts: tuple[GatewayProcess, dict[str, str]],
) -> None:
    """The operator was asked to approve ``'th\\ufffd'``; the request now carries the
    text as the server would read it, and its bytes. Replay shows the text, then the
    bytes as sent and the character set they were read in."""
    gw, sessions = texts
    request = gw.approval_request  # type: ignore[attr-defined]
    assert request.sql == HELD
    hexed = HELD.encode("latin1").hex().upper()
    shown = operator.format_whole(request, time.time())  # sqlgate approvals show
    assert shown.endswith(f"\n{HELD}\nas sent, read in latin1: 0x{hexed}"), shown
    (held,) = [r for r in statements(gw, sessions["held"]) if r["sql"].startswith("DELETE")]
    assert held["sql"] == HELD and held["decision"] == "pending"
    out = run_sqlgate("replay", sessions["latin1"], "--ledger", str(gw.ledger), "--speed", "1000")
    assert out.returncode == 0, out.stderr
    hexed = THE.encode("latin1").hex().upper()
    assert f"> {THE}\n" in out.stdout and f"(as sent, read in latin1: 0x{hexed})" in out.stdout
