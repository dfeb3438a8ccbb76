"""What a client received, read back: a recorded answer decoded for people.

The session captures each answer as its client got it (``CommandCompleted.recorded``:
whole frames with their headers, after masking, possibly cut at the record limit).
``decode_answer`` turns those bytes into what ``sqlgate replay`` and the console show:
result sets (columns and rows as text), OKs, an error, a prepared statement, a string.

The shapes are the relay's, by command:

    COM_QUERY, COM_STMT_EXECUTE  OK | ERR | result sets, one after the other while the
                                 status says MORE_RESULTS_EXISTS; an execute's rows are
                                 binary; an execute may open a cursor instead of rows
    COM_STMT_FETCH               binary rows up to the terminator (their columns are those
                                 of the execute that opened the cursor: ``columns=``)
    COM_STMT_PREPARE             PREPARE_OK, parameter and column definitions, or ERR
    COM_FIELD_LIST               column definitions up to the terminator, or ERR
    COM_STATISTICS               one string packet, or ERR
    STMT_CLOSE, SEND_LONG_DATA,  nothing (a refused one too; recordings made before
    QUIT                         that may hold the ERR of a refusal)
    anything else                one packet: OK, ERR (a refusal) or EOF

Rows come as text whichever protocol carried them: binary values are written as the text
protocol would have written them (``masking.binary_value_text``), None is SQL NULL. A
value is read in its column's character set (the definition says which), as the client
read it; one that is not text in it (a binary column's bytes that are not printable
UTF-8, bytes its character set has no character for) stays ``bytes``, so that no value
can pass for another (the bytes 0xFF and the text ``\\xff`` differ). Without
DEPRECATE_EOF, column definitions and rows end with an EOF; with it, definitions end by
count and rows with an OK headed 0xFE.

Pure and total: bytes that are cut or break the protocol give the part that could be read,
with ``complete`` False and ``problem`` saying what stopped the reading; only a command
that is not a command byte raises (``ValueError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from appliance.mysql import charsets, masking, packets
from appliance.mysql.constants import (
    MAX_PAYLOAD,
    Capability,
    ColumnFlag,
    Command,
    FieldType,
    ServerStatus,
)
from appliance.mysql.errors import ProtocolError, RemoteProtocolError

_MORE_RESULTS = int(ServerStatus.MORE_RESULTS_EXISTS)
_CURSOR_EXISTS = int(ServerStatus.CURSOR_EXISTS)
_SESSION_TRACK = int(Capability.SESSION_TRACK)
_ZEROFILL = int(ColumnFlag.ZEROFILL)
_MAX_DISPLAY_WIDTH = 255  # of a numeric column; ZEROFILL pads to it

_BINARY_COLLATION = 63  # the character set "binary": numbers, dates, BLOB, BIT, ...
_CONTROLS_IN_TEXT = frozenset("\t\n\r")

Value = str | bytes | None
"""A cell of a row: text, bytes that are not text in the column's character set, NULL."""

_NO_ANSWER = frozenset({Command.QUIT, Command.STMT_CLOSE, Command.STMT_SEND_LONG_DATA})


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a result set: its name for the client, its type, where it comes from
    (schema, table and column of origin; empty for an expression)."""

    name: str
    type: str  # a FieldType name, e.g. "LONGLONG"; "0xNN" for a type it does not know
    schema: str
    table: str
    column: str


@dataclass(slots=True)
class ResultSet:
    columns: list[Column] = field(default_factory=list)
    rows: list[list[Value]] = field(default_factory=list)
    """Every whole row received: text read in its column's character set, bytes for a
    value that is not text in it, None for SQL NULL."""
    complete: bool = False
    """The set ended as the protocol ends one. False: the recording stops (or an ERR or a
    broken packet came) inside it, so how many more rows it had is unknown."""
    warnings: int = 0
    cursor: bool = False
    """A COM_STMT_EXECUTE opened a cursor: the rows come with COM_STMT_FETCH."""
    definitions: list[packets.ColumnDefinition] = field(default_factory=list, repr=False)
    """The column definitions as sent; a cursor's fetches are read with them."""


