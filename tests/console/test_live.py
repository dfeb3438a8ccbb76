"""The console against a real Mosquitto and a real gateway with approvals on: sessions
appear and their statements stream in, a held statement appears in approvals, ``a``
runs it for the waiting client, ``d`` with a reason refuses it, ``k`` ends a session,
and a broker that goes away is reported and reconnected to."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from console.drive import Run, drive
from lab.approvals import Held, approvals_toml, operator_config, publish
from lab.broker import Broker
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB
from lab.tokens import Provider
from textual.widgets import DataTable

from appliance.config import load_config
from tui.app import ConsoleApp, Operator
from tui.ledger import LedgerFile, public_key_beside
from tui.model import GONE, SessionView
from tui.screens.approvals import ApprovalsScreen
from tui.screens.session import SessionScreen
from tui.screens.sessions import session_row_key
from tui.sources import BusEvent, Item, LinkState, MqttSource, Synced

pytestmark = pytest.mark.integration

APPROVER = "dba@example.com"
TABLE = "shop.console_t"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Provider:
    return Provider(tmp_path_factory.mktemp("idp"))


@pytest.fixture(scope="module")
def gw(
    mariadb: MariaDB, broker: Broker, provider: Provider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("gw")
    extra = (
        approvals_toml(work, broker, provider, timeout_s=60)
        + f"""
[[rules]]
name = "review-console-deletes"
statements = ["DELETE"]
tables = ["{TABLE}"]
action = "review"
"""
    )
    gw = GatewayProcess(work, mariadb, mariadb.pki, extra_toml=extra, name="console-gw").start()
    yield gw
    assert gw.stop() == 0
    assert "Traceback" not in gw.log()


@pytest.fixture
def rows(mariadb: MariaDB) -> Iterator[None]:
    mariadb.admin_sql(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id INT PRIMARY KEY)",
        f"DELETE FROM {TABLE}",
        f"INSERT INTO {TABLE} VALUES (1), (2), (3)",
    )
    yield


def ids(mariadb: MariaDB) -> list[int]:
    return [int(r[0]) for r in mariadb.admin_sql(f"SELECT id FROM {TABLE} ORDER BY id")]


def console(
    broker: Broker, provider: Provider, tmp_path: Path, gw: GatewayProcess | None = None
) -> ConsoleApp:
    """A console as ``sqlgate tui`` builds it from an operator's configuration."""
    config = load_config(operator_config(tmp_path / "operator", broker, gateway=gw))
    ledger = None
    if gw is not None:
        ledger = LedgerFile(config.ledger.path, public_key_beside(config.ledger.signing_key))
    token = provider.token(email=APPROVER, groups=["dba"])
    return ConsoleApp(MqttSource(config.bus), ledger=ledger, operator=Operator(APPROVER, token))


def table(run: Run) -> DataTable[object]:
    return run.app.screen.query_one(DataTable)


def column(run: Run, name: str) -> list[str]:
    t = table(run)
    return [str(t.get_cell(key, name)) for key in t.rows]


def test_sessions_appear_and_their_statements_stream_in(
    gw: GatewayProcess, broker: Broker, provider: Provider, tmp_path: Path, rows: None
) -> None:
    app = console(broker, provider, tmp_path, gw)

    async def scenario(run: Run) -> None:
        await run.until("the broker", lambda: run.app.link.connected)
        conn = await asyncio.to_thread(gw.connect, database="shop")
        try:
            with conn.cursor() as cur:
                await asyncio.to_thread(cur.execute, f"SELECT id FROM {TABLE} WHERE id < 3")
                with pytest.raises(pymysql.err.OperationalError):
                    await asyncio.to_thread(cur.execute, "DELETE FROM shop.no_such_table")
                await run.until("the session", lambda: "agent" in column(run, "Identity"))
                await run.press("enter")
                assert isinstance(run.app.screen, SessionScreen)
                statements = f"SELECT id FROM {TABLE} WHERE id < 3"
                await run.until(
                    "the first statement", lambda: statements in column(run, "Statement")
                )
                assert "2 rows" in column(run, "Result")
                assert "blocked" in column(run, "Decision")
                await asyncio.to_thread(cur.execute, "SELECT 'streamed' AS x")
                await run.until(
                    "a statement made while watching",
                    lambda: "SELECT 'streamed' AS x" in column(run, "Statement"),
                )
        finally:
            conn.close()
        await run.until(
            "the end of the session",
            lambda: "ended" in str(run.app.screen.query_one("#session-info").render()),
        )

    drive(app, scenario)


