"""A recorded session, shown again (SPEC §10): ``sqlgate replay`` and the console.

The ledger holds what happened (the session's records) and what the agent saw (the
recording of each answer, bound to its ``result`` record by SHA-256). ``steps`` turns a
session into ``Step``s in ledger order, one at a time, each with the seconds since the
session began and its text; a recording whose hash does not match is not shown
("altered"). ``play`` writes the steps at the session's own pace divided by ``speed``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from appliance.ledger.store import LedgerDamaged, RecordingReader, export
from appliance.mysql.constants import Command
from appliance.mysql.packets import ColumnDefinition
from appliance.mysql.transcript import Answer, ResultSet, Value, decode_answer
from appliance.shown import as_sent, counted, json_line, shown, statement_lines

__all__ = ["Step", "answer_json", "load", "play", "render", "steps", "time_of"]

MAX_CELL = 60  # characters of a value shown in a text table


@dataclass(slots=True)
class Step:
    """One moment of a session: a record, and what came back when it is a result."""

    at: float  # seconds since the session's first record
    record: dict[str, Any]
    answer: Answer | None = None
    problem: str | None = None  # the recording is altered or missing
    lines: list[str] = field(default_factory=list)


def _epoch(ts: object) -> float:
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return 0.0


_COMMANDS = {c.label: int(c) for c in Command}
MAX_WAIT = 86400.0  # seconds between two steps at most: a damaged ts cannot stall for ever


def _damaged(ledger: str | Path, where: str, problem: str) -> LedgerDamaged:
    return LedgerDamaged(
        f"{ledger}: {where}: {problem} (the file was damaged or edited; "
        "'sqlgate ledger verify' names the first bad record)"
    )


def _records(ledger: str | Path, bodies: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each exported body with its record; LedgerDamaged for one that is not a record
    (``export`` refuses those already, naming the seq: this is the last line of defence)."""
    seq: object = None
    for body in bodies:
        where = "the first record" if seq is None else f"the record after seq {seq}"
        if not isinstance(body, str):
            raise _damaged(ledger, where, f"stored as {type(body).__name__}, not text")
        try:
            record = json.loads(body)
        except RecursionError:
            raise _damaged(ledger, where, "nested too deeply to read") from None
        except ValueError:
            raise _damaged(ledger, where, "not JSON") from None
        if not isinstance(record, dict):
            raise _damaged(ledger, where, "not a JSON object")
        seq = record.get("seq")
        yield body, record


def _statement_seq(ledger: str | Path, record: dict[str, Any]) -> int:
    value = record.get("statement_seq") or 0
    if isinstance(value, bool) or not isinstance(value, int):
        shown = f"'{value[:40]}'" if isinstance(value, str) else f"({type(value).__name__})"
        where = f"record {record.get('seq')}"
        raise _damaged(ledger, where, f"its statement_seq {shown} is not an integer")
    return value


def load(ledger: str | Path, session: str, *, answers: bool = True) -> list[Step]:
    """The session's steps (``steps``) as a list, for a caller that moves about in them
    (the console); an empty list when the ledger holds no such session."""
    return list(steps(ledger, session, answers=answers))


def steps(ledger: str | Path, session: str, *, answers: bool = True) -> Iterator[Step]:
    """The session's steps, each read and decoded when it is asked for, so that memory
    holds one answer however long the session (``sqlgate replay`` writes each as it
    comes). ``answers`` False: a step's decoded answer is dropped once its lines are
    rendered. LedgerFileError at once when the file is not a ledger; LedgerDamaged, when
    a stored record cannot be read, from the step that reaches it."""
    return _steps(ledger, export(ledger, session=session), answers)


UNENDED = (
    "(no end of this session is recorded: it is still going, or the gateway stopped "
    "without writing one (killed, or its machine went down); what came after the records "
    "above is not known)"
)


def _steps(ledger: str | Path, bodies: Iterable[str], keep: bool) -> Iterator[Step]:
    """``_each``, the last step saying so when the session started and has no
    ``session_end``: a transcript that stops where a killed gateway stopped writing must
    not read as a whole session (a login that failed has neither). Each step goes once
    the next is read (or the damage that stops the reading is found)."""
    last: Step | None = None
    started = ended = False
    try:
        for step in _each(ledger, bodies, keep):
            kind = step.record.get("kind")
            started = started or kind == "session_start"
            ended = ended or kind == "session_end"
            if last is not None:
                yield last
            last = step
    except LedgerDamaged:
        if last is not None:  # the steps before the damage are shown
            yield last
        raise
    if last is not None:
        if started and not ended:
            last.lines.append(UNENDED)
        yield last