@dataclass(frozen=True, slots=True)
class Ok:
    affected_rows: int
    last_insert_id: int
    warnings: int
    info: str


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    sqlstate: str
    message: str


@dataclass(slots=True)
class Prepared:
    """The answer to COM_STMT_PREPARE: the statement's id and definitions."""

    statement_id: int
    warnings: int
    params: list[Column] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)


@dataclass(slots=True)
class Answer:
    """One recorded answer, decoded."""

    command: int
    results: list[ResultSet | Ok] = field(default_factory=list)
    """Result sets and OKs in the order they came (several for a multi-statement text or
    a CALL)."""
    error: Error | None = None
    """The ERR that ended the answer (possibly after some results)."""
    prepared: Prepared | None = None
    text: str | None = None
    """COM_STATISTICS: the server's string."""
    complete: bool = False
    """The answer was read to its end."""
    truncated: bool = False
    """The recording was cut at the record limit (as the caller said)."""
    problem: str | None = None
    """Why the reading stopped early, or what came after the end."""
    row_limit: int = field(default=0, repr=False)  # cut_rows: stop after this many rows
    names: str = field(default="utf-8", repr=False)  # the codec of names and messages
    rows_seen: int = field(default=0, repr=False)

    @property
    def result_sets(self) -> list[ResultSet]:
        return [r for r in self.results if isinstance(r, ResultSet)]

    @property
    def cursor_columns(self) -> list[packets.ColumnDefinition] | None:
        """For a COM_STMT_EXECUTE that opened a cursor, the definitions its fetches are read
        with (``decode_answer(..., columns=)``): the fetches carry rows only. None when it
        opened none."""
        if self.command != Command.STMT_EXECUTE:
            return None
        return next((r.definitions for r in self.result_sets if r.cursor), None)

    @property
    def ok(self) -> Ok | None:
        """The last OK of the answer, if any."""
        oks = [r for r in self.results if isinstance(r, Ok)]
        return oks[-1] if oks else None


# ------------------------------------------------------------------------------ decoder


class _Cut(Exception):
    """The packets ran out before the answer ended."""


class _Enough(Exception):
    """``cut_rows``: the answer's first ``row_limit`` rows have been read."""


class _Packets:
    """The whole logical packets of a capture (16 MiB continuations joined), in order."""

    def __init__(self, data: bytes) -> None:
        self.payloads: list[bytes] = []
        self.ends: list[int] = []  # where each packet's last frame ends in ``data``
        self.size = n = len(data)
        self.tail = 0  # the bytes of a last packet that is not whole
        self.next = 0
        pos = 0
        while pos < n:
            parts = []
            end = pos
            whole = False
            while n - end >= 4:
                length = data[end] | data[end + 1] << 8 | data[end + 2] << 16
                if n - end - 4 < length:
                    break
                parts.append(data[end + 4 : end + 4 + length])
                end += 4 + length
                if length < MAX_PAYLOAD:
                    whole = True
                    break
            if not whole:
                self.tail = n - pos
                return
            self.payloads.append(parts[0] if len(parts) == 1 else b"".join(parts))
            self.ends.append(end)
            pos = end

    def take(self) -> bytes:
        if self.next >= len(self.payloads):
            raise _Cut
        payload = self.payloads[self.next]
        self.next += 1
        return payload

    def left(self) -> int:
        """Bytes not read yet (whole packets or not)."""
        return self.size - (self.ends[self.next - 1] if self.next else 0)


