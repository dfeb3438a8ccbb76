"""The operator's side of approvals over MQTT (SPEC §3 and §8, docs/events.md).

``sqlgate approvals`` is short-lived: it connects with the ``[bus]`` credentials of an
operator's configuration, reads the retained requests, and for a decision publishes
``approvals/<id>/decision`` and watches the request until the gateway clears it.

- Pending requests are the retained messages on ``<prefix>/<appliance>/approvals/<id>``.
  After the subscription, a second subscription (to the ``status`` topics) is made: the
  broker answers it after it has sent the retained requests of the first, so the burst is
  over once that answer and a short quiet spell have passed (at most ``LIST_WAIT_S``).
- A decision carries the operator's token. The gateway verifies it; here it is read only
  to fill in the ``operator`` name (``identity.username_claim``, unverified) and is never
  printed or logged. The request ends when the gateway clears the retained request (an
  empty message); how it ended is the ``approval`` record the gateway then publishes on
  ``sessions/<session>/approvals``: the decision counted only when that record is this
  operator's verdict (another operator may have decided first, the session or the
  gateway may have ended). When the gateway publishes ``alerts``, a rejected decision's
  reason is reported at once; otherwise the decision is given ``DECISION_WAIT_S`` to
  count.

Every problem is an ``OperatorError``: one line for the user and the exit status
(1: the broker or the gateway said no, 2: bad input).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiomqtt
import jwt
from paho.mqtt.reasoncodes import ReasonCode

from appliance.config import BusConfig
from appliance.shown import BLANKS, as_sent, shown, statement_lines, unseen

__all__ = [
    "DECISION_WAIT_S",
    "LIST_WAIT_S",
    "OperatorError",
    "Request",
    "decide",
    "decision_body",
    "format_request",
    "format_whole",
    "list_pending",
    "offline_notes",
    "read_token",
    "read_token_for",
    "show_pending",
    "token_user",
]

LIST_WAIT_S = 1.0
"""The longest ``list`` keeps listening once the retained requests have been read."""

DECISION_WAIT_S = 5.0
"""How long a decision is given to count (the gateway clears the request)."""

QUIET_S = 0.15
"""After the broker's answer that ends the retained burst: no message for this long."""

ALERT_GRACE_S = 1.0
"""After an alert that a decision was rejected: how long the request may still clear."""

RECORD_GRACE_S = 3.0
"""After the request is cleared: how long its ``approval`` record may take to come (the
gateway publishes it once it is in the ledger)."""

MAX_TOKEN_BYTES = 65536
REQUEST_VERSION = 1
_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")

_quiet_log = logging.getLogger("sqlgate.operator.mqtt")
_quiet_log.addHandler(logging.NullHandler())
_quiet_log.propagate = False  # the command's output is its own: no library chatter