MAX_NAMED = 60  # characters of a statement an answer that does not follow it names


def _each(ledger: str | Path, bodies: Iterable[str], keep: bool) -> Iterator[Step]:
    reader = RecordingReader(ledger)
    decoder = _Answers(ledger)
    start: float | None = None
    # Statements not answered yet, by (session, statement_seq): their first line, so
    # that an answer after other statements (pipelined ones, recorded as they are read)
    # names its own, instead of reading as the answer to the statement shown above it.
    waiting: dict[tuple[str, int], str] = {}
    last: tuple[str, int] | None = None  # the statement shown last
    try:
        for _, record in _records(ledger, bodies):
            at = _epoch(record.get("ts"))
            if start is None:
                start = at
            decoder.note(record)
            step = Step(max(0.0, at - start), record)
            digest = record.get("recording")
            kind = record.get("kind")
            if kind == "statement":
                last = (str(record.get("session")), _statement_seq(ledger, record))
                waiting[last] = _named(record)
            if kind == "result":
                key = (str(record.get("session")), _statement_seq(ledger, record))
                named = waiting.pop(key, None)
                blob = None
                if isinstance(digest, str):
                    blob = reader.get(digest)
                    if blob is None:
                        step.problem = _missing(reader, record)
                    elif hashlib.sha256(blob).hexdigest() != digest:
                        step.problem = "its recording was ALTERED after it was written: not shown"
                        blob = None
                step.answer = decoder.decode(record, blob)
                blob = None  # not held while the step is shown
                step.lines = render(step)
                if named is not None and key != last:
                    step.lines.insert(0, f"  (the answer to: {named})")
            else:
                step.lines = render(step)
            if not keep:
                step.answer = None
            yield step
    finally:
        reader.close()


def _named(record: dict[str, Any]) -> str:
    """A statement as its answer names it: its first line, shown as in its step, cut."""
    lines = _statement_lines(str(record.get("sql") or record.get("command")))
    text = lines[0][2:]
    if len(text) > MAX_NAMED or len(lines) > 1:
        text = text[: MAX_NAMED - 1] + "\u2026"
    if record.get("part"):
        text += f" [{_flat(record['part'])}]"
    return text


class _Answers:
    """What reading a session's recordings needs from its records: how its client leg ends
    results, each statement's command and text until its result, and the columns of each
    cursor an execute opened, which its fetches are read with (the fetch answers carry
    rows only). Cursors are kept by session and the prepared statement's id, which the
    result records of executes and fetches carry (``statement_id``); by its text in
    recordings made before they did (two statements of one text, ``SELECT ?`` bound to a
    number and to a string, may have cursors of other columns: one's rows read with the
    other's showed values the agent never saw)."""

    def __init__(self, ledger: str | Path) -> None:
        self.ledger = ledger
        self.deprecate_eof: dict[str, bool] = {}
        self.statements: dict[tuple[str, int], tuple[int, str]] = {}  # -> command, text
        self.cursors: dict[tuple[str, int | str], list[ColumnDefinition]] = {}

    def note(self, record: dict[str, Any]) -> None:
        """Remember what a ``session_start`` or ``statement`` record says for the results
        that follow."""
        kind = record.get("kind")
        session = str(record.get("session"))
        if kind == "session_start":
            self.deprecate_eof[session] = bool(record.get("deprecate_eof", True))
        elif kind == "statement":
            command = _COMMANDS.get(str(record.get("command")), int(Command.QUERY))
            key = (session, _statement_seq(self.ledger, record))
            self.statements[key] = (command, str(record.get("sql") or ""))

    def opens_cursors(self, record: dict[str, Any]) -> bool:
        """Whether the ``result`` record is an execute's, whose answer may open a cursor."""
        key = (str(record.get("session")), _statement_seq(self.ledger, record))
        command, _ = self.statements.get(key, (int(Command.QUERY), ""))
        return command == Command.STMT_EXECUTE

    def decode(self, record: dict[str, Any], blob: bytes | None) -> Answer | None:
        """The ``result`` record's answer from its recording (None: none to read, which
        also forgets the cursor its execute may have opened)."""
        session = str(record.get("session"))
        key = (session, _statement_seq(self.ledger, record))
        command, text = self.statements.pop(key, (int(Command.QUERY), ""))
        statement_id = record.get("statement_id")
        cursor: tuple[str, int | str] = (session, text)
        if isinstance(statement_id, int) and not isinstance(statement_id, bool):
            cursor = (session, statement_id)
        if blob is None:
            if command == Command.STMT_EXECUTE:
                self.cursors.pop(cursor, None)  # its fetches are not read with old columns
            return None
        answer = decode_answer(
            blob,
            command=command,
            deprecate_eof=self.deprecate_eof.get(session, True),
            truncated=bool(record.get("recording_truncated")),
            names=_charset(record),
            columns=self.cursors.get(cursor) if command == Command.STMT_FETCH else None,
        )
        if command == Command.STMT_EXECUTE:
            columns = answer.cursor_columns
            if columns is not None:
                self.cursors[cursor] = columns
            elif answer.results or answer.error is None:
                self.cursors.pop(cursor, None)  # it ran: the cursor before it is closed
            # else one ERR: refused, or failed before it closed the cursor, which its
            # fetches go on reading
        return answer


