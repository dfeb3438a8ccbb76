"""The values a client binds to a prepared statement (COM_STMT_EXECUTE), for the ledger.

An execute carries its statement's id and, after a 10-byte head, the parameter block: a
NULL bitmap, a "new types" flag, the types (2 bytes each) when that flag is set, and the
values in the binary protocol. Without the values, the record of ``DELETE FROM orders
WHERE id = ?`` says nothing of which row it hit. A later execute of the same statement
may leave the types out (the server keeps those of the last one), and a parameter sent
with COM_STMT_SEND_LONG_DATA has no value in the block: ``ExecuteParams`` follows both, in
the order the client sent its commands.

Each value is given as an SQL literal of the text the server reads
(``binary_value_text``): ``42``, ``'O''Hara'``, ``'2026-11-29 10:00:00'``, ``NULL``;
``x'ff00'`` for bytes that are not UTF-8, ``(long data)`` for a value sent apart, and
``(N bytes)`` for one over ``MAX_VALUE`` bytes. The record's ``sql_sha256``
covers the whole command, so every value is bound either way.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from appliance.mysql.constants import Command
from appliance.mysql.errors import RemoteProtocolError
from appliance.mysql.masking import NUMBER_TYPES, binary_value_end, binary_value_text
from appliance.mysql.packets import ColumnDefinition

__all__ = [
    "MAX_PARAMS",
    "MAX_VALUE",
    "ExecuteParams",
    "ParamFields",
    "literal_text",
    "read_params",
]

_HEAD = 10  # 0x17, statement id (4), flags (1), iteration count (4)
_UNSIGNED_TYPE = 0x80  # the second byte of a parameter's type
_UNSIGNED_FLAG = 0x20  # ColumnDefinition.flags: UNSIGNED
_NOT_FIXED_DEC = 31
MAX_PARAMS = 256
"""Parameters given in a record; those after are counted (``params_more``)."""
MAX_VALUE = 1024
"""Bytes of a value given as text; a longer one is given by its size."""


Types = tuple[tuple[int, bool], ...]
ParamFields = dict[str, str | int | list[str]]
"""The record fields of an execute's parameters (see ``ExecuteParams.fields``)."""


