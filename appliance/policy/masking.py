"""Which values are masked, and how (SPEC §7): the policy side of result-set masking.

``MaskingPolicy`` holds the ``[[masking]]`` rules of the configuration; ``for_groups``
gives a session its ``SessionMasker`` (None when its groups are exempt from every rule),
which the protocol core asks, per result set, for a plan: a mask for each column whose
ORIGIN (schema, table and column of the column definition, so aliases do not escape)
matches a rule, and, with content detectors, a scan of every other column. Views hide
origins, so masked columns of views are added as rules of their own (``derived``) from
the view definitions; layer one (``classify.masked_uses``) asks ``is_masked``.

Strategies work on the value's text form, so the text and binary protocols agree:
``redact`` -> ``****``; ``last4`` -> one ``*`` per character but the last four (values
of four characters or fewer are starred whole); ``hash`` -> HMAC-SHA256 under the
gateway's masking key, hex (stable: joins and group-bys on the digest still work);
``null`` -> SQL NULL.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from appliance.config import MaskingRuleConfig, MaskStrategy
from appliance.mysql.charsets import LOSSLESS_NAMES, name_codec
from appliance.mysql.constants import FieldType
from appliance.mysql.masking import (
    DefaultMask,
    DefinitionRow,
    TableDefinition,
    TableName,
    is_table_definition,
    mask_default_literal,
)
from appliance.mysql.packets import ColumnDefinition

__all__ = [
    "DETECTORS",
    "ColumnRule",
    "MaskingPolicy",
    "STRICTNESS",
    "SessionMasker",
    "ValueMask",
    "luhn_valid",
    "mask_value",
]

DETECTORS = ("card", "email")
"""Content detectors a ``[[masking]]`` entry may name in ``detect``."""


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if index % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _last4(text: str) -> str:
    if len(text) <= 4:
        return "*" * len(text)
    return "*" * (len(text) - 4) + text[-4:]


def mask_value(strategy: MaskStrategy, value: bytes, key: bytes) -> bytes | None:
    """``value`` (a text-protocol value) masked by ``strategy``; None is SQL NULL."""
    if strategy is MaskStrategy.REDACT:
        return b"****"
    if strategy is MaskStrategy.NULL:
        return None
    if strategy is MaskStrategy.HASH:
        return hmac.new(key, value, hashlib.sha256).hexdigest().encode()
    text = value.decode("utf-8", "surrogateescape")
    return _last4(text).encode("utf-8", "surrogateescape")


# -- content detectors ------------------------------------------------------------------

_CARD = re.compile(rb"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
_DIGIT = re.compile(rb"[0-9]")  # no digit anywhere in a value: no card in it
_EMAIL = re.compile(rb"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")
"""What an e-mail address is. Searched as written it tries every start of a run of
local-part characters and reads up to 64 bytes from each: a value of ``a`` * 63 + ``@``
repeated took about a second a megabyte on the event loop. ``_emails`` finds the same
matches with ``_AT_DOMAIN``, which reads each byte a bounded number of times."""
_AT_DOMAIN = re.compile(rb"(?<=[A-Za-z0-9._%+-])@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")
"""An ``@`` after a local-part character, and the domain after it."""
_LOCAL_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-"
_LOCAL_MAX = 64


ROW_CANDIDATES = 100_000
"""Candidates the content detectors examine in one row: runs of digits that may be card
numbers, and ``@`` with a domain after it. Each costs a few microseconds on the event
loop, where every session waits: a 16 MB value of ``a@b.c`` repeated held them all for
3.5 s. Past the limit, a value of the row in which a detector finds another candidate
is redacted whole (``****``)."""


class _OverBudget(Exception):
    """The row's candidates are used up: the value is redacted whole."""


@dataclass(slots=True)
class ScanBudget:
    """What is left of ``ROW_CANDIDATES`` in the row being masked, shared by the
    detecting masks of one result set. Each row calls them in column order, so a mask
    whose column does not come after the last one called starts a new row."""

    left: int = ROW_CANDIDATES
    column: int = -1

    def enter(self, column: int) -> None:
        if column <= self.column:
            self.left = ROW_CANDIDATES
        self.column = column

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _OverBudget


def _cards(text: bytes, budget: ScanBudget) -> Iterable[tuple[int, int]]:
    for match in _CARD.finditer(text):
        budget.take()
        digits = re.sub(rb"[ -]", b"", match.group()).decode()
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield match.span()


def _emails(text: bytes, budget: ScanBudget) -> Iterable[tuple[int, int]]:
    """The spans ``_EMAIL.finditer`` gives. A match's local part is the run before its
    ``@`` (no ``@`` inside it), so the leftmost match for an ``@`` starts where that run
    does, at most 64 bytes back and not before the last match's end; its domain is the
    one the pattern reads after the ``@`` (which holds no ``@``, so no ``@`` is missed)."""
    pos = 0
    for match in _AT_DOMAIN.finditer(text):
        budget.take()
        at = match.start()
        low = max(pos, at - _LOCAL_MAX)
        start = low + len(text[low:at].rstrip(_LOCAL_CHARS))
        if start < at:
            pos = match.end()
            yield start, pos


