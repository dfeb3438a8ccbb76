"""The approvals part: what a just-in-time approval adds to a held statement's round
trip beyond the person's own time.

It starts, all on 127.0.0.1: a private MariaDB (``tests/lab/mariadb.py``), a private
Mosquitto with the users ``sqlgate`` and ``operator`` (``tests/lab/broker.py``), a signing
key whose JWKS file the gateway trusts (``tests/lab/tokens.py``), and one ``sqlgate run``
with ``[identity]``, ``[bus]`` and ``[approvals]`` (``approver_groups = ["dba"]``) and
``tls = "disabled"`` toward the backend. In the bench process, an automated operator (a
thread with its own event loop and an aiomqtt client, user ``operator``) subscribes to
``<prefix>/<appliance>/approvals/+`` and answers every request at once: an ``approve``
decision with a fresh token of ``dba@example.com`` (group ``dba``), minted beforehand so
that signing is not part of its answer. The person's own time is then about zero. Its
socket has ``TCP_NODELAY``: answering within a millisecond, it would otherwise write the
decision right after its PUBACK for the request, before TCP has acknowledged that PUBACK,
and Nagle's algorithm would hold the decision for the broker's delayed ACK (about 40 ms).
A person's console (``sqlgate approvals approve``) publishes seconds later, on a
connection of its own, and never meets that wait.

Three endpoints run the same statement, ``ALTER TABLE bench_approvals COMMENT = 'n<i>'``
(a schema change the built-in rule ``schema-change`` holds; cheap and repeatable), one
after another over one PyMySQL connection each, timed from ``execute`` to its result:

- ``direct``: MariaDB itself, as ``sqlgate_native``;
- ``gateway``: the gateway as the account ``dba``, for which a configured rule allows
  this statement on this table: the gateway's work without a hold;
- ``held``: the gateway as the account ``agent``: the statement is held, the request
  published, the operator's decision verified, then the statement runs.

The operator notes when each request arrived and when its decision was acknowledged by
the broker; the gateway's ``approval`` ledger records give ``latency_ms``, from just
before the request is published to the decision's acceptance.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pymysql
from lab.approvals import approvals_toml
from lab.broker import Broker, BrokerError
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB, MariaDBError
from lab.tokens import Provider

from .errors import BenchError
from .rig import StartStop

APPLIANCE = "bench-approvals"
TABLE = "bench_approvals"
APPROVER = "dba@example.com"
ENDPOINTS = ("direct", "gateway", "held")
TIMEOUT_S = 30  # [approvals] timeout_s: a request nobody answers fails the run, not hangs
READY_TIMEOUT_S = 20.0


# ------------------------------------------------------------------------- the operator


@dataclass(frozen=True)
class Answer:
    """The operator's view of one request (``time.perf_counter`` seconds)."""

    request_id: str
    received: float  # the request reached the operator's event loop
    published: float  # the broker acknowledged the decision (QoS 1)