@dataclass(slots=True)
class ExecuteParams:
    """One session's parameter types and long data, per prepared statement id.

    An execute is read when it is decided, in the order the client sent its commands,
    but it changes what the server keeps only if it reaches the server: one the gateway
    answers itself (refused by a rule or a limit) left the server with the types and
    long data it had, so ``not_sent`` puts them back, and a later execute without types
    is read as the server reads it."""

    _types: dict[int, Types] = field(default_factory=dict)
    _long_data: dict[int, set[int]] = field(default_factory=dict)
    _undo: dict[int, _Undo] = field(default_factory=dict)
    """Per execute not yet settled (by command id): what its reading changed."""
    _pending: dict[int, tuple[int, frozenset[int]]] = field(default_factory=dict)
    """Executes read with long data, until their answers: command id -> (statement id,
    the parameters the server may hold long data of until it runs one)."""
    _unsure: dict[int, set[int]] = field(default_factory=dict)
    """Statement id -> parameters whose long data the server may still hold: an execute
    that did not run (refused by the gateway, or by the server before it bound its
    values, as one whose types it cannot read) leaves the chunks bound there."""

    def note(self, payload: bytes) -> None:
        """A command the client sent that is not an execute: long data marks its
        parameter; a close, a reset of the statement or of the connection forgets."""
        if not payload:
            return
        code = payload[0]
        if code == Command.STMT_SEND_LONG_DATA and len(payload) >= 7:
            statement_id = int.from_bytes(payload[1:5], "little")
            self._long_data.setdefault(statement_id, set()).add(
                int.from_bytes(payload[5:7], "little")
            )
        elif code in (Command.STMT_CLOSE, Command.STMT_RESET) and len(payload) >= 5:
            statement_id = int.from_bytes(payload[1:5], "little")
            self._long_data.pop(statement_id, None)
            self._unsure.pop(statement_id, None)
            for key, (pending_id, _) in self._pending.items():
                if pending_id == statement_id:  # its long data goes whatever its answer
                    self._pending[key] = (pending_id, frozenset())
            if code == Command.STMT_CLOSE:
                self._types.pop(statement_id, None)
            if self._undo:  # what an earlier execute changed is gone with them
                for cmd_id in [k for k, u in self._undo.items() if u.statement_id == statement_id]:
                    del self._undo[cmd_id]
        elif code == Command.RESET_CONNECTION:
            self._types.clear()
            self._long_data.clear()
            self._undo.clear()
            self._unsure.clear()
            self._pending.clear()

    def not_sent(self, cmd_id: int) -> None:
        """The execute ``cmd_id`` (read by ``fields``) never reached the server: what it
        would have changed there did not change. Its types are put back unless a later
        execute sent its own since, and the long data it would have taken waits again."""
        undo = self._undo.pop(cmd_id, None)
        if undo is None:
            return
        statement_id = undo.statement_id
        if undo.sent is not None and self._types.get(statement_id) is undo.sent:
            if undo.before is None:
                del self._types[statement_id]
            else:
                self._types[statement_id] = undo.before
        if undo.long_data:
            self._long_data.setdefault(statement_id, set()).update(undo.long_data)

    def answered(self, cmd_id: int, error: int | None, sent: bool = True) -> None:
        """The answer of the execute ``cmd_id`` (a ``ClientCommand.id``; ``sent`` False:
        the gateway's, it never reached the server). One that ran (no error) dropped its
        statement's long data on the server; one that failed may have left it bound, for
        the statement's next execute."""
        if not sent:
            self.not_sent(cmd_id)
        elif self._undo:
            self._undo.pop(cmd_id, None)  # what it changed holds
        entry = self._pending.pop(cmd_id, None)
        if entry is None:
            return
        statement_id, marks = entry
        if error is None:
            self._unsure.pop(statement_id, None)
        elif marks:
            self._unsure.setdefault(statement_id, set()).update(marks)

    def fields(self, payload: bytes, count: int | None, cmd_id: int = 0) -> ParamFields:
        """The record fields of an execute (``cmd_id``, its ``ClientCommand.id``, for
        ``answered``, which the caller then owes) of a statement with ``count`` parameters
        (None: not known): ``params``, and ``params_more`` past ``MAX_PARAMS``; or, when the
        block cannot be read, ``params_error`` and ``params_hex`` (its first 4 KiB). A
        block is not read while the server may hold long data of a parameter this execute
        does not send again (an earlier execute did not run, or has not been answered):
        the server reads no value of the block for it, so every value after it would be
        read shifted."""
        if len(payload) < _HEAD:
            return {}
        statement_id = int.from_bytes(payload[1:5], "little")
        long_data = self._long_data.pop(statement_id, set())
        maybe = set(self._unsure.get(statement_id, ()))
        for pending_id, marks in self._pending.values():
            if pending_id == statement_id:
                maybe |= marks
        if long_data or maybe:
            self._pending[cmd_id] = (statement_id, frozenset(long_data | maybe))
        block = payload[_HEAD:]
        sent = None if count is None else _sent_types(block, count)
        if sent or long_data:
            before = self._types.get(statement_id)
            self._undo[cmd_id] = _Undo(statement_id, before, sent or None, frozenset(long_data))
        stale = sorted(maybe - long_data)
        if count is None:
            return _unread(block, "the statement's parameter count is not known")
        # The server keeps the types an execute sends whatever its values are (a block
        # with bytes after its last value runs): a later execute without types is read
        # with them even when this block's values cannot be read here.
        if sent:
            self._types[statement_id] = sent
        if stale:
            return _unread(
                block,
                "long data of parameter "
                + ", ".join(str(i) for i in stale)
                + " may still be bound on the server (an execute before this one did not "
                "run), so the values are not read",
            )
        try:
            values, types = read_params(block, count, self._types.get(statement_id), long_data)
        except RemoteProtocolError as exc:
            return _unread(block, str(exc))
        out: ParamFields = {"params": values[:MAX_PARAMS]}
        if len(values) > MAX_PARAMS:
            out["params_more"] = len(values) - MAX_PARAMS
        return out


@dataclass(frozen=True, slots=True)
class _Undo:
    """What reading one execute changed: its statement's types before and the ones it
    sent (None: it sent none), and the long data it took."""

    statement_id: int
    before: Types | None
    sent: Types | None
    long_data: frozenset[int]


