"""What the gateway writes to its ledger, built from the session core's events.

The ``statement`` record of a relayed command is committed before the command goes to
the target (the shell awaits ``statement`` and only then allows the command), and so is
the ``approval`` of a held one (``append``); everything else (session start and end,
failed logins, results, the core's own refusals) is appended in the background, in
order, by the same group-committing writer.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from appliance.bus import Bus, bounded_sql
from appliance.config import Config
from appliance.ledger import LedgerError, LedgerUnavailable, LedgerWriter, records
from appliance.live_sessions import LiveSessions
from appliance.mysql import packets
from appliance.mysql.constants import Command, CursorType, ErrorCode
from appliance.mysql.packets import ColumnDefinition
from appliance.mysql.relay import ClientCommand, CommandCompleted
from appliance.mysql.transcript import cut_rows, decode_answer
from appliance.policy.gate import Verdict

log = logging.getLogger("sqlgate.audit")

UNAVAILABLE = "sqlgate: audit ledger unavailable"
CONGESTED_RECORDS = 20_000
"""Records waiting for the ledger at which sessions stop reading their clients (each
waits in memory, about 1 kB, until its group commit; the ledger commits 20,000 and more
a second, so a burst this deep is gone in about a second)."""
CONGESTED_BYTES = 64 * 1024 * 1024
"""Bytes of the records waiting for the ledger (``LedgerWriter.backlog_bytes``: their SQL
texts and session recordings, up to ``max_statement_bytes`` and ``[recording] max_bytes``
each) at which sessions stop reading their clients too: counted in records alone, a
ledger that is slow for a while (a stalled disk, a reader's long lock, fsync on slow
storage) while sessions stream large answers kept up to 20,000 of them, gigabytes."""
CONGESTED_RECORDING_BYTES = 4096
"""Bytes of its answer's recording a ``result`` record keeps when it is queued while the
records waiting for the ledger hold ``CONGESTED_BYTES`` or more (its column definitions
and first rows). Congestion stops reading clients, not targets (a target held unread
keeps its locks and runs into its ``net_write_timeout``), so the answers of commands
already sent (up to 512 a session) still come, and whole recordings of up to
``[recording] max_bytes`` each queued hundreds of megabytes past the mark."""
CUT_CONGESTED = "ledger congested"
"""A result's ``recording_cut``: its recording holds only ``CONGESTED_RECORDING_BYTES``
of the answer, which the client got whole, because the ledger was congested."""


_NAMES_A_CURSOR = frozenset(
    {Command.STMT_EXECUTE, Command.STMT_FETCH, Command.STMT_RESET, Command.STMT_CLOSE}
)
"""Commands that open, read or end a prepared statement's cursor."""
_ENDS_EVERY_STATEMENT = frozenset({Command.RESET_CONNECTION, Command.CHANGE_USER})
_CURSOR_TYPES = int(CursorType.READ_ONLY | CursorType.FOR_UPDATE | CursorType.SCROLLABLE)