class Operator:
    """Approves every request at once, from a thread of its own (``start``/``stop``)."""

    def __init__(self, broker: Broker, appliance: str, tokens: list[str]) -> None:
        self.broker = broker
        self.base = f"{broker.prefix}/{appliance}"
        self.tokens = collections.deque(tokens)
        self.answers: dict[str, Answer] = {}  # by statement text
        self.errors: list[str] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="bench-operator", daemon=True)

    def start(self) -> Operator:
        """Start, and wait until subscribed and the gateway is online on the bus."""
        self._thread.start()
        if not self._ready.wait(READY_TIMEOUT_S):
            self.stop()
            why = self.errors[-1] if self.errors else "the gateway never said it was online"
            raise BenchError(f"approval operator not ready in {READY_TIMEOUT_S:.0f} s: {why}")
        return self

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # reported by start() or by the measurement
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.broker.client(
            identifier=f"bench-operator-{os.getpid()}",
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            timeout=None,
        ) as client:
            await client.subscribe(f"{self.base}/approvals/+", qos=1)
            await client.subscribe(f"{self.base}/status", qos=1)
            reader = asyncio.create_task(self._answer(client))
            stopped = asyncio.create_task(self._stop.wait())
            await asyncio.wait({reader, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for task in (reader, stopped):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader  # raises what ended it, if not the stop

    async def _answer(self, client: aiomqtt.Client) -> None:
        clock = time.perf_counter
        async for message in client.messages:
            received = clock()
            topic = message.topic.value
            if not message.payload:
                continue  # a request cleared after its decision
            body = json.loads(message.payload)
            if topic.endswith("/status"):
                if body.get("state") == "online":
                    self._ready.set()
                continue
            token = self.tokens.popleft() if self.tokens else None
            if token is None:
                self.errors.append("the operator ran out of tokens")
                continue
            decision = {
                "v": 1,
                "decision": "approve",
                "operator": APPROVER,
                "token": token,
                "sql_sha256": body["sql_sha256"],
            }
            await client.publish(
                f"{self.base}/approvals/{body['id']}/decision", json.dumps(decision), qos=1
            )
            self.answers[body["sql"]] = Answer(body["id"], received, clock())


# -------------------------------------------------------------------------------- rig


def _gateway_toml(work: Path, broker: Broker, provider: Provider) -> str:
    return (
        approvals_toml(work, broker, provider, timeout_s=TIMEOUT_S)
        + f"""
[[rules]]
name = "bench-dba-alters-its-scratch-table"
statements = ["ALTER TABLE"]
tables = ["shop.{TABLE}"]
groups = ["dba"]
action = "allow"
"""
    )


@dataclass
class ApprovalsRig(StartStop):
    """MariaDB, Mosquitto and a gateway with approvals on; ``with`` starts and stops them."""

    workdir: Path
    db: MariaDB | None = None
    broker: Broker | None = None
    provider: Provider | None = None
    gateway: GatewayProcess | None = None
    endpoints: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # port, user, pw

    def start(self) -> ApprovalsRig:
        try:
            self.db = db = MariaDB(self.workdir / "db").start()
        except MariaDBError as exc:
            first = str(exc).splitlines()[0]
            raise BenchError(f"cannot start the private MariaDB: {first}") from exc
        db.admin_sql(f"CREATE TABLE shop.{TABLE} (id INT PRIMARY KEY)")
        try:
            self.broker = broker = Broker(self.workdir / "broker").start()
        except BrokerError as exc:
            first = str(exc).splitlines()[0]
            raise BenchError(f"cannot start the private Mosquitto: {first}") from exc
        self.provider = Provider(self.workdir / "idp")
        work = self.workdir / "gateway"
        self.gateway = gw = GatewayProcess(
            work,
            db,
            db.pki,
            backend_tls="disabled",
            name=APPLIANCE,
            extra_toml=_gateway_toml(work, broker, self.provider),
        )
        try:
            gw.start()
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise BenchError(f"gateway: {first} (log: {gw.log_path})") from exc
        for name, account in (("gateway", "dba"), ("held", "agent")):
            acct = gw.account(account)
            self.endpoints[name] = (gw.port, acct.user, acct.password)
        self.endpoints["direct"] = (db.port, db.native_user, db.native_password)
        return self

    def stop_gateway(self) -> None:
        """SIGTERM the gateway (its ledger is then complete); a non-zero exit is an error."""
        if self.gateway is not None and self.gateway.proc is not None:
            code = self.gateway.stop()
            if code != 0:
                raise BenchError(f"the gateway exited with {code} (log: {self.gateway.log_path})")

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.db is not None:
            self.db.stop()


# ----------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class Trip:
    """One statement: its text and when it was sent and answered (perf_counter s)."""

    sql: str
    sent: float
    done: float

    @property
    def ms(self) -> float:
        return (self.done - self.sent) * 1000


@dataclass
class Client:
    """One endpoint's connection, and the statements it sent."""

    name: str
    conn: Any
    trips: list[Trip] = field(default_factory=list)


class Statements:
    """``ALTER TABLE bench_approvals COMMENT = 'n<i>'``, a new ``i`` each time, so that
    every text (and so every approval request) is unique in the run."""

    def __init__(self) -> None:
        self.count = 0

    def next(self) -> str:
        self.count += 1
        return f"ALTER TABLE {TABLE} COMMENT = 'n{self.count}'"


def connect(rig: ApprovalsRig, name: str) -> Client:
    """A plain PyMySQL connection to ``name`` (see ``ENDPOINTS``), schema ``shop``."""
    port, user, password = rig.endpoints[name]
    conn = pymysql.connect(
        host="127.0.0.1",
        port=port,
        user=user,
        password=password,
        database="shop",
        ssl_disabled=True,
        autocommit=True,
        connect_timeout=15,
        read_timeout=TIMEOUT_S + 15,
    )
    return Client(name, conn)


def run_trips(client: Client, statements: Statements, count: int) -> list[Trip]:
    """``count`` statements one after another, each timed from ``execute`` to its result."""
    clock = time.perf_counter
    trips: list[Trip] = []
    gc.disable()  # the client's own collector pauses are not the gateway's
    try:
        with client.conn.cursor() as cur:
            for _ in range(count):
                sql = statements.next()
                sent = clock()
                try:
                    cur.execute(sql)
                    cur.fetchall()
                except pymysql.err.MySQLError as exc:
                    raise BenchError(f"{client.name}: {sql!r} failed: {exc.args}") from exc
                trips.append(Trip(sql, sent, clock()))
    finally:
        gc.enable()
    client.trips.extend(trips)
    return trips


def approval_records(rig: ApprovalsRig) -> dict[str, dict[str, Any]]:
    """The gateway's ``approval`` ledger records by request id (the gateway stopped)."""
    assert rig.gateway is not None
    cmd = [sys.executable, "-m", "appliance.cli", "ledger", "export"]
    cmd += ["--ledger", str(rig.gateway.ledger), "--kind", "approval"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
        raise BenchError(f"sqlgate ledger export failed: {why[-1]}")
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {r["request"]: r for r in records if r.get("request")}
