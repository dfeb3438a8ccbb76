"""Where the console's live data comes from: the MQTT broker in production, a recorded
file in tests, snapshots and demos. Both deliver the same items and take the same
decisions, so the app cannot tell them apart.

A source never raises into the console: a broker that is down or refuses is a
``LinkState`` the status bar shows, and the MQTT source keeps retrying with the gateway's
backoff (0.5 s doubling to 30 s).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from appliance.bus import reconnect_delay
from appliance.config import BusConfig

__all__ = [
    "BATCH_MAX",
    "BATCH_S",
    "Batcher",
    "BusEvent",
    "Deliver",
    "Item",
    "LinkState",
    "MqttSource",
    "RecordedSource",
    "SendError",
    "Source",
    "Synced",
    "TooLarge",
    "parse_payload",
    "split_topic",
    "to_item",
]

MAX_PAYLOAD_BYTES = 1024 * 1024
EVENT_VERSION = 1
SETTLE_S = 1.0
"""After its subscriptions are acknowledged (SUBACK), how long the source waits for the
messages the broker retains (they follow the SUBACKs at once) before it says ``Synced``."""
SETTLE_MAX_S = 10.0
"""How much longer it waits, at most, for the messages already received to be delivered."""
SUBSCRIPTIONS = ("status", "checkpoints", "alerts", "approvals/+", "sessions/#")
"""What the console reads under ``<prefix>/+/`` (the operator ACL of docs/events.md)."""

_quiet_log = logging.getLogger("sqlgate.tui.mqtt")
_quiet_log.addHandler(logging.NullHandler())
_quiet_log.propagate = False  # a library line on stderr would tear the screen


@dataclass(frozen=True, slots=True)
class BusEvent:
    """A message on ``<prefix>/<appliance>/<path...>``; ``payload`` None: emptied."""

    appliance: str
    path: tuple[str, ...]
    payload: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class LinkState:
    """The source's connection changed; ``detail`` says it in words for the status bar."""

    connected: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Synced:
    """Connected, and what the broker retains for the console has been delivered: a
    request it did not send again is no longer pending (answered while the console was
    away). Comes after each ``LinkState(connected=True)`` of the MQTT source."""


@dataclass(frozen=True, slots=True)
class TooLarge:
    """A message on ``<prefix>/<appliance>/<path...>`` larger than the console reads
    (``MAX_PAYLOAD_BYTES``), on a topic where a dropped message would hide a statement
    or a request (``sessions/...``, ``approvals/<id>``): left unread, and shown as such."""

    appliance: str
    path: tuple[str, ...]
    size: int


Item = BusEvent | LinkState | Synced | TooLarge
Deliver = Callable[[Item], None]


BATCH_S = 0.05
"""Items of a source are handed on at most once per this many seconds, in one batch."""
BATCH_MAX = 1000
"""...or as soon as this many wait."""