class Audit:
    """The gateway's ledger writer and the records it keeps about sessions."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.appliance = config.appliance.name
        self.writer = LedgerWriter.from_config(config.ledger, appliance=self.appliance)
        # the alerts the writer makes itself (records lost in an outage, a replaced file,
        # the retention's) reach the console as every other alert does
        self.writer.on_alert = self._publish
        self.boot = os.urandom(4).hex()  # session ids stay unique across restarts
        self._futures: set[asyncio.Future[Any]] = set()  # background appends in flight
        self._relief: asyncio.Future[None] | None = None  # see relieved()
        self.bus: Bus | None = None  # set by the gateway when [bus] is configured
        self.live: LiveSessions | None = None  # with the bus: the starts it keeps retained
        # [recording] max_rows: rows of an answer kept in its recording (0: no recording)
        self.max_rows = config.recording.max_rows if config.recording.enabled else 0

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

    async def settle(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) for the records appended in the background to be
        committed, and so published: a stopping gateway's last ``session_end`` events
        go out before its bus closes."""
        if self._futures:
            await asyncio.wait(set(self._futures), timeout=timeout_s)

    async def close(self) -> None:
        if self._futures:
            await asyncio.gather(*self._futures, return_exceptions=True)
        try:
            await self.writer.close()
        except LedgerError as exc:
            log.error("audit ledger: final checkpoint failed: %s", exc)

    @property
    def congested(self) -> bool:
        """So many records, or so many bytes of them, wait for the ledger that sessions
        should stop reading their clients until ``relieved()`` (which drops none)."""
        writer = self.writer
        return writer.backlog >= CONGESTED_RECORDS or writer.backlog_bytes >= CONGESTED_BYTES

    def relieved(self) -> asyncio.Future[None]:
        """A future answered once the ledger has caught up (a quarter of each congestion
        mark is left), shared by every session that waits."""
        relief = self._relief
        if relief is None or relief.done():
            relief = self._relief = self.writer.below(CONGESTED_RECORDS // 4, CONGESTED_BYTES // 4)
        return relief

    def session_id(self, number: int) -> str:
        return f"{self.appliance}-{self.boot}-{number}"

    async def statements(
        self,
        session: str,
        first_seq: int,
        cmd: ClientCommand,
        verdict: Verdict,
        context: dict[str, Any],
        overrides: dict[str, Any] | None = None,
    ) -> None:
        """Commit one statement record per statement of the command (one group commit);
        raises ``LedgerUnavailable`` when they cannot all be written. ``overrides``
        replaces fields the verdict gave (``decision: pending`` for a statement held for
        approval, ``approved`` with the grant that let it through)."""
        futures = self.statements_soon(session, first_seq, cmd, verdict, context, overrides)
        if futures:
            await asyncio.wait(futures)
        self.committed(futures)

    async def append(self, fields: dict[str, Any]) -> None:
        """Commit one record, the caller waiting: what must be in the ledger before the
        gateway acts on it (an approval before its statement runs). Raises
        ``LedgerUnavailable``, or ``ValueError`` for a record the ledger cannot hold."""
        self._publish(await self.writer.append(fields))

    def statements_soon(
        self,
        session: str,
        first_seq: int,
        cmd: ClientCommand,
        verdict: Verdict,
        context: dict[str, Any],
        overrides: dict[str, Any] | None = None,
    ) -> list[asyncio.Future[Any]]:
        """``statements`` without a task: queue the records now; once every future is done,
        ``committed(futures)`` says whether they are all in the ledger."""
        futures: list[asyncio.Future[Any]] = []
        sql = cmd.sql
        read = records.read_text(sql, context.get("charset")) if sql is not None else ("", {})
        for i in range(len(verdict.parts)):
            record = self._statement(session, first_seq + i, cmd, verdict, i, context, read)
            if overrides:
                record.update(overrides)
            try:
                futures.append(self.writer.append_soon(record))
            except (LedgerUnavailable, ValueError) as exc:
                failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                failed.set_exception(exc)
                futures.append(failed)
        return futures

    def committed(self, futures: list[asyncio.Future[Any]]) -> None:
        """Publish the committed statement records, or raise the first failure
        (``LedgerUnavailable``; a ``ValueError`` is a record the ledger cannot hold)."""
        for future in futures:
            exc = future.exception()
            if exc is not None:
                raise exc
        for future in futures:
            self._publish(future.result())

    def results(
        self,
        session: str,
        first_seq: int,
        verdict: Verdict,
        done: CommandCompleted,
        duration_ms: float,
        who: dict[str, Any],
        deprecate_eof: bool = True,
        cursors: dict[int, list[ColumnDefinition]] | None = None,
        results_charset: str | None = None,
    ) -> None:
        """One result record per statement: a multi-statement answer is split by result
        set; statements after a failed one did not run. ``who``: the session's identity
        fields (``who_fields``), on every record of the session. ``cursors``: the
        session's open cursors (statement id -> columns), kept up to date here so that
        [recording] max_rows can count the rows of a fetch, whose answer has no columns.
        ``results_charset``: the ``character_set_results`` the answer's names and messages
        came in (None: not known), kept with the recording so replay reads them in it."""
        count = len(verdict.parts)
        plain = who
        if done.masked:  # which columns were masked, and how many values (the answer's)
            who = {**who, **_masked_fields(done.masked)}
        recording = done.recorded
        truncated = done.recorded_truncated
        limit = self.max_rows
        columns = None
        if recording is not None and limit and cursors is not None:
            columns = _cursor(cursors, done, recording, deprecate_eof)
        cut_for: dict[str, str] = {}
        if (
            recording is not None
            and len(recording) > CONGESTED_RECORDING_BYTES
            and self.writer.backlog_bytes >= CONGESTED_BYTES
        ):  # the record and statement are kept; of the recording only its start
            recording, truncated = recording[:CONGESTED_RECORDING_BYTES], True
            cut_for = {"recording_cut": CUT_CONGESTED}
        if recording is not None and limit and done.rows > limit:
            cut = cut_rows(
                recording,
                limit,
                command=done.cmd.command,
                deprecate_eof=deprecate_eof,
                columns=columns,
            )
            if cut is not None:  # only the first [recording] max_rows rows are kept
                recording, truncated = cut, True
        kept: dict[str, Any] = {}
        if recording is not None:  # the whole answer, with the first statement's result
            kept = {
                "recording": hashlib.sha256(recording).hexdigest(),
                "recording_bytes": len(recording),
                "recording_truncated": truncated,
                **cut_for,
                "results_charset": results_charset,
                **_statement_id(done.cmd),
            }
        first = {**who, **kept}
        if count == 1:
            self.result(
                session,
                first_seq,
                rows=done.rows,
                affected=done.affected,
                error=done.error,
                duration_ms=duration_ms,
                attachment=recording,
                **first,
            )
            return
        answered = list(done.results or [])
        if done.error is None and not answered:
            answered = [(done.rows, done.affected, False)]
        calls = [True if p.kind == "CALL" else p.calls for p in verdict.parts]
        kinds = _answer_kinds(calls, answered, done.error is None)
        figures, cut_short, ends = _per_statement(kinds, answered)
        if cut_short is not None and done.error is None:
            figures.append(cut_short)
            ends.append(len(answered))
        marks = done.results_masked
        if done.masked and marks is not None and len(marks) == len(answered):
            # each statement names the columns its own results masked, not the text's
            mine = [{**plain, **_masked_fields(m)} for m in _split_masked(done.masked, marks, ends)]
            first = {**mine[0], **kept}
        else:  # no results to tell them apart by: every statement names the answer's
            mine = [who] * (len(figures) + 1)
            plain = who
        for i in range(count):
            if i < len(figures):
                rows, affected = figures[i]
                self.result(
                    session,
                    first_seq + i,
                    rows=rows,
                    affected=affected,
                    error=None,
                    duration_ms=duration_ms,
                    attachment=recording if i == 0 else None,
                    **(first if i == 0 else mine[i]),
                )
            elif i == len(figures) and done.error is not None:
                # what the answer had beyond the finished statements is the failed one's:
                # a CALL's finished sets and the rows of the set the error cut off
                rows = max(0, done.rows - sum(r for r, _ in figures))
                affected = max(0, done.affected - sum(a for _, a in figures))
                self.result(
                    session,
                    first_seq + i,
                    rows=rows,
                    affected=affected,
                    error=done.error,
                    duration_ms=duration_ms,
                    attachment=recording if i == 0 else None,
                    **(first if i == 0 else mine[i]),
                )
            else:
                self.result(
                    session,
                    first_seq + i,
                    rows=None,
                    affected=None,
                    error=None,
                    duration_ms=None,
                    note="not run: an earlier statement of the text failed",
                    **plain,
                )

    def refused(
        self,
        session: str,
        seq: int,
        cmd: ClientCommand,
        context: dict[str, Any],
        code: int,
        reason: str,
        rule: str,
        sql: str = "",
        exact: dict[str, str] | None = None,
    ) -> None:
        """A command the core answered itself: its statement and its result. ``exact``:
        ``sql_hex`` and ``sql_charset`` where ``sql`` as UTF-8 is not the text's bytes."""
        fields: dict[str, Any] = {**self._common(session, seq, cmd, context), **(exact or {})}
        self.background(
            records.statement(
                **fields,
                sql=sql,
                decision="blocked",
                rule=rule,
                reason=reason,
            )
        )
        extra: dict[str, Any] = who_fields(context)
        if rule == "not-decided":
            extra["reason"] = reason
        self.result(session, seq, rows=0, affected=0, error=int(code), duration_ms=0.0, **extra)

    def not_decided(
        self, session: str, seq: int, cmd: ClientCommand, context: dict[str, Any], reason: str
    ) -> None:
        """A command the session took and never decided, because it ended first: its
        statement (blocked: it did not run) and its result. Its text is read in
        ``context["charset"]``, the session's client character set then."""
        sql = cmd.sql
        text, exact = records.read_text(sql, context.get("charset")) if sql else ("", {})
        self.refused(
            session,
            seq,
            cmd,
            context,
            ErrorCode.UNKNOWN,
            reason,
            "not-decided",
            sql=text,
            exact=exact,
        )

    def result(
        self,
        session: str,
        statement_seq: int,
        *,
        rows: int | None,
        affected: int | None,
        error: int | None,
        duration_ms: float | None,
        attachment: bytes | None = None,
        **extra: Any,
    ) -> None:
        self.background(
            records.result(
                session=session,
                statement_seq=statement_seq,
                rows=rows,
                affected=affected,
                error=None if error is None else int(error),
                duration_ms=duration_ms,
                **extra,
            ),
            attachment,
        )

    def background(self, fields: dict[str, Any], attachment: bytes | None = None) -> None:
        """Append without waiting (the writer keeps the order of calls); ``attachment``:
        a session recording, stored with the record (which names its SHA-256)."""
        kind = fields["kind"]
        try:
            future = self.writer.append_nowait(fields, attachment)
        except (LedgerUnavailable, ValueError) as exc:
            self._lost(kind, exc)
            if kind == "session_end" and self.live is not None:
                self.live.ended(fields["session"])
            return
        self._futures.add(future)
        future.add_done_callback(lambda f: self._settled(kind, f))
        if kind == "session_end" and self.live is not None:
            # after its event (the callback above): the start is no longer retained,
            # even when the end could not be written
            live, session = self.live, fields["session"]
            future.add_done_callback(lambda _: live.ended(session))

    def _settled(self, kind: str, future: asyncio.Future[Any]) -> None:
        self._futures.discard(future)
        if future.cancelled():
            return
        if future.exception() is not None:
            self._lost(kind, future.exception())
        else:
            self._publish(future.result())

    def _publish(self, sealed: dict[str, Any] | None) -> None:
        """Live events: the committed record itself, on the bus (best-effort)."""
        bus = self.bus
        if bus is None or sealed is None:
            return
        kind = sealed.get("kind")
        if kind == "alert":
            bus.publish("alerts", bounded_sql(sealed))  # its reason may quote a name
            return
        suffix = _EVENT_TOPICS.get(str(kind))
        session = sealed.get("session")
        if suffix is not None and isinstance(session, str):
            # the record itself, but at most EVENT_SQL_CHARS of its statement
            if kind == "session_start" and self.live is not None:
                self.live.started(session, bounded_sql(sealed))  # retained while it lives
            else:
                bus.publish(f"sessions/{session}/{suffix}", bounded_sql(sealed))

    def _lost(self, kind: str, exc: BaseException | None) -> None:
        if isinstance(exc, LedgerUnavailable) and not self.writer.available:
            # the writer logs the outage (once, not once per record) and names the record
            # in a records_lost alert once the ledger can be written
            log.debug("audit ledger unavailable: a %s record was lost: %s", kind, exc)
        elif isinstance(exc, LedgerUnavailable):  # the writer is stopped or not started
            log.error("audit ledger unavailable: a %s record was lost: %s", kind, exc)
        else:  # a field the ledger cannot hold: a bug, said in one line
            log.error("audit ledger refused a %s record: %s", kind, exc)

    @classmethod
    def _statement(
        cls,
        session: str,
        seq: int,
        cmd: ClientCommand,
        verdict: Verdict,
        index: int,
        context: dict[str, Any],
        read: tuple[str, dict[str, str]],
    ) -> dict[str, Any]:
        """``read``: the command's text as ``records.read_text`` reads it."""
        decision, rule, reason, extra = verdict.ledger_fields(index)
        charset = context.get("charset")
        part = verdict.parts[index]
        fields: dict[str, Any] = cls._common(session, seq, cmd, context)
        sql = cmd.sql
        text, exact = read
        if part.sql is not None and exact and part.span is not None and sql is not None:
            start, end = part.span  # its own bytes, read as the whole text was
            fields["sql"] = records.read_text(sql[start:end], charset)[0]
        elif part.sql is not None:
            fields["sql"] = part.sql
        else:  # the whole text of the command: one statement, or the prepared one's
            fields["sql"] = text
        if len(verdict.parts) > 1:
            fields["part"] = f"{index + 1}/{len(verdict.parts)}"
        whole = part.span == (0, len(sql)) if sql is not None else False
        if part.sql is None or (index == 0 and (len(verdict.parts) > 1 or whole)):
            fields.update(exact)  # the bytes, where ``sql`` as UTF-8 is not what was sent
        elif part.exact:  # of a text read from other bytes (an execute's prepared text)
            fields.update(part.exact)
        fields.update(part.carried)  # an execute's values; a prepare's rewritten text
        rewritten = extra.get("rewritten")
        if rewritten is not None:  # sent as UTF-8 of the client's bytes: read as they are
            extra = {**extra, "rewritten": records.read_text(rewritten.encode(), charset)[0]}
        fields.update(extra)
        return records.statement(
            **fields, decision=decision, rule=rule, reason=reason, statement_kind=part.kind
        )

    @staticmethod
    def _common(
        session: str, seq: int, cmd: ClientCommand, context: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "session": session,
            "statement_seq": seq,
            "identity": context["identity"],
            "groups": _strings(context["groups"]),
            "client": context["client"],
            "target": context["target"],
            "db": context["db"],
            "command": cmd.label,
            "sql_sha256": records.sql_sha256(cmd.payload),
            **token_fields(context),
        }


def _cursor(
    cursors: dict[int, list[ColumnDefinition]],
    done: CommandCompleted,
    recording: bytes,
    deprecate_eof: bool,
) -> list[ColumnDefinition] | None:
    """Keep ``cursors`` (statement id -> the columns of the cursor its last execute
    opened) up to date with ``done``; for a fetch, the columns its rows are read with
    (its answer carries rows only). Only an execute that asked for a cursor and got no
    rows is decoded: its answer is definitions, no row is read on the gateway's path."""
    cmd = done.cmd
    if cmd.command in _ENDS_EVERY_STATEMENT:
        cursors.clear()
    if cmd.command not in _NAMES_A_CURSOR or len(cmd.payload) < 5:
        return None
    statement_id = packets.parse_statement_id(cmd.payload)
    if cmd.command == Command.STMT_FETCH:
        return cursors.get(statement_id)
    if cmd.command == Command.STMT_EXECUTE and _failed_at_once(done):
        return None  # it may have left the cursor open (the relay keeps its masking too)
    cursors.pop(statement_id, None)  # closed, reset, or executed again
    if cmd.command == Command.STMT_EXECUTE and len(cmd.payload) > 5:
        if cmd.payload[5] & _CURSOR_TYPES and not done.rows and done.error is None:
            answer = decode_answer(
                recording,
                command=cmd.command,
                deprecate_eof=deprecate_eof,
                truncated=done.recorded_truncated,
            )
            if answer.cursor_columns is not None:
                cursors[statement_id] = answer.cursor_columns
    return None


def _statement_id(cmd: ClientCommand) -> dict[str, int]:
    """``statement_id`` of a command that names a prepared statement (execute, fetch,
    reset, close), as the server got it: replay reads a fetch's rows with the columns
    of the cursor that statement's execute opened. Matched by the statement's text, a
    fetch was read with those of another statement of the same text (``SELECT ?``
    bound to a number, then to a string), showing values the agent never saw."""
    if cmd.command not in _NAMES_A_CURSOR or len(cmd.payload) < 5:
        return {}
    return {"statement_id": packets.parse_statement_id(cmd.payload)}


def _failed_at_once(done: CommandCompleted) -> bool:
    """An answer that is one ERR: for an execute, one refused here or one the server
    could not start (it reads the parameters before it closes the statement's open
    cursor, so a short packet or a wrong count leaves the cursor open)."""
    return done.error is not None and not done.rows and not done.affected and not done.results


def _masked_fields(masked: Mapping[str, int]) -> dict[str, Any]:
    """A result record's ``masked`` (the columns) and ``masked_values`` (how many)."""
    if not masked:
        return {}
    return {"masked": sorted(masked), "masked_values": sum(masked.values())}


def _split_masked(
    total: Mapping[str, int], marks: Sequence[Mapping[str, int]], ends: Sequence[int]
) -> list[dict[str, int]]:
    """What each statement of a text masked: the running totals at the end of its last
    result less those at the end of the statement before; the statement after the
    finished ones (the one that failed, if any) has what the answer masked after them."""
    split: list[dict[str, int]] = []
    before: Mapping[str, int] = {}
    for end in ends:
        after = marks[end - 1] if end else {}
        split.append({k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)})
        before = after
    split.append({k: v - before.get(k, 0) for k, v in total.items() if v > before.get(k, 0)})
    return split


