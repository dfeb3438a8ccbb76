"""What a statement is, what it touches, and whether the gateway understands it.

The policy decides on a frozen Classification, never on text. Each statement's kind comes
from its leading keywords (the lexer's reading, robust where the SQL parser falls back to
a generic command); the kinds whose decision depends on details are then parsed with
sqlglot's MySQL dialect, and the parsed root must agree with the keywords, else the
classification carries a `problem` and the policy refuses it (fail closed). Kinds the
built-in rules block or review whatever their details keep their kind and the tables
named in their tokens even when the parser cannot read them.

This is the only module of the project that imports sqlglot. The parser sees a text that
MySQL's default lexing reads exactly as the server reads the client's (comments blanked,
quotes normalised), so no comment or quoting trick can make it read something else.

Classifications are cached by (text, mode); `literal_independent` says when one may also
stand for every text of the same lexer.shape().
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
import warnings
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_FLOOR, Decimal
from functools import lru_cache
from itertools import product
from re import _constants as _sre  # type: ignore[attr-defined]
from re import _parser as _sre_parser  # type: ignore[attr-defined]
from typing import Any, NamedTuple

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError
from sqlglot.tokenizer_core import Token as GlotToken
from sqlglot.tokenizer_core import TokenType

from appliance.mysql.charsets import CONVERSION_UNSAFE
from appliance.policy.lexer import (
    LexError,
    LexMode,
    Statement,
    Tok,
    Token,
    default_mode_text,
    outline,
    outline_statement,
    punct_at,
    skip_definer,
    split_statements,
    string_bytes,
    tokenize,
    word_at,
)
from appliance.policy.server_functions import (
    ARGUMENT_COUNTS,
    BUILTIN_FUNCTIONS,
    KEYWORD_FUNCTIONS,
    NATIVE_FUNCTIONS,
)

__all__ = [
    "KINDS",
    "MAX_STATEMENTS",
    "NOT_UNDERSTOOD",
    "Classification",
    "IsMasked",
    "MaskedAs",
    "MaskedUse",
    "Readings",
    "bind",
    "classify",
    "classify_statement",
    "classify_uncertain",
    "mask_rewrite",
    "is_percent_only",
    "masked_uses",
    "reference_readings",
    "shown_values",
    "sql_string",
    "unreadable",
    "using_shown",
    "using_values",
    "with_bound",
]

# sqlglot warns ("contains unsupported syntax. Falling back to parsing as a 'Command'")
# for statements we refuse anyway; the warning would only flood the gateway's log.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

_MYSQL = Dialect.get_or_raise("mysql")
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Classification:
    kind: str  # canonical upper-case kind; "UNKNOWN" when not recognised
    text: str  # this statement's text decoded (utf-8, errors="replace")
    # Names as written (the case too): "schema.table" when qualified in the text
    reads: frozenset[str]  # tables read
    writes: frozenset[str]  # tables written/created/altered/dropped ("db.*": a schema)
    has_where: bool  # UPDATE/DELETE: a WHERE clause exists
    where_always_true: bool  # UPDATE/DELETE: the WHERE may be true for every row
    multi_table: bool  # UPDATE/DELETE touching more than one table
    functions: frozenset[str]  # upper-case names of functions called anywhere
    variables: tuple[tuple[str, str | None], ...]  # SET: (name, literal value or None)
    flags: frozenset[str]  # markers such as "into_outfile", "load_file", "soname"
    problem: str | None  # why the gateway does not understand it; the policy refuses
    literal_independent: bool  # same classification for every text of the same shape
    inner: Classification | None = None  # PREPARE/EXECUTE IMMEDIATE/EXPLAIN/...: what it runs
    # Calls the server reads as calls of stored functions, which run statements the
    # gateway never sees: lower-case names (the server ignores a routine name's case),
    # "schema.name" when qualified, the schema as written (see _stored_functions). Only
    # for statements that call them when they run (stored code runs later, a CALL is a
    # call already).
    stored_functions: frozenset[str] = frozenset()
    # UPDATE, or the ON DUPLICATE KEY UPDATE of an INSERT: the columns it assigns
    # (lower-case, without their tables; None when not known), which a foreign key's ON
    # UPDATE depends on. From the tree the decision read (the text as the session's
    # sql_mode lexes it), not the text parsed again with the parser's own lexing
    assigns: frozenset[str] | None = None
    # A statement of a text of several: where its bytes are in the text (its record
    # shows them read in the session's character set, which ``text`` is not)
    span: tuple[int, int] | None = field(default=None, compare=False)
    # UPDATE/DELETE: the WHERE is not always true as written, but values bound to its
    # placeholders may make it so (`name LIKE ?` bound to '%'): each execute's values are
    # read before it runs (``bind``)
    where_bindable: bool = False
    # the values bound to the placeholders that make the WHERE true for every row, as a
    # refusal names them (where_always_true then holds)
    where_bound: str | None = None


_EXECUTABLE_COMMENT = (
    "executable comment /*! ... */ (the server runs its contents; send the statement without it)"
)

# MariaDB has no '[' outside strings, quoted names and comments, but under sql_mode MSSQL
# `[...]` quotes a name: a quote, comment or ';' inside it would be read differently.
_BRACKET = (
    "'[' outside a string (not MariaDB syntax; under sql_mode MSSQL it quotes a name, "
    "which the gateway does not read): write names in backticks"
)

# MariaDB ends a line comment at a NUL byte and then fails on it (1064); a later version
# might read on, so a NUL outside strings and quoted names is refused.
_NUL = "a NUL byte outside a string (the server ends a comment there): remove it"

# Characters the parser takes for blanks that the server does not: it reads the Unicode
# spaces (U+00A0, U+3000, ...) as letters of a name and U+001C..U+001F as characters of
# their own. After "--" the parser read one as the start of a comment where the server
# reads two minus signs and runs the rest ("WHERE id = 2 --\u00a0x OR 1" deleted every
# row while the policy saw "WHERE id = 2"), and between words it splits a name the
# server reads whole: a statement holding one outside strings and comments is refused.
_FALSE_BLANK = re.compile(
    rb"[\x1c-\x1f]|\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]"
    rb"|\xe2\x81\x9f|\xe3\x80\x80"
)


_CONTROL_BLANK = re.compile(rb"[\x1c-\x1f]")


def _false_blank(skeleton: bytes) -> str | None:
    """Why the statement is refused when its ``skeleton`` holds a ``_FALSE_BLANK``."""
    if skeleton.isascii() and _CONTROL_BLANK.search(skeleton) is None:
        return None  # the usual statement: no byte of a character outside ASCII
    found = _FALSE_BLANK.search(skeleton)
    if found is None:
        return None
    c = found.group().decode("utf-8")
    name = unicodedata.name(c, "a control character")
    return (
        f"U+{ord(c):04X} ({name}) outside a string: the server reads it as part of a name "
        "or as a character of its own, not as a blank (after '--' it starts no comment); "
        "write an ASCII space"
    )


MAX_STATEMENTS = 1000
"""A text of more statements is refused whole: each is decided and recorded on the event
loop, and tens of thousands of them held every session for seconds. Such a text is not
read statement by statement either: 2,700 statements of 2 bytes held it for 43 ms."""

_CACHE_TEXT_LIMIT = 2 * 1024
"""Texts longer than this are classified but not cached here (the gate keeps its own
cache, bounded in bytes): an entry keeps about twice its text, and 20,000 distinct 8 KB
texts (``SELECT id AS c1 FROM t /* ... */``) held 470 MB, 32 KB ones 1.8 GB."""


def classify(sql: bytes, mode: LexMode) -> tuple[Classification, ...]:
    """One Classification per statement of a client text (cached by text and mode); a
    text that does not lex gives a single UNKNOWN with the lexer's message."""
    if len(sql) > _CACHE_TEXT_LIMIT:
        return _classify(sql, mode)
    return _classify_cached(sql, mode)


@lru_cache(maxsize=20_000)
def _classify_cached(sql: bytes, mode: LexMode) -> tuple[Classification, ...]:
    return _classify(sql, mode)


def _classify(sql: bytes, mode: LexMode, steps: _Steps | None = None) -> tuple[Classification, ...]:
    """``steps``: what the text holding this one (PREPARE ... FROM '...') leaves to the
    analysis of WHERE clauses (None: a text sent by itself, with all of them)."""
    try:
        outlines = outline(sql, mode)
    except LexError as err:
        return (unreadable(sql, str(err)),)
    if len(outlines) > MAX_STATEMENTS:  # refused whole for their number (gate)
        many = unreadable(b"", f"one of {len(outlines)} statements, over {MAX_STATEMENTS}")
        return (many,) * len(outlines)
    views = []
    steps = _Steps() if steps is None else steps
    for o in outlines:
        view = _View(sql[o.start : o.end], o.skeleton, o.plain, o.executable_comment, mode, steps)
        if o.comments is not None:
            view.comments = tuple((s - o.start, e - o.start) for s, e in o.comments)
        views.append(view)
    if len(views) == 1:
        return (_classify_view(views[0]),)
    return tuple(
        replace(_classify_view(view), span=(o.start, o.end))
        for view, o in zip(views, outlines, strict=True)
    )


def classify_statement(stmt: Statement, mode: LexMode) -> Classification:
    """The Classification of one statement from split_statements()."""
    try:
        o = outline_statement(stmt.text, mode)
    except LexError as err:
        return unreadable(stmt.text, str(err))
    if o is None:
        return unreadable(stmt.text, "the statement holds no code")
    view = _View(stmt.text, o.skeleton, stmt.plain, stmt.executable_comment, mode)
    view.set_tokens(stmt.tokens, stmt.start)
    return _classify_view(view)


def _classify_text(text: bytes, mode: LexMode, steps: _Steps) -> Classification:
    """One statement's text that arrives inside another (PREPARE, EXPLAIN, ...), with the
    steps left to the text that holds it."""
    try:
        o = outline_statement(text, mode)
    except LexError as err:
        return unreadable(text, str(err))
    if o is None:
        return unreadable(text, "the statement is empty")
    return _classify_view(_View(text, o.skeleton, o.plain, o.executable_comment, mode, steps))


def unreadable(sql: bytes, problem: str) -> Classification:
    """A text the gateway does not understand, and why: the policy refuses it."""
    return _result("UNKNOWN", sql.decode("utf-8", "replace"), problem=problem)


def _result(
    kind: str,
    text: str,
    *,
    reads: Iterable[str] = (),
    writes: Iterable[str] = (),
    has_where: bool = False,
    where_always_true: bool = False,
    multi_table: bool = False,
    functions: Iterable[str] = (),
    variables: tuple[tuple[str, str | None], ...] = (),
    flags: Iterable[str] = (),
    problem: str | None = None,
    literal_independent: bool = False,
    inner: Classification | None = None,
    stored_functions: Iterable[str] = (),
    assigns: frozenset[str] | None = None,
    where_bindable: bool = False,
    where_bound: str | None = None,
) -> Classification:
    return Classification(
        kind=kind,
        text=text,
        reads=_shared(reads),
        writes=_shared(writes),
        has_where=has_where,
        where_always_true=where_always_true,
        multi_table=multi_table,
        functions=_shared(functions),
        variables=variables,
        flags=_shared(flags),
        problem=problem,
        literal_independent=literal_independent and problem is None,
        inner=inner,
        stored_functions=_shared(stored_functions),
        assigns=assigns if problem is None else None,
        where_bindable=where_bindable,
        where_bound=where_bound,
    )


_NO_NAMES: frozenset[str] = frozenset()
_SHARED: dict[frozenset[str], frozenset[str]] = {}
_SHARED_LIMIT = 4_096


def _shared(names: Iterable[str]) -> frozenset[str]:
    """The names as a frozenset, the very one an earlier classification got if equal.

    The gate caches tens of thousands of classifications, most of them naming the same
    few tables, functions and flags; every object the caches keep is one more for each
    full collection of the garbage collector to walk, a cost every uncached decision
    shares (see gate.Policy.entry)."""
    found = frozenset(names)
    if not found:
        return _NO_NAMES
    shared = _SHARED.get(found)
    if shared is not None:
        return shared
    if len(_SHARED) >= _SHARED_LIMIT:
        _SHARED.clear()
    _SHARED[found] = found
    return found


class _View:
    """One statement as the classifier reads it: bytes, skeleton, tokens on demand."""

    __slots__ = (
        "raw",
        "skeleton",
        "plain",
        "executable",
        "mode",
        "comments",
        "steps",
        "_tokens",
        "_base",
    )

    def __init__(
        self,
        raw: bytes,
        skeleton: bytes,
        plain: bool,
        executable: bool,
        mode: LexMode,
        steps: _Steps | None = None,
    ) -> None:
        self.raw = raw
        self.skeleton = skeleton
        self.plain = plain
        self.executable = executable
        self.mode = mode
        # Offsets in raw of the comments that alone make it not plain (Outline.comments).
        self.comments: tuple[tuple[int, int], ...] | None = None
        # the WHERE analysis's steps, shared by the statements of one text
        self.steps = _Steps() if steps is None else steps
        self._tokens: tuple[Token, ...] | None = None
        self._base = 0

    def set_tokens(self, tokens: tuple[Token, ...], base: int) -> None:
        self._tokens = tokens
        self._base = base

    @property
    def tokens(self) -> tuple[Token, ...]:
        if self._tokens is None:
            self._tokens = tokenize(self.raw, self.mode)
        return self._tokens

    def start(self, t: Token) -> int:
        """A token's offset in raw."""
        return t.start - self._base

    def end(self, t: Token) -> int:
        return t.end - self._base

    def bytes_of(self, t: Token) -> bytes:
        return self.raw[t.start - self._base : t.end - self._base]

    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")


# -- keyword-level reading of the skeleton ------------------------------------------------

_E = rb"(?![A-Z0-9_$\x80-\xff])"


def _kw(word: bytes) -> bytes:
    """A keyword with word boundaries, spelled so that the pattern starts with a literal
    (the regex engine then skips quickly to the places where it can match)."""
    return word + rb"(?<![A-Z0-9_$\x80-\xff]" + word + rb")(?![A-Z0-9_$\x80-\xff])"


_FIRST_WORD = re.compile(rb"[ \t\n\r\f\v]*+(\(?)[ \t\n\r\f\v(]*+([A-Z_][A-Z0-9_$\x80-\xff]*+)")

# Statements whose kind the skeleton settles and whose details sqlglot gives.
_DML_FIRST = {
    b"SELECT": "SELECT",
    b"VALUES": "SELECT",
    b"TABLE": "SELECT",
    b"WITH": "WITH",
    b"INSERT": "INSERT",
    b"REPLACE": "REPLACE",
    b"UPDATE": "UPDATE",
    b"DELETE": "DELETE",
}

_WITH_SCAN = re.compile(
    rb"[()]|("
    + b"|".join(_kw(w) for w in (b"SELECT", b"UPDATE", b"DELETE", b"INSERT", b"REPLACE", b"VALUES"))
    + rb"|"
    + _kw(b"TABLE")
    + rb")"
)


# Keywords behind flags; each hit is checked in place (a plain alternation lets the regex
# engine skip fast to candidates, where groups and lookbehinds would slow every byte).
_OR_REPLACE = re.compile(rb"[ \t\n\r\f\v]*+CREATE[ \t\n\r\f\v]++OR[ \t\n\r\f\v]++REPLACE" + _E)
# CREATE OR REPLACE TEMPORARY TABLE and DROP TEMPORARY TABLE(S): MariaDB drops only a
# temporary table of the session, never a base table of the name (error 1051 when the
# session has none)
_TEMPORARY_TABLE = re.compile(
    rb"[ \t\n\r\f\v]*+(?:CREATE[ \t\n\r\f\v]++OR[ \t\n\r\f\v]++REPLACE|DROP)"
    rb"[ \t\n\r\f\v]++TEMPORARY[ \t\n\r\f\v]++TABLES?" + _E
)
_FLAG_WORDS = re.compile(rb"INTO|LOAD_FILE|SONAME|FOR|LOCK|:=")
_INTO_TARGET = re.compile(rb"[ \t\n\r\f\v]*+(?:(OUTFILE|DUMPFILE)" + _E + rb"|@)")
_CALL = re.compile(rb"[ \t\n\r\f\v]*+\(")
_FOR_LOCK = re.compile(rb"[ \t\n\r\f\v]++(UPDATE|SHARE)" + _E)
_LOCK_SHARE = re.compile(rb"[ \t\n\r\f\v]++IN[ \t\n\r\f\v]++SHARE[ \t\n\r\f\v]++MODE" + _E)

_IDENT_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$") | frozenset(range(0x80, 0x100))
_BLANKS = frozenset(b" \t\n\r\f\v")
# A word before these names a table, routine or view being defined, not a call.
_DEFINING = frozenset(b"INTO TABLE REFERENCES VIEW EXISTS ON PROCEDURE FUNCTION".split())

# Keywords that a '(' may follow without a function call.
_NOT_FUNCTIONS = frozenset(
    (
        "ALL AND ANY AS BETWEEN BY CASE CHECK COLUMNS CONSTRAINT DISTINCT DISTINCTROW ELSE "
        "EXCEPT EXISTS FOREIGN FROM GROUP HAVING IN INDEX INTERSECT INTO IS JOIN KEY LATERAL "
        "LIKE LIMIT NOT ON OPTIONS OR ORDER OVER PARTITION PRIMARY RECURSIVE REFERENCES REGEXP "
        "RETURNS RLIKE ROW SELECT SET SOME TABLE THEN UNION UNIQUE USING VALUE VALUES WHEN "
        "WHERE WINDOW WITH XOR"
    ).split()
)

_DML_MODIFIERS = re.compile(
    rb"[ \t\n\r\f\v]*+(?:INSERT|REPLACE|UPDATE|DELETE)[ \t\n\r\f\v]++"
    rb"(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|QUICK|IGNORE)" + _E
)


_ON_DUPLICATE = re.compile(rb"(?<![A-Z0-9_$])ON\s+DUPLICATE\s+KEY\s+UPDATE(?![A-Z0-9_$])")


def _skeleton_flags(skeleton: bytes, kind: str) -> set[str]:
    flags: set[str] = set()
    if _OR_REPLACE.match(skeleton):
        flags.add("or_replace")  # MariaDB: drops the existing object first
    if kind in ("CREATE TABLE", "DROP TABLE") and _TEMPORARY_TABLE.match(skeleton):
        flags.add("temporary")  # drops only a temporary table of the session
    if kind == "INSERT" and b"DUPLICATE" in skeleton and _ON_DUPLICATE.search(skeleton):
        flags.add("on_duplicate_update")  # the INSERT may update rows
    if not (
        b"INTO" in skeleton
        or b"FOR" in skeleton
        or b"LOCK" in skeleton
        or b"LOAD_FILE" in skeleton
        or b"SONAME" in skeleton
        or b":=" in skeleton
    ):
        # None of _FLAG_WORDS: these substring searches cost a tenth of the search
        # below, which would find nothing (1.5 µs of a 300-byte statement).
        return flags
    for m in _FLAG_WORDS.finditer(skeleton):
        word = m.group()
        s, e = m.span()
        if word == b":=":
            if kind != "SET" and kind != "SET STATEMENT":
                flags.add("variable_assignment")
            continue
        if (s and skeleton[s - 1] in _IDENT_BYTES) or (
            e < len(skeleton) and skeleton[e] in _IDENT_BYTES
        ):
            continue  # part of a longer word
        if word == b"INTO":
            target = _INTO_TARGET.match(skeleton, e)
            if target is not None and target.group(1) is not None:
                flags.add("into_" + target.group(1).decode().lower())
            elif target is not None or kind == "SELECT":
                flags.add("into_variable")
        elif word == b"LOAD_FILE":
            if _CALL.match(skeleton, e):
                flags.add("load_file")
        elif word == b"SONAME":
            flags.add("soname")
        elif word == b"FOR":
            lock = _FOR_LOCK.match(skeleton, e)
            if lock is not None:
                flags.add("for_update" if lock.group(1) == b"UPDATE" else "for_share")
        elif _LOCK_SHARE.match(skeleton, e):
            flags.add("for_share")
    return flags


class _Suspect(NamedTuple):
    """A name before '(' that may call a stored function (see _stored_functions)."""

    name: str  # upper case; "" for a quoted name (the skeleton shows ``)
    spaced: bool  # a blank or a comment between the name and its '('
    qualified: bool  # after a '.': schema.name(...)


# Words after which a name and '(' define a table, view or routine (or list a table's
# columns): INSERT INTO t (a), CREATE TABLE t (...), REFERENCES t (a).
_NOT_CALLED_AFTER = frozenset(b"INTO TABLE REFERENCES VIEW PROCEDURE FUNCTION".split())

# How a call's name is written, for _builtin: which of the server's functions it can be.
_TIGHT, _SPACED, _QUOTED = 0, 1, 2


def _builtin(name: str, spelling: int) -> bool:
    """Whether the server reads a call of ``name`` (upper case), written so, as a call
    of its own function (server_functions.py says how each may be written)."""
    if spelling == _TIGHT:
        return name in BUILTIN_FUNCTIONS
    if spelling == _SPACED:
        return name in NATIVE_FUNCTIONS or name in KEYWORD_FUNCTIONS
    return name in NATIVE_FUNCTIONS


def _takes(name: str, count: int) -> bool:
    """Whether the built-in ``name`` takes ``count`` arguments (for the few that are
    built in with some counts only: ``POINT(x)`` is a stored function's call)."""
    limits = ARGUMENT_COUNTS.get(name)
    if limits is None:
        return True
    least, most = limits
    return least <= count and (most is None or count <= most)


def _skeleton_calls(skeleton: bytes) -> tuple[set[str], list[_Suspect]]:
    """Names followed by '(' (a word ending where blanks before the '(' start), and the
    ones among them that may call a stored function: qualified, quoted, not built in as
    written, or built in with some numbers of arguments only."""
    names: set[str] = set()
    suspects: list[_Suspect] = []
    p = skeleton.find(b"(")
    while p >= 0:
        end = p
        while end > 0 and skeleton[end - 1] in _BLANKS:
            end -= 1
        start = end
        while start > 0 and skeleton[start - 1] in _IDENT_BYTES:
            start -= 1
        quoted = start == end and skeleton.endswith(b"``", 0, end)
        if quoted:
            start = end - 2
        if start < end:
            before = start
            while before > 0 and skeleton[before - 1] in _BLANKS:
                before -= 1
            first = before
            while first > 0 and skeleton[first - 1] in _IDENT_BYTES:
                first -= 1
            word = skeleton[first:before]
            qualified = before > 0 and skeleton[before - 1] == 0x2E  # '.'
            called = qualified or word not in _NOT_CALLED_AFTER
            if quoted:
                if called:
                    suspects.append(_Suspect("", end != p, qualified))
            else:
                name = skeleton[start:end].decode("utf-8", "replace")
                if (
                    not 0x30 <= skeleton[start] <= 0x39
                    and skeleton[start] != 0x24
                    and (before == start or word not in _DEFINING)
                    and name not in _NOT_FUNCTIONS
                ):
                    names.add(name)
                if called and (
                    qualified
                    or not _builtin(name, _SPACED if end != p else _TIGHT)
                    or name in ARGUMENT_COUNTS
                ):
                    # upper() as the tree's names get it (the skeleton's is ASCII only)
                    suspects.append(_Suspect(name.upper(), end != p, qualified))
        p = skeleton.find(b"(", p + 1)
    return names, suspects


# -- dispatch ------------------------------------------------------------------------------


def _classify_view(v: _View) -> Classification:
    kind = "UNKNOWN"
    try:
        kind, head = _kind(v)
        if v.executable:
            return _result(kind, v.text(), problem=_EXECUTABLE_COMMENT)
        if b"[" in v.skeleton:
            return _result(kind, v.text(), problem=_BRACKET)
        if b"\x00" in v.skeleton:
            return _result(kind, v.text(), problem=_NUL)
        if (blank := _false_blank(v.skeleton)) is not None:
            return _result(kind, v.text(), problem=blank)
        c = _HANDLERS.get(kind, _by_tokens)(v, kind, head)
        skeleton = v.skeleton
        if (b"VAL" in skeleton and _SEQUENCE_HINT.search(skeleton)) or (
            b"``" in skeleton and _QUOTED_SEQUENCE_HINT.search(v.raw)
        ):
            c = _with_sequences(v, c)
        return c
    except _DottedName as err:
        return _result(kind, v.text(), problem=err.problem)
    except RecursionError:
        return _result(kind, v.text(), problem=_parse_problem(kind, "it nests too deeply"))
    except Exception as err:  # fail closed on whatever the parser's tree held
        _log.warning("cannot analyse a %s statement: %s", kind, type(err).__name__)
        return _result(
            kind, v.text(), problem=_parse_problem(kind, f"{type(err).__name__} while analysing it")
        )


# -- sequences --------------------------------------------------------------------------------
#
# A sequence is a table the server changes through functions, not statements:
# NEXTVAL(s), SETVAL(s, n), NEXT VALUE FOR s and, under sql_mode ORACLE (which the gateway
# cannot see), s.nextval change s; LASTVAL(s), PREVIOUS VALUE FOR s and s.currval read it.
# The parser reads the argument as a column and s.nextval as a column of table s, so the
# sequence would be no table of the statement: a rule on shop.seq would not see
# ``SELECT SETVAL(shop.seq, 1)``. Each use adds the sequence to the tables read, and to
# those written where it changes it.

_SEQUENCE_HINT = re.compile(rb"NEXTVAL|SETVAL|LASTVAL|CURRVAL|VALUE[ \t\n\r\f\v]++FOR" + _E)
_QUOTED_SEQUENCE_HINT = re.compile(rb"nextval|currval", re.IGNORECASE)  # `s`.`nextval`
_SEQUENCE_CALLS = {"NEXTVAL": True, "SETVAL": True, "LASTVAL": False}  # name: changes it
_SEQUENCE_METHODS = {"nextval": True, "currval": False}
_SEQUENCE_VALUE_FOR = {"NEXT": True, "PREVIOUS": False}
# A word before "NEXTVAL (" that makes it a name being defined, not a call.
# (Not FROM, JOIN or ON: EXTRACT(DAY FROM NEXTVAL(s)), ... JOIN t ON SETVAL(s, 1) call it;
# a table named nextval then reads as a sequence, which only refuses more.)
_NAMING_WORDS = frozenset("INTO TABLE REFERENCES VIEW EXISTS PROCEDURE FUNCTION".split())
_SEQUENCE_ADVICE = (
    " (for a sequence write NEXTVAL(s) for NEXT VALUE FOR s and LASTVAL(s) for PREVIOUS "
    "VALUE FOR s)"
)


def _with_sequences(v: _View, c: Classification) -> Classification:
    """c with the sequences the statement uses among its tables (see above)."""
    reads, writes, value_for = _sequence_uses(v)
    if c.problem is not None:
        if value_for and not c.problem.endswith(_SEQUENCE_ADVICE):
            return replace(c, problem=c.problem + _SEQUENCE_ADVICE)
        return c
    if not reads:
        return c
    return replace(c, reads=_shared(c.reads | reads), writes=_shared(c.writes | writes))


def _sequence_uses(v: _View) -> tuple[set[str], set[str], bool]:
    """The sequences a statement reads and changes, and whether it wrote one of the
    VALUE FOR forms."""
    tokens = v.tokens
    reads: set[str] = set()
    writes: set[str] = set()
    value_for = False
    for i, t in enumerate(tokens):
        name: str | None = None
        if t.kind == Tok.WORD and t.text in _SEQUENCE_CALLS and punct_at(tokens, i + 1, "("):
            if punct_at(tokens, i - 1, ".") or word_at(tokens, i - 1) in _NAMING_WORDS:
                continue
            name, after = _name(v, i + 2)
            if not (punct_at(tokens, after, ")") or punct_at(tokens, after, ",")):
                continue
            changes = _SEQUENCE_CALLS[t.text]
        elif (
            t.kind == Tok.WORD
            and t.text in _SEQUENCE_VALUE_FOR
            and word_at(tokens, i + 1) == "VALUE"
            and word_at(tokens, i + 2) == "FOR"
        ):
            value_for = True
            name, _ = _name(v, i + 3)
            changes = _SEQUENCE_VALUE_FOR[t.text]
        elif (
            t.kind in (Tok.WORD, Tok.IDENT)
            and t.text.lower() in _SEQUENCE_METHODS
            and i >= 2
            and punct_at(tokens, i - 1, ".")
            and tokens[i - 2].kind in (Tok.WORD, Tok.IDENT)
        ):
            name = _part(_written(v, tokens[i - 2]))
            schema = tokens[i - 4] if i >= 4 and punct_at(tokens, i - 3, ".") else None
            if schema is not None and schema.kind in (Tok.WORD, Tok.IDENT):
                name = f"{_part(_written(v, schema))}.{name}"
            changes = _SEQUENCE_METHODS[t.text.lower()]
        if name:
            reads.add(name)
            if changes:
                writes.add(name)
    return reads, writes, value_for


def _kind(v: _View) -> tuple[str, int]:
    """The canonical kind and the index of the first token after its keywords."""
    m = _FIRST_WORD.match(v.skeleton)
    if m is not None:
        first = _DML_FIRST.get(m.group(2))
        if first is not None:
            if first == "WITH":
                return _with_root(v.skeleton), 0
            if m.group(1) and first != "SELECT":
                return "UNKNOWN", 0
            return first, 0
    return _kind_from_tokens(v.tokens)


def _with_root(skeleton: bytes) -> str:
    depth = 0
    for m in _WITH_SCAN.finditer(skeleton):
        text = m.group()
        if text == b"(":
            depth += 1
        elif text == b")":
            depth -= 1
        elif depth == 0:
            word = m.group(1)
            return "SELECT" if word in (b"VALUES", b"TABLE") else word.decode()
    return "SELECT"


def _skip_if_exists(tokens: Sequence[Token], i: int) -> int:
    if word_at(tokens, i) == "IF":
        if word_at(tokens, i + 1) == "NOT" and word_at(tokens, i + 2) == "EXISTS":
            return i + 3
        if word_at(tokens, i + 1) == "EXISTS":
            return i + 2
    return i


_CREATE_OBJECTS = {
    "TABLE": "CREATE TABLE",
    "INDEX": "CREATE INDEX",
    "VIEW": "CREATE VIEW",
    "DATABASE": "CREATE DATABASE",
    "SCHEMA": "CREATE DATABASE",
    "TRIGGER": "CREATE TRIGGER",
    "EVENT": "CREATE EVENT",
    "PROCEDURE": "CREATE PROCEDURE",
    "FUNCTION": "CREATE FUNCTION",
    "USER": "CREATE USER",
    "ROLE": "CREATE ROLE",
    "SERVER": "CREATE SERVER",
    "SEQUENCE": "CREATE SEQUENCE",
}
_ALTER_OBJECTS = {
    "TABLE": "ALTER TABLE",
    "DATABASE": "ALTER DATABASE",
    "SCHEMA": "ALTER DATABASE",
    "VIEW": "ALTER VIEW",
    "USER": "ALTER USER",
    "EVENT": "ALTER EVENT",
    "PROCEDURE": "ALTER PROCEDURE",
    "FUNCTION": "ALTER FUNCTION",
    "SERVER": "ALTER SERVER",
    "SEQUENCE": "ALTER SEQUENCE",
}
_DROP_OBJECTS = {
    "TABLE": "DROP TABLE",
    "TABLES": "DROP TABLE",
    "INDEX": "DROP INDEX",
    "VIEW": "DROP VIEW",
    "DATABASE": "DROP DATABASE",
    "SCHEMA": "DROP DATABASE",
    "TRIGGER": "DROP TRIGGER",
    "EVENT": "DROP EVENT",
    "PROCEDURE": "DROP PROCEDURE",
    "FUNCTION": "DROP FUNCTION",
    "USER": "DROP USER",
    "ROLE": "DROP ROLE",
    "SERVER": "DROP SERVER",
    "SEQUENCE": "DROP SEQUENCE",
    "PREPARE": "DEALLOCATE PREPARE",
}
# Words before the object of CREATE/ALTER/DROP that change nothing the policy decides on.
_DDL_MODIFIERS = frozenset(
    ("TEMPORARY UNIQUE FULLTEXT SPATIAL ONLINE OFFLINE IGNORE AGGREGATE").split()
)
_SINGLE_WORD_KINDS = {
    "SHOW": "SHOW",
    "USE": "USE",
    "COMMIT": "COMMIT",
    "ROLLBACK": "ROLLBACK",
    "SAVEPOINT": "SAVEPOINT",
    "TRUNCATE": "TRUNCATE",
    "GRANT": "GRANT",
    "REVOKE": "REVOKE",
    "CALL": "CALL",
    "HANDLER": "HANDLER",
    "SHUTDOWN": "SHUTDOWN",
    "PREPARE": "PREPARE",
    "EXECUTE": "EXECUTE",
    "KILL": "KILL",
    "FLUSH": "FLUSH",
    "DO": "DO",
    "OPTIMIZE": "OPTIMIZE",
    "CHECK": "CHECK",
    "REPAIR": "REPAIR",
    "CHECKSUM": "CHECKSUM",
    "RESET": "RESET",
    "PURGE": "PURGE",
    "XA": "XA",
    "HELP": "HELP",
    "BINLOG": "BINLOG",
    "IF": "COMPOUND",
    "CASE": "COMPOUND",
    "LOOP": "COMPOUND",
    "REPEAT": "COMPOUND",
    "WHILE": "COMPOUND",
    "FOR": "COMPOUND",
}
# Words after DESCRIBE/EXPLAIN that make it an EXPLAIN of a statement.
_EXPLAINED = frozenset(
    ("SELECT WITH INSERT REPLACE UPDATE DELETE TABLE VALUES EXTENDED PARTITIONS FORMAT FOR").split()
)