class Batcher:
    """A ``Deliver`` that hands items on in batches, in order: the first item after a
    quiet spell goes at the loop's next turn, later ones wait until ``every_s`` after
    the previous batch (or until ``most`` wait). At thousands of events a second, one
    message per batch instead of one per event is what lets the console keep up."""

    def __init__(
        self,
        post: Callable[[list[Item]], object],
        every_s: float = BATCH_S,
        most: int = BATCH_MAX,
    ) -> None:
        self._post = post
        self._every = every_s
        self._most = most
        self._items: list[Item] = []
        self._handle: asyncio.Handle | None = None
        self._last = -math.inf

    def __call__(self, item: Item) -> None:
        self._items.append(item)
        if len(self._items) >= self._most:
            self.flush()
        elif self._handle is None:
            loop = asyncio.get_running_loop()
            due = self._last + self._every
            if due <= loop.time():
                self._handle = loop.call_soon(self.flush)
            else:
                self._handle = loop.call_at(due, self.flush)

    def flush(self) -> None:
        """Hand on what waits, now."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        items, self._items = self._items, []
        if items:
            self._last = asyncio.get_running_loop().time()
            self._post(items)


class SendError(Exception):
    """A decision could not be handed to the broker; the message says why."""


class Source(Protocol):
    """What the console reads from and sends decisions through."""

    prefix: str

    async def run(self, deliver: Deliver) -> None:
        """Deliver items until cancelled; never raises."""

    async def send(self, appliance: str, suffix: str, payload: dict[str, Any]) -> None:
        """Publish ``payload`` on ``<prefix>/<appliance>/<suffix>`` (SendError if not)."""


def split_topic(prefix: str, topic: str) -> tuple[str, tuple[str, ...]] | None:
    """``(appliance, path)`` of a topic under ``prefix``, or None."""
    start = prefix + "/"
    if not topic.startswith(start):
        return None
    appliance, *rest = topic[len(start) :].split("/")
    if not appliance:
        return None
    return appliance, tuple(rest)


def parse_payload(payload: bytes) -> dict[str, Any] | None | bool:
    """The JSON object of a message, None for an empty one, False for one to drop
    (not JSON, not an object, too large, a format version this console does not know)."""
    if not payload:
        return None
    if len(payload) > MAX_PAYLOAD_BYTES:
        return False
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):  # also too deep, or a 5,000-digit number
        return False
    if not isinstance(body, dict) or body.get("v") != EVENT_VERSION:
        return False
    return body


def to_item(prefix: str, topic: str, payload: bytes) -> BusEvent | TooLarge | None:
    """What a message on ``topic`` is for the console; None: dropped (not under
    ``prefix``, unreadable, too large where a placeholder is not needed)."""
    where = split_topic(prefix, topic)
    if where is None:
        return None
    appliance, path = where
    if len(payload) > MAX_PAYLOAD_BYTES:
        shown = (len(path) == 3 and path[0] == "sessions") or (
            len(path) == 2 and path[0] == "approvals"
        )
        return TooLarge(appliance, path, len(payload)) if shown else None
    body = parse_payload(payload)
    if body is False:
        return None
    assert not isinstance(body, bool)
    return BusEvent(where[0], where[1], body)


def _encode(payload: dict[str, Any]) -> bytes:
    body = {"v": EVENT_VERSION, **payload}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class MqttSource:
    """The broker, with the operator's ``[bus]`` credentials."""

    def __init__(self, config: BusConfig, *, timeout_s: float = 5.0) -> None:
        self.config = config
        self.prefix = config.topic_prefix
        self._timeout = timeout_s
        self._client: aiomqtt.Client | None = None
        self._password: str | None = None
        if config.password is not None:
            self._password = config.password.decode("utf-8", "replace")

    def _new_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.config.host,
            self.config.port,
            username=self.config.username,
            password=self._password,
            identifier=f"sqlgate-console-{os.urandom(4).hex()}",
            logger=_quiet_log,
            timeout=self._timeout,
            keepalive=10,
            tls_context=self.config.tls_context(),
            # small packets (each event's acknowledgement, a decision right after one)
            # must not wait for the broker's delayed ACK (Nagle: about 40 ms), as the
            # gateway's do not
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )

    async def run(self, deliver: Deliver) -> None:
        url = self.config.url
        attempt = 0
        deliver(LinkState(False, f"connecting to {url}"))
        while True:
            try:
                async with self._new_client() as client:
                    refused = await self._subscribe(client)
                    self._client = client
                    attempt = 0
                    who = f" as {self.config.username}" if self.config.username else ""
                    detail = f"connected to {url}{who}"
                    if refused:
                        detail += f" (the broker refused {', '.join(refused)}: see its ACL)"
                    deliver(LinkState(True, detail))
                    settle = asyncio.create_task(self._settle(client, deliver))
                    try:
                        async for message in client.messages:
                            payload = message.payload if isinstance(message.payload, bytes) else b""
                            event = to_item(self.prefix, message.topic.value, payload)
                            if event is not None:
                                deliver(event)
                    finally:
                        settle.cancel()
                    why = "the broker closed the connection"
            except aiomqtt.MqttCodeError as exc:
                why = f"the broker refused the connection: {exc}"
            except (aiomqtt.MqttError, OSError, ValueError) as exc:
                why = str(exc) or type(exc).__name__
            finally:
                self._client = None
            delay = reconnect_delay(attempt)
            attempt += 1
            deliver(LinkState(False, f"broker {url} unreachable: {why}; retrying in {delay:g}s"))
            await asyncio.sleep(delay)

    @staticmethod
    async def _settle(client: aiomqtt.Client, deliver: Deliver) -> None:
        """``Synced`` once the retained messages are in: ``SETTLE_S`` after the SUBACKs,
        when every message received so far has been delivered (or ``SETTLE_MAX_S`` later,
        when messages keep coming faster than they are read)."""
        await asyncio.sleep(SETTLE_S)
        for _ in range(int(SETTLE_MAX_S / 0.05)):
            if not len(client.messages):
                break
            await asyncio.sleep(0.05)
        deliver(Synced())

    async def _subscribe(self, client: aiomqtt.Client) -> list[str]:
        refused = []
        for suffix in SUBSCRIPTIONS:
            topic = f"{self.prefix}/+/{suffix}"
            granted = await client.subscribe(topic, qos=1)
            if any(
                code.is_failure if isinstance(code, ReasonCode) else code >= 0x80
                for code in granted
            ):
                refused.append(topic)
        return refused

    async def send(self, appliance: str, suffix: str, payload: dict[str, Any]) -> None:
        client = self._client
        if client is None:
            raise SendError(f"not connected to the MQTT broker at {self.config.url}")
        try:
            await client.publish(
                f"{self.prefix}/{appliance}/{suffix}",
                _encode(payload),
                qos=1,
                timeout=self._timeout,
            )
        except aiomqtt.MqttError as exc:
            raise SendError(
                f"the MQTT broker at {self.config.url} did not take it: {exc}"
            ) from None
        except ValueError as exc:  # a topic MQTT cannot publish on (a wildcard in it)
            raise SendError(f"cannot publish on that topic: {exc}") from None


