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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError

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

__all__ = ["Classification", "classify", "classify_statement", "classify_uncertain"]

# sqlglot warns ("contains unsupported syntax. Falling back to parsing as a 'Command'")
# for statements we refuse anyway; the warning would only flood the gateway's log.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

_MYSQL = Dialect.get_or_raise("mysql")
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Classification:
    kind: str  # canonical upper-case kind; "UNKNOWN" when not recognised
    text: str  # this statement's text decoded (utf-8, errors="replace")
    reads: frozenset[str]  # tables read: "schema.table" when qualified in the text
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


_EXECUTABLE_COMMENT = (
    "executable comment /*! ... */ (the server runs its contents; send the statement without it)"
)

# Texts longer than this are classified but not cached: a cache entry keeps its text.
_CACHE_TEXT_LIMIT = 64 * 1024


def classify(sql: bytes, mode: LexMode) -> tuple[Classification, ...]:
    """One Classification per statement of a client text (cached by text and mode); a
    text that does not lex gives a single UNKNOWN with the lexer's message."""
    if len(sql) > _CACHE_TEXT_LIMIT:
        return _classify(sql, mode)
    return _classify_cached(sql, mode)


@lru_cache(maxsize=20_000)
def _classify_cached(sql: bytes, mode: LexMode) -> tuple[Classification, ...]:
    return _classify(sql, mode)


def _classify(sql: bytes, mode: LexMode) -> tuple[Classification, ...]:
    try:
        outlines = outline(sql, mode)
    except LexError as err:
        return (_unreadable(sql, str(err)),)
    return tuple(
        _classify_view(_View(sql[o.start : o.end], o.skeleton, o.plain, o.executable_comment, mode))
        for o in outlines
    )


def classify_statement(stmt: Statement, mode: LexMode) -> Classification:
    """The Classification of one statement from split_statements()."""
    try:
        o = outline_statement(stmt.text, mode)
    except LexError as err:
        return _unreadable(stmt.text, str(err))
    if o is None:
        return _unreadable(stmt.text, "the statement holds no code")
    view = _View(stmt.text, o.skeleton, stmt.plain, stmt.executable_comment, mode)
    view.set_tokens(stmt.tokens, stmt.start)
    return _classify_view(view)


def _classify_text(text: bytes, mode: LexMode) -> Classification:
    """One statement's text that arrives inside another (PREPARE, EXPLAIN, ...)."""
    try:
        o = outline_statement(text, mode)
    except LexError as err:
        return _unreadable(text, str(err))
    if o is None:
        return _unreadable(text, "the statement is empty")
    return _classify_view(_View(text, o.skeleton, o.plain, o.executable_comment, mode))


def _unreadable(sql: bytes, problem: str) -> Classification:
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
) -> Classification:
    return Classification(
        kind=kind,
        text=text,
        reads=frozenset(reads),
        writes=frozenset(writes),
        has_where=has_where,
        where_always_true=where_always_true,
        multi_table=multi_table,
        functions=frozenset(functions),
        variables=variables,
        flags=frozenset(flags),
        problem=problem,
        literal_independent=literal_independent and problem is None,
        inner=inner,
    )


class _View:
    """One statement as the classifier reads it: bytes, skeleton, tokens on demand."""

    __slots__ = ("raw", "skeleton", "plain", "executable", "mode", "_tokens", "_base")

    def __init__(
        self, raw: bytes, skeleton: bytes, plain: bool, executable: bool, mode: LexMode
    ) -> None:
        self.raw = raw
        self.skeleton = skeleton
        self.plain = plain
        self.executable = executable
        self.mode = mode
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


def _skeleton_flags(skeleton: bytes, kind: str) -> set[str]:
    flags: set[str] = set()
    if _OR_REPLACE.match(skeleton):
        flags.add("or_replace")  # MariaDB: drops the existing object first
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