class OperatorError(Exception):
    """A problem to report in one line; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    """A pending approval request, as the gateway published it."""

    id: str
    appliance: str
    identity: str
    target: str
    sql: str
    sql_sha256: str
    requested_at: float
    expires_at: float
    rule: str = "?"
    reason: str = ""
    sql_truncated: bool = False  # ``sql`` is the start of the statement only
    session: str = "?"  # the held session: its ``approval`` record says how it ended
    sent: str | None = None  # its bytes, where ``sql`` as UTF-8 is not them (as_sent)
    db: str | None = None  # the schema it runs in; None: not known (docs/events.md)
    rows_estimate: int | None = None  # rows an UPDATE or DELETE would touch, if counted
    gateway_offline: bool = False  # its gateway's retained status says offline

    @classmethod
    def from_message(cls, appliance: str, request_id: str, payload: bytes) -> Request | None:
        """The request in a retained message; None for a cleared or unreadable one."""
        body = _json_object(payload)
        if body is None or body.get("v") != REQUEST_VERSION:
            return None
        sql_sha256 = body.get("sql_sha256")
        if not isinstance(sql_sha256, str):
            return None

        def text(key: str) -> str:
            value = body.get(key)
            return value if isinstance(value, str) else "?"

        def number(key: str) -> float:
            value = body.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return 0.0
            try:
                number = float(value)
            except OverflowError:  # an int past a float's range
                return 0.0
            return number if math.isfinite(number) else 0.0

        def count(key: str) -> int | None:
            value = body.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return cls(
            id=request_id,
            appliance=appliance,
            identity=text("identity"),
            target=text("target"),
            sql=text("sql"),
            sql_sha256=sql_sha256,
            requested_at=number("requested_at"),
            expires_at=number("expires_at"),
            rule=text("rule"),
            reason=text("reason"),
            sql_truncated=body.get("sql_truncated") is True,
            session=text("session"),
            sent=as_sent(body.get("sql_hex"), body.get("sql_charset")),
            db=body["db"] if isinstance(body.get("db"), str) else None,
            rows_estimate=count("rows_estimate"),
        )


# -- input ------------------------------------------------------------------------------


def check_level(text: str, what: str) -> str:
    """An appliance name or request id: one topic level, no wildcards (exit 2 if not)."""
    if not _ID_RE.fullmatch(text):
        raise OperatorError(
            f"{what} '{_printable(text)}': expected letters, digits, '.', '_' or '-' "
            "(one MQTT topic level)",
            2,
        )
    return text


def read_token(path: str | os.PathLike[str]) -> str:
    """The operator's token from ``path``, surrounding whitespace removed."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise OperatorError(f"--token-file {path}: cannot read the file: {why}", 2) from None
    if len(data) > MAX_TOKEN_BYTES:
        raise OperatorError(f"--token-file {path}: larger than a token can be", 2)
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise OperatorError(f"--token-file {path}: not a JWT (it is not ASCII text)", 2) from None
    if not token:
        raise OperatorError(f"--token-file {path}: the file is empty", 2)
    return token