def _answer_kinds(
    calls: Sequence[bool | None], answered: Sequence[tuple[int, int, bool]], whole: bool
) -> list[str]:
    """How each statement of a text answers, for ``_per_statement``: ``CALL`` (result sets,
    then an OK: a CALL, also one run by ``EXECUTE IMMEDIATE`` or ``EXECUTE``) or ``ONE``
    (one result). A statement that may run a CALL (``Part.calls`` None: an ``EXECUTE``
    of a name when the session prepared a CALL) is read the way that lets the results
    fit the statements: one result first, else as a CALL; when none fits, as one result.
    ``whole``: the answer did not end with an error, so every statement finished (else
    one did not: the error is its own)."""
    n = len(answered)

    @functools.cache
    def fit(i: int, pos: int) -> list[str] | None:
        if pos == n:
            # whole: every statement finished; else the one after them failed
            return ["ONE"] * (len(calls) - i) if whole == (i == len(calls)) else None
        if i == len(calls):
            return None
        options = [calls[i]] if calls[i] is not None else [False, True]
        for as_call in options:
            end = pos + 1
            if as_call:
                while end <= n and answered[end - 1][2]:
                    end += 1
                if end > n:  # its procedure failed part way: the last statement to run
                    if not whole:
                        return ["CALL"] + ["ONE"] * (len(calls) - i - 1)
                    continue
            rest = fit(i + 1, end)
            if rest is not None:
                return ["CALL" if as_call else "ONE", *rest]
        return None

    if all(c is not None for c in calls):
        return ["CALL" if c else "ONE" for c in calls]
    fitted = fit(0, 0) if len(calls) <= 256 else None
    return fitted or ["CALL" if c else "ONE" for c in calls]


