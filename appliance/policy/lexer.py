"""A MySQL/MariaDB lexer over the client's bytes.

The gateway must read a statement exactly as the server will before it decides anything:
where one statement ends and the next begins, whether an executable comment hides code
from the parser, and which bytes are literals. Regular-expression searches over the raw
text get all three wrong around quotes and comments, so this module tokenizes with one
master pattern applied at successive positions, following the server's lexer
(``sql/sql_lex.cc``) for the cases that matter:

- ``'...'`` strings: ``''`` doubling, backslash escapes unless NO_BACKSLASH_ESCAPES;
  ``"..."`` the same, or a quoted identifier (``""`` doubling, no escapes) under
  ANSI_QUOTES; backtick identifiers with doubled backticks.
- ``#`` comments to the end of the line; ``--`` starts a comment only when followed by
  whitespace, a control character or the end of the text (``1--1`` is arithmetic);
  ``/* */`` comments do not nest; ``/*+ hint */`` is an ordinary comment.
- ``/*!``, ``/*!50001`` and MariaDB ``/*M!`` executable comments: their contents are code
  and a ``*/`` at a token boundary ends them.
- a ``;`` outside literals and comments ends a statement, except inside the BEGIN ... END
  body of a stored program or compound statement, which the server's grammar reads as a
  whole.

It imports nothing but the standard library: it runs on every statement the cache has not
seen, before any parser.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

__all__ = [
    "LexError",
    "LexMode",
    "Outline",
    "Statement",
    "Tok",
    "Token",
    "default_mode_text",
    "literal_types",
    "outline",
    "outline_statement",
    "shape",
    "split_statements",
    "string_bytes",
    "tokenize",
]


@dataclass(frozen=True, slots=True)
class LexMode:
    """The session state that changes how the server lexes a text."""

    ansi_quotes: bool = False  # sql_mode ANSI_QUOTES: "x" is an identifier, not a string
    no_backslash_escapes: bool = False  # sql_mode NO_BACKSLASH_ESCAPES: '\' is ordinary
    # big5/cp932/gbk/gb18030/sjis (a lead byte can hide a quote) or a character set the
    # gateway does not know: only ASCII text is read
    multibyte_unsafe: bool = False
    # latin1 and every other client character set that is not UTF-8: the server may read
    # a byte >= 0x80 as a space (latin1's 0xA0), so such a byte is read only inside
    # string literals and comments, never in a word the server might split differently,
    # nor in a quoted name (the policy reads names as UTF-8: in another character set
    # they would match no rule)
    eight_bit: bool = False


class Tok(IntEnum):
    """Token kinds; literals are STRING, NUMBER and HEX (what shape() replaces)."""

    WORD = 1  # unquoted word: keyword or identifier (text upper-cased)
    IDENT = 2  # quoted identifier (text is the name)
    STRING = 3  # string literal (text is the decoded value)
    NUMBER = 4  # 12, 1.5, .5, 1e5 (text as written)
    HEX = 5  # X'0A', 0x0A, B'01', 0b01 (text as written)
    VARIABLE = 6  # @x, @'x', @@x, @@session.x (text normalised lower-case)
    PARAM = 7  # ?
    PUNCT = 8  # operators and punctuation, including ';' inside compound statements


@dataclass(frozen=True, slots=True)
class Token:
    kind: Tok
    start: int  # byte offsets into the whole text
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a text, as the server will split it."""

    text: bytes  # contiguous slice: leading comments included, trailing whitespace not
    start: int
    end: int
    tokens: tuple[Token, ...]  # comments excluded
    executable_comment: bool
    # Comment spans inside the statement (absolute offsets), executable ones included.
    comments: tuple[tuple[int, int], ...] = ()
    # True when the bytes read the same under MySQL's default lexing and hold no comment:
    # no double quote, no backslash under NO_BACKSLASH_ESCAPES, no identifier starting
    # with a digit or '$'. A parser that knows only the default lexing may read `text`
    # as it is; otherwise it must read default_mode_text(text, mode).
    plain: bool = True


class LexError(ValueError):
    """The text cannot be read safely; the message says what and where."""


_MULTIBYTE_MESSAGE = (
    "byte 0x{byte:02x} at offset {offset}: the client character set is one the gateway "
    "cannot read safely (big5, cp932, gbk, gb18030 or sjis can hide a quote or backslash "
    "inside a multi-byte character, and a character set the gateway does not know may "
    "too); connect with utf8mb4, or send SET NAMES utf8mb4 first"
)

_EIGHT_BIT_MESSAGE = (
    "byte 0x{byte:02x} at offset {offset} is outside quotes: in the session's client "
    "character set (not UTF-8) the server may read it as a space or a symbol (latin1 "
    "reads 0xa0 as a space), so the gateway cannot tell where words end; put non-ASCII "
    "text in a single-quoted string, and use utf8mb4 (SET NAMES utf8mb4) for non-ASCII "
    "names"
)

_EIGHT_BIT_NAME_MESSAGE = (
    "byte 0x{byte:02x} at offset {offset} is inside a quoted name{double}: the gateway "
    "reads names only as UTF-8 and the session's client character set is not UTF-8, so "
    "it could not tell which rules name it; use utf8mb4 (SET NAMES utf8mb4) for "
    "non-ASCII names"
)
_DOUBLE_QUOTED = (
    " (a double-quoted text is a name under sql_mode ANSI_QUOTES, which the gateway "
    "cannot see: put a string in single quotes)"
)

_IDENT_CHARS = rb"A-Za-z0-9_$\x80-\xff"
_WS_BYTES = b" \t\n\r\f\v"

# The leading whitespace is consumed by the pattern so that finditer() yields contiguous
# matches: every non-space byte starts some alternative.
_WS = rb"[ \t\n\r\f\v]*+"

# A run of plain words, whitespace and punctuation that can neither start a literal, a
# comment or a quoted name nor change how the next token is read: scanners that only
# need literals, comments and statement ends take it in one match. A word is left out
# when a quote, '$' or a non-ASCII byte follows (X'0A', N'x', a$b), '.' when a digit
# follows (t.5, .5), and '-', '/', '#', '@', '?', ';', '\' and digits entirely. A word
# takes the punctuation after it in the same step of the repetition (what the next step
# would take anyway): a fifth fewer steps of the regular expression engine.
_RUN = (
    rb"(?P<run>(?:[A-Za-z_][A-Za-z0-9_]*+(?![$\x80-\xff'\"])"
    rb"[ \t\n\r\f\v,()=*+<>!%&|^~{}\[\]:]*+"
    rb"|[ \t\n\r\f\v,()=*+<>!%&|^~{}\[\]:]++|\.(?![0-9]))++)"
)