@dataclass(frozen=True, slots=True)
class Recorded:
    """One line of a recording: a topic, its payload (None: empty), when (seconds)."""

    topic: str
    payload: dict[str, Any] | None
    at: float = 0.0


class RecordedSource:
    """Messages from a recording (JSON lines ``{"topic", "payload", "at"}``): played at
    once, or at ``speed`` times their own pace. Decisions are kept in ``sent``."""

    def __init__(
        self,
        messages: Iterable[Recorded],
        *,
        prefix: str = "sqlgate",
        speed: float | None = None,
        name: str = "recording",
    ) -> None:
        self.prefix = prefix
        self.messages = list(messages)
        self.speed = speed
        self.name = name
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.played = asyncio.Event()

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> RecordedSource:
        """A recording file; ValueError naming the line when one is not a message."""
        messages = []
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(f"{path}:{number}: not UTF-8 text") from None
                if not line.strip():
                    continue
                try:
                    body = json.loads(line)
                    if not isinstance(body, dict):
                        raise TypeError("a JSON object with topic, payload and at is expected")
                    messages.append(
                        Recorded(str(body["topic"]), body.get("payload"), float(body.get("at", 0)))
                    )
                except (ValueError, TypeError, KeyError) as exc:
                    why = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
                    raise ValueError(f"{path}:{number}: not a recorded message ({why})") from None
        kwargs.setdefault("name", Path(path).name)
        return cls(messages, **kwargs)

    async def run(self, deliver: Deliver) -> None:
        deliver(LinkState(True, f"playing {self.name}"))
        started = asyncio.get_running_loop().time()
        for message in self.messages:
            if self.speed:
                wait = started + message.at / self.speed - asyncio.get_running_loop().time()
                if wait > 0:
                    await asyncio.sleep(wait)
            body = message.payload
            if body is not None and body.get("v") != EVENT_VERSION:
                continue
            where = split_topic(self.prefix, message.topic)
            if where is not None:
                deliver(BusEvent(where[0], where[1], body))
        self.played.set()
        await asyncio.Event().wait()  # a recording ends; the console stays

    async def send(self, appliance: str, suffix: str, payload: dict[str, Any]) -> None:
        self.sent.append((f"{self.prefix}/{appliance}/{suffix}", payload))
