"""The MySQL lexer: statement splitting, executable comments, literals, shapes, and the
fast outline agreeing with the token-level reading."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.policy.lexer import (
    LexError,
    LexMode,
    Tok,
    default_mode_text,
    literal_types,
    outline,
    shape,
    split_statements,
    string_bytes,
    tokenize,
)

DEFAULT = LexMode()
ANSI = LexMode(ansi_quotes=True)
NBE = LexMode(no_backslash_escapes=True)
GBK = LexMode(multibyte_unsafe=True)


def texts(sql: bytes, mode: LexMode = DEFAULT) -> list[bytes]:
    return [s.text for s in split_statements(sql, mode)]


# -- splitting -----------------------------------------------------------------------------

SPLITS = [
    (b"SELECT 1", [b"SELECT 1"]),
    (b"SELECT 1; SELECT 2", [b"SELECT 1", b"SELECT 2"]),
    (b"SELECT 'a;b'; SELECT 2", [b"SELECT 'a;b'", b"SELECT 2"]),
    (b'SELECT "a;b"; SELECT 2', [b'SELECT "a;b"', b"SELECT 2"]),
    (b"SELECT `a;b` FROM t; SELECT 2", [b"SELECT `a;b` FROM t", b"SELECT 2"]),
    (b"SELECT 1 /* ; ' */; SELECT 2", [b"SELECT 1 /* ; ' */", b"SELECT 2"]),
    (b"SELECT 1 -- ; '\n; SELECT 2", [b"SELECT 1 -- ; '", b"SELECT 2"]),
    (b"SELECT 1 # ; '\n; SELECT 2", [b"SELECT 1 # ; '", b"SELECT 2"]),
    # '--' without a blank after it is two minus signs: the ';' ends the statement.
    (b"SELECT 1--1; SELECT 2", [b"SELECT 1--1", b"SELECT 2"]),
    (b"SELECT 1 --x; SELECT 2", [b"SELECT 1 --x", b"SELECT 2"]),
    (b"SELECT 1 --\t; SELECT 2", [b"SELECT 1 --\t; SELECT 2"]),
    (b"SELECT 1 --", [b"SELECT 1 --"]),
    # A backslash escapes the quote, unless NO_BACKSLASH_ESCAPES.
    (b"SELECT 'a\\'; SELECT 2'", [b"SELECT 'a\\'; SELECT 2'"]),
    (b"SELECT 'a''; SELECT 2'", [b"SELECT 'a''; SELECT 2'"]),
    (b"SELECT 'a\\\\'; SELECT 2", [b"SELECT 'a\\\\'", b"SELECT 2"]),
    # Empty statements are dropped; surrounding blanks trimmed.
    (b";;SELECT 1;;", [b"SELECT 1"]),
    (b"  SELECT 1  ;  ", [b"SELECT 1"]),
    (b"SELECT 1; -- bye\n", [b"SELECT 1"]),
    (b"/* only */ ; # comment\n;", []),
    (b"", []),
    # A leading comment belongs to its statement.
    (b"/* tag */ SELECT 1", [b"/* tag */ SELECT 1"]),
    # A stored program's BEGIN ... END body is one statement.
    (
        b"CREATE PROCEDURE p() BEGIN SELECT 1; IF a THEN SELECT 2; END IF; END; SELECT 3",
        [b"CREATE PROCEDURE p() BEGIN SELECT 1; IF a THEN SELECT 2; END IF; END", b"SELECT 3"],
    ),
    (
        b"CREATE DEFINER=`r`@`%` PROCEDURE s.p(IN x INT) COMMENT 'c' MODIFIES SQL DATA "
        b"BEGIN DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; END; "
        b"SELECT CASE WHEN x THEN 1 ELSE 2 END; WHILE x > 0 DO SET x = x - 1; END WHILE; "
        b"REPEAT SET x = x + 1; UNTIL x > 3 END REPEAT; lbl: LOOP LEAVE lbl; END LOOP; END; "
        b"DROP DATABASE d",
        [
            b"CREATE DEFINER=`r`@`%` PROCEDURE s.p(IN x INT) COMMENT 'c' MODIFIES SQL DATA "
            b"BEGIN DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; END; "
            b"SELECT CASE WHEN x THEN 1 ELSE 2 END; WHILE x > 0 DO SET x = x - 1; END WHILE; "
            b"REPEAT SET x = x + 1; UNTIL x > 3 END REPEAT; lbl: LOOP LEAVE lbl; END LOOP; END",
            b"DROP DATABASE d",
        ],
    ),
    (
        b"CREATE FUNCTION f(x INT) RETURNS VARCHAR(10) CHARSET utf8mb4 DETERMINISTIC "
        b"BEGIN RETURN 'a'; END; SELECT 1",
        [
            b"CREATE FUNCTION f(x INT) RETURNS VARCHAR(10) CHARSET utf8mb4 DETERMINISTIC "
            b"BEGIN RETURN 'a'; END",
            b"SELECT 1",
        ],
    ),
    (
        b"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; END; SELECT 1",
        [
            b"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; END",
            b"SELECT 1",
        ],
    ),
    (
        b"CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO BEGIN DELETE FROM t; END; SELECT 1",
        [b"CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO BEGIN DELETE FROM t; END", b"SELECT 1"],
    ),
    (b"BEGIN NOT ATOMIC SELECT 1; END; SELECT 2", [b"BEGIN NOT ATOMIC SELECT 1; END", b"SELECT 2"]),
    # A body that is one statement ends at its ';'.
    (
        b"CREATE PROCEDURE p() SELECT begin FROM t; DROP DATABASE d",
        [b"CREATE PROCEDURE p() SELECT begin FROM t", b"DROP DATABASE d"],
    ),
    (
        b"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1; DROP TABLE t",
        [b"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1", b"DROP TABLE t"],
    ),
    # An `end` column or a CASE expression inside a body closes no block early.
    (
        b"CREATE PROCEDURE p() BEGIN SELECT end, CASE WHEN 1 THEN begin END FROM t; END; SELECT 2",
        [
            b"CREATE PROCEDURE p() BEGIN SELECT end, CASE WHEN 1 THEN begin END FROM t; END",
            b"SELECT 2",
        ],
    ),
    # Plain BEGIN is a transaction.
    (b"BEGIN; SELECT 1; COMMIT", [b"BEGIN", b"SELECT 1", b"COMMIT"]),
]


@pytest.mark.parametrize(("sql", "expected"), SPLITS)
def test_split_statements(sql: bytes, expected: list[bytes]) -> None:
    assert texts(sql) == expected


@pytest.mark.parametrize(("sql", "expected"), SPLITS)
def test_outline_splits_the_same_way(sql: bytes, expected: list[bytes]) -> None:
    assert [sql[o.start : o.end] for o in outline(sql, DEFAULT)] == expected


def test_statement_offsets_slice_the_text() -> None:
    sql = b"  SELECT 1 ;\n/* c */ UPDATE t SET a = 2  ; "
    for stmt in split_statements(sql, DEFAULT):
        assert sql[stmt.start : stmt.end] == stmt.text
        for token in stmt.tokens:
            assert stmt.start <= token.start < token.end <= stmt.end
    assert [t.text for t in split_statements(sql, DEFAULT)[1].tokens] == [
        "UPDATE",
        "T",
        "SET",
        "A",
        "=",
        "2",
    ]


def test_no_backslash_escapes_changes_the_split() -> None:
    sql = b"SELECT 'a\\'; SELECT 1 -- '"
    assert texts(sql) == [sql]
    assert texts(sql, NBE) == [b"SELECT 'a\\'", b"SELECT 1 -- '"]


def test_ansi_quotes_makes_double_quotes_identifiers() -> None:
    sql = b'SELECT "a\\"; SELECT 1'
    # Default: a string with an escaped quote runs on to the end of the text.
    with pytest.raises(LexError, match="unterminated"):
        split_statements(sql, DEFAULT)
    # ANSI_QUOTES: "a\" is an identifier named a\ and the ';' ends the statement.
    stmts = split_statements(sql, ANSI)
    assert [s.text for s in stmts] == [b'SELECT "a\\"', b"SELECT 1"]
    assert stmts[0].tokens[1].kind == Tok.IDENT
    assert stmts[0].tokens[1].text == "a\\"
    assert split_statements(b'SELECT "a"', DEFAULT)[0].tokens[1].kind == Tok.STRING


# -- tokens ----------------------------------------------------------------------------------

TOKENS = [
    (b"SELECT a", [(Tok.WORD, "SELECT"), (Tok.WORD, "A")]),
    (b"'it''s' 'a\\nb'", [(Tok.STRING, "it's"), (Tok.STRING, "a\nb")]),
    (b"'\\%\\_\\x\\0'", [(Tok.STRING, "\\%\\_x\x00")]),
    (b'"a""b"', [(Tok.STRING, 'a"b')]),
    (b"`a``b`", [(Tok.IDENT, "a`b")]),
    (
        b"_utf8mb4'x' N'y'",
        [(Tok.WORD, "_UTF8MB4"), (Tok.STRING, "x"), (Tok.WORD, "N"), (Tok.STRING, "y")],
    ),
    (
        b"X'0A' x'0a' 0x0A B'01' 0b01",
        [
            (Tok.HEX, "X'0A'"),
            (Tok.HEX, "x'0a'"),
            (Tok.HEX, "0x0A"),
            (Tok.HEX, "B'01'"),
            (Tok.HEX, "0b01"),
        ],
    ),
    (
        b"1 1e5 .5 1. 1.5e-3",
        [
            (Tok.NUMBER, "1"),
            (Tok.NUMBER, "1e5"),
            (Tok.NUMBER, ".5"),
            (Tok.NUMBER, "1."),
            (Tok.NUMBER, "1.5e-3"),
        ],
    ),
    (b"1abc 0x1g $a", [(Tok.WORD, "1ABC"), (Tok.WORD, "0X1G"), (Tok.WORD, "$A")]),
    (b"t.5", [(Tok.WORD, "T"), (Tok.PUNCT, "."), (Tok.IDENT, "5")]),
    (
        b"@x @'Quoted Var' @`b` @@SESSION.sql_mode @@global.x @@y",
        [
            (Tok.VARIABLE, "@x"),
            (Tok.VARIABLE, "@quoted var"),
            (Tok.VARIABLE, "@b"),
            (Tok.VARIABLE, "@@session.sql_mode"),
            (Tok.VARIABLE, "@@global.x"),
            (Tok.VARIABLE, "@@y"),
        ],
    ),
    (
        b"? := <=> ->> -> != <>",
        [
            (Tok.PARAM, "?"),
            (Tok.PUNCT, ":="),
            (Tok.PUNCT, "<=>"),
            (Tok.PUNCT, "->>"),
            (Tok.PUNCT, "->"),
            (Tok.PUNCT, "!="),
            (Tok.PUNCT, "<>"),
        ],
    ),
    (b"1--1", [(Tok.NUMBER, "1"), (Tok.PUNCT, "-"), (Tok.PUNCT, "-"), (Tok.NUMBER, "1")]),
    (b"'a\x00\xff;b'", [(Tok.STRING, "a\x00\ufffd;b")]),
]


@pytest.mark.parametrize(("sql", "expected"), TOKENS)
def test_tokens(sql: bytes, expected: list[tuple[Tok, str]]) -> None:
    assert [(t.kind, t.text) for t in tokenize(sql, DEFAULT)] == expected


def test_string_bytes_follows_the_mode() -> None:
    assert string_bytes(b"'a\\'b'", DEFAULT) == b"a'b"
    assert string_bytes(b"'a\\b'", NBE) == b"a\\b"
    assert string_bytes(b'"a""b"', ANSI) == b'a"b'
    assert string_bytes(b"`a``b`", DEFAULT) == b"a`b"


# -- executable comments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        b"/*! DROP TABLE t */",
        b"SELECT 1 /*!50001 , SLEEP(1) */",
        b"SELECT 1 /*!*/",
        b"/*M! DROP TABLE t */",
        b"/*M!100100 DROP TABLE t */ SELECT 1",
        b"SELECT /*!40001 SQL_NO_CACHE */ a FROM t",
    ],
)
def test_executable_comment_found(sql: bytes) -> None:
    stmts = split_statements(sql, DEFAULT)
    assert [s.executable_comment for s in stmts] == [True]
    assert [o.executable_comment for o in outline(sql, DEFAULT)] == [True]


@pytest.mark.parametrize(
    "sql",
    [
        b"SELECT '/*! DROP TABLE t */'",
        b'SELECT "/*!50001 x */"',
        b"SELECT `/*!x*/` FROM t",
        b"SELECT 1 /* not /*! an executable one */",
        b"SELECT 1 -- /*! x */",
        b"SELECT 1 # /*! x */",
        b"SELECT /*+ MAX_EXECUTION_TIME(1000) */ a FROM t",
        b"SELECT /*M not executable */ 1",
    ],
)
def test_executable_comment_not_found(sql: bytes) -> None:
    assert [s.executable_comment for s in split_statements(sql, DEFAULT)] == [False]
    assert [o.executable_comment for o in outline(sql, DEFAULT)] == [False]


def test_executable_comment_contents_are_code() -> None:
    # Its contents are lexed: a quote inside does not open a string to the end.
    sql = b"SELECT 1 /*! , '*/' */; SELECT 2"
    stmts = split_statements(sql, DEFAULT)
    assert [s.text for s in stmts] == [b"SELECT 1 /*! , '*/' */", b"SELECT 2"]
    assert [s.executable_comment for s in stmts] == [True, False]
    # Only the statement holding one is flagged.
    stmts = split_statements(b"/*! SELECT 1 */; SELECT 2", DEFAULT)
    assert [s.executable_comment for s in stmts] == [True, False]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (b"SELECT 'abc", "unterminated string literal starting at byte 7"),
        (b"SELECT 'abc\\'", "unterminated string literal starting at byte 7"),
        (b'SELECT "abc', "unterminated quoted string or identifier starting at byte 7"),
        (b"SELECT `abc", "unterminated quoted identifier starting at byte 7"),
        (b"SELECT 1 /* abc", "unterminated comment starting at byte 9"),
        (b"SELECT 1 /*! abc", "unterminated executable comment starting at byte 9"),
        (b"SELECT 1; SELECT 'x", "unterminated string literal starting at byte 17"),
    ],
)
def test_unterminated(sql: bytes, message: str) -> None:
    with pytest.raises(LexError, match=message):
        split_statements(sql, DEFAULT)
    with pytest.raises(LexError, match=message):
        outline(sql, DEFAULT)
    assert shape(sql, DEFAULT) is None


def test_no_backslash_escapes_unterminated() -> None:
    # Under NO_BACKSLASH_ESCAPES the '' in 'a\'' is a doubled quote: the string never ends.
    with pytest.raises(LexError, match="unterminated string literal starting at byte 7"):
        split_statements(b"SELECT 'a\\''", NBE)
    assert texts(b"SELECT 'a\\''") == [b"SELECT 'a\\''"]


def test_multibyte_unsafe_charset_refuses_high_bytes() -> None:
    sql = "SELECT '\u4e2d'".encode()
    with pytest.raises(LexError, match="client character set .* utf8mb4") as caught:
        split_statements(sql, GBK)
    assert "offset 8" in str(caught.value)
    with pytest.raises(LexError):
        outline(sql, GBK)
    assert shape(sql, GBK) is None
    # ASCII text is fine, and utf8mb4 reads the same bytes.
    assert texts(b"SELECT 'a'", GBK) == [b"SELECT 'a'"]
    assert texts(sql) == [sql]


# -- shape -----------------------------------------------------------------------------------

SAME_SHAPE = [
    (b"SELECT c FROM t WHERE id=5017", b"SELECT c FROM t WHERE id=1"),
    (b"SELECT c FROM t WHERE id=5017", b"SELECT c FROM t WHERE id=1e5"),
    (b"SELECT 'a' FROM t", b"SELECT 'it''s; -- not a comment' FROM t"),
    (b'SELECT "x" FROM t', b"SELECT 'y' FROM t"),
    (b"SELECT X'0A', 0b1", b"SELECT 12, 'q'"),
    (b"SELECT 1 /* it's */ FROM t", b"SELECT 2 /* it's */ FROM t"),
    # what an ordinary comment says (a request id, a trace) is skipped by the server
    (b"SELECT 1 /* it's */ FROM t", b"SELECT 1 /* its */ FROM t"),
    (b"SELECT 1 /* request 7 */", b"SELECT 1 -- request 8"),
    (b"SELECT 1 # a\nFROM t", b"SELECT 1 /*b*/\nFROM t"),
    (b"INSERT INTO t VALUES (1, 'a'), (2, 'b')", b"INSERT INTO t VALUES (3, 'c'), (4, 'd')"),
]

DIFFERENT_SHAPE = [
    (b"SELECT c FROM t WHERE id=1", b"SELECT d FROM t WHERE id=1"),
    (b"SELECT c FROM t WHERE id=1", b"SELECT c FROM t WHERE id=@v"),
    (b"SELECT 1 /*+ BKA(t) */ FROM t", b"SELECT 1 /*+ NO_BKA(t) */ FROM t"),  # hints
    (b"/*!50001 SELECT 1 */", b"/*!50001 SELECT 1, 2 */"),
    (b"SELECT 1 /* c */ FROM t", b"SELECT 1 FROM t"),
    (b"SELECT t.5 FROM t", b"SELECT t.6 FROM t"),  # t.5 names a column
    (b"SELECT `a` FROM t", b"SELECT `b` FROM t"),
    (b"SELECT 1abc FROM t", b"SELECT 1abd FROM t"),
    (b"SELECT 1", b"SELECT 1; SELECT 1"),
]


@pytest.mark.parametrize(("a", "b"), SAME_SHAPE)
def test_same_shape(a: bytes, b: bytes) -> None:
    assert shape(a, DEFAULT) == shape(b, DEFAULT)


@pytest.mark.parametrize(("a", "b"), DIFFERENT_SHAPE)
def test_different_shape(a: bytes, b: bytes) -> None:
    assert shape(a, DEFAULT) != shape(b, DEFAULT)


def test_shape_text() -> None:
    assert shape(b"SELECT c FROM sbtest1 WHERE id=5017", DEFAULT) == (
        b"SELECT c FROM sbtest1 WHERE id=?"
    )
    # A quote inside a comment is not a literal; each comment becomes /**/.
    assert shape(b"SELECT 1 -- it's\n, 'x' # don't\n", DEFAULT) == (b"SELECT ? /**/\n, ? /**/\n")
    assert shape(b"SELECT /*+ BKA(t) */ 1 /* trace='00-4bf' */", DEFAULT) == (
        b"SELECT /*+ BKA(t) */ ? /**/"
    )
    assert shape(b'SELECT "a" FROM t', ANSI) == b'SELECT "a" FROM t'
    assert shape(b"SELECT 'a\\'b', 2", DEFAULT) == b"SELECT ?, ?"
    assert shape(b"SELECT 'a\\'b', 2", NBE) is None  # 'a\' then b', 2 unterminated
    assert shape(b"/*!50001 SELECT 1 */", DEFAULT) == b"/*!50001 SELECT ? */"


def test_literal_types() -> None:
    """The type behind each '?' of the shape, in order; NULL, TRUE and FALSE are words."""
    sql = (
        b"SELECT 'a', _latin1'b', 1, 1.5, .5, 1., 1e3, 1.5E-3, X'0A', 0x0A, B'01', 0b01, NULL, t.5"
    )
    tokens = [t for s in split_statements(sql, DEFAULT) for t in s.tokens]
    assert literal_types(tokens) == b"ssidddeexxbb"
    assert shape(sql, DEFAULT) == b"SELECT ?, _latin1?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, t.5"
    # the typed shape (the shape cache's key) ends with them
    assert shape(sql, DEFAULT, typed=True) == shape(sql, DEFAULT) + b"\nssidddeexxbb"
    assert shape(b"SELECT c FROM t", DEFAULT, typed=True) == b"SELECT c FROM t\n"
    assert shape(b"SELECT 1", DEFAULT, typed=True) != shape(b"SELECT '1'", DEFAULT, typed=True)


def test_default_mode_text() -> None:
    assert default_mode_text(b"SELECT 1 /* c */ FROM t -- x", DEFAULT) == b"SELECT 1   FROM t  "
    assert default_mode_text(b'SELECT "a\\"b", t.5, 1abc', DEFAULT) == (
        b"SELECT 'a\"b', t.`5`, `1abc`"
    )
    assert default_mode_text(b'SELECT "a""b" FROM t', ANSI) == b'SELECT `a"b` FROM t'
    assert default_mode_text(b"SELECT 'a\\'", NBE) == b"SELECT 'a\\\\'"


# -- the outline agrees with the token-level reading -----------------------------------------

_FRAGMENTS = [
    "SELECT",
    " ",
    "\n",
    "a",
    "t.",
    "5",
    ".5",
    "1e3",
    "'x'",
    "'y\\''",
    "''",
    '"q"',
    "`i`",
    "@v",
    "@@s.v",
    "?",
    ";",
    ",",
    "(",
    ")",
    "-",
    "--",
    "-- c\n",
    "# c\n",
    "/* c */",
    "/*! x */",
    "/*+ h */",
    "*",
    "/",
    "0x1F",
    "X'0A'",
    "N",
    "$",
    "\\",
    "BEGIN",
    "END",
    "CREATE PROCEDURE p() ",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(_FRAGMENTS), max_size=25),
    st.sampled_from([DEFAULT, ANSI, NBE, LexMode(True, True)]),
)
def test_outline_matches_split_statements(parts: list[str], mode: LexMode) -> None:
    sql = "".join(parts).encode()
    try:
        stmts = split_statements(sql, mode)
    except LexError as err:
        with pytest.raises(LexError) as caught:
            outline(sql, mode)
        assert str(caught.value) == str(err)
        assert shape(sql, mode) is None
        return
    outlines = outline(sql, mode)
    assert [(s.start, s.end, s.executable_comment, s.plain) for s in stmts] == [
        (o.start, o.end, o.executable_comment, o.plain) for o in outlines
    ]
    found = shape(sql, mode)
    assert found is not None
    # The shape keeps every non-literal byte and has one '?' per literal or parameter.
    literals = sum(
        t.kind in (Tok.STRING, Tok.NUMBER, Tok.HEX, Tok.PARAM) for t in tokenize(sql, mode)
    )
    assert found.count(b"?") >= literals


LATIN1 = LexMode(eight_bit=True)


def test_eight_bit_charset_reads_high_bytes_only_in_quotes_and_comments() -> None:
    """latin1 reads 0xa0 as a space: outside quotes and comments such a byte is refused,
    inside them it is read as the server reads it."""
    for sql in (
        b"DELETE FROM t WHERE id\xa0OR\xa01 = 1",
        b"SELECT 1 --\xa0'\nDELETE FROM t -- '",
        b"SELECT @caf\xe9",
        b"SELECT 1 /*!\xa0OR 1 */",
    ):
        with pytest.raises(LexError, match="outside quotes.*utf8mb4"):
            split_statements(sql, LATIN1)
        with pytest.raises(LexError, match="outside quotes"):
            outline(sql, LATIN1)
        assert shape(sql, LATIN1) is None
        assert texts(sql) == [sql]  # utf8mb4 reads the high bytes as part of a word
    fine = b"SELECT 'caf\xe9' /* \xa0 */ # \xa0"
    assert texts(fine, LATIN1) == [fine]
    assert shape(fine, LATIN1) == shape(fine, LexMode())


@pytest.mark.parametrize(
    "sql",
    [
        b"SELECT * FROM `k\xfcndigung`",
        b"SELECT CONCAT(`stra\xdfe`) FROM kunden",
        b"SELECT k.`stra\xdfe` FROM kunden k",
        b"SELECT * FROM shop.`k\xfcndigung` WHERE id = 'caf\xe9'",
        b"SELECT 1 /*! FROM `k\xfcndigung` */",
        b'SELECT * FROM "k\xfcndigung"',  # a name under ANSI_QUOTES
        b'SELECT "caf\xe9"',  # a string, or a name under ANSI_QUOTES
    ],
)
def test_eight_bit_charset_refuses_high_bytes_in_quoted_names(sql: bytes) -> None:
    """Names are read as UTF-8: in latin1 `k<0xfc>ndigung` would be `k\ufffdndigung` to
    the rules, matching none of them (a rule on `kündigung` let the text through), so a
    quoted name with a byte >= 0x80 is refused there; a double-quoted text too, whether
    the session reads it as a string or (ANSI_QUOTES, never known) as a name."""
    for mode in (LATIN1, LexMode(ansi_quotes=True, eight_bit=True)):
        with pytest.raises(LexError, match=r"inside a quoted name.*SET NAMES utf8mb4"):
            split_statements(sql, mode)
        with pytest.raises(LexError, match=r"inside a quoted name.*SET NAMES utf8mb4"):
            outline(sql, mode)
        assert shape(sql, mode) is None
    # the same message both ways: the two ANSI_QUOTES readings refuse alike
    messages = set()
    for mode in (LATIN1, LexMode(ansi_quotes=True, eight_bit=True)):
        with pytest.raises(LexError) as info:
            split_statements(sql, mode)
        messages.add(str(info.value))
    assert len(messages) == 1
    assert ("ANSI_QUOTES" in messages.pop()) == (b'"' in sql)
    assert texts(sql) == [sql]  # utf8mb4 reads the name


def test_eight_bit_charset_reads_high_bytes_in_single_quoted_strings() -> None:
    """A single-quoted string is a value, not a name: its bytes stay as they are."""
    sql = b"SELECT `id`, 'caf\xe9' FROM t WHERE n = 'k\xfcn''x' -- \xe9"
    (stmt,) = split_statements(sql, LATIN1)
    assert [t.kind for t in stmt.tokens if t.kind in (Tok.STRING, Tok.IDENT)] == [
        Tok.IDENT, Tok.STRING, Tok.STRING,
    ]  # fmt: skip
    assert shape(sql, LATIN1) == shape(sql, LexMode())


@pytest.mark.parametrize(
    "sql", [b"id=1e0OR(1)", b"id=1E+0or(1)", b"id=1.OR(1)", b"id=.5e1OR(1)", b"t.1e0or", b"1.5\xe9"]
)
def test_a_number_running_into_a_word_is_refused(sql: bytes) -> None:
    """The server ends a number at its point or exponent (1e0OR(1) is 1e0 OR (1)); a
    reading of one word would hide the OR, so the text is refused."""
    with pytest.raises(LexError, match="runs into a word"):
        split_statements(sql, LexMode())
    with pytest.raises(LexError, match="runs into a word"):
        outline(sql, LexMode())
    assert shape(sql, LexMode()) is None


def test_numbers_and_number_like_names_still_read() -> None:
    tokens = split_statements(b"SELECT 1e5, 1.5, .5, t.5, 1abc, 0x1Fg, 1e, 12ex", LexMode())
    assert [t.text for t in tokens[0].tokens if t.text != ","] == [
        "SELECT", "1e5", "1.5", ".5", "T", ".", "5", "1ABC", "0X1FG", "1E", "12EX",
    ]  # fmt: skip


def test_a_nul_byte_ends_a_line_comment_as_the_server_reads_it() -> None:
    """MariaDB ends `--` and `#` comments at a NUL byte: what follows is statements."""
    found = split_statements(b"SELECT 1;--\x00ECT 2;SELECT 3", LexMode())
    assert [s.text for s in found] == [b"SELECT 1", b"--\x00ECT 2", b"SELECT 3"]
    found = split_statements(b"SELECT 1 # a\x00;DELETE FROM t", LexMode())
    assert [s.text for s in found] == [b"SELECT 1 # a\x00", b"DELETE FROM t"]
