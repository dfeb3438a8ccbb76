"""Just-in-time approvals with a real Mosquitto: a held statement waits on the wire until
an operator's signed decision arrives; approve runs it, deny and expiry refuse it, and a
decision that does not carry a valid approver's token changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import queue
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import mysql.connector
import pymysql
import pytest
from lab.approvals import BrokerGate, Held, approvals_toml, mosquitto, publish
from lab.broker import Broker
from lab.clients import ledger_records
from lab.clients import run_sqlgate as sqlgate
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB, free_port
from lab.tokens import USER, Provider

from appliance.approvals import Approvals, Outcome
from appliance.bus import EVENT_SQL_CHARS, Bus
from appliance.config import ApprovalsConfig
from appliance.identity import VerifiedToken
from appliance.mysql.wire import frame

pytestmark = pytest.mark.integration

TIMEOUT_S = 10  # long enough for a stall of a loaded machine between request and reading it


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Provider:
    return Provider(tmp_path_factory.mktemp("idp"))


def approvals_gateway(
    work: Path,
    mariadb: MariaDB,
    broker: Broker,
    provider: Provider,
    name: str = "test-gw",
    timeout_s: float = TIMEOUT_S,
) -> GatewayProcess:
    """A gateway with approvals on (not started)."""
    extra = (
        approvals_toml(work, broker, provider, timeout_s=timeout_s)
        + """
[[rules]]
name = "review-appr-deletes"
statements = ["DELETE"]
tables = ["shop.appr_t"]
action = "review"
"""
    )
    return GatewayProcess(work, mariadb, mariadb.pki, extra_toml=extra, name=name)


@pytest.fixture(scope="module")
def gw(
    mariadb: MariaDB,
    broker: Broker,
    provider: Provider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    mariadb.admin_sql(
        "CREATE TABLE IF NOT EXISTS shop.appr_t (id INT PRIMARY KEY)",
        "DELETE FROM shop.appr_t",
        "INSERT INTO shop.appr_t VALUES (1), (2)",
    )
    gw = approvals_gateway(tmp_path_factory.mktemp("gw"), mariadb, broker, provider).start()
    yield gw
    assert gw.stop() == 0
    log = gw.log()
    assert "Traceback" not in log
    assert broker.users[broker.gateway_user] not in log


def columns(mariadb: MariaDB) -> list[str]:
    rows = mariadb.admin_sql(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'shop' AND table_name = 'appr_t' ORDER BY ordinal_position"
    )
    return [str(r[0]) for r in rows]


def next_request(broker: Broker, sql: str, appliance: str = "test-gw") -> dict[str, Any]:
    """The pending request for ``sql``, as an operator's console receives it (retained;
    an earlier request that is being cleared may come first)."""
    proc = subprocess.Popen(
        mosquitto(
            "mosquitto_sub",
            broker,
            broker.operator_user,
            "-t",
            f"{broker.prefix}/{appliance}/approvals/+",
            "-W",
            "15",
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.strip():
                continue
            request: dict[str, Any] = json.loads(line)
            if request.get("sql") == sql:
                return request
        raise AssertionError(f"no approval request for {sql!r}")
    finally:
        proc.kill()
        proc.wait()


def decide(
    broker: Broker, request: dict[str, Any], payload: dict[str, Any], appliance: str = "test-gw"
) -> None:
    """An operator's decision on ``request``, published under ``appliance``."""
    body = {"v": 1, "sql_sha256": request["sql_sha256"], **payload}
    topic = f"{broker.prefix}/{appliance}/approvals/{request['id']}/decision"
    publish(broker, broker.operator_user, topic, json.dumps(body))


def dba_token(provider: Provider, user: str = "dba@example.com", **claims: Any) -> str:
    return provider.token(email=user, groups=["dba"], **claims)


def by_dba(provider: Provider, decision: str, **extra: Any) -> dict[str, Any]:
    """A decision payload from the approver dba@example.com, with a valid token."""
    return {
        "decision": decision,
        "operator": "dba@example.com",
        "token": dba_token(provider),
        **extra,
    }


def test_a_decision_with_a_lone_surrogate_is_dropped_and_the_session_lives(
    gw: GatewayProcess, broker: Broker, provider: Provider
) -> None:
    """BUG: a denial whose reason held a lone surrogate (``"\\ud800"``: JSON, but no
    text) ended the held session as an internal error: the client lost its connection
    and the ledger had no `approval` record, which could not be written. Such a message is
    dropped as malformed; the statement waits on, and a proper decision settles it."""
    sql = "ALTER TABLE appr_t COMMENT = 'lone surrogate'"
    held = Held(gw, sql)
    try:
        request = next_request(broker, sql)
        topic = f"{broker.prefix}/test-gw/approvals/{request['id']}/decision"
        body = json.dumps({"v": 1, "sql_sha256": request["sql_sha256"], **by_dba(provider, "deny")})
        publish(broker, broker.operator_user, topic, body[:-1] + ', "reason": "no \\ud800"}')
        deadline = time.monotonic() + TIMEOUT_S
        while "a lone surrogate is not text" not in gw.log():
            assert time.monotonic() < deadline, "the message was not dropped"
            time.sleep(0.05)
        assert not held.done.is_set()  # still waiting for a person
        decide(broker, request, by_dba(provider, "deny", reason="not now"))
        error = held.result()
        assert error is not None and error[0] == 1227 and "not now" in error[1]
        with held.conn.cursor() as cur:  # the session lives on
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        held.close()
    (approval,) = [
        r
        for r in ledger_records(gw.ledger, "--kind", "approval")
        if r.get("request") == request["id"]
    ]
    assert approval["decision"] == "denied" and approval["reason"] == "not now"
    assert "internal error" not in gw.log()


