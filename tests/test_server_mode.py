"""The server's global sql_mode, which every session starts in: under a mode the gateway
cannot read (PIPES_AS_CONCAT, ORACLE, ...) the target's statements are refused and an
alert says why; once it is left out, they run again. A MariaDB of its own: the global
mode changes here would reach the other tests' sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from lab.clients import ledger_records
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB
from pymysql.constants import CLIENT

from appliance.config import load_config
from appliance.server_mode import GlobalModes, unreadable_modes

pytestmark = pytest.mark.integration

DEFAULT_MODE = (
    "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    db = MariaDB(tmp_path_factory.mktemp("mode-db")).start()
    try:
        yield db
    finally:
        db.stop()


def test_which_modes_the_gateway_cannot_read() -> None:
    assert unreadable_modes(DEFAULT_MODE) == ""
    assert unreadable_modes("") == ""
    assert unreadable_modes("ANSI_QUOTES,NO_BACKSLASH_ESCAPES,TRADITIONAL") == ""
    assert unreadable_modes("PIPES_AS_CONCAT,STRICT_TRANS_TABLES") == "PIPES_AS_CONCAT"
    # as the server reports ANSI: the combination and what it holds
    ansi = "REAL_AS_FLOAT,PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,ANSI"
    assert unreadable_modes(ansi) == "ANSI,IGNORE_SPACE,PIPES_AS_CONCAT"


def test_a_global_mode_the_gateway_cannot_read_refuses_the_targets_statements(
    server: MariaDB, tmp_path: Path
) -> None:
    server.admin_sql("SET GLOBAL sql_mode = 'PIPES_AS_CONCAT,STRICT_TRANS_TABLES'")
    gw = GatewayProcess(tmp_path / "gw", server, server.pki, backend_tls="disabled")
    try:
        gw.start()
        # PyMySQL sends SET NAMES as it connects: that is refused already
        with pytest.raises(pymysql.err.OperationalError) as refused:
            gw.connect(database="shop")
        code, message = refused.value.args
        assert code == 1227 and "PIPES_AS_CONCAT" in message, message
        with pytest.raises(mysql.connector.Error) as caught:  # so does mysql-connector
            gw.connector(database="shop")
        assert caught.value.errno == 1227 and "PIPES_AS_CONCAT" in caught.value.msg
        assert gw.stop() == 0
        records = ledger_records(gw.ledger)
        alerts = [r for r in records if r["kind"] == "alert"]
        assert any(
            r["alert"] == "server_sql_mode" and "PIPES_AS_CONCAT" in r["reason"] for r in alerts
        )
        statements = [r for r in records if r["kind"] == "statement"]
        assert len(statements) >= 2
        assert {(s["decision"], s["rule"]) for s in statements} == {("blocked", "sql-mode")}
    finally:
        gw.stop()
        server.admin_sql(f"SET GLOBAL sql_mode = '{DEFAULT_MODE}'")


def test_the_mode_is_read_again_and_statements_run_once_it_is_readable(
    server: MariaDB, tmp_path: Path
) -> None:
    gw = GatewayProcess(tmp_path / "gw", server, server.pki, backend_tls="disabled")
    gw.write_config()
    config = load_config(gw.config_path)
    alerts: list[tuple[str, str]] = []

    async def scenario() -> None:
        modes = GlobalModes(config, lambda alert, reason: alerts.append((alert, reason)), 0.1)
        try:
            await modes.start()
            assert modes.unreadable == {}
            server.admin_sql("SET GLOBAL sql_mode = 'ORACLE'")
            while not modes.unreadable:  # noqa: ASYNC110 (what is polled is the server)
                await asyncio.sleep(0.05)
            (target,) = config.targets
            assert "ORACLE" in modes.unreadable[target.name]
            server.admin_sql(f"SET GLOBAL sql_mode = '{DEFAULT_MODE}'")
            while modes.unreadable:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        finally:
            await modes.close()
            server.admin_sql(f"SET GLOBAL sql_mode = '{DEFAULT_MODE}'")

    asyncio.run(asyncio.wait_for(scenario(), 20))
    assert [alert for alert, _ in alerts] == ["server_sql_mode", "server_sql_mode"]
    assert "ORACLE" in alerts[0][1] and "readable again" in alerts[1][1]


def _refused_at_connect(gw: GatewayProcess, **kw: Any) -> str:
    """The 1227 message a PyMySQL login gets (its SET NAMES is refused); a login that
    goes through runs ``SELECT 1 || 0`` and fails the test with what it returned."""
    try:
        conn = gw.connect(database="shop", **kw)
    except pymysql.err.OperationalError as refused:
        code, message = refused.args
        assert code == 1227, message
        return str(message)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1 || 0, @@sql_mode")
        pytest.fail(f"the gateway let a statement through: {cur.fetchall()}")


def _logged(gw: GatewayProcess, text: str, wait_s: float = 60.0) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if text in gw.log():
            return True
        time.sleep(0.2)
    return False


def test_a_session_is_refused_when_it_starts_in_a_mode_the_global_one_does_not_hold(
    server: MariaDB, tmp_path: Path
) -> None:
    """The global mode is readable, but init_connect gives every session of the target's
    account PIPES_AS_CONCAT: what is read is each session's own mode, as it logs in."""
    server.admin_sql(
        "CREATE USER 'mode_user'@'%' IDENTIFIED BY 'mode-secret-1'",
        "GRANT ALL ON shop.* TO 'mode_user'@'%'",
        "SET GLOBAL init_connect = 'SET SESSION sql_mode = ''PIPES_AS_CONCAT'''",
    )
    gw = GatewayProcess(
        tmp_path / "gw",
        server,
        server.pki,
        backend_user="mode_user",
        backend_password="mode-secret-1",
        backend_tls="disabled",
    )
    try:
        direct = pymysql.connect(
            host=server.host, port=server.port, user="mode_user", password="mode-secret-1"
        )
        with direct, direct.cursor() as cur:  # what the test stands on
            cur.execute("SELECT @@SESSION.sql_mode, @@GLOBAL.sql_mode")
            assert cur.fetchone() == ("PIPES_AS_CONCAT", DEFAULT_MODE)
        gw.start()
        message = _refused_at_connect(gw)
        assert "started this session in holds PIPES_AS_CONCAT" in message
        assert gw.stop() == 0
        statements = [r for r in ledger_records(gw.ledger) if r["kind"] == "statement"]
        assert statements
        assert {(s["decision"], s["rule"]) for s in statements} == {("blocked", "sql-mode")}
    finally:
        gw.stop()
        server.admin_sql("SET GLOBAL init_connect = ''", "DROP USER 'mode_user'@'%'")


