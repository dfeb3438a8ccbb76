"""Just-in-time approvals (SPEC §8): a held statement waits for an operator's decision.

The gateway publishes the request on the bus, retained while it is pending, and waits.
A decision counts only when it carries a token that the gateway verifies like a client's,
from a member of ``approver_groups`` who is not the requester, for the exact statement
(its SHA-256) of a request still pending; the first such decision wins and the request is
cleared. Anyone who can publish to the broker can send a decision: what makes it count is
the token, never the topic. Decisions that do not count are reported (``on_alert``)
and change nothing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.bus import Bus, BusUnavailable, bounded_sql
from appliance.config import ApprovalsConfig
from appliance.identity import TokenRejected, TokenVerifier, VerifiedToken

__all__ = ["Approvals", "FloodLimit", "Grant", "OperatorRefused", "Outcome", "verify_operator"]

_MAX_GRANT_MINUTES = 24 * 60
_BUS_START_WAIT_S = 5.0
"""How long a request made before the bus's first connection attempt ended waits for it
(a gateway accepts clients before it has reached the broker)."""
_MAX_ID_CHARS = 64  # a request id is 32 hex digits; a topic may hold 65,535 bytes
# Rejected decisions recorded one by one per second; past that (a flood from someone with
# the operators' broker login), they are counted and one alert says how many there were.
_REJECTIONS_PER_S = 20
_CHECKS_PER_REQUEST = 8  # decisions of one request checked at once (token verification)
_NOT_PENDING = "a decision for a request that is not pending"
_SHUTTING_DOWN = "the gateway is shutting down"

log = logging.getLogger("sqlgate.approvals")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a held statement ended."""

    verdict: str  # "approved", "denied", "expired" or "unavailable"
    approver: str | None
    reason: str | None
    latency_ms: float
    request_id: str | None = None
    grant_minutes: int = 0  # approved with a grant for this shape of statement
    grant: tuple[tuple[str, str, str], Grant] | None = None
    """The grant that comes with the approval, by (identity, target, fingerprint): it
    counts once ``Approvals.install`` has it, after its approval record is committed."""


def _unseen(down_s: float, wait_s: float) -> str | None:
    """Why nobody decided, when the broker was away for part of the wait (None: it was
    there all along): an expiry that says only "nobody decided in time" sends people to
    look for idle operators, not at the broker."""
    if down_s < 0.5:
        return None
    if down_s >= wait_s - 0.5:
        return (
            f"the MQTT broker was unreachable for all of the {wait_s:g} s wait: no operator "
            "could see the request or answer it"
        )
    return (
        f"the MQTT broker was unreachable for {down_s:.0f} s of the {wait_s:g} s wait: "
        "operators could not see the request or answer it meanwhile"
    )


@dataclass(frozen=True, slots=True)
class Grant:
    """An operator approved a statement shape for an identity, for a while."""

    approver: str
    until: float  # time.time()
    request_id: str


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Outcome]
    requester: str
    sql_sha256: str
    started: float
    request_id: str
    grant_key: tuple[str, str, str] | None  # (identity, target, fingerprint)
    session: str | None = None  # the held session's id: an operator may end it
    payload: dict[str, Any] | None = None  # the request as published (again on reconnect)
    requester_subject: str | None = None  # the requester's token subject (sub), if any


class FloodLimit:
    """Anyone with the operators' broker login can send messages that do not count (a
    decision, a kill): each is an alert record, up to ``per_s`` a second; past that they
    are counted, and ``report(count)`` is called once a second later, so that a flood
    cannot fill the ledger's disk."""

    def __init__(self, report: Callable[[int], None], per_s: int = _REJECTIONS_PER_S) -> None:
        self.report = report
        self.per_s = per_s
        self._window = (0, 0)  # (second, alerts recorded in it)
        self._unrecorded = 0  # past the limit, not yet reported

    def allow(self) -> bool:
        """Whether this one may be recorded on its own; if not, it is counted."""
        second = int(time.monotonic())
        start, recorded = self._window
        if start != second:
            start, recorded = second, 0
        if recorded >= self.per_s:
            if not self._unrecorded:
                asyncio.get_running_loop().call_later(1.0, self._report)
            self._unrecorded += 1
            return False
        self._window = (start, recorded + 1)
        return True

    def _report(self) -> None:
        count, self._unrecorded = self._unrecorded, 0
        if count:
            self.report(count)