def token_user(token: str, claim: str, source: str = "the token") -> str:
    """The ``claim`` of ``token`` (its user name), read WITHOUT verifying the signature:
    only to name the operator in the decision, which the gateway verifies."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:  # its text could quote the token: not repeated
        raise OperatorError(
            f"{source} is not a JWT (three base64url parts: header.payload.signature)", 2
        ) from None
    value = claims.get(claim)
    if not isinstance(value, str) or not value:
        raise OperatorError(
            f"{source} has no '{claim}' claim with the operator's name (identity.username_claim)",
            2,
        )
    expires = claims.get("exp")
    if isinstance(expires, int | float) and not isinstance(expires, bool):
        if expires < time.time() - 60:
            raise OperatorError(f"{source} has expired: get a new one", 2)
    return value


# -- output -----------------------------------------------------------------------------


MAX_FOREIGN_NAMED = 20
"""``approvals show`` names at most this many distinct characters outside ASCII."""


def _printable(text: str) -> str:
    """One line, no control characters (a statement must not drive the terminal); a line
    break shows as ⏎ (it ends a ``--`` comment: what follows runs), runs of the server's
    blanks as one space, any other character that would not show as itself escaped."""
    lines = (BLANKS.sub(" ", line).strip(" ") for line in text.split("\n"))
    return shown(" \u23ce ".join(line for line in lines if line))


def _foreign(text: str) -> str | None:
    """The distinct characters outside ASCII in ``text`` (which may look like others: a
    Cyrillic ``о``), named; None when it has none."""
    seen = sorted({c for c in text if not c.isascii() and not unseen(c, "")})
    if not seen:
        return None
    named = [
        f"{c} U+{ord(c):04X} {unicodedata.name(c, 'UNNAMED')}" for c in seen[:MAX_FOREIGN_NAMED]
    ]
    more = len(seen) - MAX_FOREIGN_NAMED
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


def format_request(request: Request, now: float, width: int = 200) -> str:
    """``ID  IDENTITY  APPLIANCE/TARGET  Ns left  STATEMENT`` on one line; the statement
    is cut (``...``) so the line fits ``width`` (``format_whole`` shows all of it)."""
    left = max(0, math.ceil(request.expires_at - now))
    head = (
        f"{_printable(request.id)}  {_printable(request.identity)}  "
        f"{_printable(request.appliance)}/{_printable(request.target)}  {left}s left  "
    )
    sql = _printable(request.sql)
    room = max(width - len(head), 16)
    if len(sql) > room:
        sql = sql[: room - 3] + "..."
    return head + sql


def offline_notes(requests: list[Request]) -> list[str]:
    """One line for each gateway of ``requests`` that is offline: its requests are left
    from a run that ended (the gateway clears them when it starts again)."""
    gone = sorted({r.appliance for r in requests if r.gateway_offline})
    return [
        f"note: gateway '{_printable(name)}' is offline: its requests listed are left from a "
        "run that ended, and nobody can decide them"
        for name in gone
    ]


def _statement(sql: str) -> str:
    """A statement line by line, its tabs kept, folded as ``sqlgate replay`` folds it: a
    run of more than 16 blanks as one marker saying how many (300 spaces pushed an
    ``OR 1=1`` past the terminal's edge, or a pager's that does not wrap), two blank
    lines or more as one line saying how many (hundreds scrolled the statement's start
    and the lines above it, who, where, which rule, off the terminal)."""
    return "\n".join(
        "".join(piece if marker else shown(piece, keep="\t") for piece, marker in line)
        for line in statement_lines(sql)
    )


def format_whole(request: Request, now: float) -> str:
    """The request with its whole statement, as it came, last: its lines as they are
    (a line break ends a ``--`` comment, so what follows shows on a line of its own),
    every other character that would not show as itself escaped (a control character
    must not drive the terminal, a U+00A0 must not pass for a blank), and the characters
    outside ASCII named before it (a Cyrillic ``о`` passes for an ``o``)."""
    left = max(0, math.ceil(request.expires_at - now))
    foreign = _foreign(request.sql)
    note = f"outside ASCII (each may look like another): {foreign}\n" if foreign else ""
    sql = _statement(request.sql)
    if request.sql_truncated:
        what = (
            f"statement: ONLY ITS FIRST {len(request.sql):,} CHARACTERS came (the gateway "
            "cut it; the ledger has it whole): do not approve what you have not read"
        )
    else:
        what = f"statement, whole ({len(request.sql):,} characters)"
    schema = (
        f"schema {_printable(request.db)}"
        if request.db is not None
        else "schema NOT KNOWN (sent before a USE was answered: it may run in either)"
    )
    rows = (
        f"rows it would touch: {request.rows_estimate:,} (counted before approval)\n"
        if request.rows_estimate is not None
        else ""
    )
    offline = (
        "gateway OFFLINE: this request is left from a run that ended; nobody can decide it\n"
        if request.gateway_offline
        else ""
    )
    return (
        f"id {_printable(request.id)}\n"
        f"{offline}"
        f"from {_printable(request.identity)} on "
        f"{_printable(request.appliance)}/{_printable(request.target)}, {schema}, "
        f"{left}s left\n"
        f"rule {_printable(request.rule)}: {_printable(request.reason)}\n"
        f"{rows}"
        f"sha256 {_printable(request.sql_sha256)}\n"
        f"{note}{what}:\n{sql}" + (f"\n{request.sent}" if request.sent is not None else "")
    )


# -- the connection ---------------------------------------------------------------------


class _Connection:
    """One short-lived MQTT session; messages arrive in ``inbox`` (None: connection lost)."""

    def __init__(self, client: aiomqtt.Client, config: BusConfig) -> None:
        self.client = client
        self.config = config
        self.inbox: asyncio.Queue[aiomqtt.Message | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        try:
            async for message in self.client.messages:
                self.inbox.put_nowait(message)
        except aiomqtt.MqttError:
            pass
        self.inbox.put_nowait(None)

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    def lost(self) -> OperatorError:
        return OperatorError(f"lost the connection to the MQTT broker at {self.config.url}")

    async def subscribe(self, topic: str, qos: int, *, required: bool = True) -> None:
        try:
            granted = await self.client.subscribe(topic, qos=qos)
        except aiomqtt.MqttError as exc:
            raise OperatorError(
                f"the MQTT broker at {self.config.url} did not answer a subscription: {exc}"
            ) from None
        refused = any(
            code.is_failure if isinstance(code, ReasonCode) else code >= 0x80 for code in granted
        )
        if refused and required:
            raise OperatorError(
                f"the MQTT broker at {self.config.url} refused user "
                f"'{self.config.username}' the subscription to {topic} (see its ACL)"
            )

    async def publish(self, topic: str, payload: bytes) -> None:
        try:
            await self.client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError as exc:
            raise OperatorError(
                f"the MQTT broker at {self.config.url} did not take the decision: {exc}"
            ) from None

    def cleared(self, request: Request) -> bool:
        """Whether the messages received so far say ``request`` was cleared (the others
        are dropped: only what comes after a decision is about it)."""
        topic = f"{self.config.topic_prefix}/{request.appliance}/approvals/{request.id}"
        gone = False
        while not self.inbox.empty():
            message = self.inbox.get_nowait()
            if message is None:
                self.inbox.put_nowait(None)
                raise self.lost()
            if message.topic.value == topic and not message.payload:
                gone = True
        return gone

    async def next(self, timeout_s: float) -> aiomqtt.Message | None:
        """The next message, or None when there is none within ``timeout_s``."""
        try:
            message = await asyncio.wait_for(self.inbox.get(), max(timeout_s, 0.0))
        except TimeoutError:
            return None
        if message is None:
            self.inbox.put_nowait(None)
            raise self.lost()
        return message


def _password(config: BusConfig) -> str | None:
    if config.password is None:
        return None
    try:
        return config.password.decode("utf-8")
    except UnicodeDecodeError:
        raise OperatorError(f"{config.password_file}: the MQTT password is not UTF-8", 2) from None


@contextlib.asynccontextmanager
async def _connect(config: BusConfig, timeout_s: float = 5.0) -> AsyncIterator[_Connection]:
    """Connect (clean session, no will); broker down or refusal: OperatorError."""
    client = aiomqtt.Client(
        config.host,
        config.port,
        username=config.username,
        password=_password(config),
        identifier=f"sqlgate-operator-{os.urandom(4).hex()}",
        logger=_quiet_log,
        timeout=timeout_s,
        keepalive=30,
        tls_context=config.tls_context(),
    )
    try:
        await client.__aenter__()
    except aiomqtt.MqttCodeError as exc:  # a CONNACK that says no
        who = f" as '{config.username}'" if config.username else " without credentials"
        raise OperatorError(
            f"the MQTT broker at {config.url} refused the connection{who}: {exc}"
        ) from None
    except aiomqtt.MqttError as exc:
        raise OperatorError(
            f"cannot connect to the MQTT broker at {config.url}: {exc or 'no answer'}"
        ) from None
    connection = _Connection(client, config)
    connection.start()
    try:
        yield connection
    finally:
        await connection.stop()
        with contextlib.suppress(aiomqtt.MqttError, OSError):
            await client.__aexit__(None, None, None)


def _split(config: BusConfig, topic: str) -> tuple[str, list[str]] | None:
    """``(appliance, rest)`` of a topic under the prefix, or None."""
    start = config.topic_prefix + "/"
    if not topic.startswith(start):
        return None
    appliance, *rest = topic[len(start) :].split("/")
    return appliance, rest


async def _retained(
    connection: _Connection, pattern: str, appliance: str, wait_s: float
) -> dict[tuple[str, str], Request]:
    """The requests retained under ``pattern`` (``<prefix>/<appliance>/approvals/<id>``)."""
    config = connection.config
    await connection.subscribe(pattern, 0)
    # The answer to a second subscription comes after the first one's retained burst.
    await connection.subscribe(f"{config.topic_prefix}/{appliance}/status", 0, required=False)
    found: dict[tuple[str, str], Request] = {}
    offline: set[str] = set()  # appliances whose status (their last will) says offline
    # The burst has been received: all of it is read, however long subscribing took;
    # ``wait_s`` only bounds how long later messages keep the listing open.
    deadline = time.monotonic() + wait_s
    while True:
        message = await connection.next(QUIET_S)
        if message is None:
            break
        parts = _split(config, message.topic.value)
        if parts is not None and parts[1] == ["status"]:
            if _state(message.payload) == "offline":
                offline.add(parts[0])
            else:
                offline.discard(parts[0])
            continue
        if parts is None or len(parts[1]) != 2 or parts[1][0] != "approvals":
            continue
        key = (parts[0], parts[1][1])
        payload = message.payload if isinstance(message.payload, bytes) else b""
        request = Request.from_message(key[0], key[1], payload)
        if request is None:
            found.pop(key, None)
        else:
            found[key] = request
        if time.monotonic() >= deadline:
            break
    return {
        key: replace(request, gateway_offline=True) if key[0] in offline else request
        for key, request in found.items()
    }


def _json_object(payload: Any) -> dict[str, Any] | None:
    """A message's payload as a JSON object; None when empty or not one (the broker's
    messages come from anyone with a login: none of them may end a command)."""
    if not isinstance(payload, bytes) or not payload:
        return None
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _state(payload: Any) -> str | None:
    """The ``state`` of a gateway's retained ``status`` message (docs/events.md)."""
    body = _json_object(payload)
    state = body.get("state") if body is not None else None
    return state if isinstance(state, str) else None