def _quoted(q: bytes, backslash: bool) -> bytes:
    if backslash:
        return q + rb"(?:[^" + q + rb"\\]++|\\.|" + q + q + rb")*+" + q
    return q + rb"(?:[^" + q + rb"]++|" + q + q + rb")*+" + q


@lru_cache(maxsize=16)
def _pattern(ansi_quotes: bool, no_backslash_escapes: bool, runs: bool) -> re.Pattern[bytes]:
    backslash = not no_backslash_escapes
    sq = _quoted(b"'", backslash)
    # ANSI_QUOTES: "x" is an identifier, never with backslash escapes.
    dq = _quoted(b'"', False) if ansi_quotes else _quoted(b'"', backslash)
    bt = _quoted(b"`", False)
    varname = rb"(?:" + sq + rb"|" + dq + rb"|" + bt + rb"|[A-Za-z0-9_$.\x80-\xff]++)"
    sysvar = rb"(?:[A-Za-z0-9_$\x80-\xff]++\.)*+(?:" + bt + rb"|[A-Za-z0-9_$\x80-\xff]++)"
    no_ident = rb"(?![" + _IDENT_CHARS + rb"])"
    alternatives = [
        # X'0A' and B'01' must win over the words X and B.
        rb"(?P<hexs>[xX]'[0-9a-fA-F]*'|[bB]'[01]*')",
        rb"(?P<word>[A-Za-z_\x80-\xff][" + _IDENT_CHARS + rb"]*+)",
        rb"(?P<hexn>0x[0-9a-fA-F]++" + no_ident + rb"|0b[01]++" + no_ident + rb")",
        # The server ends a number with a point or an exponent there, whatever follows
        # (1e0OR(1) is 1e0 OR (1)): the text is refused rather than read as one word.
        rb"(?P<numword>(?:[0-9]++\.[0-9]*+|\.[0-9]++)(?:[eE][+-]?[0-9]++)?+["
        + _IDENT_CHARS
        + rb"]|[0-9]++[eE][+-]?[0-9]++["
        + _IDENT_CHARS
        + rb"])",
        rb"(?P<num>(?:[0-9]++(?:\.[0-9]*+)?|\.[0-9]++)(?:[eE][+-]?[0-9]++)?" + no_ident + rb")",
        rb"(?P<op1>[,().=])",
        # An identifier may start with a digit (1abc) or '$'.
        rb"(?P<dword>[0-9$][" + _IDENT_CHARS + rb"]*+)",
        rb"(?P<sq>" + sq + rb")",
        (rb"(?P<dqid>" if ansi_quotes else rb"(?P<dq>") + dq + rb")",
        rb"(?P<bt>" + bt + rb")",
        rb"(?P<var>@@" + sysvar + rb"|@" + varname + rb")",
        rb"(?P<semi>;)",
        rb"(?P<param>\?)",
        # MariaDB ends a line comment at a NUL byte too (and then reads the NUL)
        rb"(?P<lcmt>\#[^\n\x00]*+|--(?=[\x00-\x20\x7f]|\Z)[^\n\x00]*+)",
        rb"(?P<xopen>/\*M?![0-9]*+)",
        rb"(?P<cmt>/\*.*?\*/)",
        rb"(?P<bad>/\*|['\"`])",
        rb"(?P<op><=>|->>|:=|<=|>=|<>|!=|<<|>>|&&|\|\||->|[^ \t\n\r\f\v])",
    ]
    if runs:
        alternatives.insert(0, _RUN)
    return re.compile(_WS + rb"(?:" + b"|".join(alternatives) + rb")", re.DOTALL)


# Token text caches: keywords and operators repeat from statement to statement.
_WORD_TEXT: dict[bytes, str] = {}
_OP_TEXT: dict[bytes, str] = {}
_TEXT_CACHE_LIMIT = 50_000

_ESCAPES = {
    b"0": b"\x00",
    b"b": b"\x08",
    b"n": b"\n",
    b"r": b"\r",
    b"t": b"\t",
    b"Z": b"\x1a",
    b"%": b"\\%",  # the server keeps the backslash before % and _ (LIKE patterns)
    b"_": b"\\_",
}


def string_bytes(raw: bytes, mode: LexMode) -> bytes:
    """The value of a quoted string or identifier token's raw bytes, as the server reads
    it (for a statement text handed to PREPARE, or a name)."""
    quote = raw[:1]
    body = raw[1:-1]
    escapes = quote != b"`" and not mode.no_backslash_escapes
    if escapes and quote == b'"' and mode.ansi_quotes:
        escapes = False
    if escapes and b"\\" in body:
        # Doubled quotes and backslash escapes are read left to right in one pass.
        doubled = quote + quote
        parts = re.split(rb"(\\.|" + re.escape(doubled) + rb")", body, flags=re.DOTALL)
        out = bytearray()
        for i, part in enumerate(parts):
            if i % 2 == 0:
                out += part
            elif part == doubled:
                out += quote
            else:  # a backslash and the byte it escapes
                out += _ESCAPES.get(part[1:], part[1:])
        return bytes(out)
    doubled = quote + quote
    if doubled in body:
        return body.replace(doubled, quote)
    return body


def _word_text(raw: bytes) -> str:
    text = _WORD_TEXT.get(raw)
    if text is None:
        text = raw.upper().decode("utf-8", "replace")
        if len(_WORD_TEXT) >= _TEXT_CACHE_LIMIT:
            _WORD_TEXT.clear()
        _WORD_TEXT[raw] = text
    return text


def _op_text(raw: bytes) -> str:
    text = _OP_TEXT.get(raw)
    if text is None:
        text = raw.decode("utf-8", "replace")
        if len(_OP_TEXT) >= _TEXT_CACHE_LIMIT:
            _OP_TEXT.clear()
        _OP_TEXT[raw] = text
    return text