_FINDERS = {"card": _cards, "email": _emails}
_REDACTED = b"****"


@dataclass(frozen=True, slots=True)
class Detector:
    """A content rule: what it finds, and how a finding is masked."""

    kind: str
    strategy: MaskStrategy


@functools.lru_cache(maxsize=4)
def _detector_key(key: bytes) -> bytes:
    """The key of the detectors' ``hash``, apart from the column rules': a detector
    masks any text a client chooses (``SELECT 'guess@example.com'``), so with the same
    key it would hand out the digest a hashed column shows for that value."""
    return hmac.new(key, b"sqlgate detectors", hashlib.sha256).digest()


def _scan(
    text: bytes, detectors: Sequence[Detector], key: bytes, budget: ScanBudget | None = None
) -> bytes:
    """``text`` with every finding of ``detectors`` masked (NULL strategy: redacted,
    since part of a value cannot be NULL). Past the candidates ``budget`` has left (a
    value alone: ``ROW_CANDIDATES``), ``****``."""
    if budget is None:
        budget = ScanBudget()
    spans: list[tuple[int, int, MaskStrategy]] = []
    try:
        for detector in detectors:
            if detector.kind == "card" and _DIGIT.search(text) is None:
                continue
            if detector.kind == "email" and b"@" not in text:
                continue
            for start, end in _FINDERS[detector.kind](text, budget):
                spans.append((start, end, detector.strategy))
    except _OverBudget:
        return _REDACTED
    if not spans:
        return text
    spans.sort()
    out = bytearray()
    pos = 0
    key = _detector_key(key)
    for start, end, strategy in spans:
        if start < pos:
            continue  # overlapping findings: the first one masks
        out += text[pos:start]
        masked = mask_value(strategy, text[start:end], key)
        out += masked if masked is not None else b"****"
        pos = end
    out += text[pos:]
    return bytes(out)


# -- column rules -----------------------------------------------------------------------


