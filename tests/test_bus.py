"""The MQTT bus against a real Mosquitto with per-client passwords and ACLs.

The session's ``broker`` serves the tests that leave it running; tests that stop the
broker get their own. Each test uses its own appliance name, so retained messages and
subscriptions of one test never reach another.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import pytest
from lab.broker import Broker
from lab.mariadb import free_port

from appliance.bus import EVENT_SQL_CHARS, Bus, BusUnavailable, bounded_sql, reconnect_delay
from appliance.config import BusConfig

T = TypeVar("T")

SECRET = "eyJ-operator-token-must-never-be-logged"


def run(coro: Coroutine[Any, Any, T], timeout_s: float = 20.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def appliance_name() -> str:
    return f"edge-{secrets.token_hex(3)}"


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def raw_client(broker: Broker, user: str = Broker.operator_user) -> aiomqtt.Client:
    """A plain MQTT client, as the console or another tool would use."""
    return broker.client(user)


async def next_message(client: aiomqtt.Client, timeout_s: float = 5.0) -> aiomqtt.Message:
    return await asyncio.wait_for(client.messages.__anext__(), timeout_s)


class Inbox:
    """A handler that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, suffix: str, payload: dict[str, Any]) -> None:
        self.messages.append((suffix, payload))

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> None:
        await eventually(lambda: len(self.messages) >= count, timeout_s)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker this test may stop and restart."""
    with Broker(tmp_path / "broker") as server:
        yield server


def test_reconnect_delay_doubles_from_half_a_second_to_thirty() -> None:
    delays = [reconnect_delay(n) for n in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert reconnect_delay(10_000) == 30.0


def test_an_event_carries_a_bounded_prefix_of_its_statement() -> None:
    record = {
        "v": 1,
        "kind": "statement",
        "sql": "\x01" * (4 * EVENT_SQL_CHARS),
        "sql_sha256": "ab",
    }
    event = bounded_sql(record)
    assert event["sql"] == "\x01" * EVENT_SQL_CHARS and event["sql_truncated"] is True
    assert event["sql_sha256"] == "ab"  # of the whole text: the record's own
    assert len(record["sql"]) == 4 * EVENT_SQL_CHARS and "sql_truncated" not in record
    # every character escaped by JSON (\u0001): still far below a console's 1 MiB
    assert len(json.dumps(event, ensure_ascii=False).encode()) < 512 * 1024
    small = {"sql": "SELECT 1"}
    assert bounded_sql(small) is small and bounded_sql({"kind": "alert"}) == {"kind": "alert"}


def test_bad_topics_and_payloads_are_programming_errors() -> None:
    bus = Bus(BusConfig(), "edge-1")
    for suffix in ("", "events/+", "events/#", "/events", "events//x", "events/"):
        with pytest.raises(ValueError):
            bus.publish(suffix, {})
    for pattern in ("events/#/x", "events/a+", ""):
        with pytest.raises(ValueError):
            bus.subscribe(pattern, Inbox())
    with pytest.raises(TypeError):
        bus.publish("events/x", {"raw": b"bytes"})
    with pytest.raises(ValueError):
        bus.publish("events/x", {}, qos=3)
    with pytest.raises(ValueError):
        Bus(BusConfig(), "edge/1")
    assert bus.queued == 0


def test_round_trip_with_the_gateway_credentials(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = appliance_name()

    async def main() -> None:
        inbox = Inbox()
        bus = Bus(broker.bus_config(), name)
        bus.subscribe("sessions/+/statements", inbox)
        await bus.start()
        assert await bus.wait_connected(5)
        async with raw_client(broker) as observer:
            await observer.subscribe(f"sqlgate/{name}/sessions/#", qos=1)
            assert bus.publish("sessions/s1/statements", {"sql": "SELECT 1", "token": SECRET})
            await inbox.wait_for(1)
            seen = await next_message(observer)
        await bus.close()
        assert inbox.messages == [
            ("sessions/s1/statements", {"v": 1, "sql": "SELECT 1", "token": SECRET})
        ]
        assert seen.topic.value == f"sqlgate/{name}/sessions/s1/statements"
        assert isinstance(seen.payload, bytes) and seen.payload.startswith(b'{"v":1,')
        assert bus.delivered == 1 and bus.dropped == 0

    run(main())
    assert SECRET not in caplog.text  # not even at DEBUG, paho's packet log included


def test_retained_request_reaches_a_late_subscriber_until_cleared(broker: Broker) -> None:
    name = appliance_name()
    request = f"sqlgate/{name}/approvals/r1"

    async def main() -> None:
        bus = Bus(broker.bus_config(), name)
        await bus.start()
        assert await bus.wait_connected(5)
        await bus.publish_now("approvals/r1", {"id": "r1", "sql": "DROP TABLE t"}, retain=True)

        async with raw_client(broker) as late:
            await late.subscribe(f"sqlgate/{name}/approvals/+", qos=1)
            message = await next_message(late)
            assert message.topic.value == request and message.retain
            assert json.loads(message.payload) == {"v": 1, "id": "r1", "sql": "DROP TABLE t"}
            assert bus.clear_retained("approvals/r1")
            cleared = await next_message(late)  # current subscribers see the empty message
            assert cleared.topic.value == request and cleared.payload == b""

        async with raw_client(broker) as later:
            await later.subscribe(f"sqlgate/{name}/approvals/+", qos=1)
            bus.publish("approvals/marker", {})
            # A retained request would be delivered on subscribing, before the marker.
            first = await next_message(later)
            assert first.topic.value == f"sqlgate/{name}/approvals/marker"
        await bus.close()

    run(main())


def test_operator_may_only_publish_decisions(broker: Broker) -> None:
    name = appliance_name()
    base = f"sqlgate/{name}"

    async def main() -> None:
        inbox = Inbox()
        bus = Bus(broker.bus_config(), name)
        bus.subscribe("events/#", inbox)
        bus.subscribe("approvals/#", inbox)
        await bus.start()
        assert await bus.wait_connected(5)
        async with raw_client(broker, Broker.operator_user) as operator:
            await operator.subscribe(f"{base}/#", qos=1)
            await bus.publish_now("approvals/r7", {"id": "r7"}, retain=True)
            status = await next_message(operator)  # retained, sent on subscribing
            assert status.topic.value == f"{base}/status"
            request = await next_message(operator)  # operators read requests
            assert request.topic.value == f"{base}/approvals/r7"

            # Refused by the ACL: the broker drops them without telling the publisher.
            await operator.publish(f"{base}/events/forged", b'{"v":1}', qos=1)
            await operator.publish(f"{base}/approvals/r8", b'{"v":1}', qos=1, retain=True)
            await operator.publish("elsewhere/x", b'{"v":1}', qos=1)
            await operator.publish(f"{base}/approvals/r7/decision", b'{"v":1,"ok":1}', qos=1)
            # One publisher's messages arrive in order: anything forged would be first.
            await eventually(lambda: any(s == "approvals/r7/decision" for s, _ in inbox.messages))
            # Decisions carry tokens: only the gateway reads them, not other operators.
            bus.publish("alerts", {"alert": "marker"})
            assert (await next_message(operator)).topic.value == f"{base}/alerts"
        bus.clear_retained("approvals/r7")
        await bus.close()
        suffixes = [suffix for suffix, _ in inbox.messages]
        assert suffixes[:2] == ["approvals/r7", "approvals/r7/decision"]
        assert not {"events/forged", "approvals/r8"} & set(suffixes)

    run(main())
    assert "Denied PUBLISH" in broker.log()


def test_malformed_payloads_are_dropped_and_handlers_cannot_stop_the_bus(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    name = appliance_name()

    def broken(suffix: str, payload: dict[str, Any]) -> None:
        raise RuntimeError(f"handler bug quoting {payload.get('token')}")

    async def main() -> list[tuple[str, dict[str, Any]]]:
        inbox = Inbox()
        bus = Bus(broker.bus_config(), name)
        bus.subscribe("in/+", broken)
        bus.subscribe("in/+", inbox)
        await bus.start()
        assert await bus.wait_connected(5)
        async with raw_client(broker, Broker.gateway_user) as peer:
            for payload in (
                b"not json " + SECRET.encode(),
                b"[1, 2]",
                b"\xff\xfe",
                b'"text"',
                b"[" * 100_000,  # deeper than the parser goes
                b'{"decision": ' + b"9" * 5_000 + b"}",  # more digits than int() takes
            ):
                await peer.publish(f"sqlgate/{name}/in/bad", payload, qos=1)
            good = json.dumps({"v": 1, "token": SECRET}).encode()
            await peer.publish(f"sqlgate/{name}/in/good", good, qos=1)
            await peer.publish(f"sqlgate/{name}/in/again", b'{"v":1}', qos=1)
            await inbox.wait_for(2)
        await bus.close()
        return inbox.messages

    messages = run(main())
    assert messages == [("in/good", {"v": 1, "token": SECRET}), ("in/again", {"v": 1})]
    assert caplog.text.count("not JSON") == 4
    assert "lost the connection" not in caplog.text and "Traceback" not in caplog.text
    assert caplog.text.count("not a JSON object") == 2
    assert caplog.text.count("failed: RuntimeError") == 2
    assert SECRET not in caplog.text


def test_broker_outage_queues_events_refuses_requests_and_recovers(own_broker: Broker) -> None:
    name = appliance_name()

    async def main() -> None:
        inbox = Inbox()
        bus = Bus(own_broker.bus_config(), name)
        bus.subscribe("events/#", inbox)
        await bus.start()
        assert await bus.wait_connected(5)

        own_broker.stop()
        await eventually(lambda: not bus.connected, timeout_s=3)
        started = time.monotonic()
        with pytest.raises(BusUnavailable):
            await bus.publish_now("approvals/r1", {"id": "r1"}, retain=True)
        assert time.monotonic() - started < 0.05  # refused at once, not after a timeout
        for i in range(3):
            assert bus.publish(f"events/e{i}", {"i": i})
        assert bus.queued == 3

        own_broker.start()  # same port; no retained messages survive
        assert await bus.wait_connected(10)
        await inbox.wait_for(3)
        assert inbox.messages == [(f"events/e{i}", {"v": 1, "i": i}) for i in range(3)]
        assert bus.dropped == 0

        # The subscription was made again on the new connection, for other publishers too.
        async with raw_client(own_broker, Broker.gateway_user) as peer:
            await peer.publish(f"sqlgate/{name}/events/outside", b'{"v":1}', qos=1)
        await inbox.wait_for(4)
        assert inbox.messages[-1] == ("events/outside", {"v": 1})
        await bus.publish_now("approvals/r2", {"id": "r2"})  # requests work again
        await bus.close()

    run(main())


def test_a_full_queue_drops_the_oldest_and_counts_them(own_broker: Broker) -> None:
    name = appliance_name()

    async def main() -> None:
        inbox = Inbox()
        bus = Bus(own_broker.bus_config(), name, queue_size=3)
        bus.subscribe("events/#", inbox)
        await bus.start()
        assert await bus.wait_connected(5)
        own_broker.stop()
        await eventually(lambda: not bus.connected, timeout_s=3)
        for i in range(5):
            assert bus.publish("events/e", {"i": i})  # never blocks, never refuses
        assert (bus.queued, bus.dropped) == (3, 2)

        own_broker.start()
        assert await bus.wait_connected(10)
        await inbox.wait_for(3)
        await asyncio.sleep(0.1)
        assert [payload["i"] for _, payload in inbox.messages] == [2, 3, 4]
        await bus.close()

    run(main())


def test_the_queue_holds_at_most_queue_bytes_of_events(own_broker: Broker) -> None:
    """While the broker is down, events of large statements are dropped oldest first
    once their payloads pass ``queue_bytes``, well before the count is reached."""
    name = appliance_name()
    pad = "x" * 1000

    async def main() -> None:
        inbox = Inbox()
        bus = Bus(own_broker.bus_config(), name, queue_bytes=2500)
        bus.subscribe("events/#", inbox)
        await bus.start()
        assert await bus.wait_connected(5)
        own_broker.stop()
        await eventually(lambda: not bus.connected, timeout_s=3)
        for i in range(5):
            assert bus.publish("events/e", {"i": i, "pad": pad})  # about 1 KB each
        assert (bus.queued, bus.dropped) == (2, 3)

        own_broker.start()
        assert await bus.wait_connected(10)
        await inbox.wait_for(2)
        await asyncio.sleep(0.1)
        assert [payload["i"] for _, payload in inbox.messages] == [3, 4]
        await bus.close()

    run(main())


def test_an_event_carries_a_bounded_prefix_of_its_statements_bytes() -> None:
    """A latin1 client's megabyte of ``é``: its record keeps the bytes in ``sql_hex``
    (two hex digits each), which the event carried whole, 2 MiB, past the 1 MiB a
    console reads. They are cut with the text, at EVENT_SQL_CHARS bytes."""
    sent = "\u00e9".encode("latin1") * (1024 * 1024)
    record = {"kind": "statement", "sql": "\u00e9" * len(sent), "sql_hex": sent.hex()}
    event = bounded_sql(record)
    assert event["sql_truncated"] is True and event["sql"] == record["sql"][:EVENT_SQL_CHARS]
    assert bytes.fromhex(event["sql_hex"]) == sent[:EVENT_SQL_CHARS]
    assert len(json.dumps(event, ensure_ascii=False).encode()) < 512 * 1024
    assert record["sql_hex"] == sent.hex()  # the record itself is not changed
    short = {"sql": "x" * EVENT_SQL_CHARS, "sql_hex": "ff" * (EVENT_SQL_CHARS + 1)}
    assert bounded_sql(short)["sql"] == short["sql"]  # only the bytes were too many
    assert bounded_sql(short)["sql_hex"] == "ff" * EVENT_SQL_CHARS


def test_by_default_events_of_large_statements_hold_at_most_64_mib() -> None:
    """Each event of a statement carries up to 64 Ki characters of its text, which JSON
    may write as 6 bytes each: 10,000 of them waiting for a broker that is down held
    3.8 GB. The default queue keeps the newest that fit in 64 MiB."""
    bus = Bus(BusConfig(), "edge-1")  # never started: everything waits in the queue
    event = bounded_sql({"kind": "statement", "sql": "\x01" * (1024 * 1024)})
    size = len(json.dumps({"v": 1, **event}, separators=(",", ":"), ensure_ascii=False).encode())
    assert size > 6 * EVENT_SQL_CHARS
    for _ in range(300):
        assert bus.publish("sessions/s1/statements", event)
    assert bus.queued == 64 * 1024 * 1024 // size
    assert bus.dropped == 300 - bus.queued


def test_a_full_queue_never_drops_a_retained_message(own_broker: Broker) -> None:
    """A retained message is state (a request's clear, the latest checkpoint): events
    overflowing the queue must not push it out, and only the latest of a topic waits."""
    name = appliance_name()

    async def main() -> None:
        bus = Bus(own_broker.bus_config(), name, queue_size=3)
        await bus.start()
        assert await bus.wait_connected(5)
        own_broker.stop()
        await eventually(lambda: not bus.connected, timeout_s=3)
        bus.publish("checkpoints", {"seq": 1}, retain=True)
        assert bus.clear_retained("approvals/r1")
        bus.publish("checkpoints", {"seq": 2}, retain=True)
        for i in range(5):
            bus.publish("events/e", {"i": i})
        assert (bus.queued, bus.dropped) == (5, 2)  # 3 events, 2 retained topics

        own_broker.start()  # no retained messages survive: the bus sends them again
        assert await bus.wait_connected(10)
        async with raw_client(own_broker) as console:
            await console.subscribe(f"sqlgate/{name}/checkpoints", qos=1)
            message = await next_message(console, 10)
            assert json.loads(message.payload) == {"v": 1, "seq": 2}
        await eventually(lambda: bus.queued == 0, timeout_s=5)
        await bus.close()

    run(main())


def test_a_retained_decision_is_handled_once_and_deleted(broker: Broker) -> None:
    """Decisions and kills are not retained (they carry an operator's token): one that
    someone published retained came again at every reconnect of the gateway, and stayed
    on the broker with its token, until it was deleted by hand."""
    name = appliance_name()
    topic = f"sqlgate/{name}/approvals/r1/decision"

    async def retained_on(client: aiomqtt.Client) -> list[bytes]:
        """What the broker retains under the decision topic: it sends that as it
        subscribes, before a message published afterwards (the end of the burst)."""
        marker = f"sqlgate/{name}/marker"
        await client.subscribe(topic, qos=1)
        await client.subscribe(marker, qos=1)
        await client.publish(marker, b"end", qos=1)
        found = []
        async for message in client.messages:
            if message.topic.value == topic and message.payload:
                assert isinstance(message.payload, bytes)
                found.append(message.payload)
            elif message.topic.value == marker:
                return found
        return found

    async def main() -> None:
        async with raw_client(broker) as operator:
            await operator.publish(topic, b'{"v":1,"token":"x"}', qos=1, retain=True)
        async with raw_client(broker, Broker.gateway_user) as peer:
            assert await retained_on(peer) == [b'{"v":1,"token":"x"}']
        inbox = Inbox()
        bus = Bus(broker.bus_config(), name)
        bus.subscribe("approvals/+/decision", inbox, delete_retained=True)
        await bus.start()
        await inbox.wait_for(2)  # then its deletion, as any cleared retained message
        assert inbox.messages == [
            ("approvals/r1/decision", {"v": 1, "token": "x"}),
            ("approvals/r1/decision", {}),
        ]
        await bus.close()
        async with raw_client(broker, Broker.gateway_user) as peer:
            assert await retained_on(peer) == []

    run(main())


def test_an_unreachable_broker_never_raises_into_the_gateway(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    nobody = BusConfig(url="mqtt://127.0.0.1:1", host="127.0.0.1", port=free_port())
    wrong_password = dataclasses.replace(broker.bus_config(), password=b"wrong")

    async def main(config: BusConfig) -> None:
        bus = Bus(config, appliance_name(), backoff_first_s=0.05, backoff_max_s=0.1)
        await bus.start()
        await asyncio.sleep(0.5)  # several attempts
        assert not bus.connected
        with pytest.raises(BusUnavailable):
            await bus.publish_now("approvals/r1", {})
        assert bus.publish("events/e", {})
        started = time.monotonic()
        await bus.close()
        assert time.monotonic() - started < 1
        assert not bus.publish("events/e", {})
        assert not bus.clear_retained("approvals/r1")

    run(main(nobody))
    run(main(wrong_password))
    warnings = [r for r in caplog.records if r.name == "sqlgate.bus" and r.levelname == "WARNING"]
    assert any("cannot connect" in r.getMessage() for r in warnings)
    assert len([r for r in warnings if "cannot connect" in r.getMessage()]) == 2  # once each
    assert "Traceback" not in caplog.text


def test_two_gateways_on_one_broker_keep_to_their_own_topics(broker: Broker) -> None:
    names = appliance_name(), appliance_name()

    async def main() -> None:
        inboxes = Inbox(), Inbox()
        buses = [Bus(broker.bus_config(), name) for name in names]
        for bus, inbox in zip(buses, inboxes, strict=True):
            bus.subscribe("sessions/#", inbox)
            await bus.start()
            assert await bus.wait_connected(5)
        async with raw_client(broker) as console:
            await console.subscribe("sqlgate/+/sessions/#", qos=1)
            for bus in buses:
                bus.publish("sessions/s1/start", {"from": bus.appliance})
            for inbox in inboxes:
                await inbox.wait_for(1)
            seen = {(await next_message(console)).topic.value for _ in buses}
        for bus in buses:
            bus.publish("sessions/s1/end", {"from": bus.appliance})
        for inbox in inboxes:
            await inbox.wait_for(2)
        for bus in buses:
            await bus.close()
        for name, inbox in zip(names, inboxes, strict=True):
            assert {payload["from"] for _, payload in inbox.messages} == {name}
            assert len(inbox.messages) == 2
        assert seen == {f"sqlgate/{name}/sessions/s1/start" for name in names}

    run(main())


def test_status_is_retained_online_then_offline(broker: Broker) -> None:
    name = appliance_name()

    async def status() -> dict[str, Any]:
        async with raw_client(broker) as console:
            await console.subscribe(f"sqlgate/{name}/status", qos=1)
            message = await next_message(console)
            assert message.retain
            result: dict[str, Any] = json.loads(message.payload)
            return result

    async def main() -> None:
        before = time.time()
        bus = Bus(broker.bus_config(), name, run="0a1b2c3d")
        await bus.start()
        assert await bus.wait_connected(5)
        online = await status()
        # the run (a start of the gateway) and since when: a console ends the sessions
        # of an earlier run when the run changes
        assert online == {
            "v": 1,
            "appliance": name,
            "state": "online",
            "run": "0a1b2c3d",
            "since": bus.since,
        }
        assert before <= bus.since <= time.time()
        await bus.close()
        assert await status() == {**online, "state": "offline"}
        assert Bus(broker.bus_config(), name).run != Bus(broker.bus_config(), name).run

    run(main())


def test_mqtts_verifies_the_broker_certificate(broker: Broker) -> None:
    assert broker.pki is not None
    config = broker.bus_config(tls=True)
    trusted = dataclasses.replace(config, ca_file=broker.pki.ca_cert)  # [bus] ca_file

    async def main() -> None:
        inbox = Inbox()
        bus = Bus(trusted, appliance_name())
        bus.subscribe("events/#", inbox)
        await bus.start()
        assert await bus.wait_connected(5)
        bus.publish("events/e", {"tls": True})
        await inbox.wait_for(1)
        await bus.close()

        # The system CAs do not know the lab's CA: no connection.
        untrusted = Bus(config, appliance_name(), backoff_first_s=0.05)
        await untrusted.start()
        assert not await untrusted.wait_connected(0.5)
        await untrusted.close()

    run(main())


def test_no_field_an_agent_fills_makes_an_event_larger_than_a_broker_takes() -> None:
    """A refusal's ``reason`` quotes the statement (``SET <name>``, ``DELETE FROM
    <table>``), ``rewritten`` is the whole text that ran, and ``params`` hold up to 256
    values of 1,024 bytes: carried whole, a statement of control characters made its
    event 1.5 MiB, which the broker (``message_size_limit``) dropped, so the console
    never showed it. Each is cut, and says so; the worst case stays below 1 MiB."""
    from appliance.bus import PARAM_CHARS, REASON_CHARS

    huge = "\x01" * (1024 * 1024)
    record = {
        "kind": "statement",
        "sql": huge,
        "sql_hex": "01" * len(huge),
        "rewritten": huge,
        "reason": f"DELETE FROM {huge} has no WHERE",
        "params": ["'" + "\x01" * 1022 + "'"] * 256,
        "identity": "agent",
    }
    event = bounded_sql(record)
    size = len(json.dumps({"v": 1, **event}, separators=(",", ":"), ensure_ascii=False).encode())
    assert size < 1024 * 1024
    assert event["sql_truncated"] is True and event["rewritten_truncated"] is True
    assert event["reason_truncated"] is True and len(event["reason"]) == REASON_CHARS
    assert event["params_truncated"] is True
    assert all(len(p) == PARAM_CHARS for p in event["params"])
    assert record["reason"].startswith("DELETE") and len(record["params"][0]) == 1024
    assert "params_truncated" not in record  # the record itself is not changed
    usual = {"reason": "r", "params": ["1", "'a'", "NULL"], "rewritten": "SELECT 1"}
    assert bounded_sql(usual) is usual