def test_a_console_started_after_a_session_began_shows_it_live_until_it_ends(
    gw: GatewayProcess, broker: Broker, provider: Provider, tmp_path: Path
) -> None:
    """Without the ledger file (another host), only the broker tells the console about a
    session that began before it connected: the gateway retains its start while it is
    live. Once the client quits, the console shows it ended."""
    conn = gw.connect(database="shop")
    with conn.cursor() as cur:
        cur.execute("SELECT 'before the console'")
    client = f"{conn.host}:{conn._sock.getsockname()[1]}"
    app = console(broker, provider, tmp_path)  # no ledger file

    def mine(run: Run) -> SessionView | None:
        return next((s for s in run.app.model.sessions.values() if s.client == client), None)

    def state(run: Run) -> str:
        session = mine(run)
        assert session is not None
        return str(table(run).get_cell(session_row_key(session), "State"))

    async def scenario(run: Run) -> None:
        try:
            await run.until("the session that began before", lambda: mine(run) is not None)
            await run.until("the console's sync", lambda: run.app.model.in_sync)
            session = mine(run)
            assert session is not None and session.identity == "agent"
            assert state(run) == "active"  # and still live after the sync
        finally:
            conn.close()
        await run.until("the end of the session", lambda: state(run) == "ended")
        # the clearing of its start may come first; then its session_end says why
        await run.until(
            "its session_end", lambda: (s := mine(run)) is not None and s.end_reason != GONE
        )

    drive(app, scenario)


def test_a_approves_a_held_statement_and_the_client_gets_its_result(
    gw: GatewayProcess,
    broker: Broker,
    provider: Provider,
    tmp_path: Path,
    mariadb: MariaDB,
    rows: None,
) -> None:
    app = console(broker, provider, tmp_path)
    held: list[Held] = []

    async def scenario(run: Run) -> None:
        await run.until("the broker", lambda: run.app.link.connected)
        await run.press("2")
        assert isinstance(run.app.screen, ApprovalsScreen)
        sql = f"DELETE FROM {TABLE} WHERE id = 2"
        held.append(await asyncio.to_thread(Held, gw, sql))
        await run.until("the request", lambda: sql in column(run, "Statement"))
        assert run.bells >= 1 and "PENDING" in str(run.app.screen.query_one("#badge").render())
        await run.press("a")
        assert await asyncio.to_thread(held[0].result) is None
        await run.until("the request to clear", lambda: sql not in column(run, "Statement"))

    try:
        drive(app, scenario)
    finally:
        for h in held:
            h.close()
    assert ids(mariadb) == [1, 3]


def test_d_with_a_reason_denies_it_and_the_client_reads_the_reason(
    gw: GatewayProcess,
    broker: Broker,
    provider: Provider,
    tmp_path: Path,
    mariadb: MariaDB,
    rows: None,
) -> None:
    app = console(broker, provider, tmp_path)
    held: list[Held] = []

    async def scenario(run: Run) -> None:
        await run.until("the broker", lambda: run.app.link.connected)
        await run.press("2")
        sql = f"DELETE FROM {TABLE} WHERE id > 1"
        held.append(await asyncio.to_thread(Held, gw, sql))
        await run.until("the request", lambda: sql in column(run, "Statement"))
        await run.press("d", *"use a smaller batch", "enter")
        error = await asyncio.to_thread(held[0].result)
        assert error is not None and error[0] == 1227
        assert "use a smaller batch" in error[1] and APPROVER in error[1]

    try:
        drive(app, scenario)
    finally:
        for h in held:
            h.close()
    assert ids(mariadb) == [1, 2, 3]


#: U+3164 (HANGUL FILLER) draws as a blank, and the server reads it as a letter of a
#: name: ``--`` followed by it starts no comment, and ``2 --\u3164x`` is ``2 - (-x)``, 3,
#: with ``x`` 1 from the derived table (whose alias begins with one too). Shown as it
#: is, it read as ``WHERE t.id = 2 -- x``: row 2. The server deletes row 3. (A Unicode
#: space such as U+00A0 is refused by the policy itself: its parser took it for a blank.)
SPOOFED = f"DELETE t FROM {TABLE} t JOIN (SELECT 1 AS \u3164x) d WHERE t.id = 2 --\u3164x"


def test_a_character_that_draws_as_a_blank_is_shown_escaped(
    gw: GatewayProcess,
    broker: Broker,
    provider: Provider,
    tmp_path: Path,
    mariadb: MariaDB,
    rows: None,
) -> None:
    app = console(broker, provider, tmp_path)
    held: list[Held] = []

    async def scenario(run: Run) -> None:
        await run.until("the broker", lambda: run.app.link.connected)
        await run.press("2")
        held.append(await asyncio.to_thread(Held, gw, SPOOFED))
        await run.until("the request", lambda: len(run.app.model.requests) == 1)
        detail = " ".join(str(run.app.screen.query_one("#request-detail").render()).split())
        assert "AS \\u3164x) d WHERE t.id = 2 --\\u3164x" in detail
        assert "would not show as itself" in detail
        assert "-- x" not in " ".join(column(run, "Statement")) + detail
        await run.press("d", *"no", "enter")
        error = await asyncio.to_thread(held[0].result)
        assert error is not None and error[0] == 1227

    try:
        drive(app, scenario)
    finally:
        for h in held:
            h.close()
    assert ids(mariadb) == [1, 2, 3]
    # what the operator was asked about, approved, deletes row 3, not row 2
    with mariadb.connect(database="shop") as conn, conn.cursor() as cur:
        assert cur.execute(SPOOFED) == 1
    assert ids(mariadb) == [1, 2]


