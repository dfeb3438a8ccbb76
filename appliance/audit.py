"""What the gateway writes to its ledger, built from the session core's events.

The ``statement`` record of a relayed command is committed before the command goes to
the target (the shell awaits ``statement`` and only then allows the command); everything
else (session start and end, failed logins, results, the core's own refusals) is
appended in the background, in order, by the same group-committing writer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine, Iterable
from typing import Any

from appliance.config import Config
from appliance.ledger import LedgerError, LedgerUnavailable, LedgerWriter, records
from appliance.mysql.relay import ClientCommand

log = logging.getLogger("sqlgate.audit")

UNAVAILABLE = "sqlgate: audit ledger unavailable"


class Audit:
    """The gateway's ledger writer and the records it keeps about sessions."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.appliance = config.appliance.name
        self.writer = LedgerWriter.from_config(config.ledger)
        self.boot = os.urandom(4).hex()  # session ids stay unique across restarts
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        try:
            await self.writer.open()
        except LedgerUnavailable as exc:
            log.error("audit ledger unavailable (%s): statements are refused until it is", exc)
        self.background(
            records.appliance_start(
                appliance=self.appliance,
                version=_version(),
                config_sha256=self.config.sha256,
            )
        )

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.writer.close()
        except LedgerError as exc:
            log.error("audit ledger: final checkpoint failed: %s", exc)

    def session_id(self, number: int) -> str:
        return f"{self.appliance}-{self.boot}-{number}"

    async def statement(
        self, session: str, cmd: ClientCommand, context: dict[str, Any], decision: str = "allowed"
    ) -> None:
        """Commit the statement record; raises ``LedgerUnavailable`` when it cannot."""
        await self.writer.append(self._statement(session, cmd, context, decision, None, None))

    def refused(
        self, session: str, cmd: ClientCommand, context: dict[str, Any], code: int, reason: str
    ) -> None:
        """A command the core answered itself: its statement and its result."""
        self.background(self._statement(session, cmd, context, "blocked", "protocol", reason))
        self.result(session, cmd.id, rows=0, affected=0, error=int(code), duration_ms=0.0)

    def result(
        self,
        session: str,
        statement_seq: int,
        *,
        rows: int,
        affected: int,
        error: int | None,
        duration_ms: float,
    ) -> None:
        self.background(
            records.result(
                session=session,
                statement_seq=statement_seq,
                rows=rows,
                affected=affected,
                error=None if error is None else int(error),
                duration_ms=duration_ms,
            )
        )

    def background(self, fields: dict[str, Any]) -> None:
        """Append without waiting (the writer keeps the order of calls)."""
        self._spawn(self._append_quietly(fields))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _append_quietly(self, fields: dict[str, Any]) -> None:
        try:
            await self.writer.append(fields)
        except LedgerUnavailable as exc:
            log.error("audit ledger unavailable: a %s record was lost: %s", fields["kind"], exc)
        except ValueError as exc:  # a field the ledger cannot hold: a bug, said in one line
            log.error("audit ledger refused a %s record: %s", fields["kind"], exc)

    @staticmethod
    def _statement(
        session: str,
        cmd: ClientCommand,
        context: dict[str, Any],
        decision: str,
        rule: str | None,
        reason: str | None,
    ) -> dict[str, Any]:
        sql = cmd.sql
        return records.statement(
            session=session,
            statement_seq=cmd.id,
            identity=context["identity"],
            groups=_strings(context["groups"]),
            client=context["client"],
            target=context["target"],
            db=context["db"],
            command=cmd.label,
            sql=sql.decode("utf-8", "replace") if sql is not None else "",
            sql_sha256=records.sql_sha256(cmd.payload),
            decision=decision,
            rule=rule,
            reason=reason,
        )


def _strings(values: Iterable[str]) -> list[str]:
    return sorted(values)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("sqlgate")
    except metadata.PackageNotFoundError:
        return "unknown"