def _skeleton_functions(skeleton: bytes) -> set[str]:
    """Names followed by '(' (a word ending where blanks before the '(' start)."""
    names: set[str] = set()
    p = skeleton.find(b"(")
    while p >= 0:
        end = p
        while end > 0 and skeleton[end - 1] in _BLANKS:
            end -= 1
        start = end
        while start > 0 and skeleton[start - 1] in _IDENT_BYTES:
            start -= 1
        if start < end and not 0x30 <= skeleton[start] <= 0x39 and skeleton[start] != 0x24:
            before = start
            while before > 0 and skeleton[before - 1] in _BLANKS:
                before -= 1
            first = before
            while first > 0 and skeleton[first - 1] in _IDENT_BYTES:
                first -= 1
            if before == start or skeleton[first:before] not in _DEFINING:
                name = skeleton[start:end].decode("utf-8", "replace")
                if name not in _NOT_FUNCTIONS:
                    names.add(name)
        p = skeleton.find(b"(", p + 1)
    return names


# -- dispatch ------------------------------------------------------------------------------


def _classify_view(v: _View) -> Classification:
    kind = "UNKNOWN"
    try:
        kind, head = _kind(v)
        if v.executable:
            return _result(kind, v.text(), problem=_EXECUTABLE_COMMENT)
        return _HANDLERS.get(kind, _by_tokens)(v, kind, head)
    except RecursionError:
        return _result(kind, v.text(), problem=_parse_problem(kind, "it nests too deeply"))
    except Exception as err:  # fail closed on whatever the parser's tree held
        _log.warning("cannot analyse a %s statement: %s", kind, type(err).__name__)
        return _result(
            kind, v.text(), problem=_parse_problem(kind, f"{type(err).__name__} while analysing it")
        )


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


# -- parsing ---------------------------------------------------------------------------------


_TOKEN_REPR = re.compile(r"<Token token_type: [^,]*, text: (.*?), line: .*?>")


class _Unparsable(Exception):
    """sqlglot could not read the text; the message says where."""


class _Parsers(threading.local):
    """One sqlglot tokenizer and parser per thread, reused: building them costs more
    than tokenizing a short statement, and both reset themselves on every call."""

    def __init__(self) -> None:
        self.tokenizer = _MYSQL.tokenizer()
        self.parser = _MYSQL.parser()


_PARSERS = _Parsers()


def _parse(text: str) -> exp.Expr:
    parsers = _PARSERS
    try:
        trees = parsers.parser.parse(parsers.tokenizer.tokenize(text), text)
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
    return found[0]


def _parse_text(v: _View, edits: Sequence[tuple[int, int, bytes]] = ()) -> str:
    """The text sqlglot reads: edits (start, end, replacement; offsets into raw) applied,
    then respelled for MySQL's default lexing unless it is plain already."""
    raw = v.raw
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
    if not v.plain:
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


_TABLE, _CTE, _FUNC = 1, 2, 3
_CATEGORY: dict[type, int] = {}
_FUNCTION_NAMES: dict[type, str] = {}


def _category(cls: type) -> int:
    if issubclass(cls, exp.Table):
        c = _TABLE
    elif issubclass(cls, exp.CTE):
        c = _CTE
    elif issubclass(cls, exp.Func) and not issubclass(
        cls, (exp.Connector, exp.SubqueryPredicate)
    ):  # AND, OR, XOR, EXISTS, ANY are operators to a reader
        c = _FUNC
    else:
        c = 0
    _CATEGORY[cls] = c
    return c


def _table_name(t: exp.Table) -> str:
    name = t.name
    if not name:
        return ""
    db = t.db
    catalog = t.catalog
    if catalog:
        return f"{catalog}.{db}.{name}".lower()
    if db:
        return f"{db}.{name}".lower()
    return name.lower()


class _Tree:
    """What one walk of a parsed tree gives: tables, CTE names, function names."""

    __slots__ = ("tables", "ctes", "functions")

    def __init__(self, root: exp.Expr) -> None:
        self.tables: list[exp.Table] = []
        self.ctes: set[str] = set()
        self.functions: set[str] = set()
        category = _CATEGORY.get
        for node in root.walk():
            cls = type(node)
            c = category(cls)
            if c is None:
                c = _category(cls)
            if not c:
                continue
            if c == _TABLE:
                assert isinstance(node, exp.Table)
                self.tables.append(node)
            elif c == _CTE:
                self.ctes.add(node.alias.lower())
            elif isinstance(node, exp.Anonymous):
                self.functions.add(node.name.upper())
            else:
                name = _FUNCTION_NAMES.get(cls)
                if name is None:
                    assert isinstance(node, exp.Func)
                    name = _FUNCTION_NAMES[cls] = node.sql_name().upper()
                self.functions.add(name)

    def reads(self, excluded: Iterable[exp.Expression] = ()) -> set[str]:
        """Names of the tables read, but for the given nodes, CTE names and DUAL."""
        skip = {id(node) for node in excluded}
        names: set[str] = set()
        for t in self.tables:
            if id(t) in skip:
                continue
            name = _table_name(t)
            if not name or name == "dual" or (name in self.ctes and not t.db):
                continue
            names.add(name)
        return names


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


