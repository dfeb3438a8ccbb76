"""The MQTT bus: live events out, approval decisions in (SPEC §8, docs/events.md).

The bus is best-effort and must never slow or break the proxy:

- ``publish`` only puts a message on a bounded queue (drop-oldest, counted in
  ``dropped``); a background task sends it when the broker is reachable, so events
  published during an outage go out after the reconnect, at least once. A retained
  message is state, not an event: only the latest for each topic waits, apart from the
  queue, and it is never dropped (a lost clear would leave a request pending on the
  broker for good).
- ``publish_now`` is for messages that are useless later (an approval request: a
  statement is held while it waits). It raises ``BusUnavailable`` at once when the
  broker is not connected, and when the broker does not acknowledge in time.
- The connection is kept by one background task that reconnects forever with a capped
  exponential backoff (0.5 s doubling to 30 s); nothing it meets is raised into the
  gateway. ``connected`` is true only once every subscription is in place, so a request
  published while connected can be answered.

Topics are ``<topic_prefix>/<appliance>/<suffix>``; payloads are JSON objects with the
format version ``"v": 1`` first. Incoming payloads are handed to handlers as dicts;
logs name topics and sizes, never payload bodies (decisions carry operator tokens).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from appliance.config import BusConfig

__all__ = [
    "EVENT_SQL_CHARS",
    "EVENT_VERSION",
    "PARAM_CHARS",
    "QUEUE_BYTES",
    "REASON_CHARS",
    "Bus",
    "BusUnavailable",
    "Handler",
    "bounded_sql",
    "reconnect_delay",
]

log = logging.getLogger("sqlgate.bus")

EVENT_VERSION = 1
"""The ``"v"`` of every payload; consumers ignore versions they do not know."""

EVENT_SQL_CHARS = 64 * 1024
"""The most of a statement's text an event or an approval request carries. A longer one
is cut and says ``"sql_truncated": true``; its ``sql_sha256`` is of the whole text, and
the ledger keeps all of it. Even with every character escaped by JSON (``\\u0001``, 6
bytes) the message stays well under what consumers read (1 MiB)."""

QUEUE_BYTES = 64 * 1024 * 1024
"""The most payload the events waiting for the broker may hold (with at most 10,000 of
them): while the broker is down, one agent's statements of 64 KiB each must not grow the
gateway by gigabytes. The oldest are dropped first, as when the count is reached."""

Handler = Callable[[str, dict[str, Any]], None]
"""Called with the topic suffix (below ``<prefix>/<appliance>/``) and the payload."""

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
STATUS_SUFFIX = "status"  # retained online/offline marker, the broker sends "offline" as will


class BusUnavailable(Exception):
    """The broker cannot take a message now; the caller must refuse, not wait.

    ``sent``: the message may have reached the broker (a retained one must then be
    cleared); False when it never left, the bus not being connected."""

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


def reconnect_delay(
    attempt: int, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based) after a failure."""
    return min(max_s, first_s * 2.0 ** min(attempt, 64))


