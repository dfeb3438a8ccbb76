"""Result-set masking on the wire: the interface the policy implements, and the row codec.

The policy decides which columns of a result set are masked and how (``Masker.plan``); this
module rewrites what the server sent so that a masked column's values never reach the client:

* the column definition of a masked column becomes a plain string column
  (``masked_column_definition``): a masked value is text whatever the column held, so the
  client must not expect an integer, a date or a NOT NULL value there;
* text rows keep every unmasked value byte for byte and re-encode the masked ones
  (``mask_text_row``; ``TextRows`` for every row of a result set, its plan compiled once);
* binary rows (prepared statements, cursor fetches) carry numbers and dates as fixed-width
  binary values: a masked one is first turned into the exact text the text protocol would
  have sent (``binary_value_text``), so a mask sees the same input whichever protocol the
  client chose, and the result goes out as a length-encoded string (``mask_binary_row``);
* an ERR's message may quote a value (a duplicate key, a failed conversion):
  ``scrub_err`` passes it through ``Masker.scrub`` and keeps the code and SQLSTATE.

Pure functions over payloads, no I/O. Malformed input from the server raises
``RemoteProtocolError``; a plan that does not fit its result set is the gateway's own bug
and raises ``LocalProtocolError``: either way nothing unmasked is sent.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Protocol

from appliance.mysql.constants import UTF8MB4_GENERAL_CI, ColumnFlag, FieldType
from appliance.mysql.errors import LocalProtocolError, RemoteProtocolError
from appliance.mysql.packets import (
    Buffer,
    ColumnDefinition,
    parse_column_definition,
    read_lenenc_bytes,
    read_lenenc_int,
    write_lenenc_bytes,
)

# ------------------------------------------------------------------------------ interface


class ColumnMask(Protocol):
    """How the values of one column are masked; called once per value, so keep it cheap."""

    @property
    def label(self) -> str:
        """What the result record names, e.g. ``shop.customers.card_number`` (a plain
        attribute or a frozen dataclass field satisfies this too)."""
        ...

    def __call__(self, value: bytes | None) -> bytes | None:
        """The masked text of ``value`` (the column's text-protocol form; None is SQL NULL)."""
        ...


class Masker(Protocol):
    """One session's masking policy, asked once per result set."""

    def plan(
        self,
        columns: Sequence[ColumnDefinition],
        *,
        origins_unsure: bool = False,
        statement: bytes | None = None,
    ) -> Sequence[ColumnMask | None] | None:
        """A mask per column (None: not masked), or None when nothing is masked: the result
        set then streams untouched. ``origins_unsure``: a column's ``org_name`` may be its
        alias (a cursor's, see ``cursor_origins``), so any column of a table may hide a
        masked one. ``statement``: the SQL text whose result it is (a prepared
        statement's for an execute), None when not known: an origin the server reports
        may be an alias of a view the text names."""
        ...

    def scrub(self, message: bytes, code: int | None = None) -> bytes:
        """An ERR packet's message text, scrubbed of values it may leak (``code``: the
        packet's error code, when known)."""
        ...


Masks = tuple[ColumnMask | None, ...]


def reads_only(mask: ColumnMask | None) -> bool:
    """Whether ``mask`` only reads its column's values, so that a later column of the
    same row can be masked by them (a warning's code decides how its message is
    masked): such a column keeps its definition and its bytes. A mask says so with a
    true ``reads_only`` attribute; rows call masks in column order."""
    return getattr(mask, "reads_only", False) is True


def normalize_plan(planned: Sequence[ColumnMask | None] | None, column_count: int) -> Masks | None:
    """The plan as a tuple, or None when it masks nothing (so callers test one thing)."""
    if planned is None:
        return None
    masks = tuple(planned)
    if len(masks) != column_count:
        raise LocalProtocolError(
            f"masking plan has {len(masks)} entries for a result of {column_count} columns"
        )
    if all(m is None for m in masks):
        return None
    return masks


# -------------------------------------------------------------------- column definitions

MASKED_TYPE = int(FieldType.VAR_STRING)
MASKED_MIN_LENGTH = 256
"""Room for any strategy's output (a keyed hash in hex included), in bytes."""
MASKED_LONG_TYPE = int(FieldType.BLOB)
MAX_VAR_STRING_LENGTH = 65535
"""Longer columns (TEXT and longer, JSON) stay BLOB-typed text when masked, as servers
send them: no server sends a VAR_STRING longer than this, and clients that keep the
length of one in a C int (asyncmy) fail on a 4 GiB one."""
_BLOB_FLAG = int(ColumnFlag.BLOB)
MASKED_DECIMALS = 0
"""What MariaDB 10.11 sends for a VARCHAR column of a table (checked against a real
server in the integration tests; string expressions get 39, columns 0)."""

_KEPT_FLAGS = int(
    ColumnFlag.PRI_KEY | ColumnFlag.UNIQUE_KEY | ColumnFlag.MULTIPLE_KEY | ColumnFlag.PART_KEY
)
"""Key flags stay (they describe the table, not the value); every flag about the value's
type, nullability or defaults (NOT_NULL, UNSIGNED, ZEROFILL, NUM, BLOB, ENUM, SET,
TIMESTAMP, AUTO_INCREMENT, ON_UPDATE_NOW, NO_DEFAULT_VALUE) is cleared: a masked value is a
nullable string. BINARY stays only on binary strings."""

_BINARY = int(ColumnFlag.BINARY)
_UNSIGNED = int(ColumnFlag.UNSIGNED)
_ZEROFILL = int(ColumnFlag.ZEROFILL)
_BINARY_CHARSET = 63

_NUMERIC = frozenset(
    int(t)
    for t in (
        FieldType.DECIMAL,
        FieldType.NEWDECIMAL,
        FieldType.TINY,
        FieldType.SHORT,
        FieldType.INT24,
        FieldType.LONG,
        FieldType.LONGLONG,
        FieldType.FLOAT,
        FieldType.DOUBLE,
        FieldType.YEAR,
        FieldType.NULL,
    )
)
_TEMPORAL = frozenset(
    int(t)
    for t in (
        FieldType.DATE,
        FieldType.NEWDATE,
        FieldType.TIME,
        FieldType.TIME2,
        FieldType.DATETIME,
        FieldType.DATETIME2,
        FieldType.TIMESTAMP,
        FieldType.TIMESTAMP2,
    )
)
_AS_TEXT = _NUMERIC | _TEMPORAL | {int(FieldType.JSON)}
"""Types whose text form is characters whatever charset the definition names (numbers and
dates carry charset 63, MySQL's JSON too): masked, they become utf8mb4 text."""


def cursor_origins(
    executed: Sequence[ColumnDefinition], prepared: Sequence[ColumnDefinition] | None
) -> list[ColumnDefinition] | None:
    """The definitions to plan a cursor's result set by, None when they are not known.

    MariaDB sends the columns of a result set that opens a cursor with their alias as
    origin name (``SELECT card_number AS c`` comes as org_name ``c``), while the
    definitions its PREPARE_OK sent name the origin. When the statement's prepared
    definitions describe the same columns (same names, tables and schemas, in order),
    each executed definition takes the prepared origin name; otherwise (no prepared
    definitions, or the statement was prepared again by the server after a change of its
    tables) the origins are unknown."""
    if prepared is None or len(prepared) != len(executed):
        return None
    out = []
    for e, p in zip(executed, prepared, strict=True):
        if (e.name, e.table, e.org_table, e.schema) != (p.name, p.table, p.org_table, p.schema):
            return None
        out.append(e if e.org_name == p.org_name else replace(e, org_name=p.org_name))
    return out


def masked_column_definition(c: ColumnDefinition) -> ColumnDefinition:
    """The definition the client gets for a masked column: a nullable VAR_STRING that can
    hold any masked value (a BLOB-typed one beyond ``MAX_VAR_STRING_LENGTH``), with the
    column's names (its origin stays visible)."""
    if c.type in _AS_TEXT:
        charset = UTF8MB4_GENERAL_CI
        flags = c.flags & _KEPT_FLAGS
    else:  # strings, blobs, ENUM, SET, BIT, GEOMETRY: keep the charset (63 stays binary)
        charset = c.charset
        flags = c.flags & (_KEPT_FLAGS | _BINARY)
    length = max(c.length, MASKED_MIN_LENGTH)
    type_ = MASKED_TYPE
    if length > MAX_VAR_STRING_LENGTH:
        type_ = MASKED_LONG_TYPE
        flags |= _BLOB_FLAG
    return ColumnDefinition(
        catalog=c.catalog,
        schema=c.schema,
        table=c.table,
        org_table=c.org_table,
        name=c.name,
        org_name=c.org_name,
        charset=charset,
        length=length,
        type=type_,
        flags=flags,
        decimals=MASKED_DECIMALS,
    )


# -------------------------------------------------------------- binary values as text

_INTEGER = {
    int(FieldType.TINY): ("<b", "<B"),
    int(FieldType.SHORT): ("<h", "<H"),
    int(FieldType.YEAR): ("<h", "<H"),
    int(FieldType.INT24): ("<i", "<I"),
    int(FieldType.LONG): ("<i", "<I"),
    int(FieldType.LONGLONG): ("<q", "<Q"),
}
"""Integer types: struct formats (signed, unsigned); the UNSIGNED flag picks one."""

_FIXED_WIDTH = {t: struct.calcsize(f[0]) for t, f in _INTEGER.items()}
_FIXED_WIDTH[int(FieldType.FLOAT)] = 4
_FIXED_WIDTH[int(FieldType.DOUBLE)] = 8
_FIXED_WIDTH[int(FieldType.NULL)] = 0
NUMBER_TYPES = frozenset(_FIXED_WIDTH) - {int(FieldType.NULL)}
"""The types whose binary value is a number (the fixed-width ones but NULL)."""

_DATE = int(FieldType.DATE)
_TIME = int(FieldType.TIME)
_DATETIMES = frozenset((int(FieldType.DATETIME), int(FieldType.TIMESTAMP)))
_BINARY_TEMPORAL = frozenset((_DATE, _TIME)) | _DATETIMES
"""Temporal types of the binary protocol: a length byte, then that many bytes."""
_DATE_LENGTHS = (0, 4, 7, 11)
_TIME_LENGTHS = (0, 8, 12)

_FLOAT = int(FieldType.FLOAT)
_DOUBLE = int(FieldType.DOUBLE)
_NOT_FIXED_DEC = 31
"""Decimals of a FLOAT/DOUBLE without a fixed scale (MariaDB's FLOATING_POINT_DECIMALS)."""
_FLT_DIG = 6
_MAX_DECPT_FOR_F_FORMAT = 15  # DBL_DIG: beyond it the server writes 1e16, not 10000000000000000


def _digits(x: float, significant: int | None) -> tuple[str, int]:
    """Decimal digits of |x| without trailing zeros, and where the decimal point goes
    (x = 0.DIGITS * 10**decpt), as the server's dtoa gives them: the shortest digits that
    read back as x, or x rounded to ``significant`` digits."""
    text = repr(abs(x)) if significant is None else f"{abs(x):.{significant - 1}e}"
    _, digit_tuple, exponent = Decimal(text).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    if not digits:
        return "0", 1
    return digits.rstrip("0"), len(digits) + exponent


def _gcvt(x: float, is_float: bool) -> str:
    """MariaDB's ``my_gcvt`` with the wide buffers the text protocol gives it: the shortest
    digits (FLOAT: at most 6 significant), in plain notation unless the exponent is
    outside -14..15, then as ``1.5e20`` / ``1e-16`` (no '+', no zero padding)."""
    if not math.isfinite(x):
        return "0"  # dtoa's overflow answer; the server never stores these
    digits, decpt = _digits(x, _FLT_DIG if is_float else None)
    sign = "-" if math.copysign(1.0, x) < 0 else ""  # dtoa keeps the sign of -0.0
    n = len(digits)
    if decpt >= -_MAX_DECPT_FOR_F_FORMAT + 1 and (decpt <= _MAX_DECPT_FOR_F_FORMAT or n > decpt):
        if decpt <= 0:
            return f"{sign}0.{'0' * -decpt}{digits}"
        if decpt < n:
            return f"{sign}{digits[:decpt]}.{digits[decpt:]}"
        return f"{sign}{digits}{'0' * (decpt - n)}"
    mantissa = digits[0] + ("." + digits[1:] if n > 1 else "")
    return f"{sign}{mantissa}e{decpt - 1}"


def _fcvt(x: float, decimals: int) -> str:
    """MariaDB's ``my_fcvt``: fixed notation with exactly ``decimals`` digits."""
    if not math.isfinite(x):
        return "0"
    return f"{x:.{decimals}f}"


def _fraction(decimals: int, micro: int) -> str:
    """The fractional seconds the text protocol writes: as many digits as the scale."""
    if decimals <= 0:
        return ""
    if decimals > 6:  # no fixed scale (an expression): all six digits, if any
        return f".{micro:06d}" if micro else ""
    return "." + f"{micro:06d}"[:decimals]


def _check_length(raw: bytes, width: int, column: ColumnDefinition) -> None:
    if len(raw) != width:
        raise RemoteProtocolError(
            f"binary value of {len(raw)} bytes for a column of type {column.type} "
            f"({width} expected)"
        )


def binary_value_text(column: ColumnDefinition, raw: Buffer) -> bytes:
    """A binary-protocol value as the text protocol would send it.

    ``raw`` is the value's whole encoding as ``packets.parse_binary_row`` returns it: the
    fixed-width bytes of a number, a temporal value with its length byte, a string with its
    length prefix. Masks see the same input for a text and a binary result.
    """
    data = raw if isinstance(raw, bytes) else bytes(raw)
    t = column.type
    formats = _INTEGER.get(t)
    if formats is not None:
        _check_length(data, _FIXED_WIDTH[t], column)
        value = struct.unpack(formats[1] if column.flags & _UNSIGNED else formats[0], data)[0]
        return _zerofill(column, str(value))
    if t == _DOUBLE or t == _FLOAT:
        _check_length(data, _FIXED_WIDTH[t], column)
        x = struct.unpack("<d" if t == _DOUBLE else "<f", data)[0]
        if column.decimals >= _NOT_FIXED_DEC:
            text = _gcvt(x, t == _FLOAT)
        else:
            text = _fcvt(x, column.decimals)
        return _zerofill(column, text)
    if t in _BINARY_TEMPORAL:
        return _temporal_text(column, data)
    if t in _FIXED_WIDTH:  # the NULL type: never a value, always the bitmap
        _check_length(data, 0, column)
        return b""
    value, end = read_lenenc_bytes(data, 0)
    if value is None:
        raise RemoteProtocolError("NULL marker inside a binary row")
    if end != len(data):
        raise RemoteProtocolError(f"{len(data) - end} bytes after a binary string value")
    return value


def _zerofill(column: ColumnDefinition, text: str) -> bytes:
    """ZEROFILL numbers are padded to the column's display length in the text protocol."""
    if column.flags & _ZEROFILL:
        text = text.zfill(column.length)
    return text.encode("ascii")


def _temporal_text(column: ColumnDefinition, data: bytes) -> bytes:
    if not data:
        raise RemoteProtocolError("truncated binary temporal value")
    n = data[0]
    if len(data) != n + 1:
        raise RemoteProtocolError(
            f"binary temporal value announces {n} bytes and carries {len(data) - 1}"
        )
    t = column.type
    if t == _TIME:
        if n not in _TIME_LENGTHS:
            raise RemoteProtocolError(f"binary TIME of {n} bytes")
        if n == 0:
            negative, days, hour, minute, second, micro = 0, 0, 0, 0, 0, 0
        else:
            negative, days, hour, minute, second = struct.unpack_from("<BIBBB", data, 1)
            micro = int.from_bytes(data[9:13], "little") if n == 12 else 0
        sign = "-" if negative else ""
        text = f"{sign}{days * 24 + hour:02d}:{minute:02d}:{second:02d}"
        return (text + _fraction(column.decimals, micro)).encode("ascii")
    if n not in _DATE_LENGTHS:
        raise RemoteProtocolError(f"binary date or datetime of {n} bytes")
    year = data[1] | data[2] << 8 if n else 0
    month = data[3] if n else 0
    day = data[4] if n else 0
    date = f"{year:04d}-{month:02d}-{day:02d}"
    if t == _DATE:
        return date.encode("ascii")
    hour, minute, second = (data[5], data[6], data[7]) if n >= 7 else (0, 0, 0)
    micro = int.from_bytes(data[8:12], "little") if n == 11 else 0
    text = f"{date} {hour:02d}:{minute:02d}:{second:02d}" + _fraction(column.decimals, micro)
    return text.encode("ascii")


# ------------------------------------------------------------------------------- rows

_NULL = 0xFB
_NULL_BYTE = b"\xfb"
Counts = dict[int, int]
"""Per column index, how many values its mask changed (only columns that changed one)."""


def _encode_text(value: bytes | None) -> bytes:
    return _NULL_BYTE if value is None else write_lenenc_bytes(value)


def mask_text_row(payload: Buffer, masks: Sequence[ColumnMask | None]) -> tuple[bytes, Counts]:
    """Apply ``masks`` to a text-protocol row; unmasked values keep their exact bytes.

    A value whose mask returns it unchanged keeps its bytes too, so a row nothing changed
    comes back as the same bytes. (``TextRows`` does the same for every row of a result
    set, with the plan's work done once.)
    """
    data = payload if isinstance(payload, bytes) else bytes(payload)
    rows = TextRows(masks)
    out = rows.mask(data, 0, len(data))
    return (data if out is None else out), rows.take_counts()


class TextRows:
    """A plan compiled for the text rows of one result set (``mask_text_row`` row by row).

    What the plan implies is worked out once: the masked columns, and the last of them
    (the values after it are only walked over, to check the row's shape). ``mask`` reads
    the row in place, without copying its payload out of the buffer it came in, and
    counts what it changed per column (``take_counts``) instead of returning a count
    for every row.
    """

    __slots__ = ("masks", "_head", "_total", "_changed")

    def __init__(self, masks: Sequence[ColumnMask | None]) -> None:
        self.masks = masks
        """The plan as given (callers may test it by identity)."""
        plan = tuple(masks)
        last = max((i for i, m in enumerate(plan) if m is not None), default=-1)
        self._head = plan[: last + 1]
        """The masks up to the last masked column."""
        self._total = len(plan)
        self._changed = [0] * len(plan)

    def take_counts(self) -> Counts:
        """Per column, how many values its mask changed since the last call."""
        changed = self._changed
        counts = {i: c for i, c in enumerate(changed) if c}
        if counts:
            self._changed = [0] * len(changed)
        return counts

    def mask(self, data: bytes, pos: int, end: int) -> bytes | None:
        """The text row ``data[pos:end]`` with its masked values rewritten, or None when
        no value changed (the row then goes as it came)."""
        base = pos
        total = self._total
        parts: list[bytes] | None = None
        touched: list[int] = []  # the columns whose values changed (counted once whole)
        kept_from = pos  # start of the run of bytes copied unchanged
        i = 0
        for mask in self._head:
            if pos >= end:
                raise RemoteProtocolError(f"text row has {i} of {total} values")
            first = data[pos]
            if first < 0xFB:
                value_at = pos + 1
                stop = value_at + first
                if stop > end:
                    raise RemoteProtocolError("text row value runs past the end of the packet")
            elif first == _NULL:
                value_at = -1
                stop = pos + 1
            else:
                value_at, stop = _long_value(data, pos, end, base)
            if mask is not None:
                value = None if value_at < 0 else data[value_at:stop]
                masked = mask(value)
                if masked != value:
                    touched.append(i)
                    if parts is None:
                        parts = []
                    if first < 0xFB and masked is not None and len(masked) == first:
                        parts.append(data[kept_from:value_at])  # the same one-byte length
                        parts.append(masked)
                    else:
                        parts.append(data[kept_from:pos])
                        parts.append(_encode_text(masked))
                    kept_from = stop
            pos = stop
            i += 1
        while i < total:  # past the last masked column: only the row's shape is checked
            if pos >= end:
                raise RemoteProtocolError(f"text row has {i} of {total} values")
            first = data[pos]
            if first < 0xFB:
                pos += 1 + first
                if pos > end:
                    raise RemoteProtocolError("text row value runs past the end of the packet")
            elif first == _NULL:
                pos += 1
            elif first == 0xFC and pos + 3 <= end:  # 251 to 65,535 bytes: common enough
                stop = pos + 3 + (data[pos + 1] | data[pos + 2] << 8)
                if stop > end:
                    raise RemoteProtocolError(
                        f"length-encoded string at {pos - base} runs past the end"
                    )
                pos = stop
            else:
                pos = _long_value(data, pos, end, base)[1]
            i += 1
        if pos != end:
            raise RemoteProtocolError(f"text row has more than {total} values")
        if parts is None:
            return None
        changed = self._changed
        for i in touched:
            changed[i] += 1
        parts.append(data[kept_from:end])
        return b"".join(parts)


def _long_value(data: bytes, pos: int, end: int, base: int) -> tuple[int, int]:
    """A text value whose length takes 2, 3 or 8 bytes (0xFC, 0xFD, 0xFE): where its
    bytes start and end. Errors name positions within the row, as ``read_lenenc_bytes``."""
    first = data[pos]
    if first == 0xFC:
        value_at = pos + 3
        length = data[pos + 1] | data[pos + 2] << 8 if value_at <= end else 0
    elif first == 0xFD:
        value_at = pos + 4
        length = data[pos + 1] | data[pos + 2] << 8 | data[pos + 3] << 16 if value_at <= end else 0
    elif first == 0xFE:
        value_at = pos + 9
        length = int.from_bytes(data[pos + 1 : value_at], "little")
    else:
        raise RemoteProtocolError(f"0xFF is not a length-encoded integer (at {pos - base})")
    if value_at > end:
        raise RemoteProtocolError(f"truncated length-encoded integer at {pos - base}")
    if value_at + length > end:
        raise RemoteProtocolError(f"length-encoded string at {pos - base} runs past the end")
    return value_at, value_at + length


def mask_binary_row(
    payload: Buffer,
    columns: Sequence[ColumnDefinition],
    masks: Sequence[ColumnMask | None],
) -> tuple[bytes, Counts]:
    """Apply ``masks`` to a binary-protocol row of ``columns``.

    Unmasked values keep their exact bytes. A masked value is turned into its text form,
    masked, and written as a length-encoded string (the client reads it with the masked
    definition, a VAR_STRING); a masked NULL result sets the NULL bitmap instead.
    """
    if len(masks) != len(columns):
        raise LocalProtocolError(f"{len(masks)} masks for a row of {len(columns)} columns")
    data = payload if isinstance(payload, bytes) else bytes(payload)
    n = len(data)
    count = len(columns)
    pos = 1 + (count + 9) // 8  # header, then the NULL bitmap (offset 2)
    if n < pos:
        raise RemoteProtocolError("truncated binary row")
    if data[0] != 0x00:
        raise RemoteProtocolError(f"binary row header {data[0]:#x}, expected 0x00")
    bitmap = bytearray(data[1:pos])
    parts: list[bytes] = [b"\x00", b""]
    counts: Counts = {}
    kept_from = pos
    for i, column in enumerate(columns):
        bit = i + 2
        byte, flag = bit >> 3, 1 << (bit & 7)
        start = pos
        is_null = bitmap[byte] & flag
        if not is_null:
            pos = binary_value_end(data, pos, column)
        mask = masks[i]
        if mask is None:
            continue
        value = None if is_null else binary_value_text(column, data[start:pos])
        if reads_only(mask):
            mask(value)
            continue
        masked = mask(value)
        if masked != value:
            counts[i] = 1
        parts.append(data[kept_from:start])
        kept_from = pos
        if masked is None:
            bitmap[byte] |= flag
        else:
            bitmap[byte] &= ~flag
            parts.append(write_lenenc_bytes(masked))
    if pos != n:
        raise RemoteProtocolError(f"{n - pos} unexpected trailing bytes after binary row")
    parts.append(data[kept_from:])
    parts[1] = bytes(bitmap)
    return b"".join(parts), counts


def binary_value_end(data: bytes, pos: int, column: ColumnDefinition) -> int:
    """Where the binary value of ``column`` at ``pos`` ends (as ``parse_binary_row`` reads)."""
    t = column.type
    width = _FIXED_WIDTH.get(t)
    if width is not None:
        end = pos + width
    elif t in _BINARY_TEMPORAL:
        if pos >= len(data):
            raise RemoteProtocolError("truncated binary row")
        end = pos + 1 + data[pos]
    else:
        length, start = read_lenenc_int(data, pos)
        if length is None:
            raise RemoteProtocolError("NULL marker inside a binary row")
        end = start + length
    if end > len(data):
        raise RemoteProtocolError("binary row value runs past the end of the packet")
    return end


# ------------------------------------------------------------------------------ errors


def scrub_err(payload: Buffer, scrub: Callable[[bytes, int], bytes]) -> bytes:
    """An ERR packet with its message passed through ``scrub``; code, SQLSTATE marker and
    SQLSTATE stay as they were. Unchanged text gives back the same bytes."""
    data = payload if isinstance(payload, bytes) else bytes(payload)
    if len(data) < 3 or data[0] != 0xFF:
        raise RemoteProtocolError("not an ERR packet")
    head = 3
    if len(data) > 3 and data[3] == 0x23:  # '#', then a 5-character SQLSTATE
        if len(data) < 9:
            raise RemoteProtocolError("truncated SQLSTATE in ERR packet")
        head = 9
    message = data[head:]
    cleaned = scrub(message, int.from_bytes(data[1:3], "little"))
    if cleaned == message:
        return data
    return data[:head] + cleaned


# ------------------------------------------------------------------ table definitions

TABLE_DEFINITION_COLUMNS = (b"table", b"create table")
"""The names of the columns of ``SHOW CREATE TABLE`` (and ``SHOW CREATE SEQUENCE``): the
table's name, then its ``CREATE TABLE`` text. The server sends them with no origin."""
TABLE_DEFINITION_HEAD = b"\x03def\x00\x00\x00\x05Table\x00"
"""How the definition of the first column of such a result begins: catalog ``def``, no
schema, table or original table, the name ``Table``, no original name."""


def is_table_definition(columns: Sequence[ColumnDefinition]) -> bool:
    """Whether a result set is a ``SHOW CREATE TABLE``'s: its two columns by name, with no
    origin (a query's column of a table has one)."""
    return (
        len(columns) == 2
        and tuple(c.name.lower() for c in columns) == TABLE_DEFINITION_COLUMNS
        and not any(c.org_table or c.schema for c in columns)
    )


def may_be_table_definition(data: bytes, pos: int) -> bool:
    """For the fast relay, one test per first definition of a two-column result set:
    whether the definition at ``pos`` of ``data`` may be the first of a ``SHOW CREATE
    TABLE`` result (fewer bytes than its head: whether they are the head's first ones)."""
    have = len(data) - pos
    if have < len(TABLE_DEFINITION_HEAD):
        return data[pos:] == TABLE_DEFINITION_HEAD[:have]
    return data.startswith(TABLE_DEFINITION_HEAD, pos)


_WORD_BYTES = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_$.")
_QUOTES = frozenset(b"`\"'")
_NOT_COLUMNS = frozenset(
    {
        b"primary",
        b"unique",
        b"key",
        b"index",
        b"fulltext",
        b"spatial",
        b"constraint",
        b"foreign",
        b"check",
        b"period",
        b"vector",
    }
)
"""Words that begin an entry of a ``CREATE TABLE``'s list that is not a column (the server
quotes a column named like one of them)."""
_AFTER_DEFAULT = frozenset(
    {
        b"on",
        b"auto_increment",
        b"comment",
        b"check",
        b"invisible",
        b"compressed",
        b"references",
        b"with",
        b"without",
        b"primary",
        b"unique",
        b"key",
    }
)
"""Words that the server writes after a column's ``DEFAULT`` value: the value ends before
the first of them outside parentheses (or at the end of the column's entry)."""

Token = tuple[int, int, int]
"""A token of a definition: its kind (``b"w"`` a word, a quote for a quoted string or
name, else the punctuation byte itself), where it begins and where it ends."""


def definition_tokens(text: bytes) -> list[Token]:
    """The tokens of a ``CREATE TABLE`` text as the server writes it: words, quoted names
    (`` ` `` or ``"``, a doubled quote inside), strings (``'``, a doubled quote or a
    backslash escape inside), punctuation; blanks between them left out. An unclosed
    quote runs to the end."""
    out: list[Token] = []
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c in b" \t\r\n":
            i += 1
        elif c in _QUOTES:
            j = i + 1
            while j < n:
                d = text[j]
                if d == 0x5C and c == 0x27:  # a backslash escape inside a string
                    j += 2
                    continue
                if d == c:
                    if j + 1 < n and text[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            end = min(j + 1, n)
            out.append((c, i, end))
            i = end
        elif c in _WORD_BYTES or c >= 0x80:
            j = i + 1
            while j < n and (text[j] in _WORD_BYTES or text[j] >= 0x80):
                j += 1
            out.append((0x77, i, j))  # b"w"
            i = j
        else:
            out.append((c, i, i + 1))
            i += 1
    return out


_W = 0x77
_STRING = 0x27


def string_value(text: bytes, start: int, end: int) -> bytes:
    """The value of the string literal ``text[start:end]`` (quotes included) as the
    server wrote it: a doubled quote is one, a backslash escapes the byte after it."""
    body = text[start + 1 : end - 1 if end - start >= 2 and text[end - 1] == 0x27 else end]
    out = bytearray()
    i = 0
    n = len(body)
    while i < n:
        c = body[i]
        if c == 0x5C and i + 1 < n:
            nxt = body[i + 1]
            out.append({0x6E: 0x0A, 0x72: 0x0D, 0x74: 0x09, 0x30: 0x00, 0x5A: 0x1A}.get(nxt, nxt))
            i += 2
        elif c == 0x27 and i + 1 < n and body[i + 1] == 0x27:
            out.append(0x27)
            i += 2
        else:
            out.append(c)
            i += 1
    return bytes(out)


def string_literal(value: bytes | None) -> bytes:
    """``value`` as the server writes a string in a definition (``NULL`` for None)."""
    if value is None:
        return b"NULL"
    return b"'" + value.replace(b"\\", b"\\\\").replace(b"'", b"''") + b"'"


def scrub_connection(value: bytes) -> bytes:
    """A table's (or partition's) ``CONNECTION`` string without its password:
    ``mysql://user:****@host:port/db/table``. A server's name (``server/table``, which
    ``CREATE SERVER`` holds the password of) stays; any other form is replaced whole
    (``****``): the gateway does not know where it might hold one."""
    scheme = value.find(b"://")
    if scheme < 0:
        if any(c in value for c in b":@=;,\"' \\"):
            return b"****"
        return value
    rest = scheme + 3
    at = value.find(b"@", rest)
    if at < 0:
        return value if b":" not in value[rest:].split(b"/", 1)[0] else b"****"
    if b"@" in value[at + 1 :] or b"\\" in value or b"'" in value:
        return b"****"
    colon = value.find(b":", rest, at)
    if colon < 0:
        return value
    return value[: colon + 1] + b"****" + value[at:]


DefaultMask = Callable[[bytes], bytes | None]
"""Masks a column's default value (its text; None is ``DEFAULT NULL``)."""


def scrub_table_definition(
    text: bytes, default_mask: Callable[[bytes], DefaultMask | None] | None = None
) -> bytes:
    """A ``SHOW CREATE TABLE`` text with the password of every ``CONNECTION`` string
    (the table's, a partition's) replaced (``scrub_connection``), and, with
    ``default_mask`` (which, given a column's name, says how its values are masked, or
    None), the ``DEFAULT`` of each masked column masked alike: a string or a number by
    its value, written as a string; any other expression whole (as ``****``). ``DEFAULT
    NULL`` stays. Unchanged text gives back the same bytes."""
    lower = text.lower()
    if b"connection" not in lower and (default_mask is None or b"default" not in lower):
        return text
    tokens = definition_tokens(text)
    edits: list[tuple[int, int, bytes]] = []
    depth = 0
    listed = False  # inside the table's list of columns (the first parentheses)
    entry = False  # at the start of an entry of that list
    column_mask: DefaultMask | None = None
    count = len(tokens)
    i = 0
    while i < count:
        kind, start, end = tokens[i]
        if kind == _W and end - start == 10 and lower[start:end] == b"connection":
            j = i + 1
            if j < count and tokens[j][0] == 0x3D:  # '='
                j += 1
            if j < count and tokens[j][0] == _STRING:
                _, s, e = tokens[j]
                value = string_value(text, s, e)
                scrubbed = scrub_connection(value)
                if scrubbed != value:
                    edits.append((s, e, string_literal(scrubbed)))
                i = j + 1
                continue
        if kind == 0x28:  # '('
            depth += 1
            if depth == 1 and not listed and default_mask is not None:
                listed = entry = True
            i += 1
            continue
        if kind == 0x29:  # ')'
            depth -= 1
            if depth == 0 and listed:
                listed = False
                default_mask = None  # the table's list of columns is over
            i += 1
            continue
        if listed and depth == 1:
            if kind == 0x2C:  # ','
                entry = True
                column_mask = None
                i += 1
                continue
            if entry:
                entry = False
                name: bytes | None = None
                if kind in (0x60, 0x22):
                    q = text[start : start + 1]
                    name = text[start + 1 : end - 1].replace(q + q, q)
                elif kind == _W and lower[start:end] not in _NOT_COLUMNS:
                    name = text[start:end]
                assert default_mask is not None
                column_mask = default_mask(name) if name is not None else None
                i += 1
                continue
            if column_mask is not None and kind == _W and lower[start:end] == b"default":
                i = _mask_default(text, lower, tokens, i + 1, column_mask, edits)
                continue
        i += 1
    if not edits:
        return text
    out = bytearray()
    pos = 0
    for s, e, new in edits:
        out += text[pos:s]
        out += new
        pos = e
    out += text[pos:]
    return bytes(out)


def _mask_default(
    text: bytes,
    lower: bytes,
    tokens: Sequence[Token],
    i: int,
    mask: DefaultMask,
    edits: list[tuple[int, int, bytes]],
) -> int:
    """Mask the value of a ``DEFAULT`` whose first token is ``tokens[i]``; where to go on."""
    count = len(tokens)
    j = i
    depth = 0
    while j < count:
        kind, start, end = tokens[j]
        if depth == 0 and (kind == 0x2C or kind == 0x29):
            break
        if depth == 0 and j > i and kind == _W and lower[start:end] in _AFTER_DEFAULT:
            break
        if kind == 0x28:
            depth += 1
        elif kind == 0x29:
            depth -= 1
        j += 1
    if j == i:
        return j
    begin, finish = tokens[i][1], tokens[j - 1][2]
    new = _masked_default(text, tokens[i:j], mask)
    if new is not None:
        edits.append((begin, finish, new))
    return j


def _masked_default(text: bytes, span: Sequence[Token], mask: DefaultMask) -> bytes | None:
    """The masked form of a default value written as ``span`` of ``text`` (None: it
    stays, ``NULL``)."""
    kinds = [t[0] for t in span]
    begin, finish = span[0][1], span[-1][2]
    if kinds == [_W] and text[begin:finish].lower() == b"null":
        return None
    value: bytes | None
    if kinds == [_STRING] or (kinds == [_W, _STRING] and span[0][2] == span[1][1]):
        # a string, or one after an introducer (b'101', x'0A', _latin1'...')
        value = string_value(text, span[-1][1], span[-1][2])
    elif kinds == [_W] or (kinds == [0x2D, _W] and span[0][2] == span[1][1]):
        value = text[begin:finish]  # a number (the server writes no other bare word here)
    else:  # an expression: masked whole
        return string_literal(None if mask(b"****") is None else b"****")
    return string_literal(mask(value))


def mask_default_literal(value: bytes, mask: DefaultMask) -> bytes:
    """``information_schema.COLUMNS.COLUMN_DEFAULT`` (a default as SQL: ``'text'``, a
    number, ``NULL``, an expression) masked as ``scrub_table_definition`` masks one."""
    tokens = definition_tokens(value)
    if not tokens:
        return value
    new = _masked_default(value, tokens, mask)
    return value if new is None else new


class DefinitionRow:
    """The table whose ``CREATE TABLE`` text is being masked (read from the row's
    ``Table`` value, which comes first)."""

    __slots__ = ("table",)

    def __init__(self) -> None:
        self.table: bytes | None = None


class TableName:
    """Reads a ``SHOW CREATE TABLE`` row's table name for its definition's mask."""

    __slots__ = ("row",)
    label = "table definition"
    reads_only = True

    def __init__(self, row: DefinitionRow) -> None:
        self.row = row

    def __call__(self, value: bytes | None) -> bytes | None:
        self.row.table = value
        return value


class TableDefinition:
    """The mask of a ``SHOW CREATE TABLE`` text (``scrub_table_definition``): a
    connection's password, and with ``defaults`` (given a table and a column, how the
    column's values are masked, or None) the defaults of masked columns."""

    __slots__ = ("row", "defaults")
    label = "table definition"

    def __init__(
        self,
        row: DefinitionRow,
        defaults: Callable[[bytes, bytes], DefaultMask | None] | None = None,
    ) -> None:
        self.row = row
        self.defaults = defaults

    def __call__(self, value: bytes | None) -> bytes | None:
        if value is None:
            return None
        defaults = self.defaults
        table = self.row.table
        if defaults is None:
            return scrub_table_definition(value)
        if table is None:  # no name: every column's default is taken for a masked one's
            return scrub_table_definition(value, lambda column: defaults(b"", column))
        return scrub_table_definition(value, lambda column: defaults(table, column))


def table_definition_plan(
    defaults: Callable[[bytes, bytes], DefaultMask | None] | None = None,
) -> list[ColumnMask | None]:
    """The plan of a ``SHOW CREATE TABLE`` result (see ``is_table_definition``)."""
    row = DefinitionRow()
    return [TableName(row), TableDefinition(row, defaults)]


class DefinitionsOnly:
    """The masker of a session that no masking rule applies to, for the answers the
    relay shows it (``may_be_table_definition``): it only takes the passwords out of
    ``SHOW CREATE TABLE``'s connection strings."""

    def plan(
        self,
        columns: Sequence[ColumnDefinition],
        *,
        origins_unsure: bool = False,
        statement: bytes | None = None,
    ) -> Sequence[ColumnMask | None] | None:
        return table_definition_plan() if is_table_definition(columns) else None

    def scrub(self, message: bytes, code: int | None = None) -> bytes:
        return message


DEFINITIONS_ONLY = DefinitionsOnly()


def mask_field_list_default(payload: bytes, masker: Masker) -> bytes:
    """A column definition of a ``COM_FIELD_LIST`` answer, which ends with the column's
    default value (``+49 30 1234567``): masked as the column's values are, by its origin
    (the rest of the definition stays as it came)."""
    column = parse_column_definition(payload)
    pos = 0
    for _ in range(6):  # catalog, schema, table, org_table, name, org_name
        _, pos = read_lenenc_bytes(payload, pos)
    pos += 13
    if pos >= len(payload):
        return payload  # no default value sent
    value, _ = read_lenenc_bytes(payload, pos)
    masks = normalize_plan(masker.plan([column]), 1)
    mask = masks[0] if masks is not None else None
    if mask is None or reads_only(mask):
        return payload
    masked = mask(value)
    if masked == value:
        return payload
    return payload[:pos] + _encode_text(masked)
