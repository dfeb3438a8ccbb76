"""What the console knows: sessions, their statements, pending approvals, alerts, the
gateways and their ledger heads, folded from bus events and ledger records.

Pure: no Textual, no MQTT, no clock of its own. The same ledger record the gateway
commits is what arrives on ``sessions/...`` and ``alerts`` (docs/events.md), so history
read from the ledger and live events go through one ``record`` method. Every collection
is bounded, and duplicates (the bus delivers at least once) are recognised by
``(appliance, seq, hash)``: a gateway deployed again with a fresh ledger under the same
name counts from seq 1 again, with other hashes.
"""

from __future__ import annotations

import collections
import enum
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from appliance.shown import BLANKS, as_sent, counted, escape, statement_lines, unseen

__all__ = [
    "Alert",
    "GONE",
    "Change",
    "Console",
    "Gateway",
    "Piece",
    "Request",
    "SessionState",
    "SessionView",
    "StatementView",
    "folded_pieces",
    "pieces",
    "printable",
]

MAX_SESSIONS = 500
"""Ended sessions beyond this many are forgotten, oldest first (live ones never)."""
MAX_STATEMENTS = 1000
"""Statements kept per session (the ledger keeps them all)."""
MAX_ALERTS = 1000
MAX_SEEN = 100_000

REQUEST_VERSION = 1
EXPIRED_GRACE_S = 5.0
"""A request is dropped this long after its ``expires_at`` (the gateway's clock), whether
or not its clearing arrived: the gateway has answered it by then."""
GONE = "no longer live on its gateway"
"""Why a session ended on the console when its gateway no longer retains its start
(docs/events.md): it ended while the console was away, or its end was not written."""


class Change(enum.Flag):
    """What an event changed, so the screen showing it redraws only then."""

    NONE = 0
    SESSIONS = enum.auto()
    STATEMENTS = enum.auto()
    APPROVALS = enum.auto()
    NEW_APPROVAL = enum.auto()  # a request this console had not seen: draw attention
    ALERTS = enum.auto()
    GATEWAYS = enum.auto()
    LEDGER = enum.auto()  # records read from the ledger file for the ledger screen


class SessionState(enum.StrEnum):
    ACTIVE = "active"
    WAITING = "waiting"  # a statement is held for approval
    ENDED = "ended"


class Piece(enum.Enum):
    """How a character of a statement is shown."""

    PLAIN = enum.auto()
    ESCAPED = enum.auto()  # as ``\\xNN``/``\\uNNNN``: it would not show as itself
    FOREIGN = enum.auto()  # outside ASCII: shown, but it may look like another
    BREAK = enum.auto()  # " ⏎ ": a line break
    FOLD = enum.auto()  # "⟨300 spaces⟩": a long run of blanks, or of blank lines


def pieces(text: str) -> Iterator[tuple[str, Piece]]:
    """``text`` as shown, in runs: the server's blanks as one space, each line break as
    ⏎ (it ends a ``--`` or ``#`` comment, so what follows it runs, and must not read as
    part of the comment), every character that would not show as itself escaped."""
    lines = [BLANKS.sub(" ", line).strip(" ") for line in text.split("\n")]
    first = True
    for line in lines:
        if not line:
            continue
        if not first:
            yield " \u23ce ", Piece.BREAK
        first = False
        yield from _line(line)


def folded_pieces(text: str) -> Iterator[tuple[str, Piece]]:
    """``text`` as written, in runs: its blanks as they came but each run of more than
    ``FOLD`` of them (and two blank lines or more) as one marker saying how many, as
    ``sqlgate replay`` shows it; each line break as ⏎, every character that would not
    show as itself escaped."""
    for n, line in enumerate(statement_lines(text)):
        if n:
            yield " \u23ce ", Piece.BREAK
        for piece, marker in line:
            if marker:
                yield piece, Piece.FOLD
            else:
                yield from _line(piece)