def test_a_client_that_asks_for_ignore_space_does_not_get_it(
    server: MariaDB, tmp_path: Path
) -> None:
    """CLIENT_IGNORE_SPACE at login has the server add IGNORE_SPACE to the session's
    sql_mode (node's mysql2 asks for it by default): the gateway does not pass it on."""
    gw = GatewayProcess(tmp_path / "gw", server, server.pki, backend_tls="disabled")
    try:
        gw.start()
        with gw.connect(client_flag=CLIENT.IGNORE_SPACE) as conn, conn.cursor() as cur:
            cur.execute("SELECT @@sql_mode")
            assert cur.fetchone() == (DEFAULT_MODE,)
    finally:
        gw.stop()


def test_a_server_restarted_into_a_mode_the_gateway_cannot_read_is_refused_at_once(
    server: MariaDB, tmp_path: Path
) -> None:
    """No session slips in between the restart and the next read of the global mode."""
    gw = GatewayProcess(tmp_path / "gw", server, server.pki, backend_tls="disabled")
    try:
        gw.start()
        with gw.connect(database="shop") as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 || 0")
            assert cur.fetchone() == (1,)
        server.restart("--sql-mode=PIPES_AS_CONCAT,STRICT_TRANS_TABLES")
        message = _refused_at_connect(gw)
        assert "started this session in holds PIPES_AS_CONCAT" in message
        # the session had the global mode read again: the alert follows
        assert _logged(gw, "global sql_mode holds PIPES_AS_CONCAT"), gw.log()
    finally:
        gw.stop()
        server.restart()


def test_a_gateway_started_before_the_server_reads_the_mode_of_each_session(
    server: MariaDB, tmp_path: Path
) -> None:
    """The first read of the global mode fails (connection refused): that is no verdict
    of "readable"."""
    gw = GatewayProcess(tmp_path / "gw", server, server.pki, backend_tls="disabled")
    server.stop()  # (its work directory is the fixture's: it stays)
    try:
        gw.start()
        server.restart("--sql-mode=PIPES_AS_CONCAT")
        message = _refused_at_connect(gw)
        assert "started this session in holds PIPES_AS_CONCAT" in message
        assert _logged(gw, "global sql_mode holds PIPES_AS_CONCAT"), gw.log()
    finally:
        gw.stop()
        server.restart()
