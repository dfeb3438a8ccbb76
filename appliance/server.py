"""The asyncio shell: the only module that touches sockets.

Each client connection gets a ``ClientLeg`` and, once a target is chosen, a ``ServerLeg``;
both are bare ``asyncio.Protocol`` objects (on uvloop) that move bytes in and out of the
sans-io ``Session`` and carry out what it asks for. Back-pressure is passed across: when
one peer's send buffer fills, the other peer stops being read.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import functools
import itertools
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from appliance import marked_socket, routing
from appliance.approvals import Approvals, Grant, Outcome
from appliance.audit import UNAVAILABLE, Audit, token_fields, who_fields
from appliance.backoff import WAITING_PER_SLOT, LoginBackoff, LoginSlots
from appliance.bus import Bus
from appliance.catalog import ViewCatalog, ViewChange
from appliance.config import Config, ConfigError, RuleAction, TargetConfig
from appliance.estimate import SAFE_FUNCTIONS, estimate_rows
from appliance.identity import KeysUnavailable, TokenRejected, TokenVerifier
from appliance.ledger import Head, LedgerError, LedgerUnavailable, records
from appliance.live_sessions import LiveSessions
from appliance.mysql import packets
from appliance.mysql.constants import Command, ErrorCode
from appliance.mysql.relay import (
    Account,
    AuthFailed,
    Backend,
    ClientAuthenticated,
    ClientCommand,
    CommandCompleted,
    CommandReceived,
    CommandRefused,
    Identity,
    Phase,
    Session,
    SessionClosed,
    SessionReady,
    SessionSettings,
    TokenPresented,
    printable,
)
from appliance.mysql.wire import frame
from appliance.offload import Offload
from appliance.policy.classify import count_query
from appliance.policy.gate import (
    OFFLOAD_BYTES,
    Classified,
    Part,
    Policy,
    SessionPolicy,
    TextJob,
    Verdict,
)
from appliance.policy.masking import MaskingPolicy
from appliance.policy.rules import Decision, Subject
from appliance.policy.server_functions import BUILTIN_FUNCTIONS
from appliance.server_mode import GlobalModes
from appliance.session_kill import SessionKills
from appliance.target_names import KEEP_S, Move, TargetNames
from appliance.tasks import cancel_and_wait
from appliance.through_catalog import ThroughCatalog

if TYPE_CHECKING:
    from netconfig.sentinel import Alert as NetworkAlert

log = logging.getLogger("sqlgate.server")

# Flow control: a session reads its client no faster than its commands are taken care of,
# so a client that floods commands (or stops reading its answers) costs bounded memory and
# cannot starve the others. Reading a client pauses for any of these reasons:
_HELD_BACKLOG = 1  # its commands wait in numbers for decisions, records or answers
_HELD_LEDGER = 2  # the audit ledger is behind (every session waits)
_HELD_UNREAD = 4  # the client does not read its answers
_HELD_TARGET = 8  # the target does not read the commands sent to it
_HELD_INTAKE = 16  # commands it sent are still buffered, to be taken turn by turn
_INTAKE = 128  # commands a session takes from its client's bytes per turn of the loop
_BACKLOG_COMMANDS = 512  # ... taken and unanswered before reading pauses (resumes at half)
_BACKLOG_BYTES = 64 * 1024 * 1024  # ... or their bytes while they wait for a decision
_REFUSALS_LOGGED = 20  # per session; the ledger has every one
_HOLD_FLOOR = 1024 * 1024
"""A session holding at most this of its client's commands is not counted against
``[appliance] max_buffered`` (nor ended by it): only large senders are."""
_HOST_BLOCKED = 1129  # ER_HOST_IS_BLOCKED: the target refuses the gateway's address
_BLOCKED_SAID_S = 60.0  # a target's target_blocked alert is repeated at most this often
_PLANNED = frozenset({Command.QUERY, Command.STMT_EXECUTE})
"""The commands whose result sets a masker plans from what the views show: a masked
session's wait while its target's views are read again (``ClientLeg._let_go``)."""
_TABLE_ONLY = frozenset(
    {"CREATE TABLE", "ALTER TABLE", "CREATE SEQUENCE", "CREATE TRIGGER", "DROP TRIGGER"}
)
"""Statements that change what the catalogs read but no view: a table the view catalog
does not know yet has its columns named like masked view columns masked, and a trigger
is only the through catalog's, so nobody waits for them (RENAME TABLE renames views too;
a statement run by another is not known)."""
_LOGIN_TIMEOUT_S = 8.0
"""From the connection to the end of the login. Shorter than the databases' default
``connect_timeout`` (10 s) by the time the gateway's own login there takes to end a
connection whose client gave up (``Session.parting``): else the database times out that
handshake first and counts it against the gateway's address (max_connect_errors)."""
_LAST_EVENTS_S = 2.0
"""At a stop, how long the sessions' last records may take to be committed, and so to
be published, before the bus closes."""


@dataclass(frozen=True, slots=True)
class Route:
    """Everything needed to open a session toward one target."""

    target: TargetConfig
    settings: SessionSettings


