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