def decode_answer(
    data: bytes,
    *,
    command: int,
    deprecate_eof: bool,
    truncated: bool,
    columns: Sequence[packets.ColumnDefinition] | None = None,
    names: str | None = None,
) -> Answer:
    """Decode the recorded answer to ``command`` (its first byte, e.g. ``Command.QUERY``).

    ``deprecate_eof``: the client's leg negotiated DEPRECATE_EOF. ``truncated``: the capture
    was cut (``CommandCompleted.recorded_truncated``). ``columns``: for COM_STMT_FETCH, the
    definitions of the result set whose cursor it reads (``ResultSet.definitions`` of the
    execute's answer). ``names``: the session's ``character_set_results`` as the answer
    began, in which the server sent column names, error messages and OK info (None: not
    known, read as UTF-8). Never raises on bad ``data``; ``ValueError`` for a ``command``
    that is not a command byte.
    """
    if not 0 <= command <= 0xFF:
        raise ValueError(f"{command!r} is not a command byte")
    answer = Answer(command, truncated=truncated, names=_names_codec(names))
    reader = _Packets(data)
    try:
        _read_answer(answer, reader, command, deprecate_eof, columns)
    except _Cut:
        if truncated:
            answer.problem = (
                f"the recording stops after {len(data)} bytes ([recording] max_bytes or max_rows)"
            )
        else:
            answer.problem = f"the answer ends early, after {len(data)} bytes"
        return answer
    except ProtocolError as exc:
        answer.problem = f"packet {reader.next} of the answer: {exc}"
        return answer
    answer.complete = True
    extra = reader.left()
    if extra:
        answer.problem = f"{extra} bytes after the end of the answer"
    return answer


def cut_rows(
    data: bytes,
    max_rows: int,
    *,
    command: int,
    deprecate_eof: bool,
    columns: Sequence[packets.ColumnDefinition] | None = None,
) -> bytes | None:
    """The recorded answer cut right after its first ``max_rows`` rows (over all its
    result sets), or None when it holds no more than that (or cannot be read)."""
    answer = Answer(command, row_limit=max_rows)
    reader = _Packets(data)
    try:
        _read_answer(answer, reader, command, deprecate_eof, columns)
    except _Enough:
        return data[: reader.ends[reader.next - 2]]
    except (_Cut, ProtocolError):
        return None
    return None


def _read_answer(
    answer: Answer,
    reader: _Packets,
    command: int,
    deprecate: bool,
    columns: Sequence[packets.ColumnDefinition] | None,
) -> None:
    if command in _NO_ANSWER:
        if reader.left():
            _single(answer, reader.take())  # an older recording of a refusal
        return
    if command == Command.QUERY or command == Command.STMT_EXECUTE:
        _read_results(answer, reader, deprecate, binary=command == Command.STMT_EXECUTE)
    elif command == Command.STMT_FETCH:
        payload = reader.take()
        if payload[:1] == b"\xff":
            answer.error = _error(payload, answer.names)
            return
        result = ResultSet(definitions=list(columns or ()))
        result.columns = [_column(d, answer.names) for d in result.definitions]
        answer.results.append(result)
        _read_rows(
            answer, result, reader, deprecate, binary=True, first=payload, known=columns is not None
        )
    elif command == Command.STMT_PREPARE:
        _read_prepare(answer, reader, deprecate)
    elif command == Command.FIELD_LIST:
        result = ResultSet()
        answer.results.append(result)
        while True:
            payload = reader.take()
            first = payload[0] if payload else -1
            if first == 0xFF:
                answer.error = _error(payload, answer.names)
                return
            if packets.is_result_terminator(first, len(payload), deprecate):
                result.warnings = _terminator_warnings(payload)
                result.complete = True
                return
            _add_definition(result, payload, answer.names)
    elif command == Command.STATISTICS:
        payload = reader.take()
        if payload[:1] == b"\xff":
            answer.error = _error(payload, answer.names)
        else:
            answer.text = _text(payload, answer.names)
    else:
        _single(answer, reader.take())


def _single(answer: Answer, payload: bytes) -> None:
    """A one-packet answer: OK, ERR or EOF (COM_SET_OPTION)."""
    first = payload[0] if payload else -1
    if first == 0xFF:
        answer.error = _error(payload, answer.names)
    elif first == 0x00:
        answer.results.append(_ok(_parse_ok(payload), answer.names))
    elif packets.is_eof_packet(first, len(payload)):
        eof = packets.parse_eof(payload)
        answer.results.append(Ok(0, 0, eof.warnings, ""))
    else:
        raise RemoteProtocolError(f"a packet starting {first:#04x} where OK or ERR belongs")


