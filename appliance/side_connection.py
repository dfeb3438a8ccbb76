"""A connection of the gateway's own to a target, for what it must ask the database
itself (the rows a held statement would touch, the views that show masked columns).

PyMySQL in a worker thread, with the target's vaulted credential and TLS settings, and
short timeouts: these questions are courtesies or safety checks, never on a client's
path while it could block the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from appliance import marked_socket
from appliance.config import TargetConfig, TargetTLS

__all__ = ["BURST_S", "UNREADY_RETRY_S", "ReadFailures", "connect", "keep_reading"]


class ReadFailures:
    """Why the last read of each target failed: logged when the reason changes, not at
    every retry of a background refresh."""

    def __init__(self, what: str, log: logging.Logger) -> None:
        self.what = what  # what is read, as in "cannot read <what>"
        self.log = log
        self._why: dict[str, str] = {}  # target -> why its last read failed

    def failed(self, target: str, exc: BaseException) -> None:
        why = str(exc) or type(exc).__name__
        if self._why.get(target) != why:
            self._why[target] = why
            self.log.warning("target %s: cannot read %s: %s", target, self.what, why)

    def succeeded(self, target: str) -> bool:
        """Forget the target's failure; True when there was one."""
        return self._why.pop(target, None) is not None


UNREADY_RETRY_S = 2.0
"""How soon a target whose read has not worked yet (or that statements wait for) is
read again."""
BURST_S = 0.2
"""After a change: the pause that lets a burst of DDL finish before the next read."""


async def keep_reading(
    refresh: Callable[[], Awaitable[None]],
    wake: asyncio.Event,
    every_s: float,
    hurry: Callable[[], bool],
    settle: Callable[[], bool] = lambda: True,
) -> None:
    """A background refresh: ``refresh`` every ``every_s``, and soon after ``wake`` is
    set (a change went through the gateway), ``BURST_S`` later when ``settle()`` says
    nobody waits; every ``UNREADY_RETRY_S`` while ``hurry()`` (a target not read yet).

    Its waits are ``asyncio.timeout``, not ``asyncio.wait_for``, here and in the reads it
    makes: on Python 3.11 the latter loses a cancel that comes in the turn of the loop
    its wait ended in, and the refresh went on through the gateway's stop (see
    ``appliance.tasks``)."""
    while True:
        try:
            async with asyncio.timeout(UNREADY_RETRY_S if hurry() else every_s):
                await wake.wait()
            if settle():
                await asyncio.sleep(BURST_S)
        except TimeoutError:
            pass
        wake.clear()
        await refresh()


def connect(target: TargetConfig, db: str | None, timeout_s: float, mark: int) -> Any:
    """A PyMySQL connection to ``target`` from a socket with the gateway's ``mark``
    (blocking: call it in a thread)."""
    import pymysql

    tls: dict[str, Any] | None = None
    if target.tls is not TargetTLS.DISABLED:
        context = ssl.create_default_context(
            cafile=str(target.tls_ca_file) if target.tls_ca_file else None
        )
        if not target.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        tls = {"ssl": context}
    conn = pymysql.connect(
        defer_connect=True,
        host=target.host,
        port=target.port,
        user=target.user,
        password=target.password,
        database=db,
        connect_timeout=max(1, int(timeout_s)),
        read_timeout=max(1, int(timeout_s)),
        write_timeout=max(1, int(timeout_s)),
        autocommit=False,
        **(tls or {"ssl_disabled": target.tls is TargetTLS.DISABLED}),
    )
    conn.connect(marked_socket.connect(target.host, target.port, mark, max(1.0, timeout_s)))
    return conn