# -- the commands -----------------------------------------------------------------------


async def list_pending(
    config: BusConfig, appliance: str | None = None, wait_s: float = LIST_WAIT_S
) -> list[Request]:
    """Pending requests of every appliance under the prefix (or only ``appliance``),
    oldest first."""
    where = "+" if appliance is None else check_level(appliance, "--appliance")
    async with _connect(config) as connection:
        pattern = f"{config.topic_prefix}/{where}/approvals/+"
        found = await _retained(connection, pattern, where, wait_s)
    return sorted(found.values(), key=lambda r: (r.requested_at, r.appliance, r.id))


async def _pending(connection: _Connection, request_id: str) -> Request:
    """The pending request ``request_id`` (one topic level): OperatorError when no
    gateway, or more than one, holds it."""
    config = connection.config
    pattern = f"{config.topic_prefix}/+/approvals/{request_id}"
    found = await _retained(connection, pattern, "+", LIST_WAIT_S)
    if not found:
        raise OperatorError(f"no pending approval {request_id}")
    if len(found) > 1:
        names = ", ".join(sorted(appliance for appliance, _ in found))
        raise OperatorError(f"approval {request_id} is pending on several gateways: {names}")
    return next(iter(found.values()))


async def show_pending(config: BusConfig, request_id: str) -> Request:
    """The pending request ``request_id``, with its statement as the gateway sent it."""
    check_level(request_id, "ID")
    async with _connect(config) as connection:
        return await _pending(connection, request_id)