def _variable_text(raw: bytes, mode: LexMode) -> str:
    if raw[:2] == b"@@":
        name = raw[2:]
        if name.endswith(b"`"):
            head, _, quoted = name.partition(b"`")
            name = head + string_bytes(b"`" + quoted, mode)
        return "@@" + name.decode("utf-8", "replace").lower()
    name = raw[1:]
    if name[:1] in (b"'", b'"', b"`"):
        name = string_bytes(name, mode)
    return "@" + name.decode("utf-8", "replace").lower()


_UNTERMINATED = {
    b"'": "unterminated string literal",
    b'"': "unterminated quoted string or identifier",
    b"`": "unterminated quoted identifier",
    b"/*": "unterminated comment",
}

_IDENT_KINDS = (Tok.WORD, Tok.IDENT)


def _lex(
    sql: bytes, mode: LexMode, open_end: bool = False
) -> tuple[list[Token], list[tuple[int, int, bool]], list[int]]:
    """Tokens of the whole text, comment spans (start, end, executable) and the
    indexes (into the token list) of the ';' tokens. With open_end the text is one
    statement cut from a longer one, where a ';' may have ended an executable comment."""
    if mode.multibyte_unsafe and not sql.isascii():
        _refuse_high_bytes(sql, mode)
    pattern = _pattern(mode.ansi_quotes, mode.no_backslash_escapes, False)
    tokens: list[Token] = []
    append = tokens.append
    comments: list[tuple[int, int, bool]] = []
    semis: list[int] = []
    exec_start = -1  # start of the executable comment we are inside, or -1
    pos = 0
    n = len(sql)
    while pos < n:
        for m in pattern.finditer(sql, pos):
            kind = m.lastgroup or ""
            e = m.end()
            if kind == "word":
                s = m.start(kind)
                append(Token(Tok.WORD, s, e, _word_text(sql[s:e])))
            elif kind == "op1":
                append(Token(Tok.PUNCT, e - 1, e, _op_text(sql[e - 1 : e])))
            elif kind == "op":
                s = m.start(kind)
                raw = sql[s:e]
                if exec_start >= 0 and raw == b"*" and sql[e : e + 1] == b"/":
                    comments.append((exec_start, e + 1, True))
                    exec_start = -1
                    pos = e + 1
                    break
                append(Token(Tok.PUNCT, s, e, _op_text(raw)))
            elif kind == "num":
                s = m.start(kind)
                raw = sql[s:e]
                if tokens and _after_qualifier(tokens, s):
                    # t.5 names column 5 of t: the server reads identifiers after a dot.
                    if raw[:1] == b".":
                        append(Token(Tok.PUNCT, s, s + 1, "."))
                        s += 1
                    append(Token(Tok.IDENT, s, e, raw.lstrip(b".").decode("ascii")))
                else:
                    append(Token(Tok.NUMBER, s, e, raw.decode("ascii")))
            elif kind == "sq" or kind == "dq":
                s = m.start(kind)
                value = string_bytes(sql[s:e], mode)
                append(Token(Tok.STRING, s, e, value.decode("utf-8", "replace")))
            elif kind == "bt" or kind == "dqid":
                s = m.start(kind)
                value = string_bytes(sql[s:e], mode)
                append(Token(Tok.IDENT, s, e, value.decode("utf-8", "replace")))
            elif kind == "semi":
                s = e - 1
                semis.append(len(tokens))
                append(Token(Tok.PUNCT, s, e, ";"))
                # The server lexes the next statement afresh, outside any comment.
                if exec_start >= 0:
                    comments.append((exec_start, s, True))
                    exec_start = -1
            elif kind == "var":
                s = m.start(kind)
                append(Token(Tok.VARIABLE, s, e, _variable_text(sql[s:e], mode)))
            elif kind == "param":
                append(Token(Tok.PARAM, e - 1, e, "?"))
            elif kind == "hexs" or kind == "hexn":
                s = m.start(kind)
                append(Token(Tok.HEX, s, e, sql[s:e].decode("ascii")))
            elif kind == "dword":
                s = m.start(kind)
                append(Token(Tok.WORD, s, e, _word_text(sql[s:e])))
            elif kind == "cmt" or kind == "lcmt":
                comments.append((m.start(kind), e, False))
            elif kind == "xopen":
                if exec_start < 0:
                    exec_start = m.start(kind)
                else:  # a nested opener inside an executable comment: still code
                    comments.append((m.start(kind), e, True))
            elif kind == "numword":
                raise LexError(_number_word(sql, m.start(kind), e))
            else:  # bad
                s = m.start(kind)
                what = _UNTERMINATED[sql[s:e]]
                raise LexError(f"{what} starting at byte {s}")
        else:
            break
    if exec_start >= 0:
        if not open_end:
            raise LexError(f"unterminated executable comment starting at byte {exec_start}")
        comments.append((exec_start, n, True))
    comments.sort()
    if mode.eight_bit and not sql.isascii():
        _refuse_high_bytes_in_words(sql, tokens)
    return tokens, comments, semis


def _number_word(sql: bytes, s: int, e: int) -> str:
    shown = sql[s:e].decode("ascii", "replace")
    return (
        f"the number {shown[:-1]} at byte {s} runs into a word ({shown}...): the server "
        "ends the number there and reads the rest as the next word; put a space after it"
    )


def _refuse_high_bytes(sql: bytes, mode: LexMode) -> None:
    """Raise unless the gateway reads the text's bytes >= 0x80 as the server does: never
    in a character set that can hide a quote, only inside quotes and comments in one
    that is not UTF-8 (see LexMode)."""
    if sql.isascii():
        return
    if mode.multibyte_unsafe:
        offset = next(i for i, b in enumerate(sql) if b >= 0x80)
        raise LexError(_MULTIBYTE_MESSAGE.format(byte=sql[offset], offset=offset))
    if mode.eight_bit:
        as_utf8 = LexMode(mode.ansi_quotes, mode.no_backslash_escapes)
        _refuse_high_bytes_in_words(sql, _lex(sql, as_utf8, open_end=True)[0])


