"""The gateway's own interception rules: installed at start, watched, removed at exit.

Only with ``[network] manage_rules = true``. The rules come from the pure plan
(``netconfig.plan``) and are written through netlink (``netconfig.nft``); the sentinel
(``netconfig.sentinel``) watches the database-side interfaces for connections that did
not pass the gateway and puts the rules back when they change behind the gateway's back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from appliance.config import Config, ConfigError
from appliance.target_names import lookup
from netconfig import nft
from netconfig.plan import Plan, plan_rules
from netconfig.routes import RouteError
from netconfig.sentinel import Alert, Sentinel, SentinelError, not_started

log = logging.getLogger("sqlgate.net")


class InterceptionError(Exception):
    """The rules could not be put in place (one line, for the log). A sentinel that
    cannot start is an alert instead: the gateway serves behind its rules without it."""


class Interception:
    """Apply the plan, run the sentinel, and undo both on a clean stop."""

    def __init__(
        self,
        config: Config,
        on_alert: Callable[[Alert], None] | None = None,
        resolve: Callable[[str], Sequence[str]] = lookup,
    ) -> None:
        self.config = config
        self._resolve = resolve
        self.plan: Plan = plan_rules(config, resolve=resolve)
        self._on_alert = on_alert
        self._sentinel: Sentinel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changing = asyncio.Lock()  # a re-plan and the stop, one at a time
        self._stopped = False
        self._unplanned: str | None = None  # why the last re-plan could not be made

    async def start(self) -> None:
        try:
            await self._start()
        except (nft.NftError, SentinelError, RouteError) as exc:
            raise InterceptionError(str(exc)) from exc

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        report = await asyncio.to_thread(nft.apply, self.plan)
        log.info(
            "interception rules in place: %d rules (%d added, %d removed)",
            len(self.plan.rules),
            len(report.added),
            len(report.removed),
        )
        await self._watch()

    async def _watch(self) -> None:
        """Start the sentinel on the current plan."""
        interfaces = list(self.config.network.interfaces or ()) or None
        sentinel = Sentinel(self.plan, on_alert=self._alert, interfaces=interfaces)
        try:
            await asyncio.to_thread(sentinel.start)
        except SentinelError as exc:  # no CAP_NET_RAW, no route yet: serve without it
            self._report(not_started(str(exc)))
            return
        self._sentinel = sentinel

    async def replan(self) -> None:
        """A target's name moved (``appliance.target_names``): put the rules for the
        addresses it is known by now in place, and watch those. The sentinel stops first,
        or it would see the new rules as a drift and put the old ones back."""
        async with self._changing:
            if self._stopped:
                return
            try:
                plan = plan_rules(self.config, resolve=self._resolve)
            except ConfigError as exc:  # e.g. an address the rules cannot match
                if str(exc) != self._unplanned:  # said once, not at every look-up
                    self._unplanned = str(exc)
                    log.error("interception rules not changed: %s", exc)
                return
            self._unplanned = None
            if plan == self.plan:
                return
            if self._sentinel is not None:
                await asyncio.to_thread(self._sentinel.stop)
                self._sentinel = None
            try:
                report = await asyncio.to_thread(nft.apply, plan)
            except nft.NftError as exc:  # tried again at the next look-up
                log.error("interception rules could not follow the targets: %s", exc)
                await self._watch()  # on the plan in place
                return
            self.plan = plan
            log.info(
                "interception rules follow the targets: %d rules (%d added, %d removed)",
                len(plan.rules),
                len(report.added),
                len(report.removed),
            )
            await self._watch()

    def _alert(self, alert: Alert) -> None:
        """Called from the sentinel's threads: hand the alert to the event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._report, alert)

    def _report(self, alert: Alert) -> None:
        details = " ".join(f"{k}={v}" for k, v in sorted(alert.details.items()))
        log.warning("alert %s: %s %s", alert.kind, alert.message, details)
        if self._on_alert is not None:
            self._on_alert(alert)

    async def stop(self) -> bool:
        """Stop watching and remove the rules (unless they are kept); False when they
        could not be removed, which is logged in one line with what to do."""
        async with self._changing:
            self._stopped = True
            if self._sentinel is not None:
                await asyncio.to_thread(self._sentinel.stop)
                self._sentinel = None
        if self.config.network.keep_rules_on_stop:
            log.info(
                "interception rules kept (keep_rules_on_stop): connections to the targets "
                "fail until the gateway is back, or until 'sqlgate net remove'"
            )
            return True
        try:
            removed = await asyncio.to_thread(nft.remove)
        except nft.NftError as exc:
            log.error(
                "cannot remove the interception rules: %s; connections to the targets fail "
                "until they are removed with 'sqlgate net remove' or the gateway is back",
                exc,
            )
            return False
        log.info("interception rules %s", "removed" if removed else "were already gone")
        return True
