"""An operator ends a live session over MQTT (SPEC §11, the console's ``k``), with a real
Mosquitto, MariaDB and gateway: an approver's signed kill cuts the session (and a
statement it holds never runs); a kill without a valid approver's token, or for a
session this gateway does not have, is an alert and changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest
from lab.approvals import Held, approvals_toml, mosquitto, publish
from lab.broker import Broker
from lab.clients import ledger_records
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB
from lab.tokens import Provider

pytestmark = pytest.mark.integration

APPLIANCE = "test-gw-kill"
TIMEOUT_S = 60  # approvals: a held statement can only end by the kill within a test
APPROVER = "dba@example.com"
LOST_CONNECTION = (2006, 2013)  # CR_SERVER_GONE_ERROR, CR_SERVER_LOST


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Provider:
    return Provider(tmp_path_factory.mktemp("idp"))


def wait_record(
    gw: GatewayProcess, match: Callable[[dict[str, Any]], bool], what: str, timeout: float = 10
) -> dict[str, Any]:
    """The first ledger record ``match`` accepts, waiting for it to be written."""
    deadline = time.monotonic() + timeout
    while True:
        for record in ledger_records(gw.ledger):
            if match(record):
                return record
        assert time.monotonic() < deadline, f"no {what} in the ledger"
        time.sleep(0.1)


def alert_of(kind: str, session: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["kind"] == "alert" and r["alert"] == kind and r["session"] == session


def kill(broker: Broker, session: str, payload: dict[str, Any] | str) -> None:
    """An operator's kill of ``session``, as the console publishes it."""
    body = payload if isinstance(payload, str) else json.dumps({"v": 1, **payload})
    topic = f"{broker.prefix}/{APPLIANCE}/kill/{session}"
    publish(broker, broker.operator_user, topic, body)


def by_dba(provider: Provider, **extra: Any) -> dict[str, Any]:
    """A kill from the approver dba@example.com, with a valid token."""
    return {
        "operator": APPROVER,
        "token": provider.token(email=APPROVER, groups=["dba"]),
        **extra,
    }