def _read_results(answer: Answer, reader: _Packets, deprecate: bool, *, binary: bool) -> None:
    while True:
        payload = reader.take()
        first = payload[0] if payload else -1
        if first == 0xFF:
            answer.error = _error(payload, answer.names)
            return
        if first == 0x00:
            ok = _parse_ok(payload)
            answer.results.append(_ok(ok, answer.names))
            if ok.status & _MORE_RESULTS:
                continue
            return
        if first == 0xFB:
            raise RemoteProtocolError("a LOAD DATA LOCAL request")
        count, end = packets.read_lenenc_int(payload, 0)
        if not count or end != len(payload):
            raise RemoteProtocolError("not a column count")
        result = ResultSet()
        answer.results.append(result)
        for _ in range(count):
            _add_definition(result, reader.take(), answer.names)
        if not deprecate:
            payload = reader.take()
            if not packets.is_eof_packet(payload[0] if payload else -1, len(payload)):
                raise RemoteProtocolError("no EOF after the column definitions")
            eof = packets.parse_eof(payload)
            if binary and eof.status & _CURSOR_EXISTS:
                result.cursor = True
                result.complete = True
                result.warnings = eof.warnings
                if eof.status & _MORE_RESULTS:
                    continue
                return
        status = _read_rows(answer, result, reader, deprecate, binary=binary)
        if answer.error is not None or not status & _MORE_RESULTS:
            return


def _read_rows(
    answer: Answer,
    result: ResultSet,
    reader: _Packets,
    deprecate: bool,
    *,
    binary: bool,
    first: bytes | None = None,
    known: bool = True,
) -> int:
    """Rows up to the terminator, whose status it returns (0 after an ERR). Without
    ``known`` columns (a fetch read without them), a row cannot be read."""
    count = len(result.definitions)
    definitions = _readable(result.definitions) if binary else result.definitions
    rows = result.rows
    payload = first
    while True:
        if payload is None:
            payload = reader.take()
        head = payload[0] if payload else -1
        if head == 0xFF:
            answer.error = _error(payload, answer.names)
            return 0
        if packets.is_result_terminator(head, len(payload), deprecate):
            if deprecate:
                ok = _parse_ok(payload)
                result.warnings = ok.warnings
                status = ok.status
            else:
                eof = packets.parse_eof(payload)
                result.warnings = eof.warnings
                status = eof.status
            result.complete = True
            if binary and status & _CURSOR_EXISTS:
                result.cursor = True
            return status
        if not known:
            raise RemoteProtocolError("a cursor's rows need its execute's columns (columns=)")
        if answer.row_limit and answer.rows_seen >= answer.row_limit:
            raise _Enough  # a row beyond the limit: the cut goes before it
        if binary:
            values = packets.parse_binary_row(payload, definitions)
            rows.append(
                [
                    None if v is None else _value(d, masking.binary_value_text(d, v))
                    for d, v in zip(definitions, values, strict=True)
                ]
            )
        else:
            values = packets.parse_text_row(payload, count)
            rows.append(
                [
                    None if v is None else _value(d, v)
                    for d, v in zip(result.definitions, values, strict=True)
                ]
            )
        if answer.row_limit:
            answer.rows_seen += 1
        payload = None


def _read_prepare(answer: Answer, reader: _Packets, deprecate: bool) -> None:
    payload = reader.take()
    if payload[:1] == b"\xff":
        answer.error = _error(payload, answer.names)
        return
    ok = packets.parse_stmt_prepare_ok(payload)
    prepared = answer.prepared = Prepared(ok.statement_id, ok.warnings)
    for block, count in ((prepared.params, ok.param_count), (prepared.columns, ok.column_count)):
        if not count:
            continue
        for _ in range(count):
            block.append(_column(packets.parse_column_definition(reader.take()), answer.names))
        if not deprecate:
            payload = reader.take()
            if not packets.is_eof_packet(payload[0] if payload else -1, len(payload)):
                raise RemoteProtocolError("no EOF after the definitions")