def _kind_from_tokens(tokens: Sequence[Token]) -> tuple[str, int]:
    w0 = word_at(tokens, 0)
    if w0 is None:
        if tokens and tokens[0].kind == Tok.IDENT and punct_at(tokens, 1, ":"):
            return "COMPOUND", 0
        return "UNKNOWN", 0
    if punct_at(tokens, 1, ":"):
        return "COMPOUND", 0  # label: BEGIN ... END
    simple = _SINGLE_WORD_KINDS.get(w0)
    if simple is not None:
        return simple, 1
    w1 = word_at(tokens, 1)
    if w0 in ("DESCRIBE", "DESC", "EXPLAIN"):
        if w1 == "ANALYZE":
            return "ANALYZE", 2
        if w1 in _EXPLAINED or punct_at(tokens, 1, "("):
            return "EXPLAIN", 1
        return "DESCRIBE", 1
    if w0 == "SET":
        if w1 == "PASSWORD":
            return "SET PASSWORD", 2
        if w1 == "ROLE" or (w1 == "DEFAULT" and word_at(tokens, 2) == "ROLE"):
            return "SET ROLE", 2
        if w1 == "STATEMENT":
            return "SET STATEMENT", 2
        return "SET", 1
    if w0 == "BEGIN":
        if w1 == "NOT":
            return "COMPOUND", 0
        return "BEGIN", 1
    if w0 == "START":
        return ("START TRANSACTION", 2) if w1 == "TRANSACTION" else ("UNKNOWN", 0)
    if w0 == "RELEASE":
        return ("RELEASE SAVEPOINT", 2) if w1 == "SAVEPOINT" else ("UNKNOWN", 0)
    if w0 == "DEALLOCATE":
        return ("DEALLOCATE PREPARE", 2) if w1 == "PREPARE" else ("UNKNOWN", 0)
    if w0 in ("CREATE", "ALTER", "DROP"):
        return _ddl_kind(tokens, w0)
    if w0 == "RENAME":
        if w1 in ("TABLE", "TABLES"):
            return "RENAME TABLE", 2
        if w1 == "USER":
            return "RENAME USER", 2
        return "UNKNOWN", 0
    if w0 == "LOAD":
        if w1 == "DATA":
            return "LOAD DATA", 2
        if w1 == "XML":
            return "LOAD XML", 2
        return "UNKNOWN", 0
    if w0 == "INSTALL" and w1 in ("PLUGIN", "SONAME"):
        return "INSTALL PLUGIN", 2 if w1 == "PLUGIN" else 1
    if w0 == "UNINSTALL" and w1 in ("PLUGIN", "SONAME"):
        return "UNINSTALL PLUGIN", 2 if w1 == "PLUGIN" else 1
    if w0 == "LOCK" and w1 in ("TABLES", "TABLE"):
        return "LOCK TABLES", 2
    if w0 == "UNLOCK" and w1 in ("TABLES", "TABLE"):
        return "UNLOCK TABLES", 2
    if w0 == "ANALYZE":
        return "ANALYZE", 1
    if w0 == "CHANGE" and (
        w1 == "MASTER" or (w1 == "REPLICATION" and word_at(tokens, 2) == "SOURCE")
    ):
        return "CHANGE MASTER", 2
    return "UNKNOWN", 0


def _ddl_kind(tokens: Sequence[Token], verb: str) -> tuple[str, int]:
    i = 1
    while True:
        w = word_at(tokens, i)
        if w == "OR" and word_at(tokens, i + 1) == "REPLACE":
            i += 2
        elif w == "DEFINER":
            j = skip_definer(tokens, i)
            if j == i:
                break
            i = j
        elif w == "ALGORITHM" and punct_at(tokens, i + 1, "="):
            i += 3
        elif w == "SQL" and word_at(tokens, i + 1) == "SECURITY":
            i += 3
        elif w in _DDL_MODIFIERS:
            i += 1
        else:
            break
    objects = {"CREATE": _CREATE_OBJECTS, "ALTER": _ALTER_OBJECTS, "DROP": _DROP_OBJECTS}[verb]
    kind = objects.get(word_at(tokens, i) or "")
    if kind is None:
        return "UNKNOWN", 0
    return kind, _skip_if_exists(tokens, i + 1)


#: Every kind a statement can be given: what a ``[[rules]] statements`` entry may name.
KINDS: frozenset[str] = frozenset(
    {kind for kind in _DML_FIRST.values() if kind != "WITH"}
    | set(_CREATE_OBJECTS.values())
    | set(_ALTER_OBJECTS.values())
    | set(_DROP_OBJECTS.values())
    | set(_SINGLE_WORD_KINDS.values())
    | {
        "ANALYZE",
        "EXPLAIN",
        "DESCRIBE",
        "SET PASSWORD",
        "SET ROLE",
        "SET STATEMENT",
        "SET",
        "BEGIN",
        "START TRANSACTION",
        "RELEASE SAVEPOINT",
        "DEALLOCATE PREPARE",
        "RENAME TABLE",
        "RENAME USER",
        "LOAD DATA",
        "LOAD XML",
        "INSTALL PLUGIN",
        "UNINSTALL PLUGIN",
        "LOCK TABLES",
        "UNLOCK TABLES",
        "CHANGE MASTER",
        "COMPOUND",
        "UNKNOWN",
    }
)


# -- parsing ---------------------------------------------------------------------------------


_TOKEN_REPR = re.compile(r"<Token token_type: [^,]*, text: (.*?), line: .*?>")


# MariaDB's reserved words, which it never reads as a column name written without quotes
# (those it reads as constants, CURRENT_ROLE, UTC_DATE, ..., are _CONSTANT_NAMES; DEFAULT,
# which the parser reads as a column in `SET c = DEFAULT`, is a column's default there). Where
# the parser makes a column of one, its reading of the expression is not the server's:
# `BINARY BINARY -1` is CAST(`BINARY` AS BINARY) - 1 to it, a value of the row, and
# BINARY(BINARY(-1)), true for every row, to the server.
_RESERVED_WORDS = frozenset(
    """
    accessible add all alter analyze and as asc asensitive before between bigint binary
    blob both by call cascade case change char character check collate column condition
    constraint continue convert create cross cursor databases day_hour day_microsecond
    day_minute day_second dec decimal declare delayed delete delete_domain_id
    desc describe deterministic distinct distinctrow div do_domain_ids double drop dual
    each else elseif enclosed escaped except exists exit explain fetch float float4
    float8 for force foreign from fulltext grant group having high_priority
    hour_microsecond hour_minute hour_second if ignore ignore_domain_ids in index infile
    inner inout insensitive insert int int1 int2 int3 int4 int8 integer intersect
    interval into is iterate join key keys kill leading leave left like limit linear
    lines load lock long longblob longtext loop low_priority master_demote_to_replica
    master_demote_to_slave master_ssl_verify_server_cert match maxvalue mediumblob
    mediumint mediumtext middleint minute_microsecond minute_second mod modifies natural
    no_write_to_binlog not numeric offset on optimize optionally or order out outer
    outfile over page_checksum parse_vcol_expr partition portion precision primary
    procedure purge range read read_write reads real recursive ref_system_id references
    regexp release rename repeat replace require resignal restrict return returning
    revoke right rlike row_number rows schemas second_microsecond select sensitive
    separator set show signal smallint spatial specific sql sql_big_result
    sql_calc_found_rows sql_small_result sqlexception sqlstate sqlwarning ssl starting
    stats_auto_recalc stats_persistent stats_sample_pages straight_join table terminated
    then tinyblob tinyint tinytext to trailing trigger undo union unique unlock unsigned
    update usage use using values varbinary varchar varcharacter varying when where
    while with write xor year_month zerofill
    """.split()
)


def _reserved_column(node: exp.Column, text: str) -> str | None:
    """The first name of a column when it is, without quotes, a word the server reserves
    and reads as that word (after a '.' the server reads any word as a name; `BINARY .5`
    is BINARY(.5) to the server and the column `BINARY`.`5` to the parser). ``text`` is
    what the parser read (see _named_by_dot)."""
    get = node.args.get
    first = get("catalog")
    if first is None:
        first = get("db")
        if first is None:
            first = get("table")
            if first is None:
                first = get("this")
    if type(first) is not exp.Identifier:
        return None
    name = first.this
    if (
        type(name) is str
        and name.lower() in _RESERVED_WORDS
        and not first.args.get("quoted")
        and not _named_by_dot(first, text)
    ):
        return name.upper()
    return None


def _named_by_dot(word: exp.Identifier, text: str) -> bool:
    """The server reads a word as a name, reserved or not, when a '.' and a character of
    a name follow it directly (its lexer checks no keyword then): `order.id` is the
    column id of the table `order`, `order .id` and `order.*` a syntax error. False when
    the parser kept no position for the word."""
    end = word.meta.get("end")
    if type(end) is not int or text[end - len(word.this) + 1 : end + 1] != word.this:
        return False
    after = text[end + 1 : end + 3]
    if len(after) != 2 or after[0] != ".":
        return False
    return _name_character(after[1])


_RESERVED_AS_COLUMN = (
    "the reserved word {word} read as a column name, which the server never reads it as "
    "(BINARY BINARY -1 is a constant to the server, a column's value to the parser): "
    "quote a column of that name in backticks"
)
_ALIAS_IN_EXPRESSION = (
    "a word or string read as an alias inside an expression, which the server has not "
    "(BINARY DATE'2024-01-01' is a cast of a column named DATE to the parser): write "
    "CAST(... AS BINARY)"
)
_COLLATE_EXPRESSION = (
    "COLLATE followed by an expression: the server applies COLLATE before any operator "
    "('1' COLLATE utf8mb4_bin ^ 1 is ('1' COLLATE utf8mb4_bin) ^ 1), the parser after: "
    "put the COLLATE in parentheses"
)


def _collation_name(node: exp.Expr | None) -> bool:
    """A COLLATE's operand is a collation name as the server reads it: a word, a quoted
    name or a string, not an expression the parser read into it."""
    if isinstance(node, exp.Column):
        return not node.table
    return isinstance(node, (exp.Var, exp.Identifier)) or (
        isinstance(node, exp.Literal) and node.is_string
    )


def _impossible_reading(root: exp.Expr, text: str) -> str | None:
    """Why the parser's tree is no reading the server can have, None when it may be.

    sqlglot reads a reserved word as a name, an alias inside an expression and an
    expression after COLLATE, where MariaDB reads none: `BINARY BINARY card_number` is
    CAST(`BINARY` AS BINARY) AS card_number to it (a column masked nowhere), the card
    number to the server; `WHERE BINARY BINARY -1` a test of a column, true for every
    row on the server; `(BINARY DATE'2024-01-01')` CAST(`DATE` AS BINARY) AS
    `2024-01-01`; `'1' COLLATE utf8mb4_bin ^ 2` '1' COLLATE (`utf8mb4_bin` ^ 2).
    ``text`` is what the parser read. _Tree finds the same in the walk it makes anyway
    (_Tree.impossible)."""
    outputs: set[int] = set()  # the aliases that name what a query outputs
    qualified: set[int] = set()  # the calls written schema.name(...)
    stack: list[object] = [root]
    pop = stack.pop
    extend = stack.extend
    append = stack.append
    while stack:
        node = pop()
        if not isinstance(node, exp.Expr):
            continue
        cls = type(node)
        if cls is exp.Column:
            word = _reserved_column(node, text)  # type: ignore[arg-type]
            if word is not None:
                return _RESERVED_AS_COLUMN.format(word=word)
        elif cls is exp.Alias:
            if id(node) not in outputs:
                return _ALIAS_IN_EXPRESSION
        elif cls is exp.Collate:
            if not _collation_name(node.expression):
                return _COLLATE_EXPRESSION
        elif cls in _NAMED_OUTPUTS:  # exact types: a subclass is no select list
            outputs.update(id(x) for x in node.expressions)
        elif cls is exp.Anonymous:
            outputs.update(_typed_arguments(node))  # type: ignore[arg-type]
            if id(node) not in qualified:
                outputs.update(_udf_arguments(node, text))  # type: ignore[arg-type]
        elif cls is exp.Dot:
            qualified.add(id(node.expression))
        for value in node.args.values():
            if type(value) is list:
                extend(value)
            elif value is not None:
                append(value)
    return None


# Where the server names what it outputs: a query's select list, RETURNING
_NAMED_OUTPUTS = (exp.Select, exp.Returning)

# MariaDB's dynamic column functions take a value's type as `value AS type`, which the
# parser reads as an alias: COLUMN_GET(blob, name AS type), COLUMN_CREATE(name, value
# [AS type], ...), COLUMN_ADD(blob, name, value [AS type], ...). Each maps to where its
# typed arguments are: (first index, step).
_TYPED_ARGUMENTS: dict[str, tuple[int, int]] = {
    "COLUMN_GET": (1, 1 << 30),
    "COLUMN_CREATE": (1, 2),
    "COLUMN_ADD": (2, 2),
}
# The types those functions take, as the parser names the alias they read (two words
# joined by a space)
_DYNAMIC_COLUMN_TYPES = frozenset(
    "binary char date datetime decimal double int integer signed time unsigned".split()
) | {"signed integer", "unsigned integer"}


def _typed_arguments(node: exp.Anonymous) -> Iterator[int]:
    """The ids of the aliases in a call of a dynamic column function that are the
    server's `value AS type` (a type, not a name: COLUMN_GET(dyn, 'k' AS INT)).

    Only an unquoted type word in a typed argument's place counts: anywhere else an
    alias inside the call is still no reading the server can have."""
    place = _TYPED_ARGUMENTS.get(node.name.upper())
    if place is None:
        return
    first, step = place
    for arg in node.expressions[first::step]:
        if type(arg) is not exp.Alias:
            continue
        alias = arg.args.get("alias")
        if (
            type(alias) is exp.Identifier
            and not alias.args.get("quoted")
            and alias.this.lower() in _DYNAMIC_COLUMN_TYPES
        ):
            yield id(arg)


_AS_BEFORE = re.compile(r"(?<![0-9A-Za-z_$\x80-\uffff])[Aa][Ss][ \t\n\r\f\v]*\Z")


def _udf_arguments(node: exp.Anonymous, text: str) -> Iterator[int]:
    """The ids of the aliases in a call of a name that are the server's `value AS name`
    of a user-defined function's argument (its attribute name: `myudf(price AS p)`).

    The server reads `value [AS] name` in the arguments of any call of an unqualified
    name and refuses it but for a UDF (error 1583 for a native function, 1584 for a
    stored one); the parser reads the same alias when `AS` is written. Without `AS` the
    alias may be part of the value to the server (`f(BINARY DATE'2024-01-01')` is a
    date, no alias), so only an alias with `AS` straight before it counts. ``text`` is
    what the parser read; the caller passes only calls that are not qualified
    (`db.f(x AS y)` is a syntax error). A name the server has a function of, spelled
    any way, is left out: some have a grammar of their own (`COLUMN_GET(x AS INT)`,
    `WEIGHT_STRING(x AS CHAR(4))`), where the word after AS is no name."""
    name = node.name.upper()
    if name in BUILTIN_FUNCTIONS or name in NATIVE_FUNCTIONS or name in KEYWORD_FUNCTIONS:
        return
    for arg in node.expressions:
        if type(arg) is not exp.Alias:
            continue
        alias = arg.args.get("alias")
        start = alias.meta.get("start") if type(alias) is exp.Identifier else None
        if type(start) is int and 0 < start <= len(text) and _AS_BEFORE.search(text, 0, start):
            yield id(arg)


class _Unparsable(Exception):
    """sqlglot could not read the text; the message says where."""


class _Parsers(threading.local):
    """One sqlglot tokenizer and parser per thread, reused: building them costs more
    than tokenizing a short statement, and both reset themselves on every call."""

    def __init__(self) -> None:
        self.tokenizer = _MYSQL.tokenizer()
        self.parser = _MYSQL.parser()


_PARSERS = _Parsers()


def _keywords_before_dot(tokens: Sequence[GlotToken], text: str) -> list[GlotToken]:
    """The words the tokenizer kept as keywords though '.' and a character of a name
    follow them directly: the server reads each as a name (see _named_by_dot), and the
    parser must too (see _keyword_read_as_name)."""
    found = []
    for token in tokens:
        if token.token_type in _NAME_TOKENS:
            continue
        start, end = token.start, token.end
        word = token.text
        if text[start : end + 1] != word or not _WORD.fullmatch(word):
            continue  # a string, a quoted name, a symbol
        if start and (text[start - 1] in "@.$_" or text[start - 1].isalnum()):
            continue  # @var.x, @@session.x, a.b.from: no word of its own
        after = text[end + 1 : end + 3]
        if len(after) == 2 and after[0] == "." and _name_character(after[1]):
            found.append(token)
    return found


def _keyword_read_as_name(words: list[GlotToken], root: exp.Expr) -> str | None:
    """Why the parser's tree is no reading the server can have when it made no name of
    one of ``words``: `CONCAT(from.card_number)` is the column card_number of the table
    `from` to the server and the subquery (SELECT * FROM card_number) to the parser,
    which saw no masked column in it."""
    ends = {
        node.meta.get("end")
        for node in root.find_all(exp.Identifier)
        if not node.args.get("quoted")
    }
    for token in words:
        if token.end not in ends:
            return (
                f"the word {token.text.upper()} directly before '.' and a name, which the "
                "server reads as a name and the parser did not: quote it in backticks"
            )
    return None


def _name_character(c: str) -> bool:
    """A character the server reads as part of a name (its ident_map: ASCII letters,
    digits, '_', '$', any non-ASCII)."""
    return c.isalnum() or c in "_$" or not c.isascii()


# The tokens the parser reads as names, or as no word at all
_NAME_TOKENS = frozenset({TokenType.VAR, TokenType.IDENTIFIER, TokenType.NUMBER})
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def _assigned(root: exp.Expr) -> frozenset[str] | None:
    """The columns an UPDATE or an upsert's ON DUPLICATE KEY UPDATE assigns
    (``Classification.assigns``), from its tree; None when an assignment is not
    ``column = value``."""
    if isinstance(root, exp.Update):
        assignments = root.expressions
    elif isinstance(root, exp.Insert) and isinstance(root.args.get("conflict"), exp.OnConflict):
        assignments = root.args["conflict"].expressions
    else:
        return None
    names: set[str] = set()
    for assignment in assignments:
        if not (isinstance(assignment, exp.EQ) and isinstance(assignment.this, exp.Column)):
            return None
        names.add(assignment.this.name.lower())
    return frozenset(names) if names else None


def _parse(text: str) -> exp.Expr:
    parsers = _PARSERS
    try:
        tokens = parsers.tokenizer.tokenize(text)
        trees = parsers.parser.parse(tokens, text)
    except ParseError as err:
        detail = err.errors[0] if err.errors else None
        if detail:
            description = _TOKEN_REPR.sub(r"'\1'", str(detail.get("description")))
            raise _Unparsable(
                f"{description} at line {detail.get('line')}, column {detail.get('col')}"
            ) from None
        raise _Unparsable(str(err).splitlines()[0]) from None
    except RecursionError:
        raise _Unparsable("the statement nests too deeply") from None
    except Exception as err:  # a parser failure of any kind fails closed
        raise _Unparsable(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    found = [t for t in trees if t is not None]
    if len(found) != 1:
        raise _Unparsable(f"it reads as {len(found)} statements")
    if _keyword_before_dot(text):
        words = _keywords_before_dot(tokens, text)
        if words:
            why = _keyword_read_as_name(words, found[0])
            if why is not None:
                raise _Unparsable(why)
    return found[0]


def _keyword_before_dot(text: str) -> bool:
    """Whether a word the tokenizer keeps as a keyword may stand directly before '.' (a
    first look at the text, which saves going through every token of the usual
    statement, whose `t.col` names no keyword).

    It reads the text backwards: a pattern that starts with '.' lets the regex engine
    jump from '.' to '.', where one that starts with a word tries every word (1 µs
    instead of 5 µs of a 300-byte join). The run of letters, digits and '_' before a '.'
    is every word _keywords_before_dot could take there (no keyword holds '$'); a few
    more (a '.' before a blank) only send the text to the token walk."""
    return not _GLOT_KEYWORDS_REVERSED.isdisjoint(_DOT_THEN_WORD.findall(text.upper()[::-1]))


# In the upper-cased text read backwards: '.' and the word that stood before it
_DOT_THEN_WORD = re.compile(r"\.([A-Z0-9_]++)")
# The single words the tokenizer reads as keywords (any other word is a name to it)
_GLOT_KEYWORDS = frozenset(k for k in type(_MYSQL.tokenizer()).KEYWORDS if _WORD.fullmatch(k))
_GLOT_KEYWORDS_REVERSED = frozenset(k[::-1] for k in _GLOT_KEYWORDS)
if any("$" in k for k in _GLOT_KEYWORDS):  # what _keyword_before_dot relies on
    raise RuntimeError("a keyword of the parser holds '$'")


def _parse_text(v: _View, edits: Sequence[tuple[int, int, bytes]] = ()) -> str:
    """The text sqlglot reads: edits (start, end, replacement; offsets into raw) applied,
    then respelled for MySQL's default lexing unless it is plain already."""
    raw = v.raw
    respell = not v.plain
    if not edits and v.comments is not None:
        # Only comments keep it from being plain: blanking them is all default_mode_text()
        # would do, and it would lex the text a third time (8 µs of the uncached decision
        # of a 300-byte statement with a comment).
        edits = [(s, e, b" ") for s, e in v.comments]
        respell = False
    if edits:
        parts: list[bytes] = []
        kept = 0
        for s, e, replacement in sorted(edits):
            if s < kept:
                continue
            parts.append(raw[kept:s])
            parts.append(replacement)
            kept = e
        parts.append(raw[kept:])
        raw = b"".join(parts)
    if respell:
        raw = default_mode_text(raw, v.mode)
    return raw.decode("utf-8", "replace")


def _parse_problem(kind: str, reason: str) -> str:
    return (
        f"the gateway's SQL parser cannot read this {kind} statement ({reason}); "
        "the gateway refuses what it cannot read: rewrite it in plain MySQL syntax"
    )


def _mismatch_problem(kind: str, root: exp.Expr) -> str:
    return (
        f"the SQL parser reads this statement as {type(root).__name__}, not as the {kind} "
        "its keywords say; the gateway refuses what it cannot read the way the server will"
    )


# Words that open a query inside parentheses: a subquery anywhere in an expression is
# written "(SELECT ...", "(WITH ...", "(VALUES ..." (MariaDB; MySQL also "(TABLE t").
_QUERY_HEADS = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})


def _subquery_spans(tokens: Sequence[Token], start: int, stop: int) -> list[tuple[int, int]]:
    """The token indexes of the '(' and ')' around each outermost parenthesised query
    in tokens[start:stop] (the last index when the ')' is missing)."""
    spans: list[tuple[int, int]] = []
    i = start
    while i < stop:
        t = tokens[i]
        if t.kind != Tok.PUNCT or t.text != "(":
            i += 1
            continue
        j = i + 1
        while punct_at(tokens, j, "("):
            j += 1
        if word_at(tokens, j) not in _QUERY_HEADS:
            i += 1
            continue
        depth = 0
        k = i
        while k < stop:
            u = tokens[k]
            if u.kind == Tok.PUNCT:
                if u.text == "(":
                    depth += 1
                elif u.text == ")":
                    depth -= 1
                    if depth == 0:
                        break
            k += 1
        spans.append((i, min(k, stop - 1)))
        i = k + 1
    return spans


def _subquery_reads(v: _View, start: int, stop: int) -> tuple[set[str], set[str]]:
    """The tables and functions of the subqueries in v.tokens[start:stop], for a
    statement whose handler reads its tokens, not a parsed tree (SET, DO, CALL, ...):
    the server runs a subquery wherever an expression may stand, and a table it reads
    is one the rules must see. Each is parsed as ``SELECT (<subquery>)``; raises
    _Unparsable when one cannot be read."""
    tokens = v.tokens
    reads: set[str] = set()
    functions: set[str] = set()
    for i, j in _subquery_spans(tokens, start, stop):
        s, e = v.start(tokens[i]), v.end(tokens[j])
        parsed = _parse_text(v, [(0, s, b"SELECT "), (e, len(v.raw), b"")])
        tree = _Tree(_parse(parsed), parsed)
        if tree.impossible is not None:
            raise _Unparsable(tree.impossible)
        reads |= tree.reads()
        functions |= tree.functions
    return reads, functions


def _misread_tree(
    kind: str,
    text: str,
    tree: _Tree,
    *,
    flags: Iterable[str] = (),
    functions: Iterable[str] = (),
) -> Classification | None:
    """The refusal of a statement whose parsed tree is no reading the server can have
    (``_Tree.impossible``), with the flags and functions read so far; None when it may
    be."""
    if tree.impossible is None:
        return None
    problem = _parse_problem(kind, tree.impossible)
    return _result(kind, text, flags=flags, functions=functions, problem=problem)


_TABLE, _WITH, _FUNC, _DOT, _COLUMN, _ALIAS, _OUTPUTS = 1, 2, 3, 4, 5, 6, 7
_CATEGORY: dict[type, int] = {}
_FUNCTION_NAMES: dict[type, str] = {}


def _category(cls: type) -> int:
    if issubclass(cls, exp.Table):
        c = _TABLE
    elif issubclass(cls, exp.With):
        c = _WITH
    elif issubclass(cls, exp.Dot):
        c = _DOT  # schema.f(...): a qualified call
    elif issubclass(cls, exp.Column):
        c = _COLUMN
    elif issubclass(cls, exp.Alias):
        c = _ALIAS
    elif issubclass(cls, _NAMED_OUTPUTS):
        c = _OUTPUTS
    elif issubclass(cls, exp.Func) and not issubclass(
        cls, (exp.Connector, exp.SubqueryPredicate)
    ):  # AND, OR, XOR, EXISTS, ANY are operators to a reader
        c = _FUNC
    else:
        c = 0
    _CATEGORY[cls] = c
    return c