class Gateway:
    """Listens, routes each connection to a target, and drains on shutdown."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sessions: set[ClientLeg] = set()
        # sessions holding more than _HOLD_FLOOR of their clients' commands, and how much
        # (bounded together by [appliance] max_buffered, see ClientLeg._count_held)
        self.holding: dict[ClientLeg, int] = {}
        self.crowded_addresses: set[str] = set()  # turned away since (see _turn_away)
        # client connections admitted under [appliance] max_sessions (ClientLeg.admitted),
        # and how many were refused since the gateway was last full (None: it is not)
        self.admitted = 0
        self.full_refused: int | None = None
        self._by_sid: dict[str, ClientLeg] = {}  # the same sessions by id (ClientLeg.sid)
        # local ports of upstream sockets that could not be marked (no CAP_NET_ADMIN):
        # a client connection from one of them is the gateway's own, redirected back
        self.unmarked_ports: set[int] = set()
        self.draining = False
        # connections to targets that a login left before the gateway logged in there:
        # the gateway logs in and quits on them (ServerLeg.part)
        self.parting: set[ServerLeg] = set()
        self.parted = asyncio.Event()  # set while self.parting is empty
        self.parted.set()
        self._blocked_said: dict[str, float] = {}  # target -> when target_blocked was said
        # open sessions by (identity, target), for [policy] sessions_per_identity
        self.open_sessions: collections.Counter[tuple[str, str]] = collections.Counter()
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.tasks: set[asyncio.Task[None]] = set()  # the sessions' own (ClientLeg._spawn)
        accounts = {a.user: Account(a.user, a.stage2, frozenset(a.groups)) for a in config.accounts}
        client_tls = _client_tls_context(config)
        sha2_cache: dict[str, bytes] = {}
        self.routes: dict[str, Route] = {}
        for target in config.targets:
            backend = Backend(
                name=target.name,
                host=target.host,
                user=target.user,
                password=target.password,
                tls=target.tls,
                tls_context=_backend_tls_context(target),
                allow_groups=frozenset(target.allow_groups),
            )
            settings = SessionSettings(
                backend=backend,
                accounts=accounts,
                client_tls=client_tls,
                max_payload=config.appliance.max_packet,
                sha2_cache=sha2_cache,
                intake=_INTAKE,
                intake_bytes=OFFLOAD_BYTES,  # texts are classified as taken (see there)
                tokens=config.identity is not None,
                # each statement waits for its ledger record; each answer is recorded
                gated=True,
                report_completions=True,
                # the mode each session starts in, read before the client's first command
                read_sql_mode=True,
            )
            self.routes[target.name] = Route(target, settings)
        # the addresses redirected connections are routed by; names are looked up again
        self.target_names = TargetNames(config)
        for host, why in self.target_names.failures.items():
            log.warning("target host %s: cannot resolve it yet: %s", host, why)
        self.by_address = routing.target_index(self.target_names.pairs())
        # the interception's re-plan, when it manages the rules: called after a name moved
        self.on_targets_moved: Callable[[], Awaitable[None]] | None = None
        self._following: asyncio.Task[None] | None = None
        self.audit = Audit(config)
        self.offload = Offload()  # its worker process starts with the first large text
        self.tokens = TokenVerifier(config.identity) if config.identity is not None else None
        self.bus: Bus | None = None
        self.approvals: Approvals | None = None
        self.kills: SessionKills | None = None
        if config.bus.enabled or config.approvals.enabled:
            # the run is the session ids' middle part: edge-1-<run>-17
            self.bus = Bus(config.bus, config.appliance.name, run=self.audit.boot)
            self.audit.bus = self.bus
            self.audit.live = LiveSessions(self.bus)  # a console that comes later sees them
            self.audit.writer.on_checkpoint = self._publish_head
        if config.approvals.enabled and self.tokens is not None and self.bus is not None:
            self.approvals = Approvals(
                config.approvals, self.bus, self.tokens, on_alert=self._approval_alert
            )
            # the same approvers may end a session (an operator proves it with a token)
            self.kills = SessionKills(
                config.approvals, self.bus, self.tokens, self.live_session, self.audit.background
            )
        self.backoff = LoginBackoff(
            free=config.appliance.failed_logins_free,
            max_delay_s=config.appliance.failed_login_max_wait_s,
        )
        self.login_slots: LoginSlots[ClientLeg] = LoginSlots(config.appliance.max_pending_logins)
        self.policy = Policy(config.policy, config.rules, config.appliance.max_prepared_per_session)
        self.global_modes = GlobalModes(config, self._mode_alert)
        self.policy.unreadable_modes = self.global_modes.unreadable
        self._retention: asyncio.Task[None] | None = None
        self.masking: MaskingPolicy | None = None
        self.catalog: ViewCatalog | None = None
        # what writes reach through views, foreign keys and triggers, for the refusing rules
        self.through = ThroughCatalog(config, self.policy, refresh_s=config.policy.views_refresh_s)
        if config.masking:
            self.masking = MaskingPolicy(config.masking, masking_key(config))
            self.catalog = ViewCatalog(
                config, self.masking, refresh_s=config.policy.views_refresh_s
            )

    async def _purge_recordings(self, every_s: float = 3600.0) -> None:
        """Retention: recordings older than ``[recording] keep_days`` are deleted, hourly
        (the deletion is itself a ledger record)."""
        keep = datetime.timedelta(days=self.config.recording.keep_days)
        while True:
            cutoff = datetime.datetime.now(datetime.UTC) - keep
            before = cutoff.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            try:
                gone = await self.audit.writer.purge_recordings(before)
            except Exception as exc:  # the ledger may be unavailable: try again later
                log.warning("recording retention: %s", exc)
            else:
                if gone:
                    log.info("recording retention: %d recordings before %s deleted", gone, before)
            await asyncio.sleep(every_s)

    def _publish_head(self, head: dict[str, Any]) -> None:
        """The broker keeps the latest signed head: a witness of the ledger's progress."""
        if self.bus is not None:
            self.bus.publish("checkpoints", Head.from_checkpoint(head).to_json(), retain=True)

    def network_alert(self, alert: NetworkAlert) -> None:
        """The interception's alerts (a bypass, rules changed or restored behind the
        gateway's back, the sentinel's own trouble): recorded and published like every
        other alert, not only logged."""
        self.audit.background(
            records.alert(alert=alert.kind, reason=alert.message, **dict(alert.details))
        )

    async def _follow_names(self) -> None:
        """Look the targets' host names up again every ``resolve_interval_s``, and route
        (and with managed rules, intercept) the addresses they move to."""
        every_s = self.config.network.resolve_interval_s
        said = dict(self.target_names.failures)
        while True:
            await asyncio.sleep(every_s)
            try:
                said = await self._look_up_names(said)
            except Exception:  # a bug: said, and the next look-up comes as planned
                log.exception("target names: the look-up failed")

    async def _look_up_names(self, said: dict[str, str]) -> dict[str, str]:
        """One look-up of the names; ``said``: the failures already logged (returned
        updated)."""
        names = self.target_names
        moves = await asyncio.to_thread(names.refresh)
        for host, why in names.failures.items():
            if said.get(host) != why:
                log.warning(
                    "target host %s: cannot resolve it now (%s); its known addresses stay in use",
                    host,
                    why,
                )
        if moves:
            self.by_address = routing.target_index(names.pairs())
            for move in moves:
                self._target_moved(move)
        if self.on_targets_moved is not None:  # also retries a re-plan that failed
            await self.on_targets_moved()
        return dict(names.failures)

    def _target_moved(self, move: Move) -> None:
        now = ", ".join(move.now) or "nothing (it does not resolve now)"
        parts = []
        if move.added:
            parts.append(f"routed and intercepted now too: {', '.join(move.added)}")
        if move.dropped:
            kept = f"{KEEP_S:g} s"
            parts.append(f"not returned for {kept}, let go: {', '.join(move.dropped)}")
        reason = f"target {move.target}: {move.host} resolves to {now}; " + "; ".join(parts)
        log.warning("%s", reason)
        self.audit.background(
            records.alert(
                alert="target_moved",
                reason=reason,
                target=move.target,
                host=move.host,
                addresses=list(move.now),
                added=list(move.added),
                dropped=list(move.dropped),
            )
        )

    def target_blocked(self, target: str, message: str) -> None:
        """The target refuses the gateway's address (error 1129): no client reaches it
        until someone runs ``FLUSH HOSTS`` there. Said loudly, once a minute a target."""
        now = time.monotonic()
        said = self._blocked_said.get(target)
        if said is not None and now - said < _BLOCKED_SAID_S:
            return
        self._blocked_said[target] = now
        reason = (
            f"target {target} blocks the gateway's address after too many connection errors "
            f"({message}); no client reaches it until the blocks are cleared there with "
            "'FLUSH HOSTS' (mariadb-admin flush-hosts); see max_connect_errors in the "
            "deployment guide"
        )
        log.error("%s", reason)
        self.audit.background(records.alert(alert="target_blocked", reason=reason, target=target))

    def _approval_alert(self, alert: str, request_id: str, reason: str) -> None:
        log.warning("approval request %s: %s: %s", request_id, alert, reason)
        self.audit.background(records.alert(alert=alert, reason=reason, request=request_id))

    def _mode_alert(self, alert: str, reason: str) -> None:
        self.audit.background(records.alert(alert=alert, reason=reason))

    async def start(self) -> None:
        # the ledger first: no client is accepted before its statements can be recorded
        await self.audit.open()
        await self.global_modes.start()  # the mode sessions start in, before clients
        if self.catalog is not None:
            await self.catalog.start()  # the views that show masked columns, before clients
        await self.through.start()  # what writes reach under other names, before clients
        if self.config.recording.enabled and self.config.recording.keep_days:
            self._retention = asyncio.get_running_loop().create_task(
                self._purge_recordings(), name="recording retention"
            )
        if self.bus is not None:
            await self.bus.start()
        loop = asyncio.get_running_loop()
        if self.target_names.named:
            self._following = loop.create_task(self._follow_names(), name="target names")
        app = self.config.appliance
        if app.listen_host == "::":
            # "[::]" means every address, IPv4 too: one dual-stack socket (uvloop would
            # make it IPv6-only, and redirected IPv4 clients would be refused)
            self._server = await loop.create_server(
                lambda: ClientLeg(self), sock=_dual_stack_listener(app.listen_port)
            )
        else:
            self._server = await loop.create_server(
                lambda: ClientLeg(self),
                app.listen_host,
                app.listen_port,
                reuse_address=True,
                backlog=4096,
            )
        addrs = ", ".join(_fmt(s.getsockname()) for s in self._server.sockets)
        log.info("listening on %s (default target %s)", addrs, app.default_target)

    @property
    def listen_addresses(self) -> list[tuple[str, int]]:
        assert self._server is not None
        return [s.getsockname()[:2] for s in self._server.sockets]

    def next_id(self) -> int:
        return next(self._ids)

    def add(self, leg: ClientLeg) -> None:
        self.sessions.add(leg)
        self._by_sid[leg.sid] = leg
        self._idle.clear()

    def remove(self, leg: ClientLeg) -> None:
        self.sessions.discard(leg)
        self._by_sid.pop(leg.sid, None)
        if leg.admitted:
            leg.admitted = False
            self.admitted -= 1
            if self.full_refused is not None:
                log.warning(
                    "sessions: fewer than %d now (appliance.max_sessions): connections are "
                    "accepted again; %d were refused meanwhile",
                    self.config.appliance.max_sessions,
                    self.full_refused,
                )
                self.full_refused = None
        counted, leg.counted = leg.counted, None
        if counted is not None:
            left = self.open_sessions[counted] - 1
            if left > 0:
                self.open_sessions[counted] = left
            else:
                del self.open_sessions[counted]
        if not self.sessions:
            self._idle.set()

    def owns_thread(self, identity: str, target: str, thread: int) -> bool:
        """Whether ``thread`` is the backend thread of a live session of ``identity`` on
        ``target`` (what a KILL from that identity may reach)."""
        for leg in self.sessions:
            session = leg.session
            greeting = session.server_greeting if session is not None else None
            if (
                greeting is not None
                and greeting.connection_id == thread
                and leg.target == target
                and leg.policy is not None
                and leg.policy.who.identity == identity
            ):
                return True
        return False

    def live_session(self, sid: str) -> ClientLeg | None:
        """The session with this id, unless it is gone or an operator already ended it."""
        leg = self._by_sid.get(sid)
        return leg if leg is not None and leg.ended_by is None else None

    async def drain(self, grace_s: float) -> None:
        """Stop accepting, let running commands finish, then close every session. The
        gateway's own tasks and those its sessions started are cancelled, within a bound
        (``appliance.tasks``): nothing a client did may keep a stop from ending."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        if self.kills is not None:
            await self.kills.close()
        if self.approvals is not None:
            await self.approvals.close()  # held statements are answered: they do not run
        for leg in list(self.sessions):
            leg.drain()
        try:
            if not self._idle.is_set():  # (a wait of 0 s times out even when idle)
                await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            log.warning("drain timeout: closing %d busy sessions", len(self.sessions))
            for leg in list(self.sessions):
                leg.shut_down(f"gateway shutdown: the drain timeout of {grace_s:g} s passed")
        if self._server is not None:
            await self._server.wait_closed()
        if self.catalog is not None:
            await self.catalog.close()
        await self.through.close()
        await self.global_modes.close()
        if not await cancel_and_wait([self._following, self._retention]):
            log.warning("the look-ups of target names or the recording retention did not stop")
        if self.bus is not None:
            await self.audit.settle(_LAST_EVENTS_S)  # the sessions' ends, published
            if self.audit.live is not None:
                self.audit.live.close()  # none is live now: no start stays retained
            await self.bus.close()
        if self.parting:  # logins the shutdown ended: each logs in and quits, or is cut
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.parted.wait(), min(grace_s, _LOGIN_TIMEOUT_S))
            for parting in list(self.parting):
                parting.abort()
        # what sessions started and still runs (a dial, a text in the worker) ends here,
        # within a bound, while the ledger still takes what it records as it ends
        if not await cancel_and_wait(self.tasks):
            log.warning("%d tasks of sessions did not stop in time: left running", len(self.tasks))


class ClientLeg(asyncio.Protocol):
    """The client's connection, and the owner of the session."""

    __slots__ = (
        "gw",
        "id",
        "transport",
        "upstream",
        "session",
        "peer",
        "peer_ip",
        "target",
        "started",
        "_pending",
        "_closing",
        "_client_lost",
        "_ended_once",
        "_end_record",
        "sid",
        "context",
        "_begun",
        "_statements",
        "policy",
        "who",
        "_approvers",
        "ended_by",
        "_close_reason",
        "_paused_by",
        "_taking",
        "_refusals",
        "_in_worker",
        "_later",
        "_deferred",
        "_early",
        "_login_deadline",
        "_login_slot",
        "_login_user",
        "_login_db_shadow",
        "_holding",
        "_behind_hold",
        "_state_changed",
        "counted",
        "admitted",
        "_token_ends",
        "_token_timer",
        "_token_over",
        "_cursors",
        "_ready",
        "_views_wait",
        "_views_unsent",
        "_view_changes",
    )

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.id = gw.next_id()
        self.transport: asyncio.Transport | None = None
        self.upstream: ServerLeg | None = None
        self.session: Session | None = None
        self.peer = "?"
        self.peer_ip = "?"
        self.target = "?"
        self.started = time.monotonic()
        self._pending: list[bytes] = []
        self._closing = False
        self._client_lost = False  # the client's connection is gone
        self._ended_once = False  # session_end is written
        self.sid = gw.audit.session_id(self.id)
        self.context: dict[str, Any] = {
            "identity": None,
            "groups": (),
            "client": "?",
            "target": "?",
            "db": None,
        }
        # command id -> when it was received, its verdict and its first statement_seq
        self._begun: dict[int, tuple[float, Verdict, int]] = {}
        self._statements = 0  # statement records written (statement_seq of the last)
        # statement id -> the columns of its open cursor, for the recording's max_rows
        self._cursors: dict[int, list[packets.ColumnDefinition]] = {}
        self.policy: SessionPolicy | None = None
        self.who: dict[str, Any] = {}  # identity fields for every record of the session
        self._approvers: dict[int, str] = {}  # command id -> who approved it
        self.ended_by: tuple[str, str] | None = None  # (operator, reason) who ended it
        self._close_reason: str | None = None  # why the session closed (SessionClosed)
        self._paused_by = 0  # why reading the client is paused (_HELD_* bits; 0: reading)
        self._taking = False  # more buffered commands are to be taken next turn
        self._refusals = 0  # refusals logged so far
        # a large text is being classified in the worker process (appliance.offload):
        self._in_worker: ClientCommand | None = None
        self._later: list[ClientCommand | CommandRefused] = []  # what came after it
        self._deferred: set[int] = set()  # ids of the commands not decided yet
        self._early: dict[int, CommandCompleted] = {}  # their completions, if the session ended
        self._login_deadline: asyncio.TimerHandle | None = None
        # its place among the logins in progress from its address (Gateway.login_slots):
        # "held" from its connection to the target until its login there is done,
        # "waiting" while that many others hold one; None before and after
        self._login_slot: str | None = None
        self._login_user: str | None = None  # the name the client logs in with, once given
        # shadow mode: what the rules would have done to the database named at login
        self._login_db_shadow: dict[str, str] = {}
        self._holding = 0  # statements of this session waiting for a person
        # its session_end, when it ended while a statement was held: written after the
        # statement's approval record (see _hold_done)
        self._end_record: dict[str, Any] | None = None
        # when the token this session logged in with stops counting (epoch seconds, with
        # the identity leeway): the session ends then (_token_over_now)
        self._token_ends: float | None = None
        self._token_timer: asyncio.TimerHandle | None = None  # fires at _token_ends
        self._token_over = False  # its time is up: nothing more is forwarded (_token_ran_out)
        self._behind_hold: set[int] = set()  # commands refused for it: one at a time
        # it sent a statement that may change what its expressions read (_STATE_KINDS):
        # a held statement's rows are no longer counted on another connection
        self._state_changed = False
        # (identity, target) this session counts under in Gateway.open_sessions, once admitted
        self.counted: tuple[str, str] | None = None
        self.admitted = False  # it counts in Gateway.admitted ([appliance] max_sessions)
        # a masked session's commands allowed and recorded, by id, with the text to send
        # and when their wait for the views ends: each goes when it is next in line and
        # its target's views are current (_let_go)
        self._ready: dict[int, tuple[ClientCommand, bytes | None, float | None]] = {}
        self._views_wait = False  # a task waits for the target's views to be current
        # statements that may change a view: allowed, not gone to the target yet; gone
        # and not answered (the catalog holds masked sessions until it read them again)
        self._views_unsent: list[ClientCommand] = []
        self._view_changes: dict[int, ViewChange] = {}

    # -------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.gw.add(self)
        peer = transport.get_extra_info("peername")
        if peer:
            # an IPv4 client of a dual-stack listener ([::]:3307) is recorded by its IPv4
            # address (10.77.1.10:53122), not as ::ffff:10.77.1.10: ``client`` is ip:port
            host, port = routing.normalize((str(peer[0]), int(peer[1])))
            self.peer, self.peer_ip = _fmt((host, port)), host
        self.context["client"] = self.peer
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if peer and peer[1] in self.gw.unmarked_ports and routing.is_local(self.peer_ip):
            log.error(
                "session %d: the connection from %s is the gateway's own, sent back by the "
                "interception rules: its connections to targets must carry [network] mark, "
                "which needs CAP_NET_ADMIN; refused",
                self.id,
                self.peer,
            )
            self._refuse(
                ErrorCode.UNKNOWN,
                "sqlgate: the gateway's connection to its target came back to it (the "
                "interception rules redirect it; the gateway lacks CAP_NET_ADMIN to mark it)",
            )
            return
        if self.gw.draining:
            self._refuse(ErrorCode.UNKNOWN, "sqlgate: the gateway is shutting down")
            return
        if self.peer_ip and self.gw.login_slots.crowded(self.peer_ip):
            self._turn_away()
            return
        if self.gw.admitted >= self.gw.config.appliance.max_sessions:
            self._gateway_full()
            return
        self.admitted = True
        self.gw.admitted += 1
        name = self._choose_target(sock)
        if name is None:
            return
        self.target = name
        self.context["target"] = name
        loop = asyncio.get_running_loop()
        self._login_deadline = loop.call_later(
            _LOGIN_TIMEOUT_S, self._guarded, self._login_timed_out
        )
        slots = self.gw.login_slots
        if slots.take(self.peer_ip, self):
            self._login_slot = "held"
            self._begin()
            return
        self._login_slot = "waiting"  # unanswered, holding nothing at the target
        if slots.waiting(self.peer_ip) == 1:  # once as the address starts to wait
            log.warning(
                "session %d: %d logins from %s are in progress (appliance.max_pending_logins): "
                "its further connections wait for one to end before the target is dialled",
                self.id,
                slots.in_progress(self.peer_ip),
                self.peer_ip,
            )

    def _turn_away(self) -> None:
        """Too many connections of its address wait for a login slot already: refused at
        once (1040), its socket freed; logged once per crowd, not per connection."""
        slots = self.gw.login_slots
        limit = slots.per_address * WAITING_PER_SLOT
        crowds = self.gw.crowded_addresses
        if self.peer_ip not in crowds:
            crowds.add(self.peer_ip)
            log.warning(
                "session %d: %d connections from %s wait for a login slot "
                "(appliance.max_pending_logins): further ones are refused until fewer wait",
                self.id,
                limit,
                self.peer_ip,
            )
        self._refuse(
            ErrorCode.CON_COUNT,
            f"sqlgate: too many connections: {limit} connections from your address wait "
            "for their login already (appliance.max_pending_logins); try again later",
        )

    def _gateway_full(self) -> None:
        """The gateway serves ``[appliance] max_sessions`` connections already: refused at
        once (1040), before the target is dialled. Every session holds one of a target's
        connections, and all of them are the gateway's one backend user: without a cap,
        agents from many addresses could take all of the target's ``max_connections``,
        the operators' too. The first refusal of each such time is logged and recorded
        (an ``alert``), the rest counted, so that a flood cannot fill the ledger."""
        gw = self.gw
        limit = gw.config.appliance.max_sessions
        if gw.full_refused is None:
            gw.full_refused = 0
            reason = (
                f"the gateway serves {limit} sessions, the most [appliance] max_sessions "
                f"allows: new connections are refused (1040) until one ends (the first from "
                f"{self.peer})"
            )
            log.warning("sessions: %s", reason)
            gw.audit.background(
                records.alert(
                    alert="max_sessions", reason=reason, client=self.peer, max_sessions=limit
                )
            )
        gw.full_refused += 1
        self._refuse(
            ErrorCode.CON_COUNT,
            f"sqlgate: too many connections: the gateway serves {limit} sessions already, "
            "the most [appliance] max_sessions allows; connect again once one ends, and "
            "keep fewer connections open (close idle ones, a smaller pool)",
        )

    def _begin(self) -> None:
        """The connection holds one of its address's login slots: dial the target."""
        transport = self.transport
        if self._ended_once or transport is None or transport.is_closing():  # it left
            return
        if self.gw.draining:
            self._refuse(ErrorCode.UNKNOWN, "sqlgate: the gateway is shutting down")
            return
        route = self.gw.routes[self.target]
        self.session = Session(route.settings)
        self.session.login_gate = self._login_gate
        self.session.database_gate = self._database_gate
        self.session.session_gate = self._session_gate
        self._spawn(self._connect(route))

    def _free_login_slot(self) -> None:
        """Its login is over (done, failed, or the connection ended): the address's next
        waiting connection, if any, takes its slot and dials the target."""
        state, self._login_slot = self._login_slot, None
        slots = self.gw.login_slots
        if state == "waiting":
            slots.leave(self.peer_ip, self)
        elif state == "held":
            nxt = slots.release(self.peer_ip)
            if nxt is not None:
                nxt._login_slot = "held"
                asyncio.get_running_loop().call_soon(nxt._guarded, nxt._begin)
        if state is not None and not slots.waiting(self.peer_ip):
            self.gw.crowded_addresses.discard(self.peer_ip)  # a new crowd is logged

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        try:
            session.client_data(data)
            self.flush()
            if self._count_held() > self.gw.config.appliance.max_buffered:
                limit = self.gw.config.appliance.max_buffered
                log.warning(
                    "session %d: ended: the sessions hold more than %d bytes of unfinished "
                    "or undecided commands (appliance.max_buffered)",
                    self.id,
                    limit,
                )
                why = (
                    "the gateway holds too much of its clients' unfinished or undecided "
                    f"commands (more than {limit} bytes, appliance.max_buffered): this "
                    "session, one of the large senders, is ended; send it again later"
                )
                if self.ended_by is None:  # its session_end record says who and why
                    self.ended_by = ("sqlgate", why)
                session.out_of_buffers(why)
                self.flush()
                self._count_held()
        except Exception as exc:
            self.internal_error("reading the client", exc)

    def _count_held(self) -> int:
        """Note what this session holds of its client's commands; the total of those
        sessions holding more than ``_HOLD_FLOOR`` if this is one of them, else 0."""
        session = self.session
        held = session.held_bytes if session is not None and not self._ended_once else 0
        holding = self.gw.holding
        if held <= _HOLD_FLOOR:
            holding.pop(self, None)
            return 0
        holding[self] = held
        return sum(holding.values())

    def eof_received(self) -> bool:
        """The client half-closed (``shutdown(SHUT_WR)``): it may still read, so the
        connection stays open until what it sent is answered."""
        session = self.session
        if session is None:
            return False
        session.client_done_sending()
        self.flush()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._client_lost = True
        session = self.session
        if session is not None:
            session.client_closed()
            if not session.close_requested:
                # what the client sent before it left still runs and is recorded with
                # its answer (see Session.client_closed); the session ends after that
                up = self.upstream
                if up is not None and up.transport is not None:
                    up.transport.resume_reading()  # nobody will drain the client side now
                self.flush()
                return
            self._handle_events()
        self._ended()

    def _login_timed_out(self) -> None:
        """A client that has not logged in by now (it sends nothing, or the target does
        not answer) is told so and let go: it held a connection to the target."""
        self._login_deadline = None
        session = self.session
        if session is None and self._login_slot is not None:  # it waited its turn in vain
            waited = self.gw.login_slots.in_progress(self.peer_ip)
            self._free_login_slot()
            self._refuse(
                ErrorCode.HANDSHAKE,
                f"sqlgate: the login did not complete within {_LOGIN_TIMEOUT_S:g} s: "
                f"{waited} other logins from {self.peer_ip} were in progress all that time "
                "(appliance.max_pending_logins)",
            )
            return
        if session is not None and session.draining:  # refused, and it stopped sending
            session.close_now("the refused login packet did not end in time")
            self.flush()
            return
        if session is None or session.phase is Phase.COMMAND or session.phase is Phase.CLOSED:
            return
        # the client's doing unless it waits for the target (its greeting or the
        # gateway's own login there)
        theirs = session.phase is Phase.AWAIT_CLIENT_HELLO or session.phase is Phase.CLIENT_AUTH
        self._login_failed(
            self._login_user,
            f"the login did not complete within {_LOGIN_TIMEOUT_S:g} s",
            counted=theirs,
        )
        session.login_timed_out(_LOGIN_TIMEOUT_S)
        self.flush()

    def _token_ran_out(self) -> None:
        """The token this session logged in with has expired (with the leeway)."""
        self._token_timer = None
        self._token_over_now()
        self.flush()

    def _token_over_now(self) -> None:
        """Nothing more is forwarded: a command not sent yet is refused (1227,
        ``token-expired``; one decided from now on is recorded so), and once nothing is
        waiting the session ends as MariaDB ends one (``wait_timeout``, ``KILL``): both
        connections close with nothing sent (see ``flush``), and a transaction still
        open is lost with the backend's connection. A command the client already waits
        for is answered first. A statement held for approval is withdrawn at once: its
        request is cleared and the statement refused, so that nobody approves it on
        behalf of an identity whose token has expired."""
        if self._token_timer is not None:
            self._token_timer.cancel()
            self._token_timer = None
        if self._token_over:
            return
        self._token_over = True
        session, ends = self.session, self._token_ends
        assert session is not None and ends is not None
        session.stop_forwarding(
            ErrorCode.SPECIFIC_ACCESS_DENIED,
            _token_rule(ends).message,
            f"not run: the token this session logged in with expired (with the leeway, at "
            f"{_clock(ends)}) before it was sent (token-expired)",
        )
        log.info(
            "session %d: the token it logged in with expired (with the leeway, at %s): "
            "it ends once nothing is waiting",
            self.id,
            _clock(ends),
        )
        if self._holding and self.gw.approvals is not None:
            # answered in _hold, as a session that ended first (a later decision for the
            # request is rejected: it is no longer pending)
            self.gw.approvals.end_session(self.sid, "sqlgate", _token_withdrawn(ends))

    def _login_gate(self, user: str) -> str | None:
        """The client named ``user``: refused, before its credentials are checked, while
        that name or its address waits. A token login is not: no token can be guessed,
        so one that verifies is admitted whatever others behind the same address (a
        NAT) did; one that does not is refused with the wait (``_verify_token``)."""
        self._login_user = user
        waits = self._waits(user)
        if waits is None:
            return None
        session = self.session
        if (
            self.gw.tokens is not None
            and session is not None
            and session.client_tls
            and user not in session.settings.accounts
        ):
            return None
        self._note_waiting(*waits)
        return waits[1]

    def _waits(self, user: str | None) -> tuple[str | None, str] | None:
        """What a login from this address as ``user`` must wait for now, if anything:
        whose wait it is (the name, or None for the address's) and the reason. A name
        that logged in from the address lately is not held up by the address's wait."""
        backoff, now = self.gw.backoff, time.monotonic()
        if user is not None:
            wait = backoff.wait(self.peer_ip, user, now)
            if wait > 0:
                return user, _too_many(f"as '{printable(user)}' from {self.peer_ip}", wait)
            if backoff.known(self.peer_ip, user, now):
                return None
        wait = backoff.address_wait(self.peer_ip, now)
        if wait > 0:
            return None, _too_many(f"from {self.peer_ip} (for many user names)", wait)
        return None

    def _note_waiting(self, whose: str | None, reason: str) -> None:
        """A login refused in a wait: the first of each wait is recorded, the rest not,
        so that a client that keeps connecting cannot fill the ledger."""
        if self.gw.backoff.first_refusal(self.peer_ip, whose):
            self._record_waiting(self._login_user, reason)

    def _session_gate(self, identity: Identity) -> str | None:
        """A proven identity is admitted while it has fewer than ``[policy]
        sessions_per_identity`` sessions open on this target. Every agent reaches the
        target as the same backend user, so the target's own per-user limits cannot
        tell them apart: without this, one agent could take all of the target's
        connections. A refusal is recorded as a failed login; it does not count toward
        the login backoff (the credentials were right)."""
        key = (identity.user, self.target)
        limit = self.gw.config.policy.sessions_per_identity
        if not limit or self.gw.open_sessions[key] < limit:
            self.gw.open_sessions[key] += 1
            self.counted = key
            return None
        message = (
            f"sqlgate: user '{printable(identity.user)}' already has {limit} sessions open on "
            f"target '{self.target}', the most [policy] sessions_per_identity allows: close "
            "one (or reuse it) and connect again"
        )
        self._record_gate_refusal(identity, message, rule="sessions-per-identity")
        log.warning(
            "session %d: login refused for %r from %s: %d sessions open on target %s",
            self.id,
            identity.user,
            self.peer,
            limit,
            self.target,
        )
        return message

    def _database_gate(self, identity: Identity, schema: str) -> str | None:
        """The database a client named in its login is decided as the text
        ``USE `schema```: a refusal ends the login (ERR 1044) and is recorded as a failed
        login naming the rule. It does not count toward the login backoff: the
        credentials were right."""
        session = self.session
        decision = self.gw.policy.login_schema(
            Subject(identity.user, identity.groups, self.target),
            schema,
            session.client_charset if session is not None else None,
            masked=self.gw.masking is not None,
        )
        if not decision.refused:
            return None
        if self.gw.policy.shadow:  # noted on the session's start, and the login goes on
            would = "blocked" if decision.action is RuleAction.BLOCK else "review"
            self._login_db_shadow = {
                "rule": decision.rule,
                "reason": f"shadow mode: {decision.message}",
                "shadow_decision": would,
            }
            return None
        then = (
            "log in without a database"
            if decision.action is RuleAction.BLOCK
            else "a login cannot wait for a person: log in without a database and send the "
            "USE on its own"
        )
        message = (
            f"{decision.message} (the login names the database '{printable(schema)}', "
            f"decided as USE of it; {then})"
        )
        self._record_gate_refusal(identity, message, rule=decision.rule, db=schema)
        log.warning(
            "session %d: login refused for %r from %s: database %r refused by rule %s",
            self.id,
            identity.user,
            self.peer,
            schema,
            decision.rule,
        )
        return message

    def _record_gate_refusal(self, identity: Identity, message: str, **extra: str) -> None:
        """A login a gate refused after its credentials were proven: an ``auth_failed``
        record naming the rule (and what it refused)."""
        self.gw.audit.background(
            records.auth_failed(
                session=self.sid,
                client=self.peer,
                target=self.target,
                identity=identity.user,
                reason=message,
                **extra,
            )
        )

    def _record_waiting(self, user: str | None, reason: str) -> None:
        """The first login refused in a wait is recorded; the rest of the wait's are not."""
        noted = f"{reason} (until then such logins are refused unrecorded)"
        log.warning("refused %s: %s", self.peer, noted)
        self.gw.audit.background(
            records.auth_failed(client=self.peer, target=None, identity=user, reason=noted)
        )

    def _login_failed(self, user: str | None, reason: str, counted: bool = True) -> None:
        """A failed login is recorded; unless the target failed it, it counts toward the
        backoff of its user name from its address."""
        if counted:  # under the name the client gave (a token's user may differ)
            waits = self._waits(self._login_user or user)
            if waits is not None:  # in a wait: not counted again, recorded once
                self._note_waiting(*waits)
                return
            self.gw.backoff.failed(self.peer_ip, self._login_user or user, time.monotonic())
        self.gw.audit.background(
            records.auth_failed(
                session=self.sid, client=self.peer, target=self.target, identity=user, reason=reason
            )
        )
        log.warning(
            "session %d: login refused for %r from %s: %s", self.id, user, self.peer, reason
        )

    def _ended(self) -> None:
        """The client connection is gone and the session is over: its last record."""
        if self._ended_once:
            return
        self._ended_once = True
        up = self.upstream
        parting = self.session.parting if self.session is not None else None
        if parting is not None and up is not None and up.transport is not None:
            up.part(parting)
        if up is None or up.parting is None:  # else when the target's connection ends
            self._free_login_slot()
        self._abandon_deferred("the session ended before the gateway had read it")
        if self.policy is not None:  # its writes no answer came for stop counting as running
            self.policy.ended()
        self.gw.holding.pop(self, None)
        if self._login_deadline is not None:
            self._login_deadline.cancel()
            self._login_deadline = None
        if self._token_timer is not None:
            self._token_timer.cancel()
            self._token_timer = None
        self.gw.remove(self)
        self._ready.clear()
        self._views_unsent.clear()
        if self._view_changes and self.gw.catalog is not None:
            for change in self._view_changes.values():  # no answer will come now
                self.gw.catalog.changed(change)
            self._view_changes.clear()
        if self._holding and self.gw.approvals is not None:
            # a statement it holds is answered and never runs: its request is withdrawn,
            # so that no decision comes after the session's end (nor a grant with it)
            operator, why = self.ended_by or ("sqlgate", self._withdrawn())
            self.gw.approvals.end_session(self.sid, operator, why)
        if self.session is not None and self.context["identity"] is not None:
            ended: dict[str, Any] = {"reason": self._close_reason}  # the client, the target
            if self.ended_by is not None:
                ended = {"ended_by": self.ended_by[0], "reason": self.ended_by[1]}
            end = records.session_end(
                session=self.sid,
                statements=self._statements,
                duration_ms=(time.monotonic() - self.started) * 1000,
                **ended,
                **self.who,
            )
            if self._holding:  # written once the held statement's approval record is
                self._end_record = end
            else:
                self.gw.audit.background(end)
        up, self.upstream = self.upstream, None  # no cycle: the session is freed at once
        if up is not None and up.transport is not None and up.parting is None:
            up.transport.abort()

    def _withdrawn(self) -> str:
        """Why a statement held for approval was refused: its session ended first."""
        why = self._close_reason or "its connection closed"
        return f"the session ended before a decision ({why})"

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()
        self.hold_reading(_HELD_UNREAD)

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()
        self.release_reading(_HELD_UNREAD)

    # ------------------------------------------------------------------ flow control

    def hold_reading(self, why: int) -> None:
        """Stop reading the client (for one more reason, a ``_HELD_*`` bit)."""
        transport = self.transport
        if not self._paused_by and transport is not None and not transport.is_closing():
            transport.pause_reading()
        self._paused_by |= why

    def release_reading(self, why: int) -> None:
        """That reason is gone: read the client again once no other is left."""
        if not self._paused_by & why:
            return
        self._paused_by &= ~why
        if self._paused_by == _HELD_INTAKE:
            self._take_soon()  # the commands already read come first
            return
        transport = self.transport
        if self._paused_by or transport is None or self._closing or transport.is_closing():
            return
        transport.resume_reading()

    def _regulate(self) -> None:
        """Hold or release the client's reading by what it has sent and not had answered,
        and by the ledger's backlog; take buffered commands on the next turn of the loop,
        after other sessions' events, and read more only once they are all taken."""
        session = self.session
        if session is None or self._closing:
            return
        backlog = session.backlog
        if backlog > _BACKLOG_COMMANDS or (backlog > 1 and session.backlog_bytes > _BACKLOG_BYTES):
            self.hold_reading(_HELD_BACKLOG)
        elif self._paused_by & _HELD_BACKLOG and (
            backlog <= _BACKLOG_COMMANDS // 2 and session.backlog_bytes <= _BACKLOG_BYTES // 2
        ):
            self.release_reading(_HELD_BACKLOG)
        if not self._paused_by & _HELD_LEDGER and self.gw.audit.congested:
            self.hold_reading(_HELD_LEDGER)
            self.gw.audit.relieved().add_done_callback(
                functools.partial(self._guarded, self._ledger_relieved)
            )
        if session.more_commands:
            self.hold_reading(_HELD_INTAKE)
            if self._paused_by == _HELD_INTAKE:
                self._take_soon()
        else:
            self.release_reading(_HELD_INTAKE)

    def _ledger_relieved(self, _: asyncio.Future[None]) -> None:
        self.release_reading(_HELD_LEDGER)

    def _take_soon(self) -> None:
        if not self._taking:
            self._taking = True
            asyncio.get_running_loop().call_soon(self._guarded, self._take_more)

    def _take_more(self) -> None:
        self._taking = False
        session = self.session
        if session is None or self._closing or self._paused_by != _HELD_INTAKE:
            return
        session.take_commands()
        self.flush()

    def _log_refusal(self, message: str, *args: object) -> None:
        """Refusals at info level, up to a few per session (a flood would drown the log)."""
        self._refusals += 1
        if self._refusals <= _REFUSALS_LOGGED:
            log.info(message, self.id, *args)
            if self._refusals == _REFUSALS_LOGGED:
                log.info(
                    "session %d: further refusals are logged at debug level "
                    "(the ledger records every one)",
                    self.id,
                )
        else:
            log.debug(message, self.id, *args)

    # ------------------------------------------------------------------- helpers

    def _choose_target(self, sock: socket.socket | None) -> str | None:
        gw = self.gw
        default = gw.config.appliance.default_target
        local = self.transport.get_extra_info("sockname") if self.transport else None
        original = _original_destination(sock) if sock is not None else None
        if local is None:
            return default
        name = routing.pick_target(original, (local[0], local[1]), gw.by_address, default)
        if name is None:
            assert original is not None
            log.warning(
                "session %d: %s dialled %s, which no target owns: refused",
                self.id,
                self.peer,
                _fmt(original),
            )
            self._refuse(
                ErrorCode.UNKNOWN,
                f"sqlgate: no target is configured for {_fmt(original)}; "
                "ask the operator to add it to [[targets]]",
            )
        return name

    def _refuse(self, code: int, message: str) -> None:
        assert self.transport is not None
        self.transport.write(frame(0, packets.build_err(code, message)))
        self.transport.close()

    async def _connect(self, route: Route) -> None:
        target = route.target
        try:
            _, leg = await asyncio.wait_for(
                _open_upstream(self, target, self.gw.config.network.mark),
                target.connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            log.warning(
                "session %d: cannot reach target %s at %s:%d: %s",
                self.id,
                target.name,
                target.host,
                target.port,
                why,
            )
            if self.transport is not None and not self.transport.is_closing():
                self._refuse(
                    ErrorCode.UNKNOWN,
                    f"sqlgate: cannot reach target '{target.name}' at "
                    f"{target.host}:{target.port} ({why})",
                )
            return
        if self.transport is None or self.transport.is_closing():
            assert leg.transport is not None
            parting = self.session.parting if self.session is not None else None
            if parting is not None:  # the client left while the target was dialled
                leg.part(parting)
            else:
                leg.transport.abort()

    def flush(self) -> None:
        """Carry out what the session asked for: send its bytes, answer its events."""
        session = self.session
        assert session is not None
        if session.has_events:
            self._handle_events()
        if self._ready and not self._views_wait:
            self._release_ready()
        if self._views_unsent:
            self._views_sent()
        out = session.take_server_output()
        if out:
            up = self.upstream
            if up is not None and up.transport is not None:
                if len(out) == 1:
                    up.transport.write(out[0])
                else:
                    up.transport.writelines(out)
        out = session.take_client_output()
        if out and self.transport is not None and not self.transport.is_closing():
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.writelines(out)
        if self in self.gw.holding:  # what it holds shrank (commands taken, decided)
            self._count_held()
        if self._token_over and session.phase is Phase.COMMAND and not session.busy:
            # its token's time is up and nothing is waiting: closed with nothing sent, as
            # MariaDB closes a session it ends (a pool's pre-ping sees a lost connection)
            assert self._token_ends is not None
            session.close_now(f"token expired at {_clock(self._token_ends)} (with the leeway)")
            self._handle_events()
        if session.close_requested and not self._closing:
            self._closing = True
            if self.transport is not None:
                self.transport.close()
            up = self.upstream
            if up is not None and up.transport is not None:
                if session.parting is not None:
                    up.part(session.parting)
                else:
                    up.transport.close()
            if self._client_lost:  # the client left first: nothing else will end it
                self._ended()
        elif self.gw.draining and not session.busy:
            self.drain()
        if (
            self._paused_by
            or session.more_commands
            or session.backlog > 8
            or session.backlog_bytes > _BACKLOG_BYTES
            or self.gw.audit.congested
        ):
            self._regulate()

    def _handle_events(self) -> None:
        session = self.session
        assert session is not None
        while True:
            events = session.take_events()
            if not events:
                return
            for ev in events:
                kind = type(ev)
                if kind is CommandReceived:
                    self._decide(cast(CommandReceived, ev).cmd)
                elif kind is CommandCompleted:
                    self._completed(cast(CommandCompleted, ev))
                elif isinstance(ev, CommandRefused):
                    if (
                        self._in_worker is not None
                    ):  # recorded in its turn, after the text before it
                        self._later.append(ev)
                    else:
                        self._record_refusal(ev)
                elif isinstance(ev, TokenPresented):
                    self._spawn(self._verify_token(ev))
                elif isinstance(ev, ClientAuthenticated):
                    self.context["identity"] = ev.identity.user
                    self.context["groups"] = sorted(ev.identity.groups)
                    self.context["db"] = session.database
                    if ev.identity.method == "token":
                        self.context["subject"] = ev.identity.subject
                        self.context["token_id"] = ev.identity.token_id
                    if self._login_user is not None:
                        self.gw.backoff.succeeded(self.peer_ip, self._login_user, time.monotonic())
                    self.who = who_fields(self.context)
                    self.policy = SessionPolicy(
                        self.gw.policy,
                        Subject(ev.identity.user, ev.identity.groups, self.target),
                        session.database,
                        session.client_charset,
                        None,  # the mode its backend session starts in: not known yet
                    )
                    self.policy.owns_thread = functools.partial(
                        self.gw.owns_thread, ev.identity.user, self.target
                    )
                    if self.gw.masking is not None:
                        masker = self.gw.masking.for_groups(ev.identity.groups, self.target)
                        session.masker = masker
                        self.policy.masker = masker
                    if self.gw.config.recording.enabled:  # what the agent sees, recorded
                        session.record_limit = self.gw.config.recording.max_bytes
                    self.gw.audit.background(
                        records.session_start(
                            session=self.sid,
                            identity=ev.identity.user,
                            groups=sorted(ev.identity.groups),
                            client=self.peer,
                            target=self.target,
                            db=session.database,
                            method=ev.identity.method,
                            # how its answers are framed: replay decodes recordings by it
                            deprecate_eof=session.deprecate_eof,
                            **token_fields(self.context),
                            **self._login_db_shadow,
                        )
                    )
                    log.info(
                        "session %d: %s authenticated from %s (%s) for target %s",
                        self.id,
                        ev.identity.user,
                        self.peer,
                        "TLS" if ev.tls else "plain",
                        self.target,
                    )
                elif isinstance(ev, AuthFailed):
                    if ev.cause not in ("waiting", "database", "sessions"):  # (the gates')
                        self._login_failed(ev.user or None, ev.reason, ev.cause == "client")
                elif isinstance(ev, SessionReady):
                    log.debug("session %d: backend login done", self.id)
                    self._started_in(ev)
                    self._free_login_slot()
                    if self._login_deadline is not None:
                        self._login_deadline.cancel()
                        self._login_deadline = None
                    if self._token_ends is not None:
                        loop = asyncio.get_running_loop()
                        self._token_timer = loop.call_at(
                            loop.time() + max(0.0, self._token_ends - time.time()),
                            self._guarded,
                            self._token_ran_out,
                        )
                elif isinstance(ev, SessionClosed):
                    self._close_reason = ev.reason
                    log.info("session %d: closed: %s", self.id, ev.reason)
                    refusal = session.target_refusal
                    if refusal is not None and refusal.code == _HOST_BLOCKED:
                        self.gw.target_blocked(self.target, refusal.message)

    def _started_in(self, ready: SessionReady) -> None:
        """The backend session's sql_mode as it started: the policy refuses its statements
        under a mode the gateway cannot read, or one it could not learn."""
        if ready.sql_mode is None:
            log.warning(
                "session %d: the sql_mode of its backend session could not be read (%s): "
                "its statements are refused",
                self.id,
                ready.sql_mode_error,
            )
        if self.policy is not None:
            self.policy.started_in(ready.sql_mode)
            if ready.charsets is not None:
                self.policy.started_with(*ready.charsets)
                assert self.session is not None
                self.session.messages_charset = self.policy.results_charset
        self.gw.global_modes.seen(self.target, ready.sql_mode)

    def _completed(self, done: CommandCompleted) -> None:
        """A command's answer is complete (or the session ended first): its results."""
        session = self.session
        assert session is not None
        if self._view_changes:
            change = self._view_changes.pop(done.cmd.id, None)
            if change is not None and self.gw.catalog is not None:
                self.gw.catalog.changed(change)  # answered: the views are read again now
        began = self._begun.pop(done.cmd.id, None)
        if began is None:
            if done.cmd.id in self._deferred:  # not decided yet: its result comes after
                self._early[done.cmd.id] = done
            return
        at, verdict, first_seq = began
        charset = None  # of the answer's names and messages, for replay to read them in
        if self.policy is not None:
            charset = self.policy.answer_charset(done.cmd, len(verdict.parts))
            self.policy.completed(done.cmd, done.error, done.affected, done.sent, done.rows)
            session.messages_charset = self.policy.results_charset  # (after a SET NAMES)
        approver = self._approvers.pop(done.cmd.id, None)
        if any(part.catalog for part in verdict.parts):
            if self.gw.catalog is not None:
                self.gw.catalog.invalidate()
            self.gw.through.invalidate()
        who = self.who if approver is None else {**self.who, "approver": approver}
        if done.unfinished is not None:
            who = {**who, "reason": done.unfinished}
        elif done.refused is not None:  # allowed, but the gateway answered it with an ERR
            who = {**who, "reason": done.refused}
        self.gw.audit.results(
            self.sid,
            first_seq,
            verdict,
            done,
            (time.monotonic() - at) * 1000,
            who,
            session.deprecate_eof,
            self._cursors,
            charset,
        )

    def _record_refusal(self, ev: CommandRefused) -> None:
        """A command the core refused itself: its statement and result records."""
        self._log_refusal("session %d: %s refused: %s", ev.cmd.label, ev.message)
        self._statements += 1
        self.gw.audit.refused(
            self.sid, self._statements, ev.cmd, self.context, ev.code, ev.message, ev.rule
        )

    async def _verify_token(self, ev: TokenPresented) -> None:
        """Check a token (its keys may have to be fetched) while the client waits."""
        session = self.session
        tokens = self.gw.tokens
        assert session is not None and tokens is not None
        try:
            verified = await tokens.verify(ev.user, ev.token)
        except TokenRejected as exc:  # KeysUnavailable: recorded, not held against it
            cause = "keys" if isinstance(exc, KeysUnavailable) else "client"
            waits = self._waits(ev.user) if cause == "client" else None
            if waits is None:
                session.refuse_token(ev.user, str(exc), cause)
            else:  # the name or the address waits: only a valid token got past that
                self._note_waiting(*waits)
                session.refuse_token(ev.user, waits[1], "waiting")
        else:
            leeway = self.gw.config.identity.leeway_s if self.gw.config.identity else 0.0
            self._token_ends = verified.expires_at + leeway
            session.accept_token(
                Identity(
                    verified.user,
                    verified.groups,
                    "token",
                    subject=verified.subject,
                    token_id=verified.token_id,
                )
            )
        self.flush()

    def _decide(self, cmd: ClientCommand) -> None:
        """Decide in the order commands came: behind a text the worker is classifying,
        a command waits its turn."""
        if self._in_worker is not None:
            self._later.append(cmd)
            self._deferred.add(cmd.id)
        else:
            self._decide_or_offload(cmd)

    def _decide_or_offload(self, cmd: ClientCommand) -> None:
        session = self.session
        policy = self.policy
        assert session is not None and policy is not None
        job = policy.text_job(cmd, session.server_status)
        if job is None:
            self._decide_now(cmd)
            return
        if session.close_requested:  # it will not run: no need to read it
            self._not_decided(cmd, "the session ended before the gateway had read it")
            return
        self._in_worker = cmd
        self._deferred.add(cmd.id)
        self._spawn(self._classify_then_decide(cmd, job))

    async def _classify_then_decide(self, cmd: ClientCommand, job: TextJob) -> None:
        """A large text, classified in the worker process while the loop goes on; then
        it is decided, and the commands that came after it in their turn."""
        try:
            while True:
                classified = await self.gw.offload.classify(job, self._offload_who)
                if cmd.id not in self._deferred:  # the session ended meanwhile: recorded
                    return
                session, policy = self.session, self.policy
                assert session is not None and policy is not None
                again = policy.text_job(cmd, session.server_status)
                if classified is None or again is None or session.close_requested:
                    break
                if (again.mode, again.backslash_unknown) == classified.reading:
                    break
                job = again  # an answer in between changed how the text reads: again
        except BaseException:
            self._abandon_deferred("the gateway stopped before it had read it")
            raise
        self._in_worker = None
        self._decide_now(cmd, classified)
        later = self._later
        taken = 0
        while taken < len(later) and self._in_worker is None:  # another may go to the worker
            item = later[taken]
            taken += 1
            if isinstance(item, CommandRefused):
                self._record_refusal(item)
            else:
                self._decide_or_offload(item)
        del later[:taken]
        self.flush()

    @property
    def _offload_who(self) -> str:
        """Whose texts take turns together in the worker: the session's identity."""
        policy = self.policy
        return policy.who.identity if policy is not None else f"session {self.id}"

    def _not_decided(self, cmd: ClientCommand, why: str) -> None:
        """Record a command that will not be decided (the session ended): not run."""
        self._deferred.discard(cmd.id)
        self._early.pop(cmd.id, None)
        self._statements += 1
        context = self.context
        if self.policy is not None:  # its text is read as the server would read it now
            context = {**context, "charset": self.policy.client_charset}
        self.gw.audit.not_decided(
            self.sid, self._statements, cmd, context, f"{why}: it did not run"
        )

    def _abandon_deferred(self, why: str) -> None:
        """The session is over with commands still waiting for a text the worker reads:
        each is recorded as not run, in order, before the session's end."""
        cmd, self._in_worker = self._in_worker, None
        later, self._later = self._later, []
        if cmd is not None and cmd.id in self._deferred:
            self._not_decided(cmd, why)
        for item in later:
            if isinstance(item, CommandRefused):
                self._record_refusal(item)
            else:
                self._not_decided(item, why)
        self._deferred.clear()
        self._early.clear()

    def _decide_now(self, cmd: ClientCommand, classified: Classified | None = None) -> None:
        """The policy's verdict now, the ledger next."""
        session = self.session
        policy = self.policy
        assert session is not None and policy is not None
        self._deferred.discard(cmd.id)
        # the character set the server reads this text in (before a SET NAMES in it runs)
        self.context["charset"] = policy.client_charset
        session.note_charset(cmd, policy.client_charset)  # a prepare's, for its executes
        verdict = policy.decide(
            cmd,
            session.server_status,
            session.prepared_sql,
            classified,
            session.prepared_charsets,
            session.statements,
        )
        ends = self._token_ends
        if ends is not None and (self._token_over or time.time() > ends):
            verdict = _token_expired(verdict, ends)
            self._token_over_now()  # (before its timer): the session ends once it is answered
        first_seq = self._statements + 1
        self._statements += len(verdict.parts)
        self._begun[cmd.id] = (time.monotonic(), verdict, first_seq)
        self.context["db"] = policy.db_of(cmd)
        for identity, message in self.gw.policy.alerts:
            self.gw.audit.background(
                records.alert(
                    alert="runaway-agent",
                    session=self.sid,
                    identity=identity,
                    client=self.peer,
                    target=self.target,
                    reason=message,
                )
            )
        self.gw.policy.alerts.clear()
        if self.gw.approvals is not None and not self._state_changed:  # (the estimate's)
            for part in verdict.parts:
                if _changes_state(part):
                    self._state_changed = True
                    break
        held = self._held(verdict)
        if held and self._holding:  # one request at a time per session
            self._behind_hold.add(cmd.id)
            held = False
        if held:
            # the shape as the session reads the text now, before later answers move on
            fingerprint = policy.fingerprint(cmd, session.server_status, verdict)
            # its rows are counted on another connection only where that reads its WHERE
            # as this session will: the same backslashes, no state of the session's own
            countable = policy.backslash_escapes(session.server_status) and not (
                self._state_changed or policy.state_changed
            )
            self._holding += 1
            self._spawn(
                self._hold_once(cmd, verdict, first_seq, dict(self.context), fingerprint, countable)
            )
            return
        # write-before-forward: the command goes on once its records are committed
        futures = self.gw.audit.statements_soon(self.sid, first_seq, cmd, verdict, self.context)
        pending = len(futures)

        def one_done(_: asyncio.Future[Any]) -> None:
            nonlocal pending
            pending -= 1
            if not pending:
                self._guarded(self._recorded, cmd, verdict, futures)

        for future in futures:
            future.add_done_callback(one_done)
        if not futures:  # nothing to record (no statement in it): forwarded as it is
            asyncio.get_running_loop().call_soon(
                self._guarded, self._recorded, cmd, verdict, futures
            )
        if self._early:  # the session ended while it waited for its decision
            early = self._early.pop(cmd.id, None)
            if early is not None:
                self._completed(early)

    def _recorded(
        self, cmd: ClientCommand, verdict: Verdict, futures: list[asyncio.Future[Any]]
    ) -> None:
        """The statement records are committed (the command runs) or not (it is refused
        and nothing is forwarded)."""
        session = self.session
        assert session is not None
        try:
            self.gw.audit.committed(futures)
        except LedgerUnavailable:
            session.refuse(cmd, ErrorCode.UNKNOWN, UNAVAILABLE)
        except ValueError as exc:  # a record the ledger cannot hold: fail closed
            log.error("session %d: %s not recorded: %s", self.id, cmd.label, exc)
            session.refuse(cmd, ErrorCode.UNKNOWN, UNAVAILABLE)
        else:
            if verdict.refused:
                assert verdict.refusal is not None
                self._log_refusal(
                    "session %d: %s refused by rule %s", cmd.label, verdict.refusal.rule
                )
                session.refuse(cmd, ErrorCode.SPECIFIC_ACCESS_DENIED, self._refusal(verdict, cmd))
            elif verdict.rewritten is not None:  # masked by construction
                self._let_go(cmd, verdict, verdict.rewritten.encode())
            else:
                self._let_go(cmd, verdict)
        self.flush()

    def _let_go(self, cmd: ClientCommand, verdict: Verdict, sql: bytes | None = None) -> None:
        """Send an allowed command (with ``sql`` in place of its text). A session with a
        masker sends each in its turn, once its target's views are current (``_ready``);
        one without goes straight on. A statement that may change a view makes the
        target's views stale as it goes (``_views_sent``)."""
        session = self.session
        assert session is not None
        if self.gw.catalog is not None and _changes_views(verdict):
            self._views_unsent.append(cmd)  # (after the ones before it, in order)
        if session.masker is None:
            session.allow(cmd, sql)
            return
        self._ready[cmd.id] = (cmd, sql, None)
        if not self._views_wait:
            self._release_ready()

    def _release_ready(self) -> None:
        """Send the masked session's ready commands that are next in line; one whose
        results the masker plans waits while its target's views are stale."""
        session = self.session
        catalog = self.gw.catalog
        assert session is not None and catalog is not None
        ready = self._ready
        while ready:
            head = session.next_undecided
            if head is None or head.id not in ready:
                if head is None:  # closed: nothing more goes out
                    ready.clear()
                return  # a command before it waits for its decision
            cmd, sql, until = ready[head.id]
            if self.target in catalog.stale and cmd.command in _PLANNED:
                if until is None:
                    until = time.monotonic() + catalog.hold_s
                    ready[cmd.id] = (cmd, sql, until)
                self._views_wait = True
                self._spawn(self._await_views(cmd, until))
                return
            del ready[cmd.id]
            session.allow(cmd, sql)
            if self._views_unsent:
                self._views_sent()

    async def _await_views(self, cmd: ClientCommand, until: float) -> None:
        """Wait until the target's views are current; past ``until``, refuse the command
        (fail closed: its results could show a view's masked column in the clear)."""
        catalog = self.gw.catalog
        assert catalog is not None
        try:
            current = await catalog.current(self.target, until - time.monotonic())
        finally:
            self._views_wait = False
        session = self.session
        assert session is not None
        if cmd.id not in self._ready:  # the session ended meanwhile
            return
        if not current:
            del self._ready[cmd.id]
            if cmd in self._views_unsent:
                self._views_unsent.remove(cmd)
            message = _views_not_read(self.target, catalog.hold_s)
            self._log_refusal(
                "session %d: %s refused: the views of target %s are not read again yet",
                cmd.label,
                self.target,
            )
            session.refuse(cmd, ErrorCode.SPECIFIC_ACCESS_DENIED, message, message)
        self.flush()

    def _views_sent(self) -> None:
        """The statements that may change a view and have gone to the target since: its
        views are stale until the catalog read them after their answers."""
        session = self.session
        catalog = self.gw.catalog
        assert session is not None and catalog is not None
        unsent = self._views_unsent
        if session.phase is Phase.CLOSED:
            unsent.clear()  # dropped unsent, or answered (_completed) already
            return
        while unsent and session.sent(unsent[0]):
            cmd = unsent.pop(0)
            if cmd.id in self._ready:  # waits for its turn in _ready: not sent
                unsent.insert(0, cmd)
                return
            change = catalog.changing(self.target)
            if change is not None:
                self._view_changes[cmd.id] = change

    def _refusal(self, verdict: Verdict, cmd: ClientCommand) -> str:
        """The 1227 message; a statement for review that is not held says why."""
        refusal = verdict.refusal
        assert refusal is not None
        if refusal.action is not RuleAction.REVIEW:
            return refusal.message
        if cmd.id in self._behind_hold:
            self._behind_hold.discard(cmd.id)
            return (
                f"{refusal.message}. Another statement of this session is waiting for "
                "approval, and a session asks for one at a time: send this one again once "
                "that one is answered"
            )
        if self.gw.approvals is None:
            return (
                f"{refusal.message}. Approvals are not enabled on this gateway: ask an "
                "operator to run it, or continue without it"
            )
        if _prepares(verdict):
            return (
                f"{refusal.message}. A statement that needs approval cannot be prepared: "
                "each execution would run unseen. Send it as a plain statement with its "
                "values, and it waits for a person"
            )
        return (
            f"{refusal.message}. An approval is asked for one statement at a time: send it "
            "on its own"
        )

    def _held(self, verdict: Verdict) -> bool:
        """A statement for review waits for a person when approvals are on (a text of
        several statements is refused instead: an approval binds one statement; so is a
        prepare: an approval binds one execution)."""
        refusal = verdict.refusal
        return (
            self.gw.approvals is not None
            and self.session is not None
            and not self.session.close_requested  # ended while it was being classified
            and refusal is not None
            and refusal.action is RuleAction.REVIEW
            and not verdict.shadow
            and len(verdict.parts) == 1
            and not _prepares(verdict)
        )

    async def _hold_once(
        self,
        cmd: ClientCommand,
        verdict: Verdict,
        first_seq: int,
        context: dict[str, Any],
        fingerprint: str | None,
        countable: bool,
    ) -> None:
        """``_hold``; the session's next statement for review may be held as soon as this
        one is answered, in the same step. (Counted down in a callback of the task, it
        could come after the client had read the answer and sent its next statement,
        which was then refused as waiting behind this one.)"""
        try:
            await self._hold(cmd, verdict, first_seq, context, fingerprint, countable)
        finally:
            self._hold_done()

    def _hold_done(self) -> None:
        self._holding -= 1  # the next statement for review may be held
        if not self._holding and self._end_record is not None:  # its approval came first
            end, self._end_record = self._end_record, None
            self.gw.audit.background(end)

    async def _hold(
        self,
        cmd: ClientCommand,
        verdict: Verdict,
        first_seq: int,
        context: dict[str, Any],
        fingerprint: str | None,
        countable: bool = True,
    ) -> None:
        """Record the statement as pending, ask for approval, then run or refuse it.
        ``fingerprint`` is what a grant binds (SessionPolicy.fingerprint); ``countable``:
        its rows may be counted on another connection (``_estimate``)."""
        session = self.session
        approvals = self.gw.approvals
        assert session is not None and approvals is not None and verdict.refusal is not None
        identity = str(context["identity"])
        grant = approvals.granted(identity, self.target, fingerprint)
        if grant is not None:
            await self._run_granted(cmd, verdict, first_seq, context, grant)
            return
        try:
            await self.gw.audit.statements(
                self.sid, first_seq, cmd, verdict, context, {"decision": "pending"}
            )
        except LedgerUnavailable:
            session.refuse(cmd, ErrorCode.UNKNOWN, UNAVAILABLE)
            self.flush()
            return
        sql = cmd.sql
        exact: dict[str, str] = {}
        if sql is not None:  # read as the server reads it, as its record shows it
            text, exact = records.read_text(sql, context.get("charset"))
        else:
            text = verdict.parts[0].sql or ""
        rule = verdict.refusal
        rows_estimate = await self._estimate(verdict, sql if countable else None, context["db"])
        if self.ended_by is not None:  # an operator ended the session meanwhile
            operator, why = self.ended_by
            outcome = Outcome("denied", operator, why, 0.0)
        elif self._token_over:  # its token expired meanwhile: nobody is asked
            assert self._token_ends is not None
            outcome = Outcome("denied", "sqlgate", _token_withdrawn(self._token_ends), 0.0)
        elif self._ended_once:  # it ended meanwhile: nobody is asked
            outcome = Outcome("denied", "sqlgate", self._withdrawn(), 0.0)
        else:
            outcome = await approvals.request(
                {
                    "appliance": self.gw.config.appliance.name,
                    "session": self.sid,
                    "statement_seq": first_seq,
                    "identity": context["identity"],
                    "groups": list(context["groups"]),
                    "client": context["client"],
                    "target": context["target"],
                    "db": context["db"],
                    "command": cmd.label,
                    "sql": text,
                    **exact,  # its bytes, where ``sql`` as UTF-8 is not them
                    "rule": rule.rule,
                    "reason": rule.reason,
                    "rows_estimate": rows_estimate,
                },
                requester=identity,
                requester_subject=context.get("subject"),
                sql_sha256=records.sql_sha256(cmd.payload),
                fingerprint=fingerprint,
            )
        decision: str = outcome.verdict
        approver: str | None = outcome.approver
        outcome_reason: str | None = outcome.reason
        if decision == "unavailable":  # nobody could be asked: the gateway refused it
            # SPEC §9's decisions are allowed, blocked, pending, approved, denied and
            # expired; a refusal by the gateway itself is "denied" by sqlgate, as a
            # withdrawn request is, and its reason says approvals were unavailable
            decision, approver = "denied", "sqlgate"
            outcome_reason = f"approvals unavailable: {outcome_reason}"
        approval = records.approval(
            session=self.sid,
            statement_seq=first_seq,
            decision=decision,
            approver=approver,
            reason=outcome_reason,
            latency_ms=round(outcome.latency_ms, 3),
            request=outcome.request_id,
            grant_minutes=outcome.grant_minutes,
            fingerprint=fingerprint if outcome.grant_minutes else None,
            **self.who,
        )
        if outcome.verdict != "approved":  # refused either way: its record may follow
            self.gw.audit.background(approval)
            ends = self._token_ends
            if self._token_over and outcome.approver == "sqlgate" and ends is not None:
                # withdrawn as its token expired: the client gets the token's refusal
                session.refuse(
                    cmd,
                    ErrorCode.SPECIFIC_ACCESS_DENIED,
                    _token_rule(ends).message,
                    f"not run: the token this session logged in with expired (with the "
                    f"leeway, at {_clock(ends)}) while it waited for approval (token-expired)",
                )
            else:
                message = _held_refusal(outcome, rule)
                session.refuse(cmd, ErrorCode.SPECIFIC_ACCESS_DENIED, message)
            self.flush()
            return
        assert outcome.approver is not None
        try:  # write-before-forward: it runs once its approval is committed
            await self.gw.audit.append(approval)
        except (LedgerUnavailable, ValueError) as exc:
            log.error(
                "session %d: %s approved by %s but not recorded (%s): refused",
                self.id,
                cmd.label,
                outcome.approver,
                exc,
            )
            session.refuse(cmd, ErrorCode.UNKNOWN, UNAVAILABLE)  # its grant never counts
        else:
            approvals.install(outcome)  # a grant counts once its approval is recorded
            self._approvers[cmd.id] = outcome.approver
            log.info("session %d: %s approved by %s", self.id, cmd.label, outcome.approver)
            self._let_go(cmd, verdict)
        self.flush()

    async def _estimate(self, verdict: Verdict, sql: bytes | None, db: str | None) -> int | None:
        """Rows a held single-table UPDATE or DELETE would touch, when its WHERE is safe
        to run (plain built-in functions only). The count runs on a connection of the
        gateway's, not in the session: None for ``sql`` None, which the caller passes
        when the session may read the WHERE otherwise (``countable``)."""
        part = verdict.parts[0]
        if sql is None or part.kind not in ("UPDATE", "DELETE"):
            return None
        if not part.functions <= SAFE_FUNCTIONS:
            return None
        count_sql = count_query(sql)
        if count_sql is None:
            return None
        assert self.policy is not None
        return await estimate_rows(
            self.gw.config.target(self.target),
            db,
            count_sql,
            self.gw.config.network.mark,
            collation=self.policy.count_collation,
        )

    async def _run_granted(
        self,
        cmd: ClientCommand,
        verdict: Verdict,
        first_seq: int,
        context: dict[str, Any],
        grant: Grant,
    ) -> None:
        """An operator approved this shape of statement for this identity a while ago."""
        session = self.session
        assert session is not None
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(grant.until))
        try:
            await self.gw.audit.statements(
                self.sid,
                first_seq,
                cmd,
                verdict,
                context,
                {
                    "decision": "approved",
                    "reason": f"granted by {grant.approver} until {until} "
                    f"(request {grant.request_id})",
                    "approver": grant.approver,
                },
            )
        except LedgerUnavailable:
            session.refuse(cmd, ErrorCode.UNKNOWN, UNAVAILABLE)
        else:
            self._approvers[cmd.id] = grant.approver
            self._let_go(cmd, verdict)
        self.flush()

    def internal_error(self, where: str, exc: BaseException) -> None:
        """A fault of the gateway's own while it served this session (logged with its
        traceback): the session is ended as an operator would end it (``session_end``
        says why; what it recorded before stands), instead of being left with a client
        that waits for an answer that will never come. Other sessions go on."""
        log.error(
            "session %d: internal error while %s; the session is ended",
            self.id,
            where,
            exc_info=exc,
        )
        try:
            self.end_by_operator("sqlgate", f"internal error while {where}: {exc!r}")
        except Exception:
            log.exception("session %d: while ending it", self.id)
            self.abort()

    def _guarded(self, callback: Callable[..., None], *args: Any) -> None:
        """Run a callback of this session's; a fault in it ends the session."""
        try:
            callback(*args)
        except Exception as exc:
            self.internal_error(f"running {callback.__name__}", exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task of this session's; a fault in it ends the session."""
        task = asyncio.get_running_loop().create_task(work)
        task.add_done_callback(self._task_done)
        self.gw.tasks.add(task)  # a stop cancels it, within a bound (Gateway.drain)
        task.add_done_callback(self.gw.tasks.discard)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.internal_error(f"running {task.get_coro().__name__}", exc)  # type: ignore[union-attr]

    def drain(self) -> None:
        """Close now if nothing is running, else once the running command ends; the
        session ends for the gateway's shutdown (its ``session_end`` says so), not as if
        its client had left."""
        session = self.session
        if session is None or not session.busy:
            if session is not None:
                session.close_now("gateway shutdown")
                self._handle_events()
            self.abort(graceful=True)

    def end_by_operator(self, operator: str, reason: str) -> None:
        """An operator ended this session (``kill/<session>``): a statement it holds for
        approval is answered and never runs, and both connections are cut at once (the
        client sees a lost connection). ``session_end`` carries who and why."""
        if self.ended_by is not None:
            return
        self.ended_by = (operator, reason)
        if self.gw.approvals is not None:
            self.gw.approvals.end_session(self.sid, operator, reason)
        if self.session is not None:
            # closed now: a decision still on its way (allow, refuse) sends nothing more
            self.session.close_now(f"ended by {operator}")
            self._handle_events()
        self.abort()

    def shut_down(self, reason: str) -> None:
        """The gateway stops and this session is still busy: a command whose answer has
        not begun is answered with 1053 (Session.shut_down), and the session ends now.
        Its records say the gateway ended it (``ended_by`` sqlgate, ``reason``), not that
        the client left."""
        if self.ended_by is None:
            self.ended_by = ("sqlgate", reason)
        session = self.session
        if session is None:
            self.abort()
            return
        try:
            session.shut_down(reason)
            self.flush()  # the ERR goes out, then both connections close
        except Exception:
            log.exception("session %d: while ending it", self.id)
        self._ended()  # recorded now: a client that reads nothing more may never let go
        self.abort(graceful=True)

    def abort(self, graceful: bool = False) -> None:
        if self.transport is not None:
            if graceful:
                self.transport.close()
            else:
                self.transport.abort()
        up = self.upstream
        if up is not None and up.transport is not None:
            parting = self.session.parting if self.session is not None else None
            if graceful and parting is not None:  # a login the gateway's shutdown ended
                up.part(parting)
            else:
                up.transport.abort()


class ServerLeg(asyncio.Protocol):
    """The gateway's own connection to the target."""

    __slots__ = ("client", "parting", "transport", "unmarked_port", "_parting_timer")

    def __init__(self, client: ClientLeg) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.unmarked_port = 0  # its local port, when its socket could not be marked
        self.parting: Session | None = None  # see part
        self._parting_timer: asyncio.TimerHandle | None = None

    def part(self, parting: Session) -> None:
        """The client's session closed before the gateway logged in to the target: the
        connection is ``parting``'s now, which logs in with the vaulted credential and
        quits (see ``Session.parting``), within the login timeout. The client's login
        slot is held until then, so that a client cannot keep more connections to the
        target in their handshake than ``max_pending_logins``."""
        if self.parting is not None or self.transport is None or self.transport.is_closing():
            return
        self.parting = parting
        gw = self.client.gw
        gw.parting.add(self)
        gw.parted.clear()
        self._parting_timer = asyncio.get_running_loop().call_later(
            _LOGIN_TIMEOUT_S, self._parting_late
        )
        self._flush_parting()

    def _flush_parting(self) -> None:
        parting, transport = self.parting, self.transport
        assert parting is not None and transport is not None
        out = parting.take_server_output()
        if out:
            transport.writelines(out)
        if parting.close_requested:
            transport.close()

    def _parting_late(self) -> None:
        self._parting_timer = None
        log.info(
            "session %d: the gateway's login to target %s (the client had left) did not "
            "complete within %g s: its connection was cut",
            self.client.id,
            self.client.target,
            _LOGIN_TIMEOUT_S,
        )
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        # The greeting can arrive before the connecting task resumes: be reachable now.
        self.client.upstream = self
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if self.parting is not None:
            try:
                self.parting.server_data(data)
                self._flush_parting()
            except Exception:
                log.exception("session %d: while ending the target's connection", client.id)
                self.abort()
            return
        session = client.session
        assert session is not None
        try:
            session.server_data(data)
            client.flush()
        except Exception as exc:
            client.internal_error("reading the target", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        client = self.client
        if self.unmarked_port:
            client.gw.unmarked_ports.discard(self.unmarked_port)
        if self.parting is not None:
            if self._parting_timer is not None:
                self._parting_timer.cancel()
                self._parting_timer = None
            parting = client.gw.parting
            parting.discard(self)
            if not parting:
                client.gw.parted.set()
            client._free_login_slot()
            log.debug("session %d: the target's connection is closed", client.id)
            return
        session = client.session
        if session is not None and client.transport is not None:
            session.server_closed()
            client.flush()
            client.transport.close()

    def pause_writing(self) -> None:
        self.client.hold_reading(_HELD_TARGET)

    def resume_writing(self) -> None:
        self.client.release_reading(_HELD_TARGET)


# ------------------------------------------------------------------------ helpers


def _prepares(verdict: Verdict) -> bool:
    """COM_STMT_PREPARE or PREPARE: the statement would run at each later execute."""
    return verdict.command == "COM_STMT_PREPARE" or verdict.parts[0].kind == "PREPARE"


def _too_many(who: str, wait: float) -> str:
    """Why a login is refused while it waits, and for how long."""
    after = f"{wait:.0f} s" if wait >= 1 else "a second"
    return f"too many failed logins {who}; try again in {after}"


def _fmt(addr: tuple[object, ...] | list[object]) -> str:
    host, port = str(addr[0]), addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dual_stack_listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", port))
        sock.listen(4096)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _original_destination(sock: socket.socket) -> routing.Address | None:
    """The address the client dialled before a redirect, or None if it was not redirected.

    An IPv4 client on a dual-stack listener arrives as ``::ffff:a.b.c.d``: its original
    destination is kept by the IPv4 table.
    """
    try:
        if sock.family == socket.AF_INET6 and not sock.getpeername()[0].startswith("::ffff:"):
            raw = sock.getsockopt(routing.SOL_IPV6, routing.IP6T_SO_ORIGINAL_DST, 28)
            return routing.parse_sockaddr_in6(raw)
        raw = sock.getsockopt(socket.SOL_IP, routing.SO_ORIGINAL_DST, 16)
        return routing.parse_sockaddr_in(raw)
    except (OSError, ValueError):
        return None


async def _open_upstream(
    client: ClientLeg, target: TargetConfig, mark: int
) -> tuple[asyncio.BaseTransport, ServerLeg]:
    """Connect to the target from a socket carrying the gateway's mark.

    The mark exempts the gateway's own connections from its redirect rules (the output
    chain would otherwise send them back into the gateway; see ``marked_socket``). A
    socket that cannot be marked (no CAP_NET_ADMIN) gets its local port first and is
    listed in ``Gateway.unmarked_ports``, so that the gateway knows it if the rules
    bring it back (``ClientLeg`` refuses it: no loop of connections to itself).
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    unmarked = client.gw.unmarked_ports
    last: OSError | None = None
    for family, kind, proto, _, address in infos:
        if routing.own_listener(client.gw.listen_addresses, str(address[0]), int(address[1])):
            last = OSError(
                f"{_fmt(address)} is this gateway's own listener, so the target would be "
                "the gateway itself (a loop of connections to itself): fix the target's "
                "host or port"
            )
            continue
        sock = socket.socket(family, kind, proto)
        port = 0
        try:
            sock.setblocking(False)
            if not marked_socket.mark(sock, mark):
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
                port = sock.getsockname()[1]
                unmarked.add(port)
            await loop.sock_connect(sock, address)
            transport, leg = await loop.create_connection(lambda: ServerLeg(client), sock=sock)
        except OSError as exc:
            unmarked.discard(port)
            sock.close()
            last = exc
            continue
        except BaseException:  # cancelled (the connect timed out)
            unmarked.discard(port)
            sock.close()
            raise
        leg.unmarked_port = port
        return transport, leg
    raise last or OSError(f"no address for {target.host}")


def _client_tls_context(config: Config) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.tls.cert_file, config.tls.key_file)
    return ctx


def _backend_tls_context(target: TargetConfig) -> ssl.SSLContext | None:
    if target.tls == "disabled":
        return None
    if target.tls_verify:
        ctx = ssl.create_default_context(
            cafile=str(target.tls_ca_file) if target.tls_ca_file else None
        )
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
"""Signals that stop the gateway cleanly: it drains, then exits 0."""
IGNORED_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
"""Signals the gateway ignores, saying so in its log: it reloads nothing (SIGHUP's
usual meaning); a changed configuration applies on a restart."""


def _ignored(sig: signal.Signals) -> None:
    log.warning(
        "%s ignored: the gateway reloads nothing while it runs; restart it (SIGTERM, then "
        "start it again) to apply a changed configuration",
        sig.name,
    )


async def run_gateway(config: Config, ready: Callable[[Gateway], None] | None = None) -> int:
    """Run until SIGTERM, SIGINT or SIGQUIT, then drain. Returns the process exit code."""
    try:
        gw = Gateway(config)
    except LedgerError as exc:  # no signing key
        log.error("cannot open the audit ledger: %s", exc)
        return 1
    except OSError as exc:  # the masking key (before anything listens)
        log.error("cannot load the masking key: %s", exc.strerror or exc)
        return 1
    try:
        return await _serve_until_stopped(gw, config, ready)
    finally:
        gw.offload.close()
        await gw.audit.close()  # the final checkpoint; also ends the writer's thread


async def _serve_until_stopped(
    gw: Gateway, config: Config, ready: Callable[[Gateway], None] | None
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:  # from the start: a stop while starting is clean
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    for sig in IGNORED_SIGNALS:  # their default would end the gateway without a drain
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _ignored, sig)
    # the container's entry point blocks them until now (see appliance.container): one
    # that came meanwhile is delivered here, to the handler
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {*STOP_SIGNALS, *IGNORED_SIGNALS})
    try:
        await gw.start()
    except LedgerError as exc:  # a file that is not this gateway's ledger
        log.error("cannot open the audit ledger: %s", exc)
        await gw.drain(0)
        return 1
    interception = None
    if config.network.manage_rules:
        from appliance.interception import (  # netlink and scapy only when asked
            Interception,
            InterceptionError,
        )

        try:
            interception = Interception(
                config, on_alert=gw.network_alert, resolve=gw.target_names.addresses
            )
            await interception.start()  # after the listener exists: redirected clients land
            gw.on_targets_moved = interception.replan
        except (InterceptionError, ConfigError) as exc:
            log.error("cannot install the interception rules: %s", exc)
            await gw.drain(0)
            return 1
    if ready is not None:
        ready(gw)
    await stop.wait()
    log.info("shutting down: draining %d sessions", len(gw.sessions))
    await gw.drain(config.appliance.drain_timeout_s)
    removed = interception is None or await interception.stop()
    log.info("stopped")
    return 0 if removed else 1


def serve(config: Config) -> int:
    """``sqlgate run``: the gateway in the foreground on uvloop."""
    import uvloop

    try:
        return uvloop.run(run_gateway(config))
    except OSError as exc:  # asyncio words it "error while attempting to bind on ...: why"
        why = os.strerror(exc.errno) if exc.errno else exc.strerror or str(exc)
        log.error("cannot listen on %s: %s", config.appliance.listen, why)
        return 1


def masking_key(config: Config) -> bytes:
    """The key of the ``hash`` strategy: ``[policy] masking_key_file``, or a key made
    once in ``state_dir`` (so digests stay the same across restarts)."""
    path = config.policy.masking_key_file
    if path is None:
        path = config.appliance.state_dir / "masking.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32))
    key = path.read_bytes()
    if len(key) < 16:
        raise OSError(f"{path}: a masking key needs at least 16 bytes")
    return key


def _clock(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%H:%M:%S UTC")


def _token_rule(ended: float) -> Decision:
    """The refusal of a command of a session whose token has expired."""
    return Decision(
        RuleAction.BLOCK,
        "token-expired",
        f"the token this session logged in with expired (with the leeway, at "
        f"{_clock(ended)}). Log in again with a new token",
    )


def _token_withdrawn(ended: float) -> str:
    """Why a statement held for approval was refused: the session's token expired."""
    return (
        f"the token this session logged in with expired (with the leeway, at "
        f"{_clock(ended)}) before a decision"
    )


def _token_expired(verdict: Verdict, ended: float) -> Verdict:
    """A session whose token has expired (its groups, even the person's access, may have
    changed since): every command is refused, in shadow mode too."""
    decision = _token_rule(ended)
    parts = tuple(dataclasses.replace(p, decision=decision) for p in verdict.parts)
    return Verdict(verdict.command, parts, decision)


_STATE_KINDS = frozenset({"EXECUTE", "CALL"})
"""Statements that may change what a session's expressions read, which a connection of
the gateway's does not share (a variable, the clock with ``SET timestamp``,
``time_zone``, ``lc_time_names``, a collation, ``sql_mode``) unseen: an ``EXECUTE`` may
run such a SET, a procedure or a stored function may too. A plain SET is read by the
policy (``SessionPolicy.state_changed``)."""


def _changes_state(part: Part) -> bool:
    """Whether a statement may change the session's state unseen (``_STATE_KINDS``, or a
    call of a function that is not built in)."""
    return part.kind in _STATE_KINDS or bool(
        part.functions and not part.functions <= BUILTIN_FUNCTIONS
    )


def _changes_views(verdict: Verdict) -> bool:
    """Whether a command may create, alter, rename or drop a view (see _TABLE_ONLY)."""
    return any(part.catalog and part.kind not in _TABLE_ONLY for part in verdict.parts)


def _views_not_read(target: str, hold_s: float) -> str:
    """The refusal of a masked session's statement while its target's views are stale."""
    return (
        f"sqlgate: blocked by rule 'masking': a view of target '{target}' was created, "
        "altered, renamed or dropped, and the gateway has not read the target's views "
        f"again within {hold_s:g} s, so it cannot tell which columns of this statement's "
        "results to mask. Send the statement again in a few seconds"
    )


def _held_refusal(outcome: Outcome, rule: Decision) -> str:
    """The 1227 message of a held statement that will not run."""
    if outcome.verdict == "denied":
        why = outcome.reason or "no reason given"
        return f"sqlgate: denied by {outcome.approver}: {why}. The statement did not run"
    if outcome.verdict == "expired" and outcome.reason:
        return (
            f"sqlgate: the approval asked for by rule '{rule.rule}' expired: "
            f"{outcome.reason}, so the statement did not run. Send it again once the "
            "gateway's broker is reachable"
        )
    if outcome.verdict == "expired":
        return (
            f"sqlgate: the approval asked for by rule '{rule.rule}' expired: nobody decided "
            "in time, so the statement did not run. Ask an operator to watch the approvals "
            "queue, then send the statement again"
        )
    return (
        f"sqlgate: review required by rule '{rule.rule}', but approvals are unavailable "
        f"right now ({outcome.reason}); the statement did not run. Try again later"
    )
