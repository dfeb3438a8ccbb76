"""Every statement of an agent's session reaches the console (docs/events.md): no field
an agent fills (an execute's values, the text a masked session's statement ran as, a
refusal's reason that quotes the statement) makes its event larger than the broker's
``message_size_limit`` (1 MiB), which the broker drops without a word, so that the
statement would be missing from the console. Real gateway, MariaDB and Mosquitto."""

from __future__ import annotations

import asyncio
import json
import secrets
import struct
import threading
import time
from typing import Any

import pymysql
import pytest
from lab.broker import Broker
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB

pytestmark = pytest.mark.integration

COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
VAR_STRING = 0xFD


class Listener:
    """An operator (the console's login) subscribed to everything it may read."""

    def __init__(self, broker: Broker, appliance: str) -> None:
        self.broker = broker
        self.base = f"{broker.prefix}/{appliance}"
        self.messages: list[tuple[str, bytes]] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with self.broker.client() as client:
            for suffix in ("sessions/#", "alerts", "approvals/+", "status"):
                await client.subscribe(f"{self.base}/{suffix}", qos=1)
            self._ready.set()

            async def reader() -> None:
                async for message in client.messages:
                    payload = message.payload
                    assert isinstance(payload, bytes)
                    self.messages.append((message.topic.value, payload))

            task = asyncio.create_task(reader())
            await asyncio.to_thread(self._stop.wait)
            task.cancel()

    def __enter__(self) -> Listener:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def bodies(self, suffix: str) -> list[dict[str, Any]]:
        out = []
        for topic, payload in self.messages:
            if topic.endswith(suffix) and payload:
                out.append(json.loads(payload))
        return out


MASKING = """
[[masking]]
column = "shop.rt_people.card"
strategy = "last4"

[[masking]]
column = "shop.rt_people.phone"
strategy = "last4"
on_use = "rewrite"
"""


@pytest.fixture(scope="module")
def setup(mariadb: MariaDB, broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Any:
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.rt_people",
        "CREATE TABLE shop.rt_people (id INT PRIMARY KEY, card VARCHAR(19), "
        "phone VARCHAR(20), note TEXT)",
        "INSERT INTO shop.rt_people VALUES (1, '4111111111111111', '+15550001234', 'x')",
    )
    appliance = f"rt-{secrets.token_hex(3)}"
    work = tmp_path_factory.mktemp("rt")
    gw = GatewayProcess(
        work, mariadb, mariadb.pki, extra_toml=broker.bus_toml(work) + MASKING, name=appliance
    ).start()
    time.sleep(1.0)  # the bus connects
    yield gw, broker, appliance
    gw.stop()


def prepare(conn: Any, sql: str) -> tuple[int, int]:
    conn._execute_command(COM_STMT_PREPARE, sql)
    ok = conn._read_packet().get_all_data()
    assert ok[0] == 0, ok
    statement, columns, params = struct.unpack("<IHH", ok[1:9])
    for _ in range(params + (params > 0) + columns + (columns > 0)):
        conn._read_packet()
    return statement, params


def lenenc(data: bytes) -> bytes:
    n = len(data)
    if n < 251:
        return bytes([n]) + data
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little") + data
    return b"\xfd" + n.to_bytes(3, "little") + data


def execute_strings(conn: Any, statement: int, values: list[bytes]) -> None:
    count = len(values)
    body = struct.pack("<IBI", statement, 0, 1)
    body += b"\x00" * ((count + 7) // 8) + b"\x01"
    body += bytes([VAR_STRING, 0]) * count
    body += b"".join(lenenc(v) for v in values)
    conn._execute_command(COM_STMT_EXECUTE, body)
    first = conn._read_packet()
    data = first.get_all_data()
    if data[0] == 0xFF:
        raise AssertionError(f"execute refused: {data!r}")
    # drain the result set: definitions, EOF, rows, EOF
    eofs = 0
    while eofs < 2:
        pkt = conn._read_packet()
        raw = pkt.get_all_data()
        if raw[0] == 0xFE and len(raw) < 9:
            eofs += 1


def until(check: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    return check()


def statements_up_to(bus: Any, marker: str) -> list[dict[str, Any]]:
    """The statement events the listener got, once the one of ``marker`` (a statement
    sent after the one looked for) is among them: those before it came too."""

    def seen() -> list[dict[str, Any]]:
        got = bus.bodies("/statements")
        return got if any(b.get("sql") == marker for b in got) else []

    statements: list[dict[str, Any]] = until(seen)
    return statements


def test_an_execute_with_long_values_reaches_the_console(setup: Any) -> None:
    gw, broker, appliance = setup
    with Listener(broker, appliance) as bus:
        conn = gw.connect()
        with conn.cursor() as cur:
            cur.execute("SELECT 'marker-before'")
        statement, params = prepare(conn, "SELECT " + ",".join(["?"] * 256))
        assert params == 256
        execute_strings(conn, statement, [b"\x01" * 1024] * 256)
        with conn.cursor() as cur:
            cur.execute("SELECT 'marker-after'")
        conn.close()

        statements = statements_up_to(bus, "SELECT 'marker-after'")
        commands = [(b.get("command"), b.get("sql", "")[:30]) for b in statements]
        assert any(c == "COM_STMT_EXECUTE" for c, _ in commands), (
            f"the execute's statement event never reached the operator: {commands}\n"
            + broker.log()[-2000:]
        )


def test_a_rewritten_statement_with_a_long_text_reaches_the_console(setup: Any) -> None:
    gw, broker, appliance = setup
    with Listener(broker, appliance) as bus:
        conn = gw.connect()
        pad = "/* " + "\x01" * 200_000 + " */"
        with conn.cursor() as cur:
            cur.execute("SELECT 'marker-before2'")
            cur.execute(f"SELECT UPPER(phone) {pad} FROM rt_people")
            cur.fetchall()
            cur.execute("SELECT 'marker-after2'")
        conn.close()

        statements = statements_up_to(bus, "SELECT 'marker-after2'")
        commands = [(b.get("command"), b.get("sql", "")[:30]) for b in statements]
        assert any("UPPER" in s for _, s in commands), (
            f"the rewritten statement's event never reached the operator: {commands}\n"
            + broker.log()[-1500:]
        )


NAME = "\x01" * 200_000


@pytest.mark.parametrize(
    "sql",
    [
        f"SET `{NAME}` = 1",
        f"DROP DATABASE `{NAME}`",
        f"DELETE FROM `{NAME}`",
        f"SELECT `{NAME}`(card) FROM rt_people",
    ],
    ids=["set", "drop-database", "delete-without-where", "masking"],
)
def test_a_refusal_whose_reason_quotes_the_statement_reaches_the_console(
    setup: Any, sql: str
) -> None:
    gw, broker, appliance = setup
    marker = f"SELECT 'after-{secrets.token_hex(4)}'"
    with Listener(broker, appliance) as bus:
        conn = gw.connect()
        with conn.cursor() as cur:
            with pytest.raises(pymysql.MySQLError) as refused:
                cur.execute(sql)
            assert refused.value.args[0] == 1227
            cur.execute(marker)
        conn.close()

        statements = statements_up_to(bus, marker)
        blocked = [b for b in statements if b.get("decision") == "blocked"]
        assert blocked, f"the refusal never reached the operator: {broker.log()[-600:]}"
        assert blocked[0]["sql"] == sql[: len(blocked[0]["sql"])]
        assert blocked[0]["sql_truncated"] is True