def _charset(record: dict[str, Any]) -> str | None:
    """The ``character_set_results`` the result's answer came in (None: not known, or a
    value that is no name: its names and messages are then read as UTF-8)."""
    value = record.get("results_charset")
    return value if isinstance(value, str) else None


def _missing(reader: RecordingReader, record: dict[str, Any]) -> str:
    """Why a result's recording is not there: purged when a purge record of the ledger
    explains it (by the rule ``ledger verify`` applies), else MISSING, the ledger's
    fault. Replay and export hold no public key and check no signature, so "purged" is
    the ledger's word, said as such: ``ledger verify --pubkey`` is the proof."""
    before = reader.purged(record)
    if before is not None:
        return (
            "its recording was purged by the ledger's purge record (retention: recordings "
            f"before {before})"
        )
    return (
        "its recording is MISSING (no purge record of the ledger removed it: the file was "
        "edited or damaged; 'sqlgate ledger verify' says more)"
    )


# -- text -----------------------------------------------------------------------------


def _printable(text: str) -> str:
    """``text`` with every character a terminal would act on (escapes, carriage returns,
    line breaks) shown as U+FFFD: what a session sent must not draw on the auditor's
    screen or pass for a line of the transcript."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "\ufffd" for c in text)


def _flat(value: object) -> str:
    """A value the session chose (a reason, an error message, a name) on one line."""
    text = str(value)
    if "\n" in text or "\t" in text or "\r" in text:
        text = " ".join(text.split())
    return _printable(text)


def _cell(value: str | bytes | None) -> str:
    if value is None:
        return "NULL"
    clean = "0x" + value.hex().upper() if isinstance(value, bytes) else _flat(value)
    return clean if len(clean) <= MAX_CELL else clean[: MAX_CELL - 1] + "\u2026"


def _statement_lines(sql: str) -> list[str]:
    """A statement's text as written, line by line: the first after ``>``, the others
    after ``|``, so that none can pass for a step of its own; a character that would not
    show as itself escaped (``\\x1b``, ``\\u3164``: ``--`` followed by a U+3164 looks
    like a comment, and is none to the server). Nothing hides at its end: a long run of
    blanks shows as one marker saying how many (``folded``), and two blank lines or more
    in a row as one line saying how many (300 of them pushed an ``OR 1=1`` far below a
    harmless start)."""
    lines = [
        "".join(piece if marker else shown(piece) for piece, marker in line)
        for line in statement_lines(sql)
    ]
    return [f"> {lines[0]}", *(f"| {line}" for line in lines[1:])]


def _table(columns: list[str], rows: list[list[Value]]) -> list[str]:
    cells = [[_cell(c) for c in columns], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"

    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    return [rule, line(cells[0]), rule, *(line(r) for r in cells[1:]), rule]


def _opened(answer: Answer, result: ResultSet) -> bool:
    """The result set is an execute's cursor: its rows are in the answers to the fetches."""
    return result.cursor and answer.command == Command.STMT_EXECUTE


def _unfinished(answer: Answer, last: bool) -> str:
    """Why a result set did not end as the protocol ends one. Only a recording cut at
    the limit kept fewer rows than came back; a set the server ended with an error (a
    row it failed to compute) was recorded whole, and saying otherwise would hide that
    the agent got those rows and then the error."""
    if last and answer.error is not None and answer.complete:
        return "(the server ended this result set with the error below: no more rows came)"
    if answer.truncated:
        return "(more rows came back than were recorded)"
    return "(the recording of this result set is not whole: see below)"