def _refuse_high_bytes_in_words(sql: bytes, tokens: list[Token]) -> None:
    """In a client character set that is not UTF-8: a byte >= 0x80 in a word or a
    variable (the server may split it there), or in a quoted name, a double-quoted
    string included (a name under ANSI_QUOTES, which the gateway never knows). Names
    are read as UTF-8, so such a name would match no rule nor masking rule; a
    single-quoted string is a value, and keeps its bytes."""
    for t in tokens:
        kind = t.kind
        if kind is Tok.STRING:
            if sql[t.start] != 0x22:  # '"'
                continue
        elif kind is not Tok.WORD and kind is not Tok.VARIABLE and kind is not Tok.IDENT:
            continue
        if sql[t.start : t.end].isascii():
            continue
        offset = next(i for i in range(t.start, t.end) if sql[i] >= 0x80)
        if kind is Tok.WORD or kind is Tok.VARIABLE:
            raise LexError(_EIGHT_BIT_MESSAGE.format(byte=sql[offset], offset=offset))
        double = _DOUBLE_QUOTED if sql[t.start] == 0x22 else ""
        raise LexError(
            _EIGHT_BIT_NAME_MESSAGE.format(byte=sql[offset], offset=offset, double=double)
        )


def _after_qualifier(tokens: list[Token], s: int) -> bool:
    """A number token at s directly follows `name.` or `name` (for `.5`)."""
    prev = tokens[-1]
    if prev.end != s:
        return False
    if prev.kind == Tok.PUNCT and prev.text == ".":
        if len(tokens) < 2:
            return False
        before = tokens[-2]
        return before.kind in _IDENT_KINDS and before.end == prev.start
    return prev.kind in _IDENT_KINDS


# -- statement boundaries -----------------------------------------------------------------

_COMPOUND_OPENERS = frozenset({"BEGIN", "IF", "CASE", "LOOP", "REPEAT", "WHILE", "FOR"})
_END_SUFFIXES = frozenset({"IF", "CASE", "LOOP", "REPEAT", "WHILE", "FOR"})
_TYPE_MODIFIERS = frozenset({"UNSIGNED", "SIGNED", "ZEROFILL", "BINARY", "ASCII", "UNICODE"})


def word_at(tokens: Sequence[Token], i: int) -> str | None:
    """The upper-cased word at ``tokens[i]``, or None (not a word, or past the end)."""
    if i < len(tokens):
        t = tokens[i]
        if t.kind == Tok.WORD:
            return t.text
    return None


def punct_at(tokens: Sequence[Token], i: int, text: str) -> bool:
    """Whether ``tokens[i]`` is the operator or punctuation ``text``."""
    return i < len(tokens) and tokens[i].kind == Tok.PUNCT and tokens[i].text == text


def _skip_parens(tokens: list[Token], i: int) -> int:
    """Index after the parenthesised group opening at i."""
    depth = 0
    n = len(tokens)
    while i < n:
        t = tokens[i]
        if t.kind == Tok.PUNCT:
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                depth -= 1
                if depth == 0:
                    return i + 1
            elif t.text == ";":
                return i
        i += 1
    return i


def skip_definer(tokens: Sequence[Token], i: int) -> int:
    """Index after `DEFINER = user` when it starts at i, else i."""
    if word_at(tokens, i) != "DEFINER" or not punct_at(tokens, i + 1, "="):
        return i
    i += 2
    if word_at(tokens, i) in ("CURRENT_USER", "CURRENT_ROLE"):
        i += 1
        if punct_at(tokens, i, "(") and punct_at(tokens, i + 1, ")"):
            i += 2
        return i
    i += 1  # the user name
    if i < len(tokens):
        t = tokens[i]
        if t.kind == Tok.VARIABLE and not t.text.startswith("@@"):
            i += 1  # @host
        elif t.kind == Tok.PUNCT and t.text == "@":
            i += 2
    return i


def _body_start(tokens: list[Token], first: int, last: int) -> int | None:
    """Where the body of a stored program or compound statement starts, when the
    statement beginning at `first` has one that may contain ';'; None otherwise."""
    w = word_at(tokens, first)
    if w is None:
        if tokens[first].kind == Tok.IDENT and punct_at(tokens, first + 1, ":"):
            return first  # label: BEGIN ...
        return None
    if w == "BEGIN":
        return first if word_at(tokens, first + 1) == "NOT" else None
    if w in _COMPOUND_OPENERS:
        return first
    if punct_at(tokens, first + 1, ":"):
        return first
    if w not in ("CREATE", "ALTER"):
        return None
    i = first + 1
    if word_at(tokens, i) == "OR" and word_at(tokens, i + 1) == "REPLACE":
        i += 2
    i = skip_definer(tokens, i)
    if word_at(tokens, i) == "AGGREGATE":
        i += 1
    obj = word_at(tokens, i)
    if obj in ("PROCEDURE", "FUNCTION"):
        if w != "CREATE":
            return None
        i += 1
        if word_at(tokens, i) == "IF":
            i += 3 if word_at(tokens, i + 1) == "NOT" else 2
        i += 1  # name
        if punct_at(tokens, i, "."):
            i += 2
        if not punct_at(tokens, i, "("):
            return None  # CREATE FUNCTION f RETURNS ... SONAME: no body
        return _after_routine_header(tokens, _skip_parens(tokens, i))
    if obj == "TRIGGER":
        while i < last:
            if word_at(tokens, i) == "FOR" and word_at(tokens, i + 1) == "EACH":
                i += 3  # FOR EACH ROW
                if word_at(tokens, i) in ("FOLLOWS", "PRECEDES"):
                    i += 2
                    if punct_at(tokens, i, "."):
                        i += 2
                return i
            i += 1
        return None
    if obj == "EVENT":
        depth = 0
        while i < last:
            t = tokens[i]
            if t.kind == Tok.PUNCT:
                depth += t.text == "("
                depth -= t.text == ")"
            elif depth == 0 and t.kind == Tok.WORD and t.text == "DO":
                return i + 1
            i += 1
        return None
    return None


