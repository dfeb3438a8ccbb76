"""The sessions a gateway serves now, retained on the bus (SPEC §8, docs/events.md).

A console that connects after a session began learns of it only from what the broker
retains: each live session's ``session_start`` record stays retained on
``sessions/<session>/start`` until the session ends. The rules:

- ``started`` publishes the start retained (it is the session's ``start`` event too);
  ``ended`` clears it, after the ``session_end`` event is queued. Both only at a
  session's start and end: the statements' events cost nothing more.
- The bus keeps the latest retained message of each topic through an outage, so a
  session that ended meanwhile is cleared, never left retained; a start that never
  reached the broker is still sent then, as an ordinary event.
- A retained start under this gateway's name that is not one of its live sessions is
  cleared as soon as the bus sees it: left by a run that was killed (it wrote no
  ``session_end``), or a clear of this run that did not reach the broker. The broker
  sends retained messages to each new subscription, so the gateway sees them at each
  (re)connect. Appliance names must be unique on a broker (as for approvals).
- At each (re)connect the live sessions' starts are published again: a broker restarted
  without persistence has forgotten them.
- ``close`` (the gateway stops) clears every start still retained.
"""

from __future__ import annotations

import logging
from typing import Any

from appliance.bus import Bus

__all__ = ["STATUS_FIELD", "LiveSessions"]

log = logging.getLogger("sqlgate.bus")

PATTERN = "sessions/+/start"
STATUS_FIELD = "sessions_retained"
"""In the gateway's ``status``: true when it keeps its live sessions' starts retained,
so a console may take a session whose start the broker does not hold as ended."""


def _topic(session: str) -> str:
    return f"sessions/{session}/start"


class LiveSessions:
    """This gateway's live sessions, as the broker retains them."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._live: dict[str, dict[str, Any]] = {}  # session id -> its start, as published
        self._closed = False
        bus.status_fields[STATUS_FIELD] = True
        bus.subscribe(PATTERN, self._on_start)
        bus.on_connected(self._publish_live)

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, session: object) -> bool:
        return session in self._live

    def started(self, session: str, payload: dict[str, Any]) -> None:
        """The session's ``session_start`` is committed: publish it, retained while the
        session lives (``payload``: the record as the bus carries it)."""
        topic = _topic(session)
        if self._closed:  # a login that completes while the gateway stops: an event only
            self.bus.publish(topic, payload)
            return
        self._live[session] = payload
        self.bus.publish(topic, payload, retain=True)

    def ended(self, session: str) -> None:
        """The session is over (its ``session_end`` is published, or could not be
        written): its retained start is cleared. Once per session is enough; more is
        harmless."""
        if self._live.pop(session, None) is not None:
            self.bus.clear_retained(_topic(session), send_unsent=True)

    def close(self) -> None:
        """The gateway stops: no session of it is live any more."""
        self._closed = True
        live, self._live = self._live, {}
        for session in live:
            self.bus.clear_retained(_topic(session), send_unsent=True)

    def _publish_live(self) -> None:
        for session, payload in self._live.items():
            self.bus.publish(_topic(session), payload, retain=True)

    def _on_start(self, suffix: str, payload: dict[str, Any]) -> None:
        """A start on the broker (retained, or this gateway's own coming back): one that
        is not a live session of this run is cleared."""
        session = suffix.split("/")[1]
        if not payload or session in self._live:
            return
        log.debug("bus: clearing the retained start of session %s, not live here", session)
        self.bus.clear_retained(suffix)