def _answer_lines(answer: Answer) -> list[str]:
    lines: list[str] = []
    sets = answer.result_sets
    for result in sets:
        if _opened(answer, result):
            lines.append("(cursor opened; its rows come with the fetches)")
            continue
        names = [c.name for c in result.columns]
        lines += _table(names, result.rows)
        if not result.complete:
            lines.append(_unfinished(answer, result is sets[-1]))
        elif result.warnings:
            lines.append(f"({result.warnings} warnings)")
    prepared = answer.prepared
    if prepared is not None:
        shown = ", ".join(c.name for c in prepared.columns) or "none"
        lines.append(
            _flat(
                f"prepared as statement {prepared.statement_id}: "
                f"{len(prepared.params)} parameters, columns: {shown}"
            )
        )
    if answer.text is not None:
        lines.append(_flat(answer.text))
    if answer.error is not None:
        error = answer.error
        lines.append(f"ERROR {error.code} ({_flat(error.sqlstate)}): {_flat(error.message)}")
    if answer.problem:
        lines.append(f"(recording: {_flat(answer.problem)})")
    return lines


def render(step: Step) -> list[str]:
    """The step as transcript lines (without the time)."""
    r = step.record
    kind = r.get("kind")
    if kind == "session_start":
        db = f" ({r['db']})" if r.get("db") else ""
        return [
            _flat(
                f"session {r.get('session')}: {r.get('identity')} from {r.get('client')} "
                f"to {r.get('target')}{db}"
            )
        ]
    if kind == "statement":
        part = f" [{_flat(r['part'])}]" if r.get("part") else ""
        lines = _statement_lines(f"{r.get('sql') or r.get('command')}{part}")
        sent = as_sent(r.get("sql_hex"), r.get("sql_charset"))
        if sent is not None:  # the text as UTF-8 is not what was sent
            lines.append(f"  ({sent})")
        params = r.get("params")
        if isinstance(params, list) and params:  # an execute's values, as SQL literals
            more = f" (and {r['params_more']} more)" if r.get("params_more") else ""
            lines.append(_flat(f"  params: {', '.join(map(str, params))}{more}"))
        elif r.get("params_error"):
            lines.append(_flat(f"  params: not read ({r['params_error']})"))
        decision = r.get("decision")
        if decision == "blocked":
            lines.append(f"  REFUSED: {_flat(r.get('reason'))}")
        elif decision == "pending":
            lines.append(f"  HELD for approval: {_flat(r.get('reason'))}")
        elif r.get("rewritten"):  # a statement text too: its lines kept, as the server reads it
            first, *rest = _statement_lines(str(r["rewritten"]))
            lines.append(f"  rewritten to mask by construction: {first[2:]}")
            lines += [f"  {line}" for line in rest]
        return lines
    if kind == "approval":
        who = f" by {r['approver']}" if r.get("approver") else ""
        why = f": {r['reason']}" if r.get("reason") else ""
        return [f"  {_flat(str(r.get('decision')).upper() + who + why)}"]
    if kind == "result":
        lines = []
        if step.answer is not None:
            lines += ["  " + line for line in _answer_lines(step.answer)]
        if r.get("recording_cut"):  # why it holds less than max_bytes: not the answer's end
            kept = r.get("recording_bytes")
            size = f" at {kept} bytes" if isinstance(kept, int) else ""
            lines.append("  " + _flat(f"(recording cut{size}: {r['recording_cut']})"))
        figures = []
        if r.get("rows") is not None:
            figures.append(counted(r["rows"], ("row", "rows")))
        if r.get("affected"):
            figures.append(f"{r['affected']} affected")
        if r.get("error"):
            figures.append(f"error {r['error']}")
        if r.get("duration_ms") is not None:
            figures.append(f"{r['duration_ms']} ms")
        if r.get("masked"):
            masked = r["masked"] if isinstance(r["masked"], list) else [r["masked"]]
            figures.append(f"masked: {', '.join(map(str, masked))}")
        if step.problem:
            figures.append(step.problem)
        if r.get("note"):
            figures.append(str(r["note"]))
        if r.get("reason"):  # why the gateway, not the server, ended or gave the answer
            figures.append(str(r["reason"]))
        lines.append("  (" + _flat(", ".join(figures)) + ")")
        return lines
    if kind == "auth_failed":  # a session whose login was refused: who, and why
        return [
            _flat(
                f"login refused for {r.get('identity')} from {r.get('client')} to "
                f"{r.get('target')}: {r.get('reason')}"
            )
        ]
    if kind == "session_end":
        return [f"session ended: {_flat(r.get('reason') or 'closed')}"]
    if kind == "alert":
        return [_flat(f"ALERT {r.get('alert')}: {r.get('reason')}")]
    return [_flat(kind)]