def test_an_approved_statement_runs_and_the_client_gets_its_result(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    held = Held(gw, "ALTER TABLE appr_t ADD COLUMN note VARCHAR(20)")
    try:
        request = next_request(broker, "ALTER TABLE appr_t ADD COLUMN note VARCHAR(20)")
        assert request["v"] == 1 and request["identity"] == "agent"
        assert request["sql"] == "ALTER TABLE appr_t ADD COLUMN note VARCHAR(20)"
        assert request["rule"] == "schema-change" and request["target"] == "orders"
        assert "note" not in columns(mariadb)  # it waits
        decide(
            broker,
            request,
            by_dba(provider, "approve"),
        )
        assert held.result() is None
        assert "note" in columns(mariadb)
    finally:
        held.close()
        mariadb.admin_sql("ALTER TABLE shop.appr_t DROP COLUMN IF EXISTS note")
    time.sleep(0.1)
    recs = [
        r
        for r in ledger_records(gw.ledger)
        if r.get("request") == request["id"]
        or r.get("sql", "").startswith("ALTER TABLE appr_t ADD COLUMN note")
    ]
    statement = next(r for r in recs if r["kind"] == "statement")
    assert statement["decision"] == "pending" and statement["rule"] == "schema-change"
    approval = next(
        r
        for r in ledger_records(gw.ledger)
        if r["kind"] == "approval"
        and r["statement_seq"] == statement["statement_seq"]
        and r["session"] == statement["session"]
    )
    assert approval["decision"] == "approved" and approval["approver"] == "dba@example.com"
    result = next(
        r
        for r in ledger_records(gw.ledger)
        if r["kind"] == "result"
        and r["statement_seq"] == statement["statement_seq"]
        and r["session"] == statement["session"]
    )
    assert result["approver"] == "dba@example.com" and result["error"] is None


def test_a_denied_statement_gets_1227_with_the_operators_reason(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    held = Held(gw, "DROP TABLE appr_t")
    try:
        request = next_request(broker, "DROP TABLE appr_t")
        decide(
            broker,
            request,
            {
                "decision": "deny",
                "operator": "dba@example.com",
                "token": dba_token(provider),
                "reason": "we still need that table",
            },
        )
        error = held.result()
    finally:
        held.close()
    assert error is not None and error[0] == 1227
    assert error[1] == (
        "sqlgate: denied by dba@example.com: we still need that table. The statement did not run"
    )
    assert mariadb.admin_sql("SELECT COUNT(*) FROM shop.appr_t")[0][0] == 2


def test_decisions_without_a_valid_approver_token_change_nothing_and_it_expires(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    held = Held(gw, "DROP TABLE IF EXISTS appr_t")
    try:
        request = next_request(broker, "DROP TABLE IF EXISTS appr_t")
        stranger = Provider(provider.jwks.parent / "stranger")
        decide(  # the requester approving its own statement
            broker,
            request,
            {"decision": "approve", "operator": "agent", "token": dba_token(provider, "agent")},
        )
        decide(  # a token from a key the gateway does not trust
            broker,
            request,
            {"decision": "approve", "operator": "x@example.com", "token": dba_token(stranger)},
        )
        decide(  # a valid approval in a message format this gateway does not read
            broker, request, {**by_dba(provider, "approve"), "v": 2}
        )
        decide(  # a valid token, but not an approver
            broker,
            request,
            {
                "decision": "approve",
                "operator": "eve@example.com",
                "token": provider.token(email="eve@example.com", groups=["agents"]),
            },
        )
        error = held.result(TIMEOUT_S + 20)
    finally:
        held.close()
    assert error is not None and error[0] == 1227 and "expired" in error[1]
    assert mariadb.admin_sql("SELECT COUNT(*) FROM shop.appr_t")[0][0] == 2
    time.sleep(0.1)
    reasons = [r["reason"] for r in ledger_records(gw.ledger) if r["kind"] == "alert"]
    assert any("may not approve their own statement" in r for r in reasons)
    assert any("token was refused" in r for r in reasons)
    assert any("is not an approver" in r for r in reasons)
    assert any('a decision must say "v": 1' in r for r in reasons)
    # the retained request is gone
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(
            mosquitto(
                "mosquitto_sub",
                broker,
                broker.operator_user,
                "-t",
                f"{broker.prefix}/test-gw/approvals/{request['id']}",
                "-C",
                "1",
            ),
            capture_output=True,
            timeout=1.5,
        )


def test_a_flood_of_decisions_is_recorded_in_short(gw: GatewayProcess, broker: Broker) -> None:
    """Anyone with the operators' broker login can send decisions: 300 for a 60,000-byte
    request id must not write 300 alerts of 60 kB each (they filled the disk)."""
    long_id = "f" * 60_000
    topic = f"{broker.prefix}/test-gw/approvals/{long_id}/decision"
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
            if r.get("alert") == "approval_decision_rejected"
        ]
        flood = [r for r in alerts if str(r.get("request", "")).startswith("fff")]
        counted = sum(int(r["reason"].split()[0]) for r in alerts if "a flood" in r["reason"])
        if len(flood) + counted >= 300 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert 0 < len(flood) < 150 and all(len(r["request"]) <= 64 for r in flood)
    assert len(flood) + counted == 300  # every one accounted for


def test_without_the_broker_a_review_is_refused_at_once(
    gw: GatewayProcess, broker: Broker, provider: Provider
) -> None:
    broker.stop()
    try:
        time.sleep(1.0)  # the gateway notices the lost connection
        with gw.connect(database="shop") as conn:
            started = time.monotonic()
            with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
                cur.execute("DROP TABLE appr_t")
            assert time.monotonic() - started < 2
            code, message = info.value.args
            assert code == 1227 and "approvals are unavailable" in message
            for _ in range(20):  # each at once after the last: none waits behind another
                with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
                    cur.execute("DROP TABLE appr_t")
                code, message = info.value.args
                assert code == 1227 and "approvals are unavailable" in message, message
            with conn.cursor() as cur:  # everything else goes on
                cur.execute("SELECT COUNT(*) FROM appr_t")
                assert cur.fetchone() == (2,)
    finally:
        broker.start()
    # each refusal is in the ledger with a decision of SPEC §9: denied, by the gateway
    refused = [
        r
        for r in ledger_records(gw.ledger, "--kind", "approval")
        if "MQTT broker" in (r["reason"] or "")
    ]
    assert len(refused) >= 21
    for record in refused:
        assert record["decision"] == "denied" and record["approver"] == "sqlgate", record
        assert record["reason"].startswith("approvals unavailable: the MQTT broker "), record
    # the gateway reconnects by itself and holds statements again
    deadline = time.monotonic() + 15
    while True:
        held = Held(gw, "DROP TABLE appr_t")
        if not held.done.wait(1.0):
            break  # held: the request went out
        held.close()
        assert time.monotonic() < deadline, "approvals never came back after the broker did"
        time.sleep(0.5)
    try:
        request = next_request(broker, "DROP TABLE appr_t")
        decide(
            broker,
            request,
            by_dba(provider, "deny"),
        )
        error = held.result()
        assert error is not None and "denied by dba@example.com" in error[1]
    finally:
        held.close()


def test_a_request_that_expires_while_the_broker_is_away_says_so(
    gw: GatewayProcess, broker: Broker
) -> None:
    """Held as the broker went away, the statement waits its time (the broker may come
    back, and the request is published again); when it expires, the client and the
    ledger name the broker, not operators who did not decide in time."""
    sql = "DELETE FROM appr_t WHERE id = 2"
    held = Held(gw, sql)
    try:
        request = next_request(broker, sql)
        broker.stop()
        try:
            error = held.result(TIMEOUT_S + 20)
        finally:
            broker.start()
    finally:
        held.close()
    assert error is not None and error[0] == 1227
    assert "expired: the MQTT broker was unreachable for " in error[1], error[1]
    assert "nobody decided in time" not in error[1]
    (record,) = [
        r
        for r in ledger_records(gw.ledger, "--kind", "approval")
        if r.get("request") == request["id"]
    ]
    assert record["decision"] == "expired"
    assert record["reason"].startswith("the MQTT broker was unreachable for "), record
    # the gateway is back on the broker (it says so, retained) before the next test
    deadline = time.monotonic() + 45
    while '"online"' not in (retained(broker, f"{broker.prefix}/test-gw/status") or ""):
        assert time.monotonic() < deadline, "the gateway never came back to the broker"
        time.sleep(0.5)


def retained(broker: Broker, topic: str, wait_s: float = 1.5) -> str | None:
    """The retained message on ``topic`` (as the operator), or None when none came within
    ``wait_s`` (when one is expected, give a long wait: it returns as soon as it comes)."""
    try:
        out = subprocess.run(
            mosquitto(
                "mosquitto_sub",
                broker,
                broker.operator_user,
                "-t",
                topic,
                "-C",
                "1",
                "--retained-only",
            ),
            capture_output=True,
            text=True,
            timeout=wait_s,
        )
    except subprocess.TimeoutExpired:
        return None
    return out.stdout.strip() or None


def test_a_request_pending_across_a_broker_restart_is_published_again(
    gw: GatewayProcess, mariadb: MariaDB, broker: Broker, provider: Provider, tmp_path: Path
) -> None:
    """A broker without persistence (the lab's, the image's) forgets retained requests
    when it restarts: the gateway publishes its pending ones again once it reconnects,
    or operators who look then would not see the statement that waits for them."""
    restarting = approvals_gateway(
        tmp_path / "gw", mariadb, broker, provider, name="restart-gw", timeout_s=60
    ).start()
    sql = "DELETE FROM appr_t WHERE id = 1"
    held = Held(restarting, sql)
    try:
        first = next_request(broker, sql, appliance="restart-gw")
        broker.restart()
        again = next_request(broker, sql, appliance="restart-gw")
        assert again["id"] == first["id"]
        decide(broker, again, by_dba(provider, "deny"), appliance="restart-gw")
        error = held.result()
        assert error is not None and "denied by dba@example.com" in error[1]
    finally:
        held.close()
        assert restarting.stop() == 0
    assert "Traceback" not in restarting.log()


@pytest.mark.parametrize("how", ["sigterm", "kill-9"])
def test_a_gateway_that_stops_while_a_request_is_pending(
    how: str, mariadb: MariaDB, broker: Broker, provider: Provider, tmp_path: Path
) -> None:
    """SIGTERM answers the held client and clears its request; after a kill -9 the
    client loses its connection and the next start clears the request left behind."""
    # another name: a gateway clears the requests under its name that it does not hold
    gw = approvals_gateway(
        tmp_path / "gw", mariadb, broker, provider, name="test-gw-2", timeout_s=60
    ).start()
    held = Held(gw, "DROP TABLE appr_t")
    request = next_request(broker, "DROP TABLE appr_t", appliance="test-gw-2")
    topic = f"{broker.prefix}/test-gw-2/approvals/{request['id']}"
    assert gw.proc is not None
    try:
        if how == "sigterm":
            assert gw.stop() == 0
            error = held.result()
            assert error is not None and error[0] == 1227 and "shutting down" in error[1]
            time.sleep(0.3)
            assert retained(broker, topic) is None
        else:
            gw.proc.kill()
            gw.proc.wait()
            gw.proc = None
            error = held.result()
            assert error is not None  # the connection is gone
            assert retained(broker, topic, wait_s=15) is not None  # left behind
            gw.start()
            deadline = time.monotonic() + 10
            while retained(broker, topic) is not None:
                assert time.monotonic() < deadline, "the stale request was never cleared"
            assert gw.stop() == 0
            alerts = [r for r in ledger_records(gw.ledger) if r["kind"] == "alert"]
            assert any(
                r["alert"] == "approval_request_cleared" and r["request"] == request["id"]
                for r in alerts
            )
    finally:
        held.close()
        if gw.proc is not None:
            gw.stop()
    assert mariadb.admin_sql("SELECT COUNT(*) FROM shop.appr_t")[0][0] == 2


def test_the_alert_naming_records_lost_in_an_outage_reaches_the_console(
    mariadb: MariaDB, broker: Broker, provider: Provider, tmp_path: Path
) -> None:
    """The alerts the ledger writer makes itself (records_lost once the ledger is back,
    ledger_replaced, unsigned_tail_signed, the retention's) were committed but never
    published: an operator watching the console's alerts did not learn that records had
    been lost. They are published on ``alerts`` like every other alert."""
    gw = approvals_gateway(tmp_path / "gw", mariadb, broker, provider, name="lost-gw").start()
    topic = f"{broker.prefix}/lost-gw/alerts"
    sub = subprocess.Popen(
        mosquitto("mosquitto_sub", broker, broker.operator_user, "-t", topic, "-W", "60"),
        stdout=subprocess.PIPE,
        text=True,
    )
    lock = sqlite3.connect(gw.ledger, isolation_level=None)
    lines: queue.Queue[str] = queue.Queue()  # the subscriber's, "" once it ended
    assert sub.stdout is not None
    stdout = sub.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    try:
        marker = json.dumps({"v": 1, "alert": "marker"})
        deadline = time.monotonic() + 30
        # the subscription is in place once a message of ours comes back: one published
        # before it was (mosquitto_sub still connecting) is not, so publish it again
        while True:
            assert time.monotonic() < deadline, "the subscriber never got the marker"
            publish(broker, broker.gateway_user, topic, marker)
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.5)
                assert line, "the subscriber ended"
                if json.loads(line).get("alert") == "marker":
                    break
        with gw.connect() as conn, conn.cursor() as cur:
            lock.execute("BEGIN EXCLUSIVE")  # another program holds the ledger's write lock
            with pytest.raises(pymysql.err.OperationalError) as err:
                cur.execute("SELECT 1")  # refused; its result record is lost
            assert err.value.args[0] == 1105
            lock.execute("ROLLBACK")
        gw.wait_ledger()
        published = None
        while line := lines.get(timeout=60):  # until the alert comes, or the -W ends it
            message = json.loads(line)
            if message.get("alert") == "records_lost":
                published = message
                break
        assert published is not None, "no records_lost alert was published"
    finally:
        lock.close()
        sub.kill()
        sub.wait()
        assert gw.stop() == 0
    (recorded,) = [r for r in ledger_records(gw.ledger) if r.get("alert") == "records_lost"]
    assert published == {"v": 1, **recorded}
    assert recorded["lost"] >= 1 and recorded["appliance"] == "lost-gw"


def test_an_approval_the_ledger_cannot_record_refuses_the_statement(
    mariadb: MariaDB, broker: Broker, provider: Provider, tmp_path: Path
) -> None:
    """The approval was appended in the background and the statement ran at once: with
    the ledger locked, an approved DELETE ran with only its pending record behind it. It
    runs once its approval is committed; else it is refused with 1105 and nothing is
    forwarded, and a grant that came with the approval does not count."""
    mariadb.admin_sql(
        "CREATE TABLE IF NOT EXISTS shop.appr_t (id INT PRIMARY KEY)",
        "INSERT IGNORE INTO shop.appr_t VALUES (1), (2)",
    )
    gw = approvals_gateway(tmp_path / "gw", mariadb, broker, provider, name="ledger-gw").start()
    sql = "DELETE FROM appr_t WHERE id = 2"
    held = Held(gw, sql)
    lock = sqlite3.connect(gw.ledger, isolation_level=None)
    try:
        request = next_request(broker, sql, appliance="ledger-gw")
        assert request["fingerprint"]
        lock.execute("BEGIN EXCLUSIVE")  # another program holds the ledger's write lock
        decide(broker, request, by_dba(provider, "approve", grant_minutes=5), "ledger-gw")
        assert held.result() == (1105, "sqlgate: audit ledger unavailable")
        assert mariadb.admin_sql("SELECT COUNT(*) FROM shop.appr_t WHERE id = 2") == [(1,)]
        lock.execute("ROLLBACK")
        gw.wait_ledger()
        # the grant is withdrawn: the same shape waits for a person again
        again = Held(gw, "DELETE FROM appr_t WHERE id = 1")
        try:
            request = next_request(broker, again.sql, appliance="ledger-gw")
            decide(broker, request, by_dba(provider, "deny"), "ledger-gw")
            error = again.result()
            assert error is not None and error[0] == 1227
        finally:
            again.close()
    finally:
        lock.close()
        held.close()
        assert gw.stop() == 0
        mariadb.admin_sql("INSERT IGNORE INTO shop.appr_t VALUES (1), (2)")
    recs = ledger_records(gw.ledger)
    (statement,) = [r for r in recs if r["kind"] == "statement" and r["sql"] == sql]
    assert statement["decision"] == "pending"
    approvals = [
        r
        for r in recs
        if r["kind"] == "approval"
        and r["session"] == statement["session"]
        and r["statement_seq"] == statement["statement_seq"]
    ]
    assert approvals == []  # nothing says it ran


def test_live_events_carry_the_sessions_records(gw: GatewayProcess, broker: Broker) -> None:
    proc = subprocess.Popen(
        mosquitto(
            "mosquitto_sub",
            broker,
            broker.operator_user,
            "-t",
            f"{broker.prefix}/test-gw/sessions/#",
            "-v",
            "-W",
            "15",
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # subscribed
        with gw.connect(database="shop") as conn, conn.cursor() as cur:
            cur.execute("SELECT 'live-event-marker'")
        assert proc.stdout is not None
        for line in proc.stdout:
            topic, _, body = line.partition(" ")
            event = json.loads(body)
            if event.get("sql") == "SELECT 'live-event-marker'":
                break
        else:
            raise AssertionError("the statement was never published")
    finally:
        proc.kill()
        proc.wait()
    assert topic.endswith("/statements") and f"/sessions/{event['session']}/" in topic
    assert event["v"] == 1 and event["kind"] == "statement" and event["decision"] == "allowed"
    assert len(event["hash"]) == 64  # the committed record itself


def first_message(
    broker: Broker, pattern: str, check: Any, appliance: str = "test-gw"
) -> tuple[int, dict[str, Any]]:
    """The size and body of the first message on ``pattern`` whose body ``check`` likes."""
    proc = subprocess.Popen(
        mosquitto(
            "mosquitto_sub",
            broker,
            broker.operator_user,
            "-t",
            f"{broker.prefix}/{appliance}/{pattern}",
            "-W",
            "15",
        ),
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                body: dict[str, Any] = json.loads(line)
                if check(body):
                    return len(line), body
        raise AssertionError(f"no such message on {pattern}")
    finally:
        proc.kill()
        proc.wait()


def test_a_huge_statement_goes_on_the_bus_cut_and_into_the_ledger_whole(
    gw: GatewayProcess, broker: Broker, provider: Provider
) -> None:
    """A statement padded past 1 MiB of JSON (a comment of control characters) went out
    whole, so consoles dropped it: an allowed one never showed, a held one could not be
    answered. Events and requests carry 64 KiB of it, with the SHA-256 of all of it."""
    pad = "/* " + "\x01" * (200 * 1024) + " */"
    select = "SELECT 'huge-event-marker' AS m " + pad
    delete = "DELETE FROM shop.appr_t WHERE id = 99 " + pad
    with ThreadPoolExecutor(2) as pool:
        event = pool.submit(
            first_message,
            broker,
            "sessions/+/statements",
            lambda b: str(b.get("sql", "")).startswith("SELECT 'huge-event-marker'"),
        )
        request = pool.submit(
            first_message,
            broker,
            "approvals/+",
            lambda b: str(b.get("sql", "")).startswith("DELETE FROM shop.appr_t WHERE id = 99"),
        )
        time.sleep(0.5)  # subscribed
        with gw.connect(database="shop") as conn, conn.cursor() as cur:
            cur.execute(select)
        held = Held(gw, delete)
        try:
            size, body = event.result(20)
            assert size < 1024 * 1024 and body["sql_truncated"] is True
            assert body["sql"] == select[:EVENT_SQL_CHARS]
            # of the whole command, as ever: COM_QUERY's byte, then the text
            assert body["sql_sha256"] == hashlib.sha256(b"\x03" + select.encode()).hexdigest()
            size, asked = request.result(20)
            assert size < 1024 * 1024 and asked["sql_truncated"] is True
            assert asked["sql_sha256"] == hashlib.sha256(b"\x03" + delete.encode()).hexdigest()
            decide(broker, asked, by_dba(provider, "approve"))  # answered from what it shows
            assert held.result() is None
        finally:
            held.close()
    whole = [
        r for r in ledger_records(gw.ledger, "--kind", "statement") if r["sql"] in (select, delete)
    ]
    assert len(whole) == 2 and not any("sql_truncated" in r for r in whole)


def test_a_grant_lets_the_same_shape_through_for_a_while(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    held = Held(gw, "ALTER TABLE appr_t COMMENT = 'first'")
    try:
        request = next_request(broker, "ALTER TABLE appr_t COMMENT = 'first'")
        assert request["fingerprint"]
        decide(
            broker,
            request,
            {
                "decision": "approve",
                "operator": "dba@example.com",
                "token": dba_token(provider),
                "grant_minutes": 5,
            },
        )
        assert held.result() is None
    finally:
        held.close()
    # the same shape with another literal runs at once, without a request
    with gw.connect(database="shop") as conn, conn.cursor() as cur:
        started = time.monotonic()
        cur.execute("ALTER TABLE appr_t COMMENT = 'second'")
        assert time.monotonic() - started < TIMEOUT_S
    comment = mariadb.admin_sql(
        "SELECT table_comment FROM information_schema.tables "
        "WHERE table_schema = 'shop' AND table_name = 'appr_t'"
    )
    assert comment == [("second",)]
    time.sleep(0.1)
    (granted,) = [
        r
        for r in ledger_records(gw.ledger)
        if r["kind"] == "statement" and r["sql"] == "ALTER TABLE appr_t COMMENT = 'second'"
    ]
    assert granted["decision"] == "approved" and granted["approver"] == "dba@example.com"
    assert granted["reason"].startswith("granted by dba@example.com until ")
    # another shape still waits for a person
    held = Held(gw, "ALTER TABLE appr_t ADD COLUMN extra INT")
    try:
        request = next_request(broker, "ALTER TABLE appr_t ADD COLUMN extra INT")
        decide(
            broker,
            request,
            by_dba(provider, "deny"),
        )
        error = held.result()
        assert error is not None and error[0] == 1227
    finally:
        held.close()


def test_a_grant_does_not_cover_the_same_bytes_read_without_backslash_escapes(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    """Granted: ALTER TABLE appr_t COMMENT ?. Under NO_BACKSLASH_ESCAPES the bytes
    COMMENT '\\', ADD COLUMN ... -- ' end the string at the backslash and add a column:
    the same shape when read with escapes, another statement as the session reads it, so
    it waits for a person again."""
    granted = "ALTER TABLE appr_t COMMENT 'nbe grant'"
    held = Held(gw, granted)
    try:
        request = next_request(broker, granted)
        decide(broker, request, by_dba(provider, "approve", grant_minutes=5))
        assert held.result() is None
    finally:
        held.close()
    trick = "ALTER TABLE appr_t COMMENT '\\', ADD COLUMN nbe_evil INT -- '"
    held = Held(gw, trick, before=("SET sql_mode = 'NO_BACKSLASH_ESCAPES'",))
    try:
        request = next_request(broker, trick)  # asked again, not run on the grant
        decide(broker, request, by_dba(provider, "deny"))
        error = held.result()
        assert error is not None and error[0] == 1227, error
    finally:
        held.close()
    added = mariadb.admin_sql(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'shop' "
        "AND table_name = 'appr_t' AND column_name = 'nbe_evil'"
    )
    assert added == []


def test_a_held_statement_of_a_client_that_left_runs_once_approved(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    """The agent's connection closes while its statement waits: as a server would have
    run what it was sent, the approved statement runs, and its result is recorded."""
    sql = "ALTER TABLE appr_t ALGORITHM = INPLACE, COMMENT 'client left'"  # a shape no grant has
    held = Held(gw, sql)
    try:
        request = next_request(broker, sql)
        held.conn._sock.shutdown(socket.SHUT_RDWR)  # the agent is gone
        assert held.result() is not None  # its read failed
        decide(broker, request, by_dba(provider, "approve"))
        deadline = time.monotonic() + TIMEOUT_S
        comment: list[tuple[object, ...]] = []
        while time.monotonic() < deadline:
            comment = mariadb.admin_sql(
                "SELECT table_comment FROM information_schema.tables "
                "WHERE table_schema = 'shop' AND table_name = 'appr_t'"
            )
            if comment == [("client left",)]:
                break
            time.sleep(0.05)
        assert comment == [("client left",)]
    finally:
        held.close()
    time.sleep(0.2)
    recs = ledger_records(gw.ledger)
    (statement,) = [r for r in recs if r["kind"] == "statement" and r["sql"] == sql]
    (result,) = [
        r
        for r in recs
        if r["kind"] == "result"
        and (r["session"], r["statement_seq"]) == (statement["session"], statement["statement_seq"])
    ]
    assert result["error"] is None and result["approver"] == "dba@example.com"


def test_a_held_statement_whose_target_closed_the_session_is_withdrawn(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    """The target ended the backend session (a KILL, a failover) while a statement was
    held: its request stayed pending, and an approval given later was recorded after the
    session's end (with a grant, had it asked for one). The request is withdrawn as the
    session ends: denied by sqlgate, recorded before the session's end."""
    sql = "ALTER TABLE appr_t ALGORITHM = INPLACE, COMMENT 'target closed'"  # no grant has it
    conn = gw.connect(user="agent", database="shop", read_timeout=60)
    with conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        (backend,) = cast(tuple[int], cur.fetchone())  # the target's id for this session
    errors: list[tuple[Any, ...]] = []

    def run() -> None:
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        except pymysql.err.MySQLError as exc:
            errors.append(exc.args)

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run)
        request = next_request(broker, sql)
        mariadb.admin_sql(f"KILL {backend}")
        running.result(30)
    conn.close()
    assert errors and errors[0][0] in (2006, 2013), errors  # a lost connection
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        recs = ledger_records(gw.ledger)
        (statement,) = [r for r in recs if r["kind"] == "statement" and r["sql"] == sql]
        mine = [r for r in recs if r.get("session") == statement["session"]]
        if any(r["kind"] == "session_end" for r in mine):
            break
        assert time.monotonic() < deadline, "the session's end was never recorded"
        time.sleep(0.1)
    decide(broker, request, by_dba(provider, "approve"))  # too late: it counts for nothing
    time.sleep(1)
    mine = [r for r in ledger_records(gw.ledger) if r.get("session") == statement["session"]]
    assert mine[-1]["kind"] == "session_end", mine[-1]
    assert "target orders closed the connection" in mine[-1]["reason"]
    (approval,) = [r for r in mine if r["kind"] == "approval"]
    assert approval["decision"] == "denied" and approval["approver"] == "sqlgate"
    assert "the session ended before a decision" in approval["reason"]
    comment = mariadb.admin_sql(
        "SELECT table_comment FROM information_schema.tables "
        "WHERE table_schema = 'shop' AND table_name = 'appr_t'"
    )
    assert comment != [("target closed",)]


LEEWAY_S = 30  # [identity] leeway_s (the default): a token counts that long past its exp
EXPIRES_IN_S = 8  # the session's token runs out this long after it logs in


def expiring_session(gw: GatewayProcess, mariadb: MariaDB, provider: Provider, jti: str) -> Any:
    """A session of carol@example.com (group agents) whose token runs out, with the
    gateway's leeway, EXPIRES_IN_S seconds from now: before its statement's approval
    (asked for after the login) could expire."""
    exp = int(time.time()) + EXPIRES_IN_S - LEEWAY_S
    return pymysql.connect(
        host=gw.host,
        port=gw.port,
        user=USER,
        # another subject than the approver's tokens (by_dba): a person of its own
        password=provider.token(iat=exp - 60, exp=exp, jti=jti, sub="carol-42"),
        database="shop",
        ssl={"ca": str(mariadb.pki.ca_cert)},
        autocommit=True,
        connect_timeout=10,
        read_timeout=60,
    )


def ended(gw: GatewayProcess, session: str) -> list[dict[str, Any]]:
    """The ledger records of ``session``, once its session_end is written."""
    deadline = time.monotonic() + 30
    while True:
        mine = ledger_records(gw.ledger, "--session", session)
        if any(r["kind"] == "session_end" for r in mine):
            return mine
        assert time.monotonic() < deadline, "the session's end was never recorded"
        time.sleep(0.1)


def lost(conn: Any) -> None:
    """The connection is gone, as a server that ended the session leaves it."""
    with pytest.raises(pymysql.err.OperationalError) as caught:
        conn.ping(reconnect=False)
    assert caught.value.args[0] in (2006, 2013), caught.value.args


def test_a_held_statement_is_withdrawn_when_the_sessions_token_expires(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    """BUG: a statement held for approval when its session's token expired went on
    waiting, and an operator's approval given after the expiry was recorded as
    `approved` (with a grant, had it asked for one) on behalf of an identity whose token
    no longer counted. It is withdrawn as the token expires: the client gets the token's
    refusal, the request leaves the broker, the ledger says why, the session ends, and a
    later approval is rejected as one for a request that is not pending."""
    sql = "ALTER TABLE appr_t ALGORITHM = INPLACE, COMMENT 'token expired'"
    conn = expiring_session(gw, mariadb, provider, f"held-{uuid.uuid4().hex}")
    errors: list[tuple[Any, ...]] = []

    def run() -> None:
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        except pymysql.err.MySQLError as exc:
            errors.append(exc.args)

    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(run)
            request = next_request(broker, sql)
            assert request["identity"] == USER
            running.result(30)  # answered as the token expires (its approval would later)
        assert len(errors) == 1, errors
        code, message = errors[0]
        assert code == 1227 and "'token-expired'" in message and "Log in again" in message
        lost(conn)
    finally:
        conn.close()
    session = request["session"]
    mine = ended(gw, session)
    topic = f"{broker.prefix}/test-gw/approvals/{request['id']}"
    assert retained(broker, topic) is None  # withdrawn from the operators' queue
    decide(broker, request, by_dba(provider, "approve", grant_minutes=5))  # too late
    deadline = time.monotonic() + TIMEOUT_S
    while not [
        r
        for r in ledger_records(gw.ledger, "--kind", "alert")
        if r["alert"] == "approval_decision_rejected" and r.get("request") == request["id"]
    ]:
        assert time.monotonic() < deadline, "the late approval was not rejected"
        time.sleep(0.1)
    assert ledger_records(gw.ledger, "--session", session) == mine  # nothing came after
    assert [r["kind"] for r in mine][-3:] == ["approval", "result", "session_end"]
    approval, result, end = mine[-3:]
    assert approval["decision"] == "denied" and approval["approver"] == "sqlgate"
    assert "token this session logged in with expired" in approval["reason"]
    assert "before a decision" in approval["reason"]
    assert result["error"] == 1227 and "(token-expired)" in result["reason"]
    assert "waited for approval" in result["reason"]
    assert "token expired at" in end["reason"] and "ended_by" not in end
    comment = mariadb.admin_sql(
        "SELECT table_comment FROM information_schema.tables "
        "WHERE table_schema = 'shop' AND table_name = 'appr_t'"
    )
    assert comment != [("token expired",)]


def test_an_approved_statement_running_when_the_token_expires_finishes_first(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    """The approved statement is on the target (waiting for a lock) when the session's
    token expires: like any command already sent, it runs to its end and the client gets
    its answer; then the session ends as an idle one does."""
    sql = "ALTER TABLE appr_t ALGORITHM = INPLACE, COMMENT 'ran past its token'"
    blocker = mariadb.connect(autocommit=False)
    conn = expiring_session(gw, mariadb, provider, f"running-{uuid.uuid4().hex}")
    errors: list[tuple[Any, ...]] = []

    def run() -> None:
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        except pymysql.err.MySQLError as exc:
            errors.append(exc.args)

    try:
        with blocker.cursor() as cur:  # holds the table's metadata lock: the ALTER waits
            cur.execute("BEGIN")
            cur.execute("SELECT * FROM shop.appr_t")
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(run)
            request = next_request(broker, sql)
            decide(broker, request, by_dba(provider, "approve"))
            deadline = time.monotonic() + TIMEOUT_S
            while not mariadb.admin_sql(
                "SELECT id FROM information_schema.processlist WHERE info LIKE "
                "'ALTER TABLE appr_t%ran past its token%'"
            ):
                assert time.monotonic() < deadline, "the approved statement was never sent"
                time.sleep(0.05)
            number = request["session"].rsplit("-", 1)[1]
            expired = f"session {number}: the token it logged in with expired"
            while expired not in gw.log():  # the gateway's timer went off meanwhile
                assert time.monotonic() < deadline + EXPIRES_IN_S, "the token never expired"
                time.sleep(0.1)
            blocker.rollback()  # the lock goes: the ALTER runs to its end
            running.result(30)
        assert errors == []
        lost(conn)
    finally:
        blocker.close()
        conn.close()
    mine = ended(gw, request["session"])
    assert [r["kind"] for r in mine][-3:] == ["approval", "result", "session_end"]
    approval, result, end = mine[-3:]
    assert approval["decision"] == "approved" and approval["approver"] == "dba@example.com"
    assert result["error"] is None and result["approver"] == "dba@example.com"
    assert "reason" not in result or result["reason"] is None
    assert "token expired at" in end["reason"]
    comment = mariadb.admin_sql(
        "SELECT table_comment FROM information_schema.tables "
        "WHERE table_schema = 'shop' AND table_name = 'appr_t'"
    )
    assert comment == [("ran past its token",)]


def selects(gw: GatewayProcess, session: str) -> list[str]:
    """The SELECT statements the ledger has of ``session``, in order."""
    records = ledger_records(gw.ledger, "--kind", "statement", "--session", session)
    return [r["sql"] for r in records if r["sql"].startswith("SELECT ")]


def test_commands_pipelined_behind_a_held_statement_are_read_only_so_far(
    gw: GatewayProcess, broker: Broker, provider: Provider
) -> None:
    """An agent that pipelines thousands of statements behind one that waits for a
    person: the gateway reads a bounded backlog of them (decided and recorded, waiting in
    line) and no more until the line moves; then every one runs, in order."""
    sql = "ALTER TABLE appr_t ALGORITHM = DEFAULT, COMMENT 'pipelined behind'"  # no grant's shape
    n = 3000
    conn = gw.connect(database="shop", read_timeout=30)
    try:
        conn._sock.sendall(
            frame(0, b"\x03" + sql.encode())
            + b"".join(frame(0, b"\x03SELECT %d" % i) for i in range(n))
        )
        request = next_request(broker, sql)
        time.sleep(0.5)  # what the gateway would read of the rest, it has read by now
        recorded = selects(gw, request["session"])
        assert 0 < len(recorded) < 1000, len(recorded)
        decide(broker, request, by_dba(provider, "approve"))
        conn._next_seq_id = 1
        conn._read_query_result()  # the ALTER's OK
        for i in range(n):
            conn._next_seq_id = 1
            conn._read_query_result()
            assert conn._result.rows == ((i,),)
    finally:
        conn.close()
    assert selects(gw, request["session"]) == [f"SELECT {i}" for i in range(n)]


def test_a_session_asks_for_one_approval_at_a_time(
    gw: GatewayProcess, broker: Broker, provider: Provider
) -> None:
    """A second statement for review pipelined behind a held one is refused, not sent to
    the operators as well: one agent cannot fill their screens with requests."""
    first = "ALTER TABLE appr_t ALGORITHM = DEFAULT, COMMENT 'one at a time'"  # no grant's shape
    second = "DELETE FROM appr_t WHERE id = 4242"
    conn = gw.connect(database="shop", read_timeout=30)
    try:
        conn._sock.sendall(frame(0, b"\x03" + first.encode()) + frame(0, b"\x03" + second.encode()))
        request = next_request(broker, first)
        decide(broker, request, by_dba(provider, "approve"))
        conn._next_seq_id = 1
        conn._read_query_result()  # the approved ALTER's OK
        conn._next_seq_id = 1
        with pytest.raises(pymysql.err.OperationalError) as refused:
            conn._read_query_result()
        code, message = refused.value.args
        assert code == 1227 and "a session asks for one at a time" in message
    finally:
        conn.close()
    records = ledger_records(gw.ledger, "--session", request["session"])
    (statement,) = [r for r in records if r["kind"] == "statement" and r["sql"] == second]
    assert statement["decision"] != "pending"
    approvals = [r for r in records if r["kind"] == "approval"]
    assert [r["statement_seq"] for r in approvals] == [request["statement_seq"]]


def test_a_statement_for_review_cannot_be_prepared(gw: GatewayProcess, mariadb: MariaDB) -> None:
    """An approval binds one execution; a prepared statement runs at every execute, so a
    reviewable one is refused at once, by COM_STMT_PREPARE and by PREPARE, and nothing
    waits for a person."""
    before = mariadb.admin_sql("SELECT COUNT(*) FROM shop.appr_t")
    conn = gw.connector(database="shop")
    try:
        cur = conn.cursor(prepared=True)
        with pytest.raises(mysql.connector.Error) as refused:
            cur.execute("DELETE FROM appr_t WHERE id = ?", (1,))
        assert refused.value.errno == 1227 and "cannot be prepared" in refused.value.msg
    finally:
        conn.close()
    with gw.connect(database="shop") as text, text.cursor() as cur:
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as caught:
            cur.execute("PREPARE s FROM 'DELETE FROM appr_t WHERE id = 1'")
        assert time.monotonic() - started < TIMEOUT_S  # refused, not held
        assert caught.value.args[0] == 1227 and "cannot be prepared" in caught.value.args[1]
    assert mariadb.admin_sql("SELECT COUNT(*) FROM shop.appr_t") == before


def test_a_grant_on_execute_immediate_covers_nothing_else(
    gw: GatewayProcess, broker: Broker, provider: Provider
) -> None:
    """EXECUTE IMMEDIATE holds its statement in a string, which a shape makes '?': a
    grant there would cover any statement. The next one is asked for again."""
    first = "EXECUTE IMMEDIATE 'ALTER TABLE appr_t COMMENT = ''granted once'''"
    held = Held(gw, first)
    try:
        request = next_request(broker, first)
        assert request["fingerprint"] is None  # nothing a grant could bind: none is taken
        decide(broker, request, by_dba(provider, "approve"))
        assert held.result() is None
    finally:
        held.close()
    second = "EXECUTE IMMEDIATE 'DROP TABLE appr_t'"
    held = Held(gw, second)
    try:
        request = next_request(broker, second)  # asked for, not run on the grant
        decide(broker, request, by_dba(provider, "deny"))
        error = held.result()
        assert error is not None and error[0] == 1227
    finally:
        held.close()


def victim_exists(mariadb: MariaDB) -> bool:
    return bool(
        mariadb.admin_sql(
            "SELECT 1 FROM information_schema.tables "
            "WHERE table_schema = 'shop' AND table_name = 'appr_victim'"
        )
    )


def test_a_grant_on_a_call_covers_nothing_else(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    """A procedure may run its argument as SQL: a grant on CALL appr_run(?) would cover
    CALL appr_run('DROP TABLE ...'). Such a request has no shape to grant (an operator's
    grant is refused), and the next CALL is asked for again."""
    mariadb.admin_sql(
        "CREATE TABLE IF NOT EXISTS shop.appr_victim (id INT)",
        "CREATE OR REPLACE PROCEDURE shop.appr_run(s TEXT) BEGIN EXECUTE IMMEDIATE s; END",
    )
    try:
        called = _granted_then_asked_again(
            gw,
            broker,
            provider,
            ("call", "CALL appr_run('SELECT 1')"),
            "CALL appr_run('DROP TABLE shop.appr_victim')",
        )
        assert victim_exists(mariadb)
        assert called["fingerprint"] is None  # nothing a grant could bind
    finally:
        mariadb.admin_sql(
            "DROP PROCEDURE IF EXISTS shop.appr_run", "DROP TABLE IF EXISTS shop.appr_victim"
        )


def _granted_then_asked_again(
    gw: GatewayProcess,
    broker: Broker,
    provider: Provider,
    first: tuple[str, str],
    second: str,
) -> dict[str, Any]:
    """Hold ``first`` (its rule, its text) and approve it, with a grant when the request
    offers one; then ``second`` must be asked for again (not run on the grant), and is
    denied. The first request."""
    rule, text = first
    held = Held(gw, text)
    try:
        request = next_request(broker, text)
        assert request["rule"] == rule
        grant = {"grant_minutes": 5} if request["fingerprint"] else {}
        decide(broker, request, by_dba(provider, "approve", **grant))
        assert held.result() is None
    finally:
        held.close()
    held = Held(gw, second)
    try:
        again = next_request(broker, second)  # asked for, not run on a grant
        decide(broker, again, by_dba(provider, "deny"))
        error = held.result()
        assert error is not None and error[0] == 1227
    finally:
        held.close()
    return request


def engine(mariadb: MariaDB) -> str:
    rows = mariadb.admin_sql(
        "SELECT engine FROM information_schema.tables "
        "WHERE table_schema = 'shop' AND table_name = 'appr_t'"
    )
    return str(rows[0][0])


def test_a_grant_on_an_engine_covers_no_other_engine(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    """After ENGINE the server reads a literal as a name: a grant on ENGINE = 'InnoDB'
    would cover ENGINE = 'MEMORY' (the rows gone at the next restart) or 'BLACKHOLE'
    (gone at once). Such a request has no shape to grant, and the next one is asked for
    again."""
    try:
        altered = _granted_then_asked_again(
            gw,
            broker,
            provider,
            ("schema-change", "ALTER TABLE appr_t ENGINE = 'InnoDB'"),
            "ALTER TABLE appr_t ENGINE = 'MEMORY'",
        )
        assert engine(mariadb) == "InnoDB"
        assert altered["fingerprint"] is None  # nothing a grant could bind
    finally:
        mariadb.admin_sql("ALTER TABLE shop.appr_t ENGINE = InnoDB")


def test_a_held_delete_shows_how_many_rows_it_would_touch(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    held = Held(gw, "DELETE FROM appr_t WHERE id >= 2")
    try:
        request = next_request(broker, "DELETE FROM appr_t WHERE id >= 2")
        assert request["rule"] == "review-appr-deletes"
        assert request["rows_estimate"] == 1  # counted, not deleted
        assert mariadb.admin_sql("SELECT COUNT(*) FROM shop.appr_t")[0][0] == 2
        decide(
            broker,
            request,
            by_dba(provider, "deny"),
        )
        assert held.result() is not None
    finally:
        held.close()
    # a WHERE that calls something that could write or wait is never run to count it
    started = time.monotonic()
    held = Held(gw, "DELETE FROM appr_t WHERE id = SLEEP(5)")
    try:
        request = next_request(broker, "DELETE FROM appr_t WHERE id = SLEEP(5)")
        assert request["rows_estimate"] is None
        assert time.monotonic() - started < 1.5  # not counted (that would take 2 s)
        decide(
            broker,
            request,
            by_dba(provider, "deny"),
        )
        assert held.result() is not None
    finally:
        held.close()
    assert mariadb.admin_sql("SELECT COUNT(*) FROM shop.appr_t")[0][0] == 2


@pytest.mark.parametrize(
    ("before", "sql"),
    [
        # a variable the session set: the count's connection read it as NULL
        (("SELECT @all := 1",), "DELETE FROM appr_t WHERE id = 9 OR @all = 1"),
        # read with backslash escapes the string swallowed OR id >= 1; the session
        # reads it without them
        (
            ("SET sql_mode = 'NO_BACKSLASH_ESCAPES'",),
            "DELETE FROM appr_t WHERE id = 9 OR id = '\\' OR id >= 1 -- '",
        ),
        # the session's clock (SET timestamp): the count's connection read the real one
        (
            ("SET timestamp = 4102444800",),
            "DELETE FROM appr_t WHERE id = 9 OR NOW() > '2099-01-01'",
        ),
    ],
)
def test_no_rows_are_counted_where_the_session_reads_the_where_otherwise(
    gw: GatewayProcess,
    broker: Broker,
    provider: Provider,
    mariadb: MariaDB,
    before: tuple[str, ...],
    sql: str,
) -> None:
    """BUG: the count ran on the gateway's own connection, which has none of the
    session's state: the request said the DELETE would touch 0 rows, and approved it
    deleted every row. Such a request says the number is not known (null)."""
    held = Held(gw, sql, before=before)
    try:
        request = next_request(broker, sql)
        assert request["rows_estimate"] is None
        decide(broker, request, by_dba(provider, "deny"))
        assert held.result() is not None
    finally:
        held.close()
    assert mariadb.admin_sql("SELECT COUNT(*) FROM shop.appr_t")[0][0] == 2


UTF8MB4_GERMAN2_CI = 244


def test_rows_are_counted_in_the_collation_the_session_compares_in(
    gw: GatewayProcess, broker: Broker, provider: Provider, mariadb: MariaDB
) -> None:
    """BUG: a login naming utf8mb4_german2_ci, where 'ä' = 'ae', sent no SET NAMES: the
    count, on the gateway's connection in utf8mb4's default collation, said 0 rows for a
    DELETE that touches every row in the session. It compares in the session's now."""
    sql = "DELETE FROM appr_t WHERE id = 9 OR 'ä' = 'ae'"
    held = Held(gw, sql, login_collation=UTF8MB4_GERMAN2_CI)
    try:
        request = next_request(broker, sql)
        assert request["rows_estimate"] == 2
        decide(broker, request, by_dba(provider, "deny"))
        assert held.result() is not None
    finally:
        held.close()
    assert mariadb.admin_sql("SELECT COUNT(*) FROM shop.appr_t")[0][0] == 2


def test_the_broker_keeps_the_latest_signed_ledger_head(gw: GatewayProcess, broker: Broker) -> None:
    with gw.connect(database="shop") as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
    time.sleep(1.5)  # a checkpoint at least every second while records flow
    head = retained(broker, f"{broker.prefix}/test-gw/checkpoints", wait_s=15)
    assert head is not None
    # what `sqlgate ledger head` prints: an auditor can verify the ledger against it
    held = Path(gw.workdir / "head.json")
    held.write_text(head)
    assert set(json.loads(head)) >= {"seq", "hash", "signature"}
    verify = sqlgate(
        "ledger",
        "verify",
        "--ledger",
        str(gw.ledger),
        "--pubkey",
        str(gw.public_key()),
        "--checkpoint",
        str(held),
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_two_gateways_on_one_broker_keep_to_their_own_requests(
    gw: GatewayProcess, mariadb: MariaDB, broker: Broker, provider: Provider, tmp_path: Path
) -> None:
    other = approvals_gateway(tmp_path / "gw2", mariadb, broker, provider, name="test-gw-3").start()
    first = Held(gw, "ALTER TABLE appr_t ROW_FORMAT = DYNAMIC")
    second = Held(other, "ALTER TABLE appr_t ENGINE = InnoDB")
    try:
        ours = next_request(broker, "ALTER TABLE appr_t ROW_FORMAT = DYNAMIC")
        theirs = next_request(broker, "ALTER TABLE appr_t ENGINE = InnoDB", appliance="test-gw-3")
        assert ours["appliance"] == "test-gw" and theirs["appliance"] == "test-gw-3"
        # a decision sent to the first gateway's topic for the second's request counts nowhere
        decide(
            broker,
            theirs,
            by_dba(provider, "approve"),
        )  # (decide() publishes under test-gw: the first gateway does not hold it)
        time.sleep(0.5)
        assert not second.done.is_set() and not first.done.is_set()
        decide(
            broker,
            theirs,
            by_dba(provider, "approve"),
            appliance="test-gw-3",
        )
        assert second.result() is None  # approved on its own gateway
        assert not first.done.is_set()  # the first still waits
        decide(
            broker,
            ours,
            by_dba(provider, "deny"),
        )
        error = first.result()
        assert error is not None and error[0] == 1227
    finally:
        first.close()
        second.close()
        assert other.stop() == 0


# ------------------------------------------------------------ without a lab: a race


class _Bus:
    """What Approvals uses of the bus: the request's topic is told on ``published``."""

    connected = True

    def __init__(self) -> None:
        self.published = asyncio.Event()
        self.topic = ""

    def subscribe(self, pattern: str, handler: Any, *, delete_retained: bool = False) -> None:
        pass

    def on_connected(self, callback: Any) -> None:
        pass

    async def publish_now(self, topic: str, payload: dict[str, Any], retain: bool) -> None:
        self.topic = topic
        self.published.set()

    def clear_retained(self, topic: str) -> bool:
        return True

    def downtime(self) -> float:
        return 0.0


class _SlowTokens:
    """A token check that takes until the test lets it finish."""

    def __init__(self) -> None:
        self.checking = asyncio.Event()
        self.finish = asyncio.Event()

    async def verify(self, user: str, token: bytes) -> VerifiedToken:
        self.checking.set()
        await self.finish.wait()
        return VerifiedToken(user, None, frozenset({"dba"}), None, time.time() + 60)


async def _approved_with_a_grant(
    bus: _Bus, tokens: _SlowTokens, timeout_s: float
) -> tuple[Approvals, asyncio.Task[Outcome]]:
    """Approvals on ``bus``, a request of agent's (a DELETE of shape "fp") waiting in
    it, and a dba's approval of it with a 5-minute grant, just received (its token
    checked by ``tokens``)."""
    config = ApprovalsConfig(timeout_s=timeout_s, approver_groups=("dba",), enabled=True)
    approvals = Approvals(config, cast(Any, bus), cast(Any, tokens))
    sha = "ab" * 32
    fields = {"target": "orders", "sql": "DELETE FROM t WHERE id = 1", "session": "s-1"}
    waiting = asyncio.create_task(approvals.request(fields, "agent", sha, "fp"))
    await bus.published.wait()
    approve = {"v": 1, "decision": "approve", "operator": "dba@example.com"}
    approve |= {"token": "t", "sql_sha256": sha, "grant_minutes": 5}
    approvals._on_decision(bus.topic + "/decision", approve)
    return approvals, waiting


@pytest.mark.parametrize("end", ["expired", "cancelled"])
def test_a_decision_checked_after_its_request_ended_grants_nothing(end: str) -> None:
    """An approval with a grant whose token check is still running when its request
    expires (or its waiter is cancelled: the session ended) counts for nothing: the
    ledger says expired, so no later statement may run as granted by that request."""

    async def scenario() -> None:
        bus, tokens = _Bus(), _SlowTokens()
        timeout_s = 0.2 if end == "expired" else 60.0
        approvals, waiting = await _approved_with_a_grant(bus, tokens, timeout_s)
        await tokens.checking.wait()  # the decision is being checked
        if end == "cancelled":
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        else:
            outcome = await waiting
            assert outcome.verdict == "expired" and outcome.grant_minutes == 0
        tokens.finish.set()
        await approvals.close()  # waits for the checks still running
        assert approvals.granted("agent", "orders", "fp") is None

    asyncio.run(asyncio.wait_for(scenario(), 10))


@pytest.mark.parametrize("end", ["expired", "withdrawn", "decided"])
def test_a_decision_whose_check_outlasts_its_request_is_recorded_as_not_counting(
    end: str,
) -> None:
    """BUG: a decision whose token check ended after its request had (it expired, its
    session ended, another operator's decision came first) was dropped without a word,
    where one that came a moment later was an `approval_decision_rejected` alert: the
    ledger had no trace of an operator's approval that counted for nothing. It is
    recorded like any decision that does not count."""

    async def scenario() -> list[tuple[str, str, str]]:
        bus, tokens = _Bus(), _SlowTokens()
        timeout_s = 0.2 if end == "expired" else 60.0
        approvals, waiting = await _approved_with_a_grant(bus, tokens, timeout_s)
        alerts: list[tuple[str, str, str]] = []
        approvals.on_alert = lambda alert, request, reason: alerts.append((alert, request, reason))
        await tokens.checking.wait()  # the decision is being checked
        if end == "withdrawn":
            approvals.end_session("s-1", "sqlgate", "the session ended before a decision")
        elif end == "decided":  # a second operator's denial is checked meanwhile
            deny = {"v": 1, "decision": "deny", "operator": "ops@example.com", "token": "t"}
            approvals._on_decision(bus.topic + "/decision", {**deny, "sql_sha256": "ab" * 32})
            tokens.finish.set()  # both checks end: the first one's decision counts
        outcome = await waiting
        if end == "decided":  # one of the two, whichever check ended first
            assert outcome.approver in ("dba@example.com", "ops@example.com")
        else:
            assert outcome.verdict == ("expired" if end == "expired" else "denied")
        tokens.finish.set()
        await approvals.close()  # waits for the checks still running
        assert approvals.granted("agent", "orders", "fp") is None  # not installed
        return alerts

    alerts = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert [(a, reason) for a, _, reason in alerts] == [
        ("approval_decision_rejected", "a decision for a request that is not pending")
    ]


def test_a_grant_counts_only_once_its_approval_is_recorded() -> None:
    """The grant was in force as the decision came, before the session had its approval
    committed: while that write failed on a locked ledger, another session's statement of
    the same shape ran as granted, and the ledger held no approval at all."""

    async def scenario() -> None:
        bus, tokens = _Bus(), _SlowTokens()
        tokens.finish.set()  # the check passes at once
        approvals, waiting = await _approved_with_a_grant(bus, tokens, 60.0)
        outcome = await waiting
        assert outcome.verdict == "approved" and outcome.grant_minutes == 5
        assert approvals.granted("agent", "orders", "fp") is None  # not recorded yet
        approvals.install(outcome)  # its approval record is committed
        grant = approvals.granted("agent", "orders", "fp")
        assert grant is not None and grant.request_id == outcome.request_id
        await approvals.close()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_review_in_the_gateways_first_moments_waits_for_the_broker(broker: Broker) -> None:
    """A gateway listens before its bus has reached the broker: a statement held in that
    moment waits for the first connection attempt instead of being refused as if the
    broker were down (and once the broker does not answer, it is refused)."""

    async def scenario() -> None:
        bus = Bus(broker.bus_config(), "first-moments-gw")
        config = ApprovalsConfig(timeout_s=0.5, approver_groups=("dba",), enabled=True)
        approvals = Approvals(config, bus, cast(Any, None))
        await bus.start()
        assert not bus.connected  # the connection attempt has not run yet
        fields = {"target": "orders", "sql": "DROP TABLE t"}
        outcome = await approvals.request(fields, "agent", "ab" * 32)
        assert outcome.verdict == "expired"  # it was put to the operators, not refused
        await approvals.close()
        await bus.close()

        port = free_port()
        nobody = replace(broker.bus_config(), url=f"mqtt://127.0.0.1:{port}", port=port)
        down = Bus(nobody, "first-moments-gw")
        approvals = Approvals(config, down, cast(Any, None))
        await down.start()
        outcome = await approvals.request(fields, "agent", "ab" * 32)
        assert outcome.verdict == "unavailable"
        await down.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_a_review_held_before_the_broker_answers_is_withdrawn_when_its_session_ends(
    mariadb: MariaDB, broker: Broker, provider: Provider, tmp_path: Path
) -> None:
    """BUG: a statement held in the gateway's first moments, while its first connection
    to the broker was still under way, was not yet among the pending requests: when its
    session ended (here the target closed it), nothing withdrew it, and once the broker
    answered its request was put to the operators for a session that had ended (an
    approval given then was recorded `approved`). It is withdrawn at once, as later in
    the gateway's life."""
    mariadb.admin_sql("CREATE TABLE IF NOT EXISTS shop.appr_t (id INT PRIMARY KEY)")
    gate = BrokerGate(broker)
    gw = approvals_gateway(tmp_path, mariadb, broker, provider, name="gated-gw")
    gw.extra_toml = gw.extra_toml.replace(f":{broker.port}", f":{gate.port}")
    gw.start()
    sql = "ALTER TABLE appr_t COMMENT = 'before the broker'"
    errors: list[tuple[Any, ...]] = []
    try:
        conn = gw.connect(read_timeout=60)
        with conn.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            (backend,) = cast(tuple[int], cur.fetchone())

        def run() -> None:
            try:
                with conn.cursor() as cur:
                    cur.execute(sql)
            except pymysql.err.MySQLError as exc:
                errors.append(exc.args)

        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(run)
            deadline = time.monotonic() + 30
            while not (
                statements := [
                    r
                    for r in ledger_records(gw.ledger, "--kind", "statement")
                    if r["sql"] == sql and r["decision"] == "pending"
                ]
            ):
                assert time.monotonic() < deadline, "the statement was never held"
                time.sleep(0.05)
            mariadb.admin_sql(f"KILL {backend}")  # the session ends while it waits
            running.result(30)
        conn.close()
        assert errors and errors[0][0] in (2006, 2013), errors  # a lost connection
        session = statements[0]["session"]
        gate.open()  # the broker answers: nothing is put to the operators
        mine = ended(gw, session)
        assert [r["kind"] for r in mine][-2:] == ["approval", "session_end"]
        approval = mine[-2]
        assert approval["decision"] == "denied" and approval["approver"] == "sqlgate"
        assert "the session ended before a decision" in approval["reason"]
        assert retained(broker, f"{broker.prefix}/gated-gw/approvals/+") is None
    finally:
        assert gw.stop() == 0
        gate.close()
    assert "Traceback" not in gw.log()


def test_a_review_sent_while_the_gateway_drains_is_refused_at_once(
    mariadb: MariaDB, broker: Broker, provider: Provider, tmp_path: Path
) -> None:
    """BUG: a statement for review that a session still busy at a stop sent after the
    held statements had been answered was held anyway: its request went to the operators
    of a gateway that was stopping (an approval would have run it there), and the stop
    waited for it to expire or for the drain timeout. It is refused at once now, as
    unavailable because the gateway is shutting down, and never published."""
    mariadb.admin_sql("CREATE TABLE IF NOT EXISTS shop.appr_t (id INT PRIMARY KEY)")
    gw = approvals_gateway(tmp_path, mariadb, broker, provider, name="drain-gw", timeout_s=600)
    gw.start()
    sql = "ALTER TABLE appr_t COMMENT = 'during the drain'"
    conn = gw.connect(read_timeout=60)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn._sock.sendall(frame(0, b"\x03SELECT SLEEP(60)"))  # busy as the stop comes
        deadline = time.monotonic() + 30
        while not [
            r for r in ledger_records(gw.ledger, "--kind", "statement") if "SLEEP" in r["sql"]
        ]:
            assert time.monotonic() < deadline, "the SELECT was never recorded"
            time.sleep(0.05)
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        while "shutting down: draining" not in gw.log():  # held statements answered
            assert time.monotonic() < deadline, "the gateway did not begin its stop"
            time.sleep(0.05)
        conn._sock.sendall(frame(0, b"\x03" + sql.encode()))  # while SLEEP runs
        while not [r for r in ledger_records(gw.ledger, "--kind", "approval")]:
            assert time.monotonic() < deadline + 30, "the statement was not answered"
            time.sleep(0.05)
        for (thread,) in mariadb.admin_sql(
            "SELECT id FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP(60)%'"
        ):
            mariadb.admin_sql(f"KILL QUERY {thread}")  # the session is idle: the stop ends
        assert gw.stop() == 0
    finally:
        conn.close()
        gw.stop()
    records = ledger_records(gw.ledger)
    (statement,) = [r for r in records if r["kind"] == "statement" and r.get("sql") == sql]
    (approval,) = [
        r
        for r in records
        if r["kind"] == "approval"
        and r["session"] == statement["session"]
        and r["statement_seq"] == statement["statement_seq"]
    ]
    assert approval["decision"] == "denied" and approval["approver"] == "sqlgate"
    assert approval["reason"] == "approvals unavailable: the gateway is shutting down"
    (result,) = [
        r
        for r in records
        if r["kind"] == "result"
        and r["session"] == statement["session"]
        and r["statement_seq"] == statement["statement_seq"]
    ]
    assert result["error"] == 1227
    assert "Traceback" not in gw.log()


def test_a_review_waiting_for_the_first_connection_is_withdrawn_with_its_session(
    broker: Broker,
) -> None:
    """The withdrawal of a session's held statement (its client left, its token
    expired, an operator ended it) reaches one still waiting for the bus's first
    connection attempt: it is answered at once and never published."""

    async def scenario() -> None:
        gate = BrokerGate(broker)
        gated = replace(broker.bus_config(), url=f"mqtt://127.0.0.1:{gate.port}", port=gate.port)
        bus = Bus(gated, "gated-unit-gw")
        config = ApprovalsConfig(timeout_s=30, approver_groups=("dba",), enabled=True)
        approvals = Approvals(config, bus, cast(Any, None))
        published: list[str] = []
        bus.subscribe("approvals/+", lambda suffix, payload: published.append(suffix))
        await bus.start()
        fields = {"target": "orders", "sql": "DROP TABLE t", "session": "s-1"}
        waiting = asyncio.create_task(approvals.request(fields, "agent", "ab" * 32))
        for _ in range(100):  # the request's first step: it waits for the broker
            if approvals.pending:
                break
            await asyncio.sleep(0)
        assert approvals.pending == 1  # pending (and so withdrawable) while it waits
        approvals.end_session("s-1", "sqlgate", "the session ended before a decision")
        outcome = await waiting
        assert (outcome.verdict, outcome.approver) == ("denied", "sqlgate")
        assert outcome.reason == "the session ended before a decision"
        assert approvals.pending == 0
        gate.open()
        assert await bus.wait_connected(10)
        await approvals.close()
        await bus.close()
        gate.close()
        assert not [p for p in published if p.startswith("approvals/")]

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_reviews_refused_while_the_broker_is_down_queue_nothing(broker: Broker) -> None:
    """Each statement for review refused because the broker was down queued a message
    clearing its request, which was never published; a retained message is never
    dropped, so an agent retrying through an outage grew the gateway's memory without
    bound, and the clears all went out first once the broker was back."""

    async def scenario() -> None:
        port = free_port()
        nobody = replace(broker.bus_config(), url=f"mqtt://127.0.0.1:{port}", port=port)
        down = Bus(nobody, "outage-gw", queue_size=8)
        config = ApprovalsConfig(timeout_s=0.5, approver_groups=("dba",), enabled=True)
        approvals = Approvals(config, down, cast(Any, None))
        await down.start()
        fields = {"target": "orders", "sql": "DROP TABLE t"}
        for _ in range(50):
            outcome = await approvals.request(fields, "agent", "ab" * 32)
            assert outcome.verdict == "unavailable"
        assert down.queued == 0
        await approvals.close()
        await down.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


class _Tokens:
    """Every token verifies as ``user`` with subject ``subject``, an approver."""

    def __init__(self, user: str, subject: str | None) -> None:
        self.user, self.subject = user, subject

    async def verify(self, user: str, token: bytes) -> VerifiedToken:
        return VerifiedToken(self.user, self.subject, frozenset({"dba"}), None, time.time() + 60)


@pytest.mark.parametrize(
    ("operator", "subject", "counts"),
    [
        ("c4rol@example.com", "user-42", False),  # the requester under another e-mail
        ("dba@example.com", "user-7", True),  # someone else
        ("c4rol@example.com", None, True),  # a token without a subject: the name decides
    ],
)
def test_an_approver_may_not_approve_their_own_statement_under_another_name(
    operator: str, subject: str | None, counts: bool
) -> None:
    """The requester's token subject is compared too: one person with two e-mails (an
    identity provider that lets a user change theirs) approved their own DELETE."""

    async def scenario() -> Outcome | None:
        bus, tokens = _Bus(), _Tokens(operator, subject)
        config = ApprovalsConfig(timeout_s=0.5, approver_groups=("dba",), enabled=True)
        approvals = Approvals(config, cast(Any, bus), cast(Any, tokens))
        sha = "ab" * 32
        fields = {"target": "orders", "sql": "DELETE FROM t WHERE id = 9"}
        waiting = asyncio.create_task(
            approvals.request(fields, "carol@example.com", sha, None, requester_subject="user-42")
        )
        await bus.published.wait()
        decision = {"v": 1, "decision": "approve", "operator": operator, "token": "t"}
        approvals._on_decision(bus.topic + "/decision", {**decision, "sql_sha256": sha})
        outcome = await waiting
        await approvals.close()
        return outcome

    outcome = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert outcome is not None
    assert outcome.verdict == ("approved" if counts else "expired")


class _Link:
    """A TCP link to the broker that the test can cut (both ways at once, new
    connections refused) and mend, while the broker itself runs on with its retained
    messages: a network that fails, not a broker that restarts."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.up = True
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(self.broker.host, self.broker.port)
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while (data := await source.read(65536)) and not sink.is_closing():
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        self.up = False
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


def test_a_request_that_ends_while_the_broker_is_cut_off_does_not_stay_pending_there(
    broker: Broker,
) -> None:
    """A held statement that ended (expired, withdrawn) while the gateway could not reach
    the broker, on a busy gateway whose events then overflowed the bus's queue, lost the
    message that clears its request: the broker kept offering operators a request nobody
    waited for, and the gateway, seeing it again on reconnecting, left it there."""
    name = "cut-off-gw"
    topic = f"{broker.prefix}/{name}/approvals/+"

    async def retained_requests() -> set[str]:
        """The requests retained on the broker now, as an operator's console sees them."""
        found: set[str] = set()
        async with broker.client(broker.gateway_user, timeout=None) as peer:
            await peer.subscribe(topic, qos=1)
            await peer.subscribe(f"{broker.prefix}/{name}/status", qos=1)  # ends the burst
            async for message in peer.messages:
                if message.topic.matches(topic) and message.payload:
                    found.add(message.topic.value.rsplit("/", 1)[1])
                elif message.topic.value.endswith("/status"):
                    return found
        return found

    async def scenario() -> None:
        link = _Link(broker)
        await link.start()
        config = replace(broker.bus_config(), port=link.port)
        bus = Bus(config, name, queue_size=8, keepalive_s=60)
        approvals = Approvals(
            ApprovalsConfig(timeout_s=60, approver_groups=("dba",), enabled=True),
            bus,
            cast(Any, None),
        )
        await bus.start()
        assert await bus.wait_connected(10)
        fields = {"target": "orders", "sql": "DROP TABLE t", "session": "s-1"}
        waiting = asyncio.create_task(approvals.request(fields, "agent", "ab" * 32))
        deadline = time.monotonic() + 10
        while not await retained_requests():  # the operators see it
            assert time.monotonic() < deadline, "the request never reached the broker"
            await asyncio.sleep(0.05)
        link.cut()
        deadline = time.monotonic() + 10
        while bus.connected:
            assert time.monotonic() < deadline, "the bus never saw the link cut"
            await asyncio.sleep(0.01)
        approvals.end_session("s-1", "sqlgate", "the session ended")
        assert (await waiting).verdict == "denied"  # its request is cleared: queued
        for seq in range(20):  # a busy gateway's events, more than the queue holds
            bus.publish(f"sessions/s-2/statements/{seq}", {"seq": seq})
        assert bus.dropped
        link.up = True
        assert await bus.wait_connected(10)
        deadline = time.monotonic() + 10
        while left := await retained_requests():
            assert time.monotonic() < deadline, f"request {left} still pending on the broker"
            await asyncio.sleep(0.1)
        await approvals.close()
        await bus.close()
        await link.close()

    asyncio.run(asyncio.wait_for(scenario(), 40))