def _after_routine_header(tokens: list[Token], i: int) -> int:
    """Skip RETURNS type and the routine characteristics after the parameter list."""
    n = len(tokens)
    while i < n:
        w = word_at(tokens, i)
        if w == "RETURNS":
            i += 2  # RETURNS type
            if punct_at(tokens, i, "("):
                i = _skip_parens(tokens, i)
            while True:
                m = word_at(tokens, i)
                if m in _TYPE_MODIFIERS:
                    i += 1
                elif m in ("CHARSET", "COLLATE"):
                    i += 2
                elif m == "CHARACTER" and word_at(tokens, i + 1) == "SET":
                    i += 3
                else:
                    break
        elif w in ("COMMENT", "LANGUAGE", "CONTAINS"):
            i += 2
        elif w == "NOT" and word_at(tokens, i + 1) == "DETERMINISTIC":
            i += 2
        elif w == "DETERMINISTIC":
            i += 1
        elif w == "NO" and word_at(tokens, i + 1) == "SQL":
            i += 2
        elif w in ("READS", "MODIFIES") and word_at(tokens, i + 1) == "SQL":
            i += 3
        elif w == "SQL" and word_at(tokens, i + 1) == "SECURITY":
            i += 3
        else:
            return i
    return i


def _compound_end(tokens: list[Token], body: int) -> int:
    """Index of the ';' that ends a statement whose body starts at `body` (or the
    token count when the text ends first).

    Blocks open only where a statement starts (after ';', a label, BEGIN, THEN/ELSE of
    an IF or CASE statement, DO of WHILE/FOR, LOOP, REPEAT, a handler's conditions) or,
    for CASE, anywhere else as an expression; a block END stands at a statement start,
    so an `end` column elsewhere closes nothing. Where this reads the structure wrongly
    it ends the statement too early, which only adds statements the policy refuses.
    """
    stack: list[str] = []
    at_start = True
    i = body
    n = len(tokens)
    while i < n:
        t = tokens[i]
        kind = t.kind
        if kind == Tok.PUNCT and t.text == ";":
            if not stack:
                return i
            at_start = True
            i += 1
            continue
        w = t.text if kind == Tok.WORD else None
        if at_start:
            if kind in _IDENT_KINDS and punct_at(tokens, i + 1, ":"):
                i += 2  # label
                continue
            if w == "BEGIN":
                stack.append(w)
                i += 1
                if word_at(tokens, i) == "NOT" and word_at(tokens, i + 1) == "ATOMIC":
                    i += 2
                continue
            if w in ("LOOP", "REPEAT"):
                stack.append(w)
                i += 1
                continue
            if w == "ELSE":
                i += 1
                continue
            at_start = False
            if w in ("IF", "WHILE", "FOR"):
                stack.append(w)
            elif w == "CASE":
                stack.append("CASE_STMT")
            elif w == "END":
                i = _close(stack, tokens, i)
                continue
            elif w == "DECLARE":
                handler = _handler_statement(tokens, i)
                if handler is not None:
                    i = handler
                    at_start = True
                    continue
            i += 1
            continue
        if w is not None:
            top = stack[-1] if stack else None
            if w == "CASE":
                stack.append("CASE_EXPR")
            elif w == "END" and top in ("CASE_EXPR", "REPEAT"):
                i = _close(stack, tokens, i)
                continue
            elif w in ("THEN", "ELSE") and top in ("IF", "CASE_STMT"):
                at_start = True
            elif w == "DO" and top in ("WHILE", "FOR"):
                at_start = True
        i += 1
    return n


def _close(stack: list[str], tokens: list[Token], i: int) -> int:
    """Pop the block an END at i closes; index after `END [IF|CASE|...]`."""
    top = stack.pop() if stack else None
    i += 1
    if top != "CASE_EXPR" and word_at(tokens, i) in _END_SUFFIXES:
        i += 1
    return i


def _handler_statement(tokens: list[Token], i: int) -> int | None:
    """For `DECLARE ... HANDLER FOR cond[, cond] statement` at i: the index where the
    handler's statement starts; None for other DECLAREs."""
    j = i + 1
    if word_at(tokens, j) not in ("CONTINUE", "EXIT", "UNDO"):
        return None
    if word_at(tokens, j + 1) != "HANDLER" or word_at(tokens, j + 2) != "FOR":
        return None
    j += 3
    n = len(tokens)
    while j < n:
        w = word_at(tokens, j)
        if w == "SQLSTATE":
            j += 1
            if word_at(tokens, j) == "VALUE":
                j += 1
            j += 1
        elif w == "NOT":
            j += 2  # NOT FOUND
        else:
            j += 1
        if punct_at(tokens, j, ","):
            j += 1
            continue
        return j
    return j


def split_statements(sql: bytes, mode: LexMode) -> tuple[Statement, ...]:
    """The statements of a text, as the server will run them; empty ones dropped."""
    tokens, comments, semis = _lex(sql, mode)
    statements: list[Statement] = []
    n = len(tokens)
    ci = 0  # next comment not yet assigned to a statement
    nc = len(comments)
    first = 0
    semis.append(n)
    si = 0
    while first <= n:
        # The ';' (or the end) that ends the statement starting at token `first`.
        while semis[si] < first:
            si += 1
        stop = semis[si]
        if first < stop:
            body = _body_start(tokens, first, stop)
            if body is not None and body < stop:
                stop = _compound_end(tokens, body)
                while semis[si] < stop:
                    si += 1
        # The statement's span: from the previous ';' to this one, trimmed.
        lo = tokens[first - 1].end if first > 0 else 0
        hi = tokens[stop].start if stop < n else len(sql)
        start = tokens[first].start if first < stop else hi
        end = tokens[stop - 1].end if first < stop else lo
        span_comments: list[tuple[int, int]] = []
        executable = False
        while ci < nc and comments[ci][0] < hi:
            cs, ce, cx = comments[ci]
            if cs >= lo:
                span_comments.append((cs, ce))
                executable = executable or cx
                start = min(start, cs)
                end = max(end, ce)
            ci += 1
        if first < stop or executable:
            while end > start and sql[end - 1] in _WS_BYTES:
                end -= 1  # a line comment's trailing blanks
            stmt_tokens = tuple(tokens[first:stop])
            plain = not span_comments and _plain(sql, start, end, stmt_tokens, mode)
            statements.append(
                Statement(
                    sql[start:end],
                    start,
                    end,
                    stmt_tokens,
                    executable,
                    tuple(span_comments),
                    plain,
                )
            )
        first = stop + 1
    return tuple(statements)