class _DottedName(Exception):
    """A schema, table, view, trigger or routine named with a dot (a quoted name such as
    `x.y`): the rules match names as their parts joined with dots, where x.y reads as
    table y of schema x and shop.`x.y` as three parts. Such a statement is not understood
    (fail closed): a rule for shop.* must not miss table `x.y` of shop."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        quoted = "`" + name.replace("`", "``") + "`"
        self.problem = (
            f"the name {quoted} contains a dot, which the gateway's rules cannot tell from "
            "a schema.table name, so it cannot tell what the statement touches; name "
            "schemas, tables, views and routines without dots (a database administrator "
            "can rename an existing one)"
        )


def _part(name: str) -> str:
    """One part of a schema-qualified name, as written (raises _DottedName for a part
    with a dot)."""
    if "." in name:
        raise _DottedName(name)
    return name


def _table_name(t: exp.Table) -> str:
    """The table's name as the rules match it ("schema.table" when qualified), as
    written: the server may tell schemas and tables by their case; raises _DottedName
    for a part with a dot."""
    name = t.name
    if not name:
        return ""
    db = t.db
    catalog = t.catalog
    if "." in name or "." in db or "." in catalog:
        raise _DottedName(next(p for p in (catalog, db, name) if "." in p))
    if catalog:
        return f"{catalog}.{db}.{name}"
    if db:
        return f"{db}.{name}"
    return name


def _inner_nodes(root: exp.Expr) -> list[exp.Expr]:
    """The nodes of a tree in bfs()'s order, but for its identifiers, which are unlinked
    from their parents on the way (what _Tree does to every node).

    Identifiers are about half of a tree's nodes and have no nodes below them: leaving
    them out of the list saves looking into each, and this loop over the nodes' args
    costs less than bfs()'s generators (a 300-byte join's walk: 7 µs instead of 10)."""
    nodes = [root]
    identifier = exp.Identifier
    node_type = exp.Expr
    for node in nodes:  # the list grows while it is read: breadth first
        for value in node.args.values():
            if type(value) is list:
                for item in value:
                    if type(item) is identifier:
                        item.parent = None
                    elif isinstance(item, node_type):
                        nodes.append(item)
            elif type(value) is identifier:
                value.parent = None
            elif isinstance(value, node_type):
                nodes.append(value)
    return nodes


class _Tree:
    """What one walk of a parsed tree gives: tables, WITH clauses, function names, and
    the calls _stored_functions looks at (calls of names the parser does not know, and
    qualified names).

    The walk also unlinks every node from its parent. Those links are what makes a
    sqlglot tree a cycle: without them the tree is freed as soon as the caller drops it,
    where otherwise the garbage collector had to find it, a few hundred objects for each
    uncached statement (17 µs of the uncached decision of a 300-byte join, its young
    collections walking the trees). Nothing reads a node's parent after this walk: the
    query each WITH belongs to is kept as the walk meets it.
    """

    __slots__ = (
        "root",
        "text",
        "tables",
        "withs",
        "functions",
        "anonymous",
        "dots",
        "impossible",
    )

    def __init__(self, root: exp.Expr, text: str) -> None:
        self.root = root
        self.text = text  # what the parser read: node positions are offsets in it
        self.tables: list[exp.Table] = []
        self.withs: list[tuple[exp.Expr | None, exp.With]] = []  # (its query, the WITH)
        self.functions: set[str] = set()
        self.anonymous: list[exp.Anonymous] = []
        self.dots: list[exp.Dot] = []
        # why the tree is no reading the server can have (see _impossible_reading)
        self.impossible: str | None = None
        # the aliases that name what a query outputs, and the types of _typed_arguments
        outputs: set[int] = set()
        qualified: set[int] = set()  # the calls written schema.name(...)
        category = _CATEGORY.get
        for node in _inner_nodes(root):
            cls = type(node)
            c = category(cls)
            if c is None:
                c = _category(cls)
            if not c:
                node.parent = None
                continue
            if c >= _COLUMN:
                if c == _COLUMN:
                    # the name _reserved_column reads, first looked at here: the call is
                    # for the few columns whose name is a reserved word at all
                    get = node.args.get
                    first = get("table")
                    if first is None:
                        first = get("this")
                    elif get("db") is not None:
                        first = get("catalog")
                        if first is None:
                            first = get("db")
                    name = getattr(first, "this", None)
                    if type(name) is str and name.lower() in _RESERVED_WORDS:
                        assert isinstance(node, exp.Column)
                        word = _reserved_column(node, text)
                        if word is not None and self.impossible is None:
                            self.impossible = _RESERVED_AS_COLUMN.format(word=word)
                elif c == _ALIAS:
                    if id(node) not in outputs and self.impossible is None:
                        self.impossible = _ALIAS_IN_EXPRESSION
                else:
                    outputs.update(map(id, node.expressions))
                node.parent = None
                continue
            if c == _TABLE:
                assert isinstance(node, exp.Table)
                self.tables.append(node)
            elif c == _WITH:
                assert isinstance(node, exp.With)
                self.withs.append((node.parent, node))
            elif c == _DOT:
                assert isinstance(node, exp.Dot)
                self.dots.append(node)
                qualified.add(id(node.expression))
            elif isinstance(node, exp.Anonymous):
                self.functions.add(node.name.upper())
                self.anonymous.append(node)
                outputs.update(_typed_arguments(node))
                if id(node) not in qualified:
                    outputs.update(_udf_arguments(node, text))
            else:
                if (
                    cls is exp.Collate
                    and not _collation_name(node.expression)
                    and self.impossible is None
                ):
                    self.impossible = _COLLATE_EXPRESSION
                name = _FUNCTION_NAMES.get(cls)
                if name is None:
                    assert isinstance(node, exp.Func)
                    name = _FUNCTION_NAMES[cls] = node.sql_name().upper()
                self.functions.add(name)
            node.parent = None

    def reads(self, excluded: Iterable[exp.Expression] = ()) -> set[str]:
        """Names of the tables read, but for the given nodes, references to a CTE and
        DUAL (the keyword: a quoted `dual`, in any case, is a table the server reads)."""
        skip = {id(node) for node in excluded}
        if self.withs:
            skip |= self._cte_references()
        names: set[str] = set()
        for t in self.tables:
            if id(t) in skip:
                continue
            name = _table_name(t)
            if not name or (name.lower() == "dual" and not t.this.args.get("quoted")):
                continue
            names.add(name)
        return names

    def _cte_references(self) -> set[int]:
        """The table references that name a CTE in scope, as MariaDB 10.11 scopes them:
        a WITH's names are seen in its own query (subqueries and derived tables too),
        nowhere outside it; in the body of one of its CTEs only the CTEs before it (WITH
        RECURSIVE: all of them), so in ``WITH t AS (SELECT * FROM t)`` the inner ``t``
        is the table; and not in the body of a CTE of a WITH nested inside, which reads
        the table of that name. A name is a CTE's only when written the same, case
        too: MariaDB compares CTE names without case, a server may with it. Where a
        server might see a CTE the reference counts as a table: that only refuses more,
        where a table taken for a CTE would go unseen."""
        found: set[int] = set()
        for owner, w in self.withs:
            ctes = [cte for cte in w.expressions if isinstance(cte, exp.CTE)]
            names = [cte.alias for cte in ctes]
            recursive = bool(w.args.get("recursive"))
            if len(self.withs) == 1 and owner is self.root:
                # The common case, one WITH heading the statement: its query is every
                # table but those of its CTEs' bodies (none of them holds a WITH).
                in_bodies: set[int] = set()
                for i, cte in enumerate(ctes):
                    visible = names if recursive else names[:i]
                    for t in cte.this.find_all(exp.Table):
                        in_bodies.add(id(t))
                        if not t.db and t.name in visible:
                            found.add(id(t))
                for t in self.tables:
                    if id(t) not in in_bodies and not t.db and t.name in names:
                        found.add(id(t))
                continue
            if owner is not None:
                for value in owner.args.values():
                    if value is not w:
                        _cte_names_in(value, names, found)
            for i, cte in enumerate(ctes):
                _cte_names_in(cte.this, names if recursive else names[:i], found)
        return found


def _cte_names_in(value: object, names: Sequence[str], found: set[int]) -> None:
    """Adds to found the unqualified table references under value named in names, but
    for those inside the CTEs of a nested WITH."""
    if not names:
        return
    stack = [p for p in (value if isinstance(value, list) else (value,)) if isinstance(p, exp.Expr)]
    while stack:
        node = stack.pop()
        if isinstance(node, exp.CTE):
            continue
        if isinstance(node, exp.Table) and not node.db and node.name in names:
            found.add(id(node))
        stack.extend(node.iter_expressions())


# -- stored functions ----------------------------------------------------------------------
#
# A call runs one of the server's own functions or a stored function of that name, whose
# statements the gateway never sees (server_functions.py says which names are the
# server's, and how each may be written). The skeleton gives the suspects cheaply; only a
# statement that has some is looked at closely.

_PLAIN_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")

#: Names the SQL parser reads as something of its own when '(' follows, keeping no trace
#: of how the name was written: a function with a syntax of its own (CAST, TRIM,
#: STRING_AGG, ...), or a keyword that cannot name a function (a clause, a character set
#: introducer). Any other name before '(' in an expression is in the tree as an
#: exp.Anonymous or, for one of the parser's own functions (_PARSER_FUNCTIONS), as a node
#: whose position is the name's; before '(' elsewhere a name stands for a table, a CTE,
#: an index or a part of the syntax (JSON_TABLE's COLUMNS (...)).
_PARSED_SPECIALLY = frozenset(
    name
    for name in (
        *_MYSQL.parser_class.FUNCTION_PARSERS,
        *_MYSQL.parser_class.NO_PAREN_FUNCTION_PARSERS,
        *(
            word
            for word, token in _MYSQL.tokenizer_class.KEYWORDS.items()
            if token not in _MYSQL.parser_class.FUNC_TOKENS
        ),
    )
    if _PLAIN_NAME.fullmatch(name)
)
_PARSER_FUNCTIONS = frozenset(_MYSQL.parser_class.FUNCTIONS) - _PARSED_SPECIALLY

_NOT_CALLED_AFTER_WORDS = frozenset(w.decode() for w in _NOT_CALLED_AFTER)

#: Kinds whose parentheses define things (columns, indexes, a routine's parameters) and
#: whose calls run later or not at all: not read for calls.
_DEFINES = frozenset(
    {
        "ALTER TABLE",
        "TRUNCATE",
        "RENAME TABLE",
        "DROP TABLE",
        "DROP VIEW",
        "DROP INDEX",
        "DROP DATABASE",
        "ALTER DATABASE",
        "CREATE SEQUENCE",
        "ALTER SEQUENCE",
        "DROP SEQUENCE",
        *(
            f"{verb} {what}"
            for verb in ("CREATE", "ALTER", "DROP")
            for what in ("TRIGGER", "EVENT", "PROCEDURE", "FUNCTION")
        ),
    }
)


def _stored_functions(v: _View, suspects: Sequence[_Suspect], tree: _Tree | None) -> set[str]:
    """The calls of a statement that the server reads as calls of stored functions:
    lower-case names, ``schema.name`` when qualified (the schema as written).

    With the statement's parse ``tree``, the skeleton's suspects are told from names that
    only look like calls (``WITH cte (a) AS``, ``INSERT t (a)``, ``COLUMNS (...)``): a
    name is a call where the tree has it as exp.Anonymous, or as one of the parser's own
    functions at the name's position; a name the parser reads specially is taken for a
    call wherever it stands before '('. A qualified call is an exp.Dot, always a stored
    function's. Without a tree (SET, SHOW, DO, ...), every name before '(' is a call."""
    if tree is None:
        return _token_calls(v, v.tokens) if suspects else set()
    found: set[str] = set()
    for dot in tree.dots:
        call = dot.expression
        if isinstance(call, exp.Func):
            name = call.name if isinstance(call, exp.Anonymous) else call.sql_name()
            found.add(f"{_qualifier(dot.this)}.{name.lower()}")
    if not suspects:
        return found
    anonymous: dict[str, list[exp.Anonymous]] = {}
    for node in tree.anonymous:
        anonymous.setdefault(node.name.upper(), []).append(node)
    calls = [
        (s.name, _SPACED if s.spaced else _TIGHT) for s in suspects if s.name and not s.qualified
    ]
    if any(not s.name and not s.qualified for s in suspects):  # `name`(...): read its name
        calls.extend(
            (name, spelling)
            for qualifier, name, spelling, _ in _calls_in(v, v.tokens)
            if qualifier is None and spelling == _QUOTED
        )
    written: set[str] | None = None
    for name, spelling in calls:
        if name == "JSON_TABLE":  # the table function in FROM, a stored function elsewhere
            if _calls_json_table(tree):
                found.add("json_table")
        elif _builtin(name, spelling):
            if name in ARGUMENT_COUNTS:
                nodes = anonymous.get(name)  # the parser reads these names as Anonymous
                if not nodes or not all(_takes(name, len(n.expressions)) for n in nodes):
                    found.add(name.lower())
        elif name in anonymous or name in _PARSED_SPECIALLY:
            found.add(name.lower())
        elif name in _PARSER_FUNCTIONS:
            if written is None:
                written = _written_names(tree)
            if (f"`{name}`" if spelling == _QUOTED else name) in written:
                found.add(name.lower())
    return found


def _written_names(tree: _Tree) -> set[str]:
    """The text, upper case, at the position of every node that has one, but for names
    (tables, CTEs, columns): where the parser read a function, its name."""
    text = tree.text
    names: set[str] = set()
    for node in tree.root.bfs():
        start = node.meta_get("start")
        if start is not None and not isinstance(node, exp.Identifier):
            names.add(text[start : node.meta_get("end", start) + 1].upper())
    return names


def _qualifier(node: exp.Expr) -> str:
    """``schema`` of ``schema.name(...)`` (``a.b`` for ``a.b.name(...)``), as written (the
    server may tell schemas by their case)."""
    if isinstance(node, exp.Dot):
        return f"{_qualifier(node.this)}.{_qualifier(node.expression)}"
    if isinstance(node, exp.Column):
        return ".".join(part.name for part in node.parts)
    return node.name if node.name else type(node).__name__.lower()


def _calls_json_table(tree: _Tree) -> bool:
    """Whether a JSON_TABLE stands anywhere but as a table of FROM or JOIN, where the
    server reads the name as a stored function's."""
    as_tables = sum(1 for t in tree.tables if isinstance(t.this, exp.JSONTable))
    return sum(1 for _ in tree.root.find_all(exp.JSONTable)) > as_tables


def _token_calls(v: _View, tokens: Sequence[Token]) -> set[str]:
    """Every call in the tokens (of v) that the server reads as a stored function's."""
    found: set[str] = set()
    for qualifier, name, spelling, paren in _calls_in(v, tokens):
        if qualifier is not None:
            found.add(f"{qualifier}.{name.lower()}")
        elif not _builtin(name, spelling) or (
            name in ARGUMENT_COUNTS and not _takes(name, _argument_count(tokens, paren))
        ):
            found.add(name.lower())
    return found


def _calls_in(v: _View, tokens: Sequence[Token]) -> Iterable[tuple[str | None, str, int, int]]:
    """(qualifier as written or None, upper-case name, spelling, index of the '(') of each
    name before '(' in the tokens (of v), but for a table, view or routine being
    defined."""
    for i in range(1, len(tokens)):
        paren = tokens[i]
        if paren.kind != Tok.PUNCT or paren.text != "(":
            continue
        name = tokens[i - 1]
        if name.kind == Tok.WORD:
            spelling = _TIGHT if name.end == paren.start else _SPACED
        elif name.kind == Tok.IDENT:
            spelling = _QUOTED
        else:
            continue
        j = i - 1
        while j >= 2 and punct_at(tokens, j - 1, ".") and tokens[j - 2].kind in _NAME_KINDS:
            j -= 2
        if j > 0 and word_at(tokens, j - 1) in _NOT_CALLED_AFTER_WORDS:
            continue
        qualifier = None
        if j < i - 1:
            qualifier = ".".join(_written(v, tokens[k]) for k in range(j, i - 1, 2))
        yield qualifier, name.text.upper(), spelling, i


_NAME_KINDS = (Tok.WORD, Tok.IDENT)


def _argument_count(tokens: Sequence[Token], paren: int) -> int:
    """The number of arguments of the call whose '(' is ``tokens[paren]``."""
    depth = 0
    commas = 0
    empty = True
    for t in tokens[paren + 1 :]:
        if t.kind == Tok.PUNCT:
            if t.text == ")":
                if depth == 0:
                    return 0 if empty else commas + 1
                depth -= 1
            elif t.text == "(":
                depth += 1
            elif t.text == "," and depth == 0:
                commas += 1
        empty = False
    return commas + 1


# -- SELECT, INSERT, REPLACE, UPDATE, DELETE --------------------------------------------

_ROOTS: dict[str, tuple[type[exp.Expr], ...]] = {
    "SELECT": (exp.Query, exp.Values),
    "INSERT": (exp.Insert,),
    "REPLACE": (exp.Insert,),
    "UPDATE": (exp.Update,),
    "DELETE": (exp.Delete,),
}

# Where an INTO clause of a SELECT ends.
_AFTER_INTO = frozenset(
    ("FROM WHERE GROUP HAVING ORDER LIMIT FOR LOCK UNION EXCEPT INTERSECT WINDOW").split()
)
_DML_MODIFIER_WORDS = frozenset({"LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "QUICK", "IGNORE"})


_DELETE_HISTORY = re.compile(rb"[ \t\n\r\f\v]*+DELETE[ \t\n\r\f\v]++HISTORY" + _E)


_ON_RESPONSE = frozenset({"EMPTY", "ERROR"})
_LITERAL_TOKENS = (Tok.STRING, Tok.NUMBER, Tok.HEX)


def _json_table_edits(v: _View) -> list[tuple[int, int, bytes]]:
    """Blanks for the parts of JSON_TABLE's column definitions the parser does not read:
    `EXISTS` of `EXISTS PATH`, and `{NULL | ERROR | DEFAULT literal} ON {EMPTY | ERROR}`.

    They say what a column holds where its path finds nothing or fails, with one literal
    at most (sql_yacc.yy's json_on_response): no table, column or call the decision
    reads. Only what follows a JSON_TABLE's COLUMNS inside its parentheses is looked at,
    and a DEFAULT with anything but one literal (a sign before it allowed) stays, for
    the parser to refuse."""
    tokens = v.tokens
    n = len(tokens)
    edits: list[tuple[int, int, bytes]] = []
    i = 0
    while i < n:
        if word_at(tokens, i) != "JSON_TABLE" or not punct_at(tokens, i + 1, "("):
            i += 1
            continue
        depth = 0
        columns = False
        j = i + 1
        while j < n:
            t = tokens[j]
            if t.kind == Tok.PUNCT and t.text == "(":
                depth += 1
            elif t.kind == Tok.PUNCT and t.text == ")":
                depth -= 1
                if depth == 0:
                    break
            elif not columns:
                columns = depth == 1 and word_at(tokens, j) == "COLUMNS"
            elif t.kind == Tok.WORD:
                word = t.text
                end = j  # the last token of a clause, when one starts at j
                if word == "EXISTS" and word_at(tokens, j + 1) == "PATH":
                    edits.append((v.start(t), v.end(t), b" "))
                elif word in ("NULL", "ERROR"):
                    end = j + 2
                elif word == "DEFAULT":
                    end = j + 1
                    if punct_at(tokens, end, "-") or punct_at(tokens, end, "+"):
                        end += 1
                    end = end + 2 if end < n and tokens[end].kind in _LITERAL_TOKENS else j
                if (
                    end > j
                    and word_at(tokens, end - 1) == "ON"
                    and word_at(tokens, end) in _ON_RESPONSE
                ):
                    edits.append((v.start(t), v.end(tokens[end]), b" "))
                    j = end
            j += 1
        i = j
    return edits


def _dml(v: _View, kind: str, head: int) -> Classification:
    text = v.text()
    if kind == "DELETE" and _DELETE_HISTORY.match(v.skeleton):
        # the parser takes HISTORY for the table: DELETE HISTORY FROM t read as writing
        # a table HISTORY, which a rule for HISTORY's schema could allow
        return _result(kind, text, problem=_parse_problem(kind, "DELETE HISTORY"))
    flags = _skeleton_flags(v.skeleton, kind)
    functions, suspects = _skeleton_calls(v.skeleton)
    edits: list[tuple[int, int, bytes]] = []
    if kind == "SELECT" and (
        "into_outfile" in flags or "into_dumpfile" in flags or "into_variable" in flags
    ):
        edits.extend(_into_clauses(v))
    if kind != "SELECT" and _DML_MODIFIERS.match(v.skeleton):
        tokens = v.tokens
        i = 1
        while word_at(tokens, i) in _DML_MODIFIER_WORDS:
            edits.append((v.start(tokens[i]), v.end(tokens[i]), b""))
            i += 1
    if kind == "REPLACE":
        # REPLACE has INSERT's syntax; sqlglot reads only the INSERT spelling.
        s = 0 if v.plain else v.start(v.tokens[0])  # plain: no comment before it
        edits.append((s, s + 7, b"INSERT"))
    if "JSON_TABLE" in functions:
        edits.extend(_json_table_edits(v))
    parsed = _parse_text(v, edits)
    try:
        root: exp.Expr | None = _parse(parsed)
    except _Unparsable as err:
        root, problem = None, _parse_problem(kind, str(err))
    if root is None or not isinstance(root, _ROOTS[kind]):
        # The rare path: what the parser could not read, read again with the respellings
        # that make it read the server's reading (none costs the usual statement a thing)
        if root is not None:
            problem = _mismatch_problem(kind, root)
        again = _dml_respellings(v, kind)
        if again:
            parsed = _parse_text(v, [*edits, *again])
            try:
                root = _parse(parsed)
            except _Unparsable:
                root = None
        if root is None or not isinstance(root, _ROOTS[kind]):
            return _result(kind, text, flags=flags, functions=functions, problem=problem)
    missing = _missing_part(root)
    if missing is not None:
        # sqlglot accepts some statements the server rejects; fail closed on them too.
        return _result(
            kind, text, flags=flags, functions=functions, problem=_parse_problem(kind, missing)
        )
    tree = _Tree(root, parsed)
    if (refused := _misread_tree(kind, text, tree, flags=flags, functions=functions)) is not None:
        return refused
    functions |= tree.functions
    stored = _stored_functions(v, suspects, tree) if suspects or tree.dots else ()
    if kind == "SELECT":
        return _result(
            kind,
            text,
            reads=tree.reads(),
            functions=functions,
            flags=flags,
            literal_independent=True,
            stored_functions=stored,
        )
    if kind in ("INSERT", "REPLACE"):
        assert isinstance(root, exp.Insert)
        target = root.this
        if isinstance(target, exp.Schema):
            target = target.this
        writes = {_table_name(target)} if isinstance(target, exp.Table) else set()
        return _result(
            kind,
            text,
            reads=tree.reads([target]),
            writes=writes,
            functions=functions,
            flags=flags,
            literal_independent=True,
            stored_functions=stored,
            assigns=_assigned(root),
        )
    if any(not isinstance(sub.this, exp.Query) for sub in root.find_all(exp.Subquery)):
        # UPDATE a JOIN (secret s) ... SET s.c = 1: the parser reads the parenthesised
        # table as a derived one, so the table written would be taken for one read
        return _result(
            kind, text, flags=flags, functions=functions, problem=_parse_problem(kind, _IN_PARENS)
        )
    if isinstance(root, exp.Update):
        refs, targets, excluded = _update_targets(root)
    else:
        assert isinstance(root, exp.Delete)
        refs, targets, excluded = _delete_targets(root)
    twins = _case_twins(refs)
    if twins is not None:
        return _result(
            kind, text, flags=flags, functions=functions, problem=_parse_problem(kind, twins)
        )
    where = root.args.get("where")
    always_true = False
    literal_dependent = False
    bindable = False
    if isinstance(where, exp.Where):
        outer = _ref_names(refs)
        try:
            always_true, literal_dependent, misread, bindable = _where_analysis(
                where.this, outer, len(refs) == 1, v.steps
            )
        except _TooComplex:
            return _result(kind, text, flags=flags, functions=functions, problem=_too_complex(kind))
        if misread is not None:
            return _result(
                kind, text, flags=flags, functions=functions, problem=_parse_problem(kind, misread)
            )
    return _result(
        kind,
        text,
        reads=tree.reads(excluded),
        writes={_table_name(t) for t in targets} - {""},
        has_where=where is not None,
        where_always_true=always_true,
        multi_table=len(refs) > 1 or len(targets) > 1,
        functions=functions,
        flags=flags,
        literal_independent=not literal_dependent,
        stored_functions=stored,
        assigns=_assigned(root),
        where_bindable=bindable,
    )


_IN_PARENS = "a table in parentheses; write the tables without them"


def _dml_respellings(v: _View, kind: str) -> list[tuple[int, int, bytes]]:
    """Edits for a statement the parser could not read that the server reads plainly:

    - a word the parser keeps as a keyword directly after a name and '.' (`t.select`,
      `s.t.from`) is a name to the server (its lexer reads whatever follows '.' and a
      character of a name as one): quoted in backticks. Not before '(' (`s.select()`
      calls a stored function, which the quoted spelling would hide from the parser);
    - a cast to a type the parser does not know (`CAST(a AS INET6)`, `INET4`)
      respelled as one it does, of the same family (see _COLUMN_TYPES);
    - a table value constructor as the statement (`VALUES (1, 2), (3, 4) ORDER BY 1`,
      MariaDB 10.3+), which the parser reads only as a query in parentheses, the same
      query to the server: put in parentheses."""
    tokens = v.tokens
    edits: list[tuple[int, int, bytes]] = []
    for i in range(1, len(tokens) - 1):
        t = tokens[i]
        before, word = tokens[i - 1], tokens[i + 1]
        if (
            t.kind == Tok.PUNCT
            and t.text == "."
            and word.kind == Tok.WORD
            and word.start == t.end
            and before.end == t.start
            and before.kind in (Tok.WORD, Tok.IDENT)
            and word.text in _GLOT_KEYWORDS
            and not punct_at(tokens, i + 2, "(")
        ):
            edits.append((v.start(word), v.end(word), b"`" + v.bytes_of(word) + b"`"))
        elif (
            t.kind == Tok.WORD
            and t.text in _COLUMN_TYPES
            and word_at(tokens, i - 1) == "AS"
            and punct_at(tokens, i + 1, ")")
        ):
            edits.append((v.start(t), v.end(t), _COLUMN_TYPES[t.text]))
    if kind == "SELECT" and word_at(tokens, 0) == "VALUES":
        first, last = v.start(tokens[0]), v.end(tokens[-1])
        edits.append((first, first, b"("))
        edits.append((last, last, b")"))
    return edits


def _missing_part(root: exp.Expr) -> str | None:
    if isinstance(root, exp.Insert) and not isinstance(root.args.get("expression"), exp.Expr):
        return "no VALUES, SET or SELECT"
    if isinstance(root, exp.Update) and not root.expressions:
        return "no SET"
    if isinstance(root, (exp.Update, exp.Delete)) and not isinstance(root.this, exp.Expr):
        return "no table"
    return None


def _into_clauses(v: _View) -> list[tuple[int, int, bytes]]:
    """Edits that blank a SELECT's INTO clauses, which sqlglot cannot read."""
    tokens = v.tokens
    edits: list[tuple[int, int, bytes]] = []
    i = 0
    n = len(tokens)
    while i < n:
        if word_at(tokens, i) != "INTO":
            i += 1
            continue
        depth = 0
        j = i + 1
        while j < n:
            t = tokens[j]
            if t.kind == Tok.PUNCT:
                if t.text == "(":
                    depth += 1
                elif t.text == ")":
                    if depth == 0:
                        break
                    depth -= 1
            elif depth == 0 and t.kind == Tok.WORD and t.text in _AFTER_INTO:
                break
            j += 1
        edits.append((v.start(tokens[i]), v.end(tokens[j - 1]), b" "))
        i = j
    return edits


def _table_refs(node: object) -> list[exp.Expression]:
    """A FROM-like item and the items joined to it (tables or derived tables)."""
    if not isinstance(node, exp.Expression):
        return []
    refs = [node]
    for join in node.args.get("joins") or ():
        if isinstance(join, exp.Join) and join.this is not None:
            refs.append(join.this)
    return refs


def _alias_map(refs: Sequence[exp.Expression]) -> dict[str, exp.Table]:
    names: dict[str, exp.Table] = {}
    for ref in refs:
        if isinstance(ref, exp.Table):
            full = _table_name(ref)
            names.setdefault(full, ref)
            names.setdefault(ref.name.lower(), ref)
            if ref.alias:
                names[ref.alias.lower()] = ref
    return names


def _case_twins(refs: Sequence[exp.Expression]) -> str | None:
    """Why names of the statement's tables that differ only in case are refused.

    MariaDB compares table names and aliases case-sensitively when lower_case_table_names
    is 0 (`UPDATE w AS X, pub AS x SET X.c = 1` writes w); the gateway reads names without
    case and would take the one for the other."""
    seen: dict[str, str] = {}
    for ref in refs:
        if not isinstance(ref, (exp.Table, exp.Subquery)):
            continue
        names = [ref.alias] if ref.alias else []
        if isinstance(ref, exp.Table) and not ref.alias:
            names.append(ref.name)
        for name in names:
            if seen.setdefault(name.lower(), name) != name:
                return (
                    f"the table names or aliases {seen[name.lower()]} and {name} differ only "
                    "in case; name them differently"
                )
    return None


def _ref_names(refs: Sequence[exp.Expression]) -> set[str]:
    names: set[str] = set()
    for ref in refs:
        if isinstance(ref, exp.Table):
            names.add(ref.name.lower())
        alias = ref.alias if isinstance(ref, (exp.Table, exp.Subquery)) else ""
        if alias:
            names.add(alias.lower())
    return names


def _update_targets(
    root: exp.Update,
) -> tuple[list[exp.Expression], list[exp.Table], list[exp.Expression]]:
    refs = _table_refs(root.this)
    extra = root.args.get("from_")
    if isinstance(extra, exp.From):
        refs.extend(_table_refs(extra.this))
    tables = [r for r in refs if isinstance(r, exp.Table)]
    aliases = _alias_map(refs)
    targets: dict[int, exp.Table] = {}
    for assignment in root.expressions:
        column = assignment.this if isinstance(assignment, exp.EQ) else None
        qualifier = column.table.lower() if isinstance(column, exp.Column) else ""
        found = aliases.get(qualifier) if qualifier else None
        if found is not None:
            targets[id(found)] = found
        elif qualifier or len(tables) != 1:
            # Unknown or unqualified in a multi-table UPDATE: any table may be written.
            targets.update((id(t), t) for t in tables)
        else:
            targets[id(tables[0])] = tables[0]
    chosen = list(targets.values()) or tables[:1]
    return refs, chosen, list(chosen)


def _delete_targets(
    root: exp.Delete,
) -> tuple[list[exp.Expression], list[exp.Table], list[exp.Expression]]:
    using = root.args.get("using")
    listed = root.args.get("tables")
    if using:
        # DELETE FROM t1, t2 USING <table references>
        references = _table_refs(root.this)
        refs: list[exp.Expression] = []
        for item in using:
            refs.extend(_table_refs(item))
    elif listed:
        # DELETE t1, t2 FROM <table references>
        references = list(listed)
        refs = _table_refs(root.this)
    else:
        references = []
        refs = _table_refs(root.this)
    if not references:
        first = refs[0] if refs else None
        targets = [first] if isinstance(first, exp.Table) else []
        return refs, targets, list(targets)
    aliases = _alias_map(refs)
    targets = []
    excluded: list[exp.Expression] = list(references)
    for ref in references:
        if not isinstance(ref, exp.Table):
            continue
        found = aliases.get(_table_name(ref)) or aliases.get(ref.name.lower())
        if found is None:
            targets.append(ref)
        else:
            targets.append(found)
            excluded.append(found)
    return refs, targets, excluded


# -- WHERE always true ----------------------------------------------------------------------
#
# The condition is read as a boolean formula over atoms. An atom that depends on the row
# (a column outside subqueries, or a subquery correlated to the statement's tables) is a
# free variable; an atom that does not (literals, variables, functions of them, an
# uncorrelated subquery) is a constant the gateway does not evaluate. The WHERE is
# "always true" when some value of the constants makes the formula true for every value
# of the row atoms (two-valued: a NULL row is not special-cased, which only says "true"
# more often). Atoms are keyed with their literals' values: `id = 5 OR id <> 5` is true,
# `id = id` is true, `x IS NULL OR x IS NOT NULL` is true, `1`, `TRUE`, `2 > 1`, `NOT 0`
# may be. Tests of one expression against literals (`id <> 1`, `id > 5`, `id IN (1, 2)`,
# `id BETWEEN 1 AND 9`) are not independent: they are evaluated together at the values
# that tell them apart (each literal, and values below, between and above them), so
# `id <> 1 OR id <> 2` and `id > 5 OR id < 6` are true. Literals whose order or equality
# the gateway cannot be sure of (strings that may be equal under a collation or as
# numbers, hex, bit and N'' literals, placeholders) are only compared as "some other
# value"; compared by order, the WHERE is taken for always true.
#
# A verdict that relies on literal values is not literal-independent: the shape turns every
# literal into '?', and `id = 1 OR id <> 1` shares the shape of `id = 1 OR id <> 2`.

_LITERALS = (
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Placeholder,
    exp.HexString,
    exp.BitString,
    exp.National,
)
_SUBQUERIES = (exp.Subquery, exp.Query, exp.Exists)
_MAX_ATOMS = 12
_MAX_EVALUATIONS = 200_000  # formula nodes times assignments: beyond it, say "may be true"

# Constants of the server that sqlglot reads as columns when written without parentheses
# (CURRENT_DATE, CURRENT_USER, LOCALTIME are read as functions already).
_CONSTANT_NAMES = frozenset({"utc_date", "utc_time", "utc_timestamp", "current_role"})


def _constant_name(node: exp.Column) -> bool:
    ident = node.this
    return (
        not node.table
        and isinstance(ident, exp.Identifier)
        and not ident.quoted
        and ident.name.lower() in _CONSTANT_NAMES
    )


class _F(NamedTuple):
    """A boolean formula: "a" (atom), "!", "&" and "|" (n-ary), "^", "T" or "F"."""

    op: str
    atom: int = -1
    args: tuple[_F, ...] = ()


_TRUE = _F("T")
_FALSE = _F("F")
_COMPARISONS = (exp.EQ, exp.NullSafeEQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)
_ORDERED = ("gt", "lt", "between")
# a op literal as (test, negated); literal op a flips the order
_TESTS: dict[type, tuple[str, bool]] = {
    exp.EQ: ("eq", False),
    exp.NullSafeEQ: ("eq", False),
    exp.NEQ: ("eq", True),
    exp.GT: ("gt", False),
    exp.LT: ("lt", False),
    exp.GTE: ("lt", True),
    exp.LTE: ("gt", True),
}
_FLIPPED = {"eq": "eq", "gt": "lt", "lt": "gt"}
_NUMBER_PREFIX = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class _Value(NamedTuple):
    """A literal as the analysis compares it: sure is False for a value whose equality
    to others depends on the collation or the column's type."""

    kind: str  # "n" number, "s" string, "u" unsure (placeholder, hex, bit, N'', NULL)
    value: object


def _value(node: exp.Expr, unsure: int) -> _Value | None:
    """The value of a literal operand, None when node is not a literal."""
    if isinstance(node, exp.Paren):
        return _value(node.this, unsure)
    negative = isinstance(node, exp.Neg)
    if negative:
        node = node.this
    if isinstance(node, exp.Literal):
        if node.is_string:
            return None if negative else _Value("s", node.this)
        try:
            number = Decimal(node.this)
        except ArithmeticError:
            return _Value("u", unsure)
        return _Value("n", -number if negative else number)
    if isinstance(node, _LITERALS) and not isinstance(node, exp.Boolean) and not negative:
        return _Value("u", unsure)
    return None


# POSIX classes inside a bracket expression, which PCRE2 (the server's) reads and Python
# does not: each stands for characters, and whether a pattern matches the empty string
# depends only on where characters are needed, not on which
_POSIX_WORD_BOUNDARY = re.compile(r"\[\[:[<>]:\]\]")
_POSIX_CLASS = re.compile(r"\[[:=.]\^?\w+[:=.]\]")


def _only_percent(pattern: str) -> bool:
    """Whether a LIKE pattern is only '%', which matches every value but NULL."""
    return bool(pattern) and not pattern.strip("%")


def _matches_empty(pattern: str) -> bool | None:
    """Whether a REGEXP pattern matches the empty string, so every value but NULL (None:
    the gateway cannot tell, a construct its reading of PCRE2 lacks). Read with and
    without extended syntax: a session's ``default_regex_flags`` may ask for it.

    The pattern is parsed, never run: a search, even of the empty string, takes the
    product of nested counts (``(?:(?:(?:a?){1000}){1000}){1000}\\b``, a billion
    steps) or doubles with each empty alternative (``(?:|){40}(?!)``), and held the event
    loop for minutes. Parsing and the walk of its tree take a time linear in the pattern."""
    pattern = _POSIX_WORD_BOUNDARY.sub(r"\\b", pattern)
    pattern = _POSIX_CLASS.sub("a", pattern)
    found: bool | None = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # extended syntax reads only blanks and '#' otherwise
            for flags in (0, re.X) if _EXTENDED_SYNTAX.search(pattern) else (0,):
                empty = _empty_at_start(_sre_parser.parse(pattern, flags))
                if empty:
                    return True
                if empty is None:
                    found = None
    except (re.error, RecursionError, OverflowError, ValueError):
        return None
    return found


_EXTENDED_SYNTAX = re.compile(r"[\s#]")
_MATCH_ONE = frozenset(
    {
        _sre.LITERAL,
        _sre.NOT_LITERAL,
        _sre.ANY,
        _sre.IN,
        _sre.RANGE,
        _sre.CATEGORY,
    }
)
_AT_EMPTY = frozenset(  # anchors that hold at the one position of an empty string
    {
        _sre.AT_BEGINNING,
        _sre.AT_BEGINNING_LINE,
        _sre.AT_BEGINNING_STRING,
        _sre.AT_END,
        _sre.AT_END_LINE,
        _sre.AT_END_STRING,
        _sre.AT_NON_BOUNDARY,  # PCRE2: no word character on either side of it
        _sre.AT_LOC_NON_BOUNDARY,
        _sre.AT_UNI_NON_BOUNDARY,
    }
)
_REPEATS = frozenset({_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT})


def _empty_at_start(items: Iterable[tuple[Any, Any]]) -> bool | None:
    """Whether a parsed pattern (``re._parser``'s items) matches at the one position of
    the empty string, where every item matches without taking a character or not at
    all (None: not known, a back-reference or a construct not read here)."""
    found: bool | None = True
    for op, arg in items:
        if op in _MATCH_ONE:
            return False  # takes a character
        empty: bool | None
        if op is _sre.AT:
            empty = arg in _AT_EMPTY
        elif op is _sre.SUBPATTERN:
            empty = _empty_at_start(arg[-1])
        elif op is _sre.ATOMIC_GROUP:
            empty = _empty_at_start(arg)
        elif op is _sre.BRANCH:
            branches = [_empty_at_start(b) for b in arg[1]]
            empty = True if True in branches else None if None in branches else False
        elif op in _REPEATS:
            low, _, sub = arg
            empty = True if low == 0 else _empty_at_start(sub)
        elif op is _sre.ASSERT or op is _sre.ASSERT_NOT:
            direction, sub = arg
            if direction < 0 and sub.getwidth()[1] > 0:
                empty = False  # looks behind at a character
            else:
                empty = _empty_at_start(sub)
            if op is _sre.ASSERT_NOT and empty is not None:
                empty = not empty
        else:  # GROUPREF, GROUPREF_EXISTS, ...
            empty = None
        if empty is False:
            return False
        if empty is None:
            found = None
    return found


def _as_number(v: _Value) -> Decimal | None:
    """The number a value compares as with a numeric column (None: not sure)."""
    if v.kind == "n":
        assert isinstance(v.value, Decimal)
        return v.value
    if v.kind != "s":
        return None
    assert isinstance(v.value, str)
    m = _NUMBER_PREFIX.match(v.value)
    try:
        return Decimal(m.group(0).strip()) if m else Decimal(0)
    except ArithmeticError:
        return None


def _as_text(v: _Value) -> str | None:
    """The text a value compares as with a string column under any usual collation."""
    if v.kind == "n":
        return str(v.value)
    if v.kind != "s":
        return None
    assert isinstance(v.value, str)
    if not all(" " <= c <= "~" for c in v.value):
        return None  # accents, ligatures, ignorable characters: collation-dependent
    return v.value.casefold().rstrip(" ")


def _pattern(v: _Value) -> str | None:
    """A string without letters, digits as 9: strings of one pattern order alike in every
    collation (dates, times, numbers of one format)."""
    text = v.value
    if v.kind != "s" or not isinstance(text, str) or _as_text(v) is None:
        return None
    if any(c.isalpha() for c in text):
        return None
    return re.sub(r"\d", "9", text)


_MAX_POINTS = 200_000  # tests of one expression times the values that tell them apart


def _points(tests: Sequence[tuple[int, str, tuple[_Value, ...]]]) -> list[int] | None:
    """The atoms true at each value that tells apart tests (atom, test, literals) of one
    expression, as bit masks (None: their order is unknown, or too many of them), in a
    time linear in their literals and values."""
    values = sorted({v for _, _, vs in tests for v in vs}, key=lambda v: (v.kind, str(v.value)))
    kinds = {v.kind for v in values}
    if not any(test in _ORDERED for _, test, _ in tests):
        # equality only: some value equal to none of the literals, and each literal whose
        # equal is different from every other literal both as a number (a numeric column)
        # and as a string (a string column, case-insensitive); unsure ones have none
        masks = [0]
        numbers = [_as_number(v) for v in values]
        texts = [_as_text(v) for v in values]
        if None in numbers or None in texts:
            return masks
        at: dict[_Value, int] = {}
        for atom, _, vs in tests:
            for v in vs:
                at[v] = at.get(v, 0) | 1 << atom
        once_n, once_t = Counter(numbers), Counter(texts)
        for v, number, text in zip(values, numbers, texts, strict=True):
            if once_n[number] == 1 and once_t[text] == 1:
                masks.append(at[v])
        return masks
    interior = True  # values strictly between two literals exist
    if kinds == {"n"}:
        values.sort(key=lambda v: v.value)  # type: ignore[arg-type, return-value]
    elif kinds == {"s"} and len(patterns := {_pattern(v) for v in values}) == 1:
        if None in patterns:
            return None
        values.sort(key=lambda v: str(v.value))
        interior = False  # '2026-01-01' < d < '2026-01-02' has no DATE
    else:
        return None
    positions = [0, 2 * len(values)]
    for i, v in enumerate(values):
        positions.append(2 * i + 1)
        if i and interior:
            low, high = values[i - 1].value, v.value
            assert isinstance(low, Decimal) and isinstance(high, Decimal)
            if low.to_integral_value(ROUND_FLOOR) + 1 < high:  # an integer between
                positions.append(2 * i)
    if kinds == {"s"} and values[0].value == "":
        positions.remove(0)  # no string is below ''
    if len(positions) * len(tests) > _MAX_POINTS:
        return None
    # One pass over the positions in order, each test setting its atom where its range
    # of positions starts and clearing it where the range ends, and one over the items
    # of the IN lists: a test per position, and an IN list's item per position, took
    # their products (a > 0 OR a IN (...) OR ..., 120 lists of 10: 90 ms of the loop).
    index = {v: 2 * i + 1 for i, v in enumerate(values)}
    ordered = sorted(positions)
    slot = {p: k for k, p in enumerate(ordered)}
    starts = [0] * (len(ordered) + 1)
    ends = [0] * (len(ordered) + 1)
    points = [0] * len(ordered)
    for atom, test, vs in tests:
        bit = 1 << atom
        if test == "eq":
            for v in vs:
                points[slot[index[v]]] |= bit
            continue
        if test == "gt":
            low, high = bisect_right(ordered, index[vs[0]]), len(ordered)
        elif test == "lt":
            low, high = 0, bisect_left(ordered, index[vs[0]])
        else:  # between
            low, high = bisect_left(ordered, index[vs[0]]), bisect_right(ordered, index[vs[1]])
        if low < high:
            starts[low] |= bit
            ends[high] |= bit
    on = 0
    for k in range(len(ordered)):
        on = (on & ~ends[k]) | starts[k]
        points[k] |= on
    return [points[slot[p]] for p in positions]


@dataclass(slots=True)
class _Operand:
    """What ``_Atoms.operand`` knows of an operand its stand-in stands for."""

    stand_in: exp.Expr  # kept alive while its id is a key of _Atoms.operands
    node: exp.Expr
    dependence: str | None = None
    keys: dict[bool, tuple[object, bool]] = field(default_factory=dict)


class _Atoms:
    def __init__(self, outer: set[str], single: bool, bound: bool = False) -> None:
        self.outer = outer
        self.single = single
        # a placeholder as a LIKE pattern: with ``bound``, a constant the gateway does not
        # evaluate (as a variable is), which may be '%'; else a value compared as any other
        self.bound = bound
        self.bound_patterns = False  # such a placeholder was met
        self.index: dict[object, int] = {}
        self.row: list[bool] = []  # per atom: depends on the row
        self.literal_dependent = False
        self.abstract = False  # key() with literals as '?'
        self.seen: set[object] = set()  # abstract keys of atoms holding a literal
        self.literal = False  # key() met a literal
        self.unsure = 0
        # tests of one expression against literals: key -> [(atom, test, values)]
        self.tests: dict[object, list[tuple[int, str, tuple[_Value, ...]]]] = {}
        # stand-ins for the operand of an IN list or BETWEEN read as its comparisons, by
        # id: (the stand-in, the operand, its dependence, its keys by self.abstract with
        # whether they met a literal)
        self.operands: dict[int, _Operand] = {}

    def formula(self, node: exp.Expr) -> _F:
        if isinstance(node, exp.Paren):
            return self.formula(node.this)
        if isinstance(node, (exp.And, exp.Or)):
            # A chain of ANDs or ORs is one n-ary node: long chains must not recurse.
            chain = type(node)
            parts: list[_F] = []
            stack: list[exp.Expr] = [node]
            while stack:
                sub = stack.pop()
                if type(sub) is chain:
                    stack.append(sub.expression)
                    stack.append(sub.this)
                else:
                    parts.append(self.formula(sub))
            return _F("&" if chain is exp.And else "|", args=tuple(parts))
        if isinstance(node, exp.Xor) and node.expression is not None:
            return _F("^", args=(self.formula(node.this), self.formula(node.expression)))
        if isinstance(node, exp.Not):
            return _F("!", args=(self.formula(node.this),))
        if isinstance(node, exp.Predicate) and node.args.get("negate") is True:
            # a NOT LIKE b is NOT (a LIKE b): key() does not read "negate"
            return _F("!", args=(self.atom_of(node),))
        return self.atom_of(node)

    def atom_of(self, node: exp.Expr) -> _F:
        dependence = self.dependence(node)
        if dependence != "row":
            if dependence == "literal":
                self.literal_dependent = True
            return self.atom(("const", self.key(node)), False)
        if isinstance(node, _COMPARISONS):
            return self.comparison(node)
        if isinstance(node, exp.Like | exp.Escape):
            found = self.like(node)
            if found is not None:
                return found
        if isinstance(node, exp.RegexpLike):
            found = self.regexp(node)
            if found is not None:
                return found
        if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            self.noted(node)
            return self.atom(("isnull", self.key(node.this)), True)
        if isinstance(node, exp.In) and node.expressions and not node.args.get("query"):
            values = [self.value(x) for x in node.expressions]
            if all(v is not None for v in values):
                return self.test(node.this, "eq", tuple(v for v in values if v is not None))
            # a IN (b, c) is a = b OR a = c: 1 IN (1, id) is true for every row
            operand = self.operand(node.this)
            return _F(
                "|",
                args=tuple(
                    self.atom_of(exp.EQ(this=operand, expression=x.copy()))
                    for x in node.expressions
                ),
            )
        if isinstance(node, exp.Between):
            low, high = self.value(node.args["low"]), self.value(node.args["high"])
            if low is not None and high is not None:
                return self.test(node.this, "between", (low, high))
            # a BETWEEN b AND c is a >= b AND a <= c: id BETWEEN id AND id is id = id
            operand = self.operand(node.this)
            return _F(
                "&",
                args=(
                    self.atom_of(exp.GTE(this=operand, expression=node.args["low"].copy())),
                    self.atom_of(exp.LTE(this=operand, expression=node.args["high"].copy())),
                ),
            )
        self.noted(node)
        return self.atom(self.key(node), True)

    def like(self, node: exp.Like | exp.Escape) -> _F | None:
        """`a LIKE pattern`: a pattern of only '%' matches every value but NULL, as `a = a`
        does (see ``pattern_test``)."""
        like = node.this if isinstance(node, exp.Escape) else node
        if not isinstance(like, exp.Like):
            return None
        return self.pattern_test(node, like.this, like.expression, _only_percent)

    def regexp(self, node: exp.RegexpLike) -> _F | None:
        """`a REGEXP pattern` (RLIKE): a pattern that matches the empty string matches
        every value but NULL, the server searching anywhere in it (see ``pattern_test``)."""
        return self.pattern_test(node, node.this, node.expression, _matches_empty)

    def pattern_test(
        self,
        node: exp.Expr,
        subject: exp.Expr,
        pattern: exp.Expr,
        matches_all: Callable[[str], bool | None],
    ) -> _F | None:
        """A test of ``subject`` against ``pattern`` when the pattern may match every value
        but NULL: true for a literal ``matches_all`` says does (the verdict depends on it,
        so the statement shares no shape with another pattern's), and for a constant the
        gateway does not evaluate (`CONCAT('%', '')`, a variable, a literal
        ``matches_all`` cannot read, a placeholder read ``bound``) as a constant that may
        make it so. NULL matches no row. None: an ordinary test of the row."""
        if self.dependence(subject) != "row":
            return None
        if isinstance(pattern, exp.Introducer):
            pattern = pattern.expression
        if isinstance(pattern, exp.Literal):
            self.literal_dependent = True
            found = matches_all(pattern.this)
            if found is False:
                return None
            if found:
                return _TRUE
        elif isinstance(pattern, exp.Null):
            # matches no row: read as false (Kleene logic is monotone, so a WHERE true for
            # every row with it NULL is true with it false too)
            return _FALSE
        elif isinstance(pattern, exp.Placeholder):
            # a value bound later: compared as any other, or with ``bound`` read as the
            # constant it becomes (its executes are decided with their values, ``bind``)
            self.bound_patterns = True
            if not self.bound:
                return None
        elif self.dependence(pattern) == "row":
            return None  # a column's pattern
        self.noted(node)
        return _F(
            "|",
            args=(self.atom(("const", self.key(pattern)), False), self.atom(self.key(node), True)),
        )

    def value(self, node: exp.Expr | None) -> _Value | None:
        if node is None:
            return None
        self.unsure += 1
        operand = self.operands.get(id(node))
        return _value(node if operand is None else operand.node, self.unsure)

    def operand(self, node: exp.Expr) -> exp.Expr:
        """A stand-in for ``node`` in each comparison an IN list or BETWEEN is read as:
        its key and dependence are worked out once, not once per item. (A copy per item
        made reading ``(a + b + ...) IN (c, d, ...)`` take the product of their lengths:
        seconds of the event loop for a few kilobytes of SQL.)"""
        stand_in = exp.Var(this="")
        self.operands[id(stand_in)] = _Operand(stand_in, node)
        return stand_in

    def comparison(self, node: exp.Expr) -> _F:
        test, negated = _TESTS[type(node)]
        for this, other, name in (
            (node.this, node.expression, test),
            (node.expression, node.this, _FLIPPED[test]),
        ):
            v = self.value(other)
            if v is not None and self.dependence(this) == "row":
                f = self.test(this, name, (v,))
                return _F("!", args=(f,)) if negated else f
        self.literal = False
        a = self.key(node.this)
        b = self.key(node.expression)
        if self.literal:  # id + 1 = id + 1 is true, id + 2 = id + 1 is not
            self.abstract = True
            try:
                if self.key(node.this) == self.key(node.expression):
                    self.literal_dependent = True
            finally:
                self.abstract = False
        if a == b:
            if isinstance(node, (exp.EQ, exp.NullSafeEQ, exp.GTE, exp.LTE)):
                return _TRUE
            return _FALSE
        self.noted(node)
        if isinstance(node, (exp.EQ, exp.NullSafeEQ, exp.NEQ)):
            eq = self.atom(("=", frozenset((a, b))), True)
            return _F("!", args=(eq,)) if isinstance(node, exp.NEQ) else eq
        # a > b is the atom; a < b is b > a; a <= b is not a > b; a >= b is not b > a.
        if isinstance(node, exp.GT):
            return self.atom((">", a, b), True)
        if isinstance(node, exp.LT):
            return self.atom((">", b, a), True)
        if isinstance(node, exp.LTE):
            return _F("!", args=(self.atom((">", a, b), True),))
        return _F("!", args=(self.atom((">", b, a), True),))

    def test(self, subject: exp.Expr, name: str, values: tuple[_Value, ...]) -> _F:
        """subject <name> values: an atom evaluated with the other tests of subject."""
        key = self.key(subject)
        self.noted(subject, test=True)
        f = self.atom(("test", key, name, values), True)
        self.tests.setdefault(key, []).append((f.atom, name, values))
        return f

    def noted(self, node: exp.Expr, test: bool = False) -> None:
        """Marks the analysis literal-dependent when an atom holding a literal is met twice
        with literals abstracted: its verdict may change with their values. Every test
        against a literal holds one: two tests of one expression are evaluated together."""
        self.abstract, self.literal = True, test
        try:
            key = ("test", self.key(node)) if test else self.key(node)
        finally:
            self.abstract = False
        if self.literal:
            if key in self.seen:
                self.literal_dependent = True
            self.seen.add(key)

    def atom(self, key: object, row: bool) -> _F:
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = len(self.row)
            self.row.append(row)
        return _F("a", i)

    def key(self, node: exp.Expr) -> object:
        """A structural key, literals by value (or as '?' while self.abstract)."""
        operand = self.operands.get(id(node)) if self.operands else None
        if operand is not None:  # the operand's, worked out once in each mode
            known = operand.keys.get(self.abstract)
            if known is None:
                met, self.literal = self.literal, False
                known = operand.keys[self.abstract] = (self.key(operand.node), self.literal)
                self.literal = met
            if known[1]:
                self.literal = True
            return known[0]
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, _LITERALS):
            self.literal = True
            if self.abstract:
                return "?"
            if isinstance(node, exp.Placeholder):
                self.unsure += 1
                return ("?", self.unsure)  # each placeholder its own value
            return (type(node).__name__, str(node.this), node.args.get("is_string"))
        if isinstance(node, exp.Column):
            table = node.table.lower()
            if self.single and table in self.outer:
                table = ""
            return ("col", table, node.name.lower())
        if isinstance(node, exp.Identifier):
            return ("id", node.name.lower())
        parts: list[object] = [type(node).__name__]
        for name, value in node.args.items():
            if isinstance(value, exp.Expression):
                parts.append((name, self.key(value)))
            elif isinstance(value, list):
                keys = tuple(self.key(x) for x in value if isinstance(x, exp.Expression))
                parts.append((name, keys))
            elif value is not None and value is not False and name != "negate":
                parts.append((name, str(value)))
        return tuple(parts)

    def dependence(self, node: exp.Expr) -> str:
        """ "row", "literal" (row-independent, built with literals) or "other"."""
        literal = False
        stack = [node]
        while stack:
            sub = stack.pop()
            operand = self.operands.get(id(sub)) if self.operands else None
            if operand is not None:  # the operand's, worked out once
                if operand.dependence is None:
                    operand.dependence = self.dependence(operand.node)
                if operand.dependence == "row":
                    return "row"
                literal = literal or operand.dependence == "literal"
                continue
            if isinstance(sub, exp.Column):
                if _constant_name(sub):
                    continue
                return "row"
            if isinstance(sub, _SUBQUERIES):
                if self.correlated(sub):
                    return "row"
                continue
            if isinstance(sub, _LITERALS):
                literal = True
                continue
            for value in sub.args.values():
                if isinstance(value, exp.Expr):
                    stack.append(value)
                elif isinstance(value, list):
                    stack.extend(x for x in value if isinstance(x, exp.Expr))
        return "literal" if literal else "other"

    def correlated(self, query: exp.Expr) -> bool:
        inner = _ref_names(list(query.find_all(exp.Table)))
        for column in query.find_all(exp.Column):
            table = column.table.lower()
            if table and table in self.outer and table not in inner:
                return True
        return False

    def groups(self) -> list[tuple[list[int], list[int]]] | None:
        """Per expression tested against two or more literal tests: (its atoms, the atoms
        true at each value that tells the tests apart as a bit mask). None: unknown order."""
        out: list[tuple[list[int], list[int]]] = []
        for found in self.tests.values():
            unique = {atom: (atom, name, values) for atom, name, values in found}
            if len(unique) < 2:
                continue
            masks = _points(list(unique.values()))
            if masks is None:
                return None
            atoms = list(unique)
            out.append((atoms, masks))
        return out


def _evaluate(f: _F, bits: int) -> bool:
    op = f.op
    if op == "a":
        return bool(bits >> f.atom & 1)
    if op == "!":
        return not _evaluate(f.args[0], bits)
    if op == "&":
        return all(_evaluate(sub, bits) for sub in f.args)
    if op == "|":
        return any(_evaluate(sub, bits) for sub in f.args)
    if op == "^":
        return _evaluate(f.args[0], bits) != _evaluate(f.args[1], bits)
    return op == "T"


def _atoms_of(f: _F, out: set[int]) -> set[int]:
    if f.op == "a":
        out.add(f.atom)
    for sub in f.args:
        _atoms_of(sub, out)
    return out


def _size(f: _F) -> int:
    return 1 + sum(_size(sub) for sub in f.args)


def _bits(atoms: Sequence[int], mask: int) -> int:
    """The assignment that sets atoms[k] for each bit k of mask."""
    bits = 0
    for k, atom in enumerate(atoms):
        if mask >> k & 1:
            bits |= 1 << atom
    return bits


def _rows(
    free: Sequence[int], groups: Sequence[Sequence[int]], masks: Iterable[int]
) -> Iterator[int]:
    """Every row assignment: the free atoms each way, each group at each of its values,
    made as it is tried (a step each: made ahead, the 4,096 rows of 12 atoms of each of 40
    statements that stopped at the first took 0.1 s)."""
    if len(free) <= _MAX_ATOMS:  # each half's assignments made once, looked up after
        half = len(free) // 2
        low = [_bits(free[:half], m) for m in range(1 << half)]
        high = [_bits(free[half:], m) for m in range(1 << (len(free) - half))]
        cut = (1 << half) - 1
        assigned = (low[m & cut] | high[m >> half] for m in masks)
    else:  # a few masks (all false, all true) of many atoms
        assigned = (_bits(free, m) for m in masks)
    if not groups:
        yield from assigned
        return
    for free_bits in assigned:
        for chosen in product(*groups):
            r = free_bits
            for g in chosen:
                r |= g
            yield r


class _TooComplex(Exception):
    """The analysis of the WHERE clauses of one text took more than its steps."""


class _Steps:
    """What the analysis of the WHERE clauses of one text may still do, in formula nodes
    evaluated (each part of a conjunction, each statement of the text and each reading
    of a placeholder draw from the same ``_MAX_EVALUATIONS``): past it, the statement is
    refused as too complex (``_TooComplex``). Without it each part of `(...) AND (...)
    AND ...` had its own, and 60 such parts held the event loop for 0.7 s."""

    __slots__ = ("left",)

    def __init__(self, left: int = _MAX_EVALUATIONS) -> None:
        self.left = left

    def spend(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise _TooComplex


def _too_complex(kind: str) -> str:
    return (
        f"the WHERE clause of this {kind} is too complex for the gateway to tell, within "
        f"{_MAX_EVALUATIONS:,} steps, whether it may be true for every row: simplify it "
        "(fewer tests joined by OR, XOR and NOT, one IN list per column rather than many "
        "tests of it), or send it as several statements"
    )


def _may_be_always_true(
    f: _F, row: list[bool], groups: Sequence[tuple[list[int], list[int]]], steps: _Steps
) -> bool:
    """Some value of the constant atoms makes f true for every value of the row atoms.

    Exhaustive while the truth table is small; beyond that a conjunction is split, and
    anything else is "may be true" unless all-false or all-true free row atoms (the tests
    of one expression at one of its values) falsify it for every value of the constants.
    Each formula node evaluated is a step drawn from ``steps``."""
    used = _atoms_of(f, set())
    consts = sorted(i for i in used if not row[i])
    grouped: set[int] = set()
    values: list[list[int]] = []
    for atoms, masks in groups:
        if used.intersection(atoms):
            grouped.update(atoms)
            values.append(masks)
    free = sorted(i for i in used if row[i] and i not in grouped)
    size = _size(f)
    count = 1 << len(free)
    for masks in values:
        count *= len(masks)
    candidates: list[int] | None = None
    if (
        len(free) <= _MAX_ATOMS
        and len(consts) <= _MAX_ATOMS
        and ((size * count) << len(consts)) <= _MAX_EVALUATIONS
    ):
        pass  # every row, made as tried
    elif f.op == "&":  # a conjunction is always true only if each part is
        return all(_may_be_always_true(part, row, groups, steps) for part in f.args)
    elif len(consts) <= _MAX_ATOMS and (size << (len(consts) + 1)) <= _MAX_EVALUATIONS:
        # each group at each of its values, the others at their first
        candidates = list(_rows(free, [m[:1] for m in values], (0, (1 << len(free)) - 1)))
        for masks in values:
            candidates += [r & ~masks[0] | m for r in candidates[:2] for m in masks[1:]]
    else:
        return True
    for c in range(1 << len(consts)):
        base = _bits(consts, c)
        rows = _rows(free, values, range(1 << len(free))) if candidates is None else candidates
        for r in rows:
            steps.spend(size)
            if not _evaluate(f, base | r):
                break
        else:
            return True
    return False


# Not LIKE: a pattern of only '%' is true for every row (see _Atoms.atom_of).
_SIMPLE_TESTS = (*_COMPARISONS, exp.In, exp.Between)


def _simple_conjunction(cond: exp.Expr) -> bool:
    """cond is `column <op> literal [AND ...]`: a conjunction of free row atoms, which
    is never always true (the common WHERE, decided without the general analysis)."""
    stack = [cond]
    while stack:
        node = stack.pop()
        if isinstance(node, exp.And):
            stack.append(node.this)
            stack.append(node.expression)
            continue
        if not isinstance(node, _SIMPLE_TESTS) or not isinstance(node.this, exp.Column):
            return False
        if _constant_name(node.this):
            return False
        for name, value in node.args.items():
            if name == "this":
                continue
            values = value if isinstance(value, list) else [value]
            if not all(v is None or isinstance(v, (*_LITERALS, bool)) for v in values):
                return False
    return True


_BOOLEAN = (exp.Predicate, exp.Connector, exp.Not)


def _misread(cond: exp.Expr) -> str | None:
    """Why the parser's reading of cond may not be the server's, None when it is.

    sqlglot puts = <=> <> below < <= > >= and reads BETWEEN, LIKE and IN chains its own
    way; MariaDB gives the comparisons one level, left to right (`id = 1 <= 1` is
    (id = 1) <= 1 there, id = (1 <= 1) here). A test of the result of another test is
    refused, written with parentheses or not (IS TRUE, IS NULL of a comparison too)."""
    for node in cond.walk():
        if not isinstance(node, exp.Predicate) or isinstance(node, exp.Exists):
            continue
        for value in node.args.values():
            for operand in value if isinstance(value, list) else [value]:
                while isinstance(operand, exp.Paren):
                    operand = operand.this
                if isinstance(operand, _BOOLEAN):
                    return (
                        "a comparison, IS, LIKE, IN or BETWEEN applied to the result of "
                        "another test, as in a = b < c or (a = 1) IS TRUE, whose reading "
                        "differs between the parser and the server: compare columns with "
                        "values"
                    )
    return None


def _where_analysis(
    cond: exp.Expr, outer: set[str], single: bool, steps: _Steps
) -> tuple[bool, bool, str | None, bool]:
    """(the WHERE may be true for every row, it holds a predicate built from literals,
    why the parser may misread it, values bound to its placeholders may make it true for
    every row where it is not as written). Only a WHERE with a placeholder as a LIKE
    pattern is read a second time for the last: the others cost nothing more."""
    if _simple_conjunction(cond):
        return False, False, None, False
    atoms = _Atoms(outer, single)
    try:
        misread = _misread(cond)
        if misread is not None:
            return True, True, misread, False
        formula = atoms.formula(cond)
        groups = atoms.groups()
        if groups is None:  # tests of unknown order: say true
            return True, True, None, False
        always = _may_be_always_true(formula, atoms.row, groups, steps)
        bindable = False
        if not always and atoms.bound_patterns:
            bound = _Atoms(outer, single, bound=True)
            formula = bound.formula(cond)
            groups = bound.groups()
            bindable = groups is None or _may_be_always_true(formula, bound.row, groups, steps)
        return always, atoms.literal_dependent, None, bindable
    except RecursionError:
        return True, True, None, False


# -- values bound to a prepared statement ---------------------------------------------------

_UNKNOWN_VALUE = b" @sqlgate_unknown_%d "  # a constant the analysis does not evaluate


def sql_string(value: str, mode: LexMode) -> str:
    """``value`` as a string literal that reads as it in ``mode``."""
    text = value.replace("'", "''")
    if not mode.no_backslash_escapes:
        text = text.replace("\\", "\\\\")
    return "'" + text + "'"


def bind(
    sql: bytes,
    mode: LexMode,
    values: Sequence[str | None],
    backslash_unknown: bool = False,
    ansi_unknown: bool = True,
) -> Classification:
    """A prepared text of one statement (``where_bindable``) as it is decided with
    ``values`` bound to its placeholders, in order: each an SQL literal as it reads in
    ``mode`` (``sql_string`` for a string; '?' leaves the placeholder), None for a value
    the gateway does not know (read as a constant it does not evaluate, which may be
    '%'), as are those past the end. Read as ``classify_uncertain`` reads a text; one
    that does not read as one statement comes back with its ``problem``."""
    try:
        params = [t for t in tokenize(sql, mode) if t.kind is Tok.PARAM]
    except LexError as err:
        return unreadable(sql, str(err))
    out = bytearray()
    kept = 0
    for k, token in enumerate(params):
        value = values[k] if k < len(values) else None
        out += sql[kept : token.start]
        if value is None:
            out += _UNKNOWN_VALUE % (k + 1)
        else:
            out += b" " + value.encode("utf-8", "surrogateescape") + b" "
        kept = token.end
    out += sql[kept:]
    found = classify_uncertain(bytes(out), mode, ansi_unknown, backslash_unknown)
    if len(found) != 1:
        return unreadable(sql, f"the text holds {len(found)} statements, not one")
    return found[0]


def with_bound(c: Classification, values: str) -> Classification:
    """``c`` (from ``bind``) with ``values``, the bound values as a refusal names them, on
    each statement it runs whose WHERE they make true for every row."""
    inner = None if c.inner is None else with_bound(c.inner, values)
    return replace(c, inner=inner, where_bound=values if c.where_always_true else None)


def _chain(c: Classification | None) -> Iterator[Classification]:
    """A statement and the statements it runs, at any depth."""
    while c is not None:
        yield c
        c = c.inner


def shown_values(shown: Sequence[str], values: Sequence[str | None]) -> str:
    """Bound values as a refusal names them: those of only '%' and those the gateway
    does not read, else all of them (equal patterns may match every row together)."""
    named = [
        f"{text} ({_why_named(value)})"
        for text, value in zip(shown, values, strict=True)
        if value is None or is_percent_only(value)
    ]
    return ", ".join(named or shown or ["no values"])


def is_percent_only(literal: str) -> bool:
    """Whether an SQL literal is a string of only '%'."""
    return len(literal) > 2 and literal[0] == literal[-1] == "'" and not literal[1:-1].strip("%")


def _why_named(value: str | None) -> str:
    return "a value the gateway does not read" if value is None else "a pattern of only '%'"


def using_values(tokens: Sequence[Token], i: int, mode: LexMode) -> list[str | None]:
    """The values of the expressions of ``EXECUTE ... USING`` from ``tokens[i]`` (after
    USING) to the end, as ``bind`` takes them for a text read in ``mode``: a string,
    number, hex literal, NULL or placeholder as such, anything else (a variable, an
    expression, a literal with an introducer) as not known."""
    return [_using_value(expr, mode) for expr in _using_expressions(tokens, i)]


def using_shown(raw: bytes, tokens: Sequence[Token], i: int, base: int = 0) -> list[str]:
    """The expressions of ``EXECUTE ... USING`` from ``tokens[i]``, as written (``raw``:
    the text the tokens' offsets less ``base`` are in)."""
    return [
        raw[expr[0].start - base : expr[-1].end - base].decode("utf-8", "replace")
        for expr in _using_expressions(tokens, i)
    ]


def _using_expressions(tokens: Sequence[Token], i: int) -> list[Sequence[Token]]:
    """The tokens of each comma-separated expression from ``tokens[i]`` to the end."""
    out: list[Sequence[Token]] = []
    depth = 0
    start = i
    for j in range(i, len(tokens)):
        t = tokens[j]
        if t.kind is not Tok.PUNCT:
            continue
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth -= 1
        elif t.text in (",", ";") and depth == 0:
            out.append(tokens[start:j])
            start = j + 1
            if t.text == ";":
                return out
    out.append(tokens[start:])
    return [expr for expr in out if expr]


def _using_value(expr: Sequence[Token], mode: LexMode) -> str | None:
    if len(expr) != 1:
        return None
    t = expr[0]
    if t.kind is Tok.STRING:
        return sql_string(t.text, mode)
    if t.kind in (Tok.NUMBER, Tok.HEX):
        return t.text
    if t.kind is Tok.PARAM:
        return "?"
    if t.kind is Tok.WORD and t.text == "NULL":
        return "NULL"
    return None


# -- other kinds that need the parser ---------------------------------------------------------


# SHOW forms whose target is a table or view (others name users, routines, engines).
_SHOW_TABLE_TARGETS = frozenset(
    {"COLUMNS", "FIELDS", "INDEX", "INDEXES", "KEYS", "CREATE TABLE", "CREATE VIEW"}
)


_SHOW_WITH = re.compile(_kw(b"WITH"))

# Words of a SHOW that the server reads as another the parser knows (sql_yacc.yy: the
# lexer gives FIELDS the token of COLUMNS and SCHEMA that of DATABASE; KEYS, INDEX and
# INDEXES are one rule, LOCAL and SESSION another; SHOW CREATE SEQUENCE is SHOW CREATE
# TABLE of the sequence's table). Rails sends SHOW FULL FIELDS FROM and SHOW KEYS FROM.
_SHOW_SYNONYMS: dict[str, bytes] = {
    "FIELDS": b"COLUMNS",
    "KEYS": b"INDEX",
    "INDEXES": b"INDEX",
    "LOCAL": b"SESSION",
}
_SHOW_CREATE_SYNONYMS: dict[str, bytes] = {"SCHEMA": b"DATABASE", "SEQUENCE": b"TABLE"}


def _show_edits(v: _View, head: int) -> list[tuple[int, int, bytes]]:
    """The respellings that let the parser read a SHOW whose words it does not know as
    the same SHOW: each word replaced by the one the server reads it as, `IN` after
    COLUMNS or INDEX (the server's FROM or IN) spelled FROM, and the `COUNT(*)` of
    `SHOW COUNT(*) WARNINGS` (a count of what SHOW WARNINGS lists) blanked."""
    tokens = v.tokens
    edits: list[tuple[int, int, bytes]] = []
    i = head
    word = word_at(tokens, i)
    if word == "CREATE":
        i += 1
        synonym = _SHOW_CREATE_SYNONYMS.get(word_at(tokens, i) or "")
        if synonym is not None:
            edits.append((v.start(tokens[i]), v.end(tokens[i]), synonym))
        return edits
    if word == "COUNT" and punct_at(tokens, i + 1, "(") and punct_at(tokens, i + 2, "*"):
        if punct_at(tokens, i + 3, ")") and word_at(tokens, i + 4) in ("WARNINGS", "ERRORS"):
            edits.append((v.start(tokens[i]), v.end(tokens[i + 3]), b" "))
        return edits
    if word == "PROFILE":
        tail = _profile_tail(tokens, i + 1)
        if tail is not None:
            edits.append((v.start(tokens[tail]), v.end(tokens[-1]), b" "))
        return edits
    if word == "FULL":
        i += 1
        word = word_at(tokens, i)
    synonym = _SHOW_SYNONYMS.get(word or "")
    if synonym is not None:
        edits.append((v.start(tokens[i]), v.end(tokens[i]), synonym))
        word = synonym.decode()
    if word in ("COLUMNS", "INDEX") and word_at(tokens, i + 1) == "IN":
        edits.append((v.start(tokens[i + 1]), v.end(tokens[i + 1]), b"FROM"))
    return edits


_PROFILE_TYPES = frozenset({"ALL", "CPU", "IPC", "MEMORY", "SOURCE", "SWAPS"})
_PROFILE_TYPE_PAIRS = {"BLOCK": "IO", "CONTEXT": "SWITCHES", "PAGE": "FAULTS"}


def _profile_tail(tokens: Sequence[Token], i: int) -> int | None:
    """Where the `FOR QUERY n` and `LIMIT n [OFFSET m | , m]` of a SHOW PROFILE start
    (its types, from ``i``, the parser reads), when the statement ends with them written
    with plain numbers as the server's grammar has them; None otherwise. The parser
    wants types before FOR QUERY and OFFSET before LIMIT: it refused `SHOW PROFILE FOR
    QUERY 1`, the profile of the session's own statement that SHOW PROFILES lists."""

    def number(j: int) -> bool:
        return j < len(tokens) and tokens[j].kind is Tok.NUMBER and tokens[j].text.isdigit()

    first = True
    while True:  # the types, each after a comma but the first
        w = word_at(tokens, i)
        if w in _PROFILE_TYPES:
            i += 1
        elif w in _PROFILE_TYPE_PAIRS and word_at(tokens, i + 1) == _PROFILE_TYPE_PAIRS[w]:
            i += 2
        elif first:
            break
        else:
            return None  # a comma with no type after it
        first = False
        if not punct_at(tokens, i, ","):
            break
        i += 1
    tail = j = i
    if word_at(tokens, j) == "FOR" and word_at(tokens, j + 1) == "QUERY" and number(j + 2):
        j += 3
    if word_at(tokens, j) == "LIMIT" and number(j + 1):
        j += 2
        if (word_at(tokens, j) == "OFFSET" or punct_at(tokens, j, ",")) and number(j + 1):
            j += 2
    return tail if tail < j == len(tokens) else None


# What stands before a column name in a condition, never before the CHARSET of a type
# (`CHAR(10) CHARSET latin1`, `CHAR CHARSET latin1`)
_BEFORE_OPERAND = frozenset(
    "WHERE AND OR NOT XOR LIKE IN IS BETWEEN REGEXP RLIKE ( , = <> != < > <= >= <=> && || !".split()
)


def _charset_column_edits(v: _View, head: int) -> list[tuple[int, int, bytes]]:
    """`Charset`, the column of SHOW COLLATION and SHOW CHARACTER SET that their WHERE
    tests (`SHOW COLLATION WHERE Charset = 'utf8mb4'`), quoted in backticks: the server
    reads the unreserved word CHARSET as a name there, the parser only as the keyword
    (CHARSET followed by '(' is the function, and stays as it is)."""
    tokens = v.tokens
    return [
        (v.start(t), v.end(t), b"`" + v.bytes_of(t) + b"`")
        for i in range(head + 1, len(tokens))
        if (t := tokens[i]).kind == Tok.WORD
        and t.text == "CHARSET"
        and tokens[i - 1].kind in (Tok.WORD, Tok.PUNCT)
        and tokens[i - 1].text in _BEFORE_OPERAND
        and not punct_at(tokens, i + 1, "(")
    ]


def _past_account(tokens: Sequence[Token], i: int) -> int | None:
    """Index after an account name at ``i`` (`CURRENT_USER[()]`, `CURRENT_ROLE[()]`,
    `name`, `name@host`, `'name'@'host'`), or None when none starts there."""
    if word_at(tokens, i) in ("CURRENT_USER", "CURRENT_ROLE"):
        i += 1
        if punct_at(tokens, i, "(") and punct_at(tokens, i + 1, ")"):
            i += 2
        return i
    if i >= len(tokens) or tokens[i].kind not in (Tok.WORD, Tok.IDENT, Tok.STRING):
        return None
    i += 1
    if i < len(tokens):
        t = tokens[i]
        if t.kind is Tok.VARIABLE and not t.text.startswith("@@"):
            i += 1  # @host, @'host'
        elif punct_at(tokens, i, "@") and i + 1 < len(tokens):
            if tokens[i + 1].kind in (Tok.WORD, Tok.IDENT, Tok.STRING):
                i += 2
    return i


def _shows_account(tokens: Sequence[Token], head: int) -> str | None:
    """The flag of SHOW GRANTS FOR <account> and SHOW CREATE USER <account>, which show
    the account's password hash, written whole; None for any other SHOW. The parser
    reads neither with a host or CURRENT_USER(), which made them `not-understood`, with
    advice to rewrite them that could not help."""
    if word_at(tokens, head) == "GRANTS" and word_at(tokens, head + 1) == "FOR":
        flag, at = "show_grants", head + 2
    elif word_at(tokens, head) == "CREATE" and word_at(tokens, head + 1) == "USER":
        flag, at = "show_create_user", head + 2
    else:
        return None
    return flag if _past_account(tokens, at) == len(tokens) else None


# What a SHOW the parser cannot read (SHOW USER_STATISTICS, SHOW LOCALES, ...) lists is
# mostly in a table of information_schema, which a SELECT reads.
_SHOW_INSTEAD = (
    ", or SELECT what it lists from information_schema, where most SHOW statements have a "
    "table (SHOW USER_STATISTICS: SELECT * FROM information_schema.USER_STATISTICS)"
)


def _shows_a_plan(tokens: Sequence[Token], head: int) -> bool:
    """SHOW EXPLAIN|ANALYZE [FORMAT = name] FOR <thread id>, written whole: MariaDB's
    form of EXPLAIN ... FOR CONNECTION (the plan of a running statement), which names no
    table; the parser does not read it."""
    if word_at(tokens, head) not in ("EXPLAIN", "ANALYZE"):
        return False
    i = head + 1
    if word_at(tokens, i) == "FORMAT" and punct_at(tokens, i + 1, "="):
        if word_at(tokens, i + 2) not in ("JSON", "TRADITIONAL"):
            return False
        i += 3
    return (
        word_at(tokens, i) == "FOR"
        and i + 2 == len(tokens)
        and tokens[i + 1].kind is Tok.NUMBER
        and tokens[i + 1].text.isdigit()
    )


def _show(v: _View, kind: str, head: int) -> Classification:
    text = v.text()
    account = _shows_account(v.tokens, head)
    if account is not None:
        return _result(kind, text, flags=(account,), literal_independent=True)
    if _shows_a_plan(v.tokens, head):
        return _result(kind, text, literal_independent=True)
    if _SHOW_WITH.search(v.skeleton):
        # SHOW TABLES WHERE 1 IN (WITH RECURSIVE ...) crashed MariaDB 10.11 (SIGSEGV in
        # check_grant); a SHOW has no other use for WITH
        return _result(kind, text, problem=_parse_problem(kind, "a WITH inside a SHOW"))
    tokens = v.tokens
    if any(
        punct_at(tokens, i + 1, ".") and word_at(tokens, i) in ("IN", "FROM")
        for i in range(head, len(tokens) - 1)
    ):
        # SHOW COLUMNS IN .t: the parser reads IN as t's schema
        return _result(kind, text, problem=_parse_problem(kind, "a name starting with '.'"))
    parsed = _parse_text(v, [*_show_edits(v, head), *_charset_column_edits(v, head)])
    try:
        root = _parse(parsed)
    except _Unparsable as err:
        return _result(kind, text, problem=_parse_problem(kind, str(err)) + _SHOW_INSTEAD)
    if not isinstance(root, exp.Show):
        problem = f"{_mismatch_problem(kind, root)}: rewrite it in plain MySQL syntax"
        return _result(kind, text, problem=problem + _SHOW_INSTEAD)
    reads: set[str] = set()
    target = root.args.get("target")
    db = root.args.get("db")
    what = str(root.this or "").upper()
    target_name = target.name if isinstance(target, exp.Expression) else ""
    db_name = db.name if isinstance(db, exp.Expression) else ""
    if what in _SHOW_TABLE_TARGETS and target_name:
        table = _part(target_name)
        reads.add(f"{_part(db_name)}.{table}" if db_name else table)
    elif what in ("CREATE DATABASE", "CREATE SCHEMA") and target_name:
        reads.add(f"{_part(target_name)}.*")
    elif db_name and not target_name:  # SHOW TABLES FROM db, SHOW TABLE STATUS IN db
        reads.add(f"{_part(db_name)}.*")
    functions, suspects = _skeleton_calls(v.skeleton)
    # SHOW ... WHERE runs its condition, subqueries too: their tables are read.
    tree = _Tree(root, parsed)
    if (refused := _misread_tree(kind, text, tree)) is not None:
        return refused
    return _result(
        kind,
        text,
        reads=reads | tree.reads(),
        functions=functions | tree.functions,
        flags=("show_grants",) if what == "GRANTS" else (),
        literal_independent=True,
        stored_functions=_stored_functions(v, suspects, None),  # SHOW ... WHERE f()
    )


def _describe(v: _View, kind: str, head: int) -> Classification:
    text = v.text()
    tokens = v.tokens
    end = head
    if end < len(tokens) and tokens[end].kind in (Tok.WORD, Tok.IDENT):
        end += 1
        if punct_at(tokens, end, ".") and end + 1 < len(tokens):
            end += 2
    if end == head:
        return _result(kind, text, problem=_parse_problem(kind, "no table name"))
    # DESCRIBE t column: sqlglot reads the table part only.
    cut = [(v.end(tokens[end - 1]), len(v.raw), b"")] if end < len(tokens) else []
    try:
        root = _parse(_parse_text(v, cut))
    except _Unparsable as err:
        return _result(kind, text, problem=_parse_problem(kind, str(err)))
    if not isinstance(root, exp.Describe) or not isinstance(root.this, exp.Table):
        return _result(kind, text, problem=_mismatch_problem(kind, root))
    return _result(kind, text, reads={_table_name(root.this)}, literal_independent=True)


# The server explains no EXPLAIN; refusing them also bounds the recursion.
_EXPLAINERS = frozenset({"EXPLAIN", "DESCRIBE", "DESC", "ANALYZE"})


def _explain(v: _View, kind: str, head: int) -> Classification:
    """EXPLAIN <statement> (not run), ANALYZE / EXPLAIN ANALYZE <statement> (run)."""
    text = v.text()
    tokens = v.tokens
    i = head
    if kind == "ANALYZE":
        w = word_at(tokens, i)
        if w in ("TABLE", "TABLES", "NO_WRITE_TO_BINLOG", "LOCAL"):
            return _by_tokens(v, kind, head)  # ANALYZE TABLE: statistics
    i = _past_explain_options(tokens, i)
    if word_at(tokens, i) == "FOR" and word_at(tokens, i + 1) == "CONNECTION":
        return _result(kind, text, flags={"explain_for_connection"}, literal_independent=True)
    if i >= len(tokens):
        return _result(kind, text, problem=_parse_problem(kind, "no statement to explain"))
    if word_at(tokens, i) in _EXPLAINERS:
        return _result(kind, text, problem=_parse_problem(kind, f"{kind} of an {tokens[i].text}"))
    inner = _classify_text(v.raw[v.start(tokens[i]) :], v.mode, v.steps)
    problem = None
    if inner.problem is not None:
        problem = f"{kind} of a statement the gateway does not understand: {inner.problem}"
    if kind == "EXPLAIN":
        return _result(
            kind,
            text,
            reads=inner.reads | inner.writes,
            functions=inner.functions,
            problem=problem,
            literal_independent=inner.literal_independent,
            inner=inner,
        )
    # The server runs the statement: it carries the statement's effects.
    return _result(
        kind,
        text,
        reads=inner.reads,
        writes=inner.writes,
        has_where=inner.has_where,
        where_always_true=inner.where_always_true,
        multi_table=inner.multi_table,
        functions=inner.functions,
        flags=inner.flags | {"explain_analyze"},
        problem=problem,
        inner=inner,
        where_bindable=inner.where_bindable,
        where_bound=inner.where_bound,
    )


def _use(v: _View, kind: str, head: int) -> Classification:
    text = v.text()
    try:
        root = _parse(_parse_text(v))
    except _Unparsable as err:
        return _result(kind, text, problem=_parse_problem(kind, str(err)))
    if not isinstance(root, exp.Use):
        return _result(kind, text, problem=_mismatch_problem(kind, root))
    if isinstance(root.this, exp.Table):
        _table_name(root.this)  # a schema named with a dot: the rules would misread its tables
    return _result(kind, text, literal_independent=True)


# CREATE INDEX options sqlglot does not read; they change nothing the policy decides on.
_INDEX_OPTIONS_WITH_VALUE = frozenset({"ALGORITHM", "LOCK", "KEY_BLOCK_SIZE", "COMMENT"})
_INDEX_WORDS_DROPPED = frozenset({"FULLTEXT", "SPATIAL", "ONLINE", "OFFLINE"})

_CREATE_KINDS = {
    "CREATE TABLE": ("TABLE",),
    "CREATE INDEX": ("INDEX",),
    "CREATE VIEW": ("VIEW",),
    "CREATE DATABASE": ("DATABASE", "SCHEMA"),
    "ALTER VIEW": ("VIEW",),
}


def _create(v: _View, kind: str, head: int) -> Classification:
    text = v.text()
    flags = _skeleton_flags(v.skeleton, kind)
    functions, suspects = _skeleton_calls(v.skeleton)
    edits = _index_edits(v) if kind == "CREATE INDEX" else []
    if kind == "CREATE TABLE":
        edits = [*_versioning_edits(v), *_column_type_edits(v), *_partitioning_edits(v)]
    elif kind in ("CREATE VIEW", "ALTER VIEW"):
        edits = _check_option_edits(v)
    if kind == "ALTER VIEW":
        # ALTER VIEW has CREATE VIEW's syntax, which is what sqlglot reads: the tables of
        # its new definition are read
        first = v.tokens[0]
        edits.append((v.start(first), v.end(first), b"CREATE"))
    parsed = _parse_text(v, edits)
    try:
        root = _parse(parsed)
    except _Unparsable as err:
        return _result(
            kind, text, flags=flags, functions=functions, problem=_parse_problem(kind, str(err))
        )
    if (
        not isinstance(root, exp.Create)
        or str(root.args.get("kind") or "").upper() not in (_CREATE_KINDS[kind])
    ):
        return _result(
            kind, text, flags=flags, functions=functions, problem=_mismatch_problem(kind, root)
        )
    tree = _Tree(root, parsed)
    if (refused := _misread_tree(kind, text, tree, flags=flags, functions=functions)) is not None:
        return refused
    if kind == "CREATE TABLE":
        flags |= _storage_flags(v, root)
    target = root.this
    if isinstance(target, exp.Schema):
        target = target.this
    if isinstance(target, exp.Index):
        target = target.args.get("table")
    writes: set[str] = set()
    if isinstance(target, exp.Table):
        if kind == "CREATE DATABASE":  # the name is in `this` or (SCHEMA) in `db`
            writes.add(f"{_part(target.name or target.db)}.*")
        else:
            writes.add(_table_name(target))
    # A view calls what it selects whenever it is read; CREATE TABLE ... SELECT calls it
    # now. The server refuses stored functions in column definitions.
    stored: Iterable[str] = ()
    if kind in ("CREATE VIEW", "ALTER VIEW") or isinstance(root.expression, exp.Query):
        stored = _stored_functions(v, suspects, tree)
    return _result(
        kind,
        text,
        reads=tree.reads([target] if isinstance(target, exp.Expression) else []),
        writes=writes,
        functions=functions | tree.functions,
        flags=flags,
        stored_functions=stored,
    )


def _versioning_edits(v: _View) -> list[tuple[int, int, bytes]]:
    """Blanks for what the parser does not read of a system-versioned table's or an
    application period's definition: `WITH SYSTEM VERSIONING` (of the table or a
    column), `WITHOUT SYSTEM VERSIONING`, `GENERATED ALWAYS AS ROW START|END`, `,
    PERIOD FOR name (start, end)` among the columns and `WITHOUT OVERLAPS` in a key.

    They say which columns keep history and which hold its timestamps, among column
    names only: the server takes no expression, table or call there (sql_yacc.yy's
    period_for_system_time, period_for_application_time, opt_asrow_attribute)."""
    tokens = v.tokens
    n = len(tokens)
    edits: list[tuple[int, int, bytes]] = []
    depth = 0
    i = 0
    while i < n:
        t = tokens[i]
        if t.kind == Tok.PUNCT:
            depth += t.text == "("
            depth -= t.text == ")"
            i += 1
            continue
        word = word_at(tokens, i)
        end = i  # the last token of a clause that starts at i
        if (
            word in ("WITH", "WITHOUT")
            and word_at(tokens, i + 1) == "SYSTEM"
            and word_at(tokens, i + 2) == "VERSIONING"
        ):
            end = i + 2
        elif word == "WITHOUT" and word_at(tokens, i + 1) == "OVERLAPS":
            end = i + 1
        elif (
            word == "GENERATED"
            and word_at(tokens, i + 1) == "ALWAYS"
            and word_at(tokens, i + 2) == "AS"
            and word_at(tokens, i + 3) == "ROW"
            and word_at(tokens, i + 4) in ("START", "END")
        ):
            end = i + 4
        elif (
            word == "PERIOD"
            and depth == 1
            and word_at(tokens, i + 1) == "FOR"
            and punct_at(tokens, i - 1, ",")
            and tokens[i + 2 : i + 3]
            and tokens[i + 2].kind in (Tok.WORD, Tok.IDENT)
            and punct_at(tokens, i + 3, "(")
            and tokens[i + 4 : i + 5]
            and tokens[i + 4].kind in (Tok.WORD, Tok.IDENT)
            and punct_at(tokens, i + 5, ",")
            and tokens[i + 6 : i + 7]
            and tokens[i + 6].kind in (Tok.WORD, Tok.IDENT)
            and punct_at(tokens, i + 7, ")")
        ):
            edits.append((v.start(tokens[i - 1]), v.end(tokens[i + 7]), b" "))
            i += 8
            continue
        if end > i:
            edits.append((v.start(t), v.end(tokens[end]), b" "))
        i = end + 1
    return edits


# MariaDB's column types the parser does not know, and one of the same family it reads
_COLUMN_TYPES = {"INET6": b"BINARY(16)", "INET4": b"BINARY(4)"}


def _column_type_edits(v: _View) -> list[tuple[int, int, bytes]]:
    """A column's type the parser does not know (`INET6`, `INET4`) respelled as one it
    does, and a column's `COMPRESSED [= method]` (MariaDB 10.3+) blanked: they say how a
    value is stored and name no table, column or call. Only among the columns (depth 1),
    the type right after the column's name; COMPRESSED after '=' is a table option's
    value (`ROW_FORMAT = COMPRESSED`) and stays."""
    tokens = v.tokens
    n = len(tokens)
    edits: list[tuple[int, int, bytes]] = []
    depth = 0
    for i, t in enumerate(tokens):
        if t.kind == Tok.PUNCT:
            depth += t.text == "("
            depth -= t.text == ")"
            continue
        if depth != 1 or t.kind != Tok.WORD:
            continue
        if (
            t.text in _COLUMN_TYPES
            and i >= 2
            and tokens[i - 1].kind in (Tok.WORD, Tok.IDENT)
            and (punct_at(tokens, i - 2, "(") or punct_at(tokens, i - 2, ","))
        ):
            edits.append((v.start(t), v.end(t), _COLUMN_TYPES[t.text]))
        elif t.text == "COMPRESSED" and i and not punct_at(tokens, i - 1, "="):
            end = i
            if punct_at(tokens, i + 1, "=") and i + 2 < n and tokens[i + 2].kind == Tok.WORD:
                end = i + 2
            edits.append((v.start(t), v.end(tokens[end]), b" "))
    return edits


# The words of a CREATE TABLE's partitioning clause outside parentheses (sql_yacc.yy:
# partitioning, part_type_def, opt_num_parts, opt_sub_part, opt_versioning_interval)
_PARTITIONING_WORDS = frozenset(
    "PARTITION BY LINEAR KEY HASH RANGE LIST COLUMNS ALGORITHM PARTITIONS SUBPARTITION "
    "SUBPARTITIONS SYSTEM_TIME INTERVAL LIMIT STARTS AUTO TIMESTAMP MICROSECOND SECOND "
    "MINUTE HOUR DAY WEEK MONTH QUARTER YEAR".split()
)


def _partitioning_edits(v: _View) -> list[tuple[int, int, bytes]]:
    """A blank for a CREATE TABLE's `PARTITION BY ...` clause and its partitions, which
    the parser reads in a few forms only (not `HASH`, `KEY`, `PARTITIONS n`, `LESS THAN
    MAXVALUE`): it says where rows are stored, by expressions of the table's own columns
    in which the server refuses subqueries, variables and stored functions. The clause
    ends at the first word outside parentheses that is not one of its own (an `AS SELECT`
    after it is read); one whose parentheses hold a SELECT is left to the parser."""
    tokens = v.tokens
    n = len(tokens)
    depth = 0
    i = 0
    while i < n:
        t = tokens[i]
        if t.kind == Tok.PUNCT:
            depth += t.text == "("
            depth -= t.text == ")"
        elif depth == 0 and t.text == "PARTITION" and t.kind == Tok.WORD:
            break
        i += 1
    if word_at(tokens, i + 1) != "BY":
        return []
    last = i
    j = i
    while j < n:
        t = tokens[j]
        if t.kind == Tok.PUNCT and t.text == "(":
            if word_at(tokens, j + 1) in ("SELECT", "WITH", "VALUES"):
                break  # CREATE TABLE ... PARTITION BY ... (SELECT ...)
            inner = depth = 0
            for k in range(j, n):
                u = tokens[k]
                if u.kind == Tok.PUNCT:
                    depth += u.text == "("
                    depth -= u.text == ")"
                    if depth == 0:
                        inner = k
                        break
                elif u.kind == Tok.WORD and u.text in ("SELECT", "WITH"):
                    return []
            else:
                return []
            last = j = inner
        elif (
            (t.kind == Tok.WORD and t.text in _PARTITIONING_WORDS)
            or t.kind in (Tok.NUMBER, Tok.STRING)
            or (t.kind == Tok.PUNCT and t.text == "=")
        ):
            last = j
        else:
            break
        j += 1
    return [(v.start(tokens[i]), v.end(tokens[last]), b" ")]


# Table options that name where a table's rows are kept besides its engine: another
# server (CONNECTION, which FEDERATED and SPIDER read) or a directory of the server's file
# system (DATA DIRECTORY, INDEX DIRECTORY).
_CONNECTION_OPTIONS = frozenset({"CONNECTION"})
_DIRECTORY_OPTIONS = frozenset({"DATA DIRECTORY", "INDEX DIRECTORY"})


def _storage_flags(v: _View, root: exp.Expr) -> set[str]:
    """Where a CREATE TABLE keeps its rows, as flags for the rules: ``engine:<name>``
    (lower case; "" when the name is not a plain one) for each ENGINE it names, of the
    table or of a partition; ``connection`` for a CONNECTION option; ``data_directory``
    for a DATA or INDEX DIRECTORY. The table's options come from the parsed tree (a
    column may be named ``engine``), a partition's from the tokens of the partitioning
    clause, which the parser is not shown (_partitioning_edits)."""
    flags: set[str] = set()
    properties = root.args.get("properties")
    for prop in properties.expressions if isinstance(properties, exp.Properties) else ():
        if isinstance(prop, exp.EngineProperty):
            flags.add("engine:" + _engine_name(prop.this))
        elif isinstance(prop, exp.Property):
            name = " ".join(prop.name.upper().split())
            if name in _CONNECTION_OPTIONS:
                flags.add("connection")
            elif name in _DIRECTORY_OPTIONS:
                flags.add("data_directory")
    spans = _partitioning_edits(v)
    if not spans:
        return flags
    start, end, _ = spans[0]
    tokens = [t for t in v.tokens if start <= v.start(t) and v.end(t) <= end]
    for i in range(len(tokens)):
        word = word_at(tokens, i)
        if word == "ENGINE":
            j = i + 1 + punct_at(tokens, i + 1, "=")
            if j < len(tokens) and tokens[j].kind in (Tok.WORD, Tok.IDENT, Tok.STRING):
                flags.add("engine:" + tokens[j].text.lower())
            elif punct_at(tokens, i + 1, "="):
                flags.add("engine:")  # ENGINE = <something else>: not a name read
        elif word in ("DATA", "INDEX") and word_at(tokens, i + 1) == "DIRECTORY":
            flags.add("data_directory")
        elif word == "CONNECTION":
            flags.add("connection")
    return flags


def _engine_name(node: exp.Expr | None) -> str:
    """An ENGINE option's name in lower case, "" when it is not a name or a string."""
    if isinstance(node, exp.Literal | exp.Identifier | exp.Var):
        return str(node.this).lower()
    return ""


def _check_option_edits(v: _View) -> list[tuple[int, int, bytes]]:
    """A blank for a view's closing `WITH [CASCADED | LOCAL] CHECK OPTION`, which the
    parser does not read: it makes the server refuse writes through the view that it
    could not read back, and names nothing."""
    tokens = v.tokens
    n = len(tokens)
    if n < 4 or word_at(tokens, n - 1) != "OPTION" or word_at(tokens, n - 2) != "CHECK":
        return []
    first = n - 3
    if word_at(tokens, first) in ("CASCADED", "LOCAL"):
        first -= 1
    if word_at(tokens, first) != "WITH":
        return []
    return [(v.start(tokens[first]), v.end(tokens[n - 1]), b" ")]


def _index_edits(v: _View) -> list[tuple[int, int, bytes]]:
    tokens = v.tokens
    edits: list[tuple[int, int, bytes]] = []
    depth = 0
    i = 0
    n = len(tokens)
    while i < n:
        t = tokens[i]
        if t.kind == Tok.PUNCT:
            depth += t.text == "("
            depth -= t.text == ")"
        elif depth == 0 and t.kind == Tok.WORD:
            w = t.text
            if w in _INDEX_WORDS_DROPPED or w in ("VISIBLE", "INVISIBLE"):
                edits.append((v.start(t), v.end(t), b" "))
            elif w == "USING" and word_at(tokens, i + 1) in ("BTREE", "HASH", "RTREE"):
                edits.append((v.start(t), v.end(tokens[i + 1]), b" "))
                i += 1
            elif w in _INDEX_OPTIONS_WITH_VALUE and i > 0 and word_at(tokens, i - 1) != "INDEX":
                j = i + 2 if punct_at(tokens, i + 1, "=") else i + 1
                if j < n:
                    edits.append((v.start(t), v.end(tokens[j]), b" "))
                    i = j
            elif w == "WITH" and word_at(tokens, i + 1) == "PARSER" and i + 2 < n:
                edits.append((v.start(t), v.end(tokens[i + 2]), b" "))
                i += 2
        i += 1
    return edits


# -- SET -----------------------------------------------------------------------------------------

_SCOPES = {
    "GLOBAL": "global.",
    "PERSIST": "persist.",
    "PERSIST_ONLY": "persist.",
    "SESSION": "",
    "LOCAL": "",
}
_SYSVAR_SCOPES = {scope.lower(): prefix for scope, prefix in _SCOPES.items()}


def _split_commas(tokens: Sequence[Token], start: int, stop: int) -> list[tuple[int, int]]:
    parts: list[tuple[int, int]] = []
    depth = 0
    first = start
    for i in range(start, stop):
        t = tokens[i]
        if t.kind == Tok.PUNCT:
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                depth -= 1
            elif t.text == "," and depth == 0:
                parts.append((first, i))
                first = i + 1
    parts.append((first, stop))
    return [(a, b) for a, b in parts if a < b]


def _literal(tokens: Sequence[Token], start: int, stop: int) -> str | None:
    if stop - start != 1:
        return None
    t = tokens[start]
    if t.kind == Tok.WORD:
        return t.text.lower()
    if t.kind in (Tok.STRING, Tok.NUMBER):
        return t.text
    return None


def _variable_name(t: Token, scope: str) -> str:
    if t.kind == Tok.VARIABLE:
        name = t.text
        if not name.startswith("@@"):
            return name  # a user variable
        name = name[2:]
        head, dot, rest = name.partition(".")
        if dot and head in _SYSVAR_SCOPES:
            return _SYSVAR_SCOPES[head] + rest
        return scope + name
    return scope + t.text.lower()


def _assignments(
    tokens: Sequence[Token], start: int, stop: int
) -> tuple[tuple[str, str | None], ...]:
    found: list[tuple[str, str | None]] = []
    for a, b in _split_commas(tokens, start, stop):
        scope = ""
        w = word_at(tokens, a)
        if w in _SCOPES and b - a > 1 and not punct_at(tokens, a + 1, "="):
            scope = _SCOPES[w]
            a += 1
            w = word_at(tokens, a)
        if w == "NAMES":
            collate = next((i for i in range(a + 1, b) if word_at(tokens, i) == "COLLATE"), b)
            found.append(("names", _literal(tokens, a + 1, collate)))
            if collate < b:
                found.append(("collation_connection", _literal(tokens, collate + 1, b)))
            continue
        if w == "CHARSET" or (w == "CHARACTER" and word_at(tokens, a + 1) == "SET"):
            skip = 1 if w == "CHARSET" else 2
            found.append(("character set", _literal(tokens, a + skip, b)))
            continue
        eq = next(
            (
                i
                for i in range(a, b)
                if tokens[i].kind == Tok.PUNCT and tokens[i].text in ("=", ":=")
            ),
            None,
        )
        if eq is None or eq == a:
            words = " ".join(t.text.lower() for t in tokens[a:b])
            found.append((scope + words, None))
            continue
        name = _assigned_name(tokens, a, eq, scope)
        value = _literal(tokens, eq + 1, b)
        if value is None and name.rpartition(".")[2] == "sql_mode":
            value = _mode_concat(tokens, eq + 1, b)
        found.append((name, value))
    return tuple(found)


_CURRENT_MODES = frozenset(
    {"@@sql_mode", "@@session.sql_mode", "@@local.sql_mode", "@@global.sql_mode"}
)

#: Every sql_mode name MariaDB 10.11 knows: REPLACE(@@sql_mode, '<one of them>', '')
#: removes it. None is part of another but ANSI of ANSI_QUOTES, which leaves _QUOTES,
#: no mode: a removal cannot make a new mode out of what is left.
_MODE_NAMES = frozenset(
    (
        "REAL_AS_FLOAT PIPES_AS_CONCAT ANSI_QUOTES IGNORE_SPACE IGNORE_BAD_TABLE_OPTIONS "
        "ONLY_FULL_GROUP_BY NO_UNSIGNED_SUBTRACTION NO_DIR_IN_CREATE POSTGRESQL ORACLE "
        "MSSQL DB2 MAXDB NO_KEY_OPTIONS NO_TABLE_OPTIONS NO_FIELD_OPTIONS MYSQL323 MYSQL40 "
        "ANSI NO_AUTO_VALUE_ON_ZERO NO_BACKSLASH_ESCAPES STRICT_TRANS_TABLES "
        "STRICT_ALL_TABLES NO_ZERO_IN_DATE NO_ZERO_DATE ALLOW_INVALID_DATES "
        "ERROR_FOR_DIVISION_BY_ZERO TRADITIONAL NO_AUTO_CREATE_USER HIGH_NOT_PRECEDENCE "
        "NO_ENGINE_SUBSTITUTION PAD_CHAR_TO_FULL_LENGTH EMPTY_STRING_IS_NULL "
        "SIMULTANEOUS_ASSIGNMENT TIME_ROUND_FRACTIONAL"
    ).split()
)


def _mode_concat(tokens: Sequence[Token], start: int, stop: int) -> str | None:
    """The value of the idioms of client libraries that add modes to the session's,
    ``CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')`` (CONCAT_WS too), or remove one,
    ``REPLACE(@@sql_mode, 'ONLY_FULL_GROUP_BY', '')`` (also in ``(SELECT ...)``), as
    text with the session's modes written ``@@sql_mode`` (a removal leaves them that, or
    fewer; the global ones, which the session started in, count as the session's): the
    policy checks the modes added. Only literals (a double-quoted one is a string, or
    under ANSI_QUOTES a name, which the server reads as the same mode), those variables,
    and whole mode names removed, nested; None for anything else."""
    if stop - start == 1:
        t = tokens[start]
        if t.kind in (Tok.STRING, Tok.IDENT):
            return t.text
        if t.kind == Tok.VARIABLE and t.text.lower() in _CURRENT_MODES:
            return "@@sql_mode"
        return None
    if (
        punct_at(tokens, start, "(")
        and word_at(tokens, start + 1) == "SELECT"
        and punct_at(tokens, stop - 1, ")")
    ):
        return _mode_concat(tokens, start + 2, stop - 1)
    call = word_at(tokens, start)
    if not (
        call in ("CONCAT", "CONCAT_WS", "REPLACE")
        and punct_at(tokens, start + 1, "(")
        and punct_at(tokens, stop - 1, ")")
    ):
        return None
    args = _split_commas(tokens, start + 2, stop - 1)
    values = [_mode_concat(tokens, a, b) for a, b in args]
    if not values or any(v is None for v in values):
        return None
    texts = [v or "" for v in values]
    if call == "CONCAT":
        return "".join(texts)
    if call == "CONCAT_WS":
        return texts[0].join(texts[1:])
    if len(texts) != 3:
        return None
    base, removed, put = texts
    if (removed, put) == (",,", ","):  # tidying up after a removal
        return base
    if (
        put == ""
        and removed.strip(",").upper() in _MODE_NAMES
        and len(removed) - len(removed.strip(",")) <= 1
    ):
        return base
    return None


def _assigned_name(tokens: Sequence[Token], a: int, eq: int, scope: str) -> str:
    """The variable a SET assigns, from the tokens before its ``=``: ``@x``, ``@@x``,
    ``@@global.x``, ``@@session . x`` (the server allows blanks and comments around the
    dot), ``key_cache.key_buffer_size``, `` `name` ``. Session scope is left out of the
    name, GLOBAL is ``global.``. Any other form is named so that no rule allows it."""
    first = tokens[a]
    if first.kind == Tok.VARIABLE and eq == a + 1:
        return _variable_name(first, scope)
    parts: list[str] = []
    for i in range(a, eq):
        t = tokens[i]
        if (i - a) % 2:  # between names: a dot and nothing else
            if t.kind != Tok.PUNCT or t.text != ".":
                return _UNREADABLE_NAME
        elif t.kind in (Tok.WORD, Tok.IDENT):
            parts.append(t.text.lower())
        elif i == a and t.kind == Tok.VARIABLE and t.text.startswith("@@") and "." not in t.text:
            parts.append(t.text)  # @@session . x
        else:
            return _UNREADABLE_NAME
    if (eq - a) % 2 == 0:  # ends with a dot
        return _UNREADABLE_NAME
    if parts[0].startswith("@@"):
        if scope:
            return _UNREADABLE_NAME  # SET GLOBAL @@session . x: not MariaDB syntax
        head = parts[0][2:]
        if len(parts) > 1 and head in _SYSVAR_SCOPES:
            return _SYSVAR_SCOPES[head] + ".".join(parts[1:])
        return ".".join([head, *parts[1:]])
    return scope + ".".join(parts)


#: The name of a variable assignment the gateway cannot read: not a session setting it
#: allows, and not a user variable (those start with '@').
_UNREADABLE_NAME = "(a variable name the gateway cannot read)"


def _statement_for(tokens: Sequence[Token], n: int) -> int:
    """Where the FOR of ``SET STATEMENT ... FOR <statement>`` is (the first at the
    outermost level: a value may hold parentheses), or ``n`` when there is none."""
    depth = 0
    for i in range(2, n):
        t = tokens[i]
        if t.kind == Tok.PUNCT:
            depth += t.text == "("
            depth -= t.text == ")"
        elif depth == 0 and t.kind == Tok.WORD and t.text == "FOR":
            return i
    return n


def _set(v: _View, kind: str, head: int) -> Classification:
    text = v.text()
    tokens = v.tokens
    n = len(tokens)
    flags = _skeleton_flags(v.skeleton, kind)
    functions, suspects = _skeleton_calls(v.skeleton)
    if kind == "SET PASSWORD":
        # The value is a password: never copied anywhere (nor parsed into a message).
        problem = None
        if _subquery_spans(tokens, head, n):
            problem = _parse_problem(kind, "a subquery in it")
        return _result(kind, text, variables=(("password", None),), flags=flags, problem=problem)
    split = n
    if kind == "SET STATEMENT":
        split = _statement_for(tokens, n)
    # A value may be a subquery (SET @a = (SELECT c FROM t)): it reads its tables.
    try:
        reads, called = _subquery_reads(v, head, split)
    except _Unparsable as err:
        return _result(kind, text, flags=flags, problem=_parse_problem(kind, str(err)))
    functions |= called
    if kind == "SET ROLE":
        if word_at(tokens, 1) == "DEFAULT":
            stop = next((i for i in range(3, n) if word_at(tokens, i) in ("TO", "FOR")), n)
            return _result(
                kind,
                text,
                reads=reads,
                writes={"mysql.default_roles"},
                variables=(("default role", _literal(tokens, 3, stop)),),
                flags=flags | {"default_role"},
            )
        return _result(
            kind, text, reads=reads, variables=(("role", _literal(tokens, 2, n)),), flags=flags
        )
    if kind == "SET STATEMENT":
        variables = _assignments(tokens, 2, split)
        if split >= n - 1:
            return _result(
                kind,
                text,
                variables=variables,
                problem=_parse_problem(kind, "no FOR <statement>"),
            )
        if word_at(tokens, split + 1) == "SET":
            return _result(kind, text, variables=variables, problem=_parse_problem(kind, "FOR SET"))
        inner = _classify_text(v.raw[v.start(tokens[split + 1]) :], v.mode, v.steps)
        return _running(
            kind,
            text,
            inner,
            "SET STATEMENT ... FOR",
            functions,
            flags,
            variables,
            _token_calls(v, tokens[:split]) if suspects else (),
            reads,
        )
    i = 2 if word_at(tokens, 1) in _SCOPES else 1
    if word_at(tokens, i) == "TRANSACTION":
        # SET [GLOBAL|SESSION] TRANSACTION ISOLATION LEVEL ..., READ ONLY
        scope = _SCOPES.get(word_at(tokens, 1) or "", "")
        words = " ".join(t.text.lower() for t in tokens[i + 1 :]).replace(" ,", ",")
        assigned: tuple[tuple[str, str | None], ...] = ((scope + "transaction", words or None),)
    else:
        assigned = _assignments(tokens, 1, n)
    return _result(
        kind,
        text,
        reads=reads,
        variables=assigned,
        functions=functions,
        flags=flags,
        stored_functions=_stored_functions(v, suspects, None),
    )


# -- PREPARE -------------------------------------------------------------------------------------


#: Introducers of a PREPARE or EXECUTE IMMEDIATE text whose bytes the server reads as
#: the gateway does: UTF-8, and binary (not converted).
_AS_READ = frozenset({"utf8mb4", "utf8mb3", "utf8", "binary"})


def _prepare(v: _View, kind: str, head: int) -> Classification:
    """PREPARE name FROM <text>, and MariaDB's EXECUTE IMMEDIATE <text> [USING ...]:
    a literal text is classified as the statement it holds; any other text (a variable,
    an expression) is one the gateway never sees."""
    text = v.text()
    tokens = v.tokens
    n = len(tokens)
    flags = _skeleton_flags(v.skeleton, kind)
    if kind == "PREPARE":
        i = head + 1  # the statement name
        if word_at(tokens, i) != "FROM":
            return _result(kind, text, flags=flags, problem=_parse_problem(kind, "expected FROM"))
        i += 1
        stop = n
    else:
        if word_at(tokens, head) != "IMMEDIATE":
            return _by_tokens(v, kind, head)  # EXECUTE name [USING ...]
        i = head + 1
        stop = next((j for j in range(i, n) if word_at(tokens, j) == "USING"), n)
    # MariaDB refuses subqueries in the text and its USING values; should one run, it
    # reads its tables.
    try:
        reads, called = _subquery_reads(v, head, n)
    except _Unparsable as err:
        return _result(kind, text, flags=flags, problem=_parse_problem(kind, str(err)))
    charset = None
    if i < stop and tokens[i].kind == Tok.WORD and tokens[i].text.startswith("_"):
        charset = tokens[i].text[1:].lower()  # a character set introducer
        if charset in CONVERSION_UNSAFE:
            why = (
                f"the server converts a text in {charset} before it reads it, which may "
                "turn a character into a quote or a backslash or one into a letter"
            )
            return _result(kind, text, flags=flags, problem=_parse_problem(kind, why))
        i += 1
    strings = tokens[i:stop]
    if not strings or any(t.kind != Tok.STRING for t in strings):
        return _result(
            kind, text, reads=reads, functions=called, flags=flags | {"prepare_from_variable"}
        )
    # Adjacent string literals are one literal.
    body = b"".join(string_bytes(v.bytes_of(t), v.mode) for t in strings)
    if charset is not None and charset not in _AS_READ and not body.isascii():
        why = (
            f"the server converts a text in {charset} before it reads it, and the gateway "
            "would read its characters beyond ASCII as they were sent, not as converted"
        )
        return _result(kind, text, flags=flags, problem=_parse_problem(kind, why))
    # (not the cache: the text's steps are those left to the statement that holds it)
    inner_all = _classify(body, v.mode, v.steps)
    if len(inner_all) != 1:
        return _result(
            kind,
            text,
            flags=flags,
            problem=_parse_problem(kind, f"the text holds {len(inner_all)} statements, not one"),
        )
    inner = inner_all[0]
    if kind == "EXECUTE" and any(s.where_bindable for s in _chain(inner)):
        # EXECUTE IMMEDIATE '... LIKE ?' USING '%': decided with the values it binds
        values = using_values(tokens, stop + 1, v.mode) if stop < n else []
        shown = using_shown(v.raw, tokens, stop + 1, v._base) if stop < n else []
        bound = bind(body, v.mode, values, ansi_unknown=False)  # as inner was read
        if bound.problem is not None or any(s.where_always_true for s in _chain(bound)):
            inner = with_bound(bound, shown_values(shown, values))
    if kind == "EXECUTE" and _skeleton_calls(v.skeleton)[1]:  # USING f(): runs with it
        inner = replace(
            inner, stored_functions=inner.stored_functions | _token_calls(v, tokens[stop:])
        )
    return _running(kind, text, inner, f"{kind} of", called, flags, reads=reads)


def _running(
    kind: str,
    text: str,
    inner: Classification,
    what: str,
    functions: Iterable[str],
    flags: Iterable[str],
    variables: tuple[tuple[str, str | None], ...] = (),
    stored_functions: Iterable[str] = (),
    reads: Iterable[str] = (),
) -> Classification:
    """A statement that runs ``inner``: what will run is what the policy must see.
    (``stored_functions``: its own calls, SET STATEMENT f() FOR; the inner statement's
    are its own. ``reads``: the tables it reads itself besides.)"""
    problem = None
    if inner.problem is not None:
        problem = f"{what} a statement the gateway does not understand: {inner.problem}"
    return _result(
        kind,
        text,
        reads=inner.reads.union(reads),
        writes=inner.writes,
        has_where=inner.has_where,
        where_always_true=inner.where_always_true,
        multi_table=inner.multi_table,
        functions=frozenset(functions) | inner.functions,
        variables=variables,
        flags=frozenset(flags) | inner.flags,
        problem=problem,
        inner=inner,
        stored_functions=stored_functions,
        where_bindable=inner.where_bindable,
        where_bound=inner.where_bound,
    )


# -- kinds read from their tokens alone ------------------------------------------------------


def _name(v: _View, i: int) -> tuple[str | None, int]:
    """A possibly qualified name at token i, as written: ("schema.name" or "name", index
    after it; ``.name`` is ``name``); raises _DottedName for a part with a dot."""
    tokens = v.tokens
    if punct_at(tokens, i, "."):
        i += 1  # `.t` (MariaDB): table t of the current schema, as a bare t
    if i >= len(tokens) or tokens[i].kind not in (Tok.WORD, Tok.IDENT):
        return None, i
    name = _part(_written(v, tokens[i]))
    i += 1
    if (
        punct_at(tokens, i, ".")
        and i + 1 < len(tokens)
        and tokens[i + 1].kind in (Tok.WORD, Tok.IDENT)
    ):
        name = f"{name}.{_part(_written(v, tokens[i + 1]))}"
        i += 2
    return name, i


def _written(v: _View, t: Token) -> str:
    """A name token's text as written: a word's token text is upper-cased, a quoted
    name's is the name."""
    if t.kind == Tok.WORD:
        return v.bytes_of(t).decode("utf-8", "replace")
    return t.text


def _name_list(v: _View, i: int) -> list[str]:
    tokens = v.tokens
    names: list[str] = []
    while True:
        name, i = _name(v, i)
        if name is None:
            return names
        names.append(name)
        if not punct_at(tokens, i, ","):
            return names
        i += 1


_TRANSACTION_WORDS = {
    "BEGIN": frozenset({"WORK"}),
    "COMMIT": frozenset({"WORK", "AND", "NO", "CHAIN", "RELEASE"}),
    "START TRANSACTION": frozenset({"READ", "ONLY", "WRITE", "WITH", "CONSISTENT", "SNAPSHOT"}),
}


def _by_tokens(v: _View, kind: str, head: int) -> Classification:
    text = v.text()
    tokens = v.tokens
    flags = _skeleton_flags(v.skeleton, kind)
    functions, suspects = _skeleton_calls(v.skeleton)
    reads: list[str] = []
    writes: list[str] = []
    independent = False
    problem = None
    procedure = ""  # CALL's
    if kind in _TRANSACTION_WORDS:
        allowed = _TRANSACTION_WORDS[kind]
        extra = [
            t
            for t in tokens[head:]
            if not (t.kind == Tok.WORD and t.text in allowed)
            and not (t.kind == Tok.PUNCT and t.text == ",")
        ]
        if extra:
            problem = _parse_problem(kind, f"unexpected {extra[0].text!r}")
        independent = True
    elif kind in ("ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT"):
        independent = True
    elif kind in ("ALTER TABLE", "TRUNCATE"):
        i = head
        if kind == "TRUNCATE" and word_at(tokens, i) == "TABLE":
            i += 1
        name, i = _name(v, i)
        writes.extend([name] if name else [])
        for j in range(i, len(tokens)):
            w = word_at(tokens, j)
            if w == "RENAME":
                k = j + 1
                if word_at(tokens, k) in ("COLUMN", "INDEX", "KEY"):
                    continue  # RENAME COLUMN a TO b: the table keeps its name
                if word_at(tokens, k) in ("TO", "AS"):
                    k += 1
                other, _ = _name(v, k)
                writes.extend([other] if other else [])
            elif w == "WITH" and word_at(tokens, j + 1) == "TABLE":
                other, _ = _name(v, j + 2)
                writes.extend([other] if other else [])
            elif w == "REFERENCES":  # ADD FOREIGN KEY ... REFERENCES t (c)
                other, _ = _name(v, j + 1)
                reads.extend([other] if other else [])
            elif w == "UNION":  # a MERGE table's UNION=(t1, t2): read and written through it
                k = j + 2 if punct_at(tokens, j + 1, "=") else j + 1
                if punct_at(tokens, k, "("):
                    writes.extend(_name_list(v, k + 1))
    elif kind in ("DROP TABLE", "DROP VIEW", "DROP SEQUENCE"):
        writes.extend(_name_list(v, head))
    elif kind in ("DROP DATABASE", "ALTER DATABASE"):
        name, _ = _name(v, head)
        if name and name.lower() not in ("character", "default", "collate", "charset", "read"):
            writes.append(name + ".*")
    elif kind == "DROP INDEX":
        for j in range(head, len(tokens)):
            if word_at(tokens, j) == "ON":
                name, _ = _name(v, j + 1)
                writes.extend([name] if name else [])
                break
    elif kind in (
        "CREATE TRIGGER",
        "DROP TRIGGER",
        "CREATE EVENT",
        "ALTER EVENT",
        "DROP EVENT",
        "CREATE PROCEDURE",
        "ALTER PROCEDURE",
        "DROP PROCEDURE",
        "CREATE FUNCTION",
        "ALTER FUNCTION",
        "DROP FUNCTION",
        "CREATE SEQUENCE",
        "ALTER SEQUENCE",
    ):
        name, i = _name(v, head)
        writes.extend([name] if name else [])
        if kind == "CREATE TRIGGER":
            for j in range(i, len(tokens)):
                if word_at(tokens, j) == "ON":
                    table, _ = _name(v, j + 1)
                    writes.extend([table] if table else [])
                    break
    elif kind == "RENAME TABLE":
        i = head
        if word_at(tokens, i) == "IF" and word_at(tokens, i + 1) == "EXISTS":
            i += 2
        while True:
            old, i = _name(v, i)
            if word_at(tokens, i) == "NOWAIT":
                i += 1
            elif word_at(tokens, i) == "WAIT":
                i += 2  # WAIT n
            if old is None or word_at(tokens, i) != "TO":
                # a pair not read is a table not named: its rules would not see it
                problem = _parse_problem(kind, "expected 'old_name TO new_name'")
                break
            new, i = _name(v, i + 1)
            writes.extend(x for x in (old, new) if x)
            if not punct_at(tokens, i, ","):
                if i < len(tokens):
                    problem = _parse_problem(kind, f"unexpected {tokens[i].text!r}")
                break
            i += 1
    elif kind in ("LOAD DATA", "LOAD XML"):
        for j in range(head, len(tokens)):
            if word_at(tokens, j) == "INTO" and word_at(tokens, j + 1) == "TABLE":
                name, _ = _name(v, j + 2)
                writes.extend([name] if name else [])
                break
        if any(word_at(tokens, j) == "LOCAL" for j in range(head, min(head + 4, len(tokens)))):
            flags.add("local_infile")
    elif kind in ("OPTIMIZE", "REPAIR", "CHECK", "CHECKSUM", "ANALYZE"):
        i = head
        while word_at(tokens, i) in ("NO_WRITE_TO_BINLOG", "LOCAL"):
            i += 1
        if word_at(tokens, i) in ("TABLE", "TABLES"):
            names = _name_list(v, i + 1)
            # ANALYZE writes the table's statistics (the server asks for INSERT)
            (writes if kind in ("OPTIMIZE", "REPAIR", "ANALYZE") else reads).extend(names)
    elif kind == "LOCK TABLES":
        for a, b in _split_commas(tokens, head, len(tokens)):
            name, _ = _name(v, a)
            if name:
                lock = {t.text for t in tokens[a:b] if t.kind == Tok.WORD}
                (writes if "WRITE" in lock else reads).append(name)
    elif kind == "HANDLER":
        name, _ = _name(v, head)
        reads.extend([name] if name else [])
    elif kind == "FLUSH":
        i = head
        while word_at(tokens, i) in ("NO_WRITE_TO_BINLOG", "LOCAL"):
            i += 1
        if word_at(tokens, i) in ("TABLE", "TABLES"):
            reads.extend(_name_list(v, i + 1))  # FLUSH TABLES t WITH READ LOCK, FOR EXPORT
    elif kind == "CALL":
        # The procedure stands among the tables, as a routine does in CREATE and DROP
        # PROCEDURE, so that rules name it (its name in lower case: the server ignores
        # a routine name's case).
        name, _ = _name(v, head)
        if name:
            schema, dot, routine = name.rpartition(".")
            procedure = f"{schema}{dot}{routine.lower()}"
            reads.append(procedure)
    elif kind == "COMPOUND":
        problem = _COMPOUND_PROBLEM
    if kind not in _BODIES and problem is None:
        # CALL p((SELECT ...)), DO (SELECT ...), LOAD DATA ... SET c = (SELECT ...): the
        # server runs the subquery and reads its tables.
        try:
            found, called = _subquery_reads(v, head, len(tokens))
        except _Unparsable as err:
            problem = _parse_problem(kind, str(err))
        else:
            reads.extend(found)
            functions |= called
    stored: Iterable[str] = ()
    if kind not in _DEFINES:
        stored = _stored_functions(v, suspects, None)
        if kind == "CALL":
            # CALL p(f()): f is a call, the procedure itself is among the tables
            stored = stored - {procedure}
    return _result(
        kind,
        text,
        reads=reads,
        writes=writes,
        functions=functions,
        flags=flags,
        problem=problem,
        literal_independent=independent,
        stored_functions=stored,
    )


# Kinds whose text holds a body of statements that run later, when the trigger, event or
# routine does (the built-in rules review them, and only an allow rule naming the kind
# allows one): their subqueries are not read now.
_BODIES = frozenset(
    {"CREATE TRIGGER", "CREATE EVENT", "ALTER EVENT", "CREATE PROCEDURE", "CREATE FUNCTION"}
)

_COMPOUND_PROBLEM = (
    "a compound statement (BEGIN NOT ATOMIC ... END, IF, CASE, LOOP, REPEAT, WHILE, FOR) "
    "runs the statements in its body, which the gateway does not read one by one, so it "
    "cannot tell which tables they touch; send them as separate statements"
)


_Handler = Callable[[_View, str, int], Classification]

_HANDLERS: dict[str, _Handler] = {
    "SELECT": _dml,
    "INSERT": _dml,
    "REPLACE": _dml,
    "UPDATE": _dml,
    "DELETE": _dml,
    "SHOW": _show,
    "DESCRIBE": _describe,
    "EXPLAIN": _explain,
    "ANALYZE": _explain,
    "USE": _use,
    "CREATE TABLE": _create,
    "CREATE INDEX": _create,
    "CREATE VIEW": _create,
    "CREATE DATABASE": _create,
    "ALTER VIEW": _create,
    "SET": _set,
    "SET PASSWORD": _set,
    "SET ROLE": _set,
    "SET STATEMENT": _set,
    "PREPARE": _prepare,
    "EXECUTE": _prepare,
}


# -- sql_mode unknown ---------------------------------------------------------------------------


def classify_uncertain(
    sql: bytes,
    mode: LexMode,
    ansi_unknown: bool,
    backslash_unknown: bool,
    *,
    cached: bool = True,
) -> tuple[Classification, ...]:
    """Classify when the session's ANSI_QUOTES and/or NO_BACKSLASH_ESCAPES flags are not
    known: a text that reads the same either way is merged conservatively; one that
    reads differently is refused, statement by statement.

    ``cached=False`` is for a caller that keeps the result in its own cache: a second
    cache of the same texts would only give the garbage collector more to walk."""
    flips: list[str] = []
    if ansi_unknown and b'"' in sql:
        flips.append("ansi_quotes")
    if backslash_unknown and b"\\" in sql:
        flips.append("no_backslash_escapes")
    if not flips:
        return classify(sql, mode) if cached else _classify(sql, mode)
    if cached and len(sql) <= _CACHE_TEXT_LIMIT:
        return _classify_uncertain_cached(sql, mode, tuple(flips))
    return _classify_uncertain(sql, mode, tuple(flips), classify if cached else _classify)


@lru_cache(maxsize=4_096)
def _classify_uncertain_cached(
    sql: bytes, mode: LexMode, flips: tuple[str, ...]
) -> tuple[Classification, ...]:
    return _classify_uncertain(sql, mode, flips, classify)


def _classify_uncertain(
    sql: bytes,
    mode: LexMode,
    flips: tuple[str, ...],
    read: Callable[[bytes, LexMode], tuple[Classification, ...]],
) -> tuple[Classification, ...]:
    modes = [mode]
    for flag in flips:
        modes += [replace(m, **{flag: not getattr(m, flag)}) for m in modes]
    readings = [read(sql, m) for m in modes]
    base = readings[0]
    if len(base) > MAX_STATEMENTS:
        return base  # refused whole for their number, not read (see _classify)
    if _readings_differ(sql, modes):
        problem = _uncertain_problem(flips)
        return tuple(replace(c, problem=problem, literal_independent=False) for c in base)
    merged = list(base)
    for other in readings[1:]:
        merged = [_merge(a, b) for a, b in zip(merged, other, strict=True)]
    marks = {f"{'ansi' if f == 'ansi_quotes' else 'backslash'}_ambiguous" for f in flips}
    return tuple(replace(c, flags=c.flags | marks) for c in merged)


def _readings_differ(sql: bytes, modes: Sequence[LexMode]) -> bool:
    seen: set[object] = set()
    for m in modes:
        try:
            statements = split_statements(sql, m)
        except LexError as err:
            seen.add(("error", str(err)))
            continue
        seen.add(
            tuple(
                (s.start, s.end, tuple(_reading_kind(sql, t) for t in s.tokens)) for s in statements
            )
        )
    return len(seen) > 1


def _reading_kind(sql: bytes, token: Token) -> object:
    """A token's kind, where a double-quoted string and a double-quoted name are one:
    the two ANSI_QUOTES readings differ there by design, and are decided together."""
    if token.kind in (Tok.STRING, Tok.IDENT) and sql[token.start : token.start + 1] == b'"':
        return "double-quoted"
    return token.kind


def _uncertain_problem(flips: Sequence[str]) -> str:
    advice = []
    if "ansi_quotes" in flips:
        advice.append(
            "ANSI_QUOTES (use single quotes for strings and backticks for names, never "
            "double quotes)"
        )
    if "no_backslash_escapes" in flips:
        advice.append(
            "NO_BACKSLASH_ESCAPES (write a quote inside a string by doubling it, not with a "
            "backslash)"
        )
    return (
        "the statement reads differently depending on sql_mode "
        + " and ".join(advice)
        + ", and the gateway cannot tell this session's sql_mode"
    )


def _merge(a: Classification, b: Classification) -> Classification:
    problem = a.problem or b.problem
    if a.kind != b.kind and problem is None:
        problem = (
            f"the statement reads as {a.kind} or as {b.kind} depending on sql_mode, "
            "and the gateway cannot tell this session's sql_mode"
        )
    variables = a.variables
    if a.variables != b.variables:
        values = dict(b.variables)
        variables = tuple((k, v if values.get(k) == v else None) for k, v in a.variables)
    inner = a.inner
    if a.inner is not None and b.inner is not None:
        inner = _merge(a.inner, b.inner)
    return Classification(
        kind=a.kind,
        text=a.text,
        reads=a.reads | b.reads,
        writes=a.writes | b.writes,
        has_where=a.has_where and b.has_where,
        where_always_true=a.where_always_true or b.where_always_true,
        multi_table=a.multi_table or b.multi_table,
        functions=a.functions | b.functions,
        variables=variables,
        flags=a.flags | b.flags,
        problem=problem,
        literal_independent=a.literal_independent and b.literal_independent and problem is None,
        inner=inner,
        stored_functions=a.stored_functions | b.stored_functions,
        assigns=None if a.assigns is None or b.assigns is None else a.assigns | b.assigns,
        span=a.span,  # the same statement (the readings split alike)
        where_bindable=a.where_bindable or b.where_bindable,
        where_bound=a.where_bound or b.where_bound,
    )


def count_query(sql: bytes) -> str | None:
    """``SELECT COUNT(*) FROM t WHERE ...`` for a single-table UPDATE or DELETE with a
    WHERE: how many rows it would touch, for the person asked to approve it. Built for
    one text at a time (never cached by shape: the answer depends on the literals);
    None when the statement is anything else or cannot be read plainly, or when it
    reads a variable (``@x``, ``@@x``): the count runs on a connection of its own, where
    ``WHERE id = 9 OR @all = 1`` counted no row that the agent's session, after
    ``SET @all = 1``, would delete every row of."""
    try:
        statements = split_statements(sql, LexMode())
    except LexError:
        return None
    if len(statements) != 1 or statements[0].executable_comment:
        return None
    if any(t.kind == Tok.VARIABLE for t in statements[0].tokens):
        return None
    try:
        root = _parse(statements[0].text.decode("utf-8"))
    except (_Unparsable, UnicodeDecodeError):
        return None
    if not isinstance(root, (exp.Update, exp.Delete)) or root.args.get("with_"):
        return None
    where = root.args.get("where")
    if not isinstance(where, exp.Where):
        return None
    refs, targets, _ = (
        _update_targets(root) if isinstance(root, exp.Update) else _delete_targets(root)
    )
    if len(refs) != 1 or len(targets) != 1 or not isinstance(targets[0], exp.Table):
        return None
    table = targets[0].copy()
    query = exp.select(exp.Count(this=exp.Star())).from_(table).where(where.this.copy())
    return query.sql(dialect="mysql")


# -- masked columns ----------------------------------------------------------------------------
#
# Result-set masking matches a column's origin (schema.table.column in the result's column
# definition), and the server keeps that origin only for a column that the outermost
# SELECT returns as it is. Everywhere else (an expression over the column, a UNION branch,
# a derived table or CTE, a subquery, a copy into a table or a variable, a condition that
# probes it) the origin is lost or the value never comes back at all. masked_uses() finds
# those uses before a statement is forwarded; mask_rewrite() replaces them with SQL that
# computes the masked value.
#
# Reading a text into column references, each with where it sits and the base tables it
# may come from, depends only on the text and its lexing: it is cached by (text, mode).
# Which references are masked is asked of the caller's predicate on every call. Whatever
# the reading cannot place is "not understood" when the statement names a table with a
# masked column (fail closed).


@dataclass(frozen=True, slots=True)
class MaskedUse:
    """A use of a masked column that result-set masking cannot see."""

    column: str  # "schema.table.column" as resolved; "schema.table.*": any of its columns
    where: str  # "inside UPPER()", "in WHERE", "in a UNION", "copied by INSERT ... SELECT", ...
    # (schema, table, column) as the masking rules match them: a name may hold a dot, so
    # the parts are never read back from ``column``; ("*", "*", "*"): not understood
    origin: tuple[str, str, str]


# (schema, table, column) -> whether that column is masked; column "*" asks whether any
# column of the table is. Names arrive lower-cased; the schema is "" for an unqualified
# table when the session has no default schema (the server refuses such a statement).
IsMasked = Callable[[str, str, str], bool]
# (schema, table, column) -> the strategy of a masked column ("redact", "null", "last4",
# "hash"), None when it is not masked; column "*" as for IsMasked.
MaskedAs = Callable[[str, str, str], str | None]

_REPLACE, _COVERED, _NO_FIX = 0, 1, 2  # how mask_rewrite treats a reference

_NOT_UNDERSTOOD = "not understood"
NOT_UNDERSTOOD = _NOT_UNDERSTOOD
"""The ``where`` of a use in a statement (or a part) the gateway cannot read: its
column names a word of the text that a rule matches, not a column it uses."""


@dataclass(frozen=True, slots=True)
class _Ref:
    """One reference to a column (or "*", every column) of a base table."""

    column: str  # lower-case name; "*": every column; "": unknown (an unreadable text)
    tables: tuple[tuple[str | None, str], ...]  # (schema, None: the default; table) it may be of
    where: str
    span: tuple[int, int] | None = None  # its characters in the text, when it may be replaced
    alias: str | None = None  # a bare select-list item: the name its replacement must keep
    fix: int = _NO_FIX  # _REPLACE: replace span; _COVERED: masked once the others are
    # with column "": a system table named without its schema (``general_log``) is that
    # schema's only while it is the default one: here that schema, "" for always
    home: str = ""


def _counts(ref: _Ref, default_db: str | None) -> bool:
    """Whether a reference to no column in particular (``ref.column`` "") counts where
    unqualified names are read in ``default_db`` (None: not known, so it counts): an
    application's own ``slow_log`` is not ``mysql.slow_log``."""
    return not ref.home or not default_db or default_db.lower() == ref.home


class _Source(NamedTuple):
    """A FROM or JOIN item as its query refers to it."""

    name: str  # alias, else the table's name (lower case)
    table: tuple[str | None, str] | None  # a base table: (schema or None, name)
    exposed: tuple[_Ref, ...]  # a derived table, CTE or table function: what it selects
    what: str  # "table", "derived table", "CTE", "table function", "VALUES list"
    written: str = ""  # the name as the statement writes it (the server may compare case)


#: What _Scope.source returns for a qualifier that names more than one source.
_AMBIGUOUS = _Source("", None, (), "ambiguous name", "")


class _Item(NamedTuple):
    """One select-list item: its name and the references it is made of."""

    name: str | None
    refs: tuple[_Ref, ...]
    plain: bool  # returned as it is by the outermost SELECT: result masking sees it
    star: bool = False  # `*` or `t.*`: it stands for several columns


class _Scope:
    """The sources and CTE names a query sees; outer scopes for correlated references."""

    __slots__ = ("parent", "sources", "ctes", "cte_limit")

    def __init__(self, parent: _Scope | None, cte_limit: _Scope | None = None) -> None:
        self.parent = parent
        self.sources: list[_Source] = []
        self.ctes: dict[str, tuple[_Ref, ...]] = {}
        # A CTE's body: the scope of its WITH, the last whose CTE names it sees
        self.cte_limit = cte_limit

    def cte(self, name: str) -> tuple[_Ref, ...] | None:
        """What the CTE of that name selects, None when none is in scope. The body of a
        CTE sees its own WITH's names, not those of a WITH around that one's query
        (MariaDB 10.11 reads the table there)."""
        scope: _Scope | None = self
        limit: _Scope | None = None
        while scope is not None:
            found = scope.ctes.get(name)
            if found is not None:
                return found
            if scope is limit:
                return None
            if limit is None:
                limit = scope.cte_limit
            scope = scope.parent
        return None

    def source(self, name: str, written: str) -> _Source | None:
        """The source a qualifier names (``name`` lower-cased, ``written`` as written),
        None when none does. The server compares table names and aliases with their case
        or without it (``lower_case_table_names``): in the innermost scope with a match,
        one written the same way is the source either way; a match only in another case
        (``d`` for ``D``) may not be, the server may look further out, so that is
        ``_AMBIGUOUS``."""
        scope: _Scope | None = self
        while scope is not None:
            matches = [src for src in scope.sources if src.name == name]
            if matches:
                exact = next((src for src in matches if src.written == written), None)
                return _AMBIGUOUS if exact is None else exact
            scope = scope.parent
        scope = self
        while scope is not None:  # a table named by its own name although it has an alias
            for src in scope.sources:
                if src.table is not None and src.table[1] == name:
                    return src
            scope = scope.parent
        return None

    def named(self, name: str, written: str) -> list[_Source] | None:
        """Every source a qualified column's qualifier may name, innermost first, None
        when it names none (``_AMBIGUOUS`` as for ``source``). The server reads
        ``c.col`` in the innermost scope with a source ``c`` only when that source has
        a column ``col``; else it looks further out (``SELECT (SELECT c.card FROM other
        c) FROM customers c`` reads customers.card), and which sources have the column
        is not known here: so every source of that name in this scope and the outer
        ones."""
        first = self.source(name, written)
        if first is None or first is _AMBIGUOUS:
            return None if first is None else [first]
        found = [first]
        scope: _Scope | None = self
        while scope is not None:
            found.extend(src for src in scope.sources if src.name == name and src is not first)
            scope = scope.parent
        return found

    def tables(self) -> tuple[tuple[str | None, str], ...]:
        """Every base table in this scope and the outer ones: an unqualified column may be
        of any of them."""
        found: dict[tuple[str | None, str], None] = {}
        scope: _Scope | None = self
        while scope is not None:
            for src in scope.sources:
                if src.table is not None:
                    found[src.table] = None
            scope = scope.parent
        return tuple(found)


_SET_OPERATIONS: dict[type, str] = {
    exp.Union: "in a UNION",
    exp.Intersect: "in an INTERSECT",
    exp.Except: "in an EXCEPT",
}
_OPERATORS: dict[type, str] = {
    exp.EQ: "=",
    exp.NEQ: "<>",
    exp.NullSafeEQ: "<=>",
    exp.GT: ">",
    exp.GTE: ">=",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.Like: "LIKE",
    exp.RegexpLike: "REGEXP",
    exp.Add: "+",
    exp.Sub: "-",
    exp.Mul: "*",
    exp.Div: "/",
    exp.IntDiv: "DIV",
    exp.Mod: "%",
    exp.DPipe: "||",
    exp.BitwiseAnd: "&",
    exp.BitwiseOr: "|",
    exp.BitwiseXor: "^",
    exp.BitwiseNot: "~",
    exp.BitwiseLeftShift: "<<",
    exp.BitwiseRightShift: ">>",
    exp.And: "AND",
    exp.Or: "OR",
    exp.Xor: "XOR",
    exp.Not: "NOT",
    exp.Neg: "-",
    exp.Is: "IS",
    exp.In: "IN",
    exp.Between: "BETWEEN",
}
# Functions whose argument must be a column name: a replacement expression would not parse.
_COLUMN_ARGUMENT = frozenset({"VALUES", "VALUE", "DEFAULT"})
# Nodes that hold no column reference.
_LEAVES = (
    exp.Literal,
    exp.Null,
    exp.Boolean,
    exp.Placeholder,
    exp.Parameter,
    exp.SessionParameter,
    exp.DataType,
    exp.TableAlias,
)


def _where(label: str | None, chain: tuple[str, ...]) -> str:
    """Innermost first: "inside UPPER() in WHERE in a derived table"."""
    parts = [label] if label else []
    for part in reversed(chain):
        if not parts or parts[-1] != part:
            parts.append(part)
    return " ".join(parts) or "in an expression"


def _function_label(node: exp.Expr) -> str | exp.Func | None:
    """What a node makes of the references inside it: a label, or a function whose name
    is read when a reference is found (see _Uses.label)."""
    if isinstance(node, exp.Case):
        return "inside CASE"
    if isinstance(node, exp.Collate):
        return "inside COLLATE"
    if isinstance(node, exp.If) and isinstance(node.parent, exp.Case):
        return None  # a WHEN branch: the CASE names it
    if isinstance(node, exp.Anonymous):
        return f"inside {node.name.upper()}()"
    if isinstance(node, exp.Func) and not isinstance(node, (exp.Connector, exp.SubqueryPredicate)):
        return node
    return None


_CALL_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\(")


def _call_label(node: exp.Func) -> str:
    """ "inside NAME()" with the name MySQL spells the function with (sqlglot reads
    IFNULL as COALESCE, LOCATE as STR_POSITION, ...)."""
    try:
        text = node.sql(dialect="mysql")
    except Exception:  # a node the generator cannot write: its class names it
        text = ""
    m = _CALL_NAME.match(text)
    if m is not None:
        return f"inside {m.group(1).upper()}()"
    if isinstance(node, (exp.JSONExtract, exp.JSONExtractScalar)):
        arrow = "->>" if isinstance(node, exp.JSONExtractScalar) else "->"
        return f"inside the {arrow} operator"
    return f"inside {type(node).__name__.upper()}()"


def _operator_label(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Paren):
        return "inside parentheses"
    symbol = _OPERATORS.get(type(node))
    if symbol is None and isinstance(node, (exp.Binary, exp.Unary, exp.Predicate)):
        symbol = type(node).__name__.upper()
    return f"inside the {symbol} operator" if symbol else None


class _Uses:
    """One walk of a parsed statement: every reference to a base table's column, with
    where it sits. Plain projections of the outermost SELECT are kept apart (as items),
    everything else is appended to ``refs``."""

    def __init__(self, base: int | None) -> None:
        self.base = base  # where the parsed text starts in the whole text; None: no rewrite
        self.refs: list[_Ref] = []
        self.placed: set[int] = set()  # Column and Star nodes the walk has placed
        self.confused = False  # a node it could not place: the statement is not understood
        self.labels: dict[int, str] = {}  # function node id -> "inside NAME()"

    # -- statements ----------------------------------------------------------------------

    def statement(self, root: exp.Expr, kind: str, into: str | None) -> None:
        if isinstance(root, exp.Query):
            copy = (f"copied by SELECT ... {into}",) if into else ()
            self.query(root, None, (), copy, (), outermost=True)
        elif isinstance(root, exp.Values):
            self.expr(root, _Scope(None), ())
        elif isinstance(root, exp.Insert):
            self.insert(root, "REPLACE" if kind == "REPLACE" else "INSERT")
        elif isinstance(root, exp.Update):
            self.write(root, ("of an UPDATE",))
        elif isinstance(root, exp.Delete):
            self.write(root, ("of a DELETE",))
        elif isinstance(root, exp.Create):
            source = root.args.get("expression")
            if isinstance(source, exp.Query):
                if kind == "CREATE VIEW":
                    copied, part = "exposed by CREATE VIEW", "of CREATE VIEW"
                else:
                    copied, part = "copied by CREATE TABLE ... SELECT", "of CREATE TABLE ... SELECT"
                self.query(source, None, (), (copied,), (part,))
            for reference in root.find_all(exp.Reference):
                self.referenced(reference)
            for like in root.find_all(exp.LikeProperty):
                self.copied_definition(like)
        elif isinstance(root, exp.Set):
            for item in root.expressions:
                assignment = item.this if isinstance(item, exp.SetItem) else None
                if not isinstance(assignment, exp.EQ):
                    self.confused = True
                    continue
                name = assignment.this.sql(dialect="mysql")
                self.expr(assignment.expression, _Scope(None), (f"assigned to {name}",))
        else:
            self.confused = True
        for node in root.walk():
            if isinstance(node, (exp.Column, exp.Star)) and id(node) not in self.placed:
                self.confused = True
                break

    def referenced(self, reference: exp.Reference) -> None:
        """A FOREIGN KEY's REFERENCES t (col): whether a value is accepted then says
        whether col holds it, an oracle for the column's values."""
        target = reference.this
        table = target.this if isinstance(target, exp.Schema) else target
        if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
            self.confused = True
            return
        source = (table.db.lower() or None, table.name.lower())
        columns = target.expressions if isinstance(target, exp.Schema) else []
        for column in columns or [exp.to_identifier("*")]:
            name = column.name.lower() if isinstance(column, exp.Identifier) else "*"
            self.refs.append(_Ref(name, (source,), "referenced by a FOREIGN KEY"))

    def copied_definition(self, like: exp.LikeProperty) -> None:
        """CREATE TABLE ... LIKE t copies t's columns with their defaults, which result
        masking masks for a masked column of t but not for the copy's (a row inserted
        with the default returns it, unmasked)."""
        table = like.this
        if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
            self.confused = True
            return
        source = (table.db.lower() or None, table.name.lower())
        self.refs.append(_Ref("*", (source,), "copied by CREATE TABLE ... LIKE, defaults included"))

    def statistics(self, table: exp.Table) -> None:
        """Tables that hold column values or statement texts whatever the masking:
        mysql.column_stats (the lowest and highest value and a histogram of each column
        ANALYZE ... PERSISTENT reached), InnoDB's lock tables (the key values of the
        records other sessions lock) and full-text index tables (the words of indexed
        columns), the process list, performance_schema and the sys schema's views of them
        (the texts of other sessions' statements, literals included; every session shares
        the backend account)."""
        name, schema = table.name.lower(), table.db.lower()
        if schema in ("performance_schema", "sys"):
            self.refs.append(_Ref("", (), _OTHER_SESSIONS))
            return
        if name == "column_stats":
            home, where = "mysql", "in mysql.column_stats, which holds column values"
        elif name in _INNODB_VALUES:
            home, where = "information_schema", _INNODB_VALUES[name]
        elif name in _SESSION_TEXTS:
            home, where = "information_schema", _OTHER_SESSIONS
        elif name in _LOGGED_TEXTS:
            home, where = "mysql", _OTHER_SESSIONS
        else:
            return
        if schema == home:
            self.refs.append(_Ref("", (), where))
        elif not schema:  # the system table's only when its schema is the default one
            self.refs.append(_Ref("", (), where, home=home))

    def insert(self, root: exp.Insert, verb: str) -> None:
        scope = _Scope(None)
        self.with_(root, scope, ())
        target = root.this
        if isinstance(target, exp.Schema):
            target = target.this
        into = _Scope(None)
        if isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier):
            table = (target.db.lower() or None, target.name.lower())
            into.sources.append(_Source(table[1], table, (), "table", target.name))
        else:
            self.confused = True
        source = root.args.get("expression")
        selected: list[_Scope] = []
        if isinstance(source, exp.Query):
            self.query(
                source,
                scope,
                (),
                (f"copied by {verb} ... SELECT",),
                (f"of {verb} ... SELECT",),
                scope_out=selected,
            )
        elif isinstance(source, exp.Values):
            self.expr(source, into, (f"copied by {verb}",))
        elif source is not None:
            self.confused = True
        conflict = root.args.get("conflict")
        if isinstance(conflict, exp.OnConflict):
            for s in selected[:1]:
                into.sources.extend(s.sources)
            for assignment in conflict.expressions:
                self.assignment(assignment, into, ("in ON DUPLICATE KEY UPDATE",))
        self.returning(root, into, (f"of {verb}",))

    def returning(self, root: exp.Expr, scope: _Scope, chain: tuple[str, ...]) -> None:
        """MariaDB's INSERT/REPLACE/DELETE ... RETURNING: values of the rows written."""
        found = root.args.get("returning")
        if isinstance(found, exp.Returning):
            for item in found.expressions:
                self.expr(item, scope, (*chain, "in RETURNING"))

    def write(self, root: exp.Update | exp.Delete, chain: tuple[str, ...]) -> None:
        """UPDATE and DELETE: their table references, SET values and conditions."""
        scope = _Scope(None)
        self.with_(root, scope, chain)
        pending: list[exp.Join] = []
        if root.this is not None:
            self.source(root.this, scope, chain, pending)
        extra = root.args.get("from_")
        if isinstance(extra, exp.From):
            self.source(extra.this, scope, chain, pending)
        for item in root.args.get("using") or ():
            self.source(item, scope, chain, pending)
        for join in root.args.get("joins") or ():
            self.join(join, scope, chain, pending)
        for join in pending:
            self.condition(join, scope, chain)
        if isinstance(root, exp.Update):
            for assignment in root.expressions:
                self.assignment(assignment, scope, (*chain, "in SET"))
        self.returning(root, scope, chain)
        for key, label in (("where", "in WHERE"), ("order", "in ORDER BY"), ("limit", "in LIMIT")):
            value = root.args.get(key)
            if isinstance(value, exp.Where):
                value = value.this
            if isinstance(value, exp.Expr):
                self.expr(value, scope, (*chain, label))

    def assignment(self, node: exp.Expr, scope: _Scope, chain: tuple[str, ...]) -> None:
        """`column = value`: the column is written, not read."""
        if isinstance(node, exp.EQ) and isinstance(node.this, exp.Column):
            self.placed.add(id(node.this))
            self.expr(node.expression, scope, chain)
        else:
            self.expr(node, scope, chain)

    # -- queries ----------------------------------------------------------------------------

    def query(
        self,
        node: exp.Expr,
        parent: _Scope | None,
        chain: tuple[str, ...],
        copy: tuple[str, ...],
        label: tuple[str, ...],
        *,
        outermost: bool = False,
        exists: bool = False,
        scope_out: list[_Scope] | None = None,
    ) -> list[_Item]:
        """A query with its context: ``chain`` (outer to inner) where it sits, ``copy``
        what happens to what it selects, ``label`` what its clauses are part of."""
        if isinstance(node, exp.Subquery):
            inner = node.this
            if not isinstance(inner, (exp.Query, exp.Values)):
                self.confused = True
                return []
            items = self.query(
                inner,
                parent,
                chain,
                copy,
                label,
                outermost=outermost,
                exists=exists,
                scope_out=scope_out,
            )
            self.modifiers(node, _Scope(parent), (*chain, *label), items, ("this", "alias"))
            return items
        if isinstance(node, exp.Select):
            return self.select(node, parent, chain, copy, label, outermost, exists, scope_out)
        if isinstance(node, exp.SetOperation):
            return self.set_operation(node, parent, chain, copy, label)
        if isinstance(node, exp.Values):
            self.expr(node, _Scope(parent), (*chain, *copy))
            return []
        self.confused = True
        return []

    def select(
        self,
        node: exp.Select,
        parent: _Scope | None,
        chain: tuple[str, ...],
        copy: tuple[str, ...],
        label: tuple[str, ...],
        outermost: bool,
        exists: bool,
        scope_out: list[_Scope] | None,
    ) -> list[_Item]:
        scope = _Scope(parent)
        if scope_out is not None:
            scope_out.append(scope)
        clause = (*chain, *label)
        self.with_(node, scope, clause)
        plain_sources = self.sources(node, scope, clause)
        top = outermost and not chain and not copy and not label
        item_chain = (*chain, *copy)
        if top and not plain_sources:
            what = next((s.what for s in scope.sources if s.table is None), "derived table")
            item_chain = (f"in a SELECT that reads a {what}",)
        items: list[_Item] = []
        for item in node.expressions:
            target = item.this if isinstance(item, exp.Alias) else item
            name: str | None = None
            if isinstance(item, exp.Alias):
                name = item.alias.lower()
            elif isinstance(target, exp.Column) and not isinstance(target.this, exp.Star):
                name = target.name.lower()
            star = isinstance(target, exp.Star) or (
                isinstance(target, exp.Column) and isinstance(target.this, exp.Star)
            )
            plain = top and plain_sources and (star or isinstance(target, exp.Column))
            start = len(self.refs)
            if isinstance(item, exp.Aliases):
                self.confused = True
            elif star and exists:
                self.placed.update((id(target), id(target.this)))  # EXISTS (SELECT *) reads none
            else:
                self.expr(target, scope, item_chain, bare=not isinstance(item, exp.Alias))
            refs = tuple(self.refs[start:])
            if plain:
                del self.refs[start:]
            items.append(_Item(name, refs, plain, star))
        aliases = {
            item.alias.lower(): items[i]
            for i, item in enumerate(node.expressions)
            if isinstance(item, exp.Alias)
        }
        self.subquery_aliases(node, item_chain, aliases)
        self.modifiers(
            node, scope, clause, items, ("expressions", "from_", "joins", "with_"), aliases
        )
        return items

    def subquery_aliases(
        self, node: exp.Select, chain: tuple[str, ...], aliases: dict[str, _Item]
    ) -> None:
        """A subquery in the select list may name an item before it by its alias
        (``SELECT card AS x, (SELECT UPPER(x))``): the server reads that item there, so
        what it is made of is used inside the subquery."""
        if not aliases:
            return
        here = _where(None, (*chain, "in a subquery"))
        for item in node.expressions:
            for column in item.find_all(exp.Column):
                if column.table or column.find_ancestor(exp.Select) is node:
                    continue
                found = aliases.get(column.name.lower())
                if found is not None:
                    self.follow(found, f"{here}, by its select-list alias {column.name}")

    def modifiers(
        self,
        node: exp.Expr,
        scope: _Scope,
        clause: tuple[str, ...],
        items: list[_Item],
        skip: tuple[str, ...],
        aliases: dict[str, _Item] | None = None,
    ) -> None:
        """A query's clauses after its select list and sources. ``aliases``: the names
        ORDER BY, GROUP BY and HAVING may use for select-list items (all item names when
        None: a set operation's or parenthesised query's ORDER BY sees only those)."""
        if aliases is None:
            aliases = {item.name: item for item in items if item.name}
        for key, value in node.args.items():
            if key in skip or not isinstance(value, (exp.Expr, list)):
                continue
            if key == "where" and isinstance(value, exp.Where):
                self.expr(value.this, scope, (*clause, "in WHERE"))
            elif key == "having" and isinstance(value, exp.Having):
                self.by_item(value.this, scope, (*clause, "in HAVING"), items, aliases, False)
            elif key == "group" and isinstance(value, exp.Group):
                for part in value.expressions:
                    self.by_item(part, scope, (*clause, "in GROUP BY"), items, aliases, True)
                for k, v in value.args.items():
                    if k != "expressions":
                        self.any_expr(v, scope, (*clause, "in GROUP BY"))
            elif key == "order" and isinstance(value, exp.Order):
                for part in value.expressions:
                    target = part.this if isinstance(part, exp.Ordered) else part
                    self.by_item(target, scope, (*clause, "in ORDER BY"), items, aliases, True)
            elif key in ("limit", "offset"):
                self.any_expr(value, scope, (*clause, "in LIMIT"))
            elif key == "windows":
                self.any_expr(value, scope, (*clause, "in WINDOW"))
            elif key in ("distinct", "hint", "locks", "kind", "operation_modifiers"):
                continue  # no column reference; one would stay unplaced, and confuse
            else:
                self.any_expr(value, scope, (*clause, f"in {key.upper()}"))

    def by_item(
        self,
        node: exp.Expr,
        scope: _Scope,
        chain: tuple[str, ...],
        items: list[_Item],
        aliases: dict[str, _Item],
        positional: bool,
    ) -> None:
        """An ORDER BY, GROUP BY or HAVING expression, which may name a select-list item
        by position or alias: what that item is made of is used there too."""
        here = _where(None, chain)
        if positional and isinstance(node, exp.Literal) and not node.is_string:
            try:
                position = int(node.name)
            except ValueError:
                position = 0
            where = f"{here}, by select-list position {position}"
            before = items[: position - 1] if position > 0 else []
            if any(item.star for item in before):
                # A `*` before it expands to an unknown number of columns: any it covers.
                for earlier in before:
                    if earlier.star:
                        self.follow(earlier, where)
            if 1 <= position <= len(items):
                self.follow(items[position - 1], where)
            return
        names = [node] if isinstance(node, exp.Column) else list(node.find_all(exp.Column))
        for column in names:
            item = aliases.get(column.name.lower()) if not column.table else None
            if item is not None:
                self.follow(item, f"{here}, by its select-list alias {column.name}")
        self.expr(node, scope, chain)

    def follow(self, item: _Item, where: str) -> None:
        fix = _NO_FIX if item.plain else _COVERED  # a rewritten item is masked already
        self.refs.extend(replace(r, where=where, span=None, alias=None, fix=fix) for r in item.refs)

    def set_operation(
        self,
        node: exp.SetOperation,
        parent: _Scope | None,
        chain: tuple[str, ...],
        copy: tuple[str, ...],
        label: tuple[str, ...],
    ) -> list[_Item]:
        what = next(
            (text for cls, text in _SET_OPERATIONS.items() if isinstance(node, cls)),
            "in a set operation",
        )
        scope = _Scope(parent)
        self.with_(node, scope, (*chain, *label))
        branches = [
            self.query(branch, scope, chain, (*copy, what), (*label, what))
            for branch in (node.this, node.expression)
        ]
        items: list[_Item] = []
        for i in range(max(len(b) for b in branches)):
            parts = [b[i] for b in branches if i < len(b)]
            refs = tuple(r for part in parts for r in part.refs)
            items.append(_Item(parts[0].name, refs, False, any(p.star for p in parts)))
        self.modifiers(
            node, _Scope(scope), (*chain, *label), items, ("this", "expression", "with_")
        )
        return items

    def with_(self, node: exp.Expr, scope: _Scope, chain: tuple[str, ...]) -> None:
        w = node.args.get("with_")
        if w is None:
            return
        if not isinstance(w, exp.With):
            self.confused = True
            return
        for cte in w.expressions:
            name = cte.alias.lower()
            if w.args.get("recursive"):
                scope.ctes[name] = ()
            body = _Scope(scope, cte_limit=scope)
            items = self.query(cte.this, body, (*chain, "in a CTE"), (), ())
            scope.ctes[name] = tuple(r for item in items for r in item.refs)

    # -- sources --------------------------------------------------------------------------

    def sources(self, node: exp.Select, scope: _Scope, chain: tuple[str, ...]) -> bool:
        """Adds a SELECT's FROM and JOIN items to its scope; whether all are base tables."""
        plain = True
        pending: list[exp.Join] = []
        first = node.args.get("from_")
        if isinstance(first, exp.From):
            plain = self.source(first.this, scope, chain, pending) and plain
        for join in node.args.get("joins") or ():
            plain = self.join(join, scope, chain, pending) and plain
        for join in pending:  # conditions once every source is known
            self.condition(join, scope, chain)
        return plain and not any(j.method.upper() == "NATURAL" for j in pending)

    def join(
        self, join: object, scope: _Scope, chain: tuple[str, ...], pending: list[exp.Join]
    ) -> bool:
        if not isinstance(join, exp.Join) or join.this is None:
            self.confused = True
            return False
        plain = self.source(join.this, scope, chain, pending)
        pending.append(join)
        return plain

    def source(
        self, item: exp.Expr, scope: _Scope, chain: tuple[str, ...], pending: list[exp.Join]
    ) -> bool:
        plain = True
        written = item.alias if isinstance(item, (exp.Table, exp.Subquery)) else ""
        alias = written.lower()
        if isinstance(item, exp.Table):
            target = item.this
            self.statistics(item)
            if isinstance(target, exp.Identifier):
                name = target.name.lower()
                written = written or target.name
                db = item.db.lower() or None
                cte = scope.cte(name) if db is None else None
                if item.args.get("catalog"):
                    self.confused = True
                if cte is not None:
                    scope.sources.append(_Source(alias or name, None, cte, "CTE", written))
                    plain = False
                else:
                    source = _Source(alias or name, (db, name), (), "table", written)
                    scope.sources.append(source)
            else:  # JSON_TABLE(...) and other table functions
                start = len(self.refs)
                self.expr(target, scope, (*chain, "in FROM"))
                exposed = tuple(self.refs[start:])
                scope.sources.append(_Source(alias, None, exposed, "table function", written))
                plain = False
        elif isinstance(item, exp.Subquery):
            inner = item.this
            if isinstance(inner, exp.Table) or (isinstance(inner, exp.Subquery) and not alias):
                plain = self.source(inner, scope, chain, pending)  # ( joined tables )
            else:
                items = self.query(inner, scope, (*chain, "in a derived table"), (), ())
                exposed = tuple(r for i in items for r in i.refs)
                scope.sources.append(_Source(alias, None, exposed, "derived table", written))
                plain = False
        elif isinstance(item, exp.Values):
            self.expr(item, scope, (*chain, "in FROM"))
            written = item.alias
            scope.sources.append(_Source(written.lower(), None, (), "VALUES list", written))
            plain = False
        else:
            start = len(self.refs)
            self.expr(item, scope, (*chain, "in FROM"))
            exposed = tuple(self.refs[start:])
            written = item.alias
            scope.sources.append(_Source(written.lower(), None, exposed, "table function", written))
            plain = False
        for join in item.args.get("joins") or ():
            plain = self.join(join, scope, chain, pending) and plain
        return plain

    def condition(self, join: exp.Join, scope: _Scope, chain: tuple[str, ...]) -> None:
        on = join.args.get("on")
        if isinstance(on, exp.Expr):
            self.expr(on, scope, (*chain, "in ON"))
        for name in join.args.get("using") or ():
            if isinstance(name, exp.Column):
                self.column(name, scope, _where(None, (*chain, "in USING")), False, False)
            elif isinstance(name, exp.Identifier):
                self.loose_name(name, scope, (*chain, "in USING"))
            else:
                self.confused = True
        if join.method.upper() == "NATURAL":  # compares every column of the same name
            where = _where(None, (*chain, "in a NATURAL JOIN"))
            for src in scope.sources:
                if src.table is not None:
                    self.refs.append(_Ref("*", (src.table,), where))

    # -- expressions ---------------------------------------------------------------------------

    def any_expr(self, value: object, scope: _Scope, chain: tuple[str, ...]) -> None:
        if isinstance(value, exp.Expr):
            self.expr(value, scope, chain)
        elif isinstance(value, list):
            for v in value:
                if isinstance(v, exp.Expr):
                    self.expr(v, scope, chain)

    def expr(
        self,
        node: exp.Expr,
        scope: _Scope,
        chain: tuple[str, ...],
        function: str | exp.Func | None = None,
        operator: str | None = None,
        fixable: bool = True,
        bare: bool = False,
    ) -> None:
        """Every reference in an expression. ``function`` and ``operator``: the innermost
        function and operator around it, for the message."""
        if isinstance(node, exp.Column):
            where = _where(self.label(function) or (None if chain else operator), chain)
            self.column(node, scope, where, fixable, bare)
            return
        if isinstance(node, exp.Star):
            self.placed.add(id(node))
            if not isinstance(node.parent, exp.Func):  # COUNT(*) reads no value
                label = self.label(function) or (None if chain else operator)
                self.star(scope, node, _where(label, chain))
            return
        if isinstance(node, (exp.Subquery, exp.Select, exp.SetOperation)):
            self.query(node, scope, (*chain, "in a subquery"), (), ())
            return
        if isinstance(node, exp.Exists) and isinstance(node.this, exp.Query):
            self.query(node.this, scope, (*chain, "in a subquery"), (), (), exists=True)
            return
        if isinstance(node, exp.Window):
            if not isinstance(node.this, exp.Identifier):  # a named window's definition
                self.expr(node.this, scope, chain, function, operator, fixable)
            for part in node.args.get("partition_by") or ():
                self.expr(part, scope, (*chain, "in a window PARTITION BY"), fixable=fixable)
            for key, text in (("order", "in a window ORDER BY"), ("spec", "in a window frame")):
                value = node.args.get(key)
                if isinstance(value, exp.Expr):
                    self.expr(value, scope, (*chain, text), fixable=fixable)
            return
        if isinstance(node, exp.Alias):
            self.expr(node.this, scope, chain, function, operator, fixable)
            return
        if isinstance(node, exp.PropertyEQ) and isinstance(node.this, exp.Parameter):
            assigned = f"assigned to {node.this.sql(dialect='mysql')}"
            self.expr(node.expression, scope, chain, assigned, operator, fixable)
            return
        if isinstance(node, (exp.Identifier, exp.Var)):
            # A bare name the parser did not read as a column may still be one.
            self.loose_name(
                node, scope, chain, self.label(function) or (None if chain else operator)
            )
            return
        if isinstance(node, _LEAVES):
            return
        if isinstance(node, (exp.Table, exp.Aliases)):
            self.confused = True
            return
        inside = _function_label(node)
        if inside is not None:
            function = inside
        else:
            operator = _operator_label(node) or operator
        if isinstance(node, exp.MatchAgainst) or (
            isinstance(node, exp.Anonymous) and node.name.upper() in _COLUMN_ARGUMENT
        ):
            fixable = False
        for value in node.args.values():
            if isinstance(value, exp.Expr):
                self.expr(value, scope, chain, function, operator, fixable)
            elif isinstance(value, list):
                for v in value:
                    if isinstance(v, exp.Expr):
                        self.expr(v, scope, chain, function, operator, fixable)

    def label(self, function: str | exp.Func | None) -> str | None:
        if function is None or isinstance(function, str):
            return function
        found = self.labels.get(id(function))
        if found is None:
            found = self.labels[id(function)] = _call_label(function)
        return found

    def column(
        self, node: exp.Column, scope: _Scope, where: str, fixable: bool, bare: bool
    ) -> None:
        self.placed.add(id(node))
        name = node.this
        qualifier = node.table.lower()
        db = node.db.lower()
        if node.args.get("catalog"):
            self.confused = True
            return
        if isinstance(name, exp.Star):
            self.placed.add(id(name))
            self.star(scope, node, where)
            return
        if not isinstance(name, exp.Identifier):
            self.confused = True
            return
        tables: tuple[tuple[str | None, str], ...]
        if db:
            # shop.c.card: MariaDB reads c as an alias in scope when shop is its table's
            # schema, so the column may be that table's as well as shop.c's
            tables = ((db, qualifier),)
            named = scope.named(qualifier, node.table) or []
            if any(src is _AMBIGUOUS or src.table is None for src in named):
                self.confused = True
                return
            for src in named:
                if src.table is not None and src.table not in tables:
                    tables = (*tables, src.table)
        elif qualifier:
            sources = scope.named(qualifier, node.table)
            if sources is None:
                tables = ((None, qualifier),)
            elif any(src is _AMBIGUOUS for src in sources):
                self.confused = True
                return
            else:
                # a derived table's or CTE's column: its own references are checked
                tables = tuple(dict.fromkeys(src.table for src in sources if src.table))
        else:
            tables = scope.tables()
        if not tables:
            return
        span = self.span(node) if fixable else None
        self.refs.append(
            _Ref(
                name.name.lower(),
                tables,
                where,
                span,
                name.name if bare else None,
                _REPLACE if span is not None else _NO_FIX,
            )
        )

    def loose_name(
        self,
        node: exp.Identifier | exp.Var,
        scope: _Scope,
        chain: tuple[str, ...],
        label: str | None = None,
    ) -> None:
        tables = scope.tables()
        if tables and node.name:
            self.refs.append(_Ref(node.name.lower(), tables, _where(label, chain)))

    def star(self, scope: _Scope, node: exp.Column | exp.Star, where: str) -> None:
        """`*` or `t.*` outside a plain projection: every column of a base table, and what
        a derived table or CTE selects (its own references, masked once they are)."""
        sources: list[_Source]
        if isinstance(node, exp.Column):
            qualifier = node.table.lower()
            db = node.db.lower()
            src = scope.source(qualifier, node.table)
            if src is _AMBIGUOUS or (db and src is not None and src.table is None):
                self.confused = True
                return
            if src is None:
                sources = [_Source(qualifier, (db or None, qualifier), (), "table")]
            elif db:  # shop.c.*: the alias c in scope, or table shop.c (see column())
                sources = [src, _Source(qualifier, (db, qualifier), (), "table")]
            else:
                sources = [src]
            text = f"{qualifier}.*"
        else:
            sources = scope.sources
            text = "*"
        for src in sources:
            if src.table is not None:
                self.refs.append(_Ref("*", (src.table,), where))
            else:
                through = f"through {text} over the {src.what} {src.name}".rstrip()
                if where != "in an expression":
                    through = f"{through} {where}"
                self.refs.extend(
                    replace(r, where=through, span=None, alias=None, fix=_COVERED)
                    for r in src.exposed
                )

    def span(self, node: exp.Column) -> tuple[int, int] | None:
        if self.base is None:
            return None
        starts: list[int] = []
        ends: list[int] = []
        for key in ("db", "table", "this"):
            part = node.args.get(key)
            if part is None:
                continue
            meta = part.meta if isinstance(part, exp.Identifier) else {}
            start, end = meta.get("start"), meta.get("end")
            if not isinstance(start, int) or not isinstance(end, int):
                return None
            starts.append(start)
            ends.append(end)
        if not starts:
            return None
        return self.base + min(starts), self.base + max(ends) + 1


_OTHER_SESSIONS = (
    "in the process list, InnoDB's status, performance_schema, the sys schema, the query "
    "cache, the general or slow query log or the binary log, which show the texts of other "
    "sessions' statements"
)
# information_schema tables with the texts of other sessions' statements (QUERY_CACHE_INFO:
# the query_cache_info plugin's, the cached statements)
_SESSION_TEXTS = frozenset({"processlist", "innodb_trx", "query_cache_info"})
# mysql tables the server writes statement texts to (log_output = TABLE)
_LOGGED_TEXTS = frozenset({"general_log", "slow_log"})
_LOGS = frozenset({"BINLOG", "RELAYLOG"})  # SHOW ... EVENTS of these
_OTHER_PLANS = (
    "in EXPLAIN ... FOR CONNECTION or SHOW EXPLAIN/ANALYZE ... FOR, whose plan of another "
    "session's statement shows its conditions with their literals"
)
_REPLICATION_ERRORS = (
    "in the replication status (SHOW SLAVE STATUS, SHOW REPLICA STATUS), whose last error "
    "quotes the replicated statement or row that failed, with its values"
)
_LOCKED_VALUES = (
    "in InnoDB's lock tables (information_schema.INNODB_LOCKS, INNODB_LOCK_WAITS), which "
    "show the key values of the records other sessions lock"
)
_INDEXED_WORDS = (
    "in InnoDB's full-text index tables (information_schema.INNODB_FT_INDEX_TABLE, "
    "INNODB_FT_INDEX_CACHE), which show the words of an indexed column"
)
# information_schema tables that show values held in rows (see _Uses.statistics)
_INNODB_VALUES = {
    "innodb_locks": _LOCKED_VALUES,
    "innodb_lock_waits": _LOCKED_VALUES,
    "innodb_ft_index_table": _INDEXED_WORDS,
    "innodb_ft_index_cache": _INDEXED_WORDS,
}

# Kinds that carry no column value to the client, into a table or into a variable.
_VALUELESS = frozenset(
    {
        "SHOW",
        "DESCRIBE",
        "USE",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "START TRANSACTION",
        "SAVEPOINT",
        "RELEASE SAVEPOINT",
        "DROP TABLE",
        "DROP VIEW",
        "DROP INDEX",
        "DROP DATABASE",
        "CREATE DATABASE",
        "TRUNCATE",
        "LOCK TABLES",
        "UNLOCK TABLES",
        "DEALLOCATE PREPARE",
        "KILL",
    }
)
_READ_BY_PARSER = frozenset(
    {"SELECT", "INSERT", "REPLACE", "UPDATE", "DELETE", "CREATE TABLE", "CREATE VIEW", "SET"}
)
_MAX_NESTING = 4  # EXPLAIN / SET STATEMENT / PREPARE of a statement holding another


def _text_refs(sql: bytes, mode: LexMode) -> tuple[_Ref, ...]:
    """The references of every statement of a text (a USE between them changes the
    default schema of the ones after it)."""
    if len(sql) > _CACHE_TEXT_LIMIT:
        return _read_refs(sql, mode)
    return _text_refs_cached(sql, mode)


@lru_cache(maxsize=4_096)
def _text_refs_cached(sql: bytes, mode: LexMode) -> tuple[_Ref, ...]:
    return _read_refs(sql, mode)


def _read_refs(sql: bytes, mode: LexMode, depth: int = 0, base: int | None = 0) -> tuple[_Ref, ...]:
    """``base``: where sql starts in the text being rewritten (characters), None when
    its references cannot be replaced in place."""
    try:
        statements = split_statements(sql, mode)
    except LexError:
        return (_Ref("", (), _NOT_UNDERSTOOD),)
    if base is not None:
        try:
            sql.decode("utf-8")
        except UnicodeDecodeError:
            base = None
    refs: list[_Ref] = []
    schema: str | None = None  # made current by a USE earlier in the text
    for stmt in statements:
        offset = None
        if base is not None:
            offset = base + len(sql[: stmt.start].decode("utf-8"))
        try:
            found, used = _statement_refs(stmt, mode, offset, depth)
        except RecursionError:
            found, used = [_not_understood(stmt.tokens)], None
        except Exception as err:  # fail closed on whatever the parser's tree held
            _log.warning("cannot find masked columns in a statement: %s", type(err).__name__)
            found, used = [_not_understood(stmt.tokens)], None
        if schema is not None:
            refs.extend(r for r in (_in_schema(r, schema) for r in found) if r is not None)
        else:
            refs.extend(found)
        if used is not None:
            schema = used
    return tuple(refs)


def _in_schema(ref: _Ref, schema: str) -> _Ref | None:
    """``ref`` read after a USE of ``schema``; None for a system table named alone
    (``ref.home``) that the USE makes another schema's."""
    if ref.home:
        return replace(ref, home="") if schema.lower() == ref.home else None
    return replace(ref, tables=tuple((s if s is not None else schema, t) for s, t in ref.tables))


def _not_understood(tokens: Sequence[Token]) -> _Ref:
    """Every table a statement may name: it is not understood when one has a masked
    column. Each name alone (the default schema's table) and each `a.b` pair."""
    tables: dict[tuple[str | None, str], None] = {}
    for i, t in enumerate(tokens):
        if t.kind not in (Tok.WORD, Tok.IDENT):
            continue
        name = t.text.lower()
        tables[(None, name)] = None
        if punct_at(tokens, i + 1, ".") and i + 2 < len(tokens):
            after = tokens[i + 2]
            if after.kind in (Tok.WORD, Tok.IDENT):
                tables[(name, after.text.lower())] = None
    return _Ref("*", tuple(tables), _NOT_UNDERSTOOD)


def _statement_refs(
    stmt: Statement, mode: LexMode, offset: int | None, depth: int
) -> tuple[list[_Ref], str | None]:
    """One statement's references, and the schema it makes current (USE)."""
    if stmt.executable_comment or depth > _MAX_NESTING:
        return [_not_understood(stmt.tokens)], None
    o = outline_statement(stmt.text, mode)
    if o is None:
        return [], None
    v = _View(stmt.text, o.skeleton, stmt.plain, False, mode)
    v.set_tokens(stmt.tokens, stmt.start)
    kind, head = _kind(v)
    tokens = v.tokens
    if kind == "USE":
        if head < len(tokens) and tokens[head].kind in (Tok.WORD, Tok.IDENT):
            return [], tokens[head].text.lower()
        return [], None
    words = {t.text for t in tokens if t.kind is Tok.WORD} if kind == "SHOW" else set()
    if words & {"PROCESSLIST", "ENGINE"} or ("EVENTS" in words and words & _LOGS):
        # SHOW [FULL] PROCESSLIST; SHOW ENGINE INNODB STATUS quotes recent statements;
        # SHOW BINLOG|RELAYLOG EVENTS the logged statements (those of row events too)
        return [_Ref("", (), _OTHER_SESSIONS)], None
    if _explains_connection(tokens, kind, head):
        return [_Ref("", (), _OTHER_PLANS)], None
    if kind == "SHOW" and _shows_replication_status(tokens, head):
        return [_Ref("", (), _REPLICATION_ERRORS)], None
    if kind == "SHOW" and _filters_checksums(tokens, head):
        return [_Ref("checksum", (("information_schema", "tables"),), _CHECKSUM_FILTER)], None
    if kind == "SHOW" and _filters_defaults(tokens, head):
        return [_Ref("column_default", (("information_schema", "columns"),), _DEFAULT_FILTER)], None
    if kind in _VALUELESS and not (
        kind == "SHOW" and _subquery_spans(tokens, head, len(tokens))
    ):  # SHOW ... WHERE (SELECT ...): not analysed, not understood (below)
        return [], None
    if kind == "SET" and not any(t.kind is Tok.WORD and t.text.upper() == "SELECT" for t in tokens):
        return [], None  # variables set to literals and expressions: no table is read
    inner = _inner_statement(v, kind, head)
    if inner is not None:
        start, body, aligned = inner
        if start < 0:
            return [], None
        at = None
        if aligned and offset is not None:
            at = offset + len(v.raw[:start].decode("utf-8"))
        return list(_read_refs(body, mode, depth + 1, at)), None
    if kind not in _READ_BY_PARSER:
        return [_not_understood(tokens)], None
    flags = _skeleton_flags(v.skeleton, kind)
    text, aligned = _aligned_text(v, stmt, kind, flags)
    try:
        root = _parse(text)
    except _Unparsable:
        return [_not_understood(tokens)], None
    if _impossible_reading(root, text) is not None:
        return [_not_understood(tokens)], None
    into = None
    if kind == "SELECT":
        into = next(
            (
                label
                for flag, label in (
                    ("into_outfile", "INTO OUTFILE"),
                    ("into_dumpfile", "INTO DUMPFILE"),
                    ("into_variable", "INTO"),
                )
                if flag in flags
            ),
            None,
        )
    walk = _Uses(offset if aligned else None)
    walk.statement(root, kind, into)
    if walk.confused:
        return [*walk.refs, _not_understood(tokens)], None
    return walk.refs, None


_CHECKSUM_FILTER = "in the WHERE of SHOW TABLE STATUS"


def _filters_checksums(tokens: Sequence[Token], head: int) -> bool:
    """SHOW TABLE STATUS ... WHERE naming its Checksum column: a test of the live
    checksum of a table (``information_schema.TABLES.CHECKSUM``, which result masking
    hides), one bit per statement."""
    if word_at(tokens, head) != "TABLE" or word_at(tokens, head + 1) != "STATUS":
        return False
    where = next((i for i in range(head, len(tokens)) if word_at(tokens, i) == "WHERE"), None)
    return where is not None and any(
        t.kind in (Tok.WORD, Tok.IDENT) and t.text.lower() == "checksum" for t in tokens[where:]
    )


_DEFAULT_FILTER = "in the WHERE of SHOW COLUMNS"


def _filters_defaults(tokens: Sequence[Token], head: int) -> bool:
    """SHOW [FULL] COLUMNS|FIELDS ... WHERE naming its Default column: a test of a
    column's default (``information_schema.COLUMNS.COLUMN_DEFAULT``, which result
    masking masks for a masked column)."""
    i = head + 1 if word_at(tokens, head) == "FULL" else head
    if word_at(tokens, i) not in ("COLUMNS", "FIELDS"):
        return False
    where = next((j for j in range(i, len(tokens)) if word_at(tokens, j) == "WHERE"), None)
    return where is not None and any(
        t.kind in (Tok.WORD, Tok.IDENT) and t.text.lower() == "default" for t in tokens[where:]
    )


def _shows_replication_status(tokens: Sequence[Token], head: int) -> bool:
    """SHOW [ALL] SLAVE[S]|REPLICA[S] ['connection'] STATUS: on a replica, its Last_Error
    and Last_SQL_Error quote the replicated statement that failed (``Query: 'INSERT ...
    VALUES (1, '4111...')'``) or the duplicate key of a row event, values another
    session wrote."""
    i = head + 1 if word_at(tokens, head) == "ALL" else head
    if word_at(tokens, i) not in ("SLAVE", "SLAVES", "REPLICA", "REPLICAS"):
        return False
    return "STATUS" in {t.text for t in tokens[i + 1 :] if t.kind is Tok.WORD}


def _explains_connection(tokens: Sequence[Token], kind: str, head: int) -> bool:
    """EXPLAIN/DESCRIBE [EXTENDED | PARTITIONS | FORMAT = x] FOR CONNECTION n and SHOW
    EXPLAIN/ANALYZE [FORMAT = x] FOR n: the plan of another session's running statement,
    its conditions (``attached_condition``) with their literals."""
    if kind == "SHOW":
        return word_at(tokens, head) in ("EXPLAIN", "ANALYZE")
    if kind not in ("EXPLAIN", "ANALYZE"):
        return False
    i = _past_explain_options(tokens, head)
    return word_at(tokens, i) == "FOR" and word_at(tokens, i + 1) == "CONNECTION"


def _past_explain_options(tokens: Sequence[Token], i: int) -> int:
    """Where an EXPLAIN's statement (or FOR CONNECTION) starts: past EXTENDED,
    PARTITIONS and FORMAT = x."""
    while True:
        w = word_at(tokens, i)
        if w in ("EXTENDED", "PARTITIONS"):
            i += 1
        elif w == "FORMAT" and punct_at(tokens, i + 1, "="):
            i += 3
        else:
            return i


def _inner_statement(v: _View, kind: str, head: int) -> tuple[int, bytes, bool] | None:
    """EXPLAIN, ANALYZE, SET STATEMENT ... FOR, PREPARE and EXECUTE IMMEDIATE hold a
    statement: (where it starts in raw, its text, whether that text is raw's own bytes).
    Start -1: a statement holding no column value. None: not such a statement."""
    tokens = v.tokens
    n = len(tokens)
    if kind in ("EXPLAIN", "ANALYZE"):
        if kind == "ANALYZE" and word_at(tokens, head) in (
            "TABLE",
            "TABLES",
            "NO_WRITE_TO_BINLOG",
        ):
            return None  # statistics: not understood when the table has masked columns
        i = _past_explain_options(tokens, head)
        if i >= n or word_at(tokens, i) in _EXPLAINERS:
            return None
        start = v.start(tokens[i])
        return start, v.raw[start:], True
    if kind == "SET STATEMENT":
        i = _statement_for(tokens, n)
        if i + 1 >= n:
            return None
        start = v.start(tokens[i + 1])
        return start, v.raw[start:], True
    if kind in ("PREPARE", "EXECUTE"):
        if kind == "PREPARE":
            if word_at(tokens, head + 1) != "FROM":
                return None
            i, stop = head + 2, n
        else:
            if word_at(tokens, head) != "IMMEDIATE":
                return -1, b"", True  # EXECUTE name: its PREPARE was checked
            i = head + 1
            stop = next((j for j in range(i, n) if word_at(tokens, j) == "USING"), n)
        if i < stop and tokens[i].kind == Tok.WORD and tokens[i].text.startswith("_"):
            i += 1  # a character set introducer
        strings = tokens[i:stop]
        if not strings or any(t.kind != Tok.STRING for t in strings):
            return None
        body = b"".join(string_bytes(v.bytes_of(t), v.mode) for t in strings)
        return 0, body, False  # the text is inside a literal: not replaced in place
    return None


def _aligned_text(v: _View, stmt: Statement, kind: str, flags: set[str]) -> tuple[str, bool]:
    """The text sqlglot reads, and whether its characters sit where the statement's do
    (comments, INTO clauses and DML modifiers blanked with as many spaces, REPLACE
    spelled INSERT): then the parser's positions are the statement's."""
    raw = v.raw
    spans = [(s - stmt.start, e - stmt.start) for s, e in stmt.comments]
    if kind == "SELECT" and flags & {"into_outfile", "into_dumpfile", "into_variable"}:
        spans.extend((s, e) for s, e, _ in _into_clauses(v))
    tokens = v.tokens
    if kind != "SELECT" and _DML_MODIFIERS.match(v.skeleton):
        i = 1
        while word_at(tokens, i) in _DML_MODIFIER_WORDS:
            spans.append((v.start(tokens[i]), v.end(tokens[i])))
            i += 1
    parts: list[bytes] = []
    kept = 0
    for s, e in sorted(spans):
        if s < kept:
            continue
        parts.append(raw[kept:s])
        parts.append(b" " * len(raw[s:e].decode("utf-8", "replace")))
        kept = e
    parts.append(raw[kept:])
    text = b"".join(parts)
    if kind == "REPLACE":
        s = v.start(tokens[0])
        text = text[:s] + b"INSERT " + text[s + 7 :]
    respelled = default_mode_text(text, v.mode)
    return respelled.decode("utf-8", "replace"), respelled == text


Readings = list[tuple["_Ref", ...]]
"""A text's column references, once per sql_mode it may be read in (see masked_uses)."""


def reference_readings(
    sql: bytes, mode: LexMode, ansi_unknown: bool, backslash_unknown: bool
) -> Readings:
    """The references under each sql_mode the session may be in (see
    classify_uncertain); what ``masked_uses`` reads, made ahead (in a worker process)."""
    modes = [mode]
    if ansi_unknown and b'"' in sql:
        modes += [replace(m, ansi_quotes=not m.ansi_quotes) for m in modes]
    if backslash_unknown and b"\\" in sql:
        modes += [replace(m, no_backslash_escapes=not m.no_backslash_escapes) for m in modes]
    return [_text_refs(sql, m) for m in modes]


def _hits(
    ref: _Ref, default_db: str | None, test: Callable[[str, str, str], bool]
) -> list[tuple[str, str]]:
    """The tables of a reference whose column is masked."""
    default = (default_db or "").lower()
    found = []
    for schema, table in ref.tables:
        s = schema if schema is not None else default
        if test(s, table, ref.column):
            found.append((s, table))
            if ref.where == _NOT_UNDERSTOOD:
                break  # one is enough to refuse
    return found


def _memo(predicate: Callable[[str, str, str], object]) -> Callable[[str, str, str], object]:
    answers: dict[tuple[str, str, str], object] = {}

    def ask(schema: str, table: str, column: str) -> object:
        key = (schema, table, column)
        if key not in answers:
            answers[key] = predicate(schema, table, column)
        return answers[key]

    return ask


def masked_uses(
    sql: bytes | str,
    default_db: str | None,
    is_masked: IsMasked,
    mode: LexMode,
    *,
    ansi_unknown: bool = True,
    backslash_unknown: bool = False,
    readings: Readings | None = None,
) -> list[MaskedUse]:
    """Every use of a masked column in a statement text other than a plain projection of
    its outermost SELECT: those the result-set masking cannot see. Empty when there is
    none; a text or a part of it the gateway cannot read gives a use "not understood"
    when it names a table with a masked column.

    ``mode`` is the session's lexing, as for classify(); ``ansi_unknown`` and
    ``backslash_unknown`` read a text both ways where ANSI_QUOTES or NO_BACKSLASH_ESCAPES
    is not known (as classify_uncertain() does): the uses of both readings count.
    ``readings``: ``reference_readings`` of the same text and modes, made before.
    """
    raw = sql.encode() if isinstance(sql, str) else sql
    ask = _memo(is_masked)

    def test(schema: str, table: str, column: str) -> bool:
        return bool(ask(schema, table, column))

    if readings is None:
        readings = reference_readings(raw, mode, ansi_unknown, backslash_unknown)
    uses: dict[MaskedUse, None] = {}
    for refs in readings:
        for ref in refs:
            if not ref.column:
                if _counts(ref, default_db):
                    uses[MaskedUse("*.*.*", ref.where, ("*", "*", "*"))] = None
                continue
            for schema, table in _hits(ref, default_db, test):
                column = f"{schema}.{table}.{ref.column}"
                uses[MaskedUse(column, ref.where, (schema, table, ref.column))] = None
    return list(uses)


def _masked_sql(strategy: str, column: str) -> str | None:
    """An expression over ``column`` (its text) that yields the masked value."""
    if strategy == "redact":
        return "'****'"
    if strategy == "null":
        return "NULL"
    if strategy == "last4":
        # as on the way back: every character starred but the last four, and values of
        # four characters or fewer starred whole
        return (
            f"IF(CHAR_LENGTH({column}) <= 4, REPEAT('*', CHAR_LENGTH({column})), "
            f"CONCAT(REPEAT('*', CHAR_LENGTH({column}) - 4), RIGHT({column}, 4)))"
        )
    return None  # hash: a keyed digest the server cannot compute


def _spells(text: str, name: str) -> bool:
    """The reference's text ends with the column's name, as a check on positions."""
    last = text.rsplit(".", 1)[-1].strip()
    if last.startswith("`") and last.endswith("`"):
        last = last[1:-1].replace("``", "`")
    return last.lower() == name


def mask_rewrite(
    sql: bytes | str,
    default_db: str | None,
    masked: MaskedAs,
    mode: LexMode,
    *,
    ansi_unknown: bool = True,
    backslash_unknown: bool = False,
    readings: Readings | None = None,
) -> str | None:
    """The statement text with each masked column reference outside a plain projection
    replaced by an expression that yields its masked value (redact: '****', null: NULL,
    last4: its last four characters after asterisks), so that nothing but masked values
    reaches a function, a condition, a copy or another query. Plain projections stay as
    they are (result-set masking masks them). The text unchanged when it has no such use;
    None when a rewrite is not certain: a hash strategy, a `*` that expands to a masked
    column, a reference by select-list position or alias, a name that must stay a column,
    a text that is not UTF-8 or reads differently under an unknown sql_mode, or anything
    not understood. The caller refuses those. ``readings``: ``reference_readings`` of the
    same text and modes, made before (as for ``masked_uses``)."""
    raw = sql.encode() if isinstance(sql, str) else sql
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    ask = _memo(masked)

    def test(schema: str, table: str, column: str) -> bool:
        return ask(schema, table, column) is not None

    results: set[str] = set()
    if readings is None:
        readings = reference_readings(raw, mode, ansi_unknown, backslash_unknown)
    for refs in readings:
        edits: dict[tuple[int, int], str] = {}
        for ref in refs:
            if not ref.column:
                if not _counts(ref, default_db):
                    continue
                return None
            hits = _hits(ref, default_db, test)
            if not hits or ref.fix == _COVERED:
                continue
            if ref.fix != _REPLACE or ref.span is None:
                return None
            strategies = {ask(s, t, ref.column) for s, t in hits}
            if len(strategies) != 1:
                return None  # tables of the same name masked differently: which one?
            strategy = strategies.pop()
            start, end = ref.span
            original = text[start:end]
            if not isinstance(strategy, str) or not _spells(original, ref.column):
                return None
            expression = _masked_sql(strategy, original)
            if expression is None:
                return None
            if ref.alias is not None:
                expression += " AS `" + ref.alias.replace("`", "``") + "`"
            if edits.setdefault((start, end), expression) != expression:
                return None
        parts: list[str] = []
        kept = 0
        for (start, end), expression in sorted(edits.items()):
            if start < kept:
                return None
            parts.append(text[kept:start])
            parts.append(expression)
            kept = end
        parts.append(text[kept:])
        results.add("".join(parts))
    if len(results) != 1:
        return None
    return results.pop()


# -- view lineage (masking) ---------------------------------------------------------------

ViewSources = dict[str, frozenset[tuple[str, str, str]]]


def view_sources(definition: str, schema: str) -> ViewSources | None:
    """For a view's definition (``information_schema.VIEWS.VIEW_DEFINITION``, which
    MariaDB writes fully qualified), each output column (lower-case) and the base
    columns ``(schema, table, column)`` its value is computed from; a UNION's column
    takes those of every branch. None when the definition is not a plain SELECT (or
    UNION of them) over tables and views: the caller then assumes the worst."""
    if not definition.strip():
        return None
    try:
        tree = _parse(definition)
    except _Unparsable:
        return None
    branches: list[exp.Select] = []

    def collect(node: exp.Expr) -> bool:
        if isinstance(node, exp.Select):
            branches.append(node)
            return True
        if isinstance(node, exp.Union | exp.Intersect | exp.Except):
            return collect(node.this) and collect(node.expression)
        return False

    if not collect(tree) or tree.args.get("with_") or tree.args.get("with"):
        return None
    found: dict[int, set[tuple[str, str, str]]] = {}
    names: dict[int, str] = {}
    for number, select in enumerate(branches):
        tables: dict[str, tuple[str, str]] = {}  # alias or name -> (schema, table)
        start = select.args.get("from_") or select.args.get("from")
        plain = _plain_tables([start, *(select.args.get("joins") or [])])
        if plain is None:
            return None  # a derived table, a table function: not followed
        for table in plain:
            where = (table.db or schema).lower(), table.name.lower()
            tables[(table.alias or table.name).lower()] = where
        for index, item in enumerate(select.expressions):
            if isinstance(item, exp.Star) or (
                isinstance(item, exp.Column) and isinstance(item.this, exp.Star)
            ):
                return None  # MariaDB expands stars in stored definitions
            if number == 0:
                names[index] = item.alias_or_name.lower()
            columns: set[tuple[str, str, str]] = found.setdefault(index, set())
            for column in item.find_all(exp.Column):
                if column.find_ancestor(exp.Subquery) is not None:
                    return None
                qualifier = column.table.lower()
                if qualifier:
                    if qualifier not in tables:
                        return None
                    candidates = [tables[qualifier]]
                else:
                    candidates = list(tables.values())
                for db, name in candidates:
                    columns.add((db, name, column.name.lower()))
            if item.find(exp.Subquery) is not None:
                return None
    return {names[i]: frozenset(found.get(i, set())) for i in names}


def _plain_tables(sources: Iterable[exp.Expr | None]) -> list[exp.Table] | None:
    """The tables of FROM and JOIN sources, through MariaDB's parenthesised joins;
    None when a source is anything but a table."""
    tables: list[exp.Table] = []
    for source in sources:
        if source is None:
            continue
        node = source.this if isinstance(source, exp.From | exp.Join) else source
        if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Table):
            node = node.this  # "(a JOIN b ON ...)": a table carrying its joins
        if not isinstance(node, exp.Table) or not node.name:
            return None
        tables.append(node)
        inner = _plain_tables(node.args.get("joins") or [])
        if inner is None:
            return None
        tables.extend(inner)
    return tables