class OperatorRefused(Exception):
    """Why an operator's message (a decision, a kill) does not count, in words for the
    ``alert`` record."""


async def verify_operator(
    tokens: TokenVerifier, approver_groups: Sequence[str], operator: str, token: str
) -> VerifiedToken:
    """The approver behind an operator's message on the bus.

    Anyone who can publish to the broker can send one, so only the token counts: it is
    verified like a client's token for the user ``operator``, and its user must be in
    one of ``approver_groups``. ``OperatorRefused`` says why not.
    """
    try:
        verified = await tokens.verify(operator, token.encode("ascii", "replace"))
    except TokenRejected as exc:
        raise OperatorRefused(f"the operator's token was refused: {exc}") from None
    if not verified.groups & set(approver_groups):
        groups = ", ".join(approver_groups)
        raise OperatorRefused(f"{verified.user} is not an approver (approver groups: {groups})")
    return verified


class Approvals:
    """The gateway's pending requests and the decisions that settle them."""

    def __init__(
        self,
        config: ApprovalsConfig,
        bus: Bus,
        tokens: TokenVerifier,
        on_alert: Callable[[str, str, str], None] = lambda alert, request_id, reason: None,
    ) -> None:
        self.config = config
        self.bus = bus
        self.tokens = tokens
        self.on_alert = on_alert
        self._pending: dict[str, _Pending] = {}
        self._grants: dict[tuple[str, str, str], Grant] = {}
        self._finished: collections.deque[str] = collections.deque(maxlen=1024)
        self._checks: set[asyncio.Task[None]] = set()
        self._checking: collections.Counter[str] = collections.Counter()  # by request id
        self._flood = FloodLimit(self._report_unrecorded)
        self._closed = False  # the gateway is stopping: no new request
        bus.subscribe("approvals/+/decision", self._on_decision, delete_retained=True)
        bus.subscribe("approvals/+", self._on_request)
        bus.on_connected(self._publish_pending)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def granted(self, identity: str, target: str, fingerprint: str | None) -> Grant | None:
        """A grant that approves this statement shape for this identity now, if any."""
        if fingerprint is None:
            return None
        key = (identity, target, fingerprint)
        grant = self._grants.get(key)
        if grant is not None and grant.until <= time.time():
            del self._grants[key]
            return None
        return grant

    def install(self, outcome: Outcome) -> None:
        """The grant that came with an approval counts from now: its approval record is
        committed (until then, a statement of the same shape waits for a person)."""
        if outcome.grant is not None:
            key, grant = outcome.grant
            self._grants[key] = grant

    async def request(
        self,
        fields: dict[str, Any],
        requester: str,
        sql_sha256: str,
        fingerprint: str | None = None,
        requester_subject: str | None = None,
    ) -> Outcome:
        """Publish a request (``fields``: who, what, where, rule, reason) and wait for its
        decision, at most ``timeout_s``; the request is cleared whatever the outcome.
        ``fingerprint`` (the statement's shape) lets an operator grant the shape. Once
        the request has ended (decided, expired, its waiter cancelled), no decision
        counts any more: one whose token is still being checked installs no grant."""
        request_id = uuid.uuid4().hex
        if self._closed:  # the gateway stops: a statement held now is not put to anyone
            return Outcome("unavailable", None, _SHUTTING_DOWN, 0.0, request_id)
        started = time.monotonic()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        grant_key = None
        if fingerprint is not None:
            grant_key = (requester, str(fields.get("target")), fingerprint)
        session = fields.get("session")
        pending = _Pending(
            future,
            requester,
            sql_sha256,
            started,
            request_id,
            grant_key,
            session if isinstance(session, str) else None,
            None,  # not published yet: not published again on a connect either
            requester_subject,
        )
        # pending from now on, before any wait: a session that ends, or whose token
        # expires, while the gateway has yet to reach the broker withdraws it (end_session)
        self._pending[request_id] = pending
        topic = f"approvals/{request_id}"
        published = False  # once it may be on the broker: cleared when it ends
        try:
            if not self.bus.connected:  # just started: the broker may be answering now
                attempt: asyncio.Future[Any] = asyncio.ensure_future(
                    self.bus.wait_first_attempt(_BUS_START_WAIT_S)
                )
                waits: set[asyncio.Future[Any]] = {attempt, future}
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    attempt.cancel()
                if future.done():  # withdrawn meanwhile: never put to the operators
                    return future.result()
            timeout = self.config.timeout_s
            pending.payload = {
                **bounded_sql(fields),  # at most EVENT_SQL_CHARS of the statement
                "id": request_id,
                "sql_sha256": sql_sha256,
                "approver_groups": list(self.config.approver_groups),
                "fingerprint": fingerprint,
                "requested_at": time.time(),
                "expires_at": time.time() + timeout,
            }
            published = True
            try:
                await self.bus.publish_now(topic, pending.payload, retain=True)
            except BusUnavailable as exc:
                # Never sent (not connected): nothing to clear. A clear queued for each
                # statement held during an outage was kept until the broker came back
                # (a retained message is never dropped), without bound.
                published = exc.sent
                return Outcome("unavailable", None, str(exc), 0.0, request_id)
            down_before = self.bus.downtime()
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                if not future.cancel():  # decided as it expired: that decision counts
                    return future.result()
                return Outcome(
                    "expired",
                    None,
                    _unseen(self.bus.downtime() - down_before, timeout),
                    (time.monotonic() - started) * 1000,
                    request_id,
                )
        finally:
            future.cancel()  # ended: a decision still being checked finds it done
            self._pending.pop(request_id, None)
            self._finished.append(request_id)
            if published:
                self.bus.clear_retained(topic)

    def _publish_pending(self) -> None:
        """Connected again: the requests still pending are published again (retained),
        since a broker that restarted without persistence has lost them, and operators
        who look now would not see the statements that wait for them."""
        for pending in self._pending.values():
            if not pending.future.done() and pending.payload is not None:
                self.bus.publish(f"approvals/{pending.request_id}", pending.payload, retain=True)

    def _on_request(self, suffix: str, payload: dict[str, Any]) -> None:
        """A request this gateway is not waiting for is left from a run that ended while
        it was pending (its client has long had an error): clear it. One of this run's
        that ended is cleared again: its clear may not have reached the broker."""
        request_id = suffix.split("/")[1]
        if not payload or request_id in self._pending:
            return
        if request_id in self._finished:
            self.bus.clear_retained(suffix)
            return
        self._finished.append(request_id)
        self.bus.clear_retained(suffix)
        self.on_alert(
            "approval_request_cleared", request_id, "a request left pending by an earlier run"
        )

    def _on_decision(self, suffix: str, payload: dict[str, Any]) -> None:
        if not payload:  # a cleared retained message (the bus deletes a retained decision)
            return
        parts = suffix.split("/")
        request_id = parts[1] if len(parts) == 3 else ""
        pending = self._pending.get(request_id)
        if pending is None or pending.future.done():
            self._rejected(request_id, _NOT_PENDING)
            return
        if payload.get("v") != 1:
            self._rejected(request_id, 'a decision must say "v": 1 (the format this reads)')
            return
        if self._checking[request_id] >= _CHECKS_PER_REQUEST:
            self._rejected(
                request_id,
                f"more than {_CHECKS_PER_REQUEST} decisions for this request are being checked "
                "at once; send the decision again",
            )
            return
        self._checking[request_id] += 1
        task = asyncio.get_running_loop().create_task(self._check(pending, payload))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)
        task.add_done_callback(lambda _: self._checked(request_id))

    def _checked(self, request_id: str) -> None:
        left = self._checking[request_id] - 1
        if left > 0:
            self._checking[request_id] = left
        else:
            del self._checking[request_id]

    async def _check(self, pending: _Pending, payload: dict[str, Any]) -> None:
        request_id = pending.request_id
        verdict = payload.get("decision")
        operator = payload.get("operator")
        token = payload.get("token")
        reason = payload.get("reason")
        if verdict not in ("approve", "deny"):
            self._rejected(request_id, "a decision must be 'approve' or 'deny'")
            return
        if not isinstance(operator, str) or not isinstance(token, str):
            self._rejected(request_id, "a decision needs the operator's name and token")
            return
        if reason is not None and not isinstance(reason, str):
            self._rejected(request_id, "a decision's reason must be text")
            return
        grant_minutes = payload.get("grant_minutes", 0)
        if (
            type(grant_minutes) is not int
            or not 0 <= grant_minutes <= _MAX_GRANT_MINUTES
            or (grant_minutes and (verdict != "approve" or pending.grant_key is None))
        ):
            self._rejected(
                request_id,
                f"grant_minutes must be a whole number from 0 to {_MAX_GRANT_MINUTES}, and "
                "only with an approval of a statement that has a shape",
            )
            return
        if payload.get("sql_sha256") != pending.sql_sha256:
            self._rejected(request_id, "the decision is for another statement (sql_sha256)")
            return
        try:
            verified = await verify_operator(
                self.tokens, self.config.approver_groups, operator, token
            )
        except OperatorRefused as exc:
            self._rejected(request_id, str(exc))
            return
        if verified.user == pending.requester or (
            pending.requester_subject is not None and verified.subject == pending.requester_subject
        ):
            # one person under another name (a second e-mail of one subject) is the same
            self._rejected(request_id, f"{verified.user} may not approve their own statement")
            return
        if pending.future.done() or self._pending.get(request_id) is not pending:
            # another decision came first (single use), or the request ended while this
            # one was checked: it counts for nothing, and says so like a later one
            self._rejected(request_id, _NOT_PENDING)
            return
        outcome = "approved" if verdict == "approve" else "denied"
        latency = (time.monotonic() - pending.started) * 1000
        log.info("request %s %s by %s", request_id, outcome, verified.user)
        grant = None
        if grant_minutes and pending.grant_key is not None:
            until = time.time() + grant_minutes * 60
            grant = (pending.grant_key, Grant(verified.user, until, request_id))
        pending.future.set_result(
            Outcome(outcome, verified.user, reason, latency, request_id, grant_minutes, grant)
        )

    def _rejected(self, request_id: str, reason: str) -> None:
        """Report a decision that did not count: one alert each, up to a limit a second;
        past it they are counted, and reported together a second later."""
        if len(request_id) > _MAX_ID_CHARS:
            request_id = request_id[: _MAX_ID_CHARS - 3] + "..."
        if self._flood.allow():
            self.on_alert("approval_decision_rejected", request_id, reason)

    def _report_unrecorded(self, count: int) -> None:
        self.on_alert(
            "approval_decision_rejected",
            "",
            f"{count} more decisions that did not count arrived within a second and were "
            f"not recorded one by one (more than {_REJECTIONS_PER_S} a second: a flood)",
        )

    def end_session(self, session: str, operator: str, reason: str) -> None:
        """``session`` ended (an operator ended it, or it ended first: ``operator`` is
        then sqlgate), or its token expired: a statement it holds is answered (denied by
        ``operator``, with ``reason``) and never runs; its request is cleared, and a
        decision sent for it later is rejected as one for a request not pending."""
        for pending in list(self._pending.values()):
            if pending.session == session and not pending.future.done():
                latency = (time.monotonic() - pending.started) * 1000
                pending.future.set_result(
                    Outcome("denied", operator, reason, latency, pending.request_id)
                )

    async def close(self) -> None:
        """The gateway stops: every held statement is answered (it does not run), and so
        is one held from now on (a session still busy as the gateway drains may send one),
        without a request: nobody could approve it into a gateway that is stopping."""
        self._closed = True
        for pending in list(self._pending.values()):
            if not pending.future.done():
                latency = (time.monotonic() - pending.started) * 1000
                pending.future.set_result(
                    Outcome("unavailable", None, _SHUTTING_DOWN, latency, pending.request_id)
                )
        if self._checks:
            await asyncio.gather(*self._checks, return_exceptions=True)