def _line(line: str) -> Iterator[tuple[str, Piece]]:
    if line.isascii() and line.isprintable():  # most statements: shown as they are
        yield line, Piece.PLAIN
        return
    run: list[str] = []
    kind = Piece.PLAIN
    after = ""  # the last character shown
    for c in line:
        if unseen(c, after):
            shown, now = escape(c), Piece.ESCAPED
        else:
            shown, now = c, (Piece.PLAIN if c.isascii() else Piece.FOREIGN)
        if now is not kind and run:
            yield "".join(run), kind
            run = []
        kind = now
        run.append(shown)
        after = shown[-1]
    if run:
        yield "".join(run), kind


def printable(text: object, limit: int | None = None) -> str:
    """One line without control characters: a statement must not drive the terminal,
    nor show other than the server reads it (``pieces``)."""
    raw = str(text)
    cut = limit is not None and len(raw) > 4 * limit + 64  # a 1 MiB statement: cut first
    if cut:
        assert limit is not None
        raw = raw[: 4 * limit + 64]
    if raw.isascii() and raw.isprintable() and "  " not in raw and raw.strip(" ") == raw:
        clean = raw  # what pieces() would make of it (most cells): at a fraction of the cost
    else:
        clean = "".join(run for run, _ in pieces(raw))
    if limit is not None and (cut or len(clean) > limit):
        return clean[: max(limit - 1, 0)] + "\u2026"
    return clean


def _text(body: Mapping[str, Any], key: str, default: str = "") -> str:
    value = body.get(key)
    return value if isinstance(value, str) else default


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(slots=True)
class StatementView:
    """One statement of a session, with its result once that arrives."""

    statement_seq: int | None
    ts: str
    command: str
    sql: str
    decision: str
    rule: str | None = None
    reason: str | None = None
    part: str | None = None
    sql_truncated: bool = False  # ``sql`` is the start of the statement only
    rows: int | None = None
    affected: int | None = None
    error: str | None = None
    duration_ms: float | None = None
    approver: str | None = None
    done: bool = False  # its result record arrived
    number: int = 0  # its place in the session as the console saw it (1, 2, ...): a key

    @property
    def outcome(self) -> str:
        """What came back, short: ``12 rows``, ``3 affected``, ``ERR 1227``, or ``-``.
        A write's result has ``rows`` 0 and the rows it changed in ``affected``."""
        if self.error:
            return f"ERR {self.error}"
        if self.affected and not self.rows:
            return f"{self.affected} affected"
        if self.rows is not None:
            return counted(self.rows, ("row", "rows"))
        if self.affected is not None:
            return f"{self.affected} affected"
        return "ok" if self.done else "-"