# ------------------------------------------------------------------------------ pieces


def _add_definition(result: ResultSet, payload: bytes, names: str) -> None:
    definition = packets.parse_column_definition(payload)
    result.definitions.append(definition)
    result.columns.append(_column(definition, names))


def _column(d: packets.ColumnDefinition, names: str) -> Column:
    try:
        type_name = FieldType(d.type).name
    except ValueError:
        type_name = f"0x{d.type:02X}"
    return Column(
        _text(d.name, names),
        type_name,
        _text(d.schema, names),
        _text(d.org_table, names),
        _text(d.org_name, names),
    )


def _readable(
    definitions: Sequence[packets.ColumnDefinition],
) -> list[packets.ColumnDefinition]:
    """Definitions to read binary values with: a ZEROFILL display width beyond what a
    server allows is taken as the largest it allows (a broken one must not pad to 4 GB)."""
    return [
        replace(d, length=_MAX_DISPLAY_WIDTH)
        if d.flags & _ZEROFILL and d.length > _MAX_DISPLAY_WIDTH
        else d
        for d in definitions
    ]


def _parse_ok(payload: bytes) -> packets.OkPacket:
    """An OK whether or not the client's leg had SESSION_TRACK (the capture does not say)."""
    try:
        return packets.parse_ok(payload, _SESSION_TRACK)
    except ProtocolError:
        return packets.parse_ok(payload, 0)


def _ok(ok: packets.OkPacket, names: str) -> Ok:
    return Ok(ok.affected_rows, ok.last_insert_id, ok.warnings, _text(ok.info, names))


def _terminator_warnings(payload: bytes) -> int:
    if len(payload) == 5:
        return packets.parse_eof(payload).warnings
    return _parse_ok(payload).warnings


def _error(payload: bytes, names: str) -> Error:
    """An ERR, its message read in the answer's character set (``parse_err`` reads UTF-8)."""
    err = packets.parse_err(payload)
    message = payload[9:] if payload[3:4] == b"#" else payload[3:]
    return Error(err.code, err.sqlstate, _text(message, names))


def _value(definition: packets.ColumnDefinition, raw: bytes) -> str | bytes:
    """A value as its client read it: text in the column's character set, or the bytes
    when they are not text in it. A binary column's value is text when it is printable
    UTF-8 (numbers and dates, which the server sends in it, always are); bytes a decoder
    would have to replace or escape are kept as they are, never written as an escape a
    text value could also hold."""
    collation = definition.charset
    charset = charsets.charset_of(collation)
    if collation == _BINARY_COLLATION or charset is None:
        codec = "utf-8"  # binary, or a collation newer than the table (UTF-8 by far the most)
    elif charset in charsets.UNREADABLE_NAMES or charset in charsets.ASCII_CHANGING:
        return raw
    else:  # a character set Python cannot read for sure: its ASCII only
        codec = charsets.name_codec(charset) or "ascii"
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        return raw
    if collation == _BINARY_COLLATION and not _printable(text):
        return raw
    return text


def _printable(text: str) -> bool:
    return text.isprintable() or all(c.isprintable() or c in _CONTROLS_IN_TEXT for c in text)


def _names_codec(charset: str | None) -> str:
    """The codec of the names and messages of an answer sent in ``charset`` (a
    ``character_set_results``): UTF-8 when it is not known (recordings made before it was
    kept) or NULL or binary (both send them as stored, in UTF-8); ASCII, its bytes beyond
    it escaped, for a character set Python cannot read for sure."""
    if charset is None:
        return "utf-8"
    return charsets.name_codec(charset) or "ascii"


def _text(value: bytes, codec: str) -> str:
    """A name, a message or a server string read in ``codec``; a byte that is not text in
    it written ``\\xNN``."""
    return value.decode(codec, "backslashreplace")


__all__ = [
    "Answer",
    "Column",
    "Error",
    "Ok",
    "Prepared",
    "ResultSet",
    "Value",
    "cut_rows",
    "decode_answer",
]