@pytest.fixture(scope="module")
def gw(
    mariadb: MariaDB,
    broker: Broker,
    provider: Provider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    mariadb.admin_sql(
        "CREATE TABLE IF NOT EXISTS shop.kill_t (id INT PRIMARY KEY)",
        "DELETE FROM shop.kill_t",
        "INSERT INTO shop.kill_t VALUES (1), (2)",
    )
    work = tmp_path_factory.mktemp("gw")
    extra = (
        approvals_toml(work, broker, provider, timeout_s=TIMEOUT_S)
        + """
[[rules]]
name = "review-kill-deletes"
statements = ["DELETE"]
tables = ["shop.kill_t"]
action = "review"
"""
    )
    gw = GatewayProcess(work, mariadb, mariadb.pki, extra_toml=extra, name=APPLIANCE).start()
    # listening is not subscribed: kill a session that does not exist until it is heard
    deadline = time.monotonic() + 15
    warm_up = f"{APPLIANCE}-warm-up"
    while not any(alert_of("session_kill_rejected", warm_up)(r) for r in ledger_records(gw.ledger)):
        assert time.monotonic() < deadline, "the gateway never read the kill topic"
        kill(broker, warm_up, by_dba(provider))
        time.sleep(0.5)
    yield gw
    assert gw.stop() == 0
    log = gw.log()
    assert "Traceback" not in log
    assert "eyJ" not in log  # no token is ever logged
    assert broker.users[broker.gateway_user] not in log


def session_of(gw: GatewayProcess, conn: Any) -> str:
    """The id of the session a PyMySQL connection has, from its ``session_start``
    record (whose ``client`` is the connection's own address)."""
    host, port = conn._sock.getsockname()[:2]
    client = f"{host}:{port}"
    start = wait_record(
        gw, lambda r: r["kind"] == "session_start" and r["client"] == client, "session_start"
    )
    return str(start["session"])


def query(conn: Any, sql: str = "SELECT 1") -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def close(conn: Any) -> None:
    with contextlib.suppress(pymysql.err.Error):
        conn.close()


def test_an_approvers_kill_ends_the_session_and_others_go_on(
    gw: GatewayProcess, broker: Broker, provider: Provider
) -> None:
    victim = gw.connect(database="shop")
    bystander = gw.connect(database="shop")
    try:
        sid = session_of(gw, victim)
        assert query(victim) == ((1,),)
        kill(broker, sid, by_dba(provider, reason="runaway agent"))
        end = wait_record(
            gw, lambda r: r["kind"] == "session_end" and r["session"] == sid, "session_end"
        )
        assert end["ended_by"] == APPROVER
        assert end["reason"] == f"ended by operator {APPROVER}: runaway agent"
        with pytest.raises(pymysql.err.OperationalError) as info:
            query(victim)
        assert info.value.args[0] in LOST_CONNECTION, info.value.args
        assert query(bystander, "SELECT 'still here'") == (("still here",),)
    finally:
        close(victim)
        close(bystander)
    records = ledger_records(gw.ledger)
    (alert,) = [r for r in records if alert_of("session_killed", sid)(r)]
    assert alert["operator"] == APPROVER and alert["reason"] == "runaway agent"
    assert records.index(alert) < records.index(end)  # the kill is recorded, then done
    assert not any(alert_of("session_kill_rejected", sid)(r) for r in records)


def test_a_kill_from_someone_who_is_not_an_approver_is_rejected(
    gw: GatewayProcess, broker: Broker, provider: Provider
) -> None:
    conn = gw.connect(database="shop")
    try:
        sid = session_of(gw, conn)
        token = provider.token(email="eve@example.com", groups=["agents"])
        kill(broker, sid, {"operator": "eve@example.com", "token": token})
        alert = wait_record(gw, alert_of("session_kill_rejected", sid), "rejected kill")
        assert alert["reason"] == "eve@example.com is not an approver (approver groups: dba)"
        assert query(conn, "SELECT 'alive'") == (("alive",),)
    finally:
        close(conn)
    records = ledger_records(gw.ledger)
    assert not any(alert_of("session_killed", sid)(r) for r in records)
    end = wait_record(
        gw, lambda r: r["kind"] == "session_end" and r["session"] == sid, "session_end"
    )
    assert "ended_by" not in end  # the client quit by itself


def test_a_kill_with_a_bad_token_or_payload_is_rejected(
    gw: GatewayProcess, broker: Broker, provider: Provider
) -> None:
    stranger = Provider(provider.jwks.parent / "stranger")  # same kid, another key
    conn = gw.connect(database="shop")
    try:
        sid = session_of(gw, conn)
        forged = stranger.token(email=APPROVER, groups=["dba"])
        kill(broker, sid, {"operator": APPROVER, "token": forged})
        kill(broker, sid, {"operator": APPROVER, "token": "not-a-token", "reason": "x"})
        kill(broker, sid, {"operator": APPROVER})  # no token
        kill(broker, sid, "")  # empty: ignored
        deadline = time.monotonic() + 10
        while True:
            rejected = [
                r for r in ledger_records(gw.ledger) if alert_of("session_kill_rejected", sid)(r)
            ]
            if len(rejected) >= 3:
                break
            assert time.monotonic() < deadline, f"only {len(rejected)} rejected kills"
            time.sleep(0.1)
        reasons = sorted(r["reason"] for r in rejected)
        assert len(reasons) == 3, reasons
        assert reasons[0].startswith("a malformed kill")
        assert all(r.startswith("the operator's token was refused: ") for r in reasons[1:])
        assert any("signature" in r for r in reasons[1:]), reasons
        time.sleep(0.3)
        assert query(conn, "SELECT 'alive'") == (("alive",),)
    finally:
        close(conn)
    assert not any(alert_of("session_killed", sid)(r) for r in ledger_records(gw.ledger))


def test_killing_a_session_that_waits_for_approval_never_runs_its_statement(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    sql = "DELETE FROM kill_t WHERE id >= 1"
    held = Held(gw, sql)
    try:
        pending = wait_record(
            gw,
            lambda r: r["kind"] == "statement" and r["sql"] == sql and r["decision"] == "pending",
            "held statement",
        )
        sid = str(pending["session"])
        assert not held.done.is_set()
        kill(broker, sid, by_dba(provider))
        error = held.result(15)  # long before the approval could expire
        assert error is not None and error[0] in LOST_CONNECTION, error
    finally:
        held.close()
    end = wait_record(
        gw, lambda r: r["kind"] == "session_end" and r["session"] == sid, "session_end"
    )
    assert end["ended_by"] == APPROVER
    assert end["reason"] == f"ended by operator {APPROVER}: no reason given"
    approval = wait_record(
        gw,
        lambda r: r["kind"] == "approval" and r["session"] == sid,
        "approval record",
    )
    assert approval["decision"] == "denied" and approval["approver"] == APPROVER
    assert approval["statement_seq"] == pending["statement_seq"]
    records = ledger_records(gw.ledger)
    assert not any(
        r["kind"] == "result"
        and r["session"] == sid
        and r["statement_seq"] == pending["statement_seq"]
        and r["error"] is None
        for r in records
    )
    time.sleep(0.5)
    assert mariadb.admin_sql("SELECT COUNT(*) FROM shop.kill_t")[0][0] == 2


def test_a_kill_with_a_lone_surrogate_is_dropped(
    gw: GatewayProcess, broker: Broker, provider: Provider
) -> None:
    """BUG: an approver's kill whose reason held a lone surrogate (``"\\udc80"``: JSON,
    but no text) cut the session with neither its `session_killed` alert nor its
    `session_end` in the ledger (neither could be written). Such a message is dropped as
    malformed; the session goes on."""
    conn = gw.connect(database="shop")
    try:
        sid = session_of(gw, conn)
        body = json.dumps({"v": 1, **by_dba(provider)})
        kill(broker, sid, body[:-1] + ', "reason": "bad \\udc80 text"}')
        deadline = time.monotonic() + 10
        while "a lone surrogate is not text" not in gw.log():
            assert time.monotonic() < deadline, "the kill was not dropped"
            time.sleep(0.05)
        assert query(conn, "SELECT 'alive'") == (("alive",),)
    finally:
        close(conn)
    end = wait_record(
        gw, lambda r: r["kind"] == "session_end" and r["session"] == sid, "session_end"
    )
    assert "ended_by" not in end  # the client quit by itself
    assert not any(alert_of("session_killed", sid)(r) for r in ledger_records(gw.ledger))


def test_a_kill_for_a_session_this_gateway_does_not_have_is_rejected(
    gw: GatewayProcess, broker: Broker, provider: Provider
) -> None:
    conn = gw.connect(database="shop")  # a live session, which the kill must not reach
    try:
        live = session_of(gw, conn)
        sid = f"{APPLIANCE}-{uuid.uuid4().hex[:8]}-7"
        kill(broker, sid, by_dba(provider))
        alert = wait_record(gw, alert_of("session_kill_rejected", sid), "rejected kill")
        assert alert["reason"] == f"no live session {sid} on this gateway"
        time.sleep(0.3)
        assert query(conn, "SELECT 'alive'") == (("alive",),)
    finally:
        close(conn)
    records = ledger_records(gw.ledger)
    assert not any(alert_of("session_killed", s)(r) for r in records for s in (sid, live))
    end = wait_record(
        gw, lambda r: r["kind"] == "session_end" and r["session"] == live, "session_end"
    )
    assert "ended_by" not in end


def test_a_flood_of_kills_is_recorded_in_short(gw: GatewayProcess, broker: Broker) -> None:
    """Anyone with the operators' broker login can send kills: 300 that do not count must
    not write 300 alerts (a flood of them would fill the ledger's disk)."""
    session = f"{APPLIANCE}-flood-{uuid.uuid4().hex[:8]}"
    topic = f"{broker.prefix}/{APPLIANCE}/kill/{session}"
    subprocess.run(
        mosquitto("mosquitto_pub", broker, broker.operator_user, "-q", "1", "-t", topic, "-l"),
        input='{"v": 1}\n' * 300,
        text=True,
        check=True,
        timeout=60,
    )
    deadline = time.monotonic() + 10
    while True:
        alerts = [
            r
            for r in ledger_records(gw.ledger, "--kind", "alert")
            if r.get("alert") == "session_kill_rejected"
        ]
        flood = [r for r in alerts if r["session"] == session]
        counted = sum(int(r["reason"].split()[0]) for r in alerts if "a flood" in r["reason"])
        if len(flood) + counted >= 300 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert 0 < len(flood) < 150
    assert all(r["reason"].startswith("a malformed kill") for r in flood)
    assert len(flood) + counted == 300  # every one accounted for


def retained_kills(broker: Broker, session: str) -> list[bytes]:
    """What the broker retains on ``kill/<session>``: it sends that as a client
    subscribes, before a message the client publishes afterwards (the end of it)."""
    topic = f"{broker.prefix}/{APPLIANCE}/kill/{session}"
    marker = f"{broker.prefix}/{APPLIANCE}/marker"

    async def read() -> list[bytes]:
        async with broker.client(broker.gateway_user, timeout=None) as client:
            await client.subscribe(topic, qos=1)
            await client.subscribe(marker, qos=1)
            await client.publish(marker, b"end", qos=1)
            found = []
            async for message in client.messages:
                if message.topic.value == marker:
                    break
                if isinstance(message.payload, bytes) and message.payload:
                    found.append(message.payload)
            return found

    return asyncio.run(asyncio.wait_for(read(), 15))


def test_a_retained_kill_is_handled_once_and_deleted(gw: GatewayProcess, broker: Broker) -> None:
    """A kill carries an operator's token and is not retained: one published retained
    stayed on the broker, token and all, and came again at every reconnect."""
    session = f"{APPLIANCE}-retained-{uuid.uuid4().hex[:8]}"
    topic = f"{broker.prefix}/{APPLIANCE}/kill/{session}"
    publish(broker, broker.operator_user, topic, '{"v": 1}', retain=True)
    wait_record(gw, alert_of("session_kill_rejected", session), "rejected kill")
    deadline = time.monotonic() + 10
    while retained_kills(broker, session):
        assert time.monotonic() < deadline, "the retained kill was never deleted"
        time.sleep(0.1)
