"""The server's global sql_mode, which every session starts in: under a mode the gateway
cannot read (PIPES_AS_CONCAT, ORACLE, ...) the target's statements are refused and an
alert says why; once it is left out, they run again. A MariaDB of its own: the global
mode changes here would reach the other tests' sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import mysql.connector
import pymysql
import pytest
from lab.clients import ledger_records
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB

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