def _sent_types(block: bytes, count: int) -> Types | None:
    """The types a parameter block carries (its "new types" flag set and the types whole),
    else None."""
    nulls = (count + 7) // 8
    pos = nulls + 1
    if not count or len(block) < pos + 2 * count or not block[nulls]:
        return None
    return tuple(
        (block[pos + 2 * i], bool(block[pos + 2 * i + 1] & _UNSIGNED_TYPE)) for i in range(count)
    )


def _unread(block: bytes, why: str) -> ParamFields:
    return {"params_error": why, "params_hex": block[:4096].hex()} if block else {}


def read_params(
    block: bytes, count: int, known: Types | None, long_data: set[int] | Mapping[int, object]
) -> tuple[list[str], Types]:
    """The values of a parameter block (what follows an execute's 10-byte head) of a
    statement with ``count`` parameters, and the types they were read with. ``known``:
    the types of the statement's last execute, for a block that leaves them out;
    ``long_data``: the parameters sent with COM_STMT_SEND_LONG_DATA, which have none.
    Past ``MAX_PARAMS`` values are only walked to their end (given as ""): a block of
    65,535 of them is read on the event loop, and the record counts them only."""
    if count == 0:
        if block:
            raise RemoteProtocolError(f"{len(block)} bytes of parameters for a statement of none")
        return [], ()
    nulls = (count + 7) // 8
    if len(block) < nulls + 1:
        raise RemoteProtocolError("the parameter block ends in its NULL bitmap")
    bitmap = block[:nulls]
    pos = nulls + 1
    if block[nulls]:  # the types follow
        sent = _sent_types(block, count)
        if sent is None:
            raise RemoteProtocolError("the parameter block ends in its types")
        types = sent
        pos += 2 * count
    elif known is not None and len(known) == count:
        types = known
    else:
        raise RemoteProtocolError("an execute without types, and none known for its statement")
    values: list[str] = []
    for i, (code, unsigned) in enumerate(types):
        if bitmap[i // 8] >> (i % 8) & 1:
            values.append("NULL")
            continue
        if i in long_data:
            values.append("(long data)")
            continue
        column = _as_column(code, unsigned)
        end = binary_value_end(block, pos, column)
        if len(values) < MAX_PARAMS:  # the record gives these; the rest only end
            values.append(_literal(binary_value_text(column, block[pos:end]), code))
        else:
            values.append("")
        pos = end
    if pos != len(block):
        raise RemoteProtocolError(f"{len(block) - pos} bytes after the last parameter")
    return values, types


@functools.cache
def _as_column(code: int, unsigned: bool) -> ColumnDefinition:
    """A parameter's type as a column of that type, which ``binary_value_text`` reads."""
    return ColumnDefinition(
        b"def", b"", b"", b"", b"?", b"?", 63, 0, code,
        _UNSIGNED_FLAG if unsigned else 0, _NOT_FIXED_DEC,
    )  # fmt: skip


def _literal(text: bytes, code: int) -> str:
    """A value's text as an SQL literal (see the module's docstring)."""
    if len(text) > MAX_VALUE:  # (the record's sql_sha256 binds it: no second digest)
        return f"({len(text)} bytes)"
    if code in NUMBER_TYPES:  # a number is given bare, anything else quoted
        return text.decode("ascii")
    try:
        readable = text.decode("utf-8")
    except UnicodeDecodeError:
        return f"x'{text.hex()}'"
    return "'" + readable.translate(_ESCAPES) + "'"


_ESCAPES = str.maketrans(
    {"\\": "\\\\", "'": "''", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}
)
"""A literal on one line, read back as the same text (outside NO_BACKSLASH_ESCAPES)."""


_UNESCAPES = {"\\\\": "\\", "''": "'", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\0": "\0"}
_ESCAPED = re.compile(r"\\\\|''|\\[nrt0]")


def literal_text(literal: str) -> str:
    """The text of a quoted literal a record gives (``'O''Hara'``), as it was bound:
    the escapes of ``_ESCAPES`` undone."""
    return _ESCAPED.sub(lambda m: _UNESCAPES[m.group()], literal[1:-1])
