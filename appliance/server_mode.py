"""Each target's global ``sql_mode``, the one every new session starts in.

The gateway reads statements as the server does only under the modes of
``SQL_MODES_READ`` (docs/policy.md): a session's own ``SET sql_mode`` is checked, but it
starts in the server's global mode, which no handshake reports. So the gateway reads it
on a side connection at start and every ``refresh_s`` (15 s); while it holds a mode the gateway
cannot read (``PIPES_AS_CONCAT``, ``ORACLE``, ``MSSQL``, ...) the target's statements are
refused (fail closed) and an alert says why. A target whose mode cannot be read (down,
refused) keeps what was last known.

What a session starts in is not taken from here: the relay asks each new backend session
its own ``sql_mode`` before the client's first command (``SessionSettings.read_sql_mode``),
so a server restarted into another global mode between two reads, or not up when the
gateway started, cannot slip a session past the policy. This read is what the alert
follows, and what a session that goes back to the global mode (``SET sql_mode = DEFAULT``,
``COM_RESET_CONNECTION``) is refused by; a new session whose mode disagrees with it, or
comes before any read succeeded, has it read again at once (``seen``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from appliance.config import Config, TargetConfig
from appliance.policy.rules import unreadable_modes
from appliance.side_connection import ReadFailures, connect
from appliance.tasks import cancel_and_wait

__all__ = ["GlobalModes", "unreadable_modes"]

log = logging.getLogger("sqlgate.server_mode")


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
        self._targets = {target.name: target for target in config.targets}
        self._read: set[str] = set()  # targets whose last read succeeded
        self._asked: dict[str, float] = {}  # target -> when ``seen`` last had it read
        self._reads: set[asyncio.Task[None]] = set()  # those reads, until they end

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
            async with asyncio.timeout(self.timeout_s + 1):  # (see side_connection.keep_reading)
                value = await asyncio.to_thread(
                    _read, target, self.timeout_s, self.config.network.mark
                )
        except Exception as exc:  # what was known stays
            self._failures.failed(target.name, exc)
            self._read.discard(target.name)
            return
        self._failures.succeeded(target.name)
        self._read.add(target.name)
        self._set(target.name, unreadable_modes(value))

    def seen(self, target: str, sql_mode: str | None) -> None:
        """A new session of ``target`` started in ``sql_mode`` (None: not known). When that
        disagrees with the global mode last read, or no read has succeeded since the last
        failure, read it again now (at most once a second per target): the alert and the
        refusal of sessions that go back to the global mode then follow a restarted
        server at once."""
        if sql_mode is not None and target in self._read:
            if unreadable_modes(sql_mode) == self.unreadable.get(target, ""):
                return
        config = self._targets.get(target)
        now = time.monotonic()
        if config is None or now - self._asked.get(target, -1.0) < 1.0:
            return
        self._asked[target] = now
        task = asyncio.get_running_loop().create_task(
            self._refresh(config), name=f"global sql_mode of {target}"
        )
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

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
        if not await cancel_and_wait([*self._reads, self._task]):
            log.warning("the reads of the global sql_mode did not stop in time: left running")
