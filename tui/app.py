"""The operator console (SPEC §11): live sessions, approvals, alerts and the ledger.

Workers fetch, messages carry, handlers mutate: the live source (MQTT, or a recording)
and the ledger file are read by workers that only post messages; the handlers here fold
them into ``Console`` and mark what changed; a timer redraws the visible screen at most
four times a second, so a burst of statements costs one redraw, not one per event.
Decisions and session ends go out through the same source, signed by the operator's
token; what the gateway answers comes back as events (a cleared request, an alert).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from textual.app import App, ScreenStackError
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.screen import Screen

from appliance.ledger.chain import LedgerError
from appliance.operator import decision_body
from appliance.replay import load as load_replay
from tui.ledger import LedgerFile, Verification
from tui.messages import FromLedger, FromSource, LedgerRead, ReplayLoaded, Verified
from tui.model import Alert, Change, Console, Request, printable
from tui.screens.alerts import AlertsScreen
from tui.screens.approvals import ApprovalsScreen
from tui.screens.base import ConsoleScreen
from tui.screens.ledger import LedgerScreen
from tui.screens.prompt import Prompt
from tui.screens.replay import ReplayScreen
from tui.screens.session import SessionScreen
from tui.screens.sessions import SessionsScreen
from tui.sources import Batcher, BusEvent, Item, LinkState, SendError, Source, Synced

__all__ = ["ConsoleApp", "Operator"]

REDRAW_S = 0.25
VERIFY_EVERY_S = 60.0
SOURCE_RESTART_S = 5.0  # after the live source failed (a bug): it is started again
RECENT_EVERY_S = 5.0
MAX_GRANT_MINUTES = 24 * 60
MAX_REQUEST_NOTICES = 3  # new requests in one batch noticed one by one; more: one notice


@dataclass(frozen=True, slots=True)
class Operator:
    """Who decides: the name in the token, and the token the gateway verifies."""

    name: str
    token: str


def _minutes(text: str) -> str | None:
    if not text.isdigit() or not 1 <= int(text) <= MAX_GRANT_MINUTES:
        return f"a whole number of minutes from 1 to {MAX_GRANT_MINUTES}"
    return None


class ConsoleApp(App[None]):
    """The console; give it a source, and the ledger file and an operator when known."""

    CSS_PATH = "app.tcss"
    TITLE = "sqlgate console"
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "sessions": SessionsScreen,
        "approvals": ApprovalsScreen,
        "ledger": LedgerScreen,
        "alerts": AlertsScreen,
    }
    DEFAULT_MODE = "sessions"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "show('sessions')", "Sessions", show=False),
        Binding("2", "show('approvals')", "Approvals", show=False),
        Binding("3", "show('ledger')", "Ledger", show=False),
        Binding("4", "show('alerts')", "Alerts", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        source: Source,
        *,
        ledger: LedgerFile | None = None,
        ledger_note: str = "not configured",
        operator: Operator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.source = source
        self.ledger = ledger
        self.ledger_note = ledger_note
        self.operator = operator
        self.clock = clock
        self.model = Console(clock)
        self.link = LinkState(False, "starting")
        self.verification: Verification | None = None
        self.ledger_records: list[dict[str, Any]] = []
        self.ledger_query: str | None = None
        self.ticked = False
        self._last_second = -1
        self._dirty = Change.NONE
        self._ending: set[tuple[str, str]] = set()
        # the source's items reach the handlers in batches (one message per 50 ms at
        # most, however fast they come): a message each cost more than folding them
        self._inbox = Batcher(lambda items: self.post_message(FromSource(items)))

    # -- lifecycle -------------------------------------------------------------------

    def on_mount(self) -> None:
        self.run_worker(self._read_source(), name="source", group="source")
        if self.ledger is not None:
            self.run_worker(self._read_history, thread=True, name="history")
            self.verify_ledger()
            self.read_ledger(None)
            self.set_interval(VERIFY_EVERY_S, self.verify_ledger)
            self.set_interval(RECENT_EVERY_S, self._recent_again)
        self.set_interval(REDRAW_S, self.redraw)

    async def _read_source(self) -> None:
        while True:
            try:
                await self.source.run(self._deliver)
                return
            except Exception as exc:  # a bug in a source must not become a traceback
                self._deliver(
                    LinkState(False, f"the live source failed ({exc}); starting it again")
                )
            await asyncio.sleep(SOURCE_RESTART_S)  # the console never stops

    def _deliver(self, item: Item) -> None:
        self._inbox(item)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """A notice, never read as markup, whatever the caller asks: its text comes from
        the wire (a statement, a user name, a gateway's reason), and markup in it would
        crash the console, hide text, or make a link that acts when clicked (an agent's
        statement approving itself)."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def redraw(self) -> None:
        """Show what changed on the visible screen (and the clocks, once a second)."""
        second = int(self.clock())
        self.ticked = second != self._last_second
        self._last_second = second
        if self.ticked:
            self._dirty |= self.model.expire()
        change, self._dirty = self._dirty, Change.NONE
        try:
            screen = self.screen
        except ScreenStackError:  # the app is closing: nothing left to draw
            return
        if (change or self.ticked) and isinstance(screen, ConsoleScreen):
            screen.redraw(change)
        self.ticked = False

    @property
    def theme_colors(self) -> dict[str, str]:
        """The theme's colours for attention, trouble and success: readable on light
        and dark themes alike."""
        theme = self.current_theme
        return {
            "warning": theme.warning or "yellow",
            "error": theme.error or "red",
            "success": theme.success or "green",
        }

    # -- handlers --------------------------------------------------------------------

    def on_from_source(self, message: FromSource) -> None:
        """A batch of the live source's items, folded in order; the screen shows the
        result at its next redraw."""
        asking: list[Request] = []
        for item in message.items:
            if isinstance(item, LinkState):
                self.link = item
                if item.connected:
                    self.model.reconnected()
                else:
                    self.model.disconnected()
                self._dirty |= Change.GATEWAYS
                continue
            if isinstance(item, Synced):
                self._dirty |= self.model.synced()
                continue
            if isinstance(item, BusEvent):
                change = self.model.event(item.appliance, item.path, item.payload)
            else:
                change = self.model.too_large(item.appliance, item.path, item.size)
            if change & Change.NEW_APPROVAL:
                request = self.model.requests.get((item.appliance, item.path[-1]))
                if request is not None:
                    asking.append(request)
            if change & Change.ALERTS:
                self._answered(self.model.alerts[0])
            self._dirty |= change
        if asking:
            self._asking(asking)

    def _asking(self, requests: list[Request]) -> None:
        """New requests: the bell and a notice each (once for them all, past a few)."""
        if len(requests) > MAX_REQUEST_NOTICES:
            self.bell()
            self.notify(
                f"{len(requests)} statements wait for approval (2 shows them)",
                title="Approvals requested",
                severity="warning",
            )
            return
        for request in requests:
            self.bell()
            self.notify(
                f"{printable(request.identity)} waits for approval on "
                f"{printable(request.target)}: {printable(request.sql, 80)}",
                title="Approval requested",
                severity="warning",
            )

    def _answered(self, alert: Alert) -> None:
        """Tell the operator at once when the gateway did not take their action."""
        if alert.alert == "approval_decision_rejected" and alert.request is not None:
            key = (alert.appliance, alert.request)
            if key in self.model.decided:
                self.model.decided.discard(key)
                self.notify(printable(alert.reason), title="Decision refused", severity="error")
        elif alert.alert == "session_kill_rejected" and alert.session is not None:
            key = (alert.appliance, alert.session)
            if key in self._ending:
                self._ending.discard(key)
                self.notify(printable(alert.reason), title="Session not ended", severity="error")

    def on_from_ledger(self, message: FromLedger) -> None:
        self._dirty |= self.model.history(message.records)

    def on_ledger_read(self, message: LedgerRead) -> None:
        if message.query != self.ledger_query:
            return  # an answer to an earlier search
        self.ledger_records = message.records
        if message.error is not None:
            self.ledger_note = message.error
        self._dirty |= Change.LEDGER

    def on_verified(self, message: Verified) -> None:
        verification = message.verification
        failed_before = self.verification is not None and not self.verification.ok
        self.verification = verification
        if not verification.ok and verification.result is not None and not failed_before:
            self._dirty |= self.model.console_alert(
                "ledger_verification_failed", verification.summary
            )
        self._dirty |= Change.LEDGER | Change.GATEWAYS

    # -- ledger (worker threads) -----------------------------------------------------

    def _read_history(self) -> None:
        assert self.ledger is not None
        try:
            records = self.ledger.history()
        except LedgerError as exc:  # damaged too (LedgerDamaged): said, never a crash
            self.post_message(LedgerRead([], None, str(exc)))
            return
        self.post_message(FromLedger(records))

    def verify_ledger(self) -> None:
        if self.ledger is None:
            self.notify("no ledger file on this machine", severity="warning")
            return
        self.run_worker(self._verify, thread=True, group="verify", exclusive=True)

    def _verify(self) -> None:
        assert self.ledger is not None
        try:
            verification = self.ledger.verify()
        except LedgerError as exc:  # a key, a file, or a damaged one
            verification = Verification(False, f"cannot verify: {exc}")
        self.post_message(Verified(verification))

    def read_ledger(self, query: str | None) -> None:
        """Recent records (``query`` None) or a search, for the ledger screen."""
        self.ledger_query = query
        if self.ledger is None:
            return
        self.run_worker(
            partial(self._read_records, query), thread=True, group="ledger-read", exclusive=True
        )

    def _read_records(self, query: str | None) -> None:
        assert self.ledger is not None
        try:
            records = self.ledger.recent() if query is None else self.ledger.search(query)
        except LedgerError as exc:  # damaged too (LedgerDamaged): said, never a crash
            self.post_message(LedgerRead([], query, str(exc)))
            return
        self.post_message(LedgerRead(records, query, None))

    def _recent_again(self) -> None:
        if self.ledger_query is None and isinstance(self.screen, LedgerScreen):
            self.read_ledger(None)

    # -- actions ---------------------------------------------------------------------

    def action_show(self, mode: str) -> None:
        self.switch_mode(mode)

    def replay_session(self, session: str) -> None:
        """Load the session from the ledger file (a worker), then show its replay."""
        if self.ledger is None:
            self.notify("replay reads the ledger file, which is not on this machine")
            return
        self.run_worker(partial(self._load_replay, session), thread=True, group="replay")

    def _load_replay(self, session: str) -> None:
        assert self.ledger is not None
        try:
            steps = load_replay(self.ledger.path, session, answers=False)  # lines suffice
        except LedgerError as exc:  # not a ledger, or damaged: said, never a crash
            self.post_message(ReplayLoaded(session, [], str(exc)))
            return
        self.post_message(ReplayLoaded(session, steps, None))

    def on_replay_loaded(self, message: ReplayLoaded) -> None:
        if message.error is not None or not message.steps:
            self.notify(message.error or "the ledger holds nothing of this session yet")
            return
        self.push_screen(ReplayScreen(message.session, message.steps))

    def open_session(self, key: tuple[str, str]) -> None:
        if key in self.model.sessions:
            self.push_screen(SessionScreen(key))

    def _signed_in(self) -> Operator | None:
        if self.operator is None:
            self.notify(
                "read-only console: start it with --token-file to decide and end sessions",
                severity="warning",
            )
        return self.operator

    def _decidable(self, request: Request) -> bool:
        if self._signed_in() is None:
            return False
        if request.too_large is not None:
            self.notify(
                f"this request ({request.too_large:,} bytes) is larger than the console "
                f"reads: decide it with `sqlgate approvals` (id {printable(request.id, 64)})",
                severity="warning",
            )
            return False
        return True

    def _approvable(self, request: Request) -> bool:
        """Decidable, and its whole text came: an approval binds the whole statement,
        so one the gateway cut is never approved from the part shown (it may be denied)."""
        if not self._decidable(request):
            return False
        if request.sql_truncated:
            self.notify(
                f"only the first {len(request.sql):,} characters of this statement came "
                "(the gateway cut it): it cannot be approved here, unread. Deny it (d), or "
                "read it whole in the ledger and decide with `sqlgate approvals` "
                f"(id {printable(request.id, 64)})",
                title="Not shown in full",
                severity="warning",
            )
            return False
        return True

    def approve(self, request: Request) -> None:
        if self._approvable(request):
            self.run_worker(self._decide(request, "approve"))

    def deny(self, request: Request) -> None:
        if not self._decidable(request):
            return

        def send(reason: str | None) -> None:
            if reason is not None:
                self.run_worker(self._decide(request, "deny", reason=reason or None))

        self.push_screen(
            Prompt(
                f"Deny {printable(request.identity, 40)}'s statement? "
                "The reason reaches the client",
                "reason",
            ),
            send,
        )

    def approve_with_grant(self, request: Request) -> None:
        if not self._approvable(request):
            return
        if request.fingerprint is None:
            self.notify(
                "this statement has no shape to grant: approve it once with a", severity="warning"
            )
            return

        def send(minutes: str | None) -> None:
            if minutes:
                self.run_worker(self._decide(request, "approve", grant_minutes=int(minutes)))

        self.push_screen(
            Prompt(
                f"Approve, and let {printable(request.identity, 40)} run statements of this "
                "shape without asking for how many minutes?",
                "minutes (1-1440)",
                _minutes,
            ),
            send,
        )

    def _still_pending(self, request: Request) -> bool:
        """Whether ``request`` still waits for a decision: it may have gone while the
        operator typed a reason or a grant's minutes (another operator answered it, it
        expired, its session ended). A decision sent then counts for nothing, and the
        gateway records it as a rejected decision the operator is told about as such."""
        current = self.model.requests.get(request.key)
        if current is not None and current.sql_sha256 == request.sql_sha256:
            return True
        self.notify(
            f"{printable(request.identity, 40)}'s statement {printable(request.sql, 60)} is "
            "no longer pending (answered elsewhere, expired, or its session ended): "
            "nothing was sent",
            title="Decision not sent",
            severity="warning",
        )
        return False

    async def _decide(
        self, request: Request, verdict: str, *, reason: str | None = None, grant_minutes: int = 0
    ) -> None:
        assert self.operator is not None
        if not self._still_pending(request):
            return
        body = decision_body(
            verdict,
            request.sql_sha256,
            self.operator.name,
            self.operator.token,
            reason,
            grant_minutes,
        )
        try:
            await self.source.send(request.appliance, f"approvals/{request.id}/decision", body)
        except SendError as exc:
            self.notify(str(exc), title="Decision not sent", severity="error")
            return
        self.model.decided.add(request.key)
        self._dirty |= Change.APPROVALS
        verb = "approval" if verdict == "approve" else "denial"
        self.notify(f"{verb} sent for {printable(request.identity, 40)}'s statement")

    def _nameable(self, key: tuple[str, str]) -> bool:
        """Whether a session's gateway and id can be levels of its kill topic: a
        gateway's can; one with ``+``, ``#``, ``/`` or NUL came from elsewhere (a
        forged event), and MQTT could not publish on it."""
        if any(c in level for level in key for c in "+#/\0"):
            self.notify(
                f"the session {printable(key[1], 60)} of {printable(key[0], 40)} has +, #, "
                "/ or NUL in its name: no gateway made it, and no kill can name it",
                title="Session not ended",
                severity="error",
            )
            return False
        return True

    def end_session(self, key: tuple[str, str]) -> None:
        session = self.model.sessions.get(key)
        if session is None or self._signed_in() is None:
            return
        if session.ended_at is not None:
            self.notify("that session has already ended", severity="warning")
            return
        if not self._nameable(key):
            return

        def send(reason: str | None) -> None:
            if reason is not None:
                self.run_worker(self._end(key, reason or None))

        self.push_screen(
            Prompt(
                f"End the session of {printable(session.identity, 40)} from "
                f"{printable(session.client)}? Reason (recorded in the ledger)",
                "reason",
            ),
            send,
        )

    async def _end(self, key: tuple[str, str], reason: str | None) -> None:
        assert self.operator is not None
        appliance, session = key
        if not self._nameable(key):
            return
        known = self.model.sessions.get(key)
        if known is None or known.ended_at is not None:  # it ended while asked why
            self.notify(
                f"the session {printable(session, 60)} has already ended: nothing was sent",
                title="Session not ended",
                severity="warning",
            )
            return
        body: dict[str, Any] = {"operator": self.operator.name, "token": self.operator.token}
        if reason is not None:
            body["reason"] = reason
        try:
            await self.source.send(appliance, f"kill/{session}", body)
        except SendError as exc:
            self.notify(str(exc), title="Session not ended", severity="error")
            return
        self._ending.add(key)
        self.notify(f"asked {printable(appliance)} to end the session")