def _plain(sql: bytes, start: int, end: int, tokens: tuple[Token, ...], mode: LexMode) -> bool:
    if b'"' in sql[start:end]:
        return False
    if mode.no_backslash_escapes and b"\\" in sql[start:end]:
        return False
    for t in tokens:
        if t.kind == Tok.WORD:
            c = sql[t.start]
            if 0x30 <= c <= 0x39 or c == 0x24:  # starts with a digit or '$'
                return False
        elif t.kind == Tok.IDENT and sql[t.start] not in (0x60, 0x22):
            return False  # t.5: a bare number that names a column
    return True


def shape(sql: bytes, mode: LexMode, *, typed: bool = False) -> bytes | None:
    """The text with every string, number and hex/bit literal replaced by '?' and every
    ordinary comment by ``/**/``, everything else (whitespace, optimizer hints ``/*+``,
    executable comments) kept verbatim; None when the text does not lex. ``typed``: the
    shape, a newline and the literals' types (letters as literal_types() spells them):
    texts whose literals differ in type may parse differently (``LIKE 'x'`` and ``LIKE
    0x41``), so one's classification does not stand for the other's.

    Two texts with the same shape differ only in literal values and in what their
    ordinary comments say: the lexing rules are those of split_statements, a literal is
    one token in both texts, and a comment is one in both, which the server skips. Agents
    and ORMs put a request id or a trace in a comment (sqlcommenter, marginalia); such
    texts still share one shape.
    """
    if (mode.multibyte_unsafe or mode.eight_bit) and not sql.isascii():
        try:
            _refuse_high_bytes(sql, mode)
        except LexError:
            return None
    fast = _pattern(mode.ansi_quotes, mode.no_backslash_escapes, True)
    slow = _pattern(mode.ansi_quotes, mode.no_backslash_escapes, False)
    out: list[bytes] = []
    types = bytearray()  # with ``typed``
    kept = 0  # sql[kept:s] is still to be copied
    prev_end = -1  # end of the last identifier-like token, for t.5
    dot_end = -1  # end of a '.' directly after an identifier-like token
    in_exec = False
    pos = 0
    n = len(sql)
    scanned: list[re.Match[bytes]] | None = [] if n <= _SCAN_LIMIT else None
    while pos < n:
        for m in (slow if in_exec else fast).finditer(sql, pos):
            if scanned is not None:
                scanned.append(m)
            kind = m.lastgroup or ""
            e = m.end()
            if kind == "run":
                if sql[e - 1] in _IDENT_END:
                    prev_end = e
                elif sql[e - 1] == 0x2E and (
                    prev_end == e - 1 or (e - 2 >= m.start(kind) and sql[e - 2] in _IDENT_END)
                ):
                    dot_end = e  # `t.` before `.5`
            elif kind == "word" or kind == "bt" or kind == "dqid" or kind == "dword":
                prev_end = e
            elif kind == "num":
                s = m.start(kind)
                if s == prev_end or s == dot_end:
                    prev_end = e  # a column name after a qualifier
                    continue
                out.append(sql[kept:s])
                out.append(b"?")
                kept = e
                if typed:
                    number = sql[s:e]
                    if number.isdigit():
                        types += b"i"
                    else:
                        types += b"e" if b"e" in number or b"E" in number else b"d"
            elif kind == "sq" or kind == "dq" or kind == "hexs" or kind == "hexn":
                s = m.start(kind)
                out.append(sql[kept:s])
                out.append(b"?")
                kept = e
                if typed:
                    if kind == "sq" or kind == "dq":
                        types += b"s"
                    else:
                        types += b"x" if sql[s] in b"xX" or sql[s + 1] == 0x78 else b"b"
            elif kind == "op1":
                if e - 1 == prev_end and sql[prev_end] == 0x2E:  # '.'
                    dot_end = e
            elif kind == "op":
                if in_exec and sql[e - 1] == 0x2A and sql[e : e + 1] == b"/":  # '*/'
                    in_exec = False
                    pos = e + 1
                    break
            elif kind == "xopen":
                if not in_exec:
                    in_exec = True
                    pos = e
                    break
            elif kind == "semi":
                in_exec = False
            elif kind == "cmt" or kind == "lcmt":
                s = m.start(kind)
                if sql[s : s + 3] == b"/*+":
                    continue  # an optimizer hint: MySQL reads it
                out.append(sql[kept:s])
                out.append(b"/**/")
                kept = e
            elif kind == "bad" or kind == "numword":
                return None
        else:
            break
    if in_exec:
        return None
    if scanned is not None:
        global _last_scan
        _last_scan = (sql, mode.ansi_quotes, mode.no_backslash_escapes, scanned)
    if not out:
        return sql + b"\n" if typed else sql
    out.append(sql[kept:])
    if typed:
        out.append(b"\n")
        out.append(bytes(types))
    return b"".join(out)


def literal_types(tokens: Sequence[Token]) -> bytes:
    """One letter for each literal among ``tokens``, in order: the type a '?' of shape()
    stands for, which a grant on a shape must keep (``code = 'A-1'`` compares strings,
    ``code = 0`` numbers, and with sql_mode '' matches every code that does not start
    with a digit). ``s`` a string (``'x'``, ``"x"``, ``_latin1'x'``, ``N'x'``: the
    word before it is kept by shape()), ``i`` an integer, ``d`` a decimal (``1.5``,
    ``.5``, ``1.``), ``e`` an approximate number (``1e3``), ``x`` a hexadecimal literal
    (``X'0A'``, ``0x0A``), ``b`` a bit literal (``B'01'``, ``0b01``). ``NULL``, ``TRUE``
    and ``FALSE`` are words, which shape() keeps as they are."""
    types = bytearray()
    for t in tokens:
        kind = t.kind
        if kind == Tok.STRING:
            types += b"s"
        elif kind == Tok.NUMBER:
            text = t.text
            types += b"e" if "e" in text or "E" in text else b"d" if "." in text else b"i"
        elif kind == Tok.HEX:
            types += b"b" if t.text[:1] in "bB" or t.text[:2] == "0b" else b"x"
    return bytes(types)