def time_of(record: dict[str, Any]) -> str:
    """The time of day a step is stamped with (``HH:MM:SS.mmm`` of its ``ts``), on one
    line and unable to draw: a ``ts`` is the gateway's, but a file edited by hand may hold
    anything there, and an operator replays a ledger before verifying it."""
    return _flat(record.get("ts", ""))[11:23]


# -- json -----------------------------------------------------------------------------


def _json_value(value: Value) -> str | dict[str, str] | None:
    """A cell in JSON: text as a string, bytes that are not text in their column's
    character set as ``{"hex": ...}``, so that no string can be read as other bytes."""
    return {"hex": value.hex()} if isinstance(value, bytes) else value


def answer_json(answer: Answer) -> dict[str, Any]:
    """What came back, as plain JSON (for ``--format json`` and evidence exports)."""
    results: list[dict[str, Any]] = []
    for result in answer.results:
        if isinstance(result, ResultSet):
            results.append(
                {
                    "columns": [asdict(c) for c in result.columns],
                    "rows": [[_json_value(v) for v in row] for row in result.rows],
                    "complete": result.complete,
                    "warnings": result.warnings,
                    **({"cursor": True} if _opened(answer, result) else {}),
                }
            )
        else:
            results.append({"ok": asdict(result)})
    out: dict[str, Any] = {"results": results, "complete": answer.complete}
    if answer.prepared is not None:  # COM_STMT_PREPARE
        out["prepared"] = asdict(answer.prepared)
    if answer.text is not None:  # COM_STATISTICS
        out["text"] = answer.text
    if answer.error is not None:
        out["error"] = asdict(answer.error)
    if answer.truncated:
        out["truncated"] = True
    if answer.problem:
        out["problem"] = answer.problem
    return out


def step_json(step: Step) -> dict[str, Any]:
    body: dict[str, Any] = {"at": round(step.at, 6), "record": step.record}
    if step.answer is not None:
        body["answer"] = answer_json(step.answer)
    if step.problem:
        body["problem"] = step.problem
    return body


# -- playing --------------------------------------------------------------------------


def play(
    steps: Iterable[Step],
    out: TextIO,
    *,
    speed: float = 1.0,
    fmt: str = "text",
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Write ``steps`` as they happened, ``speed`` times faster."""
    started = clock()
    for step in steps:
        wait = started + step.at / speed - clock()
        if wait > 0:
            sleep(min(wait, MAX_WAIT))
        if fmt == "json":
            out.write(json_line(json.dumps(step_json(step), ensure_ascii=False)) + "\n")
        else:
            stamp = time_of(step.record)
            for n, line in enumerate(step.lines):
                out.write(f"{stamp if n == 0 else ' ' * len(stamp)}  {line}\n")
        out.flush()


def with_answers(
    ledger: str | Path,
    bodies: Iterable[str],
    wanted: Callable[[dict[str, Any]], bool] | None = None,
) -> Iterator[str]:
    """Export lines with each result's recording decoded in an ``answer`` member (not
    part of the hashed record: the record's own fields are unchanged). ``wanted``: which
    of ``bodies`` are written (``--kind``, ``--since``); all of them are read, since an
    answer is read with what its session's records say (how its results end, its
    statement's command, the columns of the cursor a fetch reads)."""
    answers = _Answers(ledger)
    reader = RecordingReader(ledger)
    for body, record in _records(ledger, bodies):
        answers.note(record)
        written = wanted is None or wanted(record)
        if record.get("kind") != "result":
            if written:
                yield body
            continue
        digest = record.get("recording")
        if not written:  # only an execute's answer says more: the columns of its cursor
            blob = None
            if isinstance(digest, str) and answers.opens_cursors(record):
                blob = reader.get(digest)
                if blob is not None and hashlib.sha256(blob).hexdigest() != digest:
                    blob = None
            answers.decode(record, blob)
            continue
        if not isinstance(digest, str):
            answers.decode(record, None)
            yield body
            continue
        blob = reader.get(digest)
        if blob is None:
            record["answer"] = {"problem": _missing(reader, record)}
        elif hashlib.sha256(blob).hexdigest() != digest:
            record["answer"] = {"problem": "its recording was ALTERED after it was written"}
            blob = None
        answer = answers.decode(record, blob)
        if answer is not None:
            record["answer"] = answer_json(answer)
        yield json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    reader.close()