def _pattern(part: str) -> re.Pattern[str]:
    """A name, or a pattern where ``*`` matches anything; case-insensitive, as the
    server compares identifiers."""
    return re.compile(".*".join(re.escape(p) for p in part.split("*")), re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ColumnRule:
    """A ``schema.table.column`` pattern with its strategy (from the configuration, or
    derived from a view that shows a masked column)."""

    label: str
    schema: re.Pattern[str]
    table: re.Pattern[str]
    column: re.Pattern[str]
    strategy: MaskStrategy
    rewrite: bool = False  # layer one may rewrite uses instead of refusing them
    exempt_groups: frozenset[str] = frozenset()
    chains: tuple[tuple[ColumnRule, ...], ...] = ()
    """A rule derived from a view: for each base column the view column is computed
    from, the configuration's rules that match it, in file order. Who sees what is
    decided per session (``for_groups``)."""

    @classmethod
    def of(
        cls,
        schema: str,
        table: str,
        column: str,
        strategy: MaskStrategy,
        *,
        rewrite: bool = False,
        exempt_groups: Iterable[str] = (),
        chains: Sequence[Sequence[ColumnRule]] = (),
        label: str | None = None,
    ) -> ColumnRule:
        return cls(
            label or f"{schema}.{table}.{column}",
            _pattern(schema),
            _pattern(table),
            _pattern(column),
            strategy,
            rewrite,
            frozenset(exempt_groups),
            tuple(tuple(chain) for chain in chains),
        )

    def for_groups(self, groups: frozenset[str]) -> ColumnRule | None:
        """The rule as it applies to a session with ``groups`` (None: it does not). A
        derived rule takes, for each of its sources, the first rule that does not
        exempt the session (the layering of the configuration), and of those the
        strictest (``STRICTNESS``; the first of equals)."""
        if not self.chains:
            return None if self.exempt_groups & groups else self
        firsts: list[ColumnRule] = []
        for chain in self.chains:
            for rule in chain:
                if not rule.exempt_groups & groups:
                    firsts.append(rule)
                    break
        if not firsts:
            return None
        strictest = min(firsts, key=lambda r: STRICTNESS.index(r.strategy))
        return ColumnRule(
            self.label,
            self.schema,
            self.table,
            self.column,
            strictest.strategy,
            all(r.rewrite for r in firsts),
        )

    def matches(self, schema: str, table: str, column: str) -> bool:
        """``schema`` empty: a column whose schema the server did not say (a TEMPTABLE
        view): the rule matches on table and column alone (fail closed). ``column``
        ``*``: whether the rule masks any column of the table."""
        return (
            (not schema or self.schema.fullmatch(schema) is not None)
            and self.table.fullmatch(table) is not None
            and (column == "*" or self.column.fullmatch(column) is not None)
        )


_LAST4 = MaskStrategy.LAST4

STRICTNESS = (MaskStrategy.REDACT, MaskStrategy.NULL, MaskStrategy.HASH, MaskStrategy.LAST4)
"""Strategies from the one that shows least: ``redact`` and ``null`` hide the value,
``hash`` hides it but lets equal values be told apart (joins, guesses of a small set),
``last4`` shows four characters. A view column computed from columns masked alike
takes the first."""


class _WarningRow:
    """The code of the warning row being masked (shared by its code and message masks)."""

    __slots__ = ("code",)

    def __init__(self) -> None:
        self.code: bytes | None = None


@dataclass(slots=True)
class _WarningCode:
    """Reads a warning's code for its message's mask; the code itself goes as it is."""

    row: _WarningRow
    label: str = "warnings"
    reads_only: bool = True

    def __call__(self, value: bytes | None) -> bytes | None:
        self.row.code = value
        return value


_REWRITTEN_QUERY = b"1003"
"""The note of EXPLAIN EXTENDED (and MySQL 8's EXPLAIN): the query as the optimizer
rewrote it, with the values of constant tables' rows written in, masked columns too."""
_NOT_SHOWN = (
    b"sqlgate: the query as the server rewrote it is not shown, as it may hold the values "
    b"of masked columns"
)


@dataclass(slots=True)
class ValueMask:
    """The mask of one column of one result set (``appliance.mysql.masking.ColumnMask``)."""

    label: str
    strategy: MaskStrategy | None  # None: content detectors only
    key: bytes
    detectors: Sequence[Detector] = ()
    quoted_only: bool = False  # warnings: scrub the values quoted in a message
    row: _WarningRow | None = None  # warnings: the code of the message's row
    column: int = -1  # detectors: its place in the row, and the row's candidates left
    budget: ScanBudget | None = None

    def __call__(self, value: bytes | None) -> bytes | None:
        if value is None:
            return None
        strategy = self.strategy
        if strategy is _LAST4 and value.isascii():
            # the common case, without decoding: one character per byte
            n = len(value)
            return b"*" * (n - 4) + value[-4:] if n > 4 else b"*" * n
        if strategy is not None:
            return mask_value(strategy, value, self.key)
        if self.quoted_only:
            if self.row is not None and self.row.code == _REWRITTEN_QUERY:
                return _NOT_SHOWN
            code = self.row.code if self.row is not None else None
            number = int(code) if code is not None and code.isdigit() else None
            return _scrub_quoted(value, self.detectors, self.key, number)
        budget = self.budget
        if budget is not None:
            budget.enter(self.column)
        return _scan(value, self.detectors, self.key, budget)


_WARNING_COLUMNS = (b"level", b"code", b"message")

_PLAN_COLUMNS = frozenset({b"explain", b"analyze"})
"""The one column of ``EXPLAIN FORMAT=JSON`` (and ``DESCRIBE``) and ``ANALYZE
FORMAT=JSON``: the plan as a JSON document, its conditions as SQL text."""
_PLAN_LITERAL = re.compile(
    r"'(?:[^'\\]|\\.)*(?:'|\Z)|\b0[xb][0-9A-Fa-f]+\b|"
    r"(?<![\w$@`])[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?(?![\w$`])",
    re.DOTALL,
)
"""A literal as the server prints one in a plan's condition: a quoted string (``\'``
inside it ends nothing; an unclosed one runs to the end), a hex or bit number, a number. A
constant table's row is written into the conditions (``"const_condition": "'ann@x.org'
is not null"`` for a view that joins on a masked e-mail), so every literal is replaced."""
_PLAN_STRUCTURE = frozenset({"key_length"})
"""Keys whose string values are sizes the server computes, never a value of a row."""


def _scrub_plan_text(text: str) -> str:
    return _PLAN_LITERAL.sub(lambda m: "'****'" if m.group().startswith("'") else "****", text)


def _scrub_plan_json(node: object) -> object:
    if isinstance(node, str):
        return _scrub_plan_text(node)
    if isinstance(node, list):
        return [_scrub_plan_json(v) for v in node]
    if isinstance(node, dict):
        return {k: v if k in _PLAN_STRUCTURE else _scrub_plan_json(v) for k, v in node.items()}
    return node


def scrub_plan(value: bytes) -> bytes:
    """A JSON plan (``EXPLAIN``/``ANALYZE FORMAT=JSON``) with every literal of its
    conditions replaced by ``****``: the server writes the values of a constant table's
    row into them, masked columns too (through a view that only joins or filters on one,
    whose own columns no rule masks). A text that is not JSON is scrubbed whole."""
    text = value.decode("utf-8", "surrogateescape")
    try:
        document = json.loads(text)
    except ValueError:
        return _scrub_plan_text(text).encode("utf-8", "surrogateescape")
    scrubbed = _scrub_plan_json(document)
    if scrubbed == document:
        return value
    out = json.dumps(scrubbed, indent=2, ensure_ascii=False)
    return out.encode("utf-8", "surrogateescape")


@dataclass(slots=True)
class _PlanMask:
    """The mask of a JSON plan's column (``scrub_plan``), then the content detectors."""

    key: bytes
    detectors: Sequence[Detector] = ()
    label: str = "plan"

    def __call__(self, value: bytes | None) -> bytes | None:
        if value is None:
            return None
        scrubbed = scrub_plan(value)
        return _scan(scrubbed, self.detectors, self.key) if self.detectors else scrubbed


# Content detectors scan string columns (a number column keeps its type for the client).
_STRING_TYPES = frozenset(
    {
        FieldType.VARCHAR,
        FieldType.VAR_STRING,
        FieldType.STRING,
        FieldType.TINY_BLOB,
        FieldType.MEDIUM_BLOB,
        FieldType.LONG_BLOB,
        FieldType.BLOB,
        FieldType.JSON,
        FieldType.ENUM,
        FieldType.SET,
    }
)

# Error messages that quote a value: the value is replaced, the rest kept for the agent.
_QUOTING = (
    rb"Duplicate entry |Incorrect [A-Za-z0-9 ]+ value: |Truncated incorrect [A-Za-z ]+ value: "
)
"""The English messages of ``_VALUE_CODES`` that ``_scrub_quoted`` reads: a quote follows."""
_VALUE_MESSAGES = re.compile(
    rb"(" + _QUOTING + rb"|Data truncated for column |Out of range value |"
    rb"Cannot add or update a child row|Cannot delete or update a parent row|CONSTRAINT )"
)
_VALUE_ENDS = (b"' for key ", b"' for column ")
"""What follows the quoted value in the messages that name a key or a column after it."""


_VALUE_CODES = frozenset(
    {1062, 1231, 1291, 1292, 1300, 1366, 1367, 1411, 1470, 1525, 1526, 1569, 1586, 1741}
    | {1761, 1762, 1912, 1916, 1917, 1918, 1978, 2009}
)
"""The errors and warnings whose message holds a value (MariaDB's errmsg-utf8.txt):
duplicate entries, incorrect or truncated values, a foreign key's record, a partition's
value... In any language the server's ``lc_messages`` names."""
_VALUE_START = re.compile(rb"(?:" + _QUOTING + rb")'")
_FK_RECORD = re.compile(rb"Foreign key constraint for table '.*?', record '", re.DOTALL)
_FK_RECORD_END = b"' would lead to a duplicate entry"
"""ER_FOREIGN_DUPLICATE_KEY_WITH(OUT)_CHILD_INFO (1761, 1762): an ON UPDATE CASCADE that
would duplicate a child's key names the parent's row by its first index (a masked
primary key, say): the record runs to the last ``' would lead to a duplicate entry``."""
_VALUE_HIDDEN = (
    b"sqlgate: the server's message is not shown, as it may quote the value of a masked "
    b"column (its error code says what went wrong)"
)


def _scrub_quoted(
    message: bytes, detectors: Sequence[Detector], key: bytes, code: int | None = None
) -> bytes:
    """``message`` with its quoted values replaced when it is a kind of message that
    quotes a value (duplicate key, incorrect value...), and with content findings masked.
    The value runs from the first quote to the last ``' for key `` or ``' for column ``
    (the server quotes it as it is: a quote inside it ends nothing), else to the end of
    the message; names that follow (the key, the column) stay, so the agent still learns
    what went wrong. With the message's ``code``: a message of a code that holds a value
    (``_VALUE_CODES``) in a form the gateway does not read (another language, another
    message) is replaced whole (``_VALUE_HIDDEN``)."""
    fk = _FK_RECORD.match(message)
    if fk is not None:
        end = message.rfind(_FK_RECORD_END)
        if end >= fk.end():
            message = message[: fk.end()] + b"****" + message[end:]
        else:
            message = _VALUE_HIDDEN
    elif code in _VALUE_CODES and _VALUE_START.match(message) is None:
        message = _VALUE_HIDDEN
    elif _VALUE_MESSAGES.search(message):
        start = message.find(b"'")
        if start >= 0 and not message[:start].endswith(b"column "):
            end = max(message.rfind(tail) for tail in _VALUE_ENDS)
            if end > start:
                message = message[:start] + b"'****" + message[end:]
            else:
                message = message[:start] + b"'****'"
    return _scan(message, detectors or _ALL_DETECTORS, key)


_ALL_DETECTORS = (Detector("card", MaskStrategy.LAST4), Detector("email", MaskStrategy.REDACT))


_RUNS_UNSEEN = (b"execute", b"call")
"""Statements that run a text their own does not show (a prepared statement, a stored
procedure's): what they read is not known."""


class _ViewWords(NamedTuple):
    """How to tell that a statement's text names a view of the derived rules."""

    pattern: re.Pattern[bytes]
    """Finds the name of a view (in UTF-8) or a word of ``_RUNS_UNSEEN``, as a whole
    word in any case."""
    not_ascii: bool
    """A view's name is not ASCII: the text's own character set may spell it otherwise,
    so any text that is not ASCII is taken to name it."""

    @classmethod
    def of(cls, rules: Sequence[ColumnRule]) -> _ViewWords:
        names = {rule.table.pattern for rule in rules}
        words = {name.encode("utf-8") for name in names}
        words.update(re.escape(word) for word in _RUNS_UNSEEN)
        either = b"|".join(sorted(words))
        pattern = re.compile(
            rb"(?<![0-9A-Za-z_$\x80-\xff])(?:" + either + rb")(?![0-9A-Za-z_$\x80-\xff])",
            re.IGNORECASE,
        )
        return cls(pattern, not all(name.isascii() for name in names))

    def named(self, statement: bytes) -> bool:
        if self.not_ascii and not statement.isascii():
            return True
        return self.pattern.search(statement) is not None


TABLE_CHECKSUM = ColumnRule.of("information_schema", "TABLES", "CHECKSUM", MaskStrategy.NULL)
"""The live checksum of a MyISAM or Aria table made with ``CHECKSUM=1`` (``SHOW TABLE
STATUS``, ``information_schema.TABLES``): a 32-bit sum of a CRC of each row, masked
columns included, kept up to date by every write. With the rest of a row known, the
change a DELETE makes is that row's CRC, from which a value of a few digits is found
offline. Masked in every session that a column rule masks anything for."""

_COLUMN_NAMES = ("TABLE_SCHEMA", "TABLE_NAME", "COLUMN_NAME")
"""The columns of ``information_schema.COLUMNS`` that say whose default a row's
``COLUMN_DEFAULT`` is."""


class _ColumnsRow:
    """The names of the column a row of ``information_schema.COLUMNS`` (or ``SHOW
    COLUMNS``) describes, as far as the result shows them before its default."""

    __slots__ = ("names",)

    def __init__(self) -> None:
        self.names: dict[str, bytes | None] = {}


@dataclass(slots=True)
class _ColumnsName:
    """Reads one of ``_COLUMN_NAMES`` for the row's default; the value goes as it is."""

    row: _ColumnsRow
    part: str
    label: str = "column defaults"
    reads_only: bool = True

    def __call__(self, value: bytes | None) -> bytes | None:
        self.row.names[self.part] = value
        return value


@dataclass(slots=True)
class _ColumnDefault:
    """The mask of ``COLUMN_DEFAULT`` (``Default`` of ``SHOW COLUMNS``): the default of
    a masked column is masked as its values are. ``literal``: written as SQL (``'x'``),
    as ``information_schema.COLUMNS`` has it, not as the value (``SHOW COLUMNS``)."""

    row: _ColumnsRow
    masker: SessionMasker
    literal: bool
    label: str = "column defaults"

    def __call__(self, value: bytes | None) -> bytes | None:
        if value is None:
            return None
        names = self.row.names
        mask = self.masker.default_mask(
            names.get("TABLE_SCHEMA") or b"",
            names.get("TABLE_NAME") or b"",
            names.get("COLUMN_NAME"),
        )
        if mask is None:
            return value
        return mask_default_literal(value, mask) if self.literal else mask(value)


@dataclass(slots=True)
class _Definition:
    """A ``SHOW CREATE TABLE`` text's mask (``TableDefinition``), then the detectors'."""

    inner: TableDefinition
    detectors: Sequence[Detector]
    key: bytes
    label: str = "table definition"

    def __call__(self, value: bytes | None) -> bytes | None:
        scrubbed = self.inner(value)
        if scrubbed is None or not self.detectors:
            return scrubbed
        return _scan(scrubbed, self.detectors, self.key)


COLUMN_DEFAULTS = ColumnRule.of(
    "information_schema", "COLUMNS", "COLUMN_DEFAULT", MaskStrategy.REDACT
)
"""The default of each column (``information_schema.COLUMNS``, the ``Default`` of ``SHOW
COLUMNS``): a masked column's is masked like its values (``_ColumnDefault``), so in every
session that a column rule masks anything for, a condition on it (or any other use but
a plain projection) is refused as one on a masked column."""

_UNREADABLE = "(a column whose origin could not be read)"
_REDACT = ColumnRule.of("*", "*", "*", MaskStrategy.REDACT, label="(a column not named)")
_ALIASED = "(a cursor's column whose origin is not known)"
_ANY_SCHEMA = "*any*"  # the schema MariaDB reports for a JSON_TABLE's columns


class _NameReader:
    """Reads the names of column definitions as the server encoded them (in the
    session's results character set). None for a name that cannot be read for sure: a
    NUL byte (UTF-16 or UTF-32), a ``?`` where the character set may have lost a
    character, non-ASCII bytes in a character set without a codec, or bytes the codec
    rejects."""

    __slots__ = ("codec", "lossy")

    def __init__(self, charset: str | None) -> None:
        self.codec = name_codec(charset)
        self.lossy = charset is None or charset.lower() not in LOSSLESS_NAMES

    def __call__(self, raw: bytes) -> str | None:
        if raw.isascii():  # the same in every character set the gateway allows
            if b"\x00" in raw or (self.lossy and b"?" in raw):
                return None
            return raw.decode("ascii")
        if self.codec is None:
            return None
        try:
            return raw.decode(self.codec)
        except UnicodeDecodeError:
            return None


@dataclass(slots=True)
class SessionMasker:
    """What one session may not see (``appliance.mysql.masking.Masker``)."""

    rules: list[ColumnRule]
    detectors: list[Detector]
    key: bytes
    policy: MaskingPolicy | None = None  # for rules derived from views, which change
    groups: frozenset[str] = field(default_factory=frozenset)
    target: str | None = None  # whose tables the catalog knows (None: none known)
    results_charset: str | None = "utf8mb4"
    """The session's ``character_set_results``, in which the server sends the names of
    column definitions (``SessionPolicy`` follows it); None while it is not known."""
    _derived: tuple[object, list[ColumnRule]] | None = None
    # _named's answers for the derived rules of _derived: most columns of most results
    # match no rule and ask it, once per result set
    _named_memo: dict[str, ColumnRule | None] = field(default_factory=dict)
    _unknown_memo: dict[str, ColumnRule | None] = field(default_factory=dict)  # _anywhere's
    _view_words: _ViewWords | None = None  # _names_a_view's, for the derived rules

    def _derived_rules(self) -> list[ColumnRule]:
        """The rules derived from views, as they apply to this session (kept until the
        catalog replaces them)."""
        if self.policy is None:
            return []
        derived = self.policy.derived
        cached = self._derived
        if cached is None or cached[0] is not derived:
            mine = [r for r in (rule.for_groups(self.groups) for rule in derived) if r]
            cached = self._derived = (derived, mine)
            self._named_memo.clear()
            self._unknown_memo.clear()
            self._view_words = _ViewWords.of(mine) if mine else None
        return cached[1]

    def _all_rules(self) -> Iterable[ColumnRule]:
        yield from self.rules
        yield from self._derived_rules()

    def _origin_lost(self, alias: str, name: str) -> ColumnRule | None:
        """The rule of a result column whose origin the server made up or left out (a
        view's UNION, aggregate, window function, subquery or JSON_TABLE, a TEMPTABLE
        view with a column list): that of the view the column's table field names, or,
        when the view was given an alias, the strictest of the view columns of that
        name (fail closed: another view's column, or a same-named column of a derived
        table, is masked too)."""
        rule = self.rule_for("", alias, name)
        if rule is not None:
            return rule
        return self._named(name)

    def _named(self, name: str) -> ColumnRule | None:
        """The strictest rule of a masked view column called ``name`` (any view)."""
        derived = self._derived_rules()  # first: a new list clears the memo
        memo = self._named_memo
        if name in memo:
            return memo[name]
        named = [r for r in derived if r.column.pattern != ".*" and r.column.fullmatch(name)]
        rule = min(named, key=lambda r: STRICTNESS.index(r.strategy)) if named else None
        if len(memo) >= 4096:
            memo.clear()
        memo[name] = rule
        return rule

    def _named_anywhere(self, name: str) -> ColumnRule | None:
        """The rule of a column called ``name`` of a table or view the catalog does not
        know: the strictest of a masked view column called so (``_named``) and of this
        session's configuration rules for a column called so in any table. A view made
        straight on the database since the catalog last read the target shows its base
        table's column under the view's name, and under the column's own name unless the
        view renamed it."""
        derived = self._named(name)  # first: a new list of derived rules clears the memo
        memo = self._unknown_memo
        if name in memo:
            return memo[name]
        named = [r for r in self.rules if r.column.pattern != ".*" and r.column.fullmatch(name)]
        if derived is not None:
            named.append(derived)
        rule = min(named, key=lambda r: STRICTNESS.index(r.strategy)) if named else None
        if len(memo) >= 4096:
            memo.clear()
        memo[name] = rule
        return rule

    def _names_a_view(self, statement: bytes | None) -> bool:
        """Whether the text of a statement may read a view with a column masked for this
        session: it names one (as a word, in any case), or it runs a statement the text
        does not show (``EXECUTE``, ``CALL``); None (a text not known) may."""
        if statement is None:
            return True
        self._derived_rules()  # first: a new list of derived rules makes the pattern
        words = self._view_words
        return words is not None and words.named(statement)

    def _unknown(self, schema: str, table: str, column: str) -> bool:
        """Whether ``schema.table.column`` is not a column of a table or view the catalog
        read for this session's target (as the server spells them: with
        lower_case_table_names=0 ``T`` and ``t`` are two tables, and a name in another
        case is not known). The catalog reads only the columns named like a masked column
        (of a view, or of a configuration rule)."""
        known = None if self.policy is None else self.policy.known.get(self.target or "")
        return known is None or (schema, table, column) not in known

    def rule_for(self, schema: str, table: str, column: str) -> ColumnRule | None:
        """The first rule that masks a column for this session: the configuration's in
        file order, then those derived from views (which match whatever schema the
        server reports: MariaDB gives a view's columns the schema of its base table),
        then, when any of those applies, ``TABLE_CHECKSUM`` and ``COLUMN_DEFAULTS``."""
        found = False
        for rule in self._all_rules():
            if rule.matches(schema, table, column):
                return rule
            found = True
        if found and column != "*":
            if TABLE_CHECKSUM.matches(schema, table, column):
                return TABLE_CHECKSUM
            if COLUMN_DEFAULTS.matches(schema, table, column):
                return COLUMN_DEFAULTS
        return None

    def default_mask(self, schema: bytes, table: bytes, column: bytes | None) -> DefaultMask | None:
        """How the default of a column is shown: masked as the column's values are, or
        None (as it is). Without its table, by the strictest rule for a column of that
        name in any table; without its name either, as ``redact`` (fail closed)."""
        read = _NameReader(self.results_charset)
        name = read(column) if column is not None else None
        table_name = read(table) if table else ""
        schema_name = read(schema) if schema else ""
        rule: ColumnRule | None
        if name is None or table_name is None or schema_name is None:
            rule = _REDACT  # not shown, or not read for sure
        elif table_name:
            rule = self.rule_for(schema_name, table_name, name)
        else:
            named = [r for r in self._all_rules() if r.column.fullmatch(name)]
            rule = min(named, key=lambda r: STRICTNESS.index(r.strategy)) if named else None
        if rule is None or rule is TABLE_CHECKSUM or rule is COLUMN_DEFAULTS:
            return None
        return functools.partial(mask_value, rule.strategy, key=self.key)

    def _any_rule(self) -> bool:
        return any(True for _ in self._all_rules())

    def _definition_default(self, table: bytes, column: bytes) -> DefaultMask | None:
        return self.default_mask(b"", table, column)

    def names_table(self, schema: str, table: str) -> bool:
        """Whether a rule names a table called ``schema.table`` (its table part is not
        the bare wildcard ``*``, which names every table: those rules are about a
        column wherever it is)."""
        return any(
            rule.table.pattern != ".*" and rule.matches(schema, table, "*")
            for rule in self._all_rules()
        )

    def is_masked(self, schema: str, table: str, column: str) -> bool:
        """For layer one: whether a column of a table is masked for this session
        (``column`` ``*``: any column of it)."""
        return self.rule_for(schema, table, column) is not None

    def strategy_for(self, schema: str, table: str, column: str) -> str | None:
        """For a rewrite: the strategy of a masked column, when its rule allows one."""
        rule = self.rule_for(schema, table, column)
        return rule.strategy.value if rule is not None and rule.rewrite else None

    def plan(
        self,
        columns: Sequence[ColumnDefinition],
        *,
        origins_unsure: bool = False,
        statement: bytes | None = None,
    ) -> list[Any] | None:
        masks: list[Any] = []
        if is_table_definition(columns):
            # SHOW CREATE TABLE: a connection's password, the defaults of masked columns
            shown = DefinitionRow()
            defaults = self._definition_default if self._any_rule() else None
            inner = TableDefinition(shown, defaults)
            return [TableName(shown), _Definition(inner, self.detectors, self.key)]
        columns_row: _ColumnsRow | None = None  # information_schema.COLUMNS's names
        defaults_planned = False
        names = tuple(c.name.lower() for c in columns)
        warnings = names == _WARNING_COLUMNS and not any(c.org_table for c in columns)
        if (
            len(columns) == 1
            and names[0] in _PLAN_COLUMNS
            and not columns[0].org_table
            and any(True for _ in self._all_rules())
        ):
            # a JSON plan: its conditions may hold a constant row's masked values
            return [_PlanMask(self.key, self.detectors)]
        read = _NameReader(self.results_charset)
        row = _WarningRow() if warnings else None
        # an origin name that may be an alias may hide any column of its table
        unsure = origins_unsure and any(True for _ in self._all_rules())
        budget = ScanBudget()  # the detectors' candidates in each row
        views_read: bool | None = None  # _names_a_view(statement), once it is asked
        for index, c in enumerate(columns):
            if unsure and c.org_table:
                masks.append(ValueMask(_ALIASED, MaskStrategy.REDACT, self.key))
                continue
            schema = read(c.schema)
            table = read(c.org_table)
            name = read(c.org_name)
            if schema is None or table is None or name is None:
                # a name the gateway cannot read for sure may be a masked column's
                if c.org_table and any(True for _ in self._all_rules()):
                    masks.append(ValueMask(_UNREADABLE, MaskStrategy.REDACT, self.key))
                    continue
                schema, table, name = (
                    n.decode("utf-8", "replace") for n in (c.schema, c.org_table, c.org_name)
                )
                rule = None
            else:
                if schema == _ANY_SCHEMA:  # made up by the server (JSON_TABLE)
                    schema = ""
                rule = self.rule_for(schema, table, name) if table and name else None
                if rule is None and name and (not schema or not table) and c.table:
                    # no usable origin: a column of a view, or of a derived table
                    alias = read(c.table)
                    rule = self._origin_lost(alias, name) if alias else None
                elif rule is None and name and table:
                    # a merged view read under an alias comes as a column of a table
                    # named like the alias (shop.v.c for SELECT c FROM shop.v_plain v),
                    # or in a join as its base table's with the view's column name
                    # (shop.cust.c): a column the catalog does not know is taken for one;
                    # so is a view made outside the gateway since the catalog's last read
                    if self._unknown(schema, table, name):
                        rule = self._named_anywhere(name)
                    else:
                        # a table it knows may be the alias's namesake (SELECT c FROM
                        # v_plain AS t, with a table t (c)): it is taken for the view
                        # when the statement may read a masked view
                        if views_read is None:
                            views_read = self._names_a_view(statement)
                        if views_read:
                            rule = self._named(name)
            if (rule is None or rule is COLUMN_DEFAULTS) and (
                schema.lower() == "information_schema" and table.upper() == "COLUMNS"
            ):
                # a column's default: masked when the column is (by the names before it)
                part = name.upper()
                if part == "COLUMN_DEFAULT" and self._any_rule():
                    if columns_row is None:
                        columns_row = _ColumnsRow()
                    literal = c.name != b"Default"  # SHOW COLUMNS shows the value itself
                    masks.append(_ColumnDefault(columns_row, self, literal))
                    defaults_planned = True
                    continue
                if part in _COLUMN_NAMES and not defaults_planned and self._any_rule():
                    # only a name before the first default: one after it is the next row's
                    if columns_row is None:
                        columns_row = _ColumnsRow()
                    masks.append(_ColumnsName(columns_row, part))
                    continue
            if rule is not None:
                label = f"{schema or '?'}.{table}.{name}"
                masks.append(ValueMask(label, rule.strategy, self.key))
            elif row is not None and c.name.lower() == b"code":
                masks.append(_WarningCode(row))
            elif row is not None and c.name.lower() == b"message":
                masks.append(ValueMask("warnings", None, self.key, self.detectors, True, row))
            elif self.detectors and c.type in _STRING_TYPES:
                label = f"{schema}.{table}.{name}" if table else c.name.decode("utf-8", "replace")
                masks.append(
                    ValueMask(label, None, self.key, self.detectors, column=index, budget=budget)
                )
            else:
                masks.append(None)
        return masks if any(m is not None for m in masks) else None

    def scrub(self, message: bytes, code: int | None = None) -> bytes:
        return _scrub_quoted(message, self.detectors, self.key, code)


class MaskingPolicy:
    """The configuration's masking rules, and those derived from views."""

    def __init__(self, rules: Sequence[MaskingRuleConfig], key: bytes) -> None:
        self.key = key
        self.column_rules: list[ColumnRule] = []
        self.detectors: list[tuple[Detector, frozenset[str]]] = []
        for rule in rules:
            if rule.detect:
                for kind in rule.detect:
                    self.detectors.append(
                        (Detector(kind, rule.strategy), frozenset(rule.exempt_groups))
                    )
            else:
                self.column_rules.append(
                    ColumnRule.of(
                        rule.schema,
                        rule.table,
                        rule.column_name,
                        rule.strategy,
                        rewrite=rule.on_use == "rewrite",
                        exempt_groups=rule.exempt_groups,
                    )
                )
        self.derived: list[ColumnRule] = []
        self.known: dict[str, frozenset[tuple[str, str, str]]] = {}
        """Per target, the columns (schema, table, column) of its tables and views that
        are named like a masked column (of a view, or of a configuration rule), as the
        catalog read them."""

    @property
    def active(self) -> bool:
        return bool(self.column_rules or self.detectors)

    def for_groups(self, groups: Iterable[str], target: str | None = None) -> SessionMasker | None:
        """The masker of a session whose identity has ``groups``, connected to
        ``target``; None when nothing applies to it (every rule exempts one of its
        groups)."""
        mine = frozenset(groups)
        rules = [r for r in self.column_rules if not r.exempt_groups & mine]
        detectors = [d for d, exempt in self.detectors if not exempt & mine]
        if not rules and not detectors:
            return None
        return SessionMasker(rules, detectors, self.key, self, mine, target=target)

    def set_derived(self, rules: Iterable[ColumnRule]) -> None:
        """Replace the rules derived from views (the catalog refreshes them)."""
        self.derived = list(rules)

    def set_known(self, target: str, names: Iterable[tuple[str, str, str]]) -> None:
        """Replace the known columns of ``target`` (the catalog reads them)."""
        self.known[target] = frozenset(names)
