"""An operator ends a live session over the bus (SPEC §11: the console's ``k`` key).

The gateway listens on ``<prefix>/<appliance>/kill/<session>`` (operator → gateway, not
retained). Anyone who can publish to the broker can send a kill, so what makes it count
is the operator's token, checked exactly as for an approval decision
(``approvals.verify_operator``: verified like a client's token, of a member of
``[approvals] approver_groups``), and the session must be live on this gateway. A kill
that counts is an ``alert`` record (``session_killed``) and then the end of the session:
both connections are cut and a statement it holds for approval is answered, not run. A
kill that does not count is an ``alert`` (``session_kill_rejected``, with why) and
changes nothing.

Active only where approvals are (``[approvals]`` with ``[identity]`` for the tokens and
``[bus]`` for the topic): without them there is no one who could prove to be an approver.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from appliance.approvals import FloodLimit, OperatorRefused, verify_operator
from appliance.bus import Bus
from appliance.config import ApprovalsConfig
from appliance.identity import TokenVerifier
from appliance.ledger import records

__all__ = ["Killable", "SessionKills", "ended_by_reason"]

log = logging.getLogger("sqlgate.kill")

TOPIC = "kill/+"
"""The suffix the gateway subscribes to; the second level is the session id."""

_MAX_SESSION_CHARS = 128  # of a topic's session id quoted in an alert record


class Killable(Protocol):
    """A live session that an operator can end."""

    def end_by_operator(self, operator: str, reason: str) -> None:
        """Cut both connections; ``reason`` goes into the ``session_end`` record."""


def ended_by_reason(operator: str, reason: str | None) -> str:
    """The ``reason`` of the ``session_end`` record of a session an operator ended."""
    return f"ended by operator {operator}: {reason or 'no reason given'}"


class SessionKills:
    """The gateway's side of ``kill/<session>``: checks each kill, then ends the session."""

    def __init__(
        self,
        config: ApprovalsConfig,
        bus: Bus,
        tokens: TokenVerifier,
        find: Callable[[str], Killable | None],
        record: Callable[[dict[str, Any]], None],
    ) -> None:
        """``find`` gives the live session with an id (or None); ``record`` appends a
        ledger record in the background (``Audit.background``)."""
        self.config = config
        self.tokens = tokens
        self.find = find
        self.record = record
        self._checks: set[asyncio.Task[None]] = set()
        self._flood = FloodLimit(self._report_unrecorded)
        bus.subscribe(TOPIC, self._on_kill, delete_retained=True)

    def _on_kill(self, suffix: str, payload: dict[str, Any]) -> None:
        if not payload:  # an empty payload is a cleared retained message, not a kill
            return
        session = suffix.split("/", 1)[1]
        # the token is checked off the bus's loop callback (its keys may be fetched)
        task = asyncio.get_running_loop().create_task(self._check(session, payload))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _check(self, session: str, payload: dict[str, Any]) -> None:
        operator = payload.get("operator")
        token = payload.get("token")
        reason = payload.get("reason")
        if (
            payload.get("v") != 1
            or not isinstance(operator, str)
            or not isinstance(token, str)
            or (reason is not None and not isinstance(reason, str))
        ):
            self._rejected(
                session,
                'a malformed kill: expected {"v": 1, "operator": name, "token": JWT, '
                '"reason": optional text}',
            )
            return
        try:
            verified = await verify_operator(
                self.tokens, self.config.approver_groups, operator, token
            )
        except OperatorRefused as exc:
            self._rejected(session, str(exc))
            return
        # looked up after the token (an await): the session may have ended meanwhile
        leg = self.find(session)
        if leg is None:
            self._rejected(session, f"no live session {_clip(session)} on this gateway")
            return
        self.record(
            records.alert(
                alert="session_killed",
                session=session,
                operator=verified.user,
                reason=reason or "no reason given",
            )
        )
        why = ended_by_reason(verified.user, reason)
        log.info("session %s %s", session, why)
        leg.end_by_operator(verified.user, why)

    def _rejected(self, session: str, reason: str) -> None:
        """One alert each, up to a limit a second (``FloodLimit``)."""
        if not self._flood.allow():
            return
        log.warning("kill of session %s rejected: %s", _clip(session), reason)
        self.record(
            records.alert(alert="session_kill_rejected", session=_clip(session), reason=reason)
        )

    def _report_unrecorded(self, count: int) -> None:
        reason = (
            f"{count} more kills that did not count arrived within a second and were not "
            f"recorded one by one (more than {self._flood.per_s} a second: a flood)"
        )
        log.warning("%s", reason)
        self.record(records.alert(alert="session_kill_rejected", reason=reason))

    async def close(self) -> None:
        """The gateway stops: kills being checked finish first."""
        if self._checks:
            await asyncio.gather(*self._checks, return_exceptions=True)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_SESSION_CHARS else text[: _MAX_SESSION_CHARS - 3] + "..."