@dataclass(slots=True)
class SessionView:
    """A session as the operator sees it."""

    appliance: str
    session: str
    identity: str = "?"
    client: str = "?"
    target: str = "?"
    db: str = ""
    started: str = ""  # ts of its first record seen
    started_at: float | None = None  # epoch seconds, for the duration
    ended_at: float | None = None
    end_reason: str | None = None
    statements: int = 0
    blocked: int = 0
    waiting: int = 0  # statements held for approval now
    history: collections.deque[StatementView] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_STATEMENTS)
    )
    by_seq: dict[int, StatementView] = field(default_factory=dict)
    order: int = 0  # when the console first saw it (newest first)
    run: str | None = None  # the gateway's run when the console first saw it, if known
    shown: int = 0  # statement rows added to ``history`` so far (the last one's number)
    gone: bool = False  # ended only because the broker no longer retained its start

    @property
    def key(self) -> tuple[str, str]:
        return (self.appliance, self.session)

    @property
    def state(self) -> SessionState:
        if self.ended_at is not None:
            return SessionState.ENDED
        return SessionState.WAITING if self.waiting else SessionState.ACTIVE

    def duration_s(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else now
        return max(0.0, end - self.started_at)


@dataclass(frozen=True, slots=True)
class Request:
    """A pending approval request (docs/events.md, ``approvals/<id>``)."""

    appliance: str
    id: str
    session: str
    identity: str
    client: str
    target: str
    db: str | None  # None: not known (sent before a USE was answered, docs/events.md)
    sql: str
    rule: str
    reason: str
    sql_sha256: str
    rows_estimate: int | None
    fingerprint: str | None
    requested_at: float
    expires_at: float
    too_large: int | None = None  # a placeholder: the request's size, not read
    sql_truncated: bool = False  # ``sql`` is the start of the statement only
    sent: str | None = None  # its bytes, where ``sql`` as UTF-8 is not them (as_sent)

    @property
    def key(self) -> tuple[str, str]:
        return (self.appliance, self.id)

    def seconds_left(self, now: float) -> int:
        return max(0, math.ceil(self.expires_at - now))

    @classmethod
    def from_payload(
        cls, appliance: str, request_id: str, body: Mapping[str, Any]
    ) -> Request | None:
        if body.get("v") != REQUEST_VERSION or not isinstance(body.get("sql_sha256"), str):
            return None
        fingerprint = body.get("fingerprint")
        return cls(
            appliance=appliance,
            id=request_id,
            session=_text(body, "session"),
            identity=_text(body, "identity", "?"),
            client=_text(body, "client", "?"),
            target=_text(body, "target", "?"),
            db=body["db"] if isinstance(body.get("db"), str) else None,
            sql=_text(body, "sql"),
            rule=_text(body, "rule", "?"),
            reason=_text(body, "reason"),
            sql_sha256=_text(body, "sql_sha256"),
            rows_estimate=_int(body, "rows_estimate"),
            fingerprint=fingerprint if isinstance(fingerprint, str) else None,
            requested_at=_number(body, "requested_at") or 0.0,
            expires_at=_number(body, "expires_at") or 0.0,
            sql_truncated=body.get("sql_truncated") is True,
            sent=as_sent(body.get("sql_hex"), body.get("sql_charset")),
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an operator must look at: a gateway's ``alert`` record, or the
    console's own finding (a gateway gone offline, a ledger that does not verify)."""

    appliance: str
    ts: str
    alert: str
    reason: str
    session: str | None = None
    request: str | None = None
    source: str = "gateway"  # or "console"


@dataclass(slots=True)
class Gateway:
    """A gateway seen on the bus."""

    name: str
    online: bool = False
    head: dict[str, Any] | None = None  # its latest signed ledger head (``checkpoints``)
    run: str | None = None  # this start of the gateway (``status``)
    since: float | None = None  # when it began: its sessions started after
    retains_sessions: bool = False  # its live sessions' starts are retained (``status``)


def epoch(ts: str) -> float | None:
    """Seconds since the epoch of a ledger ``ts`` (``2025-06-01T10:15:02.118000Z``)."""
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Console:
    """The console's state. Feed it with ``event`` (bus) and ``record`` (ledger); each
    returns the ``Change`` it made."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.gateways: dict[str, Gateway] = {}
        self.sessions: dict[tuple[str, str], SessionView] = {}
        self.requests: dict[tuple[str, str], Request] = {}
        self.alerts: collections.deque[Alert] = collections.deque(maxlen=MAX_ALERTS)
        self.decided: set[tuple[str, str]] = set()  # requests this console answered
        self._unconfirmed: set[tuple[str, str]] = set()  # not sent again since a reconnect
        self._decided_gone: collections.deque[tuple[str, str]] = collections.deque(maxlen=64)
        self._seen: set[tuple[str, int, str | None]] = set()
        self._seen_order: collections.deque[tuple[str, int, str | None]] = collections.deque()
        # sessions whose start the broker sent since the last reconnect (retained or not)
        self._announced: set[tuple[str, str]] = set()
        self._reported: set[str] = set()  # gateways whose status it sent, likewise
        self._synced = False  # the broker has sent what it retains, on this connection
        self._order = 0
        self.unseen_alerts = 0  # alerts since the operator last looked at them

    # -- input -----------------------------------------------------------------------

    def event(
        self, appliance: str, path: tuple[str, ...], payload: dict[str, Any] | None
    ) -> Change:
        """A bus message on ``<prefix>/<appliance>/<path...>``; ``None``: an empty
        (cleared retained) payload."""
        if not path:
            return Change.NONE
        head = path[0]
        if head == "status" and len(path) == 1:
            return self._status(appliance, payload)
        if head == "checkpoints" and len(path) == 1:
            if payload is None:
                return Change.NONE
            self._gateway(appliance).head = dict(payload)
            return Change.GATEWAYS
        if head == "approvals" and len(path) == 2:
            return self._request(appliance, path[1], payload)
        change = Change.NONE
        if head == "sessions" and len(path) == 3 and path[2] == "start" and path[1]:
            change = self._announce(appliance, path[1], payload)
        if payload is None:
            return change
        if (head == "sessions" and len(path) == 3) or (head == "alerts" and len(path) == 1):
            if not isinstance(payload.get("kind"), str):
                return change
            body = {**payload, "appliance": _text(payload, "appliance", appliance)}
            return change | self.record(body)
        return Change.NONE

    def too_large(self, appliance: str, path: tuple[str, ...], size: int) -> Change:
        """A message on ``sessions/<session>/<kind>`` or ``approvals/<id>`` too large to
        read: a placeholder says so, rather than the statement or request vanishing."""
        what = f"{size:,} bytes, more than the console reads"
        if len(path) == 2 and path[0] == "approvals":
            key = (appliance, path[1])
            self._unconfirmed.discard(key)
            new = key not in self.requests
            self.requests[key] = Request(
                appliance=appliance,
                id=path[1],
                session="",
                identity="?",
                client="?",
                target="?",
                db="",
                sql=f"(a request of {what}: decide it with `sqlgate approvals`)",
                rule="?",
                reason="",
                sql_sha256="",
                rows_estimate=None,
                fingerprint=None,
                requested_at=self.clock(),
                expires_at=0.0,  # unknown: it goes when the gateway clears it
                too_large=size,
            )
            return Change.APPROVALS | (Change.NEW_APPROVAL if new else Change.NONE)
        if len(path) != 3 or path[0] != "sessions" or not path[1]:
            return Change.NONE
        session = self._session(appliance, path[1], {})
        kind = {"statements": "statement", "results": "result"}.get(path[2], path[2])
        self._append(
            session,
            StatementView(
                statement_seq=None,
                ts=self._now_ts(),
                command="?",
                sql=f"(a {kind} event of {what}: the ledger has it)",
                decision="?",
            ),
        )
        if kind == "statement":
            session.statements += 1
        return Change.STATEMENTS | Change.SESSIONS

    def records(self, records: Iterable[Mapping[str, Any]]) -> Change:
        change = Change.NONE
        for body in records:
            change |= self.record(body)
        return change

    def record(self, body: Mapping[str, Any]) -> Change:
        """A ledger record (from the ledger file or a bus event)."""
        appliance = _text(body, "appliance", "?")
        seq = _int(body, "seq")
        if seq is not None:
            digest = body.get("hash")
            seen = (appliance, seq, digest if isinstance(digest, str) else None)
            if seen in self._seen:
                return Change.NONE
            self._remember(seen)
        kind = body.get("kind")
        if kind == "alert":
            return self._alert(appliance, body)
        session_id = _text(body, "session")
        if not session_id or kind not in (
            "session_start",
            "statement",
            "result",
            "approval",
            "session_end",
        ):
            return Change.NONE
        session = self._session(appliance, session_id, body)
        ts = _text(body, "ts")
        if kind == "session_start":
            session.started = ts or session.started
            session.started_at = epoch(ts) if ts else session.started_at
            return Change.SESSIONS
        if kind == "session_end":
            session.ended_at = (epoch(ts) if ts else None) or session.started_at or 0.0
            session.end_reason = body.get("reason") if isinstance(body.get("reason"), str) else None
            session.waiting = 0
            session.gone = False  # ended for certain
            self._announced.discard(session.key)
            self._trim()
            return Change.SESSIONS | Change.STATEMENTS
        if kind == "statement":
            return self._statement(session, body)
        if kind == "result":
            return self._result(session, body)
        return self._approval(session, body)

    # -- the parts ---------------------------------------------------------------------

    def _remember(self, key: tuple[str, int, str | None]) -> None:
        self._seen.add(key)
        self._seen_order.append(key)
        if len(self._seen_order) > MAX_SEEN:
            self._seen.discard(self._seen_order.popleft())

    def _gateway(self, name: str) -> Gateway:
        gateway = self.gateways.get(name)
        if gateway is None:
            gateway = self.gateways[name] = Gateway(name)
        return gateway

    def _status(self, appliance: str, payload: dict[str, Any] | None) -> Change:
        gateway = self._gateway(appliance)
        self._reported.add(appliance)
        online = payload is not None and payload.get("state") == "online"
        change = Change.GATEWAYS
        if payload is not None:
            gateway.retains_sessions = payload.get("sessions_retained") is True
        run = payload.get("run") if payload is not None and online else None
        if isinstance(run, str) and run != gateway.run:
            assert payload is not None
            gateway.run, gateway.since = run, _number(payload, "since")
            change |= self._restarted(gateway)
        if gateway.online and not online:
            self._add_alert(
                Alert(
                    appliance,
                    self._now_ts(),
                    "gateway_offline",
                    f"gateway {appliance} went offline",
                    source="console",
                )
            )
            gateway.online = online
            return change | Change.ALERTS
        gateway.online = online
        return change

    def _restarted(self, gateway: Gateway) -> Change:
        """The gateway runs again (a new ``run``): the sessions of its earlier runs ended
        with them, whether or not their ``session_end`` was written (a crash) or seen."""
        since = gateway.since
        gone = [
            s
            for s in self.sessions.values()
            if s.appliance == gateway.name
            and s.ended_at is None
            and (
                (s.run is not None and s.run != gateway.run)
                or (since is not None and s.started_at is not None and s.started_at < since)
            )
        ]
        for session in gone:
            self._end(session, since if since is not None else self.clock(), "gateway restarted")
        self._trim()
        return Change.SESSIONS | Change.STATEMENTS if gone else Change.NONE

    def _end(self, session: SessionView, at: float, reason: str) -> None:
        """A session ended without its ``session_end`` (the console's finding)."""
        session.ended_at = max(at, session.started_at or at)
        session.end_reason = reason
        session.waiting = 0

    def _request(self, appliance: str, request_id: str, payload: dict[str, Any] | None) -> Change:
        key = (appliance, request_id)
        if payload is None:
            return self._drop([key])
        request = Request.from_payload(appliance, request_id, payload)
        if request is None:
            return Change.NONE
        self._unconfirmed.discard(key)
        new = key not in self.requests
        self.requests[key] = request
        return Change.APPROVALS | (Change.NEW_APPROVAL if new else Change.NONE)

    def _drop(self, keys: Iterable[tuple[str, str]]) -> Change:
        change = Change.NONE
        for key in keys:
            self._unconfirmed.discard(key)
            if self.requests.pop(key, None) is not None:
                if key in self.decided:
                    self.decided.discard(key)
                    self._decided_gone.append(key)
                change = Change.APPROVALS
        return change

    def was_decided(self, key: tuple[str, str]) -> bool:
        """Whether this console sent a decision for the request (pending or lately gone)."""
        return key in self.decided or key in self._decided_gone

    def expire(self) -> Change:
        """Drop the requests past their ``expires_at`` (and ``EXPIRED_GRACE_S``): the
        gateway has answered them, even if the console missed their clearing."""
        now = self.clock()
        return self._drop(
            [
                key
                for key, request in self.requests.items()
                if 0 < request.expires_at and request.expires_at + EXPIRED_GRACE_S < now
            ]
        )

    def reconnected(self) -> None:
        """The source connected again: every request is unconfirmed until the broker
        sends it again (retained while pending); ``synced`` drops the rest. So is every
        live session of a gateway that retains its sessions' starts."""
        self._unconfirmed = set(self.requests)
        self._announced = set()
        self._reported = set()
        self._synced = False

    @property
    def in_sync(self) -> bool:
        """The broker has sent what it retains, on the current connection."""
        return self._synced

    def disconnected(self) -> None:
        """The source lost the broker: nothing is judged by what it retains until the
        next ``synced``."""
        self._synced = False

    def synced(self) -> Change:
        """The broker has sent what it retains: an unconfirmed request was cleared while
        the console was away (answered, expired), and a live session whose start it did
        not send has ended (``_unannounced``)."""
        keys, self._unconfirmed = self._unconfirmed, set()
        self._synced = True
        return self._drop(keys) | self._unannounced()

    def history(self, records: Iterable[Mapping[str, Any]]) -> Change:
        """Records read from the ledger file at start. Once the broker has sent what it
        retains, a session they show live that it did not announce has ended."""
        change = self.records(records)
        if self._synced:
            change |= self._unannounced()
        return change

    def _announce(self, appliance: str, session_id: str, payload: dict[str, Any] | None) -> Change:
        """A message on ``sessions/<session>/start``: the gateway retains it while the
        session is live, and clears it (empty) once it is over. A start says the session
        is live, even one the console took for gone (``_unannounced``: a guess); a clear
        says it is over, for certain: a live one ends, and its ``session_end``, sent
        after the clear, then says why."""
        key = (appliance, session_id)
        session = self.sessions.get(key)
        if payload is not None:
            self._announced.add(key)
            if session is not None and session.gone:  # taken for gone too early
                session.gone = False
                session.ended_at = session.end_reason = None
                return Change.SESSIONS | Change.STATEMENTS
            return Change.NONE
        self._announced.discard(key)
        if session is None:
            return Change.NONE
        session.gone = False  # no start that comes late revives it
        if session.ended_at is not None:
            return Change.NONE
        self._end(session, self.clock(), GONE)
        self._trim()
        return Change.SESSIONS | Change.STATEMENTS

    def _unannounced(self) -> Change:
        """End the live sessions of the online gateways that retain their sessions'
        starts whose start the broker has not sent on this connection: they ended while
        the console was away (or their gateway could not write their end). A gateway
        that is offline, does not say it retains them, or whose status the broker has
        not sent on this connection (restarted, it lost what it retained; the gateway
        sends its status, then its starts, once it is back) is not judged."""
        gone = [
            s
            for s in self.sessions.values()
            if s.ended_at is None
            and s.key not in self._announced
            and s.appliance in self._reported
            and (gateway := self.gateways.get(s.appliance)) is not None
            and gateway.online
            and gateway.retains_sessions
        ]
        now = self.clock()
        for session in gone:
            self._end(session, now, GONE)
            session.gone = True
        self._trim()
        return Change.SESSIONS | Change.STATEMENTS if gone else Change.NONE

    def _alert(self, appliance: str, body: Mapping[str, Any]) -> Change:
        request = body.get("request")
        session = body.get("session")
        change = Change.ALERTS
        if (
            body.get("alert") == "session_kill_rejected"
            and isinstance(session, str)
            and _text(body, "reason").startswith("no live session")
        ):  # the operator's kill found nothing to end: it had ended unseen
            known = self.sessions.get((appliance, session))
            if known is not None and known.ended_at is None:
                self._end(known, self.clock(), "no live session on the gateway")
                self._trim()
                change |= Change.SESSIONS | Change.STATEMENTS
        self._add_alert(
            Alert(
                appliance=appliance,
                ts=_text(body, "ts"),
                alert=_text(body, "alert", "alert"),
                reason=_text(body, "reason"),
                session=session if isinstance(session, str) else None,
                request=request if isinstance(request, str) else None,
            )
        )
        return change

    def _add_alert(self, alert: Alert) -> None:
        self.alerts.appendleft(alert)
        self.unseen_alerts += 1

    def console_alert(self, alert: str, reason: str) -> Change:
        """A finding of the console itself (the ledger file does not verify...)."""
        self._add_alert(Alert("console", self._now_ts(), alert, reason, source="console"))
        return Change.ALERTS

    def _now_ts(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _session(self, appliance: str, session_id: str, body: Mapping[str, Any]) -> SessionView:
        key = (appliance, session_id)
        session = self.sessions.get(key)
        if session is None:
            self._order += 1
            gateway = self.gateways.get(appliance)
            session = self.sessions[key] = SessionView(
                appliance, session_id, order=self._order, run=gateway.run if gateway else None
            )
            ts = _text(body, "ts")
            session.started = ts
            session.started_at = epoch(ts) if ts else None
        # every record of a session carries who and where: the first one seen fills in
        for attr in ("identity", "client", "target"):
            value = body.get(attr)
            if isinstance(value, str) and value and getattr(session, attr) == "?":
                setattr(session, attr, value)
        db = body.get("db")
        if isinstance(db, str) and db:
            session.db = db
        return session

    def _statement(self, session: SessionView, body: Mapping[str, Any]) -> Change:
        seq = _int(body, "statement_seq")
        decision = _text(body, "decision", "?")
        reason = body.get("reason")
        rule = body.get("rule")
        part = body.get("part")
        known = session.by_seq.get(seq) if seq is not None else None
        if known is not None:  # a held statement's decision came as a second record
            self._settle(session, known, decision)
            return Change.STATEMENTS | Change.SESSIONS
        view = StatementView(
            statement_seq=seq,
            ts=_text(body, "ts"),
            command=_text(body, "command", "?"),
            sql=_text(body, "sql"),
            decision=decision,
            rule=rule if isinstance(rule, str) else None,
            reason=reason if isinstance(reason, str) else None,
            part=part if isinstance(part, str) else None,
            sql_truncated=body.get("sql_truncated") is True,
            approver=body.get("approver") if isinstance(body.get("approver"), str) else None,
        )
        self._append(session, view)
        session.statements += 1
        if decision == "blocked":
            session.blocked += 1
        elif decision == "pending":
            session.waiting += 1
        return Change.STATEMENTS | Change.SESSIONS

    @staticmethod
    def _append(session: SessionView, view: StatementView) -> None:
        session.shown += 1
        view.number = session.shown
        if len(session.history) == session.history.maxlen and session.history:
            old = session.history[0]
            if old.statement_seq is not None:
                session.by_seq.pop(old.statement_seq, None)
        session.history.append(view)
        if view.statement_seq is not None:
            session.by_seq[view.statement_seq] = view

    def _settle(self, session: SessionView, view: StatementView, decision: str) -> None:
        if view.decision == "pending" and decision != "pending":
            session.waiting = max(0, session.waiting - 1)
            if decision in ("denied", "expired", "unavailable", "blocked"):
                session.blocked += 1
        view.decision = decision

    def _result(self, session: SessionView, body: Mapping[str, Any]) -> Change:
        seq = _int(body, "statement_seq")
        view = session.by_seq.get(seq) if seq is not None else None
        if view is None:
            return Change.NONE
        # each part of a multi-statement text has its own result: the last one shows
        view.rows = _int(body, "rows")
        view.affected = _int(body, "affected")
        error = body.get("error")
        view.error = str(error) if error not in (None, "", 0) else None
        view.duration_ms = _number(body, "duration_ms")
        approver = body.get("approver")
        if isinstance(approver, str):
            view.approver = approver
        view.done = True
        return Change.STATEMENTS

    def _approval(self, session: SessionView, body: Mapping[str, Any]) -> Change:
        seq = _int(body, "statement_seq")
        view = session.by_seq.get(seq) if seq is not None else None
        if view is None:
            return Change.NONE
        self._settle(session, view, _text(body, "decision", view.decision))
        approver = body.get("approver")
        if isinstance(approver, str):
            view.approver = approver
        reason = body.get("reason")
        if isinstance(reason, str) and reason:
            view.reason = reason
        return Change.STATEMENTS | Change.SESSIONS

    def _trim(self) -> None:
        """Forget the oldest ended sessions beyond ``MAX_SESSIONS``."""
        if len(self.sessions) <= MAX_SESSIONS:
            return
        ended = sorted(
            (s for s in self.sessions.values() if s.ended_at is not None), key=lambda s: s.order
        )
        for session in ended[: len(self.sessions) - MAX_SESSIONS]:
            del self.sessions[session.key]

    # -- views -----------------------------------------------------------------------

    def session_list(self) -> list[SessionView]:
        """Live sessions first (waiting ones on top), then ended ones; newest first."""
        rank = {SessionState.WAITING: 0, SessionState.ACTIVE: 1, SessionState.ENDED: 2}
        return sorted(self.sessions.values(), key=lambda s: (rank[s.state], -s.order))

    def request_list(self) -> list[Request]:
        """Pending requests, the one that expires first on top."""
        return sorted(self.requests.values(), key=lambda r: (r.expires_at, r.appliance, r.id))

    @property
    def online(self) -> int:
        return sum(1 for g in self.gateways.values() if g.online)