@dataclass(slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool


REASON_CHARS = 2048
"""The most of a record's ``reason`` an event carries. A refusal's reason may quote the
statement (``DELETE FROM <its table>``, ``SET <its variable>``), and so hold as much text
as the statement itself."""

PARAM_CHARS = 32
"""The most of each value of an execute's ``params`` (up to 256 of 1,024 bytes each in
the record) an event carries."""


def bounded_sql(body: dict[str, Any], limit: int = EVENT_SQL_CHARS) -> dict[str, Any]:
    """``body`` as the bus carries it: its ``sql`` cut to ``limit`` characters and its
    ``sql_hex`` (the bytes, when ``sql`` is not them in UTF-8) to ``limit`` bytes (a copy,
    with ``"sql_truncated": true``) when longer; otherwise ``body`` itself. The other
    fields that may hold what an agent sent are cut too, each saying so: ``rewritten``
    (the text that ran) to ``limit`` characters, ``reason`` to ``REASON_CHARS`` and each
    value of ``params`` to ``PARAM_CHARS``; so that even with every character escaped by
    JSON the message stays below the 1 MiB a broker and the console take."""
    sql = body.get("sql")
    raw = body.get("sql_hex")
    rewritten = body.get("rewritten")
    reason = body.get("reason")
    params = body.get("params")
    long_sql = isinstance(sql, str) and len(sql) > limit
    long_raw = isinstance(raw, str) and len(raw) > 2 * limit
    long_rewritten = isinstance(rewritten, str) and len(rewritten) > limit
    long_reason = isinstance(reason, str) and len(reason) > REASON_CHARS
    long_params = isinstance(params, list) and any(
        isinstance(p, str) and len(p) > PARAM_CHARS for p in params
    )
    if not (long_sql or long_raw or long_rewritten or long_reason or long_params):
        return body
    cut = dict(body)
    if long_sql or long_raw:
        cut["sql_truncated"] = True
    if long_sql:
        cut["sql"] = str(sql)[:limit]
    if long_raw:
        cut["sql_hex"] = str(raw)[: 2 * limit]
    if long_rewritten:
        cut["rewritten"] = str(rewritten)[:limit]
        cut["rewritten_truncated"] = True
    if long_reason:
        cut["reason"] = str(reason)[: REASON_CHARS - 1] + "\u2026"
        cut["reason_truncated"] = True
    if long_params:
        assert isinstance(params, list)
        cut["params"] = [
            p[: PARAM_CHARS - 1] + "\u2026" if isinstance(p, str) and len(p) > PARAM_CHARS else p
            for p in params
        ]
        cut["params_truncated"] = True
    return cut


def _check_suffix(suffix: str, *, wildcards: bool) -> None:
    """A topic suffix is one or more non-empty levels; wildcards only where allowed."""
    levels = suffix.split("/")
    if not suffix or any(level == "" for level in levels) or "\0" in suffix:
        raise ValueError(f"topic suffix {suffix!r}: expected non-empty levels joined by '/'")
    for index, level in enumerate(levels):
        if "+" in level or "#" in level:
            if not wildcards:
                raise ValueError(f"topic suffix {suffix!r}: wildcards are only for subscribe")
            if level not in ("+", "#") or (level == "#" and index != len(levels) - 1):
                raise ValueError(f"topic pattern {suffix!r}: '+' is a whole level, '#' the last")


def _check_qos(qos: int) -> None:
    if qos not in (0, 1, 2):
        raise ValueError(f"qos {qos!r}: expected 0, 1 or 2")


_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A JSON escape of half a surrogate pair (alone, a string no UTF-8 can hold)."""


def _unicode(body: dict[str, Any]) -> bool:
    """Whether every text of ``body`` can be written as UTF-8 (no lone surrogate)."""
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _encode(payload: dict[str, Any]) -> bytes:
    """Compact JSON with ``"v"`` first; TypeError/ValueError for what JSON cannot hold."""
    body = {"v": EVENT_VERSION, **payload}
    body["v"] = EVENT_VERSION
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class Bus:
    """One gateway's connection to the MQTT broker.

    Call ``start()`` once on the running loop and ``close()`` at shutdown. ``publish``,
    ``clear_retained`` and ``subscribe`` may be called before ``start()``: messages wait
    in the queue and subscriptions are made on every (re)connect.
    """

    def __init__(
        self,
        config: BusConfig,
        appliance: str,
        *,
        queue_size: int = 10_000,
        queue_bytes: int = QUEUE_BYTES,
        max_inflight: int = 64,
        max_incoming_bytes: int = 1024 * 1024,
        timeout_s: float = 5.0,
        keepalive_s: int = 10,
        backoff_first_s: float = BACKOFF_FIRST_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        tls_context: ssl.SSLContext | None = None,
        run: str | None = None,
    ) -> None:
        if queue_size < 1 or queue_bytes < 1 or max_inflight < 1:
            raise ValueError("queue_size, queue_bytes and max_inflight must be at least 1")
        _check_suffix(appliance, wildcards=False)
        if "/" in appliance:
            raise ValueError(f"appliance name {appliance!r} must be one topic level")
        self.config = config
        self.appliance = appliance
        self.base = f"{config.topic_prefix}/{appliance}"
        self._password: str | None = None
        if config.password is not None:
            try:
                self._password = config.password.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(
                    f"{config.password_file}: the MQTT password is not UTF-8"
                ) from None
        self._tls_context = tls_context
        if config.tls and tls_context is None:
            self._tls_context = config.tls_context()  # bus.ca_file or the system's CAs
        self._identifier = f"sqlgate-{appliance}-{os.urandom(4).hex()}"
        self.run = run or os.urandom(4).hex()
        """This start of the gateway, in its ``status`` (random unless given)."""
        self.since = time.time()
        """When this run began (before any of its sessions), in its ``status``."""
        self.status_fields: dict[str, Any] = {}
        """More of ``status``, set before ``start()``: what this gateway keeps retained."""
        self._queue: collections.deque[_Outgoing] = collections.deque()
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        self._queued_bytes = 0  # of the payloads in _queue
        self._retained: dict[str, _Outgoing] = {}  # by topic, the latest; never dropped
        self._max_inflight = max_inflight
        self._max_incoming = max_incoming_bytes
        self._timeout = timeout_s
        self._keepalive = keepalive_s
        self._backoff = (backoff_first_s, backoff_max_s)
        self._handlers: dict[str, list[Handler]] = {}
        self._not_retained: set[str] = set()  # patterns whose retained messages are deleted
        self._on_connect: list[Callable[[], None]] = []  # after each (re)connect
        self._wakeup = asyncio.Event()
        self._connected_event = asyncio.Event()
        self._first_attempt_ended = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._inflight: dict[int, _Outgoing] = {}  # sent, not yet acknowledged, by send order
        self._next_send = 0
        self._send_error: Exception | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # sends, late subscribes, urgent publishes
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._overflowing = False
        self._down_since: float | None = time.monotonic()  # not connected yet
        self._down_before = 0.0  # seconds not connected, up to ``_down_since``
        self.dropped = 0
        """Messages lost because the queue was full (the oldest go first)."""
        self.delivered = 0
        """Queued messages the broker acknowledged."""

    # -- state -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected, with every subscription made: requests can be published now."""
        return self._client is not None

    def downtime(self) -> float:
        """Seconds this bus has not been connected since it was made, up to now: what
        part of a wait the operators could not see a request, nor answer it."""
        since = self._down_since
        return self._down_before + (0.0 if since is None else time.monotonic() - since)

    def _went_down(self) -> None:
        self._client = None
        self._connected_event.clear()
        if self._down_since is None:
            self._down_since = time.monotonic()

    @property
    def queued(self) -> int:
        """Messages waiting for the broker (not counting those sent but unacknowledged)."""
        return len(self._queue) + len(self._retained)

    async def wait_connected(self, timeout_s: float) -> bool:
        """Whether the bus is (or becomes, within ``timeout_s``) connected."""
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def wait_first_attempt(self, timeout_s: float) -> None:
        """Return once the first connection attempt has ended (connected or not), at most
        ``timeout_s``: a gateway listens before its bus is connected, and a statement
        that needs the bus in its first moments must not be refused for that."""
        try:
            await asyncio.wait_for(self._first_attempt_ended.wait(), timeout_s)
        except TimeoutError:
            pass

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background connection; returns at once, whether or not it connects."""
        if self._runner is None and not self._closed:
            self._runner = asyncio.create_task(self._run(), name=f"bus {self.base}")

    async def close(self, drain_timeout_s: float = 2.0) -> None:
        """Send what is queued (for at most ``drain_timeout_s``), mark this gateway
        offline and disconnect; later ``publish`` calls return False."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + drain_timeout_s
        while self.connected and (self._queue or self._retained or self._inflight):
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.01)
        if self.connected:
            try:
                await self.publish_now(STATUS_SUFFIX, self._status("offline"), retain=True)
            except BusUnavailable:
                pass
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.queued or self._inflight:
            log.warning(
                "bus closed with %d message(s) not delivered to the broker",
                self.queued + len(self._inflight),
            )

    # -- outgoing ----------------------------------------------------------------------

    def topic(self, suffix: str) -> str:
        """The full topic of ``suffix`` for this appliance."""
        return f"{self.base}/{suffix}"

    def publish(
        self, topic_suffix: str, payload: dict[str, Any], *, retain: bool = False, qos: int = 1
    ) -> bool:
        """Queue an event for the broker; never blocks. False once the bus is closed.

        A full queue drops its oldest message; a retained message replaces the one
        still waiting for its topic, and is never dropped. A bad topic, qos or a payload JSON cannot
        hold raises ValueError/TypeError: those are programming errors.
        """
        _check_suffix(topic_suffix, wildcards=False)
        _check_qos(qos)
        message = _Outgoing(self.topic(topic_suffix), _encode(payload), qos, retain)
        if self._closed:
            return False
        self._enqueue(message)
        return True

    def clear_retained(self, topic_suffix: str, *, send_unsent: bool = False) -> bool:
        """Queue an empty retained message, which deletes the retained one on the broker.

        ``send_unsent``: the retained message is also an event (a session's start). When
        it has not reached the broker yet (an outage), the clear replaces it as ever, and
        it is queued as an ordinary message, not retained: its subscribers still get it,
        and the broker keeps nothing."""
        _check_suffix(topic_suffix, wildcards=False)
        if self._closed:
            return False
        topic = self.topic(topic_suffix)
        unsent = self._retained.get(topic) if send_unsent else None
        if unsent is not None and unsent.payload:
            self._enqueue(_Outgoing(topic, unsent.payload, unsent.qos, False))
        self._enqueue(_Outgoing(topic, b"", 1, True))
        return True

    async def publish_now(
        self,
        topic_suffix: str,
        payload: dict[str, Any],
        *,
        retain: bool = False,
        qos: int = 1,
        timeout_s: float | None = None,
    ) -> None:
        """Publish now and wait for the broker's acknowledgement (qos 1 and 2).

        Raises BusUnavailable at once when not connected, and when the connection is
        lost or the broker does not answer within ``timeout_s`` (default: the bus
        timeout). After a failure that came once the message was sent, it may still
        have reached the broker: a retained message should then be cleared.
        """
        _check_suffix(topic_suffix, wildcards=False)
        _check_qos(qos)
        body = _encode(payload)
        client = self._client
        if client is None:
            raise BusUnavailable("the MQTT broker is not connected", sent=False)
        send = asyncio.create_task(
            client.publish(self.topic(topic_suffix), body, qos=qos, retain=retain, timeout=math.inf)
        )
        self._tasks.add(send)  # a lost connection cancels it
        wait_s = self._timeout if timeout_s is None else timeout_s
        try:
            done, _ = await asyncio.wait({send}, timeout=wait_s)
        except asyncio.CancelledError:
            send.cancel()
            raise
        finally:
            self._tasks.discard(send)
        if not done:
            send.cancel()
            raise BusUnavailable("the MQTT broker did not acknowledge in time")
        if send.cancelled():
            raise BusUnavailable("the connection to the MQTT broker was lost")
        error = send.exception()
        if error is not None:
            raise BusUnavailable(f"the MQTT broker did not take the message: {error}") from error

    def _enqueue(self, message: _Outgoing) -> None:
        if message.retain:  # the broker keeps only the latest: so does the bus
            self._retained.pop(message.topic, None)
            self._retained[message.topic] = message
            self._wakeup.set()
            return
        self._queue.append(message)
        self._queued_bytes += len(message.payload)
        self._trim()
        self._wakeup.set()

    def _trim(self) -> None:
        """Drop the oldest events while the queue holds more than ``queue_size`` of them
        or more than ``queue_bytes`` of payload (the newest always stays)."""
        queue = self._queue
        dropped = 0
        while len(queue) > self._queue_size or (
            self._queued_bytes > self._queue_bytes and len(queue) > 1
        ):
            self._queued_bytes -= len(queue.popleft().payload)
            dropped += 1
        if not dropped:
            return
        self.dropped += dropped
        if not self._overflowing:
            self._overflowing = True
            log.warning(
                "bus queue full (%d messages or %d bytes): dropping the oldest events",
                self._queue_size,
                self._queue_bytes,
            )

    # -- incoming ----------------------------------------------------------------------

    def subscribe(
        self, topic_suffix_pattern: str, handler: Handler, *, delete_retained: bool = False
    ) -> None:
        """Call ``handler(suffix, payload)`` for messages on this appliance's topics that
        match the pattern (``+`` one level, ``#`` the rest).

        ``delete_retained``: the topics carry messages that must not be retained (an
        operator's decision or kill, with a token): after each message, its topic's
        retained message is deleted, so that one published retained is not kept with
        its token, to come again at every reconnect. (The retain flag cannot tell: a
        subscriber already subscribed receives a retained message without it.)

        The subscription is made on every (re)connect. Registered before ``start()``, it
        is in place before ``connected`` first turns true; registered later, shortly.
        An empty payload (a retained message being cleared) arrives as ``{}``. Handlers
        run on the loop, one message at a time: they must return quickly.
        """
        _check_suffix(topic_suffix_pattern, wildcards=True)
        full = self.topic(topic_suffix_pattern)
        if delete_retained:
            self._not_retained.add(full)
        handlers = self._handlers.setdefault(full, [])
        handlers.append(handler)
        client = self._client
        if len(handlers) == 1 and client is not None:
            self._spawn(self._subscribe_late(client, full))

    async def _subscribe_one(self, client: aiomqtt.Client, topic: str) -> None:
        """Subscribe; a refusal (ACL) is logged, since retrying cannot help."""
        granted = await client.subscribe(topic, qos=1)
        for code in granted:
            failed = code.is_failure if isinstance(code, ReasonCode) else code >= 0x80
            if failed:
                log.error("bus: the broker refused the subscription to %s (check its ACL)", topic)

    async def _subscribe_late(self, client: aiomqtt.Client, topic: str) -> None:
        try:
            await self._subscribe_one(client, topic)
        except aiomqtt.MqttError as exc:
            log.warning("bus: subscribing to %s failed (%s); retried on reconnect", topic, exc)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(self.base + "/"):
            return
        suffix = topic[len(self.base) + 1 :]
        parsed = aiomqtt.Topic(topic)
        matched = [
            handler
            for pattern, handlers in self._handlers.items()
            if parsed.matches(pattern)
            for handler in handlers
        ]
        if not matched:
            return
        if payload and any(parsed.matches(pattern) for pattern in self._not_retained):
            self._enqueue(_Outgoing(topic, b"", 1, True))  # handled now, never again
        if len(payload) > self._max_incoming:
            log.warning("bus: dropped a %d-byte message on %s: too large", len(payload), topic)
            return
        body: object = {}
        if payload:
            try:
                body = json.loads(payload)
            except (ValueError, RecursionError):  # also too deep, or a 5,000-digit number
                log.warning("bus: dropped a %d-byte message on %s: not JSON", len(payload), topic)
                return
            if not isinstance(body, dict):
                log.warning(
                    "bus: dropped a %d-byte message on %s: not a JSON object", len(payload), topic
                )
                return
            if _ESCAPED_SURROGATE.search(payload) and not _unicode(body):
                # "\ud800" is JSON but no text: a reason or name holding it could not be
                # written to the ledger nor sent to a client (the session would fail)
                log.warning(
                    "bus: dropped a %d-byte message on %s: a lone surrogate is not text",
                    len(payload),
                    topic,
                )
                return
        assert isinstance(body, dict)
        for handler in matched:
            try:
                handler(suffix, body)
            except Exception as exc:  # a handler's bug must not stop the bus
                # The message text may quote the payload: its type only, details at DEBUG.
                log.error("bus: handler for %s failed: %s", topic, type(exc).__name__)
                log.debug("bus: handler failure", exc_info=True)

    # -- the connection ----------------------------------------------------------------

    def _status(self, state: str) -> dict[str, Any]:
        """``run`` and ``since`` tell a console that the gateway started again: the
        sessions it had before ``since`` ended with the previous run."""
        return {
            "appliance": self.appliance,
            "state": state,
            "run": self.run,
            "since": self.since,
            **self.status_fields,
        }

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_client(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self.config.host,
            self.config.port,
            username=self.config.username,
            password=self._password,
            identifier=self._identifier,
            logger=logging.getLogger("sqlgate.bus.mqtt"),
            will=aiomqtt.Will(
                self.topic(STATUS_SUFFIX), _encode(self._status("offline")), qos=1, retain=True
            ),
            timeout=self._timeout,
            keepalive=self._keepalive,
            max_queued_incoming_messages=10_000,
            max_inflight_messages=self._max_inflight,
            tls_context=self._tls_context,
            # a request or decision right after another message must not wait for the
            # peer's delayed ACK (Nagle: about 40 ms a hop)
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        client.pending_calls_threshold = self._max_inflight + 16  # ours are bounded already
        return client

    async def _run(self) -> None:
        """Connect, serve until the connection is lost, wait, again; forever."""
        failures = 0
        while True:
            was_connected = False
            try:
                client = self._new_client()
                async with client:
                    await self._ready(client)
                    was_connected = True
                    log.info("bus: connected to %s as %s", self.config.url, self.base)
                    await self._serve(client)
            except asyncio.CancelledError:
                raise
            except (aiomqtt.MqttError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
            except Exception as exc:  # never into the gateway: log it and keep trying
                if failures == 0:
                    log.exception("bus: unexpected error")
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._went_down()
                self._first_attempt_ended.set()
            if was_connected:
                failures = 0
                log.warning("bus: lost the connection to %s: %s", self.config.url, reason)
            elif failures == 0:
                log.warning("bus: cannot connect to %s: %s", self.config.url, reason)
            else:
                log.debug("bus: cannot connect to %s: %s", self.config.url, reason)
            delay = reconnect_delay(failures, *self._backoff)
            failures += 1
            await asyncio.sleep(delay)

    async def _ready(self, client: aiomqtt.Client) -> None:
        """Say online, then subscribe to every pattern, including ones added meanwhile:
        no await between the last check and ``connected`` turning true."""
        await client.publish(
            self.topic(STATUS_SUFFIX), _encode(self._status("online")), qos=1, retain=True
        )
        done: set[str] = set()
        while pending := [topic for topic in self._handlers if topic not in done]:
            for topic in pending:
                await self._subscribe_one(client, topic)
                done.add(topic)
        self._client = client
        if self._down_since is not None:
            self._down_before += time.monotonic() - self._down_since
            self._down_since = None
        self._connected_event.set()
        self._first_attempt_ended.set()
        for callback in list(self._on_connect):
            try:
                callback()
            except Exception:  # a caller's bug must not cost the connection
                log.exception("bus: a callback after connecting failed")

    def on_connected(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the bus has connected and subscribed, on the loop:
        for what the broker may have lost meanwhile (a restart without persistence loses
        retained messages)."""
        self._on_connect.append(callback)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Read and write until either side fails; unacknowledged messages go back."""
        self._send_error = None
        reader = asyncio.create_task(self._read(client))
        writer = asyncio.create_task(self._write(client))
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # the error that ended the connection
            raise aiomqtt.MqttError("the connection ended")
        finally:
            self._went_down()
            for task in (reader, writer, *self._tasks):
                task.cancel()
            await asyncio.gather(reader, writer, *self._tasks, return_exceptions=True)
            self._requeue_inflight()

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                self._dispatch(message.topic.value, message.payload)
            except Exception:  # one message, whatever it holds, never ends the connection
                log.exception("bus: a message on %s could not be handled", message.topic.value)

    async def _write(self, client: aiomqtt.Client) -> None:
        slots = asyncio.Semaphore(self._max_inflight)
        while True:
            if self._send_error is not None:
                raise self._send_error
            if not self._queue and not self._retained:
                if self._overflowing:
                    self._overflowing = False
                    log.info("bus queue drained; %d event(s) dropped so far", self.dropped)
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await slots.acquire()
            if (not self._queue and not self._retained) or self._send_error is not None:
                slots.release()
                continue
            if self._retained:  # state first: a few, and the latest of each topic
                message = self._retained.pop(next(iter(self._retained)))
            else:
                message = self._queue.popleft()
                self._queued_bytes -= len(message.payload)
            number = self._next_send
            self._next_send += 1
            self._inflight[number] = message
            self._spawn(self._send(client, number, message, slots))

    async def _send(
        self, client: aiomqtt.Client, number: int, message: _Outgoing, slots: asyncio.Semaphore
    ) -> None:
        try:
            await client.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
        except aiomqtt.MqttError as exc:
            if self._send_error is None:
                self._send_error = exc
            self._wakeup.set()
            return  # stays in flight: requeued when the connection is torn down
        finally:
            slots.release()
        self._inflight.pop(number, None)
        self.delivered += 1

    def _requeue_inflight(self) -> None:
        """Put sent-but-unacknowledged messages back in front, oldest first; when they do
        not all fit, the oldest are the ones dropped."""
        if not self._inflight:
            return
        waiting = [self._inflight[number] for number in sorted(self._inflight)]
        self._inflight.clear()
        retained = {m.topic: m for m in waiting if m.retain and m.topic not in self._retained}
        self._retained = {**retained, **self._retained}  # a newer one for a topic wins
        waiting = [m for m in waiting if not m.retain]
        self._queue.extendleft(reversed(waiting))
        self._queued_bytes += sum(len(m.payload) for m in waiting)
        self._trim()