async def decide(
    config: BusConfig,
    request_id: str,
    decision: str,
    token: str,
    operator: str,
    reason: str | None = None,
    wait_s: float = DECISION_WAIT_S,
    grant_minutes: int = 0,
) -> Request:
    """Send ``approve`` or ``deny`` for the pending request ``request_id`` and wait until
    the gateway clears it; OperatorError when it is unknown or the decision did not count."""
    check_level(request_id, "ID")
    async with _connect(config) as connection:
        request = await _pending(connection, request_id)
        if request.gateway_offline:  # nobody would take the decision (nor its token) up
            raise OperatorError(
                f"approval {request_id} is left from a run of gateway "
                f"'{_printable(request.appliance)}' that ended (its status is offline): "
                "nobody can decide it; the gateway clears it when it starts again"
            )
        base = f"{config.topic_prefix}/{request.appliance}"
        # Best-effort: a gateway that publishes alerts says at once why a decision failed,
        # and the approval record how the request ended.
        await connection.subscribe(f"{base}/alerts", 0, required=False)
        if _ID_RE.fullmatch(request.session):
            await connection.subscribe(
                f"{base}/sessions/{request.session}/approvals", 0, required=False
            )
        body = decision_body(decision, request.sql_sha256, operator, token, reason, grant_minutes)
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        if connection.cleared(request):
            raise OperatorError(f"approval {request_id} is no longer pending")
        await connection.publish(f"{base}/approvals/{request_id}/decision", payload)
        rejected = await _settled(connection, request, wait_s, decision, operator)
    if rejected is not None:
        raise OperatorError(
            f"the gateway did not accept the decision on {request_id}: {_printable(rejected)}"
        )
    return request