def _per_statement(
    kinds: Sequence[str], answered: Sequence[tuple[int, int, bool]]
) -> tuple[list[tuple[int, int]], tuple[int, int] | None, list[int]]:
    """Split an answer's results among the statements of its text, in order: one result
    each, but a CALL takes its procedure's result sets and the OK that ends it. Returns
    the ``(rows, affected)`` of each statement that finished, and those gathered for a
    CALL whose answer stopped before its OK (its procedure failed), else None; and for
    each statement that finished, how many results the answer had at its end. Results
    beyond the statements (not expected) go to the last one."""
    figures: list[tuple[int, int]] = []
    ends: list[int] = []
    pos = 0
    for kind in kinds:
        if pos >= len(answered):
            break
        if kind != "CALL":
            rows, affected, _ = answered[pos]
            pos += 1
            figures.append((rows, affected))
            ends.append(pos)
            continue
        rows = affected = 0
        ended = False
        while pos < len(answered):
            r, a, result_set = answered[pos]
            pos += 1
            rows += r
            affected += a
            if not result_set:
                ended = True
                break
        if not ended:
            return figures, (rows, affected), ends
        figures.append((rows, affected))
        ends.append(pos)
    if pos < len(answered) and figures:
        rest = answered[pos:]
        rows, affected = figures[-1]
        figures[-1] = (rows + sum(r for r, _, _ in rest), affected + sum(a for _, a, _ in rest))
        ends[-1] = len(answered)
    return figures, None, ends


_EVENT_TOPICS = {
    "session_start": "start",
    "statement": "statements",
    "result": "results",
    "session_end": "end",
    "approval": "approvals",
}
"""Where each kind of a session's records is published (``sessions/<session>/...``)."""


def who_fields(context: dict[str, Any]) -> dict[str, Any]:
    """Identity, groups and (for a token) subject and token id: on each session record."""
    return {
        "identity": context["identity"],
        "groups": _strings(context["groups"]),
        **token_fields(context),
    }


def token_fields(context: dict[str, Any]) -> dict[str, Any]:
    """A token session's subject and token id, on each of its records."""
    if "subject" not in context:
        return {}
    return {"subject": context["subject"], "token_id": context["token_id"]}


def _strings(values: Iterable[str]) -> list[str]:
    return sorted(values)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("sqlgate")
    except metadata.PackageNotFoundError:
        return "unknown"
