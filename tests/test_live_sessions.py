"""Live sessions retained on the bus (docs/events.md, ``sessions/<session>/start``), with
a real Mosquitto, MariaDB and gateway: a subscriber that comes after a session began
sees it, and not once it has ended; a session that ended while the broker was out of
reach is not left retained; a gateway killed with live sessions clears their starts at
its next start, and a stop leaves none behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import pymysql
import pytest
from lab.broker import Broker
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB

from appliance.bus import Bus
from appliance.live_sessions import LiveSessions

pytestmark = pytest.mark.integration

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout_s: float = 20.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def name() -> str:
    return f"live-{secrets.token_hex(3)}"


def peer(broker: Broker) -> aiomqtt.Client:
    """A client with the gateway's login (it may publish the probe below)."""
    return broker.client(broker.gateway_user)


async def retained(broker: Broker, appliance: str, suffix: str) -> dict[str, dict[str, Any]]:
    """The messages the broker retains under ``<prefix>/<appliance>/<suffix>`` (a
    pattern) now, by topic, as a subscriber that comes now gets them: they follow the
    subscription at once, before a probe published after it comes back."""
    base = f"{broker.prefix}/{appliance}"
    probe = f"{base}/probe/{secrets.token_hex(4)}"
    found: dict[str, dict[str, Any]] = {}
    async with peer(broker) as client:
        await client.subscribe(f"{base}/{suffix}", qos=1)
        await client.subscribe(probe, qos=1)
        await client.publish(probe, b"probe", qos=1)
        async for message in client.messages:
            if message.topic.value == probe:
                break
            if message.retain and isinstance(message.payload, bytes) and message.payload:
                found[message.topic.value[len(base) + 1 :]] = json.loads(message.payload)
    return found


def starts(broker: Broker, appliance: str) -> dict[str, dict[str, Any]]:
    """The retained session starts of ``appliance``, by session id."""
    found = run(retained(broker, appliance, "sessions/+/start"))
    return {topic.split("/")[1]: body for topic, body in found.items()}


def until(what: str, check: Callable[[], T | None], timeout_s: float = 15.0) -> T:
    """``check()`` once it is true (polled), else AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def gateway(work: Path, mariadb: MariaDB, broker: Broker, appliance: str) -> GatewayProcess:
    return GatewayProcess(
        work, mariadb, mariadb.pki, extra_toml=broker.bus_toml(work), name=appliance
    )


def session_of(broker: Broker, appliance: str, conn: Any) -> tuple[str, dict[str, Any]]:
    """The id and retained start of the session of ``conn`` (by its client port)."""
    client = f"{conn.host}:{conn._sock.getsockname()[1]}"

    def find() -> tuple[str, dict[str, Any]] | None:
        for session, body in starts(broker, appliance).items():
            if body.get("client") == client:
                return session, body
        return None

    return until(f"the retained start of the session from {client}", find)


def test_a_late_subscriber_sees_a_live_session_and_not_once_it_ended(
    mariadb: MariaDB, broker: Broker, tmp_path: Path
) -> None:
    appliance = name()
    gw = gateway(tmp_path / "gw", mariadb, broker, appliance).start()
    try:
        conn = gw.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            # subscribed only now, after the session began
            session, start = session_of(broker, appliance, conn)
            assert start["v"] == 1 and start["kind"] == "session_start"
            assert start["session"] == session and start["identity"] == "agent"
            assert len(start["hash"]) == 64  # the committed record itself
            status = run(retained(broker, appliance, "status"))["status"]
            assert status["state"] == "online" and status["sessions_retained"] is True
        finally:
            conn.close()
        until("the start to be cleared", lambda: session not in starts(broker, appliance))
    finally:
        assert gw.stop() == 0
    assert "Traceback" not in gw.log()


def test_a_killed_gateways_starts_are_cleared_at_its_next_start(
    mariadb: MariaDB, broker: Broker, tmp_path: Path
) -> None:
    """kill -9 writes no ``session_end`` and clears nothing: the next start of the same
    gateway clears the starts it does not serve; its own live ones stay, and a stop
    leaves none behind."""
    appliance = name()
    gw = gateway(tmp_path / "gw", mariadb, broker, appliance).start()
    conn = gw.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    crashed, _ = session_of(broker, appliance, conn)
    assert gw.proc is not None
    gw.proc.kill()
    gw.proc.wait()
    gw.proc = None
    with contextlib.suppress(pymysql.err.MySQLError):
        conn.close()
    assert crashed in starts(broker, appliance)  # left behind
    gw.start()
    try:
        again = gw.connect()
        with again.cursor() as cur:
            cur.execute("SELECT 1")
        live, _ = session_of(broker, appliance, again)
        until("the stale start to be cleared", lambda: crashed not in starts(broker, appliance))
        assert live in starts(broker, appliance)
    finally:
        assert gw.stop() == 0  # with the session still open: the drain ends it
    assert starts(broker, appliance) == {}
    assert "Traceback" not in gw.log()


def test_a_session_that_ended_while_the_broker_was_out_of_reach_is_not_retained(
    broker: Broker,
) -> None:
    """Before the bus's first connection (as during an outage) everything waits in its
    queue: the retained start of a session that ended meanwhile is replaced by its
    clearing, and still reaches subscribers as an event; a start left by an earlier
    run is cleared once the bus connects."""
    appliance = name()
    base = f"{broker.prefix}/{appliance}"

    async def main() -> None:
        async with peer(broker) as other:  # an earlier run, killed
            await other.publish(f"{base}/sessions/old-1/start", b'{"v":1}', qos=1, retain=True)
        bus = Bus(broker.bus_config(), appliance)
        live = LiveSessions(bus)
        live.started("s-ended", {"kind": "session_start", "session": "s-ended"})
        live.started("s-live", {"kind": "session_start", "session": "s-live"})
        live.ended("s-ended")
        seen: list[tuple[str, bytes, bool]] = []
        async with peer(broker) as watcher:
            await watcher.subscribe(f"{base}/sessions/#", qos=1)
            await bus.start()
            try:
                assert await bus.wait_connected(10)

                async def watch() -> None:
                    async for message in watcher.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes)
                        seen.append((message.topic.value, payload, message.retain))
                        events = {(t, bool(p)) for t, p, _ in seen}
                        if {
                            (f"{base}/sessions/s-ended/start", True),
                            (f"{base}/sessions/s-live/start", True),
                            (f"{base}/sessions/old-1/start", False),
                        } <= events:
                            return

                await asyncio.wait_for(watch(), 10)
                found = await retained(broker, appliance, "sessions/+/start")
                assert set(found) == {"sessions/s-live/start"}
                assert found["sessions/s-live/start"]["session"] == "s-live"
            finally:
                live.close()
                await bus.close()
        assert await retained(broker, appliance, "sessions/+/start") == {}

    run(main(), timeout_s=40)