def _dml(v: _View, kind: str, head: int) -> Classification:
    text = v.text()
    flags = _skeleton_flags(v.skeleton, kind)
    functions = _skeleton_functions(v.skeleton)
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
    try:
        root = _parse(_parse_text(v, edits))
    except _Unparsable as err:
        return _result(
            kind, text, flags=flags, functions=functions, problem=_parse_problem(kind, str(err))
        )
    if not isinstance(root, _ROOTS[kind]):
        return _result(
            kind, text, flags=flags, functions=functions, problem=_mismatch_problem(kind, root)
        )
    missing = _missing_part(root)
    if missing is not None:
        # sqlglot accepts some statements the server rejects; fail closed on them too.
        return _result(
            kind, text, flags=flags, functions=functions, problem=_parse_problem(kind, missing)
        )
    tree = _Tree(root)
    functions |= tree.functions
    if kind == "SELECT":
        return _result(
            kind,
            text,
            reads=tree.reads(),
            functions=functions,
            flags=flags,
            literal_independent=True,
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
        )
    if isinstance(root, exp.Update):
        refs, targets, excluded = _update_targets(root)
    else:
        assert isinstance(root, exp.Delete)
        refs, targets, excluded = _delete_targets(root)
    where = root.args.get("where")
    always_true = False
    literal_dependent = False
    if isinstance(where, exp.Where):
        outer = _ref_names(refs)
        always_true, literal_dependent = _where_analysis(where.this, outer, len(refs) == 1)
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
    )


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
# more often). Atoms are compared with their literals abstracted, so the answer never
# depends on literal values: `id = 5 OR id <> 6` counts as always true, `id = id` is
# true, `x IS NULL OR x IS NOT NULL` is true, `1`, `TRUE`, `2 > 1`, `NOT 0` may be.

_LITERALS = (exp.Literal, exp.Boolean, exp.Null, exp.Placeholder)
_SUBQUERIES = (exp.Subquery, exp.Query, exp.Exists)
_MAX_ATOMS = 12
_MAX_EVALUATIONS = 200_000  # formula nodes times assignments: beyond it, say "may be true"


class _F(NamedTuple):
    """A boolean formula: "a" (atom), "!", "&" and "|" (n-ary), "^", "T" or "F"."""

    op: str
    atom: int = -1
    args: tuple[_F, ...] = ()