def decision_body(
    decision: str,
    sql_sha256: str,
    operator: str,
    token: str,
    reason: str | None = None,
    grant_minutes: int = 0,
) -> dict[str, Any]:
    """The ``approvals/<id>/decision`` payload (docs/events.md) for ``approve`` or
    ``deny`` of the statement whose SHA-256 is ``sql_sha256``."""
    if decision not in ("approve", "deny"):
        raise ValueError(f"decision {decision!r}: expected 'approve' or 'deny'")
    body: dict[str, Any] = {
        "v": REQUEST_VERSION,
        "decision": decision,
        "operator": operator,
        "token": token,
        "sql_sha256": sql_sha256,
    }
    if reason is not None:
        body["reason"] = reason
    if grant_minutes:
        body["grant_minutes"] = grant_minutes
    return body


async def _settled(
    connection: _Connection,
    request: Request,
    wait_s: float,
    decision: str = "approve",
    operator: str = "",
) -> str | None:
    """Wait for the request to end: None when the decision counted, otherwise why not
    (OperatorError when it ended otherwise). A cleared request is not enough: it is
    cleared however it ends (another operator's decision, the session or the gateway
    ending), so its ``approval`` record is waited for a moment more."""
    config = connection.config
    deadline = time.monotonic() + wait_s
    alert: str | None = None
    cleared = False
    while (remaining := deadline - time.monotonic()) > 0:
        message = await connection.next(remaining)
        if message is None:
            break
        parts = _split(config, message.topic.value)
        if parts is None or parts[0] != request.appliance:
            continue
        rest = parts[1]
        if rest == ["approvals", request.id]:
            if message.payload or cleared:
                continue  # the request itself again
            cleared = True
            deadline = min(deadline, time.monotonic() + RECORD_GRACE_S)
            continue
        if rest == ["sessions", request.session, "approvals"]:
            ended = _approval_outcome(message.payload, request.id)
            if ended is None:
                continue
            verdict, approver, said = ended
            wanted = "approved" if decision == "approve" else "denied"
            if verdict == wanted and approver == operator:
                return None
            if alert is not None:
                return alert
            ended_how = f"{verdict} by {approver}" if approver else verdict
            return f"the request ended otherwise: {ended_how}" + (f" ({said})" if said else "")
        if rest == ["alerts"] and alert is None:
            why = _alert_reason(message.payload, request.id)
            if why is not None:
                alert = why
                deadline = min(deadline, time.monotonic() + ALERT_GRACE_S)
    if alert is not None:
        return alert
    if cleared:  # and no approval record came: not known to have counted
        if 0 < request.expires_at <= time.time():
            raise OperatorError(
                f"approval {request.id} ended at its expiry time: the decision may not "
                "have counted (the ledger's approval record says)"
            )
        raise OperatorError(
            f"approval {request.id} was cleared, but its approval record did not come within "
            f"{RECORD_GRACE_S:g}s: the decision may not have counted (a gateway that cannot "
            "write its ledger refuses the statement; it did not run). The ledger's approval "
            "record says: sqlgate ledger export --kind approval"
        )
    return (
        f"it is still pending after {wait_s:g}s. Likely: the token is not valid for this "
        "gateway, its user is not in [approvals] approver_groups, it is the user's own "
        "statement, or the token or the request expired"
    )


def _approval_outcome(payload: Any, request_id: str) -> tuple[str, str, str] | None:
    """``(decision, approver, reason)`` of the ``approval`` record of ``request_id``."""
    body = _json_object(payload)
    if (
        body is None
        or body.get("v") != REQUEST_VERSION
        or body.get("kind") != "approval"
        or body.get("request") != request_id
    ):
        return None

    def text(key: str) -> str:
        value = body.get(key)
        return value if isinstance(value, str) else ""  # printed through _printable

    return text("decision"), text("approver"), text("reason")


def _alert_reason(payload: Any, request_id: str) -> str | None:
    """The reason of an ``approval_decision_rejected`` alert about ``request_id``."""
    body = _json_object(payload)
    if (
        body is None
        or body.get("v") != REQUEST_VERSION
        or body.get("alert") != "approval_decision_rejected"
        or body.get("request") != request_id
    ):
        return None
    reason = body.get("reason")
    return reason if isinstance(reason, str) and reason else "the decision was rejected"


def read_token_for(path: str | Path, claim: str) -> tuple[str, str]:
    """The token in ``path`` and the operator name it carries (see ``token_user``)."""
    token = read_token(path)
    return token, token_user(token, claim, f"--token-file {path}")