# The last text shape() read and its mode's ANSI_QUOTES and NO_BACKSLASH_ESCAPES, with
# the master pattern's matches in the order it took them (switching patterns at
# executable comments as outline() does too): the gateway computes a text's shape and,
# when no cached classification has that shape, outlines the very same bytes object
# next, which can then skip the regular expression. Matching is most of the cost of
# either (6 of the 9 and 12 µs of a 300-byte statement). Only short texts are kept.
_Scan = tuple[bytes, bool, bool, list[re.Match[bytes]]]
_last_scan: _Scan | None = None
_SCAN_LIMIT = 64 * 1024


_IDENT_END = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass(frozen=True, slots=True)
class Outline:
    """A statement's bounds and a keyword-level view of it, without per-token objects.

    The skeleton is the statement upper-cased with each literal or '?' turned into '?',
    each quoted identifier into '``', each variable into '@V' or '@@V' and each comment
    into a space (an executable comment's contents stay): keyword searches over it cannot
    be fooled by quotes or comments.
    """

    start: int
    end: int
    skeleton: bytes
    executable_comment: bool
    plain: bool  # as Statement.plain
    # When the statement is not plain only because it holds ordinary comments: their
    # spans (absolute offsets). default_mode_text() of such a statement is its text with
    # each of them turned into a space, which a classifier can splice without lexing the
    # text again. None otherwise.
    comments: tuple[tuple[int, int], ...] | None = None


# A statement head that may open a stored program or compound statement, whose body can
# hold ';' (see _body_start).
_COMPOUND_HEAD = re.compile(
    rb"[ \t\n\r\f\v]*+(?:(?:BEGIN|IF|CASE|LOOP|REPEAT|WHILE|FOR)(?![A-Z0-9_$\x80-\xff])"
    rb"|(?:[A-Z_$0-9\x80-\xff]++|``)[ \t\n\r\f\v]*+:(?!=)"
    rb"|(?:CREATE|ALTER)(?![A-Z0-9_$\x80-\xff]).*?"
    rb"(?<![A-Z0-9_$\x80-\xff])(?:PROCEDURE|FUNCTION|TRIGGER|EVENT)(?![A-Z0-9_$\x80-\xff]))",
    re.DOTALL,
)


def outline(sql: bytes, mode: LexMode) -> tuple[Outline, ...]:
    """The statements of a text as split_statements() splits them, each as an Outline:
    the cheap view a classifier needs for the statements it sees most."""
    scan = _last_scan
    if (
        scan is not None
        and scan[0] is sql
        and scan[1] == mode.ansi_quotes
        and scan[2] == mode.no_backslash_escapes
    ):
        outlines = _outline(sql, mode, 0, len(sql), True, scan[3])
    else:
        outlines = _outline(sql, mode, 0, len(sql), True)
    if any(_COMPOUND_HEAD.match(o.skeleton) for o in outlines):
        # A body may hold ';': only the token-level reading finds where it ends.
        outlines = []
        for stmt in split_statements(sql, mode):
            outlines.extend(_outline(sql, mode, stmt.start, stmt.end, False))
    return tuple(outlines)


def outline_statement(text: bytes, mode: LexMode) -> Outline | None:
    """The Outline of one statement's text (a ';' inside it is kept, as in a compound
    statement's body, and an executable comment may be left open, as when a ';' ended
    it); None when it holds no code."""
    found = _outline(text, mode, 0, len(text), False)
    return found[0] if found else None


def tokenize(text: bytes, mode: LexMode) -> tuple[Token, ...]:
    """Every token of one statement's text, ';' included (inside a compound statement's
    body); an executable comment may be left open (the ';' after it closed it)."""
    return tuple(_lex(text, mode, open_end=True)[0])


def _outline(
    sql: bytes,
    mode: LexMode,
    pos: int,
    limit: int,
    split: bool,
    scanned: list[re.Match[bytes]] | None = None,
) -> list[Outline]:
    """``scanned``: the matches of the whole text as shape() found them (see _last_scan),
    the very ones the loop below would find: where it would start the other pattern
    afresh, it goes on with the next of them instead."""
    if (mode.multibyte_unsafe or mode.eight_bit) and not sql.isascii():
        _refuse_high_bytes(sql, mode)
    fast = _pattern(mode.ansi_quotes, mode.no_backslash_escapes, True)
    slow = _pattern(mode.ansi_quotes, mode.no_backslash_escapes, False)
    outlines: list[Outline] = []
    pieces: list[bytes] = []
    append = pieces.append
    first = -1  # start of the statement's first token or comment
    last = -1  # end of its last one
    has_token = False
    plain = True  # but for comments
    comments: list[tuple[int, int]] = []
    executable = False
    prev_end = -1
    dot_end = -1
    in_exec = False
    exec_start = -1
    while pos < limit:
        # No endpos: the bytes after a statement still decide how its last token reads
        # (`1--` before a ';' is arithmetic, at the end of the text a comment).
        matches = scanned if scanned is not None else (slow if in_exec else fast).finditer(sql, pos)
        for m in matches:
            kind = m.lastgroup or ""
            s = m.start(kind)
            if s >= limit:
                pos = limit
                break
            e = m.end()
            if kind == "semi":
                in_exec = False  # the server lexes the next statement afresh
            if kind == "semi" and split:
                if has_token or executable:
                    outlines.append(
                        _finish(sql, mode, first, last, pieces, plain, comments, executable)
                    )
                pieces = []
                append = pieces.append
                first = -1
                has_token = False
                plain = True
                comments = []
                executable = False
                continue
            if first < 0:
                first = s
            elif s != m.start():
                append(b" ")  # the blanks the pattern skipped
            last = e
            if kind == "run":
                append(sql[s:e])
                if sql[e - 1] in _IDENT_END:
                    prev_end = e
                elif sql[e - 1] == 0x2E and (
                    prev_end == e - 1 or (e - 2 >= s and sql[e - 2] in _IDENT_END)
                ):
                    dot_end = e  # `t.` before `.5`
            elif kind == "word":
                append(sql[s:e])
                prev_end = e
            elif kind == "num":
                if s == prev_end or s == dot_end:
                    append(b"``")  # t.5: a column name
                    plain = False
                    prev_end = e
                else:
                    append(b"?")
            elif kind == "sq" or kind == "hexs" or kind == "hexn" or kind == "param":
                append(b"?")
            elif kind == "dq":
                append(b"?")
                plain = False
            elif kind == "bt" or kind == "dqid":
                append(b"``")
                prev_end = e
            elif kind == "var":
                append(b"@@V" if sql[s + 1] == 0x40 else b"@V")
            elif kind == "op1":
                append(sql[s:e])
                if s == prev_end and sql[s] == 0x2E:  # '.'
                    dot_end = e
            elif kind == "op":
                if in_exec and sql[s] == 0x2A and sql[e : e + 1] == b"/":  # '*/'
                    in_exec = False
                    append(b" ")
                    last = e + 1
                    pos = e + 1
                    if scanned is None:
                        break  # on with the fast pattern
                    continue
                append(sql[s:e])
            elif kind == "dword":
                append(sql[s:e])
                plain = False
                prev_end = e
            elif kind == "semi":  # inside a compound statement's body
                append(b";")
            elif kind == "cmt" or kind == "lcmt":
                append(b" ")
                comments.append((s, e))
                continue
            elif kind == "xopen":
                append(b" ")
                plain = False
                executable = True
                if not in_exec:
                    in_exec = True
                    exec_start = s
                    pos = e
                    if scanned is None:
                        break  # on with the slow pattern
                continue
            elif kind == "numword":
                raise LexError(_number_word(sql, s, e))
            else:  # bad
                raise LexError(f"{_UNTERMINATED[sql[s:e]]} starting at byte {s}")
            has_token = True
        else:
            break
        if scanned is not None:
            break  # all of the whole text's matches are read: never start them again
    if in_exec and split:
        raise LexError(f"unterminated executable comment starting at byte {exec_start}")
    if has_token or executable:
        outlines.append(_finish(sql, mode, first, last, pieces, plain, comments, executable))
    return outlines