_TRUE = _F("T")
_FALSE = _F("F")
_COMPARISONS = (exp.EQ, exp.NullSafeEQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


class _Atoms:
    def __init__(self, outer: set[str], single: bool) -> None:
        self.outer = outer
        self.single = single
        self.index: dict[object, int] = {}
        self.row: list[bool] = []  # per atom: depends on the row
        self.literal_dependent = False

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
        dependence = self.dependence(node)
        if dependence != "row":
            if dependence == "literal":
                self.literal_dependent = True
            return self.atom(("const", self.key(node)), False)
        if isinstance(node, _COMPARISONS):
            return self.comparison(node)
        if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            return self.atom(("isnull", self.key(node.this)), True)
        return self.atom(self.key(node), True)

    def comparison(self, node: exp.Expr) -> _F:
        a = self.key(node.this)
        b = self.key(node.expression)
        if a == b:
            if isinstance(node, (exp.EQ, exp.NullSafeEQ, exp.GTE, exp.LTE)):
                return _TRUE
            return _FALSE
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

    def atom(self, key: object, row: bool) -> _F:
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = len(self.row)
            self.row.append(row)
        return _F("a", i)

    def key(self, node: exp.Expr) -> object:
        """A structural key with literal values abstracted away."""
        if isinstance(node, _LITERALS):
            return "?"
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
            elif value is not None and value is not False:
                parts.append((name, str(value)))
        return tuple(parts)

    def dependence(self, node: exp.Expr) -> str:
        """ "row", "literal" (row-independent, built with literals) or "other"."""
        literal = False
        stack = [node]
        while stack:
            sub = stack.pop()
            if isinstance(sub, exp.Column):
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


def _may_be_always_true(f: _F, row: list[bool]) -> bool:
    """Some value of the constant atoms makes f true for every value of the row atoms.

    Exhaustive while the truth table is small; beyond that a conjunction is split, and
    anything else is "may be true" unless all-false or all-true row atoms falsify it for
    every value of the constants."""
    used = sorted(_atoms_of(f, set()))
    consts = [i for i in used if not row[i]]
    rows = [i for i in used if row[i]]
    size = _size(f)
    candidates: Sequence[int]
    if len(used) <= _MAX_ATOMS and (size << len(used)) <= _MAX_EVALUATIONS:
        candidates = range(1 << len(rows))
    elif f.op == "&":  # a conjunction is always true only if each part is
        return all(_may_be_always_true(part, row) for part in f.args)
    elif len(consts) <= _MAX_ATOMS and (size << (len(consts) + 1)) <= _MAX_EVALUATIONS:
        candidates = (0, (1 << len(rows)) - 1)
    else:
        return True
    for c in range(1 << len(consts)):
        base = _bits(consts, c)
        if all(_evaluate(f, base | _bits(rows, r)) for r in candidates):
            return True
    return False


_SIMPLE_TESTS = (*_COMPARISONS, exp.In, exp.Like, exp.Between)


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
        for name, value in node.args.items():
            if name == "this":
                continue
            values = value if isinstance(value, list) else [value]
            if not all(v is None or isinstance(v, (*_LITERALS, bool)) for v in values):
                return False
    return True


def _where_analysis(cond: exp.Expr, outer: set[str], single: bool) -> tuple[bool, bool]:
    """(the WHERE may be true for every row, it holds a predicate built from literals)."""
    if _simple_conjunction(cond):
        return False, False
    atoms = _Atoms(outer, single)
    try:
        formula = atoms.formula(cond)
        return _may_be_always_true(formula, atoms.row), atoms.literal_dependent
    except RecursionError:
        return True, True


# -- other kinds that need the parser ---------------------------------------------------------


# SHOW forms whose target is a table or view (others name users, routines, engines).
_SHOW_TABLE_TARGETS = frozenset(
    {"COLUMNS", "FIELDS", "INDEX", "INDEXES", "KEYS", "CREATE TABLE", "CREATE VIEW"}
)


def _show(v: _View, kind: str, head: int) -> Classification:
    text = v.text()
    try:
        root = _parse(_parse_text(v))
    except _Unparsable as err:
        return _result(kind, text, problem=_parse_problem(kind, str(err)))
    if not isinstance(root, exp.Show):
        return _result(kind, text, problem=_mismatch_problem(kind, root))
    reads: set[str] = set()
    target = root.args.get("target")
    db = root.args.get("db")
    what = str(root.this or "").upper()
    target_name = target.name.lower() if isinstance(target, exp.Expression) else ""
    db_name = db.name.lower() if isinstance(db, exp.Expression) else ""
    if what in _SHOW_TABLE_TARGETS and target_name:
        reads.add(f"{db_name}.{target_name}" if db_name else target_name)
    elif what in ("CREATE DATABASE", "CREATE SCHEMA") and target_name:
        reads.add(f"{target_name}.*")
    elif db_name and not target_name:  # SHOW TABLES FROM db, SHOW TABLE STATUS IN db
        reads.add(f"{db_name}.*")
    return _result(
        kind, text, reads=reads, functions=_skeleton_functions(v.skeleton), literal_independent=True
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
    while True:  # EXTENDED, PARTITIONS, FORMAT = x
        w = word_at(tokens, i)
        if w in ("EXTENDED", "PARTITIONS"):
            i += 1
        elif w == "FORMAT" and punct_at(tokens, i + 1, "="):
            i += 3
        else:
            break
    if word_at(tokens, i) == "FOR" and word_at(tokens, i + 1) == "CONNECTION":
        return _result(kind, text, flags={"explain_for_connection"}, literal_independent=True)
    if i >= len(tokens):
        return _result(kind, text, problem=_parse_problem(kind, "no statement to explain"))
    if word_at(tokens, i) in _EXPLAINERS:
        return _result(kind, text, problem=_parse_problem(kind, f"{kind} of an {tokens[i].text}"))
    inner = _classify_text(v.raw[v.start(tokens[i]) :], v.mode)
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
    )


def _use(v: _View, kind: str, head: int) -> Classification:
    text = v.text()
    try:
        root = _parse(_parse_text(v))
    except _Unparsable as err:
        return _result(kind, text, problem=_parse_problem(kind, str(err)))
    if not isinstance(root, exp.Use):
        return _result(kind, text, problem=_mismatch_problem(kind, root))
    return _result(kind, text, literal_independent=True)


# CREATE INDEX options sqlglot does not read; they change nothing the policy decides on.
_INDEX_OPTIONS_WITH_VALUE = frozenset({"ALGORITHM", "LOCK", "KEY_BLOCK_SIZE", "COMMENT"})
_INDEX_WORDS_DROPPED = frozenset({"FULLTEXT", "SPATIAL", "ONLINE", "OFFLINE"})

_CREATE_KINDS = {
    "CREATE TABLE": ("TABLE",),
    "CREATE INDEX": ("INDEX",),
    "CREATE VIEW": ("VIEW",),
    "CREATE DATABASE": ("DATABASE", "SCHEMA"),
}


def _create(v: _View, kind: str, head: int) -> Classification:
    text = v.text()
    flags = _skeleton_flags(v.skeleton, kind)
    functions = _skeleton_functions(v.skeleton)
    edits = _index_edits(v) if kind == "CREATE INDEX" else []
    try:
        root = _parse(_parse_text(v, edits))
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
    tree = _Tree(root)
    target = root.this
    if isinstance(target, exp.Schema):
        target = target.this
    if isinstance(target, exp.Index):
        target = target.args.get("table")
    writes: set[str] = set()
    if isinstance(target, exp.Table):
        if kind == "CREATE DATABASE":  # the name is in `this` or (SCHEMA) in `db`
            writes.add(f"{(target.name or target.db).lower()}.*")
        else:
            writes.add(_table_name(target))
    return _result(
        kind,
        text,
        reads=tree.reads([target] if isinstance(target, exp.Expression) else []),
        writes=writes,
        functions=functions | tree.functions,
        flags=flags,
    )


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
        # A structured name: key_cache.key_buffer_size, @@global.x, `name`.
        name = ".".join(_variable_name(t, "") for t in tokens[a:eq] if t.text != ".")
        if tokens[a].kind != Tok.VARIABLE:
            name = scope + name
        elif scope:
            name = _variable_name(tokens[a], scope) if eq == a + 1 else scope + name
        found.append((name, _literal(tokens, eq + 1, b)))
    return tuple(found)


def _set(v: _View, kind: str, head: int) -> Classification:
    text = v.text()
    tokens = v.tokens
    n = len(tokens)
    flags = _skeleton_flags(v.skeleton, kind)
    functions = _skeleton_functions(v.skeleton)
    if kind == "SET PASSWORD":
        # The value is a password: never copied anywhere.
        return _result(kind, text, variables=(("password", None),), flags=flags)
    if kind == "SET ROLE":
        if word_at(tokens, 1) == "DEFAULT":
            stop = next((i for i in range(3, n) if word_at(tokens, i) in ("TO", "FOR")), n)
            return _result(
                kind,
                text,
                writes={"mysql.default_roles"},
                variables=(("default role", _literal(tokens, 3, stop)),),
                flags=flags | {"default_role"},
            )
        return _result(kind, text, variables=(("role", _literal(tokens, 2, n)),), flags=flags)
    if kind == "SET STATEMENT":
        depth = 0
        split = n
        for i in range(2, n):
            t = tokens[i]
            if t.kind == Tok.PUNCT:
                depth += t.text == "("
                depth -= t.text == ")"
            elif depth == 0 and t.kind == Tok.WORD and t.text == "FOR":
                split = i
                break
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
        inner = _classify_text(v.raw[v.start(tokens[split + 1]) :], v.mode)
        return _running(kind, text, inner, "SET STATEMENT ... FOR", functions, flags, variables)
    i = 2 if word_at(tokens, 1) in _SCOPES else 1
    if word_at(tokens, i) == "TRANSACTION":
        # SET [GLOBAL|SESSION] TRANSACTION ISOLATION LEVEL ..., READ ONLY
        scope = _SCOPES.get(word_at(tokens, 1) or "", "")
        words = " ".join(t.text.lower() for t in tokens[i + 1 :]).replace(" ,", ",")
        assigned: tuple[tuple[str, str | None], ...] = ((scope + "transaction", words or None),)
    else:
        assigned = _assignments(tokens, 1, n)
    return _result(kind, text, variables=assigned, functions=functions, flags=flags)


# -- PREPARE -------------------------------------------------------------------------------------


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
    if i < stop and tokens[i].kind == Tok.WORD and tokens[i].text.startswith("_"):
        i += 1  # a character set introducer
    strings = tokens[i:stop]
    if not strings or any(t.kind != Tok.STRING for t in strings):
        return _result(kind, text, flags=flags | {"prepare_from_variable"})
    # Adjacent string literals are one literal.
    body = b"".join(string_bytes(v.bytes_of(t), v.mode) for t in strings)
    inner_all = classify(body, v.mode)
    if len(inner_all) != 1:
        return _result(
            kind,
            text,
            flags=flags,
            problem=_parse_problem(kind, f"the text holds {len(inner_all)} statements, not one"),
        )
    return _running(kind, text, inner_all[0], f"{kind} of", frozenset(), flags)


def _running(
    kind: str,
    text: str,
    inner: Classification,
    what: str,
    functions: Iterable[str],
    flags: Iterable[str],
    variables: tuple[tuple[str, str | None], ...] = (),
) -> Classification:
    """A statement that runs ``inner``: what will run is what the policy must see."""
    problem = None
    if inner.problem is not None:
        problem = f"{what} a statement the gateway does not understand: {inner.problem}"
    return _result(
        kind,
        text,
        reads=inner.reads,
        writes=inner.writes,
        has_where=inner.has_where,
        where_always_true=inner.where_always_true,
        multi_table=inner.multi_table,
        functions=frozenset(functions) | inner.functions,
        variables=variables,
        flags=frozenset(flags) | inner.flags,
        problem=problem,
        inner=inner,
    )


# -- kinds read from their tokens alone ------------------------------------------------------


def _name(tokens: Sequence[Token], i: int) -> tuple[str | None, int]:
    """A possibly qualified name at i: ("schema.name" or "name", index after it)."""
    if i >= len(tokens) or tokens[i].kind not in (Tok.WORD, Tok.IDENT):
        return None, i
    name = tokens[i].text.lower()
    i += 1
    if (
        punct_at(tokens, i, ".")
        and i + 1 < len(tokens)
        and tokens[i + 1].kind in (Tok.WORD, Tok.IDENT)
    ):
        name = f"{name}.{tokens[i + 1].text.lower()}"
        i += 2
    return name, i


def _name_list(tokens: Sequence[Token], i: int) -> list[str]:
    names: list[str] = []
    while True:
        name, i = _name(tokens, i)
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
    functions = _skeleton_functions(v.skeleton)
    reads: list[str] = []
    writes: list[str] = []
    independent = False
    problem = None
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
        name, i = _name(tokens, i)
        writes.extend([name] if name else [])
        for j in range(i, len(tokens)):
            w = word_at(tokens, j)
            if w == "RENAME":
                k = j + 1
                if word_at(tokens, k) in ("COLUMN", "INDEX", "KEY"):
                    continue  # RENAME COLUMN a TO b: the table keeps its name
                if word_at(tokens, k) in ("TO", "AS"):
                    k += 1
                other, _ = _name(tokens, k)
                writes.extend([other] if other else [])
            elif w == "WITH" and word_at(tokens, j + 1) == "TABLE":
                other, _ = _name(tokens, j + 2)
                writes.extend([other] if other else [])
    elif kind in ("DROP TABLE", "DROP VIEW"):
        writes.extend(_name_list(tokens, head))
    elif kind in ("DROP DATABASE", "ALTER DATABASE"):
        name, _ = _name(tokens, head)
        if name and name not in ("character", "default", "collate", "charset", "read"):
            writes.append(name + ".*")
    elif kind == "DROP INDEX":
        for j in range(head, len(tokens)):
            if word_at(tokens, j) == "ON":
                name, _ = _name(tokens, j + 1)
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
        "ALTER VIEW",
    ):
        name, i = _name(tokens, head)
        writes.extend([name] if name else [])
        if kind == "CREATE TRIGGER":
            for j in range(i, len(tokens)):
                if word_at(tokens, j) == "ON":
                    table, _ = _name(tokens, j + 1)
                    writes.extend([table] if table else [])
                    break
    elif kind == "RENAME TABLE":
        i = head
        while True:
            old, i = _name(tokens, i)
            if old is None or word_at(tokens, i) != "TO":
                break
            new, i = _name(tokens, i + 1)
            writes.extend(x for x in (old, new) if x)
            if not punct_at(tokens, i, ","):
                break
            i += 1
    elif kind in ("LOAD DATA", "LOAD XML"):
        for j in range(head, len(tokens)):
            if word_at(tokens, j) == "INTO" and word_at(tokens, j + 1) == "TABLE":
                name, _ = _name(tokens, j + 2)
                writes.extend([name] if name else [])
                break
        if any(word_at(tokens, j) == "LOCAL" for j in range(head, min(head + 4, len(tokens)))):
            flags.add("local_infile")
    elif kind in ("OPTIMIZE", "REPAIR", "CHECK", "CHECKSUM", "ANALYZE"):
        i = head
        while word_at(tokens, i) in ("NO_WRITE_TO_BINLOG", "LOCAL"):
            i += 1
        if word_at(tokens, i) in ("TABLE", "TABLES"):
            names = _name_list(tokens, i + 1)
            (writes if kind in ("OPTIMIZE", "REPAIR") else reads).extend(names)
    elif kind == "LOCK TABLES":
        for a, b in _split_commas(tokens, head, len(tokens)):
            name, _ = _name(tokens, a)
            if name:
                lock = {t.text for t in tokens[a:b] if t.kind == Tok.WORD}
                (writes if "WRITE" in lock else reads).append(name)
    elif kind == "HANDLER":
        name, _ = _name(tokens, head)
        reads.extend([name] if name else [])
    elif kind in ("UNKNOWN", "COMPOUND"):
        pass
    return _result(
        kind,
        text,
        reads=reads,
        writes=writes,
        functions=functions,
        flags=flags,
        problem=problem,
        literal_independent=independent,
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
    "SET": _set,
    "SET PASSWORD": _set,
    "SET ROLE": _set,
    "SET STATEMENT": _set,
    "PREPARE": _prepare,
    "EXECUTE": _prepare,
}