def test_k_ends_a_live_session(
    gw: GatewayProcess, broker: Broker, provider: Provider, tmp_path: Path
) -> None:
    app = console(broker, provider, tmp_path)

    async def scenario(run: Run) -> None:
        await run.until("the broker", lambda: run.app.link.connected)
        conn = await asyncio.to_thread(gw.connect, user="dba", database="shop")
        try:
            with conn.cursor() as cur:
                await asyncio.to_thread(cur.execute, "SELECT 1")
            await run.until("the session", lambda: "dba" in column(run, "Identity"))
            t = table(run)
            t.move_cursor(row=column(run, "Identity").index("dba"))
            await run.press("k", *"runaway loop", "enter")
            await run.until(
                "the session to end",
                lambda: any(
                    s.identity == "dba" and s.end_reason and "runaway loop" in s.end_reason
                    for s in run.app.model.sessions.values()
                ),
            )
            with pytest.raises(pymysql.err.OperationalError):
                with conn.cursor() as cur:
                    await asyncio.to_thread(cur.execute, "SELECT 1")
        finally:
            conn.close()

    drive(app, scenario)


def test_a_broker_that_goes_away_is_reported_and_found_again(
    provider: Provider, tmp_path: Path
) -> None:
    with Broker(tmp_path / "broker") as own:
        app = console(own, provider, tmp_path)

        async def scenario(run: Run) -> None:
            await run.until("the broker", lambda: run.app.link.connected)
            await asyncio.to_thread(own.stop)
            await run.until("the outage", lambda: not run.app.link.connected)
            assert "unreachable" in run.app.link.detail and "retrying" in run.app.link.detail
            assert "BROKER DOWN" in str(run.app.screen.query_one("#badge").render())
            await asyncio.to_thread(own.start)
            await run.until("the reconnect", lambda: run.app.link.connected, timeout_s=20)

        drive(app, scenario)


def test_the_ledger_screen_verifies_searches_and_sees_tampering(
    gw: GatewayProcess, broker: Broker, provider: Provider, tmp_path: Path
) -> None:
    marker = f"SELECT 'ledger-{tmp_path.name}' AS marker"
    conn = gw.connect(database="shop")
    with conn.cursor() as cur:
        cur.execute(marker)
    conn.close()
    app = console(broker, provider, tmp_path, gw)

    def verification(run: Run) -> str:
        return str(run.app.screen.query_one("#verification").render())

    async def scenario(run: Run) -> None:
        await run.until("the history", lambda: run.app.model.sessions)
        assert {gateway for gateway, _ in run.app.model.sessions} == {"console-gw"}
        await run.press("3")
        await run.until("verification", lambda: "verified:" in verification(run))
        await run.press("slash", *f"ledger-{tmp_path.name}", "enter")
        await run.until("the search", lambda: marker in column(run, "What"))
        assert set(column(run, "Kind")) == {"statement"}
        assert not any(a.alert == "ledger_verification_failed" for a in run.app.model.alerts)

        # an auditor's nightmare: someone edits a record of the ledger
        ledger = run.app.ledger
        assert ledger is not None
        copy = tmp_path / "copy.db"
        with sqlite3.connect(ledger.path) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        with sqlite3.connect(copy) as db:
            db.execute("DROP TRIGGER IF EXISTS records_no_update")
            seq, body = db.execute(
                "SELECT seq, body FROM records WHERE kind = 'statement' LIMIT 1"
            ).fetchone()
            record = {**json.loads(body), "sql": "SELECT 'nothing to see'"}
            db.execute("UPDATE records SET body = ? WHERE seq = ?", (json.dumps(record), seq))
        ledger.path = copy
        await run.press("v")
        await run.until("the failure", lambda: "FAILED at seq" in verification(run), 30)
        assert f"FAILED at seq {seq}" in verification(run)
        assert run.app.model.alerts[0].alert == "ledger_verification_failed"

    drive(app, scenario)


def test_the_source_says_synced_once_the_retained_requests_are_in(broker: Broker) -> None:
    """After each (re)connect the console learns which requests are still pending from
    the retained ones that follow its subscriptions; ``Synced`` comes after them."""
    topic = "sqlgate/synced-gw/approvals/r1"
    publish(
        broker, broker.gateway_user, topic, json.dumps({"v": 1, "sql_sha256": "ab"}), retain=True
    )
    items: list[Item] = []

    async def main() -> None:
        synced = asyncio.Event()

        def deliver(item: Item) -> None:
            items.append(item)
            if isinstance(item, Synced):
                synced.set()

        source = MqttSource(broker.bus_config(broker.operator_user))
        task = asyncio.create_task(source.run(deliver))
        try:
            await asyncio.wait_for(synced.wait(), 15)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        publish(broker, broker.gateway_user, topic, "", retain=True)
    connected = next(
        i for i, item in enumerate(items) if isinstance(item, LinkState) and item.connected
    )
    retained = next(
        i
        for i, item in enumerate(items)
        if isinstance(item, BusEvent) and item.appliance == "synced-gw"
    )
    synced = next(i for i, item in enumerate(items) if isinstance(item, Synced))
    assert connected < retained < synced