def _finish(
    sql: bytes,
    mode: LexMode,
    first: int,
    last: int,
    pieces: list[bytes],
    plain: bool,
    comments: list[tuple[int, int]],
    executable: bool,
) -> Outline:
    """``plain`` says whether the statement is plain but for its ``comments``."""
    while last > first and sql[last - 1] in _WS_BYTES:
        last -= 1
    if plain:
        text = sql[first:last]
        if b'"' in text or (mode.no_backslash_escapes and b"\\" in text):
            plain = False
    skeleton = b"".join(pieces).upper()
    if not comments:
        return Outline(first, last, skeleton, executable, plain)
    # A statement that ends in '--' reads it as a comment on its own, and as an operator
    # before a ';' in the whole text: only default_mode_text() of its text says how.
    spliced = plain and not sql.endswith(b"--", first, last)
    return Outline(first, last, skeleton, executable, False, tuple(comments) if spliced else None)


def default_mode_text(sql: bytes, mode: LexMode) -> bytes:
    """The statement spelled so that MySQL's default lexing reads the same tokens, with
    its comments blanked: for a parser that knows only that lexing.

    Comments become a space; double-quoted strings become single-quoted ones (and
    identifiers under ANSI_QUOTES backtick-quoted); under NO_BACKSLASH_ESCAPES a string
    holding a backslash is re-escaped; identifiers that start with a digit or '$' (1abc,
    t.5) are backtick-quoted. Everything else is copied byte for byte.
    """
    fast = _pattern(mode.ansi_quotes, mode.no_backslash_escapes, True)
    slow = _pattern(mode.ansi_quotes, mode.no_backslash_escapes, False)
    out: list[bytes] = []
    append = out.append
    kept = 0
    prev_end = -1
    dot_end = -1
    in_exec = False
    pos = 0
    n = len(sql)
    while pos < n:
        for m in (slow if in_exec else fast).finditer(sql, pos):
            kind = m.lastgroup or ""
            e = m.end()
            if kind == "run":
                if sql[e - 1] in _IDENT_END:
                    prev_end = e
                elif sql[e - 1] == 0x2E and (
                    prev_end == e - 1 or (e - 2 >= m.start(kind) and sql[e - 2] in _IDENT_END)
                ):
                    dot_end = e  # `t.` before `.5`
                continue
            if kind == "word":
                prev_end = e
                continue
            if kind == "op1":
                if e - 1 == prev_end and sql[prev_end] == 0x2E:
                    dot_end = e
                continue
            s = m.start(kind)
            if kind == "num":
                if s != prev_end and s != dot_end:
                    continue
                prev_end = e
                if sql[s] == 0x2E:  # t.5 read as a number '.5'
                    s += 1
                replacement = b"`" + sql[s:e] + b"`"
            elif kind == "sq":
                if not mode.no_backslash_escapes or b"\\" not in sql[s:e]:
                    continue
                replacement = _single_quoted(string_bytes(sql[s:e], mode))
            elif kind == "dq":
                replacement = _single_quoted(string_bytes(sql[s:e], mode))
            elif kind == "dqid" or kind == "dword":
                prev_end = e
                value = string_bytes(sql[s:e], mode) if kind == "dqid" else sql[s:e]
                replacement = b"`" + value.replace(b"`", b"``") + b"`"
            elif kind == "bt":
                prev_end = e
                continue
            elif kind == "var":
                if b'"' not in sql[s:e] and not (
                    mode.no_backslash_escapes and b"\\" in sql[s:e] and sql[s + 1] != 0x40
                ):
                    continue
                name = string_bytes(sql[s + 1 : e], mode)
                replacement = b"@`" + name.replace(b"`", b"``") + b"`"
            elif kind == "cmt" or kind == "lcmt":
                replacement = b" "
            elif kind == "xopen":
                replacement = b" "
                if not in_exec:
                    in_exec = True
                    append(sql[kept:s])
                    append(replacement)
                    kept = pos = e
                    break
            elif kind == "op":
                if in_exec and sql[s] == 0x2A and sql[e : e + 1] == b"/":
                    in_exec = False
                    append(sql[kept:s])
                    append(b" ")
                    kept = pos = e + 1
                    break
                continue
            elif kind == "semi":
                in_exec = False
                continue
            elif kind == "bad":
                raise LexError(f"{_UNTERMINATED[sql[s:e]]} starting at byte {s}")
            else:
                continue
            append(sql[kept:s])
            append(replacement)
            kept = e
        else:
            break
    if not out:
        return sql
    append(sql[kept:])
    return b"".join(out)


def _single_quoted(value: bytes) -> bytes:
    return b"'" + value.replace(b"\\", b"\\\\").replace(b"'", b"''") + b"'"