# -- sql_mode unknown ---------------------------------------------------------------------------


def classify_uncertain(
    sql: bytes, mode: LexMode, ansi_unknown: bool, backslash_unknown: bool
) -> tuple[Classification, ...]:
    """Classify when the session's ANSI_QUOTES and/or NO_BACKSLASH_ESCAPES flags are not
    known: a text that reads the same either way is merged conservatively; one that
    reads differently is refused, statement by statement."""
    flips: list[str] = []
    if ansi_unknown and b'"' in sql:
        flips.append("ansi_quotes")
    if backslash_unknown and b"\\" in sql:
        flips.append("no_backslash_escapes")
    if not flips:
        return classify(sql, mode)
    return _classify_uncertain(sql, mode, tuple(flips))


@lru_cache(maxsize=4_096)
def _classify_uncertain(
    sql: bytes, mode: LexMode, flips: tuple[str, ...]
) -> tuple[Classification, ...]:
    modes = [mode]
    for flag in flips:
        modes += [replace(m, **{flag: not getattr(m, flag)}) for m in modes]
    readings = [classify(sql, m) for m in modes]
    base = readings[0]
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
    )


def count_query(sql: bytes) -> str | None:
    """``SELECT COUNT(*) FROM t WHERE ...`` for a single-table UPDATE or DELETE with a
    WHERE: how many rows it would touch, for the person asked to approve it. Built for
    one text at a time (never cached by shape: the answer depends on the literals);
    None when the statement is anything else or cannot be read plainly."""
    try:
        statements = split_statements(sql, LexMode())
    except LexError:
        return None
    if len(statements) != 1 or statements[0].executable_comment:
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
