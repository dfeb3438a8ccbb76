"""Each target's global ``sql_mode``, the one every new session starts in.

The gateway reads statements as the server does only under the modes of
``SQL_MODES_READ`` (docs/policy.md): a session's own ``SET sql_mode`` is checked, but it
starts in the server's global mode, which no handshake reports. So the gateway reads it
on a side connection at start and every ``refresh_s`` (15 s); while it holds a mode the gateway
cannot read (``PIPES_AS_CONCAT``, ``ORACLE``, ``MSSQL``, ...) the target's statements are
refused (fail closed) and an alert says why. A target whose mode cannot be read (down,
refused) keeps what was last known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from appliance.config import Config, TargetConfig
from appliance.policy.rules import SQL_MODES_READ
from appliance.side_connection import ReadFailures, connect

__all__ = ["GlobalModes", "unreadable_modes"]

log = logging.getLogger("sqlgate.server_mode")


def unreadable_modes(sql_mode: str) -> str:
    """The modes of ``sql_mode`` (as the server reports it) the gateway cannot read, or
    "" when there is none."""
    modes = {part.strip().upper() for part in sql_mode.split(",")}
    return ",".join(sorted(modes - SQL_MODES_READ))


def _read(target: TargetConfig, timeout_s: float, mark: int) -> str:
    conn = connect(target, None, timeout_s, mark)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@GLOBAL.sql_mode")
            row = cur.fetchone()
    finally:
        conn.close()
    return str(row[0]) if row is not None and row[0] is not None else ""


class GlobalModes:
    """Keeps ``unreadable`` (target name -> the modes of its global ``sql_mode`` the
    gateway cannot read) current; the policy refuses the statements of those targets."""

    def __init__(
        self,
        config: Config,
        on_alert: Callable[[str, str], None],
        refresh_s: float = 15.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.config = config
        self.on_alert = on_alert  # (alert, reason)
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.unreadable: dict[str, str] = {}
        self._failures = ReadFailures("its global sql_mode", log)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read every target's mode once (at most ``timeout_s`` each), then keep them
        current in the background."""
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="global sql_mode")

    async def refresh(self) -> None:
        """Read every target's mode, all at once."""
        await asyncio.gather(*(self._refresh(target) for target in self.config.targets))

    async def _refresh(self, target: TargetConfig) -> None:
        try:
            value = await asyncio.wait_for(
                asyncio.to_thread(_read, target, self.timeout_s, self.config.network.mark),
                self.timeout_s + 1,
            )
        except Exception as exc:  # what was known stays
            self._failures.failed(target.name, exc)
            return
        self._failures.succeeded(target.name)
        self._set(target.name, unreadable_modes(value))

    def _set(self, target: str, modes: str) -> None:
        before = self.unreadable.get(target, "")
        if modes == before:
            return
        if modes:
            self.unreadable[target] = modes
            reason = (
                f"target {target}: the server's global sql_mode holds {modes}, under which "
                "it reads statements differently from the gateway; its statements are "
                "refused until the mode is left out (SET GLOBAL sql_mode on the server)"
            )
            log.error("%s", reason)
            self.on_alert("server_sql_mode", reason)
        else:
            del self.unreadable[target]
            reason = f"target {target}: the server's global sql_mode is readable again"
            log.warning("%s", reason)
            self.on_alert("server_sql_mode", reason)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
